//! Reads a whole segment file's bytes record by record and checks everything that can be checked
//! from the segment alone: header, framing, CRCs, dense revisions, increasing timestamps, the hash
//! chain from the header's `prev_hash`, and the seal.
//!
//! It decides what an invalid record means (FORMAT.md "Recovery"):
//! - under `TailPolicy::Strict` (a sealed segment, or one closed cleanly) it is corruption;
//! - under `TailPolicy::AllowTornTail` (the active segment after a crash) it is a torn tail when
//!   no valid record of a *later* batch follows it — such a record would prove the damaged batch
//!   was synced and acknowledged — and corruption otherwise.
//!
//! A record whose CRCs pass but whose content is wrong (revision, timestamp, chain, encoding) is
//! never torn: it is corruption or tampering.

use thiserror::Error;

use crate::commit::{CommitPayload, chain_hash, decode_commit_payload};
use crate::record::{RECORD_HEADER_LEN, RecordHeader, RecordType, SealPayload};
use crate::segment::{SEGMENT_HEADER_LEN, SegmentHeader};
use crate::{DecodeError, Hash, hex};

/// How to treat an invalid record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TailPolicy {
    /// The segment is known complete: every invalid byte is corruption.
    Strict,
    /// The active segment after an unclean shutdown: its last batch may be torn.
    AllowTornTail,
}

/// How the segment ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanEnd {
    /// The last record ends exactly at the end of the file; no seal.
    Open,
    /// A valid seal record ends the file.
    Sealed(SealPayload),
    /// Bytes from `offset` to the end of the file (`bytes` of them) are a torn, never
    /// acknowledged tail.
    TornTail { offset: u64, bytes: u64 },
}

/// What a scan found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanOutcome {
    pub header: SegmentHeader,
    pub commit_count: u64,
    /// `header.first_revision - 1` when the segment holds no commit.
    pub last_revision: u64,
    pub last_timestamp_us: u64,
    pub last_hash: Hash,
    /// Offset just past the last valid commit record (where the next record goes).
    pub valid_len: u64,
    /// CRC-32 of the records in `[SEGMENT_HEADER_LEN, valid_len)`.
    pub data_crc: u32,
    pub end: ScanEnd,
}

/// Corruption found in a segment, at `offset`, where revision `revision` was expected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("at offset {offset} (expecting revision {revision}): {kind}")]
pub struct ScanError {
    pub offset: u64,
    pub revision: u64,
    pub kind: ScanErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ScanErrorKind {
    #[error("bad segment header: {0}")]
    Header(DecodeError),
    #[error("invalid record: {0}")]
    BadRecord(DecodeError),
    #[error(
        "invalid record followed by a valid record of a later batch at offset {later_offset}: {error}"
    )]
    DamageBeforeLaterBatch {
        error: DecodeError,
        later_offset: u64,
    },
    #[error("record has revision {found}, expected {expected}")]
    RevisionMismatch { expected: u64, found: u64 },
    #[error("timestamp {found} is not after the previous one, {previous}")]
    TimestampNotIncreasing { previous: u64, found: u64 },
    #[error("broken chain: stored hash {stored}, computed {computed}")]
    BrokenChain { stored: String, computed: String },
    #[error("record passes its CRC but does not decode: {0}")]
    BadCommit(DecodeError),
    #[error("batch mark {batch_first} is after the record's revision {revision}")]
    BadBatchMark { batch_first: u64, revision: u64 },
    #[error("seal does not match the segment: {0}")]
    BadSeal(String),
    #[error("{bytes} bytes after the seal")]
    DataAfterSeal { bytes: u64 },
}

/// Scans `bytes`, the whole content of one segment file, calling `on_commit` with each valid
/// commit and its offset in order.
pub fn scan_segment(
    bytes: &[u8],
    policy: TailPolicy,
    on_commit: &mut dyn FnMut(u64, &CommitPayload<'_>),
) -> Result<ScanOutcome, ScanError> {
    let header = SegmentHeader::decode(bytes).map_err(|e| ScanError {
        offset: 0,
        revision: 0,
        kind: ScanErrorKind::Header(e),
    })?;
    let mut out = ScanOutcome {
        header,
        commit_count: 0,
        last_revision: header.first_revision - 1,
        last_timestamp_us: header.prev_timestamp_us,
        last_hash: header.prev_hash,
        valid_len: SEGMENT_HEADER_LEN as u64,
        data_crc: 0,
        end: ScanEnd::Open,
    };
    let mut crc = crc32fast::Hasher::new();
    let mut offset = SEGMENT_HEADER_LEN;
    while offset < bytes.len() {
        let expected = out.last_revision + 1;
        let fail = |kind| ScanError {
            offset: offset as u64,
            revision: expected,
            kind,
        };
        let (record_header, payload) = match frame_at(bytes, offset) {
            Ok(framed) => framed,
            Err(error) => {
                if policy == TailPolicy::Strict {
                    return Err(fail(ScanErrorKind::BadRecord(error)));
                }
                if let Some(later_offset) = later_batch_after(bytes, offset + 1, expected) {
                    return Err(fail(ScanErrorKind::DamageBeforeLaterBatch {
                        error,
                        later_offset,
                    }));
                }
                out.end = ScanEnd::TornTail {
                    offset: offset as u64,
                    bytes: (bytes.len() - offset) as u64,
                };
                break;
            }
        };
        let record_end = offset + RECORD_HEADER_LEN + payload.len();
        match record_header.record_type {
            RecordType::Seal => {
                let seal = SealPayload::decode_framed(&record_header, payload)
                    .map_err(|e| fail(ScanErrorKind::BadSeal(e.to_string())))?;
                check_seal(&seal, &out, crc.clone().finalize(), offset)
                    .map_err(|reason| fail(ScanErrorKind::BadSeal(reason)))?;
                if record_end != bytes.len() {
                    return Err(fail(ScanErrorKind::DataAfterSeal {
                        bytes: (bytes.len() - record_end) as u64,
                    }));
                }
                out.end = ScanEnd::Sealed(seal);
                break;
            }
            RecordType::Commit => {
                if record_header.revision != expected {
                    return Err(fail(ScanErrorKind::RevisionMismatch {
                        expected,
                        found: record_header.revision,
                    }));
                }
                if record_header.batch_first_revision > record_header.revision {
                    return Err(fail(ScanErrorKind::BadBatchMark {
                        batch_first: record_header.batch_first_revision,
                        revision: record_header.revision,
                    }));
                }
                let decoded = decode_commit_payload(payload)
                    .map_err(|e| fail(ScanErrorKind::BadCommit(e)))?;
                if decoded.commit.revision != expected {
                    return Err(fail(ScanErrorKind::RevisionMismatch {
                        expected,
                        found: decoded.commit.revision,
                    }));
                }
                if decoded.commit.timestamp_us <= out.last_timestamp_us {
                    return Err(fail(ScanErrorKind::TimestampNotIncreasing {
                        previous: out.last_timestamp_us,
                        found: decoded.commit.timestamp_us,
                    }));
                }
                let computed = chain_hash(&out.last_hash, decoded.canonical);
                if computed != decoded.hash {
                    return Err(fail(ScanErrorKind::BrokenChain {
                        stored: hex(&decoded.hash),
                        computed: hex(&computed),
                    }));
                }
                on_commit(offset as u64, &decoded);
                crc.update(&bytes[offset..record_end]);
                out.commit_count += 1;
                out.last_revision = expected;
                out.last_timestamp_us = decoded.commit.timestamp_us;
                out.last_hash = decoded.hash;
                out.valid_len = record_end as u64;
            }
        }
        offset = record_end;
    }
    out.data_crc = crc.finalize();
    Ok(out)
}

/// Decodes the record framed at `offset`: header, bounds, payload CRC.
fn frame_at(bytes: &[u8], offset: usize) -> Result<(RecordHeader, &[u8]), DecodeError> {
    let header = RecordHeader::decode(&bytes[offset..])?;
    let payload_start = offset + RECORD_HEADER_LEN;
    let payload_end = payload_start as u64 + header.payload_len as u64;
    if payload_end > bytes.len() as u64 {
        return Err(DecodeError::Truncated {
            what: "record payload",
            needed: payload_end - offset as u64,
            available: (bytes.len() - offset) as u64,
        });
    }
    let payload = &bytes[payload_start..payload_end as usize];
    header.check_payload(payload)?;
    Ok((header, payload))
}

/// Looks at every offset from `from` for a valid record written by a batch later than the one
/// that should hold revision `expected` (a seal, or a commit whose batch began after `expected`).
fn later_batch_after(bytes: &[u8], from: usize, expected: u64) -> Option<u64> {
    let mut offset = from;
    while offset + RECORD_HEADER_LEN <= bytes.len() {
        if let Ok((header, payload)) = frame_at(bytes, offset) {
            let later = match header.record_type {
                RecordType::Seal => true,
                RecordType::Commit => header.batch_first_revision > expected,
            };
            if later {
                return Some(offset as u64);
            }
            // A valid record of the same, unfinished batch: skip it whole.
            offset += RECORD_HEADER_LEN + payload.len();
        } else {
            offset += 1;
        }
    }
    None
}

fn check_seal(
    seal: &SealPayload,
    out: &ScanOutcome,
    data_crc: u32,
    offset: usize,
) -> Result<(), String> {
    let mismatch = |field: &str, stored: String, found: String| {
        Err(format!("{field}: seal says {stored}, segment has {found}"))
    };
    if seal.first_revision != out.header.first_revision {
        return mismatch(
            "first_revision",
            seal.first_revision.to_string(),
            out.header.first_revision.to_string(),
        );
    }
    if seal.last_revision != out.last_revision {
        return mismatch(
            "last_revision",
            seal.last_revision.to_string(),
            out.last_revision.to_string(),
        );
    }
    if seal.commit_count != out.commit_count {
        return mismatch(
            "commit_count",
            seal.commit_count.to_string(),
            out.commit_count.to_string(),
        );
    }
    if seal.last_timestamp_us != out.last_timestamp_us {
        return mismatch(
            "last_timestamp",
            seal.last_timestamp_us.to_string(),
            out.last_timestamp_us.to_string(),
        );
    }
    if seal.last_hash != out.last_hash {
        return mismatch("last_hash", hex(&seal.last_hash), hex(&out.last_hash));
    }
    let data_bytes = (offset - SEGMENT_HEADER_LEN) as u64;
    if seal.data_bytes != data_bytes {
        return mismatch(
            "data_bytes",
            seal.data_bytes.to_string(),
            data_bytes.to_string(),
        );
    }
    if seal.data_crc != data_crc {
        return mismatch(
            "data_crc",
            format!("{:#010x}", seal.data_crc),
            format!("{data_crc:#010x}"),
        );
    }
    Ok(())
}
