//! Commands: the rules for running, stopping and unlocking, the agent's side of delivery
//! (output stored once per seq, acks, completion), hard timeouts and retention.

use super::{audit, require_operator, OrInternal, Result};
use crate::hub::Reservation;
use crate::secret::new_token;
use crate::storage::{CommandRow, LogLine};
use crate::Core;
use common::AppError;
use common::Viewer;
use protocol::api::{BulkFailed, BulkQueued, BulkResult, CommandDetail, CommandRecord};
use protocol::messages::{
    Ack, AgentCommandComplete, AgentOutcome, CommandComplete, CommandOrder, CommandOutput,
    CommandRejected, Output, RunningCommand, StopOrder,
};
use protocol::{
    BrowserEvent, CheckStatus, CommandKind, CommandResult, CommandStatus, OutputStream,
    PendingCommand, ServerMessage, StatusCheck, Timestamp,
};
use std::fmt::Write;

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

/// What a command may carry besides its kind.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunOptions {
    /// `rollback` only: the generation to go to (None: the previous one).
    pub generation: Option<u64>,
    /// `switch` and `boot` only: a finished `preview` of the same host, whose built store
    /// path the command activates instead of building the checkout again.
    pub preview_id: Option<String>,
    /// `preview` only: the commit to build instead of the checkout (a deploy previewing its
    /// PR's head before merging). Not offered to REST or the page: only the deploy, which
    /// vetted the commit, sets it.
    pub rev: Option<String>,
}

/// Run `kind` on a host: 202 with the id, 404 unknown host (or unknown preview), 409
/// `offline` or `busy`, 422 `invalid` for options that do not fit the command.
pub async fn run(
    core: &Core,
    viewer: &Viewer,
    host_id: &str,
    kind: CommandKind,
    options: RunOptions,
) -> Result<String> {
    let result = start(core, viewer, host_id, kind, options).await;
    audit::record(
        core,
        viewer,
        &format!("command.{kind}"),
        Some(host_id),
        result,
    )
    .await
}

/// The order for the agent: the options checked against the command and, for a preview,
/// against what the preview recorded. Read before the host is reserved, so a refusal
/// leaves the host as it was.
async fn order_for(
    core: &Core,
    host_id: &str,
    command_id: &str,
    kind: CommandKind,
    options: &RunOptions,
) -> Result<CommandOrder> {
    let mut order = CommandOrder::new(command_id, kind);
    if let Some(generation) = options.generation {
        if kind != CommandKind::Rollback {
            return Err(AppError::Invalid(format!(
                "generation applies only to rollback, not to {kind}."
            )));
        }
        order.generation = Some(generation);
    }
    if let Some(rev) = &options.rev {
        if kind != CommandKind::Preview {
            return Err(AppError::Invalid(format!(
                "rev applies only to preview, not to {kind}."
            )));
        }
        order.rev = Some(rev.clone());
    }
    let Some(preview_id) = &options.preview_id else {
        return Ok(order);
    };
    if !matches!(kind, CommandKind::Switch | CommandKind::Boot) {
        return Err(AppError::Invalid(format!(
            "preview_id applies only to switch and boot, not to {kind}."
        )));
    }
    let shown: String = preview_id.chars().take(40).collect();
    let Some(preview) = core
        .db
        .command(preview_id)
        .await
        .or_internal("loading preview")?
    else {
        return Err(AppError::NotFound(format!("command {shown}")));
    };
    if preview.host_id != host_id {
        return Err(AppError::Invalid(format!(
            "Command {shown} ran on {}, not on {host_id}: a preview only applies to its own host.",
            preview.host_id
        )));
    }
    if preview.command != CommandKind::Preview {
        return Err(AppError::Invalid(format!(
            "Command {shown} is a {}, not a preview.",
            preview.command
        )));
    }
    if !preview.status.is_success() {
        return Err(AppError::Invalid(format!(
            "Preview {shown} ended {}; only a preview that ended ok can be applied.",
            preview.status
        )));
    }
    let Some(store_path) = preview.result.and_then(|r| r.store_path) else {
        return Err(AppError::Invalid(format!(
            "Preview {shown} recorded no store path to apply; run a new preview."
        )));
    };
    order.store_path = Some(store_path);
    Ok(order)
}

async fn start(
    core: &Core,
    viewer: &Viewer,
    host_id: &str,
    kind: CommandKind,
    options: RunOptions,
) -> Result<String> {
    require_operator(viewer)?;
    // The agent is on another replica: that one reserves the host and sends the order.
    let routed = crate::replica::route(core, host_id, || crate::replica::Request::Run {
        username: viewer.username.clone(),
        host_id: host_id.to_owned(),
        command: kind,
        generation: options.generation,
        preview_id: options.preview_id.clone(),
        rev: options.rev.clone(),
    });
    if let Some(answer) = routed.await {
        return answer;
    }
    start_here(core, &viewer.username, host_id, kind, options).await
}

/// `start` on this replica, whose agent link the host has (or no replica's): reserve the
/// host, store the command and send the order. The caller checked the role; `username`
/// is who asked (also for a request from another replica, `crate::replica`).
pub async fn start_here(
    core: &Core,
    username: &str,
    host_id: &str,
    kind: CommandKind,
    options: RunOptions,
) -> Result<String> {
    let command_id = new_command_id();
    let order = order_for(core, host_id, &command_id, kind, &options).await?;
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
        .insert_command(&command_id, host_id, kind, now, username)
        .await
    {
        tracing::error!("storing command: {e}");
        release(
            core,
            host_id,
            &command_id,
            CommandStatus::Error,
            None,
            0,
            None,
        );
        return Err(AppError::Internal);
    }
    if !core
        .hub
        .send_to_agent(host_id, ServerMessage::Command(order))
    {
        let _ = core
            .db
            .release_command(&command_id, CommandStatus::Lost, now)
            .await;
        release(
            core,
            host_id,
            &command_id,
            CommandStatus::Lost,
            None,
            0,
            None,
        );
        return Err(AppError::conflict(
            "offline",
            format!("{host_id} went offline."),
        ));
    }
    core.db
        .mark_running(&command_id, now)
        .await
        .or_internal("marking command running")?;
    tracing::info!(host = host_id, command = %kind, command_id, by = username, "command sent");
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
    result: Option<CommandResult>,
) {
    core.hub.release(CommandComplete {
        host_id: host_id.to_owned(),
        command_id: command_id.to_owned(),
        status,
        exit_code,
        duration_ms,
        result,
    });
}

/// Ask the agent to stop the running command: 202, or 409 `idle` / `offline`.
pub async fn stop(core: &Core, viewer: &Viewer, host_id: &str) -> Result<String> {
    let result = send_stop(core, viewer, host_id).await;
    audit::record(core, viewer, "stop", Some(host_id), result).await
}

async fn send_stop(core: &Core, viewer: &Viewer, host_id: &str) -> Result<String> {
    require_operator(viewer)?;
    let routed = crate::replica::route(core, host_id, || crate::replica::Request::Stop {
        username: viewer.username.clone(),
        host_id: host_id.to_owned(),
    });
    if let Some(answer) = routed.await {
        return answer;
    }
    stop_here(core, &viewer.username, host_id).await
}

/// `stop` on the replica that holds the host's agent (or when no replica does).
pub async fn stop_here(core: &Core, username: &str, host_id: &str) -> Result<String> {
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
        by = username,
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
    let routed = crate::replica::route(core, host_id, || crate::replica::Request::Unlock {
        username: viewer.username.clone(),
        host_id: host_id.to_owned(),
    });
    if let Some(answer) = routed.await {
        return answer.map(|_| ());
    }
    unlock_here(core, &viewer.username, host_id).await
}

/// `unlock` on the replica that holds the host's agent (or when no replica does).
pub async fn unlock_here(core: &Core, username: &str, host_id: &str) -> Result<()> {
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
            None,
        );
        tracing::info!(
            host = host_id,
            command_id = pending.command_id,
            by = username,
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
    let mut records: Vec<CommandRecord> = rows.iter().map(CommandRow::record).collect();
    // Which of them a Merge & Deploy job started: one query from the oldest row on.
    if let Some(oldest) = records.iter().map(|r| r.queued_at).min() {
        let deploys = core
            .db
            .host_deploy_commands(host_id, oldest)
            .await
            .or_internal("loading the deploys of the command history")?;
        for (command_id, deploy_id, pr) in deploys {
            if let Some(r) = records.iter_mut().find(|r| r.command_id == command_id) {
                r.deploy_id = Some(deploy_id);
                r.deploy_pr = u64::try_from(pr).ok();
            }
        }
    }
    Ok(records)
}

/// `GET /api/commands/{id}`: one command with its result, for any signed-in role.
pub async fn detail(core: &Core, _viewer: &Viewer, command_id: &str) -> Result<CommandDetail> {
    core.db
        .command(command_id)
        .await
        .or_internal("loading command")?
        .map(|row| row.detail())
        .ok_or_else(|| {
            AppError::NotFound(format!(
                "command {}",
                command_id.chars().take(40).collect::<String>()
            ))
        })
}

/// One output line as the log download shows it.
pub fn log_line(line: &LogLine) -> String {
    match line.stream {
        OutputStream::Stdout => format!("[{}] {}", line.at.clock(), line.line),
        OutputStream::Stderr => format!("[{}] [ERR] {}", line.at.clock(), line.line),
    }
}

/// Lines of a stored log the page shows (`log_tail`): as many as the log panel keeps of a
/// live command (`app::store::LOG_LINES`); the rest is in the download.
pub const LOG_TAIL_LINES: u32 = 2_000;

/// The end of a command's stored log, as the download writes each line, for the log panel
/// to show a past command (the host page's history). Any signed-in role, like the download.
pub async fn log_tail(core: &Core, _viewer: &Viewer, command_id: &str) -> Result<Vec<String>> {
    if core
        .db
        .command(command_id)
        .await
        .or_internal("loading command")?
        .is_none()
    {
        return Err(AppError::NotFound(format!(
            "command {}",
            command_id.chars().take(40).collect::<String>()
        )));
    }
    let lines = core
        .db
        .output_tail(command_id, LOG_TAIL_LINES)
        .await
        .or_internal("loading output")?;
    Ok(lines.iter().map(log_line).collect())
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
    tags: Option<Vec<String>>,
) -> Result<Vec<BulkResult>> {
    require_operator(viewer)?;
    let ids = super::hosts::targets(core, host_ids, tags)?.unwrap_or_else(|| core.hub.online_ids());
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
            release(
                core,
                host_id,
                &p.command_id,
                CommandStatus::Lost,
                None,
                0,
                None,
            );
        }
    }
    let Some(r) = running else { return };
    if pending
        .as_ref()
        .is_some_and(|p| p.command_id == r.command_id)
    {
        republish_stored(core, host_id, &r.command_id).await;
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
            republish_stored(core, host_id, &r.command_id).await;
        }
    }
}

/// With replicas: an agent that comes back with a running command may have been on a
/// replica that died. That one stored lines (and acked them, so the agent does not send
/// them again) that it may never have put on the bus. The lines stored after the last one
/// browsers here were sent go out now, before the agent's next ones; the hub sends no line
/// twice (`Hub::output_seen`), and the bus carries them to the other replicas' browsers.
/// On a single server nothing is lost this way, and nothing is sent.
async fn republish_stored(core: &Core, host_id: &str, command_id: &str) {
    if !core.peers.active() {
        return;
    }
    let seen = core.hub.output_seen(host_id, command_id);
    match stored_after(core, host_id, command_id, seen).await {
        Ok(lines) => core.hub.publish_all(lines),
        Err(e) => tracing::warn!(host = host_id, "loading stored output to republish: {e}"),
    }
}

/// The stored lines of `command_id` after `seen` as browser events, at most the end the
/// log panel keeps; when browsers saw none of it (`seen` 0), that end, as a page load
/// shows it. For lines the bus may have lost: after a failover (`republish_stored`) and
/// after a gap in a peer's events (`crate::replica`).
pub(crate) async fn stored_after(
    core: &Core,
    host_id: &str,
    command_id: &str,
    seen: u64,
) -> crate::storage::DbResult<Vec<BrowserEvent>> {
    let mut lines = Vec::new();
    if seen > 0 {
        lines = core
            .db
            .output_page(command_id, seen, LOG_TAIL_LINES)
            .await?;
    }
    // More than the panel keeps were missed: the end, as a page load shows it.
    if seen == 0 || lines.len() >= LOG_TAIL_LINES as usize {
        lines = core.db.output_tail(command_id, LOG_TAIL_LINES).await?;
    }
    Ok(lines
        .into_iter()
        .map(|l| {
            BrowserEvent::CommandOutput(CommandOutput {
                host_id: host_id.to_owned(),
                command_id: command_id.to_owned(),
                seq: l.seq,
                stream: l.stream,
                line: l.line,
            })
        })
        .collect())
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
        // PostgreSQL's text holds no NUL, and a command's binary output can carry one: a
        // batch it refused would never be acked. Stored and shown as U+FFFD on either
        // database, as `nixdeck db copy` moves an old SQLite log's.
        let cleaned: Vec<Output>;
        let lines = if lines.iter().any(|l| l.line.contains('\0')) {
            cleaned = lines
                .iter()
                .map(|l| Output {
                    line: l.line.replace('\0', "\u{FFFD}"),
                    ..l.clone()
                })
                .collect();
            &cleaned[..]
        } else {
            lines
        };
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
    let result = done
        .result
        .as_ref()
        .and_then(|r| kept_result(host_id, &row.id, r));
    let result_json = result.as_ref().map(|(_, json)| json.as_str());
    let stored = match core
        .db
        .complete_command(
            &row.id,
            status,
            done.exit_code,
            done.duration_ms,
            Timestamp::now(),
            result_json,
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
        // By the agent's own outcome: the machine was rolled back even when the server
        // had recorded a timeout first.
        if activates(row.command) {
            match done.status {
                AgentOutcome::RolledBack => core
                    .hub
                    .set_activation_check(host_id, Some(rolled_back_check(row.command, done))),
                AgentOutcome::Ok => core.hub.set_activation_check(host_id, None),
                AgentOutcome::Error | AgentOutcome::Stopped => {}
            }
        }
        release(
            core,
            host_id,
            &row.id,
            stored.status,
            done.exit_code,
            done.duration_ms,
            stored.result.clone(),
        );
    }
    tracing::info!(host = host_id, command_id = row.id, status = ?stored.status, "command complete");
    Some(Ack {
        command_id: row.id,
        seq: stored.last_seq,
        complete: stored.last_seq >= done.last_seq,
    })
}

/// Largest result kept with a command, serialised. An agent's frames are bounded already;
/// this bounds what every later `GET /api/commands/{id}` and the database carry, whatever
/// an agent puts in one.
pub const MAX_RESULT_BYTES: usize = 64 * 1024;
/// Longest package name or version kept from a closure diff.
const PACKAGE_CHARS: usize = 256;

/// An agent's result as the dashboard keeps it, with its JSON: every text through
/// `agent_text` (store paths through `clean_store_path`), and None, with a warning, when
/// it is larger than `MAX_RESULT_BYTES` serialised.
fn kept_result(
    host_id: &str,
    command_id: &str,
    result: &CommandResult,
) -> Option<(CommandResult, String)> {
    use super::hosts::{agent_text, clean_store_path};
    let mut result = result.clone();
    result.store_path = result.store_path.as_deref().and_then(clean_store_path);
    if let Some(diff) = &mut result.diff {
        for change in &mut diff.changes {
            change.name = agent_text(&change.name, PACKAGE_CHARS).into_owned();
            for version in [&mut change.old, &mut change.new].into_iter().flatten() {
                *version = agent_text(version, PACKAGE_CHARS).into_owned();
            }
        }
    }
    let json = serde_json::to_string(&result).ok()?;
    if json.len() > MAX_RESULT_BYTES {
        tracing::warn!(
            host = host_id,
            command_id,
            bytes = json.len(),
            "dropped a command result over {MAX_RESULT_BYTES} bytes"
        );
        return None;
    }
    Some((result, json))
}

/// Commands that activate a system (or set the one to boot): their end decides the
/// system compartment until the next one.
fn activates(kind: CommandKind) -> bool {
    matches!(
        kind,
        CommandKind::Switch | CommandKind::PullSwitch | CommandKind::Boot | CommandKind::Rollback
    )
}

/// The system compartment after an activating command was rolled back: an error that
/// stands over the agent's later `ok` verdicts (the old generation runs fine, but the
/// target did not take) until an activating command ends ok.
fn rolled_back_check(kind: CommandKind, done: &AgentCommandComplete) -> StatusCheck {
    let to = done
        .result
        .as_ref()
        .and_then(|r| r.generation)
        .map(|g| format!(" to generation {g}"))
        .unwrap_or_default();
    StatusCheck::new(
        CheckStatus::Error,
        format!("{kind} rolled back{to}: the activation or the health gate failed (see the command's log)."),
        Some(Timestamp::now()),
    )
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
            release(core, host_id, &row.id, CommandStatus::Error, None, 0, None);
        }
    }
}

// ---------------------------------------------------------------- background

/// Hard timeouts: a command past its limit is recorded `timeout` and its agent told to
/// stop. The host stays busy until the agent reports the end (or an operator unlocks).
pub async fn enforce_timeouts(core: &Core) {
    let now = Timestamp::now();
    for (host_id, p) in core.hub.pending_commands() {
        // A host whose agent is on another replica is that one's to time out; a host no
        // replica holds is timed out by whichever gets there first (`set_final_status`
        // changes a command once).
        if core.hub.remote_owner(&host_id).is_some() {
            continue;
        }
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
    use crate::storage::testing::db_test;
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
            api_token: None,
        }
    }

    fn event(text: &Utf8Bytes) -> (String, serde_json::Value) {
        let v: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
        (v["type"].as_str().unwrap().to_owned(), v["payload"].clone())
    }

    db_test! {
        /// With a 1 MiB bound, 400 KiB lines: two are stored and sent to browsers, the rest
        /// are acked but counted instead, and browsers get the one marker line with the final
        /// count when the command ends; the download ends with it too.
        #[tokio::test]
        async fn output_past_the_bound_is_acked_counted_and_marked(backend) {
            let dir = tempfile::tempdir().unwrap();
            let core = test_core(&backend, dir.path(), &["h"], &["nixdeck", "--max-output-mb", "1"]).await;
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

    fn operator() -> Viewer {
        Viewer {
            username: "olga".into(),
            role: protocol::api::Role::Operator,
            ..viewer()
        }
    }

    fn register(name: &str) -> protocol::messages::Register {
        serde_json::from_value(serde_json::json!({
            "hostname": name, "host_type": "nixos", "agent_version": protocol::VERSION
        }))
        .unwrap()
    }

    /// The order the agent got last.
    fn order(link: &mut crate::hub::AgentAttached) -> CommandOrder {
        let mut last = None;
        while let Ok(crate::hub::AgentOut::Frame(msg)) = link.outbox.try_recv() {
            if let ServerMessage::Command(o) = msg {
                last = Some(o);
            }
        }
        last.expect("a command order")
    }

    fn done(
        command_id: &str,
        status: AgentOutcome,
        result: Option<CommandResult>,
    ) -> AgentCommandComplete {
        AgentCommandComplete {
            command_id: command_id.into(),
            status,
            exit_code: Some(0),
            duration_ms: 5,
            last_seq: 0,
            result,
        }
    }

    fn preview_result(store_path: &str) -> CommandResult {
        CommandResult {
            diff: Some(protocol::ClosureDiff {
                changes: vec![protocol::PackageChange {
                    name: "openssl\u{1b}[31m".into(),
                    old: Some("3.0.14".into()),
                    new: Some("3.0.15".into()),
                    kind: protocol::ChangeKind::Upgraded,
                }],
                closure_bytes_before: 1,
                closure_bytes_after: 2,
                reboot_needed: false,
                truncated: 0,
            }),
            generation: None,
            store_path: Some(store_path.into()),
        }
    }

    fn invalid(r: Result<String>) -> String {
        match r {
            Err(e @ AppError::Invalid(_)) => {
                assert_eq!(e.code(), "invalid");
                e.to_string()
            }
            other => panic!("expected 422 invalid, got {other:?}"),
        }
    }

    db_test! {
        /// A preview's result is stored (cleaned), returned by `detail` and sent to browsers
        /// with the completion; a switch from it carries its store path to the agent, and the
        /// options are refused where they do not fit, before the host is reserved.
        #[tokio::test]
        async fn a_switch_from_a_preview_activates_its_store_path_and_options_are_checked(backend) {
            let dir = tempfile::tempdir().unwrap();
            let core = test_core(&backend, dir.path(), &["h", "g"], &["nixdeck"]).await;
            let mut h = core.hub.attach_agent("h", &register("h"), None).unwrap();
            let _g = core.hub.attach_agent("g", &register("g"), None).unwrap();
            let op = operator();
            let seat = core.hub.browser_seat("ann", 1).unwrap();
            let mut events = core.hub.subscribe_browser(&seat).await.unwrap().events;
            let path = "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-h-26.05";

            let preview = run(&core, &op, "h", CommandKind::Preview, RunOptions::default())
                .await
                .unwrap();
            assert_eq!(order(&mut h).command, CommandKind::Preview);
            on_complete(
                &core,
                "h",
                &done(&preview, AgentOutcome::Ok, Some(preview_result(path))),
            )
            .await
            .unwrap();
            let detail = detail(&core, &viewer(), &preview).await.unwrap();
            assert_eq!(detail.status, CommandStatus::Ok);
            assert_eq!(detail.host_id, "h");
            let result = detail.result.expect("the stored result");
            assert_eq!(result.store_path.as_deref(), Some(path));
            assert_eq!(result.diff.unwrap().changes[0].name, "openssl", "cleaned");
            let mut sent = None;
            while let Ok(text) = events.try_recv() {
                let (kind, p) = event(&text);
                if kind == "command_complete" {
                    sent = Some(p);
                }
            }
            assert_eq!(sent.unwrap()["result"]["store_path"], path);
            assert!(matches!(
                super::detail(&core, &viewer(), "nope").await,
                Err(AppError::NotFound(_))
            ));

            let from = |id: &str| RunOptions {
                preview_id: Some(id.into()),
                ..RunOptions::default()
            };
            let switch = run(&core, &op, "h", CommandKind::Switch, from(&preview))
                .await
                .unwrap();
            let sent = order(&mut h);
            assert_eq!(
                (sent.command, sent.store_path.as_deref()),
                (CommandKind::Switch, Some(path))
            );
            assert_eq!(sent.generation, None);
            on_complete(&core, "h", &done(&switch, AgentOutcome::Ok, None)).await;

            // Refused before the host is touched.
            let e = invalid(run(&core, &op, "g", CommandKind::Switch, from(&preview)).await);
            assert!(e.contains("ran on h, not on g"), "{e}");
            let e = invalid(run(&core, &op, "h", CommandKind::Test, from(&preview)).await);
            assert!(e.contains("only to switch and boot"), "{e}");
            let e = invalid(run(&core, &op, "h", CommandKind::Switch, from(&switch)).await);
            assert!(e.contains("not a preview"), "{e}");
            assert!(matches!(
                run(&core, &op, "h", CommandKind::Boot, from("unknown")).await,
                Err(AppError::NotFound(_))
            ));
            let failed = run(&core, &op, "h", CommandKind::Preview, RunOptions::default())
                .await
                .unwrap();
            on_complete(&core, "h", &done(&failed, AgentOutcome::Error, None)).await;
            let e = invalid(run(&core, &op, "h", CommandKind::Boot, from(&failed)).await);
            assert!(e.contains("ended error"), "{e}");
            let to = |n: u64| RunOptions {
                generation: Some(n),
                ..RunOptions::default()
            };
            let e = invalid(run(&core, &op, "h", CommandKind::Pull, to(3)).await);
            assert!(e.contains("only to rollback"), "{e}");
            let at = RunOptions {
                rev: Some("abc".into()),
                ..RunOptions::default()
            };
            let e = invalid(run(&core, &op, "h", CommandKind::Switch, at).await);
            assert!(e.contains("only to preview"), "{e}");
            assert!(
                core.hub.pending("h").is_none(),
                "a refusal reserves nothing"
            );

            let rollback = run(&core, &op, "h", CommandKind::Rollback, to(3))
                .await
                .unwrap();
            let sent = order(&mut h);
            assert_eq!(
                (sent.command, sent.generation),
                (CommandKind::Rollback, Some(3))
            );
            assert_eq!(sent.command_id, rollback);
            // A viewer may read a command, but not run one.
            assert!(matches!(
                run(
                    &core,
                    &viewer(),
                    "g",
                    CommandKind::Preview,
                    RunOptions::default()
                )
                .await,
                Err(AppError::Forbidden(_))
            ));
        }
    }

    db_test! {
        /// A rolled-back switch is a failure: recorded as such, the host freed, counted as a
        /// failed end, and the system compartment an error until an activation ends ok, even
        /// over the agent's own `ok` verdict of the old generation.
        #[tokio::test]
        async fn a_rolled_back_switch_is_a_failure_everywhere(backend) {
            let dir = tempfile::tempdir().unwrap();
            let core = test_core(&backend, dir.path(), &["h"], &["nixdeck"]).await;
            let _h = core.hub.attach_agent("h", &register("h"), None).unwrap();
            let op = operator();
            let switch = run(&core, &op, "h", CommandKind::Switch, RunOptions::default())
                .await
                .unwrap();
            let result = CommandResult {
                generation: Some(41),
                ..CommandResult::default()
            };
            on_complete(
                &core,
                "h",
                &done(&switch, AgentOutcome::RolledBack, Some(result)),
            )
            .await
            .unwrap();
            assert!(core.hub.pending("h").is_none(), "the host is free");
            let history = history(&core, &op, "h", 5).await.unwrap();
            assert_eq!(history[0].status, CommandStatus::RolledBack);
            let detail = super::detail(&core, &op, &switch).await.unwrap();
            assert_eq!(detail.status, CommandStatus::RolledBack);
            assert_eq!(detail.result.unwrap().generation, Some(41));
            let ended = |s: CommandStatus| {
                let i = CommandStatus::ALL.iter().position(|x| *x == s).unwrap();
                core.hub.counters().commands_ended[i].load(std::sync::atomic::Ordering::Relaxed)
            };
            assert_eq!(
                (ended(CommandStatus::RolledBack), ended(CommandStatus::Ok)),
                (1, 0)
            );
            let system = || core.hub.host("h").unwrap().update_status.system;
            assert_eq!(system().status, CheckStatus::Error);
            assert!(
                system()
                    .message
                    .contains("switch rolled back to generation 41"),
                "{:?}",
                system()
            );
            // The agent's verdict of the generation it went back to does not hide it.
            core.hub.report_checks(
                "h",
                protocol::messages::StatusChecks {
                    system: Some(StatusCheck::new(CheckStatus::Ok, "running", None)),
                    tests: None,
                },
            );
            assert_eq!(system().status, CheckStatus::Error);
            // A switch that ends ok lets the agent's verdicts speak again.
            let again = run(&core, &op, "h", CommandKind::Switch, RunOptions::default())
                .await
                .unwrap();
            on_complete(&core, "h", &done(&again, AgentOutcome::Ok, None)).await;
            assert_ne!(system().status, CheckStatus::Error, "{:?}", system());
        }
    }

    db_test! {
        /// A result over the bound is dropped; the completion itself is stored.
        #[tokio::test]
        async fn a_result_over_64_kib_is_dropped_and_the_command_still_ends(backend) {
            let dir = tempfile::tempdir().unwrap();
            let core = test_core(&backend, dir.path(), &["h"], &["nixdeck"]).await;
            let _h = core.hub.attach_agent("h", &register("h"), None).unwrap();
            let preview = run(
                &core,
                &operator(),
                "h",
                CommandKind::Preview,
                RunOptions::default(),
            )
            .await
            .unwrap();
            let mut big = preview_result("/nix/store/x");
            let change = big.diff.as_ref().unwrap().changes[0].clone();
            big.diff.as_mut().unwrap().changes = vec![change; 2000];
            on_complete(&core, "h", &done(&preview, AgentOutcome::Ok, Some(big)))
                .await
                .unwrap();
            let detail = detail(&core, &viewer(), &preview).await.unwrap();
            assert_eq!((detail.status, detail.result), (CommandStatus::Ok, None));
        }
    }
}
