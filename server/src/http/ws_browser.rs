//! `GET /ws`: one task per browser. It sends a snapshot, then every delta in order. A
//! browser that falls behind is disconnected (it reconnects and gets a fresh snapshot); it
//! can never slow the hub or other browsers, which only ever push into a broadcast ring.
//! One user has at most `NIXDECK_MAX_SOCKETS_PER_USER` sockets open (the next is answered
//! 429 before the upgrade) and at most half of the snapshot sends in flight (`Hub`).
//!
//! The upgrade is done here rather than by axum's `WebSocketUpgrade`, for one reason: the
//! snapshot of a large fleet (≈ 1 kB per host) goes out as a fragmented message of 64 KiB
//! frames. Sent whole, tungstenite's write buffer would grow to the snapshot's size and keep
//! that capacity for the socket's life (10 MB per browser at 10 000 hosts).

use crate::http::error::error_response;
use crate::http::session::{origin_matches, BearerToken, SessionCookie};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use common::AppError;
use common::Viewer;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use nixdeck_core::hub::BrowserSeat;
use nixdeck_core::service::auth::session_alive;
use nixdeck_core::Core;
use protocol::BROWSER_MAX_FRAME;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::{interval, timeout, MissedTickBehavior};
use tokio_tungstenite::WebSocketStream;
use tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tungstenite::protocol::frame::Frame;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tungstenite::{Bytes, Message, Utf8Bytes};

type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;
type Sink = SplitSink<Socket, Message>;

/// An open socket re-checks its session this often, so logout or disabling a user closes
/// it within this time.
const SESSION_CHECK: Duration = Duration::from_secs(5);
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// A snapshot of a large fleet is megabytes: give it longer than one event.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(30);
/// Retry-After of a socket refused because its user has the most open: a tab that
/// closes frees its seat at once.
const SEAT_RETRY_S: u64 = 5;
/// Frame size for a fragmented snapshot.
const FRAGMENT: usize = 64 * 1024;

pub async fn handler(
    State(app): State<Core>,
    headers: HeaderMap,
    viewer: Option<Extension<Viewer>>,
    cookie: Option<Extension<SessionCookie>>,
    bearer: Option<Extension<BearerToken>>,
    mut req: Request,
) -> Response {
    let credential = match (bearer, cookie) {
        (Some(Extension(BearerToken(t))), _) => Credential::Token(t),
        (None, Some(Extension(SessionCookie(c)))) => Credential::Session(c),
        (None, None) => return error_response(&AppError::Unauthorized),
    };
    let Some(Extension(viewer)) = viewer else {
        return error_response(&AppError::Unauthorized);
    };
    let origin = headers
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .unwrap_or("");
    // The Origin check stops another site's page riding on the browser's cookie. A script
    // with a token (browsers cannot put one on a WebSocket) has no cookie to ride on.
    if matches!(credential, Credential::Session(_))
        && !origin_matches(origin, &headers, app.config.public_url.as_deref())
    {
        return error_response(&AppError::Forbidden("WebSocket from another origin".into()));
    }
    let key = match upgrade_key(req.method(), &headers) {
        Ok(key) => key,
        Err(why) => return (StatusCode::BAD_REQUEST, why).into_response(),
    };
    // Before the upgrade, so a refusal is an ordinary answer: 429 with the contract's
    // error body and Retry-After. The seat is held for the socket's life.
    let Some(seat) = app
        .hub
        .browser_seat(&viewer.username, app.config.max_sockets_per_user as usize)
    else {
        tracing::info!(
            user = viewer.username,
            max = app.config.max_sockets_per_user,
            "browser socket refused: the user has the most open"
        );
        return error_response(&AppError::RateLimited {
            retry_after_s: SEAT_RETRY_S,
        });
    };
    let Some(on_upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return (
            StatusCode::UPGRADE_REQUIRED,
            "this connection cannot be upgraded",
        )
            .into_response();
    };
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => return tracing::debug!("browser socket upgrade failed: {e}"),
        };
        let config = WebSocketConfig::default()
            .max_message_size(Some(BROWSER_MAX_FRAME))
            .max_frame_size(Some(BROWSER_MAX_FRAME))
            .read_buffer_size(4 * 1024)
            .write_buffer_size(8 * 1024);
        let socket =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config))
                .await;
        run(app, viewer, credential, socket, seat).await;
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(
            header::SEC_WEBSOCKET_ACCEPT,
            tungstenite::handshake::derive_accept_key(key.as_bytes()),
        )
        .body(Body::empty())
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// The checks of RFC 6455 §4.2.1 that axum's extractor made; the client's key.
fn upgrade_key(method: &Method, headers: &HeaderMap) -> Result<String, &'static str> {
    let has_token = |name: header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    if method != Method::GET {
        return Err("a WebSocket upgrade must be a GET");
    }
    if !has_token(header::CONNECTION, "upgrade") || !has_token(header::UPGRADE, "websocket") {
        return Err("expected a WebSocket upgrade");
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Err("unsupported WebSocket version (13 expected)");
    }
    headers
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|k| k.to_str().ok())
        .map(str::to_owned)
        .ok_or("missing Sec-WebSocket-Key")
}

async fn close(socket: &mut Sink, code: u16, reason: &str) {
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    };
    let _ = timeout(SEND_TIMEOUT, socket.send(Message::Close(Some(frame)))).await;
}

enum SnapshotError {
    /// The socket failed: the browser went away.
    Socket,
    /// No frame could be written for SEND_TIMEOUT: the browser is not reading.
    Stalled,
}

/// One write that must make progress within SEND_TIMEOUT.
async fn progress<F>(write: F) -> Result<(), SnapshotError>
where
    F: std::future::Future<Output = Result<(), tungstenite::Error>>,
{
    match timeout(SEND_TIMEOUT, write).await {
        Ok(result) => result.map_err(|_| SnapshotError::Socket),
        Err(_) => Err(SnapshotError::Stalled),
    }
}

/// Send a (large) text message as 64 KiB frames, so no buffer ever holds all of it.
async fn send_fragmented(sink: &mut Sink, text: Utf8Bytes) -> Result<(), SnapshotError> {
    let bytes: Bytes = text.into();
    if bytes.len() <= FRAGMENT {
        let text = Utf8Bytes::try_from(bytes).map_err(|_| SnapshotError::Socket)?;
        return progress(sink.send(Message::Text(text))).await;
    }
    let mut start = 0;
    while start < bytes.len() {
        let end = (start + FRAGMENT).min(bytes.len());
        let opcode = if start == 0 {
            Data::Text
        } else {
            Data::Continue
        };
        let frame = Frame::message(
            bytes.slice(start..end),
            OpCode::Data(opcode),
            end == bytes.len(),
        );
        // feed, not send: one flush at the end instead of one per frame (feed flushes by
        // itself whenever the write buffer is full, which is where a stalled reader shows).
        progress(sink.feed(Message::Frame(frame))).await?;
        start = end;
    }
    progress(sink.flush()).await
}

/// What a socket was opened with, re-checked every `SESSION_CHECK`.
enum Credential {
    /// A browser's session cookie.
    Session(String),
    /// A script's personal API token.
    Token(String),
}

impl Credential {
    async fn alive(&self, app: &Core) -> bool {
        match self {
            Credential::Session(cookie) => session_alive(app, cookie).await,
            Credential::Token(token) => nixdeck_core::service::tokens::alive(app, token).await,
        }
    }

    fn ended(&self) -> &'static str {
        match self {
            Credential::Session(_) => "session ended",
            Credential::Token(_) => "token revoked or expired",
        }
    }
}

async fn run(app: Core, viewer: Viewer, credential: Credential, socket: Socket, seat: BrowserSeat) {
    let (mut sink, stream) = socket.split();
    tracing::debug!(user = viewer.username, "browser connected");
    let Some(start) = app.hub.subscribe_browser(&seat).await else {
        return;
    };
    // A browser that does not read its snapshot must not hold it (and its task) long: it is
    // dropped after SEND_TIMEOUT without progress, or SNAPSHOT_TIMEOUT in all.
    match timeout(SNAPSHOT_TIMEOUT, send_fragmented(&mut sink, start.snapshot)).await {
        Ok(Ok(())) => {}
        Ok(Err(SnapshotError::Socket)) => return,
        Ok(Err(SnapshotError::Stalled)) | Err(_) => {
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
    drop(start.sending);
    serve(app, viewer, credential, sink, stream, start.events).await;
}

async fn serve(
    app: Core,
    viewer: Viewer,
    credential: Credential,
    mut sink: Sink,
    mut stream: SplitStream<Socket>,
    mut events: tokio::sync::broadcast::Receiver<Utf8Bytes>,
) {
    let mut check = interval(SESSION_CHECK);
    check.set_missed_tick_behavior(MissedTickBehavior::Delay);
    check.tick().await;
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Ok(text) => match timeout(SEND_TIMEOUT, send_waiting(&mut sink, &mut events, text)).await {
                    Ok(Ok(None)) => {}
                    Ok(Ok(Some(missed))) => {
                        app.hub.counters().lagged_browsers.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(user = viewer.username, missed, "browser fell behind; disconnecting it");
                        return close(&mut sink, 1013, "fell behind; reconnect for a fresh snapshot").await;
                    }
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
                Some(Err(tungstenite::Error::Capacity(_))) => {
                    return close(&mut sink, 1009, "frame too large").await;
                }
                Some(Err(_)) => return,
                // Browsers have nothing to say on this socket yet.
                Some(Ok(_)) => {}
            },
            _ = check.tick() => {
                if !credential.alive(&app).await {
                    return close(&mut sink, 4401, credential.ended()).await;
                }
            }
        }
    }
}

/// Events sent in one write at most; bounds the time one browser holds its task.
const SEND_BATCH: usize = 256;

/// Send `first` and every event already waiting (up to `SEND_BATCH`) with one flush: the
/// sockets have `TCP_NODELAY`, so each flush is a packet, and under load a browser gets
/// its events in a few writes instead of one per event. Returns how many events were
/// missed if the receiver lagged meanwhile.
async fn send_waiting(
    sink: &mut Sink,
    events: &mut tokio::sync::broadcast::Receiver<Utf8Bytes>,
    first: Utf8Bytes,
) -> Result<Option<u64>, tungstenite::Error> {
    use tokio::sync::broadcast::error::TryRecvError;
    sink.feed(Message::Text(first)).await?;
    let mut lagged = None;
    for _ in 0..SEND_BATCH {
        match events.try_recv() {
            Ok(text) => sink.feed(Message::Text(text)).await?,
            Err(TryRecvError::Lagged(missed)) => {
                lagged = Some(missed);
                break;
            }
            Err(TryRecvError::Empty | TryRecvError::Closed) => break,
        }
    }
    sink.flush().await?;
    Ok(lagged)
}
