//! Hosts (the `hosts` table): what the dashboard knows of each machine, its token hash, the
//! facts its agent reports on registering, and its last-seen time and metrics. Reports and
//! heartbeats are written in batches, one transaction each, rather than one per frame.

use super::{Db, DbResult};
use protocol::{Generation, Host, HostType, Metrics, Timestamp};

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
    /// The system profile's generations (None: not reported, the stored ones stand).
    pub generations: Option<Vec<Generation>>,
    /// None: not reported, the stored value stands.
    pub reboot_needed: Option<bool>,
    /// The agent's own tags (None: not reported, the stored ones stand).
    pub agent_tags: Option<Vec<String>>,
}

/// What an operator may change of a host after it was created (`PATCH /api/hosts/{id}`),
/// checked: the whole set is written, the caller having merged the edit into the host.
#[derive(Clone, Debug)]
pub struct HostFields {
    pub location: Option<String>,
    pub device_type: Option<String>,
    pub theme_color: String,
    /// The tags set in the dashboard (not the agent's).
    pub tags: Vec<String>,
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

const HOST_COLUMNS: &str = "id, hostname, host_type, theme_color, location, device_type, \
    agent_version, os_version, nixpkgs_version, generation, lock_hash, repo_url, repo_dir, \
    branch, last_seen, metrics, pending_approval, generations, reboot_needed, tags, agent_tags";

/// The `HOST_COLUMNS` of a `hosts` row.
#[derive(sqlx::FromRow)]
struct HostColumns {
    id: String,
    hostname: String,
    host_type: String,
    theme_color: String,
    location: Option<String>,
    device_type: Option<String>,
    agent_version: Option<String>,
    os_version: Option<String>,
    nixpkgs_version: Option<String>,
    generation: Option<String>,
    lock_hash: Option<String>,
    repo_url: Option<String>,
    repo_dir: Option<String>,
    branch: Option<String>,
    last_seen: Option<i64>,
    /// `Metrics` as JSON.
    metrics: Option<String>,
    pending_approval: bool,
    /// `[Generation]` as JSON.
    generations: Option<String>,
    reboot_needed: bool,
    /// The dashboard's tags, a JSON array.
    tags: String,
    /// The agent's tags, a JSON array.
    agent_tags: String,
}

impl From<HostColumns> for HostRecord {
    fn from(r: HostColumns) -> Self {
        // A type this build does not know reads as the default type; metrics that do not
        // parse read as none (they are replaced by the next heartbeat).
        let host_type = HostType::parse(&r.host_type).unwrap_or_default();
        let mut host = Host::new(&r.id, host_type);
        host.hostname = r.hostname;
        host.theme_color = r.theme_color;
        host.location = r.location;
        host.device_type = r.device_type;
        host.agent_version = r.agent_version;
        host.os_version = r.os_version;
        host.nixpkgs_version = r.nixpkgs_version;
        host.generation = r.generation;
        host.repo_url = r.repo_url;
        host.repo_dir = r.repo_dir;
        host.last_seen = r.last_seen.map(Timestamp);
        host.metrics = r.metrics.and_then(|m| serde_json::from_str(&m).ok());
        host.pending_approval = r.pending_approval;
        // Generations that do not parse read as none, like metrics: the agent reports
        // them again on its next registration.
        host.generations = r
            .generations
            .and_then(|g| serde_json::from_str(&g).ok())
            .unwrap_or_default();
        host.reboot_needed = r.reboot_needed;
        // Tags that do not parse read as none; the agent's come again with its next
        // registration.
        let tags = |json: &str| serde_json::from_str::<Vec<String>>(json).unwrap_or_default();
        host.agent_tags = tags(&r.agent_tags);
        host.tags = protocol::merge_tags(&tags(&r.tags), &host.agent_tags);
        HostRecord {
            host,
            lock_hash: r.lock_hash,
            branch: r.branch,
        }
    }
}

impl Db {
    pub async fn hosts(&self) -> DbResult<Vec<HostRecord>> {
        on_pool!(self, pool => {
            let sql = format!("SELECT {HOST_COLUMNS} FROM hosts ORDER BY id");
            let rows = sqlx::query_as::<_, HostColumns>(super::composed(sql))
                .fetch_all(pool)
                .await?;
            Ok(rows.into_iter().map(HostRecord::from).collect())
        })
    }

    pub async fn host(&self, id: &str) -> DbResult<Option<HostRecord>> {
        on_pool!(self, pool => {
            let sql = format!("SELECT {HOST_COLUMNS} FROM hosts WHERE id = $1");
            let row = sqlx::query_as::<_, HostColumns>(super::composed(sql))
                .bind(id)
                .fetch_optional(pool)
                .await?;
            Ok(row.map(HostRecord::from))
        })
    }

    /// The host id a token hash belongs to.
    pub async fn host_for_token(&self, token_hash: &str) -> DbResult<Option<String>> {
        on_pool!(self, pool => {
            sqlx::query_scalar("SELECT id FROM hosts WHERE token_hash = $1")
                .bind(token_hash)
                .fetch_optional(pool)
                .await
        })
    }

    /// Insert a new host; a duplicate id is a unique violation the caller maps to 409.
    pub async fn insert_host(&self, host: &Host, token_hash: &str) -> DbResult<()> {
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO hosts (id, hostname, host_type, theme_color, location, device_type, token_hash, created_at, pending_approval, tags)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(&host.id)
            .bind(&host.hostname)
            .bind(host.host_type.as_str())
            .bind(&host.theme_color)
            .bind(&host.location)
            .bind(&host.device_type)
            .bind(token_hash)
            .bind(Timestamp::now().secs())
            .bind(host.pending_approval)
            .bind(tags_json(&host.dashboard_tags()))
            .execute(pool)
            .await
            .map(|_| ())
        })
    }

    /// An operator's edit of a host; false when there is no such host.
    pub async fn set_host_fields(&self, id: &str, fields: &HostFields) -> DbResult<bool> {
        on_pool!(self, pool => {
            sqlx::query(
                "UPDATE hosts SET location = $2, device_type = $3, theme_color = $4, tags = $5
                 WHERE id = $1",
            )
            .bind(id)
            .bind(&fields.location)
            .bind(&fields.device_type)
            .bind(&fields.theme_color)
            .bind(tags_json(&fields.tags))
            .execute(pool)
            .await
            .map(|r| r.rows_affected() == 1)
        })
    }

    /// An admin approved a self-enrolled host; false when there is no such host.
    pub async fn approve_host(&self, id: &str) -> DbResult<bool> {
        on_pool!(self, pool => {
            let done = sqlx::query("UPDATE hosts SET pending_approval = FALSE WHERE id = $1")
                .bind(id)
                .execute(pool)
                .await?;
            Ok(done.rows_affected() > 0)
        })
    }

    /// Registrations gathered since the last batch, in one transaction (a reconnect wave of
    /// thousands of agents must not mean thousands of synchronous commits).
    pub async fn save_reports(&self, batch: &[(String, HostReport, Timestamp)]) -> DbResult<()> {
        on_pool!(self, pool => {
                    if batch.is_empty() {
                        return Ok(());
                    }
                    let mut tx = pool.begin().await?;
                    for (id, rep, seen) in batch {
        sqlx::query(
                        "UPDATE hosts SET hostname = $2, agent_version = $3, os_version = $4, nixpkgs_version = $5,
                    generation = $6, lock_hash = $7, repo_url = $8, repo_dir = $9, branch = $10,
                    heartbeat_interval_s = $11, last_seen = $12,
                    generations = COALESCE($13, generations), reboot_needed = COALESCE($14, reboot_needed),
                    agent_tags = COALESCE($15, agent_tags)
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
                    .bind(rep.generations.as_deref().map(generations_json))
                    .bind(rep.reboot_needed)
                    .bind(rep.agent_tags.as_deref().map(tags_json))
                    .execute(&mut *tx).await?;
                    }
                    tx.commit().await
                })
    }

    /// One transaction for a whole batch of heartbeats.
    pub async fn save_seen(&self, batch: &[SeenUpdate]) -> DbResult<()> {
        on_pool!(self, pool => {
            if batch.is_empty() {
                return Ok(());
            }
            let mut tx = pool.begin().await?;
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
        })
    }

    /// What a `status` frame reported of the system profile, written at once: it comes
    /// after a switch, boot or rollback, rarely. None keeps the stored value.
    pub async fn save_generations(
        &self,
        id: &str,
        generations: Option<&[Generation]>,
        reboot_needed: Option<bool>,
    ) -> DbResult<()> {
        on_pool!(self, pool => {
            sqlx::query(
                "UPDATE hosts SET generations = COALESCE($2, generations),
                    reboot_needed = COALESCE($3, reboot_needed) WHERE id = $1",
            )
            .bind(id)
            .bind(generations.map(generations_json))
            .bind(reboot_needed)
            .execute(pool)
            .await
            .map(|_| ())
        })
    }

    pub async fn set_token_hash(&self, id: &str, token_hash: &str) -> DbResult<bool> {
        on_pool!(self, pool => {
            sqlx::query("UPDATE hosts SET token_hash = $2 WHERE id = $1")
                .bind(id)
                .bind(token_hash)
                .execute(pool)
                .await
                .map(|r| r.rows_affected() == 1)
        })
    }

    /// The host and its metrics history.
    pub async fn delete_host(&self, id: &str) -> DbResult<bool> {
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let deleted = sqlx::query("DELETE FROM hosts WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                == 1;
            sqlx::query("DELETE FROM metrics_history WHERE host_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(deleted)
        })
    }
}

fn tags_json(tags: &[String]) -> String {
    serde_json::to_string(tags).unwrap_or_else(|_| "[]".into())
}

fn generations_json(generations: &[Generation]) -> String {
    serde_json::to_string(generations).unwrap_or_default()
}
