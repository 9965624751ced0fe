//! The exact JSON shapes of PROTOCOL.md parse, and every message round-trips.

use protocol::api::*;
use protocol::messages::*;
use protocol::*;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

/// Parse contract JSON into T, serialise it back, and compare as JSON values.
fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(v: Value) -> T {
    let parsed: T = serde_json::from_value(v.clone()).expect("contract JSON parses");
    let back = serde_json::to_value(&parsed).unwrap();
    assert_eq!(back, v, "round trip changed the JSON");
    let again: T = serde_json::from_value(back).unwrap();
    assert_eq!(again, parsed);
    parsed
}

fn check(status: &str) -> Value {
    json!({"status": status, "message": "m", "checked_at": "2026-11-25T17:46:03Z"})
}

fn host_json() -> Value {
    json!({
        "id": "web-1", "hostname": "web-1", "host_type": "nixos", "theme_color": "#7aa2f7",
        "location": "home", "device_type": null, "online": true,
        "last_seen": "2026-11-25T17:46:03Z",
        "pending_command": {"command_id": "c1", "command": "pull-switch", "started_at": "2026-11-25T17:46:00Z"},
        "metrics": {"cpu": 12.5, "ram": 40.0, "swap": 0.0, "load": 0.42},
        "generation": "abc1234def", "agent_version": "0.1.0", "agent_outdated": false,
        "os_version": "24.11", "nixpkgs_version": "24.11.1234", "repo_url": null,
        "repo_dir": "/etc/nixos",
        "generations": [
            {"number": 41, "created_at": "2026-11-20T10:00:00Z", "store_path": "/nix/store/a-nixos-system-web-1-26.05.1", "current": false, "booted": true},
            {"number": 42, "created_at": "2026-11-25T17:00:00Z", "store_path": "/nix/store/b-nixos-system-web-1-26.05.2", "current": true, "booted": false}
        ],
        "reboot_needed": true,
        "tags": ["canary", "web"], "agent_tags": ["web"],
        "update_status": {"agent": check("ok"), "git": check("outdated"), "lock": check("error"),
                          "system": check("unknown"), "tests": {"status": "working", "message": "", "checked_at": null}}
    })
}

#[test]
fn agent_messages() {
    let reg: AgentMessage = round_trip(json!({"type": "register", "payload": {
        "hostname": "web-1", "host_type": "macos", "agent_version": "0.1.0", "os_version": "14.2",
        "nixpkgs_version": null, "generation": "abc", "lock_hash": "ff", "repo_url": "https://x/y.git",
        "repo_dir": "/r", "branch": "main", "heartbeat_interval_s": 5, "theme_color": "#bb9af7",
        "location": "work", "device_type": "laptop",
        "running_command": {"command_id": "c1", "command": "switch", "next_seq": 7},
        "tags": ["laptops"]}}));
    match reg {
        AgentMessage::Register(r) => {
            assert_eq!(r.host_type, HostType::Macos);
            assert_eq!(r.tags, Some(vec!["laptops".to_owned()]));
            assert_eq!(r.running_command.unwrap().next_seq, 7);
        }
        other => panic!("{other:?}"),
    }
    round_trip::<AgentMessage>(json!({"type": "heartbeat", "payload": {
        "metrics": {"cpu": 1.0, "ram": 2.0, "swap": 3.0, "load": 4.0}, "generation": "abc",
        "lock_hash": null, "pending_command": {"command_id": "c1", "command": "test"}}}));
    round_trip::<AgentMessage>(json!({"type": "heartbeat", "payload": {
        "metrics": null, "generation": null, "lock_hash": null, "pending_command": null}}));
    round_trip::<AgentMessage>(
        json!({"type": "status", "payload": {"checks": {"system": check("ok")}}}),
    );
    round_trip::<AgentMessage>(json!({"type": "output", "payload": {
        "command_id": "c1", "seq": 1, "stream": "stderr", "line": "<b>hi</b>"}}));
    round_trip::<AgentMessage>(json!({"type": "command_complete", "payload": {
        "command_id": "c1", "status": "stopped", "exit_code": null, "duration_ms": 12, "last_seq": 3}}));
    round_trip::<AgentMessage>(
        json!({"type": "command_rejected", "payload": {"command_id": "c1", "reason": "busy"}}),
    );
    // The next stage: results, rolled_back, generations after a switch.
    round_trip::<AgentMessage>(json!({"type": "command_complete", "payload": {
        "command_id": "c2", "status": "ok", "exit_code": 0, "duration_ms": 900, "last_seq": 9,
        "result": {"diff": {"changes": [
            {"name": "openssl", "old": "3.0.14", "new": "3.0.15", "kind": "upgraded"},
            {"name": "zlib", "old": null, "new": "1.3", "kind": "added"},
            {"name": "curl", "old": "8.1", "new": null, "kind": "removed"}],
            "closure_bytes_before": 1416, "closure_bytes_after": 2048, "reboot_needed": false},
            "store_path": "/nix/store/b-nixos-system-web-1-26.05.2"}}}));
    round_trip::<AgentMessage>(json!({"type": "command_complete", "payload": {
        "command_id": "c3", "status": "rolled_back", "exit_code": null, "duration_ms": 120000,
        "last_seq": 20, "result": {"generation": 41}}}));
    round_trip::<AgentMessage>(json!({"type": "status", "payload": {"checks": {},
        "generations": host_json()["generations"].clone(), "reboot_needed": true}}));
}

#[test]
fn register_minimal_defaults_interval() {
    let m: AgentMessage = serde_json::from_value(json!({"type": "register", "payload": {
        "hostname": "a", "host_type": "nixos", "agent_version": "1"}}))
    .unwrap();
    let AgentMessage::Register(r) = m else {
        panic!()
    };
    assert_eq!(r.heartbeat_interval_s, 5);
    assert!(r.running_command.is_none());
}

#[test]
fn server_to_agent_messages() {
    round_trip::<ServerMessage>(json!({"type": "registered", "payload": {
        "host_id": "web-1", "dashboard_version": "0.1.0", "heartbeat_interval_s": 5}}));
    round_trip::<ServerMessage>(json!({"type": "registered", "payload": {
        "host_id": "web-1", "dashboard_version": "0.1.0", "heartbeat_interval_s": 5, "agent_token": "t"}}));
    for c in [
        "pull",
        "switch",
        "pull-switch",
        "test",
        "update",
        "rollback",
        "refresh",
        "restart",
        "preview",
        "boot",
    ] {
        round_trip::<ServerMessage>(
            json!({"type": "command", "payload": {"command_id": "c", "command": c}}),
        );
    }
    round_trip::<ServerMessage>(json!({"type": "command", "payload": {"command_id": "c",
        "command": "rollback", "generation": 41}}));
    round_trip::<ServerMessage>(json!({"type": "command", "payload": {"command_id": "c",
        "command": "switch", "store_path": "/nix/store/b-nixos-system-web-1-26.05.2"}}));
    round_trip::<ServerMessage>(json!({"type": "stop", "payload": {"command_id": "c"}}));
    round_trip::<ServerMessage>(
        json!({"type": "ack", "payload": {"command_id": "c", "seq": 9, "complete": true}}),
    );
}

#[test]
fn browser_events() {
    let snap: BrowserEvent = round_trip(json!({"type": "snapshot", "payload": {
        "hosts": [host_json()],
        "pending_pr": {"number": 42, "title": "flake.lock: Update", "url": "https://g/pr/42", "mergeable": true},
        "dashboard_version": "0.1.0", "server_time": "2026-11-25T17:46:03Z"}}));
    let state = FleetState::from_snapshot(match snap {
        BrowserEvent::Snapshot(s) => s,
        _ => unreachable!(),
    });
    assert_eq!(
        state.hosts["web-1"].update_status.lock.status,
        CheckStatus::Error
    );
    assert_eq!(state.pending_pr.as_ref().unwrap().number, 42);

    round_trip::<BrowserEvent>(json!({"type": "host_heartbeat", "payload": {
        "host_id": "web-1", "online": true, "last_seen": "2026-11-25T17:46:03Z",
        "metrics": {"cpu": 1.5, "ram": 2.0, "swap": 0.0, "load": 0.1}}}));
    round_trip::<BrowserEvent>(json!({"type": "host_offline", "payload": {"host_id": "web-1"}}));
    round_trip::<BrowserEvent>(json!({"type": "host_updated", "payload": {"host": host_json()}}));
    round_trip::<BrowserEvent>(json!({"type": "host_added", "payload": {"host": host_json()}}));
    round_trip::<BrowserEvent>(json!({"type": "host_removed", "payload": {"host_id": "web-1"}}));
    round_trip::<BrowserEvent>(json!({"type": "command_queued", "payload": {
        "host_id": "web-1", "command_id": "c1", "command": "pull", "queued_at": "2026-11-25T17:46:03Z"}}));
    round_trip::<BrowserEvent>(json!({"type": "command_output", "payload": {
        "host_id": "web-1", "command_id": "c1", "seq": 2, "stream": "stdout", "line": "x"}}));
    for s in [
        "ok",
        "error",
        "stopped",
        "timeout",
        "lost",
        "abandoned",
        "rolled_back",
    ] {
        round_trip::<BrowserEvent>(json!({"type": "command_complete", "payload": {
            "host_id": "web-1", "command_id": "c1", "status": s, "exit_code": 1, "duration_ms": 5}}));
    }
    round_trip::<BrowserEvent>(json!({"type": "pending_pr", "payload": {"pr": null}}));
    round_trip::<BrowserEvent>(json!({"type": "deploy_progress", "payload": {
        "job_id": "j1", "pr_number": 42, "phase": "switching",
        "hosts": {"a": "ok", "b": "running", "c": "pending", "d": "error", "e": "skipped"},
        "message": "2/5"}}));
    round_trip::<BrowserEvent>(json!({"type": "command_complete", "payload": {
        "host_id": "web-1", "command_id": "c1", "status": "ok", "exit_code": 0, "duration_ms": 5,
        "result": {"generation": 43}}}));
}

#[test]
fn decode_tells_unknown_from_malformed() {
    assert!(matches!(
        decode::<AgentMessage>(r#"{"type":"heartbeat","payload":{"metrics":null}}"#),
        Decoded::Message(AgentMessage::Heartbeat(_))
    ));
    match decode::<AgentMessage>(r#"{"type":"telemetry_v9","payload":{}}"#) {
        Decoded::Unknown(t) => assert_eq!(t, "telemetry_v9"),
        other => panic!("{other:?}"),
    }
    // A known type with a broken payload is malformed, not unknown.
    assert!(matches!(
        decode::<AgentMessage>(r#"{"type":"output","payload":{"seq":"x"}}"#),
        Decoded::Malformed(_)
    ));
    assert!(matches!(
        decode::<BrowserEvent>("not json"),
        Decoded::Malformed(_)
    ));
    assert!(matches!(
        decode::<BrowserEvent>("[]"),
        Decoded::Malformed(_)
    ));
}

#[test]
fn every_known_type_is_listed() {
    use protocol::messages::Message;
    let samples = [
        serde_json::to_value(BrowserEvent::HostOffline(HostRef {
            host_id: "a".into(),
        }))
        .unwrap(),
        serde_json::to_value(BrowserEvent::PendingPr(PendingPrChanged { pr: None })).unwrap(),
    ];
    for s in samples {
        assert!(BrowserEvent::TYPES.contains(&s["type"].as_str().unwrap()));
    }
}

#[test]
fn rest_bodies() {
    round_trip::<LoginRequest>(json!({"username": "admin", "password": "pw"}));
    round_trip::<LoginRequest>(json!({"username": "admin", "password": "pw", "totp": "123456"}));
    // `role` and `theme` are additions; a body without them (the contract's minimum) still
    // reads.
    round_trip::<LoginResponse>(json!({"csrf_token": "t", "role": "operator", "theme": "dark"}));
    round_trip::<TotpSetupRequest>(json!({"password": "pw", "code": "123456"}));
    round_trip::<TotpSetupRequest>(json!({"password": "pw"}));
    // The route had no body before: an empty object still reads, with no password.
    let bare: TotpSetupRequest = serde_json::from_value(json!({})).unwrap();
    assert_eq!(bare, TotpSetupRequest::default());
    let bare: LoginResponse = serde_json::from_value(json!({"csrf_token": "t"})).unwrap();
    // Without it the page assumes the least privileged role (the server still decides),
    // and the browser's own colour scheme.
    assert_eq!(bare.role, Role::Viewer);
    assert_eq!(bare.theme, protocol::api::Theme::System);
    round_trip::<SessionInfo>(json!({"username": "admin", "csrf_token": "t"}));
    round_trip::<ApiError>(json!({"error": "Host is busy.", "code": "busy"}));
    round_trip::<CreateHost>(
        json!({"hostname": "a", "host_type": "nixos", "theme_color": "#000000",
        "location": null, "device_type": "server"}),
    );
    round_trip::<HostCreated>(json!({"host": host_json(), "agent_token": "tok"}));
    round_trip::<CommandRequest>(json!({"command": "pull"}));
    round_trip::<CommandRequest>(json!({"command": "rollback", "generation": 41}));
    round_trip::<CommandRequest>(json!({"command": "switch", "preview_id": "c9"}));
    round_trip::<CommandDetail>(
        json!({"command_id": "c", "host_id": "web-1", "command": "preview",
        "status": "ok", "exit_code": 0, "result": {"diff": {"changes": [], "closure_bytes_before": 1,
        "closure_bytes_after": 1, "reboot_needed": false}, "store_path": "/nix/store/x"},
        "queued_at": "2026-11-25T17:46:03Z", "started_at": "2026-11-25T17:46:04Z",
        "finished_at": "2026-11-25T17:46:05Z", "line_count": 3}),
    );
    round_trip::<CommandAccepted>(json!({"command_id": "c"}));
    round_trip::<AgentToken>(json!({"agent_token": "t"}));
    round_trip::<RefreshResult>(
        json!({"host_id": "web-1", "online": false, "generation": null,
        "agent_version": null, "agent_outdated": true, "update_status": host_json()["update_status"].clone(),
        "pending_pr": null}),
    );
    round_trip::<Vec<CommandRecord>>(
        json!([{"command_id": "c", "command": "test", "status": "running",
        "exit_code": null, "queued_at": "2026-11-25T17:46:03Z", "started_at": "2026-11-25T17:46:04Z",
        "finished_at": null, "line_count": 3}]),
    );
    // `deploy_id` and `deploy_pr` are additions: a deploy's step names its job and PR, and
    // a list without them (an older server) reads as commands no deploy started.
    let steps: Vec<CommandRecord> = round_trip(json!([{"command_id": "c", "command": "switch",
        "status": "ok", "exit_code": 0, "queued_at": "2026-11-25T17:46:03Z",
        "started_at": "2026-11-25T17:46:04Z", "finished_at": "2026-11-25T17:46:09Z",
        "line_count": 3, "requested_by": "admin", "deploy_id": "j1", "deploy_pr": 5}]));
    assert_eq!(steps[0].deploy_id.as_deref(), Some("j1"));
    assert_eq!(steps[0].deploy_pr, Some(5));
    round_trip::<BulkRequest>(json!({"command": "pull", "host_ids": null}));
    round_trip::<BulkRequest>(json!({"command": "pull", "host_ids": ["a", "b"]}));
    let resp: BulkResponse = round_trip(json!({"results": [
        {"host_id": "a", "command_id": "c1"},
        {"host_id": "b", "error": "Host is offline.", "code": "offline"}]}));
    assert!(matches!(resp.results[0], BulkResult::Queued(_)));
    assert!(matches!(resp.results[1], BulkResult::Failed(_)));
    round_trip::<DeployRequest>(json!({"pr_number": 42, "host_ids": ["a"]}));
    round_trip::<JobAccepted>(json!({"job_id": "j"}));
    round_trip::<Health>(json!({"status": "ok"}));
    round_trip::<Option<PendingPr>>(json!(null));
}

/// `disk` is an addition to `Metrics`: an older agent's heartbeat without it parses (and
/// stays without it), a newer one's keeps it; the history's answer is the contract's shape.
#[test]
fn metrics_disk_and_history() {
    let old: Metrics = round_trip(json!({"cpu": 1.5, "ram": 40.0, "swap": 0.0, "load": 0.42}));
    assert_eq!(old.disk, None);
    let new: Metrics =
        round_trip(json!({"cpu": 1.5, "ram": 40.0, "swap": 0.0, "load": 0.42, "disk": 71.3}));
    assert_eq!(new.disk, Some(71.3));
    let h: MetricsHistory = round_trip(json!({
        "range": "1h", "step_s": 60,
        "points": [
            {"t": "2026-12-06T15:39:00Z", "cpu": 7.5, "ram": 40.0, "swap": 0.0, "load": 0.42, "disk": 71.3},
            {"t": "2026-12-06T15:40:00Z", "cpu": 7.5, "ram": 40.0, "swap": 0.0, "load": 0.42, "disk": null}
        ]
    }));
    assert_eq!((h.points.len(), h.points[1].disk), (2, None));
}

#[test]
fn ambiguous_request_bodies_reject_unknown_fields() {
    assert!(
        serde_json::from_value::<CommandRequest>(json!({"command": "pull", "force": true}))
            .is_err()
    );
    assert!(serde_json::from_value::<CreateHost>(
        json!({"hostname": "a", "host_type": "nixos", "colour": "#fff"})
    )
    .is_err());
    assert!(
        serde_json::from_value::<BulkRequest>(json!({"command": "pull", "hosts": ["a"]})).is_err()
    );
    assert!(serde_json::from_value::<LoginRequest>(json!({"user": "a", "password": "b"})).is_err());
    // A row with both a command id and an error is neither arm: reject, don't guess.
    assert!(serde_json::from_value::<BulkResult>(
        json!({"host_id": "a", "command_id": "c", "error": "x", "code": "y"})
    )
    .is_err());
    // Wrong enums are errors too.
    assert!(
        serde_json::from_value::<CreateHost>(json!({"hostname": "a", "host_type": "windows"}))
            .is_err()
    );
}

#[test]
fn regression_floats_round_trip_exactly() {
    // Found by fuzzing (fuzz/crashes/agent_frame-float-1ulp): without serde_json's
    // `float_roundtrip`, this value came back one ulp off after a round trip.
    let text = r#"{"type":"heartbeat","payload":{"metrics":{"cpu":3.765031934612e-22,"ram":0.0,"swap":0.0,"load":0.0},"generation":null,"lock_hash":null,"pending_command":null}}"#;
    let m: AgentMessage = serde_json::from_str(text).unwrap();
    let again: AgentMessage = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
    assert_eq!(m, again);
}

#[test]
fn regression_times_past_year_9999_are_rejected() {
    // Found by fuzzing (fuzz/crashes/*-year-10000): such a time parsed, then could not be
    // written back as RFC 3339.
    let frame = r#"{"type":"host_offline","payload":{"host_id":"a"}}"#;
    assert!(matches!(decode::<BrowserEvent>(frame), Decoded::Message(_)));
    let bad = r#"{"type":"command_queued","payload":{"host_id":"a","command_id":"c","command":"pull","queued_at":"9999-12-31T23:59:59-01:00"}}"#;
    assert!(matches!(decode::<BrowserEvent>(bad), Decoded::Malformed(_)));
}

#[test]
fn update_status_names_are_the_wire_fields_in_order() {
    let status: UpdateStatus =
        serde_json::from_value(host_json()["update_status"].clone()).unwrap();
    let wire = serde_json::to_value(&status).unwrap();
    let fields: Vec<&str> = wire
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(fields.len(), UpdateStatus::NAMES.len());
    for (name, check) in UpdateStatus::NAMES.into_iter().zip(status.checks()) {
        assert_eq!(wire[name], serde_json::to_value(check).unwrap(), "{name}");
    }
}
