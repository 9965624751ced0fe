//! The service layer: every rule lives here once. REST handlers (`server/src/http/api.rs`)
//! and server functions (`app/src/api.rs`) are thin doors that call these functions with
//! the `Core` and the request's `Viewer`, so the two can never disagree.

pub mod audit;
pub mod auth;
pub mod commands;
pub mod deploy;
pub mod history;
pub mod hosts;
pub mod lease;
pub mod limits;
pub mod notify;
pub mod tokens;
pub mod totp;
pub mod users;

use common::{AppError, Viewer};
use protocol::api::Role;

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

/// The viewer's role is `role` or above; else 403 naming the role needed.
pub fn require(viewer: &Viewer, role: Role) -> Result<()> {
    if viewer.role.at_least(role) {
        Ok(())
    } else {
        Err(AppError::Forbidden(format!("this needs the {role} role")))
    }
}

/// Only admins manage hosts, users and tokens.
pub fn require_admin(viewer: &Viewer) -> Result<()> {
    require(viewer, Role::Admin)
}

/// Viewers see everything and run nothing: commands and deploys need an operator.
pub fn require_operator(viewer: &Viewer) -> Result<()> {
    require(viewer, Role::Operator)
}

/// A role read from the database. The column only ever holds a wire name (`users::add`
/// checks it); anything else reads as the least privileged role, with a warning.
pub fn stored_role(username: &str, role: &str) -> Role {
    Role::parse(role).unwrap_or_else(|| {
        tracing::warn!(
            user = username,
            role,
            "unknown stored role; treated as viewer"
        );
        Role::Viewer
    })
}

/// A `Core` over a fresh database of `backend` (SQLite: in `dir`), with these hosts in the hub (offline) and the
/// server's flags from `args` (the binary's name first).
#[cfg(test)]
pub(crate) async fn test_core(
    backend: &crate::storage::testing::TestBackend,
    dir: &std::path::Path,
    hosts: &[&str],
    args: &[&str],
) -> crate::Core {
    test_core_on(&backend.fresh_url(dir).await, hosts, args).await
}

/// `test_core` on the database at `url` (several cores on one database: replicas).
#[cfg(test)]
pub(crate) async fn test_core_on(url: &str, hosts: &[&str], args: &[&str]) -> crate::Core {
    use clap::Parser;
    use std::sync::Arc;
    let db = crate::storage::Db::connect(url).await.unwrap();
    let mut config = crate::config::Config::parse_from(args);
    config.database_url = url.to_owned();
    let hub = crate::hub::Hub::new(
        hosts
            .iter()
            .map(|id| (protocol::Host::new(id, protocol::HostType::Nixos), None)),
        5,
        None,
    );
    crate::Core {
        db,
        hub: hub.clone(),
        desired: Arc::new(crate::desired::Desired::new(&config.github, hub).unwrap()),
        deploys: Arc::default(),
        unsaved: Arc::default(),
        refusals: Arc::default(),
        secret_key: Arc::new(crate::secret::SecretKey::random()),
        replica: crate::replica_name(),
        leader: lease::Leader::new(true),
        peers: Default::default(),
        enroll_until: None,
        limits: Arc::new(limits::Limits::new(config.login_failures_per_min)),
        config: Arc::new(config),
    }
}
