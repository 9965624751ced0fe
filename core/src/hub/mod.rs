//! The hub: the fleet state in memory, the live agent links, and the fan-out to browsers.
//!
//! Every change goes through `publish`, which applies a `BrowserEvent` to the hub's
//! `FleetState` (the same state machine the browser runs) and broadcasts it, serialised
//! once. Both happen under one lock, so a browser that subscribes gets a snapshot and then
//! exactly the deltas that follow it. No await happens under the lock.

pub mod compartments;

use compartments::Reported;
use protocol::messages::{
    CommandComplete, CommandQueued, DesiredChanged, Heartbeat, HostBody, HostHeartbeat, HostRef,
    PendingPrChanged, Register, Snapshot, StatusChecks,
};
use protocol::{
    BrowserEvent, Changed, CheckStatus, CommandStatus, DesiredState, FleetState, Host,
    PendingCommand, PendingPr, ServerMessage, StatusCheck, Timestamp, UpdateStatus, VERSION,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{broadcast, mpsc, watch};
use tungstenite::Utf8Bytes;

/// How many events a browser may fall behind before it is disconnected (it then
/// reconnects and resyncs from a snapshot, never reading a gapped stream).
/// Sized so a browser has several seconds to read a large snapshot while a busy fleet
/// (thousands of heartbeats a second) keeps going; slots hold shared frames, not copies.
const BROWSER_LAG_LIMIT: usize = 16_384;
/// Snapshots copied and serialised at once. Each is a full copy of the fleet (about 1 kB
/// per host), so a reconnect wave of browsers takes turns instead of all copying at once.
/// A turn ends when the text is ready, not when it is sent: a browser that reads slowly,
/// or not at all, must hold no one else up (with the turn held until sent, four stalled
/// sockets kept every new browser waiting 30 s: the slow-browser bench in docs/BENCHMARKS.md). Copying and
/// serialising do not await, so each worker thread does one at a time anyway: the turns
/// bind only on runtimes with more than four workers.
const SNAPSHOT_SLOTS: usize = 4;
/// Snapshots on their way to browsers at once. Each holds its serialised copy until it is
/// sent or the browser is dropped for not reading (`browser_socket`), so this bounds the
/// memory that slow readers can pin: 64 × 10 MB at 10 000 hosts.
const SNAPSHOT_SENDS: usize = 64;
/// Snapshot sends one user may have in flight at once: half of `SNAPSHOT_SENDS`, so one
/// user with many tabs (or a script opening sockets) cannot take every send and keep
/// everyone else's browsers waiting for theirs.
const SNAPSHOT_SENDS_PER_USER: usize = SNAPSHOT_SENDS / 2;
/// Frames queued for one agent before further sends fail (the agent is stuck).
const AGENT_QUEUE: usize = 256;

/// What the hub asks an agent's socket task to send.
#[derive(Debug)]
pub enum AgentOut {
    Frame(ServerMessage),
}

/// Why the hub closes an agent's socket: the close code and reason (4000 when replaced by
/// a newer connection, 1008 when the token was rotated or the host removed). It travels on
/// a channel of its own, so a close is never lost behind a full frame queue.
pub type AgentClose = (u16, &'static str);

/// An agent link the hub accepted: its id, the frames to send, and the close signal.
pub struct AgentAttached {
    pub conn_id: u64,
    pub outbox: mpsc::Receiver<AgentOut>,
    pub close: watch::Receiver<Option<AgentClose>>,
}

/// The agent's token was revoked (rotated, or the host removed) after it authenticated.
#[derive(Debug, PartialEq)]
pub struct Revoked;

/// Why a host cannot take a new command.
#[derive(Debug, PartialEq)]
pub enum Reservation {
    NotFound,
    Offline,
    Busy(PendingCommand),
    /// The host enrolled itself and no admin has approved it yet.
    PendingApproval,
}

/// The hub's end of one agent's socket task: where to queue frames for it, and how to
/// close it.
struct AgentSender {
    conn_id: u64,
    tx: mpsc::Sender<AgentOut>,
    close: watch::Sender<Option<AgentClose>>,
}

impl AgentSender {
    fn close(&self, why: AgentClose) {
        // A receiver that is gone has closed already.
        let _ = self.close.send(Some(why));
    }
}

struct HubState {
    fleet: FleetState,
    agents: HashMap<String, AgentSender>,
    /// What agents reported beyond the wire `Host` (lock hash and age, raw checks).
    reported: HashMap<String, Reported>,
    /// Counts token revocations (rotations and removals), fleet-wide.
    revocations: u64,
    /// Per host, the value of `revocations` when its token was last revoked. A link whose
    /// token was checked before that may not attach (`attach_agent`).
    revoked_at: HashMap<String, u64>,
    /// The fleet's counts, kept in step with `fleet.hosts` by `publish_locked_if`.
    counts: HostCounts,
    /// Where this server's own events go to the other replicas (None: no bus, one
    /// server). Sent under the lock, so the bus carries them in the order browsers got
    /// them.
    bus: Option<BusOut>,
    /// Hosts whose agent is connected to another replica, by that replica's name
    /// (`crate::replica`). A host is in `agents` or in here, never in both: the newest
    /// link's replica is the owner (`attach_agent`, `PeerChange::Own`).
    owners: HashMap<String, Arc<str>>,
    /// Per host, the command whose output browsers were last sent and its highest seq:
    /// a line at or below it is not sent again (the lines a new owner republishes after a
    /// failover, `Hub::output_seen`).
    output_seq: HashMap<String, (String, u64)>,
}

/// The most bytes of events waiting for the bus writer. Past it the hub drops events
/// rather than grow (or wait: the hub never awaits) and the writer skips a sequence
/// number, so the peers see the gap and ask for a resync. At 184 bytes a heartbeat item
/// (`replica::pack`'s test), this is over 180 000 heartbeats: more than a minute of a
/// 10 000-host fleet at one every 5 s.
const BUS_QUEUE_BYTES: usize = 32 * 1024 * 1024;

/// The hub's end of the event bus: one JSON item per event or ownership change, for the
/// bus writer (`crate::replica`) to batch into notifications.
#[derive(Clone)]
pub struct BusOut {
    tx: mpsc::UnboundedSender<String>,
    queued: Arc<AtomicUsize>,
    dropped: Arc<AtomicBool>,
}

/// The bus writer's end: items in the order the hub made them.
pub struct BusQueue {
    rx: mpsc::UnboundedReceiver<String>,
    queued: Arc<AtomicUsize>,
    dropped: Arc<AtomicBool>,
}

/// A bus channel: the hub's end and the writer's.
pub fn bus_channel() -> (BusOut, BusQueue) {
    let (tx, rx) = mpsc::unbounded_channel();
    let queued = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicBool::new(false));
    (
        BusOut {
            tx,
            queued: queued.clone(),
            dropped: dropped.clone(),
        },
        BusQueue {
            rx,
            queued,
            dropped,
        },
    )
}

impl BusOut {
    /// Queue an event already serialised for browsers (the same text, not a second
    /// serialisation: this runs per heartbeat).
    fn send_event(&self, text: &str) {
        self.send(format!("{{\"e\":{text}}}"));
    }

    /// Queue one item; never waits. Over `BUS_QUEUE_BYTES`, the item is dropped and the
    /// loss noted for the writer.
    pub fn send(&self, item: String) {
        let n = item.len();
        if self.queued.fetch_add(n, Ordering::Relaxed) + n > BUS_QUEUE_BYTES {
            self.queued.fetch_sub(n, Ordering::Relaxed);
            self.dropped.store(true, Ordering::Relaxed);
            return;
        }
        if self.tx.send(item).is_err() {
            self.queued.fetch_sub(n, Ordering::Relaxed);
        }
    }
}

impl BusQueue {
    /// The next item (None when the hub is gone).
    pub async fn recv(&mut self) -> Option<String> {
        let item = self.rx.recv().await?;
        self.queued.fetch_sub(item.len(), Ordering::Relaxed);
        Some(item)
    }

    /// The next item if one is waiting.
    pub fn try_recv(&mut self) -> Option<String> {
        let item = self.rx.try_recv().ok()?;
        self.queued.fetch_sub(item.len(), Ordering::Relaxed);
        Some(item)
    }

    /// Whether items were dropped since the last call.
    pub fn take_dropped(&self) -> bool {
        self.dropped.swap(false, Ordering::Relaxed)
    }
}

/// A change another replica sent over the bus (`Hub::apply_peer`).
#[derive(Debug)]
pub enum PeerChange {
    /// An event as that replica's browsers got it (boxed: most changes are events, and
    /// the others are small).
    Event(Box<BrowserEvent>),
    /// The replica holds this host's agent now.
    Own(String),
    /// The replica's link to this host's agent ended.
    Disown(String),
    /// The host's token was rotated there: a link here must close.
    Revoke(String),
}

/// The JSON of a bus item that is not an event (see `crate::replica::BusItem`).
fn bus_item(kind: &str, host_id: &str) -> String {
    serde_json::json!({ kind: host_id }).to_string()
}

/// Whether an event from a replica other than the host's recorded owner is stale (sent
/// before the agent moved): such events are dropped, so each host's events come from one
/// replica, in its order.
fn from_owner(state: &HubState, host_id: &str, from: &str) -> bool {
    !state.agents.contains_key(host_id)
        && state
            .owners
            .get(host_id)
            .is_none_or(|owner| &**owner == from)
}

/// What /metrics reports about the hosts, kept up to date as they change (under the hub
/// lock, in `publish_locked_if`), so a scrape reads these numbers instead of copying the
/// fleet: at 10 000 hosts a copy is about 10 MB per scrape.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostCounts {
    pub hosts: u64,
    pub online: u64,
    /// Hosts with a pending command.
    pub busy: u64,
    /// `compartments[c][s]`: hosts whose compartment `UpdateStatus::NAMES[c]` has the
    /// status `CheckStatus::ALL[s]`.
    pub compartments: [[u64; CheckStatus::ALL.len()]; UpdateStatus::NAMES.len()],
}

impl HostCounts {
    /// Counted over `hosts` from scratch (at start, after a snapshot, and in tests).
    pub fn of<'a>(hosts: impl IntoIterator<Item = &'a Host>) -> HostCounts {
        let mut counts = HostCounts::default();
        for host in hosts {
            counts.add(Share::of(host));
        }
        counts
    }

    fn add(&mut self, share: Share) {
        self.hosts += 1;
        self.online += u64::from(share.online);
        self.busy += u64::from(share.busy);
        for (c, status) in share.checks.into_iter().enumerate() {
            self.compartments[c][status as usize] += 1;
        }
    }

    fn remove(&mut self, share: Share) {
        // Saturating: a count that went wrong must not wrap to 2^64 on a dashboard.
        self.hosts = self.hosts.saturating_sub(1);
        self.online = self.online.saturating_sub(u64::from(share.online));
        self.busy = self.busy.saturating_sub(u64::from(share.busy));
        for (c, status) in share.checks.into_iter().enumerate() {
            let n = &mut self.compartments[c][status as usize];
            *n = n.saturating_sub(1);
        }
    }
}

/// What one host adds to `HostCounts`.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Share {
    online: bool,
    busy: bool,
    checks: [CheckStatus; UpdateStatus::NAMES.len()],
}

impl Share {
    fn of(host: &Host) -> Share {
        Share {
            online: host.online,
            busy: host.pending_command.is_some(),
            checks: host.update_status.checks().map(|c| c.status),
        }
    }
}

/// The fleet-wide numbers of /metrics, read under the lock without copying any host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FleetCounts {
    pub hosts: HostCounts,
    /// The desired-state source cannot be read.
    pub desired_error: bool,
    /// A flake.lock update PR is open.
    pub pending_pr: bool,
    /// A Merge & Deploy job runs.
    pub deploy_active: bool,
}

/// The host an event is about, if any.
fn event_host(event: &BrowserEvent) -> Option<&str> {
    match event {
        BrowserEvent::HostHeartbeat(hb) => Some(&hb.host_id),
        BrowserEvent::HostOffline(r) | BrowserEvent::HostRemoved(r) => Some(&r.host_id),
        BrowserEvent::HostUpdated(b) | BrowserEvent::HostAdded(b) => Some(&b.host.id),
        BrowserEvent::CommandQueued(q) => Some(&q.host_id),
        BrowserEvent::CommandComplete(c) => Some(&c.host_id),
        BrowserEvent::CommandOutput(_)
        | BrowserEvent::Snapshot(_)
        | BrowserEvent::PendingPr(_)
        | BrowserEvent::DeployProgress(_)
        | BrowserEvent::DesiredState(_) => None,
    }
}

#[derive(Default)]
pub struct Counters {
    pub unknown_frames: AtomicU64,
    pub malformed_frames: AtomicU64,
    pub lagged_browsers: AtomicU64,
    /// Commands ended, by final status (`CommandStatus::ALL` order), counted as each
    /// frees its host (`Hub::release`).
    pub commands_ended: [AtomicU64; CommandStatus::ALL.len()],
}

#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

/// See `Hub::subscribe_browser`.
pub struct BrowserStart {
    pub snapshot: Utf8Bytes,
    pub events: broadcast::Receiver<Utf8Bytes>,
    /// Held until the snapshot is sent or given up.
    pub sending: SnapshotSend,
}

/// A snapshot send in flight: one of `SNAPSHOT_SENDS`, and one of the user's
/// `SNAPSHOT_SENDS_PER_USER`. Dropping it gives both back.
pub struct SnapshotSend {
    _user: tokio::sync::OwnedSemaphorePermit,
    _all: tokio::sync::OwnedSemaphorePermit,
}

/// One of a user's open browser sockets (`Hub::browser_seat`); dropping it frees the seat.
pub struct BrowserSeat {
    hub: Hub,
    user: String,
    snapshot_sends: Arc<tokio::sync::Semaphore>,
}

impl Drop for BrowserSeat {
    fn drop(&mut self) {
        let mut users = self.hub.browser_users();
        if let Some(entry) = users.get_mut(&self.user) {
            entry.sockets -= 1;
            if entry.sockets == 0 {
                users.remove(&self.user);
            }
        }
    }
}

/// A user's open browser sockets, and their share of the snapshot sends.
struct UserBrowsers {
    sockets: usize,
    snapshot_sends: Arc<tokio::sync::Semaphore>,
}

fn snapshot_text(snapshot: Snapshot) -> Utf8Bytes {
    Utf8Bytes::from(serde_json::to_string(&BrowserEvent::Snapshot(snapshot)).unwrap_or_default())
}

struct Inner {
    state: Mutex<HubState>,
    events: broadcast::Sender<Utf8Bytes>,
    /// Every command end, typed, for in-process waiters (Merge & Deploy).
    completions: broadcast::Sender<CommandComplete>,
    snapshot_slots: tokio::sync::Semaphore,
    snapshot_sends: Arc<tokio::sync::Semaphore>,
    /// Per user name; an entry lives while the user has a socket open. A lock of its own:
    /// sockets open and close without touching the fleet.
    browser_users: Mutex<HashMap<String, UserBrowsers>>,
    next_conn: AtomicU64,
    interval_s: u32,
    counters: Counters,
}

impl Hub {
    /// A hub over the stored hosts (each with the lock hash it last reported), all offline
    /// until their agents connect. `desired` is the configured source before its first
    /// read (None: not configured).
    pub fn new(
        hosts: impl IntoIterator<Item = (Host, Option<String>)>,
        interval_s: u32,
        desired: Option<DesiredState>,
    ) -> Hub {
        let mut fleet = FleetState {
            dashboard_version: VERSION.to_owned(),
            desired,
            ..FleetState::default()
        };
        let mut reported_by_host = HashMap::new();
        let now = Timestamp::now();
        for (mut host, lock_hash) in hosts {
            let reported = Reported {
                lock_hash,
                ..Reported::default()
            };
            compartments::derive(&mut host, &reported, fleet.desired.as_ref(), now);
            reported_by_host.insert(host.id.clone(), reported);
            fleet.hosts.insert(host.id.clone(), host);
        }
        let (events, _) = broadcast::channel(BROWSER_LAG_LIMIT);
        let (completions, _) = broadcast::channel(1024);
        let counts = HostCounts::of(fleet.hosts.values());
        Hub {
            inner: Arc::new(Inner {
                state: Mutex::new(HubState {
                    counts,
                    fleet,
                    agents: HashMap::new(),
                    reported: reported_by_host,
                    revocations: 0,
                    revoked_at: HashMap::new(),
                    bus: None,
                    owners: HashMap::new(),
                    output_seq: HashMap::new(),
                }),
                events,
                completions,
                snapshot_slots: tokio::sync::Semaphore::new(SNAPSHOT_SLOTS),
                snapshot_sends: Arc::new(tokio::sync::Semaphore::new(SNAPSHOT_SENDS)),
                browser_users: Mutex::default(),
                next_conn: AtomicU64::new(1),
                interval_s,
                counters: Counters::default(),
            }),
        }
    }

    /// Which web build the dashboard serves; every snapshot carries it.
    pub fn set_build(&self, build: String) {
        self.lock().fleet.build = build;
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        // A panic elsewhere must not take the hub down with a poisoned lock: the state is
        // only ever changed through `FleetState::apply`, which leaves it consistent.
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn browser_users(&self) -> MutexGuard<'_, HashMap<String, UserBrowsers>> {
        // Plain counts: a panic elsewhere leaves them consistent.
        self.inner
            .browser_users
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    pub fn interval_s(&self) -> u32 {
        self.inner.interval_s
    }

    pub fn counters(&self) -> &Counters {
        &self.inner.counters
    }

    /// Apply and broadcast one event, with the lock held. Events that change nothing are
    /// not sent, except command events, which browsers always need (the log panel).
    fn publish_locked(&self, state: &mut HubState, event: BrowserEvent) {
        let always = matches!(
            event,
            BrowserEvent::CommandQueued(_)
                | BrowserEvent::CommandOutput(_)
                | BrowserEvent::CommandComplete(_)
        );
        self.publish_locked_if(state, event, always);
    }

    fn publish_locked_if(&self, state: &mut HubState, event: BrowserEvent, always: bool) {
        self.publish_core(state, event, always, true);
    }

    /// Apply and broadcast one event; `forward`: also hand it to the bus (an event made
    /// here; one that came from the bus is not sent back to it).
    fn publish_core(&self, state: &mut HubState, event: BrowserEvent, always: bool, forward: bool) {
        if let BrowserEvent::CommandOutput(o) = &event {
            // A line browsers here were sent already (republished after a failover).
            let seen = state.output_seq.get(&o.host_id);
            if seen.is_some_and(|(command, seq)| *command == o.command_id && *seq >= o.seq) {
                return;
            }
            state
                .output_seq
                .insert(o.host_id.clone(), (o.command_id.clone(), o.seq));
        }
        // Every change to the fleet passes here, so the counts change here too: the
        // host's share before the event leaves them, its share after joins them.
        let host = event_host(&event);
        let before = host.and_then(|id| state.fleet.hosts.get(id)).map(Share::of);
        let changed = state.fleet.apply(&event);
        match (&changed, host) {
            (Changed::Nothing, _) => {}
            (Changed::All, _) => state.counts = HostCounts::of(state.fleet.hosts.values()),
            (_, Some(id)) => {
                let after = state.fleet.hosts.get(id).map(Share::of);
                if before != after {
                    if let Some(share) = before {
                        state.counts.remove(share);
                    }
                    if let Some(share) = after {
                        state.counts.add(share);
                    }
                }
            }
            (_, None) => {}
        }
        if changed == Changed::Nothing && !always {
            return;
        }
        match serde_json::to_string(&event) {
            // No receivers is fine: nobody is watching.
            Ok(text) => {
                if let Some(bus) = state.bus.as_ref().filter(|_| forward) {
                    bus.send_event(&text);
                }
                drop(self.inner.events.send(Utf8Bytes::from(text)))
            }
            Err(e) => tracing::error!("cannot serialise event: {e}"),
        }
    }

    pub fn publish(&self, event: BrowserEvent) {
        let mut state = self.lock();
        self.publish_locked(&mut state, event);
    }

    /// Publish a batch (e.g. output lines) under one lock.
    pub fn publish_all(&self, events: impl IntoIterator<Item = BrowserEvent>) {
        let mut state = self.lock();
        for event in events {
            self.publish_locked(&mut state, event);
        }
    }

    /// Claim an online, idle host for a new command. The check and the claim happen under
    /// one lock, so two requests can never both win.
    pub fn reserve(&self, id: &str, pending: PendingCommand) -> Result<(), Reservation> {
        let mut state = self.lock();
        let Some(host) = state.fleet.hosts.get(id) else {
            return Err(Reservation::NotFound);
        };
        if let Some(p) = &host.pending_command {
            return Err(Reservation::Busy(p.clone()));
        }
        if host.pending_approval {
            return Err(Reservation::PendingApproval);
        }
        if !state.agents.contains_key(id) {
            return Err(Reservation::Offline);
        }
        let mut host = host.clone();
        host.pending_command = Some(pending.clone());
        self.publish_locked(&mut state, BrowserEvent::HostUpdated(HostBody { host }));
        self.publish_locked(
            &mut state,
            BrowserEvent::CommandQueued(CommandQueued {
                host_id: id.to_owned(),
                command_id: pending.command_id,
                command: pending.command,
                queued_at: pending.started_at,
            }),
        );
        Ok(())
    }

    /// The agent's own system/tests verdicts. Kept as reported; what browsers see is gated
    /// by the git and lock compartments (see `gate`).
    pub fn report_checks(&self, id: &str, checks: StatusChecks) {
        {
            let mut state = self.lock();
            let reported = state.reported.entry(id.to_owned()).or_default();
            if checks.system.is_some() {
                reported.checks.system = checks.system;
            }
            if checks.tests.is_some() {
                reported.checks.tests = checks.tests;
            }
        }
        self.update_host(id, |_| {});
    }

    /// An activating command was rolled back (Some: the system compartment shows this
    /// error) or ended ok (None: the agent's verdicts show again).
    pub fn set_activation_check(&self, id: &str, check: Option<StatusCheck>) {
        let mut state = self.lock();
        let Some(reported) = state.reported.get_mut(id) else {
            return;
        };
        reported.rolled_back = check;
        self.update_locked(&mut state, id, |_| {});
    }

    /// Mark a command that survived a restart (or a reconnect) as pending again.
    pub fn restore_pending(&self, id: &str, pending: PendingCommand) {
        self.update_host(id, |h| h.pending_command = Some(pending));
    }

    /// The command is over for its host: broadcast its completion and free the host, if
    /// it is still the host's pending command.
    pub fn release(&self, done: CommandComplete) {
        let mut state = self.lock();
        let host_id = done.host_id.clone();
        if let Some(i) = CommandStatus::ALL.iter().position(|s| *s == done.status) {
            self.inner.counters.commands_ended[i].fetch_add(1, Ordering::Relaxed);
        }
        let _ = self.inner.completions.send(done.clone());
        self.publish_locked(&mut state, BrowserEvent::CommandComplete(done));
        if let Some(host) = state.fleet.hosts.get(&host_id).cloned() {
            // The contract also promises host_updated with pending_command cleared.
            self.publish_locked_if(
                &mut state,
                BrowserEvent::HostUpdated(HostBody { host }),
                true,
            );
        }
    }

    pub fn pending(&self, id: &str) -> Option<PendingCommand> {
        self.lock().fleet.hosts.get(id)?.pending_command.clone()
    }

    /// Every pending command, for the timeout watch.
    pub fn pending_commands(&self) -> Vec<(String, PendingCommand)> {
        self.lock()
            .fleet
            .hosts
            .values()
            .filter_map(|h| h.pending_command.clone().map(|p| (h.id.clone(), p)))
            .collect()
    }

    /// Hosts whose agents are connected, for bulk runs over "all online".
    /// The ids of the hosts that `keep` accepts, online or not.
    pub fn ids_where(&self, keep: impl Fn(&Host) -> bool) -> Vec<String> {
        let state = self.lock();
        state
            .fleet
            .hosts
            .values()
            .filter(|h| keep(h))
            .map(|h| h.id.clone())
            .collect()
    }

    /// `view` of every host, under one lock (the notifier's once-a-second look, without
    /// copying the fleet).
    pub fn map_hosts<T>(&self, view: impl Fn(&Host) -> T) -> Vec<T> {
        self.lock().fleet.hosts.values().map(view).collect()
    }

    /// Online hosts: connected here, or (with replicas) to another server.
    pub fn online_ids(&self) -> Vec<String> {
        let state = self.lock();
        state
            .fleet
            .hosts
            .values()
            .filter(|h| {
                state.agents.contains_key(&h.id) || (h.online && state.owners.contains_key(&h.id))
            })
            .map(|h| h.id.clone())
            .collect()
    }

    /// A seat for one more browser socket of `user`, or None when the user has `max` open
    /// already. Held for the socket's life.
    pub fn browser_seat(&self, user: &str, max: usize) -> Option<BrowserSeat> {
        let mut users = self.browser_users();
        let entry = users
            .entry(user.to_owned())
            .or_insert_with(|| UserBrowsers {
                sockets: 0,
                snapshot_sends: Arc::new(tokio::sync::Semaphore::new(SNAPSHOT_SENDS_PER_USER)),
            });
        if entry.sockets >= max {
            if entry.sockets == 0 {
                users.remove(user);
            }
            return None;
        }
        entry.sockets += 1;
        Some(BrowserSeat {
            hub: self.clone(),
            user: user.to_owned(),
            snapshot_sends: entry.snapshot_sends.clone(),
        })
    }

    /// What a new browser starts from: its snapshot, the receiver for everything after it,
    /// and a permit to hold until the snapshot is sent (`SNAPSHOT_SENDS`, of which the
    /// seat's user may hold `SNAPSHOT_SENDS_PER_USER`; the user's own turn is waited for
    /// first, so a user at the share queues behind their own sends, not in everyone's way).
    /// Copying and serialising take one of `SNAPSHOT_SLOTS` turns, given back before this
    /// returns. Serialising stays on the async worker: moved to `spawn_blocking` it left
    /// the server 100 MiB larger after 100 browsers connected (each blocking thread's
    /// allocator kept its 10 MB peaks) and P1's p99 at 3.3-5.2 ms instead of 2.4-2.8 ms
    /// (fleet-sim, same machine). `None` only if the hub is shutting down.
    pub async fn subscribe_browser(&self, seat: &BrowserSeat) -> Option<BrowserStart> {
        let user = seat.snapshot_sends.clone().acquire_owned().await.ok()?;
        let all = self
            .inner
            .snapshot_sends
            .clone()
            .acquire_owned()
            .await
            .ok()?;
        let (snapshot, events) = {
            let _turn = self.inner.snapshot_slots.acquire().await.ok()?;
            let (snapshot, events) = self.subscribe_copy();
            let text = snapshot_text(snapshot);
            (text, events)
        };
        Some(BrowserStart {
            snapshot,
            events,
            sending: SnapshotSend {
                _user: user,
                _all: all,
            },
        })
    }

    /// The snapshot and its receiver, serialised here (tests).
    #[cfg(test)]
    fn subscribe(&self) -> (Utf8Bytes, broadcast::Receiver<Utf8Bytes>) {
        let (snapshot, rx) = self.subscribe_copy();
        (snapshot_text(snapshot), rx)
    }

    /// The copy is taken under the lock, so it matches the receiver's position; the slow
    /// part, serialising it, is left to the caller, after the lock is released.
    fn subscribe_copy(&self) -> (Snapshot, broadcast::Receiver<Utf8Bytes>) {
        let state = self.lock();
        let rx = self.inner.events.subscribe();
        (state.fleet.snapshot(Timestamp::now()), rx)
    }

    pub fn snapshot(&self) -> Snapshot {
        self.lock().fleet.snapshot(Timestamp::now())
    }

    /// The numbers /metrics reports, without copying the fleet.
    pub fn fleet_counts(&self) -> FleetCounts {
        let state = self.lock();
        FleetCounts {
            hosts: state.counts,
            desired_error: state
                .fleet
                .desired
                .as_ref()
                .is_some_and(|d| d.error.is_some()),
            pending_pr: state.fleet.pending_pr.is_some(),
            deploy_active: state.fleet.deploy.as_ref().is_some_and(|d| d.active),
        }
    }

    pub fn host(&self, id: &str) -> Option<Host> {
        self.lock().fleet.hosts.get(id).cloned()
    }

    pub fn contains(&self, id: &str) -> bool {
        self.lock().fleet.hosts.contains_key(id)
    }

    /// Change a host through `edit`; broadcasts `host_updated` if anything changed.
    pub fn update_host(&self, id: &str, edit: impl FnOnce(&mut Host)) -> Option<Host> {
        let mut state = self.lock();
        self.update_locked(&mut state, id, edit)
    }

    /// The one path for changing a host: edit a copy, re-derive what follows from it, and
    /// publish `host_updated` (sent only if something changed).
    fn update_locked(
        &self,
        state: &mut HubState,
        id: &str,
        edit: impl FnOnce(&mut Host),
    ) -> Option<Host> {
        let mut host = state.fleet.hosts.get(id)?.clone();
        edit(&mut host);
        let reported = state.reported.get(id).cloned().unwrap_or_default();
        compartments::derive(
            &mut host,
            &reported,
            state.fleet.desired.as_ref(),
            Timestamp::now(),
        );
        let event = BrowserEvent::HostUpdated(HostBody { host: host.clone() });
        if state.owners.contains_key(id) {
            // Another replica holds the agent: the edit goes to it, which takes what the
            // dashboard sets (`merge_edit`) and publishes the host to every replica, here
            // too, so the host's events keep the owner's one order.
            if let (Some(bus), Ok(text)) = (&state.bus, serde_json::to_string(&event)) {
                bus.send_event(&text);
            }
            return Some(host);
        }
        self.publish_locked(state, event);
        Some(host)
    }

    pub fn add_host(&self, host: Host) {
        let mut state = self.lock();
        state.reported.insert(host.id.clone(), Reported::default());
        self.publish_locked(&mut state, BrowserEvent::HostAdded(HostBody { host }));
    }

    /// Forget a host and close its agent's socket at once.
    pub fn remove_host(&self, id: &str) {
        let mut state = self.lock();
        Self::revoke_locked(&mut state, id);
        if let Some(link) = state.agents.remove(id) {
            link.close((1008, "host removed"));
        }
        state.reported.remove(id);
        state.owners.remove(id);
        state.output_seq.remove(id);
        self.publish_locked(
            &mut state,
            BrowserEvent::HostRemoved(HostRef {
                host_id: id.to_owned(),
            }),
        );
    }

    /// Read before an agent's token is checked, and handed to `attach_agent`: a
    /// revocation that lands between the check and the attach is then still seen.
    pub fn token_checkpoint(&self) -> u64 {
        self.lock().revocations
    }

    fn revoke_locked(state: &mut HubState, id: &str) {
        state.revocations += 1;
        let at = state.revocations;
        state.revoked_at.insert(id.to_owned(), at);
    }

    /// The host's token changed (already stored): links that authenticated with the old
    /// one close now, and ones still on their way in are refused at `attach_agent`.
    pub fn revoke_agent(&self, id: &str, reason: &'static str) {
        let mut state = self.lock();
        Self::revoke_locked(&mut state, id);
        if let Some(link) = state.agents.get(id) {
            link.close((1008, reason));
        }
        // The agent may be connected to another replica, or on its way in to one.
        if let Some(bus) = &state.bus {
            bus.send(bus_item("revoke", id));
        }
    }

    /// A registered agent's link. `checkpoint` is `token_checkpoint()` from before its
    /// token was checked (None for a host enrolled on this very link, whose token is new):
    /// a token revoked since then may not attach. A second connection for the same host
    /// replaces the first, whose socket is closed with 4000.
    pub fn attach_agent(
        &self,
        id: &str,
        reg: &Register,
        checkpoint: Option<u64>,
    ) -> Result<AgentAttached, Revoked> {
        let conn_id = self.inner.next_conn.fetch_add(1, Ordering::Relaxed);
        let (tx, outbox) = mpsc::channel(AGENT_QUEUE);
        let (close_tx, close) = watch::channel(None);
        let now = Timestamp::now();
        let mut state = self.lock();
        let revoked_at = state.revoked_at.get(id).copied().unwrap_or(0);
        if checkpoint.is_some_and(|seen| revoked_at > seen) {
            return Err(Revoked);
        }
        let link = AgentSender {
            conn_id,
            tx,
            close: close_tx,
        };
        if let Some(old) = state.agents.insert(id.to_owned(), link) {
            old.close((4000, "replaced by a newer connection"));
        }
        // Ours now; the other replicas hear it before this link's first event, so they
        // take its events from here on (`from_owner`).
        state.owners.remove(id);
        if let Some(bus) = &state.bus {
            bus.send(bus_item("own", id));
        }
        let reported = state.reported.entry(id.to_owned()).or_default();
        reported.lock_hash = reg.lock_hash.clone();
        reported.lock_updated_at = reg.lock_updated_at;
        self.update_locked(&mut state, id, |host| {
            host.hostname = reg.hostname.clone();
            host.online = true;
            host.last_seen = Some(now);
            host.agent_version = Some(reg.agent_version.clone());
            host.os_version = reg.os_version.clone();
            host.nixpkgs_version = reg.nixpkgs_version.clone();
            host.generation = reg.generation.clone();
            host.repo_url = reg.repo_url.clone();
            host.repo_dir = reg.repo_dir.clone();
            // Not reported (an older agent, or no profile): what is known stands.
            if let Some(generations) = &reg.generations {
                host.generations = generations.clone();
            }
            if let Some(reboot_needed) = reg.reboot_needed {
                host.reboot_needed = reboot_needed;
            }
            // The agent's tags replace its earlier ones; the dashboard's stay.
            if let Some(tags) = &reg.tags {
                let dashboard = host.dashboard_tags();
                host.tags = protocol::merge_tags(&dashboard, tags);
                host.agent_tags = tags.clone();
            }
        });
        Ok(AgentAttached {
            conn_id,
            outbox,
            close,
        })
    }

    fn is_current(state: &HubState, id: &str, conn_id: u64) -> bool {
        state.agents.get(id).is_some_and(|l| l.conn_id == conn_id)
    }

    /// A heartbeat from the current link of `id`; stale links are ignored. Returns when
    /// it was taken (None: ignored), for the hosts service's batched write.
    pub fn heartbeat(&self, id: &str, conn_id: u64, hb: &Heartbeat) -> Option<Timestamp> {
        let now = Timestamp::now();
        let mut state = self.lock();
        if !Self::is_current(&state, id, conn_id) {
            return None;
        }
        let generation_changed = state
            .fleet
            .hosts
            .get(id)
            .is_some_and(|h| hb.generation.is_some() && h.generation != hb.generation);
        // Every connected host has its entry (attach_agent made it): no key allocation on
        // this hot path, and nothing copied unless it changed.
        let mut lock_changed = false;
        if let Some(reported) = state.reported.get_mut(id) {
            if hb.lock_hash.is_some() && reported.lock_hash != hb.lock_hash {
                reported.lock_hash = hb.lock_hash.clone();
                lock_changed = true;
            }
            if hb.lock_updated_at.is_some() && reported.lock_updated_at != hb.lock_updated_at {
                reported.lock_updated_at = hb.lock_updated_at;
                lock_changed = true;
            }
        }
        // Only a changed checkout re-derives the compartments; a plain heartbeat stays cheap.
        if generation_changed || lock_changed {
            self.update_locked(&mut state, id, |host| {
                if hb.generation.is_some() {
                    host.generation = hb.generation.clone();
                }
            });
        }
        self.publish_locked(
            &mut state,
            BrowserEvent::HostHeartbeat(HostHeartbeat {
                host_id: id.to_owned(),
                online: true,
                last_seen: now,
                metrics: hb.metrics,
            }),
        );
        Some(now)
    }

    /// The link `conn_id` of `id` ended. Marks the host offline unless a newer link took
    /// over. Returns whether it was the current link.
    pub fn detach_agent(&self, id: &str, conn_id: u64) -> bool {
        let mut state = self.lock();
        if !Self::is_current(&state, id, conn_id) {
            return false;
        }
        state.agents.remove(id);
        self.publish_locked(
            &mut state,
            BrowserEvent::HostOffline(HostRef {
                host_id: id.to_owned(),
            }),
        );
        if let Some(bus) = &state.bus {
            bus.send(bus_item("disown", id));
        }
        true
    }

    pub fn is_connected(&self, id: &str) -> bool {
        self.lock().agents.contains_key(id)
    }

    /// Queue a frame for a host's agent. Fails when the host has no live link or its
    /// queue is full; never waits, so one stuck agent cannot stall a caller.
    pub fn send_to_agent(&self, id: &str, msg: ServerMessage) -> bool {
        self.lock()
            .agents
            .get(id)
            .is_some_and(|l| l.tx.try_send(AgentOut::Frame(msg)).is_ok())
    }

    /// A new reading of the desired state: browsers get `desired_state`, and every host's
    /// compartments are re-derived (also when nothing changed, so lock ages move on).
    pub fn set_desired(&self, desired: DesiredState) {
        let mut state = self.lock();
        self.publish_locked(
            &mut state,
            BrowserEvent::DesiredState(DesiredChanged {
                desired: Some(desired),
            }),
        );
        // A host whose agent is on another replica is re-derived there, by its owner (it
        // gets this reading over the bus): its lock and checks are known there.
        let ids: Vec<String> = state
            .fleet
            .hosts
            .keys()
            .filter(|id| !state.owners.contains_key(*id))
            .cloned()
            .collect();
        for id in ids {
            self.update_locked(&mut state, &id, |_| {});
        }
    }

    pub fn desired(&self) -> Option<DesiredState> {
        self.lock().fleet.desired.clone()
    }

    /// The flake.lock update PR changed (or went away).
    pub fn set_pending_pr(&self, pr: Option<PendingPr>) {
        self.publish(BrowserEvent::PendingPr(PendingPrChanged { pr }));
    }

    pub fn pending_pr(&self) -> Option<PendingPr> {
        self.lock().fleet.pending_pr.clone()
    }

    /// Every published event from now on, as browsers get it (the notifier reads the few
    /// kinds it needs; it handles `Lagged` itself).
    pub fn subscribe_events(&self) -> broadcast::Receiver<Utf8Bytes> {
        self.inner.events.subscribe()
    }

    /// Typed command completions from now on (for Merge & Deploy's waits), those of
    /// hosts on other replicas included (`apply_peer`).
    pub fn completions(&self) -> broadcast::Receiver<CommandComplete> {
        self.inner.completions.subscribe()
    }

    // ------------------------------------------------------------ replicas (the bus)

    /// From now on, this server's own events and ownership changes also go to `bus`.
    pub fn attach_bus(&self, bus: BusOut) {
        self.lock().bus = Some(bus);
    }

    /// The replica that holds `id`'s agent, when it is another one (None: connected
    /// here, or to no one).
    pub fn remote_owner(&self, id: &str) -> Option<Arc<str>> {
        self.lock().owners.get(id).cloned()
    }

    /// The highest output seq of `command_id` that browsers here were sent (0: none).
    pub fn output_seen(&self, host_id: &str, command_id: &str) -> u64 {
        self.lock()
            .output_seq
            .get(host_id)
            .filter(|(command, _)| command == command_id)
            .map_or(0, |(_, seq)| *seq)
    }

    /// Changes from the replica `from`, in its order, under one lock. They reach the
    /// browsers here but are not sent back to the bus, except where this server is the
    /// host's owner and acts on them (an edit it merges, a desired state it re-derives
    /// its hosts for): that is its own event then.
    pub fn apply_peer(&self, from: &str, changes: impl IntoIterator<Item = PeerChange>) {
        let from_arc: Arc<str> = Arc::from(from);
        let mut state = self.lock();
        for change in changes {
            match change {
                PeerChange::Own(id) => {
                    // The agent connected there after it connected here: one agent has
                    // one socket, so the link here is dead and has not noticed yet (a
                    // half-open socket). It goes without a `host_offline`: the host is
                    // online, there. (Should the other link be the stale one, its agent
                    // reconnects once more and the ownership settles on that link.)
                    if let Some(link) = state.agents.remove(&id) {
                        link.close((4000, "replaced by a newer connection"));
                    }
                    state.owners.insert(id, from_arc.clone());
                }
                PeerChange::Disown(id) => {
                    if state.owners.get(&id).is_some_and(|o| &**o == from) {
                        state.owners.remove(&id);
                    }
                }
                PeerChange::Revoke(id) => {
                    Self::revoke_locked(&mut state, &id);
                    if let Some(link) = state.agents.get(&id) {
                        link.close((1008, "token rotated"));
                    }
                }
                PeerChange::Event(event) => {
                    self.apply_peer_event(&mut state, from, &from_arc, *event)
                }
            }
        }
    }

    fn apply_peer_event(
        &self,
        state: &mut HubState,
        from: &str,
        from_arc: &Arc<str>,
        event: BrowserEvent,
    ) {
        match &event {
            // Known here already, with its agent attached (`hosts::ensure_in_hub`): this
            // replica's copy is the owner's.
            BrowserEvent::HostAdded(b) if state.agents.contains_key(&b.host.id) => return,
            BrowserEvent::HostAdded(b) => {
                state.reported.entry(b.host.id.clone()).or_default();
                return self.publish_core(state, event, false, false);
            }
            BrowserEvent::HostRemoved(r) => {
                let id = r.host_id.clone();
                Self::revoke_locked(state, &id);
                if let Some(link) = state.agents.remove(&id) {
                    link.close((1008, "host removed"));
                }
                state.reported.remove(&id);
                state.owners.remove(&id);
                state.output_seq.remove(&id);
                return self.publish_core(state, event, false, false);
            }
            BrowserEvent::DesiredState(_) => {
                self.publish_core(state, event, false, false);
                let ids: Vec<String> = state.agents.keys().cloned().collect();
                for id in ids {
                    self.update_locked(state, &id, |_| {});
                }
                return;
            }
            BrowserEvent::HostUpdated(b) if state.agents.contains_key(&b.host.id) => {
                // An edit made on another replica, of a host whose agent is here.
                let edited = b.host.clone();
                self.update_locked(state, &edited.id.clone(), |h| merge_edit(h, &edited));
                return;
            }
            BrowserEvent::HostHeartbeat(hb) if !state.agents.contains_key(&hb.host_id) => {
                // Only a host's owner sends its heartbeats: an ownership this server
                // missed (a lost batch, a lease that lapsed and came back) is learnt here.
                state.owners.insert(hb.host_id.clone(), from_arc.clone());
            }
            _ => {}
        }
        let host = match &event {
            BrowserEvent::CommandOutput(o) => Some(o.host_id.as_str()),
            other => event_host(other),
        };
        if host.is_some_and(|id| !from_owner(state, id, from)) {
            return;
        }
        if let BrowserEvent::CommandComplete(done) = &event {
            let _ = self.inner.completions.send(done.clone());
        }
        let always = matches!(
            event,
            BrowserEvent::CommandQueued(_)
                | BrowserEvent::CommandOutput(_)
                | BrowserEvent::CommandComplete(_)
        );
        self.publish_core(state, event, always, false);
    }

    /// The replica `name` is dead (its lease lapsed): the hosts it held go offline here.
    /// Each replica does this itself, from the same lease table, rather than one of them
    /// publishing it: no election is needed, and no replica sends events about hosts it
    /// does not hold. Returns how many hosts went offline.
    pub fn peer_gone(&self, name: &str) -> usize {
        let mut state = self.lock();
        let ids: Vec<String> = state
            .owners
            .iter()
            .filter(|(_, owner)| &***owner == name)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &ids {
            state.owners.remove(id);
            self.publish_core(
                &mut state,
                BrowserEvent::HostOffline(HostRef {
                    host_id: id.clone(),
                }),
                false,
                false,
            );
        }
        ids.len()
    }

    /// The commands of `owner`'s hosts whose output browsers here may be following: each
    /// host's pending command and the one it last had output of, with the highest seq sent
    /// here for it (0: none). After a gap in `owner`'s events these are filled in from the
    /// stored log (`crate::replica`).
    pub fn peer_commands(&self, owner: &str) -> Vec<(String, String, u64)> {
        let state = self.lock();
        let mut commands = Vec::new();
        for (id, _) in state.owners.iter().filter(|(_, o)| &***o == owner) {
            let sent = state.output_seq.get(id);
            if let Some((command, seq)) = sent {
                commands.push((id.clone(), command.clone(), *seq));
            }
            let pending = state
                .fleet
                .hosts
                .get(id)
                .and_then(|h| h.pending_command.as_ref());
            if let Some(p) = pending.filter(|p| sent.is_none_or(|(c, _)| *c != p.command_id)) {
                commands.push((id.clone(), p.command_id.clone(), 0));
            }
        }
        commands
    }

    /// The replicas that hold hosts seen here, for the lease check.
    pub fn peer_owners(&self) -> Vec<Arc<str>> {
        let state = self.lock();
        let mut names: Vec<Arc<str>> = state.owners.values().cloned().collect();
        names.sort();
        names.dedup();
        names
    }

    /// A peer asked for a resync (it started, or lost events): the whole state of every
    /// host whose agent is here, each after its `own`, onto the bus (not to browsers here:
    /// nothing changed for them). With `readings` (this server leads, and polls them), also
    /// the desired state once read and the update PR, none included: the leader's copy is
    /// the one every replica should have, and answers from several replicas would arrive
    /// in no set order, a follower's possibly older (or, just started, never read).
    pub fn resync_out(&self, readings: bool) {
        let state = self.lock();
        let Some(bus) = &state.bus else { return };
        for id in state.agents.keys() {
            let Some(host) = state.fleet.hosts.get(id) else {
                continue;
            };
            bus.send(bus_item("own", id));
            let event = BrowserEvent::HostUpdated(HostBody { host: host.clone() });
            if let Ok(text) = serde_json::to_string(&event) {
                bus.send_event(&text);
            }
        }
        if !readings {
            return;
        }
        let desired = state
            .fleet
            .desired
            .as_ref()
            .filter(|d| d.checked_at.is_some());
        if let Some(desired) = desired {
            let event = BrowserEvent::DesiredState(DesiredChanged {
                desired: Some(desired.clone()),
            });
            if let Ok(text) = serde_json::to_string(&event) {
                bus.send_event(&text);
            }
        }
        // None too: a replica that missed the PR going away learns it here.
        let event = BrowserEvent::PendingPr(PendingPrChanged {
            pr: state.fleet.pending_pr.clone(),
        });
        if let Ok(text) = serde_json::to_string(&event) {
            bus.send_event(&text);
        }
    }
}

/// What an edit made on another replica may change of a host whose agent is here: the
/// fields the dashboard sets (`service::hosts::edit`, approval). The rest is the owner's
/// own, newer knowledge (the agent's reports, the pending command).
fn merge_edit(host: &mut Host, edited: &Host) {
    host.location = edited.location.clone();
    host.device_type = edited.device_type.clone();
    host.theme_color = edited.theme_color.clone();
    host.tags = protocol::merge_tags(&edited.dashboard_tags(), &host.agent_tags);
    host.pending_approval = edited.pending_approval;
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::messages::Ack;
    use protocol::{CheckStatus, HostType, StatusCheck};
    use std::future::Future;

    fn register(name: &str) -> Register {
        serde_json::from_value(serde_json::json!({
            "hostname": name, "host_type": "nixos", "agent_version": VERSION
        }))
        .unwrap()
    }

    fn hub_with(ids: &[&str]) -> Hub {
        Hub::new(
            ids.iter().map(|id| (Host::new(id, HostType::Nixos), None)),
            5,
            None,
        )
    }

    fn idle_heartbeat() -> Heartbeat {
        Heartbeat {
            metrics: None,
            generation: None,
            lock_hash: None,
            lock_updated_at: None,
            pending_command: None,
        }
    }

    fn attach(hub: &Hub, id: &str) -> AgentAttached {
        hub.attach_agent(id, &register(id), None).expect("attached")
    }

    fn recv_type(rx: &mut broadcast::Receiver<Utf8Bytes>) -> String {
        let text = rx.try_recv().expect("an event");
        let v: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
        v["type"].as_str().unwrap().to_owned()
    }

    #[test]
    fn snapshot_then_ordered_deltas() {
        let hub = hub_with(&["a", "b"]);
        let (snap, mut rx) = hub.subscribe();
        assert!(snap.as_str().starts_with(r#"{"type":"snapshot""#));
        let link = attach(&hub, "a");
        let conn = link.conn_id;
        assert_eq!(recv_type(&mut rx), "host_updated");
        hub.heartbeat("a", conn, &idle_heartbeat());
        assert_eq!(recv_type(&mut rx), "host_heartbeat");
        assert!(hub.detach_agent("a", conn));
        assert_eq!(recv_type(&mut rx), "host_offline");
        assert!(rx.try_recv().is_err());
        assert!(!hub.host("a").unwrap().online);
        assert!(hub.host("a").unwrap().update_status.agent.status == CheckStatus::Ok);
    }

    /// Browsers whose snapshot is on its way (and may never be read) keep only their send
    /// permit: new browsers still get theirs, until `SNAPSHOT_SENDS` bounds the memory.
    #[tokio::test]
    async fn unsent_snapshots_do_not_hold_up_new_browsers() {
        use std::time::Duration;
        use tokio::time::timeout;
        let hub = hub_with(&["a", "b"]);
        let mut unsent = Vec::new();
        // Four users, each under their own share, so only the common cap binds.
        for i in 0..SNAPSHOT_SENDS {
            let seat = hub.browser_seat(&format!("u{}", i % 4), 100).unwrap();
            let start = timeout(Duration::from_secs(10), hub.subscribe_browser(&seat))
                .await
                .unwrap_or_else(|_| panic!("browser {i} waited behind unsent snapshots"))
                .expect("a start");
            assert!(start.snapshot.as_str().starts_with(r#"{"type":"snapshot""#));
            unsent.push((start, seat));
        }
        // The cap: one more waits for a send to finish (or be given up)...
        let seat = hub.browser_seat("u0", 100).unwrap();
        let next = hub.subscribe_browser(&seat);
        tokio::pin!(next);
        assert!(still_waiting(next.as_mut()));
        // ...and goes ahead as soon as one is.
        unsent.pop();
        let start = timeout(Duration::from_secs(10), next)
            .await
            .expect("a freed permit lets the next browser in")
            .expect("a start");
        // Its receiver is live: it sees what happens after its snapshot.
        let mut events = start.events;
        let _link = attach(&hub, "a");
        assert_eq!(recv_type(&mut events), "host_updated");
    }

    /// Polls once. Acquiring a free permit completes on the first poll, so this is no
    /// guess about time. Outside tokio's cooperative budget, which would make even a free
    /// permit wait after many polls in one turn.
    fn poll_once<F: Future>(f: std::pin::Pin<&mut F>) -> std::task::Poll<F::Output> {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let mut f = tokio::task::unconstrained(f);
        std::pin::Pin::new(&mut f).poll(&mut cx)
    }

    fn still_waiting<F: Future>(f: std::pin::Pin<&mut F>) -> bool {
        poll_once(f).is_pending()
    }

    /// A snapshot send for a new socket of `user`, which must not have to wait.
    fn start_now(hub: &Hub, user: &str) -> (BrowserStart, BrowserSeat) {
        let seat = hub.browser_seat(user, 1000).unwrap();
        let start = {
            let start = hub.subscribe_browser(&seat);
            tokio::pin!(start);
            match poll_once(start) {
                std::task::Poll::Ready(start) => start.expect("a start"),
                std::task::Poll::Pending => panic!("{user} had to wait for a snapshot send"),
            }
        };
        (start, seat)
    }

    /// One user with many tabs holds at most half of the snapshot sends: their next one
    /// waits for one of their own, while another user's goes ahead at once.
    #[tokio::test]
    async fn one_user_holds_at_most_half_the_snapshot_sends() {
        let hub = hub_with(&["a"]);
        // Sends that never finish (browsers that do not read).
        let mut unsent: Vec<_> = (0..SNAPSHOT_SENDS_PER_USER)
            .map(|_| start_now(&hub, "tabs"))
            .collect();
        let seat = hub.browser_seat("tabs", 1000).unwrap();
        let over = hub.subscribe_browser(&seat);
        tokio::pin!(over);
        assert!(
            still_waiting(over.as_mut()),
            "a user past half the sends waits"
        );
        // Everyone else still gets theirs, from the half the user cannot take.
        let _other = start_now(&hub, "someone-else");
        // One of the user's own sends ending lets their next one in.
        unsent.pop();
        assert!(!still_waiting(over.as_mut()));
    }

    /// A user has at most `max` browser sockets; a closed one frees its seat, and other
    /// users are not counted against them.
    #[test]
    fn a_user_past_the_socket_cap_gets_no_seat() {
        let hub = hub_with(&[]);
        let mut seats: Vec<_> = (0..3)
            .map(|_| hub.browser_seat("ann", 3).expect("under the cap"))
            .collect();
        assert!(
            hub.browser_seat("ann", 3).is_none(),
            "the fourth is refused"
        );
        let bob = hub.browser_seat("bob", 3);
        assert!(bob.is_some(), "another user has seats of their own");
        seats.pop();
        assert!(
            hub.browser_seat("ann", 3).is_some(),
            "a closed socket frees its seat"
        );
        drop(seats);
        drop(bob);
        assert!(
            hub.browser_users().is_empty(),
            "no entry is left for users without sockets"
        );
    }

    #[test]
    fn system_and_tests_are_never_ok_while_git_or_lock_is_not() {
        let hub = hub_with(&["a"]);
        let _link = attach(&hub, "a");
        let ok = StatusCheck::new(CheckStatus::Ok, "switched to abc1234", Some(Timestamp(1)));
        hub.report_checks(
            "a",
            StatusChecks {
                system: Some(ok.clone()),
                tests: Some(StatusCheck::new(
                    CheckStatus::Error,
                    "1 of 2 tests failed",
                    None,
                )),
            },
        );
        let u = hub.host("a").unwrap().update_status;
        assert_eq!(u.git.message, compartments::NOT_CONFIGURED);
        assert_eq!(u.system.status, CheckStatus::Unknown);
        assert!(
            u.system.message.contains("git and lock"),
            "{}",
            u.system.message
        );
        assert_eq!(u.tests.status, CheckStatus::Error, "failures pass through");
        // Once git and lock are ok, the reported ok shows.
        let green = StatusCheck::new(CheckStatus::Ok, "", None);
        assert_eq!(compartments::gate(&ok, &green, &green), ok);
    }

    #[test]
    fn second_connection_replaces_the_first() {
        let hub = hub_with(&["a"]);
        let old = attach(&hub, "a");
        let new = attach(&hub, "a");
        assert_eq!(old.close.borrow().map(|(code, _)| code), Some(4000));
        assert_eq!(*new.close.borrow(), None);
        // The old link ending must not mark the host offline.
        assert!(!hub.detach_agent("a", old.conn_id));
        assert!(hub.host("a").unwrap().online);
        assert!(hub.detach_agent("a", new.conn_id));
    }

    /// A rotation that lands between an agent's token check and its attach: the link is
    /// refused, although no socket existed yet to close. Before the checkpoint it stayed
    /// up with the old token.
    #[test]
    fn a_token_revoked_after_its_check_cannot_attach() {
        let hub = hub_with(&["a", "b"]);
        let checked = hub.token_checkpoint();
        hub.revoke_agent("a", "token rotated");
        assert!(hub
            .attach_agent("a", &register("a"), Some(checked))
            .is_err());
        assert!(!hub.host("a").unwrap().online);
        // Another host's rotation does not refuse this one, nor does a check made after
        // the rotation.
        assert!(hub.attach_agent("b", &register("b"), Some(checked)).is_ok());
        let later = hub.token_checkpoint();
        assert!(hub.attach_agent("a", &register("a"), Some(later)).is_ok());
    }

    /// A close reaches the socket task even when its frame queue is full (a stuck agent).
    #[test]
    fn a_close_is_never_lost_behind_a_full_queue() {
        let hub = hub_with(&["a"]);
        let link = attach(&hub, "a");
        let mut sent = 0;
        while hub.send_to_agent(
            "a",
            ServerMessage::Ack(Ack {
                command_id: "c".into(),
                seq: 1,
                complete: false,
            }),
        ) {
            sent += 1;
        }
        assert_eq!(sent, AGENT_QUEUE, "the queue is full");
        hub.revoke_agent("a", "token rotated");
        assert_eq!(*link.close.borrow(), Some((1008, "token rotated")));
    }

    /// The counts /metrics reports are kept as events arrive; after every kind of change
    /// they equal a count over the fleet from scratch.
    #[test]
    fn the_kept_counts_match_a_recount_after_every_change() {
        let hub = hub_with(&["a", "b"]);
        let recount = |hub: &Hub| HostCounts::of(hub.snapshot().hosts.iter());
        let check = |hub: &Hub, step: &str| {
            assert_eq!(hub.fleet_counts().hosts, recount(hub), "after {step}");
        };
        check(&hub, "start");
        assert_eq!(hub.fleet_counts().hosts.hosts, 2);
        let a = attach(&hub, "a");
        check(&hub, "attach");
        assert_eq!(hub.fleet_counts().hosts.online, 1);
        let pending = PendingCommand {
            command_id: "c1".into(),
            command: protocol::CommandKind::Pull,
            started_at: Timestamp::now(),
        };
        hub.reserve("a", pending).unwrap();
        check(&hub, "reserve");
        assert_eq!(hub.fleet_counts().hosts.busy, 1);
        hub.report_checks(
            "a",
            StatusChecks {
                system: None,
                tests: Some(StatusCheck::new(CheckStatus::Error, "failed", None)),
            },
        );
        check(&hub, "checks");
        hub.release(CommandComplete {
            host_id: "a".into(),
            command_id: "c1".into(),
            status: protocol::CommandStatus::Ok,
            exit_code: Some(0),
            duration_ms: 1,
            result: None,
        });
        check(&hub, "release");
        assert_eq!(hub.fleet_counts().hosts.busy, 0);
        hub.heartbeat(
            "a",
            a.conn_id,
            &Heartbeat {
                metrics: None,
                generation: Some("42".into()),
                lock_hash: Some("abc".into()),
                lock_updated_at: None,
                pending_command: None,
            },
        );
        check(&hub, "heartbeat");
        hub.add_host(Host::new("c", HostType::Nixos));
        check(&hub, "add");
        hub.set_desired(DesiredState {
            commit: Some("abc".into()),
            error: Some("unreachable".into()),
            ..DesiredState::default()
        });
        check(&hub, "desired");
        assert!(hub.fleet_counts().desired_error);
        assert!(hub.detach_agent("a", a.conn_id));
        check(&hub, "detach");
        assert_eq!(hub.fleet_counts().hosts.online, 0);
        hub.remove_host("b");
        check(&hub, "remove");
        assert_eq!(hub.fleet_counts().hosts.hosts, 2);
        hub.set_pending_pr(Some(PendingPr {
            number: 7,
            title: "flake.lock: update".into(),
            url: String::new(),
            mergeable: true,
            head_sha: None,
        }));
        assert!(hub.fleet_counts().pending_pr);
    }

    fn peer_heartbeat(id: &str, at: i64) -> PeerChange {
        PeerChange::Event(Box::new(BrowserEvent::HostHeartbeat(HostHeartbeat {
            host_id: id.into(),
            online: true,
            last_seen: Timestamp(at),
            metrics: None,
        })))
    }

    /// Replicas: a host's events are taken from its owner only; what came from the bus
    /// reaches browsers but never goes back to it; an edit of a host owned elsewhere goes
    /// to the owner instead of being applied here; a dead owner's hosts go offline here.
    #[test]
    fn peers_events_follow_the_owner() {
        let hub = hub_with(&["a", "b", "c"]);
        let (out, mut queue) = bus_channel();
        hub.attach_bus(out);
        let (_, mut rx) = hub.subscribe();

        hub.apply_peer("r1", [PeerChange::Own("a".into()), peer_heartbeat("a", 10)]);
        assert_eq!(recv_type(&mut rx), "host_heartbeat");
        assert!(hub.host("a").unwrap().online);
        assert_eq!(hub.remote_owner("a").as_deref(), Some("r1"));
        assert_eq!(queue.try_recv(), None, "not sent back to the bus");

        // r2 held the host before: its late events are stale.
        hub.apply_peer(
            "r2",
            [PeerChange::Event(Box::new(BrowserEvent::HostOffline(
                HostRef {
                    host_id: "a".into(),
                },
            )))],
        );
        assert!(rx.try_recv().is_err());
        assert!(hub.host("a").unwrap().online);

        hub.update_host("a", |h| h.location = Some("rack 9".into()));
        assert_eq!(
            hub.host("a").unwrap().location,
            None,
            "applied by the owner"
        );
        assert!(rx.try_recv().is_err());
        let edit = queue.try_recv().expect("the edit, for the owner");
        assert!(
            edit.contains("rack 9") && edit.starts_with(r#"{"e":"#),
            "{edit}"
        );

        assert_eq!(hub.peer_gone("r1"), 1);
        assert_eq!(recv_type(&mut rx), "host_offline");
        assert!(!hub.host("a").unwrap().online);
        assert_eq!(hub.remote_owner("a"), None);
        assert_eq!(queue.try_recv(), None, "each replica does this itself");

        // An agent here: the peers hear `own` before the link's first event.
        let link = attach(&hub, "b");
        assert_eq!(queue.try_recv().as_deref(), Some(r#"{"own":"b"}"#));
        assert!(queue.try_recv().unwrap().contains("host_updated"));
        // Its creation, late from the replica where it was added: this copy stands.
        hub.apply_peer(
            "r3",
            [PeerChange::Event(Box::new(BrowserEvent::HostAdded(
                HostBody {
                    host: Host::new("b", protocol::HostType::Nixos),
                },
            )))],
        );
        assert!(hub.host("b").unwrap().online);
        // An edit made elsewhere of a host whose agent is here: merged and published.
        let mut edited = hub.host("b").unwrap();
        edited.location = Some("rack 1".into());
        edited.online = false;
        hub.apply_peer(
            "r3",
            [PeerChange::Event(Box::new(BrowserEvent::HostUpdated(
                HostBody { host: edited },
            )))],
        );
        let b = hub.host("b").unwrap();
        assert_eq!(b.location.as_deref(), Some("rack 1"));
        assert!(b.online, "only the dashboard's fields are taken");
        assert!(queue.try_recv().unwrap().contains("rack 1"));
        // A rotation on another replica closes the link here.
        hub.apply_peer("r3", [PeerChange::Revoke("b".into())]);
        assert_eq!(*link.close.borrow(), Some((1008, "token rotated")));

        // The agent of "c" connects to r4 while its link here has not seen it go: the
        // link here is dropped (no host_offline) and r4 is the owner.
        let c = attach(&hub, "c");
        while queue.try_recv().is_some() {}
        while rx.try_recv().is_ok() {}
        hub.apply_peer("r4", [PeerChange::Own("c".into())]);
        assert_eq!(c.close.borrow().map(|(code, _)| code), Some(4000));
        assert_eq!(hub.remote_owner("c").as_deref(), Some("r4"));
        assert!(
            !hub.detach_agent("c", c.conn_id),
            "no longer the current link"
        );
        assert!(rx.try_recv().is_err(), "nothing for browsers");
        assert!(hub.host("c").unwrap().online);
    }

    #[test]
    fn stale_link_heartbeats_are_ignored() {
        let hub = hub_with(&["a"]);
        let old = attach(&hub, "a").conn_id;
        let _new = attach(&hub, "a");
        let (_, mut rx) = hub.subscribe();
        let taken = hub.heartbeat("a", old, &idle_heartbeat());
        assert!(rx.try_recv().is_err());
        assert_eq!(taken, None, "nothing to save for a stale link");
    }
}
