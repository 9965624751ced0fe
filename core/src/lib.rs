//! The nixdeck server's core, compiled for server builds only (the `app` crate's `ssr`
//! feature and the `nixdeck` binary): everything the dashboard knows and decides, with no
//! HTTP in it.
//!
//! - `storage`: every SQL statement.
//! - `hub`: the fleet in memory, the live agent senders, the fan-out to browsers. It imports
//!   only `protocol`.
//! - `service`: every rule, once; the REST handlers and the server functions call it.
//! - `desired` and `github`: the desired state, the update PR, and the GitHub client.
//! - `replica`: several servers on one PostgreSQL database: the event bus between their
//!   hubs (LISTEN/NOTIFY), their leases, and work sent to a host's owner.
//!
//! `Core` is the state the service functions work on. The binary builds it at start and
//! hands it to its HTTP handlers and, through Leptos context, to the server functions.

pub mod config;
pub mod desired;
pub mod github;
pub mod hub;
pub mod replica;
pub mod secret;
pub mod service;
pub mod storage;

use std::sync::Arc;

/// What every service function works on: cheap to clone (handles only).
#[derive(Clone)]
pub struct Core {
    pub db: storage::Db,
    pub hub: hub::Hub,
    pub config: Arc<config::Config>,
    pub limits: Arc<service::limits::Limits>,
    /// The desired-state source (GitHub or version.json) and the PR poller.
    pub desired: Arc<desired::Desired>,
    /// The Merge & Deploy job slot.
    pub deploys: Arc<service::deploy::Deploys>,
    /// Registrations and heartbeats waiting for their batched write.
    pub unsaved: Arc<service::hosts::Unsaved>,
    /// Refused logins, tallied for the audit log.
    pub refusals: Arc<service::audit::Refusals>,
    /// When the enrollment token stops working (None: no token, or no expiry).
    pub enroll_until: Option<protocol::Timestamp>,
    /// The key from the key file: seals TOTP secrets, keys recovery-code hashes
    /// (`service::totp::prepare_key` loads it at start).
    pub secret_key: Arc<secret::SecretKey>,
    /// This process's name among the servers that share one database (`replica_name`):
    /// it tells replicas apart in leases, presence and the event bus between them.
    pub replica: Arc<str>,
    /// Whether this server holds the leader lease: the once-per-database jobs run only
    /// while it does (`service::lease`).
    pub leader: service::lease::Leader,
    /// The other replicas on the same PostgreSQL database, through the event bus
    /// (`replica`). Empty on SQLite: one server holds the whole fleet.
    pub peers: replica::Peers,
}

/// A name for this server process, new at every start: the process id and 32 random
/// bits, so two processes never share one, even on one machine or after a restart with
/// the same pid.
pub fn replica_name() -> Arc<str> {
    let tag: u32 = rand::random();
    Arc::from(format!("{}-{tag:08x}", std::process::id()))
}
