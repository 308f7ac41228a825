//! The segment header (the first 128 bytes of every segment file) and segment file names.

use crate::codec::FixedLayout;
use crate::{
    DecodeError, FormatVersion, HASH_LEN, HISTORY_ID_LEN, Hash, HistoryId, MAGIC_LEN, Reader,
    SEGMENT_MAGIC, VERSION_LEN, Writer,
};

pub const SEGMENT_VERSION_OFFSET: usize = MAGIC_LEN;
pub const SEGMENT_HEADER_LEN_OFFSET: usize = SEGMENT_VERSION_OFFSET + VERSION_LEN;
pub const SEGMENT_HISTORY_ID_OFFSET: usize = SEGMENT_HEADER_LEN_OFFSET + 4;
pub const SEGMENT_SEQ_OFFSET: usize = SEGMENT_HISTORY_ID_OFFSET + HISTORY_ID_LEN;
pub const SEGMENT_FIRST_REVISION_OFFSET: usize = SEGMENT_SEQ_OFFSET + 8;
pub const SEGMENT_PREV_HASH_OFFSET: usize = SEGMENT_FIRST_REVISION_OFFSET + 8;
pub const SEGMENT_PREV_TIMESTAMP_OFFSET: usize = SEGMENT_PREV_HASH_OFFSET + HASH_LEN;
pub const SEGMENT_CREATED_OFFSET: usize = SEGMENT_PREV_TIMESTAMP_OFFSET + 8;
pub const SEGMENT_RESERVED_OFFSET: usize = SEGMENT_CREATED_OFFSET + 8;
pub const SEGMENT_HEADER_CRC_OFFSET: usize = 124;
pub const SEGMENT_HEADER_LEN: usize = SEGMENT_HEADER_CRC_OFFSET + 4;
const _: () = assert!(SEGMENT_RESERVED_OFFSET == 96);
const _: () = assert!(SEGMENT_HEADER_LEN == 128);

const LAYOUT: FixedLayout = FixedLayout {
    what: "segment header",
    magic: Some(SEGMENT_MAGIC),
    len: SEGMENT_HEADER_LEN,
    reserved_offset: SEGMENT_RESERVED_OFFSET,
    reserved_field: "segment.reserved",
    exact: false,
};

/// Directory, under the data directory, that holds the segments.
pub const SEGMENT_DIR: &str = "log";
/// A new segment is written under this suffix, then renamed into place.
pub const TEMP_SUFFIX: &str = ".tmp";

/// The header every segment starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub version: FormatVersion,
    pub history_id: HistoryId,
    /// Position in the history's sequence of segments, from 1; also in the file name.
    pub segment_seq: u64,
    /// Revision of the first commit this segment holds or will hold.
    pub first_revision: u64,
    /// Chain hash of revision `first_revision - 1` (the genesis hash for the first segment).
    pub prev_hash: Hash,
    /// Timestamp of revision `first_revision - 1` (0 for the first segment).
    pub prev_timestamp_us: u64,
    pub created_unix_us: u64,
}

impl SegmentHeader {
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut w = Writer::with_capacity(SEGMENT_HEADER_LEN);
        w.bytes(&SEGMENT_MAGIC);
        w.u32(self.version.as_u32());
        w.u32(SEGMENT_HEADER_LEN as u32);
        w.bytes(&self.history_id);
        w.u64(self.segment_seq);
        w.u64(self.first_revision);
        w.bytes(&self.prev_hash);
        w.u64(self.prev_timestamp_us);
        w.u64(self.created_unix_us);
        LAYOUT.seal(&mut w);
        w.buf.try_into().expect("SEGMENT_HEADER_LEN bytes")
    }

    /// Decodes the first `SEGMENT_HEADER_LEN` bytes of `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<SegmentHeader, DecodeError> {
        const WHAT: &str = LAYOUT.what;
        let mut r = Reader::new(LAYOUT.open(bytes)?, WHAT);
        let version = FormatVersion::from_u32(r.u32()?, WHAT)?;
        let header_len = r.u32()?;
        if header_len as usize != SEGMENT_HEADER_LEN {
            return Err(DecodeError::InvalidField {
                field: "segment.header_len",
                reason: format!("{header_len}, expected {SEGMENT_HEADER_LEN}"),
            });
        }
        let header = SegmentHeader {
            version,
            history_id: r.array()?,
            segment_seq: r.u64()?,
            first_revision: r.u64()?,
            prev_hash: r.array()?,
            prev_timestamp_us: r.u64()?,
            created_unix_us: r.u64()?,
        };
        r.finish()?;
        if header.first_revision == 0 {
            return Err(DecodeError::InvalidField {
                field: "segment.first_revision",
                reason: "revisions start at 1".to_owned(),
            });
        }
        Ok(header)
    }
}

/// The file name of segment `seq`: `seg-` and 20 decimal digits, `.log`. Names sort by sequence,
/// but code orders segments by the parsed number, never by the name.
pub fn segment_file_name(seq: u64) -> String {
    format!("seg-{seq:020}.log")
}

/// The sequence number in a segment file name, or `None` for any other name.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("seg-")?.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crc32;

    #[test]
    fn header_round_trips_and_detects_damage() {
        let header = SegmentHeader {
            version: FormatVersion::CURRENT,
            history_id: [3; 16],
            segment_seq: 2,
            first_revision: 101,
            prev_hash: [9; 32],
            prev_timestamp_us: 77,
            created_unix_us: 88,
        };
        let bytes = header.encode();
        assert_eq!(SegmentHeader::decode(&bytes).unwrap(), header);
        for i in 0..SEGMENT_HEADER_LEN {
            let mut bad = bytes;
            bad[i] ^= 0x01;
            assert!(SegmentHeader::decode(&bad).is_err(), "flip at {i}");
        }
    }

    #[test]
    fn nonzero_reserved_bytes_are_refused_even_with_a_valid_crc() {
        let header = SegmentHeader {
            version: FormatVersion::CURRENT,
            history_id: [3; 16],
            segment_seq: 1,
            first_revision: 1,
            prev_hash: [0; 32],
            prev_timestamp_us: 0,
            created_unix_us: 1,
        };
        let mut bytes = header.encode();
        bytes[SEGMENT_RESERVED_OFFSET + 5] = 1;
        let crc = crc32(&bytes[..SEGMENT_HEADER_CRC_OFFSET]);
        bytes[SEGMENT_HEADER_CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            SegmentHeader::decode(&bytes),
            Err(DecodeError::InvalidField {
                field: "segment.reserved",
                ..
            })
        ));
    }

    #[test]
    fn names_round_trip() {
        assert_eq!(segment_file_name(42), "seg-00000000000000000042.log");
        assert_eq!(parse_segment_file_name(&segment_file_name(42)), Some(42));
        assert_eq!(parse_segment_file_name("seg-42.log"), None);
        assert_eq!(
            parse_segment_file_name("seg-00000000000000000042.log.tmp"),
            None
        );
        assert_eq!(
            parse_segment_file_name("seg-0000000000000000004x.log"),
            None
        );
    }
}
