//! Users (the `users` table): accounts with their password hash, role and disabled flag,
//! and each user's optional TOTP second factor (the `totp_*` columns of `users`, the secrets
//! sealed with the server's key) with its keyed, salted recovery-code hashes
//! (`recovery_codes`). The sealing and hashing are `crate::secret`'s; this module stores
//! what it is given.

use super::{Db, DbResult};
use protocol::Timestamp;

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct UserRow {
    pub username: String,
    pub password_hash: String,
    pub role: String,
    pub disabled: bool,
}

/// A user as listed: the row and when the account was created.
#[derive(sqlx::FromRow)]
struct ListedUser {
    #[sqlx(flatten)]
    user: UserRow,
    created_at: i64,
}

/// A user's TOTP state: the secrets as stored (sealed).
#[derive(Clone, Debug, Default, sqlx::FromRow)]
pub struct TotpRow {
    #[sqlx(rename = "totp_secret")]
    pub secret: Option<String>,
    #[sqlx(rename = "totp_pending")]
    pub pending: Option<String>,
    #[sqlx(rename = "totp_last_step")]
    pub last_step: Option<i64>,
}

impl Db {
    pub async fn count_users(&self) -> DbResult<i64> {
        on_pool!(self, pool => {
            sqlx::query_scalar("SELECT COUNT(*) FROM users")
                .fetch_one(pool)
                .await
        })
    }

    pub async fn insert_user(
        &self,
        username: &str,
        password_hash: &str,
        role: &str,
    ) -> DbResult<()> {
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO users (username, password_hash, role, disabled, created_at) VALUES ($1, $2, $3, FALSE, $4)",
            )
            .bind(username)
            .bind(password_hash)
            .bind(role)
            .bind(Timestamp::now().secs())
            .execute(pool)
            .await
            .map(|_| ())
        })
    }

    pub async fn user(&self, username: &str) -> DbResult<Option<UserRow>> {
        on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT username, password_hash, role, disabled FROM users WHERE username = $1",
            )
            .bind(username)
            .fetch_optional(pool)
            .await
        })
    }

    pub async fn users(&self) -> DbResult<Vec<(UserRow, i64)>> {
        on_pool!(self, pool => {
            let rows: Vec<ListedUser> = sqlx::query_as("SELECT username, password_hash, role, disabled, created_at FROM users ORDER BY username")
                .fetch_all(pool)
                .await?;
            Ok(rows.into_iter().map(|r| (r.user, r.created_at)).collect())
        })
    }

    pub async fn set_password(&self, username: &str, password_hash: &str) -> DbResult<bool> {
        on_pool!(self, pool => {
            sqlx::query("UPDATE users SET password_hash = $2 WHERE username = $1")
                .bind(username)
                .bind(password_hash)
                .execute(pool)
                .await
                .map(|r| r.rows_affected() == 1)
        })
    }

    /// The user's colour theme as stored (a `Theme` wire name); None for no such user.
    pub async fn user_theme(&self, username: &str) -> DbResult<Option<String>> {
        on_pool!(self, pool => {
            sqlx::query_scalar("SELECT theme FROM users WHERE username = $1")
                .bind(username)
                .fetch_optional(pool)
                .await
        })
    }

    pub async fn set_user_theme(&self, username: &str, theme: &str) -> DbResult<bool> {
        on_pool!(self, pool => {
            sqlx::query("UPDATE users SET theme = $2 WHERE username = $1")
                .bind(username)
                .bind(theme)
                .execute(pool)
                .await
                .map(|r| r.rows_affected() == 1)
        })
    }

    pub async fn set_disabled(&self, username: &str, disabled: bool) -> DbResult<bool> {
        on_pool!(self, pool => {
            sqlx::query("UPDATE users SET disabled = $2 WHERE username = $1")
                .bind(username)
                .bind(disabled)
                .execute(pool)
                .await
                .map(|r| r.rows_affected() == 1)
        })
    }

    // ------------------------------------------------------------------ TOTP

    pub async fn totp(&self, username: &str) -> DbResult<Option<TotpRow>> {
        on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT totp_secret, totp_pending, totp_last_step FROM users WHERE username = $1",
            )
            .bind(username)
            .fetch_optional(pool)
            .await
        })
    }

    pub async fn set_totp_pending(&self, username: &str, sealed_secret: &str) -> DbResult<()> {
        on_pool!(self, pool => {
            sqlx::query("UPDATE users SET totp_pending = $2 WHERE username = $1")
                .bind(username)
                .bind(sealed_secret)
                .execute(pool)
                .await
                .map(|_| ())
        })
    }

    /// Make the pending secret the user's, with its first step used and new recovery codes
    /// (`(hash, salt)` each), and end every other session of the user: all but the one
    /// whose CSRF token is `keep_session_csrf` (the session that confirmed). One
    /// transaction, so no session opened with the password alone outlives the change.
    pub async fn confirm_totp(
        &self,
        username: &str,
        step: i64,
        recovery_codes: &[(String, String)],
        keep_session_csrf: &str,
    ) -> DbResult<()> {
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "UPDATE users SET totp_secret = totp_pending, totp_pending = NULL, totp_last_step = $2 WHERE username = $1",
            )
            .bind(username)
            .bind(step)
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM recovery_codes WHERE username = $1")
                .bind(username)
                .execute(&mut *tx)
                .await?;
            for (hash, salt) in recovery_codes {
                sqlx::query(
                    "INSERT INTO recovery_codes (username, code_hash, salt, used) VALUES ($1, $2, $3, FALSE)",
                )
                .bind(username)
                .bind(hash)
                .bind(salt)
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query("DELETE FROM sessions WHERE username = $1 AND csrf_token <> $2")
                .bind(username)
                .bind(keep_session_csrf)
                .execute(&mut *tx)
                .await?;
            tx.commit().await
        })
    }

    /// Accept a step only if it is newer than the last accepted one (each code once).
    pub async fn use_totp_step(&self, username: &str, step: i64) -> DbResult<bool> {
        on_pool!(self, pool => {
            sqlx::query(
                "UPDATE users SET totp_last_step = $2 WHERE username = $1 AND (totp_last_step IS NULL OR totp_last_step < $2)",
            )
            .bind(username)
            .bind(step)
            .execute(pool)
            .await
            .map(|r| r.rows_affected() == 1)
        })
    }

    /// A user's unused recovery codes as `(hash, salt)`.
    pub async fn recovery_codes(&self, username: &str) -> DbResult<Vec<(String, String)>> {
        on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT code_hash, salt FROM recovery_codes WHERE username = $1 AND used = FALSE AND salt IS NOT NULL",
            )
            .bind(username)
            .fetch_all(pool)
            .await
        })
    }

    /// Spend a recovery code by its stored hash; false if unknown or used.
    pub async fn use_recovery_code(&self, username: &str, hash: &str) -> DbResult<bool> {
        on_pool!(self, pool => {
            sqlx::query("UPDATE recovery_codes SET used = TRUE WHERE username = $1 AND code_hash = $2 AND used = FALSE")
                .bind(username)
                .bind(hash)
                .execute(pool)
                .await
                .map(|r| r.rows_affected() == 1)
        })
    }

    // ------------------------------------------- secrets from before they were sealed

    /// Every stored TOTP secret, confirmed or pending, as `(username, secret, pending)`.
    pub async fn totp_secrets(&self) -> DbResult<Vec<(String, Option<String>, Option<String>)>> {
        on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT username, totp_secret, totp_pending FROM users WHERE totp_secret IS NOT NULL OR totp_pending IS NOT NULL",
            )
            .fetch_all(pool)
            .await
        })
    }

    /// Replace stored TOTP values, one transaction: each `(username, old, new)` replaces
    /// `old` only if it is still there. `pending` picks the column.
    pub async fn replace_totp_values(
        &self,
        secrets: &[(String, String, String)],
        pendings: &[(String, String, String)],
    ) -> DbResult<()> {
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for (column, rows) in [("totp_secret", secrets), ("totp_pending", pendings)] {
                let sql = super::composed(format!(
                    "UPDATE users SET {column} = $3 WHERE username = $1 AND {column} = $2"
                ));
                for (username, old, new) in rows {
                    sqlx::query(sql.clone())
                        .bind(username)
                        .bind(old)
                        .bind(new)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            tx.commit().await
        })
    }

    /// Recovery codes stored as plain SHA-256 (no salt yet), as `(username, hash)`.
    pub async fn unsalted_recovery_codes(&self) -> DbResult<Vec<(String, String)>> {
        on_pool!(self, pool => {
            sqlx::query_as("SELECT username, code_hash FROM recovery_codes WHERE salt IS NULL")
                .fetch_all(pool)
                .await
        })
    }

    /// Replace unsalted recovery-code hashes, one transaction: `(username, old, new, salt)`.
    pub async fn salt_recovery_codes(
        &self,
        codes: &[(String, String, String, String)],
    ) -> DbResult<()> {
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for (username, old, new, salt) in codes {
                sqlx::query(
                    "UPDATE recovery_codes SET code_hash = $3, salt = $4 WHERE username = $1 AND code_hash = $2 AND salt IS NULL",
                )
                .bind(username)
                .bind(old)
                .bind(new)
                .bind(salt)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await
        })
    }

    /// How many stored values need the secret key: TOTP secrets and recovery codes.
    pub async fn count_keyed_values(&self) -> DbResult<i64> {
        on_pool!(self, pool => {
            sqlx::query_scalar(
                "SELECT (SELECT COUNT(*) FROM users WHERE totp_secret IS NOT NULL OR totp_pending IS NOT NULL)
                      + (SELECT COUNT(*) FROM recovery_codes)",
            )
            .fetch_one(pool)
            .await
        })
    }
}
