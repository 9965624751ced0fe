# The dashboard: the server binary and the site it serves (the wasm of the hydrated page,
# its JS and CSS), built by cargo-leptos with nixpkgs' Rust tooling. Not built on the
# machines that run `make test` (no nixpkgs there): `nix build .#nixdeck` /
# `nix flake check` is the check, see docs/INSTALL.md.
{
  lib,
  rustPlatform,
  cargo-leptos,
  binaryen,
  lld,
  makeWrapper,
  # cargo-leptos runs `wasm-bindgen` from PATH and never checks its version, and a CLI
  # that differs from the crate in Cargo.lock produces a broken site. So the CLI is taken
  # only at the locked version: nixpkgs' versioned attribute, or its plain
  # `wasm-bindgen-cli` when that happens to be the same version. The attribute name below
  # must follow Cargo.lock (scripts/check_packaging.py checks it).
  wasm-bindgen-cli_0_2_130 ? null,
  wasm-bindgen-cli ? null,
}:
let
  workspace = import ./workspace.nix;
  candidates = builtins.filter (p: p != null && (p.version or null) == workspace.wasmBindgenVersion) [
    wasm-bindgen-cli_0_2_130
    wasm-bindgen-cli
  ];
  wasmBindgen =
    if candidates != [ ] then
      builtins.head candidates
    else
      throw ''
        nixdeck: this nixpkgs has no wasm-bindgen-cli ${workspace.wasmBindgenVersion} (the version
        in Cargo.lock). Build one with nixpkgs' buildWasmBindgenCli and pass it:
          nixdeck.override { ${workspace.wasmBindgenAttr} = pkgs.buildWasmBindgenCli { ... }; }
        (docs/INSTALL.md, "wasm-bindgen-cli").
      '';
in
rustPlatform.buildRustPackage {
  pname = "nixdeck";
  inherit (workspace) version;

  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions (map (p: ../. + "/${p}") workspace.sourcePaths);
  };
  cargoLock.lockFile = ../Cargo.lock;

  # The same cfgs as every cargo call in the repository (nix/workspace.nix says why).
  env.RUSTFLAGS = workspace.rustflags;

  nativeBuildInputs = [
    cargo-leptos
    wasmBindgen
    binaryen # wasm-opt, for the release wasm
    lld # nixpkgs' rustc links wasm32-unknown-unknown with `lld`
    makeWrapper
  ];

  # cargo-leptos builds both halves: the wasm (frontend, hydrate) and the server (ssr).
  # --split: rarely used pages are separate wasm chunks, loaded on first use.
  buildPhase = ''
    runHook preBuild
    cargo leptos build --release --split
    runHook postBuild
  '';

  # The server's tests start real binaries, agents and a browser (make test).
  doCheck = false;

  installPhase = ''
    runHook preInstall
    install -Dm755 target/release/nixdeck $out/bin/nixdeck
    mkdir -p $out/share/nixdeck
    cp -r target/site $out/share/nixdeck/site
    # The site is found without any setting; --site-root / NIXDECK_SITE_ROOT still win.
    wrapProgram $out/bin/nixdeck --set-default NIXDECK_SITE_ROOT $out/share/nixdeck/site
    runHook postInstall
  '';

  passthru.wasm-bindgen-cli = wasmBindgen;

  meta = {
    description = "Real-time dashboard for a fleet of NixOS and macOS machines";
    license = lib.licenses.mit;
    mainProgram = "nixdeck";
    platforms = lib.platforms.linux ++ lib.platforms.darwin;
  };
}
