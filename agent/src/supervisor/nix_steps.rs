//! The supervisor's Nix-native steps: build, set the profile, activate, the health gate,
//! the closure diff, switching generations, and undoing a switch that failed. They run in
//! the supervisor so that a switch never depends on the agent being alive.

use super::{describe, short, Ran, StepEnd, Supervisor};
use crate::nix::{self, SystemSettings};
use crate::plan::TEST_MODE;
use crate::plan::{Plan, Step};
use crate::spool;
use protocol::messages::AgentOutcome;
use protocol::{ClosureDiff, OutputStream};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::time::{self, Instant};

/// What the Nix-native steps of one command did so far.
pub(super) struct SystemRun {
    settings: SystemSettings,
    /// The generation current when the command started, and its store path: what a
    /// failed switch goes back to.
    previous: Option<(u64, PathBuf)>,
    /// The store path the steps work on (built, previewed, or the generation switched to).
    target: Option<String>,
    /// The activation mode used (`switch`, `boot`; None for `activate`).
    mode: Option<String>,
    /// The profile was changed by this command.
    moved: bool,
    /// An activation was started.
    activated: bool,
    diff: Option<ClosureDiff>,
    /// A `--switch-action test` switch: the profile is never touched, so what a failure
    /// goes back to is `before`, and there is no generation to report.
    test_switch: bool,
    /// `--current-system` resolved when the command started: the system running then.
    before: Option<PathBuf>,
    /// A test switch: the system running as far as this command knows (`before`, the
    /// target once activated, `before` again once rolled back).
    running: Option<String>,
}

impl SystemRun {
    pub(super) fn new(settings: SystemSettings) -> Self {
        SystemRun {
            settings,
            previous: None,
            target: None,
            mode: None,
            moved: false,
            activated: false,
            diff: None,
            test_switch: false,
            before: None,
            running: None,
        }
    }

    /// Whether this command changed the host so that a failure must be undone.
    pub(super) fn changed(&self) -> bool {
        self.moved || (self.test_switch && self.activated)
    }

    /// `sudo -n` first when the profile and activation need root and we are not.
    fn argv(&self, argv: &[&str]) -> Vec<String> {
        let mut full = Vec::new();
        if self.settings.sudo {
            full.extend(["sudo".to_owned(), "-n".to_owned()]);
        }
        full.extend(argv.iter().map(|s| (*s).to_owned()));
        full
    }

    fn activation_argv(&self, path: &str, mode: Option<&str>) -> Vec<String> {
        let entry = format!(
            "{}/{}",
            path.trim_end_matches('/'),
            self.settings.activation.entry_point()
        );
        let mut argv = vec![entry.as_str()];
        argv.extend(mode);
        self.argv(&argv)
    }

    /// The structured result. A preview: its diff and the built target. Otherwise: the
    /// generation the profile is at now and its store path, whatever the outcome (after
    /// a rollback, the generation put back; after an early failure, the unchanged one).
    pub(super) fn result(&self) -> protocol::CommandResult {
        if self.diff.is_some() {
            return protocol::CommandResult {
                diff: self.diff.clone(),
                generation: None,
                store_path: self.target.clone(),
            };
        }
        if self.test_switch {
            // No generation was made: the profile's would name another system.
            return protocol::CommandResult {
                diff: None,
                generation: None,
                store_path: self.running.clone(),
            };
        }
        let now = nix::current_generation(&self.settings.profile);
        protocol::CommandResult {
            diff: None,
            store_path: now.as_ref().map(|(_, p)| p.display().to_string()),
            generation: now.map(|(n, _)| n),
        }
    }
}

// ---------------------------------------------------------------- Nix-native steps

/// How often the health gate looks for the agent's `reached` file: one stat, so often is
/// cheap, and every wait here adds to the switch's time over plain nixos-rebuild (the
/// switch overhead in docs/BENCHMARKS.md).
const REACHED_POLL: Duration = Duration::from_millis(20);
/// A health URL must answer within this.
const URL_TIMEOUT: Duration = Duration::from_secs(10);

/// The last `error:` line Nix printed (its message), else the last line of stderr.
fn nix_error(lines: &[(OutputStream, String)]) -> Option<String> {
    let stderr = || lines.iter().filter(|(s, _)| *s == OutputStream::Stderr);
    let line = stderr()
        .map(|(_, l)| nix::strip_ansi(l))
        .rev()
        .find(|l| l.trim_start().starts_with("error:"))
        .or_else(|| stderr().map(|(_, l)| nix::strip_ansi(l)).next_back())?;
    let line = line.trim();
    Some(line.chars().take(300).collect())
}

fn stdout_text(lines: &[(OutputStream, String)]) -> String {
    lines
        .iter()
        .filter(|(s, _)| *s == OutputStream::Stdout)
        .map(|(_, l)| format!("{l}\n"))
        .collect()
}

impl Supervisor {
    fn sys(&self) -> &SystemRun {
        self.sys
            .as_ref()
            .expect("Nix-native steps come only in plans with system settings")
    }

    fn sys_mut(&mut self) -> &mut SystemRun {
        self.sys
            .as_mut()
            .expect("Nix-native steps come only in plans with system settings")
    }

    /// Notes the generation current at the start: "previous" for a failed switch is
    /// this one, not merely the next lower number (an operator may have rolled back).
    /// A test switch notes the running system instead: after an earlier test activation
    /// it is not the profile's.
    pub(super) fn record_previous(&mut self, plan: &Plan) {
        let Some(sys) = self.sys.as_mut() else {
            return;
        };
        sys.test_switch = plan
            .steps
            .iter()
            .any(|step| matches!(step, Step::Activate { mode: Some(mode) } if mode == TEST_MODE));
        if sys.test_switch {
            let current = &sys.settings.current_system;
            sys.before = fs::canonicalize(current).ok();
            sys.running = sys.before.as_ref().map(|p| p.display().to_string());
            let line = match &sys.before {
                Some(path) => format!(
                    "[nixdeck-agent: running {} ({}); a test activation leaves {} as it is]",
                    path.display(),
                    current.display(),
                    sys.settings.profile.display()
                ),
                None => format!(
                    "[nixdeck-agent: {} does not exist: no running system to go back to]",
                    current.display()
                ),
            };
            self.note(&line);
            return;
        }
        sys.previous = nix::current_generation(&sys.settings.profile);
        let line = match &sys.previous {
            Some((n, path)) => format!(
                "[nixdeck-agent: {} is at generation {n} ({})]",
                sys.settings.profile.display(),
                path.display()
            ),
            None => format!(
                "[nixdeck-agent: {} has no generation yet]",
                sys.settings.profile.display()
            ),
        };
        self.note(&line);
    }

    /// Runs one Nix process, its output in the log and captured; a failure names the
    /// command and Nix's own error line.
    async fn nix_run(
        &mut self,
        argv: &[String],
        echo: bool,
    ) -> Result<Vec<(OutputStream, String)>, StepEnd> {
        if echo {
            self.header(argv);
        }
        let mut lines = Vec::new();
        match self.run(argv, None, Some(&mut lines)).await {
            Ran::Exited(status) if status.success() => Ok(lines),
            Ran::Exited(status) => {
                let mut message = format!("`{}` {}", short(argv), describe(status));
                if let Some(error) = nix_error(&lines) {
                    message = format!("{message}: {error}");
                }
                Err(StepEnd::Failed {
                    exit_code: status.code(),
                    message,
                })
            }
            Ran::CannotStart(message) => Err(StepEnd::Failed {
                exit_code: None,
                message,
            }),
            Ran::Halted(halt, status) => Err(StepEnd::Halted {
                halt,
                exit_code: status.and_then(|s| s.code()),
            }),
        }
    }

    pub(super) fn ok() -> StepEnd {
        StepEnd::Ok {
            exit_code: Some(0),
            message: None,
        }
    }

    pub(super) fn failed(message: String) -> StepEnd {
        StepEnd::Failed {
            exit_code: None,
            message,
        }
    }

    /// `nix build --no-link --json`: the one form every Nix since 2.4 has (2.8 lacks
    /// `--print-out-paths`); the path is `[0].outputs.out` of its JSON.
    pub(super) async fn build(&mut self, installable: &str, echo: bool) -> StepEnd {
        let argv: Vec<String> = ["nix", "build", "--no-link", "--json", installable]
            .map(str::to_owned)
            .to_vec();
        let lines = match self.nix_run(&argv, echo).await {
            Ok(lines) => lines,
            Err(end) => return end,
        };
        let json = stdout_text(&lines);
        let path = serde_json::from_str::<serde_json::Value>(&json)
            .ok()
            .and_then(|v| v[0]["outputs"]["out"].as_str().map(str::to_owned));
        match path {
            Some(path) => {
                self.note(&format!("[nixdeck-agent: built {path}]"));
                self.sys_mut().target = Some(path);
                Self::ok()
            }
            None => Self::failed(format!(
                "`nix build` printed no output path: {}",
                json.trim().chars().take(300).collect::<String>()
            )),
        }
    }

    /// A preview's store path: activated as it is, never rebuilt, so what was reviewed
    /// is what runs. Checked before anything changes.
    pub(super) fn use_store_path(&mut self, store_path: &str) -> StepEnd {
        let path = Path::new(store_path);
        let entry = self.sys().settings.activation.entry_point();
        // Only a store object, never any directory: the activation runs as root, and a
        // path elsewhere could have been written by anyone.
        let store = std::env::var_os("NIX_STORE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/nix/store"));
        let in_store = path.parent() == Some(store.as_path())
            && !path.components().any(|c| {
                matches!(
                    c,
                    std::path::Component::ParentDir | std::path::Component::CurDir
                )
            });
        if !in_store {
            return Self::failed(format!(
                "`{store_path}` is not a path in {}; nothing was switched",
                store.display()
            ));
        }
        if !path.exists() {
            return Self::failed(format!(
                "the previewed store path {store_path} does not exist (garbage-collected?); \
                 nothing was switched: run the preview again"
            ));
        }
        use std::os::unix::fs::PermissionsExt;
        let executable = fs::metadata(path.join(entry))
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
        if !executable {
            return Self::failed(format!(
                "{store_path} has no executable {entry}, so it is not a system this agent can \
                 activate; nothing was switched"
            ));
        }
        self.note(&format!(
            "[nixdeck-agent: activating the previewed {store_path}; not building]"
        ));
        self.sys_mut().target = Some(store_path.to_owned());
        Self::ok()
    }

    /// `nix-env -p <profile> --set <target>`. A profile whose directory is missing is
    /// Nix's error, never created here: a typo must not become a new profile.
    pub(super) async fn set_profile(&mut self, echo: bool) -> StepEnd {
        let sys = self.sys();
        let Some(target) = sys.target.clone() else {
            return Self::failed("nothing was built to set the profile to".to_owned());
        };
        let profile = sys.settings.profile.display().to_string();
        let argv = sys.argv(&["nix-env", "-p", &profile, "--set", &target]);
        if let Err(end) = self.nix_run(&argv, echo).await {
            return end;
        }
        self.sys_mut().moved = true;
        match nix::current_generation(&self.sys().settings.profile) {
            Some((n, _)) => self.note(&format!("[nixdeck-agent: {profile} is now generation {n}]")),
            None => self.note(&format!("[nixdeck-agent: {profile} is set]")),
        }
        Self::ok()
    }

    pub(super) async fn activate(&mut self, mode: Option<&str>, echo: bool) -> StepEnd {
        let Some(target) = self.sys().target.clone() else {
            return Self::failed("nothing to activate".to_owned());
        };
        let argv = self.sys().activation_argv(&target, mode);
        {
            let sys = self.sys_mut();
            sys.mode = mode.map(str::to_owned);
            sys.activated = true;
            sys.running = Some(target.clone());
        }
        match self.nix_run(&argv, echo).await {
            Ok(_) => Self::ok(),
            Err(StepEnd::Failed { exit_code, message }) => StepEnd::Failed {
                exit_code,
                message: format!("the activation failed: {message}"),
            },
            Err(end) => end,
        }
    }

    /// `nix-env -p <profile> --switch-generation N` (or `--rollback`); the generation
    /// it lands on becomes the target to activate.
    pub(super) async fn switch_generation(
        &mut self,
        generation: Option<u64>,
        echo: bool,
    ) -> StepEnd {
        let sys = self.sys();
        let profile = sys.settings.profile.display().to_string();
        let number = generation.map(|n| n.to_string());
        let argv = match &number {
            Some(n) => sys.argv(&["nix-env", "-p", &profile, "--switch-generation", n]),
            None => sys.argv(&["nix-env", "-p", &profile, "--rollback"]),
        };
        if let Err(end) = self.nix_run(&argv, echo).await {
            return end;
        }
        let now = nix::current_generation(&self.sys().settings.profile);
        let moved = now.as_ref().map(|(n, _)| *n) != self.sys().previous.as_ref().map(|(n, _)| *n);
        match now {
            Some((n, path)) => {
                self.note(&format!(
                    "[nixdeck-agent: {profile} is now generation {n} ({})]",
                    path.display()
                ));
                let sys = self.sys_mut();
                sys.moved |= moved;
                sys.target = Some(path.display().to_string());
                Self::ok()
            }
            None => Self::failed(format!("{profile} points at no generation")),
        }
    }

    /// The health gate. Writes a line after the activation and its seq to `awaiting`;
    /// the agent writes `reached` once the dashboard acked it. Meanwhile the host's
    /// checks run. Both must succeed within the confirm timeout, or the step fails and
    /// the command rolls back (see `undo`), with or without an agent.
    pub(super) async fn confirm(&mut self, tests: Option<&Path>, cwd: Option<&Path>) -> StepEnd {
        let timeout_s = self.sys().settings.confirm_timeout_s;
        let deadline = Instant::now() + Duration::from_secs(timeout_s);
        // A test activation made no generation: name the system instead.
        let activated = if self.sys().test_switch {
            format!(
                "{} (test: not the boot default, no new generation)",
                self.sys().target.as_deref().unwrap_or("?")
            )
        } else {
            let generation = nix::current_generation(&self.sys().settings.profile)
                .map_or_else(|| "?".to_owned(), |(n, _)| n.to_string());
            format!("generation {generation}")
        };
        let _ = fs::remove_file(self.dir.join(spool::REACHED));
        // `awaiting` goes first: were the line first, the agent could send it and see
        // its ack before knowing it is the one awaited, and nothing later might follow.
        // The note is one record, so its seq is the next one.
        let seq = self.writer.last_seq() + 1;
        if let Err(err) = spool::write_atomic(
            &self.dir.join(spool::AWAITING),
            format!("{seq}\n").as_bytes(),
        ) {
            return Self::failed(format!("cannot start the health gate: {err}"));
        }
        self.note(&format!(
            "[nixdeck-agent: activated {activated}; waiting up to {timeout_s} s for \
             the agent to reach the dashboard and the health checks to pass]"
        ));
        let _ = self.writer.flush();

        if let Err(end) = self.health_checks(tests, cwd).await {
            return end;
        }

        while !self.dir.join(spool::REACHED).exists() {
            if let Some(halt) = *self.halt.borrow() {
                return StepEnd::Halted {
                    halt,
                    exit_code: None,
                };
            }
            if Instant::now() >= deadline {
                return Self::failed(format!(
                    "the agent did not reach the dashboard within {timeout_s} s after the activation"
                ));
            }
            time::sleep(REACHED_POLL).await;
        }
        self.note(&format!(
            "[nixdeck-agent: {activated} confirmed: the agent reached the dashboard \
             and the health checks passed]"
        ));
        Self::ok()
    }

    /// The tests in `hosts/<host>/tests/` (when the directory exists), then the units
    /// and URLs of `[health]`.
    async fn health_checks(
        &mut self,
        tests: Option<&Path>,
        cwd: Option<&Path>,
    ) -> Result<(), StepEnd> {
        if let (Some(dir), Some(cwd)) = (tests, cwd) {
            if dir.is_dir() {
                match self.tests(dir, cwd).await {
                    StepEnd::Ok { .. } => {}
                    StepEnd::Failed { exit_code, message } => {
                        return Err(StepEnd::Failed {
                            exit_code,
                            message: format!("health check failed: {message}"),
                        })
                    }
                    halted => return Err(halted),
                }
            }
        }
        let health = self.sys().settings.health.clone();
        for unit in &health.units {
            let argv: Vec<String> = vec!["systemctl".into(), "is-active".into(), unit.clone()];
            self.header(&argv);
            match self.run(&argv, None, None).await {
                Ran::Exited(status) if status.success() => {}
                Ran::Exited(_) | Ran::CannotStart(_) => {
                    return Err(Self::failed(format!(
                        "health check failed: unit {unit} is not active"
                    )))
                }
                Ran::Halted(halt, status) => {
                    return Err(StepEnd::Halted {
                        halt,
                        exit_code: status.and_then(|s| s.code()),
                    })
                }
            }
        }
        for url in &health.urls {
            let verdict = if url.starts_with("http://") {
                http_get(url).await
            } else {
                // TLS needs a client the agent does not carry: curl does it.
                let argv: Vec<String> =
                    ["curl", "-fsS", "--max-time", "10", "-o", "/dev/null", url]
                        .map(str::to_owned)
                        .to_vec();
                self.header(&argv);
                match self.run(&argv, None, None).await {
                    Ran::Exited(status) if status.success() => Ok("2xx".to_owned()),
                    Ran::Exited(status) => Err(format!("curl {}", describe(status))),
                    Ran::CannotStart(message) => Err(message),
                    Ran::Halted(halt, status) => {
                        return Err(StepEnd::Halted {
                            halt,
                            exit_code: status.and_then(|s| s.code()),
                        })
                    }
                }
            };
            match verdict {
                Ok(status) => {
                    self.note(&format!("[nixdeck-agent: health: {url} answered {status}]"))
                }
                Err(why) => {
                    return Err(Self::failed(format!(
                        "health check failed: {url} did not answer 2xx ({why})"
                    )))
                }
            }
        }
        Ok(())
    }

    /// A preview: `nix store diff-closures <current> <target>`, closure sizes, and whether
    /// the kernel changes. No current system: everything is added, from nothing.
    pub(super) async fn diff(&mut self, echo: bool) -> StepEnd {
        let Some(target) = self.sys().target.clone() else {
            return Self::failed("nothing was built to diff".to_owned());
        };
        let current = fs::canonicalize(&self.sys().settings.current_system).ok();
        let current_text = current.as_ref().map(|p| p.display().to_string());
        let nix = |args: &[&str]| -> Vec<String> {
            std::iter::once("nix")
                .chain(args.iter().copied())
                .map(str::to_owned)
                .collect()
        };
        let changes = match &current_text {
            Some(current) => {
                let lines = match self
                    .nix_run(&nix(&["store", "diff-closures", current, &target]), echo)
                    .await
                {
                    Ok(lines) => lines,
                    Err(end) => return end,
                };
                match nix::parse_diff_closures(&stdout_text(&lines)) {
                    Ok(changes) => changes,
                    Err(bad) => {
                        return Self::failed(format!(
                            "cannot read this line of `nix store diff-closures`: {bad}"
                        ))
                    }
                }
            }
            None => {
                self.note(&format!(
                    "[nixdeck-agent: {} does not exist: everything in the closure is new]",
                    self.sys().settings.current_system.display()
                ));
                let lines = match self
                    .nix_run(&nix(&["path-info", "-r", &target]), echo)
                    .await
                {
                    Ok(lines) => lines,
                    Err(end) => return end,
                };
                nix::all_added(&stdout_text(&lines))
            }
        };
        let mut sizes = Vec::new();
        for path in current_text.iter().chain(std::iter::once(&target)) {
            let lines = match self.nix_run(&nix(&["path-info", "-S", path]), echo).await {
                Ok(lines) => lines,
                Err(end) => return end,
            };
            let text = stdout_text(&lines);
            match nix::parse_path_info_size(&text) {
                Some(size) => sizes.push(size),
                None => {
                    return Self::failed(format!(
                        "cannot read the closure size from `nix path-info -S`: {}",
                        text.trim()
                    ))
                }
            }
        }
        let (before, after) = match sizes[..] {
            [before, after] => (before, after),
            [after] => (0, after),
            _ => (0, 0),
        };
        let reboot_needed = current
            .as_deref()
            .is_some_and(|c| nix::boot_differs(c, Path::new(&target)));
        let mut diff = ClosureDiff {
            changes,
            closure_bytes_before: before,
            closure_bytes_after: after,
            reboot_needed,
            truncated: 0,
        };
        nix::cap_changes(&mut diff);
        let mut summary = format!(
            "[nixdeck-agent: {} package changes; closure {} → {} bytes",
            diff.changes.len() as u64 + diff.truncated,
            before,
            after
        );
        if reboot_needed {
            summary.push_str("; the kernel changes: a reboot is needed");
        }
        summary.push(']');
        self.note(&summary);
        self.sys_mut().diff = Some(diff);
        StepEnd::Ok {
            exit_code: Some(0),
            message: None,
        }
    }

    /// Puts the generation current at the start back after a failure, and its
    /// activation if an activation ran. Returns the final status and message:
    /// `rolled_back` when an activation ran and was undone, `error` when only the
    /// profile had moved (nothing ran that needed undoing) or the undo failed.
    pub(super) async fn undo(
        &mut self,
        status: AgentOutcome,
        message: String,
    ) -> (AgentOutcome, String) {
        self.unhaltable = true;
        if self.sys().test_switch {
            return self.undo_test(status, message).await;
        }
        let sys = self.sys();
        let Some((previous, previous_path)) = sys.previous.clone() else {
            self.note(
                "[nixdeck-agent: the profile had no generation before this command, so there \
                 is nothing to roll back to]",
            );
            return (
                AgentOutcome::Error,
                format!(
                    "{message}; nothing to roll back to: the profile had no earlier generation"
                ),
            );
        };
        let activated = sys.activated;
        let mode = sys.mode.clone();
        let profile = sys.settings.profile.display().to_string();
        let why = match status {
            AgentOutcome::Stopped => "the command was stopped".to_owned(),
            _ => message.clone(),
        };
        self.note(&format!(
            "[nixdeck-agent: {why}; rolling back to generation {previous}]"
        ));
        let n = previous.to_string();
        let argv = self
            .sys()
            .argv(&["nix-env", "-p", &profile, "--switch-generation", &n]);
        if let Err(end) = self.nix_run(&argv, true).await {
            let reason = match end {
                StepEnd::Failed { message, .. } => message,
                _ => "interrupted".to_owned(),
            };
            self.note(&format!("[nixdeck-agent: the rollback failed: {reason}]"));
            return (
                AgentOutcome::Error,
                format!("{message}; putting generation {previous} back failed: {reason}"),
            );
        }
        if !activated {
            self.note(&format!(
                "[nixdeck-agent: {profile} is back at generation {previous}; nothing had been activated]"
            ));
            return (
                if status == AgentOutcome::Stopped {
                    AgentOutcome::Stopped
                } else {
                    AgentOutcome::Error
                },
                format!("{message}; the profile was put back to generation {previous}"),
            );
        }
        let path = previous_path.display().to_string();
        let argv = self.sys().activation_argv(&path, mode.as_deref());
        if let Err(end) = self.nix_run(&argv, true).await {
            let reason = match end {
                StepEnd::Failed { message, .. } => message,
                _ => "interrupted".to_owned(),
            };
            self.note(&format!(
                "[nixdeck-agent: the profile is back at generation {previous}, but its activation failed: {reason}]"
            ));
            return (
                AgentOutcome::Error,
                format!(
                    "{message}; generation {previous} is set again but its activation failed: {reason}"
                ),
            );
        }
        self.note(&format!(
            "[nixdeck-agent: rolled back to generation {previous}]"
        ));
        (
            AgentOutcome::RolledBack,
            format!("{why}; rolled back to generation {previous}"),
        )
    }
}

impl Supervisor {
    /// Undoes a test activation as NixOS would: `switch-to-configuration test` of the
    /// system that ran when the command started. The profile was never touched, so
    /// there is no generation to put back and none to report.
    async fn undo_test(&mut self, status: AgentOutcome, message: String) -> (AgentOutcome, String) {
        let why = match status {
            AgentOutcome::Stopped => "the command was stopped".to_owned(),
            _ => message.clone(),
        };
        let Some(before) = self.sys().before.clone() else {
            let current = self.sys().settings.current_system.display().to_string();
            self.note(&format!(
                "[nixdeck-agent: {current} did not exist when this command started, so there \
                 is no running system to go back to]"
            ));
            return (
                AgentOutcome::Error,
                format!("{message}; nothing to roll back to: {current} did not exist"),
            );
        };
        let path = before.display().to_string();
        self.note(&format!(
            "[nixdeck-agent: {why}; rolling back to the system running before, {path} \
             (test activation; the profile is not touched)]"
        ));
        let argv = self.sys().activation_argv(&path, Some(TEST_MODE));
        if let Err(end) = self.nix_run(&argv, true).await {
            let reason = match end {
                StepEnd::Failed { message, .. } => message,
                _ => "interrupted".to_owned(),
            };
            self.note(&format!(
                "[nixdeck-agent: the rollback failed: activating {path} again: {reason}]"
            ));
            return (
                AgentOutcome::Error,
                format!("{message}; activating the previous system {path} again failed: {reason}"),
            );
        }
        self.sys_mut().running = Some(path.clone());
        self.note(&format!(
            "[nixdeck-agent: rolled back to the system running before, {path}]"
        ));
        (
            AgentOutcome::RolledBack,
            format!("{why}; rolled back to the system running before ({path})"),
        )
    }
}

/// A plain-HTTP GET with a 10 s limit; Ok with the status line's code when it is 2xx.
/// Small on purpose: the agent carries no HTTP client, and a health URL on the host
/// itself needs no more (https:// goes through curl).
async fn http_get(url: &str) -> Result<String, String> {
    use tokio::io::AsyncWriteExt;
    let rest = url.strip_prefix("http://").ok_or("not an http:// URL")?;
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_owned()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_owned()),
    };
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let address = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        && !authority.ends_with(']')
    {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(&address)
            .await
            .map_err(|e| format!("cannot connect to {address}: {e}"))?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: nixdeck-agent\r\nConnection: close\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.contains(&b'\n') && head.len() < 8192 {
            let n = stream.read(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        let line = String::from_utf8_lossy(&head);
        let status = line
            .lines()
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or_else(|| "no HTTP status line".to_owned())?;
        if (200..300).contains(&status) {
            Ok(status.to_string())
        } else {
            Err(format!("status {status}"))
        }
    };
    time::timeout(URL_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("no answer within {} s", URL_TIMEOUT.as_secs()))?
}
