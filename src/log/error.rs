//! Errors of the log layer: a refused request (nothing written), a store that cannot open, and
//! I/O failures, each with the file and offset it concerns.

use std::io;
use std::path::PathBuf;

use storage_format::DecodeError;
use storage_format::commit::CommitError;
use storage_format::scan::ScanErrorKind;
use thiserror::Error;

/// Why a commit request was refused before anything was written.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Rejection {
    #[error(transparent)]
    Format(#[from] CommitError),
    #[error("{count} ops, over the maximum {max} for one commit")]
    TooManyOps { count: usize, max: usize },
    #[error("value of {key:?} is {len} bytes, over the configured maximum {max}")]
    ValueTooLarge { key: String, len: usize, max: usize },
    #[error("value of {key:?} is not JSON: {message}")]
    InvalidJson { key: String, message: String },
    #[error("commit is {len} bytes encoded, over the maximum {max}")]
    CommitTooLarge { len: usize, max: usize },
}

/// What exactly is corrupt.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Corruption {
    #[error(transparent)]
    Segment(#[from] ScanErrorKind),
    #[error("cannot decode: {0}")]
    Decode(#[from] DecodeError),
    #[error("belongs to history {found}, the store is {expected}")]
    WrongHistory { expected: String, found: String },
    #[error("segment header says sequence {found}, its name says {expected}")]
    WrongSequence { expected: u64, found: u64 },
    #[error("segment {missing} is missing between live segments")]
    MissingSegment { missing: u64 },
    #[error("segment starts at revision {found}, expected {expected}")]
    RevisionGap { expected: u64, found: u64 },
    #[error("segment's predecessor hash does not match the previous segment's last hash")]
    ChainBreak,
    #[error("segment's predecessor timestamp {found} does not match {expected}")]
    TimestampBreak { expected: u64, found: u64 },
    #[error("sealed segment's seal does not match its header: {0}")]
    SealMismatch(String),
}

/// An error of the log layer.
#[derive(Debug, Error)]
pub enum LogError {
    #[error("request refused: {0}")]
    Rejected(#[from] Rejection),
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("data directory {} is in use by another process", dir.display())]
    Locked { dir: PathBuf },
    #[error("{} is not an llmcm data directory (it holds {found:?} but no MANIFEST)", dir.display())]
    NotAStore { dir: PathBuf, found: String },
    #[error("corruption in {} at offset {offset} (revision {revision}): {kind}", file.display())]
    Corrupted {
        file: PathBuf,
        offset: u64,
        revision: u64,
        kind: Corruption,
    },
    #[error("the store is read-only: {reason}")]
    ReadOnly { reason: String },
    #[error("the log is closed")]
    Closed,
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("unsupported: {0}")]
    Unsupported(String),
}

impl LogError {
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> LogError {
        let path = path.into();
        move |source| LogError::Io { op, path, source }
    }

    pub(crate) fn corrupted(
        file: impl Into<PathBuf>,
        offset: u64,
        revision: u64,
        kind: impl Into<Corruption>,
    ) -> LogError {
        LogError::Corrupted {
            file: file.into(),
            offset,
            revision,
            kind: kind.into(),
        }
    }

    /// Whether the disk is full (the store turned read-only for lack of space).
    pub fn is_disk_full(&self) -> bool {
        matches!(self, LogError::Io { source, .. } if source.raw_os_error() == Some(28))
    }
}
