//! Two nixdeck replicas on one PostgreSQL database (docs/SCALING.md): an agent on A, a
//! browser and the REST calls on B. The real server and agent binaries, a real
//! PostgreSQL (`NIXDECK_TEST_POSTGRES_URL`, `scripts/pg.sh`; `scripts/test.sh` sets it).
//! Without it each test prints that it was skipped (and fails under `CI`, like every
//! PostgreSQL test). These tests choose their database themselves, so the second pass of
//! `scripts/test.sh` (`NIXDECK_TEST_SERVER_DATABASE=postgres`) skips them: they ran in the
//! first.

mod common;

use common::*;
use nixdeck_core::storage::testing::{fresh_postgres_database, TestBackend};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;
use testkit::client::Session;
use tokio::time::Instant;

/// Two servers on one new database, with one secret key file.
struct Replicas {
    dir: tempfile::TempDir,
    a: Server,
    b: Server,
    agent: Option<Child>,
}

/// The database URL for both replicas, or None (with a note) when these tests do not run.
async fn shared_database() -> Option<String> {
    if on_postgres() {
        eprintln!(
            "note: replicas tests skipped in the {SERVER_DATABASE_ENV}=postgres pass; they run \
             on PostgreSQL in every pass that has NIXDECK_TEST_POSTGRES_URL"
        );
        return None;
    }
    let TestBackend::Postgres(server) = TestBackend::postgres()? else {
        return None;
    };
    Some(fresh_postgres_database(&server).await.unwrap())
}

/// A replica's own folder (its log), on the shared database.
async fn replica(root: &Path, name: &str, url: &str) -> Server {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    // `common::database_url` reads it: `sql` and the CLI then reach the same database.
    std::fs::write(dir.join("database-url"), url).unwrap();
    let key = root.join("secret.key");
    let key = key.to_str().unwrap();
    Server::start_with(
        &dir,
        free_port(),
        &[
            ("NIXDECK_DATABASE_URL", url),
            ("NIXDECK_SECRET_KEY_FILE", key),
        ],
    )
    .await
}

impl Replicas {
    async fn start() -> Option<Replicas> {
        let url = shared_database().await?;
        let dir = tempfile::tempdir().unwrap();
        // One after the other: the first makes the key file and the admin.
        let a = replica(dir.path(), "a", &url).await;
        let b = replica(dir.path(), "b", &url).await;
        Some(Replicas {
            dir,
            a,
            b,
            agent: None,
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// An agent for `host` with `commands_toml`, given the servers' `urls` in that order
    /// (one `--url` each).
    fn start_agent(&mut self, host: &str, token: &str, commands_toml: &str, urls: &[String]) {
        let config = self.path("agent.toml");
        std::fs::write(&config, format!("[commands]\n{commands_toml}\n")).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("agent-state.log"))
            .unwrap();
        let mut agent = std::process::Command::new(agent_bin());
        for url in urls {
            agent.args(["--url", url]);
        }
        agent
            .args(["--hostname", host, "--state-dir"])
            .arg(self.path("agent-state"))
            .arg("--config")
            .arg(&config)
            .env("NIXDECK_TOKEN", token)
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(log);
        self.agent = Some(agent.spawn().expect("starting nixdeck-agent"));
    }

    fn logs(&self) -> String {
        let agent = std::fs::read_to_string(self.path("agent-state.log")).unwrap_or_default();
        format!(
            "--- A\n{}\n--- B\n{}\n--- agent\n{agent}",
            self.a.log(),
            self.b.log()
        )
    }
}

impl Drop for Replicas {
    fn drop(&mut self) {
        if let Some(mut agent) = self.agent.take() {
            kill_child(&mut agent, "-KILL");
        }
        // A command's supervisor outlives its agent by design; a test's must not.
        let commands = self.path("agent-state").join("commands");
        for entry in std::fs::read_dir(commands).into_iter().flatten().flatten() {
            if let Ok(pid) = std::fs::read_to_string(entry.path().join("pid")) {
                let _ = std::process::Command::new("kill")
                    .args(["-TERM", pid.trim()])
                    .status();
            }
        }
    }
}

/// `sh -c SCRIPT` as a TOML argv array, under `name`.
fn sh(name: &str, script: &str) -> String {
    let quoted = script.replace('\\', "\\\\").replace('"', "\\\"");
    format!("{name} = [\"sh\", \"-c\", \"{quoted}\"]")
}

async fn run(server: &Server, admin: &Session, host: &str, command: &str) -> String {
    let r = admin
        .post(server, &format!("/api/hosts/{host}/commands"))
        .json(&json!({ "command": command }))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 202, "{body}");
    body["command_id"].as_str().unwrap().to_owned()
}

/// The command's output lines as one browser got them, until its completion: (seq,
/// line) in arrival order, and the completion's status.
async fn browser_log(
    ws: &mut Ws,
    command_id: &str,
    within: Duration,
) -> (Vec<(u64, String)>, String) {
    let deadline = Instant::now() + within;
    let mut lines = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no completion within {within:?}; {} lines",
            lines.len()
        );
        let v = next_json(ws, left).await;
        let p = &v["payload"];
        if p["command_id"] != command_id {
            continue;
        }
        match v["type"].as_str().unwrap() {
            "command_output" => lines.push((
                p["seq"].as_u64().unwrap(),
                p["line"].as_str().unwrap().to_owned(),
            )),
            "command_complete" => return (lines, p["status"].as_str().unwrap().to_owned()),
            _ => {}
        }
    }
}

/// The stored log's lines, without their clock (`[HH:MM:SS] `).
async fn stored_log(server: &Server, admin: &Session, command_id: &str) -> Vec<String> {
    let r = admin
        .http
        .get(server.url(&format!("/api/commands/{command_id}/log")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    text.lines().map(|l| l[11..].to_owned()).collect()
}

fn numbered(n: u64) -> Vec<String> {
    (1..=n).map(|i| format!("line {i}")).collect()
}

fn assert_once_in_order(lines: &[(u64, String)], n: u64, logs: impl Fn() -> String) {
    let seqs: Vec<u64> = lines.iter().map(|(seq, _)| *seq).collect();
    let text: Vec<String> = lines.iter().map(|(_, l)| l.clone()).collect();
    if text != numbered(n) {
        let doubled = seqs.windows(2).filter(|w| w[1] <= w[0]).count();
        let missing = (1..=n).filter(|s| !seqs.contains(s)).count();
        panic!(
            "the browser got {} lines, {doubled} out of order or repeated, {missing} missing \
             (first seqs {:?}, last {:?})\n{}",
            lines.len(),
            &seqs[..seqs.len().min(5)],
            &seqs[seqs.len().saturating_sub(5)..],
            logs()
        );
    }
}

const HUNDREDS: &str = "i=1; while [ $i -le 300 ]; do echo \"line $i\"; i=$((i+1)); done";

/// B shows A's agent (its heartbeats), runs a command on it through B's REST API, and
/// B's browser gets the whole output in order, then the completion.
#[tokio::test]
async fn a_browser_on_b_sees_and_drives_an_agent_on_a() {
    let Some(mut r) = Replicas::start().await else {
        return;
    };
    let admin_b = login(&r.b).await;
    // Made on B, so A hears of the new host over the bus before its agent comes.
    let token = create_host(&r.b, &admin_b, "web-a").await;
    let mut browser = browser_socket(&r.b, &admin_b).await;
    assert_eq!(
        next_json(&mut browser, Duration::from_secs(5)).await["type"],
        "snapshot"
    );
    let urls = [r.a.url("")];
    r.start_agent("web-a", &token, &sh("test", HUNDREDS), &urls);

    // A's heartbeats at B's browser, one a second.
    let first = wait_for(
        &mut browser,
        "host_heartbeat",
        "web-a",
        Duration::from_secs(20),
    )
    .await;
    let second = wait_for(
        &mut browser,
        "host_heartbeat",
        "web-a",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(first["payload"]["online"], true);
    assert!(
        second["payload"]["last_seen"].as_i64() >= first["payload"]["last_seen"].as_i64(),
        "{first} then {second}"
    );
    assert!(r.a.log().contains("agent connected"), "the agent is on A");
    assert!(!r.b.log().contains("agent connected"), "and not on B");
    // B's REST API sees it online too.
    let hosts: Value = admin_b
        .http
        .get(r.b.url("/api/hosts"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(hosts[0]["online"], true, "{hosts}");

    let id = run(&r.b, &admin_b, "web-a", "test").await;
    let (lines, status) = browser_log(&mut browser, &id, Duration::from_secs(30)).await;
    assert_eq!(status, "ok", "{}", r.logs());
    assert_once_in_order(&lines, 300, || r.logs());
    assert_eq!(stored_log(&r.b, &admin_b, &id).await, numbered(300));
    // The order went to A (the owner), which reserved the host and sent it.
    assert!(r.a.log().contains("command sent"), "{}", r.logs());

    // A second command while the first runs is refused by the owner, as on one server.
    let slow = run(&r.b, &admin_b, "web-a", "test").await;
    let busy = admin_b
        .post(&r.b, "/api/hosts/web-a/commands")
        .json(&json!({ "command": "test" }))
        .send()
        .await
        .unwrap();
    let code = busy.status().as_u16();
    let body: Value = busy.json().await.unwrap();
    assert!(code == 409 && (body["code"] == "busy"), "{code} {body}");
    let (_, status) = browser_log(&mut browser, &slow, Duration::from_secs(30)).await;
    assert_eq!(status, "ok");

    // An edit made on B reaches the owner, A, which publishes the host to every replica.
    let r_edit = admin_b
        .http
        .patch(r.b.url("/api/hosts/web-a"))
        .header("X-CSRF-Token", &admin_b.csrf)
        .json(&json!({ "location": "rack 9" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r_edit.status(), 200);
    loop {
        let v = wait_for(
            &mut browser,
            "host_updated",
            "web-a",
            Duration::from_secs(10),
        )
        .await;
        if v["payload"]["host"]["location"] == "rack 9" {
            assert_eq!(v["payload"]["host"]["online"], true, "{v}");
            break;
        }
    }
    let admin_a = login(&r.a).await;
    let on_a: Value = admin_a
        .http
        .get(r.a.url("/api/hosts"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(on_a[0]["location"], "rack 9", "{on_a}");

    // A token rotated on B closes the agent's socket on A: the host goes offline.
    let rotated = admin_b
        .post(&r.b, "/api/hosts/web-a/token")
        .send()
        .await
        .unwrap();
    assert_eq!(rotated.status(), 200);
    wait_for(
        &mut browser,
        "host_offline",
        "web-a",
        Duration::from_secs(10),
    )
    .await;
}

/// Numbered lines, about a thousand a second, without pauses: when the kill lands, the
/// owner has lines stored (and acked to the agent) that it has not yet put on the bus,
/// which the new owner must republish.
const SLOW: u64 = 5_000;
const SLOW_LINES: &str = "i=1; while [ $i -le 5000 ]; do echo \"line $i\"; if [ $((i % 20)) -eq 0 ]; then sleep 0.02; fi; i=$((i+1)); done";

/// kill -9 of the replica that holds the agent, mid-command: the agent moves to B (it was
/// given both URLs), the command completes, and the stored log and B's browser both hold
/// lines 1..N once each, in order.
#[tokio::test]
async fn kill_9_of_the_owner_mid_command_loses_and_doubles_nothing() {
    let Some(mut r) = Replicas::start().await else {
        return;
    };
    let admin_b = login(&r.b).await;
    let token = create_host(&r.b, &admin_b, "web-f").await;
    let mut browser = browser_socket(&r.b, &admin_b).await;
    assert_eq!(
        next_json(&mut browser, Duration::from_secs(5)).await["type"],
        "snapshot"
    );
    let urls = [r.a.url(""), r.b.url("")];
    r.start_agent("web-f", &token, &sh("test", SLOW_LINES), &urls);
    wait_for(
        &mut browser,
        "host_heartbeat",
        "web-f",
        Duration::from_secs(20),
    )
    .await;
    assert!(
        r.a.log().contains("agent connected"),
        "the agent is on A first"
    );

    let id = run(&r.b, &admin_b, "web-f", "test").await;
    // Read until some hundreds of lines have arrived at B's browser, then kill A.
    let mut lines = Vec::new();
    while lines.len() < 1_500 {
        let v = next_json(&mut browser, Duration::from_secs(20)).await;
        if v["type"] == "command_output" && v["payload"]["command_id"] == id.as_str() {
            let p = &v["payload"];
            lines.push((
                p["seq"].as_u64().unwrap(),
                p["line"].as_str().unwrap().to_owned(),
            ));
        }
    }
    let mut a_child = r.a.take_child().unwrap();
    kill_child(&mut a_child, "-KILL");
    let _ = a_child.wait();

    let (rest, status) = browser_log(&mut browser, &id, Duration::from_secs(120)).await;
    lines.extend(rest);
    assert_eq!(status, "ok", "{}", r.logs());
    assert!(
        r.b.log().contains("agent connected"),
        "the agent moved to B\n{}",
        r.logs()
    );
    assert_once_in_order(&lines, SLOW, || r.logs());
    assert_eq!(
        stored_log(&r.b, &admin_b, &id).await,
        numbered(SLOW),
        "{}",
        r.logs()
    );

    // The host stays usable from B, now its owner.
    let next = run(&r.b, &admin_b, "web-f", "test").await;
    let (lines, status) = browser_log(&mut browser, &next, Duration::from_secs(60)).await;
    assert_eq!(status, "ok");
    assert_once_in_order(&lines, SLOW, || r.logs());
}

/// A replica that dies with agents that cannot move (they know only its URL): its lease
/// lapses, and the other replica marks its hosts offline by itself, within the lease's
/// 10 s and a refresh or two.
#[tokio::test]
async fn a_dead_replicas_hosts_go_offline_when_its_lease_lapses() {
    let Some(mut r) = Replicas::start().await else {
        return;
    };
    let admin_b = login(&r.b).await;
    let token = create_host(&r.b, &admin_b, "web-l").await;
    let mut browser = browser_socket(&r.b, &admin_b).await;
    assert_eq!(
        next_json(&mut browser, Duration::from_secs(5)).await["type"],
        "snapshot"
    );
    let urls = [r.a.url("")];
    r.start_agent("web-l", &token, &sh("test", "true"), &urls);
    wait_for(
        &mut browser,
        "host_heartbeat",
        "web-l",
        Duration::from_secs(20),
    )
    .await;

    let mut a_child = r.a.take_child().unwrap();
    kill_child(&mut a_child, "-KILL");
    let _ = a_child.wait();
    let killed = Instant::now();
    // Heartbeats stop at once; the host shows offline once A's lease is 10 s old.
    wait_for(
        &mut browser,
        "host_offline",
        "web-l",
        Duration::from_secs(20),
    )
    .await;
    let after = killed.elapsed();
    assert!(
        after >= Duration::from_secs(7),
        "offline after {after:?}: before the lease could lapse"
    );
    // B logs it just after its browsers got the event.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !r.b.log().contains("replica's lease expired") {
        assert!(Instant::now() < deadline, "{}", r.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
