//! What the host page and the rows' sparklines read, against the real server and agent:
//! who started a command (`requested_by`, REST and server function), the end of a past
//! command's stored log (`/api/command_log_tail`), and the last hour of CPU for many rows
//! in one request (`/api/cpu_sparklines`), with their bad input.

mod common;

use common::{api_token, create_host, kill_child, login, spawn_agent_with, Server};
use serde_json::{json, Value};
use std::time::Duration;
use tokio::time::{sleep, Instant};

fn agent_config(dir: &std::path::Path) -> String {
    let path = dir.join("agent.toml");
    std::fs::write(
        &path,
        "[commands]\n\"test\" = [\"sh\", \"-c\", \"i=1; while [ $i -le 2500 ]; do echo line $i; i=$((i+1)); done; echo bad >&2; exit 4\"]\n",
    )
    .unwrap();
    path.display().to_string()
}

#[tokio::test]
async fn the_host_page_reads_who_ran_what_its_stored_log_and_the_rows_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let admin = login(&server).await;
    let token = create_host(&server, &admin, "web-1").await;
    create_host(&server, &admin, "web-2").await;
    let config = agent_config(dir.path());
    let mut agent = spawn_agent_with(
        &server,
        "web-1",
        &token,
        &dir.path().join("web"),
        &["--config", &config],
    );
    let viewer = api_token(&server, "viewer");
    let operator = api_token(&server, "operator");

    // Wait for the agent, then run a command that fails with exit code 4.
    let deadline = Instant::now() + Duration::from_secs(30);
    let command_id = loop {
        let resp = reqwest::Client::new()
            .post(server.url("/api/hosts/web-1/commands"))
            .bearer_auth(&operator)
            .json(&json!({"command": "test"}))
            .send()
            .await
            .unwrap();
        if resp.status() == 202 {
            break resp.json::<Value>().await.unwrap()["command_id"]
                .as_str()
                .unwrap()
                .to_owned();
        }
        assert!(Instant::now() < deadline, "agent never online");
        sleep(Duration::from_millis(200)).await;
    };
    let history = loop {
        let h = admin
            .get_json(&server, "/api/hosts/web-1/commands?limit=5")
            .await;
        if h[0]["status"] == "error" {
            break h;
        }
        assert!(Instant::now() < deadline, "command never ended: {h}");
        sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(history[0]["command_id"], command_id.as_str());
    assert_eq!(history[0]["exit_code"], 4);
    // The token's owner is who ran it (an API token's name is not a user).
    assert_eq!(history[0]["requested_by"], "admin", "{history}");
    let detail = admin
        .get_json(&server, &format!("/api/commands/{command_id}"))
        .await;
    assert_eq!(detail["requested_by"], "admin", "{detail}");

    // The stored log's end, as the download writes each line: the last 2 000 lines.
    let resp = admin
        .post(&server, "/api/command_log_tail")
        .form(&[("command_id", command_id.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let lines: Vec<String> = resp.json().await.unwrap();
    // 2 500 lines, "bad" on stderr and the agent's closing line: the last 2 000 start near
    // line 503 (stderr may be read ahead of stdout written before it).
    assert_eq!(lines.len(), 2_000);
    let first: u32 = lines[0]
        .rsplit_once("] line ")
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or_else(|| panic!("{}", lines[0]));
    assert!((500..=503).contains(&first), "{}", lines[0]);
    // The agent's closing line is on stderr, marked as in the download.
    assert!(
        lines[1_999].contains("exited with code 4"),
        "{}",
        lines[1_999]
    );
    assert_eq!(
        lines[1_999].get(9..17),
        Some("] [ERR] "),
        "{}",
        lines[1_999]
    );
    let resp = admin
        .post(&server, "/api/command_log_tail")
        .form(&[("command_id", "nocommand")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);

    // Sparklines: one request for many rows, 60 minutes each, the current minute last; a
    // host without heartbeats has none, an unknown one is left out.
    let deadline = Instant::now() + Duration::from_secs(20);
    let sparks = loop {
        let resp = admin
            .post(&server, "/api/cpu_sparklines")
            .json(&json!({"host_ids": ["web-1", "web-2", "nohost", "web-1"]}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let sparks: Value = resp.json().await.unwrap();
        if sparks[0]["cpu"][59].is_number() {
            break sparks;
        }
        assert!(Instant::now() < deadline, "no current minute: {sparks}");
        sleep(Duration::from_millis(300)).await;
    };
    let sparks = sparks.as_array().unwrap();
    assert_eq!(sparks.len(), 2, "{sparks:?}");
    assert_eq!(sparks[0]["host_id"], "web-1");
    assert_eq!(sparks[0]["cpu"].as_array().unwrap().len(), 60);
    assert!(sparks[0]["cpu"][59].as_u64().unwrap() <= 100);
    assert_eq!(sparks[1]["host_id"], "web-2");
    assert!(sparks[1]["cpu"]
        .as_array()
        .unwrap()
        .iter()
        .all(Value::is_null));
    // Too many hosts at once: a clear error.
    let many: Vec<String> = (0..201).map(|i| format!("h{i}")).collect();
    let resp = admin
        .post(&server, "/api/cpu_sparklines")
        .json(&json!({"host_ids": many}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    assert!(resp.text().await.unwrap().contains("at most 200 hosts"));
    // A viewer may read both.
    let resp = reqwest::Client::new()
        .post(server.url("/api/cpu_sparklines"))
        .bearer_auth(&viewer)
        .json(&json!({"host_ids": ["web-1"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    kill_child(&mut agent, "-KILL");
}
