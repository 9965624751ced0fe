# The host agent, built with nixpkgs' Rust tooling. Not built on the machines that run
# `make test` (no nixpkgs there): `nix build .#nixdeck-agent` / `nix flake check` is the
# check, see docs/INSTALL.md.
{
  lib,
  rustPlatform,
}:
let
  workspace = import ./workspace.nix;
in
rustPlatform.buildRustPackage {
  pname = "nixdeck-agent";
  inherit (workspace) version;

  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions (map (p: ../. + "/${p}") workspace.sourcePaths);
  };
  cargoLock.lockFile = ../Cargo.lock;

  # The same cfgs as every cargo call in the repository (nix/workspace.nix says why).
  env.RUSTFLAGS = workspace.rustflags;

  cargoBuildFlags = [
    "-p"
    "nixdeck-agent"
  ];
  # The agent's tests run real Nix, git and a fake dashboard on loopback (make test);
  # the build sandbox has no Nix store to test against.
  doCheck = false;

  meta = {
    description = "Host agent of nixdeck: heartbeats, commands and streamed output over one WebSocket";
    license = lib.licenses.mit;
    mainProgram = "nixdeck-agent";
    platforms = lib.platforms.linux ++ lib.platforms.darwin;
  };
}
