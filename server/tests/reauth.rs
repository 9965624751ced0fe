//! Re-authentication against the real server: token rotation, user management and Merge &
//! Deploy need the password again once the login is older than the window; a right
//! password (and nothing else) lets them through again.

mod common;

use common::{create_host, login, sql, Server, PASSWORD};
use serde_json::{json, Value};

/// Make every session's last authentication an hour old, as if the operator logged in
/// long ago.
fn age_sessions(server: &Server) {
    let hour_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 3600;
    sql(
        &server.dir,
        &format!("UPDATE sessions SET authenticated_at = {hour_ago}"),
    );
}

async fn code_of(resp: reqwest::Response) -> (u16, String) {
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    (status, body["code"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn powerful_actions_need_a_recent_authentication() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let admin = login(&server).await;
    create_host(&server, &admin, "web-1").await;

    // Right after the login: allowed.
    let rotate = admin
        .post(&server, "/api/hosts/web-1/token")
        .send()
        .await
        .unwrap();
    assert_eq!(rotate.status(), 200);

    age_sessions(&server);
    let rotate = admin
        .post(&server, "/api/hosts/web-1/token")
        .send()
        .await
        .unwrap();
    assert_eq!(code_of(rotate).await, (403, "reauth_required".into()));
    let deploy = admin
        .post(&server, "/api/deploy")
        .json(&json!({"pr_number": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(code_of(deploy).await, (403, "reauth_required".into()));
    // Reading stays open: only the listed actions ask.
    let hosts = admin.get_json(&server, "/api/hosts").await;
    assert_eq!(hosts.as_array().unwrap().len(), 1);

    // A wrong password does not count.
    let wrong = admin
        .post(&server, "/api/account/reauth")
        .json(&json!({"password": "not-the-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(code_of(wrong).await, (422, "invalid".into()));
    let rotate = admin
        .post(&server, "/api/hosts/web-1/token")
        .send()
        .await
        .unwrap();
    assert_eq!(code_of(rotate).await, (403, "reauth_required".into()));

    // The right one does.
    let right = admin
        .post(&server, "/api/account/reauth")
        .json(&json!({"password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 204);
    let rotate = admin
        .post(&server, "/api/hosts/web-1/token")
        .send()
        .await
        .unwrap();
    assert_eq!(rotate.status(), 200);

    // Both tries are in the audit log.
    let rows = admin
        .get_json(&server, "/api/audit?action=reauth&limit=10")
        .await;
    let results: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["result"].as_str())
        .collect();
    assert_eq!(results, ["ok", "invalid"], "newest first");
}
