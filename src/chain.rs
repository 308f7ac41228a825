//! The JSON shape of a commit (DESIGN.md §3) and the chain export: every commit with its
//! canonical bytes in hex, one JSON object per line, which `tools/verify_chain.py` re-verifies
//! with nothing but Python's standard library.

use std::io::Write;

use serde::Serialize;
use serde_json::value::RawValue;
use storage_format::commit::{Commit, Op};
use storage_format::{Hash, hex};
use thiserror::Error;

use crate::clock::format_timestamp_us;
use crate::log::{Log, LogError};

#[derive(Debug, Error)]
pub enum ChainError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("writing the export: {0}")]
    Write(#[from] std::io::Error),
}

/// A stored value as an answer carries it: the stored JSON verbatim, or — for a value that
/// fails `storage_format::json::check_stored` (written by an older server that let invalid
/// UTF-8 through) — `null`, with the reason in a sibling `value_error` field. One bad value
/// never turns a whole list, page or stream into an error.
#[derive(Debug, Clone, Copy)]
pub enum StoredValue<'a> {
    Json(&'a RawValue),
    Unreadable(&'static str),
}

impl<'a> StoredValue<'a> {
    pub fn new(bytes: &'a [u8]) -> StoredValue<'a> {
        if let Err(error) = storage_format::json::check_stored(bytes) {
            return StoredValue::Unreadable(error.code());
        }
        // Checked above: serde_json accepts whatever the check does (the check_json fuzz target).
        match serde_json::from_slice::<&RawValue>(bytes) {
            Ok(raw) => StoredValue::Json(raw),
            Err(_) => StoredValue::Unreadable("invalid_json"),
        }
    }

    /// The text of the `value_error` field beside it, if any.
    pub fn error(&self) -> Option<&'static str> {
        match self {
            StoredValue::Json(_) => None,
            StoredValue::Unreadable(code) => Some(code),
        }
    }
}

impl Serialize for StoredValue<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            StoredValue::Json(raw) => raw.serialize(serializer),
            StoredValue::Unreadable(_) => serializer.serialize_none(),
        }
    }
}

/// A commit as the API shows it.
#[derive(Debug, Serialize)]
pub struct CommitView<'a> {
    pub revision: u64,
    pub timestamp: String,
    pub kind: &'static str,
    pub actor: &'a str,
    pub reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<StoredValue<'a>>,
    pub ops: Vec<OpView<'a>>,
    pub hash: String,
    pub prev_hash: String,
    /// Hex of the canonical bytes (the chain export only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canonical: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum OpView<'a> {
    Put {
        key: &'a str,
        value: StoredValue<'a>,
        #[serde(skip_serializing_if = "Option::is_none")]
        value_error: Option<&'static str>,
    },
    Delete {
        key: &'a str,
    },
}

impl OpView<'_> {
    pub fn key(&self) -> &str {
        match self {
            OpView::Put { key, .. } | OpView::Delete { key } => key,
        }
    }
}

impl<'a> CommitView<'a> {
    pub fn new(
        commit: &'a Commit,
        hash: &Hash,
        prev_hash: &Hash,
        canonical: Option<&[u8]>,
    ) -> CommitView<'a> {
        let mut ops = Vec::with_capacity(commit.ops.len());
        for op in &commit.ops {
            ops.push(match op {
                Op::Put { key, value } => {
                    let value = StoredValue::new(value);
                    OpView::Put {
                        key,
                        value,
                        value_error: value.error(),
                    }
                }
                Op::Delete { key } => OpView::Delete { key },
            });
        }
        let detail = (!commit.detail.is_empty()).then(|| StoredValue::new(&commit.detail));
        CommitView {
            revision: commit.revision,
            timestamp: format_timestamp_us(commit.timestamp_us),
            kind: commit.kind.name(),
            actor: &commit.actor,
            reason: &commit.reason,
            detail,
            ops,
            hash: hex(hash),
            prev_hash: hex(prev_hash),
            canonical: canonical.map(hex),
        }
    }
}

/// Writes the chain export of revisions `from..=to` as NDJSON; returns the number of commits.
pub fn export_chain(log: &Log, from: u64, to: u64, out: &mut dyn Write) -> Result<u64, ChainError> {
    let mut count = 0;
    let mut failure = None;
    log.for_each_commit(from, to, &mut |link| {
        if failure.is_some() {
            return;
        }
        let view = CommitView::new(
            &link.payload.commit,
            &link.payload.hash,
            &link.prev_hash,
            Some(link.payload.canonical),
        );
        let line = serde_json::to_writer(&mut *out, &view)
            .map_err(|e| ChainError::Write(e.into()))
            .and_then(|()| Ok(out.write_all(b"\n")?));
        match line {
            Ok(()) => count += 1,
            Err(e) => failure = Some(e),
        }
    })?;
    match failure {
        Some(e) => Err(e),
        None => Ok(count),
    }
}
