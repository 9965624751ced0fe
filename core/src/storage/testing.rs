//! Databases for tests, on both backends. Not used by the server itself: public so that
//! the server's integration tests (`server/tests/common`) make their databases the same way.
//!
//! PostgreSQL tests need a server: `scripts/pg.sh start` starts a throw-away one and prints
//! its URL, which the tests read from `NIXDECK_TEST_POSTGRES_URL` (`scripts/test.sh` does
//! both). Each test gets a database of its own, made here with a random name, so tests run
//! in parallel on one server. Without the variable, a PostgreSQL test fails in CI
//! (`CI=true`: a run that silently tested one backend would look green) and is skipped with
//! a notice elsewhere.

use sqlx::postgres::PgConnectOptions;
use sqlx::ConnectOptions;
use std::path::Path;
use std::str::FromStr;

/// The variable that holds the tests' PostgreSQL server URL (any database on it that the
/// user may connect to; `CREATE DATABASE` must be allowed).
pub const POSTGRES_URL_ENV: &str = "NIXDECK_TEST_POSTGRES_URL";

/// Which database a test runs on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TestBackend {
    Sqlite,
    /// The server's URL, from `NIXDECK_TEST_POSTGRES_URL`.
    Postgres(String),
}

impl TestBackend {
    /// PostgreSQL, when the tests have a server. None (after a notice on stderr) when
    /// `NIXDECK_TEST_POSTGRES_URL` is unset; a panic instead when `CI` is set, so CI never
    /// passes without having run the PostgreSQL tests.
    pub fn postgres() -> Option<TestBackend> {
        match std::env::var(POSTGRES_URL_ENV) {
            Ok(url) if !url.trim().is_empty() => Some(TestBackend::Postgres(url)),
            _ if std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false") => {
                panic!(
                    "{POSTGRES_URL_ENV} is not set, and CI must run the PostgreSQL tests: \
                     `scripts/pg.sh start` prints a server's URL (scripts/test.sh sets it)"
                )
            }
            _ => {
                eprintln!(
                    "note: PostgreSQL test skipped ({POSTGRES_URL_ENV} is not set; \
                     `export {POSTGRES_URL_ENV}=$(scripts/pg.sh start)` runs them)"
                );
                None
            }
        }
    }

    /// The URL of a new, empty database of this backend: a SQLite file in `dir`, or a new
    /// database on the PostgreSQL server.
    pub async fn fresh_url(&self, dir: &Path) -> String {
        match self {
            TestBackend::Sqlite => format!("sqlite://{}/t.db", dir.display()),
            TestBackend::Postgres(server) => fresh_postgres_database(server)
                .await
                .unwrap_or_else(|e| panic!("creating a database on {server}: {e}")),
        }
    }
}

/// The pool of a `Db` on SQLite, for the tests of what only SQLite has (pragmas, file
/// size).
#[cfg(test)]
pub(crate) fn sqlite_pool(db: &super::Db) -> &sqlx::SqlitePool {
    match db.pool() {
        super::Pool::Sqlite(pool) => pool,
        super::Pool::Postgres(_) => panic!("not SQLite"),
    }
}

/// Creates a database with a random name on the PostgreSQL server at `server` and returns
/// its URL (the server's, with that database).
pub async fn fresh_postgres_database(server: &str) -> Result<String, sqlx::Error> {
    let options = PgConnectOptions::from_str(server)?;
    let name = format!("nixdeck_test_{:016x}", rand::random::<u64>());
    let mut admin = options.connect().await?;
    // The name is made here of hex digits only: nothing to quote or bind.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await?;
    sqlx::Connection::close(admin).await?;
    // The server's URL with the new database's name as its path: a URL as a person writes
    // it, which `psql` reads too (sqlx's own rendering adds parameters only sqlx knows).
    let mut url = url::Url::parse(server).map_err(|e| sqlx::Error::Configuration(e.into()))?;
    url.set_path(&format!("/{name}"));
    Ok(url.to_string())
}

/// `db_test! { #[tokio::test] async fn name(backend) { … } }`: the test twice, as
/// `name::sqlite` and `name::postgres`, with `backend` the `TestBackend` it runs on (see
/// the module docs for a missing PostgreSQL server). The body is written once.
#[allow(unused_macros)] // used by tests only
macro_rules! db_test {
    ($(#[$attr:meta])* async fn $name:ident($backend:ident) $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            $(#[$attr])*
            async fn sqlite() {
                let $backend = $crate::storage::testing::TestBackend::Sqlite;
                $body
            }

            $(#[$attr])*
            async fn postgres() {
                let Some($backend) = $crate::storage::testing::TestBackend::postgres() else {
                    return;
                };
                $body
            }
        }
    };
}
#[allow(unused_imports)]
pub(crate) use db_test;
