//! Several nixdeck servers ("replicas") on one PostgreSQL database, seen by their users as
//! one dashboard (docs/SCALING.md). On SQLite none of this runs: one process holds the
//! whole fleet.
//!
//! - **The bus.** Each replica's hub hands its own events (those made from its agents and
//!   its users' actions) to `BusOut`, without waiting. The writer here batches them for up
//!   to `BATCH_WINDOW` or `BATCH_BYTES` and sends one `pg_notify('nixdeck_fleet', …)` per
//!   batch: `{"from": replica, "seq": n, "items": [...]}` (`pack`). PostgreSQL refuses a
//!   payload of 8000 bytes or more; an item too large for one (a long output line, a host
//!   with many generations) is written to `bus_events` and the batch carries its row id
//!   (`{"big": id}`). A heartbeat a notification would not keep up with a large fleet:
//!   a batch carries about 40 heartbeats (`pack`'s test).
//! - **Listening.** Each replica LISTENs, skips its own batches and applies the others'
//!   through `Hub::apply_peer`, which publishes to its browsers but never back to the bus.
//!   A gap in a peer's `seq`, or a reconnect of the listening connection, means lost
//!   events: the replica then asks for a resync, as it does at start, and sends its
//!   browsers the output lines they missed from the stored log (`fill_output`).
//! - **Ownership.** A host's events all come from the replica that holds its agent (its
//!   owner), so every replica sees them in one order. Commands, stops and unlocks asked on
//!   another replica go to the owner as a request over the bus (`route`, `Peers::request`),
//!   answered within `REQUEST_TIMEOUT`; edits and token rotations reach it as events
//!   (`Hub`). A deploy job is likewise the replica's that runs it (`deploy_jobs.replica`):
//!   its confirmation and cancel go there the same way (`route_deploy`), since the job's
//!   state lives in that replica's memory.
//! - **Presence.** Each replica holds its lease `replica:<name>` (`service::lease`, renewed
//!   every quarter of `NIXDECK_LEASE_TTL_S`). Every `PRESENCE_EVERY` the bus reads which
//!   leases are alive; a peer whose lease ran out is dead, and each replica marks the hosts
//!   it held offline (`Hub::peer_gone`). Their agents reconnect to another replica.

pub mod pack;

use crate::hub::{BusOut, BusQueue, PeerChange};
use crate::Core;
use common::AppError;
use protocol::api::Role;
use protocol::{BrowserEvent, CommandKind};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::{sleep_until, Instant};

/// The LISTEN/NOTIFY channel of the bus.
pub const CHANNEL: &str = "nixdeck_fleet";
/// How long the writer gathers items before it sends them. Short against a heartbeat
/// interval (seconds), long enough that a busy fleet's heartbeats share notifications.
const BATCH_WINDOW: Duration = Duration::from_millis(20);
/// A batch is sent once its items reach this many bytes, under the payload limit.
const BATCH_BYTES: usize = 7_000;
/// What is waiting already when a batch is full goes along, up to this many bytes: about
/// 70 notifications in one statement. One round trip per notification did not keep up
/// with a backlog (a resync answer of 13 000 hosts, some 20 MB) on a busy machine: the
/// queue passed its bound, and the peers' resyncs made more backlog
/// (docs/BENCHMARKS.md, "40 000 agents").
const SEND_BYTES: usize = 512 * 1024;
/// A replica answers resync requests at most this often: requests that come meanwhile
/// (several peers, or one peer's repeated gaps) get one answer, sent when it is due.
const RESYNC_EVERY: Duration = Duration::from_secs(1);
/// How often a replica looks at which peers' leases are alive. Short against the lease's
/// time to live (10 s by default), so a dead peer's hosts go offline soon after it expires.
const PRESENCE_EVERY: Duration = Duration::from_secs(2);
/// Large events are deleted this long after they were written.
const PRUNE_AFTER_S: i64 = 60;
/// How long a request waits for the owner's answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// One item of a batch. Events are written by the hub (`{"e": …}`, `own`, `disown`,
/// `revoke`); the rest by this module.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BusItem {
    /// An event, as the sender's browsers got it.
    E(Box<BrowserEvent>),
    /// The sender holds this host's agent now.
    Own(String),
    /// The sender's link to this host's agent ended.
    Disown(String),
    /// The host's token was rotated: its agent's link closes wherever it is.
    Revoke(String),
    /// An item too large for a notification: its text is in `bus_events` under this id.
    Big(i64),
    /// Send the state of the hosts you hold (to one replica, or to all).
    Resync { to: Option<String> },
    /// Work for the owner of a host.
    Request { to: String, id: u64, body: Request },
    /// The answer to a request.
    Reply {
        to: String,
        id: u64,
        result: Result<String, AppError>,
    },
}

/// What one replica asks of the owner of a host, or of the replica running a deploy job.
/// The asking replica checked the user's role (and, for a confirmation, how recent the
/// login is) and records the audit entry; the owner does the work.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Request {
    Run {
        username: String,
        host_id: String,
        command: CommandKind,
        generation: Option<u64>,
        preview_id: Option<String>,
        rev: Option<String>,
    },
    Stop {
        username: String,
        host_id: String,
    },
    Unlock {
        username: String,
        host_id: String,
    },
    /// Confirm the previewed deploy job the receiver runs, as this user: the rollout's
    /// commands are theirs (role, address and API token for the audit log).
    DeployConfirm {
        job_id: String,
        username: String,
        role: Role,
        ip: Option<String>,
        api_token: Option<String>,
    },
    /// Cancel the deploy job the receiver runs.
    DeployCancel {
        job_id: String,
        username: String,
    },
}

impl Request {
    /// Why `owner` was asked, for the answer when it does not reply.
    fn why(&self, owner: &str) -> String {
        match self {
            Request::Run { .. } | Request::Stop { .. } | Request::Unlock { .. } => {
                format!("The host's agent is connected to the dashboard server {owner}")
            }
            Request::DeployConfirm { job_id, .. } | Request::DeployCancel { job_id, .. } => {
                format!("Deploy {job_id} runs on the dashboard server {owner}")
            }
        }
    }
}

/// One notification's payload.
#[derive(Debug, Deserialize)]
struct Batch {
    from: String,
    seq: u64,
    items: Vec<BusItem>,
}

/// This replica's side of the bus: its name, where its requests go, and the answers it
/// waits for. Empty (no bus) on SQLite and in tests.
#[derive(Clone, Default)]
pub struct Peers {
    inner: Arc<PeersInner>,
}

#[derive(Default)]
struct PeersInner {
    bus: OnceLock<(Arc<str>, BusOut)>,
    waiting: Mutex<HashMap<u64, oneshot::Sender<Result<String, AppError>>>>,
    next_id: AtomicU64,
    /// When this replica last answered a resync, and whether an answer is due
    /// (`answer_resync`).
    resync_sent: Mutex<Option<Instant>>,
    resync_due: std::sync::atomic::AtomicBool,
}

impl Peers {
    /// Whether the bus runs (PostgreSQL, `start` done).
    pub fn active(&self) -> bool {
        self.inner.bus.get().is_some()
    }

    fn send(&self, item: &BusItem) {
        if let (Some((_, bus)), Ok(text)) = (self.inner.bus.get(), serde_json::to_string(item)) {
            bus.send(text);
        }
    }

    fn waiting(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<Result<String, AppError>>>> {
        self.inner.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ask `owner` to do `body`, and wait for its answer (a 409 `owner_unreachable` when
    /// none comes within `REQUEST_TIMEOUT`: the owner died, or the bus is down).
    pub async fn request(&self, owner: &str, body: Request) -> Result<String, AppError> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let why = body.why(owner);
        self.waiting().insert(id, tx);
        self.send(&BusItem::Request {
            to: owner.to_owned(),
            id,
            body,
        });
        let answer = tokio::time::timeout(REQUEST_TIMEOUT, rx).await;
        self.waiting().remove(&id);
        match answer {
            Ok(Ok(result)) => result,
            _ => Err(AppError::conflict(
                "owner_unreachable",
                format!(
                    "{why}, which did not answer within {} s; try again.",
                    REQUEST_TIMEOUT.as_secs()
                ),
            )),
        }
    }

    fn answered(&self, id: u64, result: Result<String, AppError>) {
        if let Some(tx) = self.waiting().remove(&id) {
            let _ = tx.send(result);
        }
    }
}

/// If another replica holds `host_id`'s agent, `body` is done there and this is its
/// answer; None: the work is this replica's (the agent is here, or nowhere).
pub async fn route(
    core: &Core,
    host_id: &str,
    body: impl FnOnce() -> Request,
) -> Option<Result<String, AppError>> {
    let owner = core.hub.remote_owner(host_id)?;
    Some(core.peers.request(&owner, body()).await)
}

/// If another replica runs deploy job `job_id` (it is the active job, `deploy_jobs.replica`
/// names another server), `body` is done there and this is its answer; None: the job is
/// this replica's, or it runs nowhere (ended, unknown, or no bus: SQLite), and is answered
/// here. A job whose replica died is answered `owner_unreachable` until the leader has
/// taken it over (`service::deploy::take_over`), as a command for a dead owner's host is.
pub async fn route_deploy(
    core: &Core,
    job_id: &str,
    body: impl FnOnce() -> Request,
) -> Option<Result<String, AppError>> {
    if !core.peers.active() {
        return None;
    }
    let owner = match core.db.active_deploy_owner().await {
        Ok(Some((job, owner))) if job.job_id == job_id && owner != *core.replica => owner,
        Ok(_) => return None,
        Err(e) => {
            tracing::error!("loading the active deploy: {e}");
            return Some(Err(AppError::Internal));
        }
    };
    Some(core.peers.request(&owner, body()).await)
}

/// Start the bus for `core` (PostgreSQL only): the writer, the listener (which asks the
/// peers for their hosts at once) and the presence watch. Call after this server's lease
/// is taken (`service::lease::start`) and before agents and browsers are served.
pub async fn start(core: &Core) -> anyhow::Result<()> {
    use anyhow::Context;
    let name = core.replica.clone();
    let (out, queue) = crate::hub::bus_channel();
    if core
        .peers
        .inner
        .bus
        .set((name.clone(), out.clone()))
        .is_err()
    {
        anyhow::bail!("the bus was started twice");
    }
    // The listener is up before anything is sent, so no answer to our resync is missed.
    let listener = core
        .db
        .listen(CHANNEL)
        .await
        .context("listening on the replicas' channel")?;
    core.hub.attach_bus(out);
    tokio::spawn(write(core.clone(), queue));
    tokio::spawn(listen(core.clone(), listener));
    tokio::spawn(presence(core.clone()));
    core.peers.send(&BusItem::Resync { to: None });
    tracing::info!(
        replica = &*name,
        "replica bus started (PostgreSQL LISTEN/NOTIFY on {CHANNEL})"
    );
    Ok(())
}

/// The writer: batches the hub's items into notifications, in the hub's order.
async fn write(core: Core, mut queue: BusQueue) {
    let name = core.replica.clone();
    let mut seq = 0u64;
    while let Some(first) = queue.recv().await {
        let mut items = vec![first];
        let mut bytes = items[0].len();
        let deadline = Instant::now() + BATCH_WINDOW;
        while bytes < BATCH_BYTES {
            tokio::select! {
                item = queue.recv() => match item {
                    Some(item) => {
                        bytes += item.len();
                        items.push(item);
                    }
                    None => break,
                },
                _ = sleep_until(deadline) => break,
            }
        }
        while bytes < SEND_BYTES {
            let Some(item) = queue.try_recv() else { break };
            bytes += item.len();
            items.push(item);
        }
        // Items the hub could not queue: skipping a number shows the peers the gap.
        if queue.take_dropped() {
            tracing::warn!("replica bus: events dropped (queue over its bound); peers will resync");
            seq += 1;
        }
        let mut small = Vec::with_capacity(items.len());
        for item in items {
            if item.len() <= pack::max_item(&name) {
                small.push(item);
                continue;
            }
            match core.db.put_bus_event(&name, &item).await {
                Ok(id) => small.push(format!("{{\"big\":{id}}}")),
                Err(e) => {
                    tracing::warn!("replica bus: storing a large event: {e}; peers will resync");
                    seq += 1;
                }
            }
        }
        let mut payloads = Vec::new();
        for (payload, next) in pack::pack(&name, seq, small) {
            seq = next;
            payloads.push(payload);
        }
        if let Err(e) = core.db.notify_many(CHANNEL, &payloads).await {
            // Not sent: the peers see the gap at the next batch and resync.
            tracing::warn!("replica bus: notify failed: {e}");
        }
    }
}

/// The listener: applies the peers' batches, answers their requests.
async fn listen(core: Core, mut listener: sqlx::postgres::PgListener) {
    let mut last_seq: HashMap<String, u64> = HashMap::new();
    loop {
        match listener.try_recv().await {
            Ok(Some(note)) => receive(&core, &mut last_seq, note.payload()).await,
            Ok(None) => {
                // The connection broke and was made again: what was sent meanwhile is lost.
                tracing::warn!("replica bus: listener reconnected; asking the peers for a resync");
                last_seq.clear();
                core.peers.send(&BusItem::Resync { to: None });
                for owner in core.hub.peer_owners() {
                    fill_output(&core, &owner).await;
                }
            }
            Err(e) => {
                tracing::warn!("replica bus: listening: {e}; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

async fn receive(core: &Core, last_seq: &mut HashMap<String, u64>, payload: &str) {
    let me = &*core.replica;
    let batch: Batch = match serde_json::from_str(payload) {
        Ok(batch) => batch,
        Err(e) => {
            // Another version's item, most likely: nothing here can apply it.
            tracing::warn!("replica bus: unreadable batch ({e}); asking for a resync");
            core.peers.send(&BusItem::Resync { to: None });
            return;
        }
    };
    if batch.from == me {
        return;
    }
    let from = batch.from;
    match last_seq.insert(from.clone(), batch.seq) {
        Some(last) if batch.seq <= last => {
            last_seq.insert(from.clone(), last);
            return;
        }
        Some(last) if batch.seq != last + 1 => {
            tracing::warn!(
                peer = from,
                last,
                seq = batch.seq,
                "replica bus: events lost; asking for a resync"
            );
            core.peers.send(&BusItem::Resync {
                to: Some(from.clone()),
            });
            fill_output(core, &from).await;
        }
        _ => {}
    }
    let mut changes = Vec::new();
    for item in batch.items {
        let item = match item {
            BusItem::Big(id) => {
                match core.db.bus_event(id).await {
                    Ok(Some(text)) => match serde_json::from_str(&text) {
                        Ok(item) => item,
                        Err(e) => {
                            tracing::warn!("replica bus: unreadable large event {id}: {e}");
                            continue;
                        }
                    },
                    other => {
                        tracing::warn!("replica bus: large event {id} is gone ({other:?}); asking for a resync");
                        core.peers.send(&BusItem::Resync {
                            to: Some(from.clone()),
                        });
                        continue;
                    }
                }
            }
            item => item,
        };
        match item {
            BusItem::E(event) => changes.push(PeerChange::Event(event)),
            BusItem::Own(id) => changes.push(PeerChange::Own(id)),
            BusItem::Disown(id) => changes.push(PeerChange::Disown(id)),
            BusItem::Revoke(id) => changes.push(PeerChange::Revoke(id)),
            BusItem::Big(_) => {}
            other => {
                // In order: what came before it is applied first.
                core.hub.apply_peer(&from, changes.drain(..));
                control(core, &from, other);
            }
        }
    }
    core.hub.apply_peer(&from, changes);
}

/// After a gap in `from`'s events: the output lines of its hosts' commands that browsers
/// here were not sent, from the stored log (the owner stores a line before it publishes
/// it), before this batch's newer lines. A resync restores the hosts' state but not the
/// lines a log panel follows. Later batches' lines that are now sent already are dropped
/// by the hub (`Hub::output_seen`), so none arrives twice or out of order.
async fn fill_output(core: &Core, from: &str) {
    for (host_id, command_id, seen) in core.hub.peer_commands(from) {
        match crate::service::commands::stored_after(core, &host_id, &command_id, seen).await {
            Ok(lines) => core.hub.apply_peer(
                from,
                lines.into_iter().map(|e| PeerChange::Event(Box::new(e))),
            ),
            Err(e) => tracing::warn!(host = host_id, "loading output lost in a gap: {e}"),
        }
    }
}

/// A resync, request or reply.
fn control(core: &Core, from: &str, item: BusItem) {
    let me = &*core.replica;
    match item {
        BusItem::Resync { to } if to.as_deref().is_none_or(|to| to == me) => answer_resync(core),
        BusItem::Request { to, id, body } if to == me => {
            let core = core.clone();
            let from = from.to_owned();
            tokio::spawn(async move {
                let result = serve_request(&core, body).await;
                core.peers.send(&BusItem::Reply {
                    to: from,
                    id,
                    result,
                });
            });
        }
        BusItem::Reply { to, id, result } if to == me => core.peers.answered(id, result),
        _ => {}
    }
}

/// Answer a resync request: at once, or, within `RESYNC_EVERY` of the last answer, once
/// when it is due, for every request until then. The answer is the state when it is sent,
/// so a later one serves an earlier request as well. Without this an answer that overfilled
/// the queue made gaps, whose resyncs made more answers.
fn answer_resync(core: &Core) {
    let inner = &core.peers.inner;
    if inner.resync_due.swap(true, Ordering::SeqCst) {
        return;
    }
    let last = *inner.resync_sent.lock().unwrap_or_else(|e| e.into_inner());
    let wait = last.map_or(Duration::ZERO, |at| {
        (at + RESYNC_EVERY).saturating_duration_since(Instant::now())
    });
    let send = |core: &Core| {
        let inner = &core.peers.inner;
        *inner.resync_sent.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        inner.resync_due.store(false, Ordering::SeqCst);
        core.hub.resync_out(core.leader.is_leader());
    };
    if wait.is_zero() {
        send(core);
    } else {
        let core = core.clone();
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            send(&core);
        });
    }
}

async fn serve_request(core: &Core, body: Request) -> Result<String, AppError> {
    use crate::service::{commands, deploy};
    match body {
        Request::Run {
            username,
            host_id,
            command,
            generation,
            preview_id,
            rev,
        } => {
            let options = commands::RunOptions {
                generation,
                preview_id,
                rev,
            };
            commands::start_here(core, &username, &host_id, command, options).await
        }
        Request::Stop { username, host_id } => commands::stop_here(core, &username, &host_id).await,
        Request::Unlock { username, host_id } => commands::unlock_here(core, &username, &host_id)
            .await
            .map(|()| String::new()),
        Request::DeployConfirm {
            job_id,
            username,
            role,
            ip,
            api_token,
        } => {
            let viewer = common::Viewer {
                username,
                role,
                csrf_token: String::new(),
                ip,
                session_hash: String::new(),
                authenticated_at: 0,
                api_token,
            };
            deploy::confirm_here(core, &viewer, &job_id)
                .await
                .map(|()| String::new())
        }
        Request::DeployCancel { job_id, username } => deploy::cancel_here(core, &username, &job_id)
            .await
            .map(|()| String::new()),
    }
}

/// Presence: peers whose lease (`replica:<name>`) ran out lose their hosts.
async fn presence(core: Core) {
    let mut tick = tokio::time::interval(PRESENCE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rounds = 0u64;
    loop {
        tick.tick().await;
        rounds += 1;
        let live: HashSet<String> = match core
            .db
            .lease_holders(&crate::service::lease::replica_lease(""))
            .await
        {
            Ok(holders) => holders.into_iter().collect(),
            Err(e) => {
                // Without the database this replica cannot tell who is alive: it keeps
                // what it has rather than drop every remote host.
                tracing::warn!("reading the servers' leases: {e}");
                continue;
            }
        };
        for owner in core.hub.peer_owners() {
            if !live.contains(&*owner) {
                let n = core.hub.peer_gone(&owner);
                tracing::warn!(
                    peer = &*owner,
                    hosts = n,
                    "replica's lease expired; its hosts are offline until their agents reconnect"
                );
            }
        }
        if rounds.is_multiple_of(30) {
            if let Err(e) = core.db.prune_bus_events(PRUNE_AFTER_S).await {
                tracing::warn!("pruning large bus events: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::testing::{fresh_postgres_database, TestBackend};
    use protocol::messages::CommandOutput;
    use protocol::OutputStream;

    fn output(seq: u64, line: String) -> BrowserEvent {
        BrowserEvent::CommandOutput(CommandOutput {
            host_id: "h".into(),
            command_id: "c1".into(),
            seq,
            stream: OutputStream::Stdout,
            line,
        })
    }

    /// Two replicas with host "h" on a new PostgreSQL database, their leases and buses
    /// started (alive to each other: the presence watch reads the leases), and the events
    /// of a browser on B. None without a test PostgreSQL.
    async fn two_replicas() -> Option<(
        Core,
        Core,
        tokio::sync::broadcast::Receiver<tungstenite::Utf8Bytes>,
    )> {
        let Some(TestBackend::Postgres(server)) = TestBackend::postgres() else {
            return None;
        };
        let url = fresh_postgres_database(&server).await.unwrap();
        let a = crate::service::test_core_on(&url, &["h"], &["nixdeck"]).await;
        let b = crate::service::test_core_on(&url, &["h"], &["nixdeck"]).await;
        for core in [&a, &b] {
            crate::service::lease::start(core).await.unwrap();
            start(core).await.unwrap();
        }
        let seat = b.hub.browser_seat("ann", 1).unwrap();
        let events = b.hub.subscribe_browser(&seat).await.unwrap().events;
        Some((a, b, events))
    }

    /// A bus for `core` without PostgreSQL: what its hub sends lands in the queue.
    fn attach_test_bus(core: &Core) -> BusQueue {
        let (out, queue) = crate::hub::bus_channel();
        assert!(core
            .peers
            .inner
            .bus
            .set((core.replica.clone(), out.clone()))
            .is_ok());
        core.hub.attach_bus(out);
        queue
    }

    /// A peer's batches are applied once, in order; a gap in its `seq` asks it for a
    /// resync; a peer's resync request is answered with the hosts whose agent is here.
    #[tokio::test]
    async fn a_gap_asks_for_a_resync_and_a_resync_is_answered() {
        let dir = tempfile::tempdir().unwrap();
        let core = crate::service::test_core(
            &TestBackend::Sqlite,
            dir.path(),
            &["h", "mine"],
            &["nixdeck"],
        )
        .await;
        let mut queue = attach_test_bus(&core);
        let mut last = HashMap::new();
        let batch =
            |seq: u64, item: &str| format!(r#"{{"from":"p","seq":{seq},"items":[{item}]}}"#);

        receive(&core, &mut last, &batch(1, r#"{"own":"h"}"#)).await;
        receive(&core, &mut last, &batch(2, r#"{"disown":"h"}"#)).await;
        assert_eq!(core.hub.remote_owner("h"), None);
        // Sent again (a duplicate): ignored, so the host is not owned again.
        receive(&core, &mut last, &batch(1, r#"{"own":"h"}"#)).await;
        assert_eq!(core.hub.remote_owner("h"), None);
        assert_eq!(queue.try_recv(), None);
        // 3 is missing: applied, and a resync asked of that peer.
        receive(&core, &mut last, &batch(4, r#"{"own":"h"}"#)).await;
        assert_eq!(core.hub.remote_owner("h").as_deref(), Some("p"));
        assert_eq!(
            queue.try_recv().as_deref(),
            Some(r#"{"resync":{"to":"p"}}"#)
        );
        // Our own batches are not applied.
        let own = format!(
            r#"{{"from":"{}","seq":1,"items":[{{"disown":"h"}}]}}"#,
            core.replica
        );
        receive(&core, &mut last, &own).await;
        assert_eq!(core.hub.remote_owner("h").as_deref(), Some("p"));

        // A resync request: the hosts whose agents are here, each after its `own`.
        let reg: protocol::messages::Register = serde_json::from_value(serde_json::json!({
            "hostname": "mine", "host_type": "nixos", "agent_version": protocol::VERSION
        }))
        .unwrap();
        let _link = core.hub.attach_agent("mine", &reg, None).unwrap();
        while queue.try_recv().is_some() {}
        receive(&core, &mut last, &batch(5, r#"{"resync":{"to":null}}"#)).await;
        assert_eq!(queue.try_recv().as_deref(), Some(r#"{"own":"mine"}"#));
        let host = queue.try_recv().unwrap();
        assert!(
            host.contains("host_updated") && host.contains(r#""id":"mine""#),
            "{host}"
        );
        // This server leads (a test core does): the update PR, none here, follows. (No
        // desired state: this core has no source.)
        let pr = queue.try_recv().unwrap();
        assert!(
            pr.contains("pending_pr") && pr.contains(r#""pr":null"#),
            "{pr}"
        );
        assert_eq!(
            queue.try_recv(),
            None,
            "nothing of the hosts held elsewhere"
        );
        // A server that does not lead answers with its hosts only: the readings are the
        // leader's to send.
        core.hub.resync_out(false);
        assert_eq!(queue.try_recv().as_deref(), Some(r#"{"own":"mine"}"#));
        assert!(queue.try_recv().unwrap().contains("host_updated"));
        assert_eq!(queue.try_recv(), None, "no desired state or PR");
    }

    /// A gap in a peer's events loses output lines its owner had stored: they reach the
    /// browsers here from the stored log, before the batch that showed the gap, and the
    /// batch's own line is not sent twice.
    #[tokio::test]
    async fn lines_lost_in_a_gap_come_from_the_stored_log_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let core =
            crate::service::test_core(&TestBackend::Sqlite, dir.path(), &["h"], &["nixdeck"]).await;
        let _queue = attach_test_bus(&core);
        // The owner ("p") stored lines 1..=7 of c1.
        core.db
            .insert_command("c1", "h", CommandKind::Pull, protocol::Timestamp(1), "ann")
            .await
            .unwrap();
        let lines: Vec<_> = (1..=7)
            .map(|seq| protocol::messages::Output {
                command_id: "c1".into(),
                seq,
                stream: OutputStream::Stdout,
                line: format!("line {seq}"),
            })
            .collect();
        core.db
            .store_output("c1", &lines, protocol::Timestamp(2), u64::MAX)
            .await
            .unwrap();
        let seat = core.hub.browser_seat("ann", 1).unwrap();
        let mut events = core.hub.subscribe_browser(&seat).await.unwrap().events;

        let line = |seq: u64| {
            serde_json::to_string(&BusItem::E(Box::new(output(seq, format!("line {seq}")))))
                .unwrap()
        };
        let batch = |seq: u64, items: &[String]| {
            format!(
                r#"{{"from":"p","seq":{seq},"items":[{}]}}"#,
                items.join(",")
            )
        };
        let mut last = HashMap::new();
        receive(
            &core,
            &mut last,
            &batch(1, &[r#"{"own":"h"}"#.into(), line(1), line(2)]),
        )
        .await;
        // Batches 2 and 3 (lines 3..=5) are lost.
        receive(&core, &mut last, &batch(4, &[line(6)])).await;
        receive(&core, &mut last, &batch(5, &[line(7)])).await;

        let mut got = Vec::new();
        while let Ok(Ok(text)) =
            tokio::time::timeout(Duration::from_millis(300), events.recv()).await
        {
            if let BrowserEvent::CommandOutput(o) = serde_json::from_str(text.as_str()).unwrap() {
                got.push(o.seq);
            }
        }
        assert_eq!(got, vec![1, 2, 3, 4, 5, 6, 7]);
    }

    /// A burst larger than one statement's worth of notifications (`SEND_BYTES`) reaches
    /// the peer whole and in order, with no gap.
    #[tokio::test]
    async fn a_burst_of_several_statements_arrives_in_order() {
        let Some((a, _b, mut events)) = two_replicas().await else {
            return;
        };
        // 2 000 lines of 400 bytes: about 1.6 statements' worth.
        let n = 2_000u64;
        a.hub
            .publish_all((1..=n).map(|seq| output(seq, format!("{seq:0>400}"))));
        let mut got = Vec::new();
        while got.len() < n as usize {
            let text = tokio::time::timeout(Duration::from_secs(20), events.recv())
                .await
                .expect("A's burst reaches B within 20 s")
                .unwrap();
            if let BrowserEvent::CommandOutput(o) = serde_json::from_str(text.as_str()).unwrap() {
                assert_eq!(o.line.trim_start_matches('0'), o.seq.to_string());
                got.push(o.seq);
            }
        }
        assert_eq!(got, (1..=n).collect::<Vec<_>>());
    }

    /// Resync requests within `RESYNC_EVERY` of an answer get one more answer, when due.
    #[tokio::test]
    async fn resync_requests_close_together_get_one_answer_when_due() {
        let dir = tempfile::tempdir().unwrap();
        let core =
            crate::service::test_core(&TestBackend::Sqlite, dir.path(), &["mine"], &["nixdeck"])
                .await;
        let mut queue = attach_test_bus(&core);
        let reg: protocol::messages::Register = serde_json::from_value(serde_json::json!({
            "hostname": "mine", "host_type": "nixos", "agent_version": protocol::VERSION
        }))
        .unwrap();
        let _link = core.hub.attach_agent("mine", &reg, None).unwrap();
        while queue.try_recv().is_some() {}
        let answers = |queue: &mut BusQueue| {
            let mut n = 0;
            while let Some(item) = queue.try_recv() {
                n += usize::from(item == r#"{"own":"mine"}"#);
            }
            n
        };
        let mut last = HashMap::new();
        let request = |seq: u64, from: &str| {
            format!(r#"{{"from":"{from}","seq":{seq},"items":[{{"resync":{{"to":null}}}}]}}"#)
        };
        receive(&core, &mut last, &request(1, "p")).await;
        assert_eq!(answers(&mut queue), 1, "the first is answered at once");
        receive(&core, &mut last, &request(1, "q")).await;
        receive(&core, &mut last, &request(2, "p")).await;
        assert_eq!(answers(&mut queue), 0, "not again within a second");
        tokio::time::sleep(RESYNC_EVERY + Duration::from_millis(300)).await;
        assert_eq!(answers(&mut queue), 1, "one answer for both, when due");
    }

    /// Two replicas on one database: three events made on A reach B's browsers in A's
    /// order, the middle one (30 kB, far over a notification's 8000 bytes) by way of
    /// `bus_events`.
    #[tokio::test]
    async fn a_large_event_goes_through_the_table_in_its_place() {
        let Some((a, b, mut events)) = two_replicas().await else {
            return;
        };

        let big = "x".repeat(30_000);
        a.hub.publish_all([
            output(1, "before".into()),
            output(2, big.clone()),
            output(3, "after".into()),
        ]);
        let mut got = Vec::new();
        while got.len() < 3 {
            let text = tokio::time::timeout(Duration::from_secs(10), events.recv())
                .await
                .expect("A's events reach B within 10 s")
                .unwrap();
            let event: BrowserEvent = serde_json::from_str(text.as_str()).unwrap();
            if let BrowserEvent::CommandOutput(o) = event {
                got.push((o.seq, o.line));
            }
        }
        assert_eq!(
            got,
            vec![(1, "before".to_owned()), (2, big), (3, "after".to_owned())]
        );
        let stored =
            b.db.bus_event(1)
                .await
                .unwrap()
                .expect("the large event's row");
        assert!(stored.len() > pack::NOTIFY_LIMIT, "{} bytes", stored.len());
        // Each arrives once.
        let more = tokio::time::timeout(Duration::from_millis(300), events.recv()).await;
        assert!(more.is_err(), "an extra event: {more:?}");
    }
}
