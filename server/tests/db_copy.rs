//! `nixdeck db copy`: a dashboard that ran on SQLite (a user, an API token, an enrolled host
//! with its real agent, a command and its output, tags, audit entries) moves to PostgreSQL
//! with the real binary, and the server started there has it all and takes new rows.
//!
//! The test needs both databases, so it runs in the SQLite pass of `scripts/test.sh` only
//! (the source is always a SQLite file) and needs `NIXDECK_TEST_POSTGRES_URL` for the target.

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use testkit::client::Session;
use tokio::time::{sleep, Instant};

/// `nixdeck db copy ARGS`: (exit code, stdout, stderr).
fn db_copy(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_nixdeck"))
        .args(["db", "copy"])
        .args(args)
        .env_remove("NIXDECK_DATABASE_URL")
        .stdin(Stdio::null())
        .output()
        .expect("running nixdeck db copy");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn get(http: &reqwest::Client, server: &Server, path: &str) -> (u16, Value) {
    let r = http.get(server.url(path)).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn host(admin: &Session, server: &Server, id: &str) -> Value {
    let (status, hosts) = get(&admin.http, server, "/api/hosts").await;
    assert_eq!(status, 200, "{hosts}");
    hosts
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["id"] == id)
        .cloned()
        .unwrap_or(Value::Null)
}

async fn until_online(admin: &Session, server: &Server, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while host(admin, server, id).await["online"] != true {
        assert!(
            Instant::now() < deadline,
            "{id} not online\n{}",
            server.log()
        );
        sleep(Duration::from_millis(100)).await;
    }
}

/// Runs `command` on `id` and waits until it ended; its history record.
async fn run(admin: &Session, server: &Server, id: &str, command: &str) -> Value {
    let r = admin
        .post(server, &format!("/api/hosts/{id}/commands"))
        .json(&json!({ "command": command }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let command_id = r.json::<Value>().await.unwrap()["command_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let record = history(admin, server, id)
            .await
            .into_iter()
            .find(|c| c["command_id"] == command_id.as_str())
            .expect("the command is in the history");
        if !matches!(record["status"].as_str(), Some("queued" | "running")) {
            return record;
        }
        assert!(Instant::now() < deadline, "{record}\n{}", server.log());
        sleep(Duration::from_millis(100)).await;
    }
}

async fn history(admin: &Session, server: &Server, id: &str) -> Vec<Value> {
    let (status, list) = get(
        &admin.http,
        server,
        &format!("/api/hosts/{id}/commands?limit=50"),
    )
    .await;
    assert_eq!(status, 200, "{list}");
    list.as_array().unwrap().clone()
}

async fn log(admin: &Session, server: &Server, command_id: &str) -> String {
    let r = admin
        .http
        .get(server.url(&format!("/api/commands/{command_id}/log")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

/// Rows per table on the PostgreSQL database of the server in `dir`.
fn counts(dir: &Path) -> String {
    sql(
        dir,
        "SELECT (SELECT COUNT(*) FROM users) || ' ' || (SELECT COUNT(*) FROM hosts) || ' ' || \
         (SELECT COUNT(*) FROM commands) || ' ' || (SELECT COUNT(*) FROM command_output) || ' ' || \
         (SELECT COUNT(*) FROM api_tokens) || ' ' || (SELECT COUNT(*) FROM audit)",
    )
}

#[tokio::test]
async fn a_sqlite_dashboard_moves_to_postgres_with_its_data() {
    if skip_on_postgres("the copy reads a SQLite server's file itself; the SQLite pass runs it") {
        return;
    }
    let Some(nixdeck_core::storage::testing::TestBackend::Postgres(pg)) =
        nixdeck_core::storage::testing::TestBackend::postgres()
    else {
        return;
    };

    // A dashboard on SQLite, used: a host enrolled with its agent, tagged, a command run.
    let old_dir = tempfile::tempdir().unwrap();
    let mut old = Server::start(old_dir.path()).await;
    let admin = login(&old).await;
    let host_token = create_host(&old, &admin, "web-1").await;
    let config = old_dir.path().join("agent.toml");
    std::fs::write(
        &config,
        "[commands]\ntest = [\"sh\", \"-c\", \"echo moved along; echo on stderr >&2\"]\n",
    )
    .unwrap();
    let agent_args = ["--config", config.to_str().unwrap(), "--tags", "web"];
    let state = old_dir.path().join("agent-state");
    let mut agent = spawn_agent_with(&old, "web-1", &host_token, &state, &agent_args);
    until_online(&admin, &old, "web-1").await;
    let r = admin
        .http
        .patch(old.url("/api/hosts/web-1"))
        .header("X-CSRF-Token", &admin.csrf)
        .json(&json!({"tags": ["eu-west"], "location": "rack 2"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let ran = run(&admin, &old, "web-1", "test").await;
    assert_eq!(ran["status"], "ok", "{ran}");
    let command_id = ran["command_id"].as_str().unwrap().to_owned();
    let api_token = api_token(&old, "operator");
    let (status, audit_before) = get(&admin.http, &old, "/api/audit?limit=500").await;
    assert_eq!(status, 200);
    let audit_before = audit_before.as_array().unwrap().len();
    assert!(audit_before >= 2, "a login and a token at least");

    let source = old_dir.path().join("test.db");
    let source = source.to_str().unwrap();
    let target = nixdeck_core::storage::testing::fresh_postgres_database(&pg)
        .await
        .unwrap();

    // Refused while the dashboard runs, and for the wrong kinds of database.
    let (code, _, err) = db_copy(&["--from", source, "--to", &target]);
    assert_ne!(code, 0);
    assert!(err.contains("a dashboard is running on"), "{err}");
    let (code, _, err) = db_copy(&["--from", &target, "--to", &target]);
    assert_ne!(code, 0);
    assert!(
        err.contains("the source must be a SQLite database"),
        "{err}"
    );
    let (code, _, err) = db_copy(&["--from", source, "--to", "sqlite://elsewhere.db"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("the target must be a PostgreSQL database"),
        "{err}"
    );

    kill_child(&mut agent, "-TERM");
    old.stop();
    let (code, out, err) = db_copy(&["--from", source, "--to", &target]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("  command_output: 2 rows"), "{err}");
    assert!(err.contains("sequence public.audit_id_seq: next"), "{err}");
    assert!(out.contains("the row counts of every table match"), "{out}");
    assert!(
        out.contains(&format!(
            "NIXDECK_SECRET_KEY_FILE={}",
            old_dir.path().join("secret.key").display()
        )),
        "{out}"
    );

    // The same dashboard on PostgreSQL, with the SQLite one's key.
    let new_dir = tempfile::tempdir().unwrap();
    std::fs::write(new_dir.path().join("database-url"), &target).unwrap();
    let key = old_dir.path().join("secret.key");
    let mut new = Server::start_with(
        new_dir.path(),
        free_port(),
        &[("NIXDECK_SECRET_KEY_FILE", key.to_str().unwrap())],
    )
    .await;

    // The session from before still works (its cookie goes to the same host), a new login
    // too, and so does the API token.
    let (status, _) = get(&admin.http, &new, "/api/hosts").await;
    assert_eq!(status, 200, "the session was copied");
    let admin = login(&new).await;
    let bearer = reqwest::Client::new();
    let r = bearer
        .get(new.url("/api/hosts"))
        .bearer_auth(&api_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the API token was copied");

    // The host, its tags and its command with output.
    let h = host(&admin, &new, "web-1").await;
    assert_eq!(h["location"], "rack 2", "{h}");
    let tags: Vec<&str> = h["tags"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(tags, ["eu-west", "web"], "{h}");
    let old_record = history(&admin, &new, "web-1")
        .await
        .into_iter()
        .find(|c| c["command_id"] == command_id.as_str())
        .expect("the command was copied");
    assert_eq!(old_record["status"], "ok");
    assert_eq!(old_record["line_count"], 2);
    let text = log(&admin, &new, &command_id).await;
    assert!(
        text.contains("moved along") && text.contains("[ERR] on stderr"),
        "{text}"
    );

    // New rows: the agent comes back with its host token, a command runs, the audit log
    // numbers new entries after the copied ones (a sequence left at 1 would collide).
    let mut agent = spawn_agent_with(&new, "web-1", &host_token, &state, &agent_args);
    until_online(&admin, &new, "web-1").await;
    let second = run(&admin, &new, "web-1", "test").await;
    assert_eq!(second["status"], "ok", "{second}");
    assert_eq!(history(&admin, &new, "web-1").await.len(), 2);
    let (status, audit) = get(&admin.http, &new, "/api/audit?limit=500").await;
    assert_eq!(status, 200);
    let audit = audit.as_array().unwrap();
    assert!(
        audit.len() > audit_before,
        "{} entries after the move, {audit_before} before",
        audit.len()
    );

    // A second copy into the database, now in use, is refused and changes nothing.
    kill_child(&mut agent, "-TERM");
    new.stop();
    let before = counts(new_dir.path());
    let (code, out, err) = db_copy(&["--from", source, "--to", &target]);
    assert_ne!(code, 0, "{out}");
    assert!(
        err.contains("the target already holds data (users: 1, "),
        "{err}"
    );
    assert!(err.contains("Nothing was written"), "{err}");
    assert_eq!(counts(new_dir.path()), before);
}
