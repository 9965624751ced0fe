//! Server -> browser and server -> agent frames, and the fleet state machine.
//!
//! Properties:
//! - the whole input decodes as `BrowserEvent` and as `ServerMessage` without panicking, and
//!   whatever decodes round-trips to an equal message through our own serialisation;
//! - the input split on '\n' is a sequence of browser frames; applying each decoded event to
//!   a `FleetState` never panics and keeps these invariants:
//!   * every host key equals its `host.id`;
//!   * the returned `Changed` matches what happened (Nothing/Output => state unchanged,
//!     HostAdded => new key, HostRemoved => key gone, Host(id) => id present, ...);
//!   * a heartbeat never moves a host's `last_seen` backwards;
//! - at the end, the snapshot the hub would send for this state survives the wire (serialise,
//!   decode) and rebuilds the same hosts, pending PR and version (what a reconnecting browser
//!   sees equals what the hub holds).
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::messages::Message;
use protocol::{decode, BrowserEvent, Changed, Decoded, FleetState, ServerMessage, Timestamp};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    round_trip::<BrowserEvent>(&text);
    round_trip::<ServerMessage>(&text);

    let mut state = FleetState::default();
    for frame in data.split(|&b| b == b'\n') {
        let frame = String::from_utf8_lossy(frame);
        let Decoded::Message(event) = decode::<BrowserEvent>(&frame) else {
            continue;
        };
        let before = state.clone();
        let changed = state.apply(&event);
        check_invariants(&state);
        check_changed(&before, &state, &event, &changed);
    }

    // What a browser that (re)connects now would receive.
    let snap = BrowserEvent::Snapshot(state.snapshot(state.server_time));
    let wire = serde_json::to_string(&snap).expect("snapshot serialises");
    match decode::<BrowserEvent>(&wire) {
        Decoded::Message(BrowserEvent::Snapshot(s)) => {
            let rebuilt = FleetState::from_snapshot(s);
            check_invariants(&rebuilt);
            assert_eq!(rebuilt.hosts, state.hosts, "snapshot lost host state");
            assert_eq!(rebuilt.pending_pr, state.pending_pr);
            assert_eq!(rebuilt.dashboard_version, state.dashboard_version);
        }
        other => panic!("the hub's own snapshot does not decode: {other:?}\nwire: {wire}"),
    }
});

fn round_trip<M>(text: &str)
where
    M: Message + serde::Serialize + PartialEq + std::fmt::Debug,
{
    if let Decoded::Message(m) = decode::<M>(text) {
        let wire = serde_json::to_string(&m).expect("a decoded message must serialise");
        match decode::<M>(&wire) {
            Decoded::Message(again) => {
                assert_eq!(m, again, "round trip changed the message; wire: {wire}");
                assert_eq!(wire, serde_json::to_string(&again).unwrap(), "unstable serialisation");
            }
            other => panic!("re-decoding our own frame failed: {other:?}\nwire: {wire}\ninput: {text:?}"),
        }
    }
}

fn check_invariants(state: &FleetState) {
    for (key, host) in &state.hosts {
        assert_eq!(key, &host.id, "host key differs from host.id");
    }
}

fn check_changed(before: &FleetState, after: &FleetState, event: &BrowserEvent, changed: &Changed) {
    match changed {
        Changed::Nothing => assert_eq!(before, after, "Changed::Nothing but state changed by {event:?}"),
        Changed::All => assert!(matches!(event, BrowserEvent::Snapshot(_))),
        Changed::Host(id) => {
            assert!(after.hosts.contains_key(id), "Changed::Host({id}) for an absent host");
            assert!(before.hosts.contains_key(id), "Changed::Host({id}) for a host that was not there");
            // Host(id) means "may have changed" (a duplicate heartbeat reports it too); the
            // direction that matters is Nothing => unchanged, checked above.
        }
        Changed::HostAdded(id) => {
            assert!(!before.hosts.contains_key(id) && after.hosts.contains_key(id));
        }
        Changed::HostRemoved(id) => {
            assert!(before.hosts.contains_key(id) && !after.hosts.contains_key(id));
        }
        Changed::Output(id) => {
            assert!(after.hosts.contains_key(id));
            assert_eq!(before, after, "command output must not change host state");
        }
        Changed::PendingPr => assert_ne!(before.pending_pr, after.pending_pr),
        Changed::Deploy => {
            assert!(after.deploy.is_some());
            assert_ne!(before.deploy, after.deploy, "Changed::Deploy without a change");
        }
        Changed::Desired => assert_ne!(before.desired, after.desired),
    }
    // Only a snapshot, host_added/host_updated and host_removed change the set of hosts.
    if !matches!(
        event,
        BrowserEvent::Snapshot(_)
            | BrowserEvent::HostAdded(_)
            | BrowserEvent::HostUpdated(_)
            | BrowserEvent::HostRemoved(_)
    ) {
        assert!(before.hosts.keys().eq(after.hosts.keys()), "host set changed by {event:?}");
    }
    if let BrowserEvent::HostHeartbeat(hb) = event {
        let old: Option<Timestamp> = before.hosts.get(&hb.host_id).and_then(|h| h.last_seen);
        let new: Option<Timestamp> = after.hosts.get(&hb.host_id).and_then(|h| h.last_seen);
        if let (Some(old), Some(new)) = (old, new) {
            assert!(new >= old, "heartbeat moved last_seen backwards");
        }
    }
}
