# A stand-in for the few `pkgs` attributes our modules touch. Derivations are attrsets with
# a made-up store path: nothing is built or even instantiated. `pkgs.formats.toml` keeps
# what it was given, so the check can render that TOML itself and feed it to the agent.
{ lib, system }:
let
  fake = name: mainProgram: {
    type = "derivation";
    inherit name;
    outPath = "/nix/store/00000000000000000000000000000000-${name}";
    meta = lib.optionalAttrs (mainProgram != null) { inherit mainProgram; };
  };
  # The package files our modules may fall back to, and the programs they provide.
  packageFiles = {
    "package.nix" = "nixdeck";
    "agent-package.nix" = "nixdeck-agent";
  };
in
{
  inherit system;
  stdenv.hostPlatform = {
    inherit system;
    isLinux = builtins.match ".*-linux" system != null;
    isDarwin = builtins.match ".*-darwin" system != null;
  };

  callPackage =
    path: _args:
    let
      file = baseNameOf (toString path);
    in
    if !(builtins.pathExists path) then
      throw "pkgs-stub callPackage: ${toString path} does not exist"
    else if !(packageFiles ? ${file}) then
      throw "pkgs-stub callPackage: unexpected package file ${file}"
    else
      fake packageFiles.${file} packageFiles.${file};

  formats.toml = _: {
    type = lib.types.attrs;
    # A store path as the real generator would give, named so the check can find the
    # settings it stands for (the module's `settings` value).
    generate = name: _value: "/nix/store/00000000000000000000000000000000-${name}";
  };

  nix = fake "nix" "nix";
  git = fake "git" "git";
  openssh = fake "openssh" "ssh";
  curl = fake "curl" "curl";
  coreutils = fake "coreutils" null;
  bash = fake "bash" "bash";
}
