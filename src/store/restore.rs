//! Point-in-time restore from a data directory (DESIGN.md §2 "History", §4 `restore`).
//!
//! The source is only read — never locked, written or repaired — so it may belong to a running
//! server. The state at the point is the newest valid image at or before it (a snapshot, else the
//! base image, else the empty state) plus the commits after that image, read from the segments
//! with every record's CRC and chain hash checked. The target is a new store with a new history
//! id: a base image of the state at the point (only keys under the prefix, for a partial restore),
//! and a first segment whose first commit, the `restore` commit, has a revision above every
//! revision of the source. The result is then reopened, its chain verified and its every key
//! compared with the computed state before success is reported.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use storage_format::commit::{CommitKind, Op};
use storage_format::image::{
    ImageHeader, ImageKind, SNAPSHOT_DIR, base_image_file_name, parse_snapshot_file_name,
};
use storage_format::manifest::{MANIFEST_FILE, Manifest};
use storage_format::scan::{TailPolicy, scan_segment};
use storage_format::segment::{
    SEGMENT_DIR, SEGMENT_HEADER_LEN, SegmentHeader, parse_segment_file_name, segment_file_name,
};
use storage_format::{FormatVersion, Hash, HistoryId, hex};
use thiserror::Error;

use crate::clock::{Clock, SystemClock, format_timestamp_us};
use crate::fs::{Fs, RealFs};
use crate::image::{ImageError, ImageValue, ImageWriter, read_image};
use crate::log::{CommitRequest, Head, LogConfig, LogError};
use crate::store::{Point, Store, StoreError};

/// Where to restore to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestorePoint {
    Latest,
    Revision(u64),
    /// Microseconds since the epoch, UTC: the last commit at or before it.
    Time(u64),
}

#[derive(Debug, Clone)]
pub struct RestoreRequest {
    pub source: PathBuf,
    pub point: RestorePoint,
    /// Partial restore: only keys starting with this.
    pub prefix: Option<String>,
    /// The restore commit's revision is at least this (and always above the source's head).
    pub bump_revision: u64,
    /// Make the store even if no key is left at the point (under the prefix): otherwise that
    /// is refused, naming the point, as it is almost always a wrong point or prefix.
    pub allow_empty: bool,
    pub target: PathBuf,
    /// Recorded as the actor of the restore commit.
    pub actor: String,
}

/// What to restore from a backup repository (`backup::restore`).
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub point: RestorePoint,
    /// Partial restore: only keys starting with this.
    pub prefix: Option<String>,
    /// The restore commit's revision is at least this.
    pub bump_revision: u64,
    /// As `RestoreRequest::allow_empty`.
    pub allow_empty: bool,
}

impl RestoreOptions {
    pub fn new(
        point: RestorePoint,
        prefix: Option<String>,
        bump_revision: u64,
        allow_empty: bool,
    ) -> RestoreOptions {
        RestoreOptions {
            point,
            prefix,
            bump_revision,
            allow_empty,
        }
    }
}

/// The point a restore resolved to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolved {
    pub revision: u64,
    pub timestamp_us: u64,
    pub hash: Hash,
    /// The source's last durable revision.
    pub source_head: u64,
    pub source_history: HistoryId,
}

#[derive(Debug, Clone)]
pub struct RestoreOutcome {
    pub resolved: Resolved,
    pub history_id: HistoryId,
    /// Revision of the `restore` commit.
    pub restore_revision: u64,
    pub keys: u64,
    /// Where the state came from: a snapshot file, the base image, or the empty state.
    pub base: String,
    /// Commits replayed after that image.
    pub commits_replayed: u64,
    /// Bytes of source files read.
    pub bytes_read: u64,
    pub seconds: f64,
}

#[derive(Debug, Error)]
pub enum RestoreError {
    #[error("{0}")]
    Invalid(String),
    #[error("{what} is below the source's compaction horizon (revision {horizon})")]
    Compacted { what: String, horizon: u64 },
    #[error("{0}")]
    Future(String),
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("source {}: {reason}", path.display())]
    Source { path: PathBuf, reason: String },
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the restored store failed verification: {0}")]
    Verification(String),
    #[error(
        "nothing to restore: at revision {revision} ({}) {} holds no key; check the point and \
         the prefix, or pass --allow-empty to make an empty store anyway",
        format_timestamp_us(*timestamp_us),
        prefix.as_ref().map_or("the store".to_owned(), |p| format!("prefix {p:?}"))
    )]
    Empty {
        revision: u64,
        timestamp_us: u64,
        prefix: Option<String>,
    },
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> RestoreError + 'a {
    move |source| RestoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// One live segment of the source, as its header and length say.
struct SourceSegment {
    path: PathBuf,
    header: SegmentHeader,
}

/// A data directory opened for reading only.
struct Source {
    dir: PathBuf,
    manifest: Manifest,
    segments: Vec<SourceSegment>,
    bytes_read: u64,
}

impl Source {
    fn open(dir: &Path) -> Result<Source, RestoreError> {
        let manifest_path = dir.join(MANIFEST_FILE);
        let bytes = std::fs::read(&manifest_path).map_err(io("read", &manifest_path))?;
        let manifest = Manifest::decode(&bytes).map_err(|e| RestoreError::Source {
            path: manifest_path.clone(),
            reason: e.to_string(),
        })?;
        let log_dir = dir.join(SEGMENT_DIR);
        let mut seqs: Vec<u64> = std::fs::read_dir(&log_dir)
            .map_err(io("list", &log_dir))?
            .filter_map(|e| e.ok())
            .filter_map(|e| parse_segment_file_name(&e.file_name().to_string_lossy()))
            .filter(|&seq| seq >= manifest.first_live_segment_seq)
            .collect();
        seqs.sort_unstable();
        let mut segments = Vec::with_capacity(seqs.len());
        for (i, &seq) in seqs.iter().enumerate() {
            if seq != manifest.first_live_segment_seq + i as u64 {
                return Err(RestoreError::Source {
                    path: log_dir.join(segment_file_name(seq)),
                    reason: format!(
                        "segment {} is missing",
                        manifest.first_live_segment_seq + i as u64
                    ),
                });
            }
            let path = log_dir.join(segment_file_name(seq));
            let head = RealFs
                .read_at(&path, 0, SEGMENT_HEADER_LEN)
                .map_err(io("read", &path))?;
            let header = SegmentHeader::decode(&head).map_err(|e| RestoreError::Source {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            if header.history_id != manifest.history_id || header.segment_seq != seq {
                return Err(RestoreError::Source {
                    path,
                    reason: "the header names another history or sequence number".into(),
                });
            }
            segments.push(SourceSegment { path, header });
        }
        if segments.is_empty() {
            return Err(RestoreError::Source {
                path: log_dir,
                reason: "no live segment".into(),
            });
        }
        Ok(Source {
            dir: dir.to_path_buf(),
            manifest,
            segments,
            bytes_read: 0,
        })
    }

    fn horizon(&self) -> Head {
        Head {
            revision: self.manifest.horizon_revision,
            timestamp_us: self.manifest.horizon_timestamp_us,
            hash: self.manifest.horizon_hash,
        }
    }

    /// Scans segment `i`, calling `visit` with every commit and its hash. The last segment may end
    /// in a torn tail (the source may be live, or have crashed); every other is read strictly.
    fn scan(
        &mut self,
        i: usize,
        visit: &mut dyn FnMut(&storage_format::commit::Commit, Hash),
    ) -> Result<(), RestoreError> {
        let segment = &self.segments[i];
        let bytes = std::fs::read(&segment.path).map_err(io("read", &segment.path))?;
        self.bytes_read += bytes.len() as u64;
        let policy = if i + 1 == self.segments.len() {
            TailPolicy::AllowTornTail
        } else {
            TailPolicy::Strict
        };
        scan_segment(&bytes, policy, &mut |_, payload| {
            visit(&payload.commit, payload.hash)
        })
        .map_err(|e| RestoreError::Source {
            path: segment.path.clone(),
            reason: e.to_string(),
        })?;
        Ok(())
    }

    /// The source's head: the last commit of the last segment (or where that segment starts).
    fn head(&mut self) -> Result<Head, RestoreError> {
        let last = self.segments.len() - 1;
        let h = self.segments[last].header;
        let mut head = Head {
            revision: h.first_revision - 1,
            timestamp_us: h.prev_timestamp_us,
            hash: h.prev_hash,
        };
        self.scan(last, &mut |c, hash| {
            head = Head {
                revision: c.revision,
                timestamp_us: c.timestamp_us,
                hash,
            }
        })?;
        if head.revision < self.manifest.horizon_revision {
            head = self.horizon();
        }
        Ok(head)
    }

    /// The segment holding revision `r` (or the one after which it ends), by headers alone.
    fn segment_of(&self, revision: u64) -> usize {
        self.segments
            .iter()
            .rposition(|s| s.header.first_revision <= revision)
            .unwrap_or(0)
    }

    /// Chain hash and timestamp of `revision` (horizon ≤ revision ≤ head).
    fn point(&mut self, revision: u64) -> Result<Head, RestoreError> {
        let i = self.segment_of(revision);
        let h = self.segments[i].header;
        let mut found = (revision == h.first_revision - 1).then_some(Head {
            revision,
            timestamp_us: h.prev_timestamp_us,
            hash: h.prev_hash,
        });
        if revision == self.manifest.horizon_revision {
            found = Some(self.horizon());
        }
        if found.is_none() {
            self.scan(i, &mut |c, hash| {
                if c.revision == revision {
                    found = Some(Head {
                        revision,
                        timestamp_us: c.timestamp_us,
                        hash,
                    });
                }
            })?;
        }
        found.ok_or_else(|| RestoreError::Source {
            path: self.dir.clone(),
            reason: format!("revision {revision} is not in the log"),
        })
    }

    /// The last revision at or before `t`.
    fn revision_at(&mut self, t: u64) -> Result<u64, RestoreError> {
        // The segment whose predecessor ended at or before `t` holds the answer, or the answer is
        // its first revision - 1.
        let i = self
            .segments
            .iter()
            .rposition(|s| s.header.prev_timestamp_us <= t)
            .unwrap_or(0);
        let mut answer = self.segments[i].header.first_revision - 1;
        self.scan(i, &mut |c, _| {
            if c.timestamp_us <= t {
                answer = c.revision;
            }
        })?;
        Ok(answer.max(self.manifest.horizon_revision))
    }
}

/// The state being rebuilt: key → its version (hashed: replay updates it once per key per
/// segment; it is sorted once, when written).
type State = std::collections::HashMap<Arc<str>, ImageValue>;

/// What one segment's commits in a revision range did to one key, in order: enough to apply them
/// to the key's state without the commits themselves.
#[derive(Default)]
struct KeyEffect {
    /// Whether a delete happened; then only what follows the last delete matters.
    deleted: bool,
    /// Puts after the last delete (or in all, if none).
    puts: u64,
    /// Revision of the first of those puts.
    first_put: u64,
    /// The last put, unless a delete followed it: (revision, timestamp, value).
    last_put: Option<(u64, u64, Arc<[u8]>)>,
}

/// One segment's effect on every key it touches within the range, and how many commits it held.
struct SegmentEffect {
    keys: std::collections::HashMap<String, KeyEffect>,
    commits: u64,
    prev_hash: Hash,
    last_hash: Hash,
}

/// Reads and checks segment `path` (every record's CRCs, dense revisions, the chain from its
/// header) and reduces its commits in `from..=to` to their effect per key.
fn segment_effect(
    path: &Path,
    last: bool,
    from: u64,
    to: u64,
) -> Result<(SegmentEffect, u64), RestoreError> {
    let bytes = std::fs::read(path).map_err(io("read", path))?;
    let policy = if last {
        TailPolicy::AllowTornTail
    } else {
        TailPolicy::Strict
    };
    let mut effect = SegmentEffect {
        keys: std::collections::HashMap::new(),
        commits: 0,
        prev_hash: [0; 32],
        last_hash: [0; 32],
    };
    let outcome = scan_segment(&bytes, policy, &mut |_, payload| {
        let commit = &payload.commit;
        if commit.revision < from || commit.revision > to {
            return;
        }
        effect.commits += 1;
        for op in &commit.ops {
            let e = match effect.keys.get_mut(op.key()) {
                Some(e) => e,
                None => effect.keys.entry(op.key().to_owned()).or_default(),
            };
            match op {
                Op::Put { value, .. } => {
                    if e.puts == 0 {
                        e.first_put = commit.revision;
                    }
                    e.puts += 1;
                    e.last_put = Some((
                        commit.revision,
                        commit.timestamp_us,
                        Arc::from(value.as_slice()),
                    ));
                }
                Op::Delete { .. } => {
                    *e = KeyEffect {
                        deleted: true,
                        ..KeyEffect::default()
                    };
                }
            }
        }
    })
    .map_err(|e| RestoreError::Source {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    effect.prev_hash = outcome.header.prev_hash;
    effect.last_hash = outcome.last_hash;
    Ok((effect, bytes.len() as u64))
}

/// Applies one segment's effect to the state.
fn apply(state: &mut State, effect: SegmentEffect) {
    for (key, e) in effect.keys {
        let Some((revision, timestamp_us, value)) = e.last_put else {
            state.remove(key.as_str());
            continue;
        };
        if let Some(v) = state.get_mut(key.as_str()) {
            if e.deleted {
                // Deleted and created again within the segment.
                v.create_revision = e.first_put;
                v.version = e.puts;
            } else {
                v.version += e.puts;
            }
            v.revision = revision;
            v.timestamp_us = timestamp_us;
            v.value = value;
        } else {
            let key: Arc<str> = Arc::from(key);
            state.insert(
                key.clone(),
                ImageValue {
                    key,
                    revision,
                    create_revision: e.first_put,
                    version: e.puts,
                    timestamp_us,
                    value,
                },
            );
        }
    }
}

/// Replays the commits in `(base_revision, to]` onto `state`: two threads read, check and reduce
/// alternate segments while this one applies them in order (and checks that each segment's
/// header continues the chain of the one before). Returns the number of commits replayed.
fn replay(
    src: &mut Source,
    state: &mut State,
    base_revision: u64,
    to: u64,
) -> Result<u64, RestoreError> {
    if base_revision >= to {
        return Ok(0);
    }
    let first = src.segment_of(base_revision + 1);
    let last = src.segment_of(to);
    let count = src.segments.len();
    let jobs: Vec<(usize, PathBuf)> = (first..=last)
        .map(|i| (i, src.segments[i].path.clone()))
        .collect();
    const WORKERS: usize = 2;
    let mut replayed = 0u64;
    let mut previous_last: Option<Hash> = None;
    std::thread::scope(|scope| -> Result<(), RestoreError> {
        let mut receivers = Vec::new();
        for w in 0..WORKERS {
            // One finished segment queued per worker bounds memory to a few segments' effects.
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            let mine: Vec<(usize, PathBuf)> =
                jobs.iter().skip(w).step_by(WORKERS).cloned().collect();
            scope.spawn(move || {
                for (i, path) in mine {
                    let result = segment_effect(&path, i + 1 == count, base_revision + 1, to);
                    let failed = result.is_err();
                    if tx.send(result).is_err() || failed {
                        return;
                    }
                }
            });
            receivers.push(rx);
        }
        for (n, (i, path)) in jobs.iter().enumerate() {
            let (effect, bytes) = receivers[n % WORKERS]
                .recv()
                .expect("a worker sends every segment or an error")?;
            src.bytes_read += bytes;
            if let Some(prev) = previous_last
                && prev != effect.prev_hash
            {
                return Err(RestoreError::Source {
                    path: path.clone(),
                    reason: format!("segment {i} does not continue the chain of the one before"),
                });
            }
            previous_last = Some(effect.last_hash);
            replayed += effect.commits;
            apply(state, effect);
        }
        Ok(())
    })?;
    Ok(replayed)
}

/// Resolves the point without writing anything (printed before the restore starts).
pub fn resolve(source: &Path, point: RestorePoint) -> Result<Resolved, RestoreError> {
    let mut src = Source::open(source)?;
    resolve_in(&mut src, point)
}

fn resolve_in(src: &mut Source, point: RestorePoint) -> Result<Resolved, RestoreError> {
    let head = src.head()?;
    let horizon = src.manifest.horizon_revision;
    let revision = match point {
        RestorePoint::Latest => head.revision,
        RestorePoint::Revision(r) if r > head.revision => {
            return Err(RestoreError::Future(format!(
                "revision {r} is after the source's head revision {}",
                head.revision
            )));
        }
        RestorePoint::Revision(r) if r < horizon => {
            return Err(RestoreError::Compacted {
                what: format!("revision {r}"),
                horizon,
            });
        }
        RestorePoint::Revision(r) => r,
        RestorePoint::Time(t) => {
            if t > SystemClock.now_us() {
                return Err(RestoreError::Future(format!(
                    "time {} is in the future",
                    format_timestamp_us(t)
                )));
            }
            if horizon > 0 && t < src.manifest.horizon_timestamp_us {
                return Err(RestoreError::Compacted {
                    what: format!("time {}", format_timestamp_us(t)),
                    horizon,
                });
            }
            src.revision_at(t)?
        }
    };
    let at = if revision == head.revision {
        head
    } else {
        src.point(revision)?
    };
    Ok(Resolved {
        revision,
        timestamp_us: at.timestamp_us,
        hash: at.hash,
        source_head: head.revision,
        source_history: src.manifest.history_id,
    })
}

/// Restores `request.source` at `request.point` into the new directory `request.target`.
/// `on_resolved` is called with the resolved point before anything is written.
pub fn restore(
    request: &RestoreRequest,
    on_resolved: &mut dyn FnMut(&Resolved),
) -> Result<RestoreOutcome, RestoreError> {
    let started = Instant::now();
    check_target(&request.source, &request.target)?;
    if let Some(prefix) = &request.prefix
        && prefix.len() > storage_format::KEY_BYTES_MAX
    {
        return Err(RestoreError::Invalid(format!(
            "prefix is {} bytes, over the maximum {}",
            prefix.len(),
            storage_format::KEY_BYTES_MAX
        )));
    }
    let mut src = Source::open(&request.source)?;
    let resolved = resolve_in(&mut src, request.point)?;
    on_resolved(&resolved);

    let (mut state, base_revision, base) = base_state(&mut src, resolved.revision)?;
    let replayed = replay(&mut src, &mut state, base_revision, resolved.revision)?;
    // Revisions are dense from the first live segment on (a restored source may start above
    // its horizon: that gap holds no commits): every one after the image must have been seen.
    let first_live = src.segments[0].header.first_revision;
    let expected = resolved
        .revision
        .saturating_sub(base_revision.max(first_live - 1));
    if replayed != expected {
        return Err(RestoreError::Source {
            path: src.dir.clone(),
            reason: format!(
                "replayed {replayed} commits after revision {base_revision}, expected {expected}"
            ),
        });
    }
    if let Some(prefix) = &request.prefix {
        state.retain(|key, _| key.starts_with(prefix.as_str()));
    }
    if state.is_empty() && !request.allow_empty {
        return Err(RestoreError::Empty {
            revision: resolved.revision,
            timestamp_us: resolved.timestamp_us,
            prefix: request.prefix.clone(),
        });
    }

    // The new store: base image first, then segment 1 and the MANIFEST (written last).
    let fs: Arc<dyn Fs> = Arc::new(RealFs);
    std::fs::create_dir_all(&request.target).map_err(io("create", &request.target))?;
    let clock = SystemClock;
    let history_id = crate::log::new_history_id();
    let at = Head {
        revision: resolved.revision,
        timestamp_us: resolved.timestamp_us,
        hash: resolved.hash,
    };
    let header = ImageHeader {
        version: FormatVersion::CURRENT,
        history_id,
        revision: at.revision,
        timestamp_us: at.timestamp_us,
        hash: at.hash,
        created_unix_us: clock.now_us(),
        kind: ImageKind::Base,
    };
    let base_seq = 1;
    let mut writer = ImageWriter::create(
        fs.clone(),
        &request.target.join(base_image_file_name(base_seq)),
        header,
    )?;
    let mut sorted: Vec<&ImageValue> = state.values().collect();
    sorted.sort_unstable_by(|a, b| a.key.cmp(&b.key));
    for value in sorted {
        writer.push(&value.entry())?;
    }
    writer.finish()?;
    let restore_revision = (resolved.source_head + 1).max(request.bump_revision);
    crate::log::create_restored(
        &fs,
        &request.target,
        history_id,
        restore_revision,
        at,
        base_seq,
        clock.now_us(),
    )?;

    let detail = serde_json::json!({
        "source_history": hex(&resolved.source_history),
        "source": request.source.display().to_string(),
        "source_head_revision": resolved.source_head,
        "point": {
            "revision": resolved.revision,
            "timestamp": format_timestamp_us(resolved.timestamp_us),
            "hash": hex(&resolved.hash),
        },
        "prefix": request.prefix,
        "keys": state.len(),
    });
    {
        let store = Store::open(&request.target, LogConfig::default())?;
        let commit = store.append(CommitRequest {
            kind: CommitKind::Restore,
            actor: request.actor.clone(),
            reason: format!(
                "restore of history {} at revision {}",
                hex(&resolved.source_history),
                resolved.revision
            ),
            detail: detail.to_string().into_bytes(),
            ops: Vec::new(),
        })?;
        assert_eq!(commit.revision, restore_revision);
        store.close()?;
    }
    verify_restored(&request.target, &state, restore_revision)?;
    Ok(RestoreOutcome {
        resolved,
        history_id,
        restore_revision,
        keys: state.len() as u64,
        base,
        commits_replayed: replayed,
        bytes_read: src.bytes_read,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The newest valid image at or before `revision`: a snapshot, else the base image, else the
/// empty state (only when history was never compacted). Damaged snapshots are skipped with a
/// warning (the source is not modified).
fn base_state(src: &mut Source, revision: u64) -> Result<(State, u64, String), RestoreError> {
    let horizon = src.manifest.horizon_revision;
    let snap_dir = src.dir.join(SNAPSHOT_DIR);
    let mut snapshots: Vec<(u64, PathBuf)> = match std::fs::read_dir(&snap_dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                parse_snapshot_file_name(&name).map(|r| (r, e.path()))
            })
            .filter(|(r, _)| *r >= horizon && *r <= revision)
            .collect(),
        Err(_) => Vec::new(),
    };
    snapshots.sort_by_key(|(r, _)| std::cmp::Reverse(*r));
    let mut candidates: Vec<PathBuf> = snapshots.into_iter().map(|(_, p)| p).collect();
    if src.manifest.base_image_seq != 0 {
        candidates.push(
            src.dir
                .join(base_image_file_name(src.manifest.base_image_seq)),
        );
    }
    for path in candidates {
        match read_image(&path) {
            Ok(image)
                if image.header.history_id == src.manifest.history_id
                    && image.header.revision <= revision
                    && image.header.revision >= horizon =>
            {
                src.bytes_read += std::fs::metadata(&path).map_or(0, |m| m.len());
                let state = image
                    .entries
                    .into_iter()
                    .map(|v| (v.key.clone(), v))
                    .collect();
                return Ok((
                    state,
                    image.header.revision,
                    path.file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                ));
            }
            Ok(_) => {
                tracing::warn!(file = %path.display(), "image does not belong here; skipped")
            }
            Err(error) => tracing::warn!(%error, "damaged image skipped"),
        }
    }
    if horizon > 0 {
        return Err(RestoreError::Source {
            path: src.dir.clone(),
            reason: "the base image the MANIFEST names is missing or damaged".into(),
        });
    }
    Ok((State::new(), 0, "empty state".into()))
}

fn check_target(source: &Path, target: &Path) -> Result<(), RestoreError> {
    if !source.join(MANIFEST_FILE).exists() {
        return Err(RestoreError::Invalid(format!(
            "{} is not an llmcm data directory (no MANIFEST)",
            source.display()
        )));
    }
    if target.exists() {
        let mut entries = std::fs::read_dir(target).map_err(io("list", target))?;
        if entries.next().is_some() {
            return Err(RestoreError::Invalid(format!(
                "{} is not empty; restore builds a new directory",
                target.display()
            )));
        }
    }
    if let (Ok(a), Ok(b)) = (source.canonicalize(), target.canonicalize())
        && a == b
    {
        return Err(RestoreError::Invalid(
            "the target is the source directory".into(),
        ));
    }
    Ok(())
}

/// Reopens the restored store, verifies its chain, and compares every key with `state`.
fn verify_restored(dir: &Path, state: &State, restore_revision: u64) -> Result<(), RestoreError> {
    let store = Store::open(dir, LogConfig::default())?;
    let chain = store
        .verify_chain(None, None)
        .map_err(|e| RestoreError::Verification(e.to_string()))?;
    if !chain.ok() || chain.to != restore_revision {
        return Err(RestoreError::Verification(format!(
            "chain verification: {:?} (to {})",
            chain.failure, chain.to
        )));
    }
    let mut after: Option<String> = None;
    let mut seen = 0usize;
    loop {
        let page = store
            .list(
                "",
                Point::Latest,
                after.as_deref(),
                crate::store::PAGE_ITEMS_MAX,
            )
            .map_err(|e| RestoreError::Verification(e.to_string()))?;
        for item in &page.items {
            let expected = state.get(&*item.key);
            let same = expected.is_some_and(|e| {
                *e.value == *item.value.as_bytes()
                    && e.revision == item.revision
                    && e.create_revision == item.create_revision
                    && e.version == item.version
                    && e.timestamp_us == item.timestamp_us
            });
            if !same {
                return Err(RestoreError::Verification(format!(
                    "key {} differs from the source's state",
                    item.key
                )));
            }
            seen += 1;
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    if seen != state.len() {
        return Err(RestoreError::Verification(format!(
            "{seen} keys readable, {} expected",
            state.len()
        )));
    }
    store.close()?;
    Ok(())
}
