# Rendering helpers shared by every nixdeck module (server and agent alike). Only builtins
# and a few `lib` functions, so that the test harness (nix/tests/) runs this very code
# against its stand-in `lib`.
{ lib }:
rec {
  # An attrset of command-line flags, as `nixdeck --help` / `nixdeck-agent --help` name
  # them without the leading dashes, to an argv list: `{ github-repo = "a/b"; insecure =
  # true; }` -> [ "--github-repo" "a/b" "--insecure" ]. `false` and `null` leave a flag
  # out (every boolean flag of ours is off by default); a list repeats the flag. Sorted by
  # name (attrNames), so the rendered unit does not change between evaluations.
  toFlags =
    attrs:
    builtins.concatLists (
      map (
        name:
        let
          value = attrs.${name};
          one =
            v:
            if v == true then
              [ "--${name}" ]
            else if v == false || v == null then
              [ ]
            else
              [
                "--${name}"
                (toString v)
              ];
        in
        if builtins.isList value then builtins.concatMap one value else one value
      ) (builtins.attrNames attrs)
    );

  # systemd's ExecStart is not a shell: it takes C-style double-quoted words, and expands
  # `%` specifiers and `$VAR`s. A JSON string is a valid double-quoted word; doubling `%`
  # and `$` keeps both literal. (The same rule as nixpkgs' utils.escapeSystemdExecArg,
  # written here because home-manager and nix-darwin modules do not get `utils`.)
  escapeSystemdExecArg =
    arg:
    builtins.replaceStrings
      [
        "%"
        "$"
      ]
      [
        "%%"
        "$$"
      ]
      (builtins.toJSON (toString arg));

  escapeSystemdExecArgs = args: lib.concatStringsSep " " (map escapeSystemdExecArg args);

  # `--flag %d/name`: a file that LoadCredential= put in the unit's credentials directory,
  # which systemd names with the specifier %d. Appended to ExecStart unescaped, since the
  # specifier must be expanded; `flag` and `name` come from the module, never from users.
  credentialFlag = flag: name: "--${flag} %d/${name}";

  # The port of a `host:port` listen address ("127.0.0.1:3000", "[::]:443").
  portOf = listen: lib.toInt (lib.last (lib.splitString ":" listen));
}
