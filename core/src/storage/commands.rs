//! Commands (the `commands` table) and their output (`command_output`): queueing, the
//! status a command moves through (the agent's, or one the server decides), which commands
//! still hold their host, output lines stored once per sequence number, history, and
//! retention.

use super::{Db, DbResult};
use protocol::api::{CommandDetail, CommandRecord};
use protocol::messages::Output;
use protocol::{CommandKind, CommandResult, CommandStatus, OutputStream, Timestamp};

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
    /// Lines not stored because the command's output was over the bound.
    pub dropped_lines: u64,
    /// The seq of the marker line that says how many were dropped.
    pub drop_marker_seq: Option<u64>,
    /// The agent's structured result (a preview's diff, the generation reached).
    pub result: Option<CommandResult>,
    /// Who started it: a username, `deploy:<job>` and the like (none in rows older than
    /// the column's use).
    pub requested_by: Option<String>,
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
            requested_by: self.requested_by.clone(),
            deploy_id: None,
            deploy_pr: None,
        }
    }

    pub fn detail(&self) -> CommandDetail {
        CommandDetail {
            command_id: self.id.clone(),
            host_id: self.host_id.clone(),
            command: self.command,
            status: self.status,
            exit_code: self.exit_code,
            result: self.result.clone(),
            queued_at: self.queued_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
            line_count: self.last_seq,
            requested_by: self.requested_by.clone(),
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

const COMMAND_COLUMNS: &str = "id, host_id, command, status, exit_code, queued_at, started_at, \
     finished_at, last_seq, completed, dropped_lines, drop_marker_seq, result, requested_by";

/// The `COMMAND_COLUMNS` of a `commands` row.
#[derive(sqlx::FromRow)]
struct CommandColumns {
    id: String,
    host_id: String,
    command: String,
    status: String,
    exit_code: Option<i32>,
    queued_at: i64,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    last_seq: i64,
    completed: bool,
    dropped_lines: i64,
    drop_marker_seq: Option<i64>,
    /// `CommandResult` as JSON.
    result: Option<String>,
    requested_by: Option<String>,
}

impl From<CommandColumns> for CommandRow {
    fn from(r: CommandColumns) -> Self {
        CommandRow {
            id: r.id,
            host_id: r.host_id,
            // A kind this build does not know reads as `refresh`.
            command: CommandKind::parse(&r.command).unwrap_or(CommandKind::Refresh),
            // A status this build does not know reads as `error`: the command is finished
            // as far as this server can tell (`HOLDING` does not count it as holding its
            // host either), and it did not end as one it knows.
            status: CommandStatus::parse(&r.status).unwrap_or(CommandStatus::Error),
            exit_code: r.exit_code,
            queued_at: Timestamp(r.queued_at),
            started_at: r.started_at.map(Timestamp),
            finished_at: r.finished_at.map(Timestamp),
            last_seq: r.last_seq.max(0) as u64,
            completed: r.completed,
            dropped_lines: r.dropped_lines.max(0) as u64,
            drop_marker_seq: r.drop_marker_seq.map(|s| s.max(0) as u64),
            // A result this build cannot read (a newer agent's shape) reads as none: the
            // command's status and log still stand on their own.
            result: r.result.and_then(|j| serde_json::from_str(&j).ok()),
            requested_by: r.requested_by,
        }
    }
}

/// A `command_output` row as read back.
#[derive(sqlx::FromRow)]
struct OutputColumns {
    seq: i64,
    stream: String,
    line: String,
    at: i64,
}

impl From<OutputColumns> for LogLine {
    fn from(r: OutputColumns) -> Self {
        LogLine {
            seq: r.seq as u64,
            // Anything but `stderr` reads as stdout.
            stream: OutputStream::parse(&r.stream).unwrap_or(OutputStream::Stdout),
            line: r.line,
            at: Timestamp(r.at),
        }
    }
}

/// What `store_output` reads of the command before a batch.
#[derive(sqlx::FromRow)]
struct OutputState {
    last_seq: i64,
    output_bytes: i64,
    dropped_lines: i64,
    drop_marker_seq: Option<i64>,
}

/// The text of the line that stands for a command's dropped output, worded as the agent's
/// own marker (`agent/src/spool.rs`) with this server's name and limit.
pub fn output_marker(dropped: u64, limit_bytes: u64) -> String {
    format!(
        "[nixdeck: {dropped} lines dropped: output over the {} MiB stored-output limit]",
        limit_bytes.div_ceil(1024 * 1024)
    )
}

/// Statuses in which a command still holds its host.
const HOLDING: &str =
    "(status IN ('queued', 'running') OR (status = 'timeout' AND completed = FALSE))";

impl Db {
    pub async fn insert_command(
        &self,
        id: &str,
        host_id: &str,
        kind: CommandKind,
        at: Timestamp,
        by: &str,
    ) -> DbResult<()> {
        on_pool!(self, pool => {
            let sql = format!(
                "INSERT INTO commands (id, host_id, command, status, queued_at, requested_by, queued_order)
                 VALUES ($1, $2, $3, 'queued', $4, $5, {})",
                self.backend().next_queued_order()
            );
            sqlx::query(super::composed(sql))
            .bind(id)
            .bind(host_id)
            .bind(kind.as_str())
            .bind(at.secs())
            .bind(by)
            .execute(pool)
            .await
            .map(|_| ())
        })
    }

    pub async fn mark_running(&self, id: &str, at: Timestamp) -> DbResult<()> {
        on_pool!(self, pool => {
            sqlx::query("UPDATE commands SET status = 'running', started_at = $2 WHERE id = $1 AND status = 'queued'")
                .bind(id)
                .bind(at.secs())
                .execute(pool)
                .await
                .map(|_| ())
        })
    }

    pub async fn command(&self, id: &str) -> DbResult<Option<CommandRow>> {
        on_pool!(self, pool => {
            let sql = format!("SELECT {COMMAND_COLUMNS} FROM commands WHERE id = $1");
            let row = sqlx::query_as::<_, CommandColumns>(super::composed(sql))
                .bind(id)
                .fetch_optional(pool)
                .await?;
            Ok(row.map(CommandRow::from))
        })
    }

    /// Commands that still hold their host, one per host at most.
    pub async fn holding_commands(&self) -> DbResult<Vec<CommandRow>> {
        on_pool!(self, pool => {
            let sql =
                format!("SELECT {COMMAND_COLUMNS} FROM commands WHERE {HOLDING} ORDER BY queued_at");
            let rows = sqlx::query_as::<_, CommandColumns>(super::composed(sql))
                .fetch_all(pool)
                .await?;
            Ok(rows.into_iter().map(CommandRow::from).collect())
        })
    }

    /// Set a server-decided status (timeout, lost, abandoned, error) on an unfinished command.
    /// Returns whether the command was still unfinished.
    pub async fn set_final_status(
        &self,
        id: &str,
        status: CommandStatus,
        at: Timestamp,
    ) -> DbResult<bool> {
        on_pool!(self, pool => {
            sqlx::query(
                "UPDATE commands SET status = $2, finished_at = COALESCE(finished_at, $3)
                 WHERE id = $1 AND status IN ('queued', 'running')",
            )
            .bind(id)
            .bind(status.as_str())
            .bind(at.secs())
            .execute(pool)
            .await
            .map(|r| r.rows_affected() == 1)
        })
    }

    /// Mark a command as no longer holding its host, whatever its status.
    pub async fn release_command(
        &self,
        id: &str,
        status: CommandStatus,
        at: Timestamp,
    ) -> DbResult<()> {
        on_pool!(self, pool => {
            sqlx::query(
                "UPDATE commands SET status = CASE WHEN status IN ('queued', 'running', 'timeout') THEN $2 ELSE status END,
                    finished_at = COALESCE(finished_at, $3), completed = TRUE
                 WHERE id = $1",
            )
            .bind(id)
            .bind(status.as_str())
            .bind(at.secs())
            .execute(pool)
            .await
            .map(|_| ())
        })
    }

    /// Store the agent's completion. A status the server already decided (timeout,
    /// abandoned, lost) stands; the agent's exit code, duration and result (`result`, the
    /// `CommandResult` as JSON) are kept either way. Returns the row after the update.
    pub async fn complete_command(
        &self,
        id: &str,
        status: CommandStatus,
        exit_code: Option<i32>,
        duration_ms: u64,
        at: Timestamp,
        result: Option<&str>,
    ) -> DbResult<Option<CommandRow>> {
        on_pool!(self, pool => {
            sqlx::query(
                "UPDATE commands SET
                    status = CASE WHEN status IN ('queued', 'running') THEN $2 ELSE status END,
                    exit_code = $3, duration_ms = $4, finished_at = COALESCE(finished_at, $5),
                    started_at = COALESCE(started_at, $5), completed = TRUE,
                    result = COALESCE($6, result)
                 WHERE id = $1",
            )
            .bind(id)
            .bind(status.as_str())
            .bind(exit_code)
            .bind(duration_ms as i64)
            .bind(at.secs())
            .bind(result)
            .execute(pool)
            .await?;
            self.command(id).await
        })
    }

    /// Store a batch of output lines of one command in one transaction. Lines at or below
    /// the stored `last_seq` are duplicates (re-sent after a reconnect) and skipped.
    /// Returns the lines that were new and stored, and the new `last_seq`.
    ///
    /// The command's stored output is bounded by `limit_bytes` of line text. Past it, as in
    /// the agent's spool (`agent/src/spool.rs`), lines are counted instead of stored, and
    /// one marker line at the seq of the first dropped line says how many were dropped
    /// (`output_marker`; rewritten as the count grows, so it is right whenever the log is
    /// read). Dropped lines still advance `last_seq`, so the agent is acked for them and
    /// does not send them again.
    pub async fn store_output(
        &self,
        command_id: &str,
        lines: &[Output],
        at: Timestamp,
        limit_bytes: u64,
    ) -> DbResult<(Vec<Output>, u64)> {
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            // The first statement writes (and marks the command running): in SQLite a
            // transaction that reads first and writes later fails at once with SQLITE_BUSY when
            // another connection wrote in between, without waiting for the busy timeout. Found
            // under load: the line was not acked, and came minutes later than its completion.
            let stored: Option<OutputState> = sqlx::query_as(
                "UPDATE commands SET status = CASE WHEN status = 'queued' THEN 'running' ELSE status END
                 WHERE id = $1 RETURNING last_seq, output_bytes, dropped_lines, drop_marker_seq",
            )
            .bind(command_id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(stored) = stored else {
                return Ok((Vec::new(), 0));
            };
            let mut last = stored.last_seq.max(0) as u64;
            let mut bytes = stored.output_bytes.max(0) as u64;
            let mut dropped = stored.dropped_lines.max(0) as u64;
            let mut marker = stored.drop_marker_seq.map(|s| s.max(0) as u64);
            let mut fresh = Vec::new();
            for line in lines {
                if line.seq <= last {
                    continue;
                }
                // Agents send in order; a gap would stop the acknowledged prefix here.
                let in_order = line.seq == last + 1;
                let size = line.line.len() as u64;
                if dropped > 0 || bytes + size > limit_bytes {
                    // Once over, stay over (as the spool does): a stored line after the gap
                    // would hide where it was. Only the next line in order is counted; one
                    // after a gap is neither stored nor acked, and is counted when re-sent in
                    // order, so no line is counted twice.
                    if in_order {
                        last = line.seq;
                        dropped += 1;
                        marker.get_or_insert(line.seq);
                    }
                    continue;
                }
                if in_order {
                    last = line.seq;
                }
                // A line stored after a gap and re-sent in order is counted twice here (the
                // insert skips it): the bound then errs on the small side, never the large.
                bytes += size;
                fresh.push(line);
            }
            // Many rows per statement: per-statement overhead, not SQLite, bounded the rate of
            // a chatty command (the output-throughput measure P6 in docs/BENCHMARKS.md).
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
                let mut query = sqlx::query(super::composed(sql)).bind(command_id);
                for line in chunk {
                    query = query
                        .bind(line.seq as i64)
                        .bind(line.stream.as_str())
                        .bind(&line.line)
                        .bind(at.secs());
                }
                query.execute(&mut *tx).await?;
            }
            if let Some(seq) = marker.filter(|_| dropped > stored.dropped_lines.max(0) as u64) {
                // The marker takes the seq of the first dropped line (never stored, and never
                // re-sent once acked); its count is rewritten in place, keeping the time of
                // the first drop.
                sqlx::query(
                    "INSERT INTO command_output (command_id, seq, stream, line, at) VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (command_id, seq) DO UPDATE SET stream = excluded.stream, line = excluded.line",
                )
                .bind(command_id)
                .bind(seq as i64)
                .bind(OutputStream::Stderr.as_str())
                .bind(output_marker(dropped, limit_bytes))
                .bind(at.secs())
                .execute(&mut *tx)
                .await?;
            }
            let fresh: Vec<Output> = fresh.into_iter().cloned().collect();
            sqlx::query(
                "UPDATE commands SET last_seq = $2, output_bytes = $3, dropped_lines = $4, drop_marker_seq = $5
                 WHERE id = $1",
            )
            .bind(command_id)
            .bind(last as i64)
            .bind(bytes as i64)
            .bind(dropped as i64)
            .bind(marker.map(|s| s as i64))
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok((fresh, last))
        })
    }

    pub async fn history(&self, host_id: &str, limit: u32) -> DbResult<Vec<CommandRow>> {
        on_pool!(self, pool => {
            let sql = format!(
                "SELECT {COMMAND_COLUMNS} FROM commands WHERE host_id = $1 ORDER BY queued_at DESC, queued_order DESC LIMIT $2"
            );
            let rows = sqlx::query_as::<_, CommandColumns>(super::composed(sql))
                .bind(host_id)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?;
            Ok(rows.into_iter().map(CommandRow::from).collect())
        })
    }

    /// The commands a Merge & Deploy job started (`deploy_commands`), in the order they
    /// were queued. A command that retention deleted is simply not there.
    pub async fn deploy_commands(&self, deploy_id: &str) -> DbResult<Vec<CommandRow>> {
        on_pool!(self, pool => {
            let sql = format!(
                "SELECT {COMMAND_COLUMNS} FROM commands WHERE id IN \
                 (SELECT command_id FROM deploy_commands WHERE deploy_id = $1) \
                 ORDER BY queued_at, queued_order"
            );
            let rows = sqlx::query_as::<_, CommandColumns>(super::composed(sql))
                .bind(deploy_id)
                .fetch_all(pool)
                .await?;
            Ok(rows.into_iter().map(CommandRow::from).collect())
        })
    }

    /// Output lines of a command with seq after `after`, at most `limit`, in order.
    pub async fn output_page(
        &self,
        command_id: &str,
        after: u64,
        limit: u32,
    ) -> DbResult<Vec<LogLine>> {
        on_pool!(self, pool => {
            let rows = sqlx::query_as::<_, OutputColumns>(
                "SELECT seq, stream, line, at FROM command_output WHERE command_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            )
            .bind(command_id)
            .bind(after as i64)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?;
            Ok(rows.into_iter().map(LogLine::from).collect())
        })
    }

    /// The last `limit` output lines of a command, in order (the end of a log is where a
    /// failure shows).
    pub async fn output_tail(&self, command_id: &str, limit: u32) -> DbResult<Vec<LogLine>> {
        on_pool!(self, pool => {
            let mut rows = sqlx::query_as::<_, OutputColumns>(
                "SELECT seq, stream, line, at FROM command_output WHERE command_id = $1 ORDER BY seq DESC LIMIT $2",
            )
            .bind(command_id)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?;
            rows.reverse();
            Ok(rows.into_iter().map(LogLine::from).collect())
        })
    }

    /// Retention: drop finished commands (and their output) queued before `before`.
    pub async fn purge_commands(&self, before: Timestamp) -> DbResult<u64> {
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let cond = format!("queued_at < $1 AND NOT {HOLDING}");
            sqlx::query(super::composed(format!(
                "DELETE FROM command_output WHERE command_id IN (SELECT id FROM commands WHERE {cond})"
            )))
            .bind(before.secs())
            .execute(&mut *tx)
            .await?;
            // The Deploys page's links to these commands go with them.
            sqlx::query(super::composed(format!(
                "DELETE FROM deploy_commands WHERE command_id IN (SELECT id FROM commands WHERE {cond})"
            )))
            .bind(before.secs())
            .execute(&mut *tx)
            .await?;
            let n = sqlx::query(super::composed(format!(
                "DELETE FROM commands WHERE {cond}"
            )))
            .bind(before.secs())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            tx.commit().await?;
            Ok(n)
        })
    }
}
