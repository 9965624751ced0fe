{
  description = "nixdeck: a real-time dashboard and agent for a fleet of NixOS and macOS hosts";

  # The only input. `nix flake lock` writes flake.lock on first use (none is committed:
  # it cannot be made without fetching nixpkgs). docs/INSTALL.md has the details.
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      systems = [
        "x86_64-linux"
        "aarch64-linux"
        "x86_64-darwin"
        "aarch64-darwin"
      ];
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      # The packages built with the caller's nixpkgs.
      overlays.default = final: _prev: {
        nixdeck = final.callPackage ./nix/package.nix { };
        nixdeck-agent = final.callPackage ./nix/agent-package.nix { };
      };

      packages = forAllSystems (pkgs: {
        nixdeck = pkgs.callPackage ./nix/package.nix { };
        nixdeck-agent = pkgs.callPackage ./nix/agent-package.nix { };
        default = self.packages.${pkgs.stdenv.hostPlatform.system}.nixdeck;
      });

      # Each module builds its default package with the configuration's own pkgs
      # (`pkgs.nixdeck` when the overlay is applied); set `package` to use this flake's.
      nixosModules = {
        nixdeck-server = ./nix/modules/server.nix;
        nixdeck-agent = ./nix/modules/agent.nixos.nix;
      };
      darwinModules.nixdeck-agent = ./nix/modules/agent.darwin.nix;
      homeManagerModules.nixdeck-agent = ./nix/modules/agent.home.nix;

      devShells = forAllSystems (pkgs: {
        default = pkgs.callPackage ./nix/shell.nix {
          nixdeck = self.packages.${pkgs.stdenv.hostPlatform.system}.nixdeck;
        };
      });

      # `nix flake check` builds both packages on each system it can.
      checks = forAllSystems (pkgs: {
        inherit (self.packages.${pkgs.stdenv.hostPlatform.system}) nixdeck nixdeck-agent;
      });
    };
}
