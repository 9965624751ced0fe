//! Agent -> server frames: `decode::<AgentMessage>` on arbitrary text.
//!
//! Properties:
//! - decode never panics (the hub runs it on every frame an agent sends);
//! - a decoded message serialises, and decoding that text gives an equal message;
//! - serialising is stable (second serialisation is byte-identical to the first);
//! - the serialised frame carries a `type` the decoder knows;
//! - `Unknown` is only reported for a type not in `TYPES`, capped at 64 chars.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::messages::Message;
use protocol::{decode, AgentMessage, Decoded};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    check::<AgentMessage>(&text);
});

fn check<M>(text: &str)
where
    M: Message + serde::Serialize + PartialEq + std::fmt::Debug,
{
    match decode::<M>(text) {
        Decoded::Message(m) => {
            let wire = serde_json::to_string(&m).expect("a decoded message must serialise");
            match decode::<M>(&wire) {
                Decoded::Message(again) => {
                    assert_eq!(m, again, "round trip changed the message; wire: {wire}");
                    let wire2 = serde_json::to_string(&again).unwrap();
                    assert_eq!(wire, wire2, "serialisation is not stable");
                }
                other => panic!("re-decoding our own frame failed: {other:?}\nwire: {wire}\ninput: {text:?}"),
            }
            let v: serde_json::Value = serde_json::from_str(&wire).unwrap();
            let ty = v.get("type").and_then(|t| t.as_str()).expect("frame has a string type");
            assert!(M::TYPES.contains(&ty), "serialised type {ty:?} is not in TYPES");
        }
        Decoded::Unknown(ty) => {
            assert!(ty.chars().count() <= 64, "unknown type echoed uncapped");
            // A capped name may be a prefix of nothing known; an uncapped one must be unknown.
            if ty.chars().count() < 64 {
                assert!(!M::TYPES.contains(&ty.as_str()), "known type {ty:?} reported as unknown");
            }
        }
        Decoded::Malformed(_) => {}
    }
}
