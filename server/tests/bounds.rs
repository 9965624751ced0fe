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

/// Without `NIXDECK_MAX_CONNECTIONS` the cap follows the open-file limit: the soft limit is
/// raised to the hard one, and 300 files are kept for the rest. Under a hard limit of 400 the
/// server holds 100 connections and closes the 101st at once, rather than failing accepts with
/// "too many open files".
#[tokio::test]
async fn the_default_connection_cap_follows_the_open_file_limit() {
    let dir = tempfile::tempdir().unwrap();
    // The soft limit alone lowered: the server raises it to the hard limit.
    let raised = Server::start_under(dir.path(), free_port(), &[], "ulimit -S -n 400").await;
    let hard: u64 = String::from_utf8(
        std::process::Command::new("sh")
            .args(["-c", "ulimit -H -n"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .parse()
    .unwrap();
    assert!(
        raised.log().contains(&format!(
            "connection cap {} (open-file limit {hard},",
            hard - 300
        )),
        "{}",
        raised.log()
    );
    drop(raised);

    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_under(
        dir.path(),
        free_port(),
        // Idle connections stay open while the test counts them.
        &[("NIXDECK_HEADER_TIMEOUT_S", "60")],
        "ulimit -S -n 400 && ulimit -H -n 400",
    )
    .await;
    assert!(server
        .log()
        .contains("connection cap 100 (open-file limit 400,"));
    // 100 connections that each hold a slot: each is answered once (keep-alive). One that
    // is closed instead found the cap reached while the start's health check still held
    // a slot (seen under load); it is replaced.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut held = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while held.len() < 100 {
        assert!(
            Instant::now() < deadline,
            "only {} connections held",
            held.len()
        );
        let mut c = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
            .await
            .unwrap();
        if c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .is_err()
        {
            continue;
        }
        let mut answer = Vec::new();
        let mut chunk = [0u8; 4096];
        while !answer.ends_with(b"{\"status\":\"ok\"}") {
            match tokio::time::timeout(Duration::from_secs(5), c.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => answer.extend_from_slice(&chunk[..n]),
                _ => break,
            }
        }
        if answer.ends_with(b"{\"status\":\"ok\"}") {
            held.push(c);
        } else {
            sleep(Duration::from_millis(50)).await;
        }
    }
    // The 101st is accepted by the kernel and closed by the server without an answer.
    let mut extra = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    let _ = extra
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), extra.read_to_end(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the connection past the cap was served: {:?}",
        String::from_utf8_lossy(&buf)
    );
    // One closes; a new connection is served.
    held.pop();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut next = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
            .await
            .unwrap();
        next.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), next.read_to_end(&mut buf)).await;
        if buf.starts_with(b"HTTP/1.1 200") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no connection was served after one closed"
        );
        sleep(Duration::from_millis(50)).await;
    }
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
