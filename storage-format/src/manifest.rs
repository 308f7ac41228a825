//! The MANIFEST: the store's identity and the set of live files. It is replaced only whole, by
//! writing `MANIFEST.tmp`, syncing it, renaming it over `MANIFEST` and syncing the directory, so
//! one rename switches from one set of live files to the next (used by compaction).

use crate::codec::FixedLayout;
use crate::{
    DecodeError, FormatVersion, HASH_LEN, HISTORY_ID_LEN, Hash, HistoryId, MAGIC_LEN,
    MANIFEST_MAGIC, Reader, VERSION_LEN, Writer,
};

pub const MANIFEST_FILE: &str = "MANIFEST";

pub const MANIFEST_VERSION_OFFSET: usize = MAGIC_LEN;
pub const MANIFEST_LEN_OFFSET: usize = MANIFEST_VERSION_OFFSET + VERSION_LEN;
pub const MANIFEST_HISTORY_ID_OFFSET: usize = MANIFEST_LEN_OFFSET + 4;
pub const MANIFEST_GENERATION_OFFSET: usize = MANIFEST_HISTORY_ID_OFFSET + HISTORY_ID_LEN;
pub const MANIFEST_CREATED_OFFSET: usize = MANIFEST_GENERATION_OFFSET + 8;
pub const MANIFEST_FIRST_SEGMENT_OFFSET: usize = MANIFEST_CREATED_OFFSET + 8;
pub const MANIFEST_HORIZON_REVISION_OFFSET: usize = MANIFEST_FIRST_SEGMENT_OFFSET + 8;
pub const MANIFEST_HORIZON_HASH_OFFSET: usize = MANIFEST_HORIZON_REVISION_OFFSET + 8;
pub const MANIFEST_HORIZON_TIMESTAMP_OFFSET: usize = MANIFEST_HORIZON_HASH_OFFSET + HASH_LEN;
pub const MANIFEST_BASE_IMAGE_OFFSET: usize = MANIFEST_HORIZON_TIMESTAMP_OFFSET + 8;
pub const MANIFEST_RESERVED_OFFSET: usize = MANIFEST_BASE_IMAGE_OFFSET + 8;
pub const MANIFEST_CRC_OFFSET: usize = 124;
pub const MANIFEST_LEN: usize = MANIFEST_CRC_OFFSET + 4;
const _: () = assert!(MANIFEST_RESERVED_OFFSET == 112);
const _: () = assert!(MANIFEST_LEN == 128);

const LAYOUT: FixedLayout = FixedLayout {
    what: "manifest",
    magic: Some(MANIFEST_MAGIC),
    len: MANIFEST_LEN,
    reserved_offset: MANIFEST_RESERVED_OFFSET,
    reserved_field: "manifest.reserved",
    exact: true,
};

/// The store's identity and live set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Manifest {
    pub version: FormatVersion,
    pub history_id: HistoryId,
    /// Increases by one on every replacement.
    pub generation: u64,
    pub created_unix_us: u64,
    /// Segments with a lower sequence number are not part of the store (left over from a
    /// compaction that crashed after switching the manifest) and are deleted at open.
    pub first_live_segment_seq: u64,
    /// Horizon revision H of the last compaction; 0 when history was never compacted.
    pub horizon_revision: u64,
    /// Chain hash at H (the genesis hash when H is 0).
    pub horizon_hash: Hash,
    /// Timestamp of H (0 when H is 0).
    pub horizon_timestamp_us: u64,
    /// Sequence number of the base image holding the state at H; 0 for none. (Reserved: base
    /// images are written by compaction.)
    pub base_image_seq: u64,
}

impl Manifest {
    pub fn encode(&self) -> [u8; MANIFEST_LEN] {
        let mut w = Writer::with_capacity(MANIFEST_LEN);
        w.bytes(&MANIFEST_MAGIC);
        w.u32(self.version.as_u32());
        w.u32(MANIFEST_LEN as u32);
        w.bytes(&self.history_id);
        w.u64(self.generation);
        w.u64(self.created_unix_us);
        w.u64(self.first_live_segment_seq);
        w.u64(self.horizon_revision);
        w.bytes(&self.horizon_hash);
        w.u64(self.horizon_timestamp_us);
        w.u64(self.base_image_seq);
        LAYOUT.seal(&mut w);
        w.buf.try_into().expect("MANIFEST_LEN bytes")
    }

    pub fn decode(bytes: &[u8]) -> Result<Manifest, DecodeError> {
        const WHAT: &str = LAYOUT.what;
        let mut r = Reader::new(LAYOUT.open(bytes)?, WHAT);
        let version = FormatVersion::from_u32(r.u32()?, WHAT)?;
        if r.u32()? as usize != MANIFEST_LEN {
            return Err(DecodeError::InvalidField {
                field: "manifest.len",
                reason: format!("expected {MANIFEST_LEN}"),
            });
        }
        let manifest = Manifest {
            version,
            history_id: r.array()?,
            generation: r.u64()?,
            created_unix_us: r.u64()?,
            first_live_segment_seq: r.u64()?,
            horizon_revision: r.u64()?,
            horizon_hash: r.array()?,
            horizon_timestamp_us: r.u64()?,
            base_image_seq: r.u64()?,
        };
        r.finish()?;
        if manifest.first_live_segment_seq == 0 {
            return Err(DecodeError::InvalidField {
                field: "manifest.first_live_segment_seq",
                reason: "segments are numbered from 1".to_owned(),
            });
        }
        Ok(manifest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_round_trips_and_detects_damage() {
        let m = Manifest {
            version: FormatVersion::CURRENT,
            history_id: [1; 16],
            generation: 3,
            created_unix_us: 4,
            first_live_segment_seq: 5,
            horizon_revision: 6,
            horizon_hash: [7; 32],
            horizon_timestamp_us: 9,
            base_image_seq: 8,
        };
        let bytes = m.encode();
        assert_eq!(Manifest::decode(&bytes).unwrap(), m);
        for i in 0..MANIFEST_LEN {
            let mut bad = bytes;
            bad[i] ^= 0x10;
            assert!(Manifest::decode(&bad).is_err(), "flip at {i}");
        }
        assert!(Manifest::decode(&bytes[..100]).is_err());
    }
}
