//! The compartment rules of the contract, as pure functions of a host, what its agent
//! reported, and the desired state. The hub calls `derive` on every change to any of them,
//! so the five compartments can never disagree with their inputs.

use protocol::messages::StatusChecks;
use protocol::{CheckStatus, DesiredState, Host, StatusCheck, Timestamp, VERSION};

/// flake.lock counts as fresh up to this age when no desired hash is known.
pub const LOCK_MAX_AGE_S: i64 = 7 * 24 * 3600;

pub const NOT_CONFIGURED: &str =
    "Not configured: no desired state source (NIXDECK_GITHUB_REPO or NIXDECK_VERSION_URL).";

/// What the hub knows about a host beyond the wire `Host`.
#[derive(Clone, Debug, Default)]
pub struct Reported {
    pub lock_hash: Option<String>,
    pub lock_updated_at: Option<Timestamp>,
    /// The system/tests checks as the agent last reported them, before gating.
    pub checks: StatusChecks,
    /// Set when an activating command (switch, boot, rollback) was rolled back: the system
    /// compartment shows this error instead of the agent's verdicts until an activating
    /// command ends ok (the service layer sets and clears it).
    pub rolled_back: Option<StatusCheck>,
}

/// Re-derive everything that follows from other fields: the agent, git and lock
/// compartments, `agent_outdated`, and the gated system and tests compartments. A
/// compartment whose verdict did not change keeps its `checked_at`.
pub fn derive(
    host: &mut Host,
    reported: &Reported,
    desired: Option<&DesiredState>,
    now: Timestamp,
) {
    let git = git_check(host.generation.as_deref(), desired);
    let lock = lock_check(reported, desired, now);
    let at = desired.and_then(|d| d.checked_at).or(Some(now));
    let agent = agent_check(host.agent_version.as_deref());
    host.agent_outdated = agent.0 == CheckStatus::Outdated;
    let u = &mut host.update_status;
    keep_time(&mut u.agent, agent, Some(now));
    keep_time(&mut u.git, git, at);
    keep_time(&mut u.lock, lock, at);
    if let Some(rolled_back) = &reported.rolled_back {
        u.system = rolled_back.clone();
    } else if let Some(system) = &reported.checks.system {
        u.system = gate(system, &u.git, &u.lock);
    }
    if let Some(tests) = &reported.checks.tests {
        u.tests = gate(tests, &u.git, &u.lock);
    }
}

/// Replace `check` with a new verdict, stamped `at`, unless the verdict is the same.
fn keep_time(
    check: &mut StatusCheck,
    (status, message): (CheckStatus, String),
    at: Option<Timestamp>,
) {
    if check.status != status || check.message != message {
        *check = StatusCheck::new(status, message, at);
    }
}

fn short(commit: &str) -> &str {
    commit.get(..7).unwrap_or(commit)
}

/// Two commit names for the same commit; an abbreviated one (≥ 7 characters, as some
/// version.json files publish) matches by prefix.
pub fn same_commit(a: &str, b: &str) -> bool {
    let n = a.len().min(b.len());
    n >= 7 && a[..n].eq_ignore_ascii_case(&b[..n])
}

/// The verdict that applies to both git and lock while the desired state is not usable.
fn source_problem(desired: Option<&DesiredState>) -> Option<(CheckStatus, String)> {
    let Some(d) = desired else {
        return Some((CheckStatus::Unknown, NOT_CONFIGURED.to_owned()));
    };
    if let Some(error) = &d.error {
        // A remote that cannot be read is an error, never a grey "unknown".
        return Some((
            CheckStatus::Error,
            format!("Cannot read the desired state from {}: {error}", d.source),
        ));
    }
    if d.commit.is_none() {
        return Some((
            CheckStatus::Unknown,
            format!("Waiting for the first read of {}.", d.source),
        ));
    }
    None
}

fn git_check(generation: Option<&str>, desired: Option<&DesiredState>) -> (CheckStatus, String) {
    if let Some(problem) = source_problem(desired) {
        return problem;
    }
    let d = desired.expect("checked by source_problem");
    let want = d.commit.as_deref().unwrap_or_default();
    match generation {
        None => (
            CheckStatus::Unknown,
            "The agent reports no config checkout (no repo dir, or not a git repository).".into(),
        ),
        Some(have) if same_commit(have, want) => (
            CheckStatus::Ok,
            format!("At {}, the head of {}.", short(want), d.branch),
        ),
        Some(have) => (
            CheckStatus::Outdated,
            format!(
                "At {}; {} is at {}. Pull to update.",
                short(have),
                d.branch,
                short(want)
            ),
        ),
    }
}

fn lock_check(
    reported: &Reported,
    desired: Option<&DesiredState>,
    now: Timestamp,
) -> (CheckStatus, String) {
    if let Some(problem) = source_problem(desired) {
        return problem;
    }
    let d = desired.expect("checked by source_problem");
    if let Some(want) = &d.lock_hash {
        return match &reported.lock_hash {
            None => (
                CheckStatus::Unknown,
                "The agent reports no flake.lock.".into(),
            ),
            Some(have) if have.eq_ignore_ascii_case(want) => {
                (CheckStatus::Ok, format!("flake.lock matches {}.", d.branch))
            }
            Some(_) => (
                CheckStatus::Outdated,
                format!("flake.lock differs from {}'s. Pull to update.", d.branch),
            ),
        };
    }
    // No desired hash (a version.json without lockHash, or no flake.lock in the repo):
    // fall back to the age of the host's flake.lock.
    let Some(updated) = reported.lock_updated_at else {
        return (
            CheckStatus::Unknown,
            "No desired flake.lock hash is known, and the agent reports no flake.lock age.".into(),
        );
    };
    let age = (now.secs() - updated.secs()).max(0);
    let days = age / 86_400;
    let text = if days == 1 {
        "1 day".to_owned()
    } else {
        format!("{days} days")
    };
    if age <= LOCK_MAX_AGE_S {
        (
            CheckStatus::Ok,
            format!("flake.lock is {text} old (no desired hash known; up to 7 days is fresh)."),
        )
    } else {
        (
            CheckStatus::Outdated,
            format!("flake.lock is {text} old (no desired hash known; over 7 days is stale)."),
        )
    }
}

fn agent_check(version: Option<&str>) -> (CheckStatus, String) {
    match version {
        None => (
            CheckStatus::Unknown,
            "No agent has connected yet.".to_owned(),
        ),
        Some(v) if v == VERSION => (CheckStatus::Ok, format!("Agent {v} matches the dashboard.")),
        Some(v) => (
            CheckStatus::Outdated,
            format!("Agent {v} differs from the dashboard's {VERSION}."),
        ),
    }
}

/// The contract: system and tests are never ok while git or lock is not ok. A reported ok
/// that cannot be confirmed shows as unknown, saying why; other verdicts pass through.
pub fn gate(reported: &StatusCheck, git: &StatusCheck, lock: &StatusCheck) -> StatusCheck {
    if reported.status != CheckStatus::Ok
        || (git.status == CheckStatus::Ok && lock.status == CheckStatus::Ok)
    {
        return reported.clone();
    }
    let blockers: Vec<&str> = [("git", git), ("lock", lock)]
        .iter()
        .filter(|(_, c)| c.status != CheckStatus::Ok)
        .map(|(n, _)| *n)
        .collect();
    StatusCheck::new(
        CheckStatus::Unknown,
        format!(
            "The agent reports ok ({}), but that cannot be confirmed while {} is not ok.",
            reported.message,
            blockers.join(" and ")
        ),
        reported.checked_at,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::HostType;
    use CheckStatus::*;

    const HEAD: &str = "1111111aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const OLD: &str = "2222222bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const NOW: Timestamp = Timestamp(1_800_000_000);

    fn desired(lock_hash: Option<&str>) -> DesiredState {
        DesiredState {
            source: "github:o/r".into(),
            branch: "main".into(),
            commit: Some(HEAD.into()),
            lock_hash: lock_hash.map(Into::into),
            checked_at: Some(NOW),
            ..DesiredState::default()
        }
    }

    fn host(generation: Option<&str>) -> Host {
        let mut h = Host::new("a", HostType::Nixos);
        h.generation = generation.map(Into::into);
        h.agent_version = Some(VERSION.into());
        h
    }

    fn reported(lock: Option<&str>, age_s: Option<i64>) -> Reported {
        Reported {
            lock_hash: lock.map(Into::into),
            lock_updated_at: age_s.map(|a| Timestamp(NOW.secs() - a)),
            checks: StatusChecks {
                system: Some(StatusCheck::new(Ok, "switched", Some(NOW))),
                tests: Some(StatusCheck::new(Ok, "2 passed", Some(NOW))),
            },
            rolled_back: None,
        }
    }

    /// A rolled-back switch shows as a system error over the agent's own `ok` (the old
    /// generation runs fine; the target did not take), and leaves tests alone.
    #[test]
    fn a_rolled_back_switch_is_a_system_error_over_a_reported_ok() {
        let d = desired(Some("l1"));
        let mut r = reported(Some("l1"), None);
        assert_eq!(run(&mut host(Some(HEAD)), &r, Some(&d)), [Ok, Ok, Ok, Ok]);
        r.rolled_back = Some(StatusCheck::new(Error, "switch rolled back", Some(NOW)));
        let mut h = host(Some(HEAD));
        assert_eq!(run(&mut h, &r, Some(&d)), [Ok, Ok, Error, Ok]);
        assert_eq!(h.update_status.system.message, "switch rolled back");
        // Also while git or lock are not ok: the error is not gated away.
        assert_eq!(run(&mut host(Some(OLD)), &r, Some(&d))[2], Error);
    }

    fn run(h: &mut Host, r: &Reported, d: Option<&DesiredState>) -> [CheckStatus; 4] {
        derive(h, r, d, NOW);
        let u = &h.update_status;
        [u.git.status, u.lock.status, u.system.status, u.tests.status]
    }

    #[test]
    fn git_compares_the_generation_with_the_desired_commit() {
        let d = desired(Some("l1"));
        let r = reported(Some("l1"), None);
        assert_eq!(run(&mut host(Some(HEAD)), &r, Some(&d)), [Ok, Ok, Ok, Ok]);
        let mut behind = host(Some(OLD));
        assert_eq!(
            run(&mut behind, &r, Some(&d)),
            [Outdated, Ok, Unknown, Unknown]
        );
        assert!(behind
            .update_status
            .git
            .message
            .contains("main is at 1111111"));
        // An abbreviated desired commit (version.json) matches by prefix.
        let mut short = d.clone();
        short.commit = Some(HEAD[..7].into());
        assert_eq!(run(&mut host(Some(HEAD)), &r, Some(&short))[0], Ok);
        assert_eq!(run(&mut host(None), &r, Some(&d))[0], Unknown);
    }

    #[test]
    fn lock_compares_hashes_and_falls_back_to_age() {
        let d = desired(Some("l1"));
        let h = || host(Some(HEAD));
        assert_eq!(run(&mut h(), &reported(Some("L1"), None), Some(&d))[1], Ok);
        assert_eq!(
            run(&mut h(), &reported(Some("l0"), Some(60)), Some(&d)),
            [Ok, Outdated, Unknown, Unknown],
            "a fresh but different lock is outdated when the hash is known"
        );
        let no_hash = desired(None);
        let week = LOCK_MAX_AGE_S;
        assert_eq!(
            run(&mut h(), &reported(None, Some(week)), Some(&no_hash))[1],
            Ok
        );
        let mut stale = h();
        assert_eq!(
            run(&mut stale, &reported(None, Some(week + 1)), Some(&no_hash))[1],
            Outdated
        );
        assert!(stale.update_status.lock.message.contains("7 days old"));
        assert_eq!(
            run(&mut h(), &reported(None, None), Some(&no_hash))[1],
            Unknown
        );
    }

    #[test]
    fn an_unreachable_remote_is_an_error_and_blocks_system_and_tests() {
        let mut d = desired(Some("l1"));
        d.error = Some("cannot reach GitHub: connection refused".into());
        let mut h = host(Some(HEAD));
        assert_eq!(
            run(&mut h, &reported(Some("l1"), None), Some(&d)),
            [Error, Error, Unknown, Unknown]
        );
        assert!(h.update_status.git.message.contains("connection refused"));
        assert!(h.update_status.system.message.contains("git and lock"));
    }

    #[test]
    fn no_source_is_unknown_not_configured_and_waiting_is_unknown() {
        let mut h = host(Some(HEAD));
        assert_eq!(
            run(&mut h, &reported(Some("l1"), None), None)[..2],
            [Unknown, Unknown]
        );
        assert_eq!(h.update_status.git.message, NOT_CONFIGURED);
        let mut waiting = desired(None);
        waiting.commit = None;
        let mut h = host(Some(HEAD));
        assert_eq!(
            run(&mut h, &reported(None, None), Some(&waiting))[0],
            Unknown
        );
        assert!(h.update_status.git.message.starts_with("Waiting"));
    }

    #[test]
    fn failures_pass_the_gate_and_an_unchanged_verdict_keeps_its_time() {
        let d = desired(Some("l1"));
        let mut r = reported(Some("l1"), None);
        r.checks.tests = Some(StatusCheck::new(Error, "1 failed", None));
        let mut h = host(Some(OLD));
        assert_eq!(run(&mut h, &r, Some(&d))[3], Error);
        let first = h.update_status.git.clone();
        derive(&mut h, &r, Some(&d), Timestamp(NOW.secs() + 100));
        assert_eq!(h.update_status.git, first);
        assert!(!h.agent_outdated);
    }
}
