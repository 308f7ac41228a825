//! Record framing inside a segment: a 32-byte header (lengths, type, revision, batch mark, two
//! CRCs) followed by the payload.
//!
//! The header has its own CRC so that recovery can recognise a record boundary at an arbitrary
//! offset (used to tell a torn tail from damage followed by later, acknowledged records), and
//! a length is trusted only after that CRC passed and the length was checked against
//! `RECORD_PAYLOAD_BYTES_MAX`.

use crate::codec::{check_crc, check_reserved, u32_at, u64_at};
use crate::{DecodeError, HASH_LEN, Hash, RECORD_PAYLOAD_BYTES_MAX, Reader, Writer, crc32};

pub const RECORD_PAYLOAD_LEN_OFFSET: usize = 0;
pub const RECORD_TYPE_OFFSET: usize = RECORD_PAYLOAD_LEN_OFFSET + 4;
pub const RECORD_FLAGS_OFFSET: usize = RECORD_TYPE_OFFSET + 1;
pub const RECORD_RESERVED_OFFSET: usize = RECORD_FLAGS_OFFSET + 1;
pub const RECORD_REVISION_OFFSET: usize = RECORD_RESERVED_OFFSET + 2;
pub const RECORD_BATCH_FIRST_OFFSET: usize = RECORD_REVISION_OFFSET + 8;
pub const RECORD_PAYLOAD_CRC_OFFSET: usize = RECORD_BATCH_FIRST_OFFSET + 8;
pub const RECORD_HEADER_CRC_OFFSET: usize = RECORD_PAYLOAD_CRC_OFFSET + 4;
pub const RECORD_HEADER_LEN: usize = RECORD_HEADER_CRC_OFFSET + 4;
const _: () = assert!(RECORD_HEADER_LEN == 32);

/// What a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordType {
    /// A commit payload (canonical bytes + chain hash).
    Commit,
    /// The seal: always the last record of a sealed segment.
    Seal,
}

impl RecordType {
    pub fn to_u8(self) -> u8 {
        match self {
            RecordType::Commit => 1,
            RecordType::Seal => 2,
        }
    }
    pub fn from_u8(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(RecordType::Commit),
            2 => Some(RecordType::Seal),
            _ => None,
        }
    }
}

/// A decoded, CRC-checked record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    pub payload_len: u32,
    pub record_type: RecordType,
    /// A commit's revision; for a seal, the segment's last revision.
    pub revision: u64,
    /// First revision of the group-commit batch this record was written in; for a seal, the
    /// segment's last revision + 1 (a seal is always written after every batch was synced).
    pub batch_first_revision: u64,
    pub payload_crc: u32,
}

impl RecordHeader {
    /// Total bytes of the record on disk.
    pub fn record_len(&self) -> u64 {
        RECORD_HEADER_LEN as u64 + self.payload_len as u64
    }

    /// Decodes and checks a header: its CRC, its type, zero reserved bytes and the payload bound.
    pub fn decode(bytes: &[u8]) -> Result<RecordHeader, DecodeError> {
        if bytes.len() < RECORD_HEADER_LEN {
            return Err(DecodeError::Truncated {
                what: "record header",
                needed: RECORD_HEADER_LEN as u64,
                available: bytes.len() as u64,
            });
        }
        check_crc(bytes, RECORD_HEADER_CRC_OFFSET, "record header")?;
        let type_byte = bytes[RECORD_TYPE_OFFSET];
        let record_type =
            RecordType::from_u8(type_byte).ok_or_else(|| DecodeError::InvalidField {
                field: "record.type",
                reason: format!("unknown record type {type_byte}"),
            })?;
        if bytes[RECORD_FLAGS_OFFSET..RECORD_REVISION_OFFSET] != [0, 0, 0] {
            return Err(DecodeError::InvalidField {
                field: "record.flags",
                reason: "reserved bits set".to_owned(),
            });
        }
        let payload_len = u32_at(bytes, RECORD_PAYLOAD_LEN_OFFSET);
        if payload_len as usize > RECORD_PAYLOAD_BYTES_MAX {
            return Err(DecodeError::TooLarge {
                what: "record payload",
                value: payload_len as u64,
                max: RECORD_PAYLOAD_BYTES_MAX as u64,
            });
        }
        Ok(RecordHeader {
            payload_len,
            record_type,
            revision: u64_at(bytes, RECORD_REVISION_OFFSET),
            batch_first_revision: u64_at(bytes, RECORD_BATCH_FIRST_OFFSET),
            payload_crc: u32_at(bytes, RECORD_PAYLOAD_CRC_OFFSET),
        })
    }

    /// Checks a payload against this header's length and CRC.
    pub fn check_payload(&self, payload: &[u8]) -> Result<(), DecodeError> {
        assert_eq!(payload.len(), self.payload_len as usize);
        let actual = crc32(payload);
        if actual != self.payload_crc {
            return Err(DecodeError::ChecksumMismatch {
                what: "record payload",
                expected: self.payload_crc,
                actual,
            });
        }
        Ok(())
    }
}

/// Appends one framed record to `out`.
pub fn encode_record(
    out: &mut Vec<u8>,
    record_type: RecordType,
    revision: u64,
    batch_first_revision: u64,
    payload: &[u8],
) {
    assert!(payload.len() <= RECORD_PAYLOAD_BYTES_MAX);
    let start = out.len();
    let mut w = Writer::with_capacity(RECORD_HEADER_LEN);
    w.u32(payload.len() as u32);
    w.u8(record_type.to_u8());
    w.zeros(3);
    w.u64(revision);
    w.u64(batch_first_revision);
    w.u32(crc32(payload));
    let header_crc = crc32(&w.buf);
    w.u32(header_crc);
    assert_eq!(w.len(), RECORD_HEADER_LEN);
    out.extend_from_slice(&w.buf);
    out.extend_from_slice(payload);
    assert_eq!(out.len() - start, RECORD_HEADER_LEN + payload.len());
}

pub const SEAL_FIRST_REVISION_OFFSET: usize = 0;
pub const SEAL_LAST_REVISION_OFFSET: usize = SEAL_FIRST_REVISION_OFFSET + 8;
pub const SEAL_COMMIT_COUNT_OFFSET: usize = SEAL_LAST_REVISION_OFFSET + 8;
pub const SEAL_LAST_TIMESTAMP_OFFSET: usize = SEAL_COMMIT_COUNT_OFFSET + 8;
pub const SEAL_LAST_HASH_OFFSET: usize = SEAL_LAST_TIMESTAMP_OFFSET + 8;
pub const SEAL_DATA_BYTES_OFFSET: usize = SEAL_LAST_HASH_OFFSET + HASH_LEN;
pub const SEAL_DATA_CRC_OFFSET: usize = SEAL_DATA_BYTES_OFFSET + 8;
pub const SEAL_RESERVED_OFFSET: usize = SEAL_DATA_CRC_OFFSET + 4;
pub const SEAL_SEALED_AT_OFFSET: usize = SEAL_RESERVED_OFFSET + 4;
pub const SEAL_RESERVED2_OFFSET: usize = SEAL_SEALED_AT_OFFSET + 8;
pub const SEAL_PAYLOAD_LEN: usize = SEAL_RESERVED2_OFFSET + 8;
const _: () = assert!(SEAL_PAYLOAD_LEN == 96);
/// A seal record's total length: a sealed segment's last `SEAL_RECORD_LEN` bytes are its seal.
pub const SEAL_RECORD_LEN: usize = RECORD_HEADER_LEN + SEAL_PAYLOAD_LEN;
const _: () = assert!(SEAL_RECORD_LEN == 128);

/// The summary a sealed segment ends with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealPayload {
    pub first_revision: u64,
    /// `first_revision - 1` for a segment without commits.
    pub last_revision: u64,
    pub commit_count: u64,
    pub last_timestamp_us: u64,
    pub last_hash: Hash,
    /// Bytes of records between the segment header and the seal record.
    pub data_bytes: u64,
    /// CRC-32 of those bytes.
    pub data_crc: u32,
    pub sealed_unix_us: u64,
}

impl SealPayload {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(SEAL_PAYLOAD_LEN);
        w.u64(self.first_revision);
        w.u64(self.last_revision);
        w.u64(self.commit_count);
        w.u64(self.last_timestamp_us);
        w.bytes(&self.last_hash);
        w.u64(self.data_bytes);
        w.u32(self.data_crc);
        w.zeros(4);
        w.u64(self.sealed_unix_us);
        w.zeros(8);
        assert_eq!(w.len(), SEAL_PAYLOAD_LEN);
        w.buf
    }

    pub fn decode(bytes: &[u8]) -> Result<SealPayload, DecodeError> {
        let mut r = Reader::new(bytes, "seal payload");
        let seal = SealPayload {
            first_revision: r.u64()?,
            last_revision: r.u64()?,
            commit_count: r.u64()?,
            last_timestamp_us: r.u64()?,
            last_hash: r.array()?,
            data_bytes: r.u64()?,
            data_crc: r.u32()?,
            sealed_unix_us: {
                check_reserved(r.bytes(4)?, "seal.reserved")?;
                r.u64()?
            },
        };
        check_reserved(r.bytes(8)?, "seal.reserved")?;
        r.finish()?;
        if seal
            .last_revision
            .wrapping_add(1)
            .wrapping_sub(seal.first_revision)
            != seal.commit_count
        {
            return Err(DecodeError::InvalidField {
                field: "seal.commit_count",
                reason: format!(
                    "{} commits do not span revisions {}..={}",
                    seal.commit_count, seal.first_revision, seal.last_revision
                ),
            });
        }
        Ok(seal)
    }

    /// The complete seal record.
    pub fn encode_record(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(SEAL_RECORD_LEN);
        encode_record(
            &mut out,
            RecordType::Seal,
            self.last_revision,
            self.last_revision + 1,
            &self.encode(),
        );
        out
    }

    /// Decodes a complete seal record (a sealed segment's last `SEAL_RECORD_LEN` bytes).
    pub fn decode_record(bytes: &[u8]) -> Result<SealPayload, DecodeError> {
        if bytes.len() != SEAL_RECORD_LEN {
            return Err(DecodeError::InvalidField {
                field: "seal.len",
                reason: format!("{} bytes, a seal record is {SEAL_RECORD_LEN}", bytes.len()),
            });
        }
        let header = RecordHeader::decode(bytes)?;
        let payload = &bytes[RECORD_HEADER_LEN..];
        if header.payload_len as usize != payload.len() {
            return Err(DecodeError::InvalidField {
                field: "seal.payload_len",
                reason: format!("{}, expected {SEAL_PAYLOAD_LEN}", header.payload_len),
            });
        }
        header.check_payload(payload)?;
        SealPayload::decode_framed(&header, payload)
    }

    /// Decodes a seal payload whose frame (CRCs, length) was checked, and checks that the header
    /// agrees with it: type, revision = last revision, batch mark = last revision + 1.
    pub fn decode_framed(
        header: &RecordHeader,
        payload: &[u8],
    ) -> Result<SealPayload, DecodeError> {
        if header.record_type != RecordType::Seal {
            return Err(DecodeError::InvalidField {
                field: "seal.header",
                reason: "not a seal record".to_owned(),
            });
        }
        let seal = SealPayload::decode(payload)?;
        if header.revision != seal.last_revision
            || header.batch_first_revision != seal.last_revision.wrapping_add(1)
        {
            return Err(DecodeError::InvalidField {
                field: "seal.header",
                reason: format!(
                    "header revision {} and batch mark {} do not match last revision {}",
                    header.revision, header.batch_first_revision, seal.last_revision
                ),
            });
        }
        Ok(seal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_header_round_trips_and_detects_damage() {
        let mut out = Vec::new();
        encode_record(&mut out, RecordType::Commit, 9, 8, b"payload");
        let header = RecordHeader::decode(&out).unwrap();
        assert_eq!(header.revision, 9);
        assert_eq!(header.batch_first_revision, 8);
        assert_eq!(header.record_len(), (RECORD_HEADER_LEN + 7) as u64);
        header.check_payload(&out[RECORD_HEADER_LEN..]).unwrap();
        for i in 0..RECORD_HEADER_LEN {
            let mut bad = out.clone();
            bad[i] ^= 0x40;
            assert!(RecordHeader::decode(&bad).is_err(), "flip at {i}");
        }
        let mut bad = out.clone();
        bad[RECORD_HEADER_LEN] ^= 1;
        assert!(header.check_payload(&bad[RECORD_HEADER_LEN..]).is_err());
    }

    #[test]
    fn seal_round_trips() {
        let seal = SealPayload {
            first_revision: 10,
            last_revision: 19,
            commit_count: 10,
            last_timestamp_us: 5,
            last_hash: [7; 32],
            data_bytes: 1000,
            data_crc: 0xdead_beef,
            sealed_unix_us: 6,
        };
        let record = seal.encode_record();
        assert_eq!(record.len(), SEAL_RECORD_LEN);
        assert_eq!(SealPayload::decode_record(&record).unwrap(), seal);
        let mut bad = record.clone();
        bad[RECORD_HEADER_LEN + SEAL_COMMIT_COUNT_OFFSET] ^= 1;
        assert!(SealPayload::decode_record(&bad).is_err());
    }
}
