//! The segmented append-only write-ahead log of commits.
//!
//! Invariants:
//! - revisions are dense from the first live segment's first revision; timestamps strictly
//!   increase; every commit's hash chains to its predecessor's (FORMAT.md);
//! - `append` returns only after its commit is synced, and a commit is visible to readers
//!   (`head()`, `for_each_commit`) only once it is synced;
//! - after the first failed write or sync the log is read-only until reopened, and nothing
//!   unsynced is ever acknowledged;
//! - one process owns a data directory (an exclusive lock on `LOCK`).

mod compaction;
mod error;
mod group_commit;
pub mod reader;
mod recovery;
pub(crate) use recovery::{create_restored, new_history_id};
mod segment;
pub mod verify;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Condvar, Mutex, RwLock};
use storage_format::commit::{CommitKind, Op};
use storage_format::manifest::Manifest;
use storage_format::{Hash, HistoryId};

pub use compaction::Switched;
pub use error::{Corruption, LogError, Rejection};
pub use segment::SegmentMeta;

use crate::clock::{Clock, SystemClock};
use crate::fs::{DirLock, Fs, RealFs};
use group_commit::Queue;
pub use group_commit::{UnseenWrite, UnseenWrites};
use segment::ActiveSegment;

/// Settings of the log. Every field has a default and bounds, checked by `validate`.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// A segment rolls once it would grow past this. Default: 64 MiB. Minimum: 64 KiB.
    /// Maximum: 4 GiB.
    pub segment_bytes_max: u64,
    /// A segment holding commits rolls once it is this old. Default: 1 hour. Minimum: 1 second.
    pub segment_age_max_us: u64,
    /// Largest value of one put. Default and maximum: 1 MiB. Minimum: 1 byte.
    pub value_bytes_max: usize,
    /// Most ops in one change commit. Default and maximum: 1000.
    pub commit_ops_max: usize,
    /// Largest encoded change commit. Default and maximum: 8 MiB.
    pub commit_bytes_max: usize,
    /// A wall clock this far behind the last commit's timestamp is warned about. Default: 1 s.
    pub clock_behind_warn_us: u64,
    /// After a roll, read the sealed segment back into the page cache in 2 MiB folios
    /// (`SegmentMaps::reread`): point reads of its values then take fewer TLB misses, at the
    /// cost of one sequential read of each sealed segment. Default: true.
    pub reread_sealed_segments: bool,
}

/// Default segment size.
pub const SEGMENT_BYTES_DEFAULT: u64 = 64 << 20;
/// Smallest segment size accepted.
pub const SEGMENT_BYTES_MIN: u64 = 64 << 10;
/// Largest segment size accepted.
pub const SEGMENT_BYTES_MAX: u64 = 4 << 30;
/// Default segment age.
pub const SEGMENT_AGE_DEFAULT_US: u64 = 3600 * 1_000_000;
/// Ops in one change commit, at most (DESIGN.md §2).
pub const COMMIT_OPS_MAX: usize = 1000;
/// Encoded change commit, at most (DESIGN.md §2).
pub const COMMIT_BYTES_MAX: usize = 8 << 20;

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes_max: SEGMENT_BYTES_DEFAULT,
            segment_age_max_us: SEGMENT_AGE_DEFAULT_US,
            value_bytes_max: storage_format::VALUE_BYTES_MAX,
            commit_ops_max: COMMIT_OPS_MAX,
            commit_bytes_max: COMMIT_BYTES_MAX,
            clock_behind_warn_us: 1_000_000,
            reread_sealed_segments: true,
        }
    }
}

impl LogConfig {
    /// Checks every field against its bounds.
    pub fn validate(&self) -> Result<(), String> {
        let check = |ok: bool, what: &str| if ok { Ok(()) } else { Err(what.to_owned()) };
        check(
            (SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&self.segment_bytes_max),
            "segment_bytes_max must be between 64 KiB and 4 GiB",
        )?;
        check(
            self.segment_age_max_us >= 1_000_000,
            "segment_age_max must be at least 1 second",
        )?;
        check(
            (1..=storage_format::VALUE_BYTES_MAX).contains(&self.value_bytes_max),
            "value_bytes_max must be between 1 byte and 1 MiB",
        )?;
        check(
            (1..=COMMIT_OPS_MAX).contains(&self.commit_ops_max),
            "commit_ops_max must be between 1 and 1000",
        )?;
        check(
            (1024..=COMMIT_BYTES_MAX).contains(&self.commit_bytes_max),
            "commit_bytes_max must be between 1 KiB and 8 MiB",
        )
    }
}

/// What a writer asks to commit. Revision, timestamp and hash are assigned by the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitRequest {
    pub kind: CommitKind,
    pub actor: String,
    pub reason: String,
    /// JSON object text describing a system commit; empty for a change.
    pub detail: Vec<u8>,
    pub ops: Vec<Op>,
}

impl CommitRequest {
    /// A change commit of `ops`.
    pub fn change(actor: &str, reason: &str, ops: Vec<Op>) -> Self {
        CommitRequest {
            kind: CommitKind::Change,
            actor: actor.to_owned(),
            reason: reason.to_owned(),
            detail: Vec::new(),
            ops,
        }
    }
}

/// What an acknowledged commit was assigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitInfo {
    pub revision: u64,
    pub timestamp_us: u64,
    pub hash: Hash,
}

/// The durable head: the last revision readers may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// 0 (or the horizon) when the log holds no commit yet.
    pub revision: u64,
    pub timestamp_us: u64,
    pub hash: Hash,
}

/// A commit that just became durable, with where its record is.
pub struct DurableCommit<'a> {
    pub commit: &'a storage_format::commit::Commit,
    pub hash: Hash,
    pub segment_seq: u64,
    pub record_offset: u64,
}

/// Told about the log's progress by the writer, in order: indexes hang off this.
pub trait LogObserver: Send + Sync {
    /// A batch is durable; called before any reader can see it, by the group-commit leader.
    fn on_durable(&self, commits: &[DurableCommit<'_>]);
    /// A segment was sealed and its successor created. `checkpoint` false: the roll is on a
    /// latency-sensitive path (a backup's roll); derived state may be saved at the next roll.
    fn on_sealed(&self, sealed: &SegmentMeta, checkpoint: bool);
}

/// Counters since open, for metrics and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogStats {
    pub commits: u64,
    /// Group-commit batches written (one write and one fsync each).
    pub batches: u64,
    pub bytes_written: u64,
    /// Time spent in fsync of batches, in microseconds.
    pub fsync_us: u64,
    pub segments_sealed: u64,
}

/// The log's segments at a glance (status, health, metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentsSummary {
    pub count: usize,
    pub sealed: usize,
    /// Durable bytes in all segments.
    pub bytes: u64,
}

#[derive(Debug, Default)]
pub(crate) struct StatCounters {
    pub commits: AtomicU64,
    pub batches: AtomicU64,
    pub bytes_written: AtomicU64,
    pub fsync_us: AtomicU64,
    pub segments_sealed: AtomicU64,
    /// The latest batch fsyncs, for "recent" latency (health, doctor).
    pub recent_fsyncs: parking_lot::Mutex<RecentFsyncs>,
}

/// Fsyncs kept for the recent-latency figure.
pub const RECENT_FSYNCS: usize = 256;

/// A ring of the latest `RECENT_FSYNCS` batch fsync durations.
#[derive(Debug)]
pub(crate) struct RecentFsyncs {
    us: [u32; RECENT_FSYNCS],
    next: usize,
    len: usize,
}

impl Default for RecentFsyncs {
    fn default() -> Self {
        RecentFsyncs {
            us: [0; RECENT_FSYNCS],
            next: 0,
            len: 0,
        }
    }
}

impl RecentFsyncs {
    pub fn push(&mut self, us: u64) {
        self.us[self.next] = us.min(u32::MAX as u64) as u32;
        self.next = (self.next + 1) % RECENT_FSYNCS;
        self.len = (self.len + 1).min(RECENT_FSYNCS);
    }
}

/// Latency of the latest batch fsyncs (at most `RECENT_FSYNCS`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RecentFsync {
    pub count: usize,
    pub mean_us: f64,
    pub max_us: u64,
}

/// Present while the operator's read-only switch is on; holds the reason.
pub const READ_ONLY_FILE: &str = "READ_ONLY";

/// The log of one data directory.
pub struct Log {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    config: LogConfig,
    clock: Arc<dyn Clock>,
    history_id: HistoryId,
    /// Assignment of revision, timestamp and hash, and the batch being gathered.
    queue: Mutex<Queue>,
    /// Notified when a leader stops (shutdown waits on it; appenders wait on their batch's signal).
    queue_changed: Condvar,
    /// Wakes a leader gathering a batch when enough appenders have queued.
    batch_grew: Condvar,
    /// Only the group-commit leader (or a roll) writes.
    writer: Mutex<ActiveSegment>,
    /// Durable head, published after each synced batch.
    head: RwLock<Head>,
    segments: RwLock<Vec<SegmentMeta>>,
    /// Latest time at which a read "as of T" was answered; commits are stamped after it.
    read_watermark_us: AtomicU64,
    stats: StatCounters,
    observer: std::sync::OnceLock<Arc<dyn LogObserver>>,
    /// The point history starts from: revision and hash before the first live commit.
    horizon: RwLock<Head>,
    /// The MANIFEST as last written (compaction replaces it).
    manifest: Mutex<Manifest>,
    _lock: Box<dyn DirLock>,
}

impl Log {
    /// Opens (creating if empty) the log in `dir` on the real file system.
    pub fn open(dir: impl AsRef<Path>, config: LogConfig) -> Result<Log, LogError> {
        Log::open_with(
            Arc::new(RealFs),
            Arc::new(SystemClock),
            dir.as_ref(),
            config,
        )
    }

    /// Opens the log with a given file system and clock (tests use `MemFs` and `ManualClock`).
    pub fn open_with(
        fs: Arc<dyn Fs>,
        clock: Arc<dyn Clock>,
        dir: &Path,
        config: LogConfig,
    ) -> Result<Log, LogError> {
        recovery::open(fs, clock, dir, config)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file system the log writes through (the index and maintenance write through it too).
    pub fn fs(&self) -> &Arc<dyn Fs> {
        &self.fs
    }

    pub fn history_id(&self) -> HistoryId {
        self.history_id
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// The point before the first live commit (revision 0 and the genesis hash until compaction).
    pub fn horizon(&self) -> Head {
        *self.horizon.read()
    }

    /// The MANIFEST as last written.
    pub fn manifest(&self) -> Manifest {
        *self.manifest.lock()
    }

    /// The durable head.
    pub fn head(&self) -> Head {
        *self.head.read()
    }

    /// The segments, oldest first, with their durable lengths.
    pub fn segments(&self) -> Vec<SegmentMeta> {
        self.segments.read().clone()
    }

    /// Installs the observer told about every durable batch and sealed segment (once).
    pub fn set_observer(&self, observer: Arc<dyn LogObserver>) {
        assert!(
            self.observer.set(observer).is_ok(),
            "the log's observer is set once"
        );
    }

    /// Segment count, sealed count and bytes, without copying the segment list.
    pub fn segments_summary(&self) -> SegmentsSummary {
        let segments = self.segments.read();
        SegmentsSummary {
            count: segments.len(),
            sealed: segments.iter().filter(|s| s.sealed).count(),
            bytes: segments.iter().map(|s| s.len).sum(),
        }
    }

    /// Counters since open.
    pub fn stats(&self) -> LogStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        LogStats {
            commits: get(&self.stats.commits),
            batches: get(&self.stats.batches),
            bytes_written: get(&self.stats.bytes_written),
            fsync_us: get(&self.stats.fsync_us),
            segments_sealed: get(&self.stats.segments_sealed),
        }
    }

    /// Latency of the latest batch fsyncs; `None` before the first.
    pub fn recent_fsync(&self) -> Option<RecentFsync> {
        let ring = self.stats.recent_fsyncs.lock();
        let values = &ring.us[..ring.len];
        if values.is_empty() {
            return None;
        }
        Some(RecentFsync {
            count: values.len(),
            mean_us: values.iter().map(|&v| v as f64).sum::<f64>() / values.len() as f64,
            max_us: values.iter().copied().max().unwrap_or(0) as u64,
        })
    }

    /// Why the log refuses writes, if it does: a failed write or sync (latched), or the
    /// operator's switch.
    pub fn read_only_reason(&self) -> Option<String> {
        if let Some(failure) = self.writer.lock().failure() {
            return Some(failure.to_owned());
        }
        self.operator_read_only()
            .map(|reason| format!("switched read-only by the operator: {reason}"))
    }

    /// Records that a read as of `at_us` was answered, so later commits are stamped after it.
    pub fn note_read_at(&self, at_us: u64) {
        self.read_watermark_us.fetch_max(at_us, Ordering::SeqCst);
    }

    /// Seals the active segment now if it holds commits (before a backup or compaction). Returns
    /// whether it rolled.
    pub fn roll(&self) -> Result<bool, LogError> {
        self.roll_with(true)
    }

    /// `roll`, telling the observer not to checkpoint now (its entries for the sealed segment
    /// stay in memory until the next roll's checkpoint). For backups: sealing is all they need,
    /// and the index checkpoint (O(keys) bytes and several fsyncs) would dominate a small
    /// incremental backup while holding up writers.
    pub fn roll_deferring_checkpoint(&self) -> Result<bool, LogError> {
        self.roll_with(false)
    }

    /// Runs `f` while the active segment holds no commit, holding the writer lock so none
    /// arrives meanwhile; returns `None` (without running `f`) if it holds some.
    pub fn while_active_empty<T>(&self, f: impl FnOnce() -> T) -> Option<T> {
        let writer = self.writer.lock();
        (writer.commit_count == 0).then(f)
    }

    fn roll_with(&self, checkpoint: bool) -> Result<bool, LogError> {
        let mut writer = self.writer.lock();
        if writer.commit_count == 0 {
            return Ok(false);
        }
        let sealed = writer.roll(self.clock.now_us())?;
        self.publish_roll(sealed, &writer, checkpoint);
        Ok(true)
    }

    /// Rolls the active segment if it holds commits and is older than the configured age. The
    /// server calls this periodically so an idle segment still seals on time.
    pub fn roll_if_due(&self) -> Result<bool, LogError> {
        let mut writer = self.writer.lock();
        if !self.age_due(&writer) {
            return Ok(false);
        }
        let sealed = writer.roll(self.clock.now_us())?;
        self.publish_roll(sealed, &writer, true);
        Ok(true)
    }

    fn age_due(&self, writer: &ActiveSegment) -> bool {
        writer.commit_count > 0
            && self
                .clock
                .now_us()
                .saturating_sub(writer.header.created_unix_us)
                >= self.config.segment_age_max_us
    }

    fn publish_roll(&self, sealed: SegmentMeta, writer: &ActiveSegment, checkpoint: bool) {
        self.stats.segments_sealed.fetch_add(1, Ordering::Relaxed);
        let mut segments = self.segments.write();
        let last = segments.last_mut().expect("the active segment is listed");
        assert_eq!(last.seq, sealed.seq);
        *last = sealed;
        segments.push(writer.meta(false));
        let sealed = segments[segments.len() - 2].clone();
        drop(segments);
        tracing::info!(segment = %last_path_name(&sealed.path), "segment sealed");
        if let Some(observer) = self.observer.get() {
            observer.on_sealed(&sealed, checkpoint);
        }
    }

    /// Closes the log cleanly: waits for the commit in flight, then records the clean-shutdown
    /// marker so the next open can skip re-reading the active segment.
    /// Idempotent; later appends fail with `Closed`.
    pub fn close(&self) -> Result<(), LogError> {
        self.shutdown()
    }
}

fn last_path_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

impl Drop for Log {
    fn drop(&mut self) {
        if let Err(error) = self.shutdown() {
            tracing::warn!(%error, "clean shutdown marker not written");
        }
    }
}
