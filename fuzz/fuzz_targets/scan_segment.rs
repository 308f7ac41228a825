//! The segment scanner (recovery, verify, reads) on arbitrary bytes: never panics, and what it
//! accepts is self-consistent. Inputs starting with a valid header reach the record loop: the
//! first byte picks whether to prepend one.
#![no_main]

use libfuzzer_sys::fuzz_target;
use storage_format::scan::{ScanEnd, TailPolicy, scan_segment};
use storage_format::segment::{SEGMENT_HEADER_LEN, SegmentHeader};
use storage_format::{FormatVersion, GENESIS_HASH};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let mut bytes = Vec::new();
    if mode & 1 == 1 {
        let header = SegmentHeader {
            version: FormatVersion::CURRENT,
            history_id: [7; 16],
            segment_seq: 1,
            first_revision: 1,
            prev_hash: GENESIS_HASH,
            prev_timestamp_us: 0,
            created_unix_us: 1,
        };
        bytes.extend_from_slice(&header.encode());
    }
    bytes.extend_from_slice(rest);
    let policy = if mode & 2 == 2 { TailPolicy::Strict } else { TailPolicy::AllowTornTail };
    let mut count = 0u64;
    if let Ok(outcome) = scan_segment(&bytes, policy, &mut |_, _| count += 1) {
        assert_eq!(outcome.commit_count, count);
        assert!(outcome.valid_len as usize <= bytes.len());
        assert!(outcome.valid_len as usize >= SEGMENT_HEADER_LEN);
        if let ScanEnd::TornTail { offset, bytes: torn } = outcome.end {
            assert_eq!(policy, TailPolicy::AllowTornTail);
            assert_eq!(offset + torn, bytes.len() as u64);
        }
    }
});
