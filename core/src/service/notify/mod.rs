//! Notifications: targets and rules (admin only), matched against the fleet's events by
//! `watch`, queued in the database's outbox and sent by `deliver`.
//!
//! - Secrets never leave: a target's URL (its path and query often are the secret: Slack,
//!   Discord, ntfy topics) and its `token` or `password` are sealed with the server's key
//!   (`crate::secret`, the target id as associated data); a listing shows the URL's scheme
//!   and host only, and `has_secret`. An SMTP password may instead be a file
//!   (`password_file`), read at each send. Neither is ever logged.
//! - Delivery is at least once: a message is a row per target in `notify_outbox` until it
//!   is delivered or given up (after `GIVE_UP_S`), so a restart loses nothing; its id is the
//!   `idempotency_key` in the body, the same on every attempt.
//! - Nothing grows without bound: a target holds at most `MAX_QUEUED` messages (newer ones
//!   are dropped and logged), its log the last 100 attempts.

pub mod deliver;
pub mod plan;
pub mod watch;

use super::{audit, require_admin, OrInternal, Result};
use crate::secret::new_token;
use crate::storage::{is_unique_violation, NotifyRuleRow, NotifyTargetRow};
use crate::Core;
use common::{AppError, Viewer};
use protocol::api::{
    CreateNotifyRule, CreateNotifyTarget, NotifyDelivery, NotifyEvent, NotifyKind, NotifyMessage,
    NotifyRule, NotifyScope, NotifyTarget,
};
use protocol::Timestamp;
use serde_json::{Map, Value};

/// Messages queued for one target at most; beyond it new messages to it are dropped.
pub const MAX_QUEUED: i64 = 1000;
const MAX_NAME: usize = 64;
/// Settings that are secrets: sealed, never listed.
const SECRET_SETTINGS: [&str; 2] = ["token", "password"];

fn new_id() -> String {
    new_token()[..16].to_owned()
}

/// A URL a target may post to: http or https with a host. The error says what is wrong.
pub fn check_url(url: &str) -> Result<reqwest::Url> {
    let parsed = reqwest::Url::parse(url.trim())
        .map_err(|e| AppError::Invalid(format!("The URL is not valid ({e}).")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(AppError::Invalid(format!(
            "The URL must start with http:// or https://, not {}://.",
            parsed.scheme()
        )));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(AppError::Invalid("The URL has no host.".into()));
    }
    Ok(parsed)
}

/// What a listing shows of a URL: its scheme, host and port.
pub fn shown_url(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{}://{host}:{port}/…", url.scheme()),
        None => format!("{}://{host}/…", url.scheme()),
    }
}

fn invalid(msg: impl Into<String>) -> AppError {
    AppError::Invalid(msg.into())
}

/// The settings of a kind, checked: (settings without secrets, the secret if any).
pub fn check_settings(
    kind: NotifyKind,
    settings: Option<Value>,
) -> Result<(Map<String, Value>, Option<String>)> {
    let mut map = match settings {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(map)) => map,
        Some(_) => return Err(invalid("`settings` must be an object.")),
    };
    let allowed: &[&str] = match kind {
        NotifyKind::Webhook | NotifyKind::Slack | NotifyKind::Discord => &[],
        NotifyKind::Ntfy => &["token", "priority"],
        NotifyKind::Gotify => &["token", "priority"],
        NotifyKind::Email => &[
            "host",
            "port",
            "user",
            "password",
            "password_file",
            "from",
            "to",
            "tls",
        ],
    };
    if let Some(key) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(invalid(format!(
            "A {kind} target has no setting `{key}` (it takes: {}).",
            if allowed.is_empty() {
                "none".to_owned()
            } else {
                allowed.join(", ")
            }
        )));
    }
    for key in [
        "host",
        "user",
        "password",
        "password_file",
        "from",
        "token",
        "tls",
    ] {
        if map.get(key).is_some_and(|v| !v.is_string()) {
            return Err(invalid(format!("`settings.{key}` must be a string.")));
        }
    }
    let text = |map: &Map<String, Value>, key: &str| {
        map.get(key)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .filter(|s| !s.is_empty())
    };
    if kind == NotifyKind::Gotify && text(&map, "token").is_none() {
        return Err(invalid(
            "A gotify target needs `settings.token` (an application token).",
        ));
    }
    if let Some(p) = map.get("priority") {
        if p.as_u64().is_none_or(|p| p > 10) {
            return Err(invalid("`settings.priority` is a number from 0 to 10."));
        }
    }
    if kind == NotifyKind::Email {
        let host = text(&map, "host")
            .ok_or_else(|| invalid("An email target needs `settings.host` (the SMTP server)."))?;
        if host.contains(['/', ' ', ':']) {
            return Err(invalid(
                "`settings.host` is a host name, without scheme or port.",
            ));
        }
        if let Some(port) = map.get("port") {
            if !port.as_u64().is_some_and(|p| (1..=65535).contains(&p)) {
                return Err(invalid("`settings.port` is a number from 1 to 65535."));
            }
        }
        let from =
            text(&map, "from").ok_or_else(|| invalid("An email target needs `settings.from`."))?;
        from.parse::<lettre::message::Mailbox>()
            .map_err(|e| invalid(format!("`settings.from` is not an address ({e}).")))?;
        let to = match map.get("to") {
            Some(Value::String(one)) => vec![one.clone()],
            Some(Value::Array(all)) => all
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| invalid("`settings.to` is a list of addresses."))?,
            _ => {
                return Err(invalid(
                    "An email target needs `settings.to` (a list of addresses).",
                ))
            }
        };
        if to.is_empty() {
            return Err(invalid("`settings.to` names no address."));
        }
        for addr in &to {
            addr.parse::<lettre::message::Mailbox>().map_err(|e| {
                invalid(format!("`settings.to`: {addr:?} is not an address ({e})."))
            })?;
        }
        map.insert("to".into(), Value::from(to));
        let tls = text(&map, "tls").unwrap_or_else(|| "starttls".into());
        if !["starttls", "tls", "none"].contains(&tls.as_str()) {
            return Err(invalid(
                "`settings.tls` is `starttls` (the default), `tls` or `none`.",
            ));
        }
        if tls == "none" && !deliver::is_loopback(&host) {
            return Err(invalid(
                "`settings.tls: none` is for a mail server on this machine (localhost) only.",
            ));
        }
        if map.contains_key("password") && map.contains_key("password_file") {
            return Err(invalid(
                "Give `settings.password` or `settings.password_file`, not both.",
            ));
        }
        if let Some(path) = text(&map, "password_file") {
            if !std::path::Path::new(&path).is_absolute() {
                return Err(invalid("`settings.password_file` is an absolute path."));
            }
        }
    }
    let secret = SECRET_SETTINGS
        .iter()
        .find_map(|key| map.remove(*key))
        .and_then(|v| v.as_str().map(str::to_owned))
        .filter(|s| !s.is_empty());
    Ok((map, secret))
}

fn target_info(row: NotifyTargetRow) -> NotifyTarget {
    NotifyTarget {
        kind: NotifyKind::parse(&row.kind).unwrap_or(NotifyKind::Webhook),
        settings: serde_json::from_str(&row.settings).unwrap_or(Value::Object(Map::new())),
        has_secret: row.secret_sealed.is_some(),
        url: row.url_shown,
        id: row.id,
        name: row.name,
        created_at: Timestamp(row.created_at),
    }
}

fn check_name(name: &str) -> Result<()> {
    let len = name.chars().count();
    if len == 0 || len > MAX_NAME || name.chars().any(char::is_control) || name.trim() != name {
        return Err(invalid(format!(
            "A name has 1 to {MAX_NAME} printable characters, without spaces at either end."
        )));
    }
    Ok(())
}

pub async fn create_target(
    core: &Core,
    viewer: &Viewer,
    req: CreateNotifyTarget,
) -> Result<NotifyTarget> {
    require_admin(viewer)?;
    let name = req.name.clone();
    let result = insert_target(core, req).await;
    audit::record(core, viewer, "notify.target.create", Some(&name), result).await
}

async fn insert_target(core: &Core, req: CreateNotifyTarget) -> Result<NotifyTarget> {
    check_name(&req.name)?;
    let url = match (req.kind, req.url.as_deref()) {
        (NotifyKind::Email, None) => None,
        (NotifyKind::Email, Some(_)) => {
            return Err(invalid(
                "An email target has no `url`; its server is `settings.host`.",
            ))
        }
        (kind, None) => return Err(invalid(format!("A {kind} target needs a `url`."))),
        (_, Some(url)) => Some(check_url(url)?),
    };
    let (settings, secret) = check_settings(req.kind, req.settings)?;
    let id = new_id();
    let row = NotifyTargetRow {
        url_sealed: url.as_ref().map(|u| core.secret_key.seal(&id, u.as_str())),
        url_shown: url.as_ref().map(shown_url),
        settings: Value::Object(settings).to_string(),
        secret_sealed: secret.map(|s| core.secret_key.seal(&id, &s)),
        id,
        name: req.name,
        kind: req.kind.as_str().to_owned(),
        created_at: Timestamp::now().secs(),
    };
    match core.db.insert_notify_target(&row).await {
        Err(e) if is_unique_violation(&e) => Err(AppError::conflict(
            "exists",
            format!("A target named {:?} exists.", row.name),
        )),
        r => r.or_internal("saving a notification target"),
    }?;
    Ok(target_info(row))
}

pub async fn list_targets(core: &Core, viewer: &Viewer) -> Result<Vec<NotifyTarget>> {
    require_admin(viewer)?;
    let rows = core
        .db
        .notify_targets()
        .await
        .or_internal("listing notification targets")?;
    Ok(rows.into_iter().map(target_info).collect())
}

pub async fn delete_target(core: &Core, viewer: &Viewer, id: &str) -> Result<()> {
    require_admin(viewer)?;
    let result = match core.db.delete_notify_target(id).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(AppError::NotFound(format!("notification target {id}"))),
        Err(e) => Err(e).or_internal("deleting a notification target"),
    };
    audit::record(core, viewer, "notify.target.delete", Some(id), result).await
}

/// Queue a test message for one target ("send test"); its delivery shows in the log.
pub async fn test_target(core: &Core, viewer: &Viewer, id: &str) -> Result<String> {
    require_admin(viewer)?;
    let result = async {
        core.db
            .notify_target(id)
            .await
            .or_internal("loading a notification target")?
            .ok_or_else(|| AppError::NotFound(format!("notification target {id}")))?;
        let message = NotifyMessage {
            event: NotifyEvent::Test,
            idempotency_key: new_token(),
            at: Timestamp::now(),
            hosts: Vec::new(),
            summary: format!("Test message from nixdeck, sent by {}", viewer.username),
            details: Value::Object(Map::new()),
        };
        enqueue(core, &message, &[id.to_owned()], None).await?;
        Ok(message.idempotency_key)
    }
    .await;
    audit::record(core, viewer, "notify.target.test", Some(id), result).await
}

pub async fn deliveries(core: &Core, viewer: &Viewer, id: &str) -> Result<Vec<NotifyDelivery>> {
    require_admin(viewer)?;
    core.db
        .notify_target(id)
        .await
        .or_internal("loading a notification target")?
        .ok_or_else(|| AppError::NotFound(format!("notification target {id}")))?;
    let rows = core
        .db
        .notify_deliveries(id)
        .await
        .or_internal("reading a delivery log")?;
    Ok(rows
        .into_iter()
        .map(|r| NotifyDelivery {
            at: Timestamp(r.at_ms.div_euclid(1000)),
            idempotency_key: r.message_id,
            event: NotifyEvent::parse(&r.event).unwrap_or(NotifyEvent::Test),
            attempt: u32::try_from(r.attempt).unwrap_or(u32::MAX),
            status: r.status,
            error: r.error,
        })
        .collect())
}

/// Queue `message` for `targets`, due at `due_ms` (None: now). A target with
/// `MAX_QUEUED` messages waiting gets none (logged in its delivery log).
pub async fn enqueue(
    core: &Core,
    message: &NotifyMessage,
    targets: &[String],
    due_ms: Option<i64>,
) -> Result<()> {
    let now_ms = deliver::now_ms();
    let mut open = Vec::new();
    for target in targets {
        let queued = core
            .db
            .notify_queued(target)
            .await
            .or_internal("counting queued notifications")?;
        if queued >= MAX_QUEUED {
            tracing::warn!(target, "notification outbox full; message dropped");
            let _ = core
                .db
                .log_notify_delivery(
                    &new_id(),
                    target,
                    &message.idempotency_key,
                    message.event.as_str(),
                    0,
                    "dropped",
                    Some(&format!(
                        "{MAX_QUEUED} messages wait for this target already"
                    )),
                    now_ms,
                )
                .await;
        } else {
            open.push(target.clone());
        }
    }
    let body = serde_json::to_string(message).or_internal("serialising a notification")?;
    core.db
        .enqueue_notify(
            &message.idempotency_key,
            &body,
            &open,
            Timestamp::now().secs(),
            due_ms.unwrap_or(now_ms),
        )
        .await
        .or_internal("queueing a notification")
}

pub fn rule_info(row: NotifyRuleRow) -> NotifyRule {
    NotifyRule {
        event: NotifyEvent::parse(&row.event).unwrap_or(NotifyEvent::Test),
        after_s: u32::try_from(row.after_s).unwrap_or(0),
        scope: serde_json::from_str(&row.scope).unwrap_or_default(),
        target_ids: row
            .target_ids
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        cooldown_s: u32::try_from(row.cooldown_s).unwrap_or(0),
        quiet: row
            .quiet_from
            .zip(row.quiet_to)
            .map(|(from, to)| protocol::api::QuietHours { from, to }),
        id: row.id,
        created_at: Timestamp(row.created_at),
    }
}

/// The longest `after_s` and `cooldown_s`: a week.
const MAX_DELAY_S: u32 = 7 * 86_400;

pub async fn create_rule(
    core: &Core,
    viewer: &Viewer,
    req: CreateNotifyRule,
) -> Result<NotifyRule> {
    require_admin(viewer)?;
    let event = req.event;
    let result = insert_rule(core, req).await;
    audit::record(
        core,
        viewer,
        "notify.rule.create",
        Some(event.as_str()),
        result,
    )
    .await
}

async fn insert_rule(core: &Core, req: CreateNotifyRule) -> Result<NotifyRule> {
    if req.event == NotifyEvent::Test {
        return Err(invalid("`test` is not an event a rule can wait for."));
    }
    if req.target_ids.is_empty() {
        return Err(invalid("A rule needs at least one target in `target_ids`."));
    }
    let after_s = req.after_s.unwrap_or(match req.event {
        NotifyEvent::HostOnline => 60,
        _ => 0,
    });
    let cooldown_s = req.cooldown_s.unwrap_or(0);
    if after_s > MAX_DELAY_S || cooldown_s > MAX_DELAY_S {
        return Err(invalid(format!(
            "`after_s` and `cooldown_s` are at most {MAX_DELAY_S} (a week)."
        )));
    }
    if let Some(quiet) = &req.quiet {
        plan::Quiet::parse(quiet).map_err(invalid)?;
    }
    let scope = req.scope.unwrap_or_default();
    let mut targets = req.target_ids.clone();
    targets.sort();
    targets.dedup();
    for id in &targets {
        if core
            .db
            .notify_target(id)
            .await
            .or_internal("loading a notification target")?
            .is_none()
        {
            return Err(invalid(format!("There is no notification target {id:?}.")));
        }
    }
    let row = NotifyRuleRow {
        id: new_id(),
        event: req.event.as_str().to_owned(),
        after_s: after_s.into(),
        scope: serde_json::to_string(&scope).or_internal("serialising a scope")?,
        cooldown_s: cooldown_s.into(),
        quiet_from: req.quiet.as_ref().map(|q| q.from.clone()),
        quiet_to: req.quiet.as_ref().map(|q| q.to.clone()),
        created_at: Timestamp::now().secs(),
        target_ids: Some(targets.join(",")),
    };
    core.db
        .insert_notify_rule(&row, &targets)
        .await
        .or_internal("saving a notification rule")?;
    Ok(rule_info(row))
}

pub async fn list_rules(core: &Core, viewer: &Viewer) -> Result<Vec<NotifyRule>> {
    require_admin(viewer)?;
    let rows = core
        .db
        .notify_rules()
        .await
        .or_internal("listing notification rules")?;
    Ok(rows.into_iter().map(rule_info).collect())
}

pub async fn delete_rule(core: &Core, viewer: &Viewer, id: &str) -> Result<()> {
    require_admin(viewer)?;
    let result = match core.db.delete_notify_rule(id).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(AppError::NotFound(format!("notification rule {id}"))),
        Err(e) => Err(e).or_internal("deleting a notification rule"),
    };
    audit::record(core, viewer, "notify.rule.delete", Some(id), result).await
}

/// Whether `scope` takes in a host with this id and these tags.
pub fn in_scope(scope: &NotifyScope, host_id: &str, tags: &[String]) -> bool {
    (scope.tags.is_empty() && scope.host_ids.is_empty())
        || scope.host_ids.iter().any(|h| h == host_id)
        || scope.tags.iter().any(|t| tags.contains(t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::testing::db_test;
    use protocol::api::Role;

    fn admin() -> Viewer {
        Viewer {
            username: "admin".into(),
            role: Role::Admin,
            csrf_token: String::new(),
            ip: None,
            session_hash: String::new(),
            authenticated_at: 0,
            api_token: None,
        }
    }

    fn message(key: &str) -> NotifyMessage {
        NotifyMessage {
            event: NotifyEvent::Test,
            idempotency_key: key.into(),
            at: Timestamp::now(),
            hosts: vec![],
            summary: key.into(),
            details: Value::Null,
        }
    }

    db_test! {
        #[tokio::test]
        async fn the_outbox_goes_in_order_holds_quiet_messages_and_keeps_100_attempts(backend) {
            let dir = tempfile::tempdir().unwrap();
            let core = crate::service::test_core(&backend, dir.path(), &[], &["nixdeck"]).await;
            let target = create_target(
                &core,
                &admin(),
                CreateNotifyTarget {
                    name: "hook".into(),
                    kind: NotifyKind::Webhook,
                    url: Some("https://hooks.example/T0/secret-path".into()),
                    settings: None,
                },
            )
            .await
            .unwrap();
            assert_eq!(target.url.as_deref(), Some("https://hooks.example/…"));
            let ids = [target.id.clone()];
            let now = deliver::now_ms();
            for key in ["m1", "m2", "m3"] {
                enqueue(&core, &message(key), &ids, None).await.unwrap();
            }
            // The same key again is the same message.
            enqueue(&core, &message("m1"), &ids, None).await.unwrap();
            assert_eq!(core.db.notify_queued(&target.id).await.unwrap(), 3);
            let due = core.db.notify_due(now + 1_000).await.unwrap();
            assert_eq!(due.len(), 1, "one at a time per target");
            assert_eq!(due[0].message_id, "m1");
            core.db.notify_done("m1", &target.id).await.unwrap();
            assert_eq!(
                core.db.notify_due(now + 1_000).await.unwrap()[0].message_id,
                "m2"
            );
            // A message held (quiet hours) holds the ones after it too.
            core.db
                .notify_retry_at("m2", &target.id, 1, now + 3_600_000)
                .await
                .unwrap();
            assert!(core.db.notify_due(now + 1_000).await.unwrap().is_empty());

            for i in 0..120 {
                core.db
                    .log_notify_delivery(
                        &new_id(),
                        &target.id,
                        "m2",
                        "test",
                        i,
                        "retrying",
                        Some("e"),
                        now + i,
                    )
                    .await
                    .unwrap();
            }
            let log = deliveries(&core, &admin(), &target.id).await.unwrap();
            assert_eq!(log.len(), 100);
            assert_eq!(log[0].attempt, 119, "newest first");

            // The URL is sealed at rest.
            let row = core.db.notify_target(&target.id).await.unwrap().unwrap();
            assert!(!row.url_sealed.unwrap().contains("secret-path"));
            // Deleting the target takes its queue and log.
            delete_target(&core, &admin(), &target.id).await.unwrap();
            assert_eq!(core.db.notify_queued(&target.id).await.unwrap(), 0);
        }
    }
}
