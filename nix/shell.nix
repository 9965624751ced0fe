# `nix develop`: the toolchain of scripts/setup.sh from nixpkgs (rustc with the
# wasm32-unknown-unknown standard library, cargo-leptos, wasm-bindgen at the locked
# version, wasm-opt), plus what the tests run: real Nix, git, SQLite, Node for Playwright.
{
  mkShell,
  nixdeck,
  cargo,
  rustc,
  clippy,
  rustfmt,
  cargo-deny,
  sqlite,
  git,
  nix,
  nodejs,
  chromium ? null,
  lib,
  stdenv,
}:
mkShell {
  inputsFrom = [ nixdeck ];
  packages = [
    cargo
    rustc
    clippy
    rustfmt
    cargo-deny
    sqlite
    git
    nix
    nodejs
  ]
  ++ lib.optional (chromium != null && lib.meta.availableOn stdenv.hostPlatform chromium) chromium;
  shellHook = ''
    export CHROMIUM_PATH=''${CHROMIUM_PATH:-$(command -v chromium || true)}
  '';
}
