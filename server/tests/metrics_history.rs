//! The metrics history against the real server and agent: heartbeats become points with
//! every figure (the root disk's usage included), bad ranges and unknown hosts get clear
//! errors, a viewer may read, a restart keeps every point and a removed host's history
//! goes with it.

mod common;

use common::{api_token, create_host, kill_child, login, spawn_agent, Server};
use serde_json::Value;
use std::time::Duration;
use tokio::time::{sleep, Instant};

async fn get(server: &Server, token: &str, path: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .get(server.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn points(history: &Value) -> &Vec<Value> {
    history["points"].as_array().expect("points")
}

#[tokio::test]
async fn heartbeats_become_history_that_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let mut server = Server::start_on(dir.path(), port).await;
    let admin = login(&server).await;
    let token = create_host(&server, &admin, "web-1").await;
    let mut agent = spawn_agent(&server, "web-1", &token, &dir.path().join("web"));
    let viewer = api_token(&server, "viewer");

    // Heartbeats every second: the current minute's point shows before it is written.
    let deadline = Instant::now() + Duration::from_secs(30);
    let history = loop {
        let (status, body) = get(&server, &viewer, "/api/hosts/web-1/metrics?range=1h").await;
        assert_eq!(status, 200, "{body}");
        let n = points(&body).len();
        if n > 0 && body["points"][n - 1]["disk"].is_number() {
            break body;
        }
        assert!(Instant::now() < deadline, "no points: {body}");
        sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(history["range"], "1h");
    assert_eq!(history["step_s"], 60);
    let last = points(&history).last().unwrap().clone();
    for field in ["cpu", "ram", "swap", "load", "disk"] {
        let v = last[field]
            .as_f64()
            .unwrap_or_else(|| panic!("{field}: {last}"));
        assert!(v >= 0.0, "{field}: {last}");
    }
    assert!(last["ram"].as_f64().unwrap() > 0.0, "{last}");
    assert!(last["disk"].as_f64().unwrap() <= 100.0, "{last}");
    assert!(last["t"].as_str().unwrap().ends_with(":00Z"), "{last}");
    for range in ["24h", "7d", "30d", "1y"] {
        let (status, body) = get(
            &server,
            &viewer,
            &format!("/api/hosts/web-1/metrics?range={range}"),
        )
        .await;
        assert_eq!(status, 200, "{range}: {body}");
        // One bucket, or two when the test runs across a step's boundary.
        assert!((1..=2).contains(&points(&body).len()), "{range}: {body}");
    }

    // Bad input: a clear 422, and 404 for a host that does not exist.
    for path in [
        "/api/hosts/web-1/metrics?range=5y",
        "/api/hosts/web-1/metrics?range=",
        "/api/hosts/web-1/metrics",
        "/api/hosts/web-1/metrics?range=99999999999999999999d",
    ] {
        let (status, body) = get(&server, &viewer, path).await;
        assert_eq!(status, 422, "{path}: {body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("1h, 24h, 7d, 30d or 1y"),
            "{path}: {body}"
        );
    }
    let (status, _) = get(&server, &viewer, "/api/hosts/nohost/metrics?range=1h").await;
    assert_eq!(status, 404);

    // A restart keeps every point, the unfinished minute included (written at shutdown).
    kill_child(&mut agent, "-KILL");
    sleep(Duration::from_millis(500)).await;
    let (_, before) = get(&server, &viewer, "/api/hosts/web-1/metrics?range=1h").await;
    assert!(!points(&before).is_empty());
    server.stop();
    let server = Server::start_on(dir.path(), port).await;
    let (status, after) = get(&server, &viewer, "/api/hosts/web-1/metrics?range=1h").await;
    assert_eq!(status, 200, "{after}");
    assert_eq!(after, before);

    // A removed host's history is gone with it.
    let admin = login(&server).await;
    let resp = admin
        .delete(&server, "/api/hosts/web-1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let (status, _) = get(&server, &viewer, "/api/hosts/web-1/metrics?range=1h").await;
    assert_eq!(status, 404);
}
