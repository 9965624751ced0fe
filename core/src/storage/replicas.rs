//! Servers sharing one PostgreSQL database (`crate::replica`): the event bus's NOTIFY and
//! LISTEN, and the rows of events too large for one
//! notification (`bus_events`). PostgreSQL only: on SQLite one server is the only one, no
//! bus runs, and these methods answer with an error. Times are the database's clock
//! (`now()`), so the servers' own clocks need not agree.

use super::{Db, DbResult, Pool};
use sqlx::postgres::{PgListener, PgPool};

impl Db {
    fn postgres(&self) -> DbResult<&PgPool> {
        match self.pool() {
            Pool::Postgres(pool) => Ok(pool),
            Pool::Sqlite(_) => Err(sqlx::Error::Configuration(
                "replicas need PostgreSQL; a SQLite database has one server".into(),
            )),
        }
    }

    /// Forget large bus events older than `older_than_s` seconds.
    pub async fn prune_bus_events(&self, older_than_s: i64) -> DbResult<()> {
        let pool = self.postgres()?;
        sqlx::query(
            "DELETE FROM bus_events WHERE created_at < EXTRACT(EPOCH FROM now())::BIGINT - $1",
        )
        .bind(older_than_s)
        .execute(pool)
        .await
        .map(|_| ())
    }

    /// Send notifications on `channel` in one statement (one round trip, one transaction):
    /// delivered to every listener when it commits, in the order given (the subquery is
    /// sorted before the outer `pg_notify` calls are evaluated).
    pub async fn notify_many(&self, channel: &str, payloads: &[String]) -> DbResult<()> {
        let pool = self.postgres()?;
        sqlx::query(
            "SELECT pg_notify($1, p) FROM (
                 SELECT p FROM unnest($2::text[]) WITH ORDINALITY AS t(p, i) ORDER BY i
             ) ordered",
        )
        .bind(channel)
        .bind(payloads)
        .execute(pool)
        .await
        .map(|_| ())
    }

    /// A listener on `channel`, on a connection of its own taken from the pool.
    pub async fn listen(&self, channel: &str) -> DbResult<PgListener> {
        let mut listener = PgListener::connect_with(self.postgres()?).await?;
        listener.listen(channel).await?;
        Ok(listener)
    }

    /// Keep an event too large for a notification; its row id goes in the notification.
    pub async fn put_bus_event(&self, sender: &str, payload: &str) -> DbResult<i64> {
        let pool = self.postgres()?;
        sqlx::query_scalar(
            "INSERT INTO bus_events (sender, created_at, payload)
             VALUES ($1, EXTRACT(EPOCH FROM now())::BIGINT, $2) RETURNING id",
        )
        .bind(sender)
        .bind(payload)
        .fetch_one(pool)
        .await
    }

    /// A large event by its row id (None once pruned).
    pub async fn bus_event(&self, id: i64) -> DbResult<Option<String>> {
        let pool = self.postgres()?;
        sqlx::query_scalar("SELECT payload FROM bus_events WHERE id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await
    }
}
