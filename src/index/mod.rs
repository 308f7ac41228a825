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
mod table;

use table::{KeySlot, KeyTable, TableKey};

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use parking_lot::RwLock;
use storage_format::commit::{Commit, Op};
use storage_format::index::{
    DELETE_FLAG, DIR_BLOCK_LEN_MAX, DirBlock, DirFence, INDEX_HEADER_LEN, NO_ENTRY, REV_ENTRY_LEN,
    RevEntry, VERSION_ENTRY_LEN, VersionEntry, skew_jump,
};
use storage_format::record::RECORD_HEADER_LEN;
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

/// A mapped index file: `count` fixed-size entries after the header.
#[derive(Default)]
struct Mapped {
    map: Option<Mmap>,
    count: u64,
}

impl Mapped {
    fn entry(&self, i: u64, len: usize) -> &[u8] {
        let map = self
            .map
            .as_ref()
            .expect("a mapped file holds the entries counted");
        let start = storage_format::index::INDEX_HEADER_LEN + i as usize * len;
        &map[start..start + len]
    }
}

/// The version directory file, mapped up to the checkpoint.
#[derive(Default, Clone)]
struct Dirs {
    map: Option<Arc<Mmap>>,
    /// `dirs-G.idx`'s G (0: no file yet).
    generation: u64,
    /// Valid bytes after the header, and how many of them are current blocks.
    bytes: u64,
    live: u64,
}

impl Dirs {
    /// The mapped bytes from offset `dir` to the end of the longest block that can start there
    /// (what a read prefetches), if `dir` is in the file.
    #[inline]
    fn block_bytes(&self, dir: u64) -> Option<&[u8]> {
        let map = self.map.as_deref()?;
        let end = (INDEX_HEADER_LEN as u64 + self.bytes).min(map.len() as u64) as usize;
        let start = usize::try_from(dir).ok()?;
        if start < INDEX_HEADER_LEN || start >= end {
            return None;
        }
        Some(&map[start..end.min(start + DIR_BLOCK_LEN_MAX)])
    }

    /// Key `key_id`'s block at offset `dir`, checked.
    fn block(&self, key_id: u32, dir: u64) -> Result<DirBlock<'_>, IndexError> {
        let bytes = self.block_bytes(dir).ok_or_else(|| {
            IndexError::Inconsistent(format!(
                "key {key_id} has entries in the files but no directory block (offset {dir})"
            ))
        })?;
        let block = DirBlock::open(bytes).map_err(dirs_corrupt)?;
        if block.key_id != key_id {
            return Err(IndexError::Inconsistent(format!(
                "directory block at {dir} belongs to key {}, not {key_id}",
                block.key_id
            )));
        }
        Ok(block)
    }
}

fn dirs_corrupt(source: DecodeError) -> IndexError {
    IndexError::Corrupt {
        what: "dirs-G.idx",
        source,
    }
}

/// Where a walk through a key's in-memory entries ends.
enum Walk {
    /// The answer.
    Done(Found),
    /// The next entry to read is this one, in the files.
    InFiles(u64),
}

/// Where a search of a key's version directory leaves a point read.
enum DirStep {
    /// The answer.
    Done(Found),
    /// Descend from this entry (a long history's directory keeps only every `step`-th version).
    From(u64),
}

/// Asks the CPU to start loading every cache line of `bytes` (a hint: no fault, no effect on
/// results), so the misses of a block's lines overlap instead of following one another.
#[inline]
fn prefetch(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    for line in bytes.chunks(64) {
        // SAFETY: a prefetch never faults and has no effect on program state; SSE (which
        // provides it) is part of the x86_64 baseline.
        unsafe {
            std::arch::x86_64::_mm_prefetch(
                line.as_ptr().cast::<i8>(),
                std::arch::x86_64::_MM_HINT_T0,
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
}

/// Everything behind the index lock.
pub struct State {
    first_revision: u64,
    through_revision: u64,
    /// Timestamp of `through_revision`'s commit (0 when unknown: a lower bound is enough).
    head_timestamp_us: u64,
    versions: Mapped,
    revs: Mapped,
    versions_tail: Vec<VersionEntry>,
    tail_values: Vec<Option<Arc<[u8]>>>,
    revs_tail: Vec<RevEntry>,
    keys: Vec<Arc<str>>,
    /// Key → id and newest entry, for point reads (`heads` serves reads by id).
    key_ids: KeyTable,
    sorted: BTreeMap<Arc<str>, u32>,
    keys_checkpointed: usize,
    keys_bytes: u64,
    keys_crc: u32,
    /// Per key id: the index of its newest entry and a copy of that entry, so a descent (and a
    /// write's parent lookup) starts without touching the mapped file.
    heads: Vec<(u64, VersionEntry)>,
    /// Per key id: the file offset of its block in `dirs` (0 while none of its entries is in the
    /// files). Also in its `KeySlot`.
    dir_of: Vec<u64>,
    dirs: Dirs,
    /// Set when indexing a commit failed (a damaged mapped entry): reads fail until a rebuild.
    broken: Option<String>,
    /// The compaction horizon (revision 0: none) and the values of the base image by key id:
    /// every entry at or before the horizon reads its value from here (FORMAT.md "Images").
    horizon: Horizon,
    base_values: HashMap<u32, Arc<[u8]>>,
}

/// The compaction horizon H as the index sees it: points before it are gone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Horizon {
    pub revision: u64,
    pub timestamp_us: u64,
}

impl State {
    fn empty(first_revision: u64) -> State {
        State {
            first_revision,
            through_revision: first_revision - 1,
            head_timestamp_us: 0,
            versions: Mapped::default(),
            revs: Mapped::default(),
            versions_tail: Vec::new(),
            tail_values: Vec::new(),
            revs_tail: Vec::new(),
            keys: Vec::new(),
            key_ids: KeyTable::default(),
            sorted: BTreeMap::new(),
            keys_checkpointed: 0,
            keys_bytes: 0,
            keys_crc: 0,
            heads: Vec::new(),
            dir_of: Vec::new(),
            dirs: Dirs::default(),
            broken: None,
            horizon: Horizon::default(),
            base_values: HashMap::new(),
        }
    }

    /// The compaction horizon.
    pub(crate) fn horizon(&self) -> Horizon {
        self.horizon
    }

    /// The first revision whose commit record is still in the log.
    pub(crate) fn first_live_revision(&self) -> u64 {
        self.first_revision.max(self.horizon.revision + 1)
    }

    /// Installs a base image over entries that already index the history up to its revision:
    /// each image entry must be exactly the key's version at the horizon.
    fn install_base(&mut self, image: &Image) -> Result<(), IndexError> {
        let values = self.base_values_for(image)?;
        self.set_base_values(image, values);
        Ok(())
    }

    fn set_base_values(&mut self, image: &Image, values: HashMap<u32, Arc<[u8]>>) {
        self.base_values = values;
        self.horizon = Horizon {
            revision: image.header.revision,
            timestamp_us: image.header.timestamp_us,
        };
    }

    /// Checks every image entry against the key's version at the image's revision (read-only:
    /// versions at or before a durable revision never change) and maps key ids to the values.
    fn base_values_for(&self, image: &Image) -> Result<HashMap<u32, Arc<[u8]>>, IndexError> {
        let mut values = HashMap::with_capacity(image.entries.len());
        self.base_values_into(image.header.revision, &image.entries, &mut values)?;
        Ok(values)
    }

    /// `base_values_for` over some of an image's entries, into `values`.
    fn base_values_into(
        &self,
        revision: u64,
        entries: &[crate::image::ImageValue],
        values: &mut HashMap<u32, Arc<[u8]>>,
    ) -> Result<(), IndexError> {
        let image_revision = revision;
        let bound = Bound::Revision(revision);
        for e in entries {
            let found = match self.lookup_key(&e.key, bound)? {
                Some((id, Some((_, entry)))) if !entry.is_delete() => Some((id, entry)),
                _ => None,
            };
            match found {
                Some((id, entry))
                    if entry.revision == e.revision
                        && entry.create_revision == e.create_revision
                        && entry.version as u64 == e.version =>
                {
                    values.insert(id, e.value.clone());
                }
                _ => {
                    return Err(IndexError::Inconsistent(format!(
                        "base image key {:?} does not match the index at revision {image_revision}",
                        e.key
                    )));
                }
            }
        }
        Ok(())
    }

    /// Seeds an empty index with a base image: each key's first entry is its state at the
    /// horizon, with its value in the image (segment 0, offset 0).
    fn seed_base(&mut self, image: &Image) {
        assert_eq!(self.version_count(), 0, "a base image seeds an empty index");
        for e in &image.entries {
            let key_id = self.intern(&e.key);
            let index = self.version_count();
            let entry = VersionEntry {
                revision: e.revision,
                timestamp_us: e.timestamp_us,
                create_revision: e.create_revision,
                parent: NO_ENTRY,
                jump: index,
                jump_revision: e.revision,
                jump_timestamp_us: e.timestamp_us,
                depth: 0,
                key_id,
                version: e.version as u32,
                segment_seq: 0,
                value_offset: 0,
                value_len: e.value.len() as u32,
            };
            self.versions_tail.push(entry);
            self.tail_values.push(Some(e.value.clone()));
            self.heads[key_id as usize] = (index, entry);
            if let Some(slot) = self.key_ids.get_mut(&*e.key) {
                slot.head_index = index;
                slot.head = entry;
            }
            self.base_values.insert(key_id, e.value.clone());
        }
        self.horizon = Horizon {
            revision: image.header.revision,
            timestamp_us: image.header.timestamp_us,
        };
    }

    /// Fails if indexing stopped at a damaged entry.
    pub(crate) fn check_usable(&self) -> Result<(), IndexError> {
        match &self.broken {
            Some(reason) => Err(IndexError::Inconsistent(reason.clone())),
            None => Ok(()),
        }
    }

    fn version_count(&self) -> u64 {
        self.versions.count + self.versions_tail.len() as u64
    }

    /// Version entry `i`, CRC-checked.
    pub(crate) fn version(&self, i: u64) -> Result<VersionEntry, IndexError> {
        if i < self.versions.count {
            VersionEntry::decode(self.versions.entry(i, VERSION_ENTRY_LEN)).map_err(|source| {
                IndexError::Corrupt {
                    what: "versions.idx",
                    source,
                }
            })
        } else {
            let t = (i - self.versions.count) as usize;
            self.versions_tail
                .get(t)
                .copied()
                .ok_or_else(|| IndexError::Inconsistent(format!("no version entry {i}")))
        }
    }

    /// Where revision `revision`'s record is, and its timestamp.
    pub(crate) fn rev(&self, revision: u64) -> Result<RevEntry, IndexError> {
        if revision < self.first_revision || revision > self.through_revision {
            return Err(IndexError::Inconsistent(format!(
                "revision {revision} is outside {} to {}",
                self.first_revision, self.through_revision
            )));
        }
        let i = revision - self.first_revision;
        if i < self.revs.count {
            RevEntry::decode(self.revs.entry(i, REV_ENTRY_LEN)).map_err(|source| {
                IndexError::Corrupt {
                    what: "revs.idx",
                    source,
                }
            })
        } else {
            Ok(self.revs_tail[(i - self.revs.count) as usize])
        }
    }

    /// Whether `revision`'s entries are in the files — and so its record is in a sealed segment.
    pub(crate) fn is_checkpointed(&self, revision: u64) -> bool {
        revision >= self.first_revision && revision - self.first_revision < self.revs.count
    }

    pub(crate) fn through_revision(&self) -> u64 {
        self.through_revision
    }

    /// The timestamp of the newest indexed commit, or less (0 when not known). Every later
    /// commit is stamped after it.
    pub(crate) fn head_timestamp_us(&self) -> u64 {
        self.head_timestamp_us
    }

    /// The last revision whose timestamp is at or before `at_us` (`first_revision - 1` if none).
    pub(crate) fn revision_at(&self, at_us: u64) -> Result<u64, IndexError> {
        let (mut lo, mut hi) = (self.first_revision, self.through_revision + 1);
        // Invariant: revisions below `lo` are at or before `at_us`; from `hi` on, after it.
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.rev(mid)?.timestamp_us <= at_us {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo - 1)
    }

    pub(crate) fn key_id(&self, key: &str) -> Option<u32> {
        self.key_ids.get(key).map(|slot| slot.id)
    }

    pub(crate) fn key(&self, key_id: u32) -> &Arc<str> {
        &self.keys[key_id as usize]
    }

    /// Keys from `start` (inclusive) on, in order.
    pub(crate) fn keys_from<'a>(
        &'a self,
        start: &str,
    ) -> impl Iterator<Item = (&'a Arc<str>, u32)> + 'a {
        self.sorted
            .range::<str, _>((std::ops::Bound::Included(start), std::ops::Bound::Unbounded))
            .map(|(k, id)| (k, *id))
    }

    /// The newest revision that wrote (put or deleted) any key starting with `prefix`; 0 if none.
    /// O(keys under the prefix).
    pub(crate) fn newest_revision_under(&self, prefix: &str) -> u64 {
        self.keys_from(prefix)
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(_, id)| self.heads[id as usize].1.revision)
            .max()
            .unwrap_or(0)
    }

    /// The key's newest version within `bound`, with its entry index; deletes included.
    ///
    /// The entry's links (`parent`, `jump` and the jump's revision and time) are not always
    /// filled in — an answer found in the version directory has none; read `version(index)` for
    /// them. Every other field is the entry's.
    pub(crate) fn lookup(
        &self,
        key_id: u32,
        bound: Bound,
    ) -> Result<Option<(u64, VersionEntry)>, IndexError> {
        let (index, entry) = self.heads[key_id as usize];
        self.descend(key_id, self.dir_of[key_id as usize], index, entry, bound)
    }

    /// `lookup` by key: one hash-table probe yields the id, the newest entry and the directory
    /// block together. `None` when the key was never written.
    pub(crate) fn lookup_key(
        &self,
        key: &str,
        bound: Bound,
    ) -> Result<Option<(u32, Found)>, IndexError> {
        let Some(slot) = self.key_ids.get(key) else {
            return Ok(None);
        };
        let found = self.descend(slot.id, slot.dir, slot.head_index, slot.head, bound)?;
        Ok(Some((slot.id, found)))
    }

    /// From the key's newest entry: through the in-memory entries (the active segment's), then —
    /// if the answer is older — the key's directory block in one search.
    fn descend(
        &self,
        key_id: u32,
        dir: u64,
        index: u64,
        entry: VersionEntry,
        bound: Bound,
    ) -> Result<Found, IndexError> {
        let next = match self.walk(key_id, index, entry, bound, self.versions.count)? {
            Walk::Done(found) => return Ok(found),
            Walk::InFiles(next) => next,
        };
        if let Some(block) = self.dirs.block_bytes(dir) {
            prefetch(block);
        }
        match self.search_dir(key_id, dir, next, bound)? {
            DirStep::Done(found) => Ok(found),
            DirStep::From(from) => {
                let entry = self.version(from)?;
                match self.walk(key_id, from, entry, bound, 0)? {
                    Walk::Done(found) => Ok(found),
                    Walk::InFiles(_) => unreachable!("no entry index is below 0"),
                }
            }
        }
    }

    /// Skew-binary descent from entry `index`: O(log versions) steps to the newest admitted
    /// ancestor, reading one entry per step (each entry carries its jump target's revision and
    /// time) — until the answer, or until the next entry to read is below `files_end` (0: never
    /// stop; `versions.count`: stop where the entries in the files begin).
    #[inline(always)]
    fn walk(
        &self,
        key_id: u32,
        mut index: u64,
        mut entry: VersionEntry,
        bound: Bound,
        files_end: u64,
    ) -> Result<Walk, IndexError> {
        loop {
            match step(key_id, index, &entry, bound)? {
                Step::Done(found) => return Ok(Walk::Done(found)),
                Step::Next(next) if next < files_end => return Ok(Walk::InFiles(next)),
                Step::Next(next) => {
                    index = next;
                    entry = self.version(index)?;
                }
            }
        }
    }

    /// The newest version within `bound` among the key's entries in the files, from its
    /// directory block. `fallback` is an entry of the key in the files that a descent may start
    /// from when the answer is past the block's last fence.
    fn search_dir(
        &self,
        key_id: u32,
        dir: u64,
        fallback: u64,
        bound: Bound,
    ) -> Result<DirStep, IndexError> {
        let block = self.dirs.block(key_id, dir)?;
        // Fences are in depth order, so their revisions grow and their times never fall:
        // find the last one the bound admits.
        let (mut lo, mut hi) = (0usize, block.fences);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let admitted = match bound {
                Bound::Revision(r) => block.revision(mid) <= r,
                Bound::Time(t) => block.timestamp(mid) <= t,
            };
            if admitted {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let Some(k) = lo.checked_sub(1) else {
            // Not even the key's first version: it did not exist yet.
            return Ok(DirStep::Done(None));
        };
        if block.step == 1 {
            // Every version is a fence: fence k is the answer.
            let fence = block.fence(k).map_err(dirs_corrupt)?;
            return Ok(DirStep::Done(Some((
                fence.index,
                linkless_entry(key_id, k as u32, &fence),
            ))));
        }
        // The answer is fence k or a version after it, before fence k + 1: descend from there.
        Ok(DirStep::From(if k + 1 < block.fences {
            block.fence(k + 1).map_err(dirs_corrupt)?.index
        } else {
            fallback
        }))
    }

    /// `lookup` for many keys at once, stage by stage: each stage first touches what every key
    /// is about to read, so the cache misses of different keys overlap instead of adding up.
    /// Results are in `key_ids` order.
    pub(crate) fn lookup_many(
        &self,
        key_ids: &[u32],
        bound: Bound,
        out: &mut Vec<Option<(u64, VersionEntry)>>,
    ) -> Result<(), IndexError> {
        out.clear();
        // The newest entries and the in-memory ones: most reads end here or at the directory.
        let mut at_dir: Vec<(usize, u64)> = Vec::new();
        for (slot, &id) in key_ids.iter().enumerate() {
            let (index, entry) = self.heads[id as usize];
            match self.walk(id, index, entry, bound, self.versions.count)? {
                Walk::Done(found) => out.push(found),
                Walk::InFiles(next) => {
                    out.push(None);
                    at_dir.push((slot, next));
                }
            }
        }
        for &(slot, _) in &at_dir {
            if let Some(block) = self.dirs.block_bytes(self.dir_of[key_ids[slot] as usize]) {
                prefetch(block);
            }
        }
        let mut cursors: Vec<(usize, u64)> = Vec::new();
        for &(slot, fallback) in &at_dir {
            let id = key_ids[slot];
            match self.search_dir(id, self.dir_of[id as usize], fallback, bound)? {
                DirStep::Done(found) => out[slot] = found,
                DirStep::From(index) => cursors.push((slot, index)),
            }
        }
        // Long histories: descents from their fences, in lockstep.
        while !cursors.is_empty() {
            let mut sink = 0u8;
            for &(_, index) in &cursors {
                if index < self.versions.count {
                    sink ^= self.versions.entry(index, VERSION_ENTRY_LEN)[0];
                }
            }
            std::hint::black_box(sink);
            let mut i = 0;
            while i < cursors.len() {
                let (slot, index) = cursors[i];
                let entry = self.version(index)?;
                match step(key_ids[slot], index, &entry, bound)? {
                    Step::Done(found) => {
                        out[slot] = found;
                        cursors.swap_remove(i);
                    }
                    Step::Next(next) => {
                        cursors[i].1 = next;
                        i += 1;
                    }
                }
            }
        }
        Ok(())
    }

    /// The key's ancestor (or itself) at `depth`, from entry `index`.
    pub(crate) fn ancestor_at_depth(
        &self,
        mut index: u64,
        depth: u32,
    ) -> Result<(u64, VersionEntry), IndexError> {
        let mut entry = self.version(index)?;
        assert!(entry.depth >= depth);
        while entry.depth > depth {
            let jump = self.version(entry.jump)?;
            (index, entry) = if entry.jump != index && jump.depth >= depth {
                (entry.jump, jump)
            } else {
                (entry.parent, self.version(entry.parent)?)
            };
        }
        Ok((index, entry))
    }

    /// The value of a put entry.
    pub(crate) fn value(
        &self,
        index: u64,
        entry: &VersionEntry,
        segments: &SegmentMaps,
    ) -> Result<ValueBytes, IndexError> {
        self.value_memo(index, entry, segments, &mut None)
    }

    /// `value`, remembering the last segment mapping used (reads of many keys mostly hit one).
    pub(crate) fn value_memo(
        &self,
        index: u64,
        entry: &VersionEntry,
        segments: &SegmentMaps,
        memo: &mut Option<(u32, Arc<Mmap>)>,
    ) -> Result<ValueBytes, IndexError> {
        assert!(!entry.is_delete());
        if entry.revision <= self.horizon.revision {
            // At or before the horizon: the segment holding it may be gone; the base image
            // holds exactly this version (the newest at or before the horizon).
            return self
                .base_values
                .get(&entry.key_id)
                .map(|v| ValueBytes::Shared(v.clone()))
                .ok_or_else(|| {
                    IndexError::Inconsistent(format!(
                        "key {} has a version at revision {} but no base image value",
                        entry.key_id, entry.revision
                    ))
                });
        }
        if index >= self.versions.count {
            let t = (index - self.versions.count) as usize;
            return Ok(ValueBytes::Shared(
                self.tail_values[t].clone().expect("a put has its value"),
            ));
        }
        let map = match memo {
            Some((seq, map)) if *seq == entry.segment_seq => map.clone(),
            _ => {
                let map = segments.map(entry.segment_seq as u64)?;
                *memo = Some((entry.segment_seq, map.clone()));
                map
            }
        };
        let (offset, len) = value_range(entry, map.len())?;
        Ok(ValueBytes::Mapped { map, offset, len })
    }

    /// `value`, lent to `f` instead of returned: a mapped value is read under the mappings'
    /// lock, so no reference count is touched (the hottest read, `GET` of one key, uses it).
    pub(crate) fn with_value<R>(
        &self,
        index: u64,
        entry: &VersionEntry,
        segments: &SegmentMaps,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R, IndexError> {
        if entry.revision <= self.horizon.revision || index >= self.versions.count {
            return Ok(f(self.value(index, entry, segments)?.as_bytes()));
        }
        segments.with_map(entry.segment_seq as u64, |map| {
            let (offset, len) = value_range(entry, map.len())?;
            Ok(f(&map[offset..offset + len]))
        })
    }

    fn intern(&mut self, key: &str) -> u32 {
        if let Some(slot) = self.key_ids.get(key) {
            return slot.id;
        }
        let id = self.keys.len() as u32;
        let key: Arc<str> = Arc::from(key);
        self.keys.push(key.clone());
        self.key_ids.insert(
            TableKey::new(&key),
            KeySlot {
                id,
                head_index: NO_ENTRY,
                head: NO_HEAD,
                dir: 0,
            },
        );
        self.sorted.insert(key, id);
        self.heads.push((NO_ENTRY, NO_HEAD));
        self.dir_of.push(0);
        id
    }

    /// Adds one durable commit.
    fn apply(
        &mut self,
        commit: &Commit,
        segment_seq: u64,
        record_offset: u64,
    ) -> Result<(), IndexError> {
        assert_eq!(
            commit.revision,
            self.through_revision + 1,
            "commits arrive in order"
        );
        self.revs_tail.push(RevEntry {
            timestamp_us: commit.timestamp_us,
            segment_seq: segment_seq as u32,
            record_offset: record_offset as u32,
        });
        let value_base = record_offset + RECORD_HEADER_LEN as u64;
        for (op, position) in commit.ops.iter().zip(commit.value_offsets()) {
            let key_id = self.intern(op.key());
            let index = self.version_count();
            let (parent_index, parent_entry) = self.heads[key_id as usize];
            let parent = (parent_index != NO_ENTRY).then_some(parent_entry);
            let (depth, jump, jump_revision, jump_timestamp_us) = match &parent {
                None => (0, index, commit.revision, commit.timestamp_us),
                Some(p) => {
                    let pj = self.version(p.jump)?;
                    let pjj = self.version(pj.jump)?;
                    let jump = skew_jump(parent_index, p.depth, pj.depth, pj.jump, pjj.depth);
                    let target = if jump == parent_index { *p } else { pjj };
                    (p.depth + 1, jump, target.revision, target.timestamp_us)
                }
            };
            let live_parent = parent.filter(|p| !p.is_delete());
            let (create_revision, version, value_offset, value_len, value) = match op {
                Op::Put { value, .. } => {
                    let (offset, len) = position.expect("a put has a value position");
                    let (create, version) = match live_parent {
                        Some(p) => (p.create_revision, p.version + 1),
                        None => (commit.revision, 1),
                    };
                    let value_offset = value_base + offset as u64;
                    (
                        create,
                        version,
                        value_offset as u32,
                        len as u32,
                        Some(Arc::<[u8]>::from(value.as_slice())),
                    )
                }
                Op::Delete { .. } => (0, 0, 0, DELETE_FLAG, None),
            };
            let entry = VersionEntry {
                revision: commit.revision,
                timestamp_us: commit.timestamp_us,
                create_revision,
                parent: parent_index,
                jump,
                jump_revision,
                jump_timestamp_us,
                depth,
                key_id,
                version,
                segment_seq: segment_seq as u32,
                value_offset,
                value_len,
            };
            self.versions_tail.push(entry);
            self.tail_values.push(value);
            self.heads[key_id as usize] = (index, entry);
            if let Some(slot) = self.key_ids.get_mut(op.key()) {
                slot.head_index = index;
                slot.head = entry;
            }
        }
        self.through_revision = commit.revision;
        self.head_timestamp_us = commit.timestamp_us;
        Ok(())
    }
}

/// One step of a descent from `entry` (at `index`, of key `key_id`).
enum Step {
    /// The search ends: the newest admitted version, or none.
    Done(Found),
    /// Read this entry next.
    Next(u64),
}

/// Decides a descent's step from the entry it holds: the entry itself if the bound admits it,
/// nothing if it has no parent, else the jump target (decided from the jump's revision and time
/// stored in the entry) when that is still too new, or the parent.
#[inline]
fn step(key_id: u32, index: u64, entry: &VersionEntry, bound: Bound) -> Result<Step, IndexError> {
    if entry.key_id != key_id {
        return Err(IndexError::Inconsistent(format!(
            "entry {index} belongs to key {}, not {key_id}",
            entry.key_id
        )));
    }
    if bound.admits(entry.revision, entry.timestamp_us) {
        return Ok(Step::Done(Some((index, *entry))));
    }
    if entry.parent == NO_ENTRY {
        return Ok(Step::Done(None));
    }
    let jump_is_too_new =
        entry.jump != index && !bound.admits(entry.jump_revision, entry.jump_timestamp_us);
    Ok(Step::Next(if jump_is_too_new {
        entry.jump
    } else {
        entry.parent
    }))
}

/// The entry a directory fence answers with: every field but the links (`parent` none, `jump`
/// itself), which the directory does not keep.
fn linkless_entry(key_id: u32, depth: u32, fence: &DirFence) -> VersionEntry {
    VersionEntry {
        revision: fence.revision,
        timestamp_us: fence.timestamp_us,
        create_revision: fence.create_revision,
        parent: NO_ENTRY,
        jump: fence.index,
        jump_revision: fence.revision,
        jump_timestamp_us: fence.timestamp_us,
        depth,
        key_id,
        version: fence.version,
        segment_seq: fence.segment_seq,
        value_offset: fence.value_offset,
        value_len: fence.value_len,
    }
}

/// Where `entry`'s value lies in its segment's mapping of `map_len` bytes.
fn value_range(entry: &VersionEntry, map_len: usize) -> Result<(usize, usize), IndexError> {
    let (offset, len) = (entry.value_offset as usize, entry.value_len() as usize);
    if offset + len > map_len {
        return Err(IndexError::Inconsistent(format!(
            "value at {offset}+{len} is past the end of segment {}",
            entry.segment_seq
        )));
    }
    Ok((offset, len))
}

/// Lazily created read-only mappings of sealed segments.
pub struct SegmentMaps {
    log_dir: PathBuf,
    /// Indexed by segment sequence number.
    maps: RwLock<Vec<Option<Arc<Mmap>>>>,
}

impl SegmentMaps {
    fn new(data_dir: &Path) -> Self {
        SegmentMaps {
            log_dir: data_dir.join(SEGMENT_DIR),
            maps: RwLock::new(Vec::new()),
        }
    }

    /// `f` on the mapping of sealed segment `seq`, under the mappings' read lock when it exists.
    pub fn with_map<R>(
        &self,
        seq: u64,
        f: impl FnOnce(&Mmap) -> Result<R, IndexError>,
    ) -> Result<R, IndexError> {
        if let Some(Some(map)) = self.maps.read().get(seq as usize) {
            return f(map);
        }
        f(&*self.map(seq)?)
    }

    /// The mapping of sealed segment `seq`. Only sealed segments are ever mapped: they are synced
    /// and never written or truncated again (FORMAT.md "Assumptions about the disk").
    pub fn map(&self, seq: u64) -> Result<Arc<Mmap>, IndexError> {
        if let Some(Some(map)) = self.maps.read().get(seq as usize) {
            return Ok(map.clone());
        }
        let path = self.log_dir.join(segment_file_name(seq));
        let file = std::fs::File::open(&path).map_err(|source| IndexError::Io {
            path: path.clone(),
            source,
        })?;
        // SAFETY: the file is a sealed segment: it was synced before its successor existed and
        // is never written, truncated or renamed over while the store runs; the mapping is
        // read-only. A media error on a mapped page would be a SIGBUS, which is why the active
        // segment is never mapped.
        let map = unsafe { Mmap::map(&file) }.map_err(|source| IndexError::Io { path, source })?;
        // As for the index files: huge pages where the page cache has 2 MiB folios (segments
        // read in through this mapping); point reads then miss the TLB far less. Advice only.
        let _ = map.advise(memmap2::Advice::HugePage);
        let map = Arc::new(map);
        let mut maps = self.maps.write();
        if maps.len() <= seq as usize {
            maps.resize(seq as usize + 1, None);
        }
        Ok(maps[seq as usize].get_or_insert(map).clone())
    }

    /// Re-reads sealed segment `seq` into the page cache in 2 MiB folios, piece by piece.
    ///
    /// The pages a segment's appends put in the page cache are 4 KiB folios; a point read of a
    /// value in them takes a page walk through 4 KiB page tables (far costlier under
    /// virtualization), where a segment read back in through the huge-page-advised mapping gets
    /// 2 MiB folios. So after a roll, each 2 MiB piece of the sealed, synced segment is dropped
    /// from this mapping and from the page cache, then read back at once. A reader touching the
    /// piece meanwhile reads it from the file (a page fault, the same bytes). Best effort: pages
    /// that stay mapped elsewhere stay as they are. Returns the bytes read back.
    pub fn reread(&self, seq: u64) -> Result<u64, IndexError> {
        const PIECE: usize = 2 << 20;
        let map = self.map(seq)?;
        let path = self.log_dir.join(segment_file_name(seq));
        let io = |source: std::io::Error| IndexError::Io {
            path: path.clone(),
            source,
        };
        let file = std::fs::File::open(&path).map_err(io)?;
        let mut reread = 0u64;
        for offset in (0..map.len() / PIECE).map(|piece| piece * PIECE) {
            // SAFETY: a shared, read-only mapping of a file nobody writes: dropping its page
            // table entries only makes the next access fault the unchanged bytes back in.
            unsafe {
                map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, PIECE)
            }
            .map_err(io)?;
            rustix::fs::fadvise(
                &file,
                offset as u64,
                std::num::NonZeroU64::new(PIECE as u64),
                rustix::fs::Advice::DontNeed,
            )
            .map_err(|e| io(e.into()))?;
            map.advise_range(memmap2::Advice::PopulateRead, offset, PIECE)
                .map_err(io)?;
            reread += PIECE as u64;
        }
        Ok(reread)
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
                files::checkpoint(&self.dir, &self.history_id, state)?;
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
        files::write(&self.dir, &self.history_id, &prepared)?;
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
