//! The one application state, handed to axum handlers and (through the Leptos context) to
//! server functions.

use crate::config::Config;
use crate::hub::Hub;
use crate::service::limits::Limits;
use crate::storage::Db;
use axum::extract::FromRef;
use leptos::config::LeptosOptions;
use std::sync::Arc;

#[derive(Clone, FromRef)]
pub struct AppState {
    pub db: Db,
    pub hub: Hub,
    pub config: Arc<Config>,
    pub limits: Arc<Limits>,
    /// The desired-state source (GitHub or version.json) and the PR poller.
    pub desired: Arc<crate::desired::Desired>,
    /// The Merge & Deploy job slot.
    pub deploys: Arc<crate::service::deploy::Deploys>,
    /// When the enrollment token stops working (None: no token, or no expiry).
    pub enroll_until: Option<protocol::Timestamp>,
    pub leptos_options: LeptosOptions,
}
