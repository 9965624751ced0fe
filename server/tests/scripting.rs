//! Scripting the dashboard end to end: `nixdeck ctl` (the real binary, run as a script
//! runs it) against the real server and agent, and the JSON logs of both.

mod common;

use common::*;
use serde_json::Value;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::time::{sleep, Instant};

/// A switch that works (a line on stderr among them) and a test that fails.
const COMMANDS: &str = r#"[commands]
switch = ["sh", "-c", "echo building; echo 'warning: slow mirror' >&2; sleep 1; echo activated"]
test = ["sh", "-c", "echo checking; exit 3"]
"#;

/// The failing test's log: its line, and the agent's word on how it ended.
const FAILED_LOG: [&str; 2] = [
    "checking",
    "[ERR] [nixdeck-agent: `sh -c 'echo checking; exit 3'` exited with code 3]",
];

/// A server, its host `web-1` with a real agent online, and an operator's API token.
struct Fleet {
    _dir: tempfile::TempDir,
    server: Server,
    agent: Child,
    token: String,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        kill_child(&mut self.agent, "-TERM");
    }
}

impl Fleet {
    async fn start() -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::start(dir.path()).await;
        let admin = login(&server).await;
        let host_token = create_host(&server, &admin, "web-1").await;
        let config = dir.path().join("agent.toml");
        std::fs::write(&config, COMMANDS).unwrap();
        let agent = spawn_agent_with(
            &server,
            "web-1",
            &host_token,
            &dir.path().join("agent-state"),
            &["--config", config.to_str().unwrap()],
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let hosts = admin.get_json(&server, "/api/hosts").await;
            if hosts[0]["online"] == true {
                break;
            }
            assert!(Instant::now() < deadline, "the agent did not come online");
            sleep(Duration::from_millis(100)).await;
        }
        let token = api_token(&server, "operator");
        Fleet {
            _dir: dir,
            server,
            agent,
            token,
        }
    }

    async fn ctl(&self, args: &[&str]) -> (i32, String, String) {
        ctl(&self.server, &self.token, args).await
    }
}

#[tokio::test]
async fn ctl_lists_hosts_and_runs_commands_with_exit_codes_a_script_can_trust() {
    let fleet = Fleet::start().await;

    let (code, out, err) = fleet.ctl(&["hosts"]).await;
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("NAME"), "{out}");
    assert!(lines[1].starts_with("web-1 "), "{out}");
    assert!(lines[1].contains(" yes "), "{out}");
    let (code, out, _) = fleet.ctl(&["hosts", "--json"]).await;
    assert_eq!(code, 0);
    let hosts: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(hosts[0]["id"], "web-1");

    // Followed: every line once, in order, stderr's marked; exit 0 for ok.
    let (code, out, err) = fleet.ctl(&["run", "web-1", "switch", "--follow"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let log: Vec<&str> = out.lines().map(without_clock).collect();
    assert_eq!(
        log,
        ["building", "[ERR] warning: slow mirror", "activated"],
        "{out}"
    );
    assert!(err.contains("switch on web-1 ended ok"), "{err}");

    // A failing command: its output, and exit 1 with the status.
    let (code, out, err) = fleet.ctl(&["run", "web-1", "test", "--follow"]).await;
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(
        out.lines().map(without_clock).collect::<Vec<_>>(),
        FAILED_LOG
    );
    assert!(
        err.contains("test on web-1 ended error (exit code 3)"),
        "{err}"
    );

    // Without --follow: the id at once, which `status` and `log` then read.
    let (code, id, err) = fleet.ctl(&["run", "web-1", "test"]).await;
    assert_eq!(code, 0, "{err}");
    let id = id.trim().to_owned();
    assert_eq!(id.len(), 32, "{id}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let detail = loop {
        let (code, out, err) = fleet.ctl(&["status", &id, "--json"]).await;
        assert_eq!(code, 0, "{err}");
        let detail: Value = serde_json::from_str(&out).unwrap();
        if detail["status"] != "queued" && detail["status"] != "running" {
            break detail;
        }
        assert!(Instant::now() < deadline, "{detail}");
        sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(detail["status"], "error");
    assert_eq!(detail["exit_code"], 3);
    let (code, log, _) = fleet.ctl(&["log", &id]).await;
    assert_eq!(code, 0);
    assert_eq!(
        log.lines().map(without_clock).collect::<Vec<_>>(),
        FAILED_LOG
    );
    let (code, text, _) = fleet.ctl(&["status", &id]).await;
    assert_eq!(code, 0);
    assert!(text.contains("status    error (exit code 3)"), "{text}");
}

#[tokio::test]
async fn ctl_says_why_it_failed_with_the_exit_code_for_each_reason() {
    let fleet = Fleet::start().await;

    let (code, _, err) = ctl(&fleet.server, "not-a-token", &["hosts"]).await;
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("token is wrong, revoked or expired"), "{err}");
    let (code, _, err) = ctl(&fleet.server, "", &["hosts"]).await;
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("no API token"), "{err}");

    let (code, _, err) = fleet.ctl(&["run", "ghost", "switch"]).await;
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("unknown host `ghost`"), "{err}");
    let (code, _, err) = fleet.ctl(&["status", "no-such-command"]).await;
    assert_eq!(code, 4, "{err}");

    let (code, _, err) = fleet.ctl(&["run", "web-1", "reboot-everything"]).await;
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = fleet.ctl(&["run", "web-1"]).await;
    assert_eq!(code, 2, "{err}");

    // Busy: the second command while the first runs.
    let (code, _, err) = fleet.ctl(&["run", "web-1", "switch"]).await;
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = fleet.ctl(&["run", "web-1", "switch"]).await;
    assert_eq!(code, 7, "{err}");
    assert!(err.contains("(busy)"), "{err}");

    // A viewer's token may read but not run.
    let viewer = api_token(&fleet.server, "viewer");
    assert_eq!(ctl(&fleet.server, &viewer, &["hosts"]).await.0, 0);
    let (code, _, err) = ctl(&fleet.server, &viewer, &["run", "web-1", "test"]).await;
    assert_eq!(code, 6, "{err}");

    // Nobody listening.
    let (code, _, err) = ctl(
        &fleet.server,
        &fleet.token,
        &["--url", "http://127.0.0.1:1", "hosts"],
    )
    .await;
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("cannot connect"), "{err}");
}

/// A log line without its `[HH:MM:SS] ` clock.
fn without_clock(line: &str) -> &str {
    line.split_once("] ").map_or(line, |(_, rest)| rest)
}

/// Every line of `log` is a JSON object with a level and a message.
fn assert_json_lines(log: &str, what: &str) {
    assert!(!log.trim().is_empty(), "{what} logged nothing");
    for line in log.lines() {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {line}"));
        assert!(v["level"].is_string(), "{what}: no level: {line}");
        assert!(v["message"].is_string(), "{what}: no message: {line}");
        assert!(v["timestamp"].is_string(), "{what}: no timestamp: {line}");
    }
}

#[tokio::test]
async fn server_and_agent_log_json_lines_when_asked_and_refuse_an_unknown_format() {
    let dir = tempfile::tempdir().unwrap();
    let json = [("NIXDECK_LOG_FORMAT", "json")];
    let server = Server::start_with(dir.path(), free_port(), &json).await;
    let admin = login(&server).await;
    let token = create_host(&server, &admin, "logger").await;
    let state = dir.path().join("agent-state");
    let mut agent = spawn_agent_env(&server, "logger", &token, &state, &[], &json);
    let deadline = Instant::now() + Duration::from_secs(20);
    while admin.get_json(&server, "/api/hosts").await[0]["online"] != true {
        assert!(Instant::now() < deadline, "the agent did not come online");
        sleep(Duration::from_millis(100)).await;
    }
    kill_child(&mut agent, "-TERM");
    let mut server = server;
    server.stop();
    let server_log = server.log();
    assert_json_lines(&server_log, "the server");
    assert!(server_log.contains("listening on http://"), "{server_log}");
    let agent_log = std::fs::read_to_string(state.with_extension("log")).unwrap();
    assert_json_lines(&agent_log, "the agent");
    assert!(agent_log.contains("starting nixdeck-agent"), "{agent_log}");

    // An unknown format stops either at once, saying what it accepts.
    for (bin, args) in [
        (
            std::path::PathBuf::from(env!("CARGO_BIN_EXE_nixdeck")),
            vec!["serve"],
        ),
        (
            agent_bin(),
            vec!["--url", "http://127.0.0.1:1", "--token", "x"],
        ),
    ] {
        let out = Command::new(&bin)
            .args(&args)
            .env("NIXDECK_LOG_FORMAT", "xml")
            .env(
                "NIXDECK_DATABASE_URL",
                format!("sqlite://{}/never.db", dir.path().display()),
            )
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}: {err}", bin.display());
        assert!(
            err.contains("invalid value 'xml'") && err.contains("text, json"),
            "{}: {err}",
            bin.display()
        );
    }
    assert!(!dir.path().join("never.db").exists());
}
