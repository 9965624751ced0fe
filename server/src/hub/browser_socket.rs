//! `GET /ws`: one task per browser. It sends a snapshot, then every delta in order. A
//! browser that falls behind is disconnected (it reconnects and gets a fresh snapshot); it
//! can never slow the hub or other browsers, which only ever push into a broadcast ring.

use super::agent_socket::is_too_big;
use crate::http::error::error_response;
use crate::http::session::{origin_matches, SessionCookie};
use crate::service::auth::session_alive;
use crate::state::AppState;
use app::backend::Viewer;
use app::AppError;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures::{SinkExt, StreamExt};
use protocol::BROWSER_MAX_FRAME;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::{interval, timeout, MissedTickBehavior};

/// An open socket re-checks its session this often, so logout or disabling a user closes
/// it within this time.
const SESSION_CHECK: Duration = Duration::from_secs(5);
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// A snapshot of a large fleet is megabytes: give it longer than one event.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn handler(
    State(app): State<AppState>,
    headers: HeaderMap,
    viewer: Option<Extension<Viewer>>,
    cookie: Option<Extension<SessionCookie>>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let (Some(Extension(viewer)), Some(Extension(cookie))) = (viewer, cookie) else {
        return error_response(&AppError::Unauthorized);
    };
    let origin = headers
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .unwrap_or("");
    if !origin_matches(origin, &headers, app.config.public_url.as_deref()) {
        return error_response(&AppError::Forbidden("WebSocket from another origin".into()));
    }
    let ws = match upgrade {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    ws.max_message_size(BROWSER_MAX_FRAME)
        .max_frame_size(BROWSER_MAX_FRAME)
        .read_buffer_size(4 * 1024)
        .write_buffer_size(8 * 1024)
        .on_upgrade(move |socket| run(app, viewer, cookie.0, socket))
}

async fn close(
    socket: &mut futures::stream::SplitSink<WebSocket, Message>,
    code: u16,
    reason: &str,
) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = timeout(SEND_TIMEOUT, socket.send(Message::Close(Some(frame)))).await;
}

async fn run(app: AppState, viewer: Viewer, cookie: String, socket: WebSocket) {
    let (mut sink, stream) = socket.split();
    tracing::debug!(user = viewer.username, "browser connected");
    let slot = app.hub.snapshot_slot().await;
    let (snapshot, events) = app.hub.subscribe();
    // A browser that does not read its snapshot must not hold it (and its task) forever.
    match timeout(SNAPSHOT_TIMEOUT, sink.send(Message::Text(snapshot))).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) => return,
        Err(_) => {
            app.hub
                .counters()
                .lagged_browsers
                .fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                user = viewer.username,
                "browser did not read its snapshot; disconnecting it"
            );
            return;
        }
    }
    drop(slot);
    serve(app, viewer, cookie, sink, stream, events).await;
}

async fn serve(
    app: AppState,
    viewer: Viewer,
    cookie: String,
    mut sink: futures::stream::SplitSink<WebSocket, Message>,
    mut stream: futures::stream::SplitStream<WebSocket>,
    mut events: tokio::sync::broadcast::Receiver<axum::extract::ws::Utf8Bytes>,
) {
    let mut check = interval(SESSION_CHECK);
    check.set_missed_tick_behavior(MissedTickBehavior::Delay);
    check.tick().await;
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Ok(text) => match timeout(SEND_TIMEOUT, sink.send(Message::Text(text))).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return, // the browser went away
                    Err(_) => {
                        app.hub.counters().lagged_browsers.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(user = viewer.username, "browser stopped reading; disconnecting it");
                        return;
                    }
                },
                Err(RecvError::Lagged(missed)) => {
                    app.hub.counters().lagged_browsers.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(user = viewer.username, missed, "browser fell behind; disconnecting it");
                    return close(&mut sink, 1013, "fell behind; reconnect for a fresh snapshot").await;
                }
                Err(RecvError::Closed) => return,
            },
            incoming = stream.next() => match incoming {
                None | Some(Ok(Message::Close(_))) => return,
                Some(Err(e)) => {
                    if is_too_big(&e) {
                        return close(&mut sink, 1009, "frame too large").await;
                    }
                    return;
                }
                // Browsers have nothing to say on this socket yet.
                Some(Ok(_)) => {}
            },
            _ = check.tick() => {
                if !session_alive(&app, &cookie).await {
                    return close(&mut sink, 4401, "session ended").await;
                }
            }
        }
    }
}
