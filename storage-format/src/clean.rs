//! The clean-shutdown marker, `CLEAN`: written (synced, then renamed into place) as the last act
//! of a clean close, removed (and the directory synced) at open before any new commit is
//! accepted. While it matches the active segment exactly, open may trust its summary instead of
//! re-reading that segment; a mismatch only means it is ignored.

use crate::codec::FixedLayout;
use crate::{
    CLEAN_MAGIC, DecodeError, FormatVersion, HASH_LEN, HISTORY_ID_LEN, Hash, HistoryId, MAGIC_LEN,
    Reader, VERSION_LEN, Writer,
};

pub const CLEAN_FILE: &str = "CLEAN";

pub const CLEAN_VERSION_OFFSET: usize = MAGIC_LEN;
pub const CLEAN_LEN_OFFSET: usize = CLEAN_VERSION_OFFSET + VERSION_LEN;
pub const CLEAN_HISTORY_ID_OFFSET: usize = CLEAN_LEN_OFFSET + 4;
pub const CLEAN_SEGMENT_SEQ_OFFSET: usize = CLEAN_HISTORY_ID_OFFSET + HISTORY_ID_LEN;
pub const CLEAN_SEGMENT_LEN_OFFSET: usize = CLEAN_SEGMENT_SEQ_OFFSET + 8;
pub const CLEAN_LAST_REVISION_OFFSET: usize = CLEAN_SEGMENT_LEN_OFFSET + 8;
pub const CLEAN_LAST_TIMESTAMP_OFFSET: usize = CLEAN_LAST_REVISION_OFFSET + 8;
pub const CLEAN_LAST_HASH_OFFSET: usize = CLEAN_LAST_TIMESTAMP_OFFSET + 8;
pub const CLEAN_DATA_CRC_OFFSET: usize = CLEAN_LAST_HASH_OFFSET + HASH_LEN;
pub const CLEAN_RESERVED_OFFSET: usize = CLEAN_DATA_CRC_OFFSET + 4;
pub const CLEAN_CRC_OFFSET: usize = 124;
pub const CLEAN_LEN: usize = CLEAN_CRC_OFFSET + 4;
const _: () = assert!(CLEAN_RESERVED_OFFSET == 100);
const _: () = assert!(CLEAN_LEN == 128);

const LAYOUT: FixedLayout = FixedLayout {
    what: "clean-shutdown marker",
    magic: Some(CLEAN_MAGIC),
    len: CLEAN_LEN,
    reserved_offset: CLEAN_RESERVED_OFFSET,
    reserved_field: "clean.reserved",
    exact: true,
};

/// What a clean close knew about the active segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanShutdown {
    pub version: FormatVersion,
    pub history_id: HistoryId,
    pub active_segment_seq: u64,
    /// Length of the active segment file, in bytes, at close.
    pub active_segment_len: u64,
    pub last_revision: u64,
    pub last_timestamp_us: u64,
    pub last_hash: Hash,
    /// CRC-32 of the active segment's records (what its seal will carry).
    pub data_crc: u32,
}

impl CleanShutdown {
    pub fn encode(&self) -> [u8; CLEAN_LEN] {
        let mut w = Writer::with_capacity(CLEAN_LEN);
        w.bytes(&CLEAN_MAGIC);
        w.u32(self.version.as_u32());
        w.u32(CLEAN_LEN as u32);
        w.bytes(&self.history_id);
        w.u64(self.active_segment_seq);
        w.u64(self.active_segment_len);
        w.u64(self.last_revision);
        w.u64(self.last_timestamp_us);
        w.bytes(&self.last_hash);
        w.u32(self.data_crc);
        LAYOUT.seal(&mut w);
        w.buf.try_into().expect("CLEAN_LEN bytes")
    }

    pub fn decode(bytes: &[u8]) -> Result<CleanShutdown, DecodeError> {
        const WHAT: &str = LAYOUT.what;
        let mut r = Reader::new(LAYOUT.open(bytes)?, WHAT);
        let version = FormatVersion::from_u32(r.u32()?, WHAT)?;
        if r.u32()? as usize != CLEAN_LEN {
            return Err(DecodeError::InvalidField {
                field: "clean.len",
                reason: format!("expected {CLEAN_LEN}"),
            });
        }
        let marker = CleanShutdown {
            version,
            history_id: r.array()?,
            active_segment_seq: r.u64()?,
            active_segment_len: r.u64()?,
            last_revision: r.u64()?,
            last_timestamp_us: r.u64()?,
            last_hash: r.array()?,
            data_crc: r.u32()?,
        };
        r.finish()?;
        Ok(marker)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_round_trips_and_detects_damage() {
        let m = CleanShutdown {
            version: FormatVersion::CURRENT,
            history_id: [2; 16],
            active_segment_seq: 3,
            active_segment_len: 4096,
            last_revision: 99,
            last_timestamp_us: 5,
            last_hash: [6; 32],
            data_crc: 7,
        };
        let bytes = m.encode();
        assert_eq!(CleanShutdown::decode(&bytes).unwrap(), m);
        for i in 0..CLEAN_LEN {
            let mut bad = bytes;
            bad[i] ^= 0x02;
            assert!(CleanShutdown::decode(&bad).is_err(), "flip at {i}");
        }
    }
}
