# NixOS module: the nixdeck agent as a system service. It runs as root because it must:
# a switch sets the system profile (/nix/var/nix/profiles/system) and runs the new
# system's switch-to-configuration. For the same reason its unit is not sandboxed.
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
    activation = "nixos";
    # The agent's own default when it runs as root; StateDirectory= below creates it.
    stateDir = "/var/lib/nixdeck-agent";
    stateDirText = ''"/var/lib/nixdeck-agent"'';
  };

  config = lib.mkIf cfg.enable {
    assertions = agent.assertions cfg;

    systemd.services.nixdeck-agent = {
      description = "nixdeck agent";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [ "network-online.target" ];
      # A switch must not stop the agent in the middle of its own activation: the unit is
      # left alone, and the new binary comes in with the next restart (`restart` command,
      # or the agent's exit after the switch; Restart=always brings it back).
      restartIfChanged = false;
      path = agent.path config.nix.package ++ [ config.system.build.nixos-rebuild ];

      serviceConfig = {
        ExecStart = agent.execStart cfg;
        # Only the agent's own process is stopped with the unit: the detached supervisor
        # of a running command (a switch that replaces this very unit) lives on.
        KillMode = "process";
        Restart = "always";
        RestartSec = 3;
        StateDirectory = lib.mkIf (cfg.stateDir == "/var/lib/nixdeck-agent") "nixdeck-agent";
        StateDirectoryMode = "0700";
      };
    };
  };
}
