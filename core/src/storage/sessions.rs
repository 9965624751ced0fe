//! Browser sessions (the `sessions` table): stored by a hash of the cookie value, each with
//! its user, CSRF token and times; read together with the user's role, and ended one at a
//! time, all of a user's at once, or by the idle and age limits.

use super::{Db, DbResult};
use protocol::Timestamp;

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct SessionRow {
    pub username: String,
    pub role: String,
    pub csrf_token: String,
    pub created_at: i64,
    pub last_seen_at: i64,
    /// The login or the latest re-authentication.
    pub authenticated_at: i64,
}

impl Db {
    pub async fn insert_session(
        &self,
        id_hash: &str,
        username: &str,
        csrf: &str,
        ip: Option<&str>,
    ) -> DbResult<()> {
        on_pool!(self, pool => {
            let now = Timestamp::now().secs();
            sqlx::query(
                "INSERT INTO sessions (id_hash, username, csrf_token, created_at, last_seen_at, ip, authenticated_at) VALUES ($1, $2, $3, $4, $4, $5, $4)",
            )
            .bind(id_hash)
            .bind(username)
            .bind(csrf)
            .bind(now)
            .bind(ip)
            .execute(pool)
            .await
            .map(|_| ())
        })
    }

    /// The session with its user, unless the user is disabled.
    pub async fn session(&self, id_hash: &str) -> DbResult<Option<SessionRow>> {
        on_pool!(self, pool => {
            // Named with AS: without it, the name of a qualified column is up to the database.
            sqlx::query_as(
                "SELECT s.username AS username, u.role AS role, s.csrf_token AS csrf_token,
                    s.created_at AS created_at, s.last_seen_at AS last_seen_at,
                    s.authenticated_at AS authenticated_at
                 FROM sessions s JOIN users u ON u.username = s.username
                 WHERE s.id_hash = $1 AND u.disabled = FALSE",
            )
            .bind(id_hash)
            .fetch_optional(pool)
            .await
        })
    }

    pub async fn touch_session(&self, id_hash: &str, at: Timestamp) -> DbResult<()> {
        on_pool!(self, pool => {
            sqlx::query("UPDATE sessions SET last_seen_at = $2 WHERE id_hash = $1")
                .bind(id_hash)
                .bind(at.secs())
                .execute(pool)
                .await
                .map(|_| ())
        })
    }

    /// The session's user just proved who they are again.
    pub async fn set_authenticated(&self, id_hash: &str, at: Timestamp) -> DbResult<()> {
        on_pool!(self, pool => {
            sqlx::query("UPDATE sessions SET authenticated_at = $2 WHERE id_hash = $1")
                .bind(id_hash)
                .bind(at.secs())
                .execute(pool)
                .await
                .map(|_| ())
        })
    }

    pub async fn delete_session(&self, id_hash: &str) -> DbResult<()> {
        on_pool!(self, pool => {
            sqlx::query("DELETE FROM sessions WHERE id_hash = $1")
                .bind(id_hash)
                .execute(pool)
                .await
                .map(|_| ())
        })
    }

    /// End every session of a user (disabled, or a new password).
    pub async fn delete_sessions_of(&self, username: &str) -> DbResult<u64> {
        on_pool!(self, pool => {
            sqlx::query("DELETE FROM sessions WHERE username = $1")
                .bind(username)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })
    }

    /// Drop sessions idle since `idle_before` or created before `created_before`.
    pub async fn purge_sessions(&self, idle_before: i64, created_before: i64) -> DbResult<u64> {
        on_pool!(self, pool => {
            sqlx::query("DELETE FROM sessions WHERE last_seen_at < $1 OR created_at < $2")
                .bind(idle_before)
                .bind(created_before)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })
    }
}
