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

/// Host metrics in percent (cpu, ram, swap) and the 1-minute load average.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct Metrics {
    pub cpu: f64,
    pub ram: f64,
    pub swap: f64,
    pub load: f64,
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
    }
}

impl CommandStatus {
    pub fn is_final(self) -> bool {
        !matches!(self, CommandStatus::Queued | CommandStatus::Running)
    }
}

wire_enum! {
    pub enum OutputStream {
        Stdout = "stdout",
        Stderr = "stderr",
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PendingCommand {
    pub command_id: String,
    pub command: CommandKind,
    pub started_at: Timestamp,
}

/// The config repository's desired state, as the dashboard last read it (addition to the
/// contract: the header shows it, and the git and lock compartments compare against it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
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
        }
    }

    pub fn is_busy(&self) -> bool {
        self.pending_command.is_some()
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
