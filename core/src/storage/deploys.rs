//! Merge & Deploy jobs (the `deploy_jobs` table): each job's request, phase, per-host
//! states and message, saved as it progresses so that a restart finds the jobs that were
//! running. The phase is stored as its wire name, the host and preview maps as JSON. A job
//! that previews first also keeps its confirmation deadline, so a restart can resume it.

use super::{decode_error, Db, DbResult};
use protocol::messages::{DeployPhase, DeployProgress};
use protocol::Timestamp;

const DEPLOY_SELECT: &str =
    "SELECT id, pr_number, started_by, phase, hosts, message, active, previews, created_at, updated_at FROM deploy_jobs";

/// The columns `DEPLOY_SELECT` reads.
#[derive(sqlx::FromRow)]
struct DeployColumns {
    id: String,
    pr_number: i64,
    started_by: String,
    phase: String,
    /// `{host_id: state}` as JSON.
    hosts: String,
    message: String,
    active: bool,
    /// `{host_id: preview command_id}` as JSON.
    previews: String,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<DeployColumns> for DeployProgress {
    type Error = sqlx::Error;

    /// A phase or host map that does not decode is an error, not a guess.
    fn try_from(r: DeployColumns) -> DbResult<Self> {
        let phase = DeployPhase::parse(&r.phase)
            .ok_or_else(|| decode_error(format!("unknown deploy phase `{}`", r.phase)))?;
        Ok(DeployProgress {
            job_id: r.id,
            pr_number: r.pr_number as u64,
            started_by: r.started_by,
            phase,
            hosts: serde_json::from_str(&r.hosts).map_err(decode_error)?,
            message: r.message,
            active: r.active,
            previews: serde_json::from_str(&r.previews).map_err(decode_error)?,
        })
    }
}

fn hosts_json(job: &DeployProgress) -> String {
    serde_json::to_string(&job.hosts).unwrap_or_default()
}

fn previews_json(job: &DeployProgress) -> String {
    serde_json::to_string(&job.previews).unwrap_or_else(|_| "{}".to_owned())
}

/// What resuming a job after a restart needs besides its progress.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct DeployResume {
    /// The `DeployRequest` as JSON, as stored when the job started.
    pub request: String,
    /// When an unconfirmed job expires (unix seconds), once it waits for confirmation.
    pub confirm_by: Option<i64>,
}

impl Db {
    /// Store a new job, run by `replica`. At most one job is active (the unique index
    /// `deploy_jobs_one_active`): a second active one fails as a unique violation, which is
    /// how two servers on one database never start two deploys.
    pub async fn insert_deploy(
        &self,
        job: &DeployProgress,
        request: &str,
        replica: &str,
    ) -> DbResult<()> {
        on_pool!(self, pool => {
            let now = Timestamp::now().secs();
            sqlx::query(
                "INSERT INTO deploy_jobs (id, pr_number, started_by, request, phase, hosts, message, active, previews, created_at, updated_at, replica)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $11)",
            )
            .bind(&job.job_id)
            .bind(job.pr_number as i64)
            .bind(&job.started_by)
            .bind(request)
            .bind(job.phase.as_str())
            .bind(hosts_json(job))
            .bind(&job.message)
            .bind(job.active)
            .bind(previews_json(job))
            .bind(now)
            .bind(replica)
            .execute(pool)
            .await
            .map(|_| ())
        })
    }

    pub async fn save_deploy(&self, job: &DeployProgress) -> DbResult<()> {
        on_pool!(self, pool => {
            sqlx::query(
                "UPDATE deploy_jobs SET phase = $2, hosts = $3, message = $4, active = $5, previews = $6, updated_at = $7 WHERE id = $1",
            )
            .bind(&job.job_id)
            .bind(job.phase.as_str())
            .bind(hosts_json(job))
            .bind(&job.message)
            .bind(job.active)
            .bind(previews_json(job))
            .bind(Timestamp::now().secs())
            .execute(pool)
            .await
            .map(|_| ())
        })
    }

    /// Set (or clear) when an unconfirmed job expires.
    pub async fn set_deploy_confirm_by(&self, id: &str, confirm_by: Option<i64>) -> DbResult<()> {
        on_pool!(self, pool => {
            sqlx::query("UPDATE deploy_jobs SET confirm_by = $2 WHERE id = $1")
                .bind(id)
                .bind(confirm_by)
                .execute(pool)
                .await
                .map(|_| ())
        })
    }

    /// The stored request and confirmation deadline of a job.
    pub async fn deploy_resume(&self, id: &str) -> DbResult<Option<DeployResume>> {
        on_pool!(self, pool => {
            sqlx::query_as::<_, DeployResume>(
                "SELECT request, confirm_by FROM deploy_jobs WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(pool)
            .await
        })
    }

    /// Jobs that were running when the dashboard stopped.
    pub async fn active_deploys(&self) -> DbResult<Vec<DeployProgress>> {
        on_pool!(self, pool => {
            let rows = sqlx::query_as::<_, DeployColumns>(super::composed(format!(
                "{DEPLOY_SELECT} WHERE active ORDER BY created_at"
            )))
            .fetch_all(pool)
            .await?;
            rows.into_iter().map(DeployProgress::try_from).collect()
        })
    }

    /// The active job (at most one) and the replica running it.
    pub async fn active_deploy_owner(&self) -> DbResult<Option<(DeployProgress, String)>> {
        on_pool!(self, pool => {
            let row = sqlx::query_as::<_, DeployColumns>(super::composed(format!(
                "{DEPLOY_SELECT} WHERE active ORDER BY created_at DESC LIMIT 1"
            )))
            .fetch_optional(pool)
            .await?;
            let Some(row) = row else { return Ok(None) };
            let replica: String =
                sqlx::query_scalar("SELECT replica FROM deploy_jobs WHERE id = $1")
                    .bind(&row.id)
                    .fetch_one(pool)
                    .await?;
            Ok(Some((DeployProgress::try_from(row)?, replica)))
        })
    }

    /// Make `to` the replica running active job `id`, if `from` still is: true for the one
    /// server that took it over when several try at once.
    pub async fn claim_deploy(&self, id: &str, from: &str, to: &str) -> DbResult<bool> {
        on_pool!(self, pool => {
            sqlx::query("UPDATE deploy_jobs SET replica = $3 WHERE id = $1 AND replica = $2 AND active")
                .bind(id)
                .bind(from)
                .bind(to)
                .execute(pool)
                .await
                .map(|r| r.rows_affected() == 1)
        })
    }

    pub async fn deploy(&self, id: &str) -> DbResult<Option<DeployProgress>> {
        on_pool!(self, pool => {
            let row = sqlx::query_as::<_, DeployColumns>(super::composed(format!(
                "{DEPLOY_SELECT} WHERE id = $1"
            )))
            .bind(id)
            .fetch_optional(pool)
            .await?;
            row.map(DeployProgress::try_from).transpose()
        })
    }

    /// Record that a job started `command_id` (the Deploys page lists each job's commands).
    pub async fn add_deploy_command(&self, deploy_id: &str, command_id: &str) -> DbResult<()> {
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO deploy_commands (deploy_id, command_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .bind(deploy_id)
            .bind(command_id)
            .execute(pool)
            .await
            .map(|_| ())
        })
    }

    /// The deploys that started commands of `host_id` queued at or after `since`: (command
    /// id, deploy id, the deploy's PR). The host page marks those commands as the deploy's.
    pub async fn host_deploy_commands(
        &self,
        host_id: &str,
        since: Timestamp,
    ) -> DbResult<Vec<(String, String, i64)>> {
        on_pool!(self, pool => {
            sqlx::query_as::<_, (String, String, i64)>(
                "SELECT c.id, d.id, d.pr_number FROM deploy_commands dc \
                 JOIN commands c ON c.id = dc.command_id \
                 JOIN deploy_jobs d ON d.id = dc.deploy_id \
                 WHERE c.host_id = $1 AND c.queued_at >= $2",
            )
            .bind(host_id)
            .bind(since.secs())
            .fetch_all(pool)
            .await
        })
    }

    /// The newest jobs first, at most `limit`, each with when it started and last changed.
    pub async fn recent_deploys(
        &self,
        limit: u32,
    ) -> DbResult<Vec<(DeployProgress, Timestamp, Timestamp)>> {
        on_pool!(self, pool => {
            let rows = sqlx::query_as::<_, DeployColumns>(super::composed(format!(
                "{DEPLOY_SELECT} ORDER BY created_at DESC, updated_at DESC LIMIT $1"
            )))
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?;
            rows.into_iter()
                .map(|r| {
                    let (created, updated) = (r.created_at, r.updated_at);
                    Ok((
                        DeployProgress::try_from(r)?,
                        Timestamp(created),
                        Timestamp(updated),
                    ))
                })
                .collect()
        })
    }

    pub async fn latest_deploy(&self) -> DbResult<Option<DeployProgress>> {
        on_pool!(self, pool => {
            let row = sqlx::query_as::<_, DeployColumns>(super::composed(format!(
                "{DEPLOY_SELECT} ORDER BY created_at DESC, updated_at DESC LIMIT 1"
            )))
            .fetch_optional(pool)
            .await?;
            row.map(DeployProgress::try_from).transpose()
        })
    }
}
