//! Commands: the rules for running, stopping and unlocking, the agent's side of delivery
//! (output stored once per seq, acks, completion), hard timeouts and retention.

use super::{audit, require_operator, OrInternal, Result};
use crate::hub::Reservation;
use crate::secret::new_token;
use crate::storage::{CommandRow, LogLine};
use crate::Core;
use common::AppError;
use common::Viewer;
use protocol::api::{BulkFailed, BulkQueued, BulkResult, CommandRecord};
use protocol::messages::{
    Ack, AgentCommandComplete, AgentOutcome, CommandComplete, CommandOrder, CommandOutput,
    CommandRejected, Output, RunningCommand, StopOrder,
};
use protocol::{
    BrowserEvent, CommandKind, CommandStatus, OutputStream, PendingCommand, ServerMessage,
    Timestamp,
};
use std::fmt::Write;

/// One command with its result (`GET /api/commands/{id}`). Not stored yet: NotFound.
pub async fn detail(
    _core: &Core,
    viewer: &Viewer,
    command_id: &str,
) -> Result<protocol::api::CommandDetail> {
    let _ = viewer;
    Err(AppError::NotFound(format!("command {command_id}")))
}

pub fn parse_kind(command: &str) -> Result<CommandKind> {
    CommandKind::parse(command).ok_or_else(|| {
        AppError::Invalid(format!(
            "Unknown command {:?}; expected one of: {}.",
            command.chars().take(40).collect::<String>(),
            CommandKind::ALL.map(CommandKind::as_str).join(", ")
        ))
    })
}

fn new_command_id() -> String {
    new_token()[..32].to_owned()
}

/// What a command may carry besides its kind: the generation a rollback goes to, the
/// preview a switch or boot activates.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    pub generation: Option<u64>,
    pub preview_id: Option<String>,
}

/// Run `kind` on a host: 202 with the id, 404 unknown host, 409 `offline` or `busy`.
pub async fn run(
    core: &Core,
    viewer: &Viewer,
    host_id: &str,
    kind: CommandKind,
    _options: RunOptions,
) -> Result<String> {
    let result = start(core, viewer, host_id, kind).await;
    audit::record(
        core,
        viewer,
        &format!("command.{kind}"),
        Some(host_id),
        result,
    )
    .await
}

async fn start(core: &Core, viewer: &Viewer, host_id: &str, kind: CommandKind) -> Result<String> {
    require_operator(viewer)?;
    let command_id = new_command_id();
    let now = Timestamp::now();
    let pending = PendingCommand {
        command_id: command_id.clone(),
        command: kind,
        started_at: now,
    };
    match core.hub.reserve(host_id, pending) {
        Ok(()) => {}
        Err(Reservation::NotFound) => return Err(AppError::NotFound(format!("host {host_id}"))),
        Err(Reservation::PendingApproval) => {
            return Err(AppError::conflict(
                "pending_approval",
                format!("{host_id} enrolled itself and waits for an admin's approval."),
            ))
        }
        Err(Reservation::Offline) => {
            return Err(AppError::conflict(
                "offline",
                format!("{host_id} is offline."),
            ))
        }
        Err(Reservation::Busy(p)) => {
            return Err(AppError::conflict(
                "busy",
                format!(
                    "{host_id} is busy running {} ({}).",
                    p.command, p.command_id
                ),
            ))
        }
    }
    // Stored before the agent hears of it, so no output can arrive for an unknown id.
    if let Err(e) = core
        .db
        .insert_command(&command_id, host_id, kind, now, &viewer.username)
        .await
    {
        tracing::error!("storing command: {e}");
        release(core, host_id, &command_id, CommandStatus::Error, None, 0);
        return Err(AppError::Internal);
    }
    let order = ServerMessage::Command(CommandOrder {
        command_id: command_id.clone(),
        command: kind,
        generation: None,
        store_path: None,
    });
    if !core.hub.send_to_agent(host_id, order) {
        let _ = core
            .db
            .release_command(&command_id, CommandStatus::Lost, now)
            .await;
        release(core, host_id, &command_id, CommandStatus::Lost, None, 0);
        return Err(AppError::conflict(
            "offline",
            format!("{host_id} went offline."),
        ));
    }
    core.db
        .mark_running(&command_id, now)
        .await
        .or_internal("marking command running")?;
    tracing::info!(host = host_id, command = %kind, command_id, by = viewer.username, "command sent");
    Ok(command_id)
}

/// Free the host and tell browsers the command is over.
fn release(
    core: &Core,
    host_id: &str,
    command_id: &str,
    status: CommandStatus,
    exit_code: Option<i32>,
    duration_ms: u64,
) {
    core.hub.release(CommandComplete {
        host_id: host_id.to_owned(),
        command_id: command_id.to_owned(),
        status,
        exit_code,
        duration_ms,
        result: None,
    });
}

/// Ask the agent to stop the running command: 202, or 409 `idle` / `offline`.
pub async fn stop(core: &Core, viewer: &Viewer, host_id: &str) -> Result<String> {
    let result = send_stop(core, viewer, host_id).await;
    audit::record(core, viewer, "stop", Some(host_id), result).await
}

async fn send_stop(core: &Core, viewer: &Viewer, host_id: &str) -> Result<String> {
    require_operator(viewer)?;
    if !core.hub.contains(host_id) {
        return Err(AppError::NotFound(format!("host {host_id}")));
    }
    let Some(pending) = core.hub.pending(host_id) else {
        return Err(AppError::conflict(
            "idle",
            format!("{host_id} is not running a command."),
        ));
    };
    let order = ServerMessage::Stop(StopOrder {
        command_id: pending.command_id.clone(),
    });
    if !core.hub.send_to_agent(host_id, order) {
        return Err(AppError::conflict(
            "offline",
            format!("{host_id} is offline; use unlock to release a stuck command."),
        ));
    }
    tracing::info!(
        host = host_id,
        command_id = pending.command_id,
        by = viewer.username,
        "stop sent"
    );
    Ok(pending.command_id)
}

/// Release a stuck host by hand: its pending command becomes `abandoned`.
pub async fn unlock(core: &Core, viewer: &Viewer, host_id: &str) -> Result<()> {
    let result = release_stuck(core, viewer, host_id).await;
    audit::record(core, viewer, "unlock", Some(host_id), result).await
}

async fn release_stuck(core: &Core, viewer: &Viewer, host_id: &str) -> Result<()> {
    require_operator(viewer)?;
    if !core.hub.contains(host_id) {
        return Err(AppError::NotFound(format!("host {host_id}")));
    }
    if let Some(pending) = core.hub.pending(host_id) {
        // If the agent still runs it, it should stop; its late output is still stored.
        core.hub.send_to_agent(
            host_id,
            ServerMessage::Stop(StopOrder {
                command_id: pending.command_id.clone(),
            }),
        );
        core.db
            .release_command(
                &pending.command_id,
                CommandStatus::Abandoned,
                Timestamp::now(),
            )
            .await
            .or_internal("abandoning command")?;
        release(
            core,
            host_id,
            &pending.command_id,
            CommandStatus::Abandoned,
            None,
            0,
        );
        tracing::info!(
            host = host_id,
            command_id = pending.command_id,
            by = viewer.username,
            "host unlocked"
        );
    }
    Ok(())
}

pub async fn history(
    core: &Core,
    _viewer: &Viewer,
    host_id: &str,
    limit: u32,
) -> Result<Vec<CommandRecord>> {
    if !core.hub.contains(host_id) {
        return Err(AppError::NotFound(format!("host {host_id}")));
    }
    let rows = core
        .db
        .history(host_id, limit.clamp(1, 1000))
        .await
        .or_internal("loading command history")?;
    Ok(rows.iter().map(CommandRow::record).collect())
}

/// One output line as the log download shows it.
pub fn log_line(line: &LogLine) -> String {
    match line.stream {
        OutputStream::Stdout => format!("[{}] {}", line.at.clock(), line.line),
        OutputStream::Stderr => format!("[{}] [ERR] {}", line.at.clock(), line.line),
    }
}

/// Output lines read from the database per page of a log download.
pub const LOG_PAGE_LINES: u32 = 5_000;

/// A command's log for download: a file name, and the text read a page at a time as it is
/// sent, so a long log is never held whole in memory. The command is looked up (404)
/// before anything is returned, so a refusal comes before the first byte.
pub async fn log_download(
    core: &Core,
    _viewer: &Viewer,
    command_id: &str,
) -> Result<(String, LogPages)> {
    let Some(cmd) = core
        .db
        .command(command_id)
        .await
        .or_internal("loading command")?
    else {
        return Err(AppError::NotFound(format!("command {command_id}")));
    };
    let name = format!(
        "{}-{}-{}.log",
        cmd.host_id,
        cmd.command,
        cmd.queued_at.secs()
    );
    let pages = LogPages {
        core: core.clone(),
        command_id: cmd.id,
        after: 0,
    };
    Ok((name, pages))
}

/// The pages of a log download, read from the database one at a time.
pub struct LogPages {
    core: Core,
    command_id: String,
    after: u64,
}

impl LogPages {
    /// The next page as text, one line per output line (`log_line`); None after the last.
    pub async fn next_page(&mut self) -> Result<Option<String>> {
        let page = self
            .core
            .db
            .output_page(&self.command_id, self.after, LOG_PAGE_LINES)
            .await
            .or_internal("loading output")?;
        let Some(last) = page.last() else {
            return Ok(None);
        };
        self.after = last.seq;
        let mut text = String::new();
        for line in &page {
            let _ = writeln!(text, "{}", log_line(line));
        }
        Ok(Some(text))
    }
}

/// The same command on many hosts; each host answers for itself.
pub async fn bulk(
    core: &Core,
    viewer: &Viewer,
    kind: CommandKind,
    host_ids: Option<Vec<String>>,
) -> Result<Vec<BulkResult>> {
    require_operator(viewer)?;
    let ids = host_ids.unwrap_or_else(|| core.hub.online_ids());
    let mut results = Vec::with_capacity(ids.len());
    for host_id in ids {
        results.push(
            match run(core, viewer, &host_id, kind, RunOptions::default()).await {
                Ok(command_id) => BulkResult::Queued(BulkQueued {
                    host_id,
                    command_id,
                }),
                Err(e) => BulkResult::Failed(BulkFailed {
                    error: e.to_string(),
                    code: e.code().to_owned(),
                    host_id,
                }),
            },
        );
    }
    Ok(results)
}

// ---------------------------------------------------------------- the agent's side

/// Reconcile after `register`: the agent says which command it still holds (or none).
pub async fn on_register(core: &Core, host_id: &str, running: Option<&RunningCommand>) {
    let pending = core.hub.pending(host_id);
    if let Some(p) = &pending {
        if running.map(|r| r.command_id.as_str()) != Some(p.command_id.as_str()) {
            // The agent no longer knows the command we wait for.
            tracing::warn!(
                host = host_id,
                command_id = p.command_id,
                "agent no longer knows the command; marking it lost"
            );
            let _ = core
                .db
                .release_command(&p.command_id, CommandStatus::Lost, Timestamp::now())
                .await;
            release(core, host_id, &p.command_id, CommandStatus::Lost, None, 0);
        }
    }
    let Some(r) = running else { return };
    if pending
        .as_ref()
        .is_some_and(|p| p.command_id == r.command_id)
    {
        return;
    }
    // A command we had not been waiting for: resume it if we know it and it is unfinished.
    if let Ok(Some(row)) = core.db.command(&r.command_id).await {
        if row.host_id == host_id && !row.status.is_final() {
            core.hub.restore_pending(
                host_id,
                PendingCommand {
                    command_id: row.id,
                    command: row.command,
                    started_at: row.started_at.unwrap_or(row.queued_at),
                },
            );
        }
    }
}

/// Store a batch of output lines (normally of one command), broadcast the new ones, and
/// return the acks to send.
pub async fn ingest_output(core: &Core, host_id: &str, batch: Vec<Output>) -> Vec<Ack> {
    let mut acks = Vec::new();
    let mut start = 0;
    while start < batch.len() {
        let id = batch[start].command_id.clone();
        let end = batch[start..]
            .iter()
            .position(|o| o.command_id != id)
            .map_or(batch.len(), |n| start + n);
        let lines = &batch[start..end];
        start = end;
        match core.db.command(&id).await {
            Ok(Some(row)) if row.host_id == host_id => {}
            Ok(_) => {
                // Not ours to keep: tell the agent to drop it rather than re-send forever.
                tracing::warn!(
                    host = host_id,
                    command_id = id,
                    "output for an unknown command; discarded"
                );
                acks.push(Ack {
                    command_id: id,
                    seq: lines.last().map_or(0, |l| l.seq),
                    complete: true,
                });
                continue;
            }
            Err(e) => {
                tracing::error!("loading command: {e}");
                continue;
            }
        }
        let bound = core.config.max_output_bytes();
        match core
            .db
            .store_output(&id, lines, Timestamp::now(), bound)
            .await
        {
            Ok((fresh, last_seq)) => {
                core.hub.publish_all(fresh.into_iter().map(|o| {
                    BrowserEvent::CommandOutput(CommandOutput {
                        host_id: host_id.to_owned(),
                        command_id: o.command_id,
                        seq: o.seq,
                        stream: o.stream,
                        line: o.line,
                    })
                }));
                acks.push(Ack {
                    command_id: id,
                    seq: last_seq,
                    complete: false,
                });
            }
            // Not acked: the agent keeps the lines and sends them again.
            Err(e) => tracing::error!(host = host_id, "storing output: {e}"),
        }
    }
    acks
}

/// Store the agent's completion; ack it as complete once every line is stored too.
pub async fn on_complete(core: &Core, host_id: &str, done: &AgentCommandComplete) -> Option<Ack> {
    let row = match core.db.command(&done.command_id).await {
        Ok(Some(row)) if row.host_id == host_id => row,
        Ok(_) => {
            return Some(Ack {
                command_id: done.command_id.clone(),
                seq: done.last_seq,
                complete: true,
            })
        }
        Err(e) => {
            tracing::error!("loading command: {e}");
            return None;
        }
    };
    let status = match done.status {
        AgentOutcome::Ok => CommandStatus::Ok,
        AgentOutcome::Error => CommandStatus::Error,
        AgentOutcome::Stopped => CommandStatus::Stopped,
        AgentOutcome::RolledBack => CommandStatus::RolledBack,
    };
    let stored = match core
        .db
        .complete_command(
            &row.id,
            status,
            done.exit_code,
            done.duration_ms,
            Timestamp::now(),
        )
        .await
    {
        Ok(Some(stored)) => stored,
        Ok(None) => return None,
        Err(e) => {
            tracing::error!(host = host_id, "storing completion: {e}");
            return None;
        }
    };
    // Release the host with the final status (the server's own, e.g. timeout, wins).
    if core
        .hub
        .pending(host_id)
        .is_some_and(|p| p.command_id == row.id)
        || !row.completed
    {
        publish_drop_marker(core, host_id, &stored).await;
        release(
            core,
            host_id,
            &row.id,
            stored.status,
            done.exit_code,
            done.duration_ms,
        );
    }
    tracing::info!(host = host_id, command_id = row.id, status = ?stored.status, "command complete");
    Some(Ack {
        command_id: row.id,
        seq: stored.last_seq,
        complete: stored.last_seq >= done.last_seq,
    })
}

/// Output over the bound was not stored (`Db::store_output`), nor sent to browsers: their
/// log stops at the bound. When the command ends, they get the marker line with its final
/// count, once, with the completion. Its seq is that of the first dropped line, so it
/// follows every line they were sent.
async fn publish_drop_marker(core: &Core, host_id: &str, row: &CommandRow) {
    let Some(seq) = row.drop_marker_seq else {
        return;
    };
    match core.db.output_page(&row.id, seq.saturating_sub(1), 1).await {
        Ok(page) => {
            if let Some(marker) = page.into_iter().find(|l| l.seq == seq) {
                core.hub
                    .publish_all([BrowserEvent::CommandOutput(CommandOutput {
                        host_id: host_id.to_owned(),
                        command_id: row.id.clone(),
                        seq,
                        stream: marker.stream,
                        line: marker.line,
                    })]);
            }
        }
        Err(e) => tracing::warn!(host = host_id, "loading the drop marker: {e}"),
    }
}

/// The agent refused a command (normally: busy with another).
pub async fn on_rejected(core: &Core, host_id: &str, rej: &CommandRejected) {
    tracing::warn!(
        host = host_id,
        command_id = rej.command_id,
        reason = rej.reason,
        "agent rejected command"
    );
    if let Ok(Some(row)) = core.db.command(&rej.command_id).await {
        if row.host_id == host_id {
            let _ = core
                .db
                .release_command(&row.id, CommandStatus::Error, Timestamp::now())
                .await;
            release(core, host_id, &row.id, CommandStatus::Error, None, 0);
        }
    }
}

// ---------------------------------------------------------------- background

/// Hard timeouts: a command past its limit is recorded `timeout` and its agent told to
/// stop. The host stays busy until the agent reports the end (or an operator unlocks).
pub async fn enforce_timeouts(core: &Core) {
    let now = Timestamp::now();
    for (host_id, p) in core.hub.pending_commands() {
        let limit = core.config.timeout_s(p.command) as i64;
        if now.secs() - p.started_at.secs() < limit {
            continue;
        }
        match core
            .db
            .set_final_status(&p.command_id, CommandStatus::Timeout, now)
            .await
        {
            Ok(true) => {
                tracing::warn!(
                    host = host_id,
                    command_id = p.command_id,
                    "command timed out; stopping it"
                );
                core.hub.send_to_agent(
                    &host_id,
                    ServerMessage::Stop(StopOrder {
                        command_id: p.command_id.clone(),
                    }),
                );
            }
            Ok(false) => {}
            Err(e) => tracing::error!("recording timeout: {e}"),
        }
    }
}

/// Retention: drop finished commands older than the configured number of days.
pub async fn purge_old(core: &Core) {
    let before =
        Timestamp(Timestamp::now().secs() - i64::from(core.config.retention_days) * 86_400);
    match core.db.purge_commands(before).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(commands = n, "retention: purged old commands"),
        Err(e) => tracing::warn!("retention: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::test_core;
    use tungstenite::Utf8Bytes;

    fn output(command_id: &str, seq: u64, line: String) -> Output {
        Output {
            command_id: command_id.into(),
            seq,
            stream: OutputStream::Stdout,
            line,
        }
    }

    fn viewer() -> Viewer {
        Viewer {
            username: "ann".into(),
            role: protocol::api::Role::Viewer,
            csrf_token: String::new(),
            ip: None,
            session_hash: String::new(),
            authenticated_at: 0,
        }
    }

    fn event(text: &Utf8Bytes) -> (String, serde_json::Value) {
        let v: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
        (v["type"].as_str().unwrap().to_owned(), v["payload"].clone())
    }

    /// With a 1 MiB bound, 400 KiB lines: two are stored and sent to browsers, the rest
    /// are acked but counted instead, and browsers get the one marker line with the final
    /// count when the command ends; the download ends with it too.
    #[tokio::test]
    async fn output_past_the_bound_is_acked_counted_and_marked() {
        let dir = tempfile::tempdir().unwrap();
        let core = test_core(dir.path(), &["h"], &["nixdeck", "--max-output-mb", "1"]).await;
        core.db
            .insert_command("c1", "h", CommandKind::Test, Timestamp(1), "admin")
            .await
            .unwrap();
        let seat = core.hub.browser_seat("ann", 1).unwrap();
        let mut events = core.hub.subscribe_browser(&seat).await.unwrap().events;

        let big = |seq: u64| output("c1", seq, format!("{seq}{}", "x".repeat(400 * 1024)));
        let acks = ingest_output(&core, "h", (1..=3).map(big).collect()).await;
        assert_eq!(acks.iter().map(|a| a.seq).collect::<Vec<_>>(), vec![3]);
        let acks = ingest_output(&core, "h", (4..=6).map(big).collect()).await;
        assert_eq!(
            acks.iter().map(|a| a.seq).collect::<Vec<_>>(),
            vec![6],
            "dropped lines are acked, or the agent would send them forever"
        );
        let done = AgentCommandComplete {
            command_id: "c1".into(),
            status: AgentOutcome::Ok,
            exit_code: Some(0),
            duration_ms: 5,
            last_seq: 6,
            result: None,
        };
        let ack = on_complete(&core, "h", &done).await.unwrap();
        assert!(ack.complete);

        let marker = "[nixdeck: 4 lines dropped: output over the 1 MiB stored-output limit]";
        let mut seen = Vec::new();
        while let Ok(text) = events.try_recv() {
            let (kind, p) = event(&text);
            match kind.as_str() {
                "command_output" => seen.push((
                    p["seq"].as_u64().unwrap(),
                    p["stream"].as_str().unwrap().to_owned(),
                    p["line"].as_str().unwrap().to_owned(),
                )),
                "command_complete" => seen.push((0, "complete".into(), String::new())),
                _ => {}
            }
        }
        assert_eq!(
            seen,
            vec![
                (1, "stdout".into(), big(1).line),
                (2, "stdout".into(), big(2).line),
                (3, "stderr".into(), marker.into()),
                (0, "complete".into(), String::new()),
            ]
        );

        let (_, mut pages) = log_download(&core, &viewer(), "c1").await.unwrap();
        let text = pages.next_page().await.unwrap().unwrap();
        assert_eq!(text.lines().count(), 3);
        assert!(text.ends_with(&format!("[ERR] {marker}\n")));
        assert_eq!(pages.next_page().await.unwrap(), None);
    }
}
