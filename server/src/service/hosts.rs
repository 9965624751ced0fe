//! Hosts and their agent tokens.

use super::{audit, require_admin, OrInternal, Result};
use crate::secret::{constant_time_eq, new_token, sha256_hex};
use crate::state::AppState;
use crate::storage::{is_unique_violation, HostReport};
use app::backend::Viewer;
use app::AppError;
use protocol::api::{CreateHost, HostCreated, RefreshResult};
use protocol::messages::Register;
use protocol::{is_valid_host_id, is_valid_theme_color, Host, Timestamp};

/// Free-text host attributes (location, device type): short, printable.
fn check_label(field: &str, value: Option<String>) -> Result<Option<String>> {
    let Some(v) = value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if v.chars().count() > 64 || v.chars().any(char::is_control) {
        return Err(AppError::Invalid(format!(
            "{field} must be at most 64 printable characters."
        )));
    }
    Ok(Some(v))
}

/// The host id for a hostname: its lower-cased form, which must match the contract's
/// pattern. Anything else is rejected, never rewritten.
pub fn host_id_for(hostname: &str) -> Result<String> {
    let id = hostname.to_ascii_lowercase();
    if is_valid_host_id(&id) {
        Ok(id)
    } else {
        Err(AppError::Invalid(format!(
            "Invalid hostname {:?}: use letters, digits, '.', '_' and '-', starting with a letter or digit, at most 63 characters.",
            hostname.chars().take(80).collect::<String>()
        )))
    }
}

/// Build a new host from the request, validating every field.
fn new_host(req: CreateHost) -> Result<Host> {
    let id = host_id_for(&req.hostname)?;
    let mut host = Host::new(&id, req.host_type);
    host.hostname = req.hostname;
    if let Some(color) = req.theme_color {
        if !is_valid_theme_color(&color) {
            return Err(AppError::Invalid(
                "theme_color must look like #rrggbb.".into(),
            ));
        }
        host.theme_color = color.to_ascii_lowercase();
    }
    host.location = check_label("location", req.location)?;
    host.device_type = check_label("device_type", req.device_type)?;
    Ok(host)
}

async fn insert_with_token(app: &AppState, host: &Host) -> Result<String> {
    let token = new_token();
    match app.db.insert_host(host, &sha256_hex(&token)).await {
        Ok(()) => Ok(token),
        Err(e) if is_unique_violation(&e) => Err(AppError::conflict(
            "exists",
            format!("A host named {} already exists.", host.id),
        )),
        Err(e) => Err(e).or_internal("inserting host"),
    }
}

/// `POST /api/hosts`: a new host and its token, shown once.
pub async fn create(app: &AppState, viewer: &Viewer, req: CreateHost) -> Result<HostCreated> {
    let name: String = req.hostname.chars().take(64).collect();
    let result = add(app, viewer, req).await;
    audit::record(app, viewer, "host.add", Some(&name), result).await
}

async fn add(app: &AppState, viewer: &Viewer, req: CreateHost) -> Result<HostCreated> {
    require_admin(viewer)?;
    let host = new_host(req)?;
    let agent_token = insert_with_token(app, &host).await?;
    app.hub.add_host(host.clone());
    tracing::info!(host = host.id, by = viewer.username, "host added");
    Ok(HostCreated { host, agent_token })
}

/// `POST /api/hosts/{id}/refresh`: the host's status as the dashboard knows it now.
pub async fn refresh(app: &AppState, _viewer: &Viewer, id: &str) -> Result<RefreshResult> {
    // The database must still know the host: a host removed elsewhere is a 404 here.
    if app.db.host(id).await.or_internal("loading host")?.is_none() {
        return Err(AppError::NotFound(format!("host {id}")));
    }
    // Fresh from the source too (a cached reading younger than a few seconds is reused,
    // so a burst of refreshes makes one request).
    app.desired
        .read_if_older(std::time::Duration::from_secs(5))
        .await;
    let host = app
        .hub
        .update_host(id, |_| {})
        .ok_or_else(|| AppError::NotFound(format!("host {id}")))?;
    Ok(RefreshResult {
        host_id: host.id,
        online: host.online,
        generation: host.generation,
        agent_version: host.agent_version,
        agent_outdated: host.agent_outdated,
        update_status: host.update_status,
        pending_pr: app.hub.pending_pr(),
    })
}

pub fn list(app: &AppState, _viewer: &Viewer) -> Vec<Host> {
    app.hub.snapshot().hosts
}

/// `DELETE /api/hosts/{id}`: forget the host, revoke its token, close its agent.
pub async fn remove(app: &AppState, viewer: &Viewer, id: &str) -> Result<()> {
    let result = forget(app, viewer, id).await;
    audit::record(app, viewer, "host.remove", Some(id), result).await
}

async fn forget(app: &AppState, viewer: &Viewer, id: &str) -> Result<()> {
    require_admin(viewer)?;
    if !app.db.delete_host(id).await.or_internal("deleting host")? {
        return Err(AppError::NotFound(format!("host {id}")));
    }
    app.hub.remove_host(id);
    tracing::info!(host = id, by = viewer.username, "host removed");
    Ok(())
}

/// `POST /api/hosts/{id}/token`: a new token; the old one stops working at once.
pub async fn rotate_token(app: &AppState, viewer: &Viewer, id: &str) -> Result<String> {
    let result = new_host_token(app, viewer, id).await;
    audit::record(app, viewer, "host.token", Some(id), result).await
}

async fn new_host_token(app: &AppState, viewer: &Viewer, id: &str) -> Result<String> {
    require_admin(viewer)?;
    let token = new_token();
    if !app
        .db
        .set_token_hash(id, &sha256_hex(&token))
        .await
        .or_internal("rotating token")?
    {
        return Err(AppError::NotFound(format!("host {id}")));
    }
    app.hub.disconnect_agent(id, "token rotated");
    tracing::info!(host = id, by = viewer.username, "host token rotated");
    Ok(token)
}

/// Who an agent's bearer token speaks for.
#[derive(Clone, Debug, PartialEq)]
pub enum AgentIdentity {
    Host(String),
    /// The enrollment token: may create a host that does not exist yet.
    Enrollment,
}

pub async fn authenticate_agent(app: &AppState, token: &str) -> Result<AgentIdentity> {
    if let Some(id) = app
        .db
        .host_for_token(&sha256_hex(token))
        .await
        .or_internal("looking up agent token")?
    {
        return Ok(AgentIdentity::Host(id));
    }
    match &app.config.enroll_token {
        Some(enroll) if !enroll.is_empty() && constant_time_eq(enroll, token) => {
            if app
                .enroll_until
                .is_some_and(|until| Timestamp::now() > until)
            {
                tracing::warn!("an agent used the expired enrollment token");
                return Err(AppError::Unauthorized);
            }
            Ok(AgentIdentity::Enrollment)
        }
        _ => Err(AppError::Unauthorized),
    }
}

/// When the configured enrollment token expires: its first sighting (kept in the database,
/// so restarts do not extend it) plus the configured lifetime.
pub async fn enrollment_deadline(
    db: &crate::storage::Db,
    config: &crate::config::Config,
) -> Result<Option<Timestamp>> {
    let Some(token) = config.enroll_token.as_deref().filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    if config.enroll_token_ttl_h == 0 {
        return Ok(None);
    }
    let hash = sha256_hex(token);
    let stored = db
        .setting("enroll_token")
        .await
        .or_internal("reading settings")?;
    let first_seen = match stored.as_deref().and_then(|v| v.split_once(':')) {
        Some((h, at)) if h == hash => at.parse().unwrap_or_else(|_| Timestamp::now().secs()),
        _ => {
            let now = Timestamp::now().secs();
            db.set_setting("enroll_token", &format!("{hash}:{now}"))
                .await
                .or_internal("writing settings")?;
            now
        }
    };
    Ok(Some(Timestamp(
        first_seen + (config.enroll_token_ttl_h * 3600) as i64,
    )))
}

/// Enrollment: create the host an agent registered with, and return its new token. A host
/// that exists already can never be taken over this way.
pub async fn enroll(app: &AppState, reg: &Register) -> Result<(String, String)> {
    let host = new_host(CreateHost {
        hostname: reg.hostname.clone(),
        host_type: reg.host_type,
        theme_color: reg.theme_color.clone(),
        location: reg.location.clone(),
        device_type: reg.device_type.clone(),
    })?;
    let token = insert_with_token(app, &host).await?;
    let id = host.id.clone();
    app.hub.add_host(host);
    tracing::info!(host = id, "host enrolled");
    Ok((id, token))
}

/// Queue what an agent reported at registration for the next batched write.
pub fn save_registration(app: &AppState, id: &str, reg: &Register) {
    let report = HostReport {
        hostname: reg.hostname.clone(),
        agent_version: Some(reg.agent_version.clone()),
        os_version: reg.os_version.clone(),
        nixpkgs_version: reg.nixpkgs_version.clone(),
        generation: reg.generation.clone(),
        lock_hash: reg.lock_hash.clone(),
        repo_url: reg.repo_url.clone(),
        repo_dir: reg.repo_dir.clone(),
        branch: reg.branch.clone(),
        heartbeat_interval_s: Some(reg.heartbeat_interval_s),
    };
    app.hub.queue_report(id, report);
}

/// Write the batched registrations and heartbeats (every few seconds, when an agent
/// leaves, and at shutdown). Registrations first, so a newer last-seen wins.
pub async fn flush_reports(app: &AppState) {
    if let Err(e) = app.db.save_reports(&app.hub.take_reports()).await {
        tracing::warn!("saving registrations: {e}");
    }
    if let Err(e) = app.db.save_seen(&app.hub.take_unsaved()).await {
        tracing::warn!("saving last-seen: {e}");
    }
}
