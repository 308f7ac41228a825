//! Index decoders (version and revision entries, checkpoint, file headers, version directory
//! blocks) on arbitrary bytes: never panic, and what they accept re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use storage_format::index::{
    Checkpoint, DirBlock, DirBlockBuilder, RevEntry, VERSIONS_MAGIC, VersionEntry,
    check_index_header, encode_index_header,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(e) = VersionEntry::decode(data) {
        assert_eq!(e.encode().as_slice(), data);
    }
    if let Ok(e) = RevEntry::decode(data) {
        assert_eq!(e.encode().as_slice(), data);
    }
    if let Ok(cp) = Checkpoint::decode(data) {
        assert_eq!(cp.encode(), data);
    }
    if let Ok(block) = DirBlock::open(data) {
        // Rows are checked one by one; a block whose rows all pass rebuilds to the same bytes.
        if block.all().is_ok() {
            let mut builder = DirBlockBuilder::default();
            for k in 0..block.fences {
                builder.push_from(&block, k);
            }
            let mut out = Vec::new();
            builder.finish(block.covered, block.step, block.key_id, &mut out);
            assert_eq!(out.as_slice(), block.bytes());
        }
    }
    if data.len() >= 16 {
        let history: [u8; 16] = data[..16].try_into().unwrap();
        if check_index_header(&data[16..], VERSIONS_MAGIC, &history, 72).is_ok() {
            assert_eq!(&data[16..80], encode_index_header(VERSIONS_MAGIC, &history, 72).as_slice());
        }
    }
});
