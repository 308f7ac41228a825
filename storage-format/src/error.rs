//! Errors from decoding bytes read from disk or the network.

use thiserror::Error;

/// What is wrong with a byte string that was supposed to hold one of the format's objects.
///
/// Offsets are relative to the slice given to the decoder; callers that know the file add the
/// file name and the absolute offset (see `llmcm::log::LogError`).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    #[error("truncated {what}: need {needed} bytes, have {available}")]
    Truncated {
        what: &'static str,
        needed: u64,
        available: u64,
    },
    #[error("bad magic for {what}")]
    BadMagic { what: &'static str },
    #[error("unsupported format version {version} in {what}")]
    UnsupportedVersion { what: &'static str, version: u32 },
    #[error("{what} checksum mismatch: stored {expected:#010x}, computed {actual:#010x}")]
    ChecksumMismatch {
        what: &'static str,
        expected: u32,
        actual: u32,
    },
    #[error("{what} is {value}, over the maximum {max}")]
    TooLarge {
        what: &'static str,
        value: u64,
        max: u64,
    },
    #[error("invalid field {field}: {reason}")]
    InvalidField { field: &'static str, reason: String },
    #[error("{what} has {extra} trailing bytes")]
    TrailingBytes { what: &'static str, extra: u64 },
}

/// Why a key is not acceptable (DESIGN.md §2).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KeyError {
    #[error("key is empty")]
    Empty,
    #[error("key is {len} bytes, over the maximum {max}")]
    TooLong { len: usize, max: usize },
    #[error("key starts or ends with '/'")]
    EdgeSlash,
    #[error("key has an empty segment")]
    EmptySegment,
    #[error("key has a '.' or '..' segment")]
    DotSegment,
    #[error("key has character {ch:?} outside [A-Za-z0-9._-/]")]
    BadCharacter { ch: char },
}
