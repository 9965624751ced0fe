//! All SQL lives here. The rest of the server sees typed rows and methods, so moving to
//! PostgreSQL later means changing this module (and the pool type) only.

use protocol::api::{AuditEntry, CommandRecord};
use protocol::messages::{DeployPhase, DeployProgress, Output};
use protocol::{CommandKind, CommandStatus, Host, HostType, Metrics, OutputStream, Timestamp};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use std::str::FromStr;
use std::time::Duration;

pub type DbResult<T> = Result<T, sqlx::Error>;

#[derive(Clone)]
pub struct Db {
    pool: SqlitePool,
}

#[derive(Clone, Debug)]
pub struct UserRow {
    pub username: String,
    pub password_hash: String,
    pub role: String,
    pub disabled: bool,
}

#[derive(Clone, Debug)]
pub struct SessionRow {
    pub username: String,
    pub role: String,
    pub csrf_token: String,
    pub created_at: i64,
    pub last_seen_at: i64,
}

/// What a `register` frame tells us about a host; written once per connection.
#[derive(Clone, Debug, Default)]
pub struct HostReport {
    pub hostname: String,
    pub agent_version: Option<String>,
    pub os_version: Option<String>,
    pub nixpkgs_version: Option<String>,
    pub generation: Option<String>,
    pub lock_hash: Option<String>,
    pub repo_url: Option<String>,
    pub repo_dir: Option<String>,
    pub branch: Option<String>,
    pub heartbeat_interval_s: Option<u32>,
}

/// A host as stored: the wire `Host` (offline, no pending command) plus server-only fields.
#[derive(Clone, Debug)]
pub struct HostRecord {
    pub host: Host,
    pub lock_hash: Option<String>,
    pub branch: Option<String>,
}

/// Last-seen and metrics, written in batches instead of once per heartbeat.
#[derive(Clone, Debug)]
pub struct SeenUpdate {
    pub host_id: String,
    pub last_seen: Timestamp,
    pub metrics: Option<Metrics>,
    pub generation: Option<String>,
    pub lock_hash: Option<String>,
}

impl Db {
    /// Open (creating the file and its folder if missing) and migrate.
    pub async fn connect(url: &str) -> Result<Db, sqlx::Error> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        if let Some(parent) = options.get_filename().parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent).map_err(sqlx::Error::Io)?;
            }
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        sqlx::migrate!("../migrations").run(&pool).await?;
        Ok(Db { pool })
    }

    pub async fn ping(&self) -> DbResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
    }

    // ------------------------------------------------------------------ users

    pub async fn count_users(&self) -> DbResult<i64> {
        sqlx::query("SELECT COUNT(*) FROM users")
            .fetch_one(&self.pool)
            .await
            .map(|r| r.get(0))
    }

    pub async fn insert_user(
        &self,
        username: &str,
        password_hash: &str,
        role: &str,
    ) -> DbResult<()> {
        sqlx::query(
            "INSERT INTO users (username, password_hash, role, disabled, created_at) VALUES ($1, $2, $3, FALSE, $4)",
        )
        .bind(username)
        .bind(password_hash)
        .bind(role)
        .bind(Timestamp::now().secs())
        .execute(&self.pool)
        .await
        .map(|_| ())
    }

    pub async fn user(&self, username: &str) -> DbResult<Option<UserRow>> {
        let row = sqlx::query(
            "SELECT username, password_hash, role, disabled FROM users WHERE username = $1",
        )
        .bind(username)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| UserRow {
            username: r.get(0),
            password_hash: r.get(1),
            role: r.get(2),
            disabled: r.get(3),
        }))
    }

    pub async fn users(&self) -> DbResult<Vec<(UserRow, i64)>> {
        let rows = sqlx::query("SELECT username, password_hash, role, disabled, created_at FROM users ORDER BY username")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    UserRow {
                        username: r.get(0),
                        password_hash: r.get(1),
                        role: r.get(2),
                        disabled: r.get(3),
                    },
                    r.get(4),
                )
            })
            .collect())
    }

    pub async fn set_password(&self, username: &str, password_hash: &str) -> DbResult<bool> {
        sqlx::query("UPDATE users SET password_hash = $2 WHERE username = $1")
            .bind(username)
            .bind(password_hash)
            .execute(&self.pool)
            .await
            .map(|r| r.rows_affected() == 1)
    }

    pub async fn set_disabled(&self, username: &str, disabled: bool) -> DbResult<bool> {
        sqlx::query("UPDATE users SET disabled = $2 WHERE username = $1")
            .bind(username)
            .bind(disabled)
            .execute(&self.pool)
            .await
            .map(|r| r.rows_affected() == 1)
    }

    /// End every session of a user (disabled, or a new password).
    pub async fn delete_sessions_of(&self, username: &str) -> DbResult<u64> {
        sqlx::query("DELETE FROM sessions WHERE username = $1")
            .bind(username)
            .execute(&self.pool)
            .await
            .map(|r| r.rows_affected())
    }

    // ------------------------------------------------------------------ sessions

    pub async fn insert_session(
        &self,
        id_hash: &str,
        username: &str,
        csrf: &str,
        ip: Option<&str>,
    ) -> DbResult<()> {
        let now = Timestamp::now().secs();
        sqlx::query(
            "INSERT INTO sessions (id_hash, username, csrf_token, created_at, last_seen_at, ip) VALUES ($1, $2, $3, $4, $4, $5)",
        )
        .bind(id_hash)
        .bind(username)
        .bind(csrf)
        .bind(now)
        .bind(ip)
        .execute(&self.pool)
        .await
        .map(|_| ())
    }

    /// The session with its user, unless the user is disabled.
    pub async fn session(&self, id_hash: &str) -> DbResult<Option<SessionRow>> {
        let row = sqlx::query(
            "SELECT s.username, u.role, s.csrf_token, s.created_at, s.last_seen_at
             FROM sessions s JOIN users u ON u.username = s.username
             WHERE s.id_hash = $1 AND u.disabled = FALSE",
        )
        .bind(id_hash)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| SessionRow {
            username: r.get(0),
            role: r.get(1),
            csrf_token: r.get(2),
            created_at: r.get(3),
            last_seen_at: r.get(4),
        }))
    }

    pub async fn touch_session(&self, id_hash: &str, at: Timestamp) -> DbResult<()> {
        sqlx::query("UPDATE sessions SET last_seen_at = $2 WHERE id_hash = $1")
            .bind(id_hash)
            .bind(at.secs())
            .execute(&self.pool)
            .await
            .map(|_| ())
    }

    pub async fn delete_session(&self, id_hash: &str) -> DbResult<()> {
        sqlx::query("DELETE FROM sessions WHERE id_hash = $1")
            .bind(id_hash)
            .execute(&self.pool)
            .await
            .map(|_| ())
    }

    /// Drop sessions idle since `idle_before` or created before `created_before`.
    pub async fn purge_sessions(&self, idle_before: i64, created_before: i64) -> DbResult<u64> {
        sqlx::query("DELETE FROM sessions WHERE last_seen_at < $1 OR created_at < $2")
            .bind(idle_before)
            .bind(created_before)
            .execute(&self.pool)
            .await
            .map(|r| r.rows_affected())
    }

    // ------------------------------------------------------------------ hosts

    const HOST_COLUMNS: &'static str =
        "id, hostname, host_type, theme_color, location, device_type, \
        agent_version, os_version, nixpkgs_version, generation, lock_hash, repo_url, repo_dir, \
        branch, last_seen, metrics";

    fn host_from_row(r: &sqlx::sqlite::SqliteRow) -> HostRecord {
        let id: String = r.get(0);
        let host_type = HostType::parse(r.get::<&str, _>(2)).unwrap_or_default();
        let mut host = Host::new(&id, host_type);
        host.hostname = r.get(1);
        host.theme_color = r.get(3);
        host.location = r.get(4);
        host.device_type = r.get(5);
        host.agent_version = r.get(6);
        host.os_version = r.get(7);
        host.nixpkgs_version = r.get(8);
        host.generation = r.get(9);
        host.repo_url = r.get(11);
        host.repo_dir = r.get(12);
        host.last_seen = r.get::<Option<i64>, _>(14).map(Timestamp);
        host.metrics = r
            .get::<Option<String>, _>(15)
            .and_then(|m| serde_json::from_str(&m).ok());
        HostRecord {
            host,
            lock_hash: r.get(10),
            branch: r.get(13),
        }
    }

    pub async fn hosts(&self) -> DbResult<Vec<HostRecord>> {
        let sql = format!("SELECT {} FROM hosts ORDER BY id", Self::HOST_COLUMNS);
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(Self::host_from_row).collect())
    }

    pub async fn host(&self, id: &str) -> DbResult<Option<HostRecord>> {
        let sql = format!("SELECT {} FROM hosts WHERE id = $1", Self::HOST_COLUMNS);
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(Self::host_from_row))
    }

    /// The host id a token hash belongs to.
    pub async fn host_for_token(&self, token_hash: &str) -> DbResult<Option<String>> {
        sqlx::query("SELECT id FROM hosts WHERE token_hash = $1")
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await
            .map(|r| r.map(|r| r.get(0)))
    }

    /// Insert a new host; a duplicate id is a unique violation the caller maps to 409.
    pub async fn insert_host(&self, host: &Host, token_hash: &str) -> DbResult<()> {
        sqlx::query(
            "INSERT INTO hosts (id, hostname, host_type, theme_color, location, device_type, token_hash, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&host.id)
        .bind(&host.hostname)
        .bind(host.host_type.as_str())
        .bind(&host.theme_color)
        .bind(&host.location)
        .bind(&host.device_type)
        .bind(token_hash)
        .bind(Timestamp::now().secs())
        .execute(&self.pool)
        .await
        .map(|_| ())
    }

    /// Registrations gathered since the last batch, in one transaction (a reconnect wave of
    /// thousands of agents must not mean thousands of synchronous commits).
    pub async fn save_reports(&self, batch: &[(String, HostReport, Timestamp)]) -> DbResult<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for (id, rep, seen) in batch {
            report_query(id, rep, *seen).execute(&mut *tx).await?;
        }
        tx.commit().await
    }

    pub async fn save_report(&self, id: &str, rep: &HostReport, seen: Timestamp) -> DbResult<()> {
        report_query(id, rep, seen)
            .execute(&self.pool)
            .await
            .map(|_| ())
    }

    /// One transaction for a whole batch of heartbeats.
    pub async fn save_seen(&self, batch: &[SeenUpdate]) -> DbResult<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for u in batch {
            let metrics = u
                .metrics
                .map(|m| serde_json::to_string(&m).unwrap_or_default());
            sqlx::query(
                "UPDATE hosts SET last_seen = $2, metrics = $3, generation = COALESCE($4, generation),
                    lock_hash = COALESCE($5, lock_hash) WHERE id = $1",
            )
            .bind(&u.host_id)
            .bind(u.last_seen.secs())
            .bind(metrics)
            .bind(&u.generation)
            .bind(&u.lock_hash)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    }

    pub async fn set_token_hash(&self, id: &str, token_hash: &str) -> DbResult<bool> {
        sqlx::query("UPDATE hosts SET token_hash = $2 WHERE id = $1")
            .bind(id)
            .bind(token_hash)
            .execute(&self.pool)
            .await
            .map(|r| r.rows_affected() == 1)
    }

    pub async fn delete_host(&self, id: &str) -> DbResult<bool> {
        sqlx::query("DELETE FROM hosts WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map(|r| r.rows_affected() == 1)
    }
}

fn report_query<'q>(
    id: &'q str,
    rep: &'q HostReport,
    seen: Timestamp,
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
    sqlx::query(
        "UPDATE hosts SET hostname = $2, agent_version = $3, os_version = $4, nixpkgs_version = $5,
            generation = $6, lock_hash = $7, repo_url = $8, repo_dir = $9, branch = $10,
            heartbeat_interval_s = $11, last_seen = $12
         WHERE id = $1",
    )
    .bind(id)
    .bind(&rep.hostname)
    .bind(&rep.agent_version)
    .bind(&rep.os_version)
    .bind(&rep.nixpkgs_version)
    .bind(&rep.generation)
    .bind(&rep.lock_hash)
    .bind(&rep.repo_url)
    .bind(&rep.repo_dir)
    .bind(&rep.branch)
    .bind(rep.heartbeat_interval_s.map(i64::from))
    .bind(seen.secs())
}

/// Output rows per INSERT statement (4 parameters each, well under SQLite's limit).
const OUTPUT_ROWS_PER_INSERT: usize = 128;

/// A command as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct CommandRow {
    pub id: String,
    pub host_id: String,
    pub command: CommandKind,
    pub status: CommandStatus,
    pub exit_code: Option<i32>,
    pub queued_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub last_seq: u64,
    pub completed: bool,
}

impl CommandRow {
    pub fn record(&self) -> CommandRecord {
        CommandRecord {
            command_id: self.id.clone(),
            command: self.command,
            status: self.status,
            exit_code: self.exit_code,
            queued_at: self.queued_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
            line_count: self.last_seq,
        }
    }
}

/// One stored output line.
#[derive(Clone, Debug, PartialEq)]
pub struct LogLine {
    pub seq: u64,
    pub stream: OutputStream,
    pub line: String,
    pub at: Timestamp,
}

pub fn status_str(s: CommandStatus) -> &'static str {
    match s {
        CommandStatus::Queued => "queued",
        CommandStatus::Running => "running",
        CommandStatus::Ok => "ok",
        CommandStatus::Error => "error",
        CommandStatus::Stopped => "stopped",
        CommandStatus::Timeout => "timeout",
        CommandStatus::Lost => "lost",
        CommandStatus::Abandoned => "abandoned",
    }
}

fn parse_status(s: &str) -> CommandStatus {
    serde_json::from_value(serde_json::Value::String(s.to_owned())).unwrap_or(CommandStatus::Error)
}

const COMMAND_COLUMNS: &str =
    "id, host_id, command, status, exit_code, queued_at, started_at, finished_at, last_seq, completed";

fn command_from_row(r: &sqlx::sqlite::SqliteRow) -> CommandRow {
    CommandRow {
        id: r.get(0),
        host_id: r.get(1),
        command: CommandKind::parse(r.get::<&str, _>(2)).unwrap_or(CommandKind::Refresh),
        status: parse_status(r.get::<&str, _>(3)),
        exit_code: r.get(4),
        queued_at: Timestamp(r.get(5)),
        started_at: r.get::<Option<i64>, _>(6).map(Timestamp),
        finished_at: r.get::<Option<i64>, _>(7).map(Timestamp),
        last_seq: r.get::<i64, _>(8).max(0) as u64,
        completed: r.get(9),
    }
}

/// Statuses in which a command still holds its host.
const HOLDING: &str =
    "(status IN ('queued', 'running') OR (status = 'timeout' AND completed = FALSE))";

impl Db {
    // ------------------------------------------------------------------ commands

    pub async fn insert_command(
        &self,
        id: &str,
        host_id: &str,
        kind: CommandKind,
        at: Timestamp,
        by: &str,
    ) -> DbResult<()> {
        sqlx::query(
            "INSERT INTO commands (id, host_id, command, status, queued_at, requested_by, queued_order)
             VALUES ($1, $2, $3, 'queued', $4, $5, (SELECT COALESCE(MAX(queued_order), 0) + 1 FROM commands))",
        )
        .bind(id)
        .bind(host_id)
        .bind(kind.as_str())
        .bind(at.secs())
        .bind(by)
        .execute(&self.pool)
        .await
        .map(|_| ())
    }

    pub async fn mark_running(&self, id: &str, at: Timestamp) -> DbResult<()> {
        sqlx::query("UPDATE commands SET status = 'running', started_at = $2 WHERE id = $1 AND status = 'queued'")
            .bind(id)
            .bind(at.secs())
            .execute(&self.pool)
            .await
            .map(|_| ())
    }

    pub async fn command(&self, id: &str) -> DbResult<Option<CommandRow>> {
        let sql = format!("SELECT {COMMAND_COLUMNS} FROM commands WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(command_from_row))
    }

    /// Commands that still hold their host, one per host at most.
    pub async fn holding_commands(&self) -> DbResult<Vec<CommandRow>> {
        let sql =
            format!("SELECT {COMMAND_COLUMNS} FROM commands WHERE {HOLDING} ORDER BY queued_at");
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(command_from_row).collect())
    }

    /// Set a server-decided status (timeout, lost, abandoned, error) on an unfinished command.
    /// Returns whether the command was still unfinished.
    pub async fn set_final_status(
        &self,
        id: &str,
        status: CommandStatus,
        at: Timestamp,
    ) -> DbResult<bool> {
        sqlx::query(
            "UPDATE commands SET status = $2, finished_at = COALESCE(finished_at, $3)
             WHERE id = $1 AND status IN ('queued', 'running')",
        )
        .bind(id)
        .bind(status_str(status))
        .bind(at.secs())
        .execute(&self.pool)
        .await
        .map(|r| r.rows_affected() == 1)
    }

    /// Mark a command as no longer holding its host, whatever its status.
    pub async fn release_command(
        &self,
        id: &str,
        status: CommandStatus,
        at: Timestamp,
    ) -> DbResult<()> {
        sqlx::query(
            "UPDATE commands SET status = CASE WHEN status IN ('queued', 'running', 'timeout') THEN $2 ELSE status END,
                finished_at = COALESCE(finished_at, $3), completed = TRUE
             WHERE id = $1",
        )
        .bind(id)
        .bind(status_str(status))
        .bind(at.secs())
        .execute(&self.pool)
        .await
        .map(|_| ())
    }

    /// Store the agent's completion. A status the server already decided (timeout,
    /// abandoned, lost) stands; the agent's exit code and duration are kept either way.
    /// Returns the row after the update.
    pub async fn complete_command(
        &self,
        id: &str,
        status: CommandStatus,
        exit_code: Option<i32>,
        duration_ms: u64,
        at: Timestamp,
    ) -> DbResult<Option<CommandRow>> {
        sqlx::query(
            "UPDATE commands SET
                status = CASE WHEN status IN ('queued', 'running') THEN $2 ELSE status END,
                exit_code = $3, duration_ms = $4, finished_at = COALESCE(finished_at, $5),
                started_at = COALESCE(started_at, $5), completed = TRUE
             WHERE id = $1",
        )
        .bind(id)
        .bind(status_str(status))
        .bind(exit_code)
        .bind(duration_ms as i64)
        .bind(at.secs())
        .execute(&self.pool)
        .await?;
        self.command(id).await
    }

    /// Store a batch of output lines of one command in one transaction. Lines at or below
    /// the stored `last_seq` are duplicates (re-sent after a reconnect) and skipped.
    /// Returns the lines that were new, and the new `last_seq`.
    pub async fn store_output(
        &self,
        command_id: &str,
        lines: &[Output],
        at: Timestamp,
    ) -> DbResult<(Vec<Output>, u64)> {
        let mut tx = self.pool.begin().await?;
        // The first statement writes (and marks the command running): in SQLite a
        // transaction that reads first and writes later fails at once with SQLITE_BUSY when
        // another connection wrote in between, without waiting for the busy timeout. Found
        // under load: the line was not acked, and came minutes later than its completion.
        let last: Option<i64> = sqlx::query(
            "UPDATE commands SET status = CASE WHEN status = 'queued' THEN 'running' ELSE status END
             WHERE id = $1 RETURNING last_seq",
        )
        .bind(command_id)
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| r.get(0));
        let Some(last) = last else {
            return Ok((Vec::new(), 0));
        };
        let mut last = last.max(0) as u64;
        let mut fresh = Vec::new();
        for line in lines {
            if line.seq <= last {
                continue;
            }
            // Agents send in order; a gap would stop the acknowledged prefix here.
            if line.seq == last + 1 {
                last = line.seq;
            }
            fresh.push(line);
        }
        // Many rows per statement: per-statement overhead, not SQLite, bounded the rate of
        // a chatty command (P6).
        for chunk in fresh.chunks(OUTPUT_ROWS_PER_INSERT) {
            let rows: Vec<String> = (0..chunk.len())
                .map(|i| {
                    let n = i * 4;
                    format!("($1, ${}, ${}, ${}, ${})", n + 2, n + 3, n + 4, n + 5)
                })
                .collect();
            let sql = format!(
                "INSERT INTO command_output (command_id, seq, stream, line, at) VALUES {}
                 ON CONFLICT (command_id, seq) DO NOTHING",
                rows.join(", ")
            );
            let mut query = sqlx::query(&sql).bind(command_id);
            for line in chunk {
                query = query
                    .bind(line.seq as i64)
                    .bind(match line.stream {
                        OutputStream::Stdout => "stdout",
                        OutputStream::Stderr => "stderr",
                    })
                    .bind(&line.line)
                    .bind(at.secs());
            }
            query.execute(&mut *tx).await?;
        }
        let fresh: Vec<Output> = fresh.into_iter().cloned().collect();
        sqlx::query("UPDATE commands SET last_seq = $2 WHERE id = $1")
            .bind(command_id)
            .bind(last as i64)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((fresh, last))
    }

    pub async fn history(&self, host_id: &str, limit: u32) -> DbResult<Vec<CommandRow>> {
        let sql = format!(
            "SELECT {COMMAND_COLUMNS} FROM commands WHERE host_id = $1 ORDER BY queued_at DESC, queued_order DESC LIMIT $2"
        );
        let rows = sqlx::query(&sql)
            .bind(host_id)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(command_from_row).collect())
    }

    /// Output lines of a command with seq after `after`, at most `limit`, in order.
    pub async fn output_page(
        &self,
        command_id: &str,
        after: u64,
        limit: u32,
    ) -> DbResult<Vec<LogLine>> {
        let rows = sqlx::query(
            "SELECT seq, stream, line, at FROM command_output WHERE command_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(command_id)
        .bind(after as i64)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| LogLine {
                seq: r.get::<i64, _>(0) as u64,
                stream: if r.get::<&str, _>(1) == "stderr" {
                    OutputStream::Stderr
                } else {
                    OutputStream::Stdout
                },
                line: r.get(2),
                at: Timestamp(r.get(3)),
            })
            .collect())
    }

    /// Retention: drop finished commands (and their output) queued before `before`.
    pub async fn purge_commands(&self, before: Timestamp) -> DbResult<u64> {
        let mut tx = self.pool.begin().await?;
        let cond = format!("queued_at < $1 AND NOT {HOLDING}");
        sqlx::query(&format!(
            "DELETE FROM command_output WHERE command_id IN (SELECT id FROM commands WHERE {cond})"
        ))
        .bind(before.secs())
        .execute(&mut *tx)
        .await?;
        let n = sqlx::query(&format!("DELETE FROM commands WHERE {cond}"))
            .bind(before.secs())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(n)
    }
}

/// A user's TOTP state.
#[derive(Clone, Debug, Default)]
pub struct TotpRow {
    pub secret: Option<String>,
    pub pending: Option<String>,
    pub last_step: Option<i64>,
}

impl Db {
    pub async fn totp(&self, username: &str) -> DbResult<Option<TotpRow>> {
        let row = sqlx::query(
            "SELECT totp_secret, totp_pending, totp_last_step FROM users WHERE username = $1",
        )
        .bind(username)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| TotpRow {
            secret: r.get(0),
            pending: r.get(1),
            last_step: r.get(2),
        }))
    }

    pub async fn set_totp_pending(&self, username: &str, secret: &str) -> DbResult<()> {
        sqlx::query("UPDATE users SET totp_pending = $2 WHERE username = $1")
            .bind(username)
            .bind(secret)
            .execute(&self.pool)
            .await
            .map(|_| ())
    }

    /// Make the pending secret the user's, with its first step used and new recovery codes.
    pub async fn confirm_totp(
        &self,
        username: &str,
        step: i64,
        recovery_hashes: &[String],
    ) -> DbResult<()> {
        let mut tx = self.pool.begin().await?;
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
        for hash in recovery_hashes {
            sqlx::query(
                "INSERT INTO recovery_codes (username, code_hash, used) VALUES ($1, $2, FALSE)",
            )
            .bind(username)
            .bind(hash)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    }

    /// Accept a step only if it is newer than the last accepted one (each code once).
    pub async fn use_totp_step(&self, username: &str, step: i64) -> DbResult<bool> {
        sqlx::query(
            "UPDATE users SET totp_last_step = $2 WHERE username = $1 AND (totp_last_step IS NULL OR totp_last_step < $2)",
        )
        .bind(username)
        .bind(step)
        .execute(&self.pool)
        .await
        .map(|r| r.rows_affected() == 1)
    }

    /// Spend a recovery code; false if unknown or used.
    pub async fn use_recovery_code(&self, username: &str, hash: &str) -> DbResult<bool> {
        sqlx::query("UPDATE recovery_codes SET used = TRUE WHERE username = $1 AND code_hash = $2 AND used = FALSE")
            .bind(username)
            .bind(hash)
            .execute(&self.pool)
            .await
            .map(|r| r.rows_affected() == 1)
    }
}

impl Db {
    pub async fn setting(&self, key: &str) -> DbResult<Option<String>> {
        sqlx::query("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map(|r| r.map(|r| r.get(0)))
    }

    pub async fn set_setting(&self, key: &str, value: &str) -> DbResult<()> {
        sqlx::query("INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = $2")
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .await
            .map(|_| ())
    }
}

impl Db {
    pub async fn insert_deploy(&self, job: &DeployProgress, request: &str) -> DbResult<()> {
        let now = Timestamp::now().secs();
        sqlx::query(
            "INSERT INTO deploy_jobs (id, pr_number, started_by, request, phase, hosts, message, active, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)",
        )
        .bind(&job.job_id)
        .bind(job.pr_number as i64)
        .bind(&job.started_by)
        .bind(request)
        .bind(phase_text(&job.phase))
        .bind(hosts_json(job))
        .bind(&job.message)
        .bind(job.active)
        .bind(now)
        .execute(&self.pool)
        .await
        .map(|_| ())
    }

    pub async fn save_deploy(&self, job: &DeployProgress) -> DbResult<()> {
        sqlx::query(
            "UPDATE deploy_jobs SET phase = $2, hosts = $3, message = $4, active = $5, updated_at = $6 WHERE id = $1",
        )
        .bind(&job.job_id)
        .bind(phase_text(&job.phase))
        .bind(hosts_json(job))
        .bind(&job.message)
        .bind(job.active)
        .bind(Timestamp::now().secs())
        .execute(&self.pool)
        .await
        .map(|_| ())
    }

    /// Jobs that were running when the dashboard stopped.
    pub async fn active_deploys(&self) -> DbResult<Vec<DeployProgress>> {
        let rows = sqlx::query(&format!("{DEPLOY_SELECT} WHERE active ORDER BY created_at"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(deploy_row).collect()
    }

    pub async fn deploy(&self, id: &str) -> DbResult<Option<DeployProgress>> {
        let row = sqlx::query(&format!("{DEPLOY_SELECT} WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(deploy_row).transpose()
    }

    pub async fn latest_deploy(&self) -> DbResult<Option<DeployProgress>> {
        let row = sqlx::query(&format!(
            "{DEPLOY_SELECT} ORDER BY created_at DESC, updated_at DESC LIMIT 1"
        ))
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(deploy_row).transpose()
    }
}

const DEPLOY_SELECT: &str =
    "SELECT id, pr_number, started_by, phase, hosts, message, active FROM deploy_jobs";

/// A phase is stored as its wire name (`pulling`), the host map as JSON.
fn phase_text(phase: &DeployPhase) -> String {
    serde_json::to_value(phase)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn hosts_json(job: &DeployProgress) -> String {
    serde_json::to_string(&job.hosts).unwrap_or_default()
}

fn deploy_row(r: &sqlx::sqlite::SqliteRow) -> DbResult<DeployProgress> {
    let decode = |e: serde_json::Error| sqlx::Error::Decode(Box::new(e));
    let phase: String = r.get(3);
    let hosts: String = r.get(4);
    Ok(DeployProgress {
        job_id: r.get(0),
        pr_number: r.get::<i64, _>(1) as u64,
        started_by: r.get(2),
        phase: serde_json::from_value(serde_json::Value::String(phase)).map_err(decode)?,
        hosts: serde_json::from_str(&hosts).map_err(decode)?,
        message: r.get(5),
        active: r.get(6),
    })
}

/// Filters for reading the audit log.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub target: Option<String>,
    pub limit: u32,
}

impl Db {
    pub async fn insert_audit(&self, e: &AuditEntry) -> DbResult<()> {
        sqlx::query(
            "INSERT INTO audit (at, actor, ip, action, target, result, detail) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(e.at.secs())
        .bind(&e.actor)
        .bind(&e.ip)
        .bind(&e.action)
        .bind(&e.target)
        .bind(&e.result)
        .bind(&e.detail)
        .execute(&self.pool)
        .await
        .map(|_| ())
    }

    /// Newest first; each filter is an exact match when given.
    pub async fn audit(&self, f: &AuditFilter) -> DbResult<Vec<AuditEntry>> {
        let rows = sqlx::query(
            "SELECT at, actor, ip, action, target, result, detail FROM audit
             WHERE ($1 IS NULL OR actor = $1) AND ($2 IS NULL OR action = $2) AND ($3 IS NULL OR target = $3)
             ORDER BY at DESC, id DESC LIMIT $4",
        )
        .bind(&f.actor)
        .bind(&f.action)
        .bind(&f.target)
        .bind(i64::from(f.limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| AuditEntry {
                at: Timestamp(r.get(0)),
                actor: r.get(1),
                ip: r.get(2),
                action: r.get(3),
                target: r.get(4),
                result: r.get(5),
                detail: r.get(6),
            })
            .collect())
    }

    pub async fn purge_audit(&self, before: Timestamp) -> DbResult<u64> {
        sqlx::query("DELETE FROM audit WHERE at < $1")
            .bind(before.secs())
            .execute(&self.pool)
            .await
            .map(|r| r.rows_affected())
    }
}

/// Whether an error is a unique-constraint violation (one helper, not text matching at
/// call sites).
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn db() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::connect(&format!("sqlite://{}/t.db", dir.path().display()))
            .await
            .unwrap();
        (dir, db)
    }

    fn line(command_id: &str, seq: u64) -> Output {
        Output {
            command_id: command_id.into(),
            seq,
            stream: OutputStream::Stdout,
            line: format!("line {seq}"),
        }
    }

    /// Output from many hosts at once, while heartbeats and registrations are written too:
    /// every batch must be stored (none may fail with SQLITE_BUSY and wait for a resend).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_writers_never_lose_an_output_batch() {
        let (_dir, db) = db().await;
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
                        .store_output(&id, &[line(&id, seq)], Timestamp::now())
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

    #[tokio::test]
    async fn sqlite_runs_in_wal_with_full_sync_and_a_busy_timeout() {
        let (_dir, db) = db().await;
        let mode: String = sqlx::query("PRAGMA journal_mode")
            .fetch_one(&db.pool)
            .await
            .unwrap()
            .get(0);
        assert_eq!(mode, "wal");
        let sync: i64 = sqlx::query("PRAGMA synchronous")
            .fetch_one(&db.pool)
            .await
            .unwrap()
            .get(0);
        assert_eq!(sync, 2, "FULL");
        let busy: i64 = sqlx::query("PRAGMA busy_timeout")
            .fetch_one(&db.pool)
            .await
            .unwrap()
            .get(0);
        assert!(busy >= 1000);
        let fk: i64 = sqlx::query("PRAGMA foreign_keys")
            .fetch_one(&db.pool)
            .await
            .unwrap()
            .get(0);
        assert_eq!(fk, 1);
    }

    #[tokio::test]
    async fn output_is_stored_once_per_seq() {
        let (_dir, db) = db().await;
        db.insert_command("c1", "h", CommandKind::Test, Timestamp(1), "admin")
            .await
            .unwrap();
        let (fresh, last) = db
            .store_output("c1", &[line("c1", 1), line("c1", 2)], Timestamp(2))
            .await
            .unwrap();
        assert_eq!((fresh.len(), last), (2, 2));
        // A re-send after a reconnect overlaps what is stored: only the new line counts.
        let (fresh, last) = db
            .store_output(
                "c1",
                &[line("c1", 1), line("c1", 2), line("c1", 3)],
                Timestamp(3),
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
            db.store_output("nope", &[line("nope", 1)], Timestamp(3))
                .await
                .unwrap()
                .1,
            0
        );
    }

    #[tokio::test]
    async fn a_server_decided_status_survives_the_agents_completion() {
        let (_dir, db) = db().await;
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
            .complete_command("c1", CommandStatus::Stopped, Some(143), 10, Timestamp(4))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.status, CommandStatus::Timeout);
        assert_eq!(row.exit_code, Some(143));
        assert!(db.holding_commands().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn retention_drops_only_old_finished_commands() {
        let (_dir, db) = db().await;
        for (id, at) in [
            ("old-done", 100),
            ("old-running", 100),
            ("new-done", 10_000),
        ] {
            db.insert_command(id, "h", CommandKind::Pull, Timestamp(at), "admin")
                .await
                .unwrap();
            db.store_output(id, &[line(id, 1)], Timestamp(at))
                .await
                .unwrap();
        }
        db.complete_command("old-done", CommandStatus::Ok, Some(0), 1, Timestamp(101))
            .await
            .unwrap();
        db.complete_command("new-done", CommandStatus::Ok, Some(0), 1, Timestamp(10_001))
            .await
            .unwrap();
        assert_eq!(db.purge_commands(Timestamp(5_000)).await.unwrap(), 1);
        assert!(db.command("old-done").await.unwrap().is_none());
        assert!(db.output_page("old-done", 0, 10).await.unwrap().is_empty());
        assert!(
            db.command("old-running").await.unwrap().is_some(),
            "a running command is kept"
        );
        assert!(db.command("new-done").await.unwrap().is_some());
    }
}
