//! Backups by segment (DESIGN.md §6; FORMAT.md "Backup repositories").
//!
//! Sealed segments never change, so a backup is a set of whole files: a **full** backup holds
//! the base image (if the store was compacted), the newest snapshot at or before its last revision
//! and every live sealed segment; an **incremental** one the segments sealed since the previous
//! backup of any kind; a **differential** one those since the last full. Each backup's manifest
//! lists every file a restore of it needs — with size, SHA-256 and the backup holding its bytes —
//! and is written last, after every upload was read back and checked: a backup without a
//! manifest is incomplete and never used. Backups are ordered by the sequence recorded in their
//! manifests, never by their names. The repository lock keeps backups and prunes apart.

pub mod archive;
mod create;
pub mod layout;
mod manifest;
mod prune;
pub mod repo;
mod restore;
mod service;
mod verify;
pub mod view;

use thiserror::Error;

pub use create::{Created, Progress, create, create_tracked};
pub use manifest::*;
pub use prune::{Keep, Pruned, prune};
pub use repo::Repo;
pub use restore::restore;
pub use service::{ArchiveStatus, BackupService, LastBackup, RunningBackup};
pub use verify::{VERIFY_RECORD, VerifyFinding, VerifyRecord, verify};

use manifest::check_object;

#[derive(Debug, Error)]
pub enum BackupError {
    #[error("{0}")]
    Invalid(String),
    #[error("repository is locked: {0}")]
    Locked(String),
    #[error("{op} {object}: {reason}")]
    Repo {
        op: &'static str,
        object: String,
        reason: String,
    },
    #[error("backup {backup}, file {file}: {reason}")]
    Damaged {
        backup: String,
        file: String,
        reason: String,
    },
    #[error("{0}")]
    Store(String),
    #[error(transparent)]
    Restore(#[from] crate::store::restore::RestoreError),
}
