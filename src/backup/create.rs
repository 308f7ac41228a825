//! Taking a backup: roll, plan the files the kind needs, upload each, read it back, write the
//! manifest last.

use std::path::{Path, PathBuf};
use std::time::Instant;

use storage_format::hex;

use futures_util::StreamExt;

use super::*;
use crate::store::Store;

/// What `create` reports.
#[derive(Debug, Clone)]
pub struct Created {
    pub manifest: Manifest,
    pub files_uploaded: usize,
    /// Where the time went, phase by phase (seconds), for benchmarks and debug logs.
    pub phases: Vec<(&'static str, f64)>,
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
