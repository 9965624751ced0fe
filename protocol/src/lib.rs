//! The nixdeck wire contract (`shared/PROTOCOL.md`) as serde types, plus the fleet state
//! machine that both the hub and the browser run. Serde-only on purpose: the agent, the
//! server and the wasm frontend all depend on it, so it must stay small and portable.

pub mod api;
pub mod backoff;
pub mod fleet;
pub mod messages;
pub mod model;
mod names;
pub mod time;

pub use fleet::{Changed, FleetState};
pub use messages::{decode, AgentMessage, BrowserEvent, Decoded, ServerMessage};
pub use model::*;
pub use time::Timestamp;

/// The protocol and dashboard version. Agents whose version differs are "outdated".
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Largest frame an agent may send (PROTOCOL.md: 64 KiB); larger closes with 1009.
pub const AGENT_MAX_FRAME: usize = 64 * 1024;
/// Largest frame a browser may send (PROTOCOL.md: 16 KiB).
pub const BROWSER_MAX_FRAME: usize = 16 * 1024;
/// Default heartbeat interval in seconds.
pub const DEFAULT_HEARTBEAT_S: u32 = 5;
/// A host whose link dies silently is offline after this many missed heartbeats.
pub const MISSED_HEARTBEATS: u32 = 3;
