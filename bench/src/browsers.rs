//! Simulated browsers: read `/ws` as fast as they can and time every `host_heartbeat`.
//! A slow browser connects and then never reads again.

use crate::clock::{measuring, now_ms};
use futures::StreamExt;
use serde::Deserialize;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::{sleep, timeout};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

pub struct Target {
    pub ws_url: String,
    /// nixdeck: `Origin` and the session cookie; the raw relay needs neither.
    pub origin: Option<String>,
    pub cookie: Option<String>,
    /// Sockets open right now, over all browsers.
    pub connected: std::sync::atomic::AtomicUsize,
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub slow: bool,
    /// Heartbeat events read inside the measured window, and their latencies (ms).
    pub events: u64,
    pub samples: Vec<f32>,
    pub connects: u64,
    /// Sockets the server ended, and those of them it closed with 1013 ("fell behind");
    /// `drops_measured` counts the ones inside the measured window.
    pub drops: u64,
    pub lag_closes: u64,
    pub drops_measured: u64,
    /// The first frame after each connect (the snapshot): its size and its time from the
    /// start of the handshake.
    pub snapshot_bytes: usize,
    pub snapshot_ms: Vec<f64>,
}

// Only what latency needs; serde skips the rest of the frame.
#[derive(Deserialize)]
struct Frame {
    payload: Payload,
}
#[derive(Deserialize)]
struct Payload {
    metrics: Option<Load>,
}
#[derive(Deserialize)]
struct Load {
    load: f64,
}

/// The tag comes first in every frame (serde writes `type` before `payload`).
const HEARTBEAT_PREFIX: &str = r#"{"type":"host_heartbeat""#;

/// Until `stop` turns true. A browser the server drops (it fell behind) reconnects after
/// a second, as the real page does, and gets a new snapshot.
pub async fn run(target: &Target, slow: bool, mut stop: watch::Receiver<bool>) -> Outcome {
    let mut out = Outcome {
        slow,
        ..Outcome::default()
    };
    while !*stop.borrow() {
        let started = now_ms();
        let ws = tokio::select! {
            ws = connect(target) => ws,
            _ = stop.changed() => break,
        };
        let Some(mut ws) = ws else {
            sleep(Duration::from_secs(1)).await;
            continue;
        };
        out.connects += 1;
        target.connected.fetch_add(1, Ordering::Relaxed);
        if slow {
            // Hold the socket open and read nothing: the server's buffers fill up.
            let _ = stop.changed().await;
            break;
        }
        let mut first = true;
        loop {
            let frame = tokio::select! {
                frame = ws.next() => frame,
                _ = stop.changed() => return out,
            };
            let received = now_ms();
            let text = match frame {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Close(close))) => {
                    if close.is_some_and(|c| u16::from(c.code) == 1013) {
                        out.lag_closes += 1;
                    }
                    out.dropped(target);
                    break;
                }
                Some(Err(_)) | None => {
                    out.dropped(target);
                    break;
                }
                Some(Ok(_)) => continue,
            };
            if first {
                first = false;
                out.snapshot_bytes = text.len();
                out.snapshot_ms.push(received - started);
            }
            if !text.starts_with(HEARTBEAT_PREFIX) || !measuring() {
                continue;
            }
            if let Ok(Frame {
                payload:
                    Payload {
                        metrics: Some(Load { load: sent }),
                    },
            }) = serde_json::from_str::<Frame>(&text)
            {
                out.events += 1;
                out.samples.push((received - sent) as f32);
            }
        }
        sleep(Duration::from_secs(1)).await;
    }
    out
}

impl Outcome {
    fn dropped(&mut self, target: &Target) {
        target.connected.fetch_sub(1, Ordering::Relaxed);
        self.drops += 1;
        if measuring() {
            self.drops_measured += 1;
        }
    }
}

async fn connect(
    target: &Target,
) -> Option<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
> {
    let mut request = target.ws_url.as_str().into_client_request().ok()?;
    if let Some(origin) = &target.origin {
        request.headers_mut().insert("origin", origin.parse().ok()?);
    }
    if let Some(cookie) = &target.cookie {
        request.headers_mut().insert("cookie", cookie.parse().ok()?);
    }
    // The snapshot of a big fleet is one large frame: no size limits on this side.
    let config = WebSocketConfig::default()
        .max_message_size(None)
        .max_frame_size(None);
    let connect = tokio_tungstenite::connect_async_with_config(request, Some(config), true);
    match timeout(Duration::from_secs(30), connect).await {
        Ok(Ok((ws, _))) => Some(ws),
        _ => None,
    }
}
