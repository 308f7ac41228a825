//! Opening a data directory: create it if empty, check every segment's frame, and bring the
//! active segment to a state that can take commits.
//!
//! Open reads O(1) bytes per sealed segment (header and seal) and the whole active segment —
//! unless a clean-shutdown marker matches it exactly. Full checks of sealed segments are
//! `llmcm verify`'s job (FORMAT.md "Recovery").

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use parking_lot::{Condvar, Mutex, RwLock};
use storage_format::clean::{CLEAN_FILE, CleanShutdown};
use storage_format::manifest::{MANIFEST_FILE, Manifest};
use storage_format::record::{SEAL_RECORD_LEN, SealPayload};
use storage_format::scan::{ScanEnd, TailPolicy, scan_segment};
use storage_format::segment::{
    SEGMENT_DIR, SEGMENT_HEADER_LEN, SegmentHeader, TEMP_SUFFIX, parse_segment_file_name,
    segment_file_name,
};
use storage_format::{FormatVersion, GENESIS_HASH, Hash, HistoryId, REASON_BYTES_MAX, hex};

use super::READ_ONLY_FILE;

use super::group_commit::Queue;
use super::segment::{ActiveSegment, ResumePoint, SegmentMeta};
use super::{Corruption, Head, Log, LogConfig, LogError};
use crate::clock::Clock;
use crate::fs::{Fs, write_file_atomic};

/// Where the previous segment ended: what the next one must continue from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Continuation {
    pub next_revision: u64,
    pub prev_hash: Hash,
    pub prev_timestamp_us: u64,
    /// The first live segment may start above `next_revision` (after a restore, DESIGN.md §2).
    pub gap_allowed: bool,
}

pub(super) fn open(
    fs: Arc<dyn Fs>,
    clock: Arc<dyn Clock>,
    dir: &Path,
    config: LogConfig,
) -> Result<Log, LogError> {
    config.validate().map_err(LogError::Config)?;
    fs.create_dir_all(dir)
        .map_err(LogError::io("create data directory", dir))?;
    let lock = fs.lock_dir(dir).map_err(|e| {
        if e.kind() == std::io::ErrorKind::WouldBlock {
            LogError::Locked {
                dir: dir.to_path_buf(),
            }
        } else {
            LogError::Io {
                op: "lock data directory",
                path: dir.to_path_buf(),
                source: e,
            }
        }
    })?;
    let log_dir = dir.join(SEGMENT_DIR);
    let manifest_path = dir.join(MANIFEST_FILE);
    let manifest = if fs
        .exists(&manifest_path)
        .map_err(LogError::io("stat", &manifest_path))?
    {
        let bytes = fs
            .read(&manifest_path)
            .map_err(LogError::io("read manifest", &manifest_path))?;
        Manifest::decode(&bytes).map_err(|e| LogError::corrupted(&manifest_path, 0, 0, e))?
    } else {
        create_store(&fs, &*clock, dir, &log_dir)?
    };
    remove_if_exists(&*fs, &dir.join(format!("{MANIFEST_FILE}{TEMP_SUFFIX}")))?;
    remove_stale_base_images(&*fs, dir, &manifest)?;

    let seqs = live_segment_seqs(&*fs, &log_dir, &manifest)?;
    let mut continuation = Continuation {
        next_revision: manifest.horizon_revision + 1,
        prev_hash: manifest.horizon_hash,
        prev_timestamp_us: manifest.horizon_timestamp_us,
        gap_allowed: true,
    };
    let mut segments = Vec::with_capacity(seqs.len());
    let (active_seq, sealed_seqs) = seqs.split_last().expect("at least one live segment");
    for &seq in sealed_seqs {
        let (meta, seal) = check_sealed(&*fs, &log_dir, &manifest, seq, &continuation)?;
        continuation = Continuation {
            next_revision: seal.last_revision + 1,
            prev_hash: seal.last_hash,
            prev_timestamp_us: seal.last_timestamp_us,
            gap_allowed: false,
        };
        segments.push(meta);
    }

    let clean_path = dir.join(CLEAN_FILE);
    let clean = read_clean_marker(&*fs, &clean_path, &manifest.history_id)?;
    let active = recover_active(
        fs.clone(),
        &*clock,
        &log_dir,
        &manifest,
        *active_seq,
        &continuation,
        clean,
        &mut segments,
    )?;
    // The marker describes this moment only; it must be gone before anything new is written.
    if remove_if_exists(&*fs, &clean_path)? {
        fs.sync_dir(dir)
            .map_err(LogError::io("sync directory", dir))?;
    }

    let head = Head {
        revision: active.last_revision,
        timestamp_us: active.last_timestamp_us,
        hash: active.last_hash,
    };
    let now = clock.now_us();
    if now + config.clock_behind_warn_us < head.timestamp_us {
        tracing::warn!(
            behind_us = head.timestamp_us - now,
            "the wall clock is behind the log's last timestamp; new commits continue from the log"
        );
    }
    tracing::info!(
        dir = %dir.display(),
        history = %hex(&manifest.history_id),
        head = head.revision,
        segments = segments.len(),
        "log opened"
    );
    let read_only_path = dir.join(READ_ONLY_FILE);
    let operator_read_only = if fs
        .exists(&read_only_path)
        .map_err(LogError::io("stat", &read_only_path))?
    {
        let len = fs
            .file_len(&read_only_path)
            .map_err(LogError::io("stat", &read_only_path))?;
        let bytes = fs
            .read_at(
                &read_only_path,
                0,
                len.min(REASON_BYTES_MAX as u64) as usize,
            )
            .map_err(LogError::io("read", &read_only_path))?;
        let reason = String::from_utf8_lossy(&bytes).into_owned();
        tracing::warn!(%reason, "the operator switched the store read-only; writes are refused until it is switched off");
        Some(reason)
    } else {
        None
    };
    Ok(Log {
        fs,
        dir: dir.to_path_buf(),

        config,
        clock,
        history_id: manifest.history_id,
        queue: Mutex::new(Queue {
            next_revision: head.revision + 1,
            last_timestamp_us: head.timestamp_us,
            last_hash: head.hash,
            pending: Vec::new(),
            leader_active: false,
            pending_threads: 0,
            handoff: false,
            gathering: false,
            pending_signal: Default::default(),
            writers_estimate: 1,
            fsync_ewma_us: 0,
            failed_from: None,
            closed: false,
            clock_warned_us: 0,
            unseen: Default::default(),
            operator_read_only,
        }),
        queue_changed: Condvar::new(),
        batch_grew: Condvar::new(),
        writer: Mutex::new(active),
        head: RwLock::new(head),
        segments: RwLock::new(segments),
        read_watermark_us: AtomicU64::new(0),
        stats: super::StatCounters::default(),
        observer: std::sync::OnceLock::new(),
        horizon: RwLock::new(Head {
            revision: manifest.horizon_revision,
            timestamp_us: manifest.horizon_timestamp_us,
            hash: manifest.horizon_hash,
        }),
        manifest: Mutex::new(manifest),
        _lock: lock,
    })
}

/// Creates a new store in an empty directory: segment 1 first, then the MANIFEST, so a MANIFEST
/// always names segments that exist. A crash in between leaves an empty segment 1 and no MANIFEST,
/// which the next open recognises and starts over.
fn create_store(
    fs: &Arc<dyn Fs>,
    clock: &dyn Clock,
    dir: &Path,
    log_dir: &Path,
) -> Result<Manifest, LogError> {
    let mut names = fs
        .list_dir(dir)
        .map_err(LogError::io("list data directory", dir))?;
    names.retain(|n| {
        n != "LOCK" && n != SEGMENT_DIR && *n != format!("{MANIFEST_FILE}{TEMP_SUFFIX}")
    });
    if !names.is_empty() {
        names.sort();
        return Err(LogError::NotAStore {
            dir: dir.to_path_buf(),
            found: names.join(", "),
        });
    }
    if fs.exists(log_dir).map_err(LogError::io("stat", log_dir))? {
        for name in fs
            .list_dir(log_dir)
            .map_err(LogError::io("list segments", log_dir))?
        {
            let path = log_dir.join(&name);
            let abandoned = name == segment_file_name(1)
                && fs.file_len(&path).map_err(LogError::io("stat", &path))?
                    == SEGMENT_HEADER_LEN as u64;
            if !(abandoned || name.ends_with(TEMP_SUFFIX)) {
                return Err(LogError::NotAStore {
                    dir: dir.to_path_buf(),
                    found: format!("{SEGMENT_DIR}/{name}"),
                });
            }
            tracing::warn!(file = %path.display(), "removing a file left by an interrupted store creation");
            fs.remove_file(&path)
                .map_err(LogError::io("remove", &path))?;
        }
    }
    fs.create_dir_all(log_dir)
        .map_err(LogError::io("create directory", log_dir))?;
    fs.sync_dir(dir)
        .map_err(LogError::io("sync directory", dir))?;
    let history_id = new_history_id();
    let now = clock.now_us();
    // Dropped at once: `recover_active` reopens it like any other active segment.
    ActiveSegment::create(fs.clone(), log_dir, history_id, 1, 1, GENESIS_HASH, 0, now)?;
    let manifest = Manifest {
        version: FormatVersion::CURRENT,
        history_id,
        generation: 1,
        created_unix_us: now,
        first_live_segment_seq: 1,
        horizon_revision: 0,
        horizon_hash: GENESIS_HASH,
        horizon_timestamp_us: 0,
        base_image_seq: 0,
    };
    let path = dir.join(MANIFEST_FILE);
    write_file_atomic(&**fs, &path, &manifest.encode())
        .map_err(LogError::io("write manifest", &path))?;
    tracing::info!(dir = %dir.display(), history = %hex(&history_id), "created a new store");
    Ok(manifest)
}

/// Lays out a store made by a restore in `dir`, which holds nothing but the base image
/// `base_image_seq` already: `log/` with segment 1 starting at `first_revision` and continuing
/// from `horizon` (the restored point, whose state the base image holds), then the MANIFEST, last.
/// Opening it then appends the `restore` commit at `first_revision` (DESIGN.md §2 "History").
pub(crate) fn create_restored(
    fs: &Arc<dyn Fs>,
    dir: &Path,
    history_id: HistoryId,
    first_revision: u64,
    horizon: Head,
    base_image_seq: u64,
    now: u64,
) -> Result<(), LogError> {
    assert!(first_revision > horizon.revision);
    let log_dir = dir.join(SEGMENT_DIR);
    fs.create_dir_all(&log_dir)
        .map_err(LogError::io("create directory", &log_dir))?;
    fs.sync_dir(dir)
        .map_err(LogError::io("sync directory", dir))?;
    ActiveSegment::create(
        fs.clone(),
        &log_dir,
        history_id,
        1,
        first_revision,
        horizon.hash,
        horizon.timestamp_us,
        now,
    )?;
    let manifest = Manifest {
        version: FormatVersion::CURRENT,
        history_id,
        generation: 1,
        created_unix_us: now,
        first_live_segment_seq: 1,
        horizon_revision: horizon.revision,
        horizon_hash: horizon.hash,
        horizon_timestamp_us: horizon.timestamp_us,
        base_image_seq,
    };
    let path = dir.join(MANIFEST_FILE);
    write_file_atomic(&**fs, &path, &manifest.encode())
        .map_err(LogError::io("write manifest", &path))
}

/// A random history id (see `clock::random_bytes`).
pub(crate) fn new_history_id() -> HistoryId {
    crate::clock::random_bytes()
}

/// Removes base images the MANIFEST does not name (a compaction that crashed before or after
/// switching leaves one) and temporary image files.
fn remove_stale_base_images(fs: &dyn Fs, dir: &Path, manifest: &Manifest) -> Result<(), LogError> {
    let mut removed = false;
    for name in fs
        .list_dir(dir)
        .map_err(LogError::io("list data directory", dir))?
    {
        let stale = match storage_format::image::parse_base_image_file_name(&name) {
            Some(seq) => seq != manifest.base_image_seq,
            None => name.starts_with("base-") && name.ends_with(".img.tmp"),
        };
        if stale {
            let path = dir.join(&name);
            tracing::warn!(file = %path.display(), "removing a base image the MANIFEST does not name");
            fs.remove_file(&path)
                .map_err(LogError::io("remove", &path))?;
            removed = true;
        }
    }
    if removed {
        fs.sync_dir(dir)
            .map_err(LogError::io("sync directory", dir))?;
    }
    Ok(())
}

fn remove_if_exists(fs: &dyn Fs, path: &Path) -> Result<bool, LogError> {
    if fs.exists(path).map_err(LogError::io("stat", path))? {
        fs.remove_file(path).map_err(LogError::io("remove", path))?;
        return Ok(true);
    }
    Ok(false)
}

/// The live segments' sequence numbers, ascending and without gaps. Removes temporary files and
/// segments below the manifest's first live one (left by interrupted creations and compactions).
fn live_segment_seqs(
    fs: &dyn Fs,
    log_dir: &Path,
    manifest: &Manifest,
) -> Result<Vec<u64>, LogError> {
    let mut seqs = Vec::new();
    let mut removed = false;
    for name in fs
        .list_dir(log_dir)
        .map_err(LogError::io("list segments", log_dir))?
    {
        let path = log_dir.join(&name);
        match parse_segment_file_name(&name) {
            Some(seq) if seq >= manifest.first_live_segment_seq => seqs.push(seq),
            Some(_) => {
                tracing::warn!(file = %path.display(), "removing a segment below the manifest's first live segment");
                fs.remove_file(&path)
                    .map_err(LogError::io("remove", &path))?;
                removed = true;
            }
            None if name.ends_with(TEMP_SUFFIX) => {
                tracing::warn!(file = %path.display(), "removing a temporary file left by a crash");
                fs.remove_file(&path)
                    .map_err(LogError::io("remove", &path))?;
                removed = true;
            }
            None => {
                tracing::warn!(file = %path.display(), "ignoring an unknown file in the log directory")
            }
        }
    }
    if removed {
        fs.sync_dir(log_dir)
            .map_err(LogError::io("sync directory", log_dir))?;
    }
    seqs.sort_unstable();
    let first = manifest.first_live_segment_seq;
    for (i, &seq) in seqs.iter().enumerate() {
        let expected = first + i as u64;
        if seq != expected {
            return Err(LogError::corrupted(
                log_dir.join(segment_file_name(expected)),
                0,
                0,
                Corruption::MissingSegment { missing: expected },
            ));
        }
    }
    if seqs.is_empty() {
        return Err(LogError::corrupted(
            log_dir.join(segment_file_name(first)),
            0,
            manifest.horizon_revision + 1,
            Corruption::MissingSegment { missing: first },
        ));
    }
    Ok(seqs)
}

/// Checks what identifies a segment and links it to its predecessor.
pub(crate) fn check_header(
    path: &Path,
    header: &SegmentHeader,
    manifest: &Manifest,
    seq: u64,
    continuation: &Continuation,
) -> Result<(), LogError> {
    let fail = |kind| {
        Err(LogError::corrupted(
            path,
            0,
            continuation.next_revision,
            kind,
        ))
    };
    if header.history_id != manifest.history_id {
        return fail(Corruption::WrongHistory {
            expected: hex(&manifest.history_id),
            found: hex(&header.history_id),
        });
    }
    if header.segment_seq != seq {
        return fail(Corruption::WrongSequence {
            expected: seq,
            found: header.segment_seq,
        });
    }
    let revision_ok = if continuation.gap_allowed {
        header.first_revision >= continuation.next_revision
    } else {
        header.first_revision == continuation.next_revision
    };
    if !revision_ok {
        return fail(Corruption::RevisionGap {
            expected: continuation.next_revision,
            found: header.first_revision,
        });
    }
    if header.prev_hash != continuation.prev_hash {
        return fail(Corruption::ChainBreak);
    }
    if header.prev_timestamp_us != continuation.prev_timestamp_us {
        return fail(Corruption::TimestampBreak {
            expected: continuation.prev_timestamp_us,
            found: header.prev_timestamp_us,
        });
    }
    Ok(())
}

/// Checks a sealed segment's header and seal (not its records: that is `verify`'s job).
fn check_sealed(
    fs: &dyn Fs,
    log_dir: &Path,
    manifest: &Manifest,
    seq: u64,
    continuation: &Continuation,
) -> Result<(SegmentMeta, SealPayload), LogError> {
    let path = log_dir.join(segment_file_name(seq));
    let len = fs.file_len(&path).map_err(LogError::io("stat", &path))?;
    let min = (SEGMENT_HEADER_LEN + SEAL_RECORD_LEN) as u64;
    if len < min {
        return Err(LogError::corrupted(
            &path,
            len,
            continuation.next_revision,
            Corruption::SealMismatch(format!("{len} bytes is too short for a sealed segment")),
        ));
    }
    let header_bytes = fs
        .read_at(&path, 0, SEGMENT_HEADER_LEN)
        .map_err(LogError::io("read segment header", &path))?;
    let header = SegmentHeader::decode(&header_bytes)
        .map_err(|e| LogError::corrupted(&path, 0, continuation.next_revision, e))?;
    check_header(&path, &header, manifest, seq, continuation)?;
    let seal_offset = len - SEAL_RECORD_LEN as u64;
    let seal_bytes = fs
        .read_at(&path, seal_offset, SEAL_RECORD_LEN)
        .map_err(LogError::io("read seal", &path))?;
    let seal = SealPayload::decode_record(&seal_bytes)
        .map_err(|e| LogError::corrupted(&path, seal_offset, header.first_revision, e))?;
    if seal.first_revision != header.first_revision
        || seal.data_bytes != seal_offset - SEGMENT_HEADER_LEN as u64
    {
        return Err(LogError::corrupted(
            &path,
            seal_offset,
            header.first_revision,
            Corruption::SealMismatch(format!(
                "seal covers revisions from {} and {} data bytes; header starts at {} and the file holds {}",
                seal.first_revision,
                seal.data_bytes,
                header.first_revision,
                seal_offset - SEGMENT_HEADER_LEN as u64
            )),
        ));
    }
    let meta = SegmentMeta {
        seq,
        path,
        first_revision: header.first_revision,
        last_revision: seal.last_revision,
        len,
        sealed: true,
    };
    Ok((meta, seal))
}

fn read_clean_marker(
    fs: &dyn Fs,
    path: &Path,
    history_id: &HistoryId,
) -> Result<Option<CleanShutdown>, LogError> {
    if !fs.exists(path).map_err(LogError::io("stat", path))? {
        return Ok(None);
    }
    let bytes = fs.read(path).map_err(LogError::io("read", path))?;
    match CleanShutdown::decode(&bytes) {
        Ok(marker) if marker.history_id == *history_id => Ok(Some(marker)),
        Ok(_) => {
            tracing::warn!(file = %path.display(), "ignoring a clean-shutdown marker of another history");
            Ok(None)
        }
        Err(error) => {
            tracing::warn!(file = %path.display(), %error, "ignoring a damaged clean-shutdown marker");
            Ok(None)
        }
    }
}

/// Brings the last segment to a state that takes commits: trusted from a matching clean-shutdown
/// marker, or scanned record by record with its torn tail (if any) truncated. A sealed last
/// segment (a crash between sealing and creating the successor) gets its successor now.
#[allow(clippy::too_many_arguments)]
fn recover_active(
    fs: Arc<dyn Fs>,
    clock: &dyn Clock,
    log_dir: &Path,
    manifest: &Manifest,
    seq: u64,
    continuation: &Continuation,
    clean: Option<CleanShutdown>,
    segments: &mut Vec<SegmentMeta>,
) -> Result<ActiveSegment, LogError> {
    let path = log_dir.join(segment_file_name(seq));
    let len = fs.file_len(&path).map_err(LogError::io("stat", &path))?;
    let bytes = fs
        .read(&path)
        .map_err(LogError::io("read segment", &path))?;
    let marker = clean.filter(|m| m.active_segment_seq == seq && m.active_segment_len == len);
    if let Some(marker) = marker
        && bytes.len() >= SEGMENT_HEADER_LEN
        && crc32fast::hash(&bytes[SEGMENT_HEADER_LEN..]) == marker.data_crc
    {
        // A clean close recorded exactly this content: skip decoding and re-hashing it.
        let header = SegmentHeader::decode(&bytes)
            .map_err(|e| LogError::corrupted(&path, 0, continuation.next_revision, e))?;
        check_header(&path, &header, manifest, seq, continuation)?;
        let resume = ResumePoint {
            len,
            data_crc: marker.data_crc,
            commit_count: marker.last_revision + 1 - header.first_revision,
            last_revision: marker.last_revision,
            last_timestamp_us: marker.last_timestamp_us,
            last_hash: marker.last_hash,
        };
        let active = ActiveSegment::resume(fs, log_dir, path, header, resume)?;
        segments.push(active.meta(false));
        return Ok(active);
    }
    // After a clean close nothing can be torn: any invalid byte is corruption.
    let policy = if marker.is_some() {
        TailPolicy::Strict
    } else {
        TailPolicy::AllowTornTail
    };
    let outcome = scan_segment(&bytes, policy, &mut |_, _| {})
        .map_err(|e| LogError::corrupted(&path, e.offset, e.revision, e.kind))?;
    check_header(&path, &outcome.header, manifest, seq, continuation)?;
    if let ScanEnd::TornTail { offset, bytes } = outcome.end {
        tracing::warn!(
            file = %path.display(),
            offset,
            bytes,
            "truncating a torn tail that was never acknowledged"
        );
        fs.open_append(&path)
            .and_then(|mut file| file.set_len(offset))
            .map_err(LogError::io("truncate torn tail", &path))?;
    }
    // What was read may sit only in the page cache (a previous process's fsync may have failed):
    // make it durable before anyone sees it, and before any successor exists.
    fs.open_append(&path)
        .and_then(|mut file| file.sync_data())
        .map_err(LogError::io("sync recovered segment", &path))?;
    if let ScanEnd::Sealed(seal) = outcome.end {
        segments.push(SegmentMeta {
            seq,
            path,
            first_revision: outcome.header.first_revision,
            last_revision: seal.last_revision,
            len,
            sealed: true,
        });
        tracing::info!(seq, "the last segment is sealed; starting its successor");
        let active = ActiveSegment::create(
            fs,
            log_dir,
            manifest.history_id,
            seq + 1,
            seal.last_revision + 1,
            seal.last_hash,
            seal.last_timestamp_us,
            clock.now_us(),
        )?;
        segments.push(active.meta(false));
        return Ok(active);
    }
    let resume = ResumePoint {
        len: outcome.valid_len,
        data_crc: outcome.data_crc,
        commit_count: outcome.commit_count,
        last_revision: outcome.last_revision,
        last_timestamp_us: outcome.last_timestamp_us,
        last_hash: outcome.last_hash,
    };
    let active = ActiveSegment::resume(fs, log_dir, path, outcome.header, resume)?;
    segments.push(active.meta(false));
    Ok(active)
}
