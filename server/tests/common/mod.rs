//! Shared harness for the integration tests: the real server and agent binaries on
//! loopback ports, each test with its own temporary database (a SQLite file, or with
//! `NIXDECK_TEST_SERVER_DATABASE=postgres` a PostgreSQL database of its own: see
//! `database_url`). What is not about this server (running git, processes, the logged-in
//! client, agent frames) is in `testkit`.
#![allow(dead_code)]

pub mod webhook;

use futures::StreamExt;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use testkit::client::Session;
use testkit::fixtures::register;
use tokio::time::{sleep, timeout, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{connect_async, MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

pub const PASSWORD: &str = "integration-password-1";
pub const INTERVAL_S: u64 = 1;

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The agent binary (or `NIXDECK_AGENT_BIN`), built on demand when `cargo test` runs alone.
pub fn agent_bin() -> PathBuf {
    if let Ok(p) = std::env::var("NIXDECK_AGENT_BIN") {
        return p.into();
    }
    workspace_bin("nixdeck-agent", "nixdeck-agent")
}

/// The stand-in for GitHub's REST API (crate `testkit`), built on demand.
pub fn fake_github_bin() -> PathBuf {
    workspace_bin("fake-github", "testkit")
}

/// Binary `name` of workspace package `package`, next to this server's binary: the same
/// target directory (`CARGO_TARGET_DIR` or `target/`) and profile. Built when missing.
fn workspace_bin(name: &str, package: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_nixdeck")).parent().unwrap();
    let bin = dir.join(name);
    if !bin.exists() {
        let profile = match dir.file_name().and_then(|p| p.to_str()) {
            Some("debug") | None => "dev",
            Some(other) => other,
        };
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        // The cargo running the tests passes its CARGO_TARGET_DIR on to this one.
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "-p", package, "--profile", profile])
            .current_dir(root)
            .status()
            .unwrap_or_else(|e| panic!("running cargo build for {name}: {e}"));
        assert!(status.success(), "building {name} failed");
    }
    bin
}

pub fn kill_child(child: &mut Child, signal: &str) {
    let _ = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status();
    let _ = child.wait();
}

/// `postgres` puts every test's server on PostgreSQL (a database of its own on the server
/// in `NIXDECK_TEST_POSTGRES_URL`, `scripts/pg.sh`); unset or `sqlite`, on a SQLite file.
pub const SERVER_DATABASE_ENV: &str = "NIXDECK_TEST_SERVER_DATABASE";

/// Whether the servers of this run are on PostgreSQL (`SERVER_DATABASE_ENV`).
pub fn on_postgres() -> bool {
    match std::env::var(SERVER_DATABASE_ENV).as_deref() {
        Ok("postgres") => true,
        Ok("sqlite") | Ok("") | Err(_) => false,
        Ok(other) => panic!("{SERVER_DATABASE_ENV}={other}: say sqlite or postgres"),
    }
}

/// True, after saying so on stderr, when this run's servers are on PostgreSQL: for a test
/// whose subject is not storage (timing, the HTTP layer), which the second pass of
/// `scripts/test.sh` (the same tests, the server on PostgreSQL) would only repeat. `what`
/// names what covers its storage on PostgreSQL, so the skip can be checked. Keep a test
/// that stores or reads anything of its own in both passes.
pub fn skip_on_postgres(what: &str) -> bool {
    let skip = on_postgres();
    if skip {
        eprintln!("skipped on PostgreSQL: {what}");
    }
    skip
}

/// The database URL of the server whose files are in `dir`: made at its first start and
/// kept in `dir/database-url`, so a restart finds its data and `nixdeck_cli` the same
/// database.
pub async fn database_url(dir: &Path) -> String {
    let file = dir.join("database-url");
    if let Ok(url) = std::fs::read_to_string(&file) {
        return url;
    }
    let url = if on_postgres() {
        let env = nixdeck_core::storage::testing::POSTGRES_URL_ENV;
        let server = std::env::var(env).unwrap_or_else(|_| {
            panic!("{SERVER_DATABASE_ENV}=postgres needs {env} (scripts/pg.sh start)")
        });
        nixdeck_core::storage::testing::fresh_postgres_database(&server)
            .await
            .unwrap()
    } else {
        format!("sqlite://{}/test.db", dir.display())
    };
    std::fs::write(&file, &url).unwrap();
    url
}

/// Runs one SQL statement on the database of the server whose files are in `dir` (started
/// before), with the database's own shell (`sqlite3` or `psql`): what a test sets up that
/// no request can (a session grown old, a token expired). Its output, trimmed: the rows,
/// one a line, columns separated by `|`.
pub fn sql(dir: &Path, statement: &str) -> String {
    let url = started_database_url(dir);
    let mut cmd = if url.starts_with("postgres") {
        let mut psql = Command::new("psql");
        psql.args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            &url,
            "-c",
        ]);
        psql
    } else {
        let mut sqlite3 = Command::new("sqlite3");
        sqlite3.arg(dir.join("test.db"));
        sqlite3
    };
    testkit::proc::run(cmd.arg(statement))
}

/// `database_url` of a server that started already.
pub fn started_database_url(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("database-url")).expect("the server started")
}

pub struct Server {
    child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
}

impl Server {
    pub async fn start(dir: &Path) -> Server {
        Self::start_on(dir, free_port()).await
    }

    pub async fn start_on(dir: &Path, port: u16) -> Server {
        Self::start_with(dir, port, &[]).await
    }

    /// Start with extra environment (e.g. short command timeouts).
    pub async fn start_with(dir: &Path, port: u16, env: &[(&str, &str)]) -> Server {
        Self::start_under(dir, port, env, "").await
    }

    /// Start after a shell prelude (e.g. `ulimit -n 400`) that the server process inherits:
    /// `sh -c '<prelude>; exec nixdeck'`, so the child is still the server itself.
    pub async fn start_under(dir: &Path, port: u16, env: &[(&str, &str)], prelude: &str) -> Server {
        // Appended, so a restarted server's log follows the first one's.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(format!("server-{port}.log")))
            .unwrap();
        let mut command = if prelude.is_empty() {
            Command::new(env!("CARGO_BIN_EXE_nixdeck"))
        } else {
            let mut sh = Command::new("sh");
            sh.arg("-c")
                .arg(format!("{prelude} && exec \"$0\""))
                .arg(env!("CARGO_BIN_EXE_nixdeck"));
            sh
        };
        let child = command
            .env("NIXDECK_LISTEN", format!("127.0.0.1:{port}"))
            .env("NIXDECK_DATABASE_URL", database_url(dir).await)
            // Where it is by default with SQLite; PostgreSQL needs it named.
            .envs(on_postgres().then(|| ("NIXDECK_SECRET_KEY_FILE", dir.join("secret.key"))))
            .env("NIXDECK_ADMIN_PASSWORD", PASSWORD)
            .env("NIXDECK_HEARTBEAT_INTERVAL_S", INTERVAL_S.to_string())
            .env("NIXDECK_ENROLL_TOKEN", "enroll-secret-token-0123456789")
            .env("RUST_LOG", "info")
            // The caller's settings win over the defaults above.
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting nixdeck");
        let server = Server {
            child: Some(child),
            port,
            dir: dir.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = reqwest::get(server.url("/healthz")).await {
                if r.status() == 200 {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "server did not become healthy");
            sleep(Duration::from_millis(50)).await;
        }
        server
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn ws(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{path}", self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The server process, for a test that wants to kill it itself.
    pub fn take_child(&mut self) -> Option<Child> {
        self.child.take()
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_child(&mut child, "-TERM");
        }
    }

    /// `GET /metrics` as text (loopback, so no token).
    pub async fn metrics(&self) -> String {
        reqwest::get(self.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("server-{}.log", self.port)))
            .unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_child(&mut child, "-KILL");
        }
    }
}

impl testkit::client::Site for Server {
    fn url(&self, path: &str) -> String {
        Server::url(self, path)
    }
}

/// The benches' name for the logged-in admin.
pub type Admin = Session;

/// The admin, logged in (see `testkit::client::login`).
pub async fn login(server: &Server) -> Session {
    testkit::client::login(server, "admin", PASSWORD).await
}

pub async fn create_host(server: &Server, admin: &Session, hostname: &str) -> String {
    let resp = admin
        .post(server, "/api/hosts")
        .json(&json!({"hostname": hostname, "host_type": "nixos"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["host"]["id"], hostname);
    body["agent_token"].as_str().unwrap().to_owned()
}

pub fn spawn_agent(server: &Server, hostname: &str, token: &str, state: &Path) -> Child {
    spawn_agent_with(server, hostname, token, state, &[])
}

/// An agent with extra flags (a command config, a repo dir). Its log goes next to its
/// state directory, appended across restarts.
pub fn spawn_agent_with(
    server: &Server,
    hostname: &str,
    token: &str,
    state: &Path,
    extra: &[&str],
) -> Child {
    spawn_agent_env(server, hostname, token, state, extra, &[])
}

/// `spawn_agent_with`, plus environment (the test's Nix settings).
pub fn spawn_agent_env(
    server: &Server,
    hostname: &str,
    token: &str,
    state: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(state.with_extension("log"))
        .unwrap();
    Command::new(agent_bin())
        .args([
            "--url",
            &server.url(""),
            "--hostname",
            hostname,
            "--state-dir",
        ])
        .arg(state)
        .args(extra)
        .env("NIXDECK_TOKEN", token)
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("starting nixdeck-agent")
}

pub async fn browser_socket(server: &Server, admin: &Session) -> Ws {
    let mut req = server.ws("/ws").into_client_request().unwrap();
    req.headers_mut()
        .insert("Cookie", admin.cookie.parse().unwrap());
    req.headers_mut()
        .insert("Origin", server.url("").parse().unwrap());
    connect_async(req).await.expect("browser socket").0
}

/// The next text frame as JSON, within `wait`.
pub async fn next_json(ws: &mut Ws, wait: Duration) -> Value {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match timeout(left, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return serde_json::from_str(&t).unwrap(),
            Ok(Some(Ok(_))) => continue,
            other => panic!("expected a frame, got {other:?}"),
        }
    }
}

/// Skip frames until one of `kind` for `host` arrives, within `wait`.
pub async fn wait_for(ws: &mut Ws, kind: &str, host: &str, wait: Duration) -> Value {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no {kind} for {host} within {wait:?}");
        let v = next_json(ws, left).await;
        let id = v["payload"]["host_id"]
            .as_str()
            .or(v["payload"]["host"]["id"].as_str());
        if v["type"] == kind && id == Some(host) {
            return v;
        }
    }
}

/// Read until the server closes; returns the close code.
pub async fn close_code(ws: &mut Ws) -> Option<CloseCode> {
    loop {
        match timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => return frame.map(|f| f.code),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(_))) | Ok(None) => return None,
            Err(_) => panic!("the server did not close the socket"),
        }
    }
}

pub async fn agent_socket(server: &Server, token: &str) -> Result<Ws, WsError> {
    let mut req = server.ws("/ws/agent").into_client_request().unwrap();
    req.headers_mut()
        .insert("Authorization", format!("Bearer {token}").parse().unwrap());
    connect_async(req).await.map(|(ws, _)| ws)
}

/// An agent link that has registered as `hostname`.
pub async fn registered_agent(server: &Server, token: &str, hostname: &str) -> Ws {
    use futures::SinkExt;
    let mut ws = agent_socket(server, token).await.expect("agent socket");
    ws.send(Message::text(register(hostname))).await.unwrap();
    let reply = next_json(&mut ws, Duration::from_secs(5)).await;
    assert_eq!(reply["type"], "registered", "{reply}");
    ws
}

/// The store path a `fake_agent`'s previews report.
pub const STORE_PATH: &str = "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-26.05";

/// Every order each fake agent got: `(host, order)`.
pub type Orders = std::sync::Arc<std::sync::Mutex<Vec<(String, Value)>>>;

/// An agent link (`registered_agent`) that heartbeats and ends every order at once, `ok`:
/// a preview with a closure diff and the store path it built (`STORE_PATH`), a switch with
/// its generation. What it was asked goes to `orders`.
pub fn fake_agent(mut ws: Ws, host: &str, orders: Orders) -> tokio::task::JoinHandle<()> {
    use futures::SinkExt;
    let host = host.to_owned();
    tokio::spawn(async move {
        loop {
            let beat = Message::text(testkit::fixtures::heartbeat(1.0, 0.1));
            if ws.send(beat).await.is_err() {
                return;
            }
            let until = Instant::now() + Duration::from_millis(500);
            while let Ok(frame) = timeout(until - Instant::now(), ws.next()).await {
                let text = match frame {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(_)) => continue,
                    _ => return,
                };
                let v: Value = serde_json::from_str(&text).unwrap();
                if v["type"] != "command" {
                    continue;
                }
                let order = v["payload"].clone();
                orders.lock().unwrap().push((host.clone(), order.clone()));
                let result = match order["command"].as_str() {
                    Some("preview") => json!({"diff": {"changes": [
                        {"name": "openssl", "old": "3.0.14", "new": "3.0.15", "kind": "upgraded"}],
                        "closure_bytes_before": 10, "closure_bytes_after": 12,
                        "reboot_needed": false}, "store_path": STORE_PATH}),
                    Some("switch") => json!({"generation": 8}),
                    _ => Value::Null,
                };
                let done = json!({"type": "command_complete", "payload": {
                    "command_id": order["command_id"], "status": "ok", "exit_code": 0,
                    "duration_ms": 10, "last_seq": 0, "result": result}});
                if ws.send(Message::text(done.to_string())).await.is_err() {
                    return;
                }
            }
        }
    })
}

/// `nixdeck ctl ARGS` against `server`, as a script runs it: the token in `NIXDECK_TOKEN`.
/// Its exit code, stdout and stderr.
pub async fn ctl(server: &Server, token: &str, args: &[&str]) -> (i32, String, String) {
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_nixdeck"))
        .arg("ctl")
        .args(args)
        .env("NIXDECK_URL", server.url(""))
        .env("NIXDECK_TOKEN", token)
        .env_remove("NIXDECK_TOKEN_FILE")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = timeout(Duration::from_secs(120), run)
        .await
        .unwrap_or_else(|_| panic!("nixdeck ctl {args:?} did not end in 120 s"))
        .expect("running nixdeck ctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A personal API token of the admin with `role`, made as an admin would:
/// `nixdeck token create` on the server's database.
/// `nixdeck <args>` against the server's database, with `stdin` (the CLI works while the
/// dashboard runs): (success, stdout trimmed, stderr).
pub fn nixdeck_cli(server: &Server, args: &[&str], stdin: &str) -> (bool, String, String) {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_nixdeck"))
        .args(args)
        .env("NIXDECK_DATABASE_URL", started_database_url(&server.dir))
        .envs(on_postgres().then(|| ("NIXDECK_SECRET_KEY_FILE", server.dir.join("secret.key"))))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running nixdeck");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An API token of the admin's with `role`, made with `nixdeck token create`.
pub fn api_token(server: &Server, role: &str) -> String {
    // Names are unique per user; the default name is the time, to the second.
    static MADE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let name = format!(
        "test-{role}-{}",
        MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let (ok, out, err) = nixdeck_cli(
        server,
        &[
            "token",
            "create",
            "--user",
            "admin",
            "--role",
            role,
            "--expires",
            "90d",
            "--name",
            &name,
        ],
        "",
    );
    assert!(ok, "nixdeck token create: {out}{err}");
    out.lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .expect("a token")
        .to_owned()
}
