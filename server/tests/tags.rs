//! Host tags against the real server and agent: the agent reports its `--tags`, an operator
//! edits a host (`PATCH /api/hosts/{id}`) and every open page sees it, both kinds of tag
//! survive restarts of either side, bulk runs select by tag, and bad edits get clear errors.

mod common;

use common::{browser_socket, create_host, kill_child, login, spawn_agent_with, wait_for, Server};
use serde_json::{json, Value};
use std::time::Duration;
use tokio::time::{sleep, Instant};

async fn hosts(admin: &common::Admin, server: &Server) -> Vec<Value> {
    admin
        .get_json(server, "/api/hosts")
        .await
        .as_array()
        .unwrap()
        .clone()
}

/// Polls `GET /api/hosts` until `host` satisfies `ok`, within 20 s.
async fn host_until(
    admin: &common::Admin,
    server: &Server,
    host: &str,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found = hosts(admin, server)
            .await
            .into_iter()
            .find(|h| h["id"] == host);
        if let Some(h) = found.filter(|h| ok(h)) {
            return h;
        }
        assert!(Instant::now() < deadline, "{host} never got there");
        sleep(Duration::from_millis(100)).await;
    }
}

async fn patch(admin: &common::Admin, server: &Server, host: &str, body: Value) -> (u16, Value) {
    let resp = admin
        .http
        .patch(server.url(&format!("/api/hosts/{host}")))
        .header("X-CSRF-Token", &admin.csrf)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn tags_come_from_the_agent_and_the_page_and_select_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let mut server = Server::start_on(dir.path(), port).await;
    let admin = login(&server).await;
    let web = create_host(&server, &admin, "web-1").await;
    let db = create_host(&server, &admin, "db-1").await;
    let mut web_agent = spawn_agent_with(
        &server,
        "web-1",
        &web,
        &dir.path().join("web"),
        &["--tags", "web,canary"],
    );
    let mut db_agent = spawn_agent_with(&server, "db-1", &db, &dir.path().join("db"), &[]);

    // The agent's tags arrive with its registration.
    let h = host_until(&admin, &server, "web-1", |h| h["online"] == true).await;
    assert_eq!(strings(&h["tags"]), ["canary", "web"]);
    assert_eq!(strings(&h["agent_tags"]), ["canary", "web"]);
    host_until(&admin, &server, "db-1", |h| h["online"] == true).await;

    // An operator's edit: answered with the host, and seen live by an open page.
    let mut page = browser_socket(&server, &admin).await;
    let (status, h) = patch(
        &admin,
        &server,
        "web-1",
        json!({"tags": ["eu-west", "db.primary", "eu-west"], "location": "rack 2"}),
    )
    .await;
    assert_eq!(status, 200, "{h}");
    assert_eq!(
        strings(&h["tags"]),
        ["canary", "db.primary", "eu-west", "web"]
    );
    assert_eq!(strings(&h["agent_tags"]), ["canary", "web"]);
    assert_eq!(h["location"], "rack 2");
    let seen = wait_for(&mut page, "host_updated", "web-1", Duration::from_secs(5)).await;
    assert_eq!(
        strings(&seen["payload"]["host"]["tags"]),
        ["canary", "db.primary", "eu-west", "web"]
    );
    // Fields not named stay; a null clears.
    let (status, h) = patch(&admin, &server, "web-1", json!({"device_type": "server"})).await;
    assert_eq!(status, 200, "{h}");
    assert_eq!(h["location"], "rack 2");
    let (_, h) = patch(&admin, &server, "web-1", json!({"location": null})).await;
    assert_eq!(h["location"], Value::Null);
    assert_eq!(h["device_type"], "server");
    assert_eq!(strings(&h["tags"]).len(), 4);

    // Bad edits: a clear 4xx each, and nothing changed.
    let many: Vec<String> = (0..10_000).map(|i| format!("t{i}")).collect();
    let thirty_three: Vec<String> = (0..33).map(|i| format!("t{i}")).collect();
    for (body, want, says) in [
        (json!({"tags": ["Bad Tag"]}), 422, "Invalid tag"),
        (json!({"tags": ["a/b"]}), 422, "Invalid tag"),
        (json!({"tags": many}), 422, "at most 32 tags"),
        (json!({"tags": thirty_three}), 422, "at most 32 tags"),
        (json!({"theme_color": "red"}), 422, "#rrggbb"),
        (json!({"location": "x".repeat(65)}), 422, "location"),
        (json!({"owner": "me"}), 422, "owner"),
    ] {
        let (status, answer) = patch(&admin, &server, "web-1", body.clone()).await;
        assert_eq!(status, want, "{body}: {answer}");
        assert!(answer.to_string().contains(says), "{body}: {answer}");
    }
    let (status, _) = patch(&admin, &server, "nohost", json!({"tags": ["web"]})).await;
    assert_eq!(status, 404);
    let h = host_until(&admin, &server, "web-1", |_| true).await;
    assert_eq!(
        strings(&h["tags"]),
        ["canary", "db.primary", "eu-west", "web"]
    );

    // Bulk by tag: only the tagged hosts; a tag nobody carries or both selectors is an error.
    let bulk = |body: Value| {
        let (admin, server) = (&admin, &server);
        async move {
            let resp = admin
                .post(server, "/api/bulk")
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap())
        }
    };
    let (status, answer) = bulk(json!({"command": "pull", "tags": ["eu-west"]})).await;
    assert_eq!(status, 200, "{answer}");
    let targeted: Vec<&str> = answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["host_id"].as_str())
        .collect();
    assert_eq!(targeted, ["web-1"]);
    let (status, answer) = bulk(json!({"command": "pull", "tags": ["nobody"]})).await;
    assert_eq!(status, 409, "{answer}");
    let (status, answer) =
        bulk(json!({"command": "pull", "tags": ["web"], "host_ids": ["db-1"]})).await;
    assert_eq!(status, 422, "{answer}");

    // The edit is audited.
    let rows = admin.get_json(&server, "/api/audit?action=host.edit").await;
    assert!(rows.as_array().unwrap().len() >= 3, "{rows}");

    // A restart of the dashboard keeps both kinds of tag, before the agent is back.
    kill_child(&mut web_agent, "-KILL");
    server.stop();
    let server = Server::start_on(dir.path(), port).await;
    let admin = login(&server).await;
    let h = host_until(&admin, &server, "web-1", |_| true).await;
    assert_eq!(
        strings(&h["tags"]),
        ["canary", "db.primary", "eu-west", "web"]
    );

    // The agent's tags change in its configuration: its old ones go, the dashboard's stay.
    let mut web_agent = spawn_agent_with(
        &server,
        "web-1",
        &web,
        &dir.path().join("web"),
        &["--tags", "web,eu-west"],
    );
    let h = host_until(&admin, &server, "web-1", |h| {
        h["online"] == true && strings(&h["agent_tags"]) == ["eu-west", "web"]
    })
    .await;
    assert_eq!(strings(&h["tags"]), ["db.primary", "eu-west", "web"]);
    kill_child(&mut web_agent, "-KILL");
    kill_child(&mut db_agent, "-KILL");
}

/// An agent refuses a bad `--tags` at start, naming it, rather than connect without it.
#[test]
fn the_agent_refuses_a_bad_tag_at_start() {
    let out = std::process::Command::new(common::agent_bin())
        .args(["--url", "http://127.0.0.1:9", "--tags", "web,Not OK"])
        .env("NIXDECK_TOKEN", "t")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`Not OK` is not a tag"), "{err}");
}
