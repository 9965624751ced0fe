//! The fleet diff: the latest preview of many hosts as one list, identical changes
//! grouped ("openssl 3.0.14 → 3.0.15 on 12 hosts"), closure sizes summed, the hosts that
//! would need a reboot named. Pure, so it is tested natively; only the fleet diff panel
//! (a lazily loaded chunk) calls it.

use crate::presentation::human_bytes;
use protocol::{ChangeKind, ClosureDiff};
use std::collections::BTreeMap;

/// One change as it appears on one or more hosts.
#[derive(Clone, Debug, PartialEq)]
pub struct ChangeGroup {
    pub name: String,
    pub old: Option<String>,
    pub new: Option<String>,
    pub kind: ChangeKind,
    /// The hosts with exactly this change, in the order they were given.
    pub hosts: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct FleetDiff {
    /// Most widespread first, then by package name.
    pub groups: Vec<ChangeGroup>,
    pub hosts: usize,
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// Hosts whose new system has another kernel, so switching needs a reboot.
    pub reboot_needed: Vec<String>,
    /// Changes the agents left out (frame limit), summed.
    pub truncated: u64,
}

/// Group the changes of `(host, diff)` pairs: the same package with the same versions
/// and kind on several hosts is one line.
pub fn aggregate<'a>(previews: impl IntoIterator<Item = (&'a str, &'a ClosureDiff)>) -> FleetDiff {
    // The kind by its wire name: `ChangeKind` has no order.
    type Key<'k> = (&'k str, Option<&'k str>, Option<&'k str>, &'static str);
    let mut groups: BTreeMap<Key<'a>, Vec<String>> = BTreeMap::new();
    let mut out = FleetDiff::default();
    for (host, diff) in previews {
        out.hosts += 1;
        out.bytes_before += diff.closure_bytes_before;
        out.bytes_after += diff.closure_bytes_after;
        out.truncated += diff.truncated;
        if diff.reboot_needed {
            out.reboot_needed.push(host.to_owned());
        }
        for c in &diff.changes {
            let key = (
                c.name.as_str(),
                c.old.as_deref(),
                c.new.as_deref(),
                c.kind.as_str(),
            );
            let hosts = groups.entry(key).or_default();
            // A diff naming the same change twice still counts its host once.
            if hosts.last().map(String::as_str) != Some(host) {
                hosts.push(host.to_owned());
            }
        }
    }
    out.groups = groups
        .into_iter()
        .map(|((name, old, new, kind), hosts)| ChangeGroup {
            name: name.to_owned(),
            old: old.map(str::to_owned),
            new: new.map(str::to_owned),
            kind: ChangeKind::parse(kind).unwrap_or(ChangeKind::Changed),
            hosts,
        })
        .collect();
    // Stable: equal counts keep the map's order (name, then versions).
    out.groups.sort_by_key(|g| std::cmp::Reverse(g.hosts.len()));
    out
}

/// A mark beside the change, so the kind does not rest on colour alone.
pub fn change_mark(kind: ChangeKind) -> &'static str {
    match kind {
        ChangeKind::Upgraded => "↑",
        ChangeKind::Downgraded => "↓",
        ChangeKind::Added => "+",
        ChangeKind::Removed => "−",
        ChangeKind::Changed => "~",
    }
}

/// "openssl 3.0.14 → 3.0.15", "zlib added (1.3)", "curl removed (8.1)".
pub fn change_text(g: &ChangeGroup) -> String {
    fn version(v: &Option<String>) -> Option<&str> {
        v.as_deref().filter(|v| !v.is_empty())
    }
    match (g.kind, version(&g.old), version(&g.new)) {
        (ChangeKind::Added, _, Some(new)) => format!("{} added ({new})", g.name),
        (ChangeKind::Added, _, None) => format!("{} added", g.name),
        (ChangeKind::Removed, Some(old), _) => format!("{} removed ({old})", g.name),
        (ChangeKind::Removed, None, _) => format!("{} removed", g.name),
        (_, old, new) => format!("{} {} → {}", g.name, old.unwrap_or("∅"), new.unwrap_or("∅")),
    }
}

/// " on 12 hosts", " on 1 host".
pub fn on_hosts(count: usize) -> String {
    let plural = if count == 1 { "" } else { "s" };
    format!(" on {count} host{plural}")
}

/// "1.2 GiB → 1.3 GiB (+100.0 MiB)".
pub fn size_change(before: u64, after: u64) -> String {
    let delta = if after >= before {
        format!("+{}", human_bytes(after - before))
    } else {
        format!("−{}", human_bytes(before - after))
    };
    format!("{} → {} ({delta})", human_bytes(before), human_bytes(after))
}

/// "reboot needed on 2: a, b" (None when no host needs one).
pub fn reboot_text(hosts: &[String]) -> Option<String> {
    (!hosts.is_empty()).then(|| format!("reboot needed on {}: {}", hosts.len(), hosts.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::PackageChange;

    fn change(name: &str, old: Option<&str>, new: Option<&str>, kind: ChangeKind) -> PackageChange {
        PackageChange::new(name, old, new, kind)
    }

    fn diff(changes: Vec<PackageChange>, before: u64, after: u64, reboot: bool) -> ClosureDiff {
        ClosureDiff {
            changes,
            closure_bytes_before: before,
            closure_bytes_after: after,
            reboot_needed: reboot,
            truncated: 0,
        }
    }

    #[test]
    fn identical_changes_are_grouped_and_counted() {
        let openssl = change(
            "openssl",
            Some("3.0.14"),
            Some("3.0.15"),
            ChangeKind::Upgraded,
        );
        let zlib = change("zlib", None, Some("1.3"), ChangeKind::Added);
        let curl = change("curl", Some("8.1"), None, ChangeKind::Removed);
        // Same package, other versions: its own line.
        let openssl_other = change(
            "openssl",
            Some("3.0.13"),
            Some("3.0.15"),
            ChangeKind::Upgraded,
        );
        let a = diff(vec![openssl.clone(), zlib.clone()], 1024, 2048, false);
        let b = diff(
            vec![openssl.clone(), curl.clone(), zlib.clone()],
            1024,
            1024,
            true,
        );
        let c = diff(vec![openssl_other, curl, openssl.clone()], 2048, 1024, true);
        let d = diff(vec![], 0, 0, false);
        let fleet = aggregate([("a", &a), ("b", &b), ("c", &c), ("d", &d)]);
        assert_eq!(fleet.hosts, 4);
        assert_eq!(fleet.bytes_before, 4096);
        assert_eq!(fleet.bytes_after, 4096);
        assert_eq!(fleet.reboot_needed, ["b", "c"]);
        let lines: Vec<String> = fleet
            .groups
            .iter()
            .map(|g| format!("{}{}", change_text(g), on_hosts(g.hosts.len())))
            .collect();
        assert_eq!(
            lines,
            [
                "openssl 3.0.14 → 3.0.15 on 3 hosts",
                "curl removed (8.1) on 2 hosts",
                "zlib added (1.3) on 2 hosts",
                "openssl 3.0.13 → 3.0.15 on 1 host",
            ]
        );
        assert_eq!(fleet.groups[0].hosts, ["a", "b", "c"]);
        assert_eq!(fleet.groups[1].hosts, ["b", "c"]);
        assert_eq!(
            reboot_text(&fleet.reboot_needed).as_deref(),
            Some("reboot needed on 2: b, c")
        );
    }

    #[test]
    fn marks_sizes_and_an_empty_fleet() {
        assert_eq!(change_mark(ChangeKind::Upgraded), "↑");
        assert_eq!(change_mark(ChangeKind::Downgraded), "↓");
        assert_eq!(change_mark(ChangeKind::Added), "+");
        assert_eq!(change_mark(ChangeKind::Removed), "−");
        let down = ChangeGroup {
            name: "glibc".into(),
            old: Some("2.40".into()),
            new: Some("2.39".into()),
            kind: ChangeKind::Downgraded,
            hosts: vec!["a".into()],
        };
        assert_eq!(change_text(&down), "glibc 2.40 → 2.39");
        assert_eq!(
            size_change(1024 * 1024 * 1024, 1024 * 1024 * 1024 + 100 * 1024 * 1024),
            "1.0 GiB → 1.1 GiB (+100.0 MiB)"
        );
        assert_eq!(size_change(2048, 1024), "2.0 KiB → 1.0 KiB (−1.0 KiB)");
        let empty = aggregate([]);
        assert_eq!(empty, FleetDiff::default());
        assert_eq!(reboot_text(&empty.reboot_needed), None);
    }

    #[test]
    fn a_change_listed_twice_counts_its_host_once() {
        let x = change("x", Some("1"), Some("2"), ChangeKind::Upgraded);
        let a = diff(vec![x.clone(), x], 0, 0, false);
        let fleet = aggregate([("a", &a)]);
        assert_eq!(fleet.groups.len(), 1);
        assert_eq!(fleet.groups[0].hosts, ["a"]);
    }
}
