//! The agent's own status checks, `system` and `tests`, derived from command outcomes and
//! kept in `<state-dir>/checks.json` so they survive restarts and can be sent again.

use crate::probes::RepoState;
use crate::spool::{self, CommandResult, Spec};
use protocol::messages::{AgentOutcome, StatusChecks};
use protocol::{CheckStatus, CommandKind, StatusCheck, Timestamp};
use std::path::{Path, PathBuf};

const FILE: &str = "checks.json";

/// The last verdicts, and whether the dashboard has heard them from this process.
pub struct Checks {
    path: PathBuf,
    pub current: StatusChecks,
}

impl Checks {
    pub fn load(state_dir: &Path) -> Checks {
        let path = state_dir.join(FILE);
        let current = spool::read_json(&path).ok().flatten().unwrap_or_default();
        Checks { path, current }
    }

    pub fn is_empty(&self) -> bool {
        self.current.system.is_none() && self.current.tests.is_none()
    }

    /// Merges new verdicts; true when anything changed.
    pub fn update(&mut self, new: StatusChecks) -> bool {
        let mut changed = false;
        if let Some(system) = new.system {
            changed |= self.current.system.as_ref() != Some(&system);
            self.current.system = Some(system);
        }
        if let Some(tests) = new.tests {
            changed |= self.current.tests.as_ref() != Some(&tests);
            self.current.tests = Some(tests);
        }
        if changed {
            if let Some(dir) = self.path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            if let Err(e) = spool::write_json(&self.path, &self.current) {
                tracing::warn!(path = %self.path.display(), "cannot keep the status checks: {e}");
            }
        }
        changed
    }
}

fn check(status: CheckStatus, message: String) -> Option<StatusCheck> {
    Some(StatusCheck::new(status, message, Some(Timestamp::now())))
}

/// "working" while a command that decides a check runs.
pub fn at_start(kind: CommandKind) -> StatusChecks {
    match kind {
        CommandKind::Switch | CommandKind::PullSwitch | CommandKind::Boot => StatusChecks {
            system: check(CheckStatus::Working, "switching".to_owned()),
            tests: None,
        },
        CommandKind::Rollback => StatusChecks {
            system: check(CheckStatus::Working, "rolling back".to_owned()),
            tests: None,
        },
        CommandKind::Test => StatusChecks {
            system: None,
            tests: check(CheckStatus::Working, "running tests".to_owned()),
        },
        _ => StatusChecks::default(),
    }
}

/// The verdicts after a command, given the checkout's state now.
pub fn after(spec: &Spec, result: &CommandResult, now: &RepoState) -> StatusChecks {
    use AgentOutcome::{Error, Ok, RolledBack, Stopped};
    use CommandKind::{Boot, Pull, PullSwitch, Rollback, Switch, Test, Update};
    let short = now
        .generation
        .as_deref()
        .map(|g| g.chars().take(7).collect::<String>())
        .unwrap_or_else(|| "an unknown commit".to_owned());
    let why = if result.message.is_empty() {
        "see the command's log".to_owned()
    } else {
        result.message.clone()
    };
    let system = |status, message| StatusChecks {
        system: check(status, message),
        tests: None,
    };
    let kind = spec.command;
    match (kind, result.status) {
        (Pull, Ok) if now.generation != spec.generation_before => system(
            CheckStatus::Outdated,
            format!("pulled {short}, not switched yet"),
        ),
        (Pull, Error) => system(CheckStatus::Error, format!("pull failed: {why}")),
        (Switch | PullSwitch, Ok) => system(CheckStatus::Ok, format!("switched to {short}")),
        (Rollback, Ok) => system(
            CheckStatus::Outdated,
            "rolled back to the previous system generation".to_owned(),
        ),
        (Boot, Ok) => system(
            CheckStatus::Outdated,
            format!("{short} is set for the next boot, not running yet"),
        ),
        (Switch | PullSwitch | Rollback | Boot, Error | RolledBack) => {
            system(CheckStatus::Error, format!("{kind} failed: {why}"))
        }
        (Switch | PullSwitch | Rollback | Boot, Stopped) => system(
            CheckStatus::Unknown,
            format!("{kind} was stopped; the system may be partly switched"),
        ),
        (Update, Ok) if now.lock_hash != spec.lock_before => system(
            CheckStatus::Outdated,
            "flake.lock updated, not switched yet".to_owned(),
        ),
        (Test, Ok) => StatusChecks {
            system: None,
            tests: check(
                CheckStatus::Ok,
                if result.message.is_empty() {
                    "tests passed".to_owned()
                } else {
                    result.message.clone()
                },
            ),
        },
        (Test, Error) => StatusChecks {
            system: None,
            tests: check(CheckStatus::Error, why),
        },
        (Test, Stopped) => StatusChecks {
            system: None,
            tests: check(CheckStatus::Unknown, "tests were stopped".to_owned()),
        },
        _ => StatusChecks::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: CommandKind, before: &str) -> Spec {
        Spec {
            command_id: "c".into(),
            command: kind,
            created_ms: 0,
            generation_before: Some(before.into()),
            lock_before: Some("l1".into()),
            plan: None,
        }
    }

    fn result(status: AgentOutcome, message: &str) -> CommandResult {
        CommandResult {
            status,
            exit_code: None,
            duration_ms: 1,
            last_seq: 0,
            message: message.into(),
            result: None,
        }
    }

    fn repo(generation: &str, lock: &str) -> RepoState {
        RepoState {
            generation: Some(generation.into()),
            lock_hash: Some(lock.into()),
            lock_updated_at: None,
        }
    }

    #[test]
    fn verdicts_follow_outcomes() {
        let new = repo("0123456789abcdef", "l1");
        let c = after(
            &spec(CommandKind::Pull, "old"),
            &result(AgentOutcome::Ok, ""),
            &new,
        );
        let s = c.system.unwrap();
        assert_eq!(s.status, CheckStatus::Outdated);
        assert_eq!(s.message, "pulled 0123456, not switched yet");

        // A pull that changed nothing changes no verdict.
        let c = after(
            &spec(CommandKind::Pull, "0123456789abcdef"),
            &result(AgentOutcome::Ok, ""),
            &new,
        );
        assert_eq!(c, StatusChecks::default());

        let c = after(
            &spec(CommandKind::Switch, "x"),
            &result(AgentOutcome::Ok, ""),
            &new,
        );
        assert_eq!(c.system.as_ref().unwrap().status, CheckStatus::Ok);
        assert_eq!(c.system.unwrap().message, "switched to 0123456");

        let c = after(
            &spec(CommandKind::PullSwitch, "x"),
            &result(
                AgentOutcome::Error,
                "`nixos-rebuild switch` exited with code 1",
            ),
            &new,
        );
        let s = c.system.unwrap();
        assert_eq!(s.status, CheckStatus::Error);
        assert!(
            s.message.starts_with("pull-switch failed: `nixos-rebuild"),
            "{}",
            s.message
        );

        let c = after(
            &spec(CommandKind::Test, "x"),
            &result(AgentOutcome::Error, "1 of 2 tests failed: b.sh (exit 3)"),
            &new,
        );
        assert!(c.system.is_none());
        let t = c.tests.unwrap();
        assert_eq!(t.status, CheckStatus::Error);
        assert!(t.message.contains("b.sh"));

        let c = after(
            &spec(CommandKind::Update, "x"),
            &result(AgentOutcome::Ok, ""),
            &repo("a", "l2"),
        );
        assert_eq!(c.system.unwrap().status, CheckStatus::Outdated);
    }

    #[test]
    fn checks_persist() {
        let dir = tempfile::tempdir().unwrap();
        let mut checks = Checks::load(dir.path());
        assert!(checks.is_empty());
        assert!(checks.update(at_start(CommandKind::Test)));
        assert!(!checks.update(StatusChecks::default()));
        let again = Checks::load(dir.path());
        assert_eq!(again.current.tests.unwrap().status, CheckStatus::Working);
    }
}
