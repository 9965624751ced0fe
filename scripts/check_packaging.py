#!/usr/bin/env python3
"""Checks the installation files (flake.nix, nix/, packaging/) against the real binaries.

No nixpkgs can be fetched here, so nothing is built with Nix. What is checked instead:
  1. every .nix file of the repository parses (nix-instantiate --parse);
  2. the flake's outputs evaluate with a stand-in nixpkgs, and each module renders its
     service from example settings, through the stand-in lib and module system of
     nix/tests/ (nix/tests/cases.nix lists the examples);
  3. each rendered unit, and each plain unit in packaging/, is held against the binaries:
     every flag is one `--help` names and the binary's own parser accepts the whole
     command line (it is run with `--help` appended, which parses and validates every
     argument, then prints help instead of starting); every NIXDECK_* environment name is
     one `--help` names; the agent accepts the TOML its module renders; the properties
     the agent and the server rely on are set (KillMode=process, no restart on switch,
     DynamicUser and the sandbox, ...);
  4. systemd-analyze verify on every systemd unit (rendered and plain), and launchd's
     plist structure on every launchd job (rendered and the plain plist).
Binaries: --server-bin / --agent-bin (default target/debug/). Exit 1 on any failure.
"""

import argparse
import json
import os
import plistlib
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Offline Nix without a nixbld group, as in the agent's tests (agent/README.md); only
# for the nix calls made here.
NIX_ENV = dict(
    os.environ,
    NIX_CONFIG="experimental-features = nix-command flakes\nsandbox = false\n"
    "substituters =\nbuild-users-group =\n",
)
# The binaries run without our variables, so the environment cannot change what they accept.
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("NIXDECK_")}

failures = []
checked = 0


def check(ok, what, detail=""):
    global checked
    checked += 1
    if not ok:
        failures.append(f"{what}: {detail}" if detail else what)
        print(f"  FAIL {what}" + (f"\n       {detail}" if detail else ""))
    return ok


def truthy(v):
    return str(v).lower() in ("true", "yes", "1", "on")


class Binary:
    """A built binary and what its --help accepts."""

    def __init__(self, path):
        self.path = str(path)
        self.name = Path(path).name
        out = subprocess.run(
            [self.path, "--help"], capture_output=True, text=True, env=CLEAN_ENV
        )
        if out.returncode != 0:
            sys.exit(f"check-packaging: {self.path} --help failed: {out.stderr}")
        self.help = out.stdout
        self.flags = set(re.findall(r"(?<![\w-])--[a-z0-9][a-z0-9-]*", self.help))
        self.env = set(re.findall(r"\bNIXDECK_[A-Z0-9_]+\b", self.help))

    def accepts(self, args):
        """The binary's own parser on the full argv (values validated too)."""
        out = subprocess.run(
            [self.path, *args, "--help"], capture_output=True, text=True, env=CLEAN_ENV
        )
        return out.returncode == 0, out.stderr.strip()


def check_argv(where, argv, binaries, expected):
    """argv[0] must be the expected program; every flag and the whole line must be accepted."""
    check(Path(argv[0]).name == expected, f"{where}: starts {expected}", f"argv[0] is {argv[0]}")
    binary = binaries[expected]
    for arg in argv[1:]:
        flag = arg.split("=", 1)[0]
        if flag.startswith("--"):
            check(flag in binary.flags, f"{where}: {flag} is a flag of {expected} --help")
    ok, err = binary.accepts(argv[1:])
    check(ok, f"{where}: {expected} accepts its command line", err)


def check_env_names(where, names, binaries, expected):
    for name in names:
        if name.startswith("NIXDECK_"):
            check(
                name in binaries[expected].env,
                f"{where}: {name} is an environment name of {expected} --help",
            )


def systemd_exec_words(line):
    """ExecStart's words, as systemd splits them (double quotes, %% and $$ escapes); %d is
    the credentials directory, which only exists when the unit runs."""
    line = line.replace("%d", "/run/credentials/unit")
    words = shlex.split(line, posix=True)
    return [w.replace("%%", "%").replace("$$", "$") for w in words]


# ---- units as sections of key -> [values] -------------------------------------------------


def parse_unit_file(text):
    unit, section = {}, None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = unit.setdefault(line[1:-1], {})
            continue
        key, _, value = line.partition("=")
        section.setdefault(key.strip(), []).append(value.strip())
    return unit


def render_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def section_from_attrs(attrs):
    """A NixOS/home-manager unit section: a list is one line per element, as they render it."""
    out = {}
    for key, value in attrs.items():
        values = value if isinstance(value, list) else [value]
        if values:
            out[key] = [render_value(v) for v in values]
    return out


def unit_from_nixos(svc):
    """systemd.services.<name> as NixOS writes the unit (the parts our modules use)."""
    unit = {"Unit": {}, "Service": section_from_attrs(svc.get("serviceConfig", {})), "Install": {}}
    if "description" in svc:
        unit["Unit"]["Description"] = [svc["description"]]
    for key, name in (("wants", "Wants"), ("after", "After"), ("requires", "Requires")):
        if svc.get(key):
            unit["Unit"][name] = [" ".join(svc[key])]
    if svc.get("restartIfChanged") is False:
        unit["Unit"]["X-RestartIfChanged"] = ["false"]
    unit["Unit"].update(section_from_attrs(svc.get("unitConfig", {})))
    env = dict(svc.get("environment", {}))
    if svc.get("path"):
        env["PATH"] = ":".join(f"{p}/bin" for p in svc["path"])
    if env:
        unit["Service"].setdefault("Environment", []).extend(
            f'"{k}={v}"' for k, v in sorted(env.items())
        )
    if svc.get("wantedBy"):
        unit["Install"]["WantedBy"] = [" ".join(svc["wantedBy"])]
    return unit


def unit_from_home_manager(svc):
    return {section: section_from_attrs(attrs) for section, attrs in svc.items()}


def unit_text(unit):
    lines = []
    for section, keys in unit.items():
        if not keys:
            continue
        lines.append(f"[{section}]")
        for key, values in keys.items():
            lines.extend(f"{key}={v}" for v in values)
        lines.append("")
    return "\n".join(lines)


def unit_env_names(unit):
    names = []
    for entry in unit.get("Service", {}).get("Environment", []):
        for word in shlex.split(entry):
            names.append(word.split("=", 1)[0])
    return names


def verify_unit(where, unit, binaries, expected, user=False):
    """systemd-analyze verify on the unit with ExecStart pointing at the real binary (it
    checks that the program exists). Any warning counts: unknown keys are only warned."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = json.loads(json.dumps(unit))
        line = get(unit, "Service", "ExecStart")
        copy["Service"]["ExecStart"] = [replace_program(line, binaries[expected].path)]
        path = Path(tmp) / f"{expected}.service"
        path.write_text(unit_text(copy))
        cmd = ["systemd-analyze", "verify", "--man=no", "--generators=no"]
        if user:
            cmd.append("--user")
        # A user manager needs a runtime directory; an empty one of our own will do.
        env = dict(os.environ, XDG_RUNTIME_DIR=tmp) if user else None
        out = subprocess.run(cmd + [str(path)], capture_output=True, text=True, env=env)
        noise = [l for l in out.stderr.splitlines() if l.strip()]
        check(
            out.returncode == 0 and not noise,
            f"{where}: systemd-analyze verify",
            "\n       ".join(noise) or f"exit {out.returncode}",
        )


def replace_program(line, real):
    """ExecStart with its program (the first word, quoted or not) replaced."""
    if line.startswith('"'):
        return f'"{real}"' + line[line.index('"', 1) + 1:]
    _, _, rest = line.partition(" ")
    return f"{real} {rest}".rstrip()


def get(unit, section, key):
    values = unit.get(section, {}).get(key, [])
    return values[-1] if values else None


def check_server_unit(where, unit):
    s = "Service"
    check(truthy(get(unit, s, "DynamicUser")), f"{where}: DynamicUser")
    check(get(unit, s, "StateDirectory") == "nixdeck", f"{where}: StateDirectory=nixdeck")
    check(get(unit, s, "ProtectSystem") == "strict", f"{where}: ProtectSystem=strict")
    for key in ("NoNewPrivileges", "PrivateTmp", "PrivateDevices", "ProtectHome",
                "ProtectKernelTunables", "ProtectKernelModules", "ProtectControlGroups",
                "RestrictNamespaces", "LockPersonality", "MemoryDenyWriteExecute"):
        check(truthy(get(unit, s, key)), f"{where}: {key}")
    check(bool(unit[s].get("SystemCallFilter")), f"{where}: SystemCallFilter")
    check(bool(unit[s].get("RestrictAddressFamilies")), f"{where}: RestrictAddressFamilies")
    check(get(unit, s, "User") in (None, ""), f"{where}: no fixed User (the dynamic one)")
    # Every credential ExecStart reads must be loaded.
    line = get(unit, s, "ExecStart")
    loaded = {c.split(":", 1)[0] for c in unit[s].get("LoadCredential", [])}
    for name in re.findall(r"%d/([\w.-]+)", line):
        check(name in loaded, f"{where}: credential {name} is loaded (LoadCredential)")


def check_agent_systemd(where, unit, nixos):
    s = "Service"
    check(get(unit, s, "KillMode") == "process", f"{where}: KillMode=process")
    check(get(unit, s, "Restart") == "always", f"{where}: Restart=always")
    check(get(unit, s, "User") in (None, "", "root"), f"{where}: runs as root (switches the system)")
    if nixos:
        check(get(unit, "Unit", "X-RestartIfChanged") == "false",
              f"{where}: restartIfChanged = false")


# ---- launchd --------------------------------------------------------------------------

# launchd.plist(5): the keys our jobs use, and their types.
LAUNCHD_KEYS = {
    "Label": str, "ProgramArguments": list, "Program": str, "EnvironmentVariables": dict,
    "RunAtLoad": bool, "KeepAlive": (bool, dict), "AbandonProcessGroup": bool,
    "ProcessType": str, "StandardOutPath": str, "StandardErrorPath": str,
    "WorkingDirectory": str, "UserName": str, "GroupName": str, "ThrottleInterval": int,
}


def check_launchd(where, job, binaries, expected):
    for key, value in job.items():
        if check(key in LAUNCHD_KEYS, f"{where}: {key} is a launchd.plist key"):
            check(isinstance(value, LAUNCHD_KEYS[key]), f"{where}: {key} has launchd's type",
                  f"{type(value).__name__}")
    args = job.get("ProgramArguments", [])
    check(bool(args) and all(isinstance(a, str) for a in args),
          f"{where}: ProgramArguments is a list of strings")
    check(all(isinstance(v, str) for v in job.get("EnvironmentVariables", {}).values()),
          f"{where}: EnvironmentVariables are strings")
    check(job.get("KeepAlive") is True, f"{where}: KeepAlive")
    check(job.get("AbandonProcessGroup") is True, f"{where}: AbandonProcessGroup")
    check(job.get("RunAtLoad") is True, f"{where}: RunAtLoad")
    # No UserName: a daemon runs as root (it switches the system), an agent as its user.
    check("UserName" not in job, f"{where}: no UserName")
    # A round trip through Apple's XML format: what launchd reads.
    data = plistlib.dumps(job, fmt=plistlib.FMT_XML)
    check(plistlib.loads(data) == job, f"{where}: renders as an XML plist")
    if args:
        check_argv(where, args, binaries, expected)
    check_env_names(where, job.get("EnvironmentVariables", {}).keys(), binaries, expected)


# ---- the agent's TOML -----------------------------------------------------------------


def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    raise ValueError(f"no TOML for {v!r}")


def to_toml(data, prefix=()):
    """What pkgs.formats.toml renders, for the plain data the modules take."""
    lines = [f"{json.dumps(k)} = {toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for k, v in data.items():
        if isinstance(v, dict):
            scalars = {a: b for a, b in v.items() if not isinstance(b, dict)}
            if scalars or not v:
                lines.append("\n[" + ".".join(json.dumps(p) for p in (*prefix, k)) + "]")
            lines.append(to_toml(v, (*prefix, k)))
    return "\n".join(l for l in lines if l)


_accepted_configs = {}


def check_agent_config(where, settings, agent):
    """The agent reads --config at start and exits 2 on any error in it. An accepted file
    lets it go on: it logs its start and connects (here to a closed loopback port, and
    retries). So: the run is alive after its first log line -> accepted."""
    text = to_toml(settings)
    check(tomllib.loads(text) == settings, f"{where}: settings render as TOML", text)
    if text not in _accepted_configs:
        _accepted_configs[text] = run_agent_with_config(agent, text)
    ok, err = _accepted_configs[text]
    check(ok, f"{where}: nixdeck-agent accepts the rendered --config", err)


def run_agent_with_config(agent, text):
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "agent.toml"
        conf.write_text(text)
        proc = subprocess.Popen(
            [agent.path, "--url", "http://127.0.0.1:9", "--token", "packaging-check",
             "--hostname", "packaging-check", "--state-dir", f"{tmp}/state",
             "--config", str(conf)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=CLEAN_ENV,
        )
        lines = []
        reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
        reader.start()
        deadline = time.monotonic() + 20
        while proc.poll() is None and not lines and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # an error exit follows its message at once
        rc = proc.poll()
        if rc is None:
            proc.kill()
        proc.wait()
        reader.join(timeout=5)
        if rc is None and lines:
            return True, ""
        return False, "".join(lines).strip() or f"exit {rc}, nothing logged"


# ---- the checks -----------------------------------------------------------------------


def nix_files():
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.nix"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )
    return [ROOT / p for p in out.stdout.split()]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--server-bin", type=Path, default=ROOT / "target/debug/nixdeck")
    ap.add_argument("--agent-bin", type=Path, default=ROOT / "target/debug/nixdeck-agent")
    args = ap.parse_args()
    # Absolute: the units are verified from a temporary directory, and systemd wants an
    # absolute ExecStart.
    args.server_bin, args.agent_bin = args.server_bin.resolve(), args.agent_bin.resolve()
    for tool in ("nix-instantiate", "systemd-analyze"):
        if not shutil.which(tool):
            sys.exit(f"check-packaging: {tool} is missing; run scripts/setup.sh")
    binaries = {"nixdeck": Binary(args.server_bin), "nixdeck-agent": Binary(args.agent_bin)}

    print("-- every .nix file parses")
    files = nix_files()
    check(len(files) > 0, "the repository has .nix files")
    for f in files:
        out = subprocess.run(["nix-instantiate", "--parse", str(f)], capture_output=True,
                             text=True, env=NIX_ENV)
        check(out.returncode == 0, f"{f.relative_to(ROOT)} parses", out.stderr.strip())

    print("-- the flake's outputs and every module, with the stand-in lib (nix/tests/)")
    out = subprocess.run(
        ["nix-instantiate", "--eval", "--strict", "--json", str(ROOT / "nix/tests/cases.nix")],
        capture_output=True, text=True, env=NIX_ENV,
    )
    if not check(out.returncode == 0, "nix/tests/cases.nix evaluates", out.stderr.strip()):
        return report()
    data = json.loads(out.stdout)

    flake = data["flake"]
    check(flake["inputs"] == ["nixpkgs"], "flake: nixpkgs is the only input", str(flake["inputs"]))
    for name in ("packages", "overlays", "nixosModules", "darwinModules",
                 "homeManagerModules", "devShells", "checks"):
        check(name in flake["outputs"], f"flake: outputs.{name}")
    for system, names in flake["packages"].items():
        for pkg in ("nixdeck", "nixdeck-agent"):
            check(pkg in names, f"flake: packages.{system}.{pkg}")
            check(flake["packageMainPrograms"][system].get(pkg) == pkg,
                  f"flake: packages.{system}.{pkg} runs {pkg}")
        check("default" in flake["devShells"][system], f"flake: devShells.{system}.default")
    check(set(flake["overlay"]) >= {"nixdeck", "nixdeck-agent"}, "flake: the overlay adds both packages")
    check(set(flake["nixosModules"]) >= {"nixdeck-server", "nixdeck-agent"},
          "flake: nixosModules.{nixdeck-server,nixdeck-agent}")
    check("nixdeck-agent" in flake["darwinModules"], "flake: darwinModules.nixdeck-agent")
    check("nixdeck-agent" in flake["homeManagerModules"], "flake: homeManagerModules.nixdeck-agent")

    print("-- the packages' view of the workspace (nix/workspace.nix)")
    ws = data["workspace"]
    cargo = tomllib.loads((ROOT / "Cargo.toml").read_text())
    pin = cargo["workspace"]["dependencies"]["wasm-bindgen"]
    check(pin == f"={ws['wasmBindgenVersion']}",
          "wasm-bindgen: Cargo.toml's pin is the version the package builds with",
          f"Cargo.toml {pin}, nix {ws['wasmBindgenVersion']}")
    check(ws["wasmBindgenAttr"] in data["serverPackageArgs"],
          f"nix/package.nix takes {ws['wasmBindgenAttr']} (the locked wasm-bindgen CLI)",
          str(data["serverPackageArgs"]))
    for member in cargo["workspace"]["members"]:
        check(member in ws["sourcePaths"], f"the package source has workspace member {member}")
    for p in ws["sourcePaths"]:
        check((ROOT / p).exists(), f"the package source path {p} exists")

    for case in data["cases"]:
        where = case["name"]
        print(f"-- module: {where}")
        if case["expectFailure"]:
            check(case["failedAssertions"] != [], f"{where}: refused by an assertion")
            continue
        check(case["failedAssertions"] == [], f"{where}: no assertion fails",
              "; ".join(case["failedAssertions"]))
        expected, job = case["binary"], case["unit"]
        if case["kind"] == "launchd":
            check_launchd(where, job, binaries, expected)
        else:
            unit = unit_from_nixos(job) if case["kind"] == "nixos" else unit_from_home_manager(job)
            argv = systemd_exec_words(get(unit, "Service", "ExecStart"))
            check_argv(where, argv, binaries, expected)
            check_env_names(where, unit_env_names(unit), binaries, expected)
            if expected == "nixdeck":
                check_server_unit(where, unit)
            else:
                check_agent_systemd(where, unit, nixos=case["kind"] == "nixos")
            verify_unit(where, unit, binaries, expected, user=case["kind"] == "home-systemd")
        if expected == "nixdeck-agent" and case["settings"]:
            check_agent_config(where, case["settings"], binaries["nixdeck-agent"])

    print("-- plain units (packaging/)")
    for path, expected in (("packaging/systemd/nixdeck.service", "nixdeck"),
                           ("packaging/systemd/nixdeck-agent.service", "nixdeck-agent")):
        unit = parse_unit_file((ROOT / path).read_text())
        argv = systemd_exec_words(get(unit, "Service", "ExecStart"))
        check_argv(path, argv, binaries, expected)
        if expected == "nixdeck":
            check_server_unit(path, unit)
        else:
            check_agent_systemd(path, unit, nixos=False)
        verify_unit(path, unit, binaries, expected)
    for path, expected in (("packaging/systemd/nixdeck.env", "nixdeck"),
                           ("packaging/systemd/nixdeck-agent.env", "nixdeck-agent")):
        names = re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", (ROOT / path).read_text(), re.M)
        check(len(names) > 0, f"{path} names settings")
        check_env_names(path, names, binaries, expected)
    plist_path = ROOT / "packaging/launchd/org.nixdeck.agent.plist"
    raw = plist_path.read_bytes()
    check(b'<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN"' in raw,
          "packaging/launchd: Apple's plist DOCTYPE")
    try:
        job = plistlib.loads(raw, fmt=plistlib.FMT_XML)
    except Exception as e:  # noqa: BLE001 -- any parse error is the finding
        check(False, "packaging/launchd: the plist parses", str(e))
    else:
        check(job.get("Label") == plist_path.stem, "packaging/launchd: Label is the file's name")
        check_launchd("packaging/launchd", job, binaries, "nixdeck-agent")

    print("-- environment names in the docs and modules")
    known = binaries["nixdeck"].env | binaries["nixdeck-agent"].env
    texts = [ROOT / "docs/INSTALL.md", *sorted((ROOT / "nix").rglob("*.nix")),
             *sorted((ROOT / "packaging").rglob("*")), ROOT / "flake.nix"]
    for f in texts:
        if f.is_file() and f.exists():
            for name in sorted(set(re.findall(r"\bNIXDECK_[A-Z0-9_]+\b", f.read_text()))):
                check(name in known, f"{f.relative_to(ROOT)}: {name} is named by a --help")

    return report()


def report():
    failed = len(failures)
    print(f"check-packaging: {checked - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
