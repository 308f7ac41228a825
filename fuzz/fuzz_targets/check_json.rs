//! The value check (`storage_format::json`) on arbitrary bytes: never panics, and agrees with
//! serde_json, an independent parser: whatever it accepts serde_json parses, and whatever
//! serde_json parses it accepts unless a refusal of its own applies (a duplicate member name,
//! an unpaired surrogate escape).
#![no_main]

use libfuzzer_sys::fuzz_target;
use storage_format::json::{JsonError, check_stored, check_value};

fuzz_target!(|data: &[u8]| {
    let strict = check_value(data);
    let stored = check_stored(data);
    let serde = serde_json::from_slice::<serde_json::Value>(data);
    if strict.is_ok() {
        assert!(stored.is_ok());
        assert!(serde.is_ok(), "accepted, but serde_json says {:?}", serde.err());
    }
    if stored.is_ok() {
        assert!(serde_json::from_slice::<serde::de::IgnoredAny>(data).is_ok());
    }
    if serde.is_ok() {
        match strict {
            Ok(()) | Err(JsonError::DuplicateMember { .. }) => {}
            Err(other) => panic!("serde_json parses it, the check refused it: {other}"),
        }
    }
});
