//! `GET /ws/agent`: one task per agent link. It authenticates the bearer token before the
//! upgrade, insists on `register` first, then feeds heartbeats to the hub and forwards the
//! hub's frames to the agent. A link that goes silent for three heartbeats is dropped.

use super::AgentOut;
use crate::service::hosts::{
    authenticate_agent, enroll, host_id_for, save_registration, AgentIdentity,
};
use crate::state::AppState;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use protocol::messages::*;
use protocol::{decode, Decoded, AGENT_MAX_FRAME, MISSED_HEARTBEATS, VERSION};
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::time::{interval, timeout, MissedTickBehavior};

use crate::http::error::error_response;

/// How long an agent has to send `register` after the upgrade.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);
/// The server pings every 20 s (contract).
const PING_EVERY: Duration = Duration::from_secs(20);
/// A frame to the agent that cannot be written in this time means a dead link.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

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
    State(app): State<AppState>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    // The token is checked before anything else: a wrong token is a 401, upgrade or not.
    let identity = match bearer(&headers) {
        Some(token) => match authenticate_agent(&app, token).await {
            Ok(identity) => identity,
            Err(e) => {
                tracing::warn!("agent connection refused: unknown token");
                return error_response(&e);
            }
        },
        None => return error_response(&app::AppError::Unauthorized),
    };
    let ws = match upgrade {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    ws.max_message_size(AGENT_MAX_FRAME)
        .max_frame_size(AGENT_MAX_FRAME)
        .read_buffer_size(8 * 1024)
        .write_buffer_size(8 * 1024)
        .on_upgrade(move |socket| async move { run(app, identity, socket).await })
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

async fn run(app: AppState, identity: AgentIdentity, mut socket: WebSocket) {
    let register = match timeout(REGISTER_TIMEOUT, socket.recv()).await {
        Ok(Some(Ok(Message::Text(text)))) => match decode::<AgentMessage>(&text) {
            Decoded::Message(AgentMessage::Register(r)) => r,
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
    match identity {
        AgentIdentity::Host(id) if id == host_id => {}
        AgentIdentity::Host(id) => {
            tracing::warn!(
                token_for = id,
                claimed = host_id,
                "agent token used for another host"
            );
            return close(&mut socket, 1008, "this token belongs to another host").await;
        }
        AgentIdentity::Enrollment => match enroll(&app, &register).await {
            Ok((_, token)) => new_token = Some(token),
            Err(e) => {
                tracing::warn!(host = host_id, "enrollment refused: {e}");
                return close(&mut socket, 1008, &e.to_string()).await;
            }
        },
    }

    let interval_s = app.hub.interval_s();
    let (conn_id, mut outbox) = app.hub.attach_agent(&host_id, &register);
    tracing::info!(
        host = host_id,
        conn_id,
        version = register.agent_version,
        "agent connected"
    );
    if let Err(e) = save_registration(&app, &host_id, &register).await {
        tracing::warn!(host = host_id, "registration not saved: {e}");
    }
    let registered = ServerMessage::Registered(Registered {
        host_id: host_id.clone(),
        dashboard_version: VERSION.to_owned(),
        heartbeat_interval_s: interval_s,
        agent_token: new_token,
    });
    let text = serde_json::to_string(&registered).unwrap_or_default();
    if socket.send(Message::Text(text.into())).await.is_ok() {
        serve(
            &app,
            &host_id,
            conn_id,
            &mut socket,
            &mut outbox,
            interval_s,
        )
        .await;
    }
    if app.hub.detach_agent(&host_id, conn_id) {
        tracing::info!(host = host_id, conn_id, "agent disconnected");
    }
    // Write what the last heartbeats said now rather than at the next batch.
    let unsaved = app.hub.take_unsaved();
    if let Err(e) = app.db.save_seen(&unsaved).await {
        tracing::warn!("saving last-seen: {e}");
    }
}

async fn serve(
    app: &AppState,
    host_id: &str,
    conn_id: u64,
    socket: &mut WebSocket,
    outbox: &mut tokio::sync::mpsc::Receiver<AgentOut>,
    interval_s: u32,
) {
    let silence_limit = Duration::from_secs(u64::from(interval_s * MISSED_HEARTBEATS) + 1);
    let mut ping = interval(PING_EVERY);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ping.tick().await;
    loop {
        tokio::select! {
            frame = timeout(silence_limit, socket.recv()) => match frame {
                Err(_) => {
                    tracing::warn!(host = host_id, "no heartbeat for {} s; marking offline", silence_limit.as_secs());
                    return close(socket, 1001, "missed heartbeats").await;
                }
                Ok(None) | Ok(Some(Ok(Message::Close(_)))) => return,
                Ok(Some(Err(e))) => {
                    if is_too_big(&e) {
                        tracing::warn!(host = host_id, "frame over {AGENT_MAX_FRAME} bytes");
                        return close(socket, 1009, "frame too large").await;
                    }
                    tracing::debug!(host = host_id, "agent link error: {e}");
                    return;
                }
                Ok(Some(Ok(Message::Text(text)))) => handle_frame(app, host_id, conn_id, &text),
                Ok(Some(Ok(Message::Binary(_)))) => {
                    app.hub.counters().malformed_frames.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(host = host_id, "ignored a binary frame");
                }
                Ok(Some(Ok(_))) => {} // ping / pong: the link is alive
            },
            out = outbox.recv() => match out {
                Some(AgentOut::Frame(msg)) => {
                    let text = serde_json::to_string(&msg).unwrap_or_default();
                    if !matches!(timeout(SEND_TIMEOUT, socket.send(Message::Text(text.into()))).await, Ok(Ok(()))) {
                        return;
                    }
                }
                Some(AgentOut::Close(code, reason)) => return close(socket, code, reason).await,
                None => return,
            },
            _ = ping.tick() => {
                if !matches!(timeout(SEND_TIMEOUT, socket.send(Message::Ping(Default::default()))).await, Ok(Ok(()))) {
                    return;
                }
            }
        }
    }
}

fn handle_frame(app: &AppState, host_id: &str, conn_id: u64, text: &str) {
    match decode::<AgentMessage>(text) {
        Decoded::Message(AgentMessage::Heartbeat(hb)) => app.hub.heartbeat(host_id, conn_id, &hb),
        Decoded::Message(AgentMessage::Register(_)) => {
            tracing::debug!(host = host_id, "ignored a second register");
        }
        Decoded::Message(other) => {
            // Commands arrive with the commands slice; until then these are logged only.
            tracing::debug!(host = host_id, "not handled yet: {other:?}");
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
}
