//! The notifier: watches the hub without blocking it and turns what happens into queued
//! messages. Host states (offline, compartments red, agent outdated) are read from the hub
//! once a second (`HostView`, a few fields per host under one lock) and compared with the
//! last look, so a missed event cannot lose a transition; command ends come from the hub's
//! typed completions and deploy phases from its event stream. Matches are grouped per rule
//! (`plan::Grouper`), then queued for the rule's targets; in quiet hours they are queued
//! due at the quiet hours' end.
//!
//! At start every host is offline until its agent reconnects: a host last seen in the
//! last ten minutes counts as offline since then (a dashboard restart), one seen earlier
//! as already reported, so a restart does not report long-gone hosts again. What was
//! reported lives in memory only: an outdated agent or a red compartment still there after
//! a restart is reported again.
//!
//! Servers sharing one database: only the leader watches (`service::lease`); a server
//! that becomes leader starts as after a restart.

use super::plan::{Grouper, Quiet};
use super::{enqueue, in_scope, rule_info};
use crate::Core;
use protocol::api::{NotifyEvent, NotifyMessage, NotifyRule};
use protocol::messages::{CommandComplete, DeployPhase, DeployProgress};
use protocol::{BrowserEvent, CheckStatus, CommandStatus, Host, Timestamp};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

const TICK: Duration = Duration::from_secs(1);
/// Cooldowns are forgotten after the longest one allowed.
const FORGET_MS: i64 = 7 * 86_400 * 1000;
/// A host offline at start and last seen this recently is watched as offline since then.
const RECENT_S: i64 = 600;
/// Deploy jobs remembered as reported, at most.
const DEPLOYS_KEPT: usize = 1000;

/// What the notifier needs of a host.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HostView {
    pub id: String,
    pub online: bool,
    pub last_seen: Option<i64>,
    /// The names of the compartments in `error`.
    pub red: Vec<&'static str>,
    pub outdated: bool,
    pub agent_version: Option<String>,
    pub tags: Vec<String>,
}

impl HostView {
    pub fn of(host: &Host) -> HostView {
        HostView {
            id: host.id.clone(),
            online: host.online,
            last_seen: host.last_seen.map(Timestamp::secs),
            red: protocol::UpdateStatus::NAMES
                .iter()
                .zip(host.update_status.checks())
                .filter(|(_, c)| c.status == CheckStatus::Error)
                .map(|(n, _)| *n)
                .collect(),
            outdated: host.agent_outdated,
            agent_version: host.agent_version.clone(),
            tags: host.tags.clone(),
        }
    }
}

/// What the notifier remembers between looks.
#[derive(Default)]
pub struct Watch {
    /// Offline hosts: since when (ms).
    offline: HashMap<String, i64>,
    /// Hosts with a red compartment: since when (ms).
    red: HashMap<String, i64>,
    outdated: HashSet<String>,
    /// (rule, host) already reported for the current offline spell; (rule, "red:" host)
    /// for the current red one.
    fired: HashSet<(String, String)>,
    /// Deploy jobs reported, by job and event.
    deploys: HashSet<(String, NotifyEvent)>,
    started: bool,
}

pub fn spawn(core: Core) {
    tokio::spawn(async move {
        let mut completions = core.hub.completions();
        let mut events = core.hub.subscribe_events();
        let mut tick = tokio::time::interval(TICK);
        let mut watch = Watch::default();
        let mut grouper = Grouper::default();
        let mut rules: Vec<NotifyRule> = Vec::new();
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    // Read while following too: a server that takes over matches the
                    // first events it sees (a deploy it takes over) against fresh rules.
                    match core.db.notify_rules().await {
                        Ok(rows) => rules = rows.into_iter().map(rule_info).collect(),
                        Err(e) => tracing::warn!("notifications: reading rules: {e}"),
                    }
                    if !core.leader.is_leader() {
                        // Another server watches (`service::lease`): two would queue every
                        // message twice. Start afresh if this one leads later.
                        watch = Watch::default();
                        grouper = Grouper::default();
                        continue;
                    }
                    let now = super::deliver::now_ms();
                    let hosts = core.hub.map_hosts(HostView::of);
                    scan(&hosts, &rules, &mut watch, &mut grouper, now);
                    for (rule_id, group) in grouper.due(now, FORGET_MS) {
                        if let Some(rule) = rules.iter().find(|r| r.id == rule_id) {
                            flush(&core, rule, group, now).await;
                        }
                    }
                }
                done = completions.recv() => match done {
                    Ok(done) if core.leader.is_leader() => {
                        let tags = core.hub.host(&done.host_id).map(|h| h.tags).unwrap_or_default();
                        command(&rules, &mut grouper, &done, &tags, super::deliver::now_ms());
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(n)) => tracing::warn!("notifications: missed {n} command ends"),
                    Err(RecvError::Closed) => return,
                },
                text = events.recv() => match text {
                    // The only frames read: the rest (heartbeats, output) are skipped unparsed.
                    Ok(text) if core.leader.is_leader() && text.as_str().starts_with(r#"{"type":"deploy_progress""#) => {
                        if let Ok(BrowserEvent::DeployProgress(p)) = serde_json::from_str(text.as_str()) {
                            deploy(&rules, &mut watch, &mut grouper, &p, super::deliver::now_ms());
                        }
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(n)) => tracing::warn!("notifications: missed {n} events"),
                    Err(RecvError::Closed) => return,
                },
            }
        }
    });
}

fn offer_all(
    rules: &[NotifyRule],
    grouper: &mut Grouper,
    event: NotifyEvent,
    host: &HostView,
    detail: Value,
    now: i64,
    also: impl Fn(&NotifyRule) -> bool,
) {
    for rule in rules
        .iter()
        .filter(|r| r.event == event && in_scope(&r.scope, &host.id, &host.tags) && also(r))
    {
        grouper.offer(
            &rule.id,
            &host.id,
            std::slice::from_ref(&host.id),
            detail.clone(),
            i64::from(rule.cooldown_s) * 1000,
            now,
        );
    }
}

/// A command ended: `command_failed` for error, timeout, lost and rolled back.
fn command(
    rules: &[NotifyRule],
    grouper: &mut Grouper,
    done: &CommandComplete,
    tags: &[String],
    now: i64,
) {
    use CommandStatus::*;
    if !matches!(done.status, Error | Timeout | Lost | RolledBack) {
        return;
    }
    let host = HostView {
        id: done.host_id.clone(),
        tags: tags.to_vec(),
        ..HostView::default()
    };
    let detail = json!({"host_id": done.host_id, "command_id": done.command_id,
        "status": done.status, "exit_code": done.exit_code});
    offer_all(
        rules,
        grouper,
        NotifyEvent::CommandFailed,
        &host,
        detail,
        now,
        |_| true,
    );
}

/// A deploy's phase: started, finished, failed or halted, each reported once per job.
fn deploy(
    rules: &[NotifyRule],
    watch: &mut Watch,
    grouper: &mut Grouper,
    p: &DeployProgress,
    now: i64,
) {
    let event = match p.phase {
        DeployPhase::Previewing | DeployPhase::Merging => NotifyEvent::DeployStarted,
        DeployPhase::Done => NotifyEvent::DeployFinished,
        DeployPhase::Failed => NotifyEvent::DeployFailed,
        _ => return,
    };
    if watch.deploys.len() >= DEPLOYS_KEPT {
        watch.deploys.clear();
    }
    if !watch.deploys.insert((p.job_id.clone(), event)) {
        return;
    }
    let hosts: Vec<String> = p.hosts.keys().cloned().collect();
    for rule in rules.iter().filter(|r| r.event == event) {
        grouper.offer(
            &rule.id,
            &p.job_id,
            &hosts,
            json!({"job_id": p.job_id, "pr_number": p.pr_number, "phase": p.phase,
                "message": p.message, "started_by": p.started_by}),
            i64::from(rule.cooldown_s) * 1000,
            now,
        );
    }
}

/// Compare the hosts with the last look and offer what rules match.
pub fn scan(
    hosts: &[HostView],
    rules: &[NotifyRule],
    watch: &mut Watch,
    grouper: &mut Grouper,
    now: i64,
) {
    let first = !watch.started;
    watch.started = true;
    let by_rule = |event: NotifyEvent| rules.iter().filter(move |r| r.event == event);
    for host in hosts {
        let id = &host.id;
        // Offline, and back.
        if host.online {
            if let Some(since) = watch.offline.remove(id) {
                let away = now - since;
                offer_all(
                    rules,
                    grouper,
                    NotifyEvent::HostOnline,
                    host,
                    json!({"host_id": id, "offline_s": away / 1000}),
                    now,
                    |r| away >= i64::from(r.after_s) * 1000,
                );
                watch.fired.retain(|(_, h)| h != id);
            }
        } else if !watch.offline.contains_key(id) {
            let since = match host.last_seen {
                Some(seen) if first && now - seen * 1000 <= RECENT_S * 1000 => seen * 1000,
                _ if first => {
                    for rule in by_rule(NotifyEvent::HostOffline) {
                        watch.fired.insert((rule.id.clone(), id.clone()));
                    }
                    now
                }
                _ => now,
            };
            watch.offline.insert(id.clone(), since);
        }
        if let Some(since) = watch.offline.get(id).copied() {
            let detail = json!({"host_id": id,
                "last_seen": host.last_seen.map(Timestamp), "offline_s": (now - since) / 1000});
            let fired = &mut watch.fired;
            offer_all(
                rules,
                grouper,
                NotifyEvent::HostOffline,
                host,
                detail,
                now,
                |r| {
                    now - since > i64::from(r.after_s) * 1000
                        && !fired.contains(&(r.id.clone(), id.clone()))
                },
            );
            for rule in by_rule(NotifyEvent::HostOffline) {
                if now - since > i64::from(rule.after_s) * 1000 {
                    fired.insert((rule.id.clone(), id.clone()));
                }
            }
        }
        // A red compartment.
        let red_key = format!("red:{id}");
        if host.red.is_empty() {
            if watch.red.remove(id).is_some() {
                watch.fired.retain(|(_, h)| *h != red_key);
            }
        } else {
            let since = *watch.red.entry(id.clone()).or_insert(now);
            let fired = &mut watch.fired;
            offer_all(
                rules,
                grouper,
                NotifyEvent::CompartmentRed,
                host,
                json!({"host_id": id, "compartments": host.red}),
                now,
                |r| {
                    now - since > i64::from(r.after_s) * 1000
                        && !fired.contains(&(r.id.clone(), red_key.clone()))
                },
            );
            for rule in by_rule(NotifyEvent::CompartmentRed) {
                if now - since > i64::from(rule.after_s) * 1000 {
                    fired.insert((rule.id.clone(), red_key.clone()));
                }
            }
        }
        // An outdated agent, reported once per spell.
        if !host.outdated {
            watch.outdated.remove(id);
        } else if watch.outdated.insert(id.clone()) {
            offer_all(
                rules,
                grouper,
                NotifyEvent::AgentOutdated,
                host,
                json!({"host_id": id, "agent_version": host.agent_version}),
                now,
                |_| true,
            );
        }
    }
    // Removed hosts are forgotten.
    let known: HashSet<&str> = hosts.iter().map(|h| h.id.as_str()).collect();
    watch.offline.retain(|id, _| known.contains(id.as_str()));
    watch.red.retain(|id, _| known.contains(id.as_str()));
    watch.outdated.retain(|id| known.contains(id.as_str()));
    watch
        .fired
        .retain(|(_, h)| known.contains(h.trim_start_matches("red:")));
}

fn summary(rule: &NotifyRule, hosts: &[String]) -> String {
    let names = hosts.join(", ");
    let n = hosts.len();
    let many = |one: &str, more: &str| {
        if n == 1 {
            one.to_owned()
        } else {
            format!("{n} {more}")
        }
    };
    match rule.event {
        NotifyEvent::HostOffline => format!(
            "{} offline for more than {} s: {names}",
            many("Host", "hosts"),
            rule.after_s
        ),
        NotifyEvent::HostOnline => format!("{} back online: {names}", many("Host", "hosts")),
        NotifyEvent::CommandFailed => format!("Command failed on {names}"),
        NotifyEvent::DeployStarted => format!("Deploy started on {names}"),
        NotifyEvent::DeployFinished => format!("Deploy finished on {names}"),
        NotifyEvent::DeployFailed => format!("Deploy failed or halted on {names}"),
        NotifyEvent::CompartmentRed => format!(
            "{} with a red compartment for more than {} s: {names}",
            many("Host", "hosts"),
            rule.after_s
        ),
        NotifyEvent::AgentOutdated => format!("Agent out of date on {names}"),
        NotifyEvent::Test => "Test message from nixdeck".to_owned(),
    }
}

async fn flush(core: &Core, rule: &NotifyRule, group: super::plan::Group, now: i64) {
    let hosts: Vec<String> = group.hosts.into_iter().collect();
    let message = NotifyMessage {
        event: rule.event,
        idempotency_key: crate::secret::new_token(),
        at: Timestamp(now / 1000),
        summary: summary(rule, &hosts),
        hosts,
        details: json!({"rule_id": rule.id, "events": group.details}),
    };
    let due = rule
        .quiet
        .as_ref()
        .and_then(|q| Quiet::parse(q).ok())
        .and_then(|q| q.ends_after(now / 1000))
        .map(|end| end * 1000);
    if let Err(e) = enqueue(core, &message, &rule.target_ids, due).await {
        tracing::warn!("notifications: queueing: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::super::plan::GROUP_MS;
    use super::*;
    use protocol::api::NotifyScope;
    use protocol::messages::DeployHostState;
    use std::collections::BTreeMap;

    const T0: i64 = 1_800_000_000_000;

    fn rule(id: &str, event: NotifyEvent, after_s: u32) -> NotifyRule {
        NotifyRule {
            id: id.into(),
            event,
            after_s,
            scope: NotifyScope::default(),
            target_ids: vec!["t".into()],
            cooldown_s: 0,
            quiet: None,
            created_at: Timestamp(0),
        }
    }

    fn host(id: &str, online: bool) -> HostView {
        HostView {
            id: id.into(),
            online,
            last_seen: Some(T0 / 1000),
            ..HostView::default()
        }
    }

    /// Look at `hosts` at `now`; the hosts of the messages that are due GROUP_MS later.
    fn look(
        w: &mut Watch,
        g: &mut Grouper,
        rules: &[NotifyRule],
        hosts: &[HostView],
        now: i64,
    ) -> Vec<(String, Vec<String>)> {
        scan(hosts, rules, w, g, now);
        let mut due: Vec<_> = g
            .due(now + GROUP_MS, FORGET_MS)
            .into_iter()
            .map(|(r, grp)| (r, grp.hosts.into_iter().collect()))
            .collect();
        due.sort();
        due
    }

    #[test]
    fn offline_for_more_than_after_s_fires_once_and_back_online_after_it() {
        let rules = [
            rule("off", NotifyEvent::HostOffline, 60),
            rule("on", NotifyEvent::HostOnline, 30),
        ];
        let (mut w, mut g) = (Watch::default(), Grouper::default());
        let up = [host("a", true), host("b", true)];
        assert!(look(&mut w, &mut g, &rules, &up, T0).is_empty());
        let down = [host("a", false), host("b", false)];
        assert!(look(&mut w, &mut g, &rules, &down, T0 + 1_000).is_empty());
        assert!(
            look(&mut w, &mut g, &rules, &down, T0 + 61_000).is_empty(),
            "not yet"
        );
        let fired = look(&mut w, &mut g, &rules, &down, T0 + 62_000);
        assert_eq!(fired, [("off".into(), vec!["a".into(), "b".into()])]);
        assert!(
            look(&mut w, &mut g, &rules, &down, T0 + 200_000).is_empty(),
            "once"
        );
        let back = look(&mut w, &mut g, &rules, &up, T0 + 300_000);
        assert_eq!(back, [("on".into(), vec!["a".into(), "b".into()])]);
        // A short blip: neither rule.
        assert!(look(&mut w, &mut g, &rules, &down, T0 + 400_000).is_empty());
        assert!(look(&mut w, &mut g, &rules, &up, T0 + 410_000).is_empty());
    }

    #[test]
    fn after_a_restart_long_gone_hosts_are_not_reported_again() {
        let rules = [rule("off", NotifyEvent::HostOffline, 5)];
        let (mut w, mut g) = (Watch::default(), Grouper::default());
        let now = T0 + 3_600_000;
        let mut gone = host("gone", false);
        gone.last_seen = Some(T0 / 1000);
        let mut restarted = host("restarted", false);
        restarted.last_seen = Some(now / 1000 - 2);
        let hosts = [gone, restarted];
        assert!(look(&mut w, &mut g, &rules, &hosts, now).is_empty());
        let fired = look(&mut w, &mut g, &rules, &hosts, now + 10_000);
        assert_eq!(fired, [("off".into(), vec!["restarted".into()])]);
    }

    #[test]
    fn scope_by_tag_or_host() {
        let mut web = rule("web", NotifyEvent::HostOffline, 0);
        web.scope.tags = vec!["web".into()];
        let mut named = rule("named", NotifyEvent::HostOffline, 0);
        named.scope.host_ids = vec!["db-1".into()];
        let rules = [web, named];
        let (mut w, mut g) = (Watch::default(), Grouper::default());
        let mut a = host("web-1", true);
        a.tags = vec!["web".into()];
        let hosts = [a.clone(), host("db-1", true), host("x", true)];
        look(&mut w, &mut g, &rules, &hosts, T0);
        let down: Vec<HostView> = hosts
            .iter()
            .map(|h| HostView {
                online: false,
                ..h.clone()
            })
            .collect();
        look(&mut w, &mut g, &rules, &down, T0 + 1_000);
        let fired = look(&mut w, &mut g, &rules, &down, T0 + 2_000);
        assert_eq!(
            fired,
            [
                ("named".into(), vec!["db-1".into()]),
                ("web".into(), vec!["web-1".into()])
            ]
        );
    }

    #[test]
    fn a_red_compartment_fires_after_after_s_and_again_after_it_cleared() {
        let rules = [rule("red", NotifyEvent::CompartmentRed, 10)];
        let (mut w, mut g) = (Watch::default(), Grouper::default());
        let mut red = host("a", true);
        red.red = vec!["system"];
        assert!(look(&mut w, &mut g, &rules, &[red.clone()], T0).is_empty());
        assert!(look(&mut w, &mut g, &rules, &[red.clone()], T0 + 10_000).is_empty());
        let fired = look(&mut w, &mut g, &rules, &[red.clone()], T0 + 11_000);
        assert_eq!(fired, [("red".into(), vec!["a".into()])]);
        assert!(look(&mut w, &mut g, &rules, &[red.clone()], T0 + 60_000).is_empty());
        assert!(look(&mut w, &mut g, &rules, &[host("a", true)], T0 + 70_000).is_empty());
        look(&mut w, &mut g, &rules, &[red.clone()], T0 + 80_000);
        assert_eq!(look(&mut w, &mut g, &rules, &[red], T0 + 91_000).len(), 1);
    }

    #[test]
    fn an_outdated_agent_is_reported_once_per_spell() {
        let rules = [rule("old", NotifyEvent::AgentOutdated, 0)];
        let (mut w, mut g) = (Watch::default(), Grouper::default());
        let mut old = host("a", true);
        old.outdated = true;
        assert_eq!(look(&mut w, &mut g, &rules, &[old.clone()], T0).len(), 1);
        assert!(look(&mut w, &mut g, &rules, &[old.clone()], T0 + 1_000).is_empty());
        look(&mut w, &mut g, &rules, &[host("a", true)], T0 + 2_000);
        assert_eq!(look(&mut w, &mut g, &rules, &[old], T0 + 3_000).len(), 1);
    }

    #[test]
    fn failed_commands_and_deploy_phases() {
        let rules = [
            rule("cmd", NotifyEvent::CommandFailed, 0),
            rule("start", NotifyEvent::DeployStarted, 0),
            rule("done", NotifyEvent::DeployFinished, 0),
            rule("fail", NotifyEvent::DeployFailed, 0),
        ];
        let (mut w, mut g) = (Watch::default(), Grouper::default());
        for (status, fires) in [
            (CommandStatus::Ok, false),
            (CommandStatus::Stopped, false),
            (CommandStatus::Error, true),
            (CommandStatus::Timeout, true),
            (CommandStatus::Lost, true),
            (CommandStatus::RolledBack, true),
        ] {
            let done = CommandComplete {
                host_id: "a".into(),
                command_id: "c".into(),
                status,
                exit_code: None,
                duration_ms: 1,
                result: None,
            };
            command(&rules, &mut g, &done, &[], T0);
            assert_eq!(
                g.due(T0 + GROUP_MS, FORGET_MS).len(),
                usize::from(fires),
                "{status:?}"
            );
        }
        let mut progress = DeployProgress {
            job_id: "j1".into(),
            pr_number: 7,
            phase: DeployPhase::Merging,
            hosts: BTreeMap::from([
                ("a".into(), DeployHostState::Pending),
                ("b".into(), DeployHostState::Pending),
            ]),
            message: String::new(),
            started_by: "admin".into(),
            active: true,
            previews: BTreeMap::new(),
        };
        let mut phases = Vec::new();
        for phase in [
            DeployPhase::Merging,
            DeployPhase::Pulling,
            DeployPhase::Switching,
            DeployPhase::Switching,
            DeployPhase::Failed,
            DeployPhase::Failed,
        ] {
            progress.phase = phase;
            deploy(&rules, &mut w, &mut g, &progress, T0);
            for (rule, grp) in g.due(T0 + GROUP_MS, FORGET_MS) {
                assert_eq!(grp.hosts.len(), 2);
                phases.push(rule);
            }
        }
        assert_eq!(phases, ["start", "fail"], "each once");
    }
}
