//! Several dashboard URLs: the real agent binary, given two `--url`s, skips one where
//! nothing listens and moves to the other when the dashboard it is connected to dies.
//! The dashboards are tiny WebSocket servers in the test, so a "dead" one is a port with
//! nothing behind it, and a killed one closes its socket and its listener at once, which
//! is what the agent sees of a dashboard process that dies.

use futures::{SinkExt, StreamExt};
use protocol::messages::Registered;
use protocol::{decode, AgentMessage, Decoded, ServerMessage};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

const AGENT: &str = env!("CARGO_BIN_EXE_nixdeck-agent");

/// Full jitter under a 1 s ceiling per hop, plus the connect: generous for a loaded CI box.
const REACH: Duration = Duration::from_secs(10);

type ServerSocket = WebSocketStream<TcpStream>;

/// The agent process, killed when the test ends however it ends; its log is printed
/// when the test fails.
struct Agent(Child, std::path::PathBuf);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.1).unwrap_or_default();
            eprintln!("agent log:\n{log}");
        }
    }
}

fn spawn_agent(urls: &[String], state: &std::path::Path) -> Agent {
    let log = state.join("agent.log");
    let mut cmd = Command::new(AGENT);
    for (key, _) in std::env::vars() {
        if key.starts_with("NIXDECK_") {
            cmd.env_remove(key);
        }
    }
    for url in urls {
        cmd.args(["--url", url]);
    }
    let child = cmd
        .args([
            "--token",
            "t",
            "--hostname",
            "web-1",
            "--host-type",
            "nixos",
        ])
        .arg("--state-dir")
        .arg(state.join("state"))
        // Not this machine's profile: the test must not depend on what it has.
        .arg("--system-profile")
        .arg(state.join("profiles/system"))
        .arg("--current-system")
        .arg(state.join("current-system"))
        .arg("--booted-system")
        .arg(state.join("booted-system"))
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("starting nixdeck-agent");
    Agent(child, log)
}

async fn listen() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    (listener, url)
}

/// A loopback URL where nothing listens (a port just freed).
async fn dead_url() -> String {
    listen().await.1
}

/// Accepts the agent's connection and answers its `register`, as the dashboard does.
async fn accept_registered(listener: &TcpListener) -> ServerSocket {
    let (tcp, _) = timeout(REACH, listener.accept())
        .await
        .expect("the agent connects")
        .unwrap();
    let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
    let frame = timeout(REACH, ws.next())
        .await
        .expect("a register frame")
        .expect("the agent hung up")
        .unwrap();
    let Message::Text(text) = frame else {
        panic!("the first frame must be text, got {frame:?}");
    };
    match decode::<AgentMessage>(&text) {
        Decoded::Message(AgentMessage::Register(register)) => {
            assert_eq!(register.hostname, "web-1")
        }
        other => panic!("the first frame must be register, got {other:?}"),
    }
    let registered = ServerMessage::Registered(Registered {
        host_id: "web-1".into(),
        dashboard_version: protocol::VERSION.into(),
        heartbeat_interval_s: 1,
        agent_token: None,
    });
    ws.send(Message::text(serde_json::to_string(&registered).unwrap()))
        .await
        .unwrap();
    ws
}

/// A heartbeat arrives: the session is up, not just the handshake.
async fn heartbeat(ws: &mut ServerSocket) {
    timeout(REACH, async {
        loop {
            let frame = ws.next().await.expect("the agent hung up").unwrap();
            if let Message::Text(text) = frame {
                if let Decoded::Message(AgentMessage::Heartbeat(_)) = decode::<AgentMessage>(&text)
                {
                    return;
                }
            }
        }
    })
    .await
    .expect("a heartbeat")
}

#[tokio::test]
async fn the_first_url_is_dead_so_the_agent_connects_to_the_second() {
    let dir = tempfile::tempdir().unwrap();
    let (b, b_url) = listen().await;
    let _agent = spawn_agent(&[dead_url().await, b_url], dir.path());
    let mut ws = accept_registered(&b).await;
    heartbeat(&mut ws).await;
}

#[tokio::test]
async fn when_its_dashboard_dies_the_agent_moves_to_the_other_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let (a, a_url) = listen().await;
    let (b, b_url) = listen().await;
    let a_addr = a.local_addr().unwrap();
    let _agent = spawn_agent(&[a_url, b_url], dir.path());

    // The first URL first, while it answers.
    let mut on_a = accept_registered(&a).await;
    heartbeat(&mut on_a).await;
    // A dies: its socket and its listener go at once, with no close frame.
    drop(on_a);
    drop(a);
    let mut on_b = accept_registered(&b).await;
    heartbeat(&mut on_b).await;

    // A comes back on its address and B dies: the agent wraps round to A.
    let a = TcpListener::bind(a_addr).await.unwrap();
    drop(on_b);
    drop(b);
    let mut on_a = accept_registered(&a).await;
    heartbeat(&mut on_a).await;
}
