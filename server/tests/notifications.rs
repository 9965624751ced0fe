//! Notifications against the real server: a local HTTP receiver stands in for the webhook
//! target. Hosts going offline together make one message naming both; a target that fails
//! for a while, or is down for two minutes, gets each message once and in order; a message
//! in the outbox survives a kill -9; the target's URL secret is in no answer and no log
//! line; only admins manage targets; a bad URL is a 422 saying why. Deploys, red
//! compartments and outdated agents: `github.rs`, which has the fake GitHub they need.

mod common;

use common::webhook::{add_webhook, Receiver, SECRET};
use common::{create_host, login, registered_agent, Server};
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::time::{sleep, Instant};

async fn send_test(server: &Server, admin: &testkit::client::Session, target: &str) -> String {
    let resp = admin
        .post(server, &format!("/api/notifications/targets/{target}/test"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let body: Value = resp.json().await.unwrap();
    body["idempotency_key"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn offline_hosts_make_one_message_delivered_once_and_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let server =
        Server::start_with(dir.path(), common::free_port(), &[("RUST_LOG", "debug")]).await;
    let admin = login(&server).await;
    let port = common::free_port();
    // The first three attempts fail: the target is down for a while.
    let rx = Receiver::start(port, 3).await;
    let target = add_webhook(&server, &admin, port).await;

    let listed = admin.get_json(&server, "/api/notifications/targets").await;
    assert!(!listed.to_string().contains(SECRET), "{listed}");
    assert_eq!(listed[0]["id"], target);

    let resp = admin
        .post(&server, "/api/notifications/rules")
        .json(&json!({"event": "host_offline", "after_s": 1, "target_ids": [target]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let rule: Value = resp.json().await.unwrap();
    assert_eq!(rule["event"], "host_offline");
    assert_eq!(
        admin.get_json(&server, "/api/notifications/rules").await[0]["id"],
        rule["id"]
    );

    let (ta, tb) = (
        create_host(&server, &admin, "web-a").await,
        create_host(&server, &admin, "web-b").await,
    );
    let a = registered_agent(&server, &ta, "web-a").await;
    let b = registered_agent(&server, &tb, "web-b").await;
    // Let the notifier see them online.
    sleep(Duration::from_secs(2)).await;

    // Message 1 (a test) is queued while the target fails; message 2 (the two hosts
    // offline) after it.
    let first = send_test(&server, &admin, &target).await;
    sleep(Duration::from_millis(800)).await;
    drop(a);
    drop(b);

    let got = rx.wait_for(2, Duration::from_secs(40)).await;
    assert_eq!(got[0]["idempotency_key"], first, "in order: {got:?}");
    assert_eq!(got[0]["event"], "test");
    assert_eq!(got[1]["event"], "host_offline");
    assert_eq!(
        got[1]["hosts"],
        json!(["web-a", "web-b"]),
        "one message naming both"
    );
    assert!(got[1]["summary"].as_str().unwrap().contains("web-a, web-b"));
    assert!(got[1]["at"].is_string());
    // Nothing more comes: each message once.
    sleep(Duration::from_secs(4)).await;
    assert_eq!(rx.got().len(), 2, "{:?}", rx.got());
    assert_eq!(rx.refused.load(Ordering::SeqCst), 3);

    let log = admin
        .get_json(
            &server,
            &format!("/api/notifications/targets/{target}/deliveries"),
        )
        .await;
    let statuses: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["sent", "sent", "retrying", "retrying", "retrying"],
        "{log}"
    );
    // The target's hostile answer is kept, cleaned, on either database.
    assert_eq!(
        log[2]["error"],
        "the target answered 500 Internal Server Error: down for maintenance retry later",
        "{log}"
    );
    assert!(!log.to_string().contains(SECRET));

    assert!(!server.log().contains(SECRET), "the URL's secret is logged");
}

#[tokio::test]
async fn a_queued_message_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let mut server = Server::start_on(dir.path(), port).await;
    let admin = login(&server).await;
    let hook_port = common::free_port();
    let rx = Receiver::start(hook_port, usize::MAX).await;
    let target = add_webhook(&server, &admin, hook_port).await;
    let key = send_test(&server, &admin, &target).await;
    // It has been tried and refused at least once.
    let deadline = Instant::now() + Duration::from_secs(20);
    while rx.refused.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "never tried");
        sleep(Duration::from_millis(100)).await;
    }
    let mut child = server.take_child().unwrap();
    common::kill_child(&mut child, "-KILL");
    rx.fail.store(0, Ordering::SeqCst);

    let server = Server::start_on(dir.path(), port).await;
    let got = rx.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(got[0]["idempotency_key"], key);
    sleep(Duration::from_secs(3)).await;
    assert_eq!(rx.got().len(), 1, "delivered once: {:?}", rx.got());
    drop(server);
}

#[tokio::test]
async fn targets_are_for_admins_and_bad_input_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let admin = login(&server).await;
    for (body, says) in [
        (
            json!({"name": "x", "kind": "webhook", "url": "not a url"}),
            "not valid",
        ),
        (
            json!({"name": "x", "kind": "slack", "url": "ftp://hooks.example/x"}),
            "http://",
        ),
        (json!({"name": "x", "kind": "discord"}), "needs a `url`"),
        (
            json!({"name": "x", "kind": "gotify", "url": "https://g.example"}),
            "settings.token",
        ),
        (
            json!({"name": "x", "kind": "email", "settings": {"host": "mail.example", "from": "a@b.example", "to": ["c@d.example"], "tls": "none"}}),
            "localhost",
        ),
        (
            json!({"name": "x", "kind": "webhook", "url": "https://h.example/", "settings": {"token": "t"}}),
            "no setting",
        ),
    ] {
        let resp = admin
            .post(&server, "/api/notifications/targets")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 422, "{body}");
        let err: Value = resp.json().await.unwrap();
        assert!(
            err["error"].as_str().unwrap().contains(says),
            "{err} lacks {says:?}"
        );
    }
    let resp = admin
        .post(&server, "/api/notifications/rules")
        .json(&json!({"event": "host_offline", "target_ids": ["nope"], "quiet": {"from": "22:00", "to": "7"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);

    // A gotify token is sealed and never shown.
    let resp = admin
        .post(&server, "/api/notifications/targets")
        .json(&json!({"name": "g", "kind": "gotify", "url": "https://gotify.example", "settings": {"token": "tok-SECRET-1", "priority": 7}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let listed = admin.get_json(&server, "/api/notifications/targets").await;
    assert!(!listed.to_string().contains("tok-SECRET-1"), "{listed}");
    assert_eq!(listed[0]["has_secret"], true);
    assert_eq!(listed[0]["settings"], json!({"priority": 7}));

    let operator = common::api_token(&server, "operator");
    for (method, path) in [
        ("GET", "/api/notifications/targets"),
        ("GET", "/api/notifications/rules"),
        ("POST", "/api/notifications/targets"),
    ] {
        let resp = reqwest::Client::new()
            .request(method.parse().unwrap(), server.url(path))
            .bearer_auth(&operator)
            .json(&json!({"name": "op", "kind": "webhook", "url": "https://h.example/"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403, "{method} {path}");
    }
}

#[tokio::test]
async fn mail_reaches_a_local_smtp_sink_and_an_unreachable_server_is_logged() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let admin = login(&server).await;
    let sink = testkit::smtp::SmtpSink::start().await;
    let password_file = dir.path().join("smtp-password");
    std::fs::write(&password_file, "smtp-SECRET-pw\n").unwrap();
    let mut ids = Vec::new();
    for (name, port) in [("mail", sink.port), ("nowhere", common::free_port())] {
        let resp = admin
            .post(&server, "/api/notifications/targets")
            .json(&json!({"name": name, "kind": "email", "settings": {
                "host": "127.0.0.1", "port": port, "tls": "none", "user": "deck",
                "password_file": password_file, "from": "nixdeck <deck@example.org>",
                "to": ["ops@example.org"]}}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
        let body: Value = resp.json().await.unwrap();
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    let key = send_test(&server, &admin, &ids[0]).await;
    send_test(&server, &admin, &ids[1]).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while sink.mails().is_empty() {
        assert!(Instant::now() < deadline, "no mail");
        sleep(Duration::from_millis(100)).await;
    }
    let mail = &sink.mails()[0];
    assert!(mail.to[0].contains("ops@example.org"), "{mail:?}");
    // Quoted-printable: soft line breaks joined.
    assert!(mail.data.replace("=\r\n", "").contains(&key), "{mail:?}");
    assert!(
        mail.data.contains("Subject: [nixdeck] Test message"),
        "{mail:?}"
    );

    let path = format!("/api/notifications/targets/{}/deliveries", ids[1]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let log = loop {
        let log = admin.get_json(&server, &path).await;
        if !log.as_array().unwrap().is_empty() {
            break log;
        }
        assert!(Instant::now() < deadline, "no attempt logged");
        sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(log[0]["status"], "retrying", "{log}");
    assert!(log[0]["error"].as_str().unwrap().contains("SMTP"), "{log}");
    assert!(!server.log().contains("smtp-SECRET-pw"));
}

#[tokio::test]
async fn failed_commands_and_hosts_back_online_are_reported_within_scope() {
    use futures::SinkExt;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let admin = login(&server).await;
    let port = common::free_port();
    let rx = Receiver::start(port, 0).await;
    let target = add_webhook(&server, &admin, port).await;
    for rule in [
        json!({"event": "command_failed", "scope": {"host_ids": ["web-c"]}, "target_ids": [target]}),
        json!({"event": "host_online", "after_s": 1, "target_ids": [target]}),
        // Out of scope: web-c has no tag `db`.
        json!({"event": "host_offline", "scope": {"tags": ["db"]}, "target_ids": [target]}),
    ] {
        let resp = admin
            .post(&server, "/api/notifications/rules")
            .json(&rule)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201, "{rule}");
    }
    let token = create_host(&server, &admin, "web-c").await;
    let mut ws = registered_agent(&server, &token, "web-c").await;
    sleep(Duration::from_secs(2)).await;

    let resp = admin
        .post(&server, "/api/hosts/web-c/commands")
        .json(&json!({"command": "pull"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let command_id = resp.json::<Value>().await.unwrap()["command_id"]
        .as_str()
        .unwrap()
        .to_owned();
    loop {
        let v = common::next_json(&mut ws, Duration::from_secs(5)).await;
        if v["type"] == "command" {
            break;
        }
    }
    ws.send(tokio_tungstenite::tungstenite::Message::text(
        json!({"type": "command_complete", "payload": {"command_id": command_id,
            "status": "error", "exit_code": 1, "duration_ms": 10, "last_seq": 0}})
        .to_string(),
    ))
    .await
    .unwrap();
    let got = rx.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(got[0]["event"], "command_failed");
    assert_eq!(got[0]["hosts"], json!(["web-c"]));
    assert_eq!(got[0]["details"]["events"][0]["status"], "error", "{got:?}");

    drop(ws);
    sleep(Duration::from_millis(2500)).await;
    let _ws = registered_agent(&server, &token, "web-c").await;
    let got = rx.wait_for(2, Duration::from_secs(20)).await;
    assert_eq!(got[1]["event"], "host_online");
    assert_eq!(got[1]["hosts"], json!(["web-c"]));
    sleep(Duration::from_secs(2)).await;
    assert_eq!(
        rx.got().len(),
        2,
        "no host_offline out of scope: {:?}",
        rx.got()
    );
}

/// A target that is down (nothing listens on its port) for two minutes gets, once it is
/// back, everything queued in that time: once each and in the order it was queued. The
/// retries' longest wait is 10 s here (`NIXDECK_NOTIFY_RETRY_MAX_S`; 300 s by default), so
/// delivery follows the target's return within about that.
#[tokio::test]
async fn a_target_down_for_two_minutes_gets_every_message_once_and_in_order() {
    // Two minutes of retry timing; the outbox's storage (messages queued while the target
    // fails, delivered in order and once, the delivery log) is what the other tests here
    // check, and they run on PostgreSQL too.
    if common::skip_on_postgres(
        "the retry schedule over a 2-minute outage; the outbox's storage is \
         offline_hosts_make_one_message_delivered_once_and_in_order and \
         a_queued_message_survives_kill_9",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        dir.path(),
        common::free_port(),
        &[("NIXDECK_NOTIFY_RETRY_MAX_S", "10")],
    )
    .await;
    let admin = login(&server).await;
    let port = common::free_port();
    let target = add_webhook(&server, &admin, port).await;
    let resp = admin
        .post(&server, "/api/notifications/rules")
        .json(&json!({"event": "host_offline", "after_s": 1, "target_ids": [target]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let token = create_host(&server, &admin, "db-1").await;
    let agent = registered_agent(&server, &token, "db-1").await;
    sleep(Duration::from_secs(2)).await;

    let down_since = Instant::now();
    let first = send_test(&server, &admin, &target).await;
    drop(agent);
    // The host_offline message is queued once the host has been away for a second and its
    // group has closed (5 s), before the second test message. Not 10 s: the server closes
    // a connection idle for its header timeout (10 s), and a request sent on it just then
    // would be cut off.
    sleep(Duration::from_secs(12)).await;
    let last = send_test(&server, &admin, &target).await;
    sleep(Duration::from_secs(120).saturating_sub(down_since.elapsed())).await;

    // Tried all along, refused each time, nothing lost yet.
    let log = admin
        .get_json(
            &server,
            &format!("/api/notifications/targets/{target}/deliveries"),
        )
        .await;
    let attempts = log.as_array().unwrap();
    assert!(attempts.len() >= 10, "retried during the outage: {log}");
    assert!(attempts.iter().all(|a| a["status"] == "retrying"), "{log}");

    let rx = Receiver::start(port, 0).await;
    let got = rx.wait_for(3, Duration::from_secs(30)).await;
    let events: Vec<&str> = got.iter().map(|m| m["event"].as_str().unwrap()).collect();
    assert_eq!(events, ["test", "host_offline", "test"], "{got:?}");
    assert_eq!(got[0]["idempotency_key"], first);
    assert_eq!(got[1]["hosts"], json!(["db-1"]));
    assert_eq!(got[2]["idempotency_key"], last);
    sleep(Duration::from_secs(12)).await;
    assert_eq!(rx.got().len(), 3, "each once: {:?}", rx.got());
}
