//! The active segment: appends framed batches, seals, and rolls to a successor.
//!
//! Invariants:
//! - a segment file exists under its final name only with a complete, synced header (it is
//!   written as `<name>.tmp`, synced, renamed, and the directory synced);
//! - a segment is synced (records and seal) before its successor is created, so a successor's
//!   existence proves its predecessor is complete;
//! - after the first failed write or sync nothing is written again (the failure is latched: the
//!   page cache may have dropped dirty pages, and a retried fsync could report success for them).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use storage_format::record::{RECORD_HEADER_LEN, RecordType, SealPayload, encode_record};
use storage_format::segment::{SegmentHeader, TEMP_SUFFIX, segment_file_name};
use storage_format::{FormatVersion, Hash, HistoryId};

use super::LogError;
use crate::fs::{Fs, FsFile};

/// A commit encoded and waiting in the group-commit queue.
#[derive(Debug)]
pub(crate) struct PendingCommit {
    pub revision: u64,
    pub timestamp_us: u64,
    pub hash: Hash,
    pub payload: Vec<u8>,
    pub commit: storage_format::commit::Commit,
}

/// What a successful batch write did.
pub(crate) struct BatchWritten {
    pub fsync_us: u64,
    /// Offset of each commit's record in the segment, in batch order.
    pub offsets: Vec<u64>,
    pub segment_seq: u64,
}

/// Where a segment's commits are, for readers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentMeta {
    pub seq: u64,
    pub path: PathBuf,
    pub first_revision: u64,
    /// `first_revision - 1` while the segment holds no commit.
    pub last_revision: u64,
    /// Durable length in bytes: readers never look past it.
    pub len: u64,
    pub sealed: bool,
}

/// The segment that takes new commits.
pub(crate) struct ActiveSegment {
    fs: Arc<dyn Fs>,
    log_dir: PathBuf,
    file: Box<dyn FsFile>,
    pub header: SegmentHeader,
    pub path: PathBuf,
    pub len: u64,
    data_crc: crc32fast::Hasher,
    pub commit_count: u64,
    pub last_revision: u64,
    pub last_timestamp_us: u64,
    pub last_hash: Hash,
    failed: Option<String>,
}

/// The state a resumed segment continues from (what recovery found in it).
pub(crate) struct ResumePoint {
    pub len: u64,
    pub data_crc: u32,
    pub commit_count: u64,
    pub last_revision: u64,
    pub last_timestamp_us: u64,
    pub last_hash: Hash,
}

impl ActiveSegment {
    /// Creates segment `seq` crash-safely and returns it ready for appends.
    #[allow(clippy::too_many_arguments)]
    pub fn create(
        fs: Arc<dyn Fs>,
        log_dir: &Path,
        history_id: HistoryId,
        seq: u64,
        first_revision: u64,
        prev_hash: Hash,
        prev_timestamp_us: u64,
        now_us: u64,
    ) -> Result<ActiveSegment, LogError> {
        assert!(seq >= 1);
        assert!(first_revision >= 1);
        let path = log_dir.join(segment_file_name(seq));
        let tmp = log_dir.join(format!("{}{TEMP_SUFFIX}", segment_file_name(seq)));
        let header = SegmentHeader {
            version: FormatVersion::CURRENT,
            history_id,
            segment_seq: seq,
            first_revision,
            prev_hash,
            prev_timestamp_us,
            created_unix_us: now_us,
        };
        let mut file = fs
            .create_new(&tmp)
            .map_err(LogError::io("create segment", &tmp))?;
        file.write_all(&header.encode())
            .map_err(LogError::io("write segment header", &tmp))?;
        file.sync_data()
            .map_err(LogError::io("sync segment header", &tmp))?;
        fs.rename(&tmp, &path)
            .map_err(LogError::io("rename segment", &tmp))?;
        fs.sync_dir(log_dir)
            .map_err(LogError::io("sync directory", log_dir))?;
        Ok(ActiveSegment {
            fs,
            log_dir: log_dir.to_path_buf(),
            file,
            header,
            path,
            len: storage_format::segment::SEGMENT_HEADER_LEN as u64,
            data_crc: crc32fast::Hasher::new(),
            commit_count: 0,
            last_revision: first_revision - 1,
            last_timestamp_us: prev_timestamp_us,
            last_hash: prev_hash,
            failed: None,
        })
    }

    /// Reopens an existing, recovered segment for appends at `resume.len`.
    pub fn resume(
        fs: Arc<dyn Fs>,
        log_dir: &Path,
        path: PathBuf,
        header: SegmentHeader,
        resume: ResumePoint,
    ) -> Result<ActiveSegment, LogError> {
        let file = fs
            .open_append(&path)
            .map_err(LogError::io("open segment", &path))?;
        Ok(ActiveSegment {
            fs,
            log_dir: log_dir.to_path_buf(),
            file,
            header,
            path,
            len: resume.len,
            data_crc: crc32fast::Hasher::new_with_initial(resume.data_crc),
            commit_count: resume.commit_count,
            last_revision: resume.last_revision,
            last_timestamp_us: resume.last_timestamp_us,
            last_hash: resume.last_hash,
            failed: None,
        })
    }

    pub fn meta(&self, sealed: bool) -> SegmentMeta {
        SegmentMeta {
            seq: self.header.segment_seq,
            path: self.path.clone(),
            first_revision: self.header.first_revision,
            last_revision: self.last_revision,
            len: self.len,
            sealed,
        }
    }

    pub fn data_crc(&self) -> u32 {
        self.data_crc.clone().finalize()
    }

    /// The latched failure, if any.
    pub fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    fn check_not_failed(&self) -> Result<(), LogError> {
        match &self.failed {
            Some(reason) => Err(LogError::ReadOnly {
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    fn latch(&mut self, error: LogError) -> LogError {
        if self.failed.is_none() {
            tracing::error!(%error, "storage failure: the store is now read-only");
            self.failed = Some(error.to_string());
        }
        error
    }

    /// Appends a batch as one write and syncs it; returns the microseconds the sync took. On any
    /// failure the segment is latched.
    pub fn write_batch(&mut self, batch: &[PendingCommit]) -> Result<BatchWritten, LogError> {
        self.check_not_failed()?;
        let first = batch.first().expect("a non-empty batch").revision;
        assert_eq!(first, self.last_revision + 1);
        let total: usize = batch
            .iter()
            .map(|c| RECORD_HEADER_LEN + c.payload.len())
            .sum();
        let mut buf = Vec::with_capacity(total);
        let mut offsets = Vec::with_capacity(batch.len());
        for (i, commit) in batch.iter().enumerate() {
            assert_eq!(commit.revision, first + i as u64);
            offsets.push(self.len + buf.len() as u64);
            encode_record(
                &mut buf,
                RecordType::Commit,
                commit.revision,
                first,
                &commit.payload,
            );
        }
        assert_eq!(buf.len(), total);
        if let Err(source) = self.file.write_all(&buf) {
            let error = LogError::Io {
                op: "append to segment",
                path: self.path.clone(),
                source,
            };
            return Err(self.latch(error));
        }
        let sync_started = std::time::Instant::now();
        if let Err(source) = self.file.sync_data() {
            let error = LogError::Io {
                op: "sync segment",
                path: self.path.clone(),
                source,
            };
            return Err(self.latch(error));
        }
        crate::fault::sync_pad();
        self.data_crc.update(&buf);
        self.len += buf.len() as u64;
        let last = batch.last().expect("non-empty");
        self.commit_count += batch.len() as u64;
        self.last_revision = last.revision;
        self.last_timestamp_us = last.timestamp_us;
        self.last_hash = last.hash;
        Ok(BatchWritten {
            fsync_us: sync_started.elapsed().as_micros() as u64,
            offsets,
            segment_seq: self.header.segment_seq,
        })
    }

    /// Writes and syncs the seal record. The segment never changes again.
    fn seal(&mut self, now_us: u64) -> Result<SealPayload, LogError> {
        self.check_not_failed()?;
        let seal = SealPayload {
            first_revision: self.header.first_revision,
            last_revision: self.last_revision,
            commit_count: self.commit_count,
            last_timestamp_us: self.last_timestamp_us,
            last_hash: self.last_hash,
            data_bytes: self.len - storage_format::segment::SEGMENT_HEADER_LEN as u64,
            data_crc: self.data_crc(),
            sealed_unix_us: now_us,
        };
        let record = seal.encode_record();
        let result = self
            .file
            .write_all(&record)
            .map_err(LogError::io("write seal", &self.path))
            .and_then(|()| {
                self.file
                    .sync_data()
                    .map_err(LogError::io("sync seal", &self.path))
            });
        if let Err(error) = result {
            return Err(self.latch(error));
        }
        self.len += record.len() as u64;
        Ok(seal)
    }

    /// Seals this segment and continues in a new one; returns the sealed segment's description.
    pub fn roll(&mut self, now_us: u64) -> Result<SegmentMeta, LogError> {
        assert!(self.commit_count > 0, "an empty segment is never rolled");
        self.seal(now_us)?;
        let sealed = self.meta(true);
        match ActiveSegment::create(
            self.fs.clone(),
            &self.log_dir.clone(),
            self.header.history_id,
            self.header.segment_seq + 1,
            self.last_revision + 1,
            self.last_hash,
            self.last_timestamp_us,
            now_us,
        ) {
            Ok(next) => {
                *self = next;
                Ok(sealed)
            }
            // This segment is sealed: nothing may be appended to it any more.
            Err(error) => Err(self.latch(error)),
        }
    }
}
