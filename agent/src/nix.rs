//! The Nix-native system commands' knowledge that needs no process: which attribute,
//! profile and activation entry point a host uses, the profile's generations, whether a
//! reboot is needed, Nix's version order, and the parsers for `nix store diff-closures`
//! and `nix path-info -S`. The supervisor (supervisor.rs) runs the processes; the agent
//! reads generations for `register` and `status`.
//!
//! Everything here works with Nix 2.8 (Debian's `nix-bin`) as well as current Nix and
//! Lix: plain `nix build --json` (2.8 has no `--print-out-paths`), text output of
//! `nix path-info -S` (its `--json` shape changed in later versions), and the profile's
//! `<name>-<N>-link` symlinks, which every Nix writes the same way.

use protocol::{ChangeKind, ClosureDiff, Generation, PackageChange, Timestamp};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Most generations reported to the dashboard (the newest ones).
pub const MAX_GENERATIONS: usize = 100;
/// The serialized changes of a preview stay under this many bytes, so the whole
/// `command_complete` frame stays well under the agent frame limit of 64 KiB.
pub const MAX_CHANGES_BYTES: usize = 48 * 1024;

/// How the built system is activated, and which defaults follow from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Activation {
    /// `<path>/bin/switch-to-configuration switch|boot`.
    Nixos,
    /// nix-darwin: `<path>/activate`.
    Darwin,
    /// Home Manager: `<path>/activate`, as the user.
    HomeManager,
}

impl Activation {
    pub fn parse(s: &str) -> Option<Activation> {
        match s.trim().to_ascii_lowercase().as_str() {
            "nixos" => Some(Activation::Nixos),
            "darwin" | "nix-darwin" => Some(Activation::Darwin),
            "home-manager" => Some(Activation::HomeManager),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Activation::Nixos => "nixos",
            Activation::Darwin => "darwin",
            Activation::HomeManager => "home-manager",
        }
    }

    /// The flake attribute built by default; `{hostname}` is substituted.
    pub fn default_flake_attr(self) -> &'static str {
        match self {
            Activation::Nixos => "nixosConfigurations.{hostname}.config.system.build.toplevel",
            Activation::Darwin => "darwinConfigurations.{hostname}.system",
            Activation::HomeManager => "homeConfigurations.{hostname}.activationPackage",
        }
    }

    /// The entry point inside a built system, relative to it.
    pub fn entry_point(self) -> &'static str {
        match self {
            Activation::Nixos => "bin/switch-to-configuration",
            Activation::Darwin | Activation::HomeManager => "activate",
        }
    }

    /// Whether the profile and the activation need root (a Home Manager profile is the
    /// user's own).
    pub fn needs_root(self) -> bool {
        self != Activation::HomeManager
    }
}

/// What `switch` (and `pull-switch`, and a switch of a preview) does with a built NixOS
/// system: the two activations of `nixos-rebuild` that take effect now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum SwitchAction {
    /// A new generation in the profile, the boot default, activated now.
    #[default]
    Switch,
    /// Activated now only (`switch-to-configuration test`): no generation, no boot entry,
    /// so a reboot returns to the profile's system. A failed gate re-activates the system
    /// that was running before, the same way.
    Test,
}

impl SwitchAction {
    pub fn as_str(self) -> &'static str {
        match self {
            SwitchAction::Switch => "switch",
            SwitchAction::Test => "test",
        }
    }
}

/// `[health]` of the config file: what must hold after a switch's activation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// systemd units that must be active (`systemctl is-active`).
    #[serde(default)]
    pub units: Vec<String>,
    /// URLs that must answer with a 2xx status.
    #[serde(default)]
    pub urls: Vec<String>,
}

/// What the Nix-native commands need to know about this host. Travels in the plan, so the
/// supervisor has it without the agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemSettings {
    pub activation: Activation,
    /// The profile the generations live in (`/nix/var/nix/profiles/system`).
    pub profile: PathBuf,
    /// The flake attribute, `{hostname}` not yet substituted.
    pub flake_attr: String,
    pub confirm_timeout_s: u64,
    /// `switch` or `test` (NixOS only); absent in a spec written before it existed.
    #[serde(default)]
    pub switch_action: SwitchAction,
    /// What runs now (`/run/current-system`); a preview diffs against it.
    pub current_system: PathBuf,
    /// What the machine booted (`/run/booted-system`).
    pub booted_system: PathBuf,
    #[serde(default)]
    pub health: Health,
    /// Prefix `sudo -n` to the commands that need root.
    #[serde(default)]
    pub sudo: bool,
}

impl SystemSettings {
    /// The defaults on NixOS: the system profile, `/run/current-system`,
    /// `/run/booted-system`, a 120 s confirm window, no extra health checks.
    pub fn nixos() -> Self {
        SystemSettings {
            activation: Activation::Nixos,
            profile: PathBuf::from("/nix/var/nix/profiles/system"),
            flake_attr: Activation::Nixos.default_flake_attr().to_owned(),
            confirm_timeout_s: 120,
            switch_action: SwitchAction::Switch,
            current_system: PathBuf::from("/run/current-system"),
            booted_system: PathBuf::from("/run/booted-system"),
            health: Health::default(),
            sudo: false,
        }
    }
}

// ---------------------------------------------------------------- generations

/// The generation number a profile link names (`system-12-link` for profile `system`).
fn link_number(profile_name: &str, link_name: &str) -> Option<u64> {
    let rest = link_name.strip_prefix(profile_name)?.strip_prefix('-')?;
    let number = rest.strip_suffix("-link")?;
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    number.parse().ok()
}

/// The generation the profile points at now, and its store path. None when there is no
/// profile (or it is not a generation link).
pub fn current_generation(profile: &Path) -> Option<(u64, PathBuf)> {
    let name = profile.file_name()?.to_str()?;
    let link = fs::read_link(profile).ok()?;
    let number = link_number(name, link.file_name()?.to_str()?)?;
    let path = fs::canonicalize(profile).ok()?;
    Some((number, path))
}

/// The store path of generation `number` of the profile, if it exists.
pub fn generation_path(profile: &Path, number: u64) -> Option<PathBuf> {
    let name = profile.file_name()?.to_str()?;
    fs::canonicalize(profile.with_file_name(format!("{name}-{number}-link"))).ok()
}

/// The profile's generations, oldest first, at most the newest `MAX_GENERATIONS`; None
/// when there is no profile. `created_at` is the link's own mtime, as
/// `nix-env --list-generations` shows it.
pub fn generations(profile: &Path, booted_system: &Path) -> Option<Vec<Generation>> {
    let name = profile.file_name()?.to_str()?;
    let dir = profile.parent()?;
    // No profile link: this host has no profile to report (not even a stale link set).
    fs::symlink_metadata(profile).ok()?;
    let current = current_generation(profile).map(|(n, _)| n);
    let booted = fs::canonicalize(booted_system).ok();
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).ok()?.flatten() {
        let file_name = entry.file_name();
        let Some(number) = file_name.to_str().and_then(|f| link_number(name, f)) else {
            continue;
        };
        let link = entry.path();
        let Ok(meta) = fs::symlink_metadata(&link) else {
            continue;
        };
        // A link whose store path was collected is not a generation one can go to.
        let Ok(store_path) = fs::canonicalize(&link) else {
            continue;
        };
        found.push(Generation {
            number,
            created_at: Timestamp(meta.mtime()),
            booted: booted.as_deref() == Some(store_path.as_path()),
            store_path: store_path.display().to_string(),
            current: current == Some(number),
        });
    }
    found.sort_by_key(|g| g.number);
    let skip = found.len().saturating_sub(MAX_GENERATIONS);
    found.drain(..skip);
    Some(found)
}

/// The links of a system that a reboot would change.
const BOOT_LINKS: [&str; 3] = ["kernel", "initrd", "kernel-modules"];

/// Whether going from system `a` to system `b` changes the kernel, initrd or kernel
/// modules (compared by where their links lead).
pub fn boot_differs(a: &Path, b: &Path) -> bool {
    BOOT_LINKS.iter().any(|link| {
        let resolve = |sys: &Path| fs::canonicalize(sys.join(link)).ok();
        resolve(a) != resolve(b)
    })
}

/// The running system's kernel differs from the booted one's; false when either is
/// missing (not NixOS, or not booted from a profile).
pub fn reboot_needed(booted_system: &Path, current_system: &Path) -> bool {
    match (
        fs::canonicalize(booted_system),
        fs::canonicalize(current_system),
    ) {
        (Ok(booted), Ok(current)) => boot_differs(&booted, &current),
        _ => false,
    }
}

// ---------------------------------------------------------------- versions

/// One component of a version: a run of digits, or a run of other characters that are
/// not separators; "" once the version is used up.
fn next_component<'a>(s: &mut &'a str) -> &'a str {
    *s = s.trim_start_matches(['.', '-']);
    let digits = s.starts_with(|c: char| c.is_ascii_digit());
    let end = s
        .find(|c: char| {
            if digits {
                !c.is_ascii_digit()
            } else {
                c.is_ascii_digit() || c == '.' || c == '-'
            }
        })
        .unwrap_or(s.len());
    let (component, rest) = s.split_at(end);
    *s = rest;
    component
}

/// Two digit runs as numbers, without overflow for long runs.
fn compare_numbers(a: &str, b: &str) -> Ordering {
    let a = a.trim_start_matches('0');
    let b = b.trim_start_matches('0');
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

fn is_number(c: &str) -> bool {
    !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit())
}

/// Nix's `componentsLT`.
fn component_lt(c1: &str, c2: &str) -> bool {
    let (n1, n2) = (is_number(c1), is_number(c2));
    if n1 && n2 {
        compare_numbers(c1, c2) == Ordering::Less
    } else if (c1.is_empty() && n2) || (c1 == "pre" && c2 != "pre") {
        // A version that ends early is older than one that goes on with a number;
        // `pre` is older than anything else.
        true
    } else if c2 == "pre" {
        false
    } else if n2 {
        // `2.3a` < `2.3.1`: a number beats anything else.
        true
    } else if n1 {
        false
    } else {
        c1 < c2
    }
}

/// Nix's version order (`builtins.compareVersions`, `nix-env -u`).
pub fn compare_versions(v1: &str, v2: &str) -> Ordering {
    let (mut p1, mut p2) = (v1, v2);
    while !p1.is_empty() || !p2.is_empty() {
        let c1 = next_component(&mut p1);
        let c2 = next_component(&mut p2);
        if component_lt(c1, c2) {
            return Ordering::Less;
        }
        if component_lt(c2, c1) {
            return Ordering::Greater;
        }
    }
    Ordering::Equal
}

// ---------------------------------------------------------------- diff-closures

/// Removes ANSI escape sequences (newer Nix colours its output even into a pipe).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        match chars.peek() {
            Some('[') => {
                chars.next();
                // CSI: parameters and intermediates up to a final byte in @..~.
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            Some(']') => {
                // OSC (hyperlinks): up to BEL or ESC \.
                chars.next();
                while let Some(c) = chars.next() {
                    if c == '\u{7}' {
                        break;
                    }
                    if c == '\u{1b}' {
                        chars.next();
                        break;
                    }
                }
            }
            Some(_) => {
                chars.next();
            }
            None => {}
        }
    }
    out
}

/// `+12.3 KiB` / `-0.5 KiB`: a size change, as diff-closures prints it.
fn is_size(s: &str) -> bool {
    let Some(number) = s.strip_suffix(" KiB") else {
        return false;
    };
    let Some(digits) = number.strip_prefix(['+', '-']) else {
        return false;
    };
    !digits.is_empty() && digits.parse::<f64>().is_ok()
}

/// One side of `old → new`: None for `∅`; `ε` (Nix's empty version) becomes "".
fn versions(side: &str) -> Result<Option<Vec<String>>, ()> {
    let side = side.trim();
    if side == "∅" {
        return Ok(None);
    }
    if side.is_empty() {
        return Err(());
    }
    let list: Vec<String> = side
        .split(", ")
        .map(|v| {
            if v == "ε" {
                String::new()
            } else {
                v.to_owned()
            }
        })
        .collect();
    if list.iter().any(|v| v.contains(char::is_whitespace)) {
        return Err(());
    }
    Ok(Some(list))
}

fn classify(old: &Option<Vec<String>>, new: &Option<Vec<String>>) -> ChangeKind {
    match (old, new) {
        (None, Some(_)) => ChangeKind::Added,
        (Some(_), None) => ChangeKind::Removed,
        (Some(o), Some(n)) if o.len() == 1 && n.len() == 1 => {
            match compare_versions(&o[0], &n[0]) {
                Ordering::Less => ChangeKind::Upgraded,
                Ordering::Greater => ChangeKind::Downgraded,
                Ordering::Equal => ChangeKind::Changed,
            }
        }
        _ => ChangeKind::Changed,
    }
}

/// Versions as shown: comma-separated, `ε` for the empty version.
fn show(list: Option<Vec<String>>) -> Option<String> {
    list.map(|l| {
        l.iter()
            .map(|v| if v.is_empty() { "ε" } else { v.as_str() })
            .collect::<Vec<_>>()
            .join(", ")
    })
}

/// Parses the output of `nix store diff-closures OLD NEW`, one package a line:
/// `name: 1.0 → 1.1`, `name: ∅ → 1.3, +12.3 KiB`, `name: +8.0 KiB`. The error is the
/// first line that is none of these.
pub fn parse_diff_closures(text: &str) -> Result<Vec<PackageChange>, String> {
    let mut changes = Vec::new();
    for raw in text.lines() {
        let line = strip_ansi(raw);
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let bad = || raw.to_owned();
        let (name, rest) = line.split_once(": ").ok_or_else(bad)?;
        let name = name.trim();
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(bad());
        }
        let rest = rest.trim();
        // A trailing size change: `…, +1.2 KiB`, or the whole rest for a size-only line.
        let versions_part = if is_size(rest) {
            None
        } else {
            match rest.rsplit_once(", ") {
                Some((head, tail)) if is_size(tail) => Some(head),
                _ => Some(rest),
            }
        };
        let (old, new) = match versions_part {
            None => (None, None),
            Some(part) => {
                let (old, new) = part.split_once(" → ").ok_or_else(bad)?;
                let old = versions(old).map_err(|_| bad())?;
                let new = versions(new).map_err(|_| bad())?;
                if old.is_none() && new.is_none() {
                    return Err(bad());
                }
                (old, new)
            }
        };
        let kind = classify(&old, &new);
        changes.push(PackageChange {
            name: name.to_owned(),
            old: show(old),
            new: show(new),
            kind,
        });
    }
    Ok(changes)
}

/// Packages of a closure, as `nix path-info -r` lists them, all as added: the diff when
/// there is no current system to compare with.
pub fn all_added(paths: &str) -> Vec<PackageChange> {
    let mut by_name: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for path in paths.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let base = path.rsplit('/').next().unwrap_or(path);
        // `<32-char hash>-<name>`.
        let Some((_, full)) = base.split_once('-') else {
            continue;
        };
        let (name, version) = split_name_version(full);
        let versions = by_name.entry(name.to_owned()).or_default();
        if !versions.iter().any(|v| v == version) {
            versions.push(version.to_owned());
        }
    }
    by_name
        .into_iter()
        .map(|(name, mut versions)| {
            versions.sort_by(|a, b| compare_versions(a, b));
            PackageChange {
                name,
                old: None,
                new: show(Some(versions)),
                kind: ChangeKind::Added,
            }
        })
        .collect()
}

/// Nix's `DrvName`: the version starts at the first `-` followed by a non-letter.
fn split_name_version(full: &str) -> (&str, &str) {
    let bytes = full.as_bytes();
    for i in 0..bytes.len() {
        if bytes[i] == b'-' && bytes.get(i + 1).is_some_and(|b| !b.is_ascii_alphabetic()) {
            return (&full[..i], &full[i + 1..]);
        }
    }
    (full, "")
}

/// The closure size from `nix path-info -S PATH` (`PATH<whitespace>SIZE`).
pub fn parse_path_info_size(text: &str) -> Option<u64> {
    let line = strip_ansi(text.lines().find(|l| !l.trim().is_empty())?);
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Keeps the changes whose JSON fits in `MAX_CHANGES_BYTES`; the rest are counted.
pub fn cap_changes(diff: &mut ClosureDiff) {
    let mut bytes = 0;
    let mut keep = diff.changes.len();
    for (i, change) in diff.changes.iter().enumerate() {
        bytes += serde_json::to_vec(change).map(|v| v.len() + 1).unwrap_or(0);
        if bytes > MAX_CHANGES_BYTES {
            keep = i;
            break;
        }
    }
    diff.truncated += (diff.changes.len() - keep) as u64;
    diff.changes.truncate(keep);
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::{Equal, Greater, Less};

    #[test]
    fn versions_in_nix_order() {
        for (a, b, want) in [
            ("1.0", "2.3", Less),
            ("2.1", "2.3", Less),
            ("2.3", "2.3", Equal),
            ("2.5", "2.3", Greater),
            ("3.1", "3.0.14", Greater),
            ("3.0.14", "3.0.15", Less),
            ("2.3.1", "2.3", Greater),
            ("2.3.1", "2.3a", Greater),
            ("2.3pre1", "2.3", Less),
            ("2.3pre3", "2.3pre12", Less),
            ("2.3a", "2.3c", Less),
            ("2.3pre1", "2.3c", Less),
            ("2.3pre1", "2.3q", Less),
            ("1-26.05.1", "1-26.05.2", Less),
            ("2024-01-02", "2024-01-10", Less),
            ("1.01", "1.1", Equal),
            ("99999999999999999999", "100000000000000000000", Less),
            ("", "1", Less),
        ] {
            assert_eq!(compare_versions(a, b), want, "{a} vs {b}");
            assert_eq!(compare_versions(b, a), want.reverse(), "{b} vs {a}");
        }
    }

    fn change(name: &str, old: Option<&str>, new: Option<&str>, kind: ChangeKind) -> PackageChange {
        PackageChange::new(name, old, new, kind)
    }

    #[test]
    fn diff_closures_lines() {
        let text = "openssl: 3.0.14 → 3.0.15\n\
                    zlib: ∅ → 1.3, +12.3 KiB\n\
                    curl: 8.1 → ∅, -300.0 KiB\n\
                    \x1b[1mglibc\x1b[0m: 2.40 → 2.39\n\
                    python3: 3.11.9, 3.12.4 → 3.12.5\n\
                    etc: +8.5 KiB\n\
                    hello: ε → 2.12\n\
                    nixos-system-web: 1-26.05.1 → 1-26.05.2\n\
                    same: 1.0 → 1.0, \x1b[31;1m+9.0 KiB\x1b[0m\n\n";
        let got = parse_diff_closures(text).unwrap();
        use ChangeKind::*;
        assert_eq!(
            got,
            vec![
                change("openssl", Some("3.0.14"), Some("3.0.15"), Upgraded),
                change("zlib", None, Some("1.3"), Added),
                change("curl", Some("8.1"), None, Removed),
                change("glibc", Some("2.40"), Some("2.39"), Downgraded),
                change("python3", Some("3.11.9, 3.12.4"), Some("3.12.5"), Changed),
                change("etc", None, None, Changed),
                change("hello", Some("ε"), Some("2.12"), Upgraded),
                change(
                    "nixos-system-web",
                    Some("1-26.05.1"),
                    Some("1-26.05.2"),
                    Upgraded
                ),
                change("same", Some("1.0"), Some("1.0"), Changed),
            ]
        );
        assert_eq!(parse_diff_closures("").unwrap(), vec![]);
    }

    #[test]
    fn diff_closures_garbage_is_an_error_naming_the_line() {
        for bad in [
            "error: path '/nix/store/x' is not valid",
            "openssl 3.0.14 → 3.0.15",
            "openssl: 3.0.14 -> 3.0.15",
            "openssl: ∅ → ∅",
            "openssl: → 1.0",
            "openssl: +12 MiB",
            ": 1 → 2",
        ] {
            let text = format!("zlib: 1.2 → 1.3\n{bad}\n");
            assert_eq!(parse_diff_closures(&text), Err(bad.to_owned()), "{bad}");
        }
    }

    #[test]
    fn ansi_is_stripped() {
        assert_eq!(
            strip_ansi("\x1b[32;1mok\x1b[0m done\x1b]8;;x\x07"),
            "ok done"
        );
    }

    #[test]
    fn path_info_size() {
        assert_eq!(
            parse_path_info_size("/nix/store/abc-x-1.0\t       1416\n"),
            Some(1416)
        );
        assert_eq!(parse_path_info_size("/nix/store/abc-x   42"), Some(42));
        assert_eq!(parse_path_info_size("garbage"), None);
    }

    #[test]
    fn closure_listing_as_added() {
        let got = all_added(
            "/nix/store/aaaa-openssl-3.0.14\n/nix/store/bbbb-etc\n/nix/store/cccc-nixos-system-web-1-26.05.1\n",
        );
        assert_eq!(
            got,
            vec![
                change("etc", None, Some("ε"), ChangeKind::Added),
                change(
                    "nixos-system-web",
                    None,
                    Some("1-26.05.1"),
                    ChangeKind::Added
                ),
                change("openssl", None, Some("3.0.14"), ChangeKind::Added),
            ]
        );
    }

    #[test]
    fn changes_are_capped() {
        let mut diff = ClosureDiff {
            changes: (0..5000)
                .map(|i| {
                    change(
                        &format!("package-{i}"),
                        Some("1.0"),
                        Some("1.1"),
                        ChangeKind::Upgraded,
                    )
                })
                .collect(),
            closure_bytes_before: 1,
            closure_bytes_after: 2,
            reboot_needed: false,
            truncated: 0,
        };
        cap_changes(&mut diff);
        assert!(diff.changes.len() < 5000);
        assert_eq!(diff.changes.len() as u64 + diff.truncated, 5000);
        assert!(serde_json::to_vec(&diff).unwrap().len() <= MAX_CHANGES_BYTES + 200);
    }

    #[test]
    fn generations_of_a_profile() {
        use std::os::unix::fs::symlink;
        let tmp = tempfile::tempdir().unwrap();
        let store = tmp.path().join("store");
        for n in 1..=3 {
            fs::create_dir_all(store.join(format!("sys{n}"))).unwrap();
            symlink(
                store.join(format!("sys{n}")),
                tmp.path().join(format!("system-{n}-link")),
            )
            .unwrap();
        }
        // Another profile's links and a collected generation are not ours.
        symlink(store.join("sys1"), tmp.path().join("other-4-link")).unwrap();
        symlink(store.join("gone"), tmp.path().join("system-9-link")).unwrap();
        let profile = tmp.path().join("system");
        assert_eq!(generations(&profile, Path::new("/nonexistent")), None);
        symlink("system-2-link", &profile).unwrap();
        let booted = tmp.path().join("booted");
        symlink(store.join("sys1"), &booted).unwrap();
        let gens = generations(&profile, &booted).unwrap();
        assert_eq!(gens.iter().map(|g| g.number).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(
            gens.iter().map(|g| g.current).collect::<Vec<_>>(),
            [false, true, false]
        );
        assert_eq!(
            gens.iter().map(|g| g.booted).collect::<Vec<_>>(),
            [true, false, false]
        );
        assert!(gens[0].store_path.ends_with("/sys1"));
        assert!((gens[0].created_at.secs() - Timestamp::now().secs()).abs() < 60);
        assert_eq!(current_generation(&profile).unwrap().0, 2);

        // Only the newest MAX_GENERATIONS, oldest first.
        for n in (4..=105).filter(|&n| n != 9) {
            symlink(
                store.join("sys1"),
                tmp.path().join(format!("system-{n}-link")),
            )
            .unwrap();
        }
        let gens = generations(&profile, &booted).unwrap();
        assert_eq!(gens.len(), MAX_GENERATIONS);
        // 104 usable (9 was collected): 1 to 4 drop out.
        assert_eq!(gens.first().unwrap().number, 5);
        assert_eq!(gens.last().unwrap().number, 105);
        assert!(generation_path(&profile, 3).unwrap().ends_with("sys3"));
    }
}
