# nix-darwin module: the nixdeck agent as a launchd daemon. It runs as root because it
# must: a switch sets the system profile and runs the new system's `activate`.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.services.nixdeck-agent;
  agent = import ./agent-common.nix { inherit lib pkgs; };
in
{
  options.services.nixdeck-agent = agent.options {
    activation = "darwin";
    stateDir = "/var/lib/nixdeck-agent";
    stateDirText = ''"/var/lib/nixdeck-agent"'';
  };

  config = lib.mkIf cfg.enable {
    assertions = agent.assertions cfg;

    launchd.daemons.nixdeck-agent.serviceConfig = {
      ProgramArguments = agent.argv cfg;
      RunAtLoad = true;
      # Started again after it exits (after a `restart`, or when a switch replaced it).
      KeepAlive = true;
      # launchd would otherwise kill the whole process group when the agent exits, the
      # detached supervisor of a running switch included.
      AbandonProcessGroup = true;
      ProcessType = "Background";
      # launchd's default PATH has no Nix; the system profile's tools come first.
      EnvironmentVariables.PATH = lib.concatStringsSep ":" (
        # With nix.enable = false (Nix installed by other means) nix-darwin has no
        # nix.package: the profile directories below then provide `nix`.
        map (p: "${p}/bin") (agent.path (if config.nix.enable or true then config.nix.package else null))
        ++ [
          "/run/current-system/sw/bin"
          "/nix/var/nix/profiles/default/bin"
          "/usr/bin"
          "/bin"
          "/usr/sbin"
          "/sbin"
        ]
      );
      StandardOutPath = "/var/log/nixdeck-agent.log";
      StandardErrorPath = "/var/log/nixdeck-agent.log";
    };
  };
}
