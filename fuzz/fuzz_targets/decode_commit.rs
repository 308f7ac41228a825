//! The commit decoder on arbitrary bytes: never panics, and anything it accepts re-encodes to
//! exactly the same bytes (the canonical encoding is unique, which the hash chain relies on).
#![no_main]

use libfuzzer_sys::fuzz_target;
use storage_format::commit::{Commit, decode_commit_payload};

fuzz_target!(|data: &[u8]| {
    if let Ok(commit) = Commit::decode_canonical(data) {
        assert_eq!(commit.encode_canonical(), data);
        assert!(commit.validate().is_ok());
    }
    if let Ok(payload) = decode_commit_payload(data) {
        assert_eq!(payload.canonical.len() + 32, data.len());
    }
});
