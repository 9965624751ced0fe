//! The enrollment token against the real server: a host that enrolls itself waits for an
//! admin's approval and gets no commands until then, the token creates a limited number of
//! hosts, and enrollments and refused agent tokens are in the audit log.

mod common;

use common::{agent_socket, free_port, login, Server};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::Duration;
use testkit::fixtures::register;
use tokio::time::{sleep, Instant};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

const ENROLL: &str = "enroll-secret-token-0123456789";

/// Register as `hostname` with the enrollment token: the link, or how it was closed.
async fn enroll(server: &Server, hostname: &str) -> Result<common::Ws, Option<CloseCode>> {
    let mut ws = agent_socket(server, ENROLL).await.expect("upgrade");
    ws.send(Message::text(register(hostname))).await.unwrap();
    match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
        Ok(Some(Ok(Message::Text(t)))) => {
            let reply: Value = serde_json::from_str(&t).unwrap();
            assert_eq!(reply["type"], "registered", "{reply}");
            Ok(ws)
        }
        Ok(Some(Ok(Message::Close(frame)))) => Err(frame.map(|f| f.code)),
        other => panic!("expected registered or a close, got {other:?}"),
    }
}

fn host<'a>(hosts: &'a Value, id: &str) -> Option<&'a Value> {
    hosts.as_array().unwrap().iter().find(|h| h["id"] == id)
}

/// Audit rows of `action`, polled until `want` of them are there (refusals are tallied
/// and written every few seconds).
async fn audit_rows(
    admin: &common::Admin,
    server: &Server,
    action: &str,
    want: usize,
) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows = admin
            .get_json(server, &format!("/api/audit?action={action}&limit=100"))
            .await;
        let rows = rows.as_array().unwrap().clone();
        if rows.len() >= want || Instant::now() > deadline {
            return rows;
        }
        sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn enrolled_hosts_wait_for_approval_and_the_token_has_a_use_count() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server =
        Server::start_with(dir.path(), port, &[("NIXDECK_ENROLL_TOKEN_USES", "2")]).await;
    let admin = login(&server).await;

    // A host that enrolls itself is there, online, and marked as waiting.
    let _a = enroll(&server, "fresh-a").await.expect("first enrollment");
    let hosts = admin.get_json(&server, "/api/hosts").await;
    let a = host(&hosts, "fresh-a").expect("enrolled host listed");
    assert_eq!(a["pending_approval"], true, "{a}");
    assert_eq!(a["online"], true);
    // Hosts an admin added carry no such field at all (their JSON is unchanged).
    common::create_host(&server, &admin, "added").await;
    let hosts = admin.get_json(&server, "/api/hosts").await;
    assert!(host(&hosts, "added")
        .unwrap()
        .get("pending_approval")
        .is_none());

    // No commands before approval.
    let run = admin
        .post(&server, "/api/hosts/fresh-a/commands")
        .json(&json!({"command": "pull"}))
        .send()
        .await
        .unwrap();
    assert_eq!(run.status(), 409);
    let body: Value = run.json().await.unwrap();
    assert_eq!(body["code"], "pending_approval", "{body}");

    // An admin approves; then it takes commands like any other host.
    let approved = admin
        .post(&server, "/api/hosts/fresh-a/approve")
        .send()
        .await
        .unwrap();
    assert_eq!(approved.status(), 200);
    let approved: Value = approved.json().await.unwrap();
    assert!(approved.get("pending_approval").is_none(), "{approved}");
    let run = admin
        .post(&server, "/api/hosts/fresh-a/commands")
        .json(&json!({"command": "pull"}))
        .send()
        .await
        .unwrap();
    assert_eq!(run.status(), 202);

    // The second use works; the third is refused and creates nothing.
    let b = enroll(&server, "fresh-b").await.expect("second enrollment");
    drop(b);
    let refused = enroll(&server, "fresh-c").await;
    assert_eq!(refused.err(), Some(Some(CloseCode::Policy)));
    let hosts = admin.get_json(&server, "/api/hosts").await;
    assert!(host(&hosts, "fresh-c").is_none());

    // A wrong agent token is refused and audited (as a tally).
    match agent_socket(&server, "not-a-token").await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 401)
        }
        other => panic!("expected 401, got {:?}", other.map(|_| ())),
    }
    let enrolls = audit_rows(&admin, &server, "host.enroll", 3).await;
    let results: Vec<&str> = enrolls
        .iter()
        .filter_map(|r| r["result"].as_str())
        .collect();
    assert_eq!(
        results.iter().filter(|r| **r == "ok").count(),
        2,
        "{enrolls:?}"
    );
    assert_eq!(
        results.iter().filter(|r| **r == "forbidden").count(),
        1,
        "{enrolls:?}"
    );
    assert!(
        enrolls.iter().all(|r| r["ip"] == "127.0.0.1"),
        "{enrolls:?}"
    );
    let approvals = audit_rows(&admin, &server, "host.approve", 1).await;
    assert_eq!(approvals.len(), 1);
    assert_eq!(approvals[0]["actor"], "admin");
    let auth = audit_rows(&admin, &server, "agent.auth", 1).await;
    assert!(
        auth.iter()
            .any(|r| r["result"] == "unauthorized" && r["ip"] == "127.0.0.1"),
        "{auth:?}"
    );

    // The waiting state and the use count survive a restart.
    server.stop();
    let server = Server::start_with(dir.path(), port, &[("NIXDECK_ENROLL_TOKEN_USES", "2")]).await;
    let admin = login(&server).await;
    let hosts = admin.get_json(&server, "/api/hosts").await;
    assert_eq!(host(&hosts, "fresh-b").unwrap()["pending_approval"], true);
    assert!(host(&hosts, "fresh-a")
        .unwrap()
        .get("pending_approval")
        .is_none());
    assert!(
        enroll(&server, "fresh-d").await.is_err(),
        "no use left after a restart"
    );
}
