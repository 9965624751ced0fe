//! The audit log: every login, command, stop, unlock, host and token change and user
//! change, with who, when, from where, what and the result. Writing it never fails the
//! action it records (a failure to write is logged).

use super::{require_admin, OrInternal, Result};
use crate::storage::{AuditFilter, Db};
use crate::Core;
use common::Viewer;
use protocol::api::AuditEntry;
use protocol::Timestamp;
use std::collections::HashMap;

/// `ok` or the error's code.
pub fn outcome<T>(result: &Result<T>) -> String {
    match result {
        Ok(_) => "ok".to_owned(),
        Err(e) => e.code().to_owned(),
    }
}

pub async fn write(
    db: &Db,
    actor: &str,
    ip: Option<&str>,
    action: &str,
    target: Option<&str>,
    result: String,
    detail: Option<String>,
) {
    write_entry(
        db,
        AuditEntry {
            at: Timestamp::now(),
            actor: actor.to_owned(),
            ip: ip.map(str::to_owned),
            action: action.to_owned(),
            target: target.map(str::to_owned),
            result,
            detail,
            token: None,
        },
    )
    .await
}

async fn write_entry(db: &Db, entry: AuditEntry) {
    if let Err(e) = db.insert_audit(&entry).await {
        tracing::error!(
            action = entry.action,
            actor = entry.actor,
            "writing the audit log: {e}"
        );
    }
}

/// Record what `viewer` did and how it ended, and hand the result on. A request that came
/// with an API token names the token too.
pub async fn record<T>(
    core: &Core,
    viewer: &Viewer,
    action: &str,
    target: Option<&str>,
    result: Result<T>,
) -> Result<T> {
    let detail = result.as_ref().err().map(|e| e.to_string());
    write_entry(
        &core.db,
        AuditEntry {
            at: Timestamp::now(),
            actor: viewer.username.clone(),
            ip: viewer.ip.clone(),
            action: action.to_owned(),
            target: target.map(str::to_owned),
            result: outcome(&result),
            detail,
            token: viewer.api_token.clone(),
        },
    )
    .await;
    result
}

/// `GET /api/audit`: admins only.
pub async fn read(
    core: &Core,
    viewer: &Viewer,
    mut filter: AuditFilter,
) -> Result<Vec<AuditEntry>> {
    require_admin(viewer)?;
    filter.limit = filter.limit.clamp(1, 1000);
    core.db
        .audit(&filter)
        .await
        .or_internal("reading the audit log")
}

/// Refused attempts (logins rate-limited, without capacity or for impossible names; agent
/// connections with a wrong token), counted in memory and written as one row per (action,
/// name, address, reason) and flush. A flood is turned away without a synchronous database
/// write per request; the log still says who was refused how often.
#[derive(Default)]
pub struct Refusals(std::sync::Mutex<HashMap<RefusalKey, u64>>);

/// What was refused (the audit action, e.g. `login.refused`), for whom (a name, or `-`),
/// from where, and why.
type RefusalKey = (&'static str, String, Option<String>, String);

/// Distinct (name, address, reason) keys kept between flushes; past it they share one.
const REFUSAL_KEYS: usize = 1024;

impl Refusals {
    /// `name` None: not a possible username, never stored as given.
    pub fn note(&self, action: &'static str, name: Option<&str>, ip: Option<&str>, reason: &str) {
        let mut tally = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut key = (
            action,
            name.unwrap_or("-").to_owned(),
            ip.map(str::to_owned),
            reason.to_owned(),
        );
        if tally.len() >= REFUSAL_KEYS && !tally.contains_key(&key) {
            key = (action, "*".to_owned(), None, reason.to_owned());
        }
        *tally.entry(key).or_default() += 1;
    }

    fn take(&self) -> HashMap<RefusalKey, u64> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Write the tallied refusals (from the background job, and at shutdown).
pub async fn flush_refusals(core: &Core) {
    for ((action, name, ip, reason), count) in core.refusals.take() {
        write(
            &core.db,
            &name,
            ip.as_deref(),
            action,
            None,
            reason,
            Some(format!("{count} attempt(s) refused")),
        )
        .await;
    }
}

/// Retention of the audit log.
pub async fn purge_old(core: &Core) {
    let before =
        Timestamp(Timestamp::now().secs() - i64::from(core.config.audit_retention_days) * 86_400);
    if let Err(e) = core.db.purge_audit(before).await {
        tracing::warn!("audit retention: {e}");
    }
}
