# The agent's options and how they become its command line: written once, used by the
# NixOS, nix-darwin and home-manager modules (agent.nixos.nix, agent.darwin.nix,
# agent.home.nix), which only differ in the service manager they hand the argv to.
{ lib, pkgs }:
let
  inherit (lib) mkOption types;
  deck = import ./lib.nix { inherit lib; };
  tomlFormat = pkgs.formats.toml { };

  # The agent's full argv, the executable first.
  argv =
    cfg:
    [
      (lib.getExe cfg.package)
    ]
    ++ lib.concatMap (url: [
      "--url"
      url
    ]) (lib.toList cfg.url)
    ++ [
      "--token-file"
      cfg.tokenFile
      "--activation"
      cfg.activation
      "--state-dir"
      cfg.stateDir
      "--branch"
      cfg.branch
    ]
    ++ deck.toFlags {
      repo-url = cfg.repoUrl;
      repo-dir = cfg.repoDir;
      allow-foreign-repo-owner = cfg.allowForeignRepoOwner;
      hostname = cfg.hostname;
      insecure = cfg.insecure;
      config = if cfg.settings == { } then null else tomlFormat.generate "nixdeck-agent.toml" cfg.settings;
    }
    ++ deck.toFlags cfg.extraFlags;
in
{
  inherit argv;

  # `platform` sets what differs: the default activation kind and state directory.
  options =
    {
      activation,
      stateDir,
      stateDirText,
    }:
    {
      enable = lib.mkEnableOption "the nixdeck agent, which reports this host to a nixdeck dashboard and runs its commands";

      package = mkOption {
        type = types.package;
        default = pkgs.nixdeck-agent or (pkgs.callPackage ../agent-package.nix { });
        defaultText = lib.literalExpression "pkgs.nixdeck-agent or (pkgs.callPackage ./nix/agent-package.nix { })";
        description = "The nixdeck-agent package.";
      };

      url = mkOption {
        type = types.oneOf [
          types.str
          (types.nonEmptyListOf types.str)
        ];
        example = "https://deck.example.org";
        description = ''
          The dashboard (`--url`), or a list of the URLs of its replicas: the agent connects
          to the first and moves to the next when a connection fails or drops. A plaintext
          `http://` URL to another machine is refused unless `insecure` is set.
        '';
      };

      tokenFile = mkOption {
        type = types.nullOr types.path;
        default = null;
        example = "/run/agenix/nixdeck-agent-token";
        description = ''
          A file holding this host's token, or an enrollment token (`--token-file`). It is
          re-read before every connection. After enrollment the agent writes the new host
          token into it, so an enrollment token needs a file the agent can write (e.g. in
          its state directory); a host token can live in a read-only secret
          (agenix, sops-nix).
        '';
      };

      repoUrl = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "https://github.com/acme/fleet.git";
        description = ''
          The configuration repository (`--repo-url`). Without `repoDir` the agent keeps its
          own clone in its state directory (isolated mode, the safe choice).
        '';
      };

      repoDir = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "/etc/nixos";
        description = ''
          An existing checkout to run commands on (`--repo-dir`, legacy mode). It must belong
          to the agent's user (root for the system service), or the agent refuses to start:
          whoever owns it could run code as that user through git hooks. See
          `allowForeignRepoOwner`.
        '';
      };

      allowForeignRepoOwner = mkOption {
        type = types.bool;
        default = false;
        description = "Accept a `repoDir` owned by another user (`--allow-foreign-repo-owner`).";
      };

      branch = mkOption {
        type = types.str;
        default = "main";
        description = "The branch this host follows (`--branch`).";
      };

      hostname = mkOption {
        type = types.nullOr types.str;
        default = null;
        description = "The host's name on the dashboard (`--hostname`); null: the OS host name.";
      };

      activation = mkOption {
        type = types.enum [
          "nixos"
          "darwin"
          "home-manager"
        ];
        default = activation;
        description = ''
          What a switch activates (`--activation`): a NixOS system, a nix-darwin system, or a
          home-manager generation. Also picks the default flake attribute and profile.
        '';
      };

      stateDir = mkOption {
        type = types.str;
        default = stateDir;
        defaultText = lib.literalExpression stateDirText;
        description = "The agent's own state: command spools, the isolated clone (`--state-dir`).";
      };

      insecure = mkOption {
        type = types.bool;
        default = false;
        description = "Allow a plaintext `http://` dashboard on another machine (`--insecure`); trusted networks only.";
      };

      settings = mkOption {
        inherit (tomlFormat) type;
        default = { };
        example = {
          commands.test = {
            argv = [
              "sh"
              "-c"
              "nix flake check"
            ];
            timeout_s = 600;
          };
          health.units = [ "nginx.service" ];
          health.urls = [ "http://127.0.0.1:8080/health" ];
        };
        description = ''
          The agent's TOML configuration (`--config`): the `[commands]` and `[health]`
          tables described in agent/README.md. Empty: no file, every default applies.
        '';
      };

      extraFlags = mkOption {
        type = types.attrsOf (
          types.oneOf [
            types.str
            types.int
            types.bool
          ]
        );
        default = { };
        example = {
          location = "office";
          device-type = "server";
          confirm-timeout-s = 300;
        };
        description = ''
          Further flags of `nixdeck-agent`, named as in `nixdeck-agent --help` without the
          dashes (`true` gives a bare flag).
        '';
      };
    };

  # The checks every platform makes.
  assertions = cfg: [
    {
      assertion = cfg.tokenFile != null;
      message = "services.nixdeck-agent.tokenFile must be set (a file, so the token is not in the Nix store).";
    }
    {
      assertion = !(cfg.extraFlags ? token);
      message = "services.nixdeck-agent.extraFlags.token would put the token in the Nix store; use tokenFile.";
    }
  ];

  # For systemd: the argv as one ExecStart line.
  execStart = cfg: deck.escapeSystemdExecArgs (argv cfg);

  # What the agent and its commands run, besides the activation's own tools. Commands are
  # started as argv (no shell), so each must be found on PATH.
  # `nix`: the Nix to use, or null where the system provides it on PATH.
  path =
    nix:
    lib.optional (nix != null) nix
    ++ [
      pkgs.git
      pkgs.openssh # git over ssh
      pkgs.curl # https:// health URLs
      pkgs.coreutils
      pkgs.bash # the test scripts' `sh`
    ];
}
