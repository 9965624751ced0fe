//! What the dashboard's `command`, `stop` and `ack` frames do on this host, and what goes
//! back besides heartbeats: output lines, completions and the status checks.
//!
//! Kept apart from the link (link.rs) because it outlives any one connection: a command
//! runs on, and its unacked output waits in the `Runner`'s spools, while the link drops
//! and reconnects. The link owns the socket and decodes frames; it hands the command
//! frames here and sends what `due` returns. Nothing here touches the socket, so the
//! replies come back as values.

use crate::checks::{self, Checks};
use crate::config::Config;
use crate::plan::{Action, PlanContext};
use crate::probes::{self, Host};
use crate::runner::{self, Finished, Runner};
use crate::spool::{self, Spec};
use protocol::messages::{
    Ack, AgentOutcome, CommandOrder, CommandRejected, HeartbeatCommand, RunningCommand,
    StatusReport, StopOrder,
};
use protocol::{AgentMessage, CommandKind, OutputStream};
use std::io;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// `restart` waits this long for the ack of its completion before exiting anyway.
const RESTART_GRACE: Duration = Duration::from_secs(5);

/// A `restart` command waiting for the ack of its completion.
struct PendingRestart {
    command_id: String,
    deadline: Instant,
}

/// What is due to the dashboard after reading the spools.
pub struct Due {
    /// Output lines and completions, in order.
    pub frames: Vec<AgentMessage>,
    /// The checks, when they changed since the dashboard last heard them; once sent, call
    /// `Dispatch::checks_sent`.
    pub checks: Option<StatusReport>,
    /// A heartbeat should follow (a command changed the checkout); once sent, call
    /// `Dispatch::heartbeat_sent`.
    pub heartbeat: bool,
    /// A full batch: more is ready now.
    pub more: bool,
}

/// The agent's commands, kept across sessions.
pub struct Dispatch {
    runner: Runner,
    plans: PlanContext,
    checks: Checks,
    /// The checks changed since the dashboard last heard them.
    checks_unsent: bool,
    /// The profile's generations may have changed (a switch, boot or rollback ended):
    /// the next `status` carries them.
    generations_unsent: bool,
    /// Send a heartbeat with the next batch (after a command changed the checkout).
    beat_now: bool,
    restart: Option<PendingRestart>,
    /// Isolated mode: the clone made at start, in the background so the agent comes
    /// online at once; commands wait for it.
    cloning: Option<JoinHandle<()>>,
}

impl Dispatch {
    /// Opens the command spools too: commands a previous agent process left running or
    /// undelivered are adopted here.
    pub fn new(cfg: &Config) -> Self {
        let runner = Runner::open(&cfg.state_dir, cfg.supervisor_exe.clone());
        let plans = PlanContext {
            hostname: cfg.hostname.clone(),
            host_type: cfg.host_type,
            branch: cfg.branch.clone(),
            checkout: cfg.checkout.clone(),
            overrides: cfg.commands.clone(),
            spool_limit: cfg.spool_limit,
            // SAFETY: geteuid has no preconditions and cannot fail.
            is_root: unsafe { libc::geteuid() } == 0,
            system: cfg.system.clone(),
        };
        let checks = Checks::load(&cfg.state_dir);
        Dispatch {
            runner,
            plans,
            checks,
            checks_unsent: false,
            generations_unsent: false,
            beat_now: false,
            restart: None,
            cloning: None,
        }
    }

    /// Isolated mode: clone when missing, clone again when broken. Skipped while an adopted
    /// command runs (it may be a pull doing the same).
    pub fn prepare_checkout(&mut self) {
        self.cloning = self.start_clone();
    }

    fn start_clone(&self) -> Option<JoinHandle<()>> {
        let checkout = self.plans.checkout.clone()?;
        let url = checkout.clone_url?;
        if self.runner.running().is_some() {
            return None;
        }
        let branch = self.plans.branch.clone();
        Some(tokio::spawn(async move {
            if let Err(e) = crate::repo::prepare_clone(&url, &branch, &checkout.dir).await {
                tracing::error!("{e}; the next pull tries again");
            }
        }))
    }

    /// A new session registered: everything not acked goes out again, from the first
    /// unacked line; and the dashboard hears our checks (it may have restarted and
    /// forgotten them).
    pub fn session_started(&mut self) {
        self.runner.rewind();
        self.checks_unsent = !self.checks.is_empty();
    }

    /// Nothing to read from the spools or to send: the link need not poll.
    pub fn is_idle(&self) -> bool {
        self.runner.is_empty() && !self.checks_unsent && !self.generations_unsent && !self.beat_now
    }

    /// When a `restart` stops waiting for its ack and exits anyway.
    pub fn restart_deadline(&self) -> Option<Instant> {
        self.restart.as_ref().map(|r| r.deadline)
    }

    /// Forgets a pending `restart`; true if there was one. Its completion stays on disk
    /// and goes out after the restart.
    pub fn take_restart(&mut self) -> bool {
        self.restart.take().is_some()
    }

    /// Any command not fully acked, for `register`, so the dashboard does not mark it lost.
    pub fn running_command(&self) -> Option<RunningCommand> {
        self.runner.running_command()
    }

    /// For heartbeats.
    pub fn pending_command(&self) -> Option<HeartbeatCommand> {
        self.runner.pending_command()
    }

    /// A `command` frame: starts it, or returns the rejection to send.
    pub async fn command(
        &mut self,
        order: CommandOrder,
        host: &mut Host,
    ) -> Option<CommandRejected> {
        if self.runner.holds(&order.command_id) {
            // A repeat of one we run or ran: rejecting it would fail the original.
            tracing::debug!(command_id = %order.command_id, "ignoring a repeated command");
            None
        } else if let Some(reason) = self.refusal(&order) {
            tracing::warn!(command_id = %order.command_id, command = %order.command, "rejecting command: {reason}");
            Some(CommandRejected {
                command_id: order.command_id,
                reason,
            })
        } else if let Err(e) = self.start_command(&order, host).await {
            tracing::error!(command_id = %order.command_id, "cannot start the command: {e}");
            Some(CommandRejected {
                command_id: order.command_id,
                reason: format!("the agent cannot start it: {e}"),
            })
        } else {
            None
        }
    }

    /// A `stop` frame.
    pub fn stop(&mut self, stop: &StopOrder) {
        if !self.runner.stop(&stop.command_id) {
            tracing::debug!(command_id = %stop.command_id, "stop for a command we do not run")
        }
    }

    /// An `ack` frame. True when it acknowledges the completion of a pending `restart`:
    /// the agent should exit for its service manager now.
    pub fn ack(&mut self, ack: &Ack) -> bool {
        tracing::trace!(command_id = %ack.command_id, seq = ack.seq, complete = ack.complete, "ack");
        let delivered = self.runner.ack(ack);
        let restarting = self
            .restart
            .as_ref()
            .is_some_and(|r| r.command_id == ack.command_id);
        if delivered.is_some() && restarting {
            tracing::info!("restart acknowledged; exiting for the service manager");
            return true;
        }
        false
    }

    /// Reads the spools: at most `batch` output lines and completions, then the checks if
    /// they changed and whether a heartbeat should follow.
    pub async fn due(&mut self, batch: usize, host: &mut Host) -> Due {
        self.runner.poll();
        let mut frames = Vec::new();
        let mut finished = Vec::new();
        self.runner.frames(batch, &mut frames, &mut finished);
        // Only a full batch means more is ready now; a full in-flight window waits for
        // acks, and polling again at once would just spin.
        let more = frames.len() >= batch;
        for done in finished {
            self.on_finished(done, host).await;
        }
        let checks = (self.checks_unsent || self.generations_unsent).then(|| {
            let (generations, reboot_needed) = if self.generations_unsent {
                self.generations()
            } else {
                (None, None)
            };
            StatusReport {
                checks: self.checks.current.clone(),
                generations,
                reboot_needed,
            }
        });
        Due {
            frames,
            checks,
            heartbeat: self.beat_now,
            more,
        }
    }

    /// The `Due::checks` went out.
    pub fn checks_sent(&mut self) {
        self.checks_unsent = false;
        self.generations_unsent = false;
    }

    /// The system profile's generations and whether the booted kernel differs from the
    /// running one, for `register` and `status`; None when there is no profile.
    pub fn generations(&self) -> (Option<Vec<protocol::Generation>>, Option<bool>) {
        let system = &self.plans.system;
        let generations = crate::nix::generations(&system.profile, &system.booted_system);
        // A Home Manager generation has no kernel: comparing it with the booted NixOS
        // system would always claim a reboot.
        let reboot_needed = generations.is_some().then(|| {
            system.activation != crate::nix::Activation::HomeManager
                && crate::nix::reboot_needed(&system.booted_system, &system.current_system)
        });
        (generations, reboot_needed)
    }

    /// The heartbeat `Due::heartbeat` asked for went out.
    pub fn heartbeat_sent(&mut self) {
        self.beat_now = false;
    }

    /// A command's completion went out: update the checks from its outcome, and follow
    /// with a heartbeat carrying the checkout's new state.
    async fn on_finished(&mut self, done: Finished, host: &mut Host) {
        let Finished { spec, result } = done;
        tracing::info!(
            command_id = %spec.command_id,
            command = %spec.command,
            status = ?result.status,
            exit_code = ?result.exit_code,
            duration_ms = result.duration_ms,
            "command finished"
        );
        let now = host.repo_state().await;
        let changed = self.checks.update(checks::after(&spec, &result, &now));
        // refresh re-sends them even when nothing changed: that is what it is for.
        self.checks_unsent |=
            changed || (spec.command == CommandKind::Refresh && !self.checks.is_empty());
        // Whatever the outcome: even a failed switch may have rolled the profile back.
        self.generations_unsent |= matches!(
            spec.command,
            CommandKind::Switch
                | CommandKind::PullSwitch
                | CommandKind::Boot
                | CommandKind::Rollback
        );
        self.beat_now = true;
    }

    /// Why a command cannot be taken now, if it cannot.
    fn refusal(&self, order: &CommandOrder) -> Option<String> {
        if !runner::is_valid_command_id(&order.command_id) {
            return Some("invalid command id".to_owned());
        }
        if let Some(running) = self.runner.running() {
            return Some(format!("busy: {} is running", running.command_id));
        }
        if self.cloning.as_ref().is_some_and(|c| !c.is_finished()) {
            return Some("busy: the agent is still cloning the configuration repository".into());
        }
        None
    }

    async fn start_command(&mut self, order: &CommandOrder, host: &mut Host) -> io::Result<()> {
        let before = host.repo_state().await;
        let mut spec = Spec {
            command_id: order.command_id.clone(),
            command: order.command,
            created_ms: spool::now_ms(),
            generation_before: before.generation.clone(),
            lock_before: before.lock_hash.clone(),
            plan: None,
        };
        match self.plans.action_for(order) {
            Ok(Action::Supervised(plan)) => {
                spec.plan = Some(plan);
                self.runner.start(spec)?;
            }
            Ok(Action::Refresh) => {
                let metrics = host.metrics();
                let nixpkgs = probes::nixpkgs_version().await;
                let unknown = || "unknown".to_owned();
                let lines = [
                    format!("generation: {}", before.generation.unwrap_or_else(unknown)),
                    format!(
                        "flake.lock sha256: {}",
                        before.lock_hash.unwrap_or_else(unknown)
                    ),
                    format!("nixpkgs: {}", nixpkgs.unwrap_or_else(unknown)),
                    format!(
                        "cpu {:.1}%, ram {:.1}%, swap {:.1}%, load {:.2}",
                        metrics.cpu, metrics.ram, metrics.swap, metrics.load
                    ),
                ]
                .map(|line| (OutputStream::Stdout, line));
                self.runner
                    .complete_now(spec, &lines, AgentOutcome::Ok, String::new())?;
            }
            Ok(Action::Restart) => {
                let line = format!(
                    "restarting nixdeck-agent {} (pid {})",
                    protocol::VERSION,
                    std::process::id()
                );
                self.runner.complete_now(
                    spec,
                    &[(OutputStream::Stdout, line)],
                    AgentOutcome::Ok,
                    String::new(),
                )?;
                self.restart = Some(PendingRestart {
                    command_id: order.command_id.clone(),
                    deadline: Instant::now() + RESTART_GRACE,
                });
            }
            Err(reason) => {
                // Run and failed, rather than rejected: the reason lands in the command's
                // log, where the operator looks.
                let line = format!("[nixdeck-agent: cannot run {}: {reason}]", order.command);
                self.runner.complete_now(
                    spec,
                    &[(OutputStream::Stderr, line)],
                    AgentOutcome::Error,
                    reason,
                )?;
            }
        }
        self.checks_unsent |= self.checks.update(checks::at_start(order.command));
        Ok(())
    }
}
