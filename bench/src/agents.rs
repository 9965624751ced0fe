//! Simulated agents: register, then heartbeat on a fixed phase, and reconnect like the real
//! agent (full-jitter backoff, reset after a registered session; every lost session moves
//! on to the next of the dashboard's URLs, `protocol::backoff::Rotation`).

use crate::clock::{measuring, now_ms};
use crate::setup::Tokens;
use futures::{SinkExt, StreamExt};
use protocol::backoff::Rotation;
use protocol::messages::{AgentMessage, Heartbeat, Register, ServerMessage};
use protocol::{decode, Decoded, HostType, Metrics};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::{interval_at, timeout, Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

/// What every agent of this process shares: the schedule and the counters.
pub struct Fleet {
    pub agents: usize,
    pub interval: Duration,
    /// Agent i sends at `phase_start + i * interval / agents + k * interval`, so the load
    /// is even over each interval, also after reconnects.
    pub phase_start: Instant,
    /// Caps the handshakes in flight while the fleet first connects.
    pub ramp: Semaphore,
    pub sent: AtomicU64,
    pub sent_measured: AtomicU64,
    pub registered: AtomicUsize,
    pub failed_attempts: AtomicU64,
    pub drops: AtomicU64,
    /// Storm: set when the fleet is steady; the first link lost after that is the start.
    pub storm_armed: AtomicBool,
    pub first_drop_ms: Mutex<Option<f64>>,
    /// Storm: whether each agent's link dropped after it was armed. A failover drops only
    /// the killed replica's agents; the others are not waited for.
    pub dropped: Vec<AtomicBool>,
    /// When each agent last registered (ms on the process clock).
    pub registered_at: Vec<Mutex<Option<f64>>>,
    /// Host tokens handed out at enrollment, to be saved for the next run.
    pub new_tokens: Mutex<Tokens>,
}

impl Fleet {
    pub fn new(agents: usize, interval: Duration, ramp: usize) -> Fleet {
        Fleet {
            agents,
            interval,
            phase_start: Instant::now(),
            ramp: Semaphore::new(ramp),
            sent: AtomicU64::new(0),
            sent_measured: AtomicU64::new(0),
            registered: AtomicUsize::new(0),
            failed_attempts: AtomicU64::new(0),
            drops: AtomicU64::new(0),
            storm_armed: AtomicBool::new(false),
            first_drop_ms: Mutex::new(None),
            dropped: (0..agents).map(|_| AtomicBool::new(false)).collect(),
            registered_at: (0..agents).map(|_| Mutex::new(None)).collect(),
            new_tokens: Mutex::new(Tokens::new()),
        }
    }

    /// The first send time of agent `i` that is not in the past.
    fn next_slot(&self, i: usize) -> Instant {
        let offset = self.interval.mul_f64(i as f64 / self.agents.max(1) as f64);
        let mut at = self.phase_start + offset;
        let now = Instant::now();
        if at < now {
            let behind = (now - at).as_secs_f64() / self.interval.as_secs_f64();
            at += self.interval.mul_f64(behind.ceil());
        }
        at
    }
}

pub fn hostname(prefix: &str, i: usize) -> String {
    format!("{prefix}-{i:05}")
}

/// One agent (the process's `i`th), on the dashboard's agent URLs `ws_urls` from the
/// `start`th on, forever: the caller aborts it at the end of the run.
pub async fn run(
    fleet: Arc<Fleet>,
    i: usize,
    ws_urls: Arc<[String]>,
    start: usize,
    hostname: String,
    mut token: String,
) {
    let mut rotation = Rotation::starting_at(ws_urls.len(), start);
    let mut first = true;
    loop {
        // Only the first connection waits for the ramp: reconnects (the storm) must not be
        // smoothed by the harness.
        let permit = if first {
            fleet.ramp.acquire().await.ok()
        } else {
            None
        };
        first = false;
        let ws_url = &ws_urls[rotation.current()];
        let registered = session(&fleet, i, ws_url, &hostname, &mut token, permit).await;
        if !registered {
            fleet.failed_attempts.fetch_add(1, Ordering::Relaxed);
        }
        let delay = rotation.after_session(registered, rand::random::<f64>());
        tokio::time::sleep(delay).await;
    }
}

/// One connection; true when it got as far as `registered`.
async fn session(
    fleet: &Fleet,
    i: usize,
    ws_url: &str,
    hostname: &str,
    token: &mut String,
    permit: Option<tokio::sync::SemaphorePermit<'_>>,
) -> bool {
    let Ok(mut request) = ws_url.into_client_request() else {
        return false;
    };
    let Ok(auth) = format!("Bearer {token}").parse() else {
        return false;
    };
    request.headers_mut().insert("authorization", auth);
    // Small buffers, like the server's own for agents: 10 000 of them must fit.
    let config = WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0);
    let connect = tokio_tungstenite::connect_async_with_config(request, Some(config), true);
    let Ok(Ok((mut ws, _))) = timeout(Duration::from_secs(30), connect).await else {
        return false;
    };
    let register = AgentMessage::Register(Register {
        hostname: hostname.to_owned(),
        host_type: HostType::Nixos,
        agent_version: protocol::VERSION.to_owned(),
        os_version: None,
        nixpkgs_version: None,
        generation: None,
        lock_hash: None,
        lock_updated_at: None,
        repo_url: None,
        repo_dir: None,
        branch: None,
        heartbeat_interval_s: fleet.interval.as_secs().max(1) as u32,
        theme_color: None,
        location: None,
        device_type: None,
        running_command: None,
        generations: None,
        reboot_needed: None,
        tags: None,
    });
    let Ok(text) = serde_json::to_string(&register) else {
        return false;
    };
    if ws.send(Message::Text(text.into())).await.is_err() {
        return false;
    }
    let reply = timeout(Duration::from_secs(30), ws.next()).await;
    let Ok(Some(Ok(Message::Text(reply)))) = reply else {
        return false;
    };
    let Decoded::Message(ServerMessage::Registered(registered)) = decode::<ServerMessage>(&reply)
    else {
        return false;
    };
    if let Some(new) = registered.agent_token {
        // Enrolled: from now on this host uses its own token, like the real agent.
        *token = new.clone();
        lock(&fleet.new_tokens).insert(hostname.to_owned(), new);
    }
    drop(permit);
    fleet.registered.fetch_add(1, Ordering::Relaxed);
    *lock(&fleet.registered_at[i]) = Some(now_ms());

    heartbeats(fleet, i, &mut ws).await;

    fleet.registered.fetch_sub(1, Ordering::Relaxed);
    fleet.drops.fetch_add(1, Ordering::Relaxed);
    if fleet.storm_armed.load(Ordering::Relaxed) {
        lock(&fleet.first_drop_ms).get_or_insert_with(now_ms);
        fleet.dropped[i].store(true, Ordering::Relaxed);
    }
    true
}

/// Heartbeats until the link ends. Reading goes on between them: pings are answered
/// while reading, and a close from the server must be noticed at once.
async fn heartbeats<S>(fleet: &Fleet, i: usize, ws: &mut tokio_tungstenite::WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut tick = interval_at(fleet.next_slot(i), fleet.interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // Plausible numbers that differ per host; `load` carries the send time.
    let cpu = (i % 100) as f64;
    loop {
        tokio::select! {
            frame = ws.next() => match frame {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            },
            _ = tick.tick() => {
                let heartbeat = AgentMessage::Heartbeat(Heartbeat {
                    metrics: Some(Metrics { cpu, ram: 42.0, swap: 0.0, load: now_ms(), disk: None }),
                    generation: None,
                    lock_hash: None,
                    lock_updated_at: None,
                    pending_command: None,
                });
                let Ok(text) = serde_json::to_string(&heartbeat) else { return };
                if ws.send(Message::Text(text.into())).await.is_err() {
                    return;
                }
                fleet.sent.fetch_add(1, Ordering::Relaxed);
                if measuring() {
                    fleet.sent_measured.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// A poisoned lock only means another agent task panicked; the data is still usable.
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
