//! Merge & Deploy: merge the flake.lock PR on GitHub, wait for the branch to move, then
//! pull and switch the target hosts, wave by wave (an optional canary wave, then batches).
//!
//! Only the update PR the dashboard detected is merged, and only at the head it was
//! detected at: before merging, the PR is read again from GitHub and checked against the
//! same rules (`desired::PrRules`: the deploy branch as base, no fork, an allowed author,
//! allowed files only) and for mergeability, and the merge sends that head's sha, so
//! GitHub refuses (409) if commits were pushed since. Every refusal is a 409 with its
//! code, before any host is touched, and is in the audit log.
//!
//! With `preview`, nothing is merged at first: the vetted head is previewed on every target
//! (`preview` with `rev`, phase `previewing`), then the job waits in `awaiting_confirmation`
//! until an operator confirms (`confirm`), cancels, or `NIXDECK_DEPLOY_CONFIRM_TIMEOUT_S`
//! passes. A confirmed job vets the PR again and merges the head that was previewed, so a
//! head that moved meanwhile is refused, then goes on as a deploy without preview.
//!
//! One job at a time, across every server on the database: at most one job row is active
//! (a unique index), so a second start, on any server, is a 409 `deploy_running`. Its
//! progress is stored on every change and broadcast as `deploy_progress`. When the server
//! running a job stops (a restart, or a crash: it no longer holds its lease,
//! `service::lease`), the job is taken over at start or by the leader within a lease TTL
//! (`take_over`): one that was merging or rolling out is marked interrupted, one that was
//! previewing or waiting for its confirmation is resumed (nothing of it was merged, and its
//! previews report as usual). A job's state (its gate, its cancel flag, which commands it
//! waits for) lives in the memory of the server running it: a confirmation or cancel asked
//! on another server is sent there over the replicas' bus (`replica::route_deploy`, as a
//! command goes to its host's owner) and answered from there (`confirm_here`,
//! `cancel_here`), so "the cancel wins" and every answer hold as on one server.

use super::commands::{self, RunOptions};
use super::{audit, require_operator, OrInternal, Result};
use crate::github::GhError;
use crate::secret::new_token;
use crate::Core;
use common::AppError;
use common::Viewer;
use protocol::api::{DeployCommand, DeployRecord, DeployRequest, OnFailure};
use protocol::messages::{BrowserEvent, DeployHostState, DeployPhase, DeployProgress};
use protocol::Timestamp;
use protocol::{CommandKind, CommandStatus, PendingPr};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, oneshot};

/// While waiting for a wave's commands, look in the database this often (for ends that
/// free no host, like a timeout whose agent is gone).
const DB_CHECK: Duration = Duration::from_secs(30);

/// The running job, if any: only one deploy at a time.
#[derive(Default)]
pub struct Deploys {
    running: Mutex<Option<Running>>,
}

struct Running {
    job_id: String,
    pr_number: u64,
    cancel: Arc<Cancel>,
    gate: Arc<Gate>,
}

#[derive(Default)]
struct Cancel {
    requested: AtomicBool,
    by: Mutex<String>,
}

/// A previewed job's confirmation: `confirm` may only pass while the job waits for it, and
/// the job closes the gate when it stops waiting (cancelled, expired), so a confirmation
/// either reaches the job or is refused, never lost.
#[derive(Default)]
struct Gate {
    state: Mutex<GateState>,
}

#[derive(Default)]
enum GateState {
    #[default]
    Closed,
    Open,
    /// Who confirmed, and where the job answers whether the merge went through.
    Confirmed(Viewer, oneshot::Sender<Result<()>>),
}

impl Gate {
    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Deploys {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Running>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The job slot while a deploy is being started: freed when dropped, unless the job took it
/// over (the job frees it when it ends).
struct Claim {
    deploys: Arc<Deploys>,
    armed: bool,
}

impl Drop for Claim {
    fn drop(&mut self) {
        if self.armed {
            *self.deploys.lock() = None;
        }
    }
}

/// `POST /api/deploy` and the Merge & Deploy button: 202 with the job id.
pub async fn start(core: &Core, viewer: &Viewer, req: DeployRequest) -> Result<String> {
    // GitHub's answers (two reads and the merge) take a while: the start runs on its own
    // task, so a client that goes away meanwhile leaves neither the slot taken, nor a
    // merged PR without its job, nor a gap in the audit log.
    let (core, viewer) = (core.clone(), viewer.clone());
    let started = tokio::spawn(async move {
        let target = format!("PR #{}", req.pr_number);
        let result = begin(&core, &viewer, req).await;
        audit::record(&core, &viewer, "deploy.start", Some(&target), result).await
    });
    started.await.unwrap_or_else(|e| {
        tracing::error!("starting a deploy: {e}");
        Err(AppError::Internal)
    })
}

/// The hosts in the order they are deployed: canary wave first, then batches.
fn plan(targets: &[String], req: &DeployRequest) -> Vec<Vec<String>> {
    let canary: Vec<String> = req
        .canary
        .iter()
        .flatten()
        .filter(|h| targets.contains(h))
        .cloned()
        .collect();
    let rest: Vec<String> = targets
        .iter()
        .filter(|h| !canary.contains(h))
        .cloned()
        .collect();
    let mut waves = Vec::new();
    if !canary.is_empty() {
        waves.push(canary);
    }
    match req.batch_size {
        Some(n) if n > 0 => waves.extend(rest.chunks(n as usize).map(<[String]>::to_vec)),
        _ if !rest.is_empty() => waves.push(rest),
        _ => {}
    }
    waves
}

async fn begin(core: &Core, viewer: &Viewer, req: DeployRequest) -> Result<String> {
    require_operator(viewer)?;
    super::auth::require_recent_auth_or_token(core, viewer)?;
    if core.desired.github().is_none() {
        return Err(AppError::conflict(
            "not_configured",
            "Merge & Deploy needs the GitHub source (NIXDECK_GITHUB_REPO).",
        ));
    }
    let named = super::hosts::targets(core, req.host_ids.clone(), req.tags.clone())?;
    // A canary wave named by tag: the targets carrying it, as ids from here on (stored so,
    // for a restart).
    let mut req = req;
    let tagged = match req.canary_tags.take() {
        Some(tags) => super::hosts::targets(core, None, Some(tags))?.unwrap_or_default(),
        None => Vec::new(),
    };
    let mut targets = match &named {
        Some(ids) => {
            for id in ids {
                if !core.hub.contains(id) {
                    return Err(AppError::NotFound(format!("host {id}")));
                }
            }
            ids.clone()
        }
        None => core.hub.online_ids(),
    };
    for id in req.canary.iter().flatten() {
        if !core.hub.contains(id) {
            return Err(AppError::NotFound(format!("host {id}")));
        }
        if !targets.contains(id) {
            targets.push(id.clone());
        }
    }
    targets.sort();
    targets.dedup();
    for id in tagged.into_iter().filter(|id| targets.contains(id)) {
        let canary = req.canary.get_or_insert_with(Vec::new);
        if !canary.contains(&id) {
            canary.push(id);
        }
    }
    if targets.is_empty() {
        return Err(AppError::conflict(
            "no_hosts",
            "No host is online to deploy to.",
        ));
    }
    // Another server on the database may run one (the database decides: at most one
    // active job, `Db::insert_deploy`; this look only answers sooner).
    if let Some((job, replica)) = core
        .db
        .active_deploy_owner()
        .await
        .or_internal("loading deploys")?
    {
        if replica != *core.replica {
            return Err(running_elsewhere(&job));
        }
    }
    let job_id = new_token()[..16].to_owned();
    let cancel = Arc::new(Cancel::default());
    let gate = Arc::new(Gate::default());
    {
        let mut running = core.deploys.lock();
        if let Some(r) = running.as_ref() {
            let what = if matches!(*r.gate.lock(), GateState::Closed) {
                "is still running"
            } else {
                "waits for its confirmation"
            };
            return Err(AppError::conflict(
                "deploy_running",
                format!("A deploy of PR #{} {what} (job {}).", r.pr_number, r.job_id),
            ));
        }
        *running = Some(Running {
            job_id: job_id.clone(),
            pr_number: req.pr_number,
            cancel: cancel.clone(),
            gate: gate.clone(),
        });
    }
    let mut claim = Claim {
        deploys: core.deploys.clone(),
        armed: true,
    };
    let pr = req.pr_number;
    let reviewed = vet(core, pr, req.head_sha.as_deref()).await?;
    // Stored with the head that was vetted: the one a confirmation merges, after a restart
    // too.
    let req = DeployRequest {
        head_sha: Some(reviewed.clone()),
        ..req
    };
    let (phase, message) = if req.preview {
        (
            DeployPhase::Previewing,
            format!(
                "Previewing PR #{pr} at {} on {}…",
                short(&reviewed),
                targets.join(", ")
            ),
        )
    } else {
        (
            DeployPhase::Merging,
            format!("Merging PR #{pr} at {}…", short(&reviewed)),
        )
    };
    let progress = DeployProgress {
        job_id: job_id.clone(),
        pr_number: pr,
        phase,
        hosts: targets
            .iter()
            .map(|h| (h.clone(), DeployHostState::Pending))
            .collect(),
        message,
        started_by: viewer.username.clone(),
        active: true,
        previews: Default::default(),
    };
    let request = serde_json::to_string(&req).unwrap_or_default();
    match core
        .db
        .insert_deploy(&progress, &request, &core.replica)
        .await
    {
        Ok(()) => {}
        // Another server started one meanwhile: the database let only one in.
        Err(e) if crate::storage::is_unique_violation(&e) => {
            return Err(match core.db.active_deploy_owner().await {
                Ok(Some((job, _))) => running_elsewhere(&job),
                _ => AppError::conflict("deploy_running", "Another deploy is running."),
            });
        }
        Err(e) => return Err(e).or_internal("storing deploy job"),
    }
    // From here the job ends through `finish`, which frees the slot.
    claim.armed = false;
    core.hub
        .publish(BrowserEvent::DeployProgress(progress.clone()));
    tracing::info!(job_id, pr, head = reviewed, by = viewer.username, hosts = ?targets, preview = req.preview, "deploy started");
    let waves = plan(&targets, &req);
    let mut job = Job::new(core, viewer.clone(), progress, cancel, gate, &req);
    if req.preview {
        tokio::spawn(job.preview(reviewed, waves));
        return Ok(job_id);
    }
    match job.merge(&reviewed).await {
        Ok(sha) => {
            tokio::spawn(job.run(sha, waves));
            Ok(job_id)
        }
        Err(refused) => {
            job.finish(DeployPhase::Failed, refused.to_string()).await;
            Err(refused)
        }
    }
}

/// The 409 for a deploy while `job` runs on another server.
fn running_elsewhere(job: &DeployProgress) -> AppError {
    let what = if job.phase == DeployPhase::AwaitingConfirmation {
        "waits for its confirmation"
    } else {
        "is still running"
    };
    AppError::conflict(
        "deploy_running",
        format!(
            "A deploy of PR #{} {what} (job {}).",
            job.pr_number, job.job_id
        ),
    )
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(7)]
}

/// PR `number` may be merged: it is the update PR the dashboard detected, GitHub's view
/// of it now passes the rules, and (while its head is still the detected one) GitHub says
/// it can be merged. The detected head's sha, which the merge must name.
async fn vet(core: &Core, number: u64, seen: Option<&str>) -> Result<String> {
    let pending = core.hub.pending_pr();
    let detected = pending
        .as_ref()
        .filter(|p| p.number == number)
        .and_then(|p| p.head_sha.clone());
    let Some(reviewed) = detected else {
        let shown = match &pending {
            Some(p) if p.number != number => format!("the dashboard shows PR #{}", p.number),
            Some(_) => "its head commit is not known; check for the PR again".to_owned(),
            None => "the dashboard shows none".to_owned(),
        };
        return Err(AppError::conflict(
            "not_pending_pr",
            format!(
                "PR #{number} is not the flake.lock update PR ({shown}); only that one can be merged and deployed."
            ),
        ));
    };
    // The operator's page showed another head: they have not reviewed this one.
    if let Some(seen) = seen.filter(|s| *s != reviewed) {
        return Err(AppError::conflict(
            "head_moved",
            format!(
                "PR #{number} changed since you looked at it ({} is now {}); look at it again, then deploy.",
                short(seen),
                short(&reviewed)
            ),
        ));
    }
    let pull = match core.desired.recheck_pr(number).await {
        Ok(Ok(pull)) => pull,
        Ok(Err(refusal)) => return Err(AppError::conflict(refusal.code, refusal.message)),
        Err(e) => {
            return Err(AppError::Upstream(format!(
                "Cannot read PR #{number} from GitHub: {e}"
            )))
        }
    };
    // A head that moved is GitHub's to refuse: the merge names the detected one.
    if pull.head_sha() == Some(reviewed.as_str()) && !pull.can_merge() {
        let why = match (pull.mergeable, pull.mergeable_state.as_deref()) {
            (None, _) => format!(
                "GitHub is still working out whether PR #{number} can be merged; try again in a moment."
            ),
            (_, Some(state)) if state != "unknown" => {
                format!("GitHub says PR #{number} cannot be merged now ({state}).")
            }
            _ => format!("GitHub says PR #{number} cannot be merged now."),
        };
        return Err(AppError::conflict("not_mergeable", why));
    }
    Ok(reviewed)
}

/// GitHub's refusal to merge, as the answer to the deploy request.
fn merge_refused(pr: u64, e: GhError) -> AppError {
    match e {
        // The head moved since the dashboard detected it (GitHub's "Head branch was
        // modified. Review and try the merge again.").
        GhError::Status {
            status: 409,
            message,
        } => AppError::conflict(
            "head_moved",
            format!("GitHub refused to merge PR #{pr}: {message}"),
        ),
        GhError::Status {
            status: 405,
            message,
        } => AppError::conflict(
            "not_mergeable",
            format!("GitHub refused to merge PR #{pr}: {message}"),
        ),
        e => AppError::Upstream(format!("GitHub refused to merge PR #{pr}: {e}")),
    }
}

/// A refusal to merge after a preview, saying that nothing was merged; a head that moved
/// since the preview says so first.
fn after_preview(pr: u64, previewed: &str, e: AppError) -> AppError {
    match e {
        AppError::Conflict { code, message } if code == "head_moved" => AppError::conflict(
            "head_moved",
            format!(
                "PR #{pr} changed since it was previewed at {}; nothing was merged. Start a new deploy to preview its new head. ({message})",
                short(previewed)
            ),
        ),
        AppError::Conflict { code, message } => {
            AppError::conflict(&code, format!("{message} Nothing was merged."))
        }
        AppError::Upstream(message) => {
            AppError::Upstream(format!("{message} Nothing was merged."))
        }
        e => e,
    }
}

/// `POST /api/pending-pr/check` and "Check for PR now": look at GitHub now.
pub async fn check_pr(core: &Core, viewer: &Viewer) -> Result<Option<PendingPr>> {
    require_operator(viewer)?;
    if core.desired.github().is_none() {
        return Err(AppError::conflict(
            "not_configured",
            "Looking for flake.lock PRs needs the GitHub source (NIXDECK_GITHUB_REPO).",
        ));
    }
    match core.desired.check_prs().await {
        Ok((pr, _)) => Ok(pr),
        Err(e) => Err(AppError::Upstream(format!("Cannot check GitHub: {e}"))),
    }
}

/// `POST /api/deploy/{id}/cancel`: no new step starts; running commands finish.
pub async fn cancel(core: &Core, viewer: &Viewer, job_id: &str) -> Result<()> {
    let result = request_cancel(core, viewer, job_id).await;
    audit::record(core, viewer, "deploy.cancel", Some(job_id), result).await
}

async fn request_cancel(core: &Core, viewer: &Viewer, job_id: &str) -> Result<()> {
    require_operator(viewer)?;
    let routed =
        crate::replica::route_deploy(core, job_id, || crate::replica::Request::DeployCancel {
            job_id: job_id.to_owned(),
            username: viewer.username.clone(),
        });
    if let Some(answer) = routed.await {
        return answer.map(drop);
    }
    cancel_here(core, &viewer.username, job_id).await
}

/// Cancel job `job_id`, which runs on this server, in the name of `username` (the caller
/// checked the role; `replica::serve_request` for one asked on another server).
pub async fn cancel_here(core: &Core, username: &str, job_id: &str) -> Result<()> {
    {
        let running = core.deploys.lock();
        if let Some(r) = running.as_ref().filter(|r| r.job_id == job_id) {
            *r.cancel.by.lock().unwrap_or_else(|e| e.into_inner()) = username.to_owned();
            r.cancel.requested.store(true, Ordering::SeqCst);
            return Ok(());
        }
    }
    match core.db.deploy(job_id).await.or_internal("loading deploy")? {
        Some(job) if job.active => Err(changing_hands(job_id)),
        Some(_) => Err(AppError::conflict(
            "finished",
            format!("Deploy {job_id} has already ended."),
        )),
        None => Err(AppError::NotFound(format!("deploy job {job_id}"))),
    }
}

/// An active job that the server asked does not run: it is being taken over (its server
/// stopped, and the leader claimed it but has not resumed it yet, `take_over`).
fn changing_hands(job_id: &str) -> AppError {
    AppError::conflict(
        "owner_unreachable",
        format!(
            "Deploy {job_id} is being taken over from a dashboard server that stopped; try again in a few seconds."
        ),
    )
}

/// `POST /api/deploy/{id}/confirm`: a job that previewed first and waits in
/// `awaiting_confirmation` vets the PR again and merges the head it previewed, then rolls
/// out as a deploy without preview does. Answers once GitHub merged (or refused: the 409 of
/// a deploy's start, e.g. `head_moved`); 409 `not_awaiting` for a job in any other phase.
pub async fn confirm(core: &Core, viewer: &Viewer, job_id: &str) -> Result<()> {
    // The merge takes a while: a client that goes away meanwhile leaves no gap in the
    // audit log (the merge itself runs on the job's task).
    let (core, viewer, job_id) = (core.clone(), viewer.clone(), job_id.to_owned());
    let confirmed = tokio::spawn(async move {
        let result = request_confirm(&core, &viewer, &job_id).await;
        audit::record(&core, &viewer, "deploy.confirm", Some(&job_id), result).await
    });
    confirmed.await.unwrap_or_else(|e| {
        tracing::error!("confirming a deploy: {e}");
        Err(AppError::Internal)
    })
}

async fn request_confirm(core: &Core, viewer: &Viewer, job_id: &str) -> Result<()> {
    require_operator(viewer)?;
    // The confirmation is what merges: as fresh a login as starting a deploy.
    super::auth::require_recent_auth_or_token(core, viewer)?;
    // Sent to the server running the job when that is another one. Its answer waits for
    // the vetting and GitHub's merge there, as it does here; should they take longer than
    // the bus's `REQUEST_TIMEOUT` (10 s), the answer is `owner_unreachable` while the job
    // goes on (its progress tells how it ended).
    let routed =
        crate::replica::route_deploy(core, job_id, || crate::replica::Request::DeployConfirm {
            job_id: job_id.to_owned(),
            username: viewer.username.clone(),
            role: viewer.role,
            ip: viewer.ip.clone(),
            api_token: viewer.api_token.clone(),
        });
    if let Some(answer) = routed.await {
        return answer.map(drop);
    }
    confirm_here(core, viewer, job_id).await
}

/// Confirm job `job_id`, which runs on this server, as `viewer` (the caller checked the
/// role and the login; `replica::serve_request` for one asked on another server).
pub async fn confirm_here(core: &Core, viewer: &Viewer, job_id: &str) -> Result<()> {
    let answer = {
        let running = core.deploys.lock();
        running
            .as_ref()
            .filter(|r| r.job_id == job_id)
            .and_then(|r| {
                let mut gate = r.gate.lock();
                matches!(*gate, GateState::Open).then(|| {
                    let (reply, answer) = oneshot::channel();
                    *gate = GateState::Confirmed(viewer.clone(), reply);
                    answer
                })
            })
    };
    if let Some(answer) = answer {
        return answer.await.unwrap_or_else(|_| {
            Err(AppError::conflict(
                "not_awaiting",
                format!("Deploy {job_id} ended before it merged."),
            ))
        });
    }
    match core.db.deploy(job_id).await.or_internal("loading deploy")? {
        // Stored as waiting, and no server runs it: it is being taken over.
        Some(job) if job.active && job.phase == DeployPhase::AwaitingConfirmation => {
            Err(changing_hands(job_id))
        }
        Some(job) => Err(AppError::conflict(
            "not_awaiting",
            format!(
                "Deploy {job_id} is not waiting for confirmation (it is {}).",
                if job.active {
                    job.phase.as_str()
                } else {
                    "over"
                }
            ),
        )),
        None => Err(AppError::NotFound(format!("deploy job {job_id}"))),
    }
}

/// One job's progress, running or finished.
pub async fn status(core: &Core, job_id: &str) -> Result<DeployProgress> {
    core.db
        .deploy(job_id)
        .await
        .or_internal("loading deploy")?
        .ok_or_else(|| AppError::NotFound(format!("deploy job {job_id}")))
}

/// `GET /api/deploys`: the newest `limit` jobs (1 to 200), newest first, each with the
/// commands it started; for any signed-in role, like a job's status.
pub async fn history(core: &Core, _viewer: &Viewer, limit: u32) -> Result<Vec<DeployRecord>> {
    let jobs = core
        .db
        .recent_deploys(limit.clamp(1, 200))
        .await
        .or_internal("loading deploys")?;
    let mut records = Vec::with_capacity(jobs.len());
    for (job, started_at, updated_at) in jobs {
        let commands = core
            .db
            .deploy_commands(&job.job_id)
            .await
            .or_internal("loading a deploy's commands")?
            .iter()
            .map(|row| DeployCommand {
                host_id: row.host_id.clone(),
                record: row.record(),
            })
            .collect();
        records.push(DeployRecord {
            job,
            started_at,
            updated_at,
            commands,
        });
    }
    Ok(records)
}

/// At start: the jobs of servers that are gone (see `take_over`), and the newest job is
/// shown. On SQLite every job not this process's is its previous process's (one server per
/// database file), so all of them are; on PostgreSQL only those whose server no longer
/// holds its lease (`service::lease::alive`): another server may be running one.
pub async fn recover(core: &Core) -> anyhow::Result<()> {
    take_over_jobs(core).await?;
    if let Some(latest) = core.db.latest_deploy().await? {
        core.hub.publish(BrowserEvent::DeployProgress(latest));
    }
    Ok(())
}

/// The leader's look, every lease renewal: the active job of a server that died is taken
/// over here. Errors are logged; the next look tries again.
pub async fn take_over(core: &Core) {
    if let Err(e) = take_over_jobs(core).await {
        tracing::warn!("taking over deploy jobs: {e}");
    }
}

/// A job whose server is gone is claimed by this one (`Db::claim_deploy`: one server
/// wins when several look at once), then taken over: one that was previewing or waiting
/// for its confirmation is resumed (nothing of it was merged, so it can go on here, see
/// `resume`); one that was merging or rolling out is marked interrupted (its commands keep
/// running and report as usual). Not resumed: a rollout's state between a command sent and
/// its completion lives in the dead server's memory, and guessing it could switch a host
/// twice or skip a wave's health check; an operator starts a new deploy instead.
async fn take_over_jobs(core: &Core) -> anyhow::Result<()> {
    let Some((job, owner)) = core.db.active_deploy_owner().await? else {
        return Ok(());
    };
    if owner == *core.replica {
        return Ok(());
    }
    let gone = core.db.backend() == crate::storage::Backend::Sqlite
        || !super::lease::alive(core, &owner).await?;
    if !gone
        || !core
            .db
            .claim_deploy(&job.job_id, &owner, &core.replica)
            .await?
    {
        return Ok(());
    }
    tracing::warn!(
        job_id = job.job_id,
        from = owner,
        "taking over a deploy whose server is gone"
    );
    take_over_job(core, job).await
}

async fn take_over_job(core: &Core, mut job: DeployProgress) -> anyhow::Result<()> {
    if matches!(
        job.phase,
        DeployPhase::Previewing | DeployPhase::AwaitingConfirmation
    ) {
        match resume(core, job.clone()).await {
            Ok(()) => return Ok(()),
            Err(why) => {
                tracing::warn!(job_id = job.job_id, "deploy not resumed: {why}");
            }
        }
    }
    {
        let unfinished: Vec<String> = job
            .hosts
            .iter()
            .filter(|(_, s)| matches!(s, DeployHostState::Pending | DeployHostState::Running))
            .map(|(h, _)| h.clone())
            .collect();
        for state in job.hosts.values_mut() {
            *state = match *state {
                DeployHostState::Pending => DeployHostState::Skipped,
                // Mid-step: its command keeps running, but this job no longer follows it.
                DeployHostState::Running => DeployHostState::Error,
                s => s,
            };
        }
        job.message = format!(
            "Interrupted: the dashboard server running it stopped (a restart, or a crash) while {}; not finished: {}. Commands already sent keep running (see each host's log).",
            phase_verb(job.phase),
            if unfinished.is_empty() { "none".to_owned() } else { unfinished.join(", ") }
        );
        if matches!(
            job.phase,
            DeployPhase::Previewing | DeployPhase::AwaitingConfirmation
        ) {
            job.message.push_str(" Nothing was merged.");
        }
        job.phase = DeployPhase::Failed;
        job.active = false;
        core.db.save_deploy(&job).await?;
        core.hub.publish(BrowserEvent::DeployProgress(job.clone()));
        tracing::warn!(
            job_id = job.job_id,
            "deploy interrupted: its server stopped"
        );
    }
    Ok(())
}

/// Take a job that was previewing or waiting for its confirmation up again: nothing of it
/// was merged, so it can go on where it was. A preview still running when the dashboard
/// stopped is waited for (its agent reports it as usual, or the database already has its
/// end); a host whose preview was never sent is `skipped`. The confirmation deadline is
/// the stored one. Why not, when it cannot be resumed.
async fn resume(core: &Core, mut progress: DeployProgress) -> std::result::Result<(), String> {
    let stored = core
        .db
        .deploy_resume(&progress.job_id)
        .await
        .map_err(|e| format!("loading it: {e}"))?
        .ok_or("it is not stored")?;
    let req: DeployRequest = serde_json::from_str(&stored.request)
        .map_err(|e| format!("its stored request does not read: {e}"))?;
    let sha = req
        .head_sha
        .clone()
        .ok_or("its stored request names no head")?;
    let cancel = Arc::new(Cancel::default());
    let gate = Arc::new(Gate::default());
    {
        let mut running = core.deploys.lock();
        if let Some(r) = running.as_ref() {
            return Err(format!("job {} was resumed first", r.job_id));
        }
        *running = Some(Running {
            job_id: progress.job_id.clone(),
            pr_number: progress.pr_number,
            cancel: cancel.clone(),
            gate: gate.clone(),
        });
    }
    // Sends nothing as this user: a confirmation brings its own.
    let viewer = Viewer {
        username: progress.started_by.clone(),
        role: protocol::api::Role::Operator,
        csrf_token: String::new(),
        ip: None,
        session_hash: String::new(),
        authenticated_at: 0,
        api_token: None,
    };
    let targets: Vec<String> = progress.hosts.keys().cloned().collect();
    let waves = plan(&targets, &req);
    let phase = progress.phase;
    let mut waiting = HashMap::new();
    let mut reasons = HashMap::new();
    for (host, state) in progress.hosts.iter_mut() {
        match (*state, progress.previews.get(host)) {
            (DeployHostState::Running, Some(id)) => {
                waiting.insert(id.clone(), host.clone());
            }
            (DeployHostState::Pending | DeployHostState::Running, _) => {
                *state = DeployHostState::Skipped;
                reasons.insert(host.clone(), "interrupted by a restart".to_owned());
            }
            _ => {}
        }
    }
    tracing::info!(
        job_id = progress.job_id,
        ?phase,
        "deploy resumed after a restart"
    );
    let job = Job::new(core, viewer, progress, cancel, gate, &req);
    match phase {
        DeployPhase::Previewing => {
            let completions = core.hub.completions();
            tokio::spawn(job.previewed(sha, waves, completions, waiting, reasons));
        }
        _ => {
            tokio::spawn(job.await_confirmation(sha, waves, reasons, stored.confirm_by));
        }
    }
    Ok(())
}

/// A host's state in a deploy after its `kind` command ended with `status`. Only `ok`
/// succeeds; `rolled_back` is a failure of its own, never ok.
fn host_state(kind: CommandKind, status: CommandStatus) -> DeployHostState {
    match (kind, status) {
        (CommandKind::Switch | CommandKind::Preview, CommandStatus::Ok) => DeployHostState::Ok,
        (CommandKind::Preview, _) => DeployHostState::Error,
        // The deploy's own rollback of a host whose switch went through.
        (CommandKind::Rollback, CommandStatus::Ok) => DeployHostState::RolledBack,
        (_, CommandStatus::Ok) => DeployHostState::Running,
        (_, CommandStatus::RolledBack) => DeployHostState::RolledBack,
        _ => DeployHostState::Error,
    }
}

/// A host state that counts as failed.
fn failed(state: DeployHostState) -> bool {
    matches!(state, DeployHostState::Error | DeployHostState::RolledBack)
}

fn phase_verb(phase: DeployPhase) -> &'static str {
    match phase {
        DeployPhase::Previewing => "previewing",
        DeployPhase::AwaitingConfirmation => "waiting for confirmation",
        DeployPhase::Merging => "merging",
        DeployPhase::Pulling => "pulling",
        DeployPhase::Switching => "switching",
        DeployPhase::Done | DeployPhase::Failed => "finishing",
    }
}

struct Job {
    core: Core,
    viewer: Viewer,
    progress: DeployProgress,
    cancel: Arc<Cancel>,
    gate: Arc<Gate>,
    max_failures: Option<u32>,
    /// Seconds to wait after a wave before the next one starts.
    soak_s: u64,
    on_failure: OnFailure,
}

/// How often a soak looks for a cancel.
const SOAK_TICK: Duration = Duration::from_millis(250);

impl Job {
    fn new(
        core: &Core,
        viewer: Viewer,
        progress: DeployProgress,
        cancel: Arc<Cancel>,
        gate: Arc<Gate>,
        req: &DeployRequest,
    ) -> Job {
        Job {
            core: core.clone(),
            viewer,
            progress,
            cancel,
            gate,
            max_failures: req.max_failures,
            soak_s: req.soak_s.unwrap_or(0),
            on_failure: req.on_failure.unwrap_or_default(),
        }
    }

    /// Merge the PR at `reviewed` (GitHub refuses if its head moved); the merge commit.
    async fn merge(&mut self, reviewed: &str) -> Result<String> {
        let pr = self.progress.pr_number;
        let gh = self
            .core
            .desired
            .github()
            .cloned()
            .ok_or(AppError::Internal)?;
        let method = self.core.config.github.merge_method.clone();
        let sha = gh
            .merge(pr, &method, reviewed)
            .await
            .map_err(|e| merge_refused(pr, e))?;
        self.core.desired.wake_prs();
        self.progress.message = format!(
            "Merged PR #{pr} as {}; waiting for the branch to reach it…",
            short(&sha)
        );
        self.save().await;
        Ok(sha)
    }

    /// `previewing`: a `preview` of `sha` (the vetted PR head, not checked out anywhere)
    /// on every target at once. A host where it cannot start (offline, busy) is `skipped`,
    /// with the reason in the message; the others run, then end `ok` or `error`.
    async fn preview(mut self, sha: String, waves: Vec<Vec<String>>) {
        let hosts: Vec<String> = self.progress.hosts.keys().cloned().collect();
        // Subscribed before sending, so even an instant completion is seen.
        let completions = self.core.hub.completions();
        let (waiting, refused) = self
            .send(&hosts, CommandKind::Preview, |_| RunOptions {
                rev: Some(sha.clone()),
                ..RunOptions::default()
            })
            .await;
        for (id, host) in &waiting {
            self.progress.previews.insert(host.clone(), id.clone());
        }
        let mut reasons = HashMap::new();
        for (host, e) in refused {
            self.set(&host, DeployHostState::Skipped);
            reasons.insert(host, e.code().to_owned());
        }
        self.save().await;
        self.previewed(sha, waves, completions, waiting, reasons)
            .await
    }

    /// Wait for the previews in `waiting` (a cancel ends the job at once: previews change
    /// nothing, so there is nothing to wait for), then for the confirmation.
    async fn previewed(
        mut self,
        sha: String,
        waves: Vec<Vec<String>>,
        completions: broadcast::Receiver<protocol::messages::CommandComplete>,
        waiting: HashMap<String, String>,
        reasons: HashMap<String, String>,
    ) {
        self.wait(CommandKind::Preview, completions, waiting, true)
            .await;
        if let Some(by) = self.cancelled_by() {
            let message = format!(
                "Cancelled by {by} while previewing; nothing was merged. Previews already sent finish on their hosts."
            );
            return self.finish(DeployPhase::Failed, message).await;
        }
        self.await_confirmation(sha, waves, reasons, None).await
    }

    /// " (preview failed: b; not previewed: c (offline))", or "" when every host previewed.
    fn preview_summary(&self, reasons: &HashMap<String, String>) -> String {
        let failed = self.failed_hosts();
        let skipped: Vec<String> = self
            .progress
            .hosts
            .iter()
            .filter(|(_, s)| **s == DeployHostState::Skipped)
            .map(|(h, _)| match reasons.get(h) {
                Some(why) => format!("{h} ({why})"),
                None => h.clone(),
            })
            .collect();
        let mut parts = Vec::new();
        if !failed.is_empty() {
            parts.push(format!("preview failed: {}", failed.join(", ")));
        }
        if !skipped.is_empty() {
            parts.push(format!("not previewed: {}", skipped.join(", ")));
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!(" ({})", parts.join("; "))
        }
    }

    /// `awaiting_confirmation`: wait until an operator confirms (then vet the PR again,
    /// merge `sha` and roll out `waves`), cancels, or `confirm_by` (unix seconds; None:
    /// the configured timeout from now) passes. Fails at once when no preview succeeded.
    async fn await_confirmation(
        mut self,
        sha: String,
        waves: Vec<Vec<String>>,
        reasons: HashMap<String, String>,
        confirm_by: Option<i64>,
    ) {
        let pr = self.progress.pr_number;
        let total = self.progress.hosts.len();
        let ok = self.count(DeployHostState::Ok);
        let summary = self.preview_summary(&reasons);
        if ok == 0 {
            let message = format!(
                "No preview of PR #{pr} at {} succeeded{summary}; nothing was merged.",
                short(&sha)
            );
            return self.finish(DeployPhase::Failed, message).await;
        }
        let timeout = self.core.config.github.deploy_confirm_timeout_s;
        let confirm_by =
            confirm_by.unwrap_or_else(|| Timestamp::now().secs().saturating_add(timeout as i64));
        if let Err(e) = self
            .core
            .db
            .set_deploy_confirm_by(&self.progress.job_id, Some(confirm_by))
            .await
        {
            tracing::error!(job_id = self.progress.job_id, "saving the deadline: {e}");
        }
        self.progress.phase = DeployPhase::AwaitingConfirmation;
        self.progress.message = format!(
            "Previewed PR #{pr} at {} on {ok} of {total} hosts{summary}; confirm to merge and deploy.",
            short(&sha)
        );
        *self.gate.lock() = GateState::Open;
        self.save().await;
        enum Next {
            Wait,
            Cancelled(String),
            Expired,
            Confirmed(Viewer, oneshot::Sender<Result<()>>),
        }
        let (confirmer, reply) = loop {
            let next = {
                let mut gate = self.gate.lock();
                // A cancel wins over a confirmation that came with it: nothing is merged.
                if let Some(by) = self.cancelled_by() {
                    if let GateState::Confirmed(_, reply) = std::mem::take(&mut *gate) {
                        let _ = reply.send(Err(AppError::conflict(
                            "not_awaiting",
                            format!("The deploy was cancelled by {by}; nothing was merged."),
                        )));
                    }
                    Next::Cancelled(by)
                } else if matches!(*gate, GateState::Confirmed(..)) {
                    match std::mem::take(&mut *gate) {
                        GateState::Confirmed(viewer, reply) => Next::Confirmed(viewer, reply),
                        _ => Next::Wait,
                    }
                } else if Timestamp::now().secs() >= confirm_by {
                    *gate = GateState::Closed;
                    Next::Expired
                } else {
                    Next::Wait
                }
            };
            match next {
                Next::Wait => tokio::time::sleep(SOAK_TICK).await,
                Next::Cancelled(by) => {
                    let message =
                        format!("Cancelled by {by} before the merge; nothing was merged.");
                    return self.finish(DeployPhase::Failed, message).await;
                }
                Next::Expired => {
                    let message = format!(
                        "Not confirmed in time (NIXDECK_DEPLOY_CONFIRM_TIMEOUT_S, {timeout} s); nothing was merged. Start a new deploy to preview again."
                    );
                    return self.finish(DeployPhase::Failed, message).await;
                }
                Next::Confirmed(viewer, reply) => break (viewer, reply),
            }
        };
        // The rollout is the confirmer's: the merge and every command are theirs in the
        // audit log.
        self.viewer = confirmer;
        for state in self.progress.hosts.values_mut() {
            *state = DeployHostState::Pending;
        }
        self.progress.phase = DeployPhase::Merging;
        self.progress.message = format!(
            "Confirmed by {}; merging PR #{pr} at {}…",
            self.viewer.username,
            short(&sha)
        );
        self.save().await;
        tracing::info!(
            job_id = self.progress.job_id,
            by = self.viewer.username,
            "deploy confirmed"
        );
        // Read again: the PR may have changed in the hour it waited.
        let merged = match vet(&self.core, pr, Some(&sha)).await {
            Ok(_) => self.merge(&sha).await,
            Err(e) => Err(e),
        };
        match merged.map_err(|e| after_preview(pr, &sha, e)) {
            Ok(merge) => {
                let _ = reply.send(Ok(()));
                self.run(merge, waves).await
            }
            Err(refused) => {
                let _ = reply.send(Err(refused.clone()));
                self.finish(DeployPhase::Failed, refused.to_string()).await
            }
        }
    }

    /// Store and broadcast the progress as it is now.
    async fn save(&self) {
        if let Err(e) = self.core.db.save_deploy(&self.progress).await {
            tracing::error!(job_id = self.progress.job_id, "saving deploy progress: {e}");
        }
        self.core
            .hub
            .publish(BrowserEvent::DeployProgress(self.progress.clone()));
    }

    fn set(&mut self, host: &str, state: DeployHostState) {
        self.progress.hosts.insert(host.to_owned(), state);
    }

    fn count(&self, state: DeployHostState) -> usize {
        self.progress
            .hosts
            .values()
            .filter(|s| **s == state)
            .count()
    }

    /// Hosts that failed: an error, or a switch that was rolled back.
    fn failed_hosts(&self) -> Vec<String> {
        self.progress
            .hosts
            .iter()
            .filter(|(_, s)| failed(**s))
            .map(|(h, _)| h.clone())
            .collect()
    }

    /// End the job: every host not reached is skipped, and the slot frees up.
    async fn finish(mut self, phase: DeployPhase, message: String) {
        for state in self.progress.hosts.values_mut() {
            if matches!(state, DeployHostState::Pending | DeployHostState::Running) {
                *state = DeployHostState::Skipped;
            }
        }
        self.progress.phase = phase;
        self.progress.message = message;
        self.progress.active = false;
        self.save().await;
        *self.core.deploys.lock() = None;
        tracing::info!(
            job_id = self.progress.job_id,
            ?phase,
            "deploy ended: {}",
            self.progress.message
        );
    }

    fn cancelled_by(&self) -> Option<String> {
        self.cancel.requested.load(Ordering::SeqCst).then(|| {
            self.cancel
                .by
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
        })
    }

    /// After the merge: wait for the branch to reach `sha`, then the waves.
    async fn run(self, sha: String, waves: Vec<Vec<String>>) {
        let wait = Duration::from_secs(self.core.config.github.merge_wait_s);
        if let Err(e) = self.core.desired.wait_for_head(&sha, wait).await {
            return self.finish(DeployPhase::Failed, e).await;
        }
        self.roll_out(&sha, waves).await
    }

    /// The waves, one after the other. A wave with any failure halts the deploy unless
    /// `max_failures` allows that many in all: a wave only proceeds when its hosts are
    /// confirmed healthy. With `rollback-and-halt`, the hosts of a failed wave whose
    /// switch went through are put back to the generation they ran before the wave.
    async fn roll_out(mut self, sha: &str, waves: Vec<Vec<String>>) {
        let pr = self.progress.pr_number;
        let short = short(sha).to_owned();
        let total = self.progress.hosts.len();
        for (n, wave) in waves.iter().enumerate() {
            if let Some(by) = self.cancelled_by() {
                let message = format!(
                    "Cancelled by {by}; {} of {total} hosts deployed.",
                    self.count(DeployHostState::Ok)
                );
                return self.finish(DeployPhase::Failed, message).await;
            }
            let label = if waves.len() > 1 {
                format!(" (wave {} of {})", n + 1, waves.len())
            } else {
                String::new()
            };
            // Read before anything of this wave runs: what a rollback goes back to.
            let before = self.current_generations(wave);
            self.progress.phase = DeployPhase::Pulling;
            self.progress.message = format!("Pulling {short} on {}{label}…", wave.join(", "));
            let pulled = self.step(wave, CommandKind::Pull, &HashMap::new()).await;
            if let Some(by) = self.cancelled_by() {
                let message =
                    format!("Cancelled by {by} after pulling; nothing was switched in this wave.");
                return self.finish(DeployPhase::Failed, message).await;
            }
            self.progress.phase = DeployPhase::Switching;
            self.progress.message = format!("Switching {}{label}…", pulled.join(", "));
            let switched = self
                .step(&pulled, CommandKind::Switch, &HashMap::new())
                .await;
            let wave_failed: Vec<String> = wave
                .iter()
                .filter(|h| self.progress.hosts.get(*h).copied().is_some_and(failed))
                .cloned()
                .collect();
            let failed_all = self.failed_hosts();
            let allowed = self
                .max_failures
                .is_some_and(|max| failed_all.len() <= max as usize);
            let roll_back = self.on_failure == OnFailure::RollbackAndHalt && !switched.is_empty();
            // After the last wave there is nothing left to halt: the summary below names
            // the failed hosts, unless a rollback has to run first.
            if !wave_failed.is_empty() && !allowed && (n + 1 < waves.len() || roll_back) {
                let mut message = match self.max_failures {
                    Some(max) => format!(
                        "Stopped: {} host(s) failed ({}), more than the {max} allowed",
                        failed_all.len(),
                        failed_all.join(", ")
                    ),
                    None => format!("Stopped: {} failed{label}", wave_failed.join(", ")),
                };
                if roll_back {
                    message.push_str(&self.roll_back(&switched, &before).await);
                }
                message.push_str("; the rest were skipped.");
                return self.finish(DeployPhase::Failed, message).await;
            }
            if n + 1 < waves.len() && self.soak_s > 0 {
                if let Some(by) = self.soak(n + 2, waves.len()).await {
                    let message = format!(
                        "Cancelled by {by} while soaking; {} of {total} hosts deployed.",
                        self.count(DeployHostState::Ok)
                    );
                    return self.finish(DeployPhase::Failed, message).await;
                }
            }
        }
        let ok = self.count(DeployHostState::Ok);
        let failed = self.failed_hosts();
        if failed.is_empty() {
            let message = format!("Deployed PR #{pr} ({short}) to {ok} of {total} hosts.");
            self.finish(DeployPhase::Done, message).await
        } else {
            let message = format!(
                "Deployed PR #{pr} ({short}) to {ok} of {total} hosts; failed: {}.",
                failed.join(", ")
            );
            self.finish(DeployPhase::Failed, message).await
        }
    }

    /// The generation each host's profile points at now, where its agent reported one.
    fn current_generations(&self, hosts: &[String]) -> HashMap<String, u64> {
        hosts
            .iter()
            .filter_map(|h| {
                let host = self.core.hub.host(h)?;
                let current = host.generations.iter().find(|g| g.current)?;
                Some((h.clone(), current.number))
            })
            .collect()
    }

    /// Wait `soak_s` before wave `next` of `of`, saying so; the name of whoever cancelled
    /// meanwhile, if anyone did.
    async fn soak(&mut self, next: usize, of: usize) -> Option<String> {
        self.progress.message = format!("Soaking {} s before wave {next} of {of}…", self.soak_s);
        self.save().await;
        let until = tokio::time::Instant::now() + Duration::from_secs(self.soak_s);
        loop {
            if let Some(by) = self.cancelled_by() {
                return Some(by);
            }
            let now = tokio::time::Instant::now();
            if now >= until {
                return None;
            }
            tokio::time::sleep(SOAK_TICK.min(until - now)).await;
        }
    }

    /// `rollback-and-halt`: put `hosts` (their switch went through) back to the generation
    /// they ran before the wave (`before`; a plain rollback where none was reported), wait
    /// for them, and say how it went, for the job's message.
    async fn roll_back(&mut self, hosts: &[String], before: &HashMap<String, u64>) -> String {
        self.progress.message = format!("Rolling back {}…", hosts.join(", "));
        let back = self.step(hosts, CommandKind::Rollback, before).await;
        let failed: Vec<&String> = hosts.iter().filter(|h| !back.contains(h)).collect();
        let mut text = format!(
            "; rolled back {} to the generation from before the wave",
            if back.is_empty() {
                "none".to_owned()
            } else {
                back.join(", ")
            }
        );
        if !failed.is_empty() {
            let failed: Vec<&str> = failed.iter().map(|h| h.as_str()).collect();
            text.push_str(&format!(" (the rollback failed on {})", failed.join(", ")));
        }
        text
    }

    /// Run `kind` on `hosts` at once and wait for all of them; returns the hosts where it
    /// succeeded. A switch that succeeds marks the host ok, one that was rolled back marks
    /// it rolled back, any other failure marks it error; a rollback the deploy sent marks
    /// the host rolled back when it succeeds. `generations` is what a rollback goes to.
    async fn step(
        &mut self,
        hosts: &[String],
        kind: CommandKind,
        generations: &HashMap<String, u64>,
    ) -> Vec<String> {
        if hosts.is_empty() {
            return Vec::new();
        }
        // Subscribed before sending, so even an instant completion is seen.
        let completions = self.core.hub.completions();
        let (waiting, refused) = self
            .send(hosts, kind, |host| RunOptions {
                generation: generations.get(host).copied(),
                ..RunOptions::default()
            })
            .await;
        for (host, _) in refused {
            self.set(&host, DeployHostState::Error);
        }
        self.save().await;
        self.wait(kind, completions, waiting, false).await
    }

    /// Send `kind` to each of `hosts`, with `options` for each; the commands sent (command
    /// id → host, now `running`) and the hosts where it could not start, with why.
    async fn send(
        &mut self,
        hosts: &[String],
        kind: CommandKind,
        options: impl Fn(&str) -> RunOptions,
    ) -> (HashMap<String, String>, Vec<(String, AppError)>) {
        let mut waiting = HashMap::new();
        let mut refused = Vec::new();
        for host in hosts {
            match commands::run(&self.core, &self.viewer, host, kind, options(host)).await {
                Ok(command_id) => {
                    // For the Deploys page; losing this row loses a link, not the deploy.
                    if let Err(e) = (self.core.db)
                        .add_deploy_command(&self.progress.job_id, &command_id)
                        .await
                    {
                        tracing::error!(
                            job_id = self.progress.job_id,
                            "saving a deploy's command: {e}"
                        );
                    }
                    waiting.insert(command_id, host.clone());
                    self.set(host, DeployHostState::Running);
                }
                Err(e) => {
                    tracing::warn!(host, %kind, "deploy step not started: {e}");
                    refused.push((host.clone(), e));
                }
            }
        }
        (waiting, refused)
    }

    /// Wait for the commands in `waiting` (command id → host), setting each host's state
    /// as its command ends; the hosts where it succeeded. `cancellable`: a cancel stops the
    /// wait (the commands still run; their hosts end `skipped`).
    async fn wait(
        &mut self,
        kind: CommandKind,
        mut completions: broadcast::Receiver<protocol::messages::CommandComplete>,
        mut waiting: HashMap<String, String>,
        cancellable: bool,
    ) -> Vec<String> {
        let mut succeeded = Vec::new();
        // The first quiet spell already looks in the database: a job resumed after a
        // restart waits for commands that may have ended meanwhile.
        let mut last_check = Instant::now()
            .checked_sub(DB_CHECK)
            .unwrap_or_else(Instant::now);
        while !waiting.is_empty() {
            if cancellable && self.cancelled_by().is_some() {
                break;
            }
            let finished =
                match tokio::time::timeout(Duration::from_secs(2), completions.recv()).await {
                    Ok(Ok(c)) => waiting
                        .remove(&c.command_id)
                        .map(|host| vec![(host, c.status)])
                        .unwrap_or_default(),
                    // Missed events, or a while without one (a timed-out command is recorded
                    // before its host is freed): the database knows how commands ended.
                    Ok(Err(RecvError::Lagged(_))) => self.ended(&mut waiting).await,
                    // The hub is shutting down; never spin on a closed channel.
                    Ok(Err(RecvError::Closed)) => {
                        tokio::time::sleep(Duration::from_secs(2)).await;
                        self.ended(&mut waiting).await
                    }
                    _ if last_check.elapsed() >= DB_CHECK => {
                        last_check = Instant::now();
                        self.ended(&mut waiting).await
                    }
                    _ => Vec::new(),
                };
            if finished.is_empty() {
                continue;
            }
            // Publish each host's end as it happens (a pull that worked stays running:
            // its switch comes next).
            for (host, status) in finished {
                self.set(&host, host_state(kind, status));
                if status.is_success() {
                    succeeded.push(host);
                }
            }
            self.save().await;
        }
        succeeded.sort();
        succeeded
    }

    /// The waiting commands that the database records as ended, taken out of `waiting`.
    async fn ended(&self, waiting: &mut HashMap<String, String>) -> Vec<(String, CommandStatus)> {
        let mut ended = Vec::new();
        let ids: Vec<String> = waiting.keys().cloned().collect();
        for id in ids {
            if let Ok(Some(row)) = self.core.db.command(&id).await {
                if !matches!(row.status, CommandStatus::Queued | CommandStatus::Running) {
                    if let Some(host) = waiting.remove(&id) {
                        ended.push((host, row.status));
                    }
                }
            }
        }
        ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn waves_are_canary_first_then_batches() {
        let targets = ids(&["a", "b", "c", "d", "e"]);
        let mut req = DeployRequest {
            pr_number: 1,
            host_ids: None,
            tags: None,
            canary: None,
            canary_tags: None,
            batch_size: None,
            max_failures: None,
            head_sha: None,
            soak_s: None,
            on_failure: None,
            preview: false,
        };
        assert_eq!(plan(&targets, &req), vec![targets.clone()]);
        req.canary = Some(ids(&["c"]));
        req.batch_size = Some(2);
        assert_eq!(
            plan(&targets, &req),
            vec![ids(&["c"]), ids(&["a", "b"]), ids(&["d", "e"])]
        );
    }

    use crate::hub::AgentOut;
    use crate::service::test_core;
    use crate::storage::testing::{db_test, TestBackend};
    use crate::Core;
    use protocol::messages::{AgentCommandComplete, AgentOutcome, CommandOrder};
    use protocol::ServerMessage;

    /// How a fake agent ends each order: by host and command kind.
    type Script = fn(&str, CommandKind) -> AgentOutcome;

    /// The hosts, connected through the hub to fake agents that end every order at once
    /// as `script` says, reporting generation 7 as current. Returns what each agent got.
    async fn fleet(
        backend: &TestBackend,
        dir: &std::path::Path,
        hosts: &[&str],
        script: Script,
    ) -> (Core, Arc<Mutex<Vec<(String, CommandOrder)>>>) {
        fleet_with(backend, dir, hosts, &[], &["nixdeck"], script).await
    }

    /// `fleet`, with `offline` hosts known but without an agent, and the dashboard's `args`.
    async fn fleet_with(
        backend: &TestBackend,
        dir: &std::path::Path,
        hosts: &[&str],
        offline: &[&str],
        args: &[&str],
        script: Script,
    ) -> (Core, Arc<Mutex<Vec<(String, CommandOrder)>>>) {
        let known: Vec<&str> = hosts.iter().chain(offline).copied().collect();
        let core = test_core(backend, dir, &known, args).await;
        let orders = Arc::new(Mutex::new(Vec::new()));
        for host in hosts {
            let reg = serde_json::from_value(serde_json::json!({
                "hostname": host, "host_type": "nixos", "agent_version": protocol::VERSION,
                "generations": [
                    {"number": 6, "created_at": "2026-12-01T00:00:00Z", "store_path": "/nix/store/a", "current": false, "booted": false},
                    {"number": 7, "created_at": "2026-12-02T00:00:00Z", "store_path": "/nix/store/b", "current": true, "booted": true}
                ]
            }))
            .unwrap();
            let mut link = core.hub.attach_agent(host, &reg, None).unwrap();
            let (core, orders, host) = (core.clone(), orders.clone(), host.to_string());
            tokio::spawn(async move {
                while let Some(AgentOut::Frame(msg)) = link.outbox.recv().await {
                    let ServerMessage::Command(order) = msg else {
                        continue;
                    };
                    orders.lock().unwrap().push((host.clone(), order.clone()));
                    let done = AgentCommandComplete {
                        command_id: order.command_id.clone(),
                        status: script(&host, order.command),
                        exit_code: Some(0),
                        duration_ms: 1,
                        last_seq: 0,
                        result: None,
                    };
                    // Not at once: the deploy records the command as sent first.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    commands::on_complete(&core, &host, &done).await;
                }
            });
        }
        (core, orders)
    }

    fn new_job(core: &Core, hosts: &[&str], req: &DeployRequest) -> (Job, Arc<Cancel>) {
        let cancel = Arc::new(Cancel::default());
        let job = Job {
            core: core.clone(),
            viewer: Viewer {
                username: "olga".into(),
                role: protocol::api::Role::Operator,
                csrf_token: String::new(),
                ip: None,
                session_hash: String::new(),
                authenticated_at: 0,
                api_token: None,
            },
            progress: DeployProgress {
                job_id: "j1".into(),
                pr_number: 1,
                phase: DeployPhase::Merging,
                hosts: hosts
                    .iter()
                    .map(|h| (h.to_string(), DeployHostState::Pending))
                    .collect(),
                message: String::new(),
                started_by: "olga".into(),
                active: true,
                previews: Default::default(),
            },
            cancel: cancel.clone(),
            gate: Arc::default(),
            max_failures: req.max_failures,
            soak_s: req.soak_s.unwrap_or(0),
            on_failure: req.on_failure.unwrap_or_default(),
        };
        (job, cancel)
    }

    fn request(canary: &[&str], batch_size: u32) -> DeployRequest {
        DeployRequest {
            pr_number: 1,
            host_ids: None,
            tags: None,
            canary: Some(ids(canary)),
            canary_tags: None,
            batch_size: Some(batch_size),
            max_failures: None,
            head_sha: None,
            soak_s: None,
            on_failure: None,
            preview: false,
        }
    }

    /// Runs the job's waves to the end; the job as stored, and every message it showed.
    async fn roll_out(
        core: &Core,
        job: Job,
        waves: Vec<Vec<String>>,
    ) -> (DeployProgress, Vec<String>) {
        let seat = core.hub.browser_seat("ann", 1).unwrap();
        let mut events = core.hub.subscribe_browser(&seat).await.unwrap().events;
        let db = core.db.clone();
        db.insert_deploy(&job.progress, "{}", "r").await.unwrap();
        tokio::time::timeout(Duration::from_secs(30), job.roll_out("abcdef0123", waves))
            .await
            .expect("the deploy ends");
        let mut messages = Vec::new();
        while let Ok(text) = events.try_recv() {
            let v: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
            if v["type"] == "deploy_progress" {
                messages.push(v["payload"]["message"].as_str().unwrap().to_owned());
            }
        }
        (db.deploy("j1").await.unwrap().unwrap(), messages)
    }

    fn rolls_back_canary(host: &str, kind: CommandKind) -> AgentOutcome {
        match (host, kind) {
            ("c", CommandKind::Switch) => AgentOutcome::RolledBack,
            _ => AgentOutcome::Ok,
        }
    }

    db_test! {
        /// A canary whose switch was rolled back halts the deploy, without max_failures: the
        /// canary is rolled back (never ok, never error) and nobody else is touched.
        #[tokio::test]
        async fn a_rolled_back_canary_halts_the_deploy(backend) {
            let dir = tempfile::tempdir().unwrap();
            let hosts = ["a", "b", "c"];
            let (core, orders) = fleet(&backend, dir.path(), &hosts, rolls_back_canary).await;
            let req = request(&["c"], 2);
            let (job, _) = new_job(&core, &hosts, &req);
            let (end, _) = roll_out(&core, job, plan(&ids(&hosts), &req)).await;
            assert_eq!(end.phase, DeployPhase::Failed);
            assert!(!end.active);
            assert_eq!(end.hosts["c"], DeployHostState::RolledBack);
            assert_eq!(end.hosts["a"], DeployHostState::Skipped);
            assert_eq!(end.hosts["b"], DeployHostState::Skipped);
            assert!(
                end.message.starts_with("Stopped: c failed"),
                "{}",
                end.message
            );
            let touched: Vec<String> = orders
                .lock()
                .unwrap()
                .iter()
                .map(|(h, _)| h.clone())
                .collect();
            assert_eq!(
                touched,
                ids(&["c", "c"]),
                "pull and switch on the canary only"
            );
            assert!(core.deploys.lock().is_none(), "the slot is free");
        }
    }

    fn b_fails(host: &str, kind: CommandKind) -> AgentOutcome {
        match (host, kind) {
            ("b", CommandKind::Switch) => AgentOutcome::Error,
            _ => AgentOutcome::Ok,
        }
    }

    db_test! {
        /// `rollback-and-halt`: the hosts of the failed wave whose switch went through go back
        /// to the generation they ran before the wave; the deploy fails naming them.
        #[tokio::test]
        async fn rollback_and_halt_puts_the_wave_back_to_its_generation(backend) {
            let dir = tempfile::tempdir().unwrap();
            let hosts = ["a", "b", "c", "d"];
            let (core, orders) = fleet(&backend, dir.path(), &hosts, b_fails).await;
            let mut req = request(&[], 2);
            req.on_failure = Some(OnFailure::RollbackAndHalt);
            let (job, _) = new_job(&core, &hosts, &req);
            let (end, _) = roll_out(&core, job, plan(&ids(&hosts), &req)).await;
            assert_eq!(end.phase, DeployPhase::Failed);
            assert_eq!(end.hosts["a"], DeployHostState::RolledBack);
            assert_eq!(end.hosts["b"], DeployHostState::Error);
            assert_eq!(end.hosts["c"], DeployHostState::Skipped);
            assert_eq!(end.hosts["d"], DeployHostState::Skipped);
            assert!(
                end.message
                    .contains("rolled back a to the generation from before the wave"),
                "{}",
                end.message
            );
            let rollbacks: Vec<(String, Option<u64>)> = orders
                .lock()
                .unwrap()
                .iter()
                .filter(|(_, o)| o.command == CommandKind::Rollback)
                .map(|(h, o)| (h.clone(), o.generation))
                .collect();
            assert_eq!(rollbacks, vec![("a".to_owned(), Some(7))]);
            // With halt (the default) nothing is rolled back.
            let dir = tempfile::tempdir().unwrap();
            let (core, orders) = fleet(&backend, dir.path(), &hosts, b_fails).await;
            let req = request(&[], 2);
            let (job, _) = new_job(&core, &hosts, &req);
            let (end, _) = roll_out(&core, job, plan(&ids(&hosts), &req)).await;
            assert_eq!(end.hosts["a"], DeployHostState::Ok);
            assert_eq!(end.hosts["c"], DeployHostState::Skipped);
            assert!(orders
                .lock()
                .unwrap()
                .iter()
                .all(|(_, o)| o.command != CommandKind::Rollback));
        }
    }

    db_test! {
        /// max_failures lets a wave with failures go on; without it the same wave halts.
        #[tokio::test]
        async fn max_failures_lets_a_failed_wave_go_on(backend) {
            let dir = tempfile::tempdir().unwrap();
            let hosts = ["a", "b", "c", "d"];
            let (core, _) = fleet(&backend, dir.path(), &hosts, b_fails).await;
            let mut req = request(&[], 2);
            req.max_failures = Some(1);
            let (job, _) = new_job(&core, &hosts, &req);
            let (end, _) = roll_out(&core, job, plan(&ids(&hosts), &req)).await;
            assert_eq!(end.phase, DeployPhase::Failed);
            assert_eq!(end.hosts["b"], DeployHostState::Error);
            for h in ["a", "c", "d"] {
                assert_eq!(end.hosts[h], DeployHostState::Ok, "{h}");
            }
        }
    }

    fn all_ok(_: &str, _: CommandKind) -> AgentOutcome {
        AgentOutcome::Ok
    }

    db_test! {
        /// soak_s: after a healthy wave the deploy waits, saying so, before the next; a
        /// cancel during the soak ends it before the next wave starts.
        #[tokio::test]
        async fn a_healthy_wave_soaks_before_the_next_and_a_cancel_ends_the_soak(backend) {
            let dir = tempfile::tempdir().unwrap();
            let hosts = ["a", "b"];
            let (core, _) = fleet(&backend, dir.path(), &hosts, all_ok).await;
            let mut req = request(&["a"], 1);
            req.soak_s = Some(1);
            let (job, _) = new_job(&core, &hosts, &req);
            let started = Instant::now();
            let (end, messages) = roll_out(&core, job, plan(&ids(&hosts), &req)).await;
            assert_eq!(end.phase, DeployPhase::Done, "{}", end.message);
            assert!(started.elapsed() >= Duration::from_secs(1));
            assert!(
                messages
                    .iter()
                    .any(|m| m == "Soaking 1 s before wave 2 of 2…"),
                "{messages:?}"
            );

            let dir = tempfile::tempdir().unwrap();
            let (core, orders) = fleet(&backend, dir.path(), &hosts, all_ok).await;
            req.soak_s = Some(3600);
            let (job, cancel) = new_job(&core, &hosts, &req);
            let canceller = tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(500)).await;
                *cancel.by.lock().unwrap() = "olga".into();
                cancel.requested.store(true, Ordering::SeqCst);
            });
            let (end, _) = roll_out(&core, job, plan(&ids(&hosts), &req)).await;
            canceller.await.unwrap();
            assert!(
                end.message.starts_with("Cancelled by olga while soaking"),
                "{}",
                end.message
            );
            assert_eq!(end.hosts["a"], DeployHostState::Ok);
            assert_eq!(end.hosts["b"], DeployHostState::Skipped);
            assert!(orders.lock().unwrap().iter().all(|(h, _)| h == "a"));
        }
    }

    const HEAD: &str = "0123456789abcdef0123456789abcdef01234567";

    fn preview_b_fails(host: &str, kind: CommandKind) -> AgentOutcome {
        match (host, kind) {
            ("b", CommandKind::Preview) => AgentOutcome::Error,
            _ => AgentOutcome::Ok,
        }
    }

    fn previews_fail(_: &str, kind: CommandKind) -> AgentOutcome {
        match kind {
            CommandKind::Preview => AgentOutcome::Error,
            _ => AgentOutcome::Ok,
        }
    }

    /// The job as stored once `pred` holds (30 s at most).
    async fn stored_when(
        core: &Core,
        what: &str,
        pred: impl Fn(&DeployProgress) -> bool,
    ) -> DeployProgress {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let job = core.db.deploy("j1").await.unwrap().unwrap();
            if pred(&job) {
                return job;
            }
            assert!(Instant::now() < deadline, "{what} not reached: {job:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A previewing job (as `begin` stores it) that takes the slot; its gate.
    async fn previewing(
        core: &Core,
        hosts: &[&str],
        req: &DeployRequest,
    ) -> (Job, Arc<Cancel>, Arc<Gate>) {
        let (mut job, cancel) = new_job(core, hosts, req);
        job.progress.phase = DeployPhase::Previewing;
        let gate = job.gate.clone();
        *core.deploys.lock() = Some(Running {
            job_id: "j1".into(),
            pr_number: 1,
            cancel: cancel.clone(),
            gate: gate.clone(),
        });
        let stored = serde_json::to_string(req).unwrap();
        core.db
            .insert_deploy(&job.progress, &stored, &core.replica)
            .await
            .unwrap();
        (job, cancel, gate)
    }

    db_test! {
        /// Previews go to every target at once, carrying the PR head as `rev`; their ids are
        /// in the progress; the job then waits, naming the failed and the unreachable hosts,
        /// and sends nothing more. A cancel while it waits ends it without a merge.
        #[tokio::test]
        async fn previews_every_target_then_waits_and_a_cancel_merges_nothing(backend) {
            let dir = tempfile::tempdir().unwrap();
            let (core, orders) = fleet_with(
                &backend,
                dir.path(),
                &["a", "b", "c"],
                &["d"],
                &["nixdeck"],
                preview_b_fails,
            )
            .await;
            let hosts = ["a", "b", "c", "d"];
            let mut req = request(&[], 0);
            req.preview = true;
            req.head_sha = Some(HEAD.into());
            let (job, cancel, gate) = previewing(&core, &hosts, &req).await;
            tokio::spawn(job.preview(HEAD.into(), plan(&ids(&hosts), &req)));
            let waiting = stored_when(&core, "awaiting", |j| {
                j.phase == DeployPhase::AwaitingConfirmation
            })
            .await;
            assert!(matches!(*gate.lock(), GateState::Open));
            let sent = orders.lock().unwrap().clone();
            assert_eq!(sent.len(), 3, "{sent:?}");
            for (host, order) in &sent {
                assert_eq!(order.command, CommandKind::Preview);
                assert_eq!(order.rev.as_deref(), Some(HEAD));
                assert_eq!(waiting.previews[host], order.command_id);
            }
            assert!(!waiting.previews.contains_key("d"));
            assert_eq!(waiting.hosts["a"], DeployHostState::Ok);
            assert_eq!(waiting.hosts["b"], DeployHostState::Error);
            assert_eq!(waiting.hosts["c"], DeployHostState::Ok);
            assert_eq!(waiting.hosts["d"], DeployHostState::Skipped);
            assert_eq!(
                waiting.message,
                "Previewed PR #1 at 0123456 on 2 of 4 hosts (preview failed: b; not previewed: d (offline)); confirm to merge and deploy."
            );
            let deadline = core
                .db
                .deploy_resume("j1")
                .await
                .unwrap()
                .unwrap()
                .confirm_by;
            let now = Timestamp::now().secs();
            assert!(
                deadline.is_some_and(|d| (now + 3590..=now + 3600).contains(&d)),
                "{deadline:?}"
            );
            // Waiting sends nothing, however long.
            tokio::time::sleep(Duration::from_millis(600)).await;
            assert_eq!(orders.lock().unwrap().len(), 3);

            *cancel.by.lock().unwrap() = "olga".into();
            cancel.requested.store(true, Ordering::SeqCst);
            let end = stored_when(&core, "ended", |j| !j.active).await;
            assert_eq!(end.phase, DeployPhase::Failed);
            assert_eq!(
                end.message,
                "Cancelled by olga before the merge; nothing was merged."
            );
            assert_eq!(end.previews, waiting.previews, "the previews stay readable");
            assert_eq!(orders.lock().unwrap().len(), 3, "no pull, no switch");
            assert!(core.deploys.lock().is_none(), "the slot is free");
            assert!(matches!(*gate.lock(), GateState::Closed));
        }
    }

    db_test! {
        /// When no preview succeeds there is nothing to confirm: the job fails at once; an
        /// unconfirmed job ends when its deadline passes. Neither merges.
        #[tokio::test]
        async fn a_job_without_a_good_preview_fails_and_an_unconfirmed_one_expires(backend) {
            let dir = tempfile::tempdir().unwrap();
            let hosts = ["a", "b"];
            let (core, orders) = fleet(&backend, dir.path(), &hosts, previews_fail).await;
            let mut req = request(&[], 0);
            req.preview = true;
            let (job, _, _) = previewing(&core, &hosts, &req).await;
            tokio::spawn(job.preview(HEAD.into(), plan(&ids(&hosts), &req)));
            let end = stored_when(&core, "ended", |j| !j.active).await;
            assert_eq!(end.phase, DeployPhase::Failed);
            assert_eq!(
                end.message,
                "No preview of PR #1 at 0123456 succeeded (preview failed: a, b); nothing was merged."
            );
            assert_eq!(orders.lock().unwrap().len(), 2);
            assert!(core.deploys.lock().is_none());

            let dir = tempfile::tempdir().unwrap();
            let args = ["nixdeck", "--deploy-confirm-timeout-s", "1"];
            let (core, orders) = fleet_with(&backend, dir.path(), &hosts, &[], &args, all_ok).await;
            let (job, _, gate) = previewing(&core, &hosts, &req).await;
            tokio::spawn(job.preview(HEAD.into(), plan(&ids(&hosts), &req)));
            stored_when(&core, "awaiting", |j| {
                j.phase == DeployPhase::AwaitingConfirmation
            })
            .await;
            let end = stored_when(&core, "expired", |j| !j.active).await;
            assert_eq!(end.phase, DeployPhase::Failed);
            assert!(
                end.message.starts_with("Not confirmed in time"),
                "{}",
                end.message
            );
            assert_eq!(orders.lock().unwrap().len(), 2);
            assert!(
                matches!(*gate.lock(), GateState::Closed),
                "a late confirm is refused"
            );
            assert!(core.deploys.lock().is_none());
        }
    }

    db_test! {
        /// After a restart, a job that was previewing takes the slot again, learns how its
        /// previews ended and waits for confirmation (a host never sent its preview is
        /// skipped); a cancel through the service ends it. A job that was rolling out is
        /// marked interrupted as before.
        #[tokio::test]
        async fn a_restart_resumes_a_previewing_job(backend) {
            let dir = tempfile::tempdir().unwrap();
            let (core, _) = fleet(&backend, dir.path(), &["a", "b"], all_ok).await;
            let op = Viewer {
                authenticated_at: Timestamp::now().secs(),
                api_token: None,
                ..new_job(&core, &[], &request(&[], 0)).0.viewer
            };
            let preview = commands::run(&core, &op, "a", CommandKind::Preview, RunOptions::default())
                .await
                .unwrap();
            let mut req = request(&[], 0);
            req.preview = true;
            req.head_sha = Some(HEAD.into());
            let (job, _) = new_job(&core, &["a", "b"], &req);
            let mut progress = job.progress.clone();
            progress.phase = DeployPhase::Previewing;
            progress.hosts.insert("a".into(), DeployHostState::Running);
            progress.previews.insert("a".into(), preview.clone());
            core.db
                .insert_deploy(&progress, &serde_json::to_string(&req).unwrap(), "old")
                .await
                .unwrap();
            recover(&core).await.unwrap();
            let waiting = stored_when(&core, "awaiting", |j| {
                j.phase == DeployPhase::AwaitingConfirmation
            })
            .await;
            assert!(waiting.active);
            assert_eq!(waiting.hosts["a"], DeployHostState::Ok);
            assert_eq!(waiting.hosts["b"], DeployHostState::Skipped);
            assert!(
                waiting
                    .message
                    .contains("on 1 of 2 hosts (not previewed: b (interrupted by a restart))"),
                "{}",
                waiting.message
            );
            assert_eq!(waiting.previews["a"], preview);
            // The slot is the job's: another deploy is refused, a cancel reaches it.
            assert!(core
                .deploys
                .lock()
                .as_ref()
                .is_some_and(|r| r.job_id == "j1"));
            cancel(&core, &op, "j1").await.unwrap();
            let end = stored_when(&core, "ended", |j| !j.active).await;
            assert!(
                end.message.starts_with("Cancelled by olga"),
                "{}",
                end.message
            );
            assert!(core.deploys.lock().is_none());
            let e = request_confirm(&core, &op, "j1").await.unwrap_err();
            assert_eq!(e.code(), "not_awaiting", "{e}");
            let e = request_confirm(&core, &op, "nope").await.unwrap_err();
            assert!(matches!(e, AppError::NotFound(_)), "{e}");
        }
    }

    db_test! {
        /// Servers sharing one database: it holds at most one active job, whichever server
        /// stores it; a job whose server stopped renewing its lease is taken over (one that
        /// was rolling out is marked interrupted), never while its server lives; a cancel
        /// reaches the job where it runs.
        #[tokio::test]
        async fn a_dead_servers_deploy_is_taken_over_and_one_runs_at_a_time(backend) {
            let dir = tempfile::tempdir().unwrap();
            let (core, _) = fleet(&backend, dir.path(), &["a"], all_ok).await;
            let (job, _) = new_job(&core, &["a"], &request(&[], 0));
            let mut progress = job.progress.clone();
            progress.phase = DeployPhase::Switching;
            progress.hosts.insert("a".into(), DeployHostState::Running);
            core.db.insert_deploy(&progress, "{}", "other").await.unwrap();
            let second = DeployProgress {
                job_id: "j2".into(),
                ..progress.clone()
            };
            let refused = core
                .db
                .insert_deploy(&second, "{}", &core.replica)
                .await
                .expect_err("one active job at a time");
            assert!(crate::storage::is_unique_violation(&refused), "{refused}");
            if core.db.backend() == crate::storage::Backend::Postgres {
                // Its server lives: nobody touches the job.
                let ttl = Duration::from_millis(1500);
                assert!(core.db.try_lease("replica:other", "other", ttl).await.unwrap());
                take_over(&core).await;
                assert!(core.db.deploy("j1").await.unwrap().unwrap().active, "its server lives");
                tokio::time::sleep(ttl + Duration::from_millis(100)).await;
            }
            take_over(&core).await;
            let end = core.db.deploy("j1").await.unwrap().unwrap();
            assert!(!end.active, "{end:?}");
            assert_eq!(end.phase, DeployPhase::Failed);
            assert!(end.message.starts_with("Interrupted"), "{}", end.message);
            assert_eq!(end.hosts["a"], DeployHostState::Error, "it was mid-switch");
            // The slot is free again. A cancel that reaches the server running the job
            // (asked there, or sent there by another, `replica::route_deploy`) stops it; one
            // for a job that ended is refused; one for an active job that no server runs
            // yet (being taken over) asks to try again.
            core.db.insert_deploy(&second, "{}", &core.replica).await.unwrap();
            let e = cancel_here(&core, "bob", "j2").await.unwrap_err();
            assert_eq!(e.code(), "owner_unreachable", "{e}");
            let cancel = Arc::new(Cancel::default());
            *core.deploys.lock() = Some(Running {
                job_id: "j2".into(),
                pr_number: 1,
                cancel: cancel.clone(),
                gate: Arc::default(),
            });
            cancel_here(&core, "bob", "j2").await.unwrap();
            assert!(cancel.requested.load(Ordering::SeqCst));
            assert_eq!(*cancel.by.lock().unwrap(), "bob");
            let e = cancel_here(&core, "bob", "j1").await.unwrap_err();
            assert_eq!(e.code(), "finished", "{e}");
        }
    }
}
