//! `BrowserEvent`'s hand-written `Deserialize` against the derive it replaced
//! (`#[serde(tag = "type", content = "payload", rename_all = "snake_case")]`): the same input
//! must give the same event, or fail for both.
//!
//! Runs over edge cases, the fuzz seeds, and each of those with `payload` moved before
//! `type`. `BROWSER_EVENT_CORPUS=fuzz/corpus/browser_event cargo test -p protocol --test
//! browser_event_decode` also runs a local fuzz corpus.

use protocol::messages::*;
use serde::Deserialize;
use serde_json::Value;
use std::path::Path;

/// The derive, as it was.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", content = "payload", rename_all = "snake_case")]
enum Derived {
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

impl From<Derived> for BrowserEvent {
    fn from(d: Derived) -> Self {
        match d {
            Derived::Snapshot(p) => BrowserEvent::Snapshot(p),
            Derived::HostHeartbeat(p) => BrowserEvent::HostHeartbeat(p),
            Derived::HostOffline(p) => BrowserEvent::HostOffline(p),
            Derived::HostUpdated(p) => BrowserEvent::HostUpdated(p),
            Derived::HostAdded(p) => BrowserEvent::HostAdded(p),
            Derived::HostRemoved(p) => BrowserEvent::HostRemoved(p),
            Derived::CommandQueued(p) => BrowserEvent::CommandQueued(p),
            Derived::CommandOutput(p) => BrowserEvent::CommandOutput(p),
            Derived::CommandComplete(p) => BrowserEvent::CommandComplete(p),
            Derived::PendingPr(p) => BrowserEvent::PendingPr(p),
            Derived::DeployProgress(p) => BrowserEvent::DeployProgress(p),
            Derived::DesiredState(p) => BrowserEvent::DesiredState(p),
        }
    }
}

/// Same outcome from text (and from a `Value`, which the contract tests use).
fn same(text: &str) -> bool {
    let ours = serde_json::from_str::<BrowserEvent>(text).ok();
    let derived = serde_json::from_str::<Derived>(text)
        .ok()
        .map(BrowserEvent::from);
    assert_eq!(ours, derived, "from_str differs for {text}");
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        let ours = serde_json::from_value::<BrowserEvent>(v.clone()).ok();
        let derived = serde_json::from_value::<Derived>(v)
            .ok()
            .map(BrowserEvent::from);
        assert_eq!(ours, derived, "from_value differs for {text}");
    }
    ours.is_some()
}

/// `text` itself and, when it is a frame object, the same frame with `payload` first.
fn check(text: &str) {
    same(text);
    if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(text) {
        if let (Some(t), Some(p)) = (m.get("type"), m.get("payload")) {
            same(&format!(r#"{{"payload":{p},"type":{t}}}"#));
            same(&format!(
                r#"{{"x":[1,{{"y":null}}],"payload":{p},"z":1.5,"type":{t},"w":"v"}}"#
            ));
        }
    }
}

const HOST: &str = r##"{"id":"web-1","hostname":"web-1","host_type":"nixos","theme_color":"#7aa2f7","location":"home","device_type":null,"online":true,"last_seen":"2026-11-25T17:46:03Z","pending_command":null,"metrics":{"cpu":43.475300000000004,"ram":40.0,"swap":0.0,"load":0.42},"generation":"abc","agent_version":"0.1.0","agent_outdated":false,"os_version":"24.11","nixpkgs_version":null,"repo_url":null,"repo_dir":"/etc/nixos","update_status":{"agent":{"status":"ok","message":"m","checked_at":null},"git":{"status":"ok","message":"m","checked_at":null},"lock":{"status":"ok","message":"m","checked_at":null},"system":{"status":"ok","message":"m","checked_at":null},"tests":{"status":"ok","message":"m","checked_at":null}}}"##;

#[test]
fn accepts_and_rejects_what_the_derive_did() {
    let host_updated = format!(r#"{{"type":"host_updated","payload":{{"host":{HOST}}}}}"#);
    assert!(same(&host_updated));
    check(&host_updated);
    let accepted = [
        r#"{"type":"host_offline","payload":{"host_id":"a"}}"#,
        r#"{"payload":{"host_id":"a"},"type":"host_offline"}"#,
        r#"{"type":"host_offline","payload":{"host_id":"a","extra":[1,2]},"extra":{}}"#,
        r#"{"extra":1,"payload":{"host_id":"a"},"more":"x","type":"host_removed","last":null}"#,
        r#"{"type":{"host_offline":null},"payload":{"host_id":"a"}}"#,
        r#"{"payload":{"host_id":"a"},"type":{"host_offline":null}}"#,
        r#"["host_offline",{"host_id":"a"}]"#,
        r#"["host_offline",["a"]]"#,
        r#"{"type":"host_offline","payload":["a"]}"#,
        r#"{"payload":["a"],"type":"host_offline"}"#,
        r#"{"payload":{"host_id":"a\u00e9\n\"q\"\\"},"type":"host_offline"}"#,
        r#"{"payload":{"host_id":"h","online":true,"last_seen":"2026-11-25T17:46:03Z","metrics":{"cpu":3.765031934612e-22,"ram":1e300,"swap":-0.0,"load":5}},"type":"host_heartbeat"}"#,
        r#"{"payload":{"host_id":"h","command_id":"c","status":"ok","exit_code":-3,"duration_ms":18446744073709551615},"type":"command_complete"}"#,
        r#"{"payload":{"pr":null},"type":"pending_pr"}"#,
        // Other keys are skipped unread, as by the derive.
        r#"{"payload":{"host_id":"a"},"x":1e400,"type":"host_offline"}"#,
        r#"{"payload":{"desired":null},"type":"desired_state"}"#,
    ];
    for text in accepted {
        assert!(same(text), "should decode: {text}");
        check(text);
    }
    let rejected = [
        "",
        "null",
        "[]",
        r#"["host_offline"]"#,
        r#"["host_offline",{"host_id":"a"},1]"#,
        "{}",
        r#"{"type":"host_offline"}"#,
        r#"{"payload":{"host_id":"a"}}"#,
        r#"{"type":"nope","payload":{}}"#,
        r#"{"payload":{},"type":"nope"}"#,
        r#"{"type":"host_offline","payload":{}}"#,
        r#"{"payload":{},"type":"host_offline"}"#,
        r#"{"type":"host_offline","type":"host_offline","payload":{"host_id":"a"}}"#,
        r#"{"type":"host_offline","payload":{"host_id":"a"},"type":"host_offline"}"#,
        r#"{"type":"host_offline","payload":{"host_id":"a"},"payload":{"host_id":"a"}}"#,
        r#"{"payload":{"host_id":"a"},"payload":{"host_id":"a"},"type":"host_offline"}"#,
        r#"{"payload":{"host_id":"a"},"type":"host_offline","type":"host_offline"}"#,
        r#"{"payload":{"host_id":"a","host_id":"b"},"type":"host_offline"}"#,
        r#"{"payload":{"host_id":"a","x":1e400},"type":"host_offline"}"#,
        r#"{"payload":{"host_id":"a"},"type":{"host_offline":1}}"#,
        r#"{"payload":{"host_id":"a"},"type":{"host_offline":null,"x":null}}"#,
        r#"{"payload":{"host_id":"h","command_id":"c","status":"ok","exit_code":1.0,"duration_ms":1},"type":"command_complete"}"#,
        r#"{"payload":{"host_id":"h","command_id":"c","status":"ok","exit_code":1,"duration_ms":-1},"type":"command_complete"}"#,
        r#"{"payload":{"host_id":"h","online":true,"last_seen":"9999-12-31T23:59:59-01:00","metrics":null},"type":"host_heartbeat"}"#,
        r#"{"payload":{"host_id":"a"},"type":"host_offline""#,
    ];
    for text in rejected {
        assert!(!same(text), "should not decode: {text}");
        check(text);
    }
    // Nesting: the derive buffered a payload-first payload with the frame's depth budget.
    for depth in [100, 126, 127, 128, 200] {
        let deep = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        same(&format!(
            r#"{{"payload":{{"host_id":"a","x":{deep}}},"type":"host_offline"}}"#
        ));
        same(&format!(
            r#"{{"type":"host_offline","payload":{{"host_id":"a","x":{deep}}}}}"#
        ));
    }
}

/// The one difference, on purpose: serde's buffer reads a unit variant's value `{}` as `()`,
/// so the derive took `{"ok": {}}` for the enum `"ok"`, but only when the payload came before
/// the type (read in order, serde_json wants `null` there). Now both orders reject it.
#[test]
fn payload_first_no_longer_takes_empty_object_as_unit() {
    let body =
        r#"{"host_id":"h","command_id":"c","status":{"ok":{}},"exit_code":0,"duration_ms":1}"#;
    let first = format!(r#"{{"payload":{body},"type":"command_complete"}}"#);
    let in_order = format!(r#"{{"type":"command_complete","payload":{body}}}"#);
    assert!(serde_json::from_str::<Derived>(&first).is_ok());
    assert!(serde_json::from_str::<Derived>(&in_order).is_err());
    assert!(serde_json::from_str::<BrowserEvent>(&first).is_err());
    assert!(serde_json::from_str::<BrowserEvent>(&in_order).is_err());
    let null = body.replace("{}", "null");
    assert!(same(&format!(
        r#"{{"payload":{null},"type":"command_complete"}}"#
    )));
}

fn run_dir(dir: &Path) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        check(&text);
        for line in text.split('\n') {
            check(line);
        }
        n += 1;
    }
    n
}

#[test]
fn fuzz_seeds_decode_as_before() {
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/browser_event");
    assert!(run_dir(&seeds) > 0);
    if let Ok(corpus) = std::env::var("BROWSER_EVENT_CORPUS") {
        eprintln!("{} corpus files checked", run_dir(Path::new(&corpus)));
    }
}
