//! The browser's host store: a plain `FleetState` (the same state machine the hub runs,
//! tested in `protocol`) plus a thin adapter that exposes each host field as its own signal.
//! `apply` is the only way host state changes, and it writes a signal only when its value
//! really changed, so a heartbeat touches just the text nodes that show new values.

use leptos::prelude::*;
use protocol::messages::{BrowserEvent, DeployProgress, Snapshot};
use protocol::{
    Changed, ClosureDiff, CommandKind, CommandStatus, DesiredState, FleetState, Generation, Host,
    HostType, Metrics, OutputStream, PendingCommand, PendingPr, Timestamp, UpdateStatus,
};
use std::collections::{BTreeMap, BTreeSet};

/// Write `value` into `signal` only when it differs; returns whether it wrote.
fn set_if_changed<T: PartialEq + Send + Sync + 'static>(signal: RwSignal<T>, value: T) -> bool {
    if signal.with_untracked(|current| *current == value) {
        false
    } else {
        signal.set(value);
        true
    }
}

/// Declares `HostSignals` with one signal per listed `Host` field, and the two functions
/// that create and sync them, so the field list is written once.
macro_rules! host_signals {
    ($($field:ident : $ty:ty),* $(,)?) => {
        /// One host's state as fine-grained signals. `Copy`, so components take it by value.
        #[derive(Clone, Copy)]
        pub struct HostSignals {
            pub id: StoredValue<String>,
            $(pub $field: RwSignal<$ty>,)*
            /// Counts heartbeats, so the status ripple can pulse once per beat.
            pub beats: RwSignal<u64>,
            /// Output of the host's latest command seen by this page, bounded.
            pub log: RwSignal<Vec<LogEntry>>,
            /// How the host's latest command ended, once it has.
            pub last_result: RwSignal<Option<CommandStatus>>,
            /// Changes when the host's generations do (`generations_key`); readers take the
            /// list itself from the plain state. A `Vec<Generation>` signal would put its
            /// own signal and comparison code into the first download for a list that only
            /// the lazily loaded panels read (P5).
            pub generations_key: RwSignal<u64>,
        }

        impl HostSignals {
            fn new(host: &Host) -> Self {
                HostSignals {
                    id: StoredValue::new(host.id.clone()),
                    $($field: RwSignal::new(host.$field.clone()),)*
                    beats: RwSignal::new(0),
                    log: RwSignal::new(Vec::new()),
                    last_result: RwSignal::new(None),
                    generations_key: RwSignal::new(generations_key(&host.generations)),
                }
            }

            /// Bring every signal up to `host`; returns how many signals were written.
            fn sync(&self, host: &Host) -> usize {
                0 $(+ usize::from(set_if_changed(self.$field, host.$field.clone())))*
                    + usize::from(set_if_changed(
                        self.generations_key,
                        generations_key(&host.generations),
                    ))
            }
        }
    };
}

host_signals! {
    hostname: String,
    host_type: HostType,
    theme_color: String,
    location: Option<String>,
    device_type: Option<String>,
    online: bool,
    last_seen: Option<Timestamp>,
    pending_command: Option<PendingCommand>,
    metrics: Option<Metrics>,
    generation: Option<String>,
    agent_version: Option<String>,
    agent_outdated: bool,
    os_version: Option<String>,
    nixpkgs_version: Option<String>,
    update_status: UpdateStatus,
    pending_approval: bool,
    reboot_needed: bool,
    tags: Vec<String>,
}

impl HostSignals {
    pub fn busy(&self) -> Signal<bool> {
        let pending = self.pending_command;
        Signal::derive(move || pending.with(Option::is_some))
    }
}

/// Lines kept per host in the browser; older ones are in the log download.
pub const LOG_LINES: usize = 2_000;

#[derive(Clone, Debug, PartialEq)]
pub struct LogEntry {
    pub seq: u64,
    pub stream: OutputStream,
    pub line: String,
    /// The closing line of a run: its status and exit code.
    pub end: bool,
}

/// The closing line of a run, e.g. "— ok, exit 0, 1.2 s".
pub fn end_line(c: &protocol::messages::CommandComplete) -> String {
    let status = crate::presentation::command_status_text(c.status);
    let exit = c
        .exit_code
        .map(|code| format!(", exit {code}"))
        .unwrap_or_default();
    let seconds = crate::presentation::fixed(c.duration_ms as f64 / 1000.0, 1);
    format!("— {status}{exit}, {seconds} s")
}

/// A host's latest finished preview: what a switch to the build it made would change.
/// Page state, kept beside the fleet's (the hub has no use for it).
#[derive(Clone, Debug, PartialEq)]
pub struct Preview {
    pub host_id: String,
    pub command_id: String,
    pub diff: ClosureDiff,
    /// The build it made; "Switch to previewed" activates exactly this.
    pub store_path: Option<String>,
    /// The host's current generation when the preview ended: the diff is against it, so
    /// once the host runs another one the preview is stale.
    pub base_generation: Option<u64>,
}

impl Preview {
    /// Whether `deploy` made this preview: a build of its PR's head, which is not merged
    /// (and, if the deploy was cancelled, never will be). Shown in the deploy panel for
    /// review; never a build to switch to, even after the deploy ended.
    pub fn of_deploy(&self, deploy: Option<&DeployProgress>) -> bool {
        deploy.is_some_and(|d| d.previews.get(&self.host_id) == Some(&self.command_id))
    }
}

/// A fingerprint of a generation list: its length and each generation's number, time and
/// marks. Generations never change once made (a number is not reused), so two
/// consecutive reports of a host differ exactly when this does.
pub fn generations_key(generations: &[Generation]) -> u64 {
    generations.iter().fold(generations.len() as u64, |key, g| {
        let marks = u64::from(g.current) << 1 | u64::from(g.booted);
        key.wrapping_mul(1_000_003)
            .wrapping_add(g.number << 2 | marks)
            .wrapping_add((g.created_at.secs() as u64).wrapping_mul(31))
    })
}

/// The number of the generation the host's system profile points at.
pub fn current_generation(generations: &[Generation]) -> Option<u64> {
    generations.iter().find(|g| g.current).map(|g| g.number)
}

/// One tag in the header: how many of the hosts carrying it are online.
#[derive(Clone, Debug, PartialEq)]
pub struct TagCount {
    pub tag: String,
    pub online: usize,
    pub total: usize,
}

/// Hosts online / total per tag (every tag, the agent's too, as `tag:` filters), sorted
/// by tag. A sorted `Vec` rather than a map: a new map type costs the first download its
/// B-tree code (P5), and a fleet has few tags.
pub fn count_tags<'a>(hosts: impl Iterator<Item = &'a Host>) -> Vec<TagCount> {
    let mut counts: Vec<TagCount> = Vec::new();
    for host in hosts {
        for tag in &host.tags {
            let i = match counts.binary_search_by(|c| c.tag.as_str().cmp(tag)) {
                Ok(i) => i,
                Err(i) => {
                    let count = TagCount {
                        tag: tag.clone(),
                        online: 0,
                        total: 0,
                    };
                    counts.insert(i, count);
                    i
                }
            };
            counts[i].total += 1;
            counts[i].online += usize::from(host.online);
        }
    }
    counts
}

/// The WebSocket link as the footer shows it.
#[derive(Clone, Debug, PartialEq)]
pub enum LinkState {
    Connecting,
    Connected,
    /// Lost; the next attempt is at this time (the store's clock), for a countdown.
    Retrying {
        at: Timestamp,
    },
}

#[derive(Clone, Copy)]
pub struct HostStore {
    state: StoredValue<FleetState>,
    /// Signals exist only for hosts something has asked for (the rows in view, the log
    /// panel's host, a deploy's chips): the rest live in `state` alone, so a 10 000-host
    /// fleet costs the page, and each server render, what the rows on screen do (P4).
    signals: StoredValue<BTreeMap<String, HostSignals>>,
    /// Which hosts are online, kept beside `state` so the header count changes in O(1).
    online_ids: StoredValue<BTreeSet<String>>,
    /// How many hosts are online.
    pub online: RwSignal<usize>,
    /// Bumped when a host's tags may have changed without the ids or the online set
    /// changing (an edit, an agent's new `--tags`, a snapshot): with `ids` and `online`,
    /// what the header's per-tag counts (`tag_counts`) depend on.
    pub retagged: RwSignal<u64>,
    /// Whether the store holds a snapshot yet (false while a page opened inside the app
    /// waits for the socket's first frame).
    pub synced: RwSignal<bool>,
    /// Signals for hosts that arrive later are owned here, not by whatever callback
    /// happened to deliver the event.
    owner: StoredValue<Owner>,
    /// Host ids in display order; changes only when hosts come or go.
    pub ids: RwSignal<Vec<String>>,
    pub pending_pr: RwSignal<Option<PendingPr>>,
    pub deploy: RwSignal<Option<DeployProgress>>,
    /// The config repo's desired state (None: no source configured).
    pub desired: RwSignal<Option<DesiredState>>,
    pub dashboard_version: RwSignal<String>,
    /// The dashboard now serves another web build than the one this page's code came from
    /// (an upgrade): the page must reload before it loads any more code (see `socket`).
    pub stale_build: RwSignal<bool>,
    /// The server's idea of now, ticking every second in the browser. Starts at the
    /// snapshot's `server_time`, so SSR and hydration render identical "last seen" text.
    pub now: RwSignal<Timestamp>,
    pub link: RwSignal<LinkState>,
    /// Each host's latest finished preview, at most one per host, in the order they
    /// ended (see `follow_previews`). A list, not a map: a new map type in the first
    /// download costs its whole B-tree code (P5), and previews are few.
    pub previews: RwSignal<Vec<Preview>>,
}

impl HostStore {
    /// An empty store waiting for the socket's snapshot; its clock starts at the browser's.
    pub fn waiting() -> Self {
        #[cfg(feature = "hydrate")]
        let now = Timestamp((js_sys::Date::now() / 1000.0) as i64);
        #[cfg(not(feature = "hydrate"))]
        let now = Timestamp(0);
        let store = HostStore::new(Snapshot {
            hosts: Vec::new(),
            pending_pr: None,
            dashboard_version: String::new(),
            build: String::new(),
            server_time: now,
            desired: None,
            deploy: None,
        });
        store.synced.set(false);
        store
    }

    pub fn new(snapshot: Snapshot) -> Self {
        let now = snapshot.server_time;
        let state = FleetState::from_snapshot(snapshot);
        let online_ids: BTreeSet<String> = state
            .hosts
            .values()
            .filter(|h| h.online)
            .map(|h| h.id.clone())
            .collect();
        let ids = RwSignal::new(state.host_ids());
        let pending_pr = RwSignal::new(state.pending_pr.clone());
        let deploy = RwSignal::new(state.deploy.clone());
        let desired = RwSignal::new(state.desired.clone());
        let dashboard_version = RwSignal::new(state.dashboard_version.clone());
        let state = StoredValue::new(state);
        HostStore {
            synced: RwSignal::new(true),
            online: RwSignal::new(online_ids.len()),
            retagged: RwSignal::new(0),
            online_ids: StoredValue::new(online_ids),
            ids,
            pending_pr,
            deploy,
            desired,
            dashboard_version,
            stale_build: RwSignal::new(false),
            now: RwSignal::new(now),
            link: RwSignal::new(LinkState::Connecting),
            previews: RwSignal::new(Vec::new()),
            state,
            signals: StoredValue::new(BTreeMap::new()),
            owner: StoredValue::new(Owner::current().unwrap_or_default()),
        }
    }

    /// A host's plain state, as the store holds it.
    pub fn host_state(&self, id: &str) -> Option<Host> {
        self.state.with_value(|s| s.hosts.get(id).cloned())
    }

    /// Read the plain state in place (the page's filter matches on it without a copy).
    pub fn with_state<R>(&self, f: impl FnOnce(&FleetState) -> R) -> R {
        self.state.with_value(f)
    }

    /// A host's signals, made on first use (owned by the store, current with the state).
    pub fn host(&self, id: &str) -> Option<HostSignals> {
        if let Some(sig) = self.existing(id) {
            return Some(sig);
        }
        let host = self.host_state(id)?;
        let sig = self
            .owner
            .with_value(|o| o.with(|| HostSignals::new(&host)));
        self.signals.update_value(|s| {
            s.insert(id.to_owned(), sig);
        });
        Some(sig)
    }

    /// A host's signals if something has asked for them already.
    fn existing(&self, id: &str) -> Option<HostSignals> {
        self.signals.with_value(|s| s.get(id).copied())
    }

    /// Whether a host is online; tracked through the online count.
    pub fn is_online(&self, id: &str) -> bool {
        self.online.track();
        self.online_ids.with_value(|o| o.contains(id))
    }

    /// Hosts online / total, for the header.
    pub fn counts(&self) -> (usize, usize) {
        (self.online.get(), self.ids.with(Vec::len))
    }

    /// Hosts online / total per tag, sorted by tag, for the header. Tracks what can
    /// change them: hosts coming or going, one going on- or offline, a tag edit.
    pub fn tag_counts(&self) -> Vec<TagCount> {
        self.ids.track();
        self.online.track();
        self.retagged.track();
        self.state.with_value(|s| count_tags(s.hosts.values()))
    }

    /// Apply one event from the hub. The only writer of host state. The page applies
    /// events through `PageState::apply`, which also keeps its own state in step.
    pub fn apply(&self, event: &BrowserEvent) -> Changed {
        // Whether the event changes a known host's tags (a new host changes `ids`).
        let retagged = match event {
            BrowserEvent::HostUpdated(b) => self.state.with_value(|s| {
                s.hosts
                    .get(&b.host.id)
                    .is_some_and(|h| h.tags != b.host.tags)
            }),
            BrowserEvent::Snapshot(_) => true,
            _ => false,
        };
        // The kind of the command a completion ends, read before the state forgets it.
        let finished = match event {
            BrowserEvent::CommandComplete(c) => self.state.with_value(|s| {
                s.hosts
                    .get(&c.host_id)
                    .and_then(|h| h.pending_command.as_ref())
                    .filter(|p| p.command_id == c.command_id)
                    .map(|p| p.command)
            }),
            _ => None,
        };
        let changed = self
            .state
            .try_update_value(|s| s.apply(event))
            .unwrap_or(Changed::Nothing);
        match &changed {
            Changed::Nothing | Changed::Output(_) => {}
            Changed::Host(id) => {
                self.sync_host(id);
                if matches!(event, BrowserEvent::HostHeartbeat(_)) {
                    if let Some(h) = self.existing(id) {
                        h.beats.update(|b| *b += 1);
                    }
                }
            }
            Changed::HostAdded(id) | Changed::HostRemoved(id) => {
                self.sync_host(id);
                self.sync_ids();
            }
            Changed::All => {
                set_if_changed(self.synced, true);
                let mut ids = self.state.with_value(FleetState::host_ids);
                ids.extend(
                    self.signals
                        .with_value(|s| s.keys().cloned().collect::<Vec<_>>()),
                );
                ids.sort();
                ids.dedup();
                for id in &ids {
                    self.sync_host(id);
                }
                self.sync_ids();
                self.state.with_value(|s| {
                    set_if_changed(self.pending_pr, s.pending_pr.clone());
                    set_if_changed(self.deploy, s.deploy.clone());
                    set_if_changed(self.desired, s.desired.clone());
                    set_if_changed(self.dashboard_version, s.dashboard_version.clone());
                    set_if_changed(self.now, s.server_time);
                });
            }
            Changed::PendingPr => {
                self.state
                    .with_value(|s| set_if_changed(self.pending_pr, s.pending_pr.clone()));
            }
            Changed::Deploy => {
                self.state
                    .with_value(|s| set_if_changed(self.deploy, s.deploy.clone()));
            }
            Changed::Desired => {
                self.state
                    .with_value(|s| set_if_changed(self.desired, s.desired.clone()));
            }
        }
        if retagged && changed != Changed::Nothing {
            self.retagged.update(|n| *n += 1);
        }
        self.follow_command(event, &changed);
        self.follow_previews(event, finished);
        changed
    }

    /// Keep each host's latest preview: a preview that ends ok with a diff replaces the
    /// host's previous one; a switch, pull + switch or rollback that ends ok changes the
    /// system the diff was made against, so it drops it (a failed or rolled-back one left
    /// the system as it was); hosts that go take theirs along.
    fn follow_previews(&self, event: &BrowserEvent, finished: Option<CommandKind>) {
        match event {
            BrowserEvent::CommandComplete(c) if c.status.is_success() => match finished {
                Some(CommandKind::Preview) => {
                    let Some(result) = c.result.as_ref() else {
                        return;
                    };
                    let Some(diff) = result.diff.clone() else {
                        return;
                    };
                    let base_generation = self.state.with_value(|s| {
                        s.hosts
                            .get(&c.host_id)
                            .and_then(|h| current_generation(&h.generations))
                    });
                    let preview = Preview {
                        host_id: c.host_id.clone(),
                        command_id: c.command_id.clone(),
                        diff,
                        store_path: result.store_path.clone(),
                        base_generation,
                    };
                    self.previews.update(|p| {
                        p.retain(|old| old.host_id != c.host_id);
                        p.push(preview);
                    });
                }
                Some(CommandKind::Switch | CommandKind::PullSwitch | CommandKind::Rollback) => {
                    self.drop_preview(&c.host_id)
                }
                _ => {}
            },
            BrowserEvent::HostRemoved(r) => self.drop_preview(&r.host_id),
            BrowserEvent::Snapshot(_) => {
                let known =
                    |p: &Preview| self.state.with_value(|s| s.hosts.contains_key(&p.host_id));
                if !self.previews.with_untracked(|p| p.iter().all(known)) {
                    self.previews.update(|p| p.retain(known));
                }
            }
            _ => {}
        }
    }

    /// Forget a host's preview (a switch made it stale, or the operator dismissed it).
    pub fn drop_preview(&self, host_id: &str) {
        if self
            .previews
            .with_untracked(|p| p.iter().any(|x| x.host_id == host_id))
        {
            self.previews.update(|p| p.retain(|x| x.host_id != host_id));
        }
    }

    /// Keep the per-host command logs: a new command starts a fresh log, output lines
    /// append, a completion records the result.
    fn follow_command(&self, event: &BrowserEvent, changed: &Changed) {
        match event {
            BrowserEvent::CommandQueued(q) if *changed != Changed::Nothing => {
                if let Some(h) = self.host(&q.host_id) {
                    h.log.set(Vec::new());
                    h.last_result.set(None);
                }
            }
            BrowserEvent::CommandOutput(o) => {
                if let Some(h) = self.host(&o.host_id) {
                    h.log.update(|log| {
                        if log.len() >= LOG_LINES {
                            log.drain(..=log.len() - LOG_LINES);
                        }
                        log.push(LogEntry {
                            seq: o.seq,
                            stream: o.stream,
                            line: o.line.clone(),
                            end: false,
                        });
                    });
                }
            }
            BrowserEvent::CommandComplete(c) => {
                if let Some(h) = self.host(&c.host_id) {
                    if set_if_changed(h.last_result, Some(c.status)) {
                        h.log.update(|log| {
                            log.push(LogEntry {
                                seq: u64::MAX,
                                stream: OutputStream::Stdout,
                                line: end_line(c),
                                end: true,
                            })
                        });
                    }
                }
            }
            _ => {}
        }
    }

    /// Make `id`'s signals (if it has any) and the online count match the state: sync or
    /// drop them. Returns the number of signals written (for tests: a heartbeat for A must
    /// write nothing of B). Runs per heartbeat: a host without signals (off screen) costs
    /// a lookup, not a copy.
    fn sync_host(&self, id: &str) -> usize {
        let online = self.state.with_value(|s| s.hosts.get(id).map(|h| h.online));
        self.sync_online(id, online == Some(true));
        let Some(sig) = self.existing(id) else {
            return 0;
        };
        match self.host_state(id) {
            Some(h) => sig.sync(&h),
            None => {
                self.signals.update_value(|s| {
                    s.remove(id);
                });
                1
            }
        }
    }

    fn sync_online(&self, id: &str, online: bool) {
        if self.online_ids.with_value(|o| o.contains(id)) == online {
            return;
        }
        self.online_ids.update_value(|o| {
            if online {
                o.insert(id.to_owned());
            } else {
                o.remove(id);
            }
        });
        self.online.set(self.online_ids.with_value(BTreeSet::len));
    }

    fn sync_ids(&self) {
        set_if_changed(self.ids, self.state.with_value(FleetState::host_ids));
    }

    /// Advance the clock to `now` (the server's time, as the browser estimates it).
    pub fn tick(&self, now: Timestamp) {
        set_if_changed(self.now, now);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use protocol::messages::*;
    use protocol::CommandKind;

    /// A snapshot of offline NixOS hosts with these ids, at time 100.
    pub(crate) fn snapshot(ids: &[&str]) -> Snapshot {
        Snapshot {
            hosts: ids
                .iter()
                .map(|id| Host::new(id, HostType::Nixos))
                .collect(),
            pending_pr: None,
            dashboard_version: "0.1.0".into(),
            server_time: Timestamp(100),
            desired: None,
            deploy: None,
            build: String::new(),
        }
    }

    fn beat(id: &str, at: i64, cpu: f64) -> BrowserEvent {
        BrowserEvent::HostHeartbeat(HostHeartbeat {
            host_id: id.into(),
            online: true,
            last_seen: Timestamp(at),
            metrics: Some(Metrics {
                cpu,
                ram: 10.0,
                swap: 0.0,
                load: 0.1,
                disk: None,
            }),
        })
    }

    #[test]
    fn heartbeat_for_a_writes_nothing_of_b() {
        let owner = Owner::new();
        owner.with(|| {
            let store = HostStore::new(snapshot(&["a", "b"]));
            // Both rows are on screen.
            let (a, b) = (store.host("a").unwrap(), store.host("b").unwrap());
            store.apply(&beat("a", 101, 5.0));
            assert_eq!(a.metrics.get_untracked().unwrap().cpu, 5.0);
            assert_eq!(a.beats.get_untracked(), 1);
            assert_eq!(b.beats.get_untracked(), 0);
            // Re-syncing B against the state writes nothing: it was never touched.
            assert_eq!(store.sync_host("b"), 0);
            // A second beat with equal metrics writes only last_seen.
            store.apply(&beat("a", 102, 5.0));
            assert_eq!(a.last_seen.get_untracked(), Some(Timestamp(102)));
            assert_eq!(store.sync_host("a"), 0);
        });
    }

    #[test]
    fn tag_counts_follow_online_changes_and_tag_edits_and_nothing_else() {
        let owner = Owner::new();
        owner.with(|| {
            let mut snap = snapshot(&["a", "b", "c"]);
            snap.hosts[0].tags = vec!["web".into()];
            snap.hosts[1].tags = vec!["db".into(), "web".into()];
            let store = HostStore::new(snap);
            let runs = StoredValue::new(0);
            let counts = Memo::new(move |_| {
                runs.update_value(|n| *n += 1);
                store.tag_counts()
            });
            let count = |tag: &str, online, total| TagCount {
                tag: tag.into(),
                online,
                total,
            };
            assert_eq!(
                counts.get_untracked(),
                [count("db", 0, 1), count("web", 0, 2)]
            );
            store.apply(&beat("b", 101, 5.0));
            assert_eq!(
                counts.get_untracked(),
                [count("db", 1, 1), count("web", 1, 2)]
            );
            // A heartbeat of a host already online changes no count: no recount.
            let before = runs.get_value();
            store.apply(&beat("b", 102, 6.0));
            store.apply(&beat("b", 103, 6.0));
            let _ = counts.get_untracked();
            assert_eq!(runs.get_value(), before);
            // An edit of an off-screen host (no signals) recounts.
            let mut c = store.host_state("c").unwrap();
            c.tags = vec!["db".into()];
            store.apply(&BrowserEvent::HostUpdated(HostBody { host: c }));
            assert_eq!(
                counts.get_untracked(),
                [count("db", 1, 2), count("web", 1, 2)]
            );
            store.apply(&BrowserEvent::HostOffline(HostRef {
                host_id: "b".into(),
            }));
            assert_eq!(
                counts.get_untracked(),
                [count("db", 0, 2), count("web", 0, 2)]
            );
        });
    }

    #[test]
    fn a_waiting_store_is_synced_by_the_first_snapshot() {
        let owner = Owner::new();
        owner.with(|| {
            let store = HostStore::waiting();
            assert!(!store.synced.get_untracked());
            assert_eq!(store.counts(), (0, 0));
            // Deltas before the snapshot change nothing and do not count as synced.
            assert_eq!(store.apply(&beat("a", 101, 5.0)), Changed::Nothing);
            assert!(!store.synced.get_untracked());
            let mut snap = snapshot(&["a", "b"]);
            snap.hosts[1].online = true;
            store.apply(&BrowserEvent::Snapshot(snap));
            assert!(store.synced.get_untracked());
            assert_eq!(store.counts(), (1, 2));
            assert_eq!(store.ids.get_untracked(), vec!["a", "b"]);
        });
    }

    #[test]
    fn hosts_off_screen_have_no_signals_until_asked_and_then_are_current() {
        let owner = Owner::new();
        owner.with(|| {
            let mut snap = snapshot(&["a", "b", "c"]);
            snap.hosts[0].online = true;
            let store = HostStore::new(snap);
            assert_eq!(store.counts(), (1, 3));
            assert_eq!(store.signals.with_value(BTreeMap::len), 0);
            // A heartbeat for an unseen host changes its state and the count, no signals.
            store.apply(&beat("b", 101, 42.0));
            assert_eq!(store.signals.with_value(BTreeMap::len), 0);
            assert_eq!(store.counts(), (2, 3));
            assert!(store.is_online("b") && !store.is_online("c"));
            // Asked for, its signals start at the state's values.
            let b = store.host("b").unwrap();
            assert_eq!(b.metrics.get_untracked().unwrap().cpu, 42.0);
            assert!(b.online.get_untracked());
            assert_eq!(store.signals.with_value(BTreeMap::len), 1);
            store.apply(&BrowserEvent::HostOffline(HostRef {
                host_id: "a".into(),
            }));
            assert_eq!(store.counts(), (1, 3));
            assert!(store.host("zz").is_none());
        });
    }

    /// Counts how often an effect over `track` re-runs; effects are synchronous here.
    fn watch(
        track: impl Fn() + Send + Sync + 'static,
    ) -> (std::sync::Arc<std::sync::atomic::AtomicUsize>, impl Sized) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let runs = std::sync::Arc::new(AtomicUsize::new(0));
        let counter = runs.clone();
        let effect = leptos::reactive::effect::ImmediateEffect::new_isomorphic(move || {
            track();
            counter.fetch_add(1, Ordering::SeqCst);
        });
        (runs, effect)
    }

    #[test]
    fn notification_counts_a_heartbeat_for_a_wakes_nothing_of_b() {
        use std::sync::atomic::Ordering::SeqCst;
        let owner = Owner::new();
        owner.with(|| {
            let store = HostStore::new(snapshot(&["a", "b"]));
            let (a, b) = (store.host("a").unwrap(), store.host("b").unwrap());
            let everything = move |h: HostSignals| {
                move || {
                    h.hostname.track();
                    h.online.track();
                    h.last_seen.track();
                    h.metrics.track();
                    h.pending_command.track();
                    h.update_status.track();
                    h.generation.track();
                    h.beats.track();
                    h.log.track();
                }
            };
            let (runs_a, _ea) = watch(everything(a));
            let (runs_b, _eb) = watch(everything(b));
            let (runs_ids, _ei) = watch(move || store.ids.track());
            let (runs_cpu_a, _ec) = watch(move || a.metrics.track());
            let (runs_status_a, _es) = watch(move || a.update_status.track());
            assert_eq!(
                [
                    runs_a.load(SeqCst),
                    runs_b.load(SeqCst),
                    runs_ids.load(SeqCst)
                ],
                [1, 1, 1]
            );

            store.apply(&beat("a", 101, 5.0));
            assert!(runs_a.load(SeqCst) > 1, "A's watchers ran");
            assert_eq!(runs_b.load(SeqCst), 1, "nothing of B re-ran");
            assert_eq!(runs_ids.load(SeqCst), 1, "the host list did not re-render");
            assert_eq!(
                runs_status_a.load(SeqCst),
                1,
                "A's compartments did not re-render"
            );
            let cpu_runs = runs_cpu_a.load(SeqCst);
            assert_eq!(cpu_runs, 2);

            // Same metrics again: only last-seen changes, so the metric text is not touched.
            store.apply(&beat("a", 102, 5.0));
            assert_eq!(runs_cpu_a.load(SeqCst), cpu_runs);
            assert_eq!(runs_b.load(SeqCst), 1);

            // A command on B wakes B, not A's metrics.
            store.apply(&BrowserEvent::CommandQueued(CommandQueued {
                host_id: "b".into(),
                command_id: "c".into(),
                command: CommandKind::Test,
                queued_at: Timestamp(103),
            }));
            assert!(runs_b.load(SeqCst) > 1);
            assert_eq!(runs_cpu_a.load(SeqCst), cpu_runs);
        });
    }

    #[test]
    fn every_message_type_applies_and_unknown_hosts_are_harmless() {
        let owner = Owner::new();
        owner.with(|| {
            let store = HostStore::new(snapshot(&["a"]));
            let ghost = "ghost".to_owned();
            let events = [
                beat("ghost", 1, 1.0),
                BrowserEvent::HostOffline(HostRef {
                    host_id: ghost.clone(),
                }),
                BrowserEvent::HostRemoved(HostRef {
                    host_id: ghost.clone(),
                }),
                BrowserEvent::CommandQueued(CommandQueued {
                    host_id: ghost.clone(),
                    command_id: "x".into(),
                    command: CommandKind::Pull,
                    queued_at: Timestamp(1),
                }),
                BrowserEvent::CommandOutput(CommandOutput {
                    host_id: ghost.clone(),
                    command_id: "x".into(),
                    seq: 1,
                    stream: OutputStream::Stdout,
                    line: "x".into(),
                }),
                BrowserEvent::CommandComplete(CommandComplete {
                    host_id: ghost.clone(),
                    command_id: "x".into(),
                    status: CommandStatus::Ok,
                    exit_code: Some(0),
                    duration_ms: 1,
                    result: None,
                }),
            ];
            for e in &events {
                assert_eq!(store.apply(e), Changed::Nothing, "{e:?}");
            }
            assert_eq!(store.ids.get_untracked(), vec!["a"]);
            let pr = PendingPr {
                number: 7,
                title: "<script>alert(1)</script> flake.lock".into(),
                url: "https://example.invalid/pr/7".into(),
                mergeable: true,
                head_sha: None,
            };
            store.apply(&BrowserEvent::PendingPr(PendingPrChanged {
                pr: Some(pr.clone()),
            }));
            assert_eq!(store.pending_pr.get_untracked(), Some(pr));
            let progress = DeployProgress {
                job_id: "j".into(),
                pr_number: 7,
                phase: DeployPhase::Pulling,
                hosts: [("a".to_owned(), DeployHostState::Running)].into(),
                message: "pulling".into(),
                started_by: "op".into(),
                active: true,
                previews: Default::default(),
            };
            store.apply(&BrowserEvent::DeployProgress(progress.clone()));
            assert_eq!(store.deploy.get_untracked(), Some(progress));
            let mut host = Host::new("a", HostType::Nixos);
            host.agent_outdated = true;
            store.apply(&BrowserEvent::HostUpdated(HostBody { host }));
            assert!(store.host("a").unwrap().agent_outdated.get_untracked());
            store.apply(&BrowserEvent::HostOffline(HostRef {
                host_id: "a".into(),
            }));
            assert!(!store.host("a").unwrap().online.get_untracked());
        });
    }

    #[test]
    fn hosts_come_and_go_live() {
        let owner = Owner::new();
        owner.with(|| {
            let store = HostStore::new(snapshot(&["a"]));
            store.apply(&BrowserEvent::HostAdded(HostBody {
                host: Host::new("c", HostType::Macos),
            }));
            assert_eq!(store.ids.get_untracked(), vec!["a", "c"]);
            assert_eq!(
                store.host("c").unwrap().theme_color.get_untracked(),
                "#bb9af7"
            );
            store.apply(&BrowserEvent::HostRemoved(HostRef {
                host_id: "a".into(),
            }));
            assert_eq!(store.ids.get_untracked(), vec!["c"]);
            assert!(store.host("a").is_none());
            // A new snapshot replaces everything and moves the clock.
            let mut snap = snapshot(&["x", "y"]);
            snap.server_time = Timestamp(500);
            store.apply(&BrowserEvent::Snapshot(snap));
            assert_eq!(store.ids.get_untracked(), vec!["x", "y"]);
            assert!(store.host("c").is_none());
            assert_eq!(store.now.get_untracked(), Timestamp(500));
        });
    }

    #[test]
    fn busy_follows_commands() {
        let owner = Owner::new();
        owner.with(|| {
            let store = HostStore::new(snapshot(&["a"]));
            let a = store.host("a").unwrap();
            store.apply(&BrowserEvent::CommandQueued(CommandQueued {
                host_id: "a".into(),
                command_id: "c1".into(),
                command: CommandKind::Switch,
                queued_at: Timestamp(101),
            }));
            assert!(a.pending_command.get_untracked().is_some());
            store.apply(&BrowserEvent::CommandComplete(CommandComplete {
                host_id: "a".into(),
                command_id: "c1".into(),
                status: CommandStatus::Ok,
                exit_code: Some(0),
                duration_ms: 3,
                result: None,
            }));
            assert!(a.pending_command.get_untracked().is_none());
            assert_eq!(a.last_result.get_untracked(), Some(CommandStatus::Ok));
        });
    }

    #[test]
    fn output_lines_follow_the_latest_command() {
        let owner = Owner::new();
        owner.with(|| {
            let store = HostStore::new(snapshot(&["a", "b"]));
            let queue = |id: &str| {
                BrowserEvent::CommandQueued(CommandQueued {
                    host_id: "a".into(),
                    command_id: id.into(),
                    command: CommandKind::Pull,
                    queued_at: Timestamp(101),
                })
            };
            let line = |seq: u64| {
                BrowserEvent::CommandOutput(CommandOutput {
                    host_id: "a".into(),
                    command_id: "c1".into(),
                    seq,
                    stream: OutputStream::Stdout,
                    line: format!("line {seq}"),
                })
            };
            store.apply(&queue("c1"));
            for seq in 1..=(LOG_LINES as u64 + 10) {
                store.apply(&line(seq));
            }
            let a = store.host("a").unwrap();
            let log = a.log.get_untracked();
            assert_eq!(log.len(), LOG_LINES);
            assert_eq!(log.first().unwrap().seq, 11);
            assert_eq!(log.last().unwrap().line, format!("line {}", LOG_LINES + 10));
            assert!(store.host("b").unwrap().log.get_untracked().is_empty());
            store.apply(&BrowserEvent::CommandComplete(CommandComplete {
                host_id: "a".into(),
                command_id: "c1".into(),
                status: CommandStatus::Ok,
                exit_code: Some(0),
                duration_ms: 3,
                result: None,
            }));
            let end = a.log.get_untracked().last().cloned().unwrap();
            assert!(end.end);
            assert_eq!(end.line, "— ok, exit 0, 0.0 s");
            // The next command starts a fresh log.
            store.apply(&queue("c2"));
            assert!(a.log.get_untracked().is_empty());
            assert_eq!(a.last_result.get_untracked(), None);
        });
    }

    fn queue_on(host: &str, id: &str, kind: CommandKind) -> BrowserEvent {
        BrowserEvent::CommandQueued(CommandQueued {
            host_id: host.into(),
            command_id: id.into(),
            command: kind,
            queued_at: Timestamp(101),
        })
    }

    fn complete(host: &str, id: &str, status: CommandStatus, diff: bool) -> BrowserEvent {
        let result = diff.then(|| protocol::CommandResult {
            diff: Some(ClosureDiff {
                changes: vec![protocol::PackageChange {
                    name: "openssl".into(),
                    old: Some("3.0.14".into()),
                    new: Some("3.0.15".into()),
                    kind: protocol::ChangeKind::Upgraded,
                }],
                closure_bytes_before: 10,
                closure_bytes_after: 20,
                reboot_needed: false,
                truncated: 0,
            }),
            generation: None,
            store_path: Some(format!("/nix/store/x-{id}")),
        });
        BrowserEvent::CommandComplete(CommandComplete {
            host_id: host.into(),
            command_id: id.into(),
            status,
            exit_code: Some(0),
            duration_ms: 3,
            result,
        })
    }

    fn preview_of(store: &HostStore, host: &str) -> Option<String> {
        store.previews.with_untracked(|p| {
            p.iter()
                .find(|p| p.host_id == host)
                .map(|p| p.command_id.clone())
        })
    }

    #[test]
    fn a_finished_preview_is_kept_per_host_until_a_switch_makes_it_stale() {
        let owner = Owner::new();
        owner.with(|| {
            let mut snap = snapshot(&["a", "b"]);
            snap.hosts[0].generations = vec![Generation {
                number: 41,
                created_at: Timestamp(50),
                store_path: "/nix/store/h-nixos-system-a-1".into(),
                current: true,
                booted: true,
            }];
            let store = HostStore::new(snap);
            // Kept: a preview that ends ok with a diff, with the generation it is against.
            store.apply(&queue_on("a", "p1", CommandKind::Preview));
            store.apply(&complete("a", "p1", CommandStatus::Ok, true));
            assert_eq!(preview_of(&store, "a").as_deref(), Some("p1"));
            let kept = store.previews.with_untracked(|p| p[0].clone());
            assert_eq!(kept.host_id, "a");
            assert_eq!(kept.base_generation, Some(41));
            assert_eq!(kept.store_path.as_deref(), Some("/nix/store/x-p1"));
            assert_eq!(kept.diff.changes.len(), 1);
            // Not kept: a failed preview, a preview without a diff, another command's diff,
            // and a late completion of a command the host no longer runs.
            store.apply(&queue_on("b", "p2", CommandKind::Preview));
            store.apply(&complete("b", "p2", CommandStatus::Error, true));
            store.apply(&queue_on("b", "p3", CommandKind::Preview));
            store.apply(&complete("b", "p3", CommandStatus::Ok, false));
            store.apply(&queue_on("b", "t1", CommandKind::Test));
            store.apply(&complete("b", "t1", CommandStatus::Ok, true));
            store.apply(&complete("b", "p9", CommandStatus::Ok, true));
            assert_eq!(preview_of(&store, "b"), None);
            // A newer preview replaces the older one.
            store.apply(&queue_on("a", "p4", CommandKind::Preview));
            store.apply(&complete("a", "p4", CommandStatus::Ok, true));
            assert_eq!(preview_of(&store, "a").as_deref(), Some("p4"));
            // A test, or a switch that failed or rolled back, leaves it.
            for (id, kind, status) in [
                ("t2", CommandKind::Test, CommandStatus::Ok),
                ("s1", CommandKind::Switch, CommandStatus::Error),
                ("s2", CommandKind::Switch, CommandStatus::RolledBack),
                ("b1", CommandKind::Boot, CommandStatus::Ok),
            ] {
                store.apply(&queue_on("a", id, kind));
                store.apply(&complete("a", id, status, false));
                assert_eq!(preview_of(&store, "a").as_deref(), Some("p4"), "{id}");
            }
            // A switch that took drops it.
            store.apply(&queue_on("a", "s3", CommandKind::Switch));
            store.apply(&complete("a", "s3", CommandStatus::Ok, false));
            assert_eq!(preview_of(&store, "a"), None);
            // So does a rollback, and a host that goes takes its preview along.
            store.apply(&queue_on("a", "p5", CommandKind::Preview));
            store.apply(&complete("a", "p5", CommandStatus::Ok, true));
            store.apply(&queue_on("a", "r1", CommandKind::Rollback));
            store.apply(&complete("a", "r1", CommandStatus::Ok, false));
            assert_eq!(preview_of(&store, "a"), None);
            store.apply(&queue_on("b", "p6", CommandKind::Preview));
            store.apply(&complete("b", "p6", CommandStatus::Ok, true));
            store.apply(&queue_on("a", "p7", CommandKind::Preview));
            store.apply(&complete("a", "p7", CommandStatus::Ok, true));
            store.apply(&BrowserEvent::HostRemoved(HostRef {
                host_id: "b".into(),
            }));
            assert_eq!(preview_of(&store, "b"), None);
            // A snapshot without the host drops its preview; one with it keeps it.
            store.apply(&BrowserEvent::Snapshot(snapshot(&["a", "c"])));
            assert_eq!(preview_of(&store, "a").as_deref(), Some("p7"));
            store.apply(&BrowserEvent::Snapshot(snapshot(&["c"])));
            assert_eq!(preview_of(&store, "a"), None);
        });
    }

    #[test]
    fn a_deploys_previews_are_kept_but_not_switchable() {
        let owner = Owner::new();
        owner.with(|| {
            let store = HostStore::new(snapshot(&["a", "b"]));
            // b's own preview, then the deploy's preview of the PR on a (and, on b, one
            // that is still running when the progress names it).
            store.apply(&queue_on("b", "p1", CommandKind::Preview));
            store.apply(&complete("b", "p1", CommandStatus::Ok, true));
            store.apply(&queue_on("a", "d-a", CommandKind::Preview));
            store.apply(&complete("a", "d-a", CommandStatus::Ok, true));
            let mut progress = DeployProgress {
                job_id: "j".into(),
                pr_number: 7,
                phase: DeployPhase::AwaitingConfirmation,
                hosts: [
                    ("a".to_owned(), DeployHostState::Ok),
                    ("b".to_owned(), DeployHostState::Running),
                ]
                .into(),
                message: String::new(),
                started_by: "op".into(),
                active: true,
                previews: [
                    ("a".to_owned(), "d-a".to_owned()),
                    ("b".to_owned(), "d-b".to_owned()),
                ]
                .into(),
            };
            store.apply(&BrowserEvent::DeployProgress(progress.clone()));
            let switchable = |store: &HostStore| {
                let deploy = store.deploy.get_untracked();
                store.previews.with_untracked(|p| {
                    p.iter()
                        .filter(|p| !p.of_deploy(deploy.as_ref()))
                        .map(|p| p.command_id.clone())
                        .collect::<Vec<_>>()
                })
            };
            // The store keeps the deploy's preview (the deploy panel shows it) ...
            assert_eq!(preview_of(&store, "a").as_deref(), Some("d-a"));
            // ... but only b's own preview may be switched to.
            assert_eq!(switchable(&store), ["p1"]);
            // Nor once the deploy was cancelled: the PR it built is not merged.
            progress.active = false;
            progress.phase = DeployPhase::Failed;
            store.apply(&BrowserEvent::DeployProgress(progress));
            assert_eq!(switchable(&store), ["p1"]);
            // A preview of a host's own, made later, is switchable again.
            store.apply(&queue_on("a", "p2", CommandKind::Preview));
            store.apply(&complete("a", "p2", CommandStatus::Ok, true));
            assert_eq!(switchable(&store), ["p1", "p2"]);
        });
    }

    #[test]
    fn the_generations_key_follows_the_list() {
        let owner = Owner::new();
        owner.with(|| {
            let store = HostStore::new(snapshot(&["a"]));
            let a = store.host("a").unwrap();
            let empty = a.generations_key.get_untracked();
            let generation = |number, current| Generation {
                number,
                created_at: Timestamp(50 + number as i64),
                store_path: format!("/nix/store/h-{number}"),
                current,
                booted: false,
            };
            let mut host = store.host_state("a").unwrap();
            host.generations = vec![generation(1, false), generation(2, true)];
            store.apply(&BrowserEvent::HostUpdated(HostBody { host: host.clone() }));
            let two = a.generations_key.get_untracked();
            assert_ne!(two, empty);
            // The same list again writes nothing; the current mark moving does.
            assert_eq!(store.sync_host("a"), 0);
            host.generations = vec![generation(1, true), generation(2, false)];
            store.apply(&BrowserEvent::HostUpdated(HostBody { host }));
            assert_ne!(a.generations_key.get_untracked(), two);
        });
    }

    #[test]
    fn a_rolled_back_command_closes_its_log_as_rolled_back() {
        let owner = Owner::new();
        owner.with(|| {
            let store = HostStore::new(snapshot(&["a"]));
            let a = store.host("a").unwrap();
            store.apply(&queue_on("a", "s1", CommandKind::Switch));
            store.apply(&complete("a", "s1", CommandStatus::RolledBack, false));
            assert_eq!(
                a.last_result.get_untracked(),
                Some(CommandStatus::RolledBack)
            );
            let end = a.log.get_untracked().last().cloned().unwrap();
            assert_eq!(end.line, "— rolled back, exit 0, 0.0 s");
        });
    }
}
