//! `raw-relay`: the floor nixdeck is measured against. A bare tokio-tungstenite server with
//! no auth, no storage and no state: agents on `/ws/agent` get `registered` and every
//! heartbeat goes to every browser on `/ws` as a `host_heartbeat`, serialised once and
//! fanned out through a broadcast ring, the same shape and lag policy as nixdeck's hub.

use clap::Parser;
use futures::{SinkExt, StreamExt};
use protocol::messages::{AgentMessage, BrowserEvent, HostHeartbeat, Registered, ServerMessage};
use protocol::{decode, Decoded, Timestamp, AGENT_MAX_FRAME, BROWSER_MAX_FRAME};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

/// nixdeck's numbers, so the comparison is of the work, not of the policy.
const BROWSER_LAG_LIMIT: usize = 4096;
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Parser, Debug)]
#[command(about = "A minimal heartbeat relay to compare nixdeck's throughput against")]
struct Args {
    #[arg(long, default_value = "127.0.0.1:3960")]
    listen: String,
    #[arg(long, default_value_t = protocol::DEFAULT_HEARTBEAT_S)]
    heartbeat_interval_s: u32,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let listener = TcpListener::bind(&args.listen).await?;
    eprintln!("raw-relay listening on ws://{}", args.listen);
    let (events, _) = broadcast::channel::<Utf8Bytes>(BROWSER_LAG_LIMIT);
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(conn) => conn,
            // Out of file descriptors and the like: keep serving the ones we have.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let events = events.clone();
        let interval = args.heartbeat_interval_s;
        tokio::spawn(async move {
            let _ = serve(tcp, events, interval).await;
        });
    }
}

async fn serve(
    tcp: TcpStream,
    events: broadcast::Sender<Utf8Bytes>,
    interval_s: u32,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    // The server's own buffer sizes and frame limits, so memory per socket compares too.
    // They depend on the path, which must be known before the handshake: peek at it.
    let path = request_path(&tcp).await.unwrap_or_default();
    let config = if path == "/ws/agent" {
        WebSocketConfig::default()
            .read_buffer_size(8 * 1024)
            .write_buffer_size(8 * 1024)
            .max_message_size(Some(AGENT_MAX_FRAME))
            .max_frame_size(Some(AGENT_MAX_FRAME))
    } else {
        WebSocketConfig::default()
            .read_buffer_size(4 * 1024)
            .write_buffer_size(8 * 1024)
            .max_message_size(Some(BROWSER_MAX_FRAME))
            .max_frame_size(Some(BROWSER_MAX_FRAME))
    };
    let mut ws = tokio_tungstenite::accept_async_with_config(tcp, Some(config)).await?;
    match path.as_str() {
        "/ws/agent" => agent_link(ws, events, interval_s).await,
        "/ws" => browser_link(ws, events.subscribe()).await,
        _ => ws.close(None).await,
    }
}

/// The path of the request line (`GET /ws/agent HTTP/1.1`), read without consuming it.
async fn request_path(tcp: &TcpStream) -> Option<String> {
    let mut buf = [0u8; 512];
    for _ in 0..100 {
        let n = tcp.peek(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        if let Some(end) = buf[..n].windows(2).position(|w| w == b"\r\n") {
            let line = std::str::from_utf8(&buf[..end]).ok()?;
            let target = line.split(' ').nth(1)?;
            return Some(target.split('?').next().unwrap_or(target).to_owned());
        }
        if n == buf.len() {
            return None;
        }
        // Only part of the line has arrived.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

async fn agent_link(
    mut ws: WebSocketStream<TcpStream>,
    events: broadcast::Sender<Utf8Bytes>,
    interval_s: u32,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    let mut host_id = None;
    while let Some(frame) = ws.next().await {
        let Message::Text(text) = frame? else {
            continue;
        };
        match decode::<AgentMessage>(&text) {
            Decoded::Message(AgentMessage::Register(reg)) => {
                let id = reg.hostname.to_lowercase();
                let reply = ServerMessage::Registered(Registered {
                    host_id: id.clone(),
                    dashboard_version: protocol::VERSION.to_owned(),
                    heartbeat_interval_s: interval_s,
                    agent_token: None,
                });
                ws.send(Message::text(
                    serde_json::to_string(&reply).unwrap_or_default(),
                ))
                .await?;
                host_id = Some(id);
            }
            Decoded::Message(AgentMessage::Heartbeat(hb)) => {
                let Some(id) = &host_id else { continue };
                let event = BrowserEvent::HostHeartbeat(HostHeartbeat {
                    host_id: id.clone(),
                    online: true,
                    last_seen: Timestamp::now(),
                    metrics: hb.metrics,
                });
                if let Ok(text) = serde_json::to_string(&event) {
                    // No browsers is fine.
                    let _ = events.send(Utf8Bytes::from(text));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

async fn browser_link(
    ws: WebSocketStream<TcpStream>,
    mut events: broadcast::Receiver<Utf8Bytes>,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    let (mut sink, mut stream) = ws.split();
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Ok(text) => match timeout(SEND_TIMEOUT, sink.send(Message::Text(text))).await {
                    Ok(result) => result?,
                    Err(_) => return Ok(()), // stopped reading
                },
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let frame = CloseFrame { code: CloseCode::from(1013), reason: "fell behind".into() };
                    return sink.send(Message::Close(Some(frame))).await;
                }
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            },
            incoming = stream.next() => match incoming {
                None | Some(Ok(Message::Close(_))) | Some(Err(_)) => return Ok(()),
                Some(Ok(_)) => {}
            },
        }
    }
}
