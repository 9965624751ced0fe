//! TOTP with the real server binary: what starting a setup needs, the sessions that end when
//! two-factor is turned on, and secrets sealed at rest under the key file, across restarts
//! and against another key file.

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;
use testkit::client::Session;
use tokio::time::{sleep, Instant};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `POST /api/account/totp/setup` with `body` (none at all when `None`): status and body.
async fn setup(server: &Server, who: &Session, body: Option<Value>) -> (u16, Value) {
    let mut req = who.post(server, "/api/account/totp/setup");
    if let Some(body) = body {
        req = req.json(&body);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Confirm the setup `totp` with its current code: the recovery codes.
async fn confirm(server: &Server, who: &Session, totp: &totp_rs::Totp) -> Vec<String> {
    let r = who
        .post(server, "/api/account/totp/confirm")
        .json(&json!({"code": totp.generate(now()).to_string()}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json::<Value>().await.unwrap()["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect()
}

fn totp_of(setup: &Value) -> totp_rs::Totp {
    totp_rs::Totp::from_url(setup["otpauth_uri"].as_str().unwrap()).unwrap()
}

/// A login as admin with a second factor: the status.
async fn login_with_code(server: &Server, code: &str) -> u16 {
    reqwest::Client::new()
        .post(server.url("/api/login"))
        .json(&json!({"username": "admin", "password": PASSWORD, "totp": code}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_setup_needs_the_password_and_while_totp_is_on_a_current_code() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let admin = login(&server).await;
    // The route had no body before: such a request still reads, and is refused for the
    // missing password (422: the session is fine, so not 401; no role is missing, so not
    // 403).
    for body in [None, Some(json!({}))] {
        let (status, answer) = setup(&server, &admin, body).await;
        assert_eq!((status, answer["code"].as_str()), (422, Some("invalid")));
    }
    let (status, _) = setup(
        &server,
        &admin,
        Some(json!({"password": "wrong-password-1"})),
    )
    .await;
    assert_eq!(status, 422);
    // First enrollment: the password is enough.
    let (status, first) = setup(&server, &admin, Some(json!({"password": PASSWORD}))).await;
    assert_eq!(status, 200, "{first}");
    let codes = confirm(&server, &admin, &totp_of(&first)).await;

    // Two-factor is on: the password alone is asked for a code, as at login.
    let (status, answer) = setup(&server, &admin, Some(json!({"password": PASSWORD}))).await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (401, Some("totp_required"))
    );
    let right = totp_of(&first).generate(now() + 30).to_string();
    let wrong = format!("{:06}", (right.parse::<u32>().unwrap() + 1) % 1_000_000);
    let body = json!({"password": PASSWORD, "code": wrong});
    assert_eq!(setup(&server, &admin, Some(body)).await.0, 422);
    let body = json!({"password": "wrong-password-1", "code": codes[0]});
    assert_eq!(setup(&server, &admin, Some(body)).await.0, 422);
    // The right password with a current code, or with a recovery code (once).
    let body = json!({"password": PASSWORD, "code": right});
    let (status, again) = setup(&server, &admin, Some(body)).await;
    assert_eq!(status, 200, "{again}");
    assert_ne!(again["secret"], first["secret"]);
    let body = json!({"password": PASSWORD, "code": codes[0]});
    assert_eq!(setup(&server, &admin, Some(body.clone())).await.0, 200);
    assert_eq!(setup(&server, &admin, Some(body)).await.0, 422);
    // Each attempt is in the audit log once (the REST door used to add a second entry).
    let audit = admin
        .get_json(&server, "/api/audit?action=totp.setup&limit=100")
        .await;
    let results: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["result"].as_str().unwrap())
        .collect();
    assert_eq!(results.len(), 10, "{results:?}");
    assert_eq!(results.iter().filter(|r| **r == "ok").count(), 3);
    assert_eq!(results.iter().filter(|r| **r == "totp_required").count(), 1);
    let confirms = admin
        .get_json(&server, "/api/audit?action=totp.confirm")
        .await;
    assert_eq!(confirms.as_array().unwrap().len(), 1, "{confirms}");
}

#[tokio::test]
async fn turning_totp_on_ends_the_other_sessions_of_the_user() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let here = login(&server).await;
    let elsewhere = login(&server).await;
    let mut elsewhere_socket = browser_socket(&server, &elsewhere).await;
    let (status, setup) = setup(&server, &here, Some(json!({"password": PASSWORD}))).await;
    assert_eq!(status, 200);
    // Starting the setup ends nothing; turning it on does.
    assert_eq!(
        elsewhere
            .http
            .get(server.url("/api/session"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    confirm(&server, &here, &totp_of(&setup)).await;
    let session = |who: &Session| who.http.get(server.url("/api/session")).send();
    assert_eq!(session(&elsewhere).await.unwrap().status(), 401);
    assert_eq!(
        close_code(&mut elsewhere_socket).await,
        Some(CloseCode::from(4401))
    );
    // The session that turned it on goes on.
    assert_eq!(session(&here).await.unwrap().status(), 200);
}

/// The server started on `dir`'s database with another key file: it must stop with a
/// clear message (stderr), not start and not panic.
async fn refused_start(dir: &Path, key_file: &Path) -> String {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_nixdeck"))
        .env("NIXDECK_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("NIXDECK_DATABASE_URL", started_database_url(dir))
        .env("NIXDECK_ADMIN_PASSWORD", PASSWORD)
        .env("NIXDECK_SECRET_KEY_FILE", key_file)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            kill_child(&mut child, "-KILL");
            panic!(
                "the server started with the key file {}",
                key_file.display()
            );
        }
        sleep(Duration::from_millis(50)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

#[tokio::test]
async fn totp_secrets_are_sealed_at_rest_and_work_after_a_restart_with_the_same_key_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path()).await;
    let admin = login(&server).await;
    let (_, setup) = setup(&server, &admin, Some(json!({"password": PASSWORD}))).await;
    let secret = setup["secret"].as_str().unwrap().to_owned();
    let totp = totp_of(&setup);
    let codes = confirm(&server, &admin, &totp).await;
    server.stop();

    // The key file: beside the database, made on the first start, readable by its owner only.
    let key_file = dir.path().join("secret.key");
    let key = std::fs::read_to_string(&key_file).unwrap();
    assert_eq!(key.trim().len(), 64);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // What the database holds: neither the secret nor the codes' plain SHA-256.
    let db = nixdeck_core::storage::Db::connect(&started_database_url(dir.path()))
        .await
        .unwrap();
    let stored = db.totp("admin").await.unwrap().unwrap().secret.unwrap();
    assert!(!stored.contains(&secret), "{stored}");
    assert!(
        nixdeck_core::secret::SecretKey::is_sealed(&stored),
        "{stored}"
    );
    let hashes = db.recovery_codes("admin").await.unwrap();
    assert_eq!(hashes.len(), 10);
    for code in &codes {
        let plain = nixdeck_core::secret::sha256_hex(code);
        assert!(hashes.iter().all(|(h, _)| *h != plain));
    }
    drop(db);

    // Started again with the same key file: the code and the recovery codes log in.
    let mut server = Server::start(dir.path()).await;
    assert_eq!(login_with_code(&server, "000000").await, 401);
    assert_eq!(
        login_with_code(&server, &totp.generate(now() + 30).to_string()).await,
        200
    );
    assert_eq!(login_with_code(&server, &codes[0]).await, 200);
    server.stop();
    assert_eq!(
        std::fs::read_to_string(&key_file).unwrap(),
        key,
        "never replaced"
    );

    // Another key, or none where the key should be: the start stops and says why.
    let other = dir.path().join("other.key");
    std::fs::write(&other, format!("{}\n", "5a".repeat(32))).unwrap();
    let stderr = refused_start(dir.path(), &other).await;
    assert!(stderr.contains("holds another key"), "{stderr}");
    let missing = dir.path().join("missing.key");
    let stderr = refused_start(dir.path(), &missing).await;
    assert!(stderr.contains("is missing"), "{stderr}");
    assert!(!missing.exists());
    // The right key still works after those refusals.
    let server = Server::start(dir.path()).await;
    assert_eq!(login_with_code(&server, &codes[1]).await, 200);
}
