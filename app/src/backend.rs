//! The seam between server functions (in this crate) and the service layer (in the server
//! crate, which depends on us). The server implements `Backend` and hands it to every
//! server function through Leptos context, so server functions stay thin doors.

use crate::error::AppError;
use protocol::api::{BulkResult, CommandRecord, CreateHost, HostCreated, RefreshResult};
use protocol::messages::Snapshot;
use protocol::CommandKind;
use std::sync::Arc;

/// The logged-in user of a request, put into the request extensions by the server's
/// session layer and read by the page shell (CSRF meta tag) and by server functions.
#[derive(Clone, Debug, PartialEq)]
pub struct Viewer {
    pub username: String,
    pub role: String,
    pub csrf_token: String,
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
    async fn command_history(
        &self,
        viewer: &Viewer,
        host_id: &str,
        limit: u32,
    ) -> Result<Vec<CommandRecord>, AppError>;
}

pub type SharedBackend = Arc<dyn Backend>;

/// The viewer of the request being served, if any.
pub fn current_viewer() -> Option<Viewer> {
    use leptos::prelude::use_context;
    use_context::<http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<Viewer>().cloned())
}

/// The backend and the viewer, or the error a server function should return.
pub fn backend_for_request() -> Result<(SharedBackend, Viewer), AppError> {
    use leptos::prelude::use_context;
    let viewer = current_viewer().ok_or(AppError::Unauthorized)?;
    let backend = use_context::<SharedBackend>().ok_or_else(|| {
        tracing::error!("no Backend in the Leptos context");
        AppError::Internal
    })?;
    Ok((backend, viewer))
}
