//! The store: the log plus its indexes, and every read of DESIGN.md §2 at a point — latest,
//! `revision=N` or `at=T`.
//!
//! Invariants:
//! - reads see exactly the commits the index holds, which are durable (the index is fed by the
//!   log's observer after each fsync, before the commit is visible);
//! - a time point resolves to the last revision whose timestamp is at or before it, and is
//!   recorded with the log so that no later commit can be stamped at or before it;
//! - a point after the head (or after now) is an error, never an empty answer;
//! - a damaged or inconsistent index is rebuilt from the log and the read retried once.

pub mod maintenance;
mod reads;
pub mod restore;
pub mod schema;
mod write;

use std::path::Path;
use std::sync::Arc;

use storage_format::commit::{Commit, decode_commit_payload};
use storage_format::record::{RECORD_HEADER_LEN, RecordHeader};
use storage_format::segment::{SEGMENT_DIR, segment_file_name};
use storage_format::{Hash, KeyError, validate_key};
use thiserror::Error;

pub use maintenance::{
    CompactionOutcome, MaintenanceConfig, MaintenanceError, MaintenanceStats, ScrubStatus,
    SnapshotInfo,
};
pub use reads::{
    ChainVerification, Change, ChangeKind, CommitFilter, CommitRecord, CommitsPage, Diff,
    HistoryItem, HistoryPage, KeyVersion, ListPage, VersionRef, commit_bytes,
};
pub use write::{
    Condition, Conflict, ROLLBACK_OPS_MAX, RollbackOutcome, WRITE_ATTEMPTS_MAX, WriteError,
    WriteRequest,
};

/// What callers of the store build requests from and read results into: the log's plain data
/// types, owned here so that nothing above the store imports `log`.
pub use crate::index::ValueBytes;
pub use crate::log::verify::{Finding, Severity, VerifyReport};
pub use crate::log::{
    COMMIT_BYTES_MAX, COMMIT_OPS_MAX, CommitInfo, CommitRequest, Corruption, Head, LogConfig,
    LogStats, RecentFsync, Rejection, SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN, SegmentMeta,
    SegmentsSummary,
};
pub use storage_format::HistoryId;
pub use storage_format::commit::{CommitKind, Op};

use crate::clock::{Clock, SystemClock};
use crate::fs::RealFs;
use crate::index::{Bound, Index, IndexError, SegmentMaps, State};
use crate::log::{Log, LogError};

/// Items in one page of a list, history or commits read, at most.
pub const PAGE_ITEMS_MAX: usize = 1000;
/// Commits a single `commits` read examines, at most, before returning a page (possibly empty)
/// with `next` set, so a filter that matches nothing cannot scan the whole history at once.
pub const COMMITS_SCAN_MAX: u64 = 10_000;
/// Changes one diff returns, at most.
pub const DIFF_CHANGES_MAX: usize = 10_000;
/// Bytes of keys, values, actors and reasons in one page of a list, history or commits read:
/// a page ends (with `next` set) once it holds this much, so an answer is bounded by bytes as
/// well as by items. A page always holds at least one item, so the bound an answer meets is this
/// plus one item (a commit: at most `storage.commit_bytes_max`).
pub const PAGE_BYTES_MAX: usize = 1 << 20;
/// Bytes of old and new values one diff returns, at most (beyond: 413, narrow the prefix).
pub const DIFF_BYTES_MAX: usize = 32 << 20;

/// A point in history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    Latest,
    Revision(u64),
    /// Microseconds since the Unix epoch, UTC.
    Time(u64),
}

#[derive(Debug, Error)]
pub enum ReadError {
    #[error("revision {requested} is after the head revision {head}")]
    FutureRevision { requested: u64, head: u64 },
    #[error("time {requested_us} is in the future")]
    FutureTime { requested_us: u64 },
    #[error("invalid key {key:?}: {source}")]
    InvalidKey { key: String, source: KeyError },
    #[error("invalid argument: {0}")]
    Invalid(String),
    #[error("too many changes: more than {max} {unit}; narrow the prefix")]
    TooLarge { max: usize, unit: &'static str },
    #[error(
        "{what} is below the compaction horizon; the earliest available point is revision \
         {earliest_revision}"
    )]
    Compacted {
        what: String,
        earliest_revision: u64,
        earliest_timestamp_us: u64,
    },
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Log(#[from] LogError),
}

impl ReadError {
    fn index_damaged(&self) -> bool {
        matches!(
            self,
            ReadError::Index(IndexError::Corrupt { .. } | IndexError::Inconsistent(_))
        )
    }
}

/// An error of the store, as the layers above tell them apart: a refused request, a store that
/// takes no writes now, or a failure of storage (the log's error, naming file and offset).
#[derive(Debug, Error)]
pub enum StoreError {
    /// Refused before anything was written (limits, keys, values): the caller's to fix.
    #[error("request refused: {0}")]
    Rejected(Rejection),
    /// Writes are refused (the operator's switch, a full disk, a failed write); reads go on.
    #[error("the store is read-only: {reason}")]
    ReadOnly { reason: String },
    /// The store is closing or closed.
    #[error("the log is closed")]
    Closed,
    /// Storage failed, is damaged, or cannot be opened.
    #[error(transparent)]
    Storage(LogError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Image(#[from] crate::image::ImageError),
    #[error("base image {}: {reason}", path.display())]
    BaseImage {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error(transparent)]
    Maintenance(#[from] MaintenanceError),
}

impl From<LogError> for StoreError {
    fn from(error: LogError) -> StoreError {
        match error {
            LogError::Rejected(rejection) => StoreError::Rejected(rejection),
            LogError::ReadOnly { reason } => StoreError::ReadOnly { reason },
            LogError::Closed => StoreError::Closed,
            other => StoreError::Storage(other),
        }
    }
}

impl StoreError {
    /// Whether the disk is full (the store turned read-only for lack of space).
    pub fn is_disk_full(&self) -> bool {
        matches!(self, StoreError::Storage(e) if e.is_disk_full())
    }
}

/// Checks every file of the data directory `dir` offline, without opening it as a store (a
/// running server may keep using it): what each holds and every problem found.
pub fn verify_dir(dir: &Path) -> VerifyReport {
    crate::log::verify::verify_dir(&RealFs, dir)
}

/// The store's files after `Store::seal_for_backup`: what a backup may copy.
#[derive(Debug, Clone)]
pub struct SealedFiles {
    pub dir: std::path::PathBuf,
    /// The base image's sequence (0: none).
    pub base_image_seq: u64,
    pub horizon: Head,
    /// Sealed segments holding at least one commit, oldest first.
    pub sealed: Vec<SegmentMeta>,
}

/// How often the housekeeping thread checks whether the active segment is due to roll by age.
const HOUSEKEEPING_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// An index checkpoint a backup's roll deferred is paid by the housekeeping thread once it is
/// this old (if no roll paid it first).
const CHECKPOINT_DEBT_MAX_US: u64 = 300 * 1_000_000;

/// A store: one data directory, its log and its indexes.
pub struct Store {
    log: Arc<Log>,
    index: Arc<Index>,
    clock: Arc<dyn Clock>,
    housekeeping: Housekeeping,
    /// The thread finishing the index checkpoints rolls prepare (`Index::run_finisher`).
    checkpointer: parking_lot::Mutex<Option<std::thread::JoinHandle<()>>>,
    schemas: schema::SchemaCache,
    maintenance: Arc<maintenance::Maintenance>,
}

/// A background thread that rolls the active segment once it is older than the configured age,
/// so an idle store still seals (and so ships) its segments on time, checks the snapshots once
/// after open, and takes scheduled snapshots and compactions.
struct Housekeeping {
    stop: Arc<(parking_lot::Mutex<bool>, parking_lot::Condvar)>,
    thread: parking_lot::Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// Writes an index checkpoint a backup's roll deferred, once the debt is old: with the active
/// segment empty, directly (under the writer lock, so no commit lands meanwhile); else by rolling.
fn pay_checkpoint_debt(log: &Log, index: &Index) {
    let Some(since) = index.checkpoint_owed_since_us() else {
        return;
    };
    if crate::clock::now_us().saturating_sub(since) < CHECKPOINT_DEBT_MAX_US {
        return;
    }
    let paid = match log.while_active_empty(|| index.checkpoint()) {
        Some(result) => result.map_err(|e| e.to_string()),
        None => log.roll().map(|_| ()).map_err(|e| e.to_string()),
    };
    if let Err(error) = paid {
        index.postpone_checkpoint_debt();
        tracing::warn!(%error, "deferred index checkpoint failed; entries stay in memory, retrying later");
    }
}

impl Housekeeping {
    fn start(
        log: Arc<Log>,
        index: Arc<Index>,
        maintenance: Arc<maintenance::Maintenance>,
    ) -> Housekeeping {
        let stop = Arc::new((parking_lot::Mutex::new(false), parking_lot::Condvar::new()));
        let signal = stop.clone();
        let thread = std::thread::Builder::new()
            .name("llmcm-housekeeping".into())
            .spawn(move || {
                let (stopped, wake) = &*signal;
                let mut warned = false;
                maintenance.check_snapshots();
                loop {
                    let mut stopped = stopped.lock();
                    if !*stopped {
                        wake.wait_for(&mut stopped, HOUSEKEEPING_INTERVAL);
                    }
                    if *stopped {
                        return;
                    }
                    drop(stopped);
                    if let Err(error) = log.roll_if_due()
                        && !warned
                    {
                        warned = true;
                        tracing::warn!(%error, "rolling the active segment by age failed");
                    }
                    pay_checkpoint_debt(&log, &index);
                    maintenance.tick();
                }
            })
            .expect("spawn the housekeeping thread");
        Housekeeping {
            stop,
            thread: parking_lot::Mutex::new(Some(thread)),
        }
    }

    fn stop(&self) {
        *self.stop.0.lock() = true;
        self.stop.1.notify_all();
        if let Some(thread) = self.thread.lock().take() {
            let _ = thread.join();
        }
    }
}

impl Store {
    /// Opens (creating if empty) the store in `dir`, with no automatic snapshots or compaction
    /// (`open_configured` sets them).
    pub fn open(dir: impl AsRef<Path>, config: LogConfig) -> Result<Store, StoreError> {
        Store::open_with_clock(dir.as_ref(), config, Arc::new(SystemClock))
    }

    /// Opens with a given clock (tests).
    pub fn open_with_clock(
        dir: &Path,
        config: LogConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Store, StoreError> {
        Store::open_full(dir, config, MaintenanceConfig::manual(), clock)
    }

    /// Opens with snapshot and retention settings.
    pub fn open_configured(
        dir: &Path,
        config: LogConfig,
        maintenance: MaintenanceConfig,
    ) -> Result<Store, StoreError> {
        Store::open_full(dir, config, maintenance, Arc::new(SystemClock))
    }

    /// Opens with everything given.
    pub fn open_full(
        dir: &Path,
        config: LogConfig,
        maintenance_config: MaintenanceConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Store, StoreError> {
        Store::open_through(dir, config, maintenance_config, clock, Arc::new(RealFs))
    }

    /// Opens with every write of the log, the index checkpoints, snapshots and compaction going
    /// through `fs` (tests inject faults with `fs::FaultyFs` over the real file system; the
    /// index maps real files, so an in-memory file system cannot carry a whole store).
    #[cfg(feature = "internals")]
    pub fn open_with_fs(
        dir: &Path,
        config: LogConfig,
        maintenance_config: MaintenanceConfig,
        clock: Arc<dyn Clock>,
        fs: Arc<dyn crate::fs::Fs>,
    ) -> Result<Store, StoreError> {
        Store::open_through(dir, config, maintenance_config, clock, fs)
    }

    fn open_through(
        dir: &Path,
        config: LogConfig,
        maintenance_config: MaintenanceConfig,
        clock: Arc<dyn Clock>,
        fs: Arc<dyn crate::fs::Fs>,
    ) -> Result<Store, StoreError> {
        let started = std::time::Instant::now();
        let log = Arc::new(Log::open_with(fs, clock.clone(), dir, config)?);
        let log_ms = started.elapsed().as_secs_f64() * 1000.0;
        let base = load_base_image(dir, &log)?;
        let index = Arc::new(Index::open(dir, &log, base)?);
        log.set_observer(index.clone());
        let maintenance = Arc::new(maintenance::Maintenance::open(
            log.clone(),
            index.clone(),
            clock.clone(),
            dir,
            maintenance_config,
        )?);
        tracing::info!(
            log_ms = format!("{log_ms:.1}"),
            total_ms = format!("{:.1}", started.elapsed().as_secs_f64() * 1000.0),
            head = log.head().revision,
            "store opened"
        );
        // Started once nothing can fail, so no thread outlives a failed open. A roll prepares
        // its index checkpoint under the log's writer lock; this thread writes it while writers
        // go on.
        let checkpointer = {
            let index = index.clone();
            std::thread::Builder::new()
                .name("llmcm-checkpoint".into())
                .spawn(move || index.run_finisher())
                .expect("spawn the index checkpoint thread")
        };
        let housekeeping = Housekeeping::start(log.clone(), index.clone(), maintenance.clone());
        Ok(Store {
            log,
            index,
            clock,
            housekeeping,
            checkpointer: parking_lot::Mutex::new(Some(checkpointer)),
            schemas: Default::default(),
            maintenance,
        })
    }

    /// Takes a snapshot of the state at the durable head (FORMAT.md "Images").
    pub fn snapshot(&self) -> Result<SnapshotInfo, MaintenanceError> {
        self.maintenance.snapshot()
    }

    /// The snapshots on disk, oldest first.
    pub fn snapshots(&self) -> Vec<SnapshotInfo> {
        self.maintenance.snapshots()
    }

    /// Checks the snapshots whole, newest first, setting damaged ones aside (the housekeeping
    /// thread does this once after open).
    pub fn check_snapshots(&self) {
        self.maintenance.check_snapshots()
    }

    /// Compacts history older than `retain_us`, recording a `compaction` commit by `actor`.
    pub fn compact(
        &self,
        retain_us: u64,
        actor: &str,
        reason: &str,
    ) -> Result<Option<CompactionOutcome>, MaintenanceError> {
        self.maintenance.compact(retain_us, actor, reason)
    }

    /// With backup repositories configured, the newest revision already safe in one of them
    /// (0 before the first backup): compaction never passes it. `None` lifts the limit.
    pub fn set_backup_safe_revision(&self, revision: Option<u64>) {
        self.maintenance.set_backup_safe(revision)
    }

    pub fn backup_safe_revision(&self) -> Option<u64> {
        self.maintenance.backup_safe()
    }

    pub fn last_compaction(&self) -> Option<CompactionOutcome> {
        self.maintenance.last_compaction()
    }

    /// Since when an index checkpoint deferred by a backup's roll is owed (Unix µs), if one is.
    pub fn index_checkpoint_owed_since_us(&self) -> Option<u64> {
        self.index.checkpoint_owed_since_us()
    }

    /// `through_revision` of the last index checkpoint this process wrote (0: none yet).
    /// Waits for a checkpoint in flight first.
    pub fn index_checkpointed_through(&self) -> u64 {
        self.index.wait_checkpoints();
        self.index.checkpointed_through()
    }

    /// Rebuilds of the index from the log since open (after damage or a failed install).
    pub fn index_rebuilds(&self) -> u64 {
        self.index.rebuilds()
    }

    /// Bytes of sealed segments read back into the page cache after their rolls since open
    /// (`LogConfig::reread_sealed_segments`).
    pub fn sealed_bytes_reread(&self) -> u64 {
        self.index.reread_bytes()
    }

    /// What the background scrub of sealed segments has found.
    pub fn scrub_status(&self) -> ScrubStatus {
        self.maintenance.scrub_status()
    }

    pub fn maintenance_stats(&self) -> MaintenanceStats {
        self.maintenance.stats()
    }

    pub fn maintenance_config(&self) -> MaintenanceConfig {
        self.maintenance.config()
    }

    /// Replaces the snapshot and retention settings (SIGHUP).
    pub fn set_maintenance_config(&self, config: MaintenanceConfig) {
        self.maintenance.set_config(config)
    }

    /// Follows the newest revision readers can see: changes after each durable batch.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.index.subscribe()
    }

    /// The log under the store (tools and tests of the log itself).
    #[cfg(feature = "internals")]
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// Appends one commit; returns once it is durable and visible.
    pub fn append(&self, request: CommitRequest) -> Result<CommitInfo, StoreError> {
        Ok(self.log.append(request)?)
    }

    /// The durable head: the newest revision readers see.
    pub fn head(&self) -> Head {
        self.log.head()
    }

    /// The compaction horizon: the oldest point still readable (revision 0 before any).
    pub fn horizon(&self) -> Head {
        self.log.horizon()
    }

    /// The history this store's chain belongs to (a restore starts a new one).
    pub fn history_id(&self) -> HistoryId {
        self.log.history_id()
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        self.log.dir()
    }

    /// Why writes are refused now, if they are.
    pub fn read_only_reason(&self) -> Option<String> {
        self.log.read_only_reason()
    }

    /// Switches the operator's read-only state, recorded as a `read_only` commit by `actor`;
    /// `None` when it was already in that state (nothing recorded).
    pub fn set_operator_read_only(
        &self,
        on: bool,
        reason: &str,
        actor: &str,
    ) -> Result<Option<CommitInfo>, StoreError> {
        Ok(self.log.set_operator_read_only(on, reason, actor)?)
    }

    /// The segments, oldest first.
    pub fn segments(&self) -> Vec<SegmentMeta> {
        self.log.segments()
    }

    /// The segments at a glance.
    pub fn segments_summary(&self) -> SegmentsSummary {
        self.log.segments_summary()
    }

    /// The latest group-commit fsyncs' latency, if any were timed recently.
    pub fn recent_fsync(&self) -> Option<RecentFsync> {
        self.log.recent_fsync()
    }

    /// Counters since open.
    pub fn stats(&self) -> LogStats {
        self.log.stats()
    }

    /// Seals the active segment (if it holds a commit) and starts the next; whether it rolled.
    pub fn roll(&self) -> Result<bool, StoreError> {
        Ok(self.log.roll()?)
    }

    /// Seals the active segment for a backup (deferring the index checkpoint the roll would
    /// write, so the backup's latency does not pay it) and returns what the sealed files are.
    pub fn seal_for_backup(&self) -> Result<SealedFiles, StoreError> {
        self.log.roll_deferring_checkpoint()?;
        Ok(SealedFiles {
            dir: self.log.dir().to_path_buf(),
            base_image_seq: self.log.manifest().base_image_seq,
            horizon: self.log.horizon(),
            sealed: self
                .log
                .segments()
                .into_iter()
                .filter(|s| s.sealed && s.last_revision >= s.first_revision)
                .collect(),
        })
    }

    /// Writes the chain's commits `from..=to` as NDJSON (`chain::export_chain`); how many.
    pub fn export_chain(
        &self,
        from: u64,
        to: u64,
        out: &mut dyn std::io::Write,
    ) -> Result<u64, crate::chain::ChainError> {
        crate::chain::export_chain(&self.log, from, to, out)
    }

    /// Closes cleanly: seals the active segment (so the index checkpoints everything and the next
    /// open replays nothing), then closes the log (see `Log::close`). Idempotent; dropping the
    /// store does the same, ignoring errors.
    pub fn close(&self) -> Result<(), StoreError> {
        self.maintenance.cancel();
        self.housekeeping.stop();
        let closed = (|| {
            if self.log.read_only_reason().is_none() {
                self.log.roll()?;
                // A checkpoint a backup's roll deferred, with nothing written since: pay it now
                // (after the roll's own, which this waits for).
                if self.index.checkpoint_owed_since_us().is_some()
                    && let Some(Err(error)) =
                        self.log.while_active_empty(|| self.index.checkpoint())
                {
                    tracing::warn!(%error, "index checkpoint at close failed; the next open re-indexes");
                }
            }
            Ok(self.log.close()?)
        })();
        // The checkpoint thread finishes what the last roll queued, then stops.
        self.index.stop_finisher();
        if let Some(thread) = self.checkpointer.lock().take() {
            let _ = thread.join();
        }
        closed
    }

    /// Runs a read against the index, rebuilding the index once if the read finds it damaged.
    fn with_index<T>(
        &self,
        read: impl Fn(&State, &SegmentMaps) -> Result<T, ReadError>,
    ) -> Result<T, ReadError> {
        let first = self.index.read(|state, maps| {
            state.check_usable()?;
            read(state, maps)
        });
        match first {
            Err(e) if e.index_damaged() => {
                tracing::warn!(error = %e, "the index is damaged; rebuilding it from the log");
                self.index.rebuild(&self.log)?;
                self.index.read(|state, maps| read(state, maps))
            }
            other => other,
        }
    }

    /// Fails with `Compacted` for a point before the compaction horizon.
    fn check_horizon(&self, state: &State, point: Point) -> Result<(), ReadError> {
        let horizon = state.horizon();
        let below = match point {
            Point::Latest => false,
            Point::Revision(r) => r < horizon.revision,
            Point::Time(t) => horizon.revision > 0 && t < horizon.timestamp_us,
        };
        if below {
            return Err(compacted(state, "the point", horizon.revision));
        }
        Ok(())
    }

    /// Resolves a point to (revision, bound) against `state`.
    fn resolve(&self, state: &State, point: Point) -> Result<(u64, Bound), ReadError> {
        let bound = self.resolve_bound(state, point)?;
        let revision = match bound {
            Bound::Revision(r) => r,
            Bound::Time(t) => state.revision_at(t)?,
        };
        Ok((revision, bound))
    }

    /// Resolves a point to a bound without turning a time into a revision (a binary search that
    /// a single-key read does not need: timestamps grow with revisions).
    fn resolve_bound(&self, state: &State, point: Point) -> Result<Bound, ReadError> {
        let head = state.through_revision();
        self.check_horizon(state, point)?;
        match point {
            Point::Latest => Ok(Bound::Revision(head)),
            Point::Revision(requested) if requested > head => {
                Err(ReadError::FutureRevision { requested, head })
            }
            Point::Revision(r) => Ok(Bound::Revision(r)),
            // At or before the newest indexed commit, a time is not in the future, and every
            // later commit is already bound to be stamped after it: no clock read, no watermark.
            Point::Time(t) if t <= state.head_timestamp_us() => Ok(Bound::Time(t)),
            Point::Time(t) => {
                if t > self.clock.now_us() {
                    return Err(ReadError::FutureTime { requested_us: t });
                }
                // No commit may later be stamped at or before a time already answered for.
                self.log.note_read_at(t);
                Ok(Bound::Time(t))
            }
        }
    }

    /// Reads the commit record of `revision`: from the segment mapping when its index entry is
    /// checkpointed (its segment is sealed), else from the file with `pread`.
    fn read_commit(
        &self,
        state: &State,
        maps: &SegmentMaps,
        revision: u64,
    ) -> Result<(Commit, Hash), ReadError> {
        let rev = state.rev(revision)?;
        let seq = rev.segment_seq as u64;
        let offset = rev.record_offset as usize;
        // Checkpointed revisions always point into sealed (mappable) segments.
        let sealed = state.is_checkpointed(revision);
        let corrupt = |e| {
            ReadError::Log(LogError::Corrupted {
                file: self.segment_path(seq),
                offset: offset as u64,
                revision,
                kind: crate::log::Corruption::Decode(e),
            })
        };
        let (commit, hash) = if sealed {
            let map = maps.map(seq)?;
            let header =
                RecordHeader::decode(map.get(offset..).unwrap_or_default()).map_err(corrupt)?;
            let start = offset + RECORD_HEADER_LEN;
            let payload = map
                .get(start..start + header.payload_len as usize)
                .ok_or_else(|| {
                    IndexError::Inconsistent(format!("record of {revision} runs past its segment"))
                })?;
            header.check_payload(payload).map_err(corrupt)?;
            let decoded = decode_commit_payload(payload).map_err(corrupt)?;
            (decoded.commit, decoded.hash)
        } else {
            use std::os::unix::fs::FileExt;
            let path = self.segment_path(seq);
            let io = |e| {
                ReadError::Log(LogError::Io {
                    op: "read record",
                    path: path.clone(),
                    source: e,
                })
            };
            let file = std::fs::File::open(&path).map_err(io)?;
            let mut head = [0u8; RECORD_HEADER_LEN];
            file.read_exact_at(&mut head, offset as u64).map_err(io)?;
            let header = RecordHeader::decode(&head).map_err(corrupt)?;
            let mut payload = vec![0u8; header.payload_len as usize];
            file.read_exact_at(&mut payload, (offset + RECORD_HEADER_LEN) as u64)
                .map_err(io)?;
            header.check_payload(&payload).map_err(corrupt)?;
            let decoded = decode_commit_payload(&payload).map_err(corrupt)?;
            (decoded.commit, decoded.hash)
        };
        if commit.revision != revision {
            return Err(IndexError::Inconsistent(format!(
                "revision {revision} points at the record of {}",
                commit.revision
            ))
            .into());
        }
        Ok((commit, hash))
    }

    /// The chain hash of `revision` (the horizon's hash just below the first live revision).
    fn hash_of(&self, state: &State, maps: &SegmentMaps, revision: u64) -> Result<Hash, ReadError> {
        if revision < state.first_live_revision() {
            return Ok(self.log.horizon().hash);
        }
        Ok(self.read_commit(state, maps, revision)?.1)
    }

    fn segment_path(&self, seq: u64) -> std::path::PathBuf {
        self.log
            .dir()
            .join(SEGMENT_DIR)
            .join(segment_file_name(seq))
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Err(error) = self.close() {
            tracing::warn!(%error, "the store did not close cleanly");
        }
    }
}

/// The `Compacted` error for `what`, naming the earliest revision still available (the horizon
/// for a point; the first commit after it for history and commits) and the horizon's time.
fn compacted(state: &State, what: &str, earliest_revision: u64) -> ReadError {
    ReadError::Compacted {
        what: what.to_owned(),
        earliest_revision,
        earliest_timestamp_us: state.horizon().timestamp_us,
    }
}

/// Fails with `Compacted` when a history or commits read asks for commits at or before the
/// horizon (their records are gone): an explicit `from` at or before it, an `after` below it, or
/// a `since` time at or before the horizon's.
fn check_range_horizon(
    state: &State,
    what: &str,
    from: Option<u64>,
    after: Option<u64>,
    since_us: Option<u64>,
) -> Result<(), ReadError> {
    let horizon = state.horizon();
    if horizon.revision == 0 {
        return Ok(());
    }
    let below = from.is_some_and(|f| f <= horizon.revision)
        || after.is_some_and(|a| a < horizon.revision)
        || since_us.is_some_and(|t| t <= horizon.timestamp_us);
    if below {
        return Err(compacted(state, what, state.first_live_revision()));
    }
    Ok(())
}

/// Loads the base image the MANIFEST names, checked whole and against the MANIFEST's horizon.
/// A damaged base image fails the open: the state at the horizon exists nowhere else.
fn load_base_image(dir: &Path, log: &Log) -> Result<Option<Arc<crate::image::Image>>, StoreError> {
    let manifest = log.manifest();
    if manifest.base_image_seq == 0 {
        return Ok(None);
    }
    let path = dir.join(storage_format::image::base_image_file_name(
        manifest.base_image_seq,
    ));
    let image = crate::image::read_image(&path)?;
    let h = &image.header;
    if h.revision != manifest.horizon_revision
        || h.hash != manifest.horizon_hash
        || h.timestamp_us != manifest.horizon_timestamp_us
        || h.history_id != manifest.history_id
    {
        return Err(StoreError::BaseImage {
            path,
            reason: format!(
                "holds revision {} of history {}, the MANIFEST's horizon is revision {}",
                h.revision,
                storage_format::hex(&h.history_id),
                manifest.horizon_revision
            ),
        });
    }
    Ok(Some(Arc::new(image)))
}

fn check_key(key: &str) -> Result<(), ReadError> {
    validate_key(key).map_err(|source| ReadError::InvalidKey {
        key: key.to_owned(),
        source,
    })
}

fn check_limit(limit: usize) -> Result<(), ReadError> {
    if limit == 0 || limit > PAGE_ITEMS_MAX {
        return Err(ReadError::Invalid(format!(
            "limit must be between 1 and {PAGE_ITEMS_MAX}"
        )));
    }
    Ok(())
}
