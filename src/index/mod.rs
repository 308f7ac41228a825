//! The read indexes: derived from the log, persisted under `index/`, memory-mapped, and rebuilt
//! (with a warning) whenever they are missing or inconsistent. FORMAT.md "Index files" has the
//! layouts; `storage-format/src/index.rs` the codecs.
//!
//! Invariants:
//! - entries up to the checkpoint are in the files and mapped; they point only into sealed
//!   segments, so their values are read from segment mmaps. Entries after it (the active
//!   segment's) are in memory with their values;
//! - a mapped file is never truncated or rewritten while mapped (truncation to the checkpoint
//!   happens at open, before mapping);
//! - `through_revision` never passes the log's durable head: entries are added by the log's
//!   observer after a batch's fsync and before the batch becomes visible;
//! - every key with entries in the files has a block in the version directory (`dirs-G.idx`)
//!   covering exactly those entries; a point read that gets past the in-memory entries searches
//!   that block instead of descending through the files (FORMAT.md "Version directory");
//! - every entry read is CRC-checked; a damaged one fails the read with `IndexError::Corrupt`,
//!   and the store rebuilds the index.

mod files;
mod maps;
mod state;
mod table;

pub use maps::SegmentMaps;
pub use state::{Horizon, State};
pub(crate) use state::*;


use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use parking_lot::RwLock;
use storage_format::index::{
    DELETE_FLAG, NO_ENTRY, VersionEntry,
};
use storage_format::segment::{SEGMENT_DIR, segment_file_name};
use storage_format::{DecodeError, HistoryId};
use thiserror::Error;

use crate::image::Image;
use crate::log::{DurableCommit, Log, LogError, LogObserver, SegmentMeta};

#[derive(Debug, Error)]
pub enum IndexError {
    #[error("index damaged ({what}): {source}")]
    Corrupt {
        what: &'static str,
        source: DecodeError,
    },
    #[error("index is inconsistent with the log: {0}")]
    Inconsistent(String),
    #[error("index I/O on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Log(#[from] LogError),
}

/// The result of a descent: the entry index and the entry, or `None` when the key has no
/// version within the bound.
pub(crate) type Found = Option<(u64, VersionEntry)>;

/// Base image entries checked per hold of the read lock when a compaction installs one.
const BASE_CHECK_CHUNK: usize = 1024;

/// Placeholder head of a key being created (replaced before the state is unlocked).
const NO_HEAD: VersionEntry = VersionEntry {
    revision: 0,
    timestamp_us: 0,
    create_revision: 0,
    parent: NO_ENTRY,
    jump: NO_ENTRY,
    jump_revision: 0,
    jump_timestamp_us: 0,
    depth: 0,
    key_id: 0,
    version: 0,
    segment_seq: 0,
    value_offset: 0,
    value_len: DELETE_FLAG,
};

/// A bound on a point read: the newest version at or before a revision, or a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    Revision(u64),
    Time(u64),
}

impl Bound {
    fn admits(self, revision: u64, timestamp_us: u64) -> bool {
        match self {
            Bound::Revision(r) => revision <= r,
            Bound::Time(t) => timestamp_us <= t,
        }
    }
}

/// The bytes of a value: from a segment mapping or from memory, without copying.
#[derive(Clone)]
pub enum ValueBytes {
    Shared(Arc<[u8]>),
    Mapped {
        map: Arc<Mmap>,
        offset: usize,
        len: usize,
    },
}

impl ValueBytes {
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            ValueBytes::Shared(bytes) => bytes,
            ValueBytes::Mapped { map, offset, len } => &map[*offset..*offset + *len],
        }
    }
}

impl std::fmt::Debug for ValueBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", String::from_utf8_lossy(self.as_bytes()))
    }
}

/// The checkpoint pipeline. A roll prepares its checkpoint under the log's writer lock (so the
/// in-memory tail holds exactly the sealed segment's entries) and, when a finisher thread serves
/// the index, hands it over: planning the directory blocks, writing and syncing the files and
/// installing them happen while writers go on.
#[derive(Default)]
struct Checkpoints {
    /// A checkpoint is between prepare and install (the next one waits for it).
    in_flight: bool,
    /// Prepared by a roll, waiting for the finisher.
    queued: Option<(files::Prepared, u64)>,
    /// A finisher thread serves this index.
    finisher: bool,
    /// The finisher is asked to finish what is queued and stop.
    stop: bool,
}

/// Marks the state it holds broken if dropped by a panic: a panic in the middle of changing the
/// state (a checkpoint's install) may have left it half changed, so the next read or write
/// rebuilds the index from the log instead of serving it.
struct BrokenOnPanic<'a>(&'a mut State);

impl Drop for BrokenOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let reason = "an index checkpoint panicked while installing".to_owned();
            tracing::error!("{reason}; the index will be rebuilt from the log");
            self.0.broken = Some(reason);
        }
    }
}

/// A checkpoint in flight; dropping it ends it.
struct InFlight<'a>(&'a Index);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.end_checkpoint();
    }
}

/// The index of one store: state behind a lock, the files, and the segment mappings.
pub struct Index {
    dir: PathBuf,
    /// The file system checkpoints are written through (the log's).
    fs: Arc<dyn crate::fs::Fs>,
    history_id: HistoryId,
    state: RwLock<State>,
    segments: SegmentMaps,
    /// `LogConfig::reread_sealed_segments`: the finisher reads each segment a roll sealed back.
    reread_sealed: bool,
    /// Bytes of sealed segments read back since open.
    reread_bytes: std::sync::atomic::AtomicU64,
    /// The base image at the compaction horizon, if the store has one (a rebuild seeds from it).
    base: RwLock<Option<Arc<Image>>>,
    /// Checkpoints in flight and queued (one at a time, from prepare to install).
    checkpoints: parking_lot::Mutex<Checkpoints>,
    checkpoints_changed: parking_lot::Condvar,
    /// When a roll deferred its checkpoint (Unix µs; 0: none owed). At most one roll defers:
    /// the next roll checkpoints whatever it was asked, and the store's housekeeping pays a debt
    /// older than `CHECKPOINT_DEBT_MAX_US` itself, so the in-memory tail and the work of an open
    /// after a crash stay bounded.
    checkpoint_owed_since_us: std::sync::atomic::AtomicU64,
    /// `through_revision` of the last checkpoint written (for tests and status).
    checkpointed_through: std::sync::atomic::AtomicU64,
    /// Rebuilds since open.
    rebuilds: std::sync::atomic::AtomicU64,
    /// The newest revision readers can see, for watchers (tokio's watch channel never blocks the
    /// sender and keeps only the latest value).
    indexed: tokio::sync::watch::Sender<u64>,
}

impl Index {
    /// Opens the index of the store whose log is `log`: loads the checkpoint (rebuilding from the
    /// log, with a warning, when anything is missing or inconsistent), then indexes the commits
    /// after it. Reads O(keys) bytes and the commits after the last checkpoint — never the whole
    /// history — unless it has to rebuild.
    pub fn open(data_dir: &Path, log: &Log, base: Option<Arc<Image>>) -> Result<Index, IndexError> {
        let dir = data_dir.join(storage_format::index::INDEX_DIR);
        // No index directory at all: a new or restored store, or one whose index an operator
        // removed on purpose. Building it is expected, not a warning.
        let fresh = !dir.exists();
        std::fs::create_dir_all(&dir).map_err(|source| IndexError::Io {
            path: dir.clone(),
            source,
        })?;
        let first_revision = log.segments()[0].first_revision;
        let head = log.head().revision;
        let loaded =
            files::load(&dir, &log.history_id(), first_revision, head).and_then(|mut s| {
                if let Some(image) = &base {
                    s.install_base(image).map_err(|e| e.to_string())?;
                }
                Ok(s)
            });
        let state = match loaded {
            Ok(state) => state,
            Err(reason) => {
                if head > 0 && fresh {
                    tracing::info!(dir = %dir.display(), "building the index from the log (no index directory yet)");
                } else if head > 0 {
                    tracing::warn!(%reason, dir = %dir.display(), "rebuilding the index from the log");
                }
                files::remove_all(&dir)?;
                let mut state = State::empty(first_revision);
                if let Some(image) = &base {
                    state.seed_base(image);
                }
                state
            }
        };
        let index = Index {
            dir,
            fs: log.fs().clone(),
            history_id: log.history_id(),
            state: RwLock::new(state),
            segments: SegmentMaps::new(data_dir),
            reread_sealed: log.config().reread_sealed_segments,
            reread_bytes: Default::default(),
            base: RwLock::new(base),
            checkpoints: Default::default(),
            checkpoints_changed: Default::default(),
            checkpoint_owed_since_us: Default::default(),
            checkpointed_through: Default::default(),
            rebuilds: Default::default(),
            indexed: tokio::sync::watch::Sender::new(head),
        };
        match index.catch_up(log) {
            Err(IndexError::Corrupt { .. } | IndexError::Inconsistent(_)) => index.rebuild(log)?,
            other => other?,
        }
        Ok(index)
    }

    /// Indexes every durable commit after `through_revision`, checkpointing after each sealed
    /// segment so entries in files only ever point into sealed segments.
    fn catch_up(&self, log: &Log) -> Result<(), IndexError> {
        let mut state = self.state.write();
        self.catch_up_locked(&mut state, log)
    }

    /// `catch_up` under a held lock. Commits the log makes durable meanwhile wait in
    /// `on_durable` for the lock; the log publishes a batch's segment length only after that, so
    /// the scan here never sees a commit twice.
    fn catch_up_locked(&self, state: &mut State, log: &Log) -> Result<(), IndexError> {
        for segment in log.segments() {
            let from = state.through_revision + 1;
            if segment.last_revision < from {
                continue;
            }
            let mut failure = None;
            log.for_each_commit(from, segment.last_revision, &mut |link| {
                if failure.is_none()
                    && let Err(e) =
                        state.apply(&link.payload.commit, link.segment_seq, link.record_offset)
                {
                    failure = Some(e);
                }
            })?;
            if let Some(e) = failure {
                return Err(e);
            }
            if segment.sealed {
                files::checkpoint(&*self.fs, &self.dir, &self.history_id, state)?;
            }
        }
        Ok(())
    }

    /// Waits until no checkpoint is in flight, then marks one in flight until the guard is
    /// dropped (also when unwinding, so a panic cannot leave later checkpoints waiting).
    fn begin_checkpoint(&self) -> InFlight<'_> {
        self.idle_checkpoints().in_flight = true;
        InFlight(self)
    }

    /// The pipeline's state once no checkpoint is in flight (or queued).
    fn idle_checkpoints(&self) -> parking_lot::MutexGuard<'_, Checkpoints> {
        let mut c = self.checkpoints.lock();
        while c.in_flight {
            self.checkpoints_changed.wait(&mut c);
        }
        c
    }

    fn end_checkpoint(&self) {
        self.checkpoints.lock().in_flight = false;
        self.checkpoints_changed.notify_all();
    }

    /// `finish_checkpoint`, a failure or a panic owing the checkpoint again.
    fn finish_or_owe(&self, prepared: files::Prepared) {
        let through = prepared.through_revision();
        let finished = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.finish_checkpoint(prepared)
        }));
        let error = match finished {
            Ok(Ok(())) => return,
            Ok(Err(error)) => error,
            Err(_) => IndexError::Inconsistent("the checkpoint panicked".into()),
        };
        self.owe_checkpoint(&error, through);
    }

    /// Waits until no checkpoint is in flight or queued.
    pub fn wait_checkpoints(&self) {
        drop(self.idle_checkpoints());
    }

    /// Writes the in-memory entries to the files, then the checkpoint, then maps them, on the
    /// calling thread. The writes and fsyncs happen with no lock on the state (readers go on);
    /// only the remap at the end takes the write lock. Checkpoints are serialized among
    /// themselves.
    pub fn checkpoint(&self) -> Result<(), IndexError> {
        let _in_flight = self.begin_checkpoint();
        // The read guard must be gone before the install takes the write lock.
        let prepared = files::prepare(&self.history_id, &self.state.read());
        let result = prepared.and_then(|prepared| self.finish_checkpoint(prepared));
        if result.is_ok() {
            self.checkpoint_owed_since_us
                .store(0, std::sync::atomic::Ordering::SeqCst);
        }
        result
    }

    /// A roll's checkpoint failed after its debt was cleared: owe it again, so the store's
    /// housekeeping retries it (as for a deferral) if no roll comes first.
    fn owe_checkpoint(&self, error: &IndexError, through: u64) {
        tracing::warn!(%error, through, "index checkpoint failed; entries stay in memory");
        let _ = self.checkpoint_owed_since_us.compare_exchange(
            0,
            crate::clock::now_us().max(1),
            std::sync::atomic::Ordering::SeqCst,
            std::sync::atomic::Ordering::SeqCst,
        );
    }

    /// Plans, writes and installs a prepared checkpoint (one is in flight: `begin_checkpoint`).
    fn finish_checkpoint(&self, mut prepared: files::Prepared) -> Result<(), IndexError> {
        let started = std::time::Instant::now();
        crate::fault::panic_point("index.checkpoint.write");
        files::plan_dirs(&mut prepared)?;
        let planned_at = started.elapsed();
        files::write(&*self.fs, &self.dir, &self.history_id, &prepared)?;
        let written_at = started.elapsed();
        let through = prepared.through_revision();
        let summary = prepared.summary();
        let mut state = self.state.write();
        let installing = BrokenOnPanic(&mut state);
        crate::fault::panic_point("index.checkpoint.install");
        files::install(&self.dir, &self.history_id, installing.0, prepared)?;
        drop(installing);
        drop(state);
        tracing::debug!(
            through,
            %summary,
            plan_ms = planned_at.as_secs_f64() * 1e3,
            write_ms = (written_at - planned_at).as_secs_f64() * 1e3,
            install_ms = (started.elapsed() - written_at).as_secs_f64() * 1e3,
            "index checkpoint"
        );
        self.checkpointed_through
            .store(through, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    /// A roll's checkpoint: prepared here, under the log's writer lock; finished by the finisher
    /// thread if one serves the index, else here.
    fn checkpoint_at_roll(&self, segment: u64) {
        let started = std::time::Instant::now();
        let in_flight = self.begin_checkpoint();
        let waited = started.elapsed();
        let prepared = match files::prepare(&self.history_id, &self.state.read()) {
            Ok(prepared) => {
                tracing::debug!(
                    segment,
                    wait_ms = waited.as_secs_f64() * 1e3,
                    prepare_ms = (started.elapsed() - waited).as_secs_f64() * 1e3,
                    "index checkpoint prepared at a roll"
                );
                prepared
            }
            Err(error) => {
                tracing::warn!(%error, segment, "index checkpoint failed; entries stay in memory");
                return;
            }
        };
        // Whatever a deferral owed is in this checkpoint.
        self.checkpoint_owed_since_us
            .store(0, std::sync::atomic::Ordering::SeqCst);
        let mut c = self.checkpoints.lock();
        if c.finisher && !c.stop {
            c.queued = Some((prepared, segment));
            drop(c);
            // Still in flight: the finisher ends it.
            std::mem::forget(in_flight);
            self.checkpoints_changed.notify_all();
            return;
        }
        drop(c);
        self.finish_or_owe(prepared);
    }

    /// The finisher: finishes the checkpoints rolls prepare, until `stop_finisher`. Run on a
    /// thread of its own (the store starts one); rolls finish their checkpoints themselves
    /// before it starts and after it stops.
    pub fn run_finisher(&self) {
        self.checkpoints.lock().finisher = true;
        loop {
            let mut c = self.checkpoints.lock();
            while c.queued.is_none() && !c.stop {
                self.checkpoints_changed.wait(&mut c);
            }
            let Some((prepared, segment)) = c.queued.take() else {
                c.finisher = false;
                return;
            };
            drop(c);
            {
                // The roll that queued it left it in flight.
                let _in_flight = InFlight(self);
                self.finish_or_owe(prepared);
            }
            self.reread_sealed(segment);
        }
    }

    /// `SegmentMaps::reread` of a segment a roll sealed, if configured and the store is not
    /// closing.
    fn reread_sealed(&self, segment: u64) {
        if !self.reread_sealed || self.checkpoints.lock().stop {
            return;
        }
        let started = std::time::Instant::now();
        match self.segments.reread(segment) {
            Ok(bytes) => {
                self.reread_bytes
                    .fetch_add(bytes, std::sync::atomic::Ordering::SeqCst);
                tracing::debug!(
                    segment,
                    bytes,
                    ms = started.elapsed().as_secs_f64() * 1e3,
                    "sealed segment read back into the page cache"
                )
            }
            Err(error) => tracing::debug!(%error, segment, "reading a sealed segment back failed"),
        }
    }

    /// Rebuilds of the index since open.
    pub fn rebuilds(&self) -> u64 {
        self.rebuilds.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Bytes of sealed segments read back into the page cache since open (`reread_sealed`).
    pub fn reread_bytes(&self) -> u64 {
        self.reread_bytes.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Asks the finisher to finish what is queued and return.
    pub fn stop_finisher(&self) {
        self.checkpoints.lock().stop = true;
        self.checkpoints_changed.notify_all();
    }

    /// Since when a checkpoint is owed by a roll that deferred it (Unix µs), if one is.
    pub fn checkpoint_owed_since_us(&self) -> Option<u64> {
        match self
            .checkpoint_owed_since_us
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            0 => None,
            t => Some(t),
        }
    }

    /// A deferred checkpoint could not be written: try again in a while rather than at once.
    pub fn postpone_checkpoint_debt(&self) {
        if self.checkpoint_owed_since_us().is_some() {
            self.checkpoint_owed_since_us.store(
                crate::clock::now_us().max(1),
                std::sync::atomic::Ordering::SeqCst,
            );
        }
    }

    /// `through_revision` of the last checkpoint this process wrote (0: none yet).
    pub fn checkpointed_through(&self) -> u64 {
        self.checkpointed_through
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Drops everything and indexes the whole log again, holding the lock throughout.
    pub fn rebuild(&self, log: &Log) -> Result<(), IndexError> {
        tracing::warn!(dir = %self.dir.display(), "rebuilding the index from the log");
        // No checkpoint may be writing the files meanwhile: one in flight finishes first.
        let _in_flight = self.begin_checkpoint();
        let mut state = self.state.write();
        self.rebuilds
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        *state = State::empty(log.segments()[0].first_revision);
        if let Some(image) = &*self.base.read() {
            state.seed_base(image);
        }
        files::remove_all(&self.dir)?;
        self.catch_up_locked(&mut state, log)
    }

    /// Switches to a new base image at a new horizon (compaction), after the entries up to it
    /// were indexed. Reads before the horizon fail from now on; values at or before it come from
    /// the image.
    /// On failure the image is still recorded, so the `rebuild` the caller then runs seeds from it.
    pub fn set_base(&self, image: Arc<Image>) -> Result<(), IndexError> {
        *self.base.write() = Some(image.clone());
        // Checked under the read lock (O(keys × log versions)); only the swap takes the write
        // lock, so readers and writers wait for a swap, not for the check. A rebuild in between
        // (new key ids) is detected by its count.
        let rebuilds = self.rebuilds.load(std::sync::atomic::Ordering::SeqCst);
        // In chunks, each under its own hold of the read lock: a writer waiting for the write
        // lock holds back new readers, so no hold may be long.
        let mut values = HashMap::with_capacity(image.entries.len());
        for chunk in image.entries.chunks(BASE_CHECK_CHUNK) {
            self.state
                .read()
                .base_values_into(image.header.revision, chunk, &mut values)?;
        }
        let mut state = self.state.write();
        if self.rebuilds.load(std::sync::atomic::Ordering::SeqCst) != rebuilds {
            return Err(IndexError::Inconsistent(
                "the index was rebuilt while the base image was checked".into(),
            ));
        }
        state.set_base_values(&image, values);
        Ok(())
    }

    /// Forgets the mappings of segments below `first_live` (dropped by a compaction).
    pub fn forget_segments_below(&self, first_live: u64) {
        // Taken out under the lock, unmapped after it (munmap of a large mapping takes a while,
        // and every read of a value takes this lock).
        let old: Vec<Arc<Mmap>> = {
            let mut maps = self.segments.maps.write();
            maps.iter_mut()
                .take(first_live as usize)
                .filter_map(Option::take)
                .collect()
        };
        drop(old);
    }

    /// Runs `read` with the state under the read lock.
    /// Follows the newest indexed (so readable) revision.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.indexed.subscribe()
    }

    pub fn read<T>(&self, read: impl FnOnce(&State, &SegmentMaps) -> T) -> T {
        read(&self.state.read(), &self.segments)
    }
}

impl LogObserver for Index {
    fn on_durable(&self, commits: &[DurableCommit<'_>]) {
        let mut state = self.state.write();
        for c in commits {
            if state.broken.is_some() {
                break;
            }
            if let Err(error) = state.apply(c.commit, c.segment_seq, c.record_offset) {
                // Only a damaged mapped entry can fail here; reads see `broken` and rebuild.
                tracing::error!(%error, revision = c.commit.revision, "indexing a commit failed");
                state.broken = Some(format!(
                    "indexing revision {} failed: {error}",
                    c.commit.revision
                ));
            }
        }
        let through = state.through_revision;
        drop(state);
        self.indexed.send_replace(through);
    }

    fn on_sealed(&self, sealed: &SegmentMeta, checkpoint: bool) {
        // Deferred: the sealed segment's entries stay in the in-memory tail, and the next
        // checkpoint covers them — at the next roll (when they and everything after are sealed),
        // or by the store's housekeeping while the active segment holds no commit. Entries in
        // the files must point into sealed segments only, so a checkpoint never runs while the
        // active segment holds indexed commits.
        if !checkpoint
            && self
                .checkpoint_owed_since_us
                .compare_exchange(
                    0,
                    crate::clock::now_us().max(1),
                    std::sync::atomic::Ordering::SeqCst,
                    std::sync::atomic::Ordering::SeqCst,
                )
                .is_ok()
        {
            // The first deferral: owed from now. A second one in a row checkpoints below.
            return;
        }
        self.checkpoint_at_roll(sealed.seq);
    }
}
