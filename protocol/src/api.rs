//! REST bodies (PROTOCOL.md "HTTP API"). Request bodies deny unknown fields: a typo in a
//! script (`"comand"`) must be a 422, not a silently defaulted request.

use crate::model::*;
use crate::names::wire_enum;
use crate::Timestamp;
use serde::{Deserialize, Serialize};

wire_enum! {
    /// A user's role, least to most privileged: each may do what the ones before it may
    /// (`Ord` follows this order). The default is the least privileged.
    #[derive(PartialOrd, Ord, Default)]
    pub enum Role {
        /// Sees everything, runs nothing.
        #[default]
        Viewer = "viewer",
        /// Also runs commands and deploys.
        Operator = "operator",
        /// Also manages hosts, users and tokens.
        Admin = "admin",
    }
}

impl Role {
    /// Whether this role may do what `other` may.
    pub fn at_least(self, other: Role) -> bool {
        self >= other
    }
}

/// Every JSON error body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiError {
    pub error: String,
    pub code: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Health {
    pub status: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totp: Option<String>,
    /// Addition for the no-JavaScript login form: where to send the browser (303) after
    /// login. Only same-site paths are honoured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// An addition: `POST /api/account/reauth`, the logged-in user's password (and TOTP or
/// recovery code with 2FA) once more.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReauthRequest {
    pub password: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totp: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LoginResponse {
    pub csrf_token: String,
    /// An addition to the contract: the user's role (viewer, operator, admin).
    #[serde(default)]
    pub role: Role,
    /// An addition: the user's colour theme, so a page that logged in without a reload
    /// shows it at once.
    #[serde(default)]
    pub theme: Theme,
}

wire_enum! {
    /// A user's colour theme for the pages: the browser's preference
    /// (`prefers-color-scheme`), or always light, or always dark.
    #[derive(Default)]
    pub enum Theme {
        #[default]
        System = "system",
        Light = "light",
        Dark = "dark",
    }
}

/// `PUT /api/account/theme` (addition): the user's colour theme, kept per user.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ThemeSetting {
    pub theme: Theme,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionInfo {
    pub username: String,
    pub csrf_token: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateHost {
    pub hostname: String,
    pub host_type: HostType,
    #[serde(default)]
    pub theme_color: Option<String>,
    #[serde(default)]
    pub location: Option<String>,
    #[serde(default)]
    pub device_type: Option<String>,
    /// An addition: the host's first tags (set in the dashboard).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
}

/// `PATCH /api/hosts/{id}`: each field given is changed, each absent one stays. An empty
/// `location` or `device_type` (or `null`) clears it; `tags` replaces the tags set in the
/// dashboard (the agent's own, `Host::agent_tags`, stay: they change in its configuration).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct HostEdit {
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub location: Option<Option<String>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub device_type: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub theme_color: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
}

/// A field that is present, even as `null`, is `Some` (serde's `Option` alone reads a
/// `null` as absent, and then "clear the location" could not be said).
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HostCreated {
    pub host: Host,
    pub agent_token: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentToken {
    pub agent_token: String,
}

/// `GET /api/hosts/{id}/metrics?range=…`: a host's metrics over a range, oldest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MetricsHistory {
    /// The range asked for: `1h`, `24h`, `7d`, `30d` or `1y`.
    pub range: String,
    /// Seconds between points (each point is the average over one step).
    pub step_s: u32,
    pub points: Vec<MetricsPoint>,
}

/// One step of a host's metrics history: the averages of the heartbeats in it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MetricsPoint {
    /// The start of the step.
    pub t: Timestamp,
    pub cpu: f64,
    pub ram: f64,
    pub swap: f64,
    pub load: f64,
    /// Null when no heartbeat in the step reported it (an older agent).
    pub disk: Option<f64>,
}

/// A row's sparkline: a host's CPU over the last hour, one whole percent per minute,
/// oldest first, the last slot being the current minute; `null` where no heartbeat came.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CpuSparkline {
    pub host_id: String,
    pub cpu: Vec<Option<u8>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RefreshResult {
    pub host_id: String,
    pub online: bool,
    pub generation: Option<String>,
    pub agent_version: Option<String>,
    pub agent_outdated: bool,
    pub update_status: UpdateStatus,
    pub pending_pr: Option<PendingPr>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CommandRequest {
    /// Kept as text so an unknown command gets the contract's 422 with a clear sentence.
    #[cfg_attr(feature = "openapi", schema(value_type = CommandKind))]
    pub command: String,
    /// `rollback` only: the generation to go to (None: the previous one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    /// Addition, `switch` and `boot` only: the id of a finished `preview` of this host;
    /// the command activates exactly the store path that preview built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CommandAccepted {
    pub command_id: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CommandRecord {
    pub command_id: String,
    pub command: CommandKind,
    pub status: CommandStatus,
    pub exit_code: Option<i32>,
    pub queued_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub line_count: u64,
    /// An addition: who started the command (a username; `deploy:<job id>` for a deploy's
    /// steps). Absent for commands stored before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    /// An addition, in `GET /api/hosts/{id}/commands`: the Merge & Deploy job that started
    /// the command (`deploy_commands`), so the host page can mark it as the deploy's.
    /// Absent for a command no deploy started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy_id: Option<String>,
    /// An addition, with `deploy_id`: the pull request that deploy merged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy_pr: Option<u64>,
}

/// `GET /api/commands/{id}`: one command with its result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CommandDetail {
    pub command_id: String,
    pub host_id: String,
    pub command: CommandKind,
    pub status: CommandStatus,
    pub exit_code: Option<i32>,
    pub result: Option<CommandResult>,
    pub queued_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub line_count: u64,
    /// An addition: who started the command (a username; `deploy:<job id>` for a deploy's
    /// steps). Absent for commands stored before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BulkRequest {
    #[cfg_attr(feature = "openapi", schema(value_type = CommandKind))]
    pub command: String,
    /// `null` means every online host.
    pub host_ids: Option<Vec<String>>,
    /// Instead of `host_ids`: every host carrying any of these tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
}

/// One host's answer in a bulk run. Untagged, so both arms deny unknown fields: otherwise
/// an error row could be read as a success row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum BulkResult {
    Queued(BulkQueued),
    Failed(BulkFailed),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BulkQueued {
    pub host_id: String,
    pub command_id: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BulkFailed {
    pub host_id: String,
    pub error: String,
    pub code: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BulkResponse {
    pub results: Vec<BulkResult>,
}

/// A canary list as people type it (the page's canary field, `nixdeck ctl deploy
/// --canary`): host ids or names and `tag:NAME`s mixed. Split into what goes in `canary`
/// and in `canary_tags`, each item trimmed, empty items dropped, each kept once in the
/// order given. `tag:` with no name stays, as an empty tag the dashboard refuses.
pub fn split_canary<S: AsRef<str>>(items: &[S]) -> (Vec<String>, Vec<String>) {
    let (mut hosts, mut tags): (Vec<String>, Vec<String>) = (Vec::new(), Vec::new());
    for item in items
        .iter()
        .map(|i| i.as_ref().trim())
        .filter(|i| !i.is_empty())
    {
        let (list, value) = match item.strip_prefix("tag:") {
            Some(tag) => (&mut tags, tag.trim()),
            None => (&mut hosts, item),
        };
        if !list.iter().any(|v| v == value) {
            list.push(value.to_owned());
        }
    }
    (hosts, tags)
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    pub pr_number: u64,
    #[serde(default)]
    pub host_ids: Option<Vec<String>>,
    /// Instead of `host_ids`: every host carrying any of these tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// Additions: a staged rollout. These hosts go first, alone (the canary wave)...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<Vec<String>>,
    /// Addition: the canary wave by tag, besides or instead of `canary`: every target host
    /// carrying any of these tags goes first (`canary = a tag`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_tags: Option<Vec<String>>,
    /// ...then the rest in waves of this many (None or 0: all at once)...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<u32>,
    /// ...and the job stops, skipping the hosts not yet started, once more than this many
    /// hosts failed (None: never stop early).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_failures: Option<u32>,
    /// An addition: the PR's head commit as the operator saw it (`PendingPr.head_sha`). When
    /// the dashboard has since detected another head, the deploy is refused (409
    /// `head_moved`): what is merged is what was reviewed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_sha: Option<String>,
    /// Addition: seconds to wait after each wave succeeded before the next starts, to let
    /// trouble show (None or 0: no wait).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soak_s: Option<u64>,
    /// Addition: what a failed wave does (default `halt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<OnFailure>,
    /// Addition: before merging, preview the PR's head on every target (phase
    /// `previewing`), then wait in `awaiting_confirmation` until an operator confirms
    /// (`POST /api/deploy/{job_id}/confirm`) or cancels.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub preview: bool,
}

wire_enum! {
    /// What a deploy does when a wave fails.
    #[derive(Default)]
    pub enum OnFailure {
        /// Stop; the hosts not yet started are skipped.
        #[default]
        Halt = "halt",
        /// Also roll back the hosts of the failed wave that did switch.
        RollbackAndHalt = "rollback-and-halt",
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobAccepted {
    pub job_id: String,
}

/// `GET /api/deploys`: one Merge & Deploy job, past or running (newest first), with the
/// commands it started on each host (pull, switch, preview, rollback), whose log is
/// `GET /api/commands/{id}/log`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeployRecord {
    pub job: crate::messages::DeployProgress,
    pub started_at: Timestamp,
    /// The last change of its progress: its end, once it is no longer active.
    pub updated_at: Timestamp,
    /// The job's commands in the order they were queued (their duration is
    /// `finished_at - started_at`). A command that retention deleted is not listed.
    pub commands: Vec<DeployCommand>,
}

/// One command a deploy started: the host it ran on and its record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeployCommand {
    pub host_id: String,
    pub record: CommandRecord,
}

/// One audit log entry (`GET /api/audit`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEntry {
    pub at: Timestamp,
    pub actor: String,
    pub ip: Option<String>,
    pub action: String,
    pub target: Option<String>,
    /// `ok`, or the error code (`forbidden`, `busy`, `unauthorized`, …).
    pub result: String,
    pub detail: Option<String>,
    /// Addition: the name of the actor's API token the action came through; absent for a
    /// browser session or the CLI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// `POST /api/account/totp/setup`: the user's password, and while TOTP is on a current code
/// or a recovery code. An addition to the contract, whose route had no body: an empty body
/// still reads (as this with nothing in it) and is refused for the missing password.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TotpSetupRequest {
    #[serde(default)]
    pub password: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

/// Starting TOTP enrollment: the secret, its `otpauth://` URI, and a QR code (SVG).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TotpSetup {
    pub secret: String,
    pub otpauth_uri: String,
    pub qr_svg: String,
    /// The same QR code as a `data:` URI, for an `<img>` under a strict CSP.
    pub qr_data_uri: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TotpConfirm {
    pub code: String,
}

/// Shown once after TOTP is confirmed; each code works once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RecoveryCodes {
    pub recovery_codes: Vec<String>,
}

/// A user as the Users page lists it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserInfo {
    pub username: String,
    pub role: Role,
    pub disabled: bool,
    pub created_at: Timestamp,
}

/// `POST /api/tokens`: a personal API token for the logged-in user. `role` may not be above
/// the user's; `expires_in_days` (1 to 3650) absent means the token never expires.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateApiToken {
    pub name: String,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_days: Option<u32>,
}

/// `201` to `POST /api/tokens`: the token itself, shown this once (only its hash is kept).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiTokenCreated {
    pub id: String,
    pub token: String,
}

/// A token as `GET /api/tokens` lists it: never the token or its hash.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiTokenInfo {
    pub id: String,
    /// The owner (the listing is the caller's own unless an admin asks for `?all=true`).
    pub username: String,
    pub name: String,
    /// The role the token was made with; a request acts with the lower of it and the
    /// owner's current role.
    pub role: Role,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    /// Updated at most about once a minute.
    pub last_used_at: Option<Timestamp>,
    /// Whether `expires_at` has passed (by the server's clock).
    pub expired: bool,
}

// ------------------------------------------------------------------------ notifications

wire_enum! {
    /// Where a notification goes (`POST /api/notifications/targets`).
    pub enum NotifyKind {
        /// `POST` of the JSON message (`docs/API.md`, "Notifications").
        Webhook = "webhook",
        /// `POST` of the text to an ntfy topic URL.
        Ntfy = "ntfy",
        /// `POST /message` of a Gotify server, with an application token.
        Gotify = "gotify",
        /// A Slack-compatible incoming webhook (`{"text"}`).
        Slack = "slack",
        /// A Discord-compatible webhook (`{"content"}`).
        Discord = "discord",
        /// Mail over SMTP.
        Email = "email",
    }
}

wire_enum! {
    /// What a notification rule waits for.
    pub enum NotifyEvent {
        /// A host has been offline for more than `after_s` seconds.
        HostOffline = "host_offline",
        /// A host is back after being offline for at least `after_s` seconds (default 60).
        HostOnline = "host_online",
        /// A command ended `error`, `timeout`, `lost` or `rolled_back`.
        CommandFailed = "command_failed",
        /// Addition: a deploy job started (its first phase, `previewing` or `merging`).
        DeployStarted = "deploy_started",
        /// A deploy job finished (phase `done`).
        DeployFinished = "deploy_finished",
        /// A deploy job failed or was halted (phase `failed`).
        DeployFailed = "deploy_failed",
        /// A host's compartment has been red for more than `after_s` seconds.
        CompartmentRed = "compartment_red",
        /// A host's agent is older than the dashboard.
        AgentOutdated = "agent_outdated",
        /// Addition: the message of a target's "send test" (never a rule's event).
        Test = "test",
    }
}

/// `POST /api/notifications/targets`. `url` is required for every kind but `email`;
/// `settings` holds what the kind needs besides (see `docs/API.md`). Secrets (the URL,
/// `settings.token`, `settings.password`) are sealed at rest and never shown again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateNotifyTarget {
    pub name: String,
    pub kind: NotifyKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub settings: Option<serde_json::Value>,
}

/// A target as listed: its URL shortened to scheme and host (`https://hooks.example/…`),
/// its settings without secrets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NotifyTarget {
    pub id: String,
    pub name: String,
    pub kind: NotifyKind,
    /// The URL's scheme and host only; None for `email`.
    pub url: Option<String>,
    /// The settings without `token` or `password`.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub settings: serde_json::Value,
    /// Whether a secret (token or password) is stored for it.
    pub has_secret: bool,
    pub created_at: Timestamp,
}

/// Which hosts a rule watches: all (absent or both lists empty), those with any of
/// `tags`, or those named in `host_ids`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NotifyScope {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_ids: Vec<String>,
}

/// Quiet hours, `HH:MM` in UTC; `from` after `to` spans midnight. A message made in them
/// is held and sent when they end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct QuietHours {
    pub from: String,
    pub to: String,
}

/// `POST /api/notifications/rules`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateNotifyRule {
    pub event: NotifyEvent,
    /// `host_offline`, `compartment_red`: for more than this many seconds (default 0);
    /// `host_online`: after an absence of at least this long (default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_s: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<NotifyScope>,
    pub target_ids: Vec<String>,
    /// A host named in a message of this rule is left out of the rule's messages for
    /// this many seconds (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown_s: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet: Option<QuietHours>,
}

/// A rule as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NotifyRule {
    pub id: String,
    pub event: NotifyEvent,
    pub after_s: u32,
    pub scope: NotifyScope,
    pub target_ids: Vec<String>,
    pub cooldown_s: u32,
    pub quiet: Option<QuietHours>,
    pub created_at: Timestamp,
}

/// What a target receives (a `webhook` gets exactly this as JSON). `idempotency_key` is
/// the same on every attempt of one message to one target, also across restarts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NotifyMessage {
    pub event: NotifyEvent,
    pub idempotency_key: String,
    pub at: Timestamp,
    pub hosts: Vec<String>,
    pub summary: String,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub details: serde_json::Value,
}

/// One delivery attempt (`GET /api/notifications/targets/{id}/deliveries`, the last 100).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NotifyDelivery {
    pub at: Timestamp,
    pub idempotency_key: String,
    pub event: NotifyEvent,
    pub attempt: u32,
    /// `sent`, `retrying` or `given_up`.
    pub status: String,
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_canary_list_splits_into_hosts_and_tags() {
        let (hosts, tags) = split_canary(&[
            "web-2",
            " tag:canary",
            "web-1",
            "",
            "tag: db ",
            "web-2",
            "tag:canary",
        ]);
        assert_eq!(hosts, ["web-2", "web-1"]);
        assert_eq!(tags, ["canary", "db"]);
        let (hosts, tags) = split_canary(&["tag:"]);
        assert!(hosts.is_empty());
        assert_eq!(tags, [""]);
        assert_eq!(split_canary::<&str>(&[]), (vec![], vec![]));
    }
}
