//! The commit: its value type, its canonical bytes (what the SHA-256 chain covers) and the record
//! payload that stores it (canonical bytes followed by the chain hash).
//!
//! The canonical encoding is a fixed sequence of little-endian integers and length-prefixed byte
//! strings with no optional parts and no padding, so one commit has exactly one encoding and an
//! auditor can re-implement it from FORMAT.md with nothing but `struct.unpack`.

use std::collections::HashSet;

use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::{
    ACTOR_BYTES_MAX, COMMIT_OPS_MAX, DETAIL_BYTES_MAX, DecodeError, HASH_LEN, Hash, KeyError,
    REASON_BYTES_MAX, RECORD_PAYLOAD_BYTES_MAX, Reader, VALUE_BYTES_MAX, Writer, validate_key,
};

/// First byte of every canonical commit encoding.
pub const COMMIT_ENCODING_V1: u8 = 1;
/// Op type byte of a put.
pub const OP_PUT: u8 = 1;
/// Op type byte of a delete.
pub const OP_DELETE: u8 = 2;

/// Bytes before the actor: encoding, kind, revision, timestamp.
pub const COMMIT_FIXED_PREFIX_LEN: usize = 1 + 1 + 8 + 8;
const _: () = assert!(COMMIT_FIXED_PREFIX_LEN == 18);

/// What a commit records (DESIGN.md §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommitKind {
    /// Ops on keys.
    Change,
    /// First commit of a history made by a restore; its detail names source history, point, hash.
    Restore,
    /// Records that history before a horizon was dropped; its detail names the horizon.
    Compaction,
    /// An operator switched the store read-only or back; its detail says which and why.
    ReadOnly,
}

impl CommitKind {
    pub fn to_u8(self) -> u8 {
        match self {
            CommitKind::Change => 1,
            CommitKind::Restore => 2,
            CommitKind::Compaction => 3,
            CommitKind::ReadOnly => 4,
        }
    }
    pub fn from_u8(byte: u8) -> Option<Self> {
        Some(match byte {
            1 => CommitKind::Change,
            2 => CommitKind::Restore,
            3 => CommitKind::Compaction,
            4 => CommitKind::ReadOnly,
            _ => return None,
        })
    }
    /// The name used in the HTTP API.
    pub fn name(self) -> &'static str {
        match self {
            CommitKind::Change => "change",
            CommitKind::Restore => "restore",
            CommitKind::Compaction => "compaction",
            CommitKind::ReadOnly => "read_only",
        }
    }
}

/// One operation of a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Sets `key` to `value`, the JSON text exactly as received.
    Put { key: String, value: Vec<u8> },
    /// Removes `key`.
    Delete { key: String },
}

impl Op {
    pub fn key(&self) -> &str {
        match self {
            Op::Put { key, .. } | Op::Delete { key } => key,
        }
    }
}

/// One atomic change set, the unit of history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    pub revision: u64,
    /// Microseconds since the Unix epoch, UTC.
    pub timestamp_us: u64,
    pub kind: CommitKind,
    pub actor: String,
    pub reason: String,
    /// A JSON object describing a system commit; empty for `Change`.
    pub detail: Vec<u8>,
    pub ops: Vec<Op>,
}

/// Why a commit cannot be encoded (format-level limits; the store adds its own, lower ones).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CommitError {
    #[error("a change commit needs at least one op")]
    NoOps,
    #[error("a {kind} commit carries no key ops")]
    OpsOnSystemCommit { kind: &'static str },
    #[error("{count} ops, over the maximum {max}")]
    TooManyOps { count: usize, max: usize },
    #[error("invalid key {key:?}: {source}")]
    InvalidKey { key: String, source: KeyError },
    #[error("key {key:?} appears twice in one commit")]
    DuplicateKey { key: String },
    #[error("value of {key:?} is {len} bytes, over the maximum {max}")]
    ValueTooLarge { key: String, len: usize, max: usize },
    #[error("{field} is {len} bytes, over the maximum {max}")]
    FieldTooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("encoded commit is {len} bytes, over the maximum {max}")]
    EncodedTooLarge { len: usize, max: usize },
}

impl Commit {
    /// Checks the format-level rules: field lengths, op count by kind, valid and distinct keys.
    pub fn validate(&self) -> Result<(), CommitError> {
        let field = |field, len, max| {
            if len > max {
                Err(CommitError::FieldTooLong { field, len, max })
            } else {
                Ok(())
            }
        };
        field("actor", self.actor.len(), ACTOR_BYTES_MAX)?;
        field("reason", self.reason.len(), REASON_BYTES_MAX)?;
        field("detail", self.detail.len(), DETAIL_BYTES_MAX)?;
        match self.kind {
            CommitKind::Change if self.ops.is_empty() => return Err(CommitError::NoOps),
            CommitKind::Change => {}
            kind if !self.ops.is_empty() => {
                return Err(CommitError::OpsOnSystemCommit { kind: kind.name() });
            }
            _ => {}
        }
        if self.ops.len() > COMMIT_OPS_MAX {
            return Err(CommitError::TooManyOps {
                count: self.ops.len(),
                max: COMMIT_OPS_MAX,
            });
        }
        let mut seen = HashSet::with_capacity(self.ops.len());
        for op in &self.ops {
            let key = op.key();
            validate_key(key).map_err(|source| CommitError::InvalidKey {
                key: key.to_owned(),
                source,
            })?;
            if !seen.insert(key) {
                return Err(CommitError::DuplicateKey {
                    key: key.to_owned(),
                });
            }
            if let Op::Put { value, .. } = op
                && value.len() > VALUE_BYTES_MAX
            {
                return Err(CommitError::ValueTooLarge {
                    key: key.to_owned(),
                    len: value.len(),
                    max: VALUE_BYTES_MAX,
                });
            }
        }
        Ok(())
    }

    /// Length of the canonical encoding, computed without encoding.
    pub fn canonical_len(&self) -> usize {
        let ops: usize = self
            .ops
            .iter()
            .map(|op| match op {
                Op::Put { key, value } => 1 + 2 + key.len() + 4 + value.len(),
                Op::Delete { key } => 1 + 2 + key.len(),
            })
            .sum();
        self.ops_offset() + ops
    }

    /// Where the first op starts in the canonical bytes: after the fixed prefix, actor, reason,
    /// detail and the op count.
    fn ops_offset(&self) -> usize {
        COMMIT_FIXED_PREFIX_LEN
            + 2
            + self.actor.len()
            + 2
            + self.reason.len()
            + 4
            + self.detail.len()
            + 4
    }

    /// Where each put's value lies within the canonical bytes: `(offset, len)` per op, `None` for
    /// a delete. Lets an index point straight at value bytes in a segment.
    pub fn value_offsets(&self) -> Vec<Option<(usize, usize)>> {
        let mut at = self.ops_offset();
        self.ops
            .iter()
            .map(|op| match op {
                Op::Put { key, value } => {
                    let offset = at + 1 + 2 + key.len() + 4;
                    at = offset + value.len();
                    Some((offset, value.len()))
                }
                Op::Delete { key } => {
                    at += 1 + 2 + key.len();
                    None
                }
            })
            .collect()
    }

    /// Appends the canonical bytes (FORMAT.md "Commit encoding") to `out`.
    ///
    /// Precondition: `validate()` passed, so every length fits its field.
    pub fn encode_canonical_into(&self, out: &mut Writer) {
        assert!(self.actor.len() <= ACTOR_BYTES_MAX);
        assert!(self.reason.len() <= REASON_BYTES_MAX);
        assert!(self.detail.len() <= DETAIL_BYTES_MAX);
        assert!(self.ops.len() <= COMMIT_OPS_MAX);
        let start = out.len();
        out.u8(COMMIT_ENCODING_V1);
        out.u8(self.kind.to_u8());
        out.u64(self.revision);
        out.u64(self.timestamp_us);
        out.u16(self.actor.len() as u16);
        out.bytes(self.actor.as_bytes());
        out.u16(self.reason.len() as u16);
        out.bytes(self.reason.as_bytes());
        out.u32(self.detail.len() as u32);
        out.bytes(&self.detail);
        out.u32(self.ops.len() as u32);
        for op in &self.ops {
            match op {
                Op::Put { key, value } => {
                    out.u8(OP_PUT);
                    out.u16(key.len() as u16);
                    out.bytes(key.as_bytes());
                    out.u32(value.len() as u32);
                    out.bytes(value);
                }
                Op::Delete { key } => {
                    out.u8(OP_DELETE);
                    out.u16(key.len() as u16);
                    out.bytes(key.as_bytes());
                }
            }
        }
        assert_eq!(out.len() - start, self.canonical_len());
    }

    /// The canonical bytes alone.
    pub fn encode_canonical(&self) -> Vec<u8> {
        let mut out = Writer::with_capacity(self.canonical_len());
        self.encode_canonical_into(&mut out);
        out.buf
    }

    /// Decodes canonical bytes; the whole slice must be one commit.
    pub fn decode_canonical(bytes: &[u8]) -> Result<Commit, DecodeError> {
        let mut r = Reader::new(bytes, "commit");
        let encoding = r.u8()?;
        if encoding != COMMIT_ENCODING_V1 {
            return Err(DecodeError::InvalidField {
                field: "commit.encoding",
                reason: format!("unknown encoding {encoding}"),
            });
        }
        let kind_byte = r.u8()?;
        let kind = CommitKind::from_u8(kind_byte).ok_or_else(|| DecodeError::InvalidField {
            field: "commit.kind",
            reason: format!("unknown kind {kind_byte}"),
        })?;
        let revision = r.u64()?;
        let timestamp_us = r.u64()?;
        let actor = read_text(&mut r, "commit.actor", ACTOR_BYTES_MAX, LenWidth::U16)?;
        let reason = read_text(&mut r, "commit.reason", REASON_BYTES_MAX, LenWidth::U16)?;
        let detail = read_len_bytes(&mut r, "commit.detail", DETAIL_BYTES_MAX, LenWidth::U32)?;
        let op_count = r.u32()? as usize;
        check_max("commit.op_count", op_count, COMMIT_OPS_MAX)?;
        // Each op takes at least 4 bytes, so a count the input cannot hold is refused before
        // anything is allocated by it.
        if op_count > r.remaining() / 4 {
            return Err(DecodeError::Truncated {
                what: "commit ops",
                needed: (r.position() + op_count * 4) as u64,
                available: bytes.len() as u64,
            });
        }
        let mut ops = Vec::with_capacity(op_count);
        for _ in 0..op_count {
            let op_type = r.u8()?;
            let key = read_text(&mut r, "op.key", crate::KEY_BYTES_MAX, LenWidth::U16)?;
            ops.push(match op_type {
                OP_PUT => {
                    let value = read_len_bytes(&mut r, "op.value", VALUE_BYTES_MAX, LenWidth::U32)?;
                    Op::Put {
                        key,
                        value: value.to_vec(),
                    }
                }
                OP_DELETE => Op::Delete { key },
                other => {
                    return Err(DecodeError::InvalidField {
                        field: "op.type",
                        reason: format!("unknown op type {other}"),
                    });
                }
            });
        }
        r.finish()?;
        let commit = Commit {
            revision,
            timestamp_us,
            kind,
            actor,
            reason,
            detail: detail.to_vec(),
            ops,
        };
        commit
            .validate()
            .map_err(|error| DecodeError::InvalidField {
                field: "commit",
                reason: error.to_string(),
            })?;
        Ok(commit)
    }
}

enum LenWidth {
    U16,
    U32,
}

fn check_max(what: &'static str, value: usize, max: usize) -> Result<(), DecodeError> {
    if value > max {
        return Err(DecodeError::TooLarge {
            what,
            value: value as u64,
            max: max as u64,
        });
    }
    Ok(())
}

fn read_len_bytes<'a>(
    r: &mut Reader<'a>,
    what: &'static str,
    max: usize,
    width: LenWidth,
) -> Result<&'a [u8], DecodeError> {
    let len = match width {
        LenWidth::U16 => r.u16()? as usize,
        LenWidth::U32 => r.u32()? as usize,
    };
    check_max(what, len, max)?;
    r.bytes(len)
}

fn read_text(
    r: &mut Reader<'_>,
    what: &'static str,
    max: usize,
    width: LenWidth,
) -> Result<String, DecodeError> {
    let bytes = read_len_bytes(r, what, max, width)?;
    String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::InvalidField {
        field: what,
        reason: "not UTF-8".to_owned(),
    })
}

/// The chain hash: SHA-256 over the previous commit's hash followed by this commit's canonical
/// bytes.
pub fn chain_hash(prev_hash: &Hash, canonical: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update(prev_hash);
    hasher.update(canonical);
    hasher.finalize().into()
}

/// Builds a commit record's payload: canonical bytes then the chain hash. Returns the payload and
/// the hash.
pub fn encode_commit_payload(
    commit: &Commit,
    prev_hash: &Hash,
) -> Result<(Vec<u8>, Hash), CommitError> {
    commit.validate()?;
    let len = commit.canonical_len() + HASH_LEN;
    if len > RECORD_PAYLOAD_BYTES_MAX {
        return Err(CommitError::EncodedTooLarge {
            len,
            max: RECORD_PAYLOAD_BYTES_MAX,
        });
    }
    let mut out = Writer::with_capacity(len);
    commit.encode_canonical_into(&mut out);
    let hash = chain_hash(prev_hash, &out.buf);
    out.bytes(&hash);
    Ok((out.buf, hash))
}

/// A decoded commit record payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitPayload<'a> {
    pub commit: Commit,
    /// The canonical bytes, borrowed from the payload.
    pub canonical: &'a [u8],
    /// The chain hash stored after them.
    pub hash: Hash,
}

/// Splits and decodes a commit record's payload. The stored hash is returned, not checked: the
/// caller knows the predecessor's hash.
pub fn decode_commit_payload(payload: &[u8]) -> Result<CommitPayload<'_>, DecodeError> {
    if payload.len() < HASH_LEN {
        return Err(DecodeError::Truncated {
            what: "commit payload",
            needed: HASH_LEN as u64,
            available: payload.len() as u64,
        });
    }
    let (canonical, hash) = payload.split_at(payload.len() - HASH_LEN);
    let commit = Commit::decode_canonical(canonical)?;
    Ok(CommitPayload {
        commit,
        canonical,
        hash: hash.try_into().expect("HASH_LEN bytes"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::GENESIS_HASH;

    pub(crate) fn sample() -> Commit {
        Commit {
            revision: 7,
            timestamp_us: 1_790_000_000_000_000,
            kind: CommitKind::Change,
            actor: "release-bot".into(),
            reason: "raise temperature".into(),
            detail: Vec::new(),
            ops: vec![
                Op::Put {
                    key: "prod/chatbot/model".into(),
                    value: br#"{"model":"m1"}"#.to_vec(),
                },
                Op::Delete {
                    key: "prod/chatbot/old".into(),
                },
            ],
        }
    }

    #[test]
    fn canonical_round_trips_and_is_stable() {
        let commit = sample();
        let bytes = commit.encode_canonical();
        assert_eq!(bytes.len(), commit.canonical_len());
        assert_eq!(Commit::decode_canonical(&bytes).unwrap(), commit);
        // Field order and widths are part of the chain: pin the first bytes.
        assert_eq!(&bytes[..10], &[1, 1, 7, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn value_offsets_point_at_the_values() {
        let commit = sample();
        let bytes = commit.encode_canonical();
        let offsets = commit.value_offsets();
        assert_eq!(offsets.len(), 2);
        let (at, len) = offsets[0].unwrap();
        assert_eq!(&bytes[at..at + len], br#"{"model":"m1"}"#);
        assert_eq!(offsets[1], None);
    }

    #[test]
    fn payload_carries_the_chain_hash() {
        let commit = sample();
        let (payload, hash) = encode_commit_payload(&commit, &GENESIS_HASH).unwrap();
        let decoded = decode_commit_payload(&payload).unwrap();
        assert_eq!(decoded.commit, commit);
        assert_eq!(decoded.hash, hash);
        assert_eq!(hash, chain_hash(&GENESIS_HASH, decoded.canonical));
    }

    #[test]
    fn validation_refuses_what_the_format_cannot_hold() {
        let mut c = sample();
        c.ops.clear();
        assert_eq!(c.validate(), Err(CommitError::NoOps));
        let mut c = sample();
        c.kind = CommitKind::ReadOnly;
        assert!(matches!(
            c.validate(),
            Err(CommitError::OpsOnSystemCommit { .. })
        ));
        let mut c = sample();
        c.ops.push(Op::Delete {
            key: "prod/chatbot/model".into(),
        });
        assert!(matches!(
            c.validate(),
            Err(CommitError::DuplicateKey { .. })
        ));
        let mut c = sample();
        c.reason = "x".repeat(REASON_BYTES_MAX + 1);
        assert!(matches!(
            c.validate(),
            Err(CommitError::FieldTooLong {
                field: "reason",
                ..
            })
        ));
        let mut c = sample();
        c.ops[0] = Op::Delete { key: "a//b".into() };
        assert!(matches!(c.validate(), Err(CommitError::InvalidKey { .. })));
    }

    #[test]
    fn decoding_refuses_garbage_without_panicking() {
        let bytes = sample().encode_canonical();
        for cut in 0..bytes.len() {
            assert!(
                Commit::decode_canonical(&bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut huge_count = bytes.clone();
        let count_at = bytes.len() - (1 + 2 + 18 + 4 + 14) - (1 + 2 + 16) - 4;
        huge_count[count_at..count_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Commit::decode_canonical(&huge_count).is_err());
    }
}
