//! Agent frames as the dashboard's agent socket reads them, written out as JSON text
//! (not built from `protocol`'s types, so the tests pin the wire format).

use serde_json::json;

/// A minimal `register` frame for a NixOS host at 1 s heartbeats.
pub fn register(hostname: &str) -> String {
    json!({"type": "register", "payload": {"hostname": hostname, "host_type": "nixos",
        "agent_version": "0.1.0", "heartbeat_interval_s": 1}})
    .to_string()
}

/// A `heartbeat` frame with these CPU and load figures, no generation and no command.
pub fn heartbeat(cpu: f64, load: f64) -> String {
    json!({"type": "heartbeat", "payload": {"metrics": {"cpu": cpu, "ram": 1.0, "swap": 0.0, "load": load},
        "generation": null, "lock_hash": null, "pending_command": null}})
    .to_string()
}
