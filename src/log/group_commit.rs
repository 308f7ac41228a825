//! Group commit: concurrent appenders share one write and one fsync.
//!
//! Each appender assigns its revision, timestamp and chain hash under the queue lock (one critical
//! section, so all three follow the queue order) and adds its encoded commit to the pending batch.
//! An appender that finds no leader at work becomes the leader (in the same critical section, so a
//! queued commit always has a leader): it takes the whole pending batch, writes and syncs it
//! without holding the queue lock (so others keep queueing behind it), publishes the new durable
//! head, wakes that batch's appenders, and goes on with the next batch until none is pending. An
//! appender returns once the head reaches its revision, or with an error if its batch, or any batch
//! before it, failed.
//!
//! Appenders wait on their own batch's signal, so a batch wakes only its own appenders. Threads
//! (`append`) wait on a condition variable and, when they must lead, lead in place; tasks
//! (`append_checked_async`, the server's writes) await a notification without holding a thread,
//! and a leader they need is started on the runtime's blocking pool — so under load one pool
//! thread writes batch after batch and no request holds a thread while its batch syncs.
//!
//! When fsyncs are slow (a mean of at least `GATHER_FSYNC_US_MIN`), the leader first waits a
//! little before taking a batch — at most a quarter of the mean fsync, and at most
//! `GATHER_WAIT_US_MAX` — for the appenders the previous batch just released to queue again.
//! Without it, 2N concurrent writers settle into two alternating batches of N, each waiting a
//! whole fsync for the other; with it they share one fsync. A lone writer (or fast fsyncs) never
//! waits.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use parking_lot::Condvar;

use storage_format::commit::{Commit, CommitKind, Op, encode_commit_payload};
use storage_format::{Hash, RECORD_PAYLOAD_BYTES_MAX};

use super::segment::PendingCommit;
use super::{CommitInfo, CommitRequest, DurableCommit, Head, Log, LogError, Rejection};

use crate::fs::write_file_atomic;

/// Leaders gather batches only when the mean fsync takes at least this long.
const GATHER_FSYNC_US_MIN: u64 = 1_000;
/// The longest a leader waits for appenders to gather.
const GATHER_WAIT_US_MAX: u64 = 1_000;

/// A thread leading for its own commit hands the lead on once that commit is durable and it has
/// led this long (a hand-off costs a thread wake-up, so short runs are not handed off).
const LEAD_FOR_OTHERS_MAX: std::time::Duration = std::time::Duration::from_millis(10);

/// State behind the queue lock.
pub(crate) struct Queue {
    pub next_revision: u64,
    pub last_timestamp_us: u64,
    pub last_hash: Hash,
    pub pending: Vec<PendingCommit>,
    pub leader_active: bool,
    /// Threads (`Log::append` callers, not tasks) among the appenders of `pending`.
    pub pending_threads: usize,
    /// A leader whose own commit is durable handed the lead to a thread of `pending`: the first
    /// of them to wake takes it (`leader_active` stays set meanwhile).
    pub handoff: bool,
    /// A new leader is waiting for more appenders before taking the batch.
    pub gathering: bool,
    /// What the appenders of `pending` wait on: woken when their batch is durable or failed.
    pub pending_signal: Arc<BatchSignal>,
    /// Writers seen at once lately: the last batch plus those queued when it became durable.
    pub writers_estimate: usize,
    /// Moving mean of batch fsync latency, in microseconds.
    pub fsync_ewma_us: u64,
    /// Every revision from this one on failed (the log is latched read-only).
    pub failed_from: Option<(u64, String)>,
    pub closed: bool,
    /// Last time a clock-behind warning was logged, to log it once per second at most.
    pub clock_warned_us: u64,
    /// Keys written by queued commits that readers cannot see yet.
    pub unseen: UnseenWrites,
    /// Set by the operator's read-only switch (with its reason): change commits are refused.
    pub operator_read_only: Option<String>,
}

/// What the appenders of one batch wait on: threads on the condition variable (with the queue
/// lock), tasks on the notification.
#[derive(Default)]
pub struct BatchSignal {
    condvar: Condvar,
    notify: tokio::sync::Notify,
}

impl BatchSignal {
    /// Wakes every appender of the batch (called with the queue lock held).
    fn wake_all(&self) {
        self.condvar.notify_all();
        self.notify.notify_waiters();
    }
}

/// A queued commit: its revision, timestamp and hash, its batch's signal, and whether its
/// appender must lead.
struct Queued {
    info: CommitInfo,
    signal: Arc<BatchSignal>,
    lead: bool,
}

/// The newest queued write of a key that readers cannot see yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnseenWrite {
    pub revision: u64,
    pub deleted: bool,
}

/// Writes that are queued or being synced, so not yet in the index: a precondition checked in the
/// queue's critical section must consult these before the index, or two conditional writers could
/// both pass a check that only one of them may pass.
#[derive(Default)]
pub struct UnseenWrites {
    newest: HashMap<String, UnseenWrite>,
    /// Revisions in order, with the keys each wrote, to forget them once they are visible.
    order: VecDeque<(u64, Vec<String>)>,
}

impl UnseenWrites {
    /// The newest write of `key` not yet visible to readers.
    pub fn get(&self, key: &str) -> Option<UnseenWrite> {
        self.newest.get(key).copied()
    }

    /// Whether any not-yet-visible write touches a key starting with `prefix`.
    pub fn any_under(&self, prefix: &str) -> bool {
        self.newest.keys().any(|k| k.starts_with(prefix))
    }

    fn record(&mut self, revision: u64, ops: &[Op]) {
        let mut keys = Vec::with_capacity(ops.len());
        for op in ops {
            let deleted = matches!(op, Op::Delete { .. });
            self.newest
                .insert(op.key().to_owned(), UnseenWrite { revision, deleted });
            keys.push(op.key().to_owned());
        }
        self.order.push_back((revision, keys));
    }

    /// Forgets writes at or below `visible`: the index (which readers use) has them.
    fn forget_through(&mut self, visible: u64) {
        while let Some((revision, _)) = self.order.front()
            && *revision <= visible
        {
            let (revision, keys) = self.order.pop_front().expect("front exists");
            for key in keys {
                if self
                    .newest
                    .get(&key)
                    .is_some_and(|w| w.revision == revision)
                {
                    self.newest.remove(&key);
                }
            }
        }
    }
}

impl Log {
    /// Appends one commit and returns once it is durable. Refused requests write nothing.
    pub fn append(&self, request: CommitRequest) -> Result<CommitInfo, LogError> {
        let ops_max = self.config.commit_ops_max;
        self.append_checked(request, ops_max, |_| Ok::<(), Infallible>(()))
            .map(|checked| checked.unwrap_or_else(|never| match never {}))
    }

    /// Appends one commit if `precondition` passes, and returns once it is durable.
    /// `precondition` runs in the critical section that assigns the revision, so nothing can be
    /// queued between the check and the commit; it sees the writes still in flight (not yet
    /// visible to readers) and must consult them before reading the index. `ops_max` bounds the
    /// ops of a change commit (the configured maximum, or a higher one for rollbacks).
    pub fn append_checked<E>(
        &self,
        request: CommitRequest,
        ops_max: usize,
        precondition: impl FnOnce(&UnseenWrites) -> Result<(), E>,
    ) -> Result<Result<CommitInfo, E>, LogError> {
        let commit = self.validated(request, ops_max)?;
        self.append_with(commit, precondition, |_| {})
    }

    /// Switches the operator's read-only state, audited as a `read_only` commit by `actor`. The
    /// switch takes effect in the critical section that queues the commit: no change commit queued
    /// after it is accepted (on), or refused (off). The `READ_ONLY` file keeps the state across
    /// restarts; it is written before switching on and removed after switching off, so a crash in
    /// between errs on the read-only side. `None`: it was already in that state (no commit).
    pub fn set_operator_read_only(
        &self,
        on: bool,
        reason: &str,
        actor: &str,
    ) -> Result<Option<CommitInfo>, LogError> {
        // A switch to the state already in force changes nothing and records nothing.
        if self.operator_read_only().is_some() == on {
            return Ok(None);
        }
        let detail = serde_json::json!({ "on": on, "reason": reason }).to_string();
        let request = CommitRequest {
            kind: CommitKind::ReadOnly,
            actor: actor.to_owned(),
            reason: reason.to_owned(),
            detail: detail.into_bytes(),
            ops: Vec::new(),
        };
        // Validated before the marker is written, so a refused switch leaves no marker behind.
        let commit = self.validated(request, 0)?;
        let path = self.dir.join(super::READ_ONLY_FILE);
        if on {
            write_file_atomic(&*self.fs, &path, reason.as_bytes())
                .map_err(LogError::io("write the read-only marker", &path))?;
        }
        let switched = reason.to_owned();
        let info = self
            .append_with(
                commit,
                |_| Ok::<(), Infallible>(()),
                move |queue| queue.operator_read_only = on.then_some(switched),
            )?
            .unwrap_or_else(|never| match never {});
        if !on && self.fs.exists(&path).unwrap_or(true) {
            self.fs
                .remove_file(&path)
                .map_err(LogError::io("remove the read-only marker", &path))?;
            self.fs
                .sync_dir(&self.dir)
                .map_err(LogError::io("sync", &self.dir))?;
        }
        Ok(Some(info))
    }

    /// The operator's read-only reason, if switched on.
    pub fn operator_read_only(&self) -> Option<String> {
        self.queue.lock().operator_read_only.clone()
    }

    /// The commit of `request`, checked against every limit (revision and timestamp are filled in
    /// when it is queued: both are fixed-width, so the placeholders give the final length).
    fn validated(&self, request: CommitRequest, ops_max: usize) -> Result<Commit, LogError> {
        let commit = Commit {
            revision: 0,
            timestamp_us: 0,
            kind: request.kind,
            actor: request.actor,
            reason: request.reason,
            detail: request.detail,
            ops: request.ops,
        };
        self.check_commit(&commit, ops_max)?;
        Ok(commit)
    }

    /// Queues a validated commit if `precondition` passes, and waits until it is durable.
    fn append_with<E>(
        &self,
        commit: Commit,
        precondition: impl FnOnce(&UnseenWrites) -> Result<(), E>,
        on_queued: impl FnOnce(&mut Queue),
    ) -> Result<Result<CommitInfo, E>, LogError> {
        let queued = match self.enqueue(commit, precondition, |queue| {
            on_queued(queue);
            queue.pending_threads += 1;
        })? {
            Ok(queued) => queued,
            Err(failed) => return Ok(Err(failed)),
        };
        let mut queue = self.queue.lock();
        if queued.lead {
            self.lead(&mut queue, Some(queued.info.revision));
        }
        loop {
            if let Some(outcome) = self.outcome(&queue, &queued) {
                return outcome.map(Ok);
            }
            if queue.handoff {
                // The leader's own commit is durable and it handed the lead on: take it.
                queue.handoff = false;
                self.lead(&mut queue, Some(queued.info.revision));
                continue;
            }
            queued.signal.condvar.wait(&mut queue);
        }
    }

    /// `append_checked` for async callers: the commit is queued at once and the caller awaits
    /// its batch's durability without holding a thread. If no leader is at work, one is started
    /// on the runtime's blocking pool; it writes batches until none is pending.
    pub async fn append_checked_async<E>(
        log: &Arc<Log>,
        request: CommitRequest,
        ops_max: usize,
        precondition: impl FnOnce(&UnseenWrites) -> Result<(), E>,
    ) -> Result<Result<CommitInfo, E>, LogError> {
        let commit = log.validated(request, ops_max)?;
        let queued = match log.enqueue(commit, precondition, |_| {})? {
            Ok(queued) => queued,
            Err(failed) => return Ok(Err(failed)),
        };
        if queued.lead {
            let leader = log.clone();
            tokio::task::spawn_blocking(move || {
                let mut queue = leader.queue.lock();
                leader.lead(&mut queue, None);
            });
        }
        loop {
            let notified = queued.signal.notify.notified();
            tokio::pin!(notified);
            {
                let queue = log.queue.lock();
                if let Some(outcome) = log.outcome(&queue, &queued) {
                    return outcome.map(Ok);
                }
                // Registered before the lock is released: the leader wakes its batch under it.
                notified.as_mut().enable();
            }
            notified.await;
        }
    }

    /// Assigns revision, timestamp and hash to a validated commit if `precondition` passes, and
    /// queues it. If no leader is at work the caller becomes it (`lead` in the answer), so every
    /// queued commit always has a leader that will write it.
    fn enqueue<E>(
        &self,
        mut commit: Commit,
        precondition: impl FnOnce(&UnseenWrites) -> Result<(), E>,
        on_queued: impl FnOnce(&mut Queue),
    ) -> Result<Result<Queued, E>, LogError> {
        let mut queue = self.queue.lock();
        if queue.closed {
            return Err(LogError::Closed);
        }
        if let Some((_, reason)) = &queue.failed_from {
            return Err(LogError::ReadOnly {
                reason: reason.clone(),
            });
        }
        if commit.kind == CommitKind::Change
            && let Some(reason) = &queue.operator_read_only
        {
            return Err(LogError::ReadOnly {
                reason: format!("switched read-only by the operator: {reason}"),
            });
        }
        let visible = self.head.read().revision;
        queue.unseen.forget_through(visible);
        if let Err(failed) = precondition(&queue.unseen) {
            return Ok(Err(failed));
        }
        let revision = queue.next_revision;
        let timestamp_us = self.next_timestamp(&mut queue);
        commit.revision = revision;
        commit.timestamp_us = timestamp_us;
        // `check_commit` validated everything the encoder checks.
        let (payload, hash) =
            encode_commit_payload(&commit, &queue.last_hash).expect("commit was validated");
        queue.next_revision += 1;
        queue.last_timestamp_us = timestamp_us;
        queue.last_hash = hash;
        if commit.kind == CommitKind::Change {
            queue.unseen.record(revision, &commit.ops);
        }
        on_queued(&mut queue);
        queue.pending.push(PendingCommit {
            revision,
            timestamp_us,
            hash,
            payload,
            commit,
        });
        if queue.gathering && queue.pending.len() >= queue.writers_estimate {
            self.batch_grew.notify_one();
        }
        let lead = !queue.leader_active;
        queue.leader_active = true;
        Ok(Ok(Queued {
            info: CommitInfo {
                revision,
                timestamp_us,
                hash,
            },
            signal: queue.pending_signal.clone(),
            lead,
        }))
    }

    /// Whether a queued commit is durable (its info) or failed (the error); `None` while neither.
    fn outcome(&self, queue: &Queue, queued: &Queued) -> Option<Result<CommitInfo, LogError>> {
        let revision = queued.info.revision;
        if self.head.read().revision >= revision {
            return Some(Ok(queued.info));
        }
        match &queue.failed_from {
            Some((from, reason)) if *from <= revision => Some(Err(LogError::ReadOnly {
                reason: reason.clone(),
            })),
            _ => None,
        }
    }

    /// The leader's loop (`leader_active` is set): writes batch after batch until nothing is
    /// pending or a batch fails, waking each batch's appenders as it becomes durable. A thread
    /// leading for its own commit (`own`) hands the lead to a thread of the next batch once that
    /// commit is durable and it has led `LEAD_FOR_OTHERS_MAX`, so no caller waits out a long run
    /// of other callers' batches (with 64 writers such runs lasted up to 2 s); the runtime's
    /// leader (`None`) leads until nothing is pending, since tasks cannot take the lead over.
    fn lead(&self, queue: &mut parking_lot::MutexGuard<'_, Queue>, own: Option<u64>) {
        debug_assert!(queue.leader_active);
        let started = std::time::Instant::now();
        while !queue.pending.is_empty() && queue.failed_from.is_none() {
            if let Some(own) = own
                && queue.pending_threads > 0
                && started.elapsed() >= LEAD_FOR_OTHERS_MAX
                && self.head.read().revision >= own
            {
                queue.handoff = true;
                queue.pending_signal.condvar.notify_all();
                return;
            }
            self.gather(queue);
            let batch = std::mem::take(&mut queue.pending);
            queue.pending_threads = 0;
            let batch_signal = std::mem::take(&mut queue.pending_signal);
            // A panic while writing (a broken invariant) fails the batch and latches the log
            // like an I/O error, so no appender waits forever for a leader that is gone.
            let result = parking_lot::MutexGuard::unlocked(queue, || {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.write_batch(&batch)))
                    .unwrap_or_else(|panic| {
                        let what = panic
                            .downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .unwrap_or_default();
                        Err(LogError::ReadOnly {
                            reason: format!("writing a batch panicked: {what}"),
                        })
                    })
            });
            match result {
                Ok(fsync_us) => {
                    // The moving mean weighs the newest fsync 1/8.
                    queue.fsync_ewma_us = if queue.fsync_ewma_us == 0 {
                        fsync_us
                    } else {
                        (7 * queue.fsync_ewma_us + fsync_us) / 8
                    };
                    queue.writers_estimate = batch.len() + queue.pending.len();
                }
                Err(error) => {
                    let first = batch[0].revision;
                    if queue.failed_from.is_none() {
                        queue.failed_from = Some((first, error.to_string()));
                    }
                    // Every queued appender fails too.
                    queue.pending_signal.wake_all();
                }
            }
            batch_signal.wake_all();
        }
        queue.leader_active = false;
        // Only shutdown waits on this, for the leader to finish.
        self.queue_changed.notify_all();
    }

    /// The leader's short wait for the writers the last batch released (see the module
    /// comment): returns once as many appenders are queued as wrote at once lately, or after the
    /// wait bound; at once if fsyncs are fast or the writers are few.
    fn gather(&self, queue: &mut parking_lot::MutexGuard<'_, Queue>) {
        if queue.fsync_ewma_us < GATHER_FSYNC_US_MIN
            || queue.writers_estimate <= 1
            || queue.pending.len() >= queue.writers_estimate
            || queue.closed
        {
            return;
        }
        let wait =
            std::time::Duration::from_micros((queue.fsync_ewma_us / 4).min(GATHER_WAIT_US_MAX));
        let deadline = std::time::Instant::now() + wait;
        queue.gathering = true;
        while queue.pending.len() < queue.writers_estimate {
            if self.batch_grew.wait_until(queue, deadline).timed_out() {
                break;
            }
        }
        queue.gathering = false;
    }

    /// The leader's work: roll if due, write and sync, publish. Returns the fsync's duration in
    /// microseconds.
    fn write_batch(&self, batch: &[PendingCommit]) -> Result<u64, LogError> {
        let mut writer = self.writer.lock();
        crate::fault::panic_point("log.write_batch");
        let incoming: u64 = batch
            .iter()
            .map(|c| (storage_format::record::RECORD_HEADER_LEN + c.payload.len()) as u64)
            .sum();
        if writer.commit_count > 0
            && (writer.len + incoming > self.config.segment_bytes_max || self.age_due(&writer))
        {
            let sealed = writer.roll(self.clock.now_us())?;
            self.publish_roll(sealed, &writer, true);
        }
        let written = writer.write_batch(batch)?;
        // Facade calls: no-ops unless the server installed a recorder.
        metrics::histogram!("llmcm_fsync_seconds").record(written.fsync_us as f64 / 1e6);
        metrics::histogram!("llmcm_group_commit_batch_commits").record(batch.len() as f64);
        self.stats
            .fsync_us
            .fetch_add(written.fsync_us, Ordering::Relaxed);
        self.stats.recent_fsyncs.lock().push(written.fsync_us);
        if let Some(observer) = self.observer.get() {
            let durable: Vec<DurableCommit<'_>> = batch
                .iter()
                .zip(&written.offsets)
                .map(|(p, &record_offset)| DurableCommit {
                    commit: &p.commit,
                    hash: p.hash,
                    segment_seq: written.segment_seq,
                    record_offset,
                })
                .collect();
            observer.on_durable(&durable);
        }
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        self.stats
            .commits
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        self.stats
            .bytes_written
            .fetch_add(incoming, Ordering::Relaxed);
        let last = batch.last().expect("non-empty batch");
        {
            let mut segments = self.segments.write();
            let active = segments.last_mut().expect("the active segment is listed");
            active.last_revision = writer.last_revision;
            active.len = writer.len;
        }
        *self.head.write() = Head {
            revision: last.revision,
            timestamp_us: last.timestamp_us,
            hash: last.hash,
        };
        Ok(written.fsync_us)
    }

    /// The timestamp of the next commit: now, but strictly after the previous commit and after
    /// every time a read was answered for. A clock behind the log is warned about, not trusted.
    fn next_timestamp(&self, queue: &mut Queue) -> u64 {
        let now = self.clock.now_us();
        let floor = queue
            .last_timestamp_us
            .max(self.read_watermark_us.load(Ordering::SeqCst))
            + 1;
        if now + self.config.clock_behind_warn_us < queue.last_timestamp_us
            && now.saturating_sub(queue.clock_warned_us) >= 1_000_000
        {
            queue.clock_warned_us = now;
            tracing::warn!(
                behind_us = queue.last_timestamp_us - now,
                "the wall clock is behind the log's last timestamp; timestamps continue from the log"
            );
        }
        now.max(floor)
    }

    /// Checks a commit against the format's and the configured limits.
    fn check_commit(&self, commit: &Commit, ops_max: usize) -> Result<(), LogError> {
        if commit.kind == CommitKind::Change && commit.ops.len() > ops_max {
            return Err(Rejection::TooManyOps {
                count: commit.ops.len(),
                max: ops_max,
            }
            .into());
        }
        for op in &commit.ops {
            if let Op::Put { key, value } = op {
                if value.len() > self.config.value_bytes_max {
                    return Err(Rejection::ValueTooLarge {
                        key: key.clone(),
                        len: value.len(),
                        max: self.config.value_bytes_max,
                    }
                    .into());
                }
                let checked = if crate::fault::legacy_value_check() {
                    serde_json::from_slice::<serde::de::IgnoredAny>(value)
                        .map(drop)
                        .map_err(|e| e.to_string())
                } else {
                    storage_format::json::check_value(value).map_err(|e| e.to_string())
                };
                if let Err(message) = checked {
                    return Err(Rejection::InvalidJson {
                        key: key.clone(),
                        message,
                    }
                    .into());
                }
            }
        }
        commit.validate().map_err(Rejection::Format)?;
        let len = commit.canonical_len() + storage_format::HASH_LEN;
        let max = match commit.kind {
            CommitKind::Change => self.config.commit_bytes_max,
            _ => RECORD_PAYLOAD_BYTES_MAX,
        };
        if len > max {
            return Err(Rejection::CommitTooLarge { len, max }.into());
        }
        Ok(())
    }

    /// Stops taking commits, waits for the batch in flight, and writes the clean-shutdown marker
    /// unless the log failed. Idempotent.
    pub(super) fn shutdown(&self) -> Result<(), LogError> {
        let mut queue = self.queue.lock();
        if queue.closed {
            return Ok(());
        }
        queue.closed = true;
        // A queued commit always has a leader, which stops only when nothing is pending or a
        // batch failed: once no leader is at work, everything queued is durable or failed.
        while queue.leader_active {
            self.queue_changed.wait(&mut queue);
        }
        if queue.failed_from.is_some() {
            return Ok(());
        }
        let writer = self.writer.lock();
        if writer.failure().is_some() {
            return Ok(());
        }
        let marker = storage_format::clean::CleanShutdown {
            version: storage_format::FormatVersion::CURRENT,
            history_id: self.history_id,
            active_segment_seq: writer.header.segment_seq,
            active_segment_len: writer.len,
            last_revision: writer.last_revision,
            last_timestamp_us: writer.last_timestamp_us,
            last_hash: writer.last_hash,
            data_crc: writer.data_crc(),
        };
        let path = self.dir.join(storage_format::clean::CLEAN_FILE);
        write_file_atomic(&*self.fs, &path, &marker.encode())
            .map_err(LogError::io("write clean-shutdown marker", &path))
    }
}
