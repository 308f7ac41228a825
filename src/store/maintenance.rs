//! Snapshots and compaction: the store's state at a revision written as an image (FORMAT.md
//! "Images"), on demand or on a schedule, and the horizon moved forward over sealed segments
//! (FORMAT.md "Compacting").
//!
//! Invariants:
//! - one snapshot or compaction runs at a time (`lock`);
//! - an image is built from the index in chunks of `CHUNK_KEYS` keys, each under the index's read
//!   lock only for that chunk, so writers (which take the write lock once per batch) wait at most
//!   one chunk; its writing is paced to `io_bytes_per_sec`;
//! - compaction switches the live set with one MANIFEST rename, after the base image is durable,
//!   and removes files only after the switch; a crash at any step leaves the old or the new set;
//! - the horizon is always the last revision of a sealed segment: segments are dropped whole,
//!   never rewritten.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use storage_format::commit::CommitKind;
use storage_format::image::{
    CORRUPT_SUFFIX, ImageEntry, ImageFooter, ImageHeader, ImageKind, SNAPSHOT_DIR,
    base_image_file_name, check_image_frame, parse_snapshot_file_name, snapshot_file_name,
};
use storage_format::{FormatVersion, Hash, hex};
use thiserror::Error;

use crate::clock::Clock;
use crate::fault::crash_point;
use crate::fs::Fs;
use crate::image::{ImageError, ImageWriter, read_image};
use crate::index::{Bound, Index, IndexError};
use crate::log::{CommitRequest, Head, Log, LogError};

/// Keys examined per hold of the index's read lock while an image is built.
const CHUNK_KEYS: usize = 1024;
/// Snapshots kept, at most (the setting's upper bound).
pub const SNAPSHOT_KEEP_MAX: usize = 100;

/// When snapshots are taken and how long history is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaintenanceConfig {
    /// A snapshot is taken once this many commits followed the last one. 0: never by count.
    pub snapshot_every_commits: u64,
    /// A snapshot is taken once the last one is this old and commits followed it. 0: never by
    /// time.
    pub snapshot_every_us: u64,
    /// Snapshots kept, at most, spread over the history (the newest and the oldest always; see
    /// `thin`). 1 to 100.
    pub snapshot_keep: usize,
    /// Automatic compaction keeps this much history. `None`: never compact automatically.
    pub retain_us: Option<u64>,
    /// How often automatic compaction runs.
    pub compaction_every_us: u64,
    /// Image writing (snapshots, base images) and the scrub are paced to this rate. 0: unpaced.
    pub io_bytes_per_sec: u64,
    /// The background scrub re-reads every sealed segment (record CRCs, seal) once per this
    /// period; the first pass starts `SCRUB_FIRST_DELAY_US` (or this, if shorter) after open.
    /// 0: never.
    pub scrub_every_us: u64,
}

/// The first scrub pass waits this long after open (so a start is not followed by a full read of
/// the log at once).
pub const SCRUB_FIRST_DELAY_US: u64 = 600 * 1_000_000;

impl MaintenanceConfig {
    /// Nothing automatic: snapshots and compactions only when asked for (the library's default
    /// for `Store::open`; the server passes its configuration).
    pub fn manual() -> MaintenanceConfig {
        MaintenanceConfig {
            snapshot_every_commits: 0,
            snapshot_every_us: 0,
            retain_us: None,
            scrub_every_us: 0,
            ..MaintenanceConfig::default()
        }
    }
}

impl Default for MaintenanceConfig {
    fn default() -> Self {
        MaintenanceConfig {
            snapshot_every_commits: 100_000,
            snapshot_every_us: 3600 * 1_000_000,
            snapshot_keep: 8,
            retain_us: None,
            compaction_every_us: 3600 * 1_000_000,
            io_bytes_per_sec: 256 << 20,
            scrub_every_us: 86_400 * 1_000_000,
        }
    }
}

#[derive(Debug, Error)]
pub enum MaintenanceError {
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("the store is read-only: {0}")]
    ReadOnly(String),
    #[error("{0}")]
    Invalid(String),
}

/// A snapshot on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub revision: u64,
    pub timestamp_us: u64,
    pub hash: Hash,
    pub keys: u64,
    pub bytes: u64,
    pub created_unix_us: u64,
    pub path: PathBuf,
    /// Whether its whole content was checked (SHA-256 and every block) since open.
    pub checked: bool,
}

/// What one compaction did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactionOutcome {
    pub horizon: Head,
    pub previous_horizon: u64,
    pub segments_dropped: usize,
    /// Bytes of the dropped segments, the previous base image and snapshots before the horizon.
    pub bytes_reclaimed: u64,
    pub base_image_bytes: u64,
    pub keys: u64,
    pub duration_us: u64,
    /// Revision of the `compaction` commit that records it.
    pub commit_revision: u64,
}

/// The background scrub's progress and findings.
#[derive(Debug, Default)]
struct Scrub {
    opened_us: u64,
    /// The running pass: when it started and the next segment to check. `None`: between passes.
    pass: Option<(u64, u64)>,
    /// When the last full pass finished (0: none yet).
    last_pass_us: u64,
    passes: u64,
    /// Damage found, by segment sequence number (removed when the segment checks good again or
    /// is dropped by compaction).
    damage: std::collections::BTreeMap<u64, String>,
}

/// What the scrub has found (status, health, metrics).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScrubStatus {
    /// When the last full pass over the sealed segments finished (0: none yet).
    pub last_pass_us: u64,
    pub passes: u64,
    /// Whether a pass is running now.
    pub running: bool,
    /// One line per damaged segment: file, offset, revision and what is wrong.
    pub damage: Vec<String>,
}

#[derive(Debug, Default)]
struct Counters {
    snapshots: AtomicU64,
    snapshot_failures: AtomicU64,
    compactions: AtomicU64,
    bytes_reclaimed: AtomicU64,
}

/// Counters since open, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MaintenanceStats {
    pub snapshots: u64,
    pub snapshot_failures: u64,
    pub compactions: u64,
    pub bytes_reclaimed: u64,
}

pub(crate) struct Maintenance {
    log: Arc<Log>,
    index: Arc<Index>,
    clock: Arc<dyn Clock>,
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    config: RwLock<MaintenanceConfig>,
    lock: Mutex<()>,
    /// Snapshots on disk, oldest first.
    snapshots: Mutex<Vec<SnapshotInfo>>,
    last_compaction: Mutex<Option<CompactionOutcome>>,
    last_compaction_run_us: AtomicU64,
    counters: Counters,
    /// Set when the store closes: an image being written stops at its next chunk.
    cancelled: std::sync::atomic::AtomicBool,
    /// With backup repositories configured: the newest revision safe in one of them (0 if
    /// none yet). Compaction never passes it. `None`: no repositories, no limit.
    backup_safe: Mutex<Option<u64>>,
    scrub: Mutex<Scrub>,
}

impl Maintenance {
    /// Lists the snapshots (header and footer of each, O(1) per file), removing temporary files.
    /// Whole-content checks happen later, off the open path (`check_snapshots`).
    pub fn open(
        log: Arc<Log>,
        index: Arc<Index>,
        clock: Arc<dyn Clock>,
        dir: &Path,
        config: MaintenanceConfig,
    ) -> Result<Maintenance, MaintenanceError> {
        let fs = log.fs().clone();
        let snap_dir = dir.join(SNAPSHOT_DIR);
        fs.create_dir_all(&snap_dir)
            .map_err(|source| ImageError::Io {
                op: "create directory",
                path: snap_dir.clone(),
                source,
            })?;
        let mut snapshots = Vec::new();
        for name in list(&*fs, &snap_dir)? {
            let path = snap_dir.join(&name);
            if name.ends_with(storage_format::segment::TEMP_SUFFIX) {
                tracing::warn!(file = %path.display(), "removing an unfinished snapshot");
                let _ = fs.remove_file(&path);
                continue;
            }
            let Some(revision) = parse_snapshot_file_name(&name) else {
                continue;
            };
            match frame(&path) {
                Ok((header, footer, bytes))
                    if header.revision == revision && header.history_id == log.history_id() =>
                {
                    snapshots.push(SnapshotInfo {
                        revision,
                        timestamp_us: header.timestamp_us,
                        hash: header.hash,
                        keys: footer.key_count,
                        bytes,
                        created_unix_us: header.created_unix_us,
                        path,
                        checked: false,
                    })
                }
                Ok(_) => set_aside(&*fs, &path, "its header names another revision or history"),
                Err(e) => set_aside(&*fs, &path, &e.to_string()),
            }
        }
        snapshots.sort_by_key(|s| s.revision);
        Ok(Maintenance {
            log,
            index,
            clock,
            fs,
            dir: dir.to_path_buf(),
            config: RwLock::new(config),
            lock: Mutex::new(()),
            snapshots: Mutex::new(snapshots),
            last_compaction: Mutex::new(None),
            last_compaction_run_us: AtomicU64::new(0),
            counters: Counters::default(),
            cancelled: Default::default(),
            backup_safe: Mutex::new(None),
            scrub: Mutex::new(Scrub {
                opened_us: crate::clock::now_us(),
                ..Scrub::default()
            }),
        })
    }

    /// Makes an image being written stop at its next chunk (leaving only its `.tmp`), so closing
    /// the store does not wait for a long snapshot or compaction.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
    }

    /// Sets the newest revision safe in a backup repository (`None`: no repositories).
    pub fn set_backup_safe(&self, revision: Option<u64>) {
        *self.backup_safe.lock() = revision;
    }

    pub fn backup_safe(&self) -> Option<u64> {
        *self.backup_safe.lock()
    }

    pub fn set_config(&self, config: MaintenanceConfig) {
        *self.config.write() = config;
    }

    pub fn config(&self) -> MaintenanceConfig {
        self.config.read().clone()
    }

    pub fn snapshots(&self) -> Vec<SnapshotInfo> {
        self.snapshots.lock().clone()
    }

    pub fn last_compaction(&self) -> Option<CompactionOutcome> {
        self.last_compaction.lock().clone()
    }

    pub fn stats(&self) -> MaintenanceStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MaintenanceStats {
            snapshots: get(&self.counters.snapshots),
            snapshot_failures: get(&self.counters.snapshot_failures),
            compactions: get(&self.counters.compactions),
            bytes_reclaimed: get(&self.counters.bytes_reclaimed),
        }
    }

    /// Checks the snapshots whole, newest first, until one passes: a damaged one is reported and
    /// set aside (renamed `*.corrupt`), and the next older one checked instead.
    pub fn check_snapshots(&self) {
        let _guard = self.lock.lock();
        loop {
            let Some(newest) = self
                .snapshots
                .lock()
                .iter()
                .rev()
                .find(|s| !s.checked)
                .cloned()
            else {
                return;
            };
            match read_image(&newest.path) {
                Ok(image) if image.header.revision == newest.revision => {
                    for s in self.snapshots.lock().iter_mut() {
                        if s.revision == newest.revision {
                            s.checked = true;
                        }
                    }
                    return;
                }
                outcome => {
                    let reason = match outcome {
                        Err(e) => e.to_string(),
                        Ok(_) => "its header changed while it was read".to_owned(),
                    };
                    set_aside(&*self.fs, &newest.path, &reason);
                    self.snapshots
                        .lock()
                        .retain(|s| s.revision != newest.revision);
                }
            }
        }
    }

    /// The periodic work: a snapshot when one is due, a compaction when retention is set and
    /// its interval passed. Errors are logged (the next tick tries again).
    pub fn tick(&self) {
        let config = self.config();
        let now = self.clock.now_us();
        let head = self.log.head().revision;
        let newest = self.snapshots.lock().last().cloned();
        let (since_rev, since_us) = newest
            .as_ref()
            .map_or((0, 0), |s| (s.revision, s.created_unix_us));
        let behind = head.saturating_sub(since_rev);
        let due = behind > 0
            && ((config.snapshot_every_commits > 0 && behind >= config.snapshot_every_commits)
                || (config.snapshot_every_us > 0
                    && now.saturating_sub(since_us) >= config.snapshot_every_us));
        if due && let Err(error) = self.snapshot() {
            tracing::warn!(%error, "scheduled snapshot failed");
        }
        if let Some(retain_us) = config.retain_us {
            let last = self.last_compaction_run_us.load(Ordering::Relaxed);
            if now.saturating_sub(last) >= config.compaction_every_us {
                self.last_compaction_run_us.store(now, Ordering::Relaxed);
                match self.compact(retain_us, "llmcm", "retention policy") {
                    Ok(Some(outcome)) => tracing::info!(
                        horizon = outcome.horizon.revision,
                        bytes_reclaimed = outcome.bytes_reclaimed,
                        "scheduled compaction done"
                    ),
                    Ok(None) => {}
                    Err(error) => tracing::warn!(%error, "scheduled compaction failed"),
                }
            }
        }
        self.scrub_step(&config);
    }

    /// One step of the background scrub: starts a pass when one is due, else checks the next
    /// sealed segment of the running pass (one segment per step, paced by `io_bytes_per_sec`).
    /// A damaged segment is logged once and reported until it checks good or is compacted away;
    /// nothing is changed on disk.
    pub fn scrub_step(&self, config: &MaintenanceConfig) {
        if config.scrub_every_us == 0 {
            return;
        }
        let now = crate::clock::now_us();
        let next_seq = {
            let mut scrub = self.scrub.lock();
            match scrub.pass {
                Some((_, next)) => next,
                None => {
                    let due_from = if scrub.last_pass_us == 0 {
                        scrub.opened_us + SCRUB_FIRST_DELAY_US.min(config.scrub_every_us)
                    } else {
                        scrub.last_pass_us + config.scrub_every_us
                    };
                    if now < due_from {
                        return;
                    }
                    scrub.pass = Some((now, 0));
                    0
                }
            }
        };
        let segments = self.log.segments();
        let Some(segment) = segments.iter().find(|s| s.sealed && s.seq >= next_seq) else {
            // The pass is over: forget damage in segments that no longer exist.
            let mut scrub = self.scrub.lock();
            scrub.pass = None;
            scrub.last_pass_us = now;
            scrub.passes += 1;
            scrub
                .damage
                .retain(|seq, _| segments.iter().any(|s| s.seq == *seq));
            tracing::debug!(passes = scrub.passes, "scrub pass done");
            return;
        };
        let rel = format!(
            "{}/{}",
            storage_format::segment::SEGMENT_DIR,
            storage_format::segment::segment_file_name(segment.seq)
        );
        let finding = match self.fs.read(&segment.path) {
            // Dropped by a compaction since the list was taken: nothing to check.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => Some(format!("{rel}: cannot be read: {e}")),
            Ok(bytes) => {
                let problem = match storage_format::scan::scan_segment(
                    &bytes,
                    storage_format::scan::TailPolicy::Strict,
                    &mut |_, _| {},
                ) {
                    Ok(o) if matches!(o.end, storage_format::scan::ScanEnd::Sealed(_)) => None,
                    Ok(_) => Some(format!("{rel}: a sealed segment without a valid seal")),
                    Err(e) => Some(format!(
                        "{rel}: corruption at offset {} (revision {}): {}",
                        e.offset, e.revision, e.kind
                    )),
                };
                if config.io_bytes_per_sec > 0 {
                    let pace = Duration::from_secs_f64(
                        bytes.len() as f64 / config.io_bytes_per_sec as f64,
                    );
                    std::thread::sleep(pace.min(Duration::from_secs(1)));
                }
                problem
            }
        };
        let mut scrub = self.scrub.lock();
        match finding {
            Some(message) => {
                if scrub.damage.get(&segment.seq) != Some(&message) {
                    tracing::error!(%message, "scrub found damage in a sealed segment; see `llmcm verify` and docs/operations");
                }
                scrub.damage.insert(segment.seq, message);
            }
            None => {
                scrub.damage.remove(&segment.seq);
            }
        }
        if let Some((_, next)) = scrub.pass.as_mut() {
            *next = segment.seq + 1;
        }
    }

    /// What the background scrub has found.
    pub fn scrub_status(&self) -> ScrubStatus {
        let scrub = self.scrub.lock();
        ScrubStatus {
            last_pass_us: scrub.last_pass_us,
            passes: scrub.passes,
            running: scrub.pass.is_some(),
            damage: scrub.damage.values().cloned().collect(),
        }
    }

    /// Takes a snapshot of the state at the durable head (or returns the one already there).
    pub fn snapshot(&self) -> Result<SnapshotInfo, MaintenanceError> {
        let _guard = self.lock.lock();
        let head = self.log.head();
        if let Some(existing) = self
            .snapshots
            .lock()
            .iter()
            .find(|s| s.revision == head.revision)
        {
            return Ok(existing.clone());
        }
        let path = self
            .dir
            .join(SNAPSHOT_DIR)
            .join(snapshot_file_name(head.revision));
        let started = Instant::now();
        let written = self.write_state(head, &path, ImageKind::Snapshot);
        let (footer, bytes, created) = match written {
            Ok(w) => w,
            Err(e) => {
                self.counters
                    .snapshot_failures
                    .fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
        };
        let info = SnapshotInfo {
            revision: head.revision,
            timestamp_us: head.timestamp_us,
            hash: head.hash,
            keys: footer.key_count,
            bytes,
            created_unix_us: created,
            path,
            checked: true,
        };
        tracing::info!(
            revision = info.revision,
            keys = info.keys,
            bytes = info.bytes,
            ms = started.elapsed().as_millis() as u64,
            "snapshot taken"
        );
        self.counters.snapshots.fetch_add(1, Ordering::Relaxed);
        let keep = self.config.read().snapshot_keep;
        let mut snapshots = self.snapshots.lock();
        snapshots.push(info.clone());
        let old = thin(&mut snapshots, keep);
        drop(snapshots);
        self.remove_snapshots(&old)?;
        Ok(info)
    }

    fn remove_snapshots(&self, old: &[SnapshotInfo]) -> Result<(), MaintenanceError> {
        if old.is_empty() {
            return Ok(());
        }
        for s in old {
            self.fs
                .remove_file(&s.path)
                .map_err(|source| ImageError::Io {
                    op: "remove snapshot",
                    path: s.path.clone(),
                    source,
                })?;
        }
        let dir = self.dir.join(SNAPSHOT_DIR);
        self.fs.sync_dir(&dir).map_err(|source| ImageError::Io {
            op: "sync directory",
            path: dir,
            source,
        })?;
        Ok(())
    }

    /// Writes the state at `at` (the durable head, or a sealed segment's last revision) as an
    /// image, chunk by chunk from the index. Returns the footer, the file's length and the
    /// creation time recorded.
    fn write_state(
        &self,
        at: Head,
        path: &Path,
        kind: ImageKind,
    ) -> Result<(ImageFooter, u64, u64), MaintenanceError> {
        let created = self.clock.now_us();
        let header = ImageHeader {
            version: FormatVersion::CURRENT,
            history_id: self.log.history_id(),
            revision: at.revision,
            timestamp_us: at.timestamp_us,
            hash: at.hash,
            created_unix_us: created,
            kind,
        };
        let mut writer = ImageWriter::create(self.fs.clone(), path, header)?;
        let bound = Bound::Revision(at.revision);
        let pace = Pace::new(self.config.read().io_bytes_per_sec);
        let mut after: Option<Arc<str>> = None;
        loop {
            if self.cancelled.load(Ordering::SeqCst) {
                return Err(MaintenanceError::Invalid(
                    "cancelled: the store is closing".into(),
                ));
            }
            let (chunk, last) = self.index.read(|state, maps| {
                state.check_usable()?;
                if at.revision < state.horizon().revision {
                    return Err(IndexError::Inconsistent(format!(
                        "revision {} went below the compaction horizon while it was imaged",
                        at.revision
                    )));
                }
                let mut out = Vec::new();
                let mut last = None;
                let start = after.as_deref().unwrap_or("");
                for (key, id) in state
                    .keys_from(start)
                    .filter(|(k, _)| Some(&***k) != after.as_deref())
                    .take(CHUNK_KEYS)
                {
                    last = Some(key.clone());
                    if let Some((index, entry)) = state.lookup(id, bound)?
                        && !entry.is_delete()
                    {
                        out.push((key.clone(), entry, state.value(index, &entry, maps)?));
                    }
                }
                Ok::<_, IndexError>((out, last))
            })?;
            for (key, entry, value) in &chunk {
                writer.push(&ImageEntry {
                    key,
                    revision: entry.revision,
                    create_revision: entry.create_revision,
                    version: entry.version as u64,
                    timestamp_us: entry.timestamp_us,
                    value: value.as_bytes(),
                })?;
            }
            pace.wait(writer.raw_bytes());
            // Let readers and writers run between chunks (this machine may have 2 cores).
            std::thread::yield_now();
            match last {
                Some(last) => after = Some(last),
                None => break,
            }
        }
        crash_point("image:before-finish");
        let (footer, bytes) = writer.finish()?;
        Ok((footer, bytes, created))
    }

    /// Compacts history older than `retain_us` (DESIGN.md §2 "Retention"): rolls the active
    /// segment, takes as horizon H the last revision of the newest sealed segment whose commits
    /// are all older than the retention, writes the base image at H, switches the MANIFEST,
    /// removes the dropped files and records a `compaction` commit. `None` when no segment is old
    /// enough.
    pub fn compact(
        &self,
        retain_us: u64,
        actor: &str,
        reason: &str,
    ) -> Result<Option<CompactionOutcome>, MaintenanceError> {
        let _guard = self.lock.lock();
        if let Some(why) = self.log.read_only_reason() {
            return Err(MaintenanceError::ReadOnly(why));
        }
        let started = Instant::now();
        self.log.roll()?;
        let cutoff = self.clock.now_us().saturating_sub(retain_us);
        let previous = self.log.horizon();
        // With backup repositories, never past what one of them already holds.
        let safe = self.backup_safe().unwrap_or(u64::MAX);
        let mut horizon = None;
        for boundary in self.log.sealed_boundaries() {
            let timestamp = self
                .index
                .read(|state, _| state.rev(boundary))?
                .timestamp_us;
            if boundary > previous.revision && timestamp <= cutoff && boundary <= safe {
                horizon = Some((boundary, timestamp));
            }
        }
        let Some((revision, timestamp_us)) = horizon else {
            return Ok(None);
        };
        let at = Head {
            revision,
            timestamp_us,
            hash: self.log.hash_after_segment_ending_at(revision)?,
        };
        let base_seq = self.log.manifest().generation + 1;
        let base_path = self.dir.join(base_image_file_name(base_seq));
        let (footer, base_bytes, _) = self.write_state(at, &base_path, ImageKind::Base)?;
        crash_point("compaction:after-base-image");
        // Read back whole: what the index will serve is what is on disk.
        let image = Arc::new(read_image(&base_path)?);
        let switched = self.log.switch_horizon(at, base_seq)?;
        if let Err(error) = self.index.set_base(image) {
            tracing::error!(%error, "the index does not match the new base image; rebuilding it");
            self.index.rebuild(&self.log)?;
        }
        let old_base_bytes = switched
            .old_base
            .as_ref()
            .and_then(|p| self.fs.file_len(p).ok())
            .unwrap_or(0);
        self.log.remove_dropped(&switched)?;
        self.index
            .forget_segments_below(switched.first_live_segment_seq);
        let old_snapshots: Vec<SnapshotInfo> = {
            let mut snapshots = self.snapshots.lock();
            let keep_from = snapshots
                .iter()
                .position(|s| s.revision >= revision)
                .unwrap_or(snapshots.len());
            snapshots.drain(..keep_from).collect()
        };
        self.remove_snapshots(&old_snapshots)?;
        let bytes_reclaimed = switched.segment_bytes()
            + old_base_bytes
            + old_snapshots.iter().map(|s| s.bytes).sum::<u64>();
        crash_point("compaction:before-commit");
        let detail = serde_json::json!({
            "horizon_revision": revision,
            "horizon_hash": hex(&at.hash),
            "horizon_timestamp_us": timestamp_us,
            "previous_horizon_revision": previous.revision,
            "segments_dropped": switched.dropped.len(),
            "bytes_reclaimed": bytes_reclaimed,
            "base_image": base_image_file_name(base_seq),
            "retain_us": retain_us,
        });
        let commit = self.log.append(CommitRequest {
            kind: CommitKind::Compaction,
            actor: actor.to_owned(),
            reason: reason.to_owned(),
            detail: detail.to_string().into_bytes(),
            ops: Vec::new(),
        })?;
        let outcome = CompactionOutcome {
            horizon: at,
            previous_horizon: previous.revision,
            segments_dropped: switched.dropped.len(),
            bytes_reclaimed,
            base_image_bytes: base_bytes,
            keys: footer.key_count,
            duration_us: started.elapsed().as_micros() as u64,
            commit_revision: commit.revision,
        };
        tracing::info!(
            horizon = revision,
            segments = outcome.segments_dropped,
            bytes_reclaimed,
            "compaction done"
        );
        self.counters.compactions.fetch_add(1, Ordering::Relaxed);
        self.counters
            .bytes_reclaimed
            .fetch_add(bytes_reclaimed, Ordering::Relaxed);
        *self.last_compaction.lock() = Some(outcome.clone());
        Ok(Some(outcome))
    }
}

/// Thins `snapshots` (oldest first) to at most `keep`, keeping them spread over the history so a
/// restore to any point has a snapshot not far below it: the newest and the oldest stay, and each
/// removal takes the snapshot whose neighbours are closest together (the smallest merged gap).
/// Returns the removed ones.
fn thin(snapshots: &mut Vec<SnapshotInfo>, keep: usize) -> Vec<SnapshotInfo> {
    let mut removed = Vec::new();
    while snapshots.len() > keep.max(1) {
        let victim = if keep <= 1 || snapshots.len() <= 2 {
            0
        } else {
            (1..snapshots.len() - 1)
                .min_by_key(|&i| snapshots[i + 1].revision - snapshots[i - 1].revision)
                .expect("at least three snapshots")
        };
        removed.push(snapshots.remove(victim));
    }
    removed
}

/// Paces a writer to a byte rate: after each chunk, sleeps until the bytes written so far fit.
struct Pace {
    started: Instant,
    bytes_per_sec: u64,
}

impl Pace {
    fn new(bytes_per_sec: u64) -> Pace {
        Pace {
            started: Instant::now(),
            bytes_per_sec,
        }
    }

    fn wait(&self, bytes: u64) {
        if self.bytes_per_sec == 0 {
            return;
        }
        let due = Duration::from_secs_f64(bytes as f64 / self.bytes_per_sec as f64);
        if let Some(ahead) = due.checked_sub(self.started.elapsed()) {
            std::thread::sleep(ahead);
        }
    }
}

fn list(fs: &dyn Fs, dir: &Path) -> Result<Vec<String>, MaintenanceError> {
    Ok(fs.list_dir(dir).map_err(|source| ImageError::Io {
        op: "list",
        path: dir.to_path_buf(),
        source,
    })?)
}

/// Header, footer and length of an image file, checked cheaply.
fn frame(path: &Path) -> Result<(ImageHeader, ImageFooter, u64), String> {
    use std::os::unix::fs::FileExt;
    use storage_format::image::{FOOTER_LEN, IMAGE_HEADER_LEN};
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    if len < (IMAGE_HEADER_LEN + FOOTER_LEN) as u64 {
        return Err(format!("{len} bytes is too short for an image"));
    }
    let mut head = [0u8; IMAGE_HEADER_LEN];
    let mut foot = [0u8; FOOTER_LEN];
    file.read_exact_at(&mut head, 0)
        .map_err(|e| e.to_string())?;
    file.read_exact_at(&mut foot, len - FOOTER_LEN as u64)
        .map_err(|e| e.to_string())?;
    let (header, footer) = check_image_frame(&head, &foot, len).map_err(|e| e.to_string())?;
    Ok((header, footer, len))
}

/// Renames a damaged snapshot to `*.corrupt` (kept for inspection, never read again).
fn set_aside(fs: &dyn Fs, path: &Path, reason: &str) {
    let mut aside = path.as_os_str().to_owned();
    aside.push(CORRUPT_SUFFIX);
    tracing::error!(file = %path.display(), %reason, "snapshot failed its checks; set aside, an older snapshot or the log is used instead");
    if let Err(error) = fs.rename(path, std::path::Path::new(&aside)) {
        tracing::error!(%error, file = %path.display(), "could not set the damaged snapshot aside");
    }
}
