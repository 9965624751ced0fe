//! Nix-native results end to end: the real server, and agent links played by the test
//! (the frames an agent that switches with Nix sends), so every result is exactly known.

mod common;

use common::*;
use futures::SinkExt;
use serde_json::{json, Value};
use std::time::Duration;
use testkit::client::Session;
use testkit::fixtures::heartbeat;
use tokio_tungstenite::tungstenite::Message;

const PATH: &str = "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-web-1-26.05";

fn generations(numbers: &[u64], current: u64) -> Value {
    numbers
        .iter()
        .map(|n| {
            json!({"number": n, "created_at": "2026-12-01T00:00:00Z",
                "store_path": format!("/nix/store/g{n}-nixos-system"), "current": *n == current,
                "booted": *n == current})
        })
        .collect()
}

async fn send(ws: &mut Ws, frame: Value) {
    ws.send(Message::text(frame.to_string())).await.unwrap();
}

/// The next `command` order the agent gets (heartbeats first, so the link stays up).
async fn order(ws: &mut Ws) -> Value {
    send(ws, serde_json::from_str(&heartbeat(1.0, 0.1)).unwrap()).await;
    loop {
        let v = next_json(ws, Duration::from_secs(5)).await;
        if v["type"] == "command" {
            return v["payload"].clone();
        }
    }
}

/// The agent's completion, once the server acked it as complete (stored, host freed).
async fn complete(ws: &mut Ws, command_id: &str, status: &str, result: Value) {
    send(
        ws,
        json!({"type": "command_complete", "payload": {"command_id": command_id,
            "status": status, "exit_code": 0, "duration_ms": 10, "last_seq": 0, "result": result}}),
    )
    .await;
    loop {
        let v = next_json(ws, Duration::from_secs(5)).await;
        if v["type"] == "ack" && v["payload"]["command_id"] == command_id {
            assert_eq!(v["payload"]["complete"], true, "{v}");
            return;
        }
    }
}

/// POST a command; the status and body.
async fn run(server: &Server, admin: &Session, host: &str, body: Value) -> (u16, Value) {
    let r = admin
        .post(server, &format!("/api/hosts/{host}/commands"))
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn accepted(server: &Server, admin: &Session, host: &str, body: Value) -> String {
    let (status, reply) = run(server, admin, host, body).await;
    assert_eq!(status, 202, "{reply}");
    reply["command_id"].as_str().unwrap().to_owned()
}

async fn host(server: &Server, admin: &Session, id: &str) -> Value {
    let hosts = admin.get_json(server, "/api/hosts").await;
    hosts
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["id"] == id)
        .cloned()
        .unwrap()
}

#[tokio::test]
async fn previews_rollbacks_and_generations_reach_the_api_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server = Server::start_on(dir.path(), port).await;
    let admin = login(&server).await;
    let token = create_host(&server, &admin, "web-1").await;
    let other_token = create_host(&server, &admin, "web-2").await;
    let mut a = agent_socket(&server, &token).await.unwrap();
    send(
        &mut a,
        json!({"type": "register", "payload": {"hostname": "web-1", "host_type": "nixos",
            "agent_version": "0.1.0", "heartbeat_interval_s": 1,
            "generations": generations(&[41, 42], 42), "reboot_needed": true}}),
    )
    .await;
    assert_eq!(
        next_json(&mut a, Duration::from_secs(5)).await["type"],
        "registered"
    );
    let mut b = registered_agent(&server, &other_token, "web-2").await;
    let h = host(&server, &admin, "web-1").await;
    assert_eq!(h["generations"], generations(&[41, 42], 42), "{h:#}");
    assert_eq!(h["reboot_needed"], true);

    // A preview's result is stored and returned.
    let preview = accepted(&server, &admin, "web-1", json!({"command": "preview"})).await;
    let sent = order(&mut a).await;
    assert_eq!(sent["command"], "preview");
    let diff = json!({"changes": [{"name": "openssl", "old": "3.0.14", "new": "3.0.15", "kind": "upgraded"}],
        "closure_bytes_before": 10, "closure_bytes_after": 12, "reboot_needed": false});
    complete(
        &mut a,
        &preview,
        "ok",
        json!({"diff": diff, "store_path": PATH}),
    )
    .await;
    let detail = admin
        .get_json(&server, &format!("/api/commands/{preview}"))
        .await;
    assert_eq!(detail["status"], "ok", "{detail:#}");
    assert_eq!(detail["command"], "preview");
    assert_eq!(detail["host_id"], "web-1");
    assert_eq!(detail["result"]["store_path"], PATH);
    assert_eq!(detail["result"]["diff"], diff);
    let unknown = admin
        .http
        .get(server.url("/api/commands/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);

    // A switch from it carries the preview's store path to the agent; it is rolled back.
    let switch = accepted(
        &server,
        &admin,
        "web-1",
        json!({"command": "switch", "preview_id": preview}),
    )
    .await;
    let sent = order(&mut a).await;
    assert_eq!(
        (&sent["command"], &sent["store_path"]),
        (&json!("switch"), &json!(PATH))
    );
    complete(&mut a, &switch, "rolled_back", json!({"generation": 42})).await;
    let detail = admin
        .get_json(&server, &format!("/api/commands/{switch}"))
        .await;
    assert_eq!(detail["status"], "rolled_back", "{detail:#}");
    assert_eq!(detail["result"]["generation"], 42);
    let history = admin
        .get_json(&server, "/api/hosts/web-1/commands?limit=1")
        .await;
    assert_eq!(history[0]["status"], "rolled_back", "{history:#}");
    let h = host(&server, &admin, "web-1").await;
    assert_eq!(h["pending_command"], Value::Null, "the host is free: {h:#}");
    assert_eq!(h["update_status"]["system"]["status"], "error", "{h:#}");
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("nixdeck_commands_ended_total{status=\"rolled_back\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("nixdeck_command_failures_total 1"),
        "{metrics}"
    );

    // A preview applies to its own host only, and only once it ended ok.
    let (status, reply) = run(
        &server,
        &admin,
        "web-2",
        json!({"command": "switch", "preview_id": preview}),
    )
    .await;
    assert_eq!(
        (status, reply["code"].as_str()),
        (422, Some("invalid")),
        "{reply}"
    );
    let failed = accepted(&server, &admin, "web-2", json!({"command": "preview"})).await;
    let _ = order(&mut b).await;
    complete(&mut b, &failed, "error", Value::Null).await;
    let (status, reply) = run(
        &server,
        &admin,
        "web-2",
        json!({"command": "boot", "preview_id": failed}),
    )
    .await;
    assert_eq!(status, 422, "{reply}");
    assert!(
        reply["error"].as_str().unwrap().contains("ended error"),
        "{reply}"
    );
    let (status, _) = run(
        &server,
        &admin,
        "web-1",
        json!({"command": "switch", "preview_id": "no-such-command"}),
    )
    .await;
    assert_eq!(status, 404);

    // A generation goes with rollback only.
    let (status, reply) = run(
        &server,
        &admin,
        "web-1",
        json!({"command": "pull", "generation": 41}),
    )
    .await;
    assert_eq!(
        (status, reply["code"].as_str()),
        (422, Some("invalid")),
        "{reply}"
    );
    let rollback = accepted(
        &server,
        &admin,
        "web-1",
        json!({"command": "rollback", "generation": 41}),
    )
    .await;
    let sent = order(&mut a).await;
    assert_eq!(
        (&sent["command"], &sent["generation"]),
        (&json!("rollback"), &json!(41))
    );
    complete(&mut a, &rollback, "ok", json!({"generation": 41})).await;

    // The status after it reports the generations; they are live and stored.
    send(
        &mut a,
        json!({"type": "status", "payload": {"checks": {},
            "generations": generations(&[41, 42, 43], 41), "reboot_needed": false}}),
    )
    .await;
    let mut live = None;
    for _ in 0..50 {
        let h = host(&server, &admin, "web-1").await;
        if h["generations"] == generations(&[41, 42, 43], 41) {
            live = Some(h);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let live = live.expect("the status's generations in GET /api/hosts");
    assert_eq!(live["reboot_needed"], false);

    drop((a, b));
    server.stop();
    let server = Server::start_on(dir.path(), port).await;
    let admin = login(&server).await;
    let h = host(&server, &admin, "web-1").await;
    assert_eq!(h["generations"], generations(&[41, 42, 43], 41), "{h:#}");
    assert_eq!(h["reboot_needed"], false);
    let detail = admin
        .get_json(&server, &format!("/api/commands/{preview}"))
        .await;
    assert_eq!(detail["result"]["store_path"], PATH);
}
