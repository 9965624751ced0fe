//! The shared objects of PROTOCOL.md: Host, StatusCheck, Metrics and friends.

use crate::names::wire_enum;
use crate::Timestamp;
use serde::{Deserialize, Serialize};

/// A host id is the lower-cased hostname: `[a-z0-9][a-z0-9._-]{0,62}`.
/// Anything else is rejected, never silently rewritten.
pub fn is_valid_host_id(id: &str) -> bool {
    let bytes = id.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && matches!(bytes[0], b'a'..=b'z' | b'0'..=b'9')
        && bytes[1..]
            .iter()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'))
}

/// Most tags a host carries (the contract's bound).
pub const MAX_TAGS: usize = 32;

/// A tag as the contract writes it: `[a-z0-9][a-z0-9._-]{0,31}`.
pub fn is_valid_tag(tag: &str) -> bool {
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 32
        && matches!(bytes[0], b'a'..=b'z' | b'0'..=b'9')
        && bytes[1..]
            .iter()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'))
}

/// A host's tags: the dashboard's and the agent's together, sorted, each once.
pub fn merge_tags(dashboard: &[String], agent: &[String]) -> Vec<String> {
    let mut tags: Vec<String> = dashboard.iter().chain(agent).cloned().collect();
    tags.sort();
    tags.dedup();
    tags
}

/// `#rrggbb`, the only colour form the contract allows.
pub fn is_valid_theme_color(c: &str) -> bool {
    let b = c.as_bytes();
    b.len() == 7 && b[0] == b'#' && b[1..].iter().all(u8::is_ascii_hexdigit)
}

wire_enum! {
    #[derive(Default)]
    pub enum HostType {
        #[default]
        Nixos = "nixos",
        Macos = "macos",
    }
}

impl HostType {
    /// The seed's default theme colours: Tokyo Night blue for NixOS, purple for macOS.
    pub fn default_color(self) -> &'static str {
        match self {
            HostType::Nixos => "#7aa2f7",
            HostType::Macos => "#bb9af7",
        }
    }
}

wire_enum! {
    #[derive(Default)]
    pub enum CheckStatus {
        Ok = "ok",
        Outdated = "outdated",
        Error = "error",
        #[default]
        Unknown = "unknown",
        Working = "working",
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StatusCheck {
    pub status: CheckStatus,
    pub message: String,
    pub checked_at: Option<Timestamp>,
}

impl StatusCheck {
    pub fn new(status: CheckStatus, message: impl Into<String>, at: Option<Timestamp>) -> Self {
        StatusCheck {
            status,
            message: message.into(),
            checked_at: at,
        }
    }
    pub fn unknown(message: impl Into<String>) -> Self {
        Self::new(CheckStatus::Unknown, message, None)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UpdateStatus {
    pub agent: StatusCheck,
    pub git: StatusCheck,
    pub lock: StatusCheck,
    pub system: StatusCheck,
    pub tests: StatusCheck,
}

impl UpdateStatus {
    /// The compartments' names on the wire, in display order.
    pub const NAMES: [&'static str; 5] = ["agent", "git", "lock", "system", "tests"];

    /// The five checks, in the order of `NAMES`.
    pub fn checks(&self) -> [&StatusCheck; 5] {
        [
            &self.agent,
            &self.git,
            &self.lock,
            &self.system,
            &self.tests,
        ]
    }
}

/// Host metrics in percent (cpu, ram, swap, disk) and the 1-minute load average.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Metrics {
    pub cpu: f64,
    pub ram: f64,
    pub swap: f64,
    pub load: f64,
    /// An addition: how full the root filesystem is, in percent. Absent from older agents
    /// (and left out of the JSON when unknown, so theirs is unchanged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<f64>,
}

wire_enum! {
    pub enum CommandKind {
        Pull = "pull",
        Switch = "switch",
        PullSwitch = "pull-switch",
        Test = "test",
        Update = "update",
        Rollback = "rollback",
        Refresh = "refresh",
        Restart = "restart",
        /// Build the target and diff it against the current system; activate nothing.
        Preview = "preview",
        /// Build, set the system profile, activate at the next boot.
        Boot = "boot",
    }
}

wire_enum! {
    /// queued → running → ok | error | stopped | timeout | lost | abandoned
    pub enum CommandStatus {
        Queued = "queued",
        Running = "running",
        Ok = "ok",
        Error = "error",
        Stopped = "stopped",
        Timeout = "timeout",
        Lost = "lost",
        Abandoned = "abandoned",
        /// The agent put the previous generation back: the activation or the health gate
        /// failed. A failure wherever results are counted.
        RolledBack = "rolled_back",
    }
}

impl CommandStatus {
    pub fn is_final(self) -> bool {
        !matches!(self, CommandStatus::Queued | CommandStatus::Running)
    }

    /// Whether a final status counts as success. Only `ok` does: `rolled_back` in
    /// particular is a failure everywhere (counts, colours, deploy waves, notifications).
    pub fn is_success(self) -> bool {
        self == CommandStatus::Ok
    }
}

/// One generation of the host's system profile (`<profile>-<number>-link`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Generation {
    pub number: u64,
    pub created_at: Timestamp,
    pub store_path: String,
    /// The profile points at it.
    pub current: bool,
    /// The machine booted it (`/run/booted-system`).
    pub booted: bool,
}

wire_enum! {
    /// How a package changes between two closures (`nix store diff-closures`).
    pub enum ChangeKind {
        Added = "added",
        Removed = "removed",
        Upgraded = "upgraded",
        Downgraded = "downgraded",
        /// Versions that do not order (several versions on a side, or the same version
        /// rebuilt with another size).
        Changed = "changed",
    }
}

/// One line of `nix store diff-closures`: a package's versions before and after (None:
/// absent on that side).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PackageChange {
    pub name: String,
    pub old: Option<String>,
    pub new: Option<String>,
    /// Addition: added, removed, upgraded, downgraded or changed (by Nix's version order).
    pub kind: ChangeKind,
}

impl PackageChange {
    pub fn new(name: &str, old: Option<&str>, new: Option<&str>, kind: ChangeKind) -> Self {
        PackageChange {
            name: name.to_owned(),
            old: old.map(str::to_owned),
            new: new.map(str::to_owned),
            kind,
        }
    }
}

/// What a switch to the previewed target would change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClosureDiff {
    pub changes: Vec<PackageChange>,
    pub closure_bytes_before: u64,
    pub closure_bytes_after: u64,
    /// Addition: the target's kernel differs from the running one, so activating it
    /// needs a reboot to take full effect.
    #[serde(default)]
    pub reboot_needed: bool,
    /// Addition: changes left out to keep the frame under the agent frame limit.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub truncated: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A command's structured result (`command_complete.result`, `GET /api/commands/{id}`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CommandResult {
    /// `preview`: the closure diff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<ClosureDiff>,
    /// `switch`, `boot`, `rollback`: the generation the profile points at afterwards (for
    /// `rolled_back`: the one it was put back to).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    /// Addition: the store path built (`preview`) or activated. A switch started from a
    /// preview activates exactly this path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_path: Option<String>,
}

wire_enum! {
    pub enum OutputStream {
        Stdout = "stdout",
        Stderr = "stderr",
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PendingCommand {
    pub command_id: String,
    pub command: CommandKind,
    pub started_at: Timestamp,
}

/// The config repository's desired state, as the dashboard last read it (addition to the
/// contract: the header shows it, and the git and lock compartments compare against it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DesiredState {
    /// Where it comes from: `github:owner/name` or the version.json URL.
    pub source: String,
    pub branch: String,
    /// The branch head; None until the first successful read.
    pub commit: Option<String>,
    pub commit_url: Option<String>,
    pub message: Option<String>,
    pub committed_at: Option<Timestamp>,
    /// SHA-256 of the branch's flake.lock; None when unknown (then lock goes by age).
    pub lock_hash: Option<String>,
    /// When the source last answered.
    pub checked_at: Option<Timestamp>,
    /// Why the last read failed (the remote is unreachable or refused); None when fine.
    pub error: Option<String>,
    /// Set while GitHub rate-limits us: the last known state stays in force until then.
    pub rate_limited_until: Option<Timestamp>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PendingPr {
    pub number: u64,
    pub title: String,
    pub url: String,
    pub mergeable: bool,
    /// Addition: the PR's head commit as the dashboard detected it. Merge & Deploy merges
    /// this commit and nothing else (GitHub refuses when the branch has moved since).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_sha: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Host {
    pub id: String,
    pub hostname: String,
    pub host_type: HostType,
    pub theme_color: String,
    pub location: Option<String>,
    pub device_type: Option<String>,
    pub online: bool,
    pub last_seen: Option<Timestamp>,
    pub pending_command: Option<PendingCommand>,
    pub metrics: Option<Metrics>,
    pub generation: Option<String>,
    pub agent_version: Option<String>,
    pub agent_outdated: bool,
    pub os_version: Option<String>,
    pub nixpkgs_version: Option<String>,
    pub repo_url: Option<String>,
    pub repo_dir: Option<String>,
    pub update_status: UpdateStatus,
    /// An addition: the host enrolled itself with the enrollment token and waits for an
    /// admin's approval; it gets no commands until then. Absent (false) for every other
    /// host, so their JSON is unchanged.
    #[serde(default, skip_serializing_if = "is_false")]
    pub pending_approval: bool,
    /// The system profile's generations, oldest first, as the agent last reported them.
    #[serde(default)]
    pub generations: Vec<Generation>,
    /// The booted system's kernel differs from the current system's.
    #[serde(default)]
    pub reboot_needed: bool,
    /// Every tag of the host, sorted: the ones set in the dashboard and the agent's own.
    #[serde(default)]
    pub tags: Vec<String>,
    /// An addition: the tags that come from the agent's configuration (a subset of
    /// `tags`); they change there, not in the dashboard. Absent when there are none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agent_tags: Vec<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Host {
    /// A host the dashboard knows of but has never heard from.
    pub fn new(id: &str, host_type: HostType) -> Self {
        Host {
            id: id.to_owned(),
            hostname: id.to_owned(),
            host_type,
            theme_color: host_type.default_color().to_owned(),
            location: None,
            device_type: None,
            online: false,
            last_seen: None,
            pending_command: None,
            metrics: None,
            generation: None,
            agent_version: None,
            agent_outdated: false,
            os_version: None,
            nixpkgs_version: None,
            repo_url: None,
            repo_dir: None,
            update_status: UpdateStatus::default(),
            pending_approval: false,
            generations: Vec::new(),
            reboot_needed: false,
            tags: Vec::new(),
            agent_tags: Vec::new(),
        }
    }

    pub fn is_busy(&self) -> bool {
        self.pending_command.is_some()
    }

    /// The tags set in the dashboard: all but the agent's own.
    pub fn dashboard_tags(&self) -> Vec<String> {
        self.tags
            .iter()
            .filter(|t| !self.agent_tags.contains(t))
            .cloned()
            .collect()
    }

    /// Whether the host carries any of `tags`.
    pub fn has_any_tag(&self, tags: &[String]) -> bool {
        self.tags.iter().any(|t| tags.contains(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ids() {
        for ok in ["a", "web-1", "db.example", "x_y", "0abc"] {
            assert!(is_valid_host_id(ok), "{ok}");
        }
        let long = "a".repeat(64);
        for bad in ["", "Web", "-a", ".a", "a b", "a/b", "ä", long.as_str()] {
            assert!(!is_valid_host_id(bad), "{bad}");
        }
        assert!(is_valid_host_id(&"a".repeat(63)));
    }

    #[test]
    fn tags() {
        for ok in ["web", "0", "canary", "eu-west.1", "a_b", &"a".repeat(32)] {
            assert!(is_valid_tag(ok), "{ok}");
        }
        let long = "a".repeat(33);
        for bad in [
            "",
            "Web",
            "-a",
            ".a",
            "_a",
            "a b",
            "a/b",
            "a:b",
            "ä",
            long.as_str(),
        ] {
            assert!(!is_valid_tag(bad), "{bad}");
        }
        let merged = merge_tags(&["web".into(), "db".into()], &["web".into(), "eu".into()]);
        assert_eq!(merged, ["db", "eu", "web"]);
        let mut host = Host::new("a", HostType::Nixos);
        host.tags = merged;
        host.agent_tags = vec!["eu".into(), "web".into()];
        assert_eq!(host.dashboard_tags(), ["db"]);
        assert!(host.has_any_tag(&["x".into(), "db".into()]));
        assert!(!host.has_any_tag(&["x".into()]));
    }

    #[test]
    fn colors() {
        assert!(is_valid_theme_color("#7aa2f7"));
        assert!(!is_valid_theme_color("7aa2f7"));
        assert!(!is_valid_theme_color("#7aa2f"));
        assert!(!is_valid_theme_color("#7aa2fg"));
        assert!(!is_valid_theme_color("red"));
    }

    #[test]
    fn command_names_match_contract() {
        for k in CommandKind::ALL {
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.as_str()));
            assert_eq!(CommandKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(CommandKind::parse("reboot"), None);
    }
}
