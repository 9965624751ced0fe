//! Settings (the `settings` table): small server facts kept across restarts as key/value
//! text, such as when the enrollment token was first seen.

use super::{Db, DbResult};

impl Db {
    pub async fn setting(&self, key: &str) -> DbResult<Option<String>> {
        on_pool!(self, pool => {
            sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
                .bind(key)
                .fetch_optional(pool)
                .await
        })
    }

    pub async fn set_setting(&self, key: &str, value: &str) -> DbResult<()> {
        on_pool!(self, pool => {
            sqlx::query("INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = $2")
                .bind(key)
                .bind(value)
                .execute(pool)
                .await
                .map(|_| ())
        })
    }
}
