//! The service layer: every rule lives here once. REST handlers (`server/src/http/api.rs`)
//! and server functions (`app/src/api.rs`) are thin doors that call these functions with
//! the `Core` and the request's `Viewer`, so the two can never disagree.

pub mod audit;
pub mod auth;
pub mod commands;
pub mod deploy;
pub mod hosts;
pub mod limits;
pub mod totp;
pub mod users;

use common::{AppError, Viewer};

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
