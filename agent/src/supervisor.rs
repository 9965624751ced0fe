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

use crate::nix::{self, SystemSettings};
use crate::plan::{display_argv, Plan, Step, TEST_MODE};
use crate::repo;
use crate::spool::{self, CommandResult, Spec, SpoolWriter};
use protocol::messages::AgentOutcome;
use protocol::{ClosureDiff, OutputStream};
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

/// What the Nix-native steps of one command did so far.
struct SystemRun {
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
    fn new(settings: SystemSettings) -> Self {
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
    fn changed(&self) -> bool {
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
    fn result(&self) -> protocol::CommandResult {
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
    fn record_previous(&mut self, plan: &Plan) {
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

    fn ok() -> StepEnd {
        StepEnd::Ok {
            exit_code: Some(0),
            message: None,
        }
    }

    fn failed(message: String) -> StepEnd {
        StepEnd::Failed {
            exit_code: None,
            message,
        }
    }

    /// `nix build --no-link --json`: the one form every Nix since 2.4 has (2.8 lacks
    /// `--print-out-paths`); the path is `[0].outputs.out` of its JSON.
    async fn build(&mut self, installable: &str, echo: bool) -> StepEnd {
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
    fn use_store_path(&mut self, store_path: &str) -> StepEnd {
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
    async fn set_profile(&mut self, echo: bool) -> StepEnd {
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

    async fn activate(&mut self, mode: Option<&str>, echo: bool) -> StepEnd {
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
    async fn switch_generation(&mut self, generation: Option<u64>, echo: bool) -> StepEnd {
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
    async fn confirm(&mut self, tests: Option<&Path>, cwd: Option<&Path>) -> StepEnd {
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
    async fn diff(&mut self, echo: bool) -> StepEnd {
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
    async fn undo(&mut self, status: AgentOutcome, message: String) -> (AgentOutcome, String) {
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
