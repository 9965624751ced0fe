//! The seam between server functions (in this crate) and the service layer (in the server
//! crate, which depends on us). The server implements `Backend` and hands it to every
//! server function through Leptos context, so server functions stay thin doors.

use crate::error::AppError;
use protocol::api::{
    AuditEntry, BulkResult, CommandRecord, CreateHost, DeployRequest, HostCreated, RecoveryCodes,
    RefreshResult, TotpSetup, UserInfo,
};
use protocol::messages::Snapshot;
use protocol::{CommandKind, PendingPr};
use std::sync::Arc;

/// The Content-Security-Policy nonce of a request, minted by the server's header layer
/// and stamped on the hydration script by the page shell.
#[derive(Clone, Debug, PartialEq)]
pub struct CspNonce(pub String);

/// Which web build this server serves (a hash of its wasm), set once at startup. The page
/// shell carries it and every snapshot too, so a page can tell when the dashboard has
/// moved to another build (see `socket::check_build`).
pub static WEB_BUILD: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Make the request's CSP nonce the one Leptos puts on its inline scripts.
pub fn provide_request_nonce() {
    use leptos::prelude::{provide_context, use_context};
    if let Some(nonce) =
        use_context::<http::request::Parts>().and_then(|p| p.extensions.get::<CspNonce>().cloned())
    {
        provide_context(leptos::nonce::Nonce::from_value(nonce.0));
    }
}

/// The logged-in user of a request, put into the request extensions by the server's
/// session layer and read by the page shell (CSRF meta tag) and by server functions.
#[derive(Clone, Debug, PartialEq)]
pub struct Viewer {
    pub username: String,
    pub role: String,
    pub csrf_token: String,
    /// The client's address, for the audit log.
    pub ip: Option<String>,
}

#[async_trait::async_trait]
pub trait Backend: Send + Sync + 'static {
    /// The fleet as the hub sees it now, for the first render.
    async fn snapshot(&self, viewer: &Viewer) -> Result<Snapshot, AppError>;
    /// Run a command on a host; the new command's id.
    async fn run_command(
        &self,
        viewer: &Viewer,
        host_id: &str,
        command: CommandKind,
    ) -> Result<String, AppError>;
    /// Stop a host's running command; its id.
    async fn stop_command(&self, viewer: &Viewer, host_id: &str) -> Result<String, AppError>;
    /// Release a host stuck with a pending command.
    async fn unlock_host(&self, viewer: &Viewer, host_id: &str) -> Result<(), AppError>;
    async fn refresh_host(&self, viewer: &Viewer, host_id: &str)
        -> Result<RefreshResult, AppError>;
    async fn remove_host(&self, viewer: &Viewer, host_id: &str) -> Result<(), AppError>;
    async fn bulk_command(
        &self,
        viewer: &Viewer,
        command: CommandKind,
        host_ids: Option<Vec<String>>,
    ) -> Result<Vec<BulkResult>, AppError>;
    async fn add_host(&self, viewer: &Viewer, host: CreateHost) -> Result<HostCreated, AppError>;
    async fn users(&self, viewer: &Viewer) -> Result<Vec<UserInfo>, AppError>;
    async fn add_user(
        &self,
        viewer: &Viewer,
        username: String,
        role: String,
        password: String,
    ) -> Result<(), AppError>;
    async fn set_user_disabled(
        &self,
        viewer: &Viewer,
        username: String,
        disabled: bool,
    ) -> Result<(), AppError>;
    /// A new generated password, shown once; the user's sessions end.
    async fn reset_password(&self, viewer: &Viewer, username: String) -> Result<String, AppError>;
    async fn audit(
        &self,
        viewer: &Viewer,
        actor: Option<String>,
        action: Option<String>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, AppError>;
    async fn totp_setup(&self, viewer: &Viewer) -> Result<TotpSetup, AppError>;
    async fn totp_confirm(&self, viewer: &Viewer, code: String) -> Result<RecoveryCodes, AppError>;
    async fn command_history(
        &self,
        viewer: &Viewer,
        host_id: &str,
        limit: u32,
    ) -> Result<Vec<CommandRecord>, AppError>;
    /// Merge the flake.lock PR and roll it out; the job id.
    async fn deploy(&self, viewer: &Viewer, req: DeployRequest) -> Result<String, AppError>;
    /// Stop launching new steps of a deploy.
    async fn cancel_deploy(&self, viewer: &Viewer, job_id: &str) -> Result<(), AppError>;
    /// Look for the flake.lock PR on GitHub now.
    async fn check_pr(&self, viewer: &Viewer) -> Result<Option<PendingPr>, AppError>;
}

pub type SharedBackend = Arc<dyn Backend>;

/// The viewer of the request being served, if any.
pub fn current_viewer() -> Option<Viewer> {
    use leptos::prelude::use_context;
    use_context::<http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<Viewer>().cloned())
}

/// Give a server function's failure the same HTTP status the REST door would use, so
/// both doors answer alike (401, 403, 404, 409, 422, …).
pub fn with_status(e: AppError) -> AppError {
    if let Some(opts) = leptos::prelude::use_context::<leptos_axum::ResponseOptions>() {
        if let Ok(code) = http::StatusCode::from_u16(e.status()) {
            opts.set_status(code);
        }
    }
    e
}

/// The body of every server function: find the backend and the viewer, run `f`, and give
/// a failure its HTTP status.
pub async fn serve<T, F, Fut>(f: F) -> Result<T, AppError>
where
    F: FnOnce(SharedBackend, Viewer) -> Fut,
    Fut: std::future::Future<Output = Result<T, AppError>>,
{
    let (backend, viewer) = backend_for_request()?;
    f(backend, viewer).await.map_err(with_status)
}

/// The backend and the viewer, or the error a server function should return.
pub fn backend_for_request() -> Result<(SharedBackend, Viewer), AppError> {
    use leptos::prelude::use_context;
    let viewer = current_viewer()
        .ok_or(AppError::Unauthorized)
        .map_err(with_status)?;
    let backend = use_context::<SharedBackend>().ok_or_else(|| {
        tracing::error!("no Backend in the Leptos context");
        AppError::Internal
    })?;
    Ok((backend, viewer))
}
