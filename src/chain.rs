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
    #[error("value of {key:?} at revision {revision} is not JSON: {source}")]
    NotJson {
        key: String,
        revision: u64,
        source: serde_json::Error,
    },
    #[error("writing the export: {0}")]
    Write(#[from] std::io::Error),
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
    pub detail: Option<&'a RawValue>,
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
    Put { key: &'a str, value: &'a RawValue },
    Delete { key: &'a str },
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
    ) -> Result<CommitView<'a>, ChainError> {
        let raw = |key: &str, bytes: &'a [u8]| {
            serde_json::from_slice::<&RawValue>(bytes).map_err(|source| ChainError::NotJson {
                key: key.to_owned(),
                revision: commit.revision,
                source,
            })
        };
        let mut ops = Vec::with_capacity(commit.ops.len());
        for op in &commit.ops {
            ops.push(match op {
                Op::Put { key, value } => OpView::Put {
                    key,
                    value: raw(key, value)?,
                },
                Op::Delete { key } => OpView::Delete { key },
            });
        }
        let detail = if commit.detail.is_empty() {
            None
        } else {
            Some(raw("(detail)", &commit.detail)?)
        };
        Ok(CommitView {
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
        })
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
        let line = CommitView::new(
            &link.payload.commit,
            &link.payload.hash,
            &link.prev_hash,
            Some(link.payload.canonical),
        )
        .and_then(|view| {
            serde_json::to_writer(&mut *out, &view).map_err(|e| ChainError::Write(e.into()))?;
            out.write_all(b"\n")?;
            Ok(())
        });
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
