//! Personal API tokens (the `api_tokens` table): each with its owner, name, role, the
//! SHA-256 of the token, and its times. Read by hash together with the owner's current role
//! (a disabled owner's tokens are not found), listed per owner or all, deleted one at a time.

use super::{Db, DbResult};

/// A token as stored, without its hash.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct ApiTokenRow {
    pub id: String,
    pub username: String,
    pub name: String,
    pub role: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

/// A token found by its hash, with its owner's current role.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct BearerRow {
    #[sqlx(flatten)]
    pub token: ApiTokenRow,
    pub owner_role: String,
}

/// The columns of `ApiTokenRow`, qualified for the join with `users`.
const COLUMNS: &str = "t.id AS id, t.username AS username, t.name AS name, t.role AS role,
    t.created_at AS created_at, t.expires_at AS expires_at, t.last_used_at AS last_used_at";

impl Db {
    pub async fn insert_api_token(&self, row: &ApiTokenRow, token_hash: &str) -> DbResult<()> {
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO api_tokens (id, username, name, role, token_hash, created_at, expires_at, last_used_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(&row.id)
            .bind(&row.username)
            .bind(&row.name)
            .bind(&row.role)
            .bind(token_hash)
            .bind(row.created_at)
            .bind(row.expires_at)
            .bind(row.last_used_at)
            .execute(pool)
            .await
            .map(|_| ())
        })
    }

    /// The token with this hash and its owner's role, unless the owner is disabled (or
    /// gone: the row goes with the user). Expiry is the service's to judge.
    pub async fn api_token_by_hash(&self, token_hash: &str) -> DbResult<Option<BearerRow>> {
        on_pool!(self, pool => {
            sqlx::query_as(super::composed(format!(
                "SELECT {COLUMNS}, u.role AS owner_role
                 FROM api_tokens t JOIN users u ON u.username = t.username
                 WHERE t.token_hash = $1 AND u.disabled = FALSE"
            )))
            .bind(token_hash)
            .fetch_optional(pool)
            .await
        })
    }

    pub async fn api_token(&self, id: &str) -> DbResult<Option<ApiTokenRow>> {
        on_pool!(self, pool => {
            sqlx::query_as(super::composed(format!(
                "SELECT {COLUMNS} FROM api_tokens t WHERE t.id = $1"
            )))
            .bind(id)
            .fetch_optional(pool)
            .await
        })
    }

    /// One user's tokens, or everyone's (`None`), oldest first.
    pub async fn api_tokens(&self, username: Option<&str>) -> DbResult<Vec<ApiTokenRow>> {
        on_pool!(self, pool => {
            sqlx::query_as(super::composed(format!(
                "SELECT {COLUMNS} FROM api_tokens t WHERE ($1 IS NULL OR t.username = $1)
                 ORDER BY t.username, t.created_at, t.id"
            )))
            .bind(username)
            .fetch_all(pool)
            .await
        })
    }

    pub async fn delete_api_token(&self, id: &str) -> DbResult<bool> {
        on_pool!(self, pool => {
            sqlx::query("DELETE FROM api_tokens WHERE id = $1")
                .bind(id)
                .execute(pool)
                .await
                .map(|r| r.rows_affected() == 1)
        })
    }

    pub async fn touch_api_token(&self, id: &str, at: i64) -> DbResult<()> {
        on_pool!(self, pool => {
            sqlx::query("UPDATE api_tokens SET last_used_at = $2 WHERE id = $1")
                .bind(id)
                .bind(at)
                .execute(pool)
                .await
                .map(|_| ())
        })
    }
}
