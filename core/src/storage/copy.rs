//! `nixdeck db copy`: every row of a SQLite database into an empty PostgreSQL database, for
//! an operator who started on SQLite and moves to PostgreSQL (docs/SCALING.md, "Moving from
//! SQLite").
//!
//! - Both databases are migrated first (`Db::connect`): the source to this version's SQLite
//!   schema, the target to its PostgreSQL schema. `tests::both_schemas_have_the_same_columns`
//!   keeps the two equal, so a table's columns are read from the target's catalog and
//!   selected by name on the source: no column list is written here.
//! - Every table is either copied (`COPIED`, in an order where a table comes after the ones
//!   its foreign keys name) or skipped with the reason (`SKIPPED`). A table in the schema
//!   that is in neither list stops the copy before anything is written, so a new migration
//!   cannot be left behind silently.
//! - The target must be empty (no row in any copied table, and no table at all unless it
//!   is a nixdeck database already) and no server may hold a lease on either side (a
//!   running dashboard renews `replica:<name>` every few seconds, on SQLite too): refused
//!   with the reason, nothing written (these checks come before either side is migrated,
//!   and again inside the copy's transaction).
//! - The source is read in one read transaction (one snapshot); the target is written in one
//!   transaction, committed only after every table's row count matched the source's and
//!   every sequence was moved past the copied numbers. A failure leaves the target empty.
//! - Rows stream: the source's rows arrive through sqlx's bounded row channel and go out in
//!   batches of at most `BATCH_ROWS` rows or `BATCH_BYTES` of text, as one
//!   `INSERT … SELECT * FROM UNNEST($1::bigint[], $2::text[], …)` each: one array per
//!   column, so a batch's size is not bounded by PostgreSQL's 65 535 parameters, and memory
//!   stays at one batch whatever the size of `command_output`.

use super::{Backend, Db};
use anyhow::{anyhow, bail, Context};
use futures::TryStreamExt;
use sqlx::postgres::{PgConnectOptions, Postgres};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, Row};
use std::collections::BTreeSet;
use std::str::FromStr;

/// The tables copied, in order: users before the rows that name a user (sessions, recovery
/// codes, API tokens), deploy jobs before `deploy_commands`, notification targets and rules
/// before their links, outbox and delivery log.
pub const COPIED: &[&str] = &[
    "users",
    "recovery_codes",
    "sessions",
    "api_tokens",
    "hosts",
    "commands",
    "command_output",
    "deploy_jobs",
    "deploy_commands",
    "audit",
    "settings",
    "metrics_history",
    "notify_targets",
    "notify_rules",
    "notify_rule_targets",
    "notify_outbox",
    "notify_deliveries",
];

/// The tables left behind, and why: what they hold is about servers that are running, and
/// is made again by the servers that start on the target.
pub const SKIPPED: &[(&str, &str)] = &[
    (
        "leases",
        "which server is alive and which one leads: a copied lease would name a server that \
         does not run on the target (the servers started there take their own)",
    ),
    (
        "login_failures",
        "failed-login counters that expire within minutes (on SQLite the limits are kept in \
         memory and this table stays empty)",
    ),
    (
        "bus_events",
        "events between servers on PostgreSQL, deleted a minute after they are written (always \
         empty on SQLite)",
    ),
];

/// Sequences that belong to no identity column, with the column whose numbers they draw
/// (`Backend::next_queued_order`). Identity columns are found in the catalog.
const FREE_SEQUENCES: &[(&str, &str, &str)] =
    &[("commands_queued_order_seq", "commands", "queued_order")];

/// A batch sent to PostgreSQL holds at most this many rows…
const BATCH_ROWS: usize = 5_000;
/// …or about this many bytes of text (output lines are up to 64 KiB each: 5 000 of them
/// would be 320 MB).
const BATCH_BYTES: usize = 8 << 20;
/// A large table reports its progress every this many rows.
const PROGRESS_EVERY: u64 = 100_000;

/// What the copy reports while it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// `rows` of the table's `of` rows are in the target (at the end of the table, and every
    /// `PROGRESS_EVERY` rows of a large one).
    Rows {
        table: &'static str,
        rows: u64,
        of: u64,
    },
    /// A sequence now starts at `next`.
    Sequence { name: String, next: i64 },
}

/// What was copied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopySummary {
    /// Every table of `COPIED`, with its row count (the same on both sides).
    pub tables: Vec<(&'static str, u64)>,
    /// Every sequence moved, with the number it draws next.
    pub sequences: Vec<(String, i64)>,
    /// Text values that held a NUL character, which PostgreSQL's text cannot hold: each NUL
    /// became U+FFFD (an agent's output can hold one; SQLite stores it as is).
    pub nul_replaced: u64,
}

/// `--from`: a SQLite URL (`sqlite:…`) or a plain file path. A PostgreSQL URL or another
/// scheme is refused with the reason.
pub fn source_url(from: &str) -> anyhow::Result<String> {
    let trimmed = from.trim();
    let lower = trimmed.to_ascii_lowercase();
    if lower.starts_with("sqlite:") {
        return Ok(trimmed.to_owned());
    }
    if Backend::of_url(trimmed) == Backend::Postgres {
        bail!(
            "the source must be a SQLite database (sqlite://PATH or a file path); {} is \
             PostgreSQL's",
            super::shown_url(trimmed)
        );
    }
    if let Some((scheme, _)) = lower.split_once("://") {
        bail!(
            "the source must be a SQLite database (sqlite://PATH or a file path), not {scheme}://"
        );
    }
    if trimmed.is_empty() {
        bail!("the source is empty: give a SQLite database (sqlite://PATH or a file path)");
    }
    Ok(format!("sqlite://{trimmed}"))
}

/// `--to`: a PostgreSQL URL; anything else is refused with the reason.
pub fn target_url(to: &str) -> anyhow::Result<String> {
    let trimmed = to.trim();
    if Backend::of_url(trimmed) != Backend::Postgres {
        bail!(
            "the target must be a PostgreSQL database (postgres://USER@HOST/DATABASE), not {}",
            super::shown_url(trimmed)
        );
    }
    Ok(trimmed.to_owned())
}

/// Copy every row of the SQLite database at `from` into the empty PostgreSQL database at
/// `to` (URLs as `source_url` and `target_url` return them), telling `progress` as it goes.
/// See the module docs for what is checked and refused.
pub async fn sqlite_to_postgres(
    from: &str,
    to: &str,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> anyhow::Result<CopySummary> {
    let from = source_url(from)?;
    let to = target_url(to)?;
    let file = super::database_file(&from).ok_or_else(|| {
        anyhow!("the source must be a SQLite file, not an in-memory database ({from})")
    })?;
    if !file.is_file() {
        bail!("the source {} does not exist", file.display());
    }
    // Before migrating: a dashboard still running on the file would have its schema changed
    // under it, and would go on writing after the copy read its rows.
    if let Some(live) = live_leases_in_file(&from).await? {
        bail!(
            "a dashboard is running on {}: {live}. Stop it first (a server that was killed lets \
             go when its lease runs out)",
            file.display()
        );
    }
    check_target_before_migrating(&to).await?;
    // Migrated through the server's own path, then closed: SQLite checkpoints its
    // write-ahead log and removes it when the last connection closes, leaving the file as
    // a server of its own would.
    for (url, what) in [(&from, "source"), (&to, "target")] {
        let db = Db::connect(url).await.with_context(|| {
            format!("opening and migrating the {what} {}", super::shown_url(url))
        })?;
        on_pool!(db, pool => pool.close().await);
    }
    // The copy's own connections, logging no statements (reading a table of a million
    // lines is one statement, which sqlx would report as slow). The source's only reads,
    // but is not opened read-only: closing it then checkpoints and removes the write-ahead
    // log, which a read-only connection leaves behind.
    let mut source = sqlx::SqliteConnection::connect_with(
        &SqliteConnectOptions::from_str(&from)?.disable_statement_logging(),
    )
    .await
    .with_context(|| format!("opening the source {from}"))?;
    let mut target = sqlx::PgConnection::connect_with(
        &PgConnectOptions::from_str(&to)?.disable_statement_logging(),
    )
    .await
    .with_context(|| format!("opening the target {}", super::shown_url(&to)))?;
    let copied = copy(&mut source, &mut target, progress).await;
    source.close().await?;
    target.close().await?;
    copied
}

/// The leases held now in the SQLite database at `url`, described; None when there are
/// none (or the database predates leases). Opened read-only: nothing is written before the
/// checks pass.
async fn live_leases_in_file(url: &str) -> anyhow::Result<Option<String>> {
    let options = SqliteConnectOptions::from_str(url)?.read_only(true);
    let mut conn = sqlx::SqliteConnection::connect_with(&options)
        .await
        .with_context(|| format!("opening the source {url}"))?;
    let has_leases: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'leases')",
    )
    .fetch_one(&mut conn)
    .await?;
    let live = if has_leases {
        describe_leases(
            sqlx::query_as(live_leases_sql(Backend::Sqlite))
                .fetch_all(&mut conn)
                .await?,
        )
    } else {
        None
    };
    conn.close().await?;
    Ok(live)
}

/// What can be checked on the target before its schema is made: a database that holds
/// tables but no nixdeck schema is something else's (a wrong name in `--to`), and is left
/// as it is; one with a server running on it is refused before a migration could change the
/// schema under that server. The same checks run again in the copy's transaction.
async fn check_target_before_migrating(url: &str) -> anyhow::Result<()> {
    let options = PgConnectOptions::from_str(url)?.disable_statement_logging();
    let mut conn = sqlx::PgConnection::connect_with(&options)
        .await
        .with_context(|| format!("opening the target {}", super::shown_url(url)))?;
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables
         WHERE table_schema = current_schema() ORDER BY table_name",
    )
    .fetch_all(&mut conn)
    .await?;
    let has = |name: &str| tables.iter().any(|t| t == name);
    let refusal = if !tables.is_empty() && !has("_sqlx_migrations") {
        let shown: Vec<&str> = tables.iter().take(5).map(String::as_str).collect();
        Some(format!(
            "the target {} holds tables that are not nixdeck's ({}{}): give the copy a new,              empty database (CREATE DATABASE …). Nothing was written",
            super::shown_url(url),
            shown.join(", "),
            if tables.len() > shown.len() { ", …" } else { "" }
        ))
    } else if has("leases") {
        let held = sqlx::query_as(live_leases_sql(Backend::Postgres))
            .fetch_all(&mut conn)
            .await?;
        describe_leases(held).map(|live| {
            format!(
                "a dashboard is running on the target: {live}. Stop every server that uses                  it first"
            )
        })
    } else {
        None
    };
    conn.close().await?;
    match refusal {
        Some(refusal) => Err(anyhow!(refusal)),
        None => Ok(()),
    }
}

/// The statement that reads the leases held now: name, holder, milliseconds left.
fn live_leases_sql(backend: Backend) -> sqlx::SqlStr {
    let now = backend.now_ms();
    super::composed(format!(
        "SELECT name, holder, expires_at - {now} FROM leases WHERE expires_at > {now} ORDER BY name"
    ))
}

/// The leases held now, described (`lease replica:web-1 held by web-1 for 12 s more`); None
/// when none is.
fn describe_leases(held: Vec<(String, String, i64)>) -> Option<String> {
    if held.is_empty() {
        return None;
    }
    let described: Vec<String> = held
        .iter()
        .map(|(name, holder, left_ms)| {
            format!(
                "lease {name} held by {holder} for {} s more",
                (left_ms + 999) / 1000
            )
        })
        .collect();
    Some(described.join(", "))
}

/// A column's type on PostgreSQL, as the copy reads it from SQLite and binds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    BigInt,
    Integer,
    SmallInt,
    Boolean,
    Text,
}

impl Kind {
    fn of(data_type: &str) -> Option<Kind> {
        Some(match data_type {
            "bigint" => Kind::BigInt,
            "integer" => Kind::Integer,
            "smallint" => Kind::SmallInt,
            "boolean" => Kind::Boolean,
            "text" => Kind::Text,
            _ => return None,
        })
    }

    fn array(self) -> &'static str {
        match self {
            Kind::BigInt => "bigint[]",
            Kind::Integer => "integer[]",
            Kind::SmallInt => "smallint[]",
            Kind::Boolean => "boolean[]",
            Kind::Text => "text[]",
        }
    }
}

/// One column of a batch, as the array bound for it.
enum Values {
    BigInt(Vec<Option<i64>>),
    Integer(Vec<Option<i32>>),
    SmallInt(Vec<Option<i16>>),
    Boolean(Vec<Option<bool>>),
    Text(Vec<Option<String>>),
}

impl Values {
    fn new(kind: Kind) -> Values {
        match kind {
            Kind::BigInt => Values::BigInt(Vec::new()),
            Kind::Integer => Values::Integer(Vec::new()),
            Kind::SmallInt => Values::SmallInt(Vec::new()),
            Kind::Boolean => Values::Boolean(Vec::new()),
            Kind::Text => Values::Text(Vec::new()),
        }
    }

    /// Appends the row's value at `index`; the bytes of text it added, and whether a NUL
    /// was replaced.
    fn push(
        &mut self,
        row: &sqlx::sqlite::SqliteRow,
        index: usize,
    ) -> Result<(usize, bool), sqlx::Error> {
        Ok(match self {
            Values::BigInt(v) => {
                v.push(row.try_get(index)?);
                (0, false)
            }
            Values::Integer(v) => {
                let value: Option<i64> = row.try_get(index)?;
                v.push(
                    value
                        .map(i32::try_from)
                        .transpose()
                        .map_err(super::decode_error)?,
                );
                (0, false)
            }
            Values::SmallInt(v) => {
                let value: Option<i64> = row.try_get(index)?;
                v.push(
                    value
                        .map(i16::try_from)
                        .transpose()
                        .map_err(super::decode_error)?,
                );
                (0, false)
            }
            Values::Boolean(v) => {
                v.push(row.try_get(index)?);
                (0, false)
            }
            Values::Text(v) => {
                let mut value: Option<String> = row.try_get(index)?;
                let mut replaced = false;
                if let Some(text) = value.as_mut().filter(|t| t.contains('\0')) {
                    *text = text.replace('\0', "\u{FFFD}");
                    replaced = true;
                }
                let bytes = value.as_ref().map_or(0, String::len);
                v.push(value);
                (bytes, replaced)
            }
        })
    }

    fn bind<'q>(
        self,
        query: sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
        match self {
            Values::BigInt(v) => query.bind(v),
            Values::Integer(v) => query.bind(v),
            Values::SmallInt(v) => query.bind(v),
            Values::Boolean(v) => query.bind(v),
            Values::Text(v) => query.bind(v),
        }
    }
}

/// An identifier from the schema's catalog, quoted (the schema's names are plain lower-case
/// words; anything else is refused rather than escaped).
fn quoted(name: &str) -> anyhow::Result<String> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        bail!("unexpected name {name:?} in the schema");
    }
    Ok(format!("\"{name}\""))
}

async fn copy(
    source: &mut sqlx::SqliteConnection,
    target: &mut sqlx::PgConnection,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> anyhow::Result<CopySummary> {
    let mut write = target.begin().await?;
    // Two copies into one database at once wait for each other; the second then finds the
    // first's rows and is refused.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('nixdeck.db_copy'))")
        .execute(&mut *write)
        .await?;
    let held = sqlx::query_as(live_leases_sql(Backend::Postgres))
        .fetch_all(&mut *write)
        .await?;
    if let Some(live) = describe_leases(held) {
        bail!(
            "a dashboard is running on the target: {live}. Stop every server that uses it \
             first"
        );
    }

    let tables: BTreeSet<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables
         WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'
           AND table_name NOT LIKE '\\_sqlx%' ESCAPE '\\'",
    )
    .fetch_all(&mut *write)
    .await?
    .into_iter()
    .collect();
    let known: BTreeSet<String> = COPIED
        .iter()
        .copied()
        .chain(SKIPPED.iter().map(|(t, _)| *t))
        .map(str::to_owned)
        .collect();
    let unknown: Vec<&String> = tables.difference(&known).collect();
    let missing: Vec<&String> = known.difference(&tables).collect();
    if !unknown.is_empty() || !missing.is_empty() {
        bail!(
            "the copy does not know this schema (tables it has not classified: {unknown:?}; \
             tables it expects but did not find: {missing:?}): core/src/storage/copy.rs says \
             for each table whether it is copied"
        );
    }

    let mut holding = Vec::new();
    for table in COPIED {
        let rows: i64 = sqlx::query_scalar(super::composed(format!(
            "SELECT COUNT(*) FROM {}",
            quoted(table)?
        )))
        .fetch_one(&mut *write)
        .await?;
        if rows > 0 {
            holding.push(format!("{table}: {rows}"));
        }
    }
    if !holding.is_empty() {
        bail!(
            "the target already holds data ({}), and the copy fills an empty database only: \
             give it a new database (CREATE DATABASE …), and start no server on it before the \
             copy (a first start creates the admin user). Nothing was written",
            holding.join(", ")
        );
    }

    // One snapshot of the source: every table as it was at the first read.
    let mut read = source.begin().await?;
    let mut summary = CopySummary::default();
    for &table in COPIED {
        let columns: Vec<(String, String)> = sqlx::query_as(
            "SELECT column_name::text, data_type::text FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
        )
        .bind(table)
        .fetch_all(&mut *write)
        .await?;
        let mut kinds = Vec::new();
        let mut names = Vec::new();
        for (name, data_type) in &columns {
            kinds.push(Kind::of(data_type).ok_or_else(|| {
                anyhow!("{table}.{name} is {data_type} on PostgreSQL: say in core/src/storage/copy.rs how to copy it")
            })?);
            names.push(quoted(name)?);
        }
        let names = names.join(", ");
        let arrays: Vec<String> = kinds
            .iter()
            .enumerate()
            .map(|(i, kind)| format!("${}::{}", i + 1, kind.array()))
            .collect();
        let insert = format!(
            "INSERT INTO {} ({names}) SELECT * FROM UNNEST({})",
            quoted(table)?,
            arrays.join(", ")
        );

        let of: i64 = sqlx::query_scalar(super::composed(format!(
            "SELECT COUNT(*) FROM {}",
            quoted(table)?
        )))
        .fetch_one(&mut *read)
        .await?;
        let of = of as u64;
        let mut batch: Vec<Values> = kinds.iter().map(|k| Values::new(*k)).collect();
        let (mut in_batch, mut bytes, mut rows) = (0usize, 0usize, 0u64);
        let select = super::composed(format!("SELECT {names} FROM {}", quoted(table)?));
        let mut stream = sqlx::query(select).fetch(&mut *read);
        loop {
            let row = stream
                .try_next()
                .await
                .with_context(|| format!("reading {table} from the source"))?;
            let end = row.is_none();
            if let Some(row) = row {
                for (i, values) in batch.iter_mut().enumerate() {
                    let (added, replaced) = values.push(&row, i).with_context(|| {
                        format!("reading {table}.{} of the source", columns[i].0)
                    })?;
                    bytes += added;
                    summary.nul_replaced += u64::from(replaced);
                }
                in_batch += 1;
            }
            if in_batch > 0 && (end || in_batch >= BATCH_ROWS || bytes >= BATCH_BYTES) {
                let full =
                    std::mem::replace(&mut batch, kinds.iter().map(|k| Values::new(*k)).collect());
                let mut query = sqlx::query(super::composed(insert.clone()));
                for values in full {
                    query = values.bind(query);
                }
                query
                    .execute(&mut *write)
                    .await
                    .with_context(|| format!("writing {table} to the target"))?;
                let before = rows;
                rows += in_batch as u64;
                (in_batch, bytes) = (0, 0);
                if before / PROGRESS_EVERY != rows / PROGRESS_EVERY && rows < of {
                    progress(Progress::Rows { table, rows, of });
                }
            }
            if end {
                break;
            }
        }
        drop(stream);

        let written: i64 = sqlx::query_scalar(super::composed(format!(
            "SELECT COUNT(*) FROM {}",
            quoted(table)?
        )))
        .fetch_one(&mut *write)
        .await?;
        if written as u64 != of || rows != of {
            bail!(
                "{table}: the source has {of} rows, {rows} were read and the target holds \
                 {written}; nothing was written"
            );
        }
        progress(Progress::Rows { table, rows, of });
        summary.tables.push((table, rows));
    }
    read.rollback().await?;

    summary.sequences = reset_sequences(&mut write, progress).await?;
    write.commit().await?;
    Ok(summary)
}

/// Moves every sequence past the numbers copied (the copy wrote the ids themselves, so the
/// sequences still start at 1): each draws the highest copied value + 1 next. A sequence
/// this does not know stops the copy.
async fn reset_sequences(
    write: &mut sqlx::PgConnection,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> anyhow::Result<Vec<(String, i64)>> {
    let mut owners: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT pg_get_serial_sequence(quote_ident(table_name), column_name)::text,
                table_name::text, column_name::text
         FROM information_schema.columns
         WHERE table_schema = current_schema()
           AND (is_identity = 'YES' OR column_default LIKE 'nextval(%')
         ORDER BY table_name, column_name",
    )
    .fetch_all(&mut *write)
    .await?;
    for (sequence, table, column) in FREE_SEQUENCES {
        let name: String = sqlx::query_scalar("SELECT current_schema() || '.' || $1")
            .bind(sequence)
            .fetch_one(&mut *write)
            .await?;
        owners.push((name, (*table).to_owned(), (*column).to_owned()));
    }
    let all: BTreeSet<String> = sqlx::query_scalar(
        "SELECT schemaname::text || '.' || sequencename::text FROM pg_sequences
         WHERE schemaname = current_schema()",
    )
    .fetch_all(&mut *write)
    .await?
    .into_iter()
    .collect();
    let known: BTreeSet<String> = owners.iter().map(|(s, _, _)| s.clone()).collect();
    let unknown: Vec<&String> = all.difference(&known).collect();
    if !unknown.is_empty() {
        bail!(
            "sequences the copy does not know: {unknown:?} (core/src/storage/copy.rs: \
             FREE_SEQUENCES names the column each one numbers)"
        );
    }
    let mut moved = Vec::new();
    for (sequence, table, column) in owners {
        let next: i64 = sqlx::query_scalar(super::composed(format!(
            "SELECT setval($1::regclass, (SELECT COALESCE(MAX({}), 0) + 1 FROM {}), false)",
            quoted(&column)?,
            quoted(&table)?
        )))
        .bind(&sequence)
        .fetch_one(&mut *write)
        .await?;
        progress(Progress::Sequence {
            name: sequence.clone(),
            next,
        });
        moved.push((sequence, next));
    }
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::super::testing::TestBackend;
    use super::super::Pool;
    use super::*;
    use protocol::api::AuditEntry;
    use protocol::{CommandKind, Timestamp};

    /// Output lines in the source: more than one batch.
    const LINES: i64 = BATCH_ROWS as i64 * 2 + 7;

    /// A SQLite database with rows in every copied table: NULLs, TRUE and FALSE, a NUL
    /// character in an output line, the largest BIGINT, and `LINES` output lines.
    async fn source(dir: &std::path::Path) -> String {
        let url = format!("sqlite://{}/deck.db", dir.display());
        let db = Db::connect(&url).await.unwrap();
        let Pool::Sqlite(pool) = db.pool() else {
            unreachable!()
        };
        sqlx::raw_sql(sqlx::AssertSqlSafe(
            "INSERT INTO users (username, password_hash, role, disabled, created_at, totp_secret, totp_pending, totp_last_step, theme)
                 VALUES ('ann', 'hash-a', 'admin', FALSE, 10, 'sealed', NULL, 9223372036854775807, 'dark'),
                        ('bob', 'hash-b', 'viewer', TRUE, 11, NULL, 'pending', NULL, 'system');
             INSERT INTO recovery_codes (username, code_hash, used, salt) VALUES ('ann', 'c1', TRUE, 's1'), ('ann', 'c2', FALSE, NULL);
             INSERT INTO sessions (id_hash, username, csrf_token, created_at, last_seen_at, ip, authenticated_at)
                 VALUES ('sid', 'ann', 'csrf', 20, 30, NULL, 25);
             INSERT INTO api_tokens (id, username, name, role, token_hash, created_at, expires_at, last_used_at)
                 VALUES ('t1', 'ann', 'ci', 'operator', 'th', 40, NULL, 41);
             INSERT INTO hosts (id, hostname, host_type, theme_color, token_hash, created_at, last_seen, pending_approval, reboot_needed, tags, agent_tags, metrics)
                 VALUES ('web-1', 'web-1', 'nixos', '#7aa2f7', 'tok', 5, 40, FALSE, TRUE, '[\"prod\"]', '[\"eu\"]', '{\"cpu\":1.5}');
             INSERT INTO commands (id, host_id, command, status, exit_code, queued_at, started_at, finished_at, duration_ms, last_seq, completed, requested_by, queued_order, output_bytes, result)
                 VALUES ('c1', 'web-1', 'pull', 'ok', 0, 50, 51, 52, 1000, 3, TRUE, 'ann', 41, 99, NULL),
                        ('c2', 'gone', 'switch', 'queued', NULL, 60, NULL, NULL, NULL, 0, FALSE, NULL, 42, 0, NULL);
             INSERT INTO command_output (command_id, seq, stream, line, at)
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
                 SELECT 'c1', i, CASE WHEN i % 2 = 0 THEN 'stderr' ELSE 'stdout' END,
                        CASE WHEN i = 2 THEN 'a' || char(0) || 'b' ELSE 'line ' || i END, 51
                 FROM n WHERE i <= (SELECT value FROM lines);
             INSERT INTO deploy_jobs (id, pr_number, started_by, request, phase, hosts, message, active, created_at, updated_at, previews, confirm_by, replica)
                 VALUES ('j1', 7, 'ann', '{}', 'done', '{\"web-1\":\"ok\"}', 'Deployed', FALSE, 60, 61, '{}', NULL, 'r1');
             INSERT INTO deploy_commands (deploy_id, command_id) VALUES ('j1', 'c1');
             INSERT INTO audit (id, at, actor, ip, action, target, result, detail, token)
                 VALUES (1, 70, 'ann', '10.0.0.1', 'login', NULL, 'ok', NULL, NULL), (17, 71, 'cli', NULL, 'token.create', 't1', 'ok', 'd', 'ci');
             INSERT INTO settings (key, value) VALUES ('desired_state', '{\"rev\":\"abc\"}');
             INSERT INTO metrics_history (host_id, tier, bucket_start, n, cpu, ram, swap, load, disk_n, disk)
                 VALUES ('web-1', 2, 3600, 60, 1, 2, 3, 4, 5, 6);
             INSERT INTO notify_targets (id, name, kind, url_sealed, url_shown, settings, secret_sealed, created_at)
                 VALUES ('nt', 'hook', 'webhook', 'sealed-url', 'https://example.org', '{}', NULL, 80);
             INSERT INTO notify_rules (id, event, after_s, scope, cooldown_s, quiet_from, quiet_to, created_at)
                 VALUES ('nr', 'host_offline', 60, '{}', 300, '22:00', '07:00', 81);
             INSERT INTO notify_rule_targets (rule_id, target_id) VALUES ('nr', 'nt');
             INSERT INTO notify_outbox (message_id, target_id, seq, body, attempts, created_at, next_attempt_ms)
                 VALUES ('m1', 'nt', 1, '{\"text\":\"web-1 offline\"}', 2, 82, 83000);
             INSERT INTO notify_deliveries (id, target_id, message_id, event, attempt, status, error, at_ms)
                 VALUES ('d1', 'nt', 'm1', 'host_offline', 1, 'failed', 'HTTP 500', 82500);"
                .replace("(SELECT value FROM lines)", &LINES.to_string())
                .as_str(),
        ))
        .execute(pool)
        .await
        .unwrap();
        pool.close().await;
        url
    }

    /// A table's rows, each as text column by column (booleans as true/false), sorted:
    /// read from either database with the target's column kinds.
    async fn rows(db: &Db, table: &str, kinds: &[(String, Kind)]) -> Vec<String> {
        let names: Vec<&str> = kinds.iter().map(|(n, _)| n.as_str()).collect();
        let sql = format!("SELECT {} FROM {table}", names.join(", "));
        fn show<'r, R: Row>(row: &'r R, kinds: &[(String, Kind)]) -> String
        where
            usize: sqlx::ColumnIndex<R>,
            Option<i64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
            Option<i32>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
            Option<i16>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
            Option<bool>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
            Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        {
            let cells: Vec<String> = kinds
                .iter()
                .enumerate()
                .map(|(i, (_, kind))| match kind {
                    Kind::BigInt => format!("{:?}", row.get::<Option<i64>, _>(i)),
                    Kind::Integer => format!("{:?}", row.get::<Option<i32>, _>(i)),
                    Kind::SmallInt => format!("{:?}", row.get::<Option<i16>, _>(i)),
                    Kind::Boolean => format!("{:?}", row.get::<Option<bool>, _>(i)),
                    Kind::Text => format!(
                        "{:?}",
                        row.get::<Option<String>, _>(i)
                            .map(|t| t.replace('\0', "\u{FFFD}"))
                    ),
                })
                .collect();
            cells.join("|")
        }
        let mut shown: Vec<String> = match db.pool() {
            Pool::Sqlite(pool) => sqlx::query(super::super::composed(sql))
                .fetch_all(pool)
                .await
                .unwrap()
                .iter()
                .map(|r| show(r, kinds))
                .collect(),
            Pool::Postgres(pool) => sqlx::query(super::super::composed(sql))
                .fetch_all(pool)
                .await
                .unwrap()
                .iter()
                .map(|r| show(r, kinds))
                .collect(),
        };
        shown.sort();
        shown
    }

    async fn kinds(target: &Db, table: &str) -> Vec<(String, Kind)> {
        let Pool::Postgres(pool) = target.pool() else {
            unreachable!()
        };
        let columns: Vec<(String, String)> = sqlx::query_as(
            "SELECT column_name::text, data_type::text FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
        )
        .bind(table)
        .fetch_all(pool)
        .await
        .unwrap();
        columns
            .into_iter()
            .map(|(n, t)| (n, Kind::of(&t).unwrap()))
            .collect()
    }

    async fn counts(db: &Db) -> Vec<i64> {
        let mut counts = Vec::new();
        for table in COPIED {
            let sql = super::super::composed(format!("SELECT COUNT(*) FROM {table}"));
            counts
                .push(on_pool!(db, pool => sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()));
        }
        counts
    }

    /// Every row of every copied table arrives as it was (a NUL as U+FFFD), the sequences
    /// draw past the copied numbers, and a second copy into the now full target is refused
    /// without changing it.
    #[tokio::test]
    async fn every_row_arrives_and_the_target_takes_new_rows() {
        let Some(TestBackend::Postgres(server)) = TestBackend::postgres() else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let from = source(dir.path()).await;
        let to = super::super::testing::fresh_postgres_database(&server)
            .await
            .unwrap();
        let mut seen = Vec::new();
        let summary = sqlite_to_postgres(&from, &to, &mut |p| seen.push(p))
            .await
            .unwrap();

        let (source, target) = (
            Db::connect(&from).await.unwrap(),
            Db::connect(&to).await.unwrap(),
        );
        for (table, copied) in &summary.tables {
            let kinds = kinds(&target, table).await;
            let before = rows(&source, table, &kinds).await;
            assert!(!before.is_empty(), "the test fills {table}");
            assert_eq!(before.len() as u64, *copied, "{table}");
            assert_eq!(rows(&target, table, &kinds).await, before, "{table}");
        }
        assert_eq!(
            summary.tables.iter().map(|(t, _)| *t).collect::<Vec<_>>(),
            COPIED
        );
        assert_eq!(summary.nul_replaced, 1);
        assert!(seen.contains(&Progress::Rows {
            table: "command_output",
            rows: LINES as u64,
            of: LINES as u64
        }));
        let lines = target.output_page("c1", 1, 2).await.unwrap();
        assert_eq!(lines[0].line, "a\u{FFFD}b");

        // New rows take numbers after the copied ones.
        let mut moved = summary.sequences.clone();
        moved.sort();
        assert_eq!(
            moved,
            vec![
                ("public.audit_id_seq".to_owned(), 18),
                ("public.bus_events_id_seq".to_owned(), 1),
                ("public.commands_queued_order_seq".to_owned(), 43),
            ]
        );
        target
            .insert_audit(&AuditEntry {
                at: Timestamp(90),
                actor: "ann".into(),
                ip: None,
                action: "login".into(),
                target: None,
                result: "ok".into(),
                detail: None,
                token: None,
            })
            .await
            .expect("a new audit row gets an id of its own");
        target
            .insert_command("c3", "web-1", CommandKind::Test, Timestamp(95), "ann")
            .await
            .unwrap();
        let history = target.history("web-1", 10).await.unwrap();
        assert_eq!(history[0].id, "c3", "{history:?}");
        let order: i64 = on_pool!(target, pool => sqlx::query_scalar("SELECT queued_order FROM commands WHERE id = 'c3'").fetch_one(pool).await.unwrap());
        assert_eq!(order, 43);

        // A second copy finds the rows and writes nothing.
        let before = counts(&target).await;
        let err = sqlite_to_postgres(&from, &to, &mut |_| {})
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("already holds data (users: 2, "), "{err}");
        assert_eq!(counts(&target).await, before);
    }

    /// A value PostgreSQL refuses (a tier beyond SMALLINT) stops the copy in the middle, and
    /// the tables copied before it are not left behind.
    #[tokio::test]
    async fn a_failure_leaves_the_target_empty() {
        let Some(TestBackend::Postgres(server)) = TestBackend::postgres() else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let from = source(dir.path()).await;
        {
            let db = Db::connect(&from).await.unwrap();
            on_pool!(db, pool => sqlx::query("UPDATE metrics_history SET tier = 70000").execute(pool).await.map(|_| ()).unwrap());
        }
        let to = super::super::testing::fresh_postgres_database(&server)
            .await
            .unwrap();
        let mut seen = Vec::new();
        let err = sqlite_to_postgres(&from, &to, &mut |p| seen.push(p))
            .await
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("metrics_history.tier"),
            "{err:#}"
        );
        assert!(
            seen.iter().any(|p| matches!(
                p,
                Progress::Rows {
                    table: "command_output",
                    ..
                }
            )),
            "tables before it were copied: {seen:?}"
        );
        let target = Db::connect(&to).await.unwrap();
        assert_eq!(counts(&target).await, vec![0; COPIED.len()]);
    }

    /// A server holding its lease on the source (a dashboard still running) stops the copy
    /// before anything is written; so does one on the target.
    #[tokio::test]
    async fn a_running_dashboard_is_refused() {
        let Some(TestBackend::Postgres(server)) = TestBackend::postgres() else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let from = source(dir.path()).await;
        Db::connect(&from)
            .await
            .unwrap()
            .take_lease("replica:web", "web", std::time::Duration::from_secs(60))
            .await
            .unwrap();
        let to = super::super::testing::fresh_postgres_database(&server)
            .await
            .unwrap();
        let err = sqlite_to_postgres(&from, &to, &mut |_| {})
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("a dashboard is running on")
                && err.contains("lease replica:web held by web"),
            "{err}"
        );
        // Not even migrated: the check comes before the target is opened.
        let pool = sqlx::PgPool::connect(&to).await.unwrap();
        let tables: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema()",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(tables, 0);

        // A server on the target: refused too, and nothing copied.
        Db::connect(&from)
            .await
            .unwrap()
            .release_lease("replica:web", "web")
            .await
            .unwrap();
        let target = Db::connect(&to).await.unwrap();
        target
            .take_lease("replica:pg", "pg", std::time::Duration::from_secs(60))
            .await
            .unwrap();
        let err = sqlite_to_postgres(&from, &to, &mut |_| {})
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("a dashboard is running on the target: lease replica:pg held by pg"),
            "{err}"
        );
        assert_eq!(counts(&target).await, vec![0; COPIED.len()]);
    }

    /// A `--to` that names another application's database (tables, but no nixdeck schema)
    /// is refused before anything is made in it.
    #[tokio::test]
    async fn a_database_of_something_else_is_left_alone() {
        let Some(TestBackend::Postgres(server)) = TestBackend::postgres() else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let from = source(dir.path()).await;
        let to = super::super::testing::fresh_postgres_database(&server)
            .await
            .unwrap();
        let pool = sqlx::PgPool::connect(&to).await.unwrap();
        sqlx::query("CREATE TABLE invoices (id BIGINT PRIMARY KEY)")
            .execute(&pool)
            .await
            .unwrap();
        let err = sqlite_to_postgres(&from, &to, &mut |_| {})
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("holds tables that are not nixdeck's (invoices)"),
            "{err}"
        );
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema()",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(tables, ["invoices"]);
    }

    #[test]
    fn only_sqlite_goes_in_and_only_postgres_comes_out() {
        assert_eq!(source_url("data/deck.db").unwrap(), "sqlite://data/deck.db");
        assert_eq!(
            source_url("/var/lib/deck.db").unwrap(),
            "sqlite:///var/lib/deck.db"
        );
        assert_eq!(source_url("sqlite://x.db").unwrap(), "sqlite://x.db");
        let err = source_url("postgres://deck:s3cret@db/deck")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("must be a SQLite database") && !err.contains("s3cret"),
            "{err}"
        );
        assert!(source_url("mysql://db/deck")
            .unwrap_err()
            .to_string()
            .contains("not mysql://"));
        assert!(source_url(" ").is_err());
        assert_eq!(
            target_url("postgresql://db/deck").unwrap(),
            "postgresql://db/deck"
        );
        let err = target_url("sqlite://x.db").unwrap_err().to_string();
        assert!(err.contains("must be a PostgreSQL database"), "{err}");
    }
}
