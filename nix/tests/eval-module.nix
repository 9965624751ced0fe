# A stand-in for the module system, for one module without `imports` (ours have none):
#   - `config` seen by the module = `base` (what other modules would provide: nix.package,
#     home.homeDirectory, ...) plus the values of the module's own options: a definition
#     from `definitions` (type-checked), else the option's default;
#   - the module's `config` section resolved: mkIf, mkMerge and mkOverride applied, attrsets
#     merged, lists concatenated, two different values for one setting an error.
# Returns { config, values, failedAssertions }.
{
  lib,
  pkgs,
  module,
  definitions,
  base,
}:
let
  inherit (builtins)
    all
    attrNames
    concatLists
    concatMap
    concatStringsSep
    filter
    head
    isAttrs
    isList
    length
    listToAttrs
    tail
    ;

  isOption = v: isAttrs v && (v._type or null) == "option";
  isDerivation = v: isAttrs v && (v.type or null) == "derivation";
  pathText = concatStringsSep ".";

  evaluated = (if isAttrs module then module else import module) {
    inherit lib pkgs config;
    options = { };
  };

  # Every definition must name a declared option: a typo in an example is an error.
  checkDefined =
    path: opts: defs:
    all (
      n:
      if !(opts ? ${n}) then
        throw "definition of ${pathText (path ++ [ n ])}: no such option"
      else
        isOption opts.${n} || checkDefined (path ++ [ n ]) opts.${n} defs.${n}
    ) (attrNames defs);

  optionValues =
    path: opts: defs:
    builtins.mapAttrs (
      name: opt:
      let
        p = path ++ [ name ];
      in
      if isOption opt then
        if defs ? ${name} then
          if opt ? type && !(opt.type.check defs.${name}) then
            throw "option ${pathText p}: the definition is not of type ${opt.type.name}"
          else
            defs.${name}
        else if opt ? default then
          opt.default
        else
          throw "option ${pathText p} is used but not defined"
      else
        optionValues p opt (defs.${name} or { })
    ) opts;

  values =
    assert checkDefined [ ] evaluated.options definitions;
    optionValues [ ] evaluated.options definitions;

  config = lib.recursiveUpdate base values;

  # A definition as the plain values it stands for (none for a false mkIf).
  definitionsOf =
    v:
    let
      t = if isAttrs v then v._type or null else null;
    in
    if t == "if" then
      (if v.condition then definitionsOf v.content else [ ])
    else if t == "merge" then
      concatMap definitionsOf v.contents
    else if t == "override" then
      definitionsOf v.content
    else
      [ v ];

  isTree = v: isAttrs v && !(isDerivation v) && !(v ? _type);

  merge =
    path: defs:
    if all isTree defs then
      let
        names = attrNames (builtins.foldl' (acc: d: acc // d) { } defs);
        sub = n: concatMap (d: if d ? ${n} then definitionsOf d.${n} else [ ]) defs;
      in
      listToAttrs (
        concatMap (
          n:
          let
            s = sub n;
          in
          if s == [ ] then
            [ ]
          else
            [
              {
                name = n;
                value = merge (path ++ [ n ]) s;
              }
            ]
        ) names
      )
    else if all isList defs then
      concatLists defs
    else if length defs == 1 || all (d: d == head defs) (tail defs) then
      head defs
    else
      throw "${pathText path} is defined more than once, with different values";

  resolved = merge [ ] (definitionsOf evaluated.config);
in
{
  config = resolved;
  inherit values;
  failedAssertions = map (a: a.message) (filter (a: !a.assertion) (resolved.assertions or [ ]));
}
