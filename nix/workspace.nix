# Facts about the Cargo workspace that the Nix packages need, read from Cargo.toml and
# Cargo.lock with builtins only (no nixpkgs), so that `make test` can check them here.
let
  cargoToml = builtins.fromTOML (builtins.readFile ../Cargo.toml);
  cargoLock = builtins.fromTOML (builtins.readFile ../Cargo.lock);
  cargoConfig = builtins.fromTOML (builtins.readFile ../.cargo/config.toml);
  lockVersion =
    name:
    let
      found = builtins.filter (p: p.name == name) cargoLock.package;
    in
    if builtins.length found == 1 then
      (builtins.head found).version
    else
      throw "Cargo.lock has ${toString (builtins.length found)} versions of ${name}, expected one";
in
rec {
  inherit (cargoToml.workspace.package) version;
  members = cargoToml.workspace.members;

  # The site's wasm is post-processed by the wasm-bindgen CLI, which must be exactly the
  # version of the wasm-bindgen crate in Cargo.lock (pinned with `=` in Cargo.toml).
  wasmBindgenVersion = lockVersion "wasm-bindgen";
  # nixpkgs names its versioned CLIs like this (wasm-bindgen-cli_0_2_106).
  wasmBindgenAttr = "wasm-bindgen-cli_" + builtins.replaceStrings [ "." ] [ "_" ] wasmBindgenVersion;

  # The repository's [build] rustflags (.cargo/config.toml). nixpkgs' Rust hooks add
  # `target.<host>.rustflags`, which cargo prefers to build.rustflags, so the server would
  # lose them while the wasm kept them; the packages pass them as RUSTFLAGS instead.
  rustflags = builtins.concatStringsSep " " (cargoConfig.build.rustflags or [ ]);

  # What the build reads, relative to the repository root: every workspace member (cargo
  # needs them all to load the workspace), the migrations compiled into the server, and
  # the site's style and assets. Nothing else, so an edit to docs/ or end2end/ does not
  # rebuild the packages.
  sourcePaths = [
    "Cargo.toml"
    "Cargo.lock"
    ".cargo"
    "migrations"
    "style"
    "public"
  ]
  ++ members;
}
