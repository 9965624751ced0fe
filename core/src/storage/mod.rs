//! All SQL lives here. The rest of the server sees typed rows and methods, never the
//! database: `Db` is on SQLite or PostgreSQL, chosen by the scheme of the database URL
//! (`NIXDECK_DATABASE_URL`: `sqlite:` or `postgres://`/`postgresql://`).
//!
//! **One statement, two drivers.** `Db` holds a `Pool`, an enum of sqlx's `SqlitePool` and
//! `PgPool`, and every method runs its body through `on_pool!`: a `match` whose two arms are
//! the same body, so each statement is written once and compiled once per driver. Binds,
//! rows (`sqlx::FromRow`, read by column name) and results keep sqlx's full typing for both
//! (a column read as `i64` must be BIGINT on PostgreSQL, and the compiler checks that every
//! Rust type used has an encoding on both). The alternatives were weighed against this:
//! sqlx's `Any` driver converts every value at run time through its own small type set and
//! loses the per-driver connect options (WAL, `synchronous`, `busy_timeout`, foreign keys);
//! code generic over `sqlx::Database` needs a long `where` clause per method (an
//! `Encode + Type` bound for every bound type and `FromRow` for every row). The price of the
//! enum is code size: each method is compiled twice.
//!
//! **Portable SQL.** The statements stay portable, like the schema (TEXT ids, BIGINT Unix
//! seconds, BOOLEAN flags, `$n` placeholders, `INSERT … ON CONFLICT`, `RETURNING`, no
//! database-only types or functions). Where the two must differ, the difference is a
//! method of `Backend`, named for what it does (`next_queued_order`, `outbox_lock`, `now_ms`), and
//! the statement asks `self.backend()` for it. Connecting is the other difference:
//! `connect_sqlite` and `connect_postgres`.
//!
//! **Migrations.** `migrations/` holds SQLite's, `migrations/postgres/` PostgreSQL's (see
//! its README): one schema, two dialects, kept equal by
//! `tests::both_schemas_have_the_same_columns`. sqlx's migrator takes a lock while it
//! runs (an advisory lock on PostgreSQL), so several servers starting at once on one
//! database migrate it once.
//!
//! **Several writers.** Nothing here assumes it is the database's only client: counters
//! are drawn by the database (`Backend::next_queued_order`), the outbox's order is kept
//! under a lock (`Backend::outbox_lock`), and every read-modify-write is one statement or
//! one transaction that writes first.
//!
//! Each submodule is an `impl Db` block for its table(s) with its row structs: `users`
//! (accounts, TOTP and recovery codes), `sessions`, `hosts`, `history` (heartbeat metrics
//! over time), `commands` (commands and their output), `deploys`, `audit`, `settings`,
//! `tokens` (personal API tokens), `notify` (notification targets, rules, outbox,
//! deliveries), `leases` (named leases between servers, and the login failures they
//! count together) and `replicas` (the event bus between servers sharing a PostgreSQL
//! database). An enum is stored as its wire name (`as_str`) and read back with `parse`.
//!
//! A transaction that writes must write first. In SQLite, a transaction that reads first
//! and writes later fails at once with SQLITE_BUSY when another connection wrote in
//! between, without waiting for the busy timeout (`Db::store_output` is where this was
//! found under load). PostgreSQL does not need it, and is not hurt by it.
//!
//! Statements are `&'static str` literals where possible. The few put together with
//! `format!` (a shared column list, a fixed condition, a run of `$n` placeholders, one of
//! two column names, a `Backend` fragment) go through `composed`: their text comes from this
//! module's constants only, every value is a bind parameter.

/// `on_pool!(db, pool => body)`: `body` with `pool` bound to the `Db`'s pool, whichever
/// driver it is (see the module docs). Defined before the submodules so that they see it.
macro_rules! on_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $crate::storage::Db::pool(&$db) {
            $crate::storage::Pool::Sqlite($pool) => $body,
            $crate::storage::Pool::Postgres($pool) => $body,
        }
    };
}
#[allow(unused_imports)] // used by tests outside this module
pub(crate) use on_pool;

mod audit;
mod commands;
pub mod copy;
mod deploys;
mod history;
mod hosts;
mod leases;
mod notify;
mod replicas;
mod sessions;
mod settings;
#[doc(hidden)]
pub mod testing;
mod tokens;
mod users;

pub use audit::AuditFilter;
pub use commands::{output_marker, CommandRow, LogLine};
pub use deploys::DeployResume;
pub use history::{HistoryRow, MetricSums, MinuteSums};
pub use hosts::{HostFields, HostRecord, HostReport, SeenUpdate};
pub use notify::{DeliveryRow, NotifyRuleRow, NotifyTargetRow, OutboxRow, DELIVERIES_KEPT};
pub use sessions::SessionRow;
pub use tokens::{ApiTokenRow, BearerRow};
pub use users::{TotpRow, UserRow};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};
use std::str::FromStr;
use std::time::Duration;

pub type DbResult<T> = Result<T, sqlx::Error>;

/// The database a `Db` is on.
#[derive(Clone)]
pub(crate) enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Which database a URL names, and the SQL that differs between the two: each difference
/// is one method here, named for what it does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// `postgres://` and `postgresql://` (any case) are PostgreSQL; everything else is
    /// SQLite's (the configuration refuses other schemes before this).
    pub fn of_url(url: &str) -> Backend {
        let lower = url.trim_start().to_ascii_lowercase();
        if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            Backend::Sqlite
        }
    }

    /// The value of a new command's `queued_order` (the order of commands queued in the
    /// same second). SQLite: one more than the highest, read inside the INSERT; its writers
    /// take turns, so no two inserts see the same highest. PostgreSQL's writers do not take
    /// turns (two transactions may both read the highest before either commits), so there
    /// the value comes from a sequence (`migrations/postgres`).
    fn next_queued_order(self) -> &'static str {
        match self {
            Backend::Sqlite => "(SELECT COALESCE(MAX(queued_order), 0) + 1 FROM commands)",
            Backend::Postgres => "nextval('commands_queued_order_seq')",
        }
    }

    /// Now, in Unix milliseconds, on the database's clock: what leases and the shared login
    /// limits are timed by, so that servers whose clocks differ agree on when a lease ran
    /// out. SQLite's `julianday` counts days since noon on 24 November 4714 BC; 2440587.5
    /// of them is the Unix epoch.
    fn now_ms(self) -> &'static str {
        match self {
            Backend::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS BIGINT)",
            Backend::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
        }
    }

    /// The statement that begins a transaction queueing notifications, if any. The outbox
    /// numbers its rows one more than the highest, and a target's rows go out in that
    /// order: two writers that read the same highest would give two messages one number,
    /// and a number drawn from a sequence can commit after a higher one was already sent.
    /// SQLite's writers take turns (the INSERT is the transaction's first statement, so it
    /// holds the write lock while it reads the highest). On PostgreSQL the transaction
    /// first takes an advisory lock held until it ends: a second queueing transaction
    /// waits for the commit, then reads the highest with the first one's rows in it.
    /// Advisory rather than a table lock: the delivery worker's deletes and a target's
    /// removal do not wait for it, and cannot deadlock with it (a table lock against a
    /// removal that holds the target's row while it deletes the target's outbox rows can).
    fn outbox_lock(self) -> Option<&'static str> {
        match self {
            Backend::Sqlite => None,
            Backend::Postgres => {
                Some("SELECT pg_advisory_xact_lock(hashtext('nixdeck.notify_outbox.seq'))")
            }
        }
    }
}

#[derive(Clone)]
pub struct Db {
    pool: Pool,
}

impl Db {
    /// Open the database the URL names and migrate it. SQLite: the file and its folder are
    /// created when missing. PostgreSQL: the database must exist (the schema is made here).
    pub async fn connect(url: &str) -> Result<Db, sqlx::Error> {
        let pool = match Backend::of_url(url) {
            Backend::Sqlite => Pool::Sqlite(connect_sqlite(url).await?),
            Backend::Postgres => Pool::Postgres(connect_postgres(url).await?),
        };
        Ok(Db { pool })
    }

    /// The pool itself: for `on_pool!`, and for tests that set up what no method writes (a
    /// role change, a deleted user).
    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Another handle on this database for work that must not wait behind the server's
    /// own (lease renewal, `service::lease`): a pool of one connection of its own, made on
    /// the calling runtime (the schema is already there). In a burst of 19 000 enrollments
    /// on SQLite a renewal waited over 2.5 s for one of the server's 4 connections
    /// (docs/BENCHMARKS.md, "one server on SQLite, 19 000 agents"); its own connection
    /// waits only for SQLite's write lock, held a transaction at a time. An in-memory
    /// database has no second connection: the same pool.
    pub async fn aside(&self, url: &str) -> Result<Db, sqlx::Error> {
        match self.pool {
            Pool::Sqlite(_) if database_file(url).is_none() => Ok(self.clone()),
            Pool::Sqlite(_) => {
                let pool = SqlitePoolOptions::new()
                    .max_connections(1)
                    .connect_with(sqlite_options(url)?)
                    .await?;
                Ok(Db {
                    pool: Pool::Sqlite(pool),
                })
            }
            Pool::Postgres(_) => {
                let pool = PgPoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_with(PgConnectOptions::from_str(url)?)
                    .await?;
                Ok(Db {
                    pool: Pool::Postgres(pool),
                })
            }
        }
    }

    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    pub async fn ping(&self) -> DbResult<()> {
        on_pool!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(|_| ()))
    }
}

fn sqlite_options(url: &str) -> Result<SqliteConnectOptions, sqlx::Error> {
    Ok(SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(5))
        .foreign_keys(true))
}

async fn connect_sqlite(url: &str) -> Result<SqlitePool, sqlx::Error> {
    let options = sqlite_options(url)?;
    if let Some(parent) = options.get_filename().parent() {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent).map_err(sqlx::Error::Io)?;
        }
    }
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await?;
    // Relative to the crate's Cargo.toml, not to this file. The migrator reads the files
    // of the folder only, not `postgres/` inside it.
    sqlx::migrate!("../migrations").run(&pool).await?;
    Ok(pool)
}

/// Connections per server: PostgreSQL serves them in parallel (SQLite's writers take
/// turns, so its pool stays at 4). sqlx's default; a server's default `max_connections` is
/// 100, room for several servers.
const POSTGRES_CONNECTIONS: u32 = 10;

async fn connect_postgres(url: &str) -> Result<PgPool, sqlx::Error> {
    let options = PgConnectOptions::from_str(url)?;
    let pool = PgPoolOptions::new()
        .max_connections(POSTGRES_CONNECTIONS)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await?;
    sqlx::migrate!("../migrations/postgres").run(&pool).await?;
    Ok(pool)
}

/// The file of a SQLite database URL, as `Db::connect` opens it; None for an in-memory
/// database or a PostgreSQL URL.
pub fn database_file(url: &str) -> Option<std::path::PathBuf> {
    if Backend::of_url(url) != Backend::Sqlite
        || url.contains(":memory:")
        || url.contains("mode=memory")
    {
        return None;
    }
    let options = SqliteConnectOptions::from_str(url).ok()?;
    Some(options.get_filename().to_owned())
}

/// The database URL as it may be shown in logs and errors: a PostgreSQL URL's password (in
/// the user part or as `?password=`) replaced by `***`. A URL that does not parse is shown
/// as its scheme only.
pub fn shown_url(url: &str) -> String {
    if Backend::of_url(url) == Backend::Sqlite {
        return url.to_owned();
    }
    let Ok(mut parsed) = url::Url::parse(url.trim()) else {
        return format!("{}://…", url.split("://").next().unwrap_or_default());
    };
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some("***"));
    }
    if parsed.query_pairs().any(|(k, _)| k == "password") {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| {
                let v = if k == "password" {
                    "***".into()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.to_string()
}

/// SQL text put together in this module from its own constants (see the module docs), as
/// sqlx takes it: sqlx accepts only literals unless a dynamic string is asserted
/// injection-free. Never pass anything that holds a value here; bind it.
fn composed(sql: String) -> sqlx::SqlStr {
    use sqlx::SqlSafeStr;
    sqlx::AssertSqlSafe(sql).into_sql_str()
}

/// Whether an error is a unique-constraint violation (one helper, not text matching at
/// call sites).
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// A stored value that does not decode (bad JSON, a name no variant has), as sqlx's
/// decode error.
fn decode_error(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> sqlx::Error {
    sqlx::Error::Decode(e.into())
}

#[cfg(test)]
mod tests {
    use super::testing::{db_test, sqlite_pool, TestBackend};
    use super::*;
    use protocol::messages::{DeployHostState, DeployPhase, DeployProgress, Output};
    use protocol::{CommandKind, CommandStatus, Host, HostType, OutputStream, Timestamp};
    use sqlx::Row;

    async fn db(backend: &TestBackend) -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::connect(&backend.fresh_url(dir.path()).await)
            .await
            .unwrap();
        (dir, db)
    }

    /// No bound on a command's stored output (the tests of other things).
    const NO_BOUND: u64 = u64::MAX / 2;

    fn line(command_id: &str, seq: u64) -> Output {
        Output {
            command_id: command_id.into(),
            seq,
            stream: OutputStream::Stdout,
            line: format!("line {seq}"),
        }
    }

    db_test! {
        /// Output from many hosts at once, while heartbeats and registrations are written too:
        /// every batch must be stored (none may fail with SQLITE_BUSY and wait for a resend).
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn concurrent_writers_never_lose_an_output_batch(backend) {
            let (_dir, db) = db(&backend).await;
            let hosts = 6;
            for h in 0..hosts {
                let host = Host::new(&format!("h{h}"), HostType::Nixos);
                db.insert_host(&host, &format!("hash{h}")).await.unwrap();
                db.insert_command(
                    &format!("c{h}"),
                    &host.id,
                    CommandKind::Test,
                    Timestamp::now(),
                    "t",
                )
                .await
                .unwrap();
            }
            let mut tasks = Vec::new();
            for h in 0..hosts {
                let db = db.clone();
                tasks.push(tokio::spawn(async move {
                    let id = format!("c{h}");
                    for seq in 1..=150u64 {
                        let (_, last) = db
                            .store_output(&id, &[line(&id, seq)], Timestamp::now(), NO_BOUND)
                            .await
                            .expect("an output batch failed");
                        assert_eq!(last, seq);
                    }
                }));
            }
            let writer = {
                let db = db.clone();
                tokio::spawn(async move {
                    for i in 0..150 {
                        let batch: Vec<SeenUpdate> = (0..hosts)
                            .map(|h| SeenUpdate {
                                host_id: format!("h{h}"),
                                last_seen: Timestamp(i),
                                metrics: None,
                                generation: None,
                                lock_hash: None,
                            })
                            .collect();
                        db.save_seen(&batch).await.expect("heartbeat batch");
                    }
                })
            };
            for t in tasks {
                t.await.unwrap();
            }
            writer.await.unwrap();
        }
    }

    #[tokio::test]
    async fn sqlite_runs_in_wal_with_full_sync_and_a_busy_timeout() {
        let (_dir, db) = db(&TestBackend::Sqlite).await;
        let pool = sqlite_pool(&db);
        let mode: String = sqlx::query("PRAGMA journal_mode")
            .fetch_one(pool)
            .await
            .unwrap()
            .get(0);
        assert_eq!(mode, "wal");
        let sync: i64 = sqlx::query("PRAGMA synchronous")
            .fetch_one(pool)
            .await
            .unwrap()
            .get(0);
        assert_eq!(sync, 2, "FULL");
        let busy: i64 = sqlx::query("PRAGMA busy_timeout")
            .fetch_one(pool)
            .await
            .unwrap()
            .get(0);
        assert!(busy >= 1000);
        let fk: i64 = sqlx::query("PRAGMA foreign_keys")
            .fetch_one(pool)
            .await
            .unwrap()
            .get(0);
        assert_eq!(fk, 1);
    }

    /// CVE-2025-6965 (memory corruption from more aggregate terms than columns) is fixed in
    /// SQLite 3.50.2. The library is the one libsqlite3-sys bundles (the workspace
    /// Cargo.toml keeps it at 0.35 or newer); this checks what is actually linked, so a
    /// lockfile or feature change that brings an older SQLite fails here.
    #[tokio::test]
    async fn bundled_sqlite_is_at_least_3_50_2() {
        let (_dir, db) = db(&TestBackend::Sqlite).await;
        let pool = sqlite_pool(&db);
        let version: String = sqlx::query("SELECT sqlite_version()")
            .fetch_one(pool)
            .await
            .unwrap()
            .get(0);
        let parts: Vec<u32> = version
            .split('.')
            .map(|p| {
                p.parse()
                    .unwrap_or_else(|_| panic!("SQLite version {version:?}"))
            })
            .collect();
        // Numerically, part by part (as strings, "3.9.0" would pass).
        assert!(
            parts[..] >= [3, 50, 2][..],
            "SQLite {version} is older than 3.50.2 (CVE-2025-6965)"
        );
    }

    db_test! {
        #[tokio::test]
        async fn output_is_stored_once_per_seq(backend) {
            let (_dir, db) = db(&backend).await;
            db.insert_command("c1", "h", CommandKind::Test, Timestamp(1), "admin")
                .await
                .unwrap();
            let (fresh, last) = db
                .store_output(
                    "c1",
                    &[line("c1", 1), line("c1", 2)],
                    Timestamp(2),
                    NO_BOUND,
                )
                .await
                .unwrap();
            assert_eq!((fresh.len(), last), (2, 2));
            // A re-send after a reconnect overlaps what is stored: only the new line counts.
            let (fresh, last) = db
                .store_output(
                    "c1",
                    &[line("c1", 1), line("c1", 2), line("c1", 3)],
                    Timestamp(3),
                    NO_BOUND,
                )
                .await
                .unwrap();
            assert_eq!(fresh.iter().map(|l| l.seq).collect::<Vec<_>>(), vec![3]);
            assert_eq!(last, 3);
            let page = db.output_page("c1", 0, 100).await.unwrap();
            assert_eq!(
                page.iter().map(|l| l.seq).collect::<Vec<_>>(),
                vec![1, 2, 3]
            );
            // Output for an unknown command is not stored.
            assert_eq!(
                db.store_output("nope", &[line("nope", 1)], Timestamp(3), NO_BOUND)
                    .await
                    .unwrap()
                    .1,
                0
            );
        }
    }

    db_test! {
        /// Past the bound a command's lines are counted, not stored: the ack moves over them
        /// all the same, one marker line (at the first dropped seq) says how many, and
        /// re-sends are neither stored nor counted twice.
        #[tokio::test]
        async fn output_past_the_bound_is_counted_and_marked_once(backend) {
            let (_dir, db) = db(&backend).await;
            db.insert_command("c1", "h", CommandKind::Test, Timestamp(1), "admin")
                .await
                .unwrap();
            let lines = |seqs: std::ops::RangeInclusive<u64>| -> Vec<Output> {
                seqs.map(|seq| line("c1", seq)).collect()
            };
            let seqs = |out: &[Output]| out.iter().map(|l| l.seq).collect::<Vec<_>>();
            // "line N" is 6 bytes: 20 bytes hold three lines.
            let bound = 20;
            let (fresh, last) = db
                .store_output("c1", &lines(1..=5), Timestamp(2), bound)
                .await
                .unwrap();
            assert_eq!(seqs(&fresh), vec![1, 2, 3]);
            assert_eq!(last, 5, "dropped lines are acked too");
            // A re-send of all of it, and more.
            let (fresh, last) = db
                .store_output("c1", &lines(1..=8), Timestamp(3), bound)
                .await
                .unwrap();
            assert!(fresh.is_empty());
            assert_eq!(last, 8);
            // A line that would fit is not stored either: once over, the log stays over.
            let short = Output {
                line: "x".into(),
                ..line("c1", 9)
            };
            let (fresh, last) = db
                .store_output("c1", &[short], Timestamp(4), bound)
                .await
                .unwrap();
            assert!(fresh.is_empty());
            assert_eq!(last, 9);
            // A line after a gap is not counted (nor acked) until it comes again in order.
            let (_, last) = db
                .store_output("c1", &lines(11..=11), Timestamp(5), bound)
                .await
                .unwrap();
            assert_eq!(last, 9);
            let (_, last) = db
                .store_output("c1", &lines(10..=11), Timestamp(6), bound)
                .await
                .unwrap();
            assert_eq!(last, 11);

            let page = db.output_page("c1", 0, 100).await.unwrap();
            let stored: Vec<_> = page
                .iter()
                .map(|l| (l.seq, l.stream, l.line.as_str(), l.at))
                .collect();
            let marker = "[nixdeck: 8 lines dropped: output over the 1 MiB stored-output limit]";
            assert_eq!(
                stored,
                vec![
                    (1, OutputStream::Stdout, "line 1", Timestamp(2)),
                    (2, OutputStream::Stdout, "line 2", Timestamp(2)),
                    (3, OutputStream::Stdout, "line 3", Timestamp(2)),
                    (4, OutputStream::Stderr, marker, Timestamp(2)),
                ]
            );
            assert_eq!(output_marker(8, bound), marker);
            let row = db.command("c1").await.unwrap().unwrap();
            assert_eq!(
                (row.last_seq, row.dropped_lines, row.drop_marker_seq),
                (11, 8, Some(4))
            );
        }
    }

    db_test! {
        #[tokio::test]
        async fn a_server_decided_status_survives_the_agents_completion(backend) {
            let (_dir, db) = db(&backend).await;
            db.insert_command("c1", "h", CommandKind::Switch, Timestamp(1), "admin")
                .await
                .unwrap();
            db.mark_running("c1", Timestamp(2)).await.unwrap();
            assert!(db
                .set_final_status("c1", CommandStatus::Timeout, Timestamp(3))
                .await
                .unwrap());
            assert_eq!(
                db.holding_commands().await.unwrap().len(),
                1,
                "a timed-out command holds its host"
            );
            let row = db
                .complete_command(
                    "c1",
                    CommandStatus::Stopped,
                    Some(143),
                    10,
                    Timestamp(4),
                    None,
                )
                .await
                .unwrap()
                .unwrap();
            assert_eq!(row.status, CommandStatus::Timeout);
            assert_eq!(row.exit_code, Some(143));
            assert!(db.holding_commands().await.unwrap().is_empty());
        }
    }

    db_test! {
        #[tokio::test]
        async fn retention_drops_only_old_finished_commands(backend) {
            let (_dir, db) = db(&backend).await;
            for (id, at) in [
                ("old-done", 100),
                ("old-running", 100),
                ("new-done", 10_000),
            ] {
                db.insert_command(id, "h", CommandKind::Pull, Timestamp(at), "admin")
                    .await
                    .unwrap();
                db.store_output(id, &[line(id, 1)], Timestamp(at), NO_BOUND)
                    .await
                    .unwrap();
            }
            db.complete_command(
                "old-done",
                CommandStatus::Ok,
                Some(0),
                1,
                Timestamp(101),
                None,
            )
            .await
            .unwrap();
            db.complete_command(
                "new-done",
                CommandStatus::Ok,
                Some(0),
                1,
                Timestamp(10_001),
                None,
            )
            .await
            .unwrap();
            // A deploy that ran two of them lists both until retention takes the old one.
            let job = DeployProgress {
                job_id: "d1".into(),
                pr_number: 7,
                phase: DeployPhase::Done,
                hosts: [("h".to_owned(), DeployHostState::Ok)].into(),
                message: String::new(),
                started_by: "admin".into(),
                active: false,
                previews: Default::default(),
            };
            db.insert_deploy(&job, "{}", "r").await.unwrap();
            for id in ["new-done", "old-done", "new-done"] {
                db.add_deploy_command("d1", id).await.unwrap();
            }
            let ids = |rows: Vec<CommandRow>| rows.into_iter().map(|r| r.id).collect::<Vec<_>>();
            assert_eq!(
                ids(db.deploy_commands("d1").await.unwrap()),
                ["old-done", "new-done"],
                "once each, in the order queued"
            );
            // The host's history learns which deploy started each command, from `since` on.
            let mut of_host = db.host_deploy_commands("h", Timestamp(0)).await.unwrap();
            of_host.sort();
            assert_eq!(
                of_host,
                [
                    ("new-done".to_owned(), "d1".to_owned(), 7),
                    ("old-done".to_owned(), "d1".to_owned(), 7)
                ]
            );
            let since = db.host_deploy_commands("h", Timestamp(5_000)).await.unwrap();
            assert_eq!(since, [("new-done".to_owned(), "d1".to_owned(), 7)]);
            assert!(db.host_deploy_commands("other", Timestamp(0)).await.unwrap().is_empty());
            let recent = db.recent_deploys(5).await.unwrap();
            assert_eq!(recent.len(), 1);
            assert_eq!(recent[0].0, job);
            assert_eq!(db.purge_commands(Timestamp(5_000)).await.unwrap(), 1);
            assert_eq!(ids(db.deploy_commands("d1").await.unwrap()), ["new-done"]);
            assert!(db.command("old-done").await.unwrap().is_none());
            assert!(db.output_page("old-done", 0, 10).await.unwrap().is_empty());
            assert!(
                db.command("old-running").await.unwrap().is_some(),
                "a running command is kept"
            );
            assert!(db.command("new-done").await.unwrap().is_some());
        }
    }

    db_test! {
        /// Every wire name stored in a TEXT column reads back as the value written: a wrong or
        /// missing mapping would read as the fallback (or fail) here.
        #[tokio::test]
        async fn every_enum_value_reads_back_as_written(backend) {
            let (_dir, db) = db(&backend).await;
            for (i, host_type) in HostType::ALL.into_iter().enumerate() {
                let host = Host::new(&format!("h{i}"), host_type);
                db.insert_host(&host, &format!("hash{i}")).await.unwrap();
                let stored = db.host(&host.id).await.unwrap().unwrap();
                assert_eq!(stored.host.host_type, host_type);
            }
            for (i, kind) in CommandKind::ALL.into_iter().enumerate() {
                let id = format!("k{i}");
                db.insert_command(&id, "h", kind, Timestamp(1), "admin")
                    .await
                    .unwrap();
                let row = db.command(&id).await.unwrap().unwrap();
                assert_eq!((row.command, row.status), (kind, CommandStatus::Queued));
            }
            for (i, status) in CommandStatus::ALL.into_iter().enumerate() {
                let id = format!("s{i}");
                db.insert_command(&id, "h", CommandKind::Test, Timestamp(1), "admin")
                    .await
                    .unwrap();
                // The first output line marks a queued command running; the completion then
                // stores the agent's status as given.
                db.store_output(
                    &id,
                    &[Output {
                        command_id: id.clone(),
                        seq: 1,
                        stream: OutputStream::ALL[i % OutputStream::ALL.len()],
                        line: "x".into(),
                    }],
                    Timestamp(2),
                    NO_BOUND,
                )
                .await
                .unwrap();
                assert_eq!(
                    db.command(&id).await.unwrap().unwrap().status,
                    CommandStatus::Running
                );
                let row = db
                    .complete_command(&id, status, Some(0), 1, Timestamp(3), None)
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(row.status, status);
                assert_eq!(db.command(&id).await.unwrap().unwrap().status, status);
                let lines = db.output_page(&id, 0, 10).await.unwrap();
                assert_eq!(
                    lines.iter().map(|l| l.stream).collect::<Vec<_>>(),
                    vec![OutputStream::ALL[i % OutputStream::ALL.len()]]
                );
            }
            for (i, phase) in DeployPhase::ALL.into_iter().enumerate() {
                let job = DeployProgress {
                    job_id: format!("d{i}"),
                    pr_number: 40 + i as u64,
                    phase,
                    hosts: DeployHostState::ALL
                        .into_iter()
                        .enumerate()
                        .map(|(h, state)| (format!("h{h}"), state))
                        .collect(),
                    message: format!("job {i}"),
                    started_by: "admin".into(),
                    active: true,
                    previews: [("h0".to_owned(), format!("p{i}"))].into(),
                };
                db.insert_deploy(&job, r#"{"pr_number":1}"#, "r").await.unwrap();
                assert_eq!(db.deploy(&job.job_id).await.unwrap(), Some(job.clone()));
                let saved = DeployProgress {
                    active: false,
                    previews: [("h0", "q"), ("h1", "r")]
                        .map(|(h, c)| (h.to_owned(), c.to_owned()))
                        .into(),
                    ..job
                };
                db.save_deploy(&saved).await.unwrap();
                assert_eq!(db.deploy(&saved.job_id).await.unwrap(), Some(saved.clone()));
                let resume = |confirm_by| DeployResume {
                    request: r#"{"pr_number":1}"#.to_owned(),
                    confirm_by,
                };
                assert_eq!(
                    db.deploy_resume(&saved.job_id).await.unwrap(),
                    Some(resume(None))
                );
                db.set_deploy_confirm_by(&saved.job_id, Some(1000 + i as i64))
                    .await
                    .unwrap();
                assert_eq!(
                    db.deploy_resume(&saved.job_id).await.unwrap(),
                    Some(resume(Some(1000 + i as i64)))
                );
            }
            assert_eq!(db.deploy_resume("nope").await.unwrap(), None);
        }
    }

    db_test! {
        /// The rows no other test reads (users, sessions, TOTP, audit, settings) come back by
        /// column name with what was written.
        #[tokio::test]
        async fn the_other_rows_read_back_by_name(backend) {
            let (_dir, db) = db(&backend).await;
            db.insert_user("ann", "hash", "admin").await.unwrap();
            assert_eq!(db.count_users().await.unwrap(), 1);
            let user = db.user("ann").await.unwrap().unwrap();
            assert_eq!(
                (
                    user.username.as_str(),
                    user.password_hash.as_str(),
                    user.role.as_str()
                ),
                ("ann", "hash", "admin")
            );
            assert!(!user.disabled);
            let users = db.users().await.unwrap();
            assert_eq!(users.len(), 1);
            assert_eq!(users[0].0.username, "ann");
            assert!(users[0].1 > 0, "created_at");

            db.insert_session("sid", "ann", "csrf", Some("10.0.0.1"))
                .await
                .unwrap();
            db.touch_session("sid", Timestamp(i64::MAX / 2))
                .await
                .unwrap();
            let session = db.session("sid").await.unwrap().unwrap();
            assert_eq!(
                (session.username.as_str(), session.role.as_str()),
                ("ann", "admin")
            );
            assert_eq!(session.csrf_token, "csrf");
            assert!(session.created_at > 0);
            assert_eq!(session.last_seen_at, i64::MAX / 2);
            db.set_disabled("ann", true).await.unwrap();
            assert!(db.session("sid").await.unwrap().is_none());

            db.set_totp_pending("ann", "secret").await.unwrap();
            let totp = db.totp("ann").await.unwrap().unwrap();
            assert_eq!(
                (totp.secret, totp.pending, totp.last_step),
                (None, Some("secret".into()), None)
            );
            db.confirm_totp("ann", 7, &[("hash".into(), "salt".into())], "csrf")
                .await
                .unwrap();
            let totp = db.totp("ann").await.unwrap().unwrap();
            assert_eq!(
                (totp.secret, totp.pending, totp.last_step),
                (Some("secret".into()), None, Some(7))
            );

            let entry = protocol::api::AuditEntry {
                at: Timestamp(5),
                actor: "ann".into(),
                ip: Some("10.0.0.1".into()),
                action: "login".into(),
                target: None,
                result: "ok".into(),
                detail: Some("d".into()),
                token: Some("ci".into()),
            };
            db.insert_audit(&entry).await.unwrap();
            let filter = AuditFilter {
                actor: Some("ann".into()),
                limit: 10,
                ..AuditFilter::default()
            };
            assert_eq!(db.audit(&filter).await.unwrap(), vec![entry]);

            assert_eq!(db.setting("k").await.unwrap(), None);
            db.set_setting("k", "v").await.unwrap();
            assert_eq!(db.setting("k").await.unwrap().as_deref(), Some("v"));

            db.insert_host(&Host::new("h", HostType::Macos), "tok")
                .await
                .unwrap();
            assert_eq!(
                db.host_for_token("tok").await.unwrap().as_deref(),
                Some("h")
            );
            assert_eq!(
                db.hosts().await.unwrap()[0].host,
                Host::new("h", HostType::Macos)
            );
        }
    }

    db_test! {
        /// Two servers on one database queue commands and notifications at once: every
        /// command gets its own `queued_order` and every outbox row its own `seq`, so a
        /// target's messages have one order (`Backend::next_queued_order`,
        /// `Backend::outbox_lock`).
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn two_servers_queueing_at_once_never_share_a_number(backend) {
            let dir = tempfile::tempdir().unwrap();
            let url = backend.fresh_url(dir.path()).await;
            let servers = [Db::connect(&url).await.unwrap(), Db::connect(&url).await.unwrap()];
            servers[0]
                .insert_notify_target(&NotifyTargetRow {
                    id: "t".into(),
                    name: "hook".into(),
                    kind: "webhook".into(),
                    url_sealed: None,
                    url_shown: None,
                    settings: "{}".into(),
                    secret_sealed: None,
                    created_at: 1,
                })
                .await
                .unwrap();
            let mut tasks = Vec::new();
            for (s, db) in servers.iter().enumerate() {
                for task in 0..4 {
                    let db = db.clone();
                    tasks.push(tokio::spawn(async move {
                        for i in 0..25 {
                            let id = format!("{s}-{task}-{i}");
                            db.insert_command(&id, "h", CommandKind::Test, Timestamp(1), "t")
                                .await
                                .unwrap();
                            db.enqueue_notify(&id, "{}", &["t".to_owned()], 1, 0)
                                .await
                                .unwrap();
                        }
                    }));
                }
            }
            for t in tasks {
                t.await.unwrap();
            }
            let db = &servers[0];
            let (orders, seqs): (Vec<i64>, Vec<i64>) = on_pool!(db, pool => (
                sqlx::query_scalar("SELECT queued_order FROM commands").fetch_all(pool).await.unwrap(),
                sqlx::query_scalar("SELECT seq FROM notify_outbox").fetch_all(pool).await.unwrap(),
            ));
            for (what, mut numbers) in [("queued_order", orders), ("seq", seqs)] {
                assert_eq!(numbers.len(), 200, "{what}");
                numbers.sort_unstable();
                numbers.dedup();
                assert_eq!(numbers.len(), 200, "{what}: some rows share a number");
            }
        }
    }

    /// The two migration folders make the same tables with the same columns: the same
    /// names, nullability and kind (integer, text, boolean). A column added in one
    /// folder only, or read as an integer in one and text in the other, fails here.
    #[tokio::test]
    async fn both_schemas_have_the_same_columns() {
        type Columns = std::collections::BTreeSet<(String, String, bool, &'static str)>;
        fn kind(declared: &str) -> &'static str {
            let t = declared.to_ascii_lowercase();
            if t.contains("int") {
                "integer"
            } else if t.contains("bool") {
                "boolean"
            } else if t == "text" {
                "text"
            } else {
                panic!("a column of type {declared}: say here which kind it is")
            }
        }
        let Some(postgres) = TestBackend::postgres() else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let mut schemas: Vec<Columns> = Vec::new();
        for backend in [TestBackend::Sqlite, postgres] {
            let db = Db::connect(&backend.fresh_url(dir.path()).await)
                .await
                .unwrap();
            // Table, column, NOT NULL (a primary key's columns count as NOT NULL: SQLite
            // allows NULL in them, PostgreSQL does not), declared type.
            let rows: Vec<(String, String, bool, String)> = on_pool!(db, pool => {
                let sql = match db.backend() {
                    Backend::Sqlite => {
                        "SELECT m.name, p.name, p.\"notnull\" = 1 OR p.pk > 0, p.type
                         FROM sqlite_master m JOIN pragma_table_info(m.name) p
                         WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite%' AND m.name NOT LIKE '\\_sqlx%' ESCAPE '\\'"
                    }
                    Backend::Postgres => {
                        "SELECT table_name::text, column_name::text, is_nullable = 'NO', data_type::text
                         FROM information_schema.columns
                         WHERE table_schema = 'public' AND table_name NOT LIKE '\\_sqlx%' ESCAPE '\\'"
                    }
                };
                sqlx::query_as(sql).fetch_all(pool).await.unwrap()
            });
            assert!(rows.len() > 100, "{} columns read", rows.len());
            schemas.push(
                rows.into_iter()
                    .map(|(table, column, not_null, declared)| {
                        (table, column, not_null, kind(&declared))
                    })
                    .collect(),
            );
        }
        let only = |a: &Columns, b: &Columns| a.difference(b).cloned().collect::<Vec<_>>();
        assert_eq!(
            (
                only(&schemas[0], &schemas[1]),
                only(&schemas[1], &schemas[0])
            ),
            (vec![], vec![]),
            "(only on SQLite, only on PostgreSQL)"
        );
    }

    #[test]
    fn a_postgres_password_is_never_shown() {
        for (url, shown) in [
            ("sqlite://data/nixdeck.db", "sqlite://data/nixdeck.db"),
            (
                "postgres://deck:s3cret@db.example:5432/nixdeck",
                "postgres://deck:***@db.example:5432/nixdeck",
            ),
            (
                "postgresql://deck@localhost/nixdeck?host=/run/postgresql&password=s3cret",
                "postgresql://deck@localhost/nixdeck?host=%2Frun%2Fpostgresql&password=***",
            ),
            ("postgres://deck:s3cret@[bad", "postgres://…"),
            ("postgres://deck:s3cret@/nixdeck", "postgres://…"),
        ] {
            assert_eq!(shown_url(url), shown, "{url}");
            assert!(!shown_url(url).contains("s3cret"));
        }
        assert_eq!(Backend::of_url("PostgreSQL://h/d"), Backend::Postgres);
        assert_eq!(Backend::of_url("sqlite::memory:"), Backend::Sqlite);
        assert_eq!(database_file("postgres://h/d"), None);
    }

    /// A database made by the last release before this session's migrations (it shipped
    /// up to `20261125000007`) upgrades in place when the server starts: every later
    /// migration applies, the rows are kept, and the new columns read as their defaults.
    #[tokio::test]
    async fn a_database_from_the_previous_release_upgrades_with_its_data() {
        let dir = tempfile::tempdir().unwrap();
        let released = dir.path().join("released-migrations");
        std::fs::create_dir(&released).unwrap();
        let all = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations");
        let mut copied = 0;
        for entry in std::fs::read_dir(&all).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.as_str() < "20261125000008" {
                std::fs::copy(&path, released.join(&name)).unwrap();
                copied += 1;
            }
        }
        assert_eq!(copied, 7, "the previous release's migrations");
        let url = format!("sqlite://{}/nixdeck.db", dir.path().display());
        {
            let options = SqliteConnectOptions::from_str(&url)
                .unwrap()
                .create_if_missing(true);
            let pool = SqlitePool::connect_with(options).await.unwrap();
            sqlx::migrate::Migrator::new(released.as_path())
                .await
                .unwrap()
                .run(&pool)
                .await
                .unwrap();
            sqlx::raw_sql(
                "INSERT INTO users (username, password_hash, role, disabled, created_at, totp_secret)
                     VALUES ('ann', 'hash', 'operator', FALSE, 10, 'JBSWY3DPEHPK3PXP');
                 INSERT INTO recovery_codes (username, code_hash) VALUES ('ann', 'abc123');
                 INSERT INTO sessions (id_hash, username, csrf_token, created_at, last_seen_at)
                     VALUES ('s1', 'ann', 'csrf', 20, 30);
                 INSERT INTO hosts (id, hostname, host_type, theme_color, token_hash, created_at, last_seen)
                     VALUES ('web-1', 'web-1', 'nixos', '#7aa2f7', 'tok', 5, 40);
                 INSERT INTO commands (id, host_id, command, status, queued_at, last_seq, completed, queued_order)
                     VALUES ('c1', 'web-1', 'pull', 'ok', 50, 1, TRUE, 1);
                 INSERT INTO command_output (command_id, seq, stream, line, at)
                     VALUES ('c1', 1, 'stdout', 'Already up to date.', 51);
                 INSERT INTO deploy_jobs (id, pr_number, started_by, request, phase, hosts, message, active, created_at, updated_at)
                     VALUES ('j1', 7, 'ann', '{\"pr_number\":7}', 'done', '{\"web-1\":\"ok\"}', 'Deployed', FALSE, 60, 61);",
            )
            .execute(&pool)
            .await
            .unwrap();
            pool.close().await;
        }

        let db = Db::connect(&url).await.unwrap();
        let hosts = db.hosts().await.unwrap();
        assert_eq!(hosts.len(), 1);
        assert_eq!(hosts[0].host.id, "web-1");
        assert!(
            !hosts[0].host.pending_approval,
            "hosts from before were all approved"
        );
        assert_eq!(
            (hosts[0].host.generations.len(), hosts[0].host.reboot_needed),
            (0, false),
            "no generations reported yet"
        );
        assert_eq!(
            db.host_for_token("tok").await.unwrap().as_deref(),
            Some("web-1")
        );
        let session = db
            .session("s1")
            .await
            .unwrap()
            .expect("the session is kept");
        assert_eq!(
            (session.username.as_str(), session.role.as_str()),
            ("ann", "operator")
        );
        assert_eq!(
            session.authenticated_at, 0,
            "an old login counts as long ago"
        );
        let user = db.user("ann").await.unwrap().expect("the user is kept");
        assert_eq!(user.password_hash, "hash");
        let totp = db.totp("ann").await.unwrap().unwrap();
        assert_eq!(
            totp.secret.as_deref(),
            Some("JBSWY3DPEHPK3PXP"),
            "sealed at start, not here"
        );
        let command = db
            .command("c1")
            .await
            .unwrap()
            .expect("the command is kept");
        assert_eq!((command.status, command.last_seq), (CommandStatus::Ok, 1));
        assert_eq!(command.result, None, "commands from before have no result");
        let lines = db.output_page("c1", 0, 10).await.unwrap();
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].line, "Already up to date.");
        let job = db.deploy("j1").await.unwrap().expect("the deploy is kept");
        assert_eq!(
            (job.phase, job.hosts["web-1"], job.previews.len()),
            (DeployPhase::Done, DeployHostState::Ok, 0),
            "deploys from before previewed nothing"
        );
        assert_eq!(
            db.deploy_resume("j1").await.unwrap(),
            Some(DeployResume {
                request: r#"{"pr_number":7}"#.to_owned(),
                confirm_by: None
            })
        );
    }
}
