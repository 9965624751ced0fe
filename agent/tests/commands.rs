//! Commands with real processes in temp dirs: the runner starts the real binary's
//! `supervise` subcommand, and these tests play the dashboard's part (reading frames,
//! sending acks) directly, or over a tiny WebSocket server for the link.

use futures::{SinkExt, StreamExt};
use nixdeck_agent::config::Config;
use nixdeck_agent::link::{Exit, Link, Timings};
use nixdeck_agent::plan::{Action, Checkout, CommandOverride, Plan, PlanContext, Step};
use nixdeck_agent::runner::{Finished, Runner, MAX_IN_FLIGHT};
use nixdeck_agent::spool::{self, Spec};
use nixdeck_agent::token::{Secret, TokenSource};
use nixdeck_agent::{repo, spool::CommandResult};
use protocol::messages::{
    Ack, AgentCommandComplete, AgentOutcome, CommandOrder, Output, Register, Registered, StopOrder,
};
use protocol::{decode, AgentMessage, CommandKind, Decoded, HostType, OutputStream, ServerMessage};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use testkit::git::{git, Origin};
use testkit::proc::{is_gone, pids_in};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::{sleep, timeout, Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

const AGENT: &str = env!("CARGO_BIN_EXE_nixdeck-agent");

fn runner(state: &Path) -> Runner {
    Runner::open(state, PathBuf::from(AGENT))
}

fn sh(script: &str) -> Step {
    Step::Run {
        argv: vec!["sh".into(), "-c".into(), script.into()],
        cwd: None,
    }
}

fn plan(steps: Vec<Step>, spool_limit: u64) -> Plan {
    Plan {
        steps,
        echo: false,
        env: Default::default(),
        timeout_s: None,
        spool_limit,
        system: None,
    }
}

fn spec(id: &str, kind: CommandKind, plan: Plan) -> Spec {
    Spec {
        command_id: id.into(),
        command: kind,
        created_ms: spool::now_ms(),
        generation_before: None,
        lock_before: None,
        plan: Some(plan),
    }
}

/// What the "dashboard" saw of one command.
struct Seen {
    lines: Vec<Output>,
    complete: AgentCommandComplete,
    finished: Vec<Finished>,
}

/// Polls the runner like the link does, acking every batch, until `id` completes.
async fn run_to_end(runner: &mut Runner, id: &str, within: Duration) -> Seen {
    let deadline = Instant::now() + within;
    let mut lines = Vec::new();
    let mut finished = Vec::new();
    loop {
        runner.poll();
        let mut frames = Vec::new();
        runner.frames(1000, &mut frames, &mut finished);
        let mut last = None;
        for frame in frames {
            match frame {
                AgentMessage::Output(o) if o.command_id == id => {
                    last = Some(o.seq);
                    lines.push(o);
                }
                AgentMessage::CommandComplete(c) if c.command_id == id => {
                    return Seen {
                        lines,
                        complete: c,
                        finished,
                    };
                }
                _ => {}
            }
        }
        if let Some(seq) = last {
            runner.ack(&Ack {
                command_id: id.into(),
                seq,
                complete: false,
            });
        }
        assert!(
            Instant::now() < deadline,
            "{id} did not complete in {within:?}"
        );
        sleep(Duration::from_millis(20)).await;
    }
}

/// Polls until `pick` finds a line, acking nothing.
async fn wait_for_line(runner: &mut Runner, pick: impl Fn(&Output) -> bool) -> Vec<Output> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut lines = Vec::new();
    loop {
        runner.poll();
        let mut frames = Vec::new();
        runner.frames(1000, &mut frames, &mut Vec::new());
        for frame in frames {
            if let AgentMessage::Output(o) = frame {
                let found = pick(&o);
                lines.push(o);
                if found {
                    return lines;
                }
            }
        }
        assert!(Instant::now() < deadline, "line not seen: {lines:?}");
        sleep(Duration::from_millis(20)).await;
    }
}

fn texts(lines: &[Output]) -> Vec<&str> {
    lines.iter().map(|o| o.line.as_str()).collect()
}

// ---------------------------------------------------------------- output

#[tokio::test]
async fn twenty_thousand_mixed_lines_arrive_contiguous_and_bounded_in_flight() {
    let state = tempfile::tempdir().unwrap();
    let mut runner = runner(state.path());
    let script = "i=1; while [ $i -le 20000 ]; do if [ $((i % 3)) -eq 0 ]; then echo \"err $i\" >&2; else echo \"out $i\"; fi; i=$((i+1)); done";
    runner
        .start(spec(
            "twenty",
            CommandKind::Test,
            plan(vec![sh(script)], 64 << 20),
        ))
        .unwrap();

    // Without acks, sending stops at the in-flight bound.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut early = Vec::new();
    while early.len() < MAX_IN_FLIGHT {
        runner.poll();
        runner.frames(1000, &mut early, &mut Vec::new());
        assert!(Instant::now() < deadline, "only {} lines", early.len());
        sleep(Duration::from_millis(10)).await;
    }
    sleep(Duration::from_millis(200)).await;
    runner.poll();
    runner.frames(1000, &mut early, &mut Vec::new());
    assert_eq!(early.len(), MAX_IN_FLIGHT, "more than the bound in flight");

    // Acked, the rest flows; the early frames count as received.
    runner.ack(&Ack {
        command_id: "twenty".into(),
        seq: MAX_IN_FLIGHT as u64,
        complete: false,
    });
    let seen = run_to_end(&mut runner, "twenty", Duration::from_secs(60)).await;
    let mut all: Vec<Output> = early
        .into_iter()
        .map(|m| match m {
            AgentMessage::Output(o) => o,
            other => panic!("{other:?}"),
        })
        .collect();
    all.extend(seen.lines);
    assert_eq!(
        all.iter().map(|o| o.seq).collect::<Vec<_>>(),
        (1..=20_000).collect::<Vec<_>>()
    );
    let mut out = Vec::new();
    let mut err = Vec::new();
    for o in &all {
        let (prefix, n) = o.line.split_once(' ').unwrap();
        let n: u64 = n.parse().unwrap();
        match o.stream {
            OutputStream::Stdout => {
                assert_eq!(prefix, "out");
                out.push(n)
            }
            OutputStream::Stderr => {
                assert_eq!(prefix, "err");
                err.push(n)
            }
        }
    }
    assert_eq!(out, (1..=20_000).filter(|i| i % 3 != 0).collect::<Vec<_>>());
    assert_eq!(err, (1..=20_000).filter(|i| i % 3 == 0).collect::<Vec<_>>());
    assert_eq!(seen.complete.status, AgentOutcome::Ok);
    assert_eq!(seen.complete.exit_code, Some(0));
    assert_eq!(seen.complete.last_seq, 20_000);

    // The complete ack removes the command's state.
    let dir = state.path().join("commands/twenty");
    assert!(dir.exists());
    assert!(runner
        .ack(&Ack {
            command_id: "twenty".into(),
            seq: 20_000,
            complete: true
        })
        .is_some());
    assert!(!dir.exists());
    assert!(runner.running_command().is_none());
}

#[tokio::test]
async fn long_lines_are_split_and_bad_utf8_replaced() {
    let state = tempfile::tempdir().unwrap();
    let mut runner = runner(state.path());
    let script = "head -c 40000 /dev/zero | tr '\\0' x; echo; printf 'a\\377b\\n'; printf 'no newline at the end'";
    runner
        .start(spec(
            "long",
            CommandKind::Test,
            plan(vec![sh(script)], 64 << 20),
        ))
        .unwrap();
    let seen = run_to_end(&mut runner, "long", Duration::from_secs(20)).await;
    let lens: Vec<usize> = seen.lines.iter().map(|o| o.line.len()).collect();
    assert_eq!(&lens[..3], &[16 * 1024, 16 * 1024, 40_000 - 32 * 1024]);
    assert!(seen.lines[..3]
        .iter()
        .all(|o| o.line.bytes().all(|b| b == b'x')));
    assert_eq!(seen.lines[3].line, "a\u{fffd}b");
    assert_eq!(seen.lines[4].line, "no newline at the end");
    assert_eq!(seen.complete.last_seq, 5);
}

#[tokio::test]
async fn spool_overflow_leaves_one_marker() {
    let state = tempfile::tempdir().unwrap();
    let mut runner = runner(state.path());
    let script = "i=1; while [ $i -le 10000 ]; do echo \"line $i\"; i=$((i+1)); done";
    runner
        .start(spec(
            "flood",
            CommandKind::Test,
            plan(vec![sh(script)], 64 * 1024),
        ))
        .unwrap();
    let seen = run_to_end(&mut runner, "flood", Duration::from_secs(30)).await;
    let (marker, kept) = seen.lines.split_last().unwrap();
    assert!(!kept.is_empty() && kept.len() < 10_000);
    for (i, o) in kept.iter().enumerate() {
        assert_eq!(o.line, format!("line {}", i + 1));
    }
    assert_eq!(marker.stream, OutputStream::Stderr);
    assert_eq!(
        marker.line,
        format!(
            "[nixdeck-agent: {} lines dropped: output over the 1 MiB spool limit]",
            10_000 - kept.len()
        )
    );
    assert_eq!(seen.complete.status, AgentOutcome::Ok);
    assert_eq!(seen.complete.last_seq, kept.len() as u64 + 1);
}

// ---------------------------------------------------------------- stop and death

#[tokio::test]
async fn stop_kills_the_whole_process_tree() {
    let state = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let pids = scratch.path().join("pids");
    let script = format!(
        "for i in 1 2 3; do sleep 1000 & echo $! >> {p}; done; \
         sh -c 'sleep 1000 & echo $! >> {p}; wait' & echo $! >> {p}; echo $$ >> {p}; \
         echo started; wait",
        p = pids.display()
    );
    let mut runner = runner(state.path());
    runner
        .start(spec(
            "stopme",
            CommandKind::Test,
            plan(vec![sh(&script)], 64 << 20),
        ))
        .unwrap();
    wait_for_line(&mut runner, |o| o.line == "started").await;
    // The last sleep is started by the inner sh; give it a moment to be written down.
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids_in(&pids).len() < 6 {
        assert!(Instant::now() < deadline, "{:?}", pids_in(&pids));
        sleep(Duration::from_millis(20)).await;
    }
    assert!(runner.running().is_some());
    assert!(!runner.stop("no-such-command"));
    assert!(runner.stop("stopme"));
    let seen = run_to_end(&mut runner, "stopme", Duration::from_secs(15)).await;
    assert_eq!(seen.complete.status, AgentOutcome::Stopped);
    assert_eq!(seen.lines.last().unwrap().line, "[nixdeck-agent: stopped]");
    sleep(Duration::from_millis(300)).await;
    for pid in pids_in(&pids) {
        assert!(is_gone(pid), "process {pid} survived the stop");
    }
}

#[tokio::test]
async fn sigkill_after_grace_for_a_process_that_ignores_sigterm() {
    let state = tempfile::tempdir().unwrap();
    let mut runner = runner(state.path());
    let script = "trap '' TERM; echo ready; while :; do sleep 0.1; done";
    runner
        .start(spec(
            "stubborn",
            CommandKind::Test,
            plan(vec![sh(script)], 64 << 20),
        ))
        .unwrap();
    wait_for_line(&mut runner, |o| o.line == "ready").await;
    let started = Instant::now();
    runner.stop("stubborn");
    let seen = run_to_end(&mut runner, "stubborn", Duration::from_secs(15)).await;
    assert_eq!(seen.complete.status, AgentOutcome::Stopped);
    assert_eq!(seen.complete.exit_code, None, "killed by a signal");
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_configured_timeout_ends_the_command_as_an_error() {
    let state = tempfile::tempdir().unwrap();
    let mut runner = runner(state.path());
    let mut limited = plan(vec![sh("echo waiting; exec sleep 1000")], 64 << 20);
    limited.timeout_s = Some(1);
    runner
        .start(spec("slow", CommandKind::Update, limited))
        .unwrap();
    let seen = run_to_end(&mut runner, "slow", Duration::from_secs(10)).await;
    assert_eq!(seen.complete.status, AgentOutcome::Error);
    assert_eq!(
        texts(&seen.lines),
        vec!["waiting", "[nixdeck-agent: timed out after 1 s]"]
    );
    assert!(seen.complete.duration_ms >= 1000);
}

#[tokio::test]
async fn a_dead_supervisor_becomes_an_error_result() {
    let state = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let pidfile = scratch.path().join("pid");
    let script = format!("echo $$ > {}; echo hi; exec sleep 1000", pidfile.display());
    let mut runner = runner(state.path());
    runner
        .start(spec(
            "orphan",
            CommandKind::Switch,
            plan(vec![sh(&script)], 64 << 20),
        ))
        .unwrap();
    wait_for_line(&mut runner, |o| o.line == "hi").await;
    let dir = state.path().join("commands/orphan");
    let supervisor: i32 = std::fs::read_to_string(dir.join("pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: plain kill of a process this test started.
    unsafe { libc::kill(supervisor, libc::SIGKILL) };
    let seen = run_to_end(&mut runner, "orphan", Duration::from_secs(10)).await;
    assert_eq!(seen.complete.status, AgentOutcome::Error);
    assert!(
        texts(&seen.lines).contains(&"[nixdeck-agent: the command's supervisor died]"),
        "{:?}",
        texts(&seen.lines)
    );
    let sleeper: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: as above.
    unsafe { libc::kill(sleeper, libc::SIGKILL) };
}

#[tokio::test]
async fn a_restarted_agent_adopts_the_running_command_and_resumes_after_the_ack() {
    let state = tempfile::tempdir().unwrap();
    let script = "i=1; while [ $i -le 60 ]; do echo \"line $i\"; i=$((i+1)); sleep 0.02; done";
    let mut first = runner(state.path());
    first
        .start(spec(
            "adopt",
            CommandKind::Switch,
            plan(vec![sh(script)], 64 << 20),
        ))
        .unwrap();
    wait_for_line(&mut first, |o| o.seq == 12).await;
    first.ack(&Ack {
        command_id: "adopt".into(),
        seq: 10,
        complete: false,
    });
    // The agent goes away; its supervisor does not.
    drop(first);

    let mut second = runner(state.path());
    let running = second.running_command().expect("adopted");
    assert_eq!(running.command_id, "adopt");
    assert_eq!(running.command, CommandKind::Switch);
    assert!(running.next_seq > 12, "{running:?}");
    assert_eq!(
        second.running().map(|s| s.command_id.as_str()),
        Some("adopt")
    );
    let seen = run_to_end(&mut second, "adopt", Duration::from_secs(20)).await;
    assert_eq!(
        seen.lines.iter().map(|o| o.seq).collect::<Vec<_>>(),
        (11..=60).collect::<Vec<_>>()
    );
    assert_eq!(seen.lines[0].line, "line 11");
    assert_eq!(seen.complete.status, AgentOutcome::Ok);
    assert_eq!(seen.finished.len(), 1);

    // Finished but not acked complete: a third agent still holds it and reports it.
    let third = runner(state.path());
    let held = third.running_command().expect("still held");
    assert_eq!(held.next_seq, 61);
    assert!(third.running().is_none());
}

// ---------------------------------------------------------------- git and tests

/// A bare origin with one commit on main, and a work clone to push more from.
fn origin(scratch: &Path) -> Origin {
    Origin::new(scratch, &[("file.txt", "one\n"), ("flake.lock", "{}\n")])
}

fn context(checkout: Checkout) -> PlanContext {
    PlanContext {
        hostname: "web-1".into(),
        host_type: HostType::Nixos,
        branch: "main".into(),
        checkout: Some(checkout),
        overrides: HashMap::new(),
        spool_limit: 64 << 20,
        is_root: false,
        system: nixdeck_agent::nix::SystemSettings::nixos(),
    }
}

fn planned(ctx: &PlanContext, kind: CommandKind) -> Plan {
    match ctx.action(kind).unwrap() {
        Action::Supervised(plan) => plan,
        other => panic!("{other:?}"),
    }
}

async fn run_plan(state: &Path, id: &str, kind: CommandKind, plan: Plan) -> Seen {
    let mut runner = runner(state);
    runner.start(spec(id, kind, plan)).unwrap();
    run_to_end(&mut runner, id, Duration::from_secs(60)).await
}

#[tokio::test]
async fn builtin_pull_moves_head_and_cleans_a_dirty_checkout() {
    let scratch = tempfile::tempdir().unwrap();
    let origin = origin(scratch.path());
    let checkout = scratch.path().join("checkout");
    origin.clone_to(&checkout);
    let second = origin.push("file.txt", "two\n", "two");
    std::fs::write(checkout.join("junk.txt"), "junk\n").unwrap();
    std::fs::create_dir(checkout.join("junkdir")).unwrap();
    std::fs::write(checkout.join("junkdir/x"), "x\n").unwrap();
    std::fs::write(checkout.join("file.txt"), "local edit\n").unwrap();

    let ctx = context(Checkout {
        dir: checkout.clone(),
        clone_url: None,
    });
    let state = tempfile::tempdir().unwrap();
    let seen = run_plan(
        state.path(),
        "pull",
        CommandKind::Pull,
        planned(&ctx, CommandKind::Pull),
    )
    .await;
    assert_eq!(
        seen.complete.status,
        AgentOutcome::Ok,
        "{:?}",
        texts(&seen.lines)
    );
    assert_eq!(git(&checkout, &["rev-parse", "HEAD"]), second);
    assert!(
        !checkout.join("junk.txt").exists(),
        "untracked file removed"
    );
    assert!(!checkout.join("junkdir").exists(), "untracked dir removed");
    assert_eq!(
        std::fs::read_to_string(checkout.join("file.txt")).unwrap(),
        "two\n"
    );
    // Multi-step builtins say which step printed what.
    assert!(
        seen.lines[0]
            .line
            .starts_with("$ git -c safe.directory=* -C "),
        "{:?}",
        seen.lines[0]
    );
    assert!(texts(&seen.lines)
        .iter()
        .any(|l| l.contains(" reset --hard origin/main")));
}

#[tokio::test]
async fn a_failing_pull_step_says_which_and_stops_there() {
    let scratch = tempfile::tempdir().unwrap();
    let origin = origin(scratch.path());
    let checkout = scratch.path().join("checkout");
    origin.clone_to(&checkout);
    let ctx = PlanContext {
        branch: "no-such-branch".into(),
        ..context(Checkout {
            dir: checkout.clone(),
            clone_url: None,
        })
    };
    let state = tempfile::tempdir().unwrap();
    let seen = run_plan(
        state.path(),
        "badpull",
        CommandKind::Pull,
        planned(&ctx, CommandKind::Pull),
    )
    .await;
    assert_eq!(seen.complete.status, AgentOutcome::Error);
    assert_eq!(seen.complete.exit_code, Some(128));
    let last = &seen.lines.last().unwrap().line;
    assert!(
        last.starts_with("[nixdeck-agent: `git ") && last.contains(" fetch origin "),
        "{last}"
    );
    assert!(
        !texts(&seen.lines)
            .iter()
            .any(|l| l.contains("reset --hard")),
        "stopped at fetch"
    );
}

#[tokio::test]
async fn isolated_mode_clones_and_replaces_a_corrupt_clone() {
    let scratch = tempfile::tempdir().unwrap();
    let origin = origin(scratch.path());
    let url = origin.bare.to_str().unwrap().to_owned();
    let state = tempfile::tempdir().unwrap();
    let clone = state.path().join("repo");

    // At agent start: cloned when missing.
    assert_eq!(repo::clone_state(&clone, &url), repo::CloneState::Missing);
    repo::prepare_clone(&url, "main", &clone).await.unwrap();
    assert_eq!(repo::clone_state(&clone, &url), repo::CloneState::Ready);
    let first = origin.head();
    assert_eq!(git(&clone, &["rev-parse", "HEAD"]), first);

    // Corrupt: HEAD points nowhere. The pull notices and clones again.
    std::fs::write(clone.join(".git/HEAD"), "garbage\n").unwrap();
    assert!(matches!(
        repo::clone_state(&clone, &url),
        repo::CloneState::Broken(_)
    ));
    let second = origin.push("file.txt", "two\n", "two");
    let ctx = context(Checkout {
        dir: clone.clone(),
        clone_url: Some(url.clone()),
    });
    let seen = run_plan(
        state.path(),
        "reclone",
        CommandKind::Pull,
        planned(&ctx, CommandKind::Pull),
    )
    .await;
    assert_eq!(
        seen.complete.status,
        AgentOutcome::Ok,
        "{:?}",
        texts(&seen.lines)
    );
    assert!(
        texts(&seen.lines)
            .iter()
            .any(|l| l.contains("is broken") && l.contains("cloning it again")),
        "{:?}",
        texts(&seen.lines)
    );
    assert_eq!(git(&clone, &["rev-parse", "HEAD"]), second);
    assert!(
        !repo::clone_tmp(&clone).exists(),
        "no temp clone left behind"
    );

    // At agent start too: a clone that is no repository at all is replaced.
    std::fs::remove_dir_all(clone.join(".git")).unwrap();
    std::fs::write(clone.join("stray"), "x").unwrap();
    repo::prepare_clone(&url, "main", &clone).await.unwrap();
    assert_eq!(git(&clone, &["rev-parse", "HEAD"]), second);
    assert!(!clone.join("stray").exists());

    // A clone of some other repository is not ours either.
    assert!(matches!(
        repo::clone_state(&clone, "https://example.invalid/other.git"),
        repo::CloneState::Broken(why) if why.contains("origin")
    ));
}

fn write_test(dir: &Path, name: &str, body: &str, executable: bool) {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    let mode = if executable { 0o755 } else { 0o644 };
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[tokio::test]
async fn the_test_runner_runs_every_test_and_names_the_failures() {
    let repo_dir = tempfile::tempdir().unwrap();
    let tests = repo_dir.path().join("hosts/web-1/tests");
    std::fs::create_dir_all(&tests).unwrap();
    write_test(&tests, "10-ok.sh", "echo ten says ok", true);
    write_test(&tests, "20-bad.sh", "echo twenty fails >&2; exit 3", true);
    write_test(
        &tests,
        "30-ok.sh",
        "echo thirty in $(basename \"$PWD\")",
        true,
    );
    write_test(&tests, "README", "not a test", false);
    let ctx = context(Checkout {
        dir: repo_dir.path().to_owned(),
        clone_url: None,
    });
    let state = tempfile::tempdir().unwrap();
    let seen = run_plan(
        state.path(),
        "tests1",
        CommandKind::Test,
        planned(&ctx, CommandKind::Test),
    )
    .await;
    let lines = texts(&seen.lines);
    assert_eq!(seen.complete.status, AgentOutcome::Error, "{lines:?}");
    assert_eq!(seen.complete.exit_code, Some(3));
    let at = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle}: {lines:?}"))
    };
    // Every test runs, in name order, even after a failure.
    assert!(at("ten says ok") < at("twenty fails") && at("twenty fails") < at("thirty in"));
    assert!(at("skipping README: not executable") < at("ten says ok"));
    let repo_name = repo_dir.path().file_name().unwrap().to_str().unwrap();
    assert!(
        lines.contains(&format!("thirty in {repo_name}").as_str()),
        "cwd is the repo"
    );
    let result: CommandResult = spool::read_result(&state.path().join("commands/tests1"))
        .unwrap()
        .unwrap();
    assert_eq!(result.message, "1 of 3 tests failed: 20-bad.sh (exit 3)");

    write_test(&tests, "20-bad.sh", "echo fixed", true);
    let seen = run_plan(
        state.path(),
        "tests2",
        CommandKind::Test,
        planned(&ctx, CommandKind::Test),
    )
    .await;
    assert_eq!(seen.complete.status, AgentOutcome::Ok);
    // (The runner also holds tests1, finished and not acked; it is not the one checked.)
    let tests2 = seen
        .finished
        .iter()
        .find(|f| f.spec.command_id == "tests2")
        .unwrap();
    assert_eq!(tests2.result.message, "3 tests passed");
}

// ---------------------------------------------------------------- the link

type ServerSocket = WebSocketStream<TcpStream>;

async fn accept(listener: &TcpListener) -> ServerSocket {
    let (tcp, _) = timeout(Duration::from_secs(10), listener.accept())
        .await
        .expect("the agent connects")
        .unwrap();
    tokio_tungstenite::accept_async(tcp).await.unwrap()
}

async fn send_server(ws: &mut ServerSocket, msg: ServerMessage) {
    ws.send(Message::text(serde_json::to_string(&msg).unwrap()))
        .await
        .unwrap();
}

/// The next agent frame, within `within`.
async fn next_frame(ws: &mut ServerSocket, within: Duration) -> AgentMessage {
    timeout(within, async {
        loop {
            match ws.next().await.expect("agent hung up").unwrap() {
                Message::Text(text) => match decode::<AgentMessage>(&text) {
                    Decoded::Message(m) => return m,
                    other => panic!("agent sent {other:?}"),
                },
                Message::Close(frame) => panic!("agent closed: {frame:?}"),
                _ => {}
            }
        }
    })
    .await
    .expect("timed out waiting for an agent frame")
}

async fn register(ws: &mut ServerSocket) -> Register {
    let AgentMessage::Register(register) = next_frame(ws, Duration::from_secs(10)).await else {
        panic!("the first frame must be register");
    };
    send_server(
        ws,
        ServerMessage::Registered(Registered {
            host_id: "web-1".into(),
            dashboard_version: protocol::VERSION.into(),
            heartbeat_interval_s: 1,
            agent_token: None,
        }),
    )
    .await;
    register
}

fn command(id: &str, kind: CommandKind) -> ServerMessage {
    ServerMessage::Command(CommandOrder::new(id, kind))
}

fn link_config(url: String, state: &Path) -> Config {
    let script = "i=1; while [ $i -le 100 ]; do echo \"line $i\"; i=$((i+1)); done; \
                  sleep 1.5; i=101; while [ $i -le 200 ]; do echo \"line $i\" >&2; i=$((i+1)); done";
    let mut commands = HashMap::new();
    commands.insert(
        CommandKind::Test,
        CommandOverride {
            argv: Some(vec!["sh".into(), "-c".into(), script.into()]),
            timeout_s: None,
        },
    );
    commands.insert(
        CommandKind::Switch,
        CommandOverride {
            argv: Some(vec![
                "sh".into(),
                "-c".into(),
                "echo switching; exec sleep 1000".into(),
            ]),
            timeout_s: None,
        },
    );
    Config {
        ws_urls: vec![url],
        token: TokenSource::Inline(Secret::new("t")),
        hostname: "web-1".into(),
        host_type: HostType::Nixos,
        interval_s: 1,
        theme_color: None,
        location: None,
        device_type: None,
        tags: Vec::new(),
        checkout: None,
        repo_url: None,
        branch: "main".into(),
        state_dir: state.to_owned(),
        commands,
        spool_limit: 64 << 20,
        supervisor_exe: PathBuf::from(AGENT),
        // Not this machine's profile: the tests must not depend on what it has.
        system: nixdeck_agent::nix::SystemSettings {
            profile: state.join("profiles/system"),
            current_system: state.join("current-system"),
            booted_system: state.join("booted-system"),
            ..nixdeck_agent::nix::SystemSettings::nixos()
        },
    }
}

#[tokio::test]
async fn the_link_streams_resends_after_a_reconnect_rejects_when_busy_and_restarts() {
    let state = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ws/agent", listener.local_addr().unwrap());
    let (stop, shutdown) = watch::channel(false);
    let cfg = link_config(url, state.path());
    let timings = Timings {
        idle: Duration::from_secs(10),
        ..Timings::default()
    };
    let agent =
        tokio::spawn(async move { Link::new(cfg).with_timings(timings).run(shutdown).await });

    // Session 1: the command streams; a second command is refused while it runs.
    let mut ws = accept(&listener).await;
    assert_eq!(register(&mut ws).await.running_command, None);
    send_server(&mut ws, command("cmd-1", CommandKind::Test)).await;
    let mut first = Vec::new();
    let mut saw_pending = false;
    while first.len() < 100 {
        match next_frame(&mut ws, Duration::from_secs(10)).await {
            AgentMessage::Output(o) => first.push(o.seq),
            AgentMessage::Heartbeat(h) => {
                saw_pending |= h.pending_command.is_some_and(|p| p.command_id == "cmd-1")
            }
            AgentMessage::Status(_) => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(first, (1..=100).collect::<Vec<_>>());
    send_server(&mut ws, command("cmd-2", CommandKind::Refresh)).await;
    loop {
        match next_frame(&mut ws, Duration::from_secs(5)).await {
            AgentMessage::CommandRejected(r) => {
                assert_eq!(r.command_id, "cmd-2");
                assert_eq!(r.reason, "busy: cmd-1 is running");
                break;
            }
            AgentMessage::Heartbeat(h) => {
                saw_pending |= h.pending_command.is_some_and(|p| p.command_id == "cmd-1")
            }
            AgentMessage::Output(o) => panic!("unexpected line {o:?}"),
            _ => {}
        }
    }
    // Heartbeats go on during the command (every second here) and name it.
    while !saw_pending {
        if let AgentMessage::Heartbeat(h) = next_frame(&mut ws, Duration::from_secs(3)).await {
            saw_pending = h.pending_command.is_some_and(|p| p.command_id == "cmd-1");
        }
    }
    send_server(
        &mut ws,
        ServerMessage::Ack(Ack {
            command_id: "cmd-1".into(),
            seq: 40,
            complete: false,
        }),
    )
    .await;
    // Give the ack a moment to land, then drop the link mid-command.
    sleep(Duration::from_millis(200)).await;
    drop(ws);

    // Session 2: register names the command; everything after the ack comes again.
    let mut ws = accept(&listener).await;
    let running = register(&mut ws)
        .await
        .running_command
        .expect("running_command");
    assert_eq!(running.command_id, "cmd-1");
    assert_eq!(running.command, CommandKind::Test);
    assert!(running.next_seq > 100, "{running:?}");
    let mut second = Vec::new();
    let complete = loop {
        match next_frame(&mut ws, Duration::from_secs(15)).await {
            AgentMessage::Output(o) => {
                assert_eq!(
                    o.stream,
                    if o.seq <= 100 {
                        OutputStream::Stdout
                    } else {
                        OutputStream::Stderr
                    }
                );
                assert_eq!(o.line, format!("line {}", o.seq));
                second.push(o.seq)
            }
            AgentMessage::CommandComplete(c) => break c,
            _ => {}
        }
    };
    assert_eq!(second, (41..=200).collect::<Vec<_>>());
    assert_eq!(complete.status, AgentOutcome::Ok);
    assert_eq!(complete.last_seq, 200);
    // After a command, a heartbeat follows at once.
    assert!(matches!(
        next_frame(&mut ws, Duration::from_secs(2)).await,
        AgentMessage::Heartbeat(_) | AgentMessage::Status(_)
    ));
    let dir = state.path().join("commands/cmd-1");
    assert!(dir.exists());
    send_server(
        &mut ws,
        ServerMessage::Ack(Ack {
            command_id: "cmd-1".into(),
            seq: 200,
            complete: true,
        }),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while dir.exists() {
        assert!(Instant::now() < deadline, "the acked command's state stays");
        sleep(Duration::from_millis(50)).await;
    }

    // Stop reaches the supervisor over the link.
    send_server(&mut ws, command("cmd-3", CommandKind::Switch)).await;
    loop {
        if let AgentMessage::Output(o) = next_frame(&mut ws, Duration::from_secs(10)).await {
            assert_eq!(o.line, "switching");
            break;
        }
    }
    send_server(
        &mut ws,
        ServerMessage::Stop(StopOrder {
            command_id: "cmd-3".into(),
        }),
    )
    .await;
    let stopped = loop {
        if let AgentMessage::CommandComplete(c) = next_frame(&mut ws, Duration::from_secs(10)).await
        {
            break c;
        }
    };
    assert_eq!(stopped.status, AgentOutcome::Stopped);
    send_server(
        &mut ws,
        ServerMessage::Ack(Ack {
            command_id: "cmd-3".into(),
            seq: stopped.last_seq,
            complete: true,
        }),
    )
    .await;

    // restart: completes ok, waits for the ack, and the agent exits.
    send_server(&mut ws, command("cmd-4", CommandKind::Restart)).await;
    let done = loop {
        if let AgentMessage::CommandComplete(c) = next_frame(&mut ws, Duration::from_secs(5)).await
        {
            break c;
        }
    };
    assert_eq!(
        (done.command_id.as_str(), done.status),
        ("cmd-4", AgentOutcome::Ok)
    );
    send_server(
        &mut ws,
        ServerMessage::Ack(Ack {
            command_id: "cmd-4".into(),
            seq: done.last_seq,
            complete: true,
        }),
    )
    .await;
    let exit = timeout(Duration::from_secs(5), agent)
        .await
        .expect("the agent exits after restart")
        .unwrap();
    assert_eq!(exit, Exit::Restart);
    assert!(!state.path().join("commands/cmd-4").exists());
    drop(stop);
}

/// `NIXDECK_SWITCH_ACTION` as the service would set it: `test` with an activation that
/// has no test mode stops the agent at start, saying why, before it connects anywhere.
#[test]
fn switch_action_from_the_environment_is_checked_at_start() {
    let state = tempfile::tempdir().unwrap();
    let run = |action: &str, activation: &str| {
        let mut cmd = std::process::Command::new(AGENT);
        for (key, _) in std::env::vars() {
            if key.starts_with("NIXDECK_") {
                cmd.env_remove(key);
            }
        }
        let out = cmd
            .args(["--url", "http://127.0.0.1:1", "--token", "t"])
            .args(["--hostname", "web-1", "--activation", activation])
            .arg("--state-dir")
            .arg(state.path())
            .env("NIXDECK_SWITCH_ACTION", action)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for activation in ["darwin", "home-manager"] {
        let (code, stderr) = run("test", activation);
        assert_eq!(code, Some(2), "{stderr}");
        assert!(
            stderr.contains("--switch-action test activates with NixOS's")
                && stderr.contains(&format!("--activation {activation}")),
            "{stderr}"
        );
    }
    let (code, stderr) = run("reboot", "nixos");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("NIXDECK_SWITCH_ACTION") || stderr.contains("switch-action"),
        "{stderr}"
    );
}
