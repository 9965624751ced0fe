//! Named leases (the `leases` table) and the login failures that every replica counts
//! together (`login_failures`). Times are Unix milliseconds on the database's clock
//! (`Backend::now_ms`), so replicas on machines whose clocks differ agree on when a lease
//! runs out.
//!
//! A lease is taken or renewed by one statement: an upsert that writes the row only when
//! it is free, expired, or already ours. Two servers asking at once cannot both get it:
//! SQLite's writers take turns, and PostgreSQL's `INSERT … ON CONFLICT DO UPDATE … WHERE`
//! locks the row and checks the condition against its newest version.

use super::{composed, Db, DbResult};
use std::time::Duration;

impl Db {
    /// Take or renew lease `name` for `holder` for `ttl`: true when `holder` holds it now
    /// (it was free, expired, or already `holder`'s), false when someone else holds it.
    pub async fn try_lease(&self, name: &str, holder: &str, ttl: Duration) -> DbResult<bool> {
        let now = self.backend().now_ms();
        on_pool!(self, pool => {
            let got: Option<String> = sqlx::query_scalar(composed(format!(
                "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, {now} + $3)
                 ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
                 WHERE leases.holder = excluded.holder OR leases.expires_at <= {now}
                 RETURNING holder"
            )))
            .bind(name)
            .bind(holder)
            .bind(ttl.as_millis() as i64)
            .fetch_optional(pool)
            .await?;
            Ok(got.is_some())
        })
    }

    /// Take lease `name` for `holder` whoever holds it (a SQLite server at start: its
    /// database file is one server's, so a lease left by its previous process, killed
    /// before it could let go, is its own).
    pub async fn take_lease(&self, name: &str, holder: &str, ttl: Duration) -> DbResult<()> {
        let now = self.backend().now_ms();
        on_pool!(self, pool => {
            sqlx::query(composed(format!(
                "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, {now} + $3)
                 ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at"
            )))
            .bind(name)
            .bind(holder)
            .bind(ttl.as_millis() as i64)
            .execute(pool)
            .await
            .map(|_| ())
        })
    }

    /// Let go of lease `name` if `holder` holds it (at shutdown, so another server takes
    /// it at once rather than after it expires).
    pub async fn release_lease(&self, name: &str, holder: &str) -> DbResult<()> {
        on_pool!(self, pool => {
            sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
                .bind(name)
                .bind(holder)
                .execute(pool)
                .await
                .map(|_| ())
        })
    }

    /// Who holds lease `name` now (None: nobody, or it expired).
    pub async fn lease_holder(&self, name: &str) -> DbResult<Option<String>> {
        let now = self.backend().now_ms();
        on_pool!(self, pool => {
            sqlx::query_scalar(composed(format!(
                "SELECT holder FROM leases WHERE name = $1 AND expires_at > {now}"
            )))
            .bind(name)
            .fetch_optional(pool)
            .await
        })
    }

    /// The holders of every unexpired lease whose name starts with `prefix` (the live
    /// servers: `replica:`).
    pub async fn lease_holders(&self, prefix: &str) -> DbResult<Vec<String>> {
        let now = self.backend().now_ms();
        on_pool!(self, pool => {
            sqlx::query_scalar(composed(format!(
                "SELECT holder FROM leases WHERE substr(name, 1, length($1)) = $1 AND expires_at > {now}"
            )))
            .bind(prefix)
            .fetch_all(pool)
            .await
        })
    }

    /// A login attempt of (`account`, `source`) starts, counted at once (see
    /// `service::limits::SharedLogins`): the count with it, or None while the pair waits
    /// (a delay after failures, or the one attempt allowed past `free` is in flight).
    /// From the `free`-th counted attempt on, the pair is held for `hold` until the attempt
    /// ends. A pair quiet for `forget` starts afresh.
    pub async fn begin_login_attempt(
        &self,
        account: &str,
        source: &str,
        free: u32,
        hold: Duration,
        forget: Duration,
    ) -> DbResult<Option<i64>> {
        let now = self.backend().now_ms();
        on_pool!(self, pool => {
            sqlx::query_scalar(composed(format!(
                "INSERT INTO login_failures (account, source, failures, wait_until, last_at)
                 VALUES ($1, $2, 1, CASE WHEN 1 >= $3 THEN {now} + $4 ELSE 0 END, {now})
                 ON CONFLICT (account, source) DO UPDATE SET
                   failures = CASE WHEN login_failures.last_at < {now} - $5 THEN 1 ELSE login_failures.failures + 1 END,
                   wait_until = CASE
                     WHEN (CASE WHEN login_failures.last_at < {now} - $5 THEN 1 ELSE login_failures.failures + 1 END) >= $3
                     THEN {now} + $4 ELSE 0 END,
                   last_at = {now}
                 WHERE login_failures.wait_until <= {now}
                 RETURNING failures"
            )))
            .bind(account)
            .bind(source)
            .bind(i64::from(free))
            .bind(hold.as_millis() as i64)
            .bind(forget.as_millis() as i64)
            .fetch_optional(pool)
            .await
        })
    }

    /// How long (`account`, `source`) still waits, in milliseconds (0: not at all).
    pub async fn login_wait_ms(&self, account: &str, source: &str) -> DbResult<i64> {
        let now = self.backend().now_ms();
        on_pool!(self, pool => {
            let wait: Option<i64> = sqlx::query_scalar(composed(format!(
                "SELECT wait_until - {now} FROM login_failures WHERE account = $1 AND source = $2"
            )))
            .bind(account)
            .bind(source)
            .fetch_optional(pool)
            .await?;
            Ok(wait.unwrap_or(0).max(0))
        })
    }

    /// A counted attempt ended. `success`: the pair starts afresh. Otherwise `uncount`
    /// takes the attempt out of the count (it was not decided), and `wait` (from now)
    /// replaces the pair's hold when this attempt held it (`Some(0)`: no wait).
    pub async fn end_login_attempt(
        &self,
        account: &str,
        source: &str,
        success: bool,
        uncount: bool,
        wait: Option<Duration>,
    ) -> DbResult<()> {
        let now = self.backend().now_ms();
        on_pool!(self, pool => {
            if success {
                sqlx::query("DELETE FROM login_failures WHERE account = $1 AND source = $2")
                    .bind(account)
                    .bind(source)
                    .execute(pool)
                    .await?;
                return Ok(());
            }
            sqlx::query(composed(format!(
                "UPDATE login_failures SET
                   failures = CASE WHEN $3 AND failures > 0 THEN failures - 1 ELSE failures END,
                   wait_until = CASE WHEN $4 >= 0 THEN {now} + $4 ELSE wait_until END,
                   last_at = {now}
                 WHERE account = $1 AND source = $2"
            )))
            .bind(account)
            .bind(source)
            .bind(uncount)
            .bind(wait.map_or(-1, |w| w.as_millis() as i64))
            .execute(pool)
            .await
            .map(|_| ())
        })
    }

    /// Count one failure of `source` of kind `kind` in the current minute (a row of its
    /// own, account `kind`, which no username can be: `*` for logins over all accounts,
    /// `*agent` for agent authentications, `service::limits`); once more than
    /// `per_minute` failed, the source waits out the minute. How long it waits now, in ms
    /// (0: not).
    pub async fn fail_source(&self, kind: &str, source: &str, per_minute: u32) -> DbResult<i64> {
        let now = self.backend().now_ms();
        on_pool!(self, pool => {
            sqlx::query_scalar(composed(format!(
                "INSERT INTO login_failures (account, source, failures, wait_until, last_at)
                 VALUES ($1, $2, 1, 0, {now})
                 ON CONFLICT (account, source) DO UPDATE SET
                   failures = CASE WHEN login_failures.last_at < {now} - 60000 THEN 1 ELSE login_failures.failures + 1 END,
                   last_at = CASE WHEN login_failures.last_at < {now} - 60000 THEN {now} ELSE login_failures.last_at END,
                   wait_until = CASE
                     WHEN login_failures.last_at >= {now} - 60000 AND login_failures.failures + 1 > $3
                     THEN login_failures.last_at + 60000 ELSE login_failures.wait_until END
                 RETURNING CASE WHEN wait_until > {now} THEN wait_until - {now} ELSE 0 END"
            )))
            .bind(kind)
            .bind(source)
            .bind(i64::from(per_minute))
            .fetch_one(pool)
            .await
        })
    }

    /// Forget login failures quiet for `older_than` (the retention job).
    pub async fn purge_login_failures(&self, older_than: Duration) -> DbResult<u64> {
        let now = self.backend().now_ms();
        on_pool!(self, pool => {
            sqlx::query(composed(format!(
                "DELETE FROM login_failures WHERE last_at < {now} - $1 AND wait_until < {now}"
            )))
            .bind(older_than.as_millis() as i64)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })
    }
}
