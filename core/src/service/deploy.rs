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
//! One job at a time. Its progress is stored on every change and broadcast as
//! `deploy_progress`; a dashboard restart marks a job that was running as interrupted.

use super::commands;
use super::{audit, require_operator, OrInternal, Result};
use crate::github::GhError;
use crate::secret::new_token;
use crate::Core;
use common::AppError;
use common::Viewer;
use protocol::api::DeployRequest;
use protocol::messages::{BrowserEvent, DeployHostState, DeployPhase, DeployProgress};
use protocol::{CommandKind, CommandStatus, PendingPr};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::broadcast::error::RecvError;

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
}

#[derive(Default)]
struct Cancel {
    requested: AtomicBool,
    by: Mutex<String>,
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
    super::auth::require_recent_auth(core, viewer)?;
    if core.desired.github().is_none() {
        return Err(AppError::conflict(
            "not_configured",
            "Merge & Deploy needs the GitHub source (NIXDECK_GITHUB_REPO).",
        ));
    }
    let mut targets = match &req.host_ids {
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
    if targets.is_empty() {
        return Err(AppError::conflict(
            "no_hosts",
            "No host is online to deploy to.",
        ));
    }
    let job_id = new_token()[..16].to_owned();
    let cancel = Arc::new(Cancel::default());
    {
        let mut running = core.deploys.lock();
        if let Some(r) = running.as_ref() {
            return Err(AppError::conflict(
                "deploy_running",
                format!(
                    "A deploy of PR #{} is still running (job {}).",
                    r.pr_number, r.job_id
                ),
            ));
        }
        *running = Some(Running {
            job_id: job_id.clone(),
            pr_number: req.pr_number,
            cancel: cancel.clone(),
        });
    }
    let mut claim = Claim {
        deploys: core.deploys.clone(),
        armed: true,
    };
    let pr = req.pr_number;
    let reviewed = vet(core, pr, req.head_sha.as_deref()).await?;
    let gh = core.desired.github().cloned().ok_or(AppError::Internal)?;
    let progress = DeployProgress {
        job_id: job_id.clone(),
        pr_number: pr,
        phase: DeployPhase::Merging,
        hosts: targets
            .iter()
            .map(|h| (h.clone(), DeployHostState::Pending))
            .collect(),
        message: format!("Merging PR #{pr} at {}…", short(&reviewed)),
        started_by: viewer.username.clone(),
        active: true,
    };
    let request = serde_json::to_string(&req).unwrap_or_default();
    core.db
        .insert_deploy(&progress, &request)
        .await
        .or_internal("storing deploy job")?;
    // From here the job ends through `finish`, which frees the slot.
    claim.armed = false;
    core.hub
        .publish(BrowserEvent::DeployProgress(progress.clone()));
    tracing::info!(job_id, pr, head = reviewed, by = viewer.username, hosts = ?targets, "deploy started");
    let mut job = Job {
        core: core.clone(),
        viewer: viewer.clone(),
        progress,
        cancel,
        max_failures: req.max_failures,
    };
    let method = core.config.github.merge_method.clone();
    let sha = match gh.merge(pr, &method, &reviewed).await {
        Ok(sha) => sha,
        Err(e) => {
            let refused = merge_refused(pr, e);
            job.finish(DeployPhase::Failed, refused.to_string()).await;
            return Err(refused);
        }
    };
    core.desired.wake_prs();
    job.progress.message = format!(
        "Merged PR #{pr} as {}; waiting for the branch to reach it…",
        short(&sha)
    );
    job.save().await;
    tokio::spawn(job.run(sha, plan(&targets, &req)));
    Ok(job_id)
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
    {
        let running = core.deploys.lock();
        if let Some(r) = running.as_ref().filter(|r| r.job_id == job_id) {
            *r.cancel.by.lock().unwrap_or_else(|e| e.into_inner()) = viewer.username.clone();
            r.cancel.requested.store(true, Ordering::SeqCst);
            return Ok(());
        }
    }
    match core.db.deploy(job_id).await.or_internal("loading deploy")? {
        Some(_) => Err(AppError::conflict(
            "finished",
            format!("Deploy {job_id} has already ended."),
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

/// At start: a job that was running when the dashboard stopped is marked interrupted
/// (the commands it sent keep running and report as usual); the newest job is shown.
pub async fn recover(core: &Core) -> anyhow::Result<()> {
    for mut job in core.db.active_deploys().await? {
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
            "Interrupted by a dashboard restart while {}; not finished: {}. Commands already sent keep running (see each host's log).",
            phase_verb(job.phase),
            if unfinished.is_empty() { "none".to_owned() } else { unfinished.join(", ") }
        );
        job.phase = DeployPhase::Failed;
        job.active = false;
        core.db.save_deploy(&job).await?;
        tracing::warn!(job_id = job.job_id, "deploy interrupted by restart");
    }
    if let Some(latest) = core.db.latest_deploy().await? {
        core.hub.publish(BrowserEvent::DeployProgress(latest));
    }
    Ok(())
}

fn phase_verb(phase: DeployPhase) -> &'static str {
    match phase {
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
    max_failures: Option<u32>,
}

impl Job {
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

    fn failed_hosts(&self) -> Vec<String> {
        self.progress
            .hosts
            .iter()
            .filter(|(_, s)| **s == DeployHostState::Error)
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
    async fn run(mut self, sha: String, waves: Vec<Vec<String>>) {
        let pr = self.progress.pr_number;
        let short = short(&sha).to_owned();
        let wait = Duration::from_secs(self.core.config.github.merge_wait_s);
        if let Err(e) = self.core.desired.wait_for_head(&sha, wait).await {
            return self.finish(DeployPhase::Failed, e).await;
        }
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
            self.progress.phase = DeployPhase::Pulling;
            self.progress.message = format!("Pulling {short} on {}{label}…", wave.join(", "));
            let pulled = self.step(wave, CommandKind::Pull).await;
            if let Some(by) = self.cancelled_by() {
                let message =
                    format!("Cancelled by {by} after pulling; nothing was switched in this wave.");
                return self.finish(DeployPhase::Failed, message).await;
            }
            self.progress.phase = DeployPhase::Switching;
            self.progress.message = format!("Switching {}{label}…", pulled.join(", "));
            self.step(&pulled, CommandKind::Switch).await;
            let failed = self.failed_hosts();
            if let Some(max) = self.max_failures {
                if failed.len() > max as usize && n + 1 < waves.len() {
                    let message = format!(
                        "Stopped: {} host(s) failed ({}), more than the {max} allowed; the rest were skipped.",
                        failed.len(),
                        failed.join(", ")
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

    /// Run `kind` on `hosts` at once and wait for all of them; returns the hosts where it
    /// succeeded. A switch that succeeds marks the host ok; any failure marks it error.
    async fn step(&mut self, hosts: &[String], kind: CommandKind) -> Vec<String> {
        if hosts.is_empty() {
            return Vec::new();
        }
        // Subscribed before sending, so even an instant completion is seen.
        let mut completions = self.core.hub.completions();
        let mut waiting: HashMap<String, String> = HashMap::new();
        for host in hosts {
            match commands::run(&self.core, &self.viewer, host, kind, Default::default()).await {
                Ok(command_id) => {
                    waiting.insert(command_id, host.clone());
                    self.set(host, DeployHostState::Running);
                }
                Err(e) => {
                    tracing::warn!(host, %kind, "deploy step not started: {e}");
                    self.set(host, DeployHostState::Error);
                }
            }
        }
        self.save().await;
        let mut succeeded = Vec::new();
        let mut last_check = Instant::now();
        while !waiting.is_empty() {
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
                let state = match (status, kind) {
                    (CommandStatus::Ok, CommandKind::Switch) => DeployHostState::Ok,
                    (CommandStatus::Ok, _) => DeployHostState::Running,
                    _ => DeployHostState::Error,
                };
                self.set(&host, state);
                if status == CommandStatus::Ok {
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
            canary: None,
            batch_size: None,
            max_failures: None,
            head_sha: None,
            soak_s: None,
            on_failure: None,
        };
        assert_eq!(plan(&targets, &req), vec![targets.clone()]);
        req.canary = Some(ids(&["c"]));
        req.batch_size = Some(2);
        assert_eq!(
            plan(&targets, &req),
            vec![ids(&["c"]), ids(&["a", "b"]), ids(&["d", "e"])]
        );
    }
}
