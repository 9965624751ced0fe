//! REST request bodies (and the untagged bulk result): `serde_json::from_slice` on arbitrary
//! bytes never panics, and whatever parses round-trips to an equal value through our own
//! serialisation (which must itself be accepted, even though the bodies deny unknown fields).
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::api::{BulkRequest, BulkResponse, CommandRequest, CreateHost, DeployRequest, LoginRequest};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Debug;

fuzz_target!(|data: &[u8]| {
    round_trip::<LoginRequest>(data);
    round_trip::<CreateHost>(data);
    round_trip::<CommandRequest>(data);
    round_trip::<BulkRequest>(data);
    round_trip::<DeployRequest>(data);
    // Untagged: an error row must never come back as a success row, or vice versa.
    round_trip::<BulkResponse>(data);
});

fn round_trip<T: DeserializeOwned + Serialize + PartialEq + Debug>(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<T>(data) else {
        return;
    };
    let bytes = serde_json::to_vec(&value).expect("a parsed body must serialise");
    match serde_json::from_slice::<T>(&bytes) {
        Ok(again) => assert_eq!(
            value,
            again,
            "{} changed in a round trip: {}",
            std::any::type_name::<T>(),
            String::from_utf8_lossy(&bytes)
        ),
        Err(e) => panic!(
            "{} does not re-parse its own output: {e}\n{}",
            std::any::type_name::<T>(),
            String::from_utf8_lossy(&bytes)
        ),
    }
}
