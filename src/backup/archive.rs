//! Continuous archiving (`archive = true`): every segment is shipped to the repository as it
//! seals, so a restore reaches the last sealed segment, not only the last backup (the RPO is the
//! roll age). FORMAT.md "Backup repositories": `archive/<history>/log/seg-….log`, each followed
//! by its record `….log.json` (size, SHA-256, revisions), written after the segment was read back
//! and compared — a segment without its record is incomplete and never used.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use storage_format::hex;

use super::{BackupError, FileEntry, FileKind, Repo};
use crate::store::Store;

/// Where archived segments live in a repository.
pub const ARCHIVE_DIR: &str = "archive";
/// The holder named in a `FileEntry` for an archived segment.
pub const ARCHIVE_HOLDER: &str = "archive";
const RECORD_SUFFIX: &str = ".json";

/// The record written after an archived segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchivedSegment {
    pub format: u32,
    pub history_id: String,
    pub seq: u64,
    /// `log/seg-….log`.
    pub name: String,
    pub size: u64,
    pub sha256: String,
    pub first_revision: u64,
    pub last_revision: u64,
    pub archived_us: u64,
}

impl ArchivedSegment {
    /// Checks the record against the layout: of `history`, describing the segment it is stored
    /// beside (`record_name`), with a canonical name and digest.
    pub fn validate(&self, history: &str, record_name: &str) -> Result<(), String> {
        if self.history_id != history {
            return Err(format!(
                "names history {:?} in the archive of {history}",
                self.history_id
            ));
        }
        let file = super::layout::DataFile::parse(&self.name, FileKind::Segment)?;
        if file != super::layout::DataFile::Segment(self.seq) {
            return Err(format!("names {:?} for segment {}", self.name, self.seq));
        }
        if record_object(&object(history, &self.name)) != record_name {
            return Err(format!(
                "describes {:?}, not the segment it is beside",
                self.name
            ));
        }
        super::layout::check_sha256(&self.sha256)?;
        if self.first_revision > self.last_revision {
            return Err(format!(
                "first revision {} is after the last {}",
                self.first_revision, self.last_revision
            ));
        }
        Ok(())
    }

    /// As a file of a restore (held by the archive).
    pub fn entry(&self) -> FileEntry {
        FileEntry {
            name: self.name.clone(),
            kind: FileKind::Segment,
            size: self.size,
            sha256: self.sha256.clone(),
            backup: ARCHIVE_HOLDER.to_owned(),
            first_revision: self.first_revision,
            last_revision: self.last_revision,
        }
    }
}

/// The object name of an archived file of `history`.
pub fn object(history: &str, name: &str) -> String {
    format!("{ARCHIVE_DIR}/{history}/{name}")
}

/// The record object of an archived segment object.
pub fn record_object(object: &str) -> String {
    format!("{object}{RECORD_SUFFIX}")
}

/// The complete archived segments of `history`, by sequence number.
pub async fn archived(
    repo: &Repo,
    history: &str,
) -> Result<BTreeMap<u64, ArchivedSegment>, BackupError> {
    super::layout::check_history_id(history).map_err(BackupError::Invalid)?;
    let mut out = BTreeMap::new();
    for name in repo.list(&format!("{ARCHIVE_DIR}/{history}/log")).await? {
        // Only the records the layout names (`…/log/seg-<20 digits>.log.json`): anything else
        // in the directory is not ours and is ignored, not taken for damage.
        let is_record = name
            .strip_suffix(RECORD_SUFFIX)
            .and_then(|segment| segment.rsplit('/').next())
            .and_then(storage_format::segment::parse_segment_file_name)
            .is_some();
        if !is_record {
            continue;
        }
        let bytes = repo.get(&name).await?;
        let damaged = |reason: String| BackupError::Damaged {
            backup: ARCHIVE_HOLDER.into(),
            file: format!("{name:?}"),
            reason,
        };
        let record: ArchivedSegment = serde_json::from_slice(&bytes)
            .map_err(|e| damaged(format!("not a valid archive record: {e}")))?;
        record.validate(history, &name).map_err(damaged)?;
        out.insert(record.seq, record);
    }
    Ok(out)
}

/// Ships every sealed segment of `store` that `known` (the archive's records) lacks and that
/// ends after revision `floor` (what `backup prune` keeps), oldest first; each is read back
/// and compared before its record is written. Returns how many were shipped.
pub async fn ship_new(
    store: &std::sync::Arc<Store>,
    repo: &Repo,
    known: &mut BTreeMap<u64, ArchivedSegment>,
    floor: u64,
) -> Result<usize, BackupError> {
    let history = hex(&store.history_id());
    let sealed: Vec<_> = store
        .segments()
        .into_iter()
        .filter(|s| {
            s.sealed
                && s.last_revision >= s.first_revision
                && s.last_revision > floor
                && !known.contains_key(&s.seq)
        })
        .collect();
    let mut shipped = 0;
    for s in sealed {
        let name = format!(
            "{}/{}",
            storage_format::segment::SEGMENT_DIR,
            storage_format::segment::segment_file_name(s.seq)
        );
        let path = s.path.clone();
        let content = match tokio::task::spawn_blocking(move || super::map_file(&path)).await {
            Ok(Ok(c)) => c,
            // Dropped by a compaction meanwhile: nothing to ship.
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Ok(Err(e)) => {
                return Err(BackupError::Store(format!(
                    "read {}: {e}",
                    s.path.display()
                )));
            }
            Err(e) => return Err(BackupError::Store(e.to_string())),
        };
        let segment_object = object(&history, &name);
        let sha256 = super::create::put_hashed(repo, &s.path, &segment_object, &content).await?;
        repo.sync(&segment_object).await?;
        if !repo.holds(&segment_object, &content).await? {
            return Err(BackupError::Damaged {
                backup: ARCHIVE_HOLDER.into(),
                file: name,
                reason: "the archived segment does not read back identical".into(),
            });
        }
        let record = ArchivedSegment {
            format: super::MANIFEST_FORMAT,
            history_id: history.clone(),
            seq: s.seq,
            name: name.clone(),
            size: content.len() as u64,
            sha256,
            first_revision: s.first_revision,
            last_revision: s.last_revision,
            archived_us: super::repo::now_us(),
        };
        repo.sync_dirs(&format!("{ARCHIVE_DIR}/{history}")).await?;
        let record_object = format!("{segment_object}{RECORD_SUFFIX}");
        repo.put(
            &record_object,
            serde_json::to_vec_pretty(&record).expect("a record serializes"),
        )
        .await?;
        repo.sync_dirs(&format!("{ARCHIVE_DIR}/{history}")).await?;
        known.insert(s.seq, record);
        shipped += 1;
    }
    Ok(shipped)
}

/// The archived segments that continue a backup ending at `last_revision`, in order, without a
/// gap.
pub fn continuing(archive: &BTreeMap<u64, ArchivedSegment>, last_revision: u64) -> Vec<FileEntry> {
    let mut next = last_revision + 1;
    let mut out = Vec::new();
    for record in archive.values() {
        if record.last_revision < next {
            continue;
        }
        if record.first_revision != next {
            break;
        }
        next = record.last_revision + 1;
        out.push(record.entry());
    }
    out
}
