//! The WebSocket link to the dashboard: connect with the bearer token, register, send
//! heartbeats, and reconnect with backoff when the link drops; plus the helpers that
//! read, send and close frames on the socket.
//!
//! One task owns the socket and multiplexes everything with `select!`: shutdown, the
//! heartbeat ticker, incoming frames, the idle timer and the spool poll. What the
//! dashboard's `command`, `stop` and `ack` frames do, and which output, completions and
//! checks are due, lives in dispatch.rs: the link only carries frames, so how commands
//! run and how the connection is kept can change apart. `Link` lives across sessions; so
//! does its `Dispatch`, whose unacked output is sent again after every reconnect.

use crate::config::Config;
use crate::dispatch::Dispatch;
use crate::probes::{self, Host};
use crate::token::{Credentials, Secret};
use futures::{SinkExt, StreamExt};
use protocol::backoff::Rotation;
use protocol::messages::{Heartbeat, Register, Registered};
use protocol::{decode, AgentMessage, Decoded, ServerMessage};
use std::io;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{self, Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::AUTHORIZATION;
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Flips to `true` once when the agent should stop (SIGTERM/SIGINT).
pub type Shutdown = watch::Receiver<bool>;

/// A server frame larger than this is a protocol error; the dashboard sends small frames.
const MAX_INCOMING_MESSAGE: usize = 1 << 20;
/// The agent's frames stay small, so small buffers suffice.
const BUFFER_SIZE: usize = 16 * 1024;
/// Backpressure: unsent data beyond this (a stalled link) fails the send instead of
/// growing without bound.
const MAX_WRITE_BUFFER: usize = 1 << 20;
/// How often the spools are read for new lines while the link is up.
const POLL_EVERY: Duration = Duration::from_millis(50);
/// Most frames sent per poll, so heartbeats and incoming acks get their turn.
const SEND_BATCH: usize = 500;

/// Timeouts of one session. Fixed in production; tests shorten them.
#[derive(Clone, Copy, Debug)]
pub struct Timings {
    /// TCP + TLS + upgrade; a black-holed address must not hang the agent for minutes.
    pub connect: Duration,
    /// From sending `register` to receiving `registered`.
    pub register: Duration,
    /// No frame at all (the server pings every 20 s) for this long means the link is dead.
    pub idle: Duration,
    /// A session that lasted this long was healthy, whatever ended it.
    pub stable: Duration,
    /// How long to wait for the peer's side of a close handshake.
    pub close_grace: Duration,
    /// A batch of frames that cannot be written in this time means the dashboard stopped
    /// reading: the link is dropped and the batch is sent again after a reconnect.
    pub send: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Timings {
            connect: Duration::from_secs(20),
            register: Duration::from_secs(10),
            idle: Duration::from_secs(60),
            stable: Duration::from_secs(30),
            close_grace: Duration::from_secs(2),
            send: Duration::from_secs(30),
        }
    }
}

/// Why a session ended without being asked to.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("token rejected by the dashboard (HTTP 401)")]
    TokenRejected,
    #[error("cannot use the token: {0}")]
    Token(io::Error),
    #[error("no connection within {0:?}")]
    ConnectTimeout(Duration),
    #[error("the dashboard refused the upgrade with HTTP {0}")]
    Refused(StatusCode),
    #[error(transparent)]
    WebSocket(#[from] tungstenite::Error),
    #[error("no `registered` reply within {0:?}")]
    RegisterTimeout(Duration),
    #[error("no frame for {0:?}, the link is dead")]
    Idle(Duration),
    #[error("closed by the dashboard (code {code}{})", if reason.is_empty() { String::new() } else { format!(": {reason}") })]
    ClosedByServer { code: u16, reason: String },
    #[error("connection closed without a close frame")]
    Closed,
    #[error("the dashboard took over {0:?} to take our frames")]
    SendTimeout(Duration),
}

#[derive(Debug)]
pub enum SessionEnd {
    /// Shutdown was requested; the socket was closed with a normal close frame.
    Shutdown,
    /// A `restart` command completed: the process should exit for its service manager to
    /// start it again.
    Restart,
    /// The link failed or was closed by the dashboard.
    Lost(LinkError),
}

#[derive(Debug)]
pub struct SessionOutcome {
    /// The dashboard accepted our `register` in this session.
    pub registered: bool,
    pub end: SessionEnd,
}

/// Why `Link::run` returned; also how a registered session ended without an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Shutdown,
    Restart,
}

/// The agent's side of the link, kept across sessions.
pub struct Link {
    cfg: Config,
    credentials: Credentials,
    host: Host,
    rotation: Rotation,
    timings: Timings,
    dispatch: Dispatch,
}

impl Link {
    /// Opens the command spools too: commands a previous agent process left running or
    /// undelivered are adopted here.
    pub fn new(cfg: Config) -> Self {
        let credentials = Credentials::new(cfg.token.clone(), cfg.state_dir.clone());
        let dispatch = Dispatch::new(&cfg);
        let host = Host::new(cfg.checkout.as_ref().map(|c| c.dir.clone()));
        let rotation = Rotation::new(cfg.ws_urls.len());
        Link {
            cfg,
            credentials,
            host,
            rotation,
            timings: Timings::default(),
            dispatch,
        }
    }

    /// Shorter timeouts, for tests.
    pub fn with_timings(mut self, timings: Timings) -> Self {
        self.timings = timings;
        self
    }

    /// Sessions until shutdown or a `restart` command, with backoff between them, each on
    /// the next dashboard URL (see `Rotation`). Never gives up: a dashboard that is down or
    /// a token the operator has yet to fix are both expected to recover.
    pub async fn run(&mut self, mut shutdown: Shutdown) -> Exit {
        self.dispatch.prepare_checkout();
        loop {
            let started = Instant::now();
            let outcome = self.run_session(&mut shutdown).await;
            let error = match outcome.end {
                SessionEnd::Shutdown => return Exit::Shutdown,
                SessionEnd::Restart => return Exit::Restart,
                SessionEnd::Lost(error) => error,
            };
            if self.dispatch.take_restart() {
                // The completion stays on disk and goes out after the restart.
                tracing::info!("link lost while restarting; restarting now");
                return Exit::Restart;
            }
            let url = self.url().to_owned();
            let healthy = outcome.registered || started.elapsed() >= self.timings.stable;
            let delay = self.rotation.after_session(healthy, rand::random::<f64>());
            let mut retry = format!("{:.1}s", delay.as_secs_f64());
            if self.cfg.ws_urls.len() > 1 {
                retry = format!("{retry} on {} (the URL after {url})", self.url());
            }
            match &error {
                LinkError::TokenRejected => {
                    tracing::error!("{error}: check --token / --token-file; retrying in {retry}")
                }
                LinkError::Token(_) => tracing::error!("{error}; retrying in {retry}"),
                // Policy violations (e.g. a host id the dashboard refuses) will not fix
                // themselves, but the dashboard's config might, so keep trying.
                LinkError::ClosedByServer { code: 1008, .. } => {
                    tracing::error!("{error}; retrying in {retry}")
                }
                _ if outcome.registered => {
                    tracing::warn!("link lost: {error}; reconnecting in {retry}")
                }
                _ => tracing::warn!("cannot connect: {error}; retrying in {retry}"),
            }
            tokio::select! {
                _ = time::sleep(delay) => {}
                _ = shutdown_requested(&mut shutdown) => return Exit::Shutdown,
            }
        }
    }

    /// One connection: connect, register, then serve until shutdown or failure.
    pub async fn run_session(&mut self, shutdown: &mut Shutdown) -> SessionOutcome {
        let lost = |registered, error| SessionOutcome {
            registered,
            end: SessionEnd::Lost(error),
        };
        let stopped = |registered| SessionOutcome {
            registered,
            end: SessionEnd::Shutdown,
        };
        if *shutdown.borrow() {
            return stopped(false);
        }

        let token = match self.credentials.current() {
            Ok(token) => token,
            Err(err) => return lost(false, LinkError::Token(err)),
        };
        tracing::debug!(url = %self.url(), "connecting");
        let mut ws = tokio::select! {
            connected = self.connect(&token) => match connected {
                Ok(ws) => ws,
                Err(error) => return lost(false, error),
            },
            _ = shutdown_requested(shutdown) => return stopped(false),
        };

        let registered = tokio::select! {
            registered = self.register(&mut ws) => registered,
            _ = shutdown_requested(shutdown) => {
                close_normally(&mut ws, self.timings.close_grace).await;
                return stopped(false);
            }
        };
        let registered = match registered {
            Ok(registered) => registered,
            Err(error) => {
                close_after_error(&mut ws, self.timings.close_grace).await;
                return lost(false, error);
            }
        };
        let interval_s = self.on_registered(registered, &token);

        match self.serve(&mut ws, interval_s, shutdown).await {
            Ok(Exit::Shutdown) => {
                close_normally(&mut ws, self.timings.close_grace).await;
                stopped(true)
            }
            Ok(Exit::Restart) => {
                close_normally(&mut ws, self.timings.close_grace).await;
                SessionOutcome {
                    registered: true,
                    end: SessionEnd::Restart,
                }
            }
            Err(error) => {
                close_after_error(&mut ws, self.timings.close_grace).await;
                lost(true, error)
            }
        }
    }

    /// The dashboard URL of this (or the next) session.
    fn url(&self) -> &str {
        &self.cfg.ws_urls[self.rotation.current()]
    }

    async fn connect(&self, token: &Secret) -> Result<Socket, LinkError> {
        let mut request = self.url().into_client_request()?;
        let mut auth =
            HeaderValue::from_str(&format!("Bearer {}", token.expose())).map_err(|_| {
                LinkError::Token(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the token contains characters not allowed in an HTTP header",
                ))
            })?;
        // Keeps it out of any debug output of the request.
        auth.set_sensitive(true);
        request.headers_mut().insert(AUTHORIZATION, auth);

        let ws_config = WebSocketConfig::default()
            .max_message_size(Some(MAX_INCOMING_MESSAGE))
            .max_frame_size(Some(MAX_INCOMING_MESSAGE))
            .read_buffer_size(BUFFER_SIZE)
            .write_buffer_size(BUFFER_SIZE)
            .max_write_buffer_size(MAX_WRITE_BUFFER);
        // Nagle off: heartbeats and output lines are small and should leave at once.
        let connecting =
            tokio_tungstenite::connect_async_with_config(request, Some(ws_config), true);
        match time::timeout(self.timings.connect, connecting).await {
            Err(_) => Err(LinkError::ConnectTimeout(self.timings.connect)),
            Ok(Ok((ws, _response))) => Ok(ws),
            Ok(Err(tungstenite::Error::Http(response))) => {
                if response.status() == StatusCode::UNAUTHORIZED {
                    Err(LinkError::TokenRejected)
                } else {
                    Err(LinkError::Refused(response.status()))
                }
            }
            Ok(Err(err)) => Err(err.into()),
        }
    }

    /// Sends `register` and waits for `registered`.
    async fn register(&mut self, ws: &mut Socket) -> Result<Registered, LinkError> {
        let register = self.register_message().await;
        send(ws, &AgentMessage::Register(register)).await?;
        let deadline = Instant::now() + self.timings.register;
        loop {
            let frame = time::timeout_at(deadline, ws.next())
                .await
                .map_err(|_| LinkError::RegisterTimeout(self.timings.register))?;
            let Some(text) = text_of(frame)? else {
                continue;
            };
            match decode::<ServerMessage>(&text) {
                Decoded::Message(ServerMessage::Registered(registered)) => return Ok(registered),
                Decoded::Message(other) => {
                    tracing::debug!("ignoring {other:?} before registration")
                }
                Decoded::Unknown(kind) => tracing::debug!("ignoring unknown frame type `{kind}`"),
                Decoded::Malformed(err) => tracing::warn!("ignoring malformed frame: {err}"),
            }
        }
    }

    /// Applies a `registered` reply; returns the heartbeat interval for this session.
    fn on_registered(&mut self, registered: Registered, used: &Secret) -> u32 {
        let interval_s = match registered.heartbeat_interval_s {
            0 => self.cfg.interval_s,
            s => s,
        };
        tracing::info!(
            host_id = %registered.host_id,
            dashboard_version = %registered.dashboard_version,
            heartbeat_interval_s = interval_s,
            "registered"
        );
        if registered.dashboard_version != protocol::VERSION {
            tracing::warn!(
                "the dashboard runs version {}, this agent {}; it will show the agent as outdated",
                registered.dashboard_version,
                protocol::VERSION
            );
        }
        if let Some(token) = registered.agent_token.filter(|t| !t.trim().is_empty()) {
            match self
                .credentials
                .store_enrolled(Secret::new(token.trim()), used)
            {
                Ok(path) => {
                    tracing::info!(path = %path.display(), "enrolled; stored the new host token")
                }
                Err(err) => tracing::error!(
                    "enrolled, but cannot store the new host token: {err}; \
                     it is used until the agent restarts"
                ),
            }
        }
        interval_s
    }

    /// The registered session: heartbeats and output out, server frames in.
    async fn serve(
        &mut self,
        ws: &mut Socket,
        interval_s: u32,
        shutdown: &mut Shutdown,
    ) -> Result<Exit, LinkError> {
        // The first tick fires at once: the contract wants a heartbeat right after register.
        let mut ticker = time::interval(Duration::from_secs(interval_s.max(1).into()));
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let idle = time::sleep(self.timings.idle);
        tokio::pin!(idle);
        let mut poll = time::interval(POLL_EVERY);
        poll.set_missed_tick_behavior(MissedTickBehavior::Delay);

        self.dispatch.session_started();

        loop {
            let restart_at = self.dispatch.restart_deadline();
            tokio::select! {
                _ = shutdown_requested(shutdown) => return Ok(Exit::Shutdown),
                _ = ticker.tick() => {
                    let heartbeat = self.heartbeat_message().await;
                    send(ws, &AgentMessage::Heartbeat(heartbeat)).await?;
                }
                _ = &mut idle => return Err(LinkError::Idle(self.timings.idle)),
                frame = ws.next() => {
                    // Any frame, pings included, proves the link is alive.
                    idle.as_mut().reset(Instant::now() + self.timings.idle);
                    if let Some(text) = text_of(frame)? {
                        if let Some(end) = self.handle_frame(ws, &text).await? {
                            return Ok(end);
                        }
                    }
                }
                // Only while there is something to pump: an idle agent then wakes for its
                // heartbeat and the server's frames alone. Polling 20 times a second while
                // idle took the agent to the edge of its idle CPU target, 0.2 % of a core
                // (P7 in docs/BENCHMARKS.md).
                _ = poll.tick(), if !self.dispatch.is_idle() => {
                    let limit = self.timings.send;
                    let more = time::timeout(limit, self.pump(ws))
                        .await
                        .map_err(|_| LinkError::SendTimeout(limit))??;
                    if more {
                        poll.reset_immediately();
                    }
                }
                _ = time::sleep_until(restart_at.unwrap_or_else(Instant::now)), if restart_at.is_some() => {
                    tracing::warn!("no ack for the restart's completion; restarting anyway");
                    return Ok(Exit::Restart);
                }
            }
        }
    }

    /// Sends what the dispatch has due: output lines, completions, then changed checks and
    /// a heartbeat. True when more is waiting.
    async fn pump(&mut self, ws: &mut Socket) -> Result<bool, LinkError> {
        let due = self.dispatch.due(SEND_BATCH, &mut self.host).await;
        if due.frames.is_empty() && due.checks.is_none() && !due.heartbeat {
            return Ok(false);
        }
        for frame in &due.frames {
            feed(ws, frame).await?;
        }
        if let Some(report) = due.checks {
            feed(ws, &AgentMessage::Status(report)).await?;
            self.dispatch.checks_sent();
        }
        if due.heartbeat {
            let heartbeat = self.heartbeat_message().await;
            feed(ws, &AgentMessage::Heartbeat(heartbeat)).await?;
            self.dispatch.heartbeat_sent();
        }
        ws.flush().await?;
        Ok(due.more)
    }

    /// A frame from the registered dashboard; `command`, `stop` and `ack` go to the
    /// dispatch. Some when the session should end.
    async fn handle_frame(
        &mut self,
        ws: &mut Socket,
        text: &str,
    ) -> Result<Option<Exit>, LinkError> {
        match decode::<ServerMessage>(text) {
            Decoded::Message(ServerMessage::Command(order)) => {
                if let Some(rejected) = self.dispatch.command(order, &mut self.host).await {
                    send(ws, &AgentMessage::CommandRejected(rejected)).await?;
                }
            }
            Decoded::Message(ServerMessage::Stop(stop)) => self.dispatch.stop(&stop),
            Decoded::Message(ServerMessage::Ack(ack)) => {
                if self.dispatch.ack(&ack) {
                    return Ok(Some(Exit::Restart));
                }
            }
            Decoded::Message(ServerMessage::Registered(_)) => {
                tracing::debug!("ignoring a repeated `registered`")
            }
            Decoded::Unknown(kind) => tracing::debug!("ignoring unknown frame type `{kind}`"),
            Decoded::Malformed(err) => tracing::warn!("ignoring malformed frame: {err}"),
        }
        Ok(None)
    }

    async fn register_message(&mut self) -> Register {
        let (repo, nixpkgs_version) =
            tokio::join!(self.host.repo_state(), probes::nixpkgs_version());
        let (generations, reboot_needed) = self.dispatch.generations();
        let cfg = &self.cfg;
        Register {
            hostname: cfg.hostname.clone(),
            host_type: cfg.host_type,
            agent_version: protocol::VERSION.to_owned(),
            os_version: probes::os_version(),
            nixpkgs_version,
            generation: repo.generation,
            lock_hash: repo.lock_hash,
            lock_updated_at: repo.lock_updated_at,
            repo_url: cfg.repo_url.clone(),
            repo_dir: self.host.repo_dir().map(|d| d.display().to_string()),
            branch: Some(cfg.branch.clone()),
            heartbeat_interval_s: cfg.interval_s,
            theme_color: cfg.theme_color.clone(),
            location: cfg.location.clone(),
            device_type: cfg.device_type.clone(),
            // Any command not fully acked, so the dashboard does not mark it lost.
            running_command: self.dispatch.running_command(),
            generations,
            reboot_needed,
            tags: Some(cfg.tags.clone()),
        }
    }

    async fn heartbeat_message(&mut self) -> Heartbeat {
        let metrics = self.host.metrics();
        // Re-read every beat: a pull or `nix flake update` changes them between commands.
        let repo = self.host.repo_state().await;
        Heartbeat {
            metrics: Some(metrics),
            generation: repo.generation,
            lock_hash: repo.lock_hash,
            lock_updated_at: repo.lock_updated_at,
            pending_command: self.dispatch.pending_command(),
        }
    }
}

/// Resolves once shutdown is requested; never if the sender is gone.
async fn shutdown_requested(shutdown: &mut Shutdown) {
    if shutdown.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The text of a data frame; `None` for control and binary frames; an error when the
/// connection is over. tungstenite answers pings by itself while we keep reading.
fn text_of(
    frame: Option<Result<Message, tungstenite::Error>>,
) -> Result<Option<tungstenite::Utf8Bytes>, LinkError> {
    match frame {
        None => Err(LinkError::Closed),
        Some(Err(err)) => Err(err.into()),
        Some(Ok(Message::Text(text))) => Ok(Some(text)),
        Some(Ok(Message::Close(frame))) => Err(match frame {
            Some(frame) => LinkError::ClosedByServer {
                code: frame.code.into(),
                reason: frame.reason.as_str().chars().take(200).collect(),
            },
            None => LinkError::ClosedByServer {
                code: u16::from(CloseCode::Status),
                reason: String::new(),
            },
        }),
        Some(Ok(Message::Binary(_))) => {
            tracing::debug!("ignoring a binary frame");
            Ok(None)
        }
        Some(Ok(_)) => Ok(None),
    }
}

async fn send(ws: &mut Socket, message: &AgentMessage) -> Result<(), LinkError> {
    if let Some(text) = encode(message) {
        ws.send(Message::text(text)).await?;
    }
    Ok(())
}

/// Queues a frame without flushing; the caller flushes the batch.
async fn feed(ws: &mut Socket, message: &AgentMessage) -> Result<(), LinkError> {
    if let Some(text) = encode(message) {
        ws.feed(Message::text(text)).await?;
    }
    Ok(())
}

fn encode(message: &AgentMessage) -> Option<String> {
    let text = match serde_json::to_string(message) {
        Ok(text) => text,
        Err(err) => {
            tracing::error!("cannot encode a frame: {err}");
            return None;
        }
    };
    // The dashboard closes the socket on an oversized frame; dropping the one frame is
    // better than losing the link over it. (Output lines are split well below this.)
    if text.len() > protocol::AGENT_MAX_FRAME {
        tracing::warn!(
            bytes = text.len(),
            "not sending a frame over the {} byte limit",
            protocol::AGENT_MAX_FRAME
        );
        return None;
    }
    Some(text)
}

/// Our side of a clean shutdown: a normal close frame, then wait briefly for the reply.
async fn close_normally(ws: &mut Socket, grace: Duration) {
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: "agent shutting down".into(),
    };
    let closing = async {
        ws.close(Some(frame)).await?;
        while let Some(Ok(_)) = ws.next().await {}
        Ok::<(), tungstenite::Error>(())
    };
    let _ = time::timeout(grace, closing).await;
}

/// After a failure: finish a close handshake the server started (or start one), but do
/// not wait long on a link that may be dead.
async fn close_after_error(ws: &mut Socket, grace: Duration) {
    let _ = time::timeout(grace, ws.close(None)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::TokenSource;
    use protocol::messages::{AgentOutcome, CommandOrder};
    use protocol::{CommandKind, HostType};
    use std::path::Path;
    use tokio::net::TcpListener;
    use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};

    type ServerSocket = WebSocketStream<TcpStream>;

    fn test_config(ws_url: String, token: TokenSource, dir: &Path) -> Config {
        Config {
            ws_urls: vec![ws_url],
            token,
            hostname: "test-host".into(),
            host_type: HostType::Nixos,
            interval_s: 5,
            theme_color: None,
            location: Some("lab".into()),
            device_type: None,
            tags: vec!["canary".into(), "web".into()],
            checkout: Some(crate::plan::Checkout {
                dir: dir.join("repo"),
                clone_url: None,
            }),
            repo_url: None,
            branch: "main".into(),
            state_dir: dir.join("state"),
            commands: Default::default(),
            spool_limit: 1 << 20,
            // Unit tests have no agent binary to run as supervisor (tests/ do); a command
            // then fails visibly instead of running.
            supervisor_exe: dir.join("no-such-agent"),
            // Not this machine's profile: the tests must not depend on what it has.
            system: crate::nix::SystemSettings {
                profile: dir.join("profiles/system"),
                current_system: dir.join("current-system"),
                booted_system: dir.join("booted-system"),
                ..crate::nix::SystemSettings::nixos()
            },
        }
    }

    async fn listen() -> (TcpListener, String) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/ws/agent", listener.local_addr().unwrap());
        (listener, url)
    }

    /// Accepts one agent, answering 401 unless it presents `Bearer <token>`.
    async fn accept(listener: &TcpListener, token: &str) -> Option<ServerSocket> {
        let (tcp, _) = listener.accept().await.unwrap();
        let expected = format!("Bearer {token}");
        // The Result type is tungstenite's Callback signature, not ours to shrink.
        #[allow(clippy::result_large_err)]
        let check = move |req: &Request, resp: Response| {
            let auth = req
                .headers()
                .get(AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            if req.uri().path() == "/ws/agent" && auth == Some(expected.as_str()) {
                Ok(resp)
            } else {
                let mut denied = ErrorResponse::new(Some("bad token".into()));
                *denied.status_mut() = StatusCode::UNAUTHORIZED;
                Err(denied)
            }
        };
        tokio_tungstenite::accept_hdr_async(tcp, check).await.ok()
    }

    /// The next agent frame that `pick` accepts, skipping others (heartbeats, mostly).
    async fn next_matching<T>(
        ws: &mut ServerSocket,
        within: Duration,
        mut pick: impl FnMut(AgentMessage) -> Option<T>,
    ) -> T {
        time::timeout(within, async {
            loop {
                match ws.next().await.expect("agent hung up").unwrap() {
                    Message::Text(text) => match decode::<AgentMessage>(&text) {
                        Decoded::Message(msg) => {
                            if let Some(found) = pick(msg) {
                                return found;
                            }
                        }
                        other => panic!("agent sent {other:?}: {text}"),
                    },
                    Message::Close(frame) => panic!("agent closed: {frame:?}"),
                    _ => {}
                }
            }
        })
        .await
        .expect("timed out waiting for an agent frame")
    }

    async fn send_server(ws: &mut ServerSocket, msg: &ServerMessage) {
        let text = serde_json::to_string(msg).unwrap();
        ws.send(Message::text(text)).await.unwrap();
    }

    fn registered(agent_token: Option<&str>) -> ServerMessage {
        ServerMessage::Registered(Registered {
            host_id: "test-host".into(),
            dashboard_version: protocol::VERSION.into(),
            heartbeat_interval_s: 1,
            agent_token: agent_token.map(Into::into),
        })
    }

    #[tokio::test]
    async fn registers_heartbeats_and_shuts_down_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("repo")).unwrap();
        std::fs::write(dir.path().join("repo/flake.lock"), "abc").unwrap();
        let lock = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let (listener, url) = listen().await;
        let token = TokenSource::Inline(Secret::new("test-token"));
        let cfg = test_config(url, token, dir.path());
        let (stop, mut shutdown) = watch::channel(false);
        let agent = tokio::spawn(async move { Link::new(cfg).run_session(&mut shutdown).await });

        let mut ws = accept(&listener, "test-token").await.expect("handshake");
        let register = next_matching(&mut ws, Duration::from_secs(10), |m| match m {
            AgentMessage::Register(r) => Some(r),
            other => panic!("first frame must be register, got {other:?}"),
        })
        .await;
        assert_eq!(register.hostname, "test-host");
        assert_eq!(register.host_type, HostType::Nixos);
        assert_eq!(register.agent_version, protocol::VERSION);
        assert_eq!(register.heartbeat_interval_s, 5);
        assert_eq!(register.lock_hash.as_deref(), Some(lock));
        // Not a git checkout: flake.lock's mtime, just written.
        let lock_time = register.lock_updated_at.expect("lock_updated_at");
        assert!((protocol::Timestamp::now().secs() - lock_time.secs()).abs() < 60);
        assert_eq!(register.branch.as_deref(), Some("main"));
        assert_eq!(register.location.as_deref(), Some("lab"));
        assert_eq!(register.tags, Some(vec!["canary".into(), "web".into()]));
        assert_eq!(register.running_command, None);

        send_server(&mut ws, &registered(None)).await;
        let heartbeat = |m| match m {
            AgentMessage::Heartbeat(h) => Some(h),
            _ => None,
        };
        let beat = next_matching(&mut ws, Duration::from_secs(3), heartbeat).await;
        let metrics = beat.metrics.expect("metrics");
        assert!((0.0..=100.0).contains(&metrics.cpu), "{metrics:?}");
        assert!((0.0..=100.0).contains(&metrics.ram), "{metrics:?}");
        assert_eq!(beat.lock_hash.as_deref(), Some(lock));
        assert_eq!(beat.lock_updated_at, Some(lock_time));

        // Garbage and unknown frame types are skipped; the link stays up.
        ws.send(Message::text("{not json")).await.unwrap();
        ws.send(Message::text(r#"{"type":"from_the_future","payload":{}}"#))
            .await
            .unwrap();
        ws.send(Message::text(r#"{"type":"ack","payload":{"seq":"x"}}"#))
            .await
            .unwrap();
        // A command whose supervisor cannot start fails with the reason in its output.
        let order = ServerMessage::Command(CommandOrder::new("cmd-1", CommandKind::Switch));
        send_server(&mut ws, &order).await;
        let line = next_matching(&mut ws, Duration::from_secs(3), |m| match m {
            AgentMessage::Output(o) => Some(o),
            _ => None,
        })
        .await;
        assert_eq!((line.command_id.as_str(), line.seq), ("cmd-1", 1));
        assert!(
            line.line.contains("cannot start the supervisor"),
            "{}",
            line.line
        );
        let done = next_matching(&mut ws, Duration::from_secs(3), |m| match m {
            AgentMessage::CommandComplete(c) => Some(c),
            _ => None,
        })
        .await;
        assert_eq!(done.status, AgentOutcome::Error);
        assert_eq!(done.last_seq, 1);
        // A command id that is not a plain name is refused, never used as a path.
        let order = ServerMessage::Command(CommandOrder::new("../../etc", CommandKind::Refresh));
        send_server(&mut ws, &order).await;
        let rejected = next_matching(&mut ws, Duration::from_secs(3), |m| match m {
            AgentMessage::CommandRejected(r) => Some(r),
            _ => None,
        })
        .await;
        assert_eq!(rejected.reason, "invalid command id");
        // The server's interval (1 s) applies: another beat comes soon.
        next_matching(&mut ws, Duration::from_secs(3), heartbeat).await;

        stop.send(true).unwrap();
        let close = time::timeout(Duration::from_secs(3), async {
            loop {
                match ws.next().await {
                    Some(Ok(Message::Close(frame))) => return frame,
                    Some(Ok(_)) => continue,
                    other => panic!("expected a close frame, got {other:?}"),
                }
            }
        })
        .await
        .expect("close frame");
        assert_eq!(close.map(|f| f.code), Some(CloseCode::Normal));

        let outcome = time::timeout(Duration::from_secs(5), agent)
            .await
            .unwrap()
            .unwrap();
        assert!(outcome.registered);
        assert!(matches!(outcome.end, SessionEnd::Shutdown), "{outcome:?}");
    }

    #[tokio::test]
    async fn enrollment_stores_the_host_token_and_uses_it() {
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("etc/agent-token");
        std::fs::create_dir_all(token_file.parent().unwrap()).unwrap();
        std::fs::write(&token_file, "enroll-token\n").unwrap();
        let (listener, url) = listen().await;
        let cfg = test_config(url, TokenSource::File(token_file.clone()), dir.path());
        let (_stop, mut shutdown) = watch::channel(false);
        let agent = tokio::spawn(async move {
            let mut link = Link::new(cfg);
            let first = link.run_session(&mut shutdown).await;
            let second = link.run_session(&mut shutdown).await;
            (first, second)
        });

        let mut ws = accept(&listener, "enroll-token").await.expect("handshake");
        next_matching(&mut ws, Duration::from_secs(10), |m| {
            matches!(m, AgentMessage::Register(_)).then_some(())
        })
        .await;
        send_server(&mut ws, &registered(Some("host-token-123"))).await;
        next_matching(&mut ws, Duration::from_secs(3), |m| {
            matches!(m, AgentMessage::Heartbeat(_)).then_some(())
        })
        .await;
        // Like a replaced connection: the server closes, the agent comes back.
        ws.close(Some(CloseFrame {
            code: CloseCode::Library(4000),
            reason: "replaced".into(),
        }))
        .await
        .unwrap();

        // The enrollment token no longer works; only the stored host token does.
        let mut ws = accept(&listener, "host-token-123")
            .await
            .expect("reconnect with the new host token");
        assert_eq!(
            std::fs::read_to_string(&token_file).unwrap(),
            "host-token-123\n"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        drop(ws.close(None).await);
        drop(ws);

        let (first, second) = time::timeout(Duration::from_secs(5), agent)
            .await
            .unwrap()
            .unwrap();
        assert!(first.registered);
        assert!(
            matches!(
                first.end,
                SessionEnd::Lost(LinkError::ClosedByServer { code: 4000, .. })
            ),
            "{first:?}"
        );
        assert!(!second.registered);
    }

    #[tokio::test]
    async fn wrong_token_is_reported_as_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let (listener, url) = listen().await;
        let token = TokenSource::Inline(Secret::new("wrong"));
        let cfg = test_config(url, token, dir.path());
        let (_stop, mut shutdown) = watch::channel(false);
        let agent = tokio::spawn(async move { Link::new(cfg).run_session(&mut shutdown).await });
        assert!(accept(&listener, "right").await.is_none());
        let outcome = agent.await.unwrap();
        assert!(
            matches!(outcome.end, SessionEnd::Lost(LinkError::TokenRejected)),
            "{outcome:?}"
        );
    }

    #[tokio::test]
    async fn silent_dashboard_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let (listener, url) = listen().await;
        let token = TokenSource::Inline(Secret::new("t"));
        let cfg = test_config(url, token, dir.path());
        let timings = Timings {
            register: Duration::from_millis(300),
            idle: Duration::from_millis(1500),
            ..Timings::default()
        };
        let (_stop, mut shutdown) = watch::channel(false);
        let agent = tokio::spawn(async move {
            let mut link = Link::new(cfg).with_timings(timings);
            let first = link.run_session(&mut shutdown).await;
            let second = link.run_session(&mut shutdown).await;
            (first, second)
        });

        // Never answers `register`.
        let _ws1 = accept(&listener, "t").await.unwrap();
        // Registers, then says nothing (heartbeats keep arriving; nothing comes back).
        let mut ws2 = accept(&listener, "t").await.unwrap();
        next_matching(&mut ws2, Duration::from_secs(3), |m| {
            matches!(m, AgentMessage::Register(_)).then_some(())
        })
        .await;
        send_server(&mut ws2, &registered(None)).await;

        let (first, second) = time::timeout(Duration::from_secs(10), agent)
            .await
            .unwrap()
            .unwrap();
        assert!(
            matches!(first.end, SessionEnd::Lost(LinkError::RegisterTimeout(_))),
            "{first:?}"
        );
        assert!(second.registered);
        assert!(
            matches!(second.end, SessionEnd::Lost(LinkError::Idle(_))),
            "{second:?}"
        );
    }

    #[tokio::test]
    async fn shutdown_interrupts_backoff() {
        let dir = tempfile::tempdir().unwrap();
        // A port with nothing listening: every attempt fails and backs off.
        let (listener, url) = listen().await;
        drop(listener);
        let cfg = test_config(url, TokenSource::Inline(Secret::new("t")), dir.path());
        let (stop, shutdown) = watch::channel(false);
        let agent = tokio::spawn(async move { Link::new(cfg).run(shutdown).await });
        time::sleep(Duration::from_millis(200)).await;
        stop.send(true).unwrap();
        time::timeout(Duration::from_secs(2), agent)
            .await
            .expect("run() returns promptly on shutdown")
            .unwrap();
    }
}
