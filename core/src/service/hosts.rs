//! Hosts and their agent tokens.

use super::{audit, require_admin, require_operator, OrInternal, Result};
use crate::secret::{constant_time_eq, new_token, sha256_hex};
use crate::storage::{is_unique_violation, HostFields, HostReport, SeenUpdate};
use crate::Core;
use common::{AppError, Viewer};
use protocol::api::{CreateHost, HostCreated, HostEdit, RefreshResult};
use protocol::messages::{Heartbeat, Register, Snapshot, StatusReport};
use protocol::{
    is_valid_host_id, is_valid_tag, is_valid_theme_color, merge_tags, Generation, Host, Timestamp,
    MAX_TAGS,
};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Mutex;

/// Registrations and heartbeats taken in memory but not yet written. Heartbeats and
/// registrations reach the database in batches (every few seconds, when an agent leaves,
/// and at shutdown): a write per heartbeat would dominate the database at fleet scale. An
/// agent re-sends its registration on every connect, so a crash between batches loses
/// nothing.
#[derive(Default)]
pub struct Unsaved {
    pending: Mutex<Pending>,
    /// Held while a batch is written: a write at shutdown waits for one still under way
    /// (an agent that just left) instead of finding the maps empty and exiting before it.
    writing: tokio::sync::Mutex<()>,
    /// Heartbeat metrics by minute, for the metrics history.
    pub history: super::history::Recorder,
}

#[derive(Default)]
struct Pending {
    seen: HashMap<String, SeenUpdate>,
    reports: HashMap<String, (HostReport, Timestamp)>,
}

impl Unsaved {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        // Plain maps: a panic elsewhere leaves them consistent.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take(&self) -> (Vec<(String, HostReport, Timestamp)>, Vec<SeenUpdate>) {
        let mut pending = self.lock();
        let reports = pending
            .reports
            .drain()
            .map(|(id, (r, at))| (id, r, at))
            .collect();
        let seen = pending.seen.drain().map(|(_, v)| v).collect();
        (reports, seen)
    }

    fn forget(&self, id: &str) {
        let mut pending = self.lock();
        pending.seen.remove(id);
        pending.reports.remove(id);
        drop(pending);
        self.history.forget(id);
    }
}

// ---------------------------------------------------------------- what agents report

/// Longest text kept of a version an agent reports (agent, OS, nixpkgs).
const VERSION_CHARS: usize = 128;
/// Longest generation or lock hash: a git commit is 40 (SHA-1) or 64 (SHA-256) hex
/// characters, a lock hash 64.
const HASH_CHARS: usize = 128;
/// Longest branch, repository URL or checkout path.
const PLACE_CHARS: usize = 512;
/// Longest store path kept, in bytes. A Nix store path is `/nix/store/<32 chars>-<name>`
/// with a name of at most 211 characters; twice that leaves room for another store
/// directory and still bounds what one generation costs every snapshot.
pub const STORE_PATH_BYTES: usize = 512;
/// Generations kept per host, the newest. A profile rarely holds more; an agent reporting
/// thousands would otherwise grow the hub, the database and every snapshot.
pub const MAX_GENERATIONS: usize = 100;
/// Longest location or device type: the bound `check_label` sets for the ones an admin
/// types.
const LABEL_CHARS: usize = 64;

/// Text an agent reports, as the dashboard keeps and shows it: ANSI escape sequences
/// (CSI `ESC [ … final`, OSC `ESC ] … BEL` or `ESC \`, and two-character ones) and every
/// other control character removed, bidirectional overrides too (they reorder what an
/// operator reads), then cut to `max` characters. Browsers, logs and terminals then never
/// get a control sequence from an agent, and a report cannot grow the hub, the database or
/// every snapshot without bound. Borrowed (no copy) when the text is already clean, as
/// nearly every heartbeat's is.
pub fn agent_text(value: &str, max: usize) -> Cow<'_, str> {
    if value.chars().count() <= max && !value.chars().any(unwanted) {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len().min(max.saturating_mul(4)));
    let mut kept = 0;
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            match chars.next() {
                // CSI: parameters and intermediates up to a final byte in @..~.
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                // OSC (a window title, a hyperlink): up to BEL or ESC \.
                Some(']') => {
                    while let Some(c) = chars.next() {
                        if c == '\u{7}' {
                            break;
                        }
                        if c == '\u{1b}' {
                            chars.next_if_eq(&'\\');
                            break;
                        }
                    }
                }
                // Any other escape is two characters.
                _ => {}
            }
            continue;
        }
        if unwanted(c) {
            continue;
        }
        if kept == max {
            break;
        }
        out.push(c);
        kept += 1;
    }
    Cow::Owned(out)
}

/// Text from a third party (a webhook target's answer, GitHub's error message) as one line
/// the dashboard stores and shows: line breaks and tabs become spaces, then `agent_text`.
/// Besides what escapes do to a terminal, PostgreSQL's text holds no NUL: a record with one
/// would be refused, and lost.
pub fn foreign_line(value: &str, max: usize) -> String {
    let spaced: String = value
        .chars()
        .map(|c| {
            if matches!(c, '\n' | '\r' | '\t') {
                ' '
            } else {
                c
            }
        })
        .collect();
    agent_text(&spaced, max).into_owned()
}

/// Control characters (C0, DEL, C1) and the bidirectional formatting characters.
fn unwanted(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn clean(value: &mut String, max: usize) {
    if let Cow::Owned(cleaned) = agent_text(value, max) {
        *value = cleaned;
    }
}

fn clean_opt(value: &mut Option<String>, max: usize) {
    if let Some(v) = value {
        clean(v, max);
    }
}

/// A `register` as the dashboard takes it: every free-text field through `agent_text`,
/// before the hub, the database or an enrollment sees it. The hostname is checked on its
/// own (`host_id_for`: the contract's pattern, refused otherwise), the theme colour by
/// `new_host` (`#rrggbb`, refused otherwise); the running command's id is only looked up.
pub fn clean_register(reg: &mut Register) {
    clean(&mut reg.agent_version, VERSION_CHARS);
    clean_opt(&mut reg.os_version, VERSION_CHARS);
    clean_opt(&mut reg.nixpkgs_version, VERSION_CHARS);
    clean_opt(&mut reg.generation, HASH_CHARS);
    clean_opt(&mut reg.lock_hash, HASH_CHARS);
    clean_opt(&mut reg.repo_url, PLACE_CHARS);
    clean_opt(&mut reg.repo_dir, PLACE_CHARS);
    clean_opt(&mut reg.branch, PLACE_CHARS);
    clean_opt(&mut reg.location, LABEL_CHARS);
    clean_opt(&mut reg.device_type, LABEL_CHARS);
    if let Some(generations) = &mut reg.generations {
        clean_generations(generations);
    }
    if let Some(tags) = &mut reg.tags {
        clean_agent_tags(tags);
    }
}

/// An agent's tags as the dashboard keeps them: valid ones only (the agent checks them at
/// start, so an invalid one is an old or foreign agent), sorted, each once, at most
/// `MAX_TAGS`.
fn clean_agent_tags(tags: &mut Vec<String>) {
    let before = tags.len();
    tags.retain(|t| is_valid_tag(t));
    tags.sort();
    tags.dedup();
    tags.truncate(MAX_TAGS);
    if tags.len() < before {
        tracing::warn!(
            dropped = before - tags.len(),
            "dropped reported tags that are invalid, repeated or over {MAX_TAGS}"
        );
    }
}

/// Tags as an operator gave them: each valid, at most `MAX_TAGS`; sorted, each once.
pub fn check_tags(mut tags: Vec<String>) -> Result<Vec<String>> {
    if let Some(bad) = tags.iter().find(|t| !is_valid_tag(t)) {
        return Err(AppError::Invalid(format!(
            "Invalid tag {:?}: use lower-case letters, digits, '.', '_' and '-', starting with a letter or digit, at most 32 characters.",
            bad.chars().take(40).collect::<String>()
        )));
    }
    tags.sort();
    tags.dedup();
    if tags.len() > MAX_TAGS {
        return Err(AppError::Invalid(format!(
            "A host carries at most {MAX_TAGS} tags ({} given).",
            tags.len()
        )));
    }
    Ok(tags)
}

/// The hosts a bulk run or a deploy names: its `host_ids`, or with `tags` every host
/// carrying any of them, online or not (an offline one answers for itself, rather than
/// being left out unseen). None when neither is given (the caller's default). Tags are
/// checked like an edit's, so a malformed one is an error rather than an empty selection.
pub fn targets(
    core: &Core,
    host_ids: Option<Vec<String>>,
    tags: Option<Vec<String>>,
) -> Result<Option<Vec<String>>> {
    let Some(tags) = tags else {
        return Ok(host_ids);
    };
    if host_ids.is_some() {
        return Err(AppError::Invalid("Give host_ids or tags, not both.".into()));
    }
    let tags = check_tags(tags)?;
    if tags.is_empty() {
        return Err(AppError::Invalid("tags must name at least one tag.".into()));
    }
    let ids = core.hub.ids_where(|h| h.has_any_tag(&tags));
    if ids.is_empty() {
        return Err(AppError::conflict(
            "no_hosts",
            format!("No host carries the tag {}.", tags.join(" or ")),
        ));
    }
    Ok(Some(ids))
}

/// A store path an agent reported, cleaned like its other text; None when it is longer
/// than `STORE_PATH_BYTES` (a cut path would name another path, so it is dropped whole).
pub fn clean_store_path(path: &str) -> Option<String> {
    let cleaned = agent_text(path, path.len());
    (cleaned.len() <= STORE_PATH_BYTES).then(|| cleaned.into_owned())
}

/// Reported generations as the dashboard keeps them: one per number, oldest first, the
/// newest `MAX_GENERATIONS`, each store path cleaned. A generation whose store path is too
/// long to keep is dropped, with a warning, rather than shown with a wrong path.
pub fn clean_generations(generations: &mut Vec<Generation>) {
    generations.sort_by_key(|g| g.number);
    generations.dedup_by_key(|g| g.number);
    if generations.len() > MAX_GENERATIONS {
        generations.drain(..generations.len() - MAX_GENERATIONS);
    }
    generations.retain_mut(|g| match clean_store_path(&g.store_path) {
        Some(path) => {
            g.store_path = path;
            true
        }
        None => {
            tracing::warn!(
                generation = g.number,
                "dropped a reported generation: its store path is over {STORE_PATH_BYTES} bytes"
            );
            false
        }
    });
}

/// A heartbeat's text fields through `agent_text`; None when they were clean already (the
/// usual case: no copy on this hot path).
fn clean_heartbeat(hb: &Heartbeat) -> Option<Heartbeat> {
    let dirty = |v: &Option<String>| {
        v.as_deref()
            .is_some_and(|v| matches!(agent_text(v, HASH_CHARS), Cow::Owned(_)))
    };
    if !dirty(&hb.generation) && !dirty(&hb.lock_hash) {
        return None;
    }
    let mut hb = hb.clone();
    clean_opt(&mut hb.generation, HASH_CHARS);
    clean_opt(&mut hb.lock_hash, HASH_CHARS);
    Some(hb)
}

/// Free-text host attributes (location, device type): short, printable.
fn check_label(field: &str, value: Option<String>) -> Result<Option<String>> {
    let Some(v) = value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if v.chars().count() > LABEL_CHARS || v.chars().any(char::is_control) {
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
    host.tags = check_tags(req.tags.unwrap_or_default())?;
    Ok(host)
}

async fn insert_with_token(core: &Core, host: &Host) -> Result<String> {
    let token = new_token();
    match core.db.insert_host(host, &sha256_hex(&token)).await {
        Ok(()) => Ok(token),
        Err(e) if is_unique_violation(&e) => Err(AppError::conflict(
            "exists",
            format!("A host named {} already exists.", host.id),
        )),
        Err(e) => Err(e).or_internal("inserting host"),
    }
}

/// `POST /api/hosts`: a new host and its token, shown once.
pub async fn create(core: &Core, viewer: &Viewer, req: CreateHost) -> Result<HostCreated> {
    let name: String = req.hostname.chars().take(64).collect();
    let result = add(core, viewer, req).await;
    audit::record(core, viewer, "host.add", Some(&name), result).await
}

async fn add(core: &Core, viewer: &Viewer, req: CreateHost) -> Result<HostCreated> {
    require_admin(viewer)?;
    let host = new_host(req)?;
    let agent_token = insert_with_token(core, &host).await?;
    core.hub.add_host(host.clone());
    tracing::info!(host = host.id, by = viewer.username, "host added");
    Ok(HostCreated { host, agent_token })
}

/// `POST /api/hosts/{id}/refresh`: the host's status as the dashboard knows it now.
pub async fn refresh(core: &Core, _viewer: &Viewer, id: &str) -> Result<RefreshResult> {
    // The database must still know the host: a host removed elsewhere is a 404 here.
    if core
        .db
        .host(id)
        .await
        .or_internal("loading host")?
        .is_none()
    {
        return Err(AppError::NotFound(format!("host {id}")));
    }
    // Fresh from the source too (a cached reading younger than a few seconds is reused,
    // so a burst of refreshes makes one request).
    core.desired
        .read_if_older(std::time::Duration::from_secs(5))
        .await;
    let host = core
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
        pending_pr: core.hub.pending_pr(),
    })
}

/// `PATCH /api/hosts/{id}`: an operator changes a host's location, device type, colour or
/// the tags set in the dashboard. Every open page sees the change at once.
pub async fn edit(core: &Core, viewer: &Viewer, id: &str, req: HostEdit) -> Result<Host> {
    let result = apply_edit(core, viewer, id, req).await;
    audit::record(core, viewer, "host.edit", Some(id), result).await
}

/// Edits are applied one at a time: each reads the host, merges its fields and writes the
/// whole set, so two at once could otherwise undo each other.
static EDITING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn apply_edit(core: &Core, viewer: &Viewer, id: &str, req: HostEdit) -> Result<Host> {
    require_operator(viewer)?;
    let _turn = EDITING.lock().await;
    let host = core
        .hub
        .host(id)
        .ok_or_else(|| AppError::NotFound(format!("host {id}")))?;
    let mut fields = HostFields {
        location: host.location.clone(),
        device_type: host.device_type.clone(),
        theme_color: host.theme_color.clone(),
        tags: host.dashboard_tags(),
    };
    if let Some(location) = req.location {
        fields.location = check_label("location", location)?;
    }
    if let Some(device_type) = req.device_type {
        fields.device_type = check_label("device_type", device_type)?;
    }
    if let Some(color) = req.theme_color {
        if !is_valid_theme_color(&color) {
            return Err(AppError::Invalid(
                "theme_color must look like #rrggbb.".into(),
            ));
        }
        fields.theme_color = color.to_ascii_lowercase();
    }
    if let Some(tags) = req.tags {
        fields.tags = check_tags(tags)?;
        let all = merge_tags(&fields.tags, &host.agent_tags);
        if all.len() > MAX_TAGS {
            return Err(AppError::Invalid(format!(
                "A host carries at most {MAX_TAGS} tags: these and the agent's own make {}.",
                all.len()
            )));
        }
    }
    if !core
        .db
        .set_host_fields(id, &fields)
        .await
        .or_internal("editing host")?
    {
        return Err(AppError::NotFound(format!("host {id}")));
    }
    core.hub
        .update_host(id, |h| {
            h.location = fields.location;
            h.device_type = fields.device_type;
            h.theme_color = fields.theme_color;
            h.tags = merge_tags(&fields.tags, &h.agent_tags);
        })
        .ok_or_else(|| AppError::NotFound(format!("host {id}")))
}

pub fn list(core: &Core, _viewer: &Viewer) -> Vec<Host> {
    core.hub.snapshot().hosts
}

/// The fleet as the hub sees it now: the dashboard's first render.
pub fn snapshot(core: &Core, _viewer: &Viewer) -> Snapshot {
    core.hub.snapshot()
}

/// A heartbeat from the agent link `conn_id` of `id`: live at once, stored with the next
/// batch. A heartbeat from a replaced link changes nothing.
pub fn heartbeat(core: &Core, id: &str, conn_id: u64, hb: &Heartbeat) {
    let cleaned = clean_heartbeat(hb);
    let hb = cleaned.as_ref().unwrap_or(hb);
    if let Some(now) = core.hub.heartbeat(id, conn_id, hb) {
        if let Some(metrics) = hb.metrics.as_ref().filter(|_| core.config.history) {
            core.unsaved.history.record(id, now.secs(), metrics);
        }
        core.unsaved.lock().seen.insert(
            id.to_owned(),
            SeenUpdate {
                host_id: id.to_owned(),
                last_seen: now,
                metrics: hb.metrics,
                generation: hb.generation.clone(),
                lock_hash: hb.lock_hash.clone(),
            },
        );
    }
}

/// `DELETE /api/hosts/{id}`: forget the host, revoke its token, close its agent.
pub async fn remove(core: &Core, viewer: &Viewer, id: &str) -> Result<()> {
    let result = forget(core, viewer, id).await;
    audit::record(core, viewer, "host.remove", Some(id), result).await
}

async fn forget(core: &Core, viewer: &Viewer, id: &str) -> Result<()> {
    require_admin(viewer)?;
    if !core.db.delete_host(id).await.or_internal("deleting host")? {
        return Err(AppError::NotFound(format!("host {id}")));
    }
    core.hub.remove_host(id);
    core.unsaved.forget(id);
    tracing::info!(host = id, by = viewer.username, "host removed");
    Ok(())
}

/// `POST /api/hosts/{id}/token`: a new token; the old one stops working at once.
pub async fn rotate_token(core: &Core, viewer: &Viewer, id: &str) -> Result<String> {
    let result = new_host_token(core, viewer, id).await;
    audit::record(core, viewer, "host.token", Some(id), result).await
}

async fn new_host_token(core: &Core, viewer: &Viewer, id: &str) -> Result<String> {
    require_admin(viewer)?;
    super::auth::require_recent_auth(core, viewer)?;
    let token = new_token();
    if !core
        .db
        .set_token_hash(id, &sha256_hex(&token))
        .await
        .or_internal("rotating token")?
    {
        return Err(AppError::NotFound(format!("host {id}")));
    }
    core.hub.revoke_agent(id, "token rotated");
    tracing::info!(host = id, by = viewer.username, "host token rotated");
    Ok(token)
}

/// Who an agent's bearer token speaks for.
#[derive(Clone, Debug, PartialEq)]
pub enum AgentIdentity {
    /// A host's own token, as checked after the hub's `token_checkpoint` (which the link
    /// hands to `Hub::attach_agent`, so a rotation in between still refuses it).
    Host { id: String, checkpoint: u64 },
    /// The enrollment token: may create a host that does not exist yet.
    Enrollment,
}

pub async fn authenticate_agent(core: &Core, token: &str) -> Result<AgentIdentity> {
    // Before the lookup: a rotation stores the new hash first and then revokes in the hub,
    // so either this lookup misses, or the attach sees the revocation.
    let checkpoint = core.hub.token_checkpoint();
    if let Some(id) = core
        .db
        .host_for_token(&sha256_hex(token))
        .await
        .or_internal("looking up agent token")?
    {
        return Ok(AgentIdentity::Host { id, checkpoint });
    }
    match &core.config.enroll_token {
        Some(enroll) if !enroll.is_empty() && constant_time_eq(enroll, token) => {
            if core
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
/// that exists already can never be taken over this way. The host waits for an admin's
/// approval (`approve`) before it gets commands, and the token creates at most
/// `NIXDECK_ENROLL_TOKEN_USES` hosts. Audited either way, from the agent's address.
pub async fn enroll(core: &Core, reg: &Register, ip: Option<&str>) -> Result<(String, String)> {
    let result = enroll_host(core, reg).await;
    audit::write(
        &core.db,
        "enrollment-token",
        ip,
        "host.enroll",
        Some(&reg.hostname),
        audit::outcome(&result),
        result.as_ref().err().map(|e| e.to_string()),
    )
    .await;
    result
}

/// Enrollments are counted one at a time, so two agents racing for the last use cannot
/// both get it, on one server or on several sharing the database. In one process they
/// queue on `ENROLLING`; on PostgreSQL the task at the head of that queue then takes the
/// lease `ENROLL_LOCK` (`service::lease::exclusive`), which a server that dies inside lets
/// go of after `ENROLL_LOCK_TTL`. The local queue comes first because every task polling
/// the lease itself ran a burst of thousands of enrollments out of database connections
/// and past the lease's wait (the 19 000-agent run in docs/BENCHMARKS.md); SQLite has one
/// server per database, so the queue alone suffices there.
static ENROLLING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const ENROLL_LOCK: &str = "lock:enroll";
const ENROLL_LOCK_TTL: std::time::Duration = std::time::Duration::from_secs(10);

/// The `settings` key counting hosts created with the current enrollment token.
const ENROLL_USES: &str = "enroll_token_uses";

async fn enroll_host(core: &Core, reg: &Register) -> Result<(String, String)> {
    let mut host = new_host(CreateHost {
        hostname: reg.hostname.clone(),
        host_type: reg.host_type,
        theme_color: reg.theme_color.clone(),
        location: reg.location.clone(),
        device_type: reg.device_type.clone(),
        tags: None,
    })?;
    host.pending_approval = true;
    let _turn = ENROLLING.lock().await;
    let token = if core.db.backend() == crate::storage::Backend::Postgres {
        super::lease::exclusive(core, ENROLL_LOCK, ENROLL_LOCK_TTL, count_use(core, &host))
            .await
            .or_internal("taking the enrollment lock")??
    } else {
        count_use(core, &host).await?
    };
    let id = host.id.clone();
    core.hub.add_host(host);
    tracing::info!(host = id, "host enrolled; waiting for approval");
    Ok((id, token))
}

/// Under `ENROLL_LOCK`: one more use of the enrollment token if it has one left; the new
/// host is stored, and its token returned.
async fn count_use(core: &Core, host: &Host) -> Result<String> {
    let token_hash = sha256_hex(core.config.enroll_token.as_deref().unwrap_or_default());
    let used = core
        .db
        .setting(ENROLL_USES)
        .await
        .or_internal("reading settings")?
        .and_then(|v| {
            let (hash, count) = v.split_once(':')?;
            (hash == token_hash).then(|| count.parse::<u64>().ok())?
        })
        .unwrap_or(0);
    let max = core.config.enroll_token_uses;
    if max > 0 && used >= max {
        tracing::warn!(
            host = host.id,
            "the enrollment token has no uses left ({used} of {max})"
        );
        return Err(AppError::Forbidden(format!(
            "the enrollment token has created {used} hosts, its limit"
        )));
    }
    let token = insert_with_token(core, host).await?;
    core.db
        .set_setting(ENROLL_USES, &format!("{token_hash}:{}", used + 1))
        .await
        .or_internal("writing settings")?;
    Ok(token)
}

/// `POST /api/hosts/{id}/approve`: an admin accepts a self-enrolled host; from now on it
/// takes commands like any other.
pub async fn approve(core: &Core, viewer: &Viewer, id: &str) -> Result<Host> {
    let result = approve_host(core, viewer, id).await;
    audit::record(core, viewer, "host.approve", Some(id), result).await
}

async fn approve_host(core: &Core, viewer: &Viewer, id: &str) -> Result<Host> {
    require_admin(viewer)?;
    if !core
        .db
        .approve_host(id)
        .await
        .or_internal("approving host")?
    {
        return Err(AppError::NotFound(format!("host {id}")));
    }
    tracing::info!(host = id, by = viewer.username, "host approved");
    core.hub
        .update_host(id, |h| h.pending_approval = false)
        .ok_or_else(|| AppError::NotFound(format!("host {id}")))
}

/// With replicas: a host added on another replica a moment ago may not have reached this
/// hub over the bus when its agent connects here. It is read from the database then, so
/// the link attaches to a known host. On one server the hub has every host already.
pub async fn ensure_in_hub(core: &Core, id: &str) {
    if !core.peers.active() || core.hub.contains(id) {
        return;
    }
    match core.db.host(id).await {
        Ok(Some(record)) => core.hub.add_host(record.host),
        Ok(None) => {}
        Err(e) => tracing::warn!(host = id, "loading host: {e}"),
    }
}

/// Queue what an agent reported at registration for the next batched write.
pub fn save_registration(core: &Core, id: &str, reg: &Register) {
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
        generations: reg.generations.clone(),
        reboot_needed: reg.reboot_needed,
        agent_tags: reg.tags.clone(),
    };
    core.unsaved
        .lock()
        .reports
        .insert(id.to_owned(), (report, Timestamp::now()));
}

/// A `status` frame: the agent's system/tests verdicts, and (after a switch, boot or
/// rollback) its generations and whether a reboot is needed. Those are live at once (a
/// `host_updated` to browsers) and written at once: they change rarely, and a registration
/// still waiting in the batch must not put older ones back, so it takes the new ones too.
pub async fn status(core: &Core, id: &str, mut report: StatusReport) {
    core.hub.report_checks(id, report.checks);
    if report.generations.is_none() && report.reboot_needed.is_none() {
        return;
    }
    if let Some(generations) = &mut report.generations {
        clean_generations(generations);
    }
    let (generations, reboot_needed) = (report.generations, report.reboot_needed);
    core.hub.update_host(id, |h| {
        if let Some(g) = &generations {
            h.generations = g.clone();
        }
        if let Some(r) = reboot_needed {
            h.reboot_needed = r;
        }
    });
    if let Some((waiting, _)) = core.unsaved.lock().reports.get_mut(id) {
        if generations.is_some() {
            waiting.generations = generations.clone();
        }
        if reboot_needed.is_some() {
            waiting.reboot_needed = reboot_needed;
        }
    }
    if let Err(e) = core
        .db
        .save_generations(id, generations.as_deref(), reboot_needed)
        .await
    {
        tracing::warn!(host = id, "saving generations: {e}");
    }
}

/// Write the batched registrations and heartbeats (every few seconds, when an agent
/// leaves, and at shutdown). Registrations first, so a newer last-seen wins. The metrics
/// history takes its finished minutes.
pub async fn flush_reports(core: &Core) {
    if let Err(e) = write_unsaved(core, false).await {
        tracing::warn!("{e}");
    }
}

/// The same write, failing loudly (at shutdown, where nothing accepted may be lost), with
/// the metrics of the unfinished minutes too.
pub async fn save_unsaved(core: &Core) -> Result<(), String> {
    write_unsaved(core, true).await
}

async fn write_unsaved(core: &Core, all_minutes: bool) -> Result<(), String> {
    let _writing = core.unsaved.writing.lock().await;
    super::history::write(core, Timestamp::now().secs(), all_minutes).await?;
    let (reports, seen) = core.unsaved.take();
    core.db
        .save_reports(&reports)
        .await
        .map_err(|e| format!("saving registrations: {e}"))?;
    core.db
        .save_seen(&seen)
        .await
        .map_err(|e| format!("saving last-seen: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::test_core;
    use crate::storage::testing::db_test;

    const HOSTILE: &str = "\u{1b}[31mred\u{1b}[0m \u{1b}]0;owned\u{7}title\u{1b}]8;;http://x\u{1b}\\link\u{1b}c\r\nnext\u{0}\u{7f}\u{9b}\u{202e}txt";

    /// A third party's answer becomes one clean line, whatever its length bound.
    #[test]
    fn foreign_line_spaces_line_breaks_and_drops_nul_and_escapes() {
        assert_eq!(
            foreign_line(
                "down\0 for \x1b[31mrepairs\x1b[0m\r\nback\tsoon",
                usize::MAX
            ),
            "down for repairs  back soon"
        );
        assert_eq!(foreign_line("abcdef", 3), "abc");
    }

    #[test]
    fn agent_text_drops_escapes_and_control_characters_and_bounds_the_length() {
        assert_eq!(agent_text(HOSTILE, 100), "red titlelinknexttxt");
        assert_eq!(agent_text(&"é".repeat(1000), 5), "ééééé");
        assert_eq!(
            agent_text(&format!("{}\u{1b}[1mabc", "a".repeat(3)), 4),
            "aaaa"
        );
        // Clean text is kept as it is, without a copy (the heartbeat's usual case).
        assert!(matches!(
            agent_text("NixOS 24.11 (Vicuna)", VERSION_CHARS),
            Cow::Borrowed("NixOS 24.11 (Vicuna)")
        ));
        // An escape cut off at the end of the text takes nothing else with it.
        assert_eq!(agent_text("ok\u{1b}[", 10), "ok");
        assert_eq!(agent_text("ok\u{1b}", 10), "ok");
    }

    fn hostile_register() -> Register {
        let long = "v".repeat(100_000);
        let text = |s: &str| Some(format!("{s}{HOSTILE}{long}"));
        serde_json::from_value(serde_json::json!({
            "hostname": "web-1", "host_type": "nixos",
            "agent_version": format!("0.1{HOSTILE}{long}"),
            "os_version": text("NixOS"), "nixpkgs_version": text("24.11"),
            "generation": text("abc"), "lock_hash": text("def"),
            "repo_url": text("https://git.example/repo"), "repo_dir": text("/etc/nixos"),
            "branch": text("main"), "location": text("rack 1"), "device_type": text("server"),
        }))
        .unwrap()
    }

    /// Every free-text field of a hostile `register` comes out bounded and without a
    /// control character; the hostname is left to its own check.
    #[test]
    fn a_hostile_registration_is_cleaned_field_by_field() {
        let mut reg = hostile_register();
        clean_register(&mut reg);
        let fields = [
            (
                "agent_version",
                Some(&reg.agent_version),
                VERSION_CHARS,
                "0.1",
            ),
            (
                "os_version",
                reg.os_version.as_ref(),
                VERSION_CHARS,
                "NixOS",
            ),
            (
                "nixpkgs_version",
                reg.nixpkgs_version.as_ref(),
                VERSION_CHARS,
                "24.11",
            ),
            ("generation", reg.generation.as_ref(), HASH_CHARS, "abc"),
            ("lock_hash", reg.lock_hash.as_ref(), HASH_CHARS, "def"),
            (
                "repo_url",
                reg.repo_url.as_ref(),
                PLACE_CHARS,
                "https://git.example/repo",
            ),
            ("repo_dir", reg.repo_dir.as_ref(), PLACE_CHARS, "/etc/nixos"),
            ("branch", reg.branch.as_ref(), PLACE_CHARS, "main"),
            ("location", reg.location.as_ref(), LABEL_CHARS, "rack 1"),
            (
                "device_type",
                reg.device_type.as_ref(),
                LABEL_CHARS,
                "server",
            ),
        ];
        for (name, value, max, start) in fields {
            let value = value.unwrap();
            assert_eq!(value.chars().count(), max, "{name}");
            assert!(!value.chars().any(unwanted), "{name}: {value:?}");
            assert!(
                value.starts_with(&format!("{start}red titlelinknexttxtvvv")),
                "{name}: {value:?}"
            );
        }
        assert_eq!(reg.hostname, "web-1");
        // What an enrollment makes of it passes the labels' own check.
        assert!(new_host(CreateHost {
            hostname: reg.hostname.clone(),
            host_type: reg.host_type,
            theme_color: None,
            location: reg.location.clone(),
            device_type: reg.device_type.clone(),
            tags: None,
        })
        .is_ok());
    }

    db_test! {
        /// A heartbeat's generation and lock hash reach the hub (and so every browser) and
        /// the batched write cleaned too.
        #[tokio::test]
        async fn a_hostile_heartbeat_reaches_the_hub_and_storage_cleaned(backend) {
            let dir = tempfile::tempdir().unwrap();
            let core = test_core(&backend, dir.path(), &["web-1"], &["nixdeck"]).await;
            let mut reg = hostile_register();
            clean_register(&mut reg);
            let link = core.hub.attach_agent("web-1", &reg, None).unwrap();
            let long = format!("{HOSTILE}{}", "g".repeat(100_000));
            let hb = Heartbeat {
                metrics: None,
                generation: Some(format!("new{long}")),
                lock_hash: Some(format!("lock{long}")),
                lock_updated_at: None,
                pending_command: None,
            };
            heartbeat(&core, "web-1", link.conn_id, &hb);
            let generation = core.hub.host("web-1").unwrap().generation.unwrap();
            assert_eq!(generation.chars().count(), HASH_CHARS);
            assert!(
                generation.starts_with("newred titlelinknexttxtggg"),
                "{generation:?}"
            );
            let unsaved = core.unsaved.lock();
            let seen = &unsaved.seen["web-1"];
            assert_eq!(seen.generation.as_ref(), Some(&generation));
            let lock = seen.lock_hash.as_deref().unwrap();
            assert_eq!(lock.chars().count(), HASH_CHARS);
            assert!(lock.starts_with("lockred titlelinknexttxtggg"), "{lock:?}");
        }
    }

    fn generation(number: u64, store_path: String, current: bool) -> Generation {
        Generation {
            number,
            created_at: Timestamp(number as i64),
            store_path,
            current,
            booted: false,
        }
    }

    db_test! {
        /// Generations from `register` and from `status` reach the hub (browsers) and the
        /// database: the newest 100 at most, store paths cleaned, an over-long one dropped.
        /// A status that reports none leaves them as they were.
        #[tokio::test]
        async fn reported_generations_are_bounded_cleaned_live_and_stored(backend) {
            let dir = tempfile::tempdir().unwrap();
            let core = test_core(&backend, dir.path(), &["web-1"], &["nixdeck"]).await;
            let mut reg = hostile_register();
            reg.generations = Some(vec![generation(7, "/nix/store/a-7".into(), true)]);
            reg.reboot_needed = Some(true);
            clean_register(&mut reg);
            core.db
                .insert_host(&Host::new("web-1", protocol::HostType::Nixos), "t")
                .await
                .unwrap();
            let _link = core.hub.attach_agent("web-1", &reg, None).unwrap();
            save_registration(&core, "web-1", &reg);
            let host = core.hub.host("web-1").unwrap();
            assert_eq!((host.generations.len(), host.reboot_needed), (1, true));

            // 150 generations, newest first, one with a hostile path and one far too long.
            let mut many: Vec<Generation> = (1..=150)
                .rev()
                .map(|n| generation(n, format!("/nix/store/g-{n}"), n == 150))
                .collect();
            many[0].store_path = format!("/nix/store/g-150{HOSTILE}");
            many[1].store_path = format!("/nix/store/{}", "x".repeat(600));
            let report = StatusReport {
                checks: Default::default(),
                generations: Some(many),
                reboot_needed: Some(false),
            };
            status(&core, "web-1", report).await;
            let host = core.hub.host("web-1").unwrap();
            let numbers: Vec<u64> = host.generations.iter().map(|g| g.number).collect();
            let expected: Vec<u64> = (51..=150).filter(|n| *n != 149).collect();
            assert_eq!(
                numbers, expected,
                "the newest 100, oldest first, without 149"
            );
            let newest = host.generations.last().unwrap();
            assert_eq!(newest.store_path, "/nix/store/g-150red titlelinknexttxt");
            assert!(newest.current);
            assert!(!host.reboot_needed);
            // The registration still waiting for its batch takes the newer report, so the
            // batch cannot put the older generations back.
            flush_reports(&core).await;
            let stored = core.db.host("web-1").await.unwrap().unwrap().host;
            assert_eq!(stored.generations, host.generations);
            assert!(!stored.reboot_needed);

            // A status without generations changes none of it.
            status(
                &core,
                "web-1",
                StatusReport {
                    checks: Default::default(),
                    generations: None,
                    reboot_needed: None,
                },
            )
            .await;
            assert_eq!(
                core.hub.host("web-1").unwrap().generations,
                host.generations
            );
            assert_eq!(
                core.db
                    .host("web-1")
                    .await
                    .unwrap()
                    .unwrap()
                    .host
                    .generations,
                host.generations
            );
        }
    }
}
