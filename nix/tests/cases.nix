# What scripts/check_packaging.py checks, evaluated in one go with the stand-in `lib`,
# `pkgs` and module system (no nixpkgs): the flake's outputs, and every module of the
# flake rendered from example settings. The script then holds the rendered units against
# the real binaries (`--help`), systemd-analyze and launchd's plist keys.
let
  lib = import ./lib-stub.nix;
  pkgsFor = system: import ./pkgs-stub.nix { inherit lib system; };
  fake = name: {
    type = "derivation";
    inherit name;
    outPath = "/nix/store/00000000000000000000000000000000-${name}";
  };

  # The flake's outputs function with a stand-in nixpkgs input, tied as Nix ties `self`.
  flake = import ../../flake.nix;
  nixpkgsStub = {
    inherit lib;
    legacyPackages = lib.genAttrs [
      "x86_64-linux"
      "aarch64-linux"
      "x86_64-darwin"
      "aarch64-darwin"
    ] pkgsFor;
  };
  outputs = flake.outputs {
    self = outputs;
    nixpkgs = nixpkgsStub;
  };

  evalModule =
    {
      module,
      system,
      definitions,
      base,
    }:
    import ./eval-module.nix {
      inherit
        lib
        module
        definitions
        base
        ;
      pkgs = pkgsFor system;
    };

  nixosBase = {
    nix.package = fake "nix";
    system.build.nixos-rebuild = fake "nixos-rebuild";
  };
  darwinBase = {
    nix.enable = true;
    nix.package = fake "nix";
  };
  homeBase = {
    nix.package = null;
    home.homeDirectory = "/home/alice";
    home.profileDirectory = "/home/alice/.nix-profile";
    xdg.stateHome = "/home/alice/.local/state";
  };

  # The examples: every option of each module set away from its default at least once.
  server = {
    enable = true;
    listen = "0.0.0.0:3000";
    databaseUrl = "sqlite:///var/lib/nixdeck/fleet.db";
    environmentFile = "/run/secrets/nixdeck.env";
    adminPasswordFile = "/run/secrets/nixdeck-admin";
    githubTokenFile = "/run/secrets/github-token";
    metricsTokenFile = "/run/secrets/metrics-token";
    openFirewall = true;
    settings = {
      public-url = "https://deck.example.org";
      trusted-proxies = "127.0.0.1,10.0.0.0/8";
      github-repo = "acme/fleet";
      retention-days = 90;
      pr-match-title = true;
      metrics = "open";
    };
  };
  # HTTPS on a privileged port: the one case that grants a capability.
  serverTls = {
    enable = true;
    listen = "[::]:443";
    tlsCertFile = "/var/lib/acme/deck/fullchain.pem";
    tlsKeyFile = "/var/lib/acme/deck/key.pem";
  };
  agentCommon = {
    enable = true;
    url = "https://deck.example.org";
    tokenFile = "/run/agenix/nixdeck-agent-token";
    branch = "production";
    hostname = "web-1";
    settings = {
      commands.test = {
        argv = [
          "sh"
          "-c"
          "nix flake check"
        ];
        timeout_s = 600;
      };
      commands.update.timeout_s = 900;
      health.units = [ "nginx.service" ];
      health.urls = [ "http://127.0.0.1:8080/health" ];
    };
    extraFlags = {
      location = "office";
      device-type = "server";
      theme-color = "#7aa2f7";
      confirm-timeout-s = 300;
    };
  };
  agentIsolated = agentCommon // {
    repoUrl = "https://github.com/acme/fleet.git";
    # Replicas of one dashboard: one --url each.
    url = [
      "https://deck-a.example.org"
      "https://deck-b.example.org"
    ];
  };
  agentLegacy = agentCommon // {
    repoDir = "/etc/nixos";
    allowForeignRepoOwner = true;
    insecure = true;
    url = "http://deck.lan:3000";
    extraFlags = agentCommon.extraFlags // {
      switch-action = "test";
    };
  };

  attrAt = path: set: builtins.foldl' (acc: n: acc.${n}) set path;

  # One module, one example: the unit it renders, where to find it, what runs it.
  #   kind: nixos (systemd.services), home-systemd (home-manager's systemd.user.services)
  #   or launchd (a plist's keys); binary: the program ExecStart must start.
  render =
    c:
    let
      e = evalModule { inherit (c) module system definitions base; };
      cfgName = builtins.head (builtins.attrNames c.definitions.services);
    in
    {
      inherit (c) name kind binary;
      expectFailure = c.expectFailure or false;
      inherit (e) failedAssertions;
      unit = if e.failedAssertions == [ ] || !(c.expectFailure or false) then attrAt c.unit e.config else null;
      firewall = e.config.networking.firewall.allowedTCPPorts or [ ];
      # The agent's TOML, as given (the stand-in generator does not render it).
      settings = e.values.services.${cfgName}.settings;
    };

in
{
  flake = {
    inputs = builtins.attrNames flake.inputs;
    outputs = builtins.attrNames outputs;
    packages = builtins.mapAttrs (_: builtins.attrNames) outputs.packages;
    packageMainPrograms = builtins.mapAttrs (_: p: builtins.mapAttrs (_: d: d.meta.mainProgram or null) p) outputs.packages;
    devShells = builtins.mapAttrs (_: builtins.attrNames) outputs.devShells;
    checks = builtins.mapAttrs (_: builtins.attrNames) outputs.checks;
    overlay = builtins.attrNames (outputs.overlays.default (pkgsFor "x86_64-linux") { });
    nixosModules = builtins.attrNames outputs.nixosModules;
    darwinModules = builtins.attrNames outputs.darwinModules;
    homeManagerModules = builtins.attrNames outputs.homeManagerModules;
  };

  workspace = import ../workspace.nix;
  # The arguments nix/package.nix takes: one must name the locked wasm-bindgen CLI.
  serverPackageArgs = builtins.attrNames (builtins.functionArgs (import ../package.nix));

  cases = map render [
    {
      name = "server, NixOS";
      kind = "nixos";
      binary = "nixdeck";
      module = outputs.nixosModules.nixdeck-server;
      system = "x86_64-linux";
      definitions.services.nixdeck-server = server;
      base = nixosBase;
      unit = [ "systemd" "services" "nixdeck" ];
    }
    {
      name = "server, NixOS, TLS on port 443";
      kind = "nixos";
      binary = "nixdeck";
      module = outputs.nixosModules.nixdeck-server;
      system = "x86_64-linux";
      definitions.services.nixdeck-server = serverTls;
      base = nixosBase;
      unit = [ "systemd" "services" "nixdeck" ];
    }
    {
      name = "server, NixOS, TLS certificate without its key";
      kind = "nixos";
      binary = "nixdeck";
      expectFailure = true;
      module = outputs.nixosModules.nixdeck-server;
      system = "x86_64-linux";
      definitions.services.nixdeck-server = builtins.removeAttrs serverTls [ "tlsKeyFile" ];
      base = nixosBase;
      unit = [ "systemd" "services" "nixdeck" ];
    }
    {
      name = "agent, NixOS, isolated clone";
      kind = "nixos";
      binary = "nixdeck-agent";
      module = outputs.nixosModules.nixdeck-agent;
      system = "x86_64-linux";
      definitions.services.nixdeck-agent = agentIsolated;
      base = nixosBase;
      unit = [ "systemd" "services" "nixdeck-agent" ];
    }
    {
      name = "agent, NixOS, legacy checkout";
      kind = "nixos";
      binary = "nixdeck-agent";
      module = outputs.nixosModules.nixdeck-agent;
      system = "x86_64-linux";
      definitions.services.nixdeck-agent = agentLegacy;
      base = nixosBase;
      unit = [ "systemd" "services" "nixdeck-agent" ];
    }
    {
      name = "agent, NixOS, no token file";
      kind = "nixos";
      binary = "nixdeck-agent";
      expectFailure = true;
      module = outputs.nixosModules.nixdeck-agent;
      system = "x86_64-linux";
      definitions.services.nixdeck-agent = builtins.removeAttrs agentIsolated [ "tokenFile" ];
      base = nixosBase;
      unit = [ "systemd" "services" "nixdeck-agent" ];
    }
    {
      name = "agent, nix-darwin";
      kind = "launchd";
      binary = "nixdeck-agent";
      module = outputs.darwinModules.nixdeck-agent;
      system = "aarch64-darwin";
      definitions.services.nixdeck-agent = agentIsolated;
      base = darwinBase;
      unit = [ "launchd" "daemons" "nixdeck-agent" "serviceConfig" ];
    }
    {
      name = "agent, home-manager on Linux";
      kind = "home-systemd";
      binary = "nixdeck-agent";
      module = outputs.homeManagerModules.nixdeck-agent;
      system = "x86_64-linux";
      definitions.services.nixdeck-agent = agentIsolated // {
        tokenFile = "/home/alice/.config/nixdeck/token";
      };
      base = homeBase;
      unit = [ "systemd" "user" "services" "nixdeck-agent" ];
    }
    {
      name = "agent, home-manager on macOS";
      kind = "launchd";
      binary = "nixdeck-agent";
      module = outputs.homeManagerModules.nixdeck-agent;
      system = "aarch64-darwin";
      definitions.services.nixdeck-agent = agentIsolated // {
        tokenFile = "/Users/alice/.config/nixdeck/token";
      };
      base = homeBase;
      unit = [ "launchd" "agents" "nixdeck-agent" "config" ];
    }
  ];
}
