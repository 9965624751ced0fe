# A small stand-in for nixpkgs' `lib`: just the functions and option types our modules
# use, with the same meaning, written from builtins. No nixpkgs can be fetched on the
# machines that run `make test`, so scripts/check_packaging.py evaluates the modules
# against this (with nix/tests/eval-module.nix standing in for the module system).
# A module that starts using another `lib` function fails the check here until the
# function is added below: that is on purpose, it keeps the stand-in honest.
let
  inherit (builtins)
    all
    any
    attrNames
    attrValues
    concatMap
    elem
    filter
    isAttrs
    isBool
    isInt
    isList
    isPath
    isString
    length
    listToAttrs
    split
    substring
    stringLength
    ;

  hasPrefix = pre: s: substring 0 (stringLength pre) s == pre;

  mkType = name: check: {
    _type = "option-type";
    inherit name check;
  };

  types = {
    str = mkType "str" isString;
    bool = mkType "bool" isBool;
    int = mkType "int" isInt;
    port = mkType "port" (v: isInt v && v >= 0 && v <= 65535);
    # As in nixpkgs: a path value, or a string that is an absolute path.
    path = mkType "path" (v: isPath v || (isString v && hasPrefix "/" v));
    package = mkType "package" (v: isAttrs v && (v.type or null) == "derivation");
    attrs = mkType "attrs" isAttrs;
    nullOr = t: mkType "null or ${t.name}" (v: v == null || t.check v);
    listOf = t: mkType "list of ${t.name}" (v: isList v && all t.check v);
    nonEmptyListOf = t: mkType "non-empty list of ${t.name}" (v: isList v && v != [ ] && all t.check v);
    attrsOf = t: mkType "attrs of ${t.name}" (v: isAttrs v && all t.check (attrValues v));
    enum = values: mkType "one of ${toString values}" (v: elem v values);
    oneOf = ts: mkType "one of several types" (v: any (t: t.check v) ts);
  };
in
rec {
  inherit types hasPrefix;

  # Options and definitions: plain tagged attrsets, read by eval-module.nix.
  mkOption = attrs: attrs // { _type = "option"; };
  mkEnableOption =
    name:
    mkOption {
      type = types.bool;
      default = false;
      description = "Whether to enable ${name}.";
    };
  mkIf = condition: content: {
    _type = "if";
    inherit condition content;
  };
  mkMerge = contents: {
    _type = "merge";
    inherit contents;
  };
  mkOverride = priority: content: {
    _type = "override";
    inherit priority content;
  };
  mkDefault = mkOverride 1000;
  mkForce = mkOverride 50;
  literalExpression = text: {
    _type = "literalExpression";
    inherit text;
  };

  # Lists, strings, attrsets: as in nixpkgs.
  optional = cond: x: if cond then [ x ] else [ ];
  optionals = cond: xs: if cond then xs else [ ];
  optionalAttrs = cond: as: if cond then as else { };
  optionalString = cond: s: if cond then s else "";
  concatStringsSep = builtins.concatStringsSep;
  concatMap = builtins.concatMap;
  toList = x: if isList x then x else [ x ];
  last = xs: builtins.elemAt xs (length xs - 1);
  # Only separators without regex metacharacters: enough for ours, and never silently wrong.
  splitString =
    sep: s:
    if builtins.match "[A-Za-z0-9:,/ _-]+" sep == null then
      throw "lib-stub splitString: separator not supported: ${sep}"
    else
      filter isString (split sep s);
  toInt =
    s:
    if builtins.match "[0-9]+" s == null then
      throw "lib.toInt: not a decimal integer: ${s}"
    else
      builtins.fromJSON (builtins.head (builtins.match "0*([0-9]+)" s));
  mapAttrsToList = f: as: map (n: f n as.${n}) (attrNames as);
  mapAttrs = builtins.mapAttrs;
  filterAttrs = pred: as: listToAttrs (concatMap (n: if pred n as.${n} then [ { name = n; value = as.${n}; } ] else [ ]) (attrNames as));
  genAttrs = names: f: listToAttrs (map (n: { name = n; value = f n; }) names);
  recursiveUpdate =
    a: b:
    a
    // builtins.mapAttrs (
      n: v: if isAttrs v && isAttrs (a.${n} or null) && !(v ? _type) then recursiveUpdate a.${n} v else v
    ) b;

  # nixpkgs' getExe warns and guesses without meta.mainProgram; the stand-in insists on it.
  getExe =
    pkg:
    if pkg ? meta.mainProgram then
      "${pkg}/bin/${pkg.meta.mainProgram}"
    else
      throw "lib.getExe: ${pkg.name or "package"} has no meta.mainProgram";

}
