//! `nixdeck-agent supervise --dir <command dir>`: the detached process that runs one
//! command. The agent starts it in a new session, so it outlives the agent (a `switch`
//! restarts the agent's own service in its middle). It runs the plan from `spec.json`,
//! writes every output line to the spool, and ends with `result`. It never talks to the
//! network: the agent tails the spool and delivers.
//!
//! Each process it runs gets its own process group. Stop (a `stop` file, or SIGTERM to the
//! supervisor) sends SIGTERM to that group and SIGKILL 5 s later, so background children
//! die with it. Whatever a step leaves behind in its group is ended the same way when the
//! step finishes.
//!
//! The Nix-native steps (build, profile, activate, health gate, diff, switch generation)
//! run here too, so a switch never depends on the agent being alive: when the activation
//! or the health gate fails, or the agent does not reach the dashboard again in time, the
//! supervisor itself puts the generation current at the start back (`undo`), or, after a
//! `--switch-action test` activation, activates the system that was running again.

mod nix_steps;

use crate::plan::{display_argv, Plan, Step};
use crate::repo;
use crate::spool::{self, CommandResult, Spec, SpoolWriter};
use nix_steps::SystemRun;
use protocol::messages::AgentOutcome;
use protocol::OutputStream;
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::io::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{mpsc, watch};
use tokio::time::{self, Instant};

/// SIGTERM first; SIGKILL this long after.
const KILL_AFTER: Duration = Duration::from_secs(5);
/// How long after the main process exits its pipes may stay open (held by children it
/// left running) before those children are ended.
const LINGER: Duration = Duration::from_secs(2);
/// The agent tails the spool; flush at least this often so lines reach it promptly.
const FLUSH_EVERY: Duration = Duration::from_millis(50);
const STOP_POLL: Duration = Duration::from_millis(100);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Halt {
    Stop,
    Timeout(u64),
}

/// How one step ended.
enum StepEnd {
    Ok {
        exit_code: Option<i32>,
        message: Option<String>,
    },
    Failed {
        exit_code: Option<i32>,
        message: String,
    },
    Halted {
        halt: Halt,
        exit_code: Option<i32>,
    },
}

/// How one process ended.
enum Ran {
    Exited(ExitStatus),
    CannotStart(String),
    Halted(Halt, Option<ExitStatus>),
}

pub fn main(dir: &Path) -> ExitCode {
    let _lock = match lock(dir) {
        Ok(lock) => lock,
        Err(err) => {
            eprintln!("nixdeck-agent supervise: {}: {err}", dir.display());
            return ExitCode::FAILURE;
        }
    };
    if let Err(err) = fs::write(dir.join(spool::PID), format!("{}\n", std::process::id())) {
        eprintln!("nixdeck-agent supervise: cannot write the pid file: {err}");
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("nixdeck-agent supervise: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(supervise(dir)) {
        Ok(result) => {
            if let Err(err) = spool::write_result(dir, &result) {
                eprintln!("nixdeck-agent supervise: cannot write the result: {err}");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("nixdeck-agent supervise: {err}");
            ExitCode::FAILURE
        }
    }
    // The lock is released when the process exits, after the result is in place.
}

/// Takes the command dir's lock for the life of this process. The agent tells a live
/// supervisor from a dead one by it: unlike a pid, a lock cannot be inherited by a
/// stranger when the pid is reused.
fn lock(dir: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(spool::LOCK))?;
    // The agent may hold it for a moment while it checks on us.
    for _ in 0..40 {
        // SAFETY: flock on an fd we own; no memory is involved.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(file);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(io::Error::other("another supervisor holds this command"))
}

/// Whether a supervisor holds `dir`'s lock, i.e. is alive.
pub fn is_running(dir: &Path) -> bool {
    let Ok(file) = OpenOptions::new().write(true).open(dir.join(spool::LOCK)) else {
        return false;
    };
    // SAFETY: flock on an fd we own.
    let free = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    if free {
        // SAFETY: as above; closing the file would release it too.
        unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_UN) };
    }
    !free
}

async fn supervise(dir: &Path) -> io::Result<CommandResult> {
    let started = Instant::now();
    let spec: Option<Spec> = spool::read_json(&dir.join(spool::SPEC))?;
    let plan = spec
        .and_then(|s| s.plan)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "spec.json holds no plan"))?;
    let output = dir.join(spool::OUTPUT);
    let writer = if output.exists() {
        SpoolWriter::resume(&output, plan.spool_limit)?
    } else {
        SpoolWriter::create(&output, plan.spool_limit)?
    };

    let (halt_tx, halt) = watch::channel(None);
    let halt_tx = Arc::new(halt_tx);
    watch_for_halt(dir, plan.timeout_s, halt_tx.clone())?;
    let mut run = Supervisor {
        writer,
        halt,
        env: plan.env.clone(),
        _halt_tx: halt_tx,
        dir: dir.to_owned(),
        sys: plan.system.clone().map(SystemRun::new),
        unhaltable: false,
    };
    run.record_previous(&plan);
    let end = run.plan(&plan).await;

    let (mut status, mut exit_code, mut message) = match end {
        StepEnd::Ok { exit_code, message } => {
            (AgentOutcome::Ok, exit_code, message.unwrap_or_default())
        }
        StepEnd::Failed { exit_code, message } => {
            run.note(&format!("[nixdeck-agent: {message}]"));
            (AgentOutcome::Error, exit_code, message)
        }
        StepEnd::Halted {
            halt: Halt::Stop,
            exit_code,
        } => {
            run.note("[nixdeck-agent: stopped]");
            (AgentOutcome::Stopped, exit_code, "stopped".to_owned())
        }
        StepEnd::Halted {
            halt: Halt::Timeout(s),
            exit_code,
        } => {
            let message = format!("timed out after {s} s");
            run.note(&format!("[nixdeck-agent: {message}]"));
            (AgentOutcome::Error, exit_code, message)
        }
    };
    if status != AgentOutcome::Ok && run.sys.as_ref().is_some_and(SystemRun::changed) {
        // Nothing half-switched stays: the profile (and the activation, if one ran) go
        // back to the generation current when the command started; after a `test`
        // activation, the system running then is activated again.
        (status, message) = run.undo(status, message).await;
        if status == AgentOutcome::RolledBack {
            exit_code = exit_code.or(Some(1));
        }
    }
    let result = run.sys.as_ref().map(SystemRun::result);
    let last_seq = run.writer.finish()?;
    Ok(CommandResult {
        status,
        exit_code,
        duration_ms: started.elapsed().as_millis() as u64,
        last_seq,
        message,
        result,
    })
}

/// Raises the halt flag on a `stop` file, SIGTERM/SIGINT, or the plan's timeout.
fn watch_for_halt(
    dir: &Path,
    timeout_s: Option<u64>,
    halt: Arc<watch::Sender<Option<Halt>>>,
) -> io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let raise = |halt: &watch::Sender<Option<Halt>>, why: Halt| {
        halt.send_if_modified(|h| h.is_none() && h.replace(why).is_none());
    };
    let stop_file = dir.join(spool::STOP);
    let h = halt.clone();
    tokio::spawn(async move {
        loop {
            if stop_file.exists() {
                raise(&h, Halt::Stop);
                return;
            }
            time::sleep(STOP_POLL).await;
        }
    });
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    // No terminal, so SIGHUP means nothing; a handler keeps it from killing us.
    let mut hup = signal(SignalKind::hangup())?;
    let h = halt.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => raise(&h, Halt::Stop),
                _ = int.recv() => raise(&h, Halt::Stop),
                _ = hup.recv() => {}
            }
        }
    });
    if let Some(secs) = timeout_s {
        tokio::spawn(async move {
            time::sleep(Duration::from_secs(secs)).await;
            raise(&halt, Halt::Timeout(secs));
        });
    }
    Ok(())
}

struct Supervisor {
    writer: SpoolWriter,
    halt: watch::Receiver<Option<Halt>>,
    env: BTreeMap<String, String>,
    /// Keeps the channel open, so `halt` never reports "closed".
    _halt_tx: Arc<watch::Sender<Option<Halt>>>,
    /// The command's directory (the health gate's `awaiting` and `reached` files).
    dir: PathBuf,
    /// The Nix-native steps' state, for a plan that has them.
    sys: Option<SystemRun>,
    /// Set while rolling back: a stop or timeout must not cut the rollback short, or the
    /// host would be left half-switched.
    unhaltable: bool,
}

impl Supervisor {
    async fn plan(&mut self, plan: &Plan) -> StepEnd {
        let mut last = StepEnd::Ok {
            exit_code: None,
            message: None,
        };
        for step in &plan.steps {
            if let Some(halt) = *self.halt.borrow() {
                return StepEnd::Halted {
                    halt,
                    exit_code: None,
                };
            }
            let end = match step {
                Step::Run { argv, cwd } => {
                    if plan.echo {
                        self.header(argv);
                    }
                    self.run_step(argv, cwd.as_deref()).await
                }
                Step::Clone { url, branch, dir } => self.clone(url, branch, dir, plan.echo).await,
                Step::FetchRev { dir, rev } => self.fetch_rev(dir, rev, plan.echo).await,
                Step::Tests { dir, cwd } => self.tests(dir, cwd).await,
                Step::Build { installable } => self.build(installable, plan.echo).await,
                Step::UseStorePath { store_path } => self.use_store_path(store_path),
                Step::SetProfile => self.set_profile(plan.echo).await,
                Step::Activate { mode } => self.activate(mode.as_deref(), plan.echo).await,
                Step::Confirm { tests, cwd } => {
                    self.confirm(tests.as_deref(), cwd.as_deref()).await
                }
                Step::Diff => self.diff(plan.echo).await,
                Step::SwitchGeneration { generation } => {
                    self.switch_generation(*generation, plan.echo).await
                }
            };
            match end {
                StepEnd::Ok { .. } => last = end,
                failed => return failed,
            }
        }
        last
    }

    fn header(&mut self, argv: &[String]) {
        let line = format!("$ {}", display_argv(argv));
        if let Err(err) = self.writer.note(OutputStream::Stdout, &line) {
            eprintln!("cannot write output: {err}");
        }
    }

    fn note(&mut self, line: &str) {
        if let Err(err) = self.writer.note(OutputStream::Stderr, line) {
            eprintln!("cannot write output: {err}");
        }
    }

    async fn run_step(&mut self, argv: &[String], cwd: Option<&Path>) -> StepEnd {
        match self.run(argv, cwd, None).await {
            Ran::Exited(status) if status.success() => StepEnd::Ok {
                exit_code: Some(0),
                message: None,
            },
            Ran::Exited(status) => StepEnd::Failed {
                exit_code: status.code(),
                message: format!("`{}` {}", short(argv), describe(status)),
            },
            Ran::CannotStart(message) => StepEnd::Failed {
                exit_code: None,
                message,
            },
            Ran::Halted(halt, status) => StepEnd::Halted {
                halt,
                exit_code: status.and_then(|s| s.code()),
            },
        }
    }

    /// Isolated mode: make `dir` a working clone, cloning into a temp dir first so a failed
    /// clone never replaces a good one.
    async fn clone(&mut self, url: &str, branch: &str, dir: &Path, echo: bool) -> StepEnd {
        let (url_owned, dir_owned) = (url.to_owned(), dir.to_owned());
        let state =
            tokio::task::spawn_blocking(move || repo::clone_state(&dir_owned, &url_owned)).await;
        match state {
            Ok(repo::CloneState::Ready) => {
                return StepEnd::Ok {
                    exit_code: None,
                    message: None,
                }
            }
            Ok(repo::CloneState::Missing) => self.note(&format!(
                "[nixdeck-agent: no clone in {} yet; cloning {url}]",
                dir.display()
            )),
            Ok(repo::CloneState::Broken(why)) => self.note(&format!(
                "[nixdeck-agent: the clone in {} is broken ({why}); cloning it again]",
                dir.display()
            )),
            Err(err) => self.note(&format!("[nixdeck-agent: cannot check the clone: {err}]")),
        }
        let tmp = repo::clone_tmp(dir);
        if let Err(err) = repo::prepare_tmp(&tmp) {
            return StepEnd::Failed {
                exit_code: None,
                message: format!("cannot prepare {}: {err}", tmp.display()),
            };
        }
        let argv = repo::clone_argv(url, branch, &tmp);
        if echo {
            self.header(&argv);
        }
        let end = self.run_step(&argv, None).await;
        if !matches!(end, StepEnd::Ok { .. }) {
            let _ = fs::remove_dir_all(&tmp);
            return end;
        }
        match repo::replace_with(&tmp, dir) {
            Ok(()) => end,
            Err(err) => StepEnd::Failed {
                exit_code: None,
                message: format!("cannot put the new clone in place: {err}"),
            },
        }
    }

    /// A preview of commit `rev`: fetch it from the checkout's `origin` unless the
    /// repository has it already. Only the object store and FETCH_HEAD change.
    async fn fetch_rev(&mut self, dir: &Path, rev: &str, echo: bool) -> StepEnd {
        // The agent checked it when it made the plan; spec.json is a file on disk, so
        // nothing but a full commit id reaches git's argv here either.
        if !repo::is_commit_id(rev) {
            return Self::failed(format!("`{rev}` is not a full commit id; nothing was run"));
        }
        let (dir_owned, rev_owned) = (dir.to_owned(), rev.to_owned());
        let present =
            tokio::task::spawn_blocking(move || repo::has_commit(&dir_owned, &rev_owned)).await;
        if present.unwrap_or(false) {
            self.note(&format!(
                "[nixdeck-agent: {} has commit {rev} already; not fetching]",
                dir.display()
            ));
            return Self::ok();
        }
        let argv = repo::fetch_rev_argv(dir, rev);
        if echo {
            self.header(&argv);
        }
        self.run_step(&argv, None).await
    }

    /// Every executable file in `dir`, in name order, each to the end; the step fails if
    /// any test fails, and says which.
    async fn tests(&mut self, dir: &Path, cwd: &Path) -> StepEnd {
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                let message = format!("no tests: {} does not exist", dir.display());
                self.note(&format!("[nixdeck-agent: {message}]"));
                return StepEnd::Ok {
                    exit_code: None,
                    message: Some(message),
                };
            }
            Err(err) => {
                return StepEnd::Failed {
                    exit_code: None,
                    message: format!("cannot list {}: {err}", dir.display()),
                }
            }
        };
        let mut tests = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let path = entry.path();
            // Follows symlinks: a link to a script is a test too.
            let Ok(meta) = fs::metadata(&path) else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            use std::os::unix::fs::PermissionsExt;
            if meta.permissions().mode() & 0o111 == 0 {
                self.note(&format!("[nixdeck-agent: skipping {name}: not executable]"));
                continue;
            }
            tests.push((name, path));
        }
        tests.sort();
        if tests.is_empty() {
            let message = format!("no tests: nothing executable in {}", dir.display());
            self.note(&format!("[nixdeck-agent: {message}]"));
            return StepEnd::Ok {
                exit_code: None,
                message: Some(message),
            };
        }

        let mut failed = Vec::new();
        let mut first_code = None;
        for (name, path) in &tests {
            let argv = vec![path.display().to_string()];
            self.header(&argv);
            match self.run(&argv, Some(cwd), None).await {
                Ran::Exited(status) if status.success() => {}
                Ran::Exited(status) => {
                    self.note(&format!(
                        "[nixdeck-agent: test {name} {}]",
                        describe(status)
                    ));
                    first_code = first_code.or(status.code()).or(Some(1));
                    failed.push(match status.code() {
                        Some(code) => format!("{name} (exit {code})"),
                        None => format!("{name} ({})", describe(status)),
                    });
                }
                Ran::CannotStart(message) => {
                    self.note(&format!("[nixdeck-agent: {message}]"));
                    first_code = first_code.or(Some(1));
                    failed.push(format!("{name} (cannot run)"));
                }
                Ran::Halted(halt, status) => {
                    return StepEnd::Halted {
                        halt,
                        exit_code: status.and_then(|s| s.code()),
                    }
                }
            }
        }
        if failed.is_empty() {
            let message = match tests.len() {
                1 => "1 test passed".to_owned(),
                n => format!("{n} tests passed"),
            };
            StepEnd::Ok {
                exit_code: Some(0),
                message: Some(message),
            }
        } else {
            StepEnd::Failed {
                exit_code: first_code,
                message: format!(
                    "{} of {} tests failed: {}",
                    failed.len(),
                    tests.len(),
                    failed.join(", ")
                ),
            }
        }
    }

    /// Runs one process in its own group, writing its output line by line, until it and
    /// its pipes are done; ends the group on halt. `capture` gets a copy of every line.
    async fn run(
        &mut self,
        argv: &[String],
        cwd: Option<&Path>,
        mut capture: Option<&mut Vec<(OutputStream, String)>>,
    ) -> Ran {
        let Some(program) = argv.first() else {
            return Ran::CannotStart("empty command line".to_owned());
        };
        let mut command = tokio::process::Command::new(program);
        command
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .envs(&self.env)
            // The agent's credentials are none of the command's business.
            .env_remove("NIXDECK_TOKEN");
        if let Some(cwd) = cwd {
            command.current_dir(cwd);
        }
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(err) => {
                let message = format!("cannot run `{}`: {err}", short(argv));
                return Ran::CannotStart(message);
            }
        };
        // The group id is the child's pid (process_group(0)).
        let group = child.id().map(|pid| pid as libc::pid_t);

        let (tx, mut lines) = mpsc::channel(1024);
        if let Some(out) = child.stdout.take() {
            tokio::spawn(read_lines(out, OutputStream::Stdout, tx.clone()));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(read_lines(err, OutputStream::Stderr, tx));
        }

        let unhaltable = self.unhaltable;
        let halt_rx = &mut self.halt;
        let writer = &mut self.writer;
        let mut status: Option<ExitStatus> = None;
        let mut pipes_open = true;
        let mut halted: Option<Halt> = None;
        let mut kill_at: Option<Instant> = None;
        let mut linger_until: Option<Instant> = None;
        let mut flush = time::interval(FLUSH_EVERY);
        let mut write_failed = false;
        let far = || Instant::now() + Duration::from_secs(86_400 * 365);

        while status.is_none() || pipes_open {
            let kill_sleep = time::sleep_until(kill_at.unwrap_or_else(far));
            let linger_sleep = time::sleep_until(linger_until.unwrap_or_else(far));
            tokio::select! {
                line = lines.recv(), if pipes_open => match line {
                    Some((stream, bytes)) => {
                        let text = String::from_utf8_lossy(&bytes);
                        let text = text.strip_suffix('\r').unwrap_or(&text);
                        if let Some(capture) = capture.as_mut() {
                            capture.push((stream, text.to_owned()));
                        }
                        if let Err(err) = writer.line(stream, text) {
                            // Keep the command going: a full disk must not break a switch.
                            if !write_failed {
                                eprintln!("cannot write output: {err}");
                                write_failed = true;
                            }
                        }
                    }
                    None => pipes_open = false,
                },
                exited = child.wait(), if status.is_none() => {
                    status = Some(exited.unwrap_or_else(|_| ExitStatus::from_raw(1 << 8)));
                    linger_until = Some(Instant::now() + LINGER);
                }
                why = halt_rx.wait_for(Option::is_some), if halted.is_none() && !unhaltable => {
                    halted = why.ok().and_then(|h| *h);
                    signal_group(group, libc::SIGTERM);
                    kill_at = Some(Instant::now() + KILL_AFTER);
                }
                _ = kill_sleep, if kill_at.is_some() => {
                    signal_group(group, libc::SIGKILL);
                    kill_at = None;
                }
                _ = linger_sleep, if linger_until.is_some() && pipes_open => {
                    // Children the process left behind still hold its pipes.
                    linger_until = None;
                    if kill_at.is_none() {
                        signal_group(group, libc::SIGTERM);
                        kill_at = Some(Instant::now() + KILL_AFTER);
                    }
                }
                _ = flush.tick() => {
                    let _ = writer.flush();
                }
            }
        }
        let _ = self.writer.flush();
        // Leftovers that let go of the pipes still go: a finished step leaves nothing.
        end_group(group).await;
        let status = status.unwrap_or_else(|| ExitStatus::from_raw(1 << 8));
        match halted {
            Some(halt) => Ran::Halted(halt, Some(status)),
            None => Ran::Exited(status),
        }
    }
}

/// Reads a pipe into lines; a line longer than a record is cut into record-sized pieces
/// as it comes, so a process printing without newlines cannot grow memory without bound.
async fn read_lines(
    mut pipe: impl AsyncRead + Unpin,
    stream: OutputStream,
    tx: mpsc::Sender<(OutputStream, Vec<u8>)>,
) {
    let mut buf = vec![0u8; 32 * 1024];
    let mut line = Vec::new();
    loop {
        let n = match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut rest = &buf[..n];
        while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
            line.extend_from_slice(&rest[..pos]);
            rest = &rest[pos + 1..];
            if tx.send((stream, std::mem::take(&mut line))).await.is_err() {
                return;
            }
        }
        line.extend_from_slice(rest);
        while line.len() > spool::MAX_LINE_BYTES {
            let cut = spool::utf8_cut(&line, spool::MAX_LINE_BYTES);
            let head: Vec<u8> = line.drain(..cut).collect();
            if tx.send((stream, head)).await.is_err() {
                return;
            }
        }
    }
    if !line.is_empty() {
        let _ = tx.send((stream, line)).await;
    }
}

fn signal_group(group: Option<libc::pid_t>, signal: libc::c_int) {
    if let Some(pgid) = group.filter(|&g| g > 1) {
        // SAFETY: killpg has no memory-safety preconditions; ESRCH (group gone) is fine.
        unsafe { libc::killpg(pgid, signal) };
    }
}

fn group_alive(pgid: libc::pid_t) -> bool {
    // SAFETY: signal 0 only checks for existence.
    unsafe { libc::killpg(pgid, 0) == 0 }
}

/// Ends whatever is left in a process group: SIGTERM, then SIGKILL after `KILL_AFTER`.
async fn end_group(group: Option<libc::pid_t>) {
    let Some(pgid) = group.filter(|&g| g > 1) else {
        return;
    };
    if !group_alive(pgid) {
        return;
    }
    signal_group(group, libc::SIGTERM);
    let deadline = Instant::now() + KILL_AFTER;
    while group_alive(pgid) && Instant::now() < deadline {
        time::sleep(Duration::from_millis(50)).await;
    }
    if group_alive(pgid) {
        signal_group(group, libc::SIGKILL);
    }
}

/// "exited with code 1", "was killed by signal 9".
fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        _ => format!("ended ({status})"),
    }
}

/// An argv for messages, kept to a readable length.
fn short(argv: &[String]) -> String {
    let full = display_argv(argv);
    if full.chars().count() <= 200 {
        full
    } else {
        let cut: String = full.chars().take(197).collect();
        format!("{cut}...")
    }
}
