//! The fleet state machine. The hub and the browser hold one each and change it only by
//! applying the same `BrowserEvent`s, so what a `snapshot` shows and what deltas produce can
//! never drift apart.

use crate::messages::*;
use crate::model::*;
use crate::Timestamp;
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Default)]
pub struct FleetState {
    pub hosts: BTreeMap<String, Host>,
    pub pending_pr: Option<PendingPr>,
    pub deploy: Option<DeployProgress>,
    pub desired: Option<DesiredState>,
    pub dashboard_version: String,
    pub server_time: Timestamp,
    /// The web build the dashboard serves (see `Snapshot::build`).
    pub build: String,
}

/// What an `apply` touched, so an adapter can wake only the matching signals.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Changed {
    Nothing,
    /// Everything may have changed (a snapshot).
    All,
    Host(String),
    HostAdded(String),
    HostRemoved(String),
    /// A command output line for this host: not part of the host state.
    Output(String),
    PendingPr,
    Deploy,
    Desired,
}

impl FleetState {
    pub fn from_snapshot(s: Snapshot) -> Self {
        let mut state = FleetState::default();
        state.apply(&BrowserEvent::Snapshot(s));
        state
    }

    pub fn snapshot(&self, server_time: Timestamp) -> Snapshot {
        Snapshot {
            hosts: self.hosts.values().cloned().collect(),
            pending_pr: self.pending_pr.clone(),
            dashboard_version: self.dashboard_version.clone(),
            server_time,
            desired: self.desired.clone(),
            deploy: self.deploy.clone(),
            build: self.build.clone(),
        }
    }

    /// Hosts in display order (by id, which is the lower-cased hostname).
    pub fn host_ids(&self) -> Vec<String> {
        self.hosts.keys().cloned().collect()
    }

    /// Apply one event. Stale or duplicate deltas are harmless: an older heartbeat does not
    /// move last_seen back, and events for unknown hosts change nothing.
    pub fn apply(&mut self, event: &BrowserEvent) -> Changed {
        match event {
            BrowserEvent::Snapshot(s) => {
                self.hosts = s.hosts.iter().map(|h| (h.id.clone(), h.clone())).collect();
                self.pending_pr = s.pending_pr.clone();
                self.desired = s.desired.clone();
                self.deploy = s.deploy.clone();
                self.dashboard_version = s.dashboard_version.clone();
                self.server_time = s.server_time;
                self.build = s.build.clone();
                Changed::All
            }
            BrowserEvent::HostHeartbeat(hb) => {
                let Some(host) = self.hosts.get_mut(&hb.host_id) else {
                    return Changed::Nothing;
                };
                if host.last_seen.is_some_and(|seen| seen > hb.last_seen) {
                    return Changed::Nothing;
                }
                host.online = hb.online;
                host.last_seen = Some(hb.last_seen);
                host.metrics = hb.metrics;
                Changed::Host(hb.host_id.clone())
            }
            BrowserEvent::HostOffline(r) => match self.hosts.get_mut(&r.host_id) {
                Some(host) if host.online => {
                    host.online = false;
                    Changed::Host(r.host_id.clone())
                }
                _ => Changed::Nothing,
            },
            BrowserEvent::HostUpdated(b) | BrowserEvent::HostAdded(b) => {
                let id = b.host.id.clone();
                match self.hosts.insert(id.clone(), b.host.clone()) {
                    Some(old) if old == b.host => Changed::Nothing,
                    Some(_) => Changed::Host(id),
                    None => Changed::HostAdded(id),
                }
            }
            BrowserEvent::HostRemoved(r) => match self.hosts.remove(&r.host_id) {
                Some(_) => Changed::HostRemoved(r.host_id.clone()),
                None => Changed::Nothing,
            },
            BrowserEvent::CommandQueued(q) => {
                let Some(host) = self.hosts.get_mut(&q.host_id) else {
                    return Changed::Nothing;
                };
                host.pending_command = Some(PendingCommand {
                    command_id: q.command_id.clone(),
                    command: q.command,
                    started_at: q.queued_at,
                });
                Changed::Host(q.host_id.clone())
            }
            BrowserEvent::CommandOutput(o) => {
                if self.hosts.contains_key(&o.host_id) {
                    Changed::Output(o.host_id.clone())
                } else {
                    Changed::Nothing
                }
            }
            BrowserEvent::CommandComplete(c) => {
                let Some(host) = self.hosts.get_mut(&c.host_id) else {
                    return Changed::Nothing;
                };
                // Only the command that is pending may clear it: a late completion of an
                // older command must not free a host that is busy with a newer one.
                if host
                    .pending_command
                    .as_ref()
                    .is_some_and(|p| p.command_id == c.command_id)
                {
                    host.pending_command = None;
                    Changed::Host(c.host_id.clone())
                } else {
                    Changed::Nothing
                }
            }
            BrowserEvent::PendingPr(p) => {
                if self.pending_pr == p.pr {
                    Changed::Nothing
                } else {
                    self.pending_pr = p.pr.clone();
                    Changed::PendingPr
                }
            }
            BrowserEvent::DeployProgress(d) => {
                if self.deploy.as_ref() == Some(d) {
                    return Changed::Nothing;
                }
                self.deploy = Some(d.clone());
                Changed::Deploy
            }
            BrowserEvent::DesiredState(d) => {
                if self.desired == d.desired {
                    return Changed::Nothing;
                }
                self.desired = d.desired.clone();
                Changed::Desired
            }
        }
    }

    pub fn online_count(&self) -> usize {
        self.hosts.values().filter(|h| h.online).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(id: &str) -> Host {
        Host::new(id, HostType::Nixos)
    }

    fn snapshot(hosts: Vec<Host>) -> BrowserEvent {
        BrowserEvent::Snapshot(Snapshot {
            hosts,
            pending_pr: None,
            dashboard_version: "0.1.0".into(),
            build: String::new(),
            server_time: Timestamp(1000),
            desired: None,
            deploy: None,
        })
    }

    fn heartbeat(id: &str, at: i64, cpu: f64) -> BrowserEvent {
        BrowserEvent::HostHeartbeat(HostHeartbeat {
            host_id: id.into(),
            online: true,
            last_seen: Timestamp(at),
            metrics: Some(Metrics {
                cpu,
                ram: 50.0,
                swap: 0.0,
                load: 0.5,
                disk: None,
            }),
        })
    }

    #[test]
    fn snapshot_then_deltas_gives_final_state() {
        let mut s = FleetState::default();
        assert_eq!(s.apply(&snapshot(vec![host("a"), host("b")])), Changed::All);
        s.apply(&heartbeat("a", 1001, 10.0));
        s.apply(&heartbeat("a", 1006, 20.0));
        s.apply(&BrowserEvent::HostAdded(HostBody { host: host("c") }));
        s.apply(&BrowserEvent::HostRemoved(HostRef {
            host_id: "b".into(),
        }));
        s.apply(&BrowserEvent::CommandQueued(CommandQueued {
            host_id: "a".into(),
            command_id: "cmd1".into(),
            command: CommandKind::Pull,
            queued_at: Timestamp(1007),
        }));

        let mut expected_a = host("a");
        expected_a.online = true;
        expected_a.last_seen = Some(Timestamp(1006));
        expected_a.metrics = Some(Metrics {
            cpu: 20.0,
            ram: 50.0,
            swap: 0.0,
            load: 0.5,
            disk: None,
        });
        expected_a.pending_command = Some(PendingCommand {
            command_id: "cmd1".into(),
            command: CommandKind::Pull,
            started_at: Timestamp(1007),
        });
        assert_eq!(s.host_ids(), vec!["a", "c"]);
        assert_eq!(s.hosts["a"], expected_a);
        assert_eq!(s.hosts["c"], host("c"));

        s.apply(&BrowserEvent::CommandComplete(CommandComplete {
            host_id: "a".into(),
            command_id: "cmd1".into(),
            status: CommandStatus::Ok,
            exit_code: Some(0),
            duration_ms: 10,
            result: None,
        }));
        assert!(!s.hosts["a"].is_busy());
        s.apply(&BrowserEvent::HostOffline(HostRef {
            host_id: "a".into(),
        }));
        assert!(!s.hosts["a"].online);
    }

    #[test]
    fn heartbeat_for_a_leaves_b_untouched() {
        let mut s = FleetState::default();
        s.apply(&snapshot(vec![host("a"), host("b")]));
        let before_b = s.hosts["b"].clone();
        assert_eq!(
            s.apply(&heartbeat("a", 1001, 5.0)),
            Changed::Host("a".into())
        );
        assert_eq!(s.hosts["b"], before_b);
    }

    #[test]
    fn stale_and_duplicate_deltas_are_harmless() {
        let mut s = FleetState::default();
        s.apply(&snapshot(vec![host("a")]));
        s.apply(&heartbeat("a", 1010, 30.0));
        let after = s.clone();
        assert_eq!(s.apply(&heartbeat("a", 1005, 99.0)), Changed::Nothing);
        assert_eq!(s, after);
        assert_eq!(s.apply(&heartbeat("ghost", 1011, 1.0)), Changed::Nothing);
        assert_eq!(
            s.apply(&BrowserEvent::HostRemoved(HostRef {
                host_id: "ghost".into()
            })),
            Changed::Nothing
        );
        let same = BrowserEvent::HostUpdated(HostBody {
            host: s.hosts["a"].clone(),
        });
        assert_eq!(s.apply(&same), Changed::Nothing);
        s.apply(&BrowserEvent::HostOffline(HostRef {
            host_id: "a".into(),
        }));
        assert_eq!(
            s.apply(&BrowserEvent::HostOffline(HostRef {
                host_id: "a".into()
            })),
            Changed::Nothing
        );
        assert_eq!(s, {
            let mut a = after.clone();
            a.hosts.get_mut("a").unwrap().online = false;
            a
        });
    }

    #[test]
    fn late_completion_does_not_free_a_newer_command() {
        let mut s = FleetState::default();
        s.apply(&snapshot(vec![host("a")]));
        s.apply(&BrowserEvent::CommandQueued(CommandQueued {
            host_id: "a".into(),
            command_id: "new".into(),
            command: CommandKind::Switch,
            queued_at: Timestamp(1),
        }));
        let late = BrowserEvent::CommandComplete(CommandComplete {
            host_id: "a".into(),
            command_id: "old".into(),
            status: CommandStatus::Ok,
            exit_code: Some(0),
            duration_ms: 1,
            result: None,
        });
        assert_eq!(s.apply(&late), Changed::Nothing);
        assert!(s.hosts["a"].is_busy());
    }

    #[test]
    fn snapshot_replaces_everything() {
        let mut s = FleetState::default();
        s.apply(&snapshot(vec![host("a"), host("b")]));
        s.apply(&snapshot(vec![host("z")]));
        assert_eq!(s.host_ids(), vec!["z"]);
    }
}
