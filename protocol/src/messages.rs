//! WebSocket frames: `{"type": "<snake_case>", "payload": {...}}`, one enum per direction.

use crate::model::*;
use crate::Timestamp;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

// ---------------------------------------------------------------- agent -> server

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunningCommand {
    pub command_id: String,
    pub command: CommandKind,
    /// The next seq the agent will use: lines below it were produced before the restart.
    pub next_seq: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Register {
    pub hostname: String,
    pub host_type: HostType,
    pub agent_version: String,
    #[serde(default)]
    pub os_version: Option<String>,
    #[serde(default)]
    pub nixpkgs_version: Option<String>,
    #[serde(default)]
    pub generation: Option<String>,
    #[serde(default)]
    pub lock_hash: Option<String>,
    /// Addition to the contract: when flake.lock last changed (its last commit), for the
    /// lock compartment's age fallback when no desired hash is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_updated_at: Option<Timestamp>,
    #[serde(default)]
    pub repo_url: Option<String>,
    #[serde(default)]
    pub repo_dir: Option<String>,
    #[serde(default)]
    pub branch: Option<String>,
    #[serde(default = "default_interval")]
    pub heartbeat_interval_s: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub theme_color: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_type: Option<String>,
    #[serde(default)]
    pub running_command: Option<RunningCommand>,
}

fn default_interval() -> u32 {
    crate::DEFAULT_HEARTBEAT_S
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeartbeatCommand {
    pub command_id: String,
    pub command: CommandKind,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub metrics: Option<Metrics>,
    #[serde(default)]
    pub generation: Option<String>,
    #[serde(default)]
    pub lock_hash: Option<String>,
    /// Addition (see `Register::lock_updated_at`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_updated_at: Option<Timestamp>,
    #[serde(default)]
    pub pending_command: Option<HeartbeatCommand>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct StatusChecks {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<StatusCheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tests: Option<StatusCheck>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    pub checks: StatusChecks,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Output {
    pub command_id: String,
    pub seq: u64,
    pub stream: OutputStream,
    pub line: String,
}

/// The agent's own verdict; the server adds timeout, lost and abandoned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentOutcome {
    Ok,
    Error,
    Stopped,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentCommandComplete {
    pub command_id: String,
    pub status: AgentOutcome,
    pub exit_code: Option<i32>,
    pub duration_ms: u64,
    pub last_seq: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CommandRejected {
    pub command_id: String,
    pub reason: String,
}

// Frames are decoded one at a time and consumed at once, so the size of the rare
// `register` variant costs nothing worth a Box.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload", rename_all = "snake_case")]
pub enum AgentMessage {
    Register(Register),
    Heartbeat(Heartbeat),
    Status(StatusReport),
    Output(Output),
    CommandComplete(AgentCommandComplete),
    CommandRejected(CommandRejected),
}

// ---------------------------------------------------------------- server -> agent

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Registered {
    pub host_id: String,
    pub dashboard_version: String,
    pub heartbeat_interval_s: u32,
    /// Only after enrollment: the host's own token, to be stored and used from then on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_token: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CommandOrder {
    pub command_id: String,
    pub command: CommandKind,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StopOrder {
    pub command_id: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ack {
    pub command_id: String,
    pub seq: u64,
    pub complete: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload", rename_all = "snake_case")]
pub enum ServerMessage {
    Registered(Registered),
    Command(CommandOrder),
    Stop(StopOrder),
    Ack(Ack),
}

// ---------------------------------------------------------------- server -> browser

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub hosts: Vec<Host>,
    pub pending_pr: Option<PendingPr>,
    pub dashboard_version: String,
    pub server_time: Timestamp,
    /// Addition: the desired state (None when no source is configured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired: Option<DesiredState>,
    /// Addition: the current or last deploy, so a page opened mid-deploy shows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy: Option<DeployProgress>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HostHeartbeat {
    pub host_id: String,
    pub online: bool,
    pub last_seen: Timestamp,
    pub metrics: Option<Metrics>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HostRef {
    pub host_id: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HostBody {
    pub host: Host,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CommandQueued {
    pub host_id: String,
    pub command_id: String,
    pub command: CommandKind,
    pub queued_at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CommandOutput {
    pub host_id: String,
    pub command_id: String,
    pub seq: u64,
    pub stream: OutputStream,
    pub line: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CommandComplete {
    pub host_id: String,
    pub command_id: String,
    pub status: CommandStatus,
    pub exit_code: Option<i32>,
    pub duration_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PendingPrChanged {
    pub pr: Option<PendingPr>,
}

/// Addition: the desired state changed (`desired_state`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DesiredChanged {
    pub desired: Option<DesiredState>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeployPhase {
    Merging,
    Pulling,
    Switching,
    Done,
    Failed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeployHostState {
    Pending,
    Running,
    Ok,
    Error,
    Skipped,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeployProgress {
    pub job_id: String,
    pub pr_number: u64,
    pub phase: DeployPhase,
    pub hosts: BTreeMap<String, DeployHostState>,
    pub message: String,
    /// Additions: who started it, and whether it is still running (a Cancel button shows).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub started_by: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub active: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload", rename_all = "snake_case")]
pub enum BrowserEvent {
    Snapshot(Snapshot),
    HostHeartbeat(HostHeartbeat),
    HostOffline(HostRef),
    HostUpdated(HostBody),
    HostAdded(HostBody),
    HostRemoved(HostRef),
    CommandQueued(CommandQueued),
    CommandOutput(CommandOutput),
    CommandComplete(CommandComplete),
    PendingPr(PendingPrChanged),
    DeployProgress(DeployProgress),
    DesiredState(DesiredChanged),
}

// ---------------------------------------------------------------- decoding

/// A frame's enum, with the `type` names it knows, so that an unknown type can be told
/// apart from a malformed known one.
pub trait Message: DeserializeOwned {
    const TYPES: &'static [&'static str];
}

impl Message for AgentMessage {
    const TYPES: &'static [&'static str] = &[
        "register",
        "heartbeat",
        "status",
        "output",
        "command_complete",
        "command_rejected",
    ];
}

impl Message for ServerMessage {
    const TYPES: &'static [&'static str] = &["registered", "command", "stop", "ack"];
}

impl Message for BrowserEvent {
    const TYPES: &'static [&'static str] = &[
        "snapshot",
        "host_heartbeat",
        "host_offline",
        "host_updated",
        "host_added",
        "host_removed",
        "command_queued",
        "command_output",
        "command_complete",
        "pending_pr",
        "deploy_progress",
        "desired_state",
    ];
}

/// What a received frame turned out to be. Unknown types are ignored and counted
/// (forward compatibility); malformed frames are skipped with a warning.
#[derive(Debug)]
pub enum Decoded<M> {
    Message(M),
    Unknown(String),
    Malformed(String),
}

pub fn decode<M: Message>(text: &str) -> Decoded<M> {
    match serde_json::from_str::<M>(text) {
        Ok(m) => Decoded::Message(m),
        Err(err) => {
            #[derive(Deserialize)]
            struct Envelope {
                r#type: String,
            }
            match serde_json::from_str::<Envelope>(text) {
                Ok(env) if !M::TYPES.contains(&env.r#type.as_str()) => {
                    // Cap what we echo: the type came from a peer.
                    Decoded::Unknown(env.r#type.chars().take(64).collect())
                }
                _ => Decoded::Malformed(err.to_string()),
            }
        }
    }
}
