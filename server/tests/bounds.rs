//! Bounds on what one party may make the server hold or show, against the real server: a
//! user's browser sockets, and the text an agent reports when it registers.

mod common;

use common::*;
use futures::SinkExt;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::time::{sleep, Instant};
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// A user has at most `NIXDECK_MAX_SOCKETS_PER_USER` browser sockets, whatever the session:
/// the next one is answered 429 with the contract's error body before the upgrade, and a
/// socket that closes frees its seat.
#[tokio::test]
async fn a_users_sockets_past_the_cap_get_429_until_one_closes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        dir.path(),
        free_port(),
        &[("NIXDECK_MAX_SOCKETS_PER_USER", "2")],
    )
    .await;
    let first_login = login(&server).await;
    let second_login = login(&server).await;
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut ws = browser_socket(&server, &first_login).await;
        assert_eq!(
            next_json(&mut ws, Duration::from_secs(5)).await["type"],
            "snapshot"
        );
        open.push(ws);
    }
    let attempt = || {
        let mut req = server.ws("/ws").into_client_request().unwrap();
        req.headers_mut()
            .insert("Cookie", second_login.cookie.parse().unwrap());
        req.headers_mut()
            .insert("Origin", server.url("").parse().unwrap());
        connect_async(req)
    };
    match attempt().await {
        Err(WsError::Http(resp)) => {
            assert_eq!(resp.status(), 429);
            assert!(resp.headers().contains_key("retry-after"));
            let body: Value = serde_json::from_slice(resp.body().as_deref().unwrap()).unwrap();
            assert_eq!(body["code"], "rate_limited");
            assert!(body["error"].is_string());
        }
        other => panic!("expected 429, got {:?}", other.map(|_| ())),
    }

    // One tab closes; its seat is free once the server has seen the close.
    let mut closing = open.pop().unwrap();
    closing.send(Message::Close(None)).await.unwrap();
    drop(closing);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut ws = loop {
        match attempt().await {
            Ok((ws, _)) => break ws,
            Err(WsError::Http(resp)) if resp.status() == 429 => {
                assert!(
                    Instant::now() < deadline,
                    "the closed socket's seat stayed taken"
                );
                sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(
        next_json(&mut ws, Duration::from_secs(5)).await["type"],
        "snapshot"
    );
}

/// Whatever an agent registers with reaches the API, browsers and the database bounded and
/// without control characters or escape sequences.
#[tokio::test]
async fn hostile_registration_strings_are_cleaned_before_anyone_sees_them() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let admin = login(&server).await;
    let token = create_host(&server, &admin, "web-1").await;
    let hostile = "\u{1b}[2J\u{1b}]0;owned\u{7}x\r\n\u{0}\u{202e}y";
    // Eight fields of it stay under the agent socket's 64 KiB frame limit.
    let long = "z".repeat(6_000);
    let text = |s: &str| format!("{s}{hostile}{long}");
    let register = json!({"type": "register", "payload": {
        "hostname": "web-1", "host_type": "nixos", "heartbeat_interval_s": 1,
        "agent_version": text("0.1.0"), "os_version": text("NixOS"),
        "nixpkgs_version": text("24.11"), "generation": text("abc"),
        "lock_hash": text("def"), "repo_url": text("https://git.example/r"),
        "repo_dir": text("/etc/nixos"), "branch": text("main"),
    }});
    let mut browser = browser_socket(&server, &admin).await;
    assert_eq!(
        next_json(&mut browser, Duration::from_secs(5)).await["type"],
        "snapshot"
    );
    let mut agent = agent_socket(&server, &token).await.expect("agent socket");
    agent
        .send(Message::text(register.to_string()))
        .await
        .unwrap();
    assert_eq!(
        next_json(&mut agent, Duration::from_secs(5)).await["type"],
        "registered"
    );
    let fields = [
        ("agent_version", "0.1.0", 128),
        ("os_version", "NixOS", 128),
        ("nixpkgs_version", "24.11", 128),
        ("generation", "abc", 128),
        ("repo_url", "https://git.example/r", 512),
        ("repo_dir", "/etc/nixos", 512),
    ];
    let check = |host: &Value, whom: &str| {
        for (name, start, max) in fields {
            let value = host[name]
                .as_str()
                .unwrap_or_else(|| panic!("{whom}: {name}"));
            assert_eq!(value.chars().count(), max, "{whom}: {name}");
            assert!(
                value.starts_with(&format!("{start}xyzzz")),
                "{whom}: {name}: {:?}",
                &value[..40]
            );
        }
    };
    let update = wait_for(
        &mut browser,
        "host_updated",
        "web-1",
        Duration::from_secs(5),
    )
    .await;
    check(&update["payload"]["host"], "browser");
    let hosts = admin.get_json(&server, "/api/hosts").await;
    check(&hosts[0], "api");
    // And as stored: after a restart the hub loads it from the database.
    drop(agent);
    drop(browser);
    let mut server = server;
    server.stop();
    let server = Server::start_on(dir.path(), server.port).await;
    let admin = login(&server).await;
    let hosts = admin.get_json(&server, "/api/hosts").await;
    check(&hosts[0], "database");
}
