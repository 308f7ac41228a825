//! The index state behind the lock: the mapped files, the in-memory tail, the key table and
//! the version directory, and the descent that answers a point read (jump pointers, then the
//! directory block of a key).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use memmap2::Mmap;
use storage_format::commit::{Commit, Op};
use storage_format::index::*;
use storage_format::record::RECORD_HEADER_LEN;
use storage_format::DecodeError;

use super::table::{KeySlot, KeyTable, TableKey};
use super::*;

/// A mapped index file: `count` fixed-size entries after the header.
#[derive(Default)]
pub(super) struct Mapped {
    pub(super) map: Option<Mmap>,
    pub(super) count: u64,
}

impl Mapped {
    pub(super) fn entry(&self, i: u64, len: usize) -> &[u8] {
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
pub(super) struct Dirs {
    pub(super) map: Option<Arc<Mmap>>,
    /// `dirs-G.idx`'s G (0: no file yet).
    pub(super) generation: u64,
    /// Valid bytes after the header, and how many of them are current blocks.
    pub(super) bytes: u64,
    pub(super) live: u64,
}

impl Dirs {
    /// The mapped bytes from offset `dir` to the end of the longest block that can start there
    /// (what a read prefetches), if `dir` is in the file.
    #[inline]
    pub(super) fn block_bytes(&self, dir: u64) -> Option<&[u8]> {
        let map = self.map.as_deref()?;
        let end = (INDEX_HEADER_LEN as u64 + self.bytes).min(map.len() as u64) as usize;
        let start = usize::try_from(dir).ok()?;
        if start < INDEX_HEADER_LEN || start >= end {
            return None;
        }
        Some(&map[start..end.min(start + DIR_BLOCK_LEN_MAX)])
    }

    /// Key `key_id`'s block at offset `dir`, checked.
    pub(super) fn block(&self, key_id: u32, dir: u64) -> Result<DirBlock<'_>, IndexError> {
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

pub(super) fn dirs_corrupt(source: DecodeError) -> IndexError {
    IndexError::Corrupt {
        what: "dirs-G.idx",
        source,
    }
}

/// Where a walk through a key's in-memory entries ends.
pub(super) enum Walk {
    /// The answer.
    Done(Found),
    /// The next entry to read is this one, in the files.
    InFiles(u64),
}

/// Where a search of a key's version directory leaves a point read.
pub(super) enum DirStep {
    /// The answer.
    Done(Found),
    /// Descend from this entry (a long history's directory keeps only every `step`-th version).
    From(u64),
}

/// Asks the CPU to start loading every cache line of `bytes` (a hint: no fault, no effect on
/// results), so the misses of a block's lines overlap instead of following one another.
#[inline]
pub(super) fn prefetch(bytes: &[u8]) {
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
    pub(super) first_revision: u64,
    pub(super) through_revision: u64,
    /// Timestamp of `through_revision`'s commit (0 when unknown: a lower bound is enough).
    pub(super) head_timestamp_us: u64,
    pub(super) versions: Mapped,
    pub(super) revs: Mapped,
    pub(super) versions_tail: Vec<VersionEntry>,
    pub(super) tail_values: Vec<Option<Arc<[u8]>>>,
    pub(super) revs_tail: Vec<RevEntry>,
    pub(super) keys: Vec<Arc<str>>,
    /// Key → id and newest entry, for point reads (`heads` serves reads by id).
    pub(super) key_ids: KeyTable,
    pub(super) sorted: BTreeMap<Arc<str>, u32>,
    pub(super) keys_checkpointed: usize,
    pub(super) keys_bytes: u64,
    pub(super) keys_crc: u32,
    /// Per key id: the index of its newest entry and a copy of that entry, so a descent (and a
    /// write's parent lookup) starts without touching the mapped file.
    pub(super) heads: Vec<(u64, VersionEntry)>,
    /// Per key id: the file offset of its block in `dirs` (0 while none of its entries is in the
    /// files). Also in its `KeySlot`.
    pub(super) dir_of: Vec<u64>,
    pub(super) dirs: Dirs,
    /// Set when indexing a commit failed (a damaged mapped entry): reads fail until a rebuild.
    pub(super) broken: Option<String>,
    /// The compaction horizon (revision 0: none) and the values of the base image by key id:
    /// every entry at or before the horizon reads its value from here (FORMAT.md "Images").
    pub(super) horizon: Horizon,
    pub(super) base_values: HashMap<u32, Arc<[u8]>>,
}

/// The compaction horizon H as the index sees it: points before it are gone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Horizon {
    pub revision: u64,
    pub timestamp_us: u64,
}

impl State {
    pub(super) fn empty(first_revision: u64) -> State {
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
    pub(super) fn install_base(&mut self, image: &Image) -> Result<(), IndexError> {
        let values = self.base_values_for(image)?;
        self.set_base_values(image, values);
        Ok(())
    }

    pub(super) fn set_base_values(&mut self, image: &Image, values: HashMap<u32, Arc<[u8]>>) {
        self.base_values = values;
        self.horizon = Horizon {
            revision: image.header.revision,
            timestamp_us: image.header.timestamp_us,
        };
    }

    /// Checks every image entry against the key's version at the image's revision (read-only:
    /// versions at or before a durable revision never change) and maps key ids to the values.
    pub(super) fn base_values_for(&self, image: &Image) -> Result<HashMap<u32, Arc<[u8]>>, IndexError> {
        let mut values = HashMap::with_capacity(image.entries.len());
        self.base_values_into(image.header.revision, &image.entries, &mut values)?;
        Ok(values)
    }

    /// `base_values_for` over some of an image's entries, into `values`.
    pub(super) fn base_values_into(
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
    pub(super) fn seed_base(&mut self, image: &Image) {
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

    pub(super) fn version_count(&self) -> u64 {
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
    pub(super) fn descend(
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
    pub(super) fn walk(
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
    pub(super) fn search_dir(
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

    pub(super) fn intern(&mut self, key: &str) -> u32 {
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
    pub(super) fn apply(
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
pub(super) enum Step {
    /// The search ends: the newest admitted version, or none.
    Done(Found),
    /// Read this entry next.
    Next(u64),
}

/// Decides a descent's step from the entry it holds: the entry itself if the bound admits it,
/// nothing if it has no parent, else the jump target (decided from the jump's revision and time
/// stored in the entry) when that is still too new, or the parent.
#[inline]
pub(super) fn step(key_id: u32, index: u64, entry: &VersionEntry, bound: Bound) -> Result<Step, IndexError> {
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
pub(super) fn linkless_entry(key_id: u32, depth: u32, fence: &DirFence) -> VersionEntry {
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
pub(super) fn value_range(entry: &VersionEntry, map_len: usize) -> Result<(usize, usize), IndexError> {
    let (offset, len) = (entry.value_offset as usize, entry.value_len() as usize);
    if offset + len > map_len {
        return Err(IndexError::Inconsistent(format!(
            "value at {offset}+{len} is past the end of segment {}",
            entry.segment_seq
        )));
    }
    Ok((offset, len))
}
