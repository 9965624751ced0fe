//! Personal API tokens against the real server: made on the page's REST door and by the
//! CLI, used as `Authorization: Bearer` without CSRF, capped at the owner's role, and
//! refused (401) once revoked, expired or the owner is disabled. The server runs at
//! RUST_LOG=trace (nothing here emits below debug), and no token may appear in its log.

mod common;

use common::{create_host, login, nixdeck_cli as cli, sql, Server, PASSWORD};
use serde_json::{json, Value};
use testkit::client::Session;

fn add_user(server: &Server, name: &str, role: &str) {
    let (ok, out, err) = cli(
        server,
        &["user", "add", name, "--role", role, "--password-stdin"],
        &format!("{PASSWORD}\n"),
    );
    assert!(ok, "{out}{err}");
}

async fn status_code(resp: reqwest::Response) -> (u16, String, String) {
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    (
        status,
        body["code"].as_str().unwrap_or_default().to_owned(),
        body["error"].as_str().unwrap_or_default().to_owned(),
    )
}

/// A client with no cookies: what a script has.
fn script() -> reqwest::Client {
    reqwest::Client::new()
}

async fn bearer_get(server: &Server, token: &str, path: &str) -> u16 {
    script()
        .get(server.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn bearer_bulk(server: &Server, token: &str) -> reqwest::Response {
    // No X-CSRF-Token, and an Origin of another site: neither matters without a cookie.
    script()
        .post(server.url("/api/bulk"))
        .bearer_auth(token)
        .header("origin", "http://elsewhere.example")
        .json(&json!({"command": "pull", "host_ids": ["web-1"]}))
        .send()
        .await
        .unwrap()
}

async fn make_token(server: &Server, who: &Session, body: Value) -> reqwest::Response {
    who.post(server, "/api/tokens")
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn api_tokens_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let server =
        Server::start_with(dir.path(), common::free_port(), &[("RUST_LOG", "trace")]).await;
    let admin = login(&server).await;
    create_host(&server, &admin, "web-1").await;
    add_user(&server, "alice", "operator");
    add_user(&server, "vic", "viewer");
    let alice = testkit::client::login(&server, "alice", PASSWORD).await;
    let mut tokens = Vec::new();

    // The role cap: an operator cannot mint an admin token.
    let (status, code, error) =
        status_code(make_token(&server, &alice, json!({"name": "ci", "role": "admin"})).await)
            .await;
    assert_eq!((status, code.as_str()), (403, "forbidden"), "{error}");
    assert!(
        error.contains("owner") && error.contains("operator"),
        "{error}"
    );
    let zero = make_token(
        &server,
        &alice,
        json!({"name": "ci", "role": "operator", "expires_in_days": 0}),
    )
    .await;
    assert_eq!(zero.status(), 422);
    let typo = make_token(&server, &alice, json!({"name": "ci", "rol": "viewer"})).await;
    assert_eq!(typo.status(), 422, "unknown fields are refused");

    let made = make_token(
        &server,
        &alice,
        json!({"name": "ci", "role": "operator", "expires_in_days": 90}),
    )
    .await;
    assert_eq!(made.status(), 201);
    let made: Value = made.json().await.unwrap();
    let (ci_id, ci) = (
        made["id"].as_str().unwrap().to_owned(),
        made["token"].as_str().unwrap().to_owned(),
    );
    assert!(ci.starts_with("ndk_") && ci.len() == 68, "{ci}");
    tokens.push(ci.clone());

    // Bearer requests: a read, and state-changing POSTs with no CSRF token.
    assert_eq!(bearer_get(&server, &ci, "/api/hosts").await, 200);
    let bulk = bearer_bulk(&server, &ci).await;
    assert_eq!(bulk.status(), 200);
    let bulk: Value = bulk.json().await.unwrap();
    assert_eq!(bulk["results"][0]["host_id"], "web-1", "{bulk}");
    let refresh = script()
        .post(server.url("/api/hosts/web-1/refresh"))
        .bearer_auth(&ci)
        .send()
        .await
        .unwrap();
    assert!(
        ![401, 403].contains(&refresh.status().as_u16()),
        "{}",
        refresh.status()
    );
    // The same POST with alice's cookie but no CSRF token is still refused.
    let no_csrf = alice
        .http
        .post(server.url("/api/bulk"))
        .json(&json!({"command": "pull", "host_ids": ["web-1"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(no_csrf.status(), 403);
    // A token makes no tokens and cannot re-authenticate.
    let from_token = script()
        .post(server.url("/api/tokens"))
        .bearer_auth(&ci)
        .json(&json!({"name": "more", "role": "viewer"}))
        .send()
        .await
        .unwrap();
    assert_eq!(from_token.status(), 403);
    let reauth = script()
        .post(server.url("/api/account/reauth"))
        .bearer_auth(&ci)
        .json(&json!({"password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(reauth.status(), 403);
    // A garbled or unknown token is 401, even with a valid cookie beside it.
    for bad in ["ndk_nope", &format!("ndk_{}", "0".repeat(64)), ""] {
        let resp = alice
            .http
            .get(server.url("/api/hosts"))
            .header("authorization", format!("Bearer {bad}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "{bad:?}");
    }

    // The list: the caller's own, with the last use, never the token or its hash.
    let listed = alice.get_json(&server, "/api/tokens").await;
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["name"], "ci");
    assert_eq!(listed[0]["role"], "operator");
    assert!(listed[0]["last_used_at"].is_string(), "{listed:?}");
    assert!(listed[0]["expires_at"].is_string(), "{listed:?}");
    let text = serde_json::to_string(listed).unwrap();
    assert!(!text.contains(&ci[4..]) && !text.contains("hash"), "{text}");
    assert!(admin
        .get_json(&server, "/api/tokens")
        .await
        .as_array()
        .unwrap()
        .is_empty());
    assert_eq!(
        admin.get_json(&server, "/api/tokens?all=true").await[0]["username"],
        "alice"
    );
    let others = alice
        .http
        .get(server.url("/api/tokens?all=true"))
        .send()
        .await
        .unwrap();
    assert_eq!(others.status(), 403, "only admins see everyone's");

    // The audit log names the token, with alice as the actor.
    let audit = admin
        .get_json(&server, "/api/audit?actor=alice&action=command.pull")
        .await;
    assert_eq!(audit[0]["token"], "ci", "{audit}");

    // The CLI: a viewer token, which works over HTTP and is refused on operator routes.
    let (ok, ro, err) = cli(
        &server,
        &[
            "token",
            "create",
            "--user",
            "vic",
            "--role",
            "viewer",
            "--expires",
            "never",
            "--name",
            "ro",
        ],
        "",
    );
    assert!(ok, "{err}");
    assert!(
        ro.starts_with("ndk_") && !ro.contains(' '),
        "stdout is the token: {ro}"
    );
    assert!(!err.contains(&ro), "the token goes to stdout only");
    tokens.push(ro.clone());
    assert_eq!(bearer_get(&server, &ro, "/api/hosts").await, 200);
    assert_eq!(bearer_bulk(&server, &ro).await.status(), 403);
    let (ok, _, err) = cli(
        &server,
        &["token", "create", "--user", "vic", "--role", "operator"],
        "",
    );
    assert!(!ok && err.contains("viewer"), "{err}");
    let (ok, _, err) = cli(
        &server,
        &["token", "create", "--user", "vic", "--expires", "0d"],
        "",
    );
    assert!(!ok && err.contains("days"), "{err}");
    let (ok, list, _) = cli(&server, &["token", "list"], "");
    assert!(
        ok && list.contains(" ro ") && list.contains(" ci "),
        "{list}"
    );
    assert!(
        !list.contains(&ro[4..]) && !list.contains(&ci[4..]),
        "{list}"
    );
    // vic may not revoke alice's token; it is not even there for him.
    let vic = testkit::client::login(&server, "vic", PASSWORD).await;
    let theirs = vic
        .delete(&server, &format!("/api/tokens/{ci_id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(theirs.status(), 404);

    // Expiry: the CLI's token, expired a second ago, is 401 on the next request.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    sql(
        &server.dir,
        &format!(
            "UPDATE api_tokens SET expires_at = {} WHERE name = 'ro'",
            now - 1
        ),
    );
    assert_eq!(bearer_get(&server, &ro, "/api/hosts").await, 401);
    let vics = vic.get_json(&server, "/api/tokens").await;
    assert_eq!(vics[0]["expired"], true, "{vics}");

    // Revocation in the page's door: the very next request is 401.
    let second = make_token(&server, &alice, json!({"name": "ci-2", "role": "viewer"})).await;
    let ci2 = second.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    tokens.push(ci2.clone());
    let revoked = alice
        .delete(&server, &format!("/api/tokens/{ci_id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 204);
    assert_eq!(bearer_get(&server, &ci, "/api/hosts").await, 401);
    assert_eq!(bearer_bulk(&server, &ci).await.status(), 401);

    // Disabling the owner ends their tokens.
    assert_eq!(bearer_get(&server, &ci2, "/api/hosts").await, 200);
    let (ok, _, err) = cli(&server, &["user", "disable", "alice"], "");
    assert!(ok, "{err}");
    assert_eq!(bearer_get(&server, &ci2, "/api/hosts").await, 401);

    // Nothing logged the tokens, at the most verbose level.
    let log = server.log();
    // The requests that carried them are there (tower-http at debug, sqlx statements).
    assert!(
        log.contains("uri=/api/bulk") && log.contains("FROM api_tokens"),
        "the log has the requests"
    );
    for token in &tokens {
        assert!(!log.contains(&token[4..]), "a token is in the server log");
    }
}

/// A script follows the fleet on `/ws` with a token (no cookie, no Origin); revoking the
/// token closes the socket with 4401, as a session's end does, and a revoked token cannot
/// open another.
#[tokio::test]
async fn the_socket_takes_a_token_and_closes_when_it_is_revoked() {
    use common::{close_code, next_json};
    use std::time::Duration;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let admin = login(&server).await;
    let made: Value = make_token(&server, &admin, json!({"name": "watch", "role": "viewer"}))
        .await
        .json()
        .await
        .unwrap();
    let token = made["token"].as_str().unwrap();
    let request = || {
        let mut req = server.ws("/ws").into_client_request().unwrap();
        req.headers_mut()
            .insert("Authorization", format!("Bearer {token}").parse().unwrap());
        req
    };
    let (mut socket, _) = tokio_tungstenite::connect_async(request()).await.unwrap();
    assert_eq!(
        next_json(&mut socket, Duration::from_secs(5)).await["type"],
        "snapshot"
    );
    let revoked = admin
        .delete(
            &server,
            &format!("/api/tokens/{}", made["id"].as_str().unwrap()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 204);
    assert_eq!(close_code(&mut socket).await, Some(CloseCode::from(4401)));
    match tokio_tungstenite::connect_async(request()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 401)
        }
        other => panic!("a revoked token opened a socket: {:?}", other.map(|_| ())),
    }
}
