//! The notifier: watches the hub without blocking it and turns what happens into queued
//! messages. Host states (offline, compartments red, agent outdated) are read from the hub
//! once a second and compared with the last look, so a missed event cannot lose a
//! transition; command ends come from the hub's typed completions and deploy ends from its
//! event stream. Matches are grouped per rule (`plan::Grouper`), then queued for the
//! rule's targets; in quiet hours they are queued due at the quiet hours' end.
//!
//! At start every host is offline until its agent reconnects: a host last seen in the
//! last ten minutes counts as offline since then (a dashboard restart), one seen earlier
//! as already reported, so a restart does not report long-gone hosts again.

use super::plan::{Grouper, Quiet};
use super::{enqueue, in_scope, rule_info};
use crate::Core;
use protocol::api::{NotifyEvent, NotifyMessage, NotifyRule};
use protocol::messages::{DeployPhase, DeployProgress};
use protocol::{BrowserEvent, CheckStatus, CommandStatus, Host, Timestamp};
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

const TICK: Duration = Duration::from_secs(1);
/// Cooldowns are forgotten after the longest one allowed.
const FORGET_MS: i64 = 7 * 86_400 * 1000;
/// A host offline at start and last seen this recently is watched as offline since then.
const RECENT_S: i64 = 600;

#[derive(Default)]
struct Watch {
    /// Offline hosts: since when (ms).
    offline: HashMap<String, i64>,
    /// Hosts with a red compartment: since when (ms).
    red: HashMap<String, i64>,
    outdated: HashSet<String>,
    /// (rule, host) already reported for the current offline or red spell.
    fired: HashSet<(String, String)>,
    /// Deploy jobs reported, by job and phase.
    deploys: HashSet<(String, DeployPhase)>,
    started: bool,
}

fn is_red(host: &Host) -> bool {
    host.update_status
        .checks()
        .iter()
        .any(|c| c.status == CheckStatus::Error)
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
                    match core.db.notify_rules().await {
                        Ok(rows) => rules = rows.into_iter().map(rule_info).collect(),
                        Err(e) => tracing::warn!("notifications: reading rules: {e}"),
                    }
                    let now = super::deliver::now_ms();
                    scan(&core, &rules, &mut watch, &mut grouper, now);
                    for (rule_id, group) in grouper.due(now, FORGET_MS) {
                        if let Some(rule) = rules.iter().find(|r| r.id == rule_id) {
                            flush(&core, rule, group, now).await;
                        }
                    }
                }
                done = completions.recv() => match done {
                    Ok(done) if matches!(done.status, CommandStatus::Error | CommandStatus::Timeout | CommandStatus::Lost | CommandStatus::RolledBack) => {
                        let tags = core.hub.host(&done.host_id).map(|h| h.tags).unwrap_or_default();
                        let now = super::deliver::now_ms();
                        for rule in rules.iter().filter(|r| r.event == NotifyEvent::CommandFailed && in_scope(&r.scope, &done.host_id, &tags)) {
                            grouper.offer(&rule.id, &done.host_id, std::slice::from_ref(&done.host_id),
                                json!({"host_id": done.host_id, "command_id": done.command_id, "status": done.status, "exit_code": done.exit_code}),
                                i64::from(rule.cooldown_s) * 1000, now);
                        }
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(n)) => tracing::warn!("notifications: missed {n} command ends"),
                    Err(RecvError::Closed) => return,
                },
                text = events.recv() => match text {
                    Ok(text) if text.as_str().starts_with(r#"{"type":"deploy_progress""#) => {
                        if let Ok(BrowserEvent::DeployProgress(p)) = serde_json::from_str(text.as_str()) {
                            deploy(&rules, &mut watch, &mut grouper, p, super::deliver::now_ms());
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

fn deploy(
    rules: &[NotifyRule],
    watch: &mut Watch,
    grouper: &mut Grouper,
    p: DeployProgress,
    now: i64,
) {
    let event = match p.phase {
        DeployPhase::Done => NotifyEvent::DeployFinished,
        DeployPhase::Failed => NotifyEvent::DeployFailed,
        _ => return,
    };
    if !watch.deploys.insert((p.job_id.clone(), p.phase)) {
        return;
    }
    if watch.deploys.len() > 1000 {
        watch.deploys.clear();
    }
    let hosts: Vec<String> = p.hosts.keys().cloned().collect();
    for rule in rules.iter().filter(|r| r.event == event) {
        grouper.offer(
            &rule.id,
            &p.job_id,
            &hosts,
            json!({"job_id": p.job_id, "pr_number": p.pr_number, "message": p.message}),
            i64::from(rule.cooldown_s) * 1000,
            now,
        );
    }
}

/// Compare the hub's hosts with the last look and offer what rules match.
fn scan(core: &Core, rules: &[NotifyRule], watch: &mut Watch, grouper: &mut Grouper, now: i64) {
    let hosts: HashMap<String, Host> = core
        .hub
        .snapshot()
        .hosts
        .into_iter()
        .map(|h| (h.id.clone(), h))
        .collect();
    let first = !watch.started;
    watch.started = true;
    for (id, host) in &hosts {
        // Offline and back.
        if host.online {
            if let Some(since) = watch.offline.remove(id) {
                for rule in rules.iter().filter(|r| {
                    r.event == NotifyEvent::HostOnline && in_scope(&r.scope, id, &host.tags)
                }) {
                    if now - since >= i64::from(rule.after_s) * 1000 {
                        grouper.offer(
                            &rule.id,
                            id,
                            std::slice::from_ref(id),
                            json!({"host_id": id, "offline_s": (now - since) / 1000}),
                            i64::from(rule.cooldown_s) * 1000,
                            now,
                        );
                    }
                }
                watch.fired.retain(|(_, h)| h != id);
            }
        } else if !watch.offline.contains_key(id) {
            let seen = host.last_seen.map(|t| t.secs() * 1000);
            let since = match seen {
                Some(seen) if first && now - seen <= RECENT_S * 1000 => seen,
                _ if first => {
                    for rule in rules.iter().filter(|r| r.event == NotifyEvent::HostOffline) {
                        watch.fired.insert((rule.id.clone(), id.clone()));
                    }
                    now
                }
                _ => now,
            };
            watch.offline.insert(id.clone(), since);
        }
        if let Some(since) = watch.offline.get(id).copied() {
            for rule in rules.iter().filter(|r| {
                r.event == NotifyEvent::HostOffline && in_scope(&r.scope, id, &host.tags)
            }) {
                if now - since > i64::from(rule.after_s) * 1000
                    && watch.fired.insert((rule.id.clone(), id.clone()))
                {
                    grouper.offer(
                        &rule.id,
                        id,
                        std::slice::from_ref(id),
                        json!({"host_id": id, "last_seen": host.last_seen}),
                        i64::from(rule.cooldown_s) * 1000,
                        now,
                    );
                }
            }
        }
        // A red compartment.
        if is_red(host) {
            let since = *watch.red.entry(id.clone()).or_insert(now);
            for rule in rules.iter().filter(|r| {
                r.event == NotifyEvent::CompartmentRed && in_scope(&r.scope, id, &host.tags)
            }) {
                if now - since > i64::from(rule.after_s) * 1000
                    && watch.fired.insert((rule.id.clone(), format!("red:{id}")))
                {
                    let red: Vec<&str> = protocol::UpdateStatus::NAMES
                        .iter()
                        .zip(host.update_status.checks())
                        .filter(|(_, c)| c.status == CheckStatus::Error)
                        .map(|(n, _)| *n)
                        .collect();
                    grouper.offer(
                        &rule.id,
                        id,
                        std::slice::from_ref(id),
                        json!({"host_id": id, "compartments": red}),
                        i64::from(rule.cooldown_s) * 1000,
                        now,
                    );
                }
            }
        } else if watch.red.remove(id).is_some() {
            let key = format!("red:{id}");
            watch.fired.retain(|(_, h)| *h != key);
        }
        // An outdated agent (reported once per spell).
        if host.agent_outdated {
            if watch.outdated.insert(id.clone()) {
                for rule in rules.iter().filter(|r| {
                    r.event == NotifyEvent::AgentOutdated && in_scope(&r.scope, id, &host.tags)
                }) {
                    grouper.offer(
                        &rule.id,
                        id,
                        std::slice::from_ref(id),
                        json!({"host_id": id, "agent_version": host.agent_version}),
                        i64::from(rule.cooldown_s) * 1000,
                        now,
                    );
                }
            }
        } else {
            watch.outdated.remove(id);
        }
    }
    // Removed hosts are forgotten.
    watch.offline.retain(|id, _| hosts.contains_key(id));
    watch.red.retain(|id, _| hosts.contains_key(id));
    watch.outdated.retain(|id| hosts.contains_key(id));
    watch
        .fired
        .retain(|(_, h)| hosts.contains_key(h.trim_start_matches("red:")));
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
