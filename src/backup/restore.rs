//! Staging a backup from a repository as a data directory, for `crate::store::restore`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::*;

/// Restores from a repository: the backup `id`, or the newest whose range reaches the point;
/// every object is checked against its manifest checksum while it is staged as a data directory
/// next to `target`, which `crate::store::restore` then restores from (choosing the newest image at or
/// before the point and replaying the rest, with every record and the chain checked). The
/// restore commit's revision is above every revision the repository knows.
pub async fn restore(
    repo: &Repo,
    id: Option<&str>,
    options: crate::store::restore::RestoreOptions,
    target: &Path,
    on_resolved: &mut (dyn FnMut(&crate::store::restore::Resolved) + Send),
) -> Result<crate::store::restore::RestoreOutcome, BackupError> {
    use crate::store::restore::RestorePoint;
    let crate::store::restore::RestoreOptions {
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
    let request = crate::store::restore::RestoreRequest {
        source: staging.clone(),
        point,
        prefix,
        bump_revision: bump_revision.max(known + 1),
        allow_empty,
        target: target.to_path_buf(),
        actor: std::env::var("USER").unwrap_or_else(|_| "llmcm-restore".into()),
    };
    let outcome =
        crate::store::restore::restore(&request, on_resolved).map_err(BackupError::Restore);
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
