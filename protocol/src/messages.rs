//! WebSocket frames: `{"type": "<snake_case>", "payload": {...}}`, one enum per direction.

use crate::model::*;
use crate::names::wire_enum;
use crate::Timestamp;
use serde::de::{self, DeserializeOwned, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// A frame enum from one list, each variant with its payload and its `type` on the wire:
/// the enum (adjacently tagged: `{"type": "<name>", "payload": {...}}`, for the derives it
/// is given) and `Message::TYPES`.
///
/// With `tag = Name` (for a hand-written decoder, see `BrowserEvent`), also a private
/// fieldless `Name` with the same names, read like the derive reads a frame's `type`, and
/// `Name::payload`, which reads the payload of the variant it names.
// `$wire` is a `tt`, not a `literal`: a `literal` fragment reaches derive macros wrapped in
// an invisible group, which serde reads but utoipa's `ToSchema` (feature `openapi`) does
// not, and the frames' schemas would then carry the Rust names as their `type`.
macro_rules! frames {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $($(#[$vmeta:meta])* $variant:ident($payload:ty) = $wire:tt,)+
        }
    ) => {
        frames!(@enum $(#[$meta])* $name { $($(#[$vmeta])* $variant($payload) = $wire,)+ });

        impl Message for $name {
            const TYPES: &'static [&'static str] = &[$($wire),+];
        }
    };
    (
        $(#[$meta:meta])*
        pub enum $name:ident (tag = $tag:ident) {
            $($(#[$vmeta:meta])* $variant:ident($payload:ty) = $wire:tt,)+
        }
    ) => {
        frames!(@enum $(#[$meta])* $name { $($(#[$vmeta])* $variant($payload) = $wire,)+ });

        wire_enum! {
            #[doc = concat!("`", stringify!($name), "`'s `type`.")]
            enum $tag {
                $($variant = $wire,)+
            }
        }

        impl $tag {
            /// Reads the payload of the variant this tag names.
            fn payload<'de, D: Deserializer<'de>>(self, d: D) -> Result<$name, D::Error> {
                Ok(match self {
                    $($tag::$variant => $name::$variant(Deserialize::deserialize(d)?),)+
                })
            }
        }

        impl Message for $name {
            const TYPES: &'static [&'static str] = &$tag::NAMES;
        }
    };
    (@enum
        $(#[$meta:meta])*
        $name:ident {
            $($(#[$vmeta:meta])* $variant:ident($payload:ty) = $wire:tt,)+
        }
    ) => {
        $(#[$meta])*
        #[serde(tag = "type", content = "payload")]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $wire)] $variant($payload),)+
        }
    };
}

// ---------------------------------------------------------------- agent -> server

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunningCommand {
    pub command_id: String,
    pub command: CommandKind,
    /// The next seq the agent will use: lines below it were produced before the restart.
    pub next_seq: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// The system profile's generations (None: the agent has no profile to report, or is
    /// older than this field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generations: Option<Vec<Generation>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reboot_needed: Option<bool>,
    /// An addition: the tags of the agent's configuration (`--tags`). None from agents
    /// older than this field: the tags known stand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
}

fn default_interval() -> u32 {
    crate::DEFAULT_HEARTBEAT_S
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HeartbeatCommand {
    pub command_id: String,
    pub command: CommandKind,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StatusChecks {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<StatusCheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tests: Option<StatusCheck>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StatusReport {
    pub checks: StatusChecks,
    /// Sent after every switch, boot and rollback (see `Register::generations`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generations: Option<Vec<Generation>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reboot_needed: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Output {
    pub command_id: String,
    pub seq: u64,
    pub stream: OutputStream,
    pub line: String,
}

wire_enum! {
    /// The agent's own verdict; the server adds timeout, lost and abandoned.
    pub enum AgentOutcome {
        Ok = "ok",
        Error = "error",
        Stopped = "stopped",
        RolledBack = "rolled_back",
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentCommandComplete {
    pub command_id: String,
    pub status: AgentOutcome,
    pub exit_code: Option<i32>,
    pub duration_ms: u64,
    pub last_seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<CommandResult>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CommandRejected {
    pub command_id: String,
    pub reason: String,
}

frames! {
    // Frames are decoded one at a time and consumed at once, so the size of the rare
    // `register` variant costs nothing worth a Box.
    #[allow(clippy::large_enum_variant)]
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
    pub enum AgentMessage {
        Register(Register) = "register",
        Heartbeat(Heartbeat) = "heartbeat",
        Status(StatusReport) = "status",
        Output(Output) = "output",
        CommandComplete(AgentCommandComplete) = "command_complete",
        CommandRejected(CommandRejected) = "command_rejected",
    }
}

// ---------------------------------------------------------------- server -> agent

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Registered {
    pub host_id: String,
    pub dashboard_version: String,
    pub heartbeat_interval_s: u32,
    /// Only after enrollment: the host's own token, to be stored and used from then on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_token: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CommandOrder {
    pub command_id: String,
    pub command: CommandKind,
    /// `rollback`: the generation to go to (None: the previous one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    /// `switch`/`boot` started from a preview: activate exactly this store path instead of
    /// building the checkout again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_path: Option<String>,
    /// `preview` of a commit that is not checked out (a deploy's PR head): the agent fetches
    /// it from the checkout's origin and builds the flake at it; the checkout stays as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rev: Option<String>,
}

impl CommandOrder {
    /// A plain order: no generation, no store path.
    pub fn new(command_id: impl Into<String>, command: CommandKind) -> Self {
        CommandOrder {
            command_id: command_id.into(),
            command,
            generation: None,
            store_path: None,
            rev: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StopOrder {
    pub command_id: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Ack {
    pub command_id: String,
    pub seq: u64,
    pub complete: bool,
}

frames! {
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
    pub enum ServerMessage {
        Registered(Registered) = "registered",
        Command(CommandOrder) = "command",
        Stop(StopOrder) = "stop",
        Ack(Ack) = "ack",
    }
}

// ---------------------------------------------------------------- server -> browser

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// Addition: which web build the dashboard serves (a hash of its wasm). A page loaded
    /// from another build runs stale code and must not fetch this build's wasm chunks.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub build: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HostHeartbeat {
    pub host_id: String,
    pub online: bool,
    pub last_seen: Timestamp,
    pub metrics: Option<Metrics>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HostRef {
    pub host_id: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HostBody {
    pub host: Host,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CommandQueued {
    pub host_id: String,
    pub command_id: String,
    pub command: CommandKind,
    pub queued_at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CommandOutput {
    pub host_id: String,
    pub command_id: String,
    pub seq: u64,
    pub stream: OutputStream,
    pub line: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CommandComplete {
    pub host_id: String,
    pub command_id: String,
    pub status: CommandStatus,
    pub exit_code: Option<i32>,
    pub duration_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<CommandResult>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PendingPrChanged {
    pub pr: Option<PendingPr>,
}

/// Addition: the desired state changed (`desired_state`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DesiredChanged {
    pub desired: Option<DesiredState>,
}

wire_enum! {
    pub enum DeployPhase {
        /// Addition: building the PR's head on the targets and diffing it (`preview`).
        Previewing = "previewing",
        /// Addition: the previews are in; nothing happens until an operator confirms
        /// (`POST /api/deploy/{job_id}/confirm`) or cancels.
        AwaitingConfirmation = "awaiting_confirmation",
        Merging = "merging",
        Pulling = "pulling",
        Switching = "switching",
        Done = "done",
        Failed = "failed",
    }
}

wire_enum! {
    pub enum DeployHostState {
        Pending = "pending",
        Running = "running",
        Ok = "ok",
        Error = "error",
        Skipped = "skipped",
        /// Addition: the host's switch failed its health gate and it put its previous
        /// generation back. A failure.
        RolledBack = "rolled_back",
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// Addition: a deploy that previews first: each target's `preview` command id, whose
    /// result (`GET /api/commands/{id}`, `command_complete.result`) holds its diff.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub previews: BTreeMap<String, String>,
}

frames! {
    /// Serialised by serde's adjacently tagged derive. `Deserialize` is written out below (it
    /// accepts the same JSON as `#[derive(Deserialize)]` with the same attributes) because
    /// it runs in the browser, where the derive's buffering path costs a lot of wasm.
    #[derive(Clone, Debug, PartialEq, Serialize)]
    #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
    pub enum BrowserEvent (tag = BrowserEventType) {
        Snapshot(Snapshot) = "snapshot",
        HostHeartbeat(HostHeartbeat) = "host_heartbeat",
        HostOffline(HostRef) = "host_offline",
        HostUpdated(HostBody) = "host_updated",
        HostAdded(HostBody) = "host_added",
        HostRemoved(HostRef) = "host_removed",
        CommandQueued(CommandQueued) = "command_queued",
        CommandOutput(CommandOutput) = "command_output",
        CommandComplete(CommandComplete) = "command_complete",
        PendingPr(PendingPrChanged) = "pending_pr",
        DeployProgress(DeployProgress) = "deploy_progress",
        DesiredState(DesiredChanged) = "desired_state",
    }
}

// ------------------------------------------------- BrowserEvent: hand-written Deserialize

// `BrowserEventType`, the `type`, is read like the derive reads it: as a unit variant (so
// `"snapshot"`, and also serde's `{"snapshot": null}` form; see `names`).

/// Reads the payload of the variant named by the tag.
struct BrowserEventPayload(BrowserEventType);

impl<'de> DeserializeSeed<'de> for BrowserEventPayload {
    type Value = BrowserEvent;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<BrowserEvent, D::Error> {
        self.0.payload(d)
    }
}

/// A key of the frame object: serde's `TagContentOtherFieldVisitor`, for this enum.
enum FrameKey {
    Type,
    Payload,
    Other,
}

impl<'de> Deserialize<'de> for FrameKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = FrameKey;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("\"type\", \"payload\", or other ignored fields")
            }
            fn visit_u64<E: de::Error>(self, index: u64) -> Result<FrameKey, E> {
                Ok(match index {
                    0 => FrameKey::Type,
                    1 => FrameKey::Payload,
                    _ => FrameKey::Other,
                })
            }
            fn visit_str<E: de::Error>(self, key: &str) -> Result<FrameKey, E> {
                self.visit_bytes(key.as_bytes())
            }
            fn visit_bytes<E: de::Error>(self, key: &[u8]) -> Result<FrameKey, E> {
                Ok(match key {
                    b"type" => FrameKey::Type,
                    b"payload" => FrameKey::Payload,
                    _ => FrameKey::Other,
                })
            }
        }
        d.deserialize_identifier(KeyVisitor)
    }
}

/// The next `type` or `payload` key, stepping over (and ignoring) any other.
fn next_frame_key<'de, A: MapAccess<'de>>(map: &mut A) -> Result<Option<FrameKey>, A::Error> {
    while let Some(key) = map.next_key::<FrameKey>()? {
        match key {
            FrameKey::Other => {
                map.next_value::<de::IgnoredAny>()?;
            }
            key => return Ok(Some(key)),
        }
    }
    Ok(None)
}

/// After the payload: only other keys may follow.
fn end_of_frame<'de, A: MapAccess<'de>>(
    map: &mut A,
    event: BrowserEvent,
) -> Result<BrowserEvent, A::Error> {
    match next_frame_key(map)? {
        Some(FrameKey::Type) => Err(de::Error::duplicate_field("type")),
        Some(FrameKey::Payload) => Err(de::Error::duplicate_field("payload")),
        Some(FrameKey::Other) | None => Ok(event),
    }
}

/// Copies one JSON value out of any deserializer as JSON text, keys in order and duplicates
/// kept: the buffer for a `payload` that comes before its `type`. The derive buffers into
/// serde's private `Content` and reads each payload type from that too, which doubles the
/// payload code in the wasm; re-reading text with serde_json shares it with the usual path.
/// It reads with `deserialize_any`, as the derive's buffer does, so what it rejects (depth,
/// numbers out of range) is the same.
struct Transcribe<'a>(&'a mut Vec<u8>);

impl Transcribe<'_> {
    fn put<T: Serialize + ?Sized, E: de::Error>(self, v: &T) -> Result<(), E> {
        serde_json::to_writer(self.0, v).map_err(E::custom)
    }
}

impl<'de> DeserializeSeed<'de> for Transcribe<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Transcribe<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.put(&v)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.put(&v)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.put(&v)
    }
    /// Written by serde_json (always with a `.` or an exponent, so it reads back as a float;
    /// exactly the same float with `float_roundtrip`, which every native build has).
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.put(&v)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.put(v)
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.0.extend_from_slice(b"null");
        Ok(())
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.visit_unit()
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let out = self.0;
        out.push(b'[');
        let mut first = true;
        loop {
            let mark = out.len();
            if !first {
                out.push(b',');
            }
            if seq.next_element_seed(Transcribe(out))?.is_none() {
                out.truncate(mark);
                break;
            }
            first = false;
        }
        out.push(b']');
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let out = self.0;
        out.push(b'{');
        let mut first = true;
        loop {
            let mark = out.len();
            if !first {
                out.push(b',');
            }
            if map.next_key_seed(Transcribe(out))?.is_none() {
                out.truncate(mark);
                break;
            }
            out.push(b':');
            map.next_value_seed(Transcribe(out))?;
            first = false;
        }
        out.push(b'}');
        Ok(())
    }
}

struct BrowserEventVisitor;

impl<'de> Visitor<'de> for BrowserEventVisitor {
    type Value = BrowserEvent;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("adjacently tagged enum BrowserEvent")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<BrowserEvent, A::Error> {
        match next_frame_key(&mut map)? {
            Some(FrameKey::Type) => {
                let tag: BrowserEventType = map.next_value()?;
                match next_frame_key(&mut map)? {
                    Some(FrameKey::Type) => Err(de::Error::duplicate_field("type")),
                    Some(FrameKey::Payload) => {
                        let event = map.next_value_seed(BrowserEventPayload(tag))?;
                        end_of_frame(&mut map, event)
                    }
                    // Every variant has a (struct) payload.
                    Some(FrameKey::Other) | None => Err(de::Error::missing_field("payload")),
                }
            }
            Some(FrameKey::Payload) => {
                let mut json = Vec::new();
                map.next_value_seed(Transcribe(&mut json))?;
                match next_frame_key(&mut map)? {
                    Some(FrameKey::Type) => {
                        let tag: BrowserEventType = map.next_value()?;
                        let event = payload_from_json(tag, &json).map_err(de::Error::custom)?;
                        end_of_frame(&mut map, event)
                    }
                    Some(FrameKey::Payload) => Err(de::Error::duplicate_field("payload")),
                    Some(FrameKey::Other) | None => Err(de::Error::missing_field("type")),
                }
            }
            Some(FrameKey::Other) | None => Err(de::Error::missing_field("type")),
        }
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<BrowserEvent, A::Error> {
        let Some(tag) = seq.next_element::<BrowserEventType>()? else {
            return Err(de::Error::invalid_length(0, &self));
        };
        match seq.next_element_seed(BrowserEventPayload(tag))? {
            Some(event) => Ok(event),
            None => Err(de::Error::invalid_length(1, &self)),
        }
    }
}

fn payload_from_json(tag: BrowserEventType, json: &[u8]) -> serde_json::Result<BrowserEvent> {
    // Transcribe wrote it with serde_json: UTF-8. `from_str` (not `from_slice`) so this is
    // the same instance of every payload's Deserialize as a frame read in order.
    let text = std::str::from_utf8(json).map_err(de::Error::custom)?;
    let mut de = serde_json::Deserializer::from_str(text);
    let event = BrowserEventPayload(tag).deserialize(&mut de)?;
    de.end()?;
    Ok(event)
}

impl<'de> Deserialize<'de> for BrowserEvent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_struct("BrowserEvent", &["type", "payload"], BrowserEventVisitor)
    }
}

// ---------------------------------------------------------------- decoding

/// A frame's enum, with the `type` names it knows, so that an unknown type can be told
/// apart from a malformed known one.
pub trait Message: DeserializeOwned {
    const TYPES: &'static [&'static str];
}

// `Message` for `AgentMessage`, `ServerMessage` and `BrowserEvent` comes with each from
// `frames!`.

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// Every listed `type` is one serde knows (a bad payload is malformed, not an unknown
    /// variant), and none is listed twice.
    fn check_types<M: Message + fmt::Debug>() {
        let mut seen = HashSet::new();
        for t in M::TYPES {
            assert!(seen.insert(t), "{t} twice");
            let frame = format!(r#"{{"type":"{t}","payload":null}}"#);
            let err = serde_json::from_str::<M>(&frame).unwrap_err().to_string();
            assert!(!err.contains("unknown variant"), "{t}: {err}");
            assert!(matches!(decode::<M>(&frame), Decoded::Malformed(_)), "{t}");
        }
        let err = serde_json::from_str::<M>(r#"{"type":"nope","payload":null}"#).unwrap_err();
        assert!(err.to_string().contains("unknown variant"), "{err}");
    }

    #[test]
    fn frame_types_come_from_one_list() {
        check_types::<AgentMessage>();
        check_types::<ServerMessage>();
        check_types::<BrowserEvent>();
        assert_eq!(BrowserEvent::TYPES, BrowserEventType::NAMES);
        for (tag, name) in BrowserEventType::ALL.into_iter().zip(BrowserEvent::TYPES) {
            assert_eq!(tag.as_str(), *name);
            assert_eq!(BrowserEventType::parse(name), Some(tag));
        }
        let ack = ServerMessage::Ack(Ack {
            command_id: "c".into(),
            seq: 1,
            complete: false,
        });
        let json = serde_json::to_value(&ack).unwrap();
        assert_eq!(json["type"], ServerMessage::TYPES[3]);
    }
}
