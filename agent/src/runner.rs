//! The agent's side of commands: starting a supervisor for each, adopting the ones a
//! previous agent process left on disk, tailing their spools into `output` frames, and
//! keeping everything until the dashboard acks it.
//!
//! At most one command runs at a time, but several may be held: a finished command stays
//! until its completion is acked, and the next one may start before that ack arrives.

use crate::spool::{self, CommandResult, Record, Spec, SpoolReader, SpoolWriter};
use crate::supervisor;
use protocol::messages::{
    Ack, AgentCommandComplete, AgentOutcome, HeartbeatCommand, Output, RunningCommand,
};
use protocol::{AgentMessage, OutputStream};
use std::collections::VecDeque;
use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most lines sent and not yet acked, over all commands: a slow dashboard is not flooded,
/// and the lines wait on disk instead.
pub const MAX_IN_FLIGHT: usize = 10_000;
/// Most bytes of lines read from spools and held in memory.
const MAX_BUFFERED_BYTES: usize = 16 * 1024 * 1024;
/// Lines or a completion sent without any ack for this long are sent again (the
/// dashboard stores each seq once, so a repeat is harmless).
pub const RESEND_AFTER: Duration = Duration::from_secs(15);
/// How often a running command's supervisor is checked for life.
const LIVENESS_EVERY: Duration = Duration::from_secs(1);

/// A command id names a directory: only plain characters, never a path.
pub fn is_valid_command_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A command's completion was sent for the first time by this process.
#[derive(Debug)]
pub struct Finished {
    pub spec: Spec,
    pub result: CommandResult,
}

pub struct Runner {
    /// `<state-dir>/commands`.
    root: PathBuf,
    supervisor_exe: PathBuf,
    /// Oldest first.
    held: Vec<Held>,
    last_liveness: Instant,
}

struct Held {
    spec: Spec,
    dir: PathBuf,
    reader: SpoolReader,
    /// Read from the spool and not yet acked, oldest first.
    buffered: VecDeque<Record>,
    buffered_bytes: usize,
    /// How many of `buffered` went out in this session.
    sent: usize,
    acked: u64,
    result: Option<CommandResult>,
    complete_sent: bool,
    /// The completion went out once from this process (status reports follow it).
    reported: bool,
    /// Set for a supervisor this process spawned: true once it has exited.
    exited: Option<Arc<AtomicBool>>,
    /// The dashboard does not know the command: let it finish, send nothing.
    discarded: bool,
    /// Last ack progress, or the start of sending.
    progress_at: Instant,
}

impl Held {
    fn new(spec: Spec, dir: PathBuf, result: Option<CommandResult>) -> Held {
        let acked = spool::read_acked(&dir);
        Held {
            reader: SpoolReader::new(dir.join(spool::OUTPUT), acked),
            spec,
            dir,
            buffered: VecDeque::new(),
            buffered_bytes: 0,
            sent: 0,
            acked,
            result,
            complete_sent: false,
            reported: false,
            exited: None,
            discarded: false,
            progress_at: Instant::now(),
        }
    }

    fn is_running(&self) -> bool {
        self.result.is_none()
    }

    fn supervisor_alive(&self) -> bool {
        match &self.exited {
            Some(exited) => !exited.load(Ordering::Acquire),
            None => supervisor::is_running(&self.dir),
        }
    }

    /// The next seq this command will produce.
    fn next_seq(&self) -> u64 {
        let written = match &self.result {
            Some(result) => result.last_seq,
            None => spool::last_seq(&self.dir.join(spool::OUTPUT)).unwrap_or(0),
        };
        written.max(self.reader.last_seq()) + 1
    }

    /// Sends everything unacked again, from the first unacked line.
    fn rewind(&mut self) {
        self.sent = 0;
        self.complete_sent = false;
        self.progress_at = Instant::now();
    }
}

impl Runner {
    /// Opens `<state-dir>/commands` and adopts what a previous agent process left there:
    /// running commands keep running, finished ones wait for their acks, and one whose
    /// supervisor died without a result gets an error result now.
    pub fn open(state_dir: &Path, supervisor_exe: PathBuf) -> Runner {
        let root = state_dir.join("commands");
        let mut runner = Runner {
            root,
            supervisor_exe,
            held: Vec::new(),
            last_liveness: Instant::now(),
        };
        let entries = match fs::read_dir(&runner.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return runner,
            Err(e) => {
                tracing::error!(dir = %runner.root.display(), "cannot read the command spools: {e}");
                return runner;
            }
        };
        for entry in entries.flatten() {
            let dir = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if !dir.is_dir() || !is_valid_command_id(&name) {
                continue;
            }
            match adopt(&dir) {
                Ok(Some(held)) => {
                    tracing::info!(
                        command_id = %held.spec.command_id,
                        command = %held.spec.command,
                        running = held.is_running(),
                        acked = held.acked,
                        "adopted a command from before the restart"
                    );
                    runner.held.push(held);
                }
                Ok(None) => {
                    // Never started (no spec): nothing to report, nothing to keep.
                    tracing::warn!(dir = %dir.display(), "removing a command directory without a spec");
                    let _ = fs::remove_dir_all(&dir);
                }
                Err(e) => tracing::error!(dir = %dir.display(), "cannot adopt this command: {e}"),
            }
        }
        runner.held.sort_by(|a, b| {
            (a.spec.created_ms, &a.spec.command_id).cmp(&(b.spec.created_ms, &b.spec.command_id))
        });
        runner
    }

    /// Nothing to read or send: no command running, every result delivered and acked.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    pub fn holds(&self, command_id: &str) -> bool {
        self.held.iter().any(|h| h.spec.command_id == command_id)
    }

    /// The command now running, if any.
    pub fn running(&self) -> Option<&Spec> {
        self.held.iter().find(|h| h.is_running()).map(|h| &h.spec)
    }

    /// For `register`: the command the agent still holds unacked (the running one first,
    /// else the newest), so the dashboard does not mark it lost.
    pub fn running_command(&self) -> Option<RunningCommand> {
        let mut held = self.held.iter().filter(|h| !h.discarded);
        let chosen = held
            .clone()
            .find(|h| h.is_running())
            .or_else(|| held.next_back())?;
        Some(RunningCommand {
            command_id: chosen.spec.command_id.clone(),
            command: chosen.spec.command,
            next_seq: chosen.next_seq(),
        })
    }

    /// For heartbeats.
    pub fn pending_command(&self) -> Option<HeartbeatCommand> {
        self.running().map(|spec| HeartbeatCommand {
            command_id: spec.command_id.clone(),
            command: spec.command,
        })
    }

    /// Writes the spec and starts a detached supervisor for it. A supervisor that cannot
    /// start turns into an error result, so the dashboard hears why.
    pub fn start(&mut self, spec: Spec) -> io::Result<()> {
        let dir = self.create_dir(&spec)?;
        let mut command = tokio::process::Command::new(&self.supervisor_exe);
        command
            .arg("supervise")
            .arg("--dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(open_log(&dir));
        // SAFETY: only setsid, which is async-signal-safe, runs between fork and exec.
        unsafe {
            // A new session and process group: the supervisor is neither killed with the
            // agent's group nor hung up with its terminal.
            command.pre_exec(|| {
                if libc::setsid() == -1 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut held = Held::new(spec, dir, None);
        match command.spawn() {
            Ok(mut child) => {
                let exited = Arc::new(AtomicBool::new(false));
                let flag = exited.clone();
                // Reaps it (no zombie) and tells us it is gone. Dropping this task when the
                // agent exits leaves the supervisor running, as it should.
                tokio::spawn(async move {
                    let _ = child.wait().await;
                    flag.store(true, Ordering::Release);
                });
                held.exited = Some(exited);
                tracing::info!(
                    command_id = %held.spec.command_id,
                    command = %held.spec.command,
                    "command started"
                );
            }
            Err(e) => {
                let exe = self.supervisor_exe.display();
                tracing::error!("cannot start the supervisor {exe}: {e}");
                let line = format!("[nixdeck-agent: cannot start the supervisor {exe}: {e}]");
                held.result = Some(finish_with_lines(
                    &held.dir,
                    &held.spec,
                    &[(OutputStream::Stderr, line)],
                    AgentOutcome::Error,
                    format!("cannot start the supervisor: {e}"),
                )?);
            }
        }
        self.held.push(held);
        Ok(())
    }

    /// A command the agent completes at once by itself: its lines and result are written
    /// like a supervisor's, and delivered the same way.
    pub fn complete_now(
        &mut self,
        spec: Spec,
        lines: &[(OutputStream, String)],
        status: AgentOutcome,
        message: String,
    ) -> io::Result<()> {
        let dir = self.create_dir(&spec)?;
        let result = finish_with_lines(&dir, &spec, lines, status, message)?;
        self.held.push(Held::new(spec, dir, Some(result)));
        Ok(())
    }

    fn create_dir(&self, spec: &Spec) -> io::Result<PathBuf> {
        if !is_valid_command_id(&spec.command_id) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "invalid command id",
            ));
        }
        // Command output can hold anything a build prints: owner only.
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.root)?;
        let dir = self.root.join(&spec.command_id);
        fs::DirBuilder::new().mode(0o700).create(&dir)?;
        if let Err(e) = spool::write_json(&dir.join(spool::SPEC), spec) {
            let _ = fs::remove_dir_all(&dir);
            return Err(e);
        }
        Ok(dir)
    }

    /// Asks the supervisor of a running command to stop it. False when no such command runs.
    pub fn stop(&mut self, command_id: &str) -> bool {
        let Some(held) = self
            .held
            .iter()
            .find(|h| h.spec.command_id == command_id && h.is_running())
        else {
            return false;
        };
        // A file rather than a signal: it survives an agent restart and cannot reach a
        // stranger that inherited a recycled pid.
        if let Err(e) = fs::write(held.dir.join(spool::STOP), b"") {
            tracing::error!(command_id, "cannot request the stop: {e}");
            return false;
        }
        tracing::info!(command_id, "stop requested");
        true
    }

    /// Applies an ack. Returns the spec of a command whose completion is now stored (its
    /// directory is gone).
    pub fn ack(&mut self, ack: &Ack) -> Option<Spec> {
        let Some(index) = self
            .held
            .iter()
            .position(|h| h.spec.command_id == ack.command_id)
        else {
            tracing::debug!(command_id = %ack.command_id, "ack for a command we no longer hold");
            return None;
        };
        let held = &mut self.held[index];
        if ack.seq > held.acked {
            while held.buffered.front().is_some_and(|r| r.seq <= ack.seq) {
                if let Some(record) = held.buffered.pop_front() {
                    held.buffered_bytes -= record.line.len();
                    held.sent = held.sent.saturating_sub(1);
                }
            }
            held.acked = ack.seq;
            held.reader.skip_through(ack.seq);
            held.progress_at = Instant::now();
            if let Err(e) = spool::write_acked(&held.dir, ack.seq) {
                tracing::warn!(command_id = %ack.command_id, "cannot persist the ack: {e}");
            }
            if held.is_running() {
                confirm_reached(&held.dir, ack.seq);
            }
        }
        if !ack.complete {
            return None;
        }
        if held.is_running() {
            // Only for a command the dashboard does not know: it asked us to drop it.
            tracing::warn!(
                command_id = %ack.command_id,
                "the dashboard does not know this command; it runs on, unreported"
            );
            held.discarded = true;
            return None;
        }
        let held = self.held.remove(index);
        if let Err(e) = fs::remove_dir_all(&held.dir) {
            tracing::warn!(dir = %held.dir.display(), "cannot remove a delivered command: {e}");
        }
        tracing::debug!(command_id = %ack.command_id, "command delivered");
        Some(held.spec)
    }

    /// A new session: everything unacked goes out again.
    pub fn rewind(&mut self) {
        self.held.iter_mut().for_each(Held::rewind);
    }

    /// Reads new lines and results from the spools, and notices dead supervisors.
    pub fn poll(&mut self) {
        let check_liveness = self.last_liveness.elapsed() >= LIVENESS_EVERY;
        if check_liveness {
            self.last_liveness = Instant::now();
        }
        let mut delivered = Vec::new();
        for (index, held) in self.held.iter_mut().enumerate() {
            if held.result.is_none() && check_liveness && held.acked > 0 {
                // An agent that died between persisting an ack and confirming it: the
                // ack on disk is as good a proof as a new one.
                confirm_reached(&held.dir, held.acked);
            }
            if held.result.is_none() {
                match spool::read_result(&held.dir) {
                    Ok(result) => held.result = result,
                    Err(e) => tracing::warn!(dir = %held.dir.display(), "unreadable result: {e}"),
                }
                if held.result.is_none() && check_liveness && !held.supervisor_alive() {
                    // It may have written the result just before exiting.
                    held.result = spool::read_result(&held.dir).ok().flatten();
                    if held.result.is_none() {
                        held.result = bury(held);
                    }
                }
            }
            let room = MAX_IN_FLIGHT.saturating_sub(held.buffered.len());
            if room > 0 && held.buffered_bytes < MAX_BUFFERED_BYTES {
                let before = held.buffered.len();
                if let Err(e) = held.reader.read(room, &mut held.buffered) {
                    tracing::warn!(dir = %held.dir.display(), "cannot read the spool: {e}");
                }
                held.buffered_bytes += held
                    .buffered
                    .iter()
                    .skip(before)
                    .map(|r| r.line.len())
                    .sum::<usize>();
            }
            if (held.sent > 0 || held.complete_sent) && held.progress_at.elapsed() >= RESEND_AFTER {
                tracing::info!(command_id = %held.spec.command_id, "no ack for a while; sending again");
                held.rewind();
            }
            if held.discarded && held.result.is_some() {
                delivered.push(index);
            }
        }
        for index in delivered.into_iter().rev() {
            let held = self.held.remove(index);
            let _ = fs::remove_dir_all(&held.dir);
        }
    }

    /// The next frames to send, at most `budget`, within the in-flight bound; completions
    /// follow their last line. `finished` gets the commands whose completion goes out for
    /// the first time.
    pub fn frames(
        &mut self,
        budget: usize,
        out: &mut Vec<AgentMessage>,
        finished: &mut Vec<Finished>,
    ) {
        let mut in_flight: usize = self.held.iter().map(|h| h.sent).sum();
        let mut produced = 0;
        for held in self.held.iter_mut().filter(|h| !h.discarded) {
            if held.sent == 0 && !held.complete_sent {
                held.progress_at = Instant::now();
            }
            while held.sent < held.buffered.len() && in_flight < MAX_IN_FLIGHT && produced < budget
            {
                let record = &held.buffered[held.sent];
                out.push(AgentMessage::Output(Output {
                    command_id: held.spec.command_id.clone(),
                    seq: record.seq,
                    stream: record.stream,
                    line: record.line.clone(),
                }));
                held.sent += 1;
                in_flight += 1;
                produced += 1;
            }
            let Some(result) = &held.result else {
                continue;
            };
            let all_read = held.reader.last_seq() >= result.last_seq;
            if !held.complete_sent && all_read && held.sent == held.buffered.len() {
                out.push(AgentMessage::CommandComplete(AgentCommandComplete {
                    command_id: held.spec.command_id.clone(),
                    status: result.status,
                    exit_code: result.exit_code,
                    duration_ms: result.duration_ms,
                    last_seq: result.last_seq,
                    result: result.result.clone(),
                }));
                held.complete_sent = true;
                if !held.reported {
                    held.reported = true;
                    finished.push(Finished {
                        spec: held.spec.clone(),
                        result: result.clone(),
                    });
                }
            }
        }
    }
}

fn adopt(dir: &Path) -> io::Result<Option<Held>> {
    let Some(spec) = spool::read_json::<Spec>(&dir.join(spool::SPEC))? else {
        return Ok(None);
    };
    let mut result = spool::read_result(dir)?;
    let mut held = Held::new(spec, dir.to_owned(), None);
    if result.is_none() && !supervisor::is_running(dir) {
        result = spool::read_result(dir)?;
        if result.is_none() {
            result = bury(&mut held);
        }
    }
    held.result = result;
    Ok(Some(held))
}

/// The health gate of a switch: the supervisor wrote the seq of a line it wrote after the
/// activation into `awaiting`. The dashboard acking that line (or a later one) proves the
/// host reaches it after the activation, through this agent process or a restarted one;
/// `reached` tells the supervisor so.
fn confirm_reached(dir: &Path, acked: u64) {
    let Ok(text) = fs::read_to_string(dir.join(spool::AWAITING)) else {
        return;
    };
    let Ok(awaiting) = text.trim().parse::<u64>() else {
        return;
    };
    if acked >= awaiting && !dir.join(spool::REACHED).exists() {
        tracing::info!(dir = %dir.display(), "the dashboard has the first line after the activation");
        if let Err(e) =
            spool::write_atomic(&dir.join(spool::REACHED), format!("{acked}\n").as_bytes())
        {
            tracing::error!(dir = %dir.display(), "cannot confirm the activation: {e}");
        }
    }
}

/// The supervisor is gone without a result: close its spool with a visible line and an
/// error result, so the dashboard hears the outcome instead of waiting forever.
fn bury(held: &mut Held) -> Option<CommandResult> {
    tracing::error!(command_id = %held.spec.command_id, "the command's supervisor died");
    let output = held.dir.join(spool::OUTPUT);
    let closed = (|| {
        let mut writer = SpoolWriter::resume(&output, u64::MAX)?;
        writer.note(
            OutputStream::Stderr,
            "[nixdeck-agent: the command's supervisor died]",
        )?;
        if let Some(last) = last_log_line(&held.dir) {
            writer.note(OutputStream::Stderr, &format!("[nixdeck-agent: {last}]"))?;
        }
        let last_seq = writer.finish()?;
        let result = CommandResult {
            status: AgentOutcome::Error,
            exit_code: None,
            duration_ms: spool::now_ms().saturating_sub(held.spec.created_ms),
            last_seq,
            message: "the command's supervisor died".to_owned(),
            result: None,
        };
        spool::write_result(&held.dir, &result)?;
        Ok::<_, io::Error>(result)
    })();
    match closed {
        Ok(result) => {
            // The spool's torn tail may have been cut: read it again past what was read.
            held.reader = SpoolReader::new(output, held.reader.last_seq());
            Some(result)
        }
        Err(e) => {
            tracing::error!(dir = %held.dir.display(), "cannot close the spool of a dead supervisor: {e}");
            None
        }
    }
}

/// The supervisor's last words, if it left any.
fn last_log_line(dir: &Path) -> Option<String> {
    let log = fs::read_to_string(dir.join(spool::SUPERVISOR_LOG)).ok()?;
    let line = log.lines().rev().find(|l| !l.trim().is_empty())?;
    Some(line.chars().take(500).collect())
}

fn open_log(dir: &Path) -> Stdio {
    match fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(spool::SUPERVISOR_LOG))
    {
        Ok(file) => Stdio::from(file),
        Err(_) => Stdio::null(),
    }
}

fn finish_with_lines(
    dir: &Path,
    spec: &Spec,
    lines: &[(OutputStream, String)],
    status: AgentOutcome,
    message: String,
) -> io::Result<CommandResult> {
    let mut writer = SpoolWriter::create(&dir.join(spool::OUTPUT), u64::MAX)?;
    for (stream, line) in lines {
        writer.note(*stream, line)?;
    }
    let last_seq = writer.finish()?;
    let result = CommandResult {
        exit_code: (status == AgentOutcome::Ok).then_some(0),
        status,
        duration_ms: spool::now_ms().saturating_sub(spec.created_ms),
        last_seq,
        message,
        result: None,
    };
    spool::write_result(dir, &result)?;
    Ok(result)
}
