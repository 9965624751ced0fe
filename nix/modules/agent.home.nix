# home-manager module: the nixdeck agent as the user's own service (a systemd user unit on
# Linux, a launchd agent on macOS). It runs as the user, never root: it switches the
# user's home-manager profile (`activation = "home-manager"`, the default here).
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.services.nixdeck-agent;
  agent = import ./agent-common.nix { inherit lib pkgs; };
  # home-manager's nix.package when set (else the profiles below provide `nix`), the
  # tools we bring, then the user's and the system's profiles.
  pathList =
    map (p: "${p}/bin") (agent.path config.nix.package)
    ++ [
      "${config.home.profileDirectory}/bin"
      "/nix/var/nix/profiles/default/bin"
      "/run/current-system/sw/bin"
      "/usr/bin"
      "/bin"
    ];
in
{
  options.services.nixdeck-agent = agent.options {
    activation = "home-manager";
    stateDir = "${config.xdg.stateHome}/nixdeck-agent";
    stateDirText = ''"''${config.xdg.stateHome}/nixdeck-agent"'';
  };

  config = lib.mkIf cfg.enable (
    lib.mkMerge [
      { assertions = agent.assertions cfg; }

      (lib.mkIf pkgs.stdenv.hostPlatform.isLinux {
        systemd.user.services.nixdeck-agent = {
          Unit = {
            Description = "nixdeck agent";
            After = [ "network-online.target" ];
            # home-manager's switch must not restart the agent in the middle of its own
            # activation (the same rule as the NixOS unit's restartIfChanged = false).
            X-RestartIfChanged = false;
          };
          Service = {
            ExecStart = agent.execStart cfg;
            # Keeps the detached supervisor of a running command alive across a restart.
            KillMode = "process";
            Restart = "always";
            RestartSec = 3;
            Environment = [ "PATH=${lib.concatStringsSep ":" pathList}" ];
          };
          Install.WantedBy = [ "default.target" ];
        };
      })

      (lib.mkIf pkgs.stdenv.hostPlatform.isDarwin {
        launchd.agents.nixdeck-agent = {
          enable = true;
          config = {
            ProgramArguments = agent.argv cfg;
            RunAtLoad = true;
            KeepAlive = true;
            AbandonProcessGroup = true;
            ProcessType = "Background";
            EnvironmentVariables.PATH = lib.concatStringsSep ":" pathList;
            StandardOutPath = "${config.home.homeDirectory}/Library/Logs/nixdeck-agent.log";
            StandardErrorPath = "${config.home.homeDirectory}/Library/Logs/nixdeck-agent.log";
          };
        };
      })
    ]
  );
}
