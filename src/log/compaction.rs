//! Moving the horizon: the one MANIFEST rename that drops sealed segments from the live set
//! (FORMAT.md "Compacting"). The store writes the base image first and removes the dropped files
//! after; a crash at any step leaves either the old or the new live set.

use std::path::PathBuf;

use storage_format::image::base_image_file_name;
use storage_format::manifest::MANIFEST_FILE;

use super::{Head, Log, LogError, SegmentMeta};
use crate::fault::crash_point;
use crate::fs::write_file_atomic;

/// What a horizon switch took out of the live set, to be removed from disk.
#[derive(Debug, Clone)]
pub struct Switched {
    pub dropped: Vec<SegmentMeta>,
    /// The base image the previous MANIFEST named, if any.
    pub old_base: Option<PathBuf>,
    pub first_live_segment_seq: u64,
}

impl Switched {
    /// Bytes of the dropped segments.
    pub fn segment_bytes(&self) -> u64 {
        self.dropped.iter().map(|s| s.len).sum()
    }
}

impl Log {
    /// The last revision of each live sealed segment, oldest first: the revisions compaction can
    /// take as its horizon.
    pub fn sealed_boundaries(&self) -> Vec<u64> {
        self.segments
            .read()
            .iter()
            .filter(|s| s.sealed && s.last_revision >= s.first_revision)
            .map(|s| s.last_revision)
            .collect()
    }

    /// Makes `horizon` (the last revision of a sealed segment) the new horizon, with base image
    /// `base_image_seq` holding the state at it: writes the new MANIFEST (the atomic switch),
    /// then drops the segments at or before it from the live set in memory. The files are
    /// removed by `remove_dropped`.
    pub fn switch_horizon(&self, horizon: Head, base_image_seq: u64) -> Result<Switched, LogError> {
        let mut manifest = self.manifest.lock();
        let mut segments = self.segments.write();
        let dropped_count = segments
            .iter()
            .take_while(|s| s.sealed && s.last_revision <= horizon.revision)
            .count();
        let boundary = dropped_count > 0
            && segments[dropped_count - 1].last_revision == horizon.revision
            && dropped_count < segments.len();
        if !boundary {
            return Err(LogError::Unsupported(format!(
                "revision {} is not the last revision of a sealed segment",
                horizon.revision
            )));
        }
        let mut next = *manifest;
        next.generation += 1;
        next.first_live_segment_seq = segments[dropped_count].seq;
        next.horizon_revision = horizon.revision;
        next.horizon_hash = horizon.hash;
        next.horizon_timestamp_us = horizon.timestamp_us;
        next.base_image_seq = base_image_seq;
        let path = self.dir.join(MANIFEST_FILE);
        crash_point("compaction:before-manifest");
        write_file_atomic(&*self.fs, &path, &next.encode())
            .map_err(LogError::io("write manifest", &path))?;
        crash_point("compaction:after-manifest");
        let old_base = (manifest.base_image_seq != 0)
            .then(|| self.dir.join(base_image_file_name(manifest.base_image_seq)));
        *manifest = next;
        *self.horizon.write() = horizon;
        let dropped: Vec<SegmentMeta> = segments.drain(..dropped_count).collect();
        tracing::info!(
            horizon = horizon.revision,
            segments = dropped.len(),
            "compaction switched the MANIFEST to a new horizon"
        );
        Ok(Switched {
            dropped,
            old_base,
            first_live_segment_seq: next.first_live_segment_seq,
        })
    }

    /// Removes what a switch dropped: the segment files and the previous base image. A crash
    /// before this finishes leaves files the next open removes (they are below the MANIFEST's
    /// first live segment, or not named by it).
    pub fn remove_dropped(&self, switched: &Switched) -> Result<(), LogError> {
        let log_dir = self.dir.join(storage_format::segment::SEGMENT_DIR);
        for segment in &switched.dropped {
            self.fs
                .remove_file(&segment.path)
                .map_err(LogError::io("remove segment", &segment.path))?;
            crash_point("compaction:removing-segments");
        }
        self.fs
            .sync_dir(&log_dir)
            .map_err(LogError::io("sync directory", &log_dir))?;
        if let Some(old) = &switched.old_base {
            self.fs
                .remove_file(old)
                .map_err(LogError::io("remove base image", old))?;
            self.fs
                .sync_dir(&self.dir)
                .map_err(LogError::io("sync directory", &self.dir))?;
        }
        Ok(())
    }
}

impl Log {
    /// The chain hash of `revision`, the last revision of a live sealed segment: its successor's
    /// header repeats it as `prev_hash` (128 bytes read, not the segment).
    pub fn hash_after_segment_ending_at(
        &self,
        revision: u64,
    ) -> Result<storage_format::Hash, LogError> {
        let successor = self
            .segments
            .read()
            .iter()
            .find(|s| s.first_revision == revision + 1)
            .cloned()
            .ok_or_else(|| {
                LogError::Unsupported(format!("no live segment starts after revision {revision}"))
            })?;
        let bytes = self
            .fs
            .read_at(
                &successor.path,
                0,
                storage_format::segment::SEGMENT_HEADER_LEN,
            )
            .map_err(LogError::io("read segment header", &successor.path))?;
        let header = storage_format::segment::SegmentHeader::decode(&bytes)
            .map_err(|e| LogError::corrupted(&successor.path, 0, revision + 1, e))?;
        Ok(header.prev_hash)
    }
}
