//! `GET /ws/agent`: one task per agent link. It authenticates the bearer token before the
//! upgrade, insists on `register` first, then feeds heartbeats to the hub and forwards the
//! hub's frames to the agent. A link that goes silent for three heartbeats is dropped.

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use nixdeck_core::hub::{AgentAttached, AgentClose, AgentOut};
use nixdeck_core::service::commands;
use nixdeck_core::service::hosts::{
    authenticate_agent, clean_register, enroll, host_id_for, save_registration, AgentIdentity,
};
use nixdeck_core::Core;
use protocol::{decode, Decoded, AGENT_MAX_FRAME, MISSED_HEARTBEATS, VERSION};
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::time::{interval, sleep_until, timeout, Instant, MissedTickBehavior};

use crate::http::error::error_response;
use protocol::messages::{Output, Registered};
use protocol::{AgentMessage, ServerMessage};

/// How long an agent has to send `register` after the upgrade.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);
/// The server pings every 20 s (contract).
const PING_EVERY: Duration = Duration::from_secs(20);
/// A frame to the agent that cannot be written in this time means a dead link.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Output lines are stored in batches: one transaction per this many lines, or per this
/// much time after the first buffered line, whichever comes first.
const OUTPUT_BATCH: usize = 2048;
const OUTPUT_LINGER: Duration = Duration::from_millis(10);

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

pub async fn handler(
    State(app): State<Core>,
    axum::Extension(super::session::ClientIp(ip)): axum::Extension<super::session::ClientIp>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    // The token is checked before anything else: a wrong token is a 401, upgrade or not;
    // an address that keeps failing gets 429s.
    let identity = match bearer(&headers) {
        Some(token) => authenticate_agent(&app, token).await,
        None => Err(common::AppError::Unauthorized),
    };
    let identity = match identity {
        Ok(identity) => identity,
        Err(e) => {
            let shown = ip.map(|ip| ip.to_string()).unwrap_or_default();
            tracing::warn!(
                ip = shown,
                "agent connection refused: missing or unknown token"
            );
            // Counted over every server on the database (`Limits::fail_agent`).
            let limited = match ip.map(nixdeck_core::service::limits::Source::of) {
                Some(source) => app.limits.fail_agent(&source).await,
                None => Ok(()),
            };
            let e = match limited {
                Err(wait) => nixdeck_core::service::limits::too_many(wait),
                Ok(()) => e,
            };
            // In the audit log as a tally (a flood of bad tokens writes a row per flush).
            app.refusals.note(
                "agent.auth",
                None,
                Some(&shown).filter(|s| !s.is_empty()).map(String::as_str),
                e.code(),
            );
            return error_response(&e);
        }
    };
    let ws = match upgrade {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    ws.max_message_size(AGENT_MAX_FRAME)
        .max_frame_size(AGENT_MAX_FRAME)
        // Small buffers: 10 000 idle sockets must stay cheap (P2); they grow for a big frame.
        // Reading in 2 KiB chunks instead of 4 took an idle socket from 15.6-16.1 KiB to
        // 13.8 KiB and left P6 (output lines/s) where it was (docs/BENCHMARKS.md).
        .read_buffer_size(2 * 1024)
        .write_buffer_size(4 * 1024)
        .on_upgrade(move |socket| async move {
            run(app, identity, ip.map(|ip| ip.to_string()), socket).await
        })
}

async fn close(socket: &mut WebSocket, code: u16, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = timeout(SEND_TIMEOUT, socket.send(Message::Close(Some(frame)))).await;
}

/// Whether a read error was a frame over the size limit (close with 1009).
pub fn is_too_big(err: &axum::Error) -> bool {
    let inner: &(dyn std::error::Error + 'static) = err;
    let mut source = Some(inner);
    while let Some(e) = source {
        if let Some(tungstenite::Error::Capacity(_)) = e.downcast_ref::<tungstenite::Error>() {
            return true;
        }
        source = e.source();
    }
    false
}

async fn run(app: Core, identity: AgentIdentity, ip: Option<String>, mut socket: WebSocket) {
    let register = match timeout(REGISTER_TIMEOUT, socket.recv()).await {
        Ok(Some(Ok(Message::Text(text)))) => match decode::<AgentMessage>(&text) {
            Decoded::Message(AgentMessage::Register(mut r)) => {
                // Before anything keeps, shows or logs what it says.
                clean_register(&mut r);
                r
            }
            _ => return close(&mut socket, 1008, "the first frame must be register").await,
        },
        Ok(Some(Err(e))) if is_too_big(&e) => {
            return close(&mut socket, 1009, "frame too large").await
        }
        _ => return close(&mut socket, 1008, "the first frame must be register").await,
    };
    let host_id = match host_id_for(&register.hostname) {
        Ok(id) => id,
        Err(e) => return close(&mut socket, 1008, &e.to_string()).await,
    };
    let mut new_token = None;
    let checkpoint = match identity {
        AgentIdentity::Host { id, checkpoint } if id == host_id => Some(checkpoint),
        AgentIdentity::Host { id, .. } => {
            tracing::warn!(
                token_for = id,
                claimed = host_id,
                "agent token used for another host"
            );
            return close(&mut socket, 1008, "this token belongs to another host").await;
        }
        AgentIdentity::Enrollment => match enroll(&app, &register, ip.as_deref()).await {
            Ok((_, token)) => {
                new_token = Some(token);
                None
            }
            Err(e) => {
                tracing::warn!(host = host_id, "enrollment refused: {e}");
                return close(&mut socket, 1008, &e.to_string()).await;
            }
        },
    };

    let interval_s = app.hub.interval_s();
    nixdeck_core::service::hosts::ensure_in_hub(&app, &host_id).await;
    let Ok(attached) = app.hub.attach_agent(&host_id, &register, checkpoint) else {
        tracing::warn!(host = host_id, "agent token revoked while it connected");
        return close(&mut socket, 1008, "token revoked").await;
    };
    let AgentAttached {
        conn_id,
        mut outbox,
        close: mut closing,
    } = attached;
    tracing::info!(
        host = host_id,
        conn_id,
        version = register.agent_version,
        "agent connected"
    );
    save_registration(&app, &host_id, &register);
    let registered = ServerMessage::Registered(Registered {
        host_id: host_id.clone(),
        dashboard_version: VERSION.to_owned(),
        heartbeat_interval_s: interval_s,
        agent_token: new_token,
    });
    commands::on_register(&app, &host_id, register.running_command.as_ref()).await;
    let text = serde_json::to_string(&registered).unwrap_or_default();
    if socket.send(Message::Text(text.into())).await.is_ok() {
        serve(
            &app,
            &host_id,
            conn_id,
            &mut socket,
            &mut outbox,
            &mut closing,
            interval_s,
        )
        .await;
    }
    if app.hub.detach_agent(&host_id, conn_id) {
        tracing::info!(host = host_id, conn_id, "agent disconnected");
    }
    // Write what the last heartbeats said now rather than at the next batch.
    nixdeck_core::service::hosts::flush_reports(&app).await;
}

async fn serve(
    app: &Core,
    host_id: &str,
    conn_id: u64,
    socket: &mut WebSocket,
    outbox: &mut tokio::sync::mpsc::Receiver<AgentOut>,
    closing: &mut tokio::sync::watch::Receiver<Option<AgentClose>>,
    interval_s: u32,
) {
    let silence_limit = Duration::from_secs(u64::from(interval_s * MISSED_HEARTBEATS) + 1);
    let mut ping = interval(PING_EVERY);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ping.tick().await;
    let mut link = AgentSession {
        app,
        host_id,
        conn_id,
        batch: Vec::new(),
        flush_at: Instant::now(),
    };
    loop {
        tokio::select! {
            frame = timeout(silence_limit, socket.recv()) => match frame {
                Err(_) => {
                    tracing::warn!(host = host_id, "no heartbeat for {} s; marking offline", silence_limit.as_secs());
                    link.flush(socket).await;
                    return close(socket, 1001, "missed heartbeats").await;
                }
                Ok(None) | Ok(Some(Ok(Message::Close(_)))) => {
                    link.flush(socket).await;
                    return;
                }
                Ok(Some(Err(e))) => {
                    link.flush(socket).await;
                    if is_too_big(&e) {
                        tracing::warn!(host = host_id, "frame over {AGENT_MAX_FRAME} bytes");
                        return close(socket, 1009, "frame too large").await;
                    }
                    tracing::debug!(host = host_id, "agent link error: {e}");
                    return;
                }
                Ok(Some(Ok(Message::Text(text)))) => {
                    if !link.handle(socket, &text).await {
                        return;
                    }
                }
                Ok(Some(Ok(Message::Binary(_)))) => {
                    app.hub.counters().malformed_frames.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(host = host_id, "ignored a binary frame");
                }
                Ok(Some(Ok(_))) => {} // ping / pong: the link is alive
            },
            _ = sleep_until(link.flush_at), if !link.batch.is_empty() => {
                if !link.flush(socket).await {
                    return;
                }
            }
            out = outbox.recv() => match out {
                Some(AgentOut::Frame(msg)) => {
                    if !send(socket, &msg).await {
                        return;
                    }
                }
                // The hub dropped this link (replaced, revoked, removed): its reason is
                // on the close channel, set before the drop.
                None => {
                    let why = *closing.borrow();
                    if let Some((code, reason)) = why {
                        link.flush(socket).await;
                        close(socket, code, reason).await;
                    }
                    return;
                }
            },
            // The hub closes a link on a channel of its own (never lost behind frames).
            changed = closing.changed() => {
                // The reason is set before the hub drops its end, so read it either way.
                let why = *closing.borrow();
                if let Some((code, reason)) = why {
                    link.flush(socket).await;
                    return close(socket, code, reason).await;
                }
                if changed.is_err() {
                    return;
                }
            },
            _ = ping.tick() => {
                if !matches!(timeout(SEND_TIMEOUT, socket.send(Message::Ping(Default::default()))).await, Ok(Ok(()))) {
                    return;
                }
            }
        }
    }
}

async fn send(socket: &mut WebSocket, msg: &ServerMessage) -> bool {
    let text = serde_json::to_string(msg).unwrap_or_default();
    matches!(
        timeout(SEND_TIMEOUT, socket.send(Message::Text(text.into()))).await,
        Ok(Ok(()))
    )
}

/// One agent link's frame handling, with its buffer of output lines not yet stored.
struct AgentSession<'a> {
    app: &'a Core,
    host_id: &'a str,
    conn_id: u64,
    batch: Vec<Output>,
    flush_at: Instant,
}

impl AgentSession<'_> {
    /// Handle one text frame; false when the link should end.
    async fn handle(&mut self, socket: &mut WebSocket, text: &str) -> bool {
        let (app, host_id) = (self.app, self.host_id);
        match decode::<AgentMessage>(text) {
            Decoded::Message(AgentMessage::Output(line)) => {
                if self.batch.is_empty() {
                    self.flush_at = Instant::now() + OUTPUT_LINGER;
                }
                self.batch.push(line);
                if self.batch.len() >= OUTPUT_BATCH {
                    return self.flush(socket).await;
                }
            }
            Decoded::Message(AgentMessage::Heartbeat(hb)) => {
                nixdeck_core::service::hosts::heartbeat(app, host_id, self.conn_id, &hb)
            }
            Decoded::Message(AgentMessage::CommandComplete(done)) => {
                // Every line before the completion is stored first.
                if !self.flush(socket).await {
                    return false;
                }
                if let Some(ack) = commands::on_complete(app, host_id, &done).await {
                    return send(socket, &ServerMessage::Ack(ack)).await;
                }
            }
            Decoded::Message(AgentMessage::CommandRejected(rej)) => {
                commands::on_rejected(app, host_id, &rej).await
            }
            Decoded::Message(AgentMessage::Status(report)) => {
                nixdeck_core::service::hosts::status(app, host_id, report).await
            }
            Decoded::Message(AgentMessage::Register(_)) => {
                tracing::debug!(host = host_id, "ignored a second register");
            }
            Decoded::Unknown(kind) => {
                app.hub
                    .counters()
                    .unknown_frames
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(host = host_id, kind, "ignored an unknown message type");
            }
            Decoded::Malformed(err) => {
                app.hub
                    .counters()
                    .malformed_frames
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(host = host_id, "skipped a malformed frame: {err}");
            }
        }
        true
    }

    /// Store the buffered lines and ack them; false when the link broke.
    async fn flush(&mut self, socket: &mut WebSocket) -> bool {
        if self.batch.is_empty() {
            return true;
        }
        let batch = std::mem::take(&mut self.batch);
        for ack in commands::ingest_output(self.app, self.host_id, batch).await {
            if !send(socket, &ServerMessage::Ack(ack)).await {
                return false;
            }
        }
        true
    }
}
