//! Notifications (`notify_*` tables): targets (secrets sealed by the service before they
//! get here), rules with their targets, the outbox and the delivery log.

use super::{Db, DbResult};

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct NotifyTargetRow {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub url_sealed: Option<String>,
    pub url_shown: Option<String>,
    pub settings: String,
    pub secret_sealed: Option<String>,
    pub created_at: i64,
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct NotifyRuleRow {
    pub id: String,
    pub event: String,
    pub after_s: i64,
    pub scope: String,
    pub cooldown_s: i64,
    pub quiet_from: Option<String>,
    pub quiet_to: Option<String>,
    pub created_at: i64,
    /// Comma-separated (ids are hex).
    #[sqlx(default)]
    pub target_ids: Option<String>,
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct OutboxRow {
    pub message_id: String,
    pub target_id: String,
    pub seq: i64,
    pub body: String,
    pub attempts: i64,
    pub created_at: i64,
    pub next_attempt_ms: i64,
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct DeliveryRow {
    pub message_id: String,
    pub event: String,
    pub attempt: i64,
    pub status: String,
    pub error: Option<String>,
    pub at_ms: i64,
}

/// The delivery log keeps this many attempts per target.
pub const DELIVERIES_KEPT: i64 = 100;

impl Db {
    pub async fn insert_notify_target(&self, row: &NotifyTargetRow) -> DbResult<()> {
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO notify_targets (id, name, kind, url_sealed, url_shown, settings, secret_sealed, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(&row.id)
            .bind(&row.name)
            .bind(&row.kind)
            .bind(&row.url_sealed)
            .bind(&row.url_shown)
            .bind(&row.settings)
            .bind(&row.secret_sealed)
            .bind(row.created_at)
            .execute(pool)
            .await
            .map(|_| ())
        })
    }

    pub async fn notify_targets(&self) -> DbResult<Vec<NotifyTargetRow>> {
        on_pool!(self, pool => {
            sqlx::query_as("SELECT * FROM notify_targets ORDER BY created_at, id")
                .fetch_all(pool)
                .await
        })
    }

    pub async fn notify_target(&self, id: &str) -> DbResult<Option<NotifyTargetRow>> {
        on_pool!(self, pool => {
            sqlx::query_as("SELECT * FROM notify_targets WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await
        })
    }

    /// Its rules' links, queued messages and log go with it.
    pub async fn delete_notify_target(&self, id: &str) -> DbResult<bool> {
        on_pool!(self, pool => {
            sqlx::query("DELETE FROM notify_targets WHERE id = $1")
                .bind(id)
                .execute(pool)
                .await
                .map(|r| r.rows_affected() == 1)
        })
    }

    /// A rule and its targets, in one transaction.
    pub async fn insert_notify_rule(
        &self,
        row: &NotifyRuleRow,
        targets: &[String],
    ) -> DbResult<()> {
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO notify_rules (id, event, after_s, scope, cooldown_s, quiet_from, quiet_to, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(&row.id)
            .bind(&row.event)
            .bind(row.after_s)
            .bind(&row.scope)
            .bind(row.cooldown_s)
            .bind(&row.quiet_from)
            .bind(&row.quiet_to)
            .bind(row.created_at)
            .execute(&mut *tx)
            .await?;
            for target in targets {
                sqlx::query("INSERT INTO notify_rule_targets (rule_id, target_id) VALUES ($1, $2)")
                    .bind(&row.id)
                    .bind(target)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await
        })
    }

    /// Every rule with its targets (a rule whose targets are all deleted has none).
    pub async fn notify_rules(&self) -> DbResult<Vec<NotifyRuleRow>> {
        on_pool!(self, pool => {
            let mut rules: Vec<NotifyRuleRow> =
                sqlx::query_as("SELECT * FROM notify_rules ORDER BY created_at, id")
                    .fetch_all(pool)
                    .await?;
            let links: Vec<(String, String)> = sqlx::query_as(
                "SELECT rule_id, target_id FROM notify_rule_targets ORDER BY rule_id, target_id",
            )
            .fetch_all(pool)
            .await?;
            for rule in &mut rules {
                let ids: Vec<&str> = links
                    .iter()
                    .filter(|(r, _)| *r == rule.id)
                    .map(|(_, t)| t.as_str())
                    .collect();
                rule.target_ids = Some(ids.join(","));
            }
            Ok(rules)
        })
    }

    pub async fn delete_notify_rule(&self, id: &str) -> DbResult<bool> {
        on_pool!(self, pool => {
            sqlx::query("DELETE FROM notify_rules WHERE id = $1")
                .bind(id)
                .execute(pool)
                .await
                .map(|r| r.rows_affected() == 1)
        })
    }

    /// Queue one message for some targets, in one transaction; each row's `seq` follows
    /// every row queued before it, with several writers too (`Backend::outbox_lock`).
    pub async fn enqueue_notify(
        &self,
        message_id: &str,
        body: &str,
        targets: &[String],
        now: i64,
        due_ms: i64,
    ) -> DbResult<()> {
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            if let Some(lock) = self.backend().outbox_lock() {
                sqlx::query(lock).execute(&mut *tx).await?;
            }
            for target in targets {
                // `WHERE TRUE`: without a WHERE, SQLite would read `ON` as a join's.
                sqlx::query(
                    "INSERT INTO notify_outbox (message_id, target_id, seq, body, attempts, created_at, next_attempt_ms)
                     SELECT $1, $2, COALESCE(MAX(seq), 0) + 1, $3, 0, $4, $5 FROM notify_outbox WHERE TRUE
                     ON CONFLICT (message_id, target_id) DO NOTHING",
                )
                .bind(message_id)
                .bind(target)
                .bind(body)
                .bind(now)
                .bind(due_ms)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await
        })
    }

    /// Messages queued for a target.
    pub async fn notify_queued(&self, target_id: &str) -> DbResult<i64> {
        on_pool!(self, pool => {
            sqlx::query_scalar("SELECT COUNT(*) FROM notify_outbox WHERE target_id = $1")
                .bind(target_id)
                .fetch_one(pool)
                .await
        })
    }

    /// The first queued message of every target whose turn has come (`next_attempt_ms`
    /// reached): one per target, so a target's messages go out in order.
    pub async fn notify_due(&self, now_ms: i64) -> DbResult<Vec<OutboxRow>> {
        on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT o.* FROM notify_outbox o
                 WHERE o.seq = (SELECT MIN(seq) FROM notify_outbox f WHERE f.target_id = o.target_id)
                   AND o.next_attempt_ms <= $1
                 ORDER BY o.seq",
            )
            .bind(now_ms)
            .fetch_all(pool)
            .await
        })
    }

    /// The earliest time any target's first message is due.
    pub async fn notify_next_due(&self) -> DbResult<Option<i64>> {
        on_pool!(self, pool => {
            sqlx::query_scalar(
                "SELECT MIN(o.next_attempt_ms) FROM notify_outbox o
                 WHERE o.seq = (SELECT MIN(seq) FROM notify_outbox f WHERE f.target_id = o.target_id)",
            )
            .fetch_one(pool)
            .await
        })
    }

    pub async fn notify_done(&self, message_id: &str, target_id: &str) -> DbResult<()> {
        on_pool!(self, pool => {
            sqlx::query("DELETE FROM notify_outbox WHERE message_id = $1 AND target_id = $2")
                .bind(message_id)
                .bind(target_id)
                .execute(pool)
                .await
                .map(|_| ())
        })
    }

    pub async fn notify_retry_at(
        &self,
        message_id: &str,
        target_id: &str,
        attempts: i64,
        next_ms: i64,
    ) -> DbResult<()> {
        on_pool!(self, pool => {
            sqlx::query(
                "UPDATE notify_outbox SET attempts = $3, next_attempt_ms = $4
                 WHERE message_id = $1 AND target_id = $2",
            )
            .bind(message_id)
            .bind(target_id)
            .bind(attempts)
            .bind(next_ms)
            .execute(pool)
            .await
            .map(|_| ())
        })
    }

    /// Log one attempt and keep the last `DELIVERIES_KEPT` of the target.
    #[allow(clippy::too_many_arguments)]
    pub async fn log_notify_delivery(
        &self,
        id: &str,
        target_id: &str,
        message_id: &str,
        event: &str,
        attempt: i64,
        status: &str,
        error: Option<&str>,
        at_ms: i64,
    ) -> DbResult<()> {
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO notify_deliveries (id, target_id, message_id, event, attempt, status, error, at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(id)
            .bind(target_id)
            .bind(message_id)
            .bind(event)
            .bind(attempt)
            .bind(status)
            .bind(error)
            .bind(at_ms)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "DELETE FROM notify_deliveries WHERE target_id = $1 AND id NOT IN
                 (SELECT id FROM notify_deliveries WHERE target_id = $1
                  ORDER BY at_ms DESC, id DESC LIMIT $2)",
            )
            .bind(target_id)
            .bind(DELIVERIES_KEPT)
            .execute(&mut *tx)
            .await?;
            tx.commit().await
        })
    }

    /// A target's logged attempts, newest first.
    pub async fn notify_deliveries(&self, target_id: &str) -> DbResult<Vec<DeliveryRow>> {
        on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT message_id, event, attempt, status, error, at_ms FROM notify_deliveries
                 WHERE target_id = $1 ORDER BY at_ms DESC, id DESC LIMIT $2",
            )
            .bind(target_id)
            .bind(DELIVERIES_KEPT)
            .fetch_all(pool)
            .await
        })
    }
}
