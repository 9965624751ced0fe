//! REST handlers: each parses its request, calls one service function, and shapes the reply.

use super::error::{HttpResult, JsonBody};
use super::session::{clear_cookie, session_cookie, set_cookie, BearerToken, ClientIp};
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Json};
use common::AppError;
use common::Viewer;
use nixdeck_core::service;
use nixdeck_core::Core;
use protocol::api::{
    AgentToken, ApiError, ApiTokenCreated, ApiTokenInfo, AuditEntry, BulkRequest, BulkResponse,
    CommandAccepted, CommandDetail, CommandRecord, CommandRequest, CreateApiToken, CreateHost,
    DeployRecord, DeployRequest, Health, HostCreated, HostEdit, JobAccepted, LoginRequest,
    LoginResponse, MetricsHistory, ReauthRequest, RecoveryCodes, RefreshResult, SessionInfo,
    ThemeSetting, TotpConfirm, TotpSetup, TotpSetupRequest,
};
use protocol::api::{
    CreateNotifyRule, CreateNotifyTarget, NotifyDelivery, NotifyRule, NotifyTarget,
};
use protocol::messages::{DeployProgress, HostRef};
use protocol::{DesiredState, Host, PendingPr};

#[utoipa::path(
    get, path = "/healthz", tag = "server", security(()),
    responses(
        (status = 200, description = "The database answers", body = Health),
        (status = 503, description = "The database does not answer", body = Health),
    )
)]
pub async fn healthz(State(app): State<Core>) -> Response {
    match app.db.ping().await {
        Ok(()) => Json(Health {
            status: "ok".into(),
        })
        .into_response(),
        Err(e) => {
            tracing::error!("health check: database: {e}");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(Health {
                    status: "unavailable".into(),
                }),
            )
                .into_response()
        }
    }
}

/// `POST /api/login`, JSON or form. A form that names a `next` page gets a redirect there
/// (the no-JavaScript login page); everyone else gets `{csrf_token}`.
#[utoipa::path(
    post, path = "/api/login", tag = "session", security(()),
    description = "Log in. JSON or a form; a form naming a same-site `next` page is redirected there (303). Needs no CSRF token, but a same-site `Origin`.",
    request_body(content(
        (LoginRequest = "application/json"),
        (LoginRequest = "application/x-www-form-urlencoded"),
    )),
    responses(
        (status = 200, description = "Logged in; the session cookie is set", body = LoginResponse,
         headers(("Set-Cookie" = String, description = "The session cookie"))),
        (status = 303, description = "A form login with `next`: logged in, go there"),
        (status = 401, description = "Unknown user, wrong password (the same answer), or `totp_required`", body = ApiError),
        (status = 403, description = "A cross-site request", body = ApiError),
        (status = 422, description = "A body that is not a login", body = ApiError),
        (status = 429, description = "Too many failed logins; see Retry-After", body = ApiError),
        (status = 503, description = "Every password check slot is busy; see Retry-After", body = ApiError),
    )
)]
pub async fn login(
    State(app): State<Core>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    headers: HeaderMap,
    body: Bytes,
) -> HttpResult<Response> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let req: LoginRequest = if is_json {
        serde_json::from_slice(&body)
            .map_err(|e| AppError::Invalid(format!("Invalid login request: {e}")))?
    } else {
        serde_urlencoded::from_bytes(&body)
            .map_err(|e| AppError::Invalid(format!("Invalid login form: {e}")))?
    };
    let session =
        service::auth::login(&app, &req.username, &req.password, req.totp.as_deref(), ip).await?;
    let cookie = set_cookie(
        &session.cookie_value,
        app.config.session_max_h * 3600,
        app.config.secure(),
    );
    let next = req.next.filter(|n| is_local_path(n));
    let mut resp = match next {
        Some(path) => Redirect::to(&path).into_response(),
        None => Json(LoginResponse {
            csrf_token: session.csrf_token,
            role: session.role,
            theme: session.theme,
        })
        .into_response(),
    };
    if let Ok(v) = cookie.parse() {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(resp)
}

#[utoipa::path(
    post, path = "/api/logout", tag = "session",
    responses((status = 204, description = "The session is deleted on the server and the cookie cleared"))
)]
pub async fn logout(
    State(app): State<Core>,
    bearer: Option<Extension<BearerToken>>,
    headers: HeaderMap,
) -> HttpResult<Response> {
    // A request with a token never acts on a cookie that came along with it.
    if let Some(cookie) = session_cookie(&headers, app.config.secure()).filter(|_| bearer.is_none())
    {
        service::auth::logout(&app, &cookie).await?;
    }
    let mut resp = StatusCode::NO_CONTENT.into_response();
    if let Ok(v) = clear_cookie(app.config.secure()).parse() {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(resp)
}

#[utoipa::path(
    get, path = "/api/session", tag = "session",
    responses((status = 200, description = "Who is logged in", body = SessionInfo))
)]
pub async fn session(Extension(viewer): Extension<Viewer>) -> Json<SessionInfo> {
    Json(SessionInfo {
        username: viewer.username,
        csrf_token: viewer.csrf_token,
    })
}

#[utoipa::path(
    get, path = "/api/hosts", tag = "hosts",
    responses((status = 200, description = "Every host", body = Vec<Host>))
)]
pub async fn list_hosts(
    State(app): State<Core>,
    Extension(viewer): Extension<Viewer>,
) -> Json<Vec<Host>> {
    Json(service::hosts::list(&app, &viewer))
}

#[utoipa::path(
    post, path = "/api/hosts", tag = "hosts", description = "Admin.",
    request_body = CreateHost,
    responses(
        (status = 201, description = "The host and its agent token (shown once)", body = HostCreated),
        (status = 409, description = "A host with this id exists (`exists`)", body = ApiError),
    )
)]
pub async fn create_host(
    State(app): State<Core>,
    Extension(viewer): Extension<Viewer>,
    JsonBody(req): JsonBody<CreateHost>,
) -> HttpResult<(StatusCode, Json<HostCreated>)> {
    let created = service::hosts::create(&app, &viewer, req).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

#[utoipa::path(
    patch, path = "/api/hosts/{id}", tag = "hosts",
    description = "Operator. Changes the fields given (an empty or null location or device type clears it); `tags` replaces the tags set in the dashboard, the agent's own stay.",
    params(("id" = String, Path, description = "Host id (the lower-cased hostname)")),
    request_body = HostEdit,
    responses(
        (status = 200, description = "The host as it is now", body = Host),
        (status = 404, description = "No such host", body = ApiError),
    )
)]
/// `PATCH /api/hosts/{id}`: location, device type, colour, tags.
pub async fn edit_host(
    State(app): State<Core>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<HostEdit>,
) -> HttpResult<Json<Host>> {
    Ok(Json(service::hosts::edit(&app, &viewer, &id, req).await?))
}

#[utoipa::path(
    delete, path = "/api/hosts/{id}", tag = "hosts", description = "Admin. Revokes the host's token and closes its agent's socket.",
    params(("id" = String, Path, description = "Host id (the lower-cased hostname)")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such host", body = ApiError),
    )
)]
pub async fn delete_host(
    State(app): State<Core>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
) -> HttpResult<StatusCode> {
    service::hosts::remove(&app, &viewer, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Addition: an admin approves a host that enrolled itself.
#[utoipa::path(
    post, path = "/api/hosts/{id}/approve", tag = "hosts", description = "Admin: approve a host that enrolled itself.",
    params(("id" = String, Path, description = "Host id (the lower-cased hostname)")),
    responses(
        (status = 200, description = "The approved host", body = Host),
        (status = 404, description = "No such host", body = ApiError),
        (status = 409, description = "Not waiting for approval", body = ApiError),
    )
)]
pub async fn approve_host(
    State(app): State<Core>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
) -> HttpResult<Json<Host>> {
    Ok(Json(service::hosts::approve(&app, &viewer, &id).await?))
}

#[utoipa::path(
    post, path = "/api/hosts/{id}/token", tag = "hosts", description = "Admin. The old token stops working at once.",
    params(("id" = String, Path, description = "Host id (the lower-cased hostname)")),
    responses(
        (status = 200, description = "The new agent token (shown once)", body = AgentToken),
        (status = 404, description = "No such host", body = ApiError),
    )
)]
pub async fn rotate_token(
    State(app): State<Core>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
) -> HttpResult<Json<AgentToken>> {
    let agent_token = service::hosts::rotate_token(&app, &viewer, &id).await?;
    Ok(Json(AgentToken { agent_token }))
}

#[utoipa::path(
    post, path = "/api/hosts/{id}/refresh", tag = "hosts",
    params(("id" = String, Path, description = "Host id (the lower-cased hostname)")),
    responses(
        (status = 200, description = "The host's state, fresh from the database and the desired-state source", body = RefreshResult),
        (status = 404, description = "No such host", body = ApiError),
    )
)]
pub async fn refresh_host(
    State(app): State<Core>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
) -> HttpResult<Json<RefreshResult>> {
    Ok(Json(service::hosts::refresh(&app, &viewer, &id).await?))
}

#[utoipa::path(
    post, path = "/api/hosts/{id}/commands", tag = "commands", description = "Operator.",
    params(("id" = String, Path, description = "Host id (the lower-cased hostname)")),
    request_body = CommandRequest,
    responses(
        (status = 202, description = "Queued", body = CommandAccepted),
        (status = 404, description = "No such host, or no such preview", body = ApiError),
        (status = 409, description = "`offline`, `busy` or `pending_approval`", body = ApiError),
    )
)]
pub async fn run_command(
    State(app): State<Core>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<CommandRequest>,
) -> HttpResult<(StatusCode, Json<CommandAccepted>)> {
    let kind = service::commands::parse_kind(&req.command)?;
    let options = service::commands::RunOptions {
        generation: req.generation,
        preview_id: req.preview_id,
        rev: None,
    };
    let command_id = service::commands::run(&app, &viewer, &id, kind, options).await?;
    Ok((StatusCode::ACCEPTED, Json(CommandAccepted { command_id })))
}

/// Addition: one command with its result.
#[utoipa::path(
    get, path = "/api/commands/{id}", tag = "commands",
    params(("id" = String, Path, description = "Command id")),
    responses(
        (status = 200, description = "The command with its result", body = CommandDetail),
        (status = 404, description = "No such command", body = ApiError),
    )
)]
pub async fn command_detail(
    State(app): State<Core>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
) -> HttpResult<Json<CommandDetail>> {
    Ok(Json(service::commands::detail(&app, &viewer, &id).await?))
}

#[utoipa::path(
    post, path = "/api/hosts/{id}/stop", tag = "commands", description = "Operator: SIGTERM to the running command's process group, SIGKILL 5 s later.",
    params(("id" = String, Path, description = "Host id (the lower-cased hostname)")),
    responses(
        (status = 202, description = "The stop is sent", body = CommandAccepted),
        (status = 404, description = "No such host", body = ApiError),
        (status = 409, description = "Nothing runs (`idle`)", body = ApiError),
    )
)]
pub async fn stop_command(
    State(app): State<Core>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
) -> HttpResult<(StatusCode, Json<CommandAccepted>)> {
    let command_id = service::commands::stop(&app, &viewer, &id).await?;
    Ok((StatusCode::ACCEPTED, Json(CommandAccepted { command_id })))
}

#[utoipa::path(
    post, path = "/api/hosts/{id}/unlock", tag = "commands", description = "Operator: a stuck pending command is marked `abandoned`.",
    params(("id" = String, Path, description = "Host id (the lower-cased hostname)")),
    responses(
        (status = 200, description = "Unlocked", body = HostRef),
        (status = 404, description = "No such host", body = ApiError),
    )
)]
pub async fn unlock_host(
    State(app): State<Core>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
) -> HttpResult<Json<HostRef>> {
    service::commands::unlock(&app, &viewer, &id).await?;
    Ok(Json(HostRef { host_id: id }))
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// At most this many (default 20).
    limit: Option<u32>,
}

#[utoipa::path(
    get, path = "/api/hosts/{id}/commands", tag = "commands",
    params(("id" = String, Path, description = "Host id (the lower-cased hostname)"), HistoryQuery),
    responses(
        (status = 200, description = "The host's commands, newest first", body = Vec<CommandRecord>),
        (status = 404, description = "No such host", body = ApiError),
    )
)]
pub async fn command_history(
    State(app): State<Core>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> HttpResult<Json<Vec<CommandRecord>>> {
    let rows = service::commands::history(&app, &viewer, &id, q.limit.unwrap_or(20)).await?;
    Ok(Json(rows))
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MetricsQuery {
    /// `1h`, `24h`, `7d`, `30d` or `1y`; anything else is a 422.
    range: Option<String>,
}

#[utoipa::path(
    get, path = "/api/hosts/{id}/metrics", tag = "hosts",
    description = "Viewer. The host's heartbeat metrics over the range, oldest first: the average of each step (1h: 1 minute, 24h and 7d: 10 minutes, 30d: 1 hour, 1y: 1 day), up to the current minute. Steps without a heartbeat have no point.",
    params(("id" = String, Path, description = "Host id (the lower-cased hostname)"), MetricsQuery),
    responses(
        (status = 200, description = "The points", body = MetricsHistory),
        (status = 404, description = "No such host", body = ApiError),
        (status = 422, description = "Not one of the five ranges", body = ApiError),
    )
)]
pub async fn host_metrics(
    State(app): State<Core>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
    Query(q): Query<MetricsQuery>,
) -> HttpResult<Json<MetricsHistory>> {
    let history = service::history::read(&app, &viewer, &id, q.range.as_deref()).await?;
    Ok(Json(history))
}

#[utoipa::path(
    get, path = "/api/commands/{id}/log", tag = "commands",
    params(("id" = String, Path, description = "Command id")),
    responses(
        (status = 200, description = "An attachment, one line per output line: `[HH:MM:SS] line`, stderr as `[HH:MM:SS] [ERR] line`",
         content_type = "text/plain; charset=utf-8", body = String,
         headers(("Content-Disposition" = String, description = "attachment; filename=…"))),
        (status = 404, description = "No such command", body = ApiError),
    )
)]
pub async fn command_log(
    State(app): State<Core>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
) -> HttpResult<Response> {
    let (name, pages) = service::commands::log_download(&app, &viewer, &id).await?;
    // The name is built from a validated host id, a command name and a number.
    let disposition = format!("attachment; filename=\"{name}\"");
    // Streamed page by page: a page is read from the database only when the previous one
    // was taken by the connection. A failed read ends the body with an error, so the
    // client sees a broken download rather than a log that looks complete.
    let body = Body::from_stream(futures::stream::try_unfold(pages, |mut pages| async move {
        Ok::<_, AppError>(pages.next_page().await?.map(|text| (text, pages)))
    }));
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8".to_owned()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response())
}

#[utoipa::path(
    post, path = "/api/bulk", tag = "commands", description = "Operator: one command on many hosts (`host_ids: null`: every online host).",
    request_body = BulkRequest,
    responses((status = 200, description = "One result per host", body = BulkResponse))
)]
pub async fn bulk(
    State(app): State<Core>,
    Extension(viewer): Extension<Viewer>,
    JsonBody(req): JsonBody<BulkRequest>,
) -> HttpResult<Json<BulkResponse>> {
    let kind = service::commands::parse_kind(&req.command)?;
    let results = service::commands::bulk(&app, &viewer, kind, req.host_ids, req.tags).await?;
    Ok(Json(BulkResponse { results }))
}

/// Addition: the desired state as the dashboard last read it (null: not configured).
#[utoipa::path(
    get, path = "/api/desired", tag = "deploy",
    responses((status = 200, description = "The desired state as last read (null: no source configured)", body = Option<DesiredState>))
)]
pub async fn desired(State(app): State<Core>) -> Json<Option<DesiredState>> {
    Json(app.hub.desired())
}

#[utoipa::path(
    get, path = "/api/pending-pr", tag = "deploy",
    responses((status = 200, description = "The open flake.lock PR, or null", body = Option<PendingPr>))
)]
pub async fn pending_pr(State(app): State<Core>) -> Json<Option<PendingPr>> {
    Json(app.hub.pending_pr())
}

/// Addition: look for the flake.lock PR now ("check now").
#[utoipa::path(
    post, path = "/api/pending-pr/check", tag = "deploy", description = "Operator: look for the flake.lock PR now.",
    responses(
        (status = 200, description = "The open flake.lock PR, or null", body = Option<PendingPr>),
        (status = 502, description = "GitHub could not be asked", body = ApiError),
    )
)]
pub async fn check_pr(
    State(app): State<Core>,
    Extension(viewer): Extension<Viewer>,
) -> HttpResult<Json<Option<PendingPr>>> {
    Ok(Json(service::deploy::check_pr(&app, &viewer).await?))
}

#[utoipa::path(
    post, path = "/api/deploy", tag = "deploy", description = "Operator, with a recent login or re-authentication: merge the PR, then pull and switch the hosts; progress as `deploy_progress`.",
    request_body = DeployRequest,
    responses(
        (status = 202, description = "Started", body = JobAccepted),
        (status = 404, description = "No such PR, or an unknown host", body = ApiError),
        (status = 409, description = "A deploy runs (`deploy_running`), the PR moved (`head_moved`), …", body = ApiError),
        (status = 502, description = "GitHub refused or could not be reached", body = ApiError),
    )
)]
pub async fn deploy(
    State(app): State<Core>,
    Extension(viewer): Extension<Viewer>,
    JsonBody(req): JsonBody<DeployRequest>,
) -> HttpResult<(StatusCode, Json<JobAccepted>)> {
    let job_id = service::deploy::start(&app, &viewer, req).await?;
    Ok((StatusCode::ACCEPTED, Json(JobAccepted { job_id })))
}

/// Addition: the state of a deploy job.
#[utoipa::path(
    get, path = "/api/deploy/{id}", tag = "deploy",
    params(("id" = String, Path, description = "Deploy job id")),
    responses(
        (status = 200, description = "The job's progress", body = DeployProgress),
        (status = 404, description = "No such job", body = ApiError),
    )
)]
pub async fn deploy_status(
    State(app): State<Core>,
    Path(id): Path<String>,
) -> HttpResult<Json<DeployProgress>> {
    Ok(Json(service::deploy::status(&app, &id).await?))
}

/// Addition: past and running deploys, newest first, with the commands each started.
#[utoipa::path(
    get, path = "/api/deploys", tag = "deploy",
    params(HistoryQuery),
    responses(
        (status = 200, description = "Deploy jobs, newest first, each with its hosts' commands", body = Vec<DeployRecord>),
    )
)]
pub async fn deploy_history(
    State(app): State<Core>,
    Extension(viewer): Extension<Viewer>,
    Query(q): Query<HistoryQuery>,
) -> HttpResult<Json<Vec<DeployRecord>>> {
    Ok(Json(
        service::deploy::history(&app, &viewer, q.limit.unwrap_or(20)).await?,
    ))
}

/// Addition: a deploy that previewed first merges and rolls out (202 {job_id} once GitHub
/// merged; the rollout follows as `deploy_progress`).
#[utoipa::path(
    post, path = "/api/deploy/{id}/confirm", tag = "deploy", description = "Operator, with a recent login: merge and roll out a deploy that previewed first.",
    params(("id" = String, Path, description = "Deploy job id")),
    responses(
        (status = 202, description = "Merged; the rollout follows as `deploy_progress`", body = JobAccepted),
        (status = 404, description = "No such job", body = ApiError),
        (status = 409, description = "`not_awaiting`, `head_moved`, `owner_unreachable` (the server running the job did not answer), …", body = ApiError),
        (status = 502, description = "GitHub refused or could not be reached", body = ApiError),
    )
)]
pub async fn deploy_confirm(
    State(app): State<Core>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
) -> HttpResult<(StatusCode, Json<JobAccepted>)> {
    service::deploy::confirm(&app, &viewer, &id).await?;
    Ok((StatusCode::ACCEPTED, Json(JobAccepted { job_id: id })))
}

/// Addition: stop launching new steps of a deploy.
#[utoipa::path(
    post, path = "/api/deploy/{id}/cancel", tag = "deploy", description = "Operator: launch no new steps.",
    params(("id" = String, Path, description = "Deploy job id")),
    responses(
        (status = 202, description = "Cancelling"),
        (status = 404, description = "No such job", body = ApiError),
        (status = 409, description = "The job has ended (`finished`), or the server running it did not answer (`owner_unreachable`)", body = ApiError),
    )
)]
pub async fn deploy_cancel(
    State(app): State<Core>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
) -> HttpResult<StatusCode> {
    service::deploy::cancel(&app, &viewer, &id).await?;
    Ok(StatusCode::ACCEPTED)
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only this user's entries.
    actor: Option<String>,
    /// Only this action (`deploy.start`, `user.add`, …).
    action: Option<String>,
    /// Only entries about this target (a host id, a user name, …).
    target: Option<String>,
    /// At most this many (default 100).
    limit: Option<u32>,
}

#[utoipa::path(
    get, path = "/api/audit", tag = "audit", description = "Admin.",
    params(AuditQuery),
    responses((status = 200, description = "Audit entries, newest first", body = Vec<AuditEntry>))
)]
pub async fn audit(
    State(app): State<Core>,
    Extension(viewer): Extension<Viewer>,
    Query(q): Query<AuditQuery>,
) -> HttpResult<Json<Vec<AuditEntry>>> {
    let filter = nixdeck_core::storage::AuditFilter {
        actor: q.actor,
        action: q.action,
        target: q.target,
        limit: q.limit.unwrap_or(100),
    };
    Ok(Json(service::audit::read(&app, &viewer, filter).await?))
}

/// Addition: prove who you are again (password, and the code with 2FA) before token
/// rotation, user management or Merge & Deploy, when the login is older than
/// `NIXDECK_REAUTH_WINDOW_S`.
#[utoipa::path(
    post, path = "/api/account/reauth", tag = "account", description = "Prove who you are again before token rotation, user management or a deploy.",
    request_body = ReauthRequest,
    responses(
        (status = 204, description = "Confirmed"),
        (status = 429, description = "Too many failed attempts; see Retry-After", body = ApiError),
        (status = 503, description = "Every password check slot is busy; see Retry-After", body = ApiError),
    )
)]
pub async fn reauth(
    State(app): State<Core>,
    Extension(viewer): Extension<Viewer>,
    JsonBody(req): JsonBody<ReauthRequest>,
) -> HttpResult<StatusCode> {
    service::auth::reauthenticate(&app, &viewer, &req.password, req.totp.as_deref()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Addition: keep the user's colour theme (`system` follows the browser's
/// `prefers-color-scheme`); every page the user opens afterwards is rendered with it.
#[utoipa::path(
    put, path = "/api/account/theme", tag = "account", description = "Keep your colour theme for the pages: system, light or dark.",
    request_body = ThemeSetting,
    responses(
        (status = 200, description = "Kept", body = ThemeSetting),
        (status = 422, description = "Not a theme", body = ApiError),
    )
)]
pub async fn set_theme(
    State(app): State<Core>,
    Extension(viewer): Extension<Viewer>,
    JsonBody(req): JsonBody<ThemeSetting>,
) -> HttpResult<Json<ThemeSetting>> {
    let theme = service::users::set_theme(&app, &viewer, req.theme).await?;
    Ok(Json(ThemeSetting { theme }))
}

/// `POST /api/account/totp/setup`: `{password, code?}` as JSON (`code` is needed while
/// TOTP is on: a current code or a recovery code). A request without a body, as the route
/// had before, reads as one without a password and is refused for it (422).
#[utoipa::path(
    post, path = "/api/account/totp/setup", tag = "account", description = "Start TOTP enrollment (`code` is needed while TOTP is on).",
    request_body(content = TotpSetupRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The secret and its QR code", body = TotpSetup),
        (status = 429, description = "Too many failed attempts; see Retry-After", body = ApiError),
        (status = 503, description = "Every password check slot is busy; see Retry-After", body = ApiError),
    )
)]
pub async fn totp_setup(
    State(app): State<Core>,
    Extension(viewer): Extension<Viewer>,
    body: Bytes,
) -> HttpResult<Json<TotpSetup>> {
    let req: TotpSetupRequest = if body.iter().all(u8::is_ascii_whitespace) {
        TotpSetupRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| AppError::Invalid(format!("Invalid setup request: {e}")))?
    };
    let setup = service::totp::setup(&app, &viewer, &req.password, req.code.as_deref()).await?;
    Ok(Json(setup))
}

#[utoipa::path(
    post, path = "/api/account/totp/confirm", tag = "account",
    request_body = TotpConfirm,
    responses(
        (status = 200, description = "TOTP is on; the recovery codes, shown once", body = RecoveryCodes),
        (status = 429, description = "Too many failed attempts; see Retry-After", body = ApiError),
    )
)]
pub async fn totp_confirm(
    State(app): State<Core>,
    Extension(viewer): Extension<Viewer>,
    JsonBody(req): JsonBody<TotpConfirm>,
) -> HttpResult<Json<RecoveryCodes>> {
    Ok(Json(
        service::totp::confirm(&app, &viewer, &req.code).await?,
    ))
}

/// Whether a login's `next` is a path of this site and nothing else. Browsers drop tabs and
/// newlines from URLs and read `\\` as `/`, so `/\t/evil.example` or `/\\evil.example` would
/// lead to another site: any whitespace, control character or backslash is refused.
fn is_local_path(next: &str) -> bool {
    next.starts_with('/')
        && !next.starts_with("//")
        && !next
            .chars()
            .any(|c| c == '\\' || c.is_whitespace() || c.is_control())
}

/// Unknown `/api` paths answer in JSON too.
pub async fn not_found() -> Response {
    super::error::error_response(&AppError::NotFound("no such API route".into()))
}

/// Addition: `POST /api/tokens` → 201 `{id, token}`, the token shown this once.
#[utoipa::path(
    post, path = "/api/tokens", tag = "tokens",
    description = "A personal API token for the caller, with a role no higher than the caller's. Needs a logged-in person (a token cannot make tokens).",
    request_body = CreateApiToken,
    responses(
        (status = 201, description = "The token, shown this once", body = ApiTokenCreated),
        (status = 409, description = "The caller has a token of that name", body = ApiError),
    )
)]
pub async fn create_api_token(
    State(app): State<Core>,
    Extension(viewer): Extension<Viewer>,
    JsonBody(req): JsonBody<CreateApiToken>,
) -> HttpResult<(StatusCode, Json<ApiTokenCreated>)> {
    let created = service::tokens::create(&app, &viewer, req).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TokensQuery {
    /// Admins only: everyone's tokens.
    #[serde(default)]
    all: bool,
}

/// Addition: `GET /api/tokens[?all=true]`.
#[utoipa::path(
    get, path = "/api/tokens", tag = "tokens",
    description = "The caller's tokens (never the tokens themselves); `all=true` (admins): everyone's.",
    params(TokensQuery),
    responses((status = 200, description = "Tokens, newest first", body = Vec<ApiTokenInfo>))
)]
pub async fn list_api_tokens(
    State(app): State<Core>,
    Extension(viewer): Extension<Viewer>,
    Query(q): Query<TokensQuery>,
) -> HttpResult<Json<Vec<ApiTokenInfo>>> {
    Ok(Json(service::tokens::list(&app, &viewer, q.all).await?))
}

/// Addition: `DELETE /api/tokens/{id}` → 204; the token stops working at once.
#[utoipa::path(
    delete, path = "/api/tokens/{id}", tag = "tokens",
    description = "One's own token, or anyone's for an admin.",
    params(("id" = String, Path, description = "Token id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "No such token of the caller's", body = ApiError),
    )
)]
pub async fn revoke_api_token(
    State(app): State<Core>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
) -> HttpResult<StatusCode> {
    service::tokens::revoke(&app, &viewer, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Addition: `POST /api/notifications/targets` → 201 (the contract's route).
#[utoipa::path(
    post, path = "/api/notifications/targets", tag = "notifications",
    description = "Admin. A notification target; its URL, token and password are sealed and never shown again.",
    request_body = CreateNotifyTarget,
    responses(
        (status = 201, description = "The target (URL shortened, no secrets)", body = NotifyTarget),
        (status = 409, description = "A target of that name exists", body = ApiError),
    )
)]
pub async fn create_notify_target(
    State(app): State<Core>,
    Extension(viewer): Extension<Viewer>,
    JsonBody(req): JsonBody<CreateNotifyTarget>,
) -> HttpResult<(StatusCode, Json<NotifyTarget>)> {
    let target = service::notify::create_target(&app, &viewer, req).await?;
    Ok((StatusCode::CREATED, Json(target)))
}

#[utoipa::path(
    get, path = "/api/notifications/targets", tag = "notifications",
    description = "Admin. Every target, without secrets.",
    responses((status = 200, description = "Targets, oldest first", body = Vec<NotifyTarget>))
)]
pub async fn list_notify_targets(
    State(app): State<Core>,
    Extension(viewer): Extension<Viewer>,
) -> HttpResult<Json<Vec<NotifyTarget>>> {
    Ok(Json(service::notify::list_targets(&app, &viewer).await?))
}

#[utoipa::path(
    delete, path = "/api/notifications/targets/{id}", tag = "notifications",
    description = "Admin. The target, its queued messages and its log.",
    params(("id" = String, Path, description = "Target id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such target", body = ApiError),
    )
)]
pub async fn delete_notify_target(
    State(app): State<Core>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
) -> HttpResult<StatusCode> {
    service::notify::delete_target(&app, &viewer, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct TestQueued {
    /// The test message's key, as its delivery log shows it.
    pub idempotency_key: String,
}

#[utoipa::path(
    post, path = "/api/notifications/targets/{id}/test", tag = "notifications",
    description = "Admin. Queue a test message; its delivery shows in the target's log.",
    params(("id" = String, Path, description = "Target id")),
    responses(
        (status = 202, description = "Queued", body = TestQueued),
        (status = 404, description = "No such target", body = ApiError),
    )
)]
pub async fn test_notify_target(
    State(app): State<Core>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
) -> HttpResult<(StatusCode, Json<TestQueued>)> {
    let idempotency_key = service::notify::test_target(&app, &viewer, &id).await?;
    Ok((StatusCode::ACCEPTED, Json(TestQueued { idempotency_key })))
}

#[utoipa::path(
    get, path = "/api/notifications/targets/{id}/deliveries", tag = "notifications",
    description = "Admin. The target's last 100 delivery attempts, newest first.",
    params(("id" = String, Path, description = "Target id")),
    responses(
        (status = 200, description = "Attempts", body = Vec<NotifyDelivery>),
        (status = 404, description = "No such target", body = ApiError),
    )
)]
pub async fn notify_deliveries(
    State(app): State<Core>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
) -> HttpResult<Json<Vec<NotifyDelivery>>> {
    Ok(Json(service::notify::deliveries(&app, &viewer, &id).await?))
}

#[utoipa::path(
    post, path = "/api/notifications/rules", tag = "notifications",
    description = "Admin. A rule: an event, its scope and delay, and the targets to tell.",
    request_body = CreateNotifyRule,
    responses((status = 201, description = "The rule", body = NotifyRule))
)]
pub async fn create_notify_rule(
    State(app): State<Core>,
    Extension(viewer): Extension<Viewer>,
    JsonBody(req): JsonBody<CreateNotifyRule>,
) -> HttpResult<(StatusCode, Json<NotifyRule>)> {
    let rule = service::notify::create_rule(&app, &viewer, req).await?;
    Ok((StatusCode::CREATED, Json(rule)))
}

#[utoipa::path(
    get, path = "/api/notifications/rules", tag = "notifications",
    description = "Admin. Every rule.",
    responses((status = 200, description = "Rules, oldest first", body = Vec<NotifyRule>))
)]
pub async fn list_notify_rules(
    State(app): State<Core>,
    Extension(viewer): Extension<Viewer>,
) -> HttpResult<Json<Vec<NotifyRule>>> {
    Ok(Json(service::notify::list_rules(&app, &viewer).await?))
}

#[utoipa::path(
    delete, path = "/api/notifications/rules/{id}", tag = "notifications",
    description = "Admin.",
    params(("id" = String, Path, description = "Rule id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such rule", body = ApiError),
    )
)]
pub async fn delete_notify_rule(
    State(app): State<Core>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
) -> HttpResult<StatusCode> {
    service::notify::delete_rule(&app, &viewer, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::is_local_path;

    #[test]
    fn login_redirects_stay_on_this_site() {
        for ok in ["/", "/account", "/hosts/web-1?tab=log"] {
            assert!(is_local_path(ok), "{ok}");
        }
        for evil in [
            "//evil.example",
            "/\\evil.example",
            "/\t/evil.example",
            "/\n/evil.example",
            "/ /evil.example",
            "/\u{0}x",
            "https://evil.example",
            "evil",
            "",
        ] {
            assert!(!is_local_path(evil), "{evil:?}");
        }
    }
}
