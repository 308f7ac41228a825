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
pub mod layout;
pub mod repo;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use storage_format::hex;
use thiserror::Error;

pub use repo::Repo;

use crate::store::Store;

/// Version of the manifest format.
pub const MANIFEST_FORMAT: u32 = 1;
/// Where backups live in a repository.
pub const BACKUPS_DIR: &str = "backups";
/// A backup's completion marker.
pub const MANIFEST_NAME: &str = "manifest.json";

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
    Restore(#[from] crate::restore::RestoreError),
}

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
    fn dir(&self) -> String {
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

/// What `create` reports.
#[derive(Debug, Clone)]
pub struct Created {
    pub manifest: Manifest,
    pub files_uploaded: usize,
    /// Where the time went, phase by phase (seconds), for benchmarks and debug logs.
    pub phases: Vec<(&'static str, f64)>,
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
async fn check_object(
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

/// Takes a backup of `store` into `repo` (online): rolls the active segment, uploads what `kind`
/// needs, reads every upload back to check size and SHA-256, and writes the manifest last.
pub async fn create(
    store: &std::sync::Arc<Store>,
    repo: &Repo,
    kind: BackupKind,
) -> Result<Created, BackupError> {
    create_tracked(store, repo, kind, &Progress::default()).await
}

/// How far a running backup is: bytes to upload (known once the files are planned) and
/// uploaded so far (per file, after its read-back).
#[derive(Debug, Default)]
pub struct Progress {
    pub bytes_total: std::sync::atomic::AtomicU64,
    pub bytes_done: std::sync::atomic::AtomicU64,
}

/// `create`, reporting progress into `progress`.
pub async fn create_tracked(
    store: &std::sync::Arc<Store>,
    repo: &Repo,
    kind: BackupKind,
    progress: &Progress,
) -> Result<Created, BackupError> {
    let started = Instant::now();
    let lock = repo.lock(&format!("backup ({})", kind.name())).await?;
    let locked = started.elapsed().as_secs_f64();
    let result = create_locked(store, repo, kind, started, progress).await;
    let before_release = Instant::now();
    let released = lock.release().await;
    let mut created = result?;
    released?;
    created.phases.insert(0, ("lock", locked));
    created
        .phases
        .push(("release", before_release.elapsed().as_secs_f64()));
    tracing::debug!(phases = ?created.phases, id = %created.manifest.id, "backup done");
    Ok(created)
}

async fn create_locked(
    store: &std::sync::Arc<Store>,
    repo: &Repo,
    kind: BackupKind,
    started: Instant,
    progress: &Progress,
) -> Result<Created, BackupError> {
    let s = store.clone();
    let mut phases = Vec::new();
    let mut phase = Instant::now();
    let mut mark = |name: &'static str| {
        phases.push((name, phase.elapsed().as_secs_f64()));
        phase = Instant::now();
    };
    // Roll, then read what is sealed, on a blocking thread (it syncs files).
    let plan = tokio::task::spawn_blocking(move || plan_files(&s))
        .await
        .map_err(|e| BackupError::Store(e.to_string()))??;
    mark("roll and plan");
    let (manifests, _) = catalog(repo).await?;
    mark("catalog");
    let history = hex(&store.history_id());
    let same_history: Vec<&Manifest> = manifests
        .iter()
        .filter(|m| m.history_id == history)
        .collect();
    let parent = match kind {
        BackupKind::Full => None,
        BackupKind::Incremental => Some(same_history.last().copied().ok_or_else(|| {
            BackupError::Invalid("no backup of this history yet: take a full backup first".into())
        })?),
        BackupKind::Differential => Some(
            same_history
                .iter()
                .rev()
                .find(|m| m.kind == BackupKind::Full)
                .copied()
                .ok_or_else(|| {
                    BackupError::Invalid(
                        "no full backup of this history yet: take a full backup first".into(),
                    )
                })?,
        ),
    };
    let sequence = manifests.last().map_or(1, |m| m.sequence + 1);
    let id = format!(
        "{}-{}-{}",
        crate::clock::format_timestamp_us(repo::now_us())
            .replace([':', '.'], "")
            .trim_end_matches('Z'),
        kind.name(),
        repo::random_hex::<3>()
    );
    let mut files: Vec<FileEntry> = Vec::new();
    let mut upload: Vec<(PathBuf, FileEntry)> = Vec::new();
    match parent {
        None => {
            for f in &plan.files {
                upload.push((f.0.clone(), f.1.clone()));
            }
        }
        Some(parent) => {
            if parent.last_revision > plan.last_revision {
                return Err(BackupError::Invalid(format!(
                    "the parent backup {} reaches revision {}, past the store's {}",
                    parent.id, parent.last_revision, plan.last_revision
                )));
            }
            // Inherit the parent's files (segments and images), held where they are.
            files.extend(parent.files.iter().cloned());
            let mut next = parent.last_revision + 1;
            for (path, entry) in &plan.files {
                if entry.kind != FileKind::Segment || entry.last_revision < next {
                    continue;
                }
                if entry.first_revision != next {
                    return Err(BackupError::Invalid(format!(
                        "the store's history after revision {} was compacted since backup {}: \
                         take a full backup",
                        parent.last_revision, parent.id
                    )));
                }
                next = entry.last_revision + 1;
                upload.push((path.clone(), entry.clone()));
            }
        }
    }
    // Two files at a time: hashing and I/O of one overlap those of the other.
    progress.bytes_total.store(
        upload.iter().map(|(_, e)| e.size).sum(),
        std::sync::atomic::Ordering::Relaxed,
    );
    let uploads: Vec<_> = upload
        .iter()
        .cloned()
        .map(|(path, entry)| {
            let (repo, id) = (repo.clone(), id.clone());
            async move {
                let uploaded = upload_one(&repo, &path, &entry, &id).await?;
                progress
                    .bytes_done
                    .fetch_add(uploaded.size, std::sync::atomic::Ordering::Relaxed);
                Ok::<_, BackupError>(uploaded)
            }
        })
        .collect();
    let uploaded: Vec<FileEntry> = futures_util::stream::iter(uploads)
        .buffer_unordered(2)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    mark("upload and read back");
    // Every uploaded file durable before the manifest that lists it: all at once, so the
    // device flushes them together (as `cp` followed by one `sync` does).
    let syncs: Vec<_> = uploaded
        .iter()
        .map(|f| {
            let object = format!("{BACKUPS_DIR}/{id}/{}", f.name);
            async move { repo.sync(&object).await }
        })
        .collect();
    for synced in futures_util::future::join_all(syncs).await {
        synced?;
    }
    mark("sync files");
    let bytes = uploaded.iter().map(|f| f.size).sum::<u64>();
    files.extend(uploaded);
    files.sort_by_key(|f| (f.kind as u8, f.first_revision));
    let full = match parent {
        None => id.clone(),
        Some(p) => p.full.clone(),
    };
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        id: id.clone(),
        sequence,
        kind,
        parent: parent.map(|p| p.id.clone()),
        full,
        history_id: history,
        // A chain starts where its full backup started (its files begin there), whatever the
        // store's horizon is now.
        horizon: parent.map_or(plan.horizon, |p| p.horizon.clone()),
        first_revision: parent.map_or(plan.first_revision, |p| p.first_revision),
        last_revision: plan.last_revision,
        first_timestamp_us: parent.map_or(plan.first_timestamp_us, |p| p.first_timestamp_us),
        last_timestamp_us: plan.last_timestamp_us,
        created_us: repo::now_us(),
        files,
        bytes,
        seconds: started.elapsed().as_secs_f64(),
    };
    crate::fault::crash_point("backup:before-manifest");
    // Every uploaded file's name durable before the manifest that lists them, then the manifest's.
    repo.sync_dirs(&manifest.dir()).await?;
    mark("sync names");
    let body = serde_json::to_vec_pretty(&manifest).expect("a manifest serializes");
    repo.put(&format!("{}/{MANIFEST_NAME}", manifest.dir()), body)
        .await?;
    repo.sync_dirs(&manifest.dir()).await?;
    mark("manifest");
    Ok(Created {
        files_uploaded: upload.len(),
        manifest,
        phases,
    })
}

/// Uploads one file of backup `id`: map and hash it (on a blocking thread), put it, read it back
/// and compare it byte for byte with what was hashed. Returns its manifest entry. The file is
/// mapped, not read into memory: only sealed, immutable files are backed up (a compaction may
/// unlink one meanwhile; the mapping stays valid).
async fn upload_one(
    repo: &Repo,
    path: &Path,
    entry: &FileEntry,
    id: &str,
) -> Result<FileEntry, BackupError> {
    let read_path = path.to_path_buf();
    let content = tokio::task::spawn_blocking(move || map_file(&read_path))
        .await
        .map_err(|e| BackupError::Store(e.to_string()))?
        .map_err(|e| BackupError::Store(format!("read {}: {e}", path.display())))?;
    if content.len() as u64 != entry.size {
        return Err(BackupError::Store(format!(
            "{} changed size while being backed up",
            path.display()
        )));
    }
    let mut entry = entry.clone();
    entry.backup = id.to_owned();
    let object = format!("{BACKUPS_DIR}/{id}/{}", entry.name);
    // Not synced here: all of the backup's files are synced together before its manifest.
    entry.sha256 = put_hashed(repo, path, &object, &content).await?;
    crate::fault::crash_point("backup:after-upload");
    // Confirm: the object reads back as exactly the bytes that were hashed.
    if !repo.holds(&object, &content).await? {
        return Err(BackupError::Damaged {
            backup: id.to_owned(),
            file: entry.name.clone(),
            reason: "the uploaded object does not read back identical".into(),
        });
    }
    Ok(entry)
}

/// Uploads the file at `path` (mapped as `content`) as `object`, unsynced, hashing the mapping
/// while the upload writes; returns its SHA-256. The caller reads the object back
/// (`Repo::holds`): that proves it holds exactly these bytes, so the hash describes it.
pub(crate) async fn put_hashed(
    repo: &Repo,
    path: &Path,
    object: &str,
    content: &bytes::Bytes,
) -> Result<String, BackupError> {
    let hashed = content.clone();
    let hashing = tokio::task::spawn_blocking(move || sha256_hex(&hashed));
    let put = repo.put_file(object, path, content.clone()).await;
    let sha256 = hashing
        .await
        .map_err(|e| BackupError::Store(e.to_string()))?;
    put?;
    Ok(sha256)
}

/// The files of the store a backup may ship, after rolling the active segment.
struct Plan {
    files: Vec<(PathBuf, FileEntry)>,
    horizon: HorizonRecord,
    first_revision: u64,
    last_revision: u64,
    first_timestamp_us: u64,
    last_timestamp_us: u64,
}

fn plan_files(store: &Store) -> Result<Plan, BackupError> {
    let crate::store::SealedFiles {
        dir,
        base_image_seq,
        horizon,
        sealed,
    } = store
        .seal_for_backup()
        .map_err(|e| BackupError::Store(e.to_string()))?;
    if sealed.is_empty() {
        return Err(BackupError::Invalid(
            "the store holds no commits yet: nothing to back up".into(),
        ));
    }
    let last_revision = sealed.last().map_or(horizon.revision, |s| s.last_revision);
    let mut files = Vec::new();
    let entry = |name: String, kind, size, first, last| FileEntry {
        name,
        kind,
        size,
        sha256: String::new(),
        backup: String::new(),
        first_revision: first,
        last_revision: last,
    };
    if base_image_seq != 0 {
        let name = storage_format::image::base_image_file_name(base_image_seq);
        let path = dir.join(&name);
        let size = file_size(&path)?;
        files.push((
            path,
            entry(
                name,
                FileKind::Base,
                size,
                horizon.revision,
                horizon.revision,
            ),
        ));
    }
    if let Some(snap) = store
        .snapshots()
        .into_iter()
        .rev()
        .find(|s| s.revision <= last_revision && s.revision >= horizon.revision)
    {
        let name = format!(
            "{}/{}",
            storage_format::image::SNAPSHOT_DIR,
            snap.path.file_name().unwrap().to_string_lossy()
        );
        files.push((
            snap.path.clone(),
            entry(
                name,
                FileKind::Snapshot,
                snap.bytes,
                snap.revision,
                snap.revision,
            ),
        ));
    }
    for s in &sealed {
        let name = format!(
            "{}/{}",
            storage_format::segment::SEGMENT_DIR,
            storage_format::segment::segment_file_name(s.seq)
        );
        files.push((
            s.path.clone(),
            entry(
                name,
                FileKind::Segment,
                s.len,
                s.first_revision,
                s.last_revision,
            ),
        ));
    }
    let timestamp_of = |revision: u64| -> u64 {
        if revision <= horizon.revision {
            return horizon.timestamp_us;
        }
        store
            .commits(&crate::store::CommitFilter {
                from_revision: Some(revision),
                to_revision: Some(revision),
                limit: 1,
                ..Default::default()
            })
            .ok()
            .and_then(|p| p.items.first().map(|c| c.commit.timestamp_us))
            .unwrap_or(0)
    };
    Ok(Plan {
        files,
        horizon: HorizonRecord {
            revision: horizon.revision,
            timestamp_us: horizon.timestamp_us,
            hash: hex(&horizon.hash),
            base_image_seq,
        },
        first_revision: horizon.revision,
        last_revision,
        first_timestamp_us: horizon.timestamp_us,
        last_timestamp_us: timestamp_of(last_revision),
    })
}

fn file_size(path: &Path) -> Result<u64, BackupError> {
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|e| BackupError::Store(format!("stat {}: {e}", path.display())))
}

/// Where `backup verify` records its latest result, for the server's metrics and health and for
/// `llmcm doctor` (FORMAT.md, "Backup repositories").
pub const VERIFY_RECORD: &str = "verify/last.json";

/// The result of the latest `backup verify` of a repository.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VerifyRecord {
    /// When the verification finished (Unix microseconds).
    pub verified_us: u64,
    pub ok: bool,
    pub deep: bool,
    /// The one backup checked, or none for the whole repository.
    pub id: Option<String>,
    /// Backups checked.
    pub backups: usize,
    /// Findings that are failures.
    pub failures: usize,
    /// The first failure: backup, file and reason.
    pub first_failure: Option<String>,
}

impl VerifyRecord {
    /// The record of a verification that produced `findings`.
    pub fn of(findings: &[VerifyFinding], id: Option<&str>, deep: bool) -> VerifyRecord {
        let backups: BTreeSet<&str> = findings
            .iter()
            .filter(|f| f.backup != archive::ARCHIVE_HOLDER && !f.message.starts_with(INCOMPLETE))
            .map(|f| f.backup.as_str())
            .collect();
        let failures: Vec<&VerifyFinding> = findings.iter().filter(|f| !f.ok).collect();
        VerifyRecord {
            verified_us: crate::clock::now_us(),
            ok: failures.is_empty(),
            deep,
            id: id.map(str::to_owned),
            backups: backups.len(),
            failures: failures.len(),
            first_failure: failures.first().map(|f| {
                let file = if f.file.is_empty() { "-" } else { &f.file };
                format!("backup {}, file {file}: {}", f.backup, f.message)
            }),
        }
    }

    /// Stores the record in `repo` (one atomic PUT replacing the previous one).
    pub async fn save(&self, repo: &Repo) -> Result<(), BackupError> {
        let bytes = serde_json::to_vec_pretty(self).expect("JSON");
        repo.put(VERIFY_RECORD, bytes).await?;
        repo.sync_dirs("verify").await
    }

    /// The latest record in `repo`; `None` when it was never verified.
    pub async fn load(repo: &Repo) -> Result<Option<VerifyRecord>, BackupError> {
        let Some(bytes) = repo.get_if_exists(VERIFY_RECORD).await? else {
            return Ok(None);
        };
        let record: VerifyRecord = serde_json::from_slice(&bytes)
            .map_err(|e| BackupError::Invalid(format!("{VERIFY_RECORD} in {}: {e}", repo.url)))?;
        if let Some(id) = &record.id {
            layout::check_backup_id(id).map_err(|e| {
                BackupError::Invalid(format!("{VERIFY_RECORD} in {}: {e}", repo.url))
            })?;
        }
        Ok(Some(record))
    }
}

/// How `verify` names a backup without a manifest.
const INCOMPLETE: &str = "incomplete (no manifest: interrupted)";

/// One finding of `verify`.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyFinding {
    pub backup: String,
    pub file: String,
    pub ok: bool,
    pub message: String,
}

/// Checks backups (all, or `only`): every file re-read and re-hashed against the manifest that
/// lists it, holders and parents present, segments contiguous from the horizon, one history per
/// chain. With `deep`, also restores each into `scratch` (replaying and checking the hash chain
/// and the content). Returns every finding; the first failure is the first with `ok == false`.
pub async fn verify(
    repo: &Repo,
    only: Option<&str>,
    deep: bool,
    scratch: &Path,
) -> Result<Vec<VerifyFinding>, BackupError> {
    let (manifests, incomplete) = catalog(repo).await?;
    let by_id: BTreeMap<&str, &Manifest> = manifests.iter().map(|m| (m.id.as_str(), m)).collect();
    let mut findings = Vec::new();
    let mut add = |backup: &str, file: &str, ok: bool, message: String| {
        findings.push(VerifyFinding {
            backup: backup.to_owned(),
            file: file.to_owned(),
            ok,
            message,
        })
    };
    for id in &incomplete {
        add(
            id,
            "",
            true,
            format!("{INCOMPLETE}; never used, removed by prune"),
        );
    }
    let selected: Vec<&Manifest> = match only {
        Some(id) => vec![by_id.get(id).copied().ok_or_else(|| {
            BackupError::Invalid(format!("no complete backup {id} in {}", repo.url))
        })?],
        None => manifests.iter().collect(),
    };
    // Each held object is checked once, against the manifest of the backup holding it.
    let mut checked: BTreeMap<(String, String), Result<(), String>> = BTreeMap::new();
    for m in selected {
        let mut problems = 0;
        if let Some(parent) = &m.parent {
            match by_id.get(parent.as_str()) {
                None => {
                    add(
                        &m.id,
                        "",
                        false,
                        format!("parent backup {parent} is missing"),
                    );
                    problems += 1;
                }
                Some(p) if p.history_id != m.history_id => {
                    add(
                        &m.id,
                        "",
                        false,
                        format!("parent {parent} belongs to another history"),
                    );
                    problems += 1;
                }
                Some(_) => {}
            }
        }
        let mut next: Option<u64> = None;
        for f in &m.files {
            if f.backup != m.id && !by_id.contains_key(f.backup.as_str()) {
                add(
                    &m.id,
                    &f.name,
                    false,
                    format!("held by backup {}, which is missing", f.backup),
                );
                problems += 1;
                continue;
            }
            let key = (f.backup.clone(), f.name.clone());
            if !checked.contains_key(&key) {
                let object = format!("{BACKUPS_DIR}/{}/{}", f.backup, f.name);
                let outcome = match check_object(repo, &object, f.size, &f.sha256, |_| Ok(())).await
                {
                    Err(e) => Err(format!("cannot be read: {e}")),
                    Ok(checked) => checked,
                };
                checked.insert(key.clone(), outcome);
            }
            if let Err(reason) = &checked[&key] {
                add(&f.backup, &f.name, false, reason.clone());
                problems += 1;
            }
            if f.kind == FileKind::Segment {
                let expected = next.unwrap_or(f.first_revision);
                if f.first_revision != expected {
                    add(
                        &m.id,
                        &f.name,
                        false,
                        format!(
                            "segments are not contiguous: starts at revision {}, expected {expected}",
                            f.first_revision
                        ),
                    );
                    problems += 1;
                }
                next = Some(f.last_revision + 1);
            }
        }
        if next.map_or(m.horizon.revision, |n| n - 1) != m.last_revision {
            add(
                &m.id,
                "",
                false,
                format!(
                    "the files end at revision {}, the manifest says {}",
                    next.map_or(m.horizon.revision, |n| n - 1),
                    m.last_revision
                ),
            );
            problems += 1;
        }
        if problems == 0 && deep {
            let target = scratch.join(format!("deep-{}", m.id));
            match restore(
                repo,
                Some(&m.id),
                crate::restore::RestoreOptions::new(
                    crate::restore::RestorePoint::Latest,
                    None,
                    0,
                    true,
                ),
                &target,
                &mut |_| {},
            )
            .await
            {
                Ok(outcome) => add(
                    &m.id,
                    "",
                    true,
                    format!(
                        "deep: restored and verified the chain to revision {} ({} key{})",
                        outcome.resolved.revision,
                        outcome.keys,
                        if outcome.keys == 1 { "" } else { "s" }
                    ),
                ),
                Err(e) => {
                    add(&m.id, "", false, format!("deep: {e}"));
                    problems += 1;
                }
            }
            let _ = std::fs::remove_dir_all(&target);
        }
        if problems == 0 {
            add(
                &m.id,
                "",
                true,
                format!(
                    "{} backup: {} file{}, revisions {} to {}",
                    m.kind.name(),
                    m.files.len(),
                    if m.files.len() == 1 { "" } else { "s" },
                    m.first_revision,
                    m.last_revision
                ),
            );
        }
    }
    // The archive: every archived segment against its record.
    if only.is_none() {
        let mut histories: BTreeSet<String> = BTreeSet::new();
        for name in repo.list(archive::ARCHIVE_DIR).await? {
            match name.split('/').nth(1) {
                Some(h) if layout::check_history_id(h).is_ok() => {
                    histories.insert(h.to_owned());
                }
                _ => add(
                    archive::ARCHIVE_HOLDER,
                    &format!("{name:?}"),
                    true,
                    "not part of the layout: ignored".into(),
                ),
            }
        }
        for history in histories {
            let records = match archive::archived(repo, &history).await {
                Ok(r) => r,
                Err(e) => {
                    add(archive::ARCHIVE_HOLDER, &history, false, e.to_string());
                    continue;
                }
            };
            let mut next: Option<u64> = None;
            for r in records.values() {
                let object = archive::object(&history, &r.name);
                let problem = match check_object(repo, &object, r.size, &r.sha256, |_| Ok(())).await
                {
                    Err(e) => Some(format!("cannot be read: {e}")),
                    Ok(checked) => checked.err(),
                };
                let gap = next.is_some_and(|n| n != r.first_revision);
                next = Some(r.last_revision + 1);
                match problem {
                    Some(p) => add(archive::ARCHIVE_HOLDER, &object, false, p),
                    None if gap => add(
                        archive::ARCHIVE_HOLDER,
                        &object,
                        true,
                        "archived after a gap (a compaction or restore in between)".into(),
                    ),
                    None => {}
                }
            }
            add(
                archive::ARCHIVE_HOLDER,
                &history,
                true,
                format!(
                    "{} archived segment{} checked",
                    records.len(),
                    if records.len() == 1 { "" } else { "s" }
                ),
            );
        }
    }
    Ok(findings)
}

/// What prune removes (or would).
#[derive(Debug, Clone, Serialize)]
pub struct Pruned {
    pub deleted: Vec<String>,
    pub incomplete_deleted: Vec<String>,
    pub kept: Vec<String>,
    /// Archived segments (object names) no kept backup can use any more.
    pub archive_deleted: Vec<String>,
}

/// How prune chooses what to keep.
#[derive(Debug, Clone, Copy)]
pub enum Keep {
    /// The newest N full backups and every backup of their chains.
    Full(usize),
    /// Every backup created in the last D days, and everything they need.
    Days(u64),
}

/// Deletes backups not kept by `keep`, never one a kept backup needs (a parent, or a holder of a
/// file it lists), and incomplete backups. Manifests go first, so an interrupted prune leaves
/// only incomplete backups behind.
pub async fn prune(repo: &Repo, keep: Keep, dry_run: bool) -> Result<Pruned, BackupError> {
    let lock = repo.lock("prune").await?;
    let result = prune_locked(repo, keep, dry_run).await;
    let released = lock.release().await;
    let pruned = result?;
    released?;
    Ok(pruned)
}

async fn prune_locked(repo: &Repo, keep: Keep, dry_run: bool) -> Result<Pruned, BackupError> {
    let (manifests, incomplete) = catalog(repo).await?;
    let mut kept: BTreeSet<String> = match keep {
        Keep::Full(n) => {
            let fulls: Vec<&str> = manifests
                .iter()
                .rev()
                .filter(|m| m.kind == BackupKind::Full)
                .take(n)
                .map(|m| m.id.as_str())
                .collect();
            manifests
                .iter()
                .filter(|m| fulls.contains(&m.full.as_str()))
                .map(|m| m.id.clone())
                .collect()
        }
        Keep::Days(days) => {
            let cutoff = repo::now_us().saturating_sub(days * 86_400_000_000);
            manifests
                .iter()
                .filter(|m| m.created_us >= cutoff)
                .map(|m| m.id.clone())
                .collect()
        }
    };
    // Close over what the kept backups need.
    let by_id: BTreeMap<&str, &Manifest> = manifests.iter().map(|m| (m.id.as_str(), m)).collect();
    let mut stack: Vec<String> = kept.iter().cloned().collect();
    while let Some(id) = stack.pop() {
        let Some(m) = by_id.get(id.as_str()) else {
            continue;
        };
        let needs = m
            .parent
            .iter()
            .cloned()
            .chain(m.files.iter().map(|f| f.backup.clone()))
            .chain(std::iter::once(m.full.clone()));
        for need in needs {
            if kept.insert(need.clone()) {
                stack.push(need);
            }
        }
    }
    let deleted: Vec<String> = manifests
        .iter()
        .filter(|m| !kept.contains(&m.id))
        .map(|m| m.id.clone())
        .collect();
    // The archive: a restore extends a backup with the archived segments after its last
    // revision, so per history, segments ending at or before the oldest kept backup's last
    // revision extend no kept backup (and alone restore nothing). Histories without a kept
    // backup keep their archive.
    let mut floors: BTreeMap<&str, u64> = BTreeMap::new();
    for m in manifests.iter().filter(|m| kept.contains(&m.id)) {
        let floor = floors.entry(m.history_id.as_str()).or_insert(u64::MAX);
        *floor = (*floor).min(m.last_revision);
    }
    let mut archive_deleted = Vec::new();
    let mut orphans = Vec::new();
    for (history, floor) in &floors {
        let records = archive::archived(repo, history).await?;
        let mut below = 0;
        for r in records.values().filter(|r| r.last_revision <= *floor) {
            archive_deleted.push(archive::object(history, &r.name));
            below = below.max(r.seq);
        }
        // Segments without a record (an interrupted upload or prune) below what goes.
        for name in repo
            .list(&format!("{}/{history}/log", archive::ARCHIVE_DIR))
            .await?
        {
            let file = name.rsplit('/').next().unwrap_or("");
            if let Some(seq) = storage_format::segment::parse_segment_file_name(file)
                && seq <= below
                && !records.contains_key(&seq)
            {
                orphans.push(name);
            }
        }
    }
    if !dry_run {
        // Record first: a segment without its record is incomplete and never used.
        for object in &archive_deleted {
            repo.delete(&archive::record_object(object)).await?;
            crate::fault::crash_point("prune:after-archive-record");
            repo.delete(object).await?;
        }
        for object in &orphans {
            repo.delete(object).await?;
        }
        for id in deleted.iter().chain(incomplete.iter()) {
            let manifest = format!("{BACKUPS_DIR}/{id}/{MANIFEST_NAME}");
            repo.delete(&manifest).await?;
            crate::fault::crash_point("prune:after-manifest");
            for object in repo.list(&format!("{BACKUPS_DIR}/{id}")).await? {
                repo.delete(&object).await?;
            }
        }
    }
    Ok(Pruned {
        deleted,
        incomplete_deleted: incomplete,
        kept: manifests
            .iter()
            .filter(|m| kept.contains(&m.id))
            .map(|m| m.id.clone())
            .collect(),
        archive_deleted,
    })
}

/// Restores from a repository: the backup `id`, or the newest whose range reaches the point;
/// every object is checked against its manifest checksum while it is staged as a data directory
/// next to `target`, which `crate::restore` then restores from (choosing the newest image at or
/// before the point and replaying the rest, with every record and the chain checked). The
/// restore commit's revision is above every revision the repository knows.
pub async fn restore(
    repo: &Repo,
    id: Option<&str>,
    options: crate::restore::RestoreOptions,
    target: &Path,
    on_resolved: &mut (dyn FnMut(&crate::restore::Resolved) + Send),
) -> Result<crate::restore::RestoreOutcome, BackupError> {
    use crate::restore::RestorePoint;
    let crate::restore::RestoreOptions {
        point,
        prefix,
        bump_revision,
        allow_empty,
    } = options;
    let (manifests, _) = catalog(repo).await?;
    // Archived segments extend each backup of their history past its last revision.
    let mut archives: BTreeMap<String, BTreeMap<u64, archive::ArchivedSegment>> = BTreeMap::new();
    for m in &manifests {
        if !archives.contains_key(&m.history_id) {
            archives.insert(
                m.history_id.clone(),
                archive::archived(repo, &m.history_id).await?,
            );
        }
    }
    let extension = |m: &Manifest| archive::continuing(&archives[&m.history_id], m.last_revision);
    let reach = |m: &Manifest| {
        extension(m)
            .last()
            .map_or(m.last_revision, |e| e.last_revision)
    };
    let chosen = match id {
        Some(id) => manifests.iter().find(|m| m.id == id).ok_or_else(|| {
            BackupError::Invalid(format!("no complete backup {id} in {}", repo.url))
        })?,
        None => {
            let reaches = |m: &&Manifest| match point {
                RestorePoint::Latest => true,
                RestorePoint::Revision(r) => m.first_revision <= r && r <= reach(m),
                RestorePoint::Time(t) => m.first_timestamp_us <= t || m.first_revision == 0,
            };
            manifests
                .iter()
                .rev()
                .find(reaches)
                .ok_or_else(|| BackupError::Invalid("no backup reaches that point".into()))?
        }
    };
    if target.exists()
        && std::fs::read_dir(target)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(BackupError::Invalid(format!(
            "{} is not empty; restore builds a new directory",
            target.display()
        )));
    }
    let staging = {
        let mut s = target.as_os_str().to_owned();
        s.push(".staging");
        PathBuf::from(s)
    };
    let _ = std::fs::remove_dir_all(&staging);
    // The point as a revision, when it is one: then only the newest image at or before it and
    // the segments after that image are downloaded.
    let extra = if id.is_some() {
        Vec::new()
    } else {
        extension(chosen)
    };
    let upto = match point {
        RestorePoint::Latest => Some(
            extra
                .last()
                .map_or(chosen.last_revision, |e| e.last_revision),
        ),
        RestorePoint::Revision(r) => Some(r),
        RestorePoint::Time(_) => None,
    };
    if let Err(error) = stage(repo, chosen, &extra, upto, &staging).await {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(error);
    }
    let known = manifests
        .iter()
        .map(|m| m.last_revision)
        .chain(
            archives
                .values()
                .flat_map(|a| a.values().map(|r| r.last_revision)),
        )
        .max()
        .unwrap_or(0);
    let request = crate::restore::RestoreRequest {
        source: staging.clone(),
        point,
        prefix,
        bump_revision: bump_revision.max(known + 1),
        allow_empty,
        target: target.to_path_buf(),
        actor: std::env::var("USER").unwrap_or_else(|_| "llmcm-restore".into()),
    };
    let outcome = crate::restore::restore(&request, on_resolved).map_err(BackupError::Restore);
    let _ = std::fs::remove_dir_all(&staging);
    outcome
}

/// Downloads a backup's files into `dir` as a data directory (segments, images, a MANIFEST for
/// its history and horizon), checking each against the manifest. With `upto`, only what a restore
/// to that revision reads: the newest image at or before it (the base image always: the
/// MANIFEST names it) and the segments after that image.
async fn stage(
    repo: &Repo,
    m: &Manifest,
    extra: &[FileEntry],
    upto: Option<u64>,
    dir: &Path,
) -> Result<(), BackupError> {
    let io = |e: std::io::Error| BackupError::Store(format!("staging {}: {e}", dir.display()));
    std::fs::create_dir_all(dir.join(storage_format::segment::SEGMENT_DIR)).map_err(io)?;
    std::fs::create_dir_all(dir.join(storage_format::image::SNAPSHOT_DIR)).map_err(io)?;
    let image_at = upto.and_then(|p| {
        m.files
            .iter()
            .filter(|f| f.kind != FileKind::Segment && f.last_revision <= p)
            .map(|f| f.last_revision)
            .max()
    });
    let needed = |f: &FileEntry| match (upto, image_at) {
        (None, _) => true,
        (Some(_), _) if f.kind == FileKind::Base => true,
        (Some(p), Some(at)) if f.kind == FileKind::Snapshot => f.last_revision == at && at <= p,
        (Some(_), None) if f.kind == FileKind::Snapshot => false,
        // Segments: the one holding the image's revision and those after it (all of them
        // without an image), so the staged log always has the point's segment.
        (Some(_), at) => f.last_revision >= at.unwrap_or(0),
    };
    let mut first_seq = None;
    for f in m.files.iter().chain(extra).filter(|f| needed(f)) {
        let object = if f.backup == archive::ARCHIVE_HOLDER {
            archive::object(&m.history_id, &f.name)
        } else {
            format!("{BACKUPS_DIR}/{}/{}", f.backup, f.name)
        };
        // Streamed into the staged file while hashed: memory stays at one chunk.
        let mut file = std::fs::File::create(f.path_in(dir)?).map_err(io)?;
        check_object(repo, &object, f.size, &f.sha256, |chunk| {
            std::io::Write::write_all(&mut file, chunk)
        })
        .await?
        .map_err(|reason| BackupError::Damaged {
            backup: f.backup.clone(),
            file: f.name.clone(),
            reason,
        })?;
        drop(file);
        if f.kind == FileKind::Segment {
            let seq = f
                .name
                .rsplit('/')
                .next()
                .and_then(storage_format::segment::parse_segment_file_name);
            first_seq = first_seq.or(seq);
        }
    }
    let history = storage_format::parse_hex::<16>(&m.history_id)
        .ok_or_else(|| BackupError::Invalid(format!("bad history id {}", m.history_id)))?;
    let hash = storage_format::parse_hex::<32>(&m.horizon.hash)
        .ok_or_else(|| BackupError::Invalid(format!("bad horizon hash {}", m.horizon.hash)))?;
    let manifest = storage_format::manifest::Manifest {
        version: storage_format::FormatVersion::CURRENT,
        history_id: history,
        generation: 1,
        created_unix_us: m.created_us,
        first_live_segment_seq: first_seq.unwrap_or(1),
        horizon_revision: m.horizon.revision,
        horizon_hash: hash,
        horizon_timestamp_us: m.horizon.timestamp_us,
        base_image_seq: m.horizon.base_image_seq,
    };
    std::fs::write(
        dir.join(storage_format::manifest::MANIFEST_FILE),
        manifest.encode(),
    )
    .map_err(io)?;
    Ok(())
}
