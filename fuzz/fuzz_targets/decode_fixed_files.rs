//! MANIFEST, clean-shutdown marker and segment header decoders on arbitrary bytes: never panic,
//! and what they accept re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use storage_format::clean::CleanShutdown;
use storage_format::manifest::Manifest;
use storage_format::segment::SegmentHeader;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Manifest::decode(data) {
        assert_eq!(m.encode().as_slice(), data);
    }
    if let Ok(c) = CleanShutdown::decode(data) {
        assert_eq!(c.encode().as_slice(), data);
    }
    if let Ok(h) = SegmentHeader::decode(data) {
        assert_eq!(h.encode().as_slice(), &data[..128]);
    }
});
