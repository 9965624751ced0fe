//! Pure derivations from host state to what the page shows: classes, texts, tooltips.
//! One home for them, shared by every view of a host (its table row, which CSS lays out as
//! a card below 768 px, the log panel, the deploy chips), and tested natively.

use protocol::api::Role;
use protocol::messages::{DeployHostState, DeployPhase};
use protocol::time::format_age;
use protocol::{
    CheckStatus, CommandStatus, DesiredState, Metrics, PendingPr, StatusCheck, Timestamp,
};
use std::collections::BTreeMap;

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

/// `v` with `decimals` digits after the point, rounded half to even like `{:.N}` (on the
/// scaled value, so a near-tie may differ from core in the last digit), but formatted
/// through integers: core's float formatting costs ≈ 16 kB of wasm (P5), and
/// these are display values. Not finite: "—".
pub fn fixed(v: f64, decimals: u32) -> String {
    if !v.is_finite() {
        return "—".to_owned();
    }
    let unit = 10u64.pow(decimals.min(9));
    // Saturates at u64::MAX, far beyond any metric.
    let n = (v.abs() * unit as f64).round_ties_even() as u64;
    let sign = if v < 0.0 && n != 0 { "-" } else { "" };
    let (whole, frac) = (n / unit, n % unit);
    match decimals {
        0 => format!("{sign}{whole}"),
        d => format!("{sign}{whole}.{frac:0width$}", width = d.min(9) as usize),
    }
}

/// A value for a data attribute: two decimals at most, trailing zeros dropped ("12.5").
pub fn plain_number(v: f64) -> String {
    let text = fixed(v, 2);
    match text.contains('.') {
        true => text.trim_end_matches('0').trim_end_matches('.').to_owned(),
        false => text,
    }
}

/// "12%" or "—" when unknown.
pub fn percent(value: Option<f64>) -> String {
    match value {
        Some(v) if v.is_finite() => format!("{}%", fixed(v, 0)),
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
            "RAM {}% · Swap {}% · Load {}",
            fixed(m.ram, 0),
            fixed(m.swap, 0),
            fixed(m.load, 2)
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

/// A compartment's label from its wire name (`UpdateStatus::NAMES`): "lock" → "Lock".
/// ASCII only, as the names are: Unicode case tables would cost the wasm ≈ 3 kB (P5).
pub fn compartment_label(name: &str) -> String {
    let mut label = name.to_owned();
    if let Some(first) = label.get_mut(..1) {
        first.make_ascii_uppercase();
    }
    label
}

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

/// What a compartment's state word (`compartment_code`) means, for the legend.
pub fn status_meaning(status: CheckStatus) -> &'static str {
    match status {
        CheckStatus::Ok => "Matches the desired state, or the check passed.",
        CheckStatus::Outdated => "The host is behind the desired state: pull, or update the agent.",
        CheckStatus::Error => "The check failed, or the desired state cannot be read.",
        CheckStatus::Unknown => {
            "Not checked yet, or nothing to check against (no desired-state source, no \
             checkout, git or lock not ok)."
        }
        CheckStatus::Working => "Being checked now.",
    }
}

/// The state as a word beside the colour, so it rests on neither colour nor a code to
/// learn (each word's meaning is `status_meaning`).
pub fn compartment_code(status: CheckStatus) -> &'static str {
    match status {
        CheckStatus::Ok => "ok",
        CheckStatus::Outdated => "behind",
        CheckStatus::Error => "error",
        CheckStatus::Unknown => "unknown",
        CheckStatus::Working => "…",
    }
}

/// "Git: outdated: the host is at abc1234, the branch at def5678 (checked 5m ago)".
/// A compartment's tooltip. The check time is absolute, not "5m ago": a relative time
/// would make every compartment of every host depend on the ticking clock, and re-running
/// 10 000 tooltips a second is what kept a 1 000-host page busy (P3).
pub fn compartment_title(label: &str, check: &StatusCheck) -> String {
    let state = match check.status {
        CheckStatus::Outdated => "needs an update",
        status => status.as_str(),
    };
    let mut title = format!("{label}: {state}");
    if !check.message.is_empty() {
        title.push_str(" — ");
        title.push_str(&check.message);
    }
    if let Some(at) = check.checked_at {
        title.push_str(&format!(" (checked {})", absolute_time(at)));
    }
    title
}

/// What a compartment checks, in a sentence: the legend's and the host page's explanation
/// of each compartment. By wire name (`UpdateStatus::NAMES`); the rules are
/// `core/src/hub/compartments.rs`.
pub fn compartment_meaning(name: &str) -> &'static str {
    match name {
        "agent" => "The nixdeck agent on the host: its version against the dashboard's.",
        "git" => {
            "The host's checkout of the config repository against the head of the desired \
             branch."
        }
        "lock" => {
            "The host's flake.lock against the desired branch's (without a desired hash: its \
             age, fresh up to 7 days); a waiting update PR is marked here."
        }
        "system" => {
            "The running system: whether the last switch, boot or rollback activated and \
             stayed (a rolled-back switch is an error). Confirmed only while git and lock are ok."
        }
        "tests" => {
            "The host's own checks (the Test button): whether the last run passed. Confirmed \
             only while git and lock are ok."
        }
        _ => "",
    }
}

/// "3m 20s": a command's duration from its start to its end (or to `now` while it runs).
pub fn duration_text(
    started: Option<Timestamp>,
    finished: Option<Timestamp>,
    now: Timestamp,
) -> String {
    match started {
        Some(s) => {
            let secs = (finished.unwrap_or(now).secs() - s.secs()).max(0);
            match secs {
                0..60 => format!("{secs}s"),
                60..3600 => format!("{}m {}s", secs / 60, secs % 60),
                _ => format!("{}h {}m", secs / 3600, secs % 3600 / 60),
            }
        }
        None => "—".to_owned(),
    }
}

/// Only operators and admins may run commands. The service layer enforces this; the page
/// uses it just to spare viewers buttons that would be refused. Compared as wire names
/// rather than through `Role::parse`, which costs the first download more code (P5 in
/// docs/BENCHMARKS.md); the test below holds it to `Role`'s order.
pub fn may_run_commands(role: &str) -> bool {
    const RUNS: [&str; 2] = [Role::Operator.as_str(), Role::Admin.as_str()];
    RUNS.contains(&role)
}

/// `url` if it may go into an `href`: http(s) with a host, no spaces or control
/// characters. Anything else from GitHub (`javascript:`, `data:` …) stays plain text.
pub fn http_url(url: Option<&str>) -> Option<String> {
    let url = url?;
    let after = |prefix: &str| {
        url.get(..prefix.len())
            .filter(|head| head.eq_ignore_ascii_case(prefix))
            .map(|_| &url[prefix.len()..])
    };
    let rest = after("https://").or_else(|| after("http://"))?;
    let clean = !url.chars().any(|c| c.is_whitespace() || c.is_control());
    (clean && !rest.is_empty() && !rest.starts_with('/')).then(|| url.to_owned())
}

/// "3h ago" from `at` to `now`; never negative.
pub fn age_text(at: Timestamp, now: Timestamp) -> String {
    format!("{} ago", format_age(now.secs() - at.secs()))
}

/// The header's tooltip when no desired-state source is configured.
pub const DESIRED_NOT_CONFIGURED: &str = "No desired-state source: set NIXDECK_GITHUB_REPO \
(owner/name of the config repository) or NIXDECK_VERSION_URL (a version.json URL) on the \
dashboard, and the git and lock compartments compare hosts against it.";

/// The commit's tooltip: the full sha and the commit message.
pub fn desired_commit_title(d: &DesiredState) -> String {
    let mut title = d.commit.clone().unwrap_or_default();
    if let Some(message) = d.message.as_deref().filter(|m| !m.is_empty()) {
        title.push('\n');
        title.push_str(message);
    }
    title
}

/// Shown before the source first answered (and while nothing failed).
pub fn desired_waiting(d: &DesiredState) -> Option<String> {
    (d.commit.is_none() && d.error.is_none())
        .then(|| format!("waiting for the first read of {}", d.source))
}

pub fn rate_limited_text(until: Timestamp) -> String {
    format!("rate limited until {}", until.clock())
}

/// "Check for update PR now" talks to GitHub, so it exists only for a GitHub source.
pub fn is_github_source(d: Option<&DesiredState>) -> bool {
    d.is_some_and(|d| d.source.starts_with("github:"))
}

/// What "Check for update PR now" found.
pub fn check_pr_text(pr: Option<&PendingPr>) -> String {
    match pr {
        Some(pr) => format!("PR #{} found", pr.number),
        None => "No flake.lock update PR is open".to_owned(),
    }
}

/// Hosts named in the Merge & Deploy question up to this many; beyond, just the count.
const NAMED_TARGETS: usize = 5;

/// "2 hosts (a, b)", "6 hosts": the targets as the Merge & Deploy questions name them.
fn targets_text(targets: &[String]) -> String {
    let count = targets.len();
    let plural = if count == 1 { "" } else { "s" };
    let names = if (1..=NAMED_TARGETS).contains(&count) {
        format!(" ({})", targets.join(", "))
    } else {
        String::new()
    };
    format!("{count} host{plural}{names}")
}

/// "Merge PR #7 “bump” on GitHub, then pull and switch on 2 hosts (a, b)?"
pub fn merge_deploy_question(number: u64, title: &str, targets: &[String]) -> String {
    let targets = targets_text(targets);
    format!("Merge PR #{number} “{title}” on GitHub, then pull and switch on {targets}?")
}

/// The same question when the deploy previews first: nothing is merged by this click.
pub fn preview_deploy_question(number: u64, title: &str, targets: &[String]) -> String {
    let targets = targets_text(targets);
    format!(
        "Build PR #{number} “{title}” on {targets} and show what it changes? Nothing is merged until you confirm."
    )
}

/// The phase as the panel's `data-phase`.
pub fn deploy_phase_name(phase: DeployPhase) -> &'static str {
    phase.as_str()
}

/// The phase as the panel's label. The two phases of a deploy that previews first say
/// what is happening and what the operator is expected to do; the rest are the phase's
/// name, as they always were.
pub fn deploy_phase_text(phase: DeployPhase, pr_number: u64) -> String {
    match phase {
        DeployPhase::Previewing => format!("Previewing PR #{pr_number}…"),
        DeployPhase::AwaitingConfirmation => "Review the changes, then confirm".to_owned(),
        DeployPhase::Merging
        | DeployPhase::Pulling
        | DeployPhase::Switching
        | DeployPhase::Done
        | DeployPhase::Failed => phase.as_str().to_owned(),
    }
}

/// Whether the deploy is still before its merge: its chips follow the previews, and the
/// PR can still be dropped without anything having changed.
pub fn deploy_before_merge(phase: DeployPhase) -> bool {
    matches!(
        phase,
        DeployPhase::Previewing | DeployPhase::AwaitingConfirmation
    )
}

/// A host's state as its chip's `data-state` and class suffix.
pub fn deploy_host_state_name(state: DeployHostState) -> &'static str {
    state.as_str()
}

/// A host's state in the chip's tooltip: "rolled back" in words, like everywhere else.
pub fn deploy_host_state_text(state: DeployHostState) -> &'static str {
    match state {
        DeployHostState::RolledBack => "rolled back",
        state => state.as_str(),
    }
}

/// A mark beside the chip's colour, so the state does not rest on colour alone.
pub fn deploy_host_mark(state: DeployHostState) -> &'static str {
    match state {
        DeployHostState::Pending => "·",
        DeployHostState::Running => "…",
        DeployHostState::Ok => "✓",
        DeployHostState::Error => "✗",
        DeployHostState::Skipped => "–",
        DeployHostState::RolledBack => "↶",
    }
}

/// A command's status in words, the same in the log panel, its tabs, the history and
/// notices. `rolled_back` is a failure (the new generation did not stay), never success.
pub fn command_status_text(status: CommandStatus) -> &'static str {
    match status {
        CommandStatus::Queued => "queued",
        CommandStatus::Running => "running",
        CommandStatus::Ok => "ok",
        CommandStatus::Error => "error",
        CommandStatus::Stopped => "stopped",
        CommandStatus::Timeout => "timed out",
        CommandStatus::Lost => "lost",
        CommandStatus::Abandoned => "abandoned",
        CommandStatus::RolledBack => "rolled back",
    }
}

/// "2026-11-20 10:00:00 UTC": an absolute time for tooltips.
pub fn absolute_time(at: Timestamp) -> String {
    at.to_string().replacen('T', " ", 1).replace('Z', " UTC")
}

/// A system's name from its store path: "/nix/store/<hash>-nixos-system-web-1-26.05.2"
/// → "nixos-system-web-1-26.05.2". Anything else is shown whole.
pub fn store_path_name(path: &str) -> &str {
    path.strip_prefix("/nix/store/")
        .and_then(|rest| rest.split_once('-'))
        .map_or(path, |(_, name)| name)
}

/// Bytes in binary units with one decimal: "812 B", "1.5 KiB", "2.3 GiB".
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{} {}", fixed(value, 1), UNITS[unit])
}

/// How far a deploy got: hosts finished (ok, error, rolled back or skipped) of all, and
/// the failures (error and rolled back).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeployCounts {
    pub finished: usize,
    pub failed: usize,
    pub total: usize,
}

impl DeployCounts {
    pub fn of(hosts: &BTreeMap<String, DeployHostState>) -> Self {
        let finished = hosts
            .values()
            .filter(|s| {
                matches!(
                    s,
                    DeployHostState::Ok
                        | DeployHostState::Error
                        | DeployHostState::RolledBack
                        | DeployHostState::Skipped
                )
            })
            .count();
        let failed = hosts
            .values()
            .filter(|s| matches!(s, DeployHostState::Error | DeployHostState::RolledBack))
            .count();
        DeployCounts {
            finished,
            failed,
            total: hosts.len(),
        }
    }

    /// The bar's width, "0%" ..= "100%".
    pub fn percent(self) -> String {
        let pct = (self.finished * 100).checked_div(self.total).unwrap_or(0);
        format!("{pct}%")
    }

    /// "3 of 5 hosts done, 1 failed", for the bar's text and screen readers.
    pub fn text(self) -> String {
        self.text_as("done")
    }

    /// "3 of 5 hosts previewed, 1 failed": the bar while the deploy previews first.
    pub fn text_as(self, finished: &str) -> String {
        let plural = if self.total == 1 { "" } else { "s" };
        let failed = if self.failed > 0 {
            format!(", {} failed", self.failed)
        } else {
            String::new()
        };
        format!(
            "{} of {} host{plural} {finished}{failed}",
            self.finished, self.total
        )
    }
}

/// The lock compartment's note about a waiting flake.lock update PR.
pub fn pr_note(pr: &protocol::PendingPr) -> String {
    let state = if pr.mergeable {
        "mergeable"
    } else {
        "not mergeable yet"
    };
    format!("Update PR #{} is open ({state}): {}", pr.number, pr.title)
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
    fn durations_read_as_a_person_would() {
        let t = Timestamp(1_000);
        assert_eq!(duration_text(None, None, t), "—");
        assert_eq!(duration_text(Some(t), Some(Timestamp(1_042)), t), "42s");
        assert_eq!(duration_text(Some(t), Some(Timestamp(1_200)), t), "3m 20s");
        assert_eq!(
            duration_text(Some(t), None, Timestamp(1_000 + 7_380)),
            "2h 3m"
        );
        // A clock that went back shows no negative time.
        assert_eq!(duration_text(Some(t), Some(Timestamp(900)), t), "0s");
        for name in protocol::UpdateStatus::NAMES {
            assert!(!compartment_meaning(name).is_empty(), "{name}");
        }
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
        assert_eq!(compartment_code(CheckStatus::Working), "…");
        assert_eq!(compartment_code(CheckStatus::Outdated), "behind");
        assert_eq!(compartment_code(CheckStatus::Unknown), "unknown");
        let check = StatusCheck::new(
            CheckStatus::Outdated,
            "behind by 2 commits",
            Some(Timestamp(100)),
        );
        assert_eq!(
            compartment_title("Git", &check),
            "Git: needs an update — behind by 2 commits (checked 1970-01-01 00:01:40 UTC)"
        );
        assert_eq!(
            compartment_title("Tests", &StatusCheck::default()),
            "Tests: unknown"
        );
        let labels = protocol::UpdateStatus::NAMES.map(compartment_label);
        assert_eq!(labels, ["Agent", "Git", "Lock", "System", "Tests"]);
    }

    #[test]
    fn generations() {
        assert_eq!(short_generation(Some("0123456789abcdef")), "0123456");
        assert_eq!(short_generation(Some("")), "—");
        assert_eq!(short_generation(None), "—");
    }
    #[test]
    fn roles() {
        for role in Role::ALL {
            assert_eq!(
                may_run_commands(role.as_str()),
                role.at_least(Role::Operator),
                "{role}"
            );
        }
        assert!(may_run_commands("operator"));
        assert!(may_run_commands("admin"));
        assert!(!may_run_commands("viewer"));
        assert!(!may_run_commands(""));
    }

    #[test]
    fn only_http_urls_become_links() {
        let ok = |u: &str| http_url(Some(u));
        assert_eq!(
            ok("https://github.com/o/r/pull/7").as_deref(),
            Some("https://github.com/o/r/pull/7")
        );
        assert!(ok("HTTP://example.com").is_some());
        assert!(ok("javascript:alert(1)").is_none());
        assert!(ok("JaVaScRiPt:alert(1)").is_none());
        assert!(ok("data:text/html,<script>alert(1)</script>").is_none());
        assert!(ok("//evil.example/x").is_none());
        assert!(ok("https:///evil").is_none());
        assert!(ok("https://").is_none());
        assert!(ok(" https://example.com").is_none());
        assert!(ok("https://exa mple.com").is_none());
        assert!(ok("https://example.com/\n").is_none());
        assert!(ok("ftp://example.com").is_none());
        assert!(ok("é").is_none());
        assert!(http_url(None).is_none());
    }

    fn desired() -> DesiredState {
        DesiredState {
            source: "github:o/r".into(),
            branch: "main".into(),
            ..Default::default()
        }
    }

    #[test]
    fn desired_texts() {
        let mut d = desired();
        assert_eq!(
            desired_waiting(&d).as_deref(),
            Some("waiting for the first read of github:o/r")
        );
        assert_eq!(desired_commit_title(&d), "");
        d.error = Some("unreachable".into());
        assert_eq!(desired_waiting(&d), None);
        d.error = None;
        d.commit = Some("0123456789abcdef".into());
        d.message = Some("flake.lock: update".into());
        assert_eq!(desired_waiting(&d), None);
        assert_eq!(
            desired_commit_title(&d),
            "0123456789abcdef\nflake.lock: update"
        );
        assert_eq!(short_generation(d.commit.as_deref()), "0123456");
        assert_eq!(age_text(Timestamp(0), Timestamp(3 * 3600 + 5)), "3h ago");
        assert_eq!(age_text(Timestamp(10), Timestamp(5)), "0s ago");
        assert_eq!(
            rate_limited_text(Timestamp(13 * 3600 + 4 * 60 + 5)),
            "rate limited until 13:04:05"
        );
        assert!(is_github_source(Some(&d)));
        d.source = "https://example.com/version.json".into();
        assert!(!is_github_source(Some(&d)));
        assert!(!is_github_source(None));
    }

    #[test]
    fn pr_texts() {
        let pr = PendingPr {
            number: 7,
            title: "bump".into(),
            url: "https://example.com".into(),
            mergeable: true,
            head_sha: None,
        };
        assert_eq!(check_pr_text(Some(&pr)), "PR #7 found");
        assert_eq!(check_pr_text(None), "No flake.lock update PR is open");
        let few: Vec<String> = vec!["a".into(), "b".into()];
        assert_eq!(
            merge_deploy_question(7, "bump", &few),
            "Merge PR #7 “bump” on GitHub, then pull and switch on 2 hosts (a, b)?"
        );
        assert_eq!(
            merge_deploy_question(7, "bump", &few[..1]),
            "Merge PR #7 “bump” on GitHub, then pull and switch on 1 host (a)?"
        );
        let many: Vec<String> = (0..6).map(|i| format!("h{i}")).collect();
        assert_eq!(
            merge_deploy_question(7, "bump", &many),
            "Merge PR #7 “bump” on GitHub, then pull and switch on 6 hosts?"
        );
        assert_eq!(
            preview_deploy_question(7, "bump", &few),
            "Build PR #7 “bump” on 2 hosts (a, b) and show what it changes? Nothing is merged until you confirm."
        );
    }

    #[test]
    fn a_deploy_that_previews_first_says_what_it_waits_for() {
        assert_eq!(
            deploy_phase_text(DeployPhase::Previewing, 7),
            "Previewing PR #7…"
        );
        assert_eq!(
            deploy_phase_text(DeployPhase::AwaitingConfirmation, 7),
            "Review the changes, then confirm"
        );
        assert_eq!(deploy_phase_text(DeployPhase::Pulling, 7), "pulling");
        assert_eq!(
            deploy_phase_name(DeployPhase::AwaitingConfirmation),
            "awaiting_confirmation"
        );
        let before: Vec<&str> = DeployPhase::ALL
            .into_iter()
            .filter(|p| deploy_before_merge(*p))
            .map(DeployPhase::as_str)
            .collect();
        assert_eq!(before, ["previewing", "awaiting_confirmation"]);
    }

    #[test]
    fn deploy_progress() {
        use DeployHostState::*;
        let hosts: BTreeMap<String, DeployHostState> = [
            ("a", Ok),
            ("b", Error),
            ("c", Skipped),
            ("d", Running),
            ("e", Pending),
            ("f", Ok),
        ]
        .into_iter()
        .map(|(id, s)| (id.to_owned(), s))
        .collect();
        let c = DeployCounts::of(&hosts);
        assert_eq!(
            c,
            DeployCounts {
                finished: 4,
                failed: 1,
                total: 6
            }
        );
        assert_eq!(c.percent(), "66%");
        assert_eq!(c.text(), "4 of 6 hosts done, 1 failed");
        let none = DeployCounts::of(&BTreeMap::new());
        assert_eq!(none.percent(), "0%");
        assert_eq!(none.text(), "0 of 0 hosts done");
        assert_eq!(deploy_phase_name(DeployPhase::Switching), "switching");
        assert_eq!(c.text_as("previewed"), "4 of 6 hosts previewed, 1 failed");
        assert_eq!(deploy_host_state_name(Skipped), "skipped");
        assert_eq!(deploy_host_mark(Error), "✗");
    }

    #[test]
    fn a_rolled_back_host_is_a_failure_with_its_own_mark() {
        use DeployHostState::*;
        let hosts: BTreeMap<String, DeployHostState> =
            [("a", Ok), ("b", RolledBack), ("c", Error), ("d", Running)]
                .into_iter()
                .map(|(id, s)| (id.to_owned(), s))
                .collect();
        let c = DeployCounts::of(&hosts);
        assert_eq!((c.finished, c.failed, c.total), (3, 2, 4));
        assert_eq!(c.text(), "3 of 4 hosts done, 2 failed");
        assert_eq!(deploy_host_state_name(RolledBack), "rolled_back");
        assert_eq!(deploy_host_state_text(RolledBack), "rolled back");
        assert_eq!(deploy_host_state_text(Error), "error");
        let marks: std::collections::BTreeSet<_> = DeployHostState::ALL
            .into_iter()
            .map(deploy_host_mark)
            .collect();
        assert_eq!(
            marks.len(),
            DeployHostState::ALL.len(),
            "each state its own mark"
        );
        assert_ne!(deploy_host_mark(RolledBack), deploy_host_mark(Ok));
    }

    #[test]
    fn rolled_back_reads_as_a_failure() {
        assert_eq!(
            command_status_text(CommandStatus::RolledBack),
            "rolled back"
        );
        assert!(!CommandStatus::RolledBack.is_success());
        assert_eq!(command_status_text(CommandStatus::Timeout), "timed out");
        // Every status has its own words.
        let texts: std::collections::BTreeSet<_> = CommandStatus::ALL
            .into_iter()
            .map(command_status_text)
            .collect();
        assert_eq!(texts.len(), CommandStatus::ALL.len());
    }

    #[test]
    fn store_paths_and_sizes() {
        assert_eq!(
            store_path_name("/nix/store/b3x9-nixos-system-web-1-26.05.2"),
            "nixos-system-web-1-26.05.2"
        );
        assert_eq!(store_path_name("/etc/foo"), "/etc/foo");
        assert_eq!(store_path_name("/nix/store/nohash"), "/nix/store/nohash");
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 * 1024 * 1024 * 1024 / 2), "2.5 GiB");
        assert_eq!(absolute_time(Timestamp(100)), "1970-01-01 00:01:40 UTC");
    }

    #[test]
    fn fixed_formats_like_core_without_its_float_code() {
        for v in [
            0.0,
            0.4,
            0.5,
            1.5,
            2.5,
            0.125,
            1.005,
            12.3449,
            79.96,
            99.5,
            100.0,
            1e6 + 0.25,
            -3.7,
        ] {
            for d in 0..=3 {
                assert_eq!(
                    fixed(v, d),
                    format!("{v:.*}", d as usize),
                    "{v} with {d} decimals"
                );
            }
        }
        // Unlike core: no "-0", and a value a hair above a tie in binary (12.345 is
        // 12.34500000000000064) rounds as the tie it is scaled to.
        assert_eq!(fixed(-0.2, 0), "0");
        assert_eq!(fixed(12.345, 2), "12.34");
        assert_eq!(fixed(f64::NAN, 1), "—");
        assert_eq!(plain_number(12.0), "12");
        assert_eq!(plain_number(12.5), "12.5");
        assert_eq!(plain_number(12.3456), "12.35");
        assert_eq!(percent(Some(79.6)), "80%");
        assert_eq!(
            metrics_title(Some(Metrics {
                cpu: 1.0,
                ram: 50.4,
                swap: 0.0,
                load: 1.234,
                disk: None,
            })),
            "RAM 50% · Swap 0% · Load 1.23"
        );
    }
}
