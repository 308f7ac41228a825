//! A backup's manifest (FORMAT.md "Backup repositories"), reading objects back against it, and
//! the catalog of a repository's backups.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use storage_format::hex;

use super::*;

/// Version of the manifest format.
pub const MANIFEST_FORMAT: u32 = 1;
/// Where backups live in a repository.
pub const BACKUPS_DIR: &str = "backups";
/// A backup's completion marker.
pub const MANIFEST_NAME: &str = "manifest.json";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupKind {
    Full,
    Incremental,
    Differential,
}

impl std::str::FromStr for BackupKind {
    type Err = String;
    fn from_str(s: &str) -> Result<BackupKind, String> {
        match s {
            "full" => Ok(BackupKind::Full),
            "incremental" => Ok(BackupKind::Incremental),
            "differential" => Ok(BackupKind::Differential),
            other => Err(format!(
                "unknown kind {other:?}: full, incremental or differential"
            )),
        }
    }
}

impl BackupKind {
    pub fn name(self) -> &'static str {
        match self {
            BackupKind::Full => "full",
            BackupKind::Incremental => "incremental",
            BackupKind::Differential => "differential",
        }
    }
}

/// What a file of a backup is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    Segment,
    Snapshot,
    Base,
}

/// One file a restore of a backup needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// The file's name in a data directory: `log/seg-….log`, `snapshots/snap-….img`, `base-….img`.
    pub name: String,
    pub kind: FileKind,
    pub size: u64,
    /// Hex SHA-256 of the content.
    pub sha256: String,
    /// The backup whose directory holds the bytes.
    pub backup: String,
    /// Segments: the revisions they hold; images: the revision of their state (both ends).
    pub first_revision: u64,
    pub last_revision: u64,
}

/// The horizon of the store when the backup was taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HorizonRecord {
    pub revision: u64,
    pub timestamp_us: u64,
    pub hash: String,
    pub base_image_seq: u64,
}

/// A backup's manifest (`backups/<id>/manifest.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub id: String,
    /// Order of the backups in the repository (1, 2, …); recorded, never parsed from a name.
    pub sequence: u64,
    pub kind: BackupKind,
    pub parent: Option<String>,
    /// The full backup at the root of this one's chain (itself for a full).
    pub full: String,
    pub history_id: String,
    pub horizon: HorizonRecord,
    /// Revisions a restore from this backup can reach: the horizon (or the first image) to the
    /// last segment's last revision.
    pub first_revision: u64,
    pub last_revision: u64,
    pub first_timestamp_us: u64,
    pub last_timestamp_us: u64,
    pub created_us: u64,
    pub files: Vec<FileEntry>,
    /// Bytes this backup uploaded (the files it holds).
    pub bytes: u64,
    pub seconds: f64,
}

impl Manifest {
    pub(super) fn dir(&self) -> String {
        format!("{BACKUPS_DIR}/{}", self.id)
    }

    /// Checks every name and digest against the layout (`layout`), before anything uses them:
    /// a manifest comes from a repository, which anyone with write access to it can edit.
    pub fn validate(&self) -> Result<(), String> {
        layout::check_backup_id(&self.id)?;
        for id in self.parent.iter().chain([&self.full]) {
            layout::check_backup_id(id)?;
        }
        layout::check_history_id(&self.history_id)?;
        layout::check_sha256(&self.horizon.hash).map_err(|e| format!("horizon hash: {e}"))?;
        if self.files.len() > layout::MANIFEST_FILES_MAX {
            return Err(format!(
                "{} files, over the maximum {}",
                self.files.len(),
                layout::MANIFEST_FILES_MAX
            ));
        }
        if self.first_revision > self.last_revision {
            return Err(format!(
                "first revision {} is after the last {}",
                self.first_revision, self.last_revision
            ));
        }
        for f in &self.files {
            layout::DataFile::parse(&f.name, f.kind)?;
            if f.backup != archive::ARCHIVE_HOLDER {
                layout::check_backup_id(&f.backup)?;
            }
            layout::check_sha256(&f.sha256).map_err(|e| format!("{}: {e}", f.name))?;
            if f.first_revision > f.last_revision {
                return Err(format!(
                    "{}: first revision {} is after the last {}",
                    f.name, f.first_revision, f.last_revision
                ));
            }
        }
        Ok(())
    }
}

impl FileEntry {
    /// Where this file goes in the data directory `dir` (its name was checked when the manifest
    /// was read; the path is built from the parsed parts, never from the text).
    pub fn path_in(&self, dir: &Path) -> Result<PathBuf, BackupError> {
        layout::DataFile::parse(&self.name, self.kind)
            .map(|file| file.path_in(dir))
            .map_err(|reason| BackupError::Damaged {
                backup: self.backup.clone(),
                file: format!("{:?}", self.name),
                reason,
            })
    }
}

/// A sealed, immutable file of the store (segment or image) as shared bytes, mapped rather than
/// read: no copy in memory, and the mapping stays valid if a compaction unlinks the file.
pub(crate) fn map_file(path: &Path) -> std::io::Result<bytes::Bytes> {
    let file = std::fs::File::open(path)?;
    if file.metadata()?.len() == 0 {
        return Ok(bytes::Bytes::new());
    }
    // SAFETY: only sealed segments and images are mapped here, and those are never truncated or
    // rewritten (FORMAT.md, "Assumptions about the disk").
    Ok(bytes::Bytes::from_owner(unsafe {
        memmap2::Mmap::map(&file)?
    }))
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// An object of `got_size` bytes hashing to `got_sha256` against its manifest entry.
fn content_matches(got_size: u64, got_sha256: &str, size: u64, sha256: &str) -> Result<(), String> {
    if got_size != size {
        return Err(format!("is {got_size} bytes, the manifest says {size}"));
    }
    if got_sha256 != sha256 {
        return Err("SHA-256 does not match the manifest".into());
    }
    Ok(())
}

/// Streams `object` from `repo`, hashing it, and checks it against `size` and `sha256`; each
/// chunk also goes to `sink` (e.g. a file being staged).
pub(super) async fn check_object(
    repo: &Repo,
    object: &str,
    size: u64,
    sha256: &str,
    mut sink: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> Result<Result<(), String>, BackupError> {
    let mut hasher = Sha256::new();
    let mut seen = 0u64;
    let streamed = repo
        .stream(object, |chunk| {
            // Stop at the first byte past the size the manifest gives: a repository object
            // cannot fill the disk (or the hash) beyond what was promised.
            seen += chunk.len() as u64;
            if seen > size {
                return Err(std::io::Error::other(format!(
                    "more than the {size} bytes the manifest says"
                )));
            }
            hasher.update(chunk);
            sink(chunk)
        })
        .await;
    let got = match streamed {
        Ok(got) => got,
        Err(_) if seen > size => {
            return Ok(Err(format!(
                "is larger than the {size} bytes the manifest says"
            )));
        }
        Err(e) => return Err(e),
    };
    Ok(content_matches(got, &hex(&hasher.finalize()), size, sha256))
}

/// Every complete backup in the repository, ordered by sequence, and the ids of incomplete ones
/// (a directory without a manifest).
pub async fn catalog(repo: &Repo) -> Result<(Vec<Manifest>, Vec<String>), BackupError> {
    let names = repo.list(BACKUPS_DIR).await?;
    let mut ids: BTreeSet<String> = BTreeSet::new();
    let mut with_manifest: BTreeSet<String> = BTreeSet::new();
    for name in &names {
        let mut parts = name.splitn(3, '/');
        let (Some(_), Some(id), Some(rest)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        // Anything that is not a backup's directory is not ours: never read, never deleted.
        if layout::check_backup_id(id).is_err() {
            continue;
        }
        ids.insert(id.to_owned());
        if rest == MANIFEST_NAME {
            with_manifest.insert(id.to_owned());
        }
    }
    let mut manifests = Vec::new();
    for id in &with_manifest {
        let name = format!("{BACKUPS_DIR}/{id}/{MANIFEST_NAME}");
        let bytes = repo.get(&name).await?;
        let manifest: Manifest =
            serde_json::from_slice(&bytes).map_err(|e| BackupError::Damaged {
                backup: id.clone(),
                file: MANIFEST_NAME.into(),
                reason: format!("not a valid manifest: {e}"),
            })?;
        if manifest.id != *id || manifest.format != MANIFEST_FORMAT {
            return Err(BackupError::Damaged {
                backup: id.clone(),
                file: MANIFEST_NAME.into(),
                reason: format!(
                    "names backup {:?} (format {}) in the directory of {id}",
                    manifest.id, manifest.format
                ),
            });
        }
        manifest.validate().map_err(|reason| BackupError::Damaged {
            backup: id.clone(),
            file: MANIFEST_NAME.into(),
            reason,
        })?;
        manifests.push(manifest);
    }
    manifests.sort_by_key(|m| m.sequence);
    let incomplete = ids.difference(&with_manifest).cloned().collect();
    Ok((manifests, incomplete))
}
