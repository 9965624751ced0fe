//! The audit log (the `audit` table): who did what, when, from where and how it ended;
//! written once per action, read newest first with exact-match filters, and purged by age.

use super::{Db, DbResult};
use protocol::api::AuditEntry;
use protocol::Timestamp;

/// Filters for reading the audit log.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub target: Option<String>,
    pub limit: u32,
}

/// An `audit` row's columns.
#[derive(sqlx::FromRow)]
struct AuditColumns {
    at: i64,
    actor: String,
    ip: Option<String>,
    action: String,
    target: Option<String>,
    result: String,
    detail: Option<String>,
    token: Option<String>,
}

impl From<AuditColumns> for AuditEntry {
    fn from(r: AuditColumns) -> Self {
        AuditEntry {
            at: Timestamp(r.at),
            actor: r.actor,
            ip: r.ip,
            action: r.action,
            target: r.target,
            result: r.result,
            detail: r.detail,
            token: r.token,
        }
    }
}

impl Db {
    pub async fn insert_audit(&self, e: &AuditEntry) -> DbResult<()> {
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO audit (at, actor, ip, action, target, result, detail, token) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(e.at.secs())
            .bind(&e.actor)
            .bind(&e.ip)
            .bind(&e.action)
            .bind(&e.target)
            .bind(&e.result)
            .bind(&e.detail)
            .bind(&e.token)
            .execute(pool)
            .await
            .map(|_| ())
        })
    }

    /// Newest first; each filter is an exact match when given.
    pub async fn audit(&self, f: &AuditFilter) -> DbResult<Vec<AuditEntry>> {
        on_pool!(self, pool => {
            let rows: Vec<AuditColumns> = sqlx::query_as(
                "SELECT at, actor, ip, action, target, result, detail, token FROM audit
                 WHERE ($1 IS NULL OR actor = $1) AND ($2 IS NULL OR action = $2) AND ($3 IS NULL OR target = $3)
                 ORDER BY at DESC, id DESC LIMIT $4",
            )
            .bind(&f.actor)
            .bind(&f.action)
            .bind(&f.target)
            .bind(i64::from(f.limit))
            .fetch_all(pool)
            .await?;
            Ok(rows.into_iter().map(AuditEntry::from).collect())
        })
    }

    pub async fn purge_audit(&self, before: Timestamp) -> DbResult<u64> {
        on_pool!(self, pool => {
            sqlx::query("DELETE FROM audit WHERE at < $1")
                .bind(before.secs())
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })
    }
}
