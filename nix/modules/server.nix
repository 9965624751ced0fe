# NixOS module: the nixdeck dashboard (`nixdeck serve`) as a hardened system service.
#
# The service runs under a DynamicUser: it owns nothing on the host but its state directory
# (/var/lib/nixdeck: the SQLite database, the generated admin password, the TOTP sealing
# key). Secrets come from files: the ones the server reads as files are handed over with
# LoadCredential= (the dynamic user could not read a root-owned 0400 file), the rest go in
# `environmentFile`.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (lib) mkOption types;
  cfg = config.services.nixdeck-server;
  deck = import ./lib.nix { inherit lib; };

  stateDir = "/var/lib/nixdeck";
  port = deck.portOf cfg.listen;
  # Below 1024 the dynamic user needs this one capability to bind; else it gets none.
  privilegedPort = port < 1024;

  # name in the credentials directory -> [ flag of `nixdeck`, the file on the host ]
  credentials = lib.filterAttrs (_: v: builtins.elemAt v 1 != null) {
    admin-password = [
      "admin-password-file"
      cfg.adminPasswordFile
    ];
    github-token = [
      "github-token-file"
      cfg.githubTokenFile
    ];
    metrics-token = [
      "metrics-token-file"
      cfg.metricsTokenFile
    ];
    tls-cert = [
      "tls-cert"
      cfg.tlsCertFile
    ];
    tls-key = [
      "tls-key"
      cfg.tlsKeyFile
    ];
  };

  # No `serve`: it is the default command, and the flags belong to `nixdeck` itself
  # (`nixdeck serve --listen` is refused).
  argv = [
    (lib.getExe cfg.package)
    "--listen"
    cfg.listen
    "--database-url"
    cfg.databaseUrl
  ]
  ++ deck.toFlags cfg.settings;
in
{
  options.services.nixdeck-server = {
    enable = lib.mkEnableOption "the nixdeck dashboard, a live view and control of a fleet of NixOS and macOS hosts";

    package = mkOption {
      type = types.package;
      default = pkgs.nixdeck or (pkgs.callPackage ../package.nix { });
      defaultText = lib.literalExpression "pkgs.nixdeck or (pkgs.callPackage ./nix/package.nix { })";
      description = "The nixdeck package (the server binary with its built site).";
    };

    listen = mkOption {
      type = types.str;
      default = "127.0.0.1:3000";
      example = "0.0.0.0:3000";
      description = ''
        Address and port to listen on (`--listen`). Keep the default behind a reverse proxy
        (then set `settings.public-url` and `settings.trusted-proxies`).
      '';
    };

    databaseUrl = mkOption {
      type = types.str;
      default = "sqlite://${stateDir}/nixdeck.db";
      description = ''
        The database (`--database-url`). The default lies in the service's state directory;
        the admin password file and the secret key are created beside it. A PostgreSQL URL
        (`postgres://nixdeck@localhost/nixdeck?host=/run/postgresql`) needs
        `settings.secret-key-file` and `adminPasswordFile` too (docs/SCALING.md).
      '';
    };

    environmentFile = mkOption {
      type = types.nullOr types.path;
      default = null;
      example = "/run/secrets/nixdeck.env";
      description = ''
        A file of `NAME=value` lines read by systemd, for the settings that are secrets and
        have no file of their own: `NIXDECK_ENROLL_TOKEN` (lets new agents enroll),
        `NIXDECK_ADMIN_PASSWORD` (the first admin's password), `NIXDECK_GITHUB_TOKEN`
        (prefer `githubTokenFile`). Never put secrets in `settings`: they would land in the
        world-readable Nix store and in the unit's command line.
      '';
    };

    adminPasswordFile = mkOption {
      type = types.nullOr types.path;
      default = null;
      description = ''
        A file holding the password of `admin`, read when the first user is created. Null:
        a password is generated on first start into `admin-password` in the state
        directory, and the journal names that file.
      '';
    };

    githubTokenFile = mkOption {
      type = types.nullOr types.path;
      default = null;
      example = "/run/agenix/nixdeck-github-token";
      description = "A file holding the GitHub API token (contents read, pull requests write to merge).";
    };

    metricsTokenFile = mkOption {
      type = types.nullOr types.path;
      default = null;
      description = "A file holding the bearer token every /metrics request must send.";
    };

    tlsCertFile = mkOption {
      type = types.nullOr types.path;
      default = null;
      description = "PEM certificate chain: with `tlsKeyFile`, the server speaks HTTPS itself.";
    };

    tlsKeyFile = mkOption {
      type = types.nullOr types.path;
      default = null;
      description = "PEM private key for `tlsCertFile`.";
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = "Open the port of `listen` in the firewall.";
    };

    settings = mkOption {
      type = types.attrsOf (
        types.oneOf [
          types.str
          types.int
          types.bool
        ]
      );
      default = { };
      example = {
        public-url = "https://deck.example.org";
        trusted-proxies = "127.0.0.1";
        github-repo = "acme/fleet";
        retention-days = 90;
      };
      description = ''
        Further flags of `nixdeck`, named as in `nixdeck --help` without the dashes
        (`true` gives a bare flag, `false` leaves it out). No secrets here: see
        `environmentFile` and the `*File` options.
      '';
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = [
      {
        assertion = (cfg.tlsCertFile == null) == (cfg.tlsKeyFile == null);
        message = "services.nixdeck-server: tlsCertFile and tlsKeyFile go together.";
      }
      {
        assertion = !(cfg.settings ? github-token || cfg.settings ? enroll-token);
        message = "services.nixdeck-server.settings: no tokens here (they would be world-readable in the Nix store); use githubTokenFile or environmentFile.";
      }
    ];

    networking.firewall.allowedTCPPorts = lib.optional cfg.openFirewall port;

    systemd.services.nixdeck = {
      description = "nixdeck dashboard";
      wantedBy = [ "multi-user.target" ];
      # The desired state is polled from GitHub.
      wants = [ "network-online.target" ];
      after = [ "network-online.target" ];

      serviceConfig = {
        ExecStart = lib.concatStringsSep " " (
          [ (deck.escapeSystemdExecArgs argv) ]
          ++ lib.mapAttrsToList (name: v: deck.credentialFlag (builtins.head v) name) credentials
        );
        LoadCredential = lib.mapAttrsToList (name: v: "${name}:${toString (builtins.elemAt v 1)}") credentials;
        EnvironmentFile = lib.optional (cfg.environmentFile != null) cfg.environmentFile;
        Restart = "on-failure";
        RestartSec = 5;

        DynamicUser = true;
        StateDirectory = "nixdeck";
        StateDirectoryMode = "0700";
        WorkingDirectory = stateDir;
        UMask = "0077";
        # --max-connections defaults to 16384 and must stay below the open-file limit.
        LimitNOFILE = 65536;

        # Hardening: a network service that needs its state directory and nothing else.
        CapabilityBoundingSet = if privilegedPort then [ "CAP_NET_BIND_SERVICE" ] else [ "" ];
        AmbientCapabilities = lib.optional privilegedPort "CAP_NET_BIND_SERVICE";
        NoNewPrivileges = true;
        PrivateUsers = !privilegedPort;
        PrivateTmp = true;
        PrivateDevices = true;
        DevicePolicy = "closed";
        ProtectSystem = "strict";
        ProtectHome = true;
        ProtectClock = true;
        ProtectHostname = true;
        ProtectKernelLogs = true;
        ProtectKernelModules = true;
        ProtectKernelTunables = true;
        ProtectControlGroups = true;
        ProtectProc = "invisible";
        ProcSubset = "pid";
        RestrictAddressFamilies = [
          "AF_INET"
          "AF_INET6"
          "AF_UNIX"
        ];
        RestrictNamespaces = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        LockPersonality = true;
        MemoryDenyWriteExecute = true;
        RemoveIPC = true;
        SystemCallArchitectures = "native";
        SystemCallFilter = [
          "@system-service"
          "~@privileged"
          "~@resources"
        ];
      };
    };
  };
}
