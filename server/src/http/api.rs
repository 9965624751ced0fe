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
    AgentToken, ApiTokenCreated, ApiTokenInfo, AuditEntry, BulkRequest, BulkResponse,
    CommandAccepted, CommandDetail, CommandRecord, CommandRequest, CreateApiToken, CreateHost,
    DeployRequest, Health, HostCreated, JobAccepted, LoginRequest, LoginResponse, ReauthRequest,
    RecoveryCodes, RefreshResult, SessionInfo, TotpConfirm, TotpSetup, TotpSetupRequest,
};
use protocol::Host;

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
        })
        .into_response(),
    };
    if let Ok(v) = cookie.parse() {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(resp)
}

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

pub async fn session(Extension(viewer): Extension<Viewer>) -> Json<SessionInfo> {
    Json(SessionInfo {
        username: viewer.username,
        csrf_token: viewer.csrf_token,
    })
}

pub async fn list_hosts(
    State(app): State<Core>,
    Extension(viewer): Extension<Viewer>,
) -> Json<Vec<Host>> {
    Json(service::hosts::list(&app, &viewer))
}

pub async fn create_host(
    State(app): State<Core>,
    Extension(viewer): Extension<Viewer>,
    JsonBody(req): JsonBody<CreateHost>,
) -> HttpResult<(StatusCode, Json<HostCreated>)> {
    let created = service::hosts::create(&app, &viewer, req).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

pub async fn delete_host(
    State(app): State<Core>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
) -> HttpResult<StatusCode> {
    service::hosts::remove(&app, &viewer, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Addition: an admin approves a host that enrolled itself.
pub async fn approve_host(
    State(app): State<Core>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
) -> HttpResult<Json<Host>> {
    Ok(Json(service::hosts::approve(&app, &viewer, &id).await?))
}

pub async fn rotate_token(
    State(app): State<Core>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
) -> HttpResult<Json<AgentToken>> {
    let agent_token = service::hosts::rotate_token(&app, &viewer, &id).await?;
    Ok(Json(AgentToken { agent_token }))
}

pub async fn refresh_host(
    State(app): State<Core>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
) -> HttpResult<Json<RefreshResult>> {
    Ok(Json(service::hosts::refresh(&app, &viewer, &id).await?))
}

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
pub async fn command_detail(
    State(app): State<Core>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
) -> HttpResult<Json<CommandDetail>> {
    Ok(Json(service::commands::detail(&app, &viewer, &id).await?))
}

pub async fn stop_command(
    State(app): State<Core>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
) -> HttpResult<(StatusCode, Json<CommandAccepted>)> {
    let command_id = service::commands::stop(&app, &viewer, &id).await?;
    Ok((StatusCode::ACCEPTED, Json(CommandAccepted { command_id })))
}

pub async fn unlock_host(
    State(app): State<Core>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
) -> HttpResult<Json<serde_json::Value>> {
    service::commands::unlock(&app, &viewer, &id).await?;
    Ok(Json(serde_json::json!({ "host_id": id })))
}

#[derive(serde::Deserialize)]
pub struct HistoryQuery {
    limit: Option<u32>,
}

pub async fn command_history(
    State(app): State<Core>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> HttpResult<Json<Vec<CommandRecord>>> {
    let rows = service::commands::history(&app, &viewer, &id, q.limit.unwrap_or(20)).await?;
    Ok(Json(rows))
}

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

pub async fn bulk(
    State(app): State<Core>,
    Extension(viewer): Extension<Viewer>,
    JsonBody(req): JsonBody<BulkRequest>,
) -> HttpResult<Json<BulkResponse>> {
    let kind = service::commands::parse_kind(&req.command)?;
    let results = service::commands::bulk(&app, &viewer, kind, req.host_ids).await?;
    Ok(Json(BulkResponse { results }))
}

/// Addition: the desired state as the dashboard last read it (null: not configured).
pub async fn desired(State(app): State<Core>) -> Json<Option<protocol::DesiredState>> {
    Json(app.hub.desired())
}

pub async fn pending_pr(State(app): State<Core>) -> Json<Option<protocol::PendingPr>> {
    Json(app.hub.pending_pr())
}

/// Addition: look for the flake.lock PR now ("check now").
pub async fn check_pr(
    State(app): State<Core>,
    Extension(viewer): Extension<Viewer>,
) -> HttpResult<Json<Option<protocol::PendingPr>>> {
    Ok(Json(service::deploy::check_pr(&app, &viewer).await?))
}

pub async fn deploy(
    State(app): State<Core>,
    Extension(viewer): Extension<Viewer>,
    JsonBody(req): JsonBody<DeployRequest>,
) -> HttpResult<(StatusCode, Json<JobAccepted>)> {
    let job_id = service::deploy::start(&app, &viewer, req).await?;
    Ok((StatusCode::ACCEPTED, Json(JobAccepted { job_id })))
}

/// Addition: the state of a deploy job.
pub async fn deploy_status(
    State(app): State<Core>,
    Path(id): Path<String>,
) -> HttpResult<Json<protocol::messages::DeployProgress>> {
    Ok(Json(service::deploy::status(&app, &id).await?))
}

/// Addition: a deploy that previewed first merges and rolls out (202 {job_id} once GitHub
/// merged; the rollout follows as `deploy_progress`).
pub async fn deploy_confirm(
    State(app): State<Core>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
) -> HttpResult<(StatusCode, Json<JobAccepted>)> {
    service::deploy::confirm(&app, &viewer, &id).await?;
    Ok((StatusCode::ACCEPTED, Json(JobAccepted { job_id: id })))
}

/// Addition: stop launching new steps of a deploy.
pub async fn deploy_cancel(
    State(app): State<Core>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
) -> HttpResult<StatusCode> {
    service::deploy::cancel(&app, &viewer, &id).await?;
    Ok(StatusCode::ACCEPTED)
}

#[derive(serde::Deserialize)]
pub struct AuditQuery {
    actor: Option<String>,
    action: Option<String>,
    target: Option<String>,
    limit: Option<u32>,
}

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
pub async fn reauth(
    State(app): State<Core>,
    Extension(viewer): Extension<Viewer>,
    JsonBody(req): JsonBody<ReauthRequest>,
) -> HttpResult<StatusCode> {
    service::auth::reauthenticate(&app, &viewer, &req.password, req.totp.as_deref()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/account/totp/setup`: `{password, code?}` as JSON (`code` is needed while
/// TOTP is on: a current code or a recovery code). A request without a body, as the route
/// had before, reads as one without a password and is refused for it (422).
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

/// Addition: `POST /api/tokens` → 201 `{id, token}`, the token shown this once.
pub async fn create_api_token(
    State(app): State<Core>,
    Extension(viewer): Extension<Viewer>,
    JsonBody(req): JsonBody<CreateApiToken>,
) -> HttpResult<(StatusCode, Json<ApiTokenCreated>)> {
    let created = service::tokens::create(&app, &viewer, req).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

#[derive(serde::Deserialize)]
pub struct TokensQuery {
    /// Admins only: everyone's tokens.
    #[serde(default)]
    all: bool,
}

/// Addition: `GET /api/tokens[?all=true]`.
pub async fn list_api_tokens(
    State(app): State<Core>,
    Extension(viewer): Extension<Viewer>,
    Query(q): Query<TokensQuery>,
) -> HttpResult<Json<Vec<ApiTokenInfo>>> {
    Ok(Json(service::tokens::list(&app, &viewer, q.all).await?))
}

/// Addition: `DELETE /api/tokens/{id}` → 204; the token stops working at once.
pub async fn revoke_api_token(
    State(app): State<Core>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
) -> HttpResult<StatusCode> {
    service::tokens::revoke(&app, &viewer, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
