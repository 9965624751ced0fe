//! Pure derivations from host state to what the page shows: classes, texts, tooltips.
//! One home for them, shared by table rows and (later) mobile cards, and tested natively.

use protocol::time::format_age;
use protocol::{CheckStatus, Metrics, StatusCheck, Timestamp};

/// Status indicator: ripple when online and idle, a running dot when busy, an offline dot.
/// The class names are the seed's DOM hooks, kept for operators' scripts.
pub fn indicator_class(online: bool, busy: bool) -> &'static str {
    match (online, busy) {
        (false, _) => "status-indicator status-dot status-offline",
        (true, true) => "status-indicator status-dot status-running",
        (true, false) => "status-indicator status-ripple",
    }
}

pub fn indicator_title(online: bool, busy: bool) -> &'static str {
    match (online, busy) {
        (false, _) => "Offline",
        (true, true) => "Online, running a command",
        (true, false) => "Online and idle",
    }
}

/// "12%" or "—" when unknown.
pub fn percent(value: Option<f64>) -> String {
    match value {
        Some(v) if v.is_finite() => format!("{v:.0}%"),
        _ => "—".to_owned(),
    }
}

/// Values at or above 80 % are highlighted.
pub fn metric_class(value: Option<f64>) -> &'static str {
    match value {
        Some(v) if v >= 80.0 => "metric metric-high",
        _ => "metric",
    }
}

pub fn metrics_title(m: Option<Metrics>) -> String {
    match m {
        Some(m) => format!(
            "RAM {:.0}% · Swap {:.0}% · Load {:.2}",
            m.ram, m.swap, m.load
        ),
        None => "No metrics reported yet".to_owned(),
    }
}

/// Last seen as "5s ago", and its freshness class: ok within 2 heartbeats, warn within 10.
pub fn last_seen(
    seen: Option<Timestamp>,
    now: Timestamp,
    interval_s: u32,
) -> (String, &'static str) {
    let Some(seen) = seen else {
        return ("never".to_owned(), "last-seen stale");
    };
    let age = (now.secs() - seen.secs()).max(0);
    let interval = i64::from(interval_s.max(1));
    let class = if age <= 2 * interval {
        "last-seen ok"
    } else if age <= 10 * interval {
        "last-seen warn"
    } else {
        "last-seen stale"
    };
    (format!("{} ago", format_age(age)), class)
}

/// A commit as 7 characters.
pub fn short_generation(generation: Option<&str>) -> String {
    match generation {
        Some(g) if !g.is_empty() => g.chars().take(7).collect(),
        _ => "—".to_owned(),
    }
}

/// The five compartments, in display order, with their labels.
pub const COMPARTMENTS: [(&str, &str); 5] = [
    ("agent", "Agent"),
    ("git", "Git"),
    ("lock", "Lock"),
    ("system", "System"),
    ("tests", "Tests"),
];

/// The seed's compartment classes: `needs-update`, `error`, `unknown` (ok has none).
pub fn compartment_class(status: CheckStatus) -> &'static str {
    match status {
        CheckStatus::Ok => "update-compartment",
        CheckStatus::Outdated => "update-compartment needs-update",
        CheckStatus::Error => "update-compartment error",
        CheckStatus::Unknown => "update-compartment unknown",
        CheckStatus::Working => "update-compartment working",
    }
}

/// A two-letter code beside the colour, so the state does not rest on colour alone.
pub fn compartment_code(status: CheckStatus) -> &'static str {
    match status {
        CheckStatus::Ok => "OK",
        CheckStatus::Outdated => "UP",
        CheckStatus::Error => "ER",
        CheckStatus::Unknown => "??",
        CheckStatus::Working => "..",
    }
}

/// "Git: outdated: the host is at abc1234, the branch at def5678 (checked 5m ago)".
pub fn compartment_title(label: &str, check: &StatusCheck, now: Timestamp) -> String {
    let state = match check.status {
        CheckStatus::Ok => "ok",
        CheckStatus::Outdated => "needs an update",
        CheckStatus::Error => "error",
        CheckStatus::Unknown => "unknown",
        CheckStatus::Working => "working",
    };
    let mut title = format!("{label}: {state}");
    if !check.message.is_empty() {
        title.push_str(" — ");
        title.push_str(&check.message);
    }
    if let Some(at) = check.checked_at {
        title.push_str(&format!(
            " (checked {} ago)",
            format_age(now.secs() - at.secs())
        ));
    }
    title
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indicator() {
        assert_eq!(
            indicator_class(true, false),
            "status-indicator status-ripple"
        );
        assert_eq!(
            indicator_class(true, true),
            "status-indicator status-dot status-running"
        );
        assert_eq!(
            indicator_class(false, true),
            "status-indicator status-dot status-offline"
        );
    }

    #[test]
    fn metrics() {
        assert_eq!(percent(Some(12.4)), "12%");
        assert_eq!(percent(None), "—");
        assert_eq!(percent(Some(f64::NAN)), "—");
        assert_eq!(metric_class(Some(80.0)), "metric metric-high");
        assert_eq!(metric_class(Some(79.9)), "metric");
        assert_eq!(metric_class(None), "metric");
    }

    #[test]
    fn freshness() {
        let now = Timestamp(1_000);
        assert_eq!(
            last_seen(Some(Timestamp(995)), now, 5),
            ("5s ago".into(), "last-seen ok")
        );
        assert_eq!(last_seen(Some(Timestamp(970)), now, 5).1, "last-seen warn");
        assert_eq!(last_seen(Some(Timestamp(900)), now, 5).1, "last-seen stale");
        assert_eq!(last_seen(None, now, 5).0, "never");
        // A clock slightly behind the heartbeat never shows a negative age.
        assert_eq!(last_seen(Some(Timestamp(1_002)), now, 5).0, "0s ago");
    }

    #[test]
    fn compartments() {
        assert_eq!(compartment_class(CheckStatus::Ok), "update-compartment");
        assert_eq!(
            compartment_class(CheckStatus::Outdated),
            "update-compartment needs-update"
        );
        assert_eq!(
            compartment_class(CheckStatus::Error),
            "update-compartment error"
        );
        assert_eq!(
            compartment_class(CheckStatus::Unknown),
            "update-compartment unknown"
        );
        assert_eq!(compartment_code(CheckStatus::Working), "..");
        let check = StatusCheck::new(
            CheckStatus::Outdated,
            "behind by 2 commits",
            Some(Timestamp(100)),
        );
        assert_eq!(
            compartment_title("Git", &check, Timestamp(400)),
            "Git: needs an update — behind by 2 commits (checked 5m ago)"
        );
        assert_eq!(
            compartment_title("Tests", &StatusCheck::default(), Timestamp(0)),
            "Tests: unknown"
        );
    }

    #[test]
    fn generations() {
        assert_eq!(short_generation(Some("0123456789abcdef")), "0123456");
        assert_eq!(short_generation(Some("")), "—");
        assert_eq!(short_generation(None), "—");
    }
}
