//! Record header and seal decoders on arbitrary bytes: never panic; a decoded header's length is
//! within bounds; a decoded seal re-encodes to the same record.
#![no_main]

use libfuzzer_sys::fuzz_target;
use storage_format::RECORD_PAYLOAD_BYTES_MAX;
use storage_format::record::{RecordHeader, SealPayload};

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = RecordHeader::decode(data) {
        assert!(header.payload_len as usize <= RECORD_PAYLOAD_BYTES_MAX);
    }
    if let Ok(seal) = SealPayload::decode_record(data) {
        assert_eq!(seal.encode_record(), data);
    }
});
