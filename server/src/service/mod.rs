//! The service layer: every rule lives here once. REST handlers and server functions are
//! thin doors that call these functions, so the two can never disagree.

pub mod audit;
pub mod auth;
pub mod commands;
pub mod deploy;
pub mod hosts;
pub mod limits;
pub mod totp;
pub mod users;

use app::backend::{Backend, Viewer};
use app::AppError;
use protocol::api::{
    AuditEntry, BulkResult, CommandRecord, CreateHost, DeployRequest, HostCreated, RecoveryCodes,
    RefreshResult, TotpSetup, UserInfo,
};
use protocol::messages::Snapshot;
use protocol::CommandKind;

use crate::state::AppState;

pub type Result<T, E = AppError> = std::result::Result<T, E>;

/// Turn an unexpected failure into a 500, logging the detail (never sent to the client).
pub trait OrInternal<T> {
    fn or_internal(self, context: &str) -> Result<T>;
}

impl<T, E: std::fmt::Display> OrInternal<T> for std::result::Result<T, E> {
    fn or_internal(self, context: &str) -> Result<T> {
        self.map_err(|e| {
            tracing::error!("{context}: {e}");
            AppError::Internal
        })
    }
}

/// Only admins manage hosts, users and tokens.
pub fn require_admin(viewer: &Viewer) -> Result<()> {
    if viewer.role == "admin" {
        Ok(())
    } else {
        Err(AppError::Forbidden("this needs the admin role".into()))
    }
}

/// The server's implementation of the app's `Backend` seam for server functions.
pub struct Services(pub AppState);

#[async_trait::async_trait]
impl Backend for Services {
    async fn snapshot(&self, _viewer: &Viewer) -> Result<Snapshot> {
        Ok(self.0.hub.snapshot())
    }

    async fn run_command(
        &self,
        viewer: &Viewer,
        host_id: &str,
        command: CommandKind,
    ) -> Result<String> {
        commands::run(&self.0, viewer, host_id, command).await
    }

    async fn stop_command(&self, viewer: &Viewer, host_id: &str) -> Result<String> {
        commands::stop(&self.0, viewer, host_id).await
    }

    async fn unlock_host(&self, viewer: &Viewer, host_id: &str) -> Result<()> {
        commands::unlock(&self.0, viewer, host_id).await
    }

    async fn refresh_host(&self, viewer: &Viewer, host_id: &str) -> Result<RefreshResult> {
        hosts::refresh(&self.0, viewer, host_id).await
    }

    async fn remove_host(&self, viewer: &Viewer, host_id: &str) -> Result<()> {
        hosts::remove(&self.0, viewer, host_id).await
    }

    async fn bulk_command(
        &self,
        viewer: &Viewer,
        command: CommandKind,
        host_ids: Option<Vec<String>>,
    ) -> Result<Vec<BulkResult>> {
        commands::bulk(&self.0, viewer, command.as_str(), host_ids).await
    }

    async fn add_host(&self, viewer: &Viewer, host: CreateHost) -> Result<HostCreated> {
        hosts::create(&self.0, viewer, host).await
    }

    async fn users(&self, viewer: &Viewer) -> Result<Vec<UserInfo>> {
        require_admin(viewer)?;
        Ok(users::list(&self.0.db)
            .await?
            .into_iter()
            .map(|(u, created)| UserInfo {
                username: u.username,
                role: u.role,
                disabled: u.disabled,
                created_at: protocol::Timestamp(created),
            })
            .collect())
    }

    async fn add_user(
        &self,
        viewer: &Viewer,
        username: String,
        role: String,
        password: String,
    ) -> Result<()> {
        require_admin(viewer)?;
        users::add(&self.0.db, &viewer.username, &username, &role, &password).await
    }

    async fn set_user_disabled(
        &self,
        viewer: &Viewer,
        username: String,
        disabled: bool,
    ) -> Result<()> {
        require_admin(viewer)?;
        if disabled && username == viewer.username {
            return Err(AppError::Invalid("You cannot disable yourself.".into()));
        }
        users::set_disabled(&self.0.db, &viewer.username, &username, disabled).await
    }

    async fn reset_password(&self, viewer: &Viewer, username: String) -> Result<String> {
        require_admin(viewer)?;
        let password = auth::generate_password();
        users::set_password(&self.0.db, &viewer.username, &username, &password).await?;
        Ok(password)
    }

    async fn audit(
        &self,
        viewer: &Viewer,
        actor: Option<String>,
        action: Option<String>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>> {
        let filter = crate::storage::AuditFilter {
            actor: actor.filter(|a| !a.is_empty()),
            action: action.filter(|a| !a.is_empty()),
            target: None,
            limit,
        };
        audit::read(&self.0, viewer, filter).await
    }

    async fn totp_setup(&self, viewer: &Viewer) -> Result<TotpSetup> {
        totp::setup(&self.0, viewer).await
    }

    async fn totp_confirm(&self, viewer: &Viewer, code: String) -> Result<RecoveryCodes> {
        totp::confirm(&self.0, viewer, &code).await
    }

    async fn command_history(
        &self,
        viewer: &Viewer,
        host_id: &str,
        limit: u32,
    ) -> Result<Vec<CommandRecord>> {
        commands::history(&self.0, viewer, host_id, limit).await
    }

    async fn deploy(&self, viewer: &Viewer, req: DeployRequest) -> Result<String> {
        deploy::start(&self.0, viewer, req).await
    }

    async fn cancel_deploy(&self, viewer: &Viewer, job_id: &str) -> Result<()> {
        deploy::cancel(&self.0, viewer, job_id).await
    }

    async fn check_pr(&self, viewer: &Viewer) -> Result<Option<protocol::PendingPr>> {
        deploy::check_pr(&self.0, viewer).await
    }
}
