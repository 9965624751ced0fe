//! Commands end to end: the real server, the real agent running real processes, temp dirs,
//! loopback. Each test writes the agent a command config of harmless programs.

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;
use testkit::client::Session;
use testkit::git::{git, Origin};
use testkit::proc::{is_gone, pids_in};
use tokio::time::{sleep, Instant};

/// A running fleet of one: server, logged-in admin, one host and its agent.
struct One {
    dir: tempfile::TempDir,
    server: Server,
    admin: Session,
    host: String,
    token: String,
    agent: Option<Child>,
    agent_args: Vec<String>,
}

impl One {
    async fn start(
        host: &str,
        commands_toml: &str,
        server_env: &[(&str, &str)],
        extra_agent_args: &[&str],
    ) -> One {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::start_with(dir.path(), free_port(), server_env).await;
        let admin = login(&server).await;
        let token = create_host(&server, &admin, host).await;
        let config = dir.path().join("agent.toml");
        std::fs::write(&config, format!("[commands]\n{commands_toml}\n")).unwrap();
        let mut agent_args = vec!["--config".to_owned(), config.display().to_string()];
        agent_args.extend(extra_agent_args.iter().map(|s| s.to_string()));
        let mut one = One {
            dir,
            server,
            admin,
            host: host.to_owned(),
            token,
            agent: None,
            agent_args,
        };
        one.start_agent();
        one.wait_online(true).await;
        one
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn start_agent(&mut self) {
        let args: Vec<&str> = self.agent_args.iter().map(String::as_str).collect();
        let state = self.path("agent-state");
        self.agent = Some(spawn_agent_with(
            &self.server,
            &self.host,
            &self.token,
            &state,
            &args,
        ));
    }

    fn stop_agent(&mut self, signal: &str) {
        if let Some(mut a) = self.agent.take() {
            kill_child(&mut a, signal);
        }
    }

    async fn host_json(&self) -> Value {
        let hosts: Value = self
            .admin
            .http
            .get(self.server.url("/api/hosts"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        hosts
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["id"] == self.host.as_str())
            .cloned()
            .unwrap()
    }

    async fn wait_online(&self, online: bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.host_json().await["online"] != online {
            assert!(
                Instant::now() < deadline,
                "host online={online} not reached"
            );
            sleep(Duration::from_millis(100)).await;
        }
    }

    async fn run(&self, command: &str) -> (u16, Value) {
        let r = self
            .admin
            .post(&self.server, &format!("/api/hosts/{}/commands", self.host))
            .json(&json!({ "command": command }))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn run_ok(&self, command: &str) -> String {
        let (status, body) = self.run(command).await;
        assert_eq!(status, 202, "{body}");
        body["command_id"].as_str().unwrap().to_owned()
    }

    async fn record(&self, command_id: &str) -> Value {
        let list: Value = self
            .admin
            .http
            .get(
                self.server
                    .url(&format!("/api/hosts/{}/commands?limit=50", self.host)),
            )
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        list.as_array()
            .unwrap()
            .iter()
            .find(|c| c["command_id"] == command_id)
            .cloned()
            .expect("command in history")
    }

    /// Poll the history until the command has a final status and the host is free.
    async fn wait_final(&self, command_id: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let rec = self.record(command_id).await;
            let done = !matches!(rec["status"].as_str(), Some("queued" | "running"));
            if done && self.host_json().await["pending_command"].is_null() {
                return rec;
            }
            assert!(
                Instant::now() < deadline,
                "command not finished: {rec}\n{}",
                self.server.log()
            );
            sleep(Duration::from_millis(100)).await;
        }
    }

    async fn wait_lines(&self, command_id: &str, at_least: u64) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.record(command_id).await["line_count"]
            .as_u64()
            .unwrap()
            < at_least
        {
            assert!(Instant::now() < deadline, "no output");
            sleep(Duration::from_millis(50)).await;
        }
    }

    async fn log(&self, command_id: &str) -> String {
        let r = self
            .admin
            .http
            .get(self.server.url(&format!("/api/commands/{command_id}/log")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"));
        assert!(r.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment"));
        r.text().await.unwrap()
    }
}

impl Drop for One {
    fn drop(&mut self) {
        self.stop_agent("-KILL");
        // Supervisors outlive their agent by design (a command survives an agent restart);
        // a test's must not outlive the test. SIGTERM makes one stop its command's group.
        let commands = self.path("agent-state").join("commands");
        for entry in std::fs::read_dir(commands).into_iter().flatten().flatten() {
            if let Ok(pid) = std::fs::read_to_string(entry.path().join("pid")) {
                let _ = Command::new("kill").args(["-TERM", pid.trim()]).status();
            }
        }
    }
}

/// `sh -c SCRIPT` as a TOML argv array.
fn sh(name: &str, script: &str) -> String {
    format!("{name} = [\"sh\", \"-c\", {}]", toml_string(script))
}

fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The log download's text of one line: `[HH:MM:SS] line` or `[HH:MM:SS] [ERR] line`.
fn strip_clock(line: &str) -> &str {
    assert!(
        line.len() > 11 && line.as_bytes()[0] == b'[' && line.as_bytes()[9] == b']',
        "{line}"
    );
    &line[11..]
}

const TWENTY_K: &str = "i=1; while [ $i -le 20000 ]; do if [ $((i % 4)) -eq 0 ]; then echo \"err $i\" >&2; else echo \"out $i\"; fi; i=$((i+1)); done";

#[tokio::test]
async fn twenty_thousand_lines_arrive_complete_in_order_once() {
    let one = One::start("lines", &sh("test", TWENTY_K), &[], &[]).await;
    let mut browser = browser_socket(&one.server, &one.admin).await;
    assert_eq!(
        next_json(&mut browser, Duration::from_secs(5)).await["type"],
        "snapshot"
    );
    let id = one.run_ok("test").await;

    // At a browser: every line once, seq contiguous, each stream in order.
    let mut seqs = Vec::new();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let mut saw_busy = false;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let v = next_json(
            &mut browser,
            deadline.saturating_duration_since(Instant::now()),
        )
        .await;
        let p = &v["payload"];
        match v["type"].as_str().unwrap() {
            "host_updated" if p["host"]["pending_command"]["command_id"] == id.as_str() => {
                saw_busy = true
            }
            "command_output" if p["command_id"] == id.as_str() => {
                seqs.push(p["seq"].as_u64().unwrap());
                let line = p["line"].as_str().unwrap();
                let n: u64 = line[4..].parse().unwrap();
                match p["stream"].as_str().unwrap() {
                    "stdout" => {
                        assert!(line.starts_with("out "));
                        out.push(n)
                    }
                    _ => {
                        assert!(line.starts_with("err "));
                        err.push(n)
                    }
                }
            }
            "command_complete" if p["command_id"] == id.as_str() => {
                assert_eq!(p["status"], "ok");
                assert_eq!(p["exit_code"], 0);
                break;
            }
            _ => {}
        }
    }
    assert!(saw_busy, "host_updated with pending_command set");
    assert_eq!(seqs, (1..=20_000).collect::<Vec<_>>());
    assert_eq!(out, (1..=20_000).filter(|i| i % 4 != 0).collect::<Vec<_>>());
    assert_eq!(err, (1..=20_000).filter(|i| i % 4 == 0).collect::<Vec<_>>());

    // In the database: the record and the log download.
    let rec = one.wait_final(&id, Duration::from_secs(10)).await;
    assert_eq!(rec["status"], "ok");
    assert_eq!(rec["line_count"], 20_000);
    assert!(rec["finished_at"].is_string() && rec["started_at"].is_string());
    let log = one.log(&id).await;
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 20_000);
    let mut seen = BTreeSet::new();
    for line in &lines {
        let text = strip_clock(line);
        let (n, is_err) = match text.strip_prefix("[ERR] err ") {
            Some(n) => (n, true),
            None => (text.strip_prefix("out ").expect(text), false),
        };
        let n: u64 = n.parse().unwrap();
        assert_eq!(is_err, n.is_multiple_of(4), "{line}");
        assert!(seen.insert(n), "duplicate line {n}");
    }
    assert_eq!(seen.len(), 20_000);
}

/// A NUL in a command's output (binary output, `printf '\0'`) is stored and shown as U+FFFD
/// on both databases: PostgreSQL's text cannot hold it, and a line it refused would never be
/// acked, so the agent would send it again forever and the log would end there.
#[tokio::test]
async fn a_nul_in_output_is_kept_as_a_replacement_character() {
    let one = One::start(
        "nul",
        &sh("test", "printf 'a\\000b\\n'; echo after"),
        &[],
        &[],
    )
    .await;
    let id = one.run_ok("test").await;
    let rec = one.wait_final(&id, Duration::from_secs(20)).await;
    assert_eq!(rec["status"], "ok");
    assert_eq!(rec["line_count"], 2);
    let log = one.log(&id).await;
    let lines: Vec<&str> = log.lines().map(strip_clock).collect();
    assert_eq!(lines, ["a\u{FFFD}b", "after"]);
}

#[tokio::test]
async fn pull_moves_the_generation_and_cleans_the_checkout() {
    let scratch = tempfile::tempdir().unwrap();
    let origin = Origin::new(
        scratch.path(),
        &[("file.txt", "one\n"), ("flake.lock", "{}\n")],
    );
    let checkout = scratch.path().join("checkout");
    origin.clone_to(&checkout);
    let first = git(&checkout, &["rev-parse", "HEAD"]);

    let one = One::start(
        "puller",
        "",
        &[],
        &["--repo-dir", checkout.to_str().unwrap(), "--branch", "main"],
    )
    .await;
    assert_eq!(one.host_json().await["generation"], first.as_str());

    let second = origin.push("file.txt", "two\n", "second");
    // A dirty checkout: an untracked file and a local edit.
    std::fs::write(checkout.join("junk.txt"), "junk\n").unwrap();
    std::fs::write(checkout.join("file.txt"), "local edit\n").unwrap();

    let id = one.run_ok("pull").await;
    let rec = one.wait_final(&id, Duration::from_secs(30)).await;
    assert_eq!(rec["status"], "ok", "{}", one.log(&id).await);
    assert_eq!(git(&checkout, &["rev-parse", "HEAD"]), second);
    assert!(
        !checkout.join("junk.txt").exists(),
        "untracked file cleaned"
    );
    assert_eq!(
        std::fs::read_to_string(checkout.join("file.txt")).unwrap(),
        "two\n"
    );
    // The agent reports the new generation at once.
    let deadline = Instant::now() + Duration::from_secs(10);
    while one.host_json().await["generation"] != second.as_str() {
        assert!(Instant::now() < deadline, "generation not updated");
        sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn stop_kills_the_process_tree_and_rules_hold() {
    let scratch = tempfile::tempdir().unwrap();
    let pids = scratch.path().join("pids");
    let script = format!(
        "for i in 1 2 3; do sleep 1000 & echo $! >> {p}; done; sh -c 'sleep 1000 & echo $! >> {p}; wait' & echo started; wait",
        p = pids.display()
    );
    let mut one = One::start("stopper", &sh("test", &script), &[], &[]).await;

    // Unknown command: 422. Unknown host: 404.
    assert_eq!(one.run("reboot-everything").await.0, 422);
    let r = one
        .admin
        .post(&one.server, "/api/hosts/ghost/commands")
        .json(&json!({"command": "pull"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // Stop with nothing running: 409 idle.
    let r = one
        .admin
        .post(&one.server, &format!("/api/hosts/{}/stop", one.host))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "idle");

    let id = one.run_ok("test").await;
    one.wait_lines(&id, 1).await;
    // A second command while one runs: 409 busy.
    let (status, body) = one.run("pull").await;
    assert_eq!((status, body["code"].as_str()), (409, Some("busy")));

    let r = one
        .admin
        .post(&one.server, &format!("/api/hosts/{}/stop", one.host))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(r.json::<Value>().await.unwrap()["command_id"], id.as_str());
    let rec = one.wait_final(&id, Duration::from_secs(15)).await;
    assert_eq!(rec["status"], "stopped");
    let pid_list = pids_in(&pids);
    assert_eq!(pid_list.len(), 4);
    sleep(Duration::from_millis(300)).await;
    for pid in pid_list {
        assert!(is_gone(pid), "child {pid} survived the stop");
    }

    // Offline: 409 offline.
    one.stop_agent("-TERM");
    one.wait_online(false).await;
    let (status, body) = one.run("pull").await;
    assert_eq!((status, body["code"].as_str()), (409, Some("offline")));
}

#[tokio::test]
async fn a_timeout_is_recorded_and_the_process_is_gone() {
    let scratch = tempfile::tempdir().unwrap();
    let pidfile = scratch.path().join("pid");
    let script = format!(
        "echo $$ > {}; echo waiting; exec sleep 1000",
        pidfile.display()
    );
    let one = One::start(
        "slowpoke",
        &sh("test", &script),
        &[("NIXDECK_TIMEOUT_TEST_S", "2")],
        &[],
    )
    .await;
    let id = one.run_ok("test").await;
    one.wait_lines(&id, 1).await;
    let rec = one.wait_final(&id, Duration::from_secs(20)).await;
    assert_eq!(rec["status"], "timeout");
    let pid: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(is_gone(pid), "the timed-out process is still running");
}

const SLOW_20K: &str = "i=1; while [ $i -le 20000 ]; do echo \"line $i\"; if [ $((i % 400)) -eq 0 ]; then sleep 0.1; fi; i=$((i+1)); done";

fn assert_numbered_once(log: &str, n: u64) {
    let lines: Vec<&str> = log.lines().map(strip_clock).collect();
    let expected: Vec<String> = (1..=n).map(|i| format!("line {i}")).collect();
    assert_eq!(lines.len() as u64, n, "line count");
    assert!(
        lines.iter().zip(&expected).all(|(a, b)| a == b),
        "lines out of order or changed"
    );
}

#[tokio::test]
async fn kill_9_of_the_dashboard_mid_command_loses_nothing() {
    let mut one = One::start("survivor", &sh("test", SLOW_20K), &[], &[]).await;
    let id = one.run_ok("test").await;
    one.wait_lines(&id, 1_000).await;
    let port = one.server.port;
    let dir = one.server.dir.clone();
    if let Some(mut child) = one.server_child() {
        kill_child(&mut child, "-KILL");
    }
    sleep(Duration::from_millis(500)).await;
    one.server = Server::start_on(&dir, port).await;
    let rec = one.wait_final(&id, Duration::from_secs(90)).await;
    assert_eq!(rec["status"], "ok", "{}", one.server.log());
    assert_eq!(rec["line_count"], 20_000);
    assert_numbered_once(&one.log(&id).await, 20_000);
}

#[tokio::test]
async fn an_agent_restarted_mid_command_reports_the_outcome_when_back() {
    // As a `switch` replaces the agent's own service: the agent goes away mid-command.
    let script =
        "echo start; sleep 3; i=1; while [ $i -le 50 ]; do echo \"after $i\"; i=$((i+1)); done";
    let mut one = One::start("phoenix", &sh("switch", script), &[], &[]).await;
    let id = one.run_ok("switch").await;
    one.wait_lines(&id, 1).await;
    one.stop_agent("-TERM");
    one.wait_online(false).await;
    // Offline, but the command is still running as far as the dashboard knows.
    assert_eq!(
        one.host_json().await["pending_command"]["command_id"],
        id.as_str()
    );
    sleep(Duration::from_secs(1)).await;
    one.start_agent();
    let rec = one.wait_final(&id, Duration::from_secs(30)).await;
    assert_eq!(rec["status"], "ok", "{}", one.server.log());
    let log = one.log(&id).await;
    let lines: Vec<&str> = log.lines().map(strip_clock).collect();
    assert_eq!(lines.first(), Some(&"start"));
    assert_eq!(lines.len(), 51);
    assert_eq!(lines.last(), Some(&"after 50"));
}

#[tokio::test]
async fn unlock_releases_a_host_whose_agent_vanished() {
    let mut one = One::start(
        "stuck",
        &sh("test", "echo going; exec sleep 1000"),
        &[],
        &[],
    )
    .await;
    let id = one.run_ok("test").await;
    one.wait_lines(&id, 1).await;
    one.stop_agent("-KILL");
    one.wait_online(false).await;
    let r = one
        .admin
        .post(&one.server, &format!("/api/hosts/{}/unlock", one.host))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let rec = one.wait_final(&id, Duration::from_secs(5)).await;
    assert_eq!(rec["status"], "abandoned");
}

impl One {
    fn server_child(&mut self) -> Option<Child> {
        self.server.take_child()
    }
}

#[tokio::test]
async fn a_command_the_agent_forgot_is_marked_lost() {
    let mut one = One::start(
        "amnesiac",
        &sh("test", "echo going; exec sleep 1000"),
        &[],
        &[],
    )
    .await;
    let id = one.run_ok("test").await;
    one.wait_lines(&id, 1).await;
    one.stop_agent("-KILL");
    // The agent comes back with no memory of the command (its state is gone).
    let supervisor_dir = one.path("agent-state").join("commands").join(&id);
    if let Ok(pid) = std::fs::read_to_string(supervisor_dir.join("pid")) {
        // Its command first (a direct child), so nothing outlives the test.
        let _ = Command::new("pkill")
            .args(["-KILL", "-P", pid.trim()])
            .status();
        let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
    }
    std::fs::remove_dir_all(one.path("agent-state").join("commands")).unwrap();
    one.wait_online(false).await;
    one.start_agent();
    let rec = one.wait_final(&id, Duration::from_secs(20)).await;
    assert_eq!(rec["status"], "lost");
    // And the host takes commands again.
    one.wait_online(true).await;
    let (status, _) = one.run("pull").await;
    assert_eq!(status, 202);
}

#[tokio::test]
async fn bulk_answers_for_each_host() {
    let mut one = One::start("bulk-a", &sh("test", "echo fine"), &[], &[]).await;
    let offline = create_host(&one.server, &one.admin, "bulk-b").await;
    assert!(!offline.is_empty());
    let r = one
        .admin
        .post(&one.server, "/api/bulk")
        .json(&json!({"command": "test", "host_ids": ["bulk-a", "bulk-b", "ghost"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    assert_eq!(results[0]["host_id"], "bulk-a");
    let id = results[0]["command_id"].as_str().unwrap().to_owned();
    assert_eq!(results[1]["code"], "offline");
    assert_eq!(results[2]["code"], "not_found");
    assert_eq!(
        one.wait_final(&id, Duration::from_secs(10)).await["status"],
        "ok"
    );
    // `null` means every online host; an unknown command is a 422 for the whole request.
    let r = one
        .admin
        .post(&one.server, "/api/bulk")
        .json(&json!({"command": "test", "host_ids": null}))
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["results"].as_array().unwrap().len(), 1);
    let r = one
        .admin
        .post(&one.server, "/api/bulk")
        .json(&json!({"command": "nuke", "host_ids": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    one.stop_agent("-TERM");
}

#[tokio::test]
/// A line printed after a pause, just before the process exits, still comes before the
/// command's completion (browsers draw the log in that order).
async fn every_line_arrives_before_the_completion() {
    let one = One::start(
        "pauser",
        &sh("switch", "echo building; sleep 1; echo activated"),
        &[],
        &[],
    )
    .await;
    let mut ws = browser_socket(&one.server, &one.admin).await;
    let id = one.run_ok("switch").await;
    let mut seen = Vec::new();
    loop {
        let v = next_json(&mut ws, Duration::from_secs(10)).await;
        match v["type"].as_str().unwrap() {
            "command_output" => seen.push(v["payload"]["line"].as_str().unwrap().to_owned()),
            "command_complete" => break,
            _ => {}
        }
    }
    let log = one.log(&id).await;
    assert_eq!(seen, ["building", "activated"], "db: {log}");
    assert!(log.contains("activated"), "{log}");
}
