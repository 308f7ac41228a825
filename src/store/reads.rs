//! The reads of DESIGN.md §2 at a point: get, list, history, commits, diff, and chain
//! verification. Each runs under the index's read lock and touches O(log n) entries per key.

use std::sync::Arc;

use storage_format::commit::{Commit, Op};
use storage_format::index::VersionEntry;
use storage_format::{Hash, hex};

use super::{
    COMMITS_SCAN_MAX, DIFF_BYTES_MAX, DIFF_CHANGES_MAX, PAGE_BYTES_MAX, Point, ReadError, Store,
    check_key, check_limit, check_range_horizon,
};
use crate::index::{Bound, SegmentMaps, State, ValueBytes};

/// Keys whose newest entries a list warms together before descending.
const LIST_CHUNK_KEYS: usize = 128;

/// One key as of a point (DESIGN.md §2 "Key version").
#[derive(Debug, Clone)]
pub struct KeyVersion {
    pub key: Arc<str>,
    pub value: ValueBytes,
    /// Revision of the commit that last put the key.
    pub revision: u64,
    pub create_revision: u64,
    /// Puts since the key was last created.
    pub version: u64,
    pub timestamp_us: u64,
}

/// A key version lent by `Store::get_with` (the key is the caller's).
#[derive(Debug, Clone, Copy)]
pub struct VersionRef<'a> {
    pub value: &'a [u8],
    pub revision: u64,
    pub create_revision: u64,
    pub version: u64,
    pub timestamp_us: u64,
}

/// A page of live keys under a prefix.
#[derive(Debug, Clone)]
pub struct ListPage {
    /// The revision the page reflects.
    pub revision: u64,
    pub items: Vec<KeyVersion>,
    /// The key to pass as `after` for the next page.
    pub next: Option<String>,
}

/// One version of a key in its history.
#[derive(Debug, Clone)]
pub struct HistoryItem {
    pub revision: u64,
    pub timestamp_us: u64,
    /// `None` for a delete.
    pub value: Option<ValueBytes>,
    pub actor: String,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub struct HistoryPage {
    pub key: String,
    pub items: Vec<HistoryItem>,
    /// The revision to pass as `after` for the next page.
    pub next: Option<u64>,
}

/// Which commits to return.
#[derive(Debug, Clone, Default)]
pub struct CommitFilter {
    pub from_revision: Option<u64>,
    pub to_revision: Option<u64>,
    /// Only commits at or after this time (µs).
    pub since_us: Option<u64>,
    /// Only commits at or before this time (µs).
    pub until_us: Option<u64>,
    /// Only commits touching keys under this prefix, with their ops limited to it.
    pub prefix: Option<String>,
    pub actor: Option<String>,
    /// Only commits after this revision (pagination).
    pub after: Option<u64>,
    pub limit: usize,
    /// A page ends once it holds this many bytes (`commit_bytes`); 0: `PAGE_BYTES_MAX`.
    pub bytes_max: usize,
    /// Newest first: then `after` means "below this revision" (the previous page's `next`).
    pub descending: bool,
}

/// A commit with its chain hashes.
#[derive(Debug, Clone)]
pub struct CommitRecord {
    pub commit: Commit,
    pub hash: Hash,
    pub prev_hash: Hash,
}

#[derive(Debug, Clone)]
pub struct CommitsPage {
    pub items: Vec<CommitRecord>,
    /// The revision to pass as `after` for the next page.
    pub next: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Added,
    Changed,
    Removed,
}

impl ChangeKind {
    pub fn name(self) -> &'static str {
        match self {
            ChangeKind::Added => "added",
            ChangeKind::Changed => "changed",
            ChangeKind::Removed => "removed",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Change {
    pub key: Arc<str>,
    pub kind: ChangeKind,
    pub old: Option<ValueBytes>,
    pub new: Option<ValueBytes>,
}

/// Keys under a prefix that differ between two points.
#[derive(Debug, Clone)]
pub struct Diff {
    pub from: u64,
    pub to: u64,
    pub changes: Vec<Change>,
}

/// What recomputing the chain found.
#[derive(Debug, Clone)]
pub struct ChainVerification {
    pub from: u64,
    pub to: u64,
    pub commits: u64,
    pub head_hash: Hash,
    /// The first problem, if any: revision and description.
    pub failure: Option<(u64, String)>,
    /// Whether the saved digest matched, when one was given.
    pub expected_matched: Option<bool>,
}

impl ChainVerification {
    pub fn ok(&self) -> bool {
        self.failure.is_none() && self.expected_matched != Some(false)
    }
}

/// The live version of `key_id` within `bound`, as a `KeyVersion`.
fn live_version(
    state: &State,
    maps: &SegmentMaps,
    key_id: u32,
    bound: Bound,
) -> Result<Option<KeyVersion>, ReadError> {
    let Some((index, entry)) = state.lookup(key_id, bound)? else {
        return Ok(None);
    };
    if entry.is_delete() {
        return Ok(None);
    }
    let value = state.value(index, &entry, maps)?;
    Ok(Some(KeyVersion::new(
        state.key(key_id).clone(),
        value,
        &entry,
    )))
}

impl KeyVersion {
    /// This version, lent as `get_with` lends one.
    pub fn as_ref(&self) -> VersionRef<'_> {
        VersionRef {
            value: self.value.as_bytes(),
            revision: self.revision,
            create_revision: self.create_revision,
            version: self.version,
            timestamp_us: self.timestamp_us,
        }
    }

    /// The key version a put entry describes.
    fn new(key: Arc<str>, value: ValueBytes, entry: &VersionEntry) -> KeyVersion {
        KeyVersion {
            key,
            value,
            revision: entry.revision,
            create_revision: entry.create_revision,
            version: entry.version as u64,
            timestamp_us: entry.timestamp_us,
        }
    }
}

impl Store {
    /// One key at a point, or `None` if it does not exist there.
    pub fn get(&self, key: &str, point: Point) -> Result<Option<KeyVersion>, ReadError> {
        self.with_index(|state, maps| {
            let Some((index, entry)) = self.live_version(state, key, point)? else {
                return Ok(None);
            };
            let value = state.value(index, &entry, maps)?;
            // The key from the caller's string: cloning the stored `Arc` would touch (and likely
            // miss on) its reference count.
            Ok(Some(KeyVersion::new(Arc::from(key), value, &entry)))
        })
    }

    /// `get`, with the version lent to `f` rather than returned: no copy of the key, and the
    /// value read in place (under the index's read lock, so `f` must be short). The server's
    /// `GET` of one key writes its answer this way.
    pub fn get_with<R>(
        &self,
        key: &str,
        point: Point,
        f: impl FnOnce(VersionRef<'_>) -> R,
    ) -> Result<Option<R>, ReadError> {
        let f = std::cell::Cell::new(Some(f));
        self.with_index(|state, maps| {
            let Some((index, entry)) = self.live_version(state, key, point)? else {
                return Ok(None);
            };
            let f = f
                .take()
                .expect("called once: a retry happens only before `f`");
            Ok(Some(state.with_value(index, &entry, maps, |value| {
                f(VersionRef {
                    value,
                    revision: entry.revision,
                    create_revision: entry.create_revision,
                    version: entry.version as u64,
                    timestamp_us: entry.timestamp_us,
                })
            })?))
        })
    }

    /// The entry of `key`'s live version at `point` (with its index); `None` if the key does
    /// not exist there (never written, not yet written, or deleted).
    fn live_version(
        &self,
        state: &State,
        key: &str,
        point: Point,
    ) -> Result<Option<(u64, VersionEntry)>, ReadError> {
        let bound = self.resolve_bound(state, point)?;
        let found = state.lookup_key(key, bound)?;
        if found.is_none() {
            // Only valid keys are ever in the table, so the key needs checking only here.
            check_key(key)?;
        }
        Ok(match found {
            Some((_, Some((index, entry)))) if !entry.is_delete() => Some((index, entry)),
            _ => None,
        })
    }

    /// Live keys under `prefix` at a point, sorted, starting after `after`, at most `limit`.
    pub fn list(
        &self,
        prefix: &str,
        point: Point,
        after: Option<&str>,
        limit: usize,
    ) -> Result<ListPage, ReadError> {
        check_limit(limit)?;
        self.with_index(|state, maps| {
            let (revision, bound) = self.resolve(state, point)?;
            let start = match after {
                Some(a) if a >= prefix => a,
                _ => prefix,
            };
            let mut items = Vec::new();
            let mut next = None;
            let mut bytes = 0;
            let mut keys = state
                .keys_from(start)
                .take_while(|(key, _)| key.starts_with(prefix))
                .filter(|(key, _)| Some(&***key) != after)
                .peekable();
            // In chunks, stage by stage: each stage's cache misses are independent across the
            // chunk's keys, so touching them together lets them overlap.
            let mut chunk: Vec<u32> = Vec::with_capacity(LIST_CHUNK_KEYS);
            let mut found = Vec::with_capacity(LIST_CHUNK_KEYS);
            let mut looked_up = Vec::with_capacity(LIST_CHUNK_KEYS);
            let mut memo = None;
            'pages: while keys.peek().is_some() {
                chunk.clear();
                chunk.extend(keys.by_ref().take(LIST_CHUNK_KEYS).map(|(_, id)| id));
                state.lookup_many(&chunk, bound, &mut looked_up)?;
                found.clear();
                for (&id, result) in chunk.iter().zip(&looked_up) {
                    if let Some((index, entry)) = result
                        && !entry.is_delete()
                    {
                        let value = state.value_memo(*index, entry, maps, &mut memo)?;
                        found.push((id, *entry, value));
                    }
                }
                let mut sink = 0u8;
                for (_, _, value) in &found {
                    sink ^= value.as_bytes().first().copied().unwrap_or(0);
                }
                std::hint::black_box(sink);
                for (id, entry, value) in found.drain(..) {
                    if items.len() == limit || bytes >= PAGE_BYTES_MAX {
                        next = items.last().map(|v: &KeyVersion| v.key.to_string());
                        break 'pages;
                    }
                    let key = state.key(id).clone();
                    bytes += key.len() + value.as_bytes().len();
                    items.push(KeyVersion::new(key, value, &entry));
                }
            }
            Ok(ListPage {
                revision,
                items,
                next,
            })
        })
    }

    /// Versions of `key` (puts and deletes) with revision in `from..=to`, oldest first, after
    /// `after`, at most `limit`.
    pub fn history(
        &self,
        key: &str,
        from: Option<u64>,
        to: Option<u64>,
        after: Option<u64>,
        limit: usize,
    ) -> Result<HistoryPage, ReadError> {
        check_key(key)?;
        check_limit(limit)?;
        self.with_index(|state, maps| {
            let head = state.through_revision();
            if let Some(requested) = to.filter(|&t| t > head) {
                return Err(ReadError::FutureRevision { requested, head });
            }
            check_range_horizon(state, "history", from, after, None)?;
            let low = from
                .unwrap_or(0)
                .max(after.map_or(0, |a| a + 1))
                .max(state.first_live_revision());
            let high = to.unwrap_or(head);
            let mut page = HistoryPage {
                key: key.to_owned(),
                items: Vec::new(),
                next: None,
            };
            let Some(key_id) = state.key_id(key) else {
                return Ok(page);
            };
            if low > high {
                return Ok(page);
            }
            let Some((top_index, top)) = state.lookup(key_id, Bound::Revision(high))? else {
                return Ok(page);
            };
            let first_depth = match low.checked_sub(1) {
                Some(below) => state
                    .lookup(key_id, Bound::Revision(below))?
                    .map_or(0, |(_, e)| e.depth + 1),
                None => 0,
            };
            if top.depth < first_depth {
                return Ok(page);
            }
            let last_depth = top.depth.min(first_depth + limit as u32 - 1);
            let (mut index, mut entry) = state.ancestor_at_depth(top_index, last_depth)?;
            let mut newest_first = Vec::with_capacity(limit);
            loop {
                newest_first.push((index, entry));
                if entry.depth == first_depth {
                    break;
                }
                index = entry.parent;
                entry = state.version(index)?;
            }
            let mut bytes = 0;
            let mut cut = false;
            for (index, entry) in newest_first.into_iter().rev() {
                if bytes >= PAGE_BYTES_MAX {
                    cut = true;
                    break;
                }
                let (commit, _) = self.read_commit(state, maps, entry.revision)?;
                let value = if entry.is_delete() {
                    None
                } else {
                    Some(state.value(index, &entry, maps)?)
                };
                bytes += value.as_ref().map_or(0, |v| v.as_bytes().len())
                    + commit.actor.len()
                    + commit.reason.len();
                page.items.push(HistoryItem {
                    revision: entry.revision,
                    timestamp_us: entry.timestamp_us,
                    value,
                    actor: commit.actor,
                    reason: commit.reason,
                });
            }
            if cut || last_depth < top.depth {
                page.next = page.items.last().map(|i| i.revision);
            }
            Ok(page)
        })
    }

    /// Commits in revision order matching `filter`. Examines at most `COMMITS_SCAN_MAX` commits
    /// per call; `next` is set whenever more may follow.
    pub fn commits(&self, filter: &CommitFilter) -> Result<CommitsPage, ReadError> {
        check_limit(filter.limit)?;
        self.with_index(|state, maps| {
            let head = state.through_revision();
            if let Some(requested) = filter.to_revision.filter(|&t| t > head) {
                return Err(ReadError::FutureRevision { requested, head });
            }
            check_range_horizon(
                state,
                "commits",
                filter.from_revision,
                filter.after,
                filter.since_us,
            )?;
            let mut low = state
                .first_live_revision()
                .max(filter.from_revision.unwrap_or(0))
                .max(filter.after.map_or(0, |a| a + 1));
            if let Some(since) = filter.since_us {
                low = low.max(match since.checked_sub(1) {
                    Some(before) => state.revision_at(before)? + 1,
                    None => 0,
                });
            }
            let mut high = filter.to_revision.unwrap_or(head).min(head);
            if let Some(until) = filter.until_us {
                high = high.min(state.revision_at(until)?);
            }
            if filter.descending {
                // `after` bounds from above instead; it was taken as a lower bound just now.
                low = state
                    .first_live_revision()
                    .max(filter.from_revision.unwrap_or(0));
                if let Some(since) = filter.since_us {
                    low = low.max(match since.checked_sub(1) {
                        Some(before) => state.revision_at(before)? + 1,
                        None => 0,
                    });
                }
                if let Some(after) = filter.after {
                    high = high.min(after.saturating_sub(1));
                }
                return self.commits_newest_first(state, maps, filter, low, high);
            }
            let mut page = CommitsPage {
                items: Vec::new(),
                next: None,
            };
            if low > high {
                return Ok(page);
            }
            let mut prev_hash = self.hash_of(state, maps, low - 1)?;
            let mut bytes = 0;
            let bytes_max = match filter.bytes_max {
                0 => PAGE_BYTES_MAX,
                n => n.min(PAGE_BYTES_MAX),
            };
            let scan_end = high.min(low.saturating_add(COMMITS_SCAN_MAX - 1));
            for revision in low..=scan_end {
                let (mut commit, hash) = self.read_commit(state, maps, revision)?;
                let record_prev = std::mem::replace(&mut prev_hash, hash);
                if filter.actor.as_ref().is_some_and(|a| *a != commit.actor) {
                    continue;
                }
                if let Some(prefix) = &filter.prefix {
                    commit
                        .ops
                        .retain(|op| op.key().starts_with(prefix.as_str()));
                    if commit.ops.is_empty() {
                        continue;
                    }
                }
                if page.items.len() == filter.limit || bytes >= bytes_max {
                    page.next = Some(revision - 1);
                    return Ok(page);
                }
                bytes += commit_bytes(&commit);
                page.items.push(CommitRecord {
                    commit,
                    hash,
                    prev_hash: record_prev,
                });
            }
            if scan_end < high {
                page.next = Some(scan_end);
            }
            Ok(page)
        })
    }

    /// `commits` newest first over `low..=high` (already bounded by the filter): at most
    /// `COMMITS_SCAN_MAX` commits examined per call; `next` (pass it as `after`) is the lowest
    /// revision examined whenever more may follow below it.
    fn commits_newest_first(
        &self,
        state: &State,
        maps: &SegmentMaps,
        filter: &CommitFilter,
        low: u64,
        high: u64,
    ) -> Result<CommitsPage, ReadError> {
        let mut page = CommitsPage {
            items: Vec::new(),
            next: None,
        };
        if low > high || high == 0 {
            return Ok(page);
        }
        let bytes_max = match filter.bytes_max {
            0 => PAGE_BYTES_MAX,
            n => n.min(PAGE_BYTES_MAX),
        };
        let scan_end = low.max(high.saturating_sub(COMMITS_SCAN_MAX - 1));
        let mut bytes = 0;
        // Going down, a commit's predecessor hash is known once the commit below is read.
        let mut waiting_for_prev: Option<usize> = None;
        let mut revision = high;
        loop {
            let (mut commit, hash) = self.read_commit(state, maps, revision)?;
            if let Some(i) = waiting_for_prev.take() {
                page.items[i].prev_hash = hash;
            }
            let visible = filter.actor.as_ref().is_none_or(|a| *a == commit.actor)
                && match &filter.prefix {
                    None => true,
                    Some(prefix) => {
                        commit
                            .ops
                            .retain(|op| op.key().starts_with(prefix.as_str()));
                        !commit.ops.is_empty()
                    }
                };
            if visible {
                if page.items.len() == filter.limit || bytes >= bytes_max {
                    page.next = Some(revision + 1);
                    return Ok(page);
                }
                bytes += commit_bytes(&commit);
                page.items.push(CommitRecord {
                    commit,
                    hash,
                    prev_hash: [0; 32],
                });
                waiting_for_prev = Some(page.items.len() - 1);
            }
            if revision == scan_end {
                break;
            }
            revision -= 1;
        }
        if let Some(i) = waiting_for_prev {
            page.items[i].prev_hash = self.hash_of(state, maps, revision - 1)?;
        }
        if scan_end > low {
            page.next = Some(scan_end);
        }
        Ok(page)
    }

    /// Versions of `key` with revision in `from..=to` and below `before`, newest first, at most
    /// `limit` (and `PAGE_BYTES_MAX`); `next` (pass it as `before`) when older ones remain.
    pub fn history_newest_first(
        &self,
        key: &str,
        from: Option<u64>,
        to: Option<u64>,
        before: Option<u64>,
        limit: usize,
    ) -> Result<HistoryPage, ReadError> {
        check_key(key)?;
        check_limit(limit)?;
        self.with_index(|state, maps| {
            let head = state.through_revision();
            if let Some(requested) = to.filter(|&t| t > head) {
                return Err(ReadError::FutureRevision { requested, head });
            }
            check_range_horizon(state, "history", from, None, None)?;
            let low = from.unwrap_or(0).max(state.first_live_revision());
            let high = to
                .unwrap_or(head)
                .min(before.map_or(u64::MAX, |b| b.saturating_sub(1)));
            let mut page = HistoryPage {
                key: key.to_owned(),
                items: Vec::new(),
                next: None,
            };
            let Some(key_id) = state.key_id(key) else {
                return Ok(page);
            };
            if low > high || high == 0 {
                return Ok(page);
            }
            let Some((top_index, top)) = state.lookup(key_id, Bound::Revision(high))? else {
                return Ok(page);
            };
            let first_depth = match low.checked_sub(1) {
                Some(below) => state
                    .lookup(key_id, Bound::Revision(below))?
                    .map_or(0, |(_, e)| e.depth + 1),
                None => 0,
            };
            if top.depth < first_depth {
                return Ok(page);
            }
            // A lookup may answer from the version directory, whose entries carry no links:
            // the walk reads the entries themselves.
            let (mut index, mut entry) = (top_index, state.version(top_index)?);
            let mut bytes = 0;
            loop {
                let (commit, _) = self.read_commit(state, maps, entry.revision)?;
                let value = if entry.is_delete() {
                    None
                } else {
                    Some(state.value(index, &entry, maps)?)
                };
                bytes += value.as_ref().map_or(0, |v| v.as_bytes().len())
                    + commit.actor.len()
                    + commit.reason.len();
                page.items.push(HistoryItem {
                    revision: entry.revision,
                    timestamp_us: entry.timestamp_us,
                    value,
                    actor: commit.actor,
                    reason: commit.reason,
                });
                if entry.depth == first_depth {
                    break;
                }
                if page.items.len() == limit || bytes >= PAGE_BYTES_MAX {
                    page.next = Some(entry.revision);
                    break;
                }
                index = entry.parent;
                entry = state.version(index)?;
            }
            Ok(page)
        })
    }

    /// Keys under `prefix` added, changed (value differs) or removed between two points.
    /// At most `DIFF_CHANGES_MAX` changes and `DIFF_BYTES_MAX` bytes of values (an answer).
    pub fn diff(&self, prefix: &str, from: Point, to: Point) -> Result<Diff, ReadError> {
        self.diff_bounded(prefix, from, to, DIFF_BYTES_MAX)
    }

    /// `diff` with the byte bound given: a rollback holds the values as shared mappings and
    /// writes only the old ones, so the answer's bound is not its own.
    pub(super) fn diff_bounded(
        &self,
        prefix: &str,
        from: Point,
        to: Point,
        bytes_max: usize,
    ) -> Result<Diff, ReadError> {
        self.with_index(|state, maps| {
            let (from_revision, from_bound) = self.resolve(state, from)?;
            let (to_revision, to_bound) = self.resolve(state, to)?;
            let mut changes = Vec::new();
            let mut bytes = 0;
            for (key, id) in state.keys_from(prefix) {
                if !key.starts_with(prefix) {
                    break;
                }
                let old = live_version(state, maps, id, from_bound)?;
                let new = live_version(state, maps, id, to_bound)?;
                let kind = match (&old, &new) {
                    (None, None) => continue,
                    (None, Some(_)) => ChangeKind::Added,
                    (Some(_), None) => ChangeKind::Removed,
                    (Some(o), Some(n)) if o.revision == n.revision => continue,
                    (Some(o), Some(n)) if o.value.as_bytes() == n.value.as_bytes() => continue,
                    (Some(_), Some(_)) => ChangeKind::Changed,
                };
                if changes.len() == DIFF_CHANGES_MAX {
                    return Err(ReadError::TooLarge {
                        max: DIFF_CHANGES_MAX,
                        unit: "changes",
                    });
                }
                bytes += key.len()
                    + old.as_ref().map_or(0, |v| v.value.as_bytes().len())
                    + new.as_ref().map_or(0, |v| v.value.as_bytes().len());
                if bytes > bytes_max {
                    return Err(ReadError::TooLarge {
                        max: bytes_max,
                        unit: "bytes of values",
                    });
                }
                changes.push(Change {
                    key: key.clone(),
                    kind,
                    old: old.map(|v| v.value),
                    new: new.map(|v| v.value),
                });
            }
            Ok(Diff {
                from: from_revision,
                to: to_revision,
                changes,
            })
        })
    }

    /// Recomputes the hash chain from `from` (default: the first live revision) to the head, and
    /// checks an auditor's saved digest `expected = (revision, hash)` if given.
    pub fn verify_chain(
        &self,
        from: Option<u64>,
        expected: Option<(u64, Hash)>,
    ) -> Result<ChainVerification, ReadError> {
        let head = self.log.head();
        let first = self.log.horizon().revision + 1;
        let from = from.unwrap_or(first).max(first);
        if from > head.revision + 1 {
            return Err(ReadError::FutureRevision {
                requested: from,
                head: head.revision,
            });
        }
        let mut result = ChainVerification {
            from,
            to: head.revision,
            commits: 0,
            head_hash: head.hash,
            failure: None,
            expected_matched: None,
        };
        let mut previous: Option<Hash> = None;
        let outcome = self.log.for_each_commit(from, head.revision, &mut |link| {
            if result.failure.is_some() {
                return;
            }
            let revision = link.payload.commit.revision;
            if let Some(prev) = previous
                && prev != link.prev_hash
            {
                result.failure = Some((
                    revision,
                    format!(
                        "prev_hash {} does not match revision {}'s hash {}",
                        hex(&link.prev_hash),
                        revision - 1,
                        hex(&prev)
                    ),
                ));
            }
            previous = Some(link.payload.hash);
            result.commits += 1;
            if let Some((rev, hash)) = expected
                && rev == revision
            {
                result.expected_matched = Some(hash == link.payload.hash);
            }
        });
        if let Err(e) = outcome {
            // The reader checks every record's hash against its predecessor: a broken chain or a
            // damaged record surfaces here with its revision.
            let revision = match &e {
                crate::log::LogError::Corrupted { revision, .. } => *revision,
                _ => from,
            };
            result.failure = Some((revision, e.to_string()));
        }
        if let Some((rev, _)) = expected
            && result.expected_matched.is_none()
        {
            if rev < from || rev > head.revision {
                return Err(ReadError::Invalid(format!(
                    "expected revision {rev} is outside the verified range {from} to {}",
                    head.revision
                )));
            }
            result.expected_matched = Some(false);
        }
        Ok(result)
    }
}

/// What a commit weighs against `PAGE_BYTES_MAX`: its keys, values, actor and reason.
pub fn commit_bytes(commit: &Commit) -> usize {
    let ops: usize = commit
        .ops
        .iter()
        .map(|op| match op {
            Op::Put { key, value } => key.len() + value.len(),
            Op::Delete { key } => key.len(),
        })
        .sum();
    ops + commit.actor.len() + commit.reason.len() + commit.detail.len()
}
