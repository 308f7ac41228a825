//! The index files on disk: loading them at open (checked against the checkpoint, truncated to
//! it, then mapped) and appending the in-memory entries at a checkpoint.
//!
//! Appends go to the files first, are synced, and only then does a new CHECKPOINT (temporary
//! file, sync, rename, directory sync) make them count; bytes past the checkpoint are truncated
//! at the next open. The index is derived data: any failure to load is answered by a rebuild.

use std::collections::{BTreeMap, HashMap};
use std::fs::OpenOptions;
use std::path::Path;
use std::sync::Arc;

use memmap2::Mmap;
use storage_format::index::{
    CHECKPOINT_FILE, Checkpoint, DIR_HEADER_LEN, DIRS_MAGIC, DirBlockBuilder, DirFence,
    INDEX_HEADER_LEN, KEYS_FILE, KEYS_MAGIC, REV_ENTRY_LEN, REVS_FILE, REVS_MAGIC,
    VERSION_ENTRY_LEN, VERSIONS_FILE, VERSIONS_MAGIC, VersionEntry, check_index_header, dir_step,
    dirs_file_name, encode_index_header, parse_dirs_file_name,
};
use storage_format::{HistoryId, validate_key};

use super::table::{KeySlot, KeyTable, TableKey};
use super::{Dirs, IndexError, Mapped, State};
use crate::fs::{Fs, write_file_atomic};

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> IndexError + '_ {
    move |source| IndexError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn remove_if_present(path: &Path) -> Result<(), IndexError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(path)(e)),
    }
}

/// The version directory files in `dir` other than generation `keep`.
fn dirs_files_except(dir: &Path, keep: u64) -> Result<Vec<std::path::PathBuf>, IndexError> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let name = entry.file_name();
        if let Some(generation) = name.to_str().and_then(parse_dirs_file_name)
            && generation != keep
        {
            found.push(entry.path());
        }
    }
    Ok(found)
}

/// Removes every index file (before a rebuild).
pub(super) fn remove_all(dir: &Path) -> Result<(), IndexError> {
    for name in [CHECKPOINT_FILE, VERSIONS_FILE, REVS_FILE, KEYS_FILE] {
        remove_if_present(&dir.join(name))?;
    }
    for path in dirs_files_except(dir, 0)? {
        remove_if_present(&path)?;
    }
    Ok(())
}

/// Opens an index file, truncates it to its first `len` bytes (what the checkpoint counts; bytes
/// past it are from a checkpoint that did not complete), maps it and checks its header.
fn map_prefix(
    path: &Path,
    magic: [u8; 8],
    history_id: &HistoryId,
    entry_len: u32,
    len: u64,
) -> Result<Mmap, String> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let actual = file.metadata().map_err(|e| e.to_string())?.len();
    if actual < len {
        return Err(format!(
            "{} holds {actual} bytes, the checkpoint needs {len}",
            path.display()
        ));
    }
    if actual > len {
        file.set_len(len).map_err(|e| e.to_string())?;
    }
    // SAFETY: index files are only appended to at a checkpoint, after which they are remapped
    // (a directory file is replaced by a new generation, never rewritten); this mapping covers a
    // prefix that is never truncated or rewritten while the store runs (the only truncation is
    // the one above, before mapping).
    let map = unsafe { Mmap::map(&file) }.map_err(|e| e.to_string())?;
    // Huge pages where the kernel can (pages read in after this mapping, e.g. after a restart,
    // come in 2 MiB folios on ext4): fewer TLB misses on random reads. Advice only.
    let _ = map.advise(memmap2::Advice::HugePage);
    check_index_header(&map, magic, history_id, entry_len)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(map)
}

/// Maps generation `generation` of the version directory up to `bytes` after its header.
/// Generation 0 is "no file yet".
fn open_dirs(
    dir: &Path,
    history_id: &HistoryId,
    generation: u64,
    bytes: u64,
    live: u64,
) -> Result<Dirs, String> {
    if generation == 0 {
        if bytes != 0 {
            return Err("CHECKPOINT counts directory bytes but names no file".to_owned());
        }
        return Ok(Dirs::default());
    }
    let path = dir.join(dirs_file_name(generation));
    let map = map_prefix(
        &path,
        DIRS_MAGIC,
        history_id,
        0,
        INDEX_HEADER_LEN as u64 + bytes,
    )?;
    Ok(Dirs {
        map: Some(Arc::new(map)),
        generation,
        bytes,
        live,
    })
}

/// Maps a fixed-entry file up to `count` entries.
fn open_entries(
    path: &Path,
    magic: [u8; 8],
    history_id: &HistoryId,
    entry_len: usize,
    count: u64,
) -> Result<Mapped, String> {
    let len = INDEX_HEADER_LEN as u64 + count * entry_len as u64;
    let map = map_prefix(path, magic, history_id, entry_len as u32, len)?;
    Ok(Mapped {
        map: Some(map),
        count,
    })
}

/// Loads a checkpointed index, or says why it cannot be used.
pub(super) fn load(
    dir: &Path,
    history_id: &HistoryId,
    first_revision: u64,
    log_head: u64,
) -> Result<State, String> {
    let cp_path = dir.join(CHECKPOINT_FILE);
    let bytes = match std::fs::read(&cp_path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err("no checkpoint (new or deleted index)".to_owned());
        }
        Err(e) => return Err(e.to_string()),
    };
    let cp = Checkpoint::decode(&bytes).map_err(|e| format!("CHECKPOINT: {e}"))?;
    if cp.history_id != *history_id {
        return Err("CHECKPOINT belongs to another history".to_owned());
    }
    // After a compaction the files may still start below the log (entries at or before the
    // horizon are then served from the base image); they must not start above it, nor end
    // before it (the commits in between are gone from the log).
    if cp.first_revision > first_revision || cp.through_revision + 1 < first_revision {
        return Err(format!(
            "index covers revisions {} to {}, the log starts at {first_revision}",
            cp.first_revision, cp.through_revision
        ));
    }
    if cp.through_revision > log_head {
        return Err(format!(
            "index reaches revision {}, past the log's head {log_head}",
            cp.through_revision
        ));
    }
    let revs_count = cp.through_revision + 1 - cp.first_revision;
    let versions = open_entries(
        &dir.join(VERSIONS_FILE),
        VERSIONS_MAGIC,
        history_id,
        VERSION_ENTRY_LEN,
        cp.version_entries,
    )?;
    let revs = open_entries(
        &dir.join(REVS_FILE),
        REVS_MAGIC,
        history_id,
        REV_ENTRY_LEN,
        revs_count,
    )?;

    let dirs = open_dirs(
        dir,
        history_id,
        cp.dirs_generation,
        cp.dirs_bytes,
        cp.dirs_live,
    )?;
    let dirs_end = INDEX_HEADER_LEN as u64 + cp.dirs_bytes;
    for (id, &offset) in cp.dirs.iter().enumerate() {
        // Every key in the checkpoint has entries in the files, so a block.
        if offset < INDEX_HEADER_LEN as u64 || offset + DIR_HEADER_LEN as u64 > dirs_end {
            return Err(format!("directory block of key {id} is outside the file"));
        }
    }

    let keys_path = dir.join(KEYS_FILE);
    let mut key_bytes =
        std::fs::read(&keys_path).map_err(|e| format!("{}: {e}", keys_path.display()))?;
    check_index_header(&key_bytes, KEYS_MAGIC, history_id, 0)
        .map_err(|e| format!("keys.idx: {e}"))?;
    let end = INDEX_HEADER_LEN as u64 + cp.keys_bytes;
    if (key_bytes.len() as u64) < end {
        return Err("keys.idx is shorter than the checkpoint".to_owned());
    }
    key_bytes.truncate(end as usize);
    let body = &key_bytes[INDEX_HEADER_LEN..];
    if storage_format::crc32(body) != cp.keys_crc {
        return Err("keys.idx fails its checkpoint CRC".to_owned());
    }
    let mut parsed: Vec<&str> = Vec::with_capacity(cp.heads.len());
    let mut at = 0usize;
    while at < body.len() {
        if at + 2 > body.len() {
            return Err("keys.idx ends inside a key".to_owned());
        }
        let len = u16::from_le_bytes([body[at], body[at + 1]]) as usize;
        let key = body
            .get(at + 2..at + 2 + len)
            .and_then(|k| std::str::from_utf8(k).ok())
            .filter(|k| validate_key(k).is_ok())
            .ok_or("keys.idx holds an invalid key")?;
        parsed.push(key);
        at += 2 + len;
    }
    // Allocated in sorted order, so keys next to each other in a prefix scan are next to each
    // other in memory.
    let mut order: Vec<usize> = (0..parsed.len()).collect();
    order.sort_unstable_by_key(|&id| parsed[id]);
    let mut slots: Vec<Option<Arc<str>>> = vec![None; parsed.len()];
    for id in order {
        slots[id] = Some(Arc::from(parsed[id]));
    }
    let keys: Vec<Arc<str>> = slots
        .into_iter()
        .map(|k| k.expect("every id filled"))
        .collect();
    if keys.len() != cp.heads.len() {
        return Err(format!("{} keys but {} heads", keys.len(), cp.heads.len()));
    }
    for (id, (index, entry)) in cp.heads.iter().enumerate() {
        if *index >= cp.version_entries || entry.key_id as usize != id {
            return Err(format!("head of key {id} is inconsistent"));
        }
    }
    let mut key_ids = KeyTable::with_capacity_and_hasher(keys.len(), Default::default());
    for (id, key) in keys.iter().enumerate() {
        let (head_index, head) = cp.heads[id];
        let slot = KeySlot {
            id: id as u32,
            head_index,
            head,
            dir: cp.dirs[id],
        };
        if key_ids.insert(TableKey::new(key), slot).is_some() {
            return Err(format!("key {key:?} appears twice in keys.idx"));
        }
    }
    // Sorted once, then bulk-built: much cheaper than inserting keys in arrival order.
    let sorted: BTreeMap<Arc<str>, u32> = keys
        .iter()
        .enumerate()
        .map(|(id, key)| (key.clone(), id as u32))
        .collect();
    // Left by a checkpoint that wrote a new generation and did not get to its CHECKPOINT, or
    // one that could not delete the old generation after it.
    if let Ok(stale) = dirs_files_except(dir, cp.dirs_generation) {
        for path in stale {
            let _ = std::fs::remove_file(path);
        }
    }
    let mut state = State {
        first_revision: cp.first_revision,
        through_revision: cp.through_revision,
        head_timestamp_us: 0,
        versions,
        revs,
        versions_tail: Vec::new(),
        tail_values: Vec::new(),
        revs_tail: Vec::new(),
        keys_checkpointed: keys.len(),
        keys,
        key_ids,
        sorted,
        keys_bytes: cp.keys_bytes,
        keys_crc: cp.keys_crc,
        heads: cp.heads,
        dir_of: cp.dirs,
        dirs,
        broken: None,
        horizon: Default::default(),
        base_values: Default::default(),
    };
    if state.through_revision >= state.first_revision {
        state.head_timestamp_us = state
            .rev(state.through_revision)
            .map_err(|e| e.to_string())?
            .timestamp_us;
    }
    Ok(state)
}

/// Appends `bytes` to an index file and syncs it. The file is created with its header when
/// missing, and first cut back to `valid_len` (bytes past the last checkpoint, from a checkpoint
/// that failed, are not part of the index).
fn append_synced(
    fs: &dyn Fs,
    path: &Path,
    magic: [u8; 8],
    history_id: &HistoryId,
    entry_len: u32,
    valid_len: u64,
    bytes: &[u8],
) -> Result<(), IndexError> {
    let mut file = if fs.exists(path).map_err(io(path))? {
        fs.open_append(path).map_err(io(path))?
    } else {
        fs.create_new(path).map_err(io(path))?
    };
    if fs.file_len(path).map_err(io(path))? == 0 {
        file.write_all(&encode_index_header(magic, history_id, entry_len))
            .map_err(io(path))?;
    }
    if fs.file_len(path).map_err(io(path))? != valid_len {
        file.set_len(valid_len).map_err(io(path))?;
    }
    file.write_all(bytes).map_err(io(path))?;
    file.sync_data().map_err(io(path))
}

/// A checkpoint ready to write: the bytes to append to each file, the new CHECKPOINT, and how
/// much of the in-memory state they cover. Prepared under the read lock, planned and written
/// with no lock held, installed (files remapped, covered tail entries dropped) under the write
/// lock — so readers are never blocked by the checkpoint's work, writes or fsyncs.
pub(super) struct Prepared {
    versions: Vec<u8>,
    revs: Vec<u8>,
    keys: Vec<u8>,
    /// The state the bytes continue: mapped counts and checkpointed keys when prepared.
    base_versions: u64,
    base_revs: u64,
    base_keys: usize,
    base_keys_bytes: u64,
    /// Tail entries and keys covered.
    tail_versions: usize,
    tail_revs: usize,
    keys_total: usize,
    keys_bytes: u64,
    keys_crc: u32,
    /// What the version directory update starts from, and (once planned) the update.
    dirs_input: DirsInput,
    dirs: Option<DirsPlan>,
    cp: Checkpoint,
}

/// A snapshot of what the directory update needs, taken under the read lock.
struct DirsInput {
    dirs: Dirs,
    dir_of: Vec<u64>,
    /// Key ids in key order (a new generation lays blocks out in it, so a prefix's blocks are
    /// near each other).
    sorted: Vec<u32>,
}

/// The directory update: new blocks for the keys with new entries, appended to the current
/// file — or, when superseded blocks would outweigh the live ones, every key's block written
/// into a new generation.
struct DirsPlan {
    blocks: Vec<u8>,
    /// For a new generation: each key's block, in file order, from the old file
    /// (`Old(offset, len)`) or from `blocks` (`New(start, len)`).
    rewrite: Option<Vec<Piece>>,
}

#[derive(Clone, Copy)]
enum Piece {
    Old(u64, usize),
    New(usize, usize),
}

/// Encodes what the next checkpoint appends (read-only on the state).
pub(super) fn prepare(history_id: &HistoryId, state: &State) -> Result<Prepared, IndexError> {
    state.check_usable()?;
    let versions: Vec<u8> = state
        .versions_tail
        .iter()
        .flat_map(|e| e.encode())
        .collect();
    let revs: Vec<u8> = state.revs_tail.iter().flat_map(|e| e.encode()).collect();
    let mut keys = Vec::new();
    for key in &state.keys[state.keys_checkpointed..] {
        keys.extend_from_slice(&(key.len() as u16).to_le_bytes());
        keys.extend_from_slice(key.as_bytes());
    }
    let mut keys_crc = crc32fast::Hasher::new_with_initial(state.keys_crc);
    keys_crc.update(&keys);
    let keys_crc = keys_crc.finalize();
    let keys_bytes = state.keys_bytes + keys.len() as u64;
    let cp = Checkpoint {
        history_id: *history_id,
        first_revision: state.first_revision,
        through_revision: state.through_revision,
        version_entries: state.versions.count + state.versions_tail.len() as u64,
        keys_bytes,
        keys_crc,
        // Filled in by `plan_dirs`.
        dirs_generation: 0,
        dirs_bytes: 0,
        dirs_live: 0,
        dirs: Vec::new(),
        heads: state.heads.clone(),
    };
    let dirs_input = DirsInput {
        dirs: state.dirs.clone(),
        dir_of: state.dir_of.clone(),
        sorted: state.sorted.values().copied().collect(),
    };
    Ok(Prepared {
        versions,
        revs,
        keys,
        base_versions: state.versions.count,
        base_revs: state.revs.count,
        base_keys: state.keys_checkpointed,
        base_keys_bytes: state.keys_bytes,
        tail_versions: state.versions_tail.len(),
        tail_revs: state.revs_tail.len(),
        keys_total: state.keys.len(),
        keys_bytes,
        keys_crc,
        dirs_input,
        dirs: None,
        cp,
    })
}

/// Computes the directory update of a prepared checkpoint (no lock needed): for each key with
/// entries in the tail, a new block from its old block's fences and the new entries.
pub(super) fn plan_dirs(p: &mut Prepared) -> Result<(), IndexError> {
    let input = &p.dirs_input;
    let mut dir_of = input.dir_of.clone();
    dir_of.resize(p.cp.heads.len(), 0);
    // The tail entries being checkpointed, from their encoding (entry i has index
    // `base_versions + i`): decoded here, off the lock, rather than copied under it.
    let tail = p
        .versions
        .chunks_exact(VERSION_ENTRY_LEN)
        .map(VersionEntry::decode)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| IndexError::Corrupt {
            what: "checkpoint tail",
            source,
        })?;
    // The tail's entries by key, each key's in depth order.
    let mut order: Vec<(u32, u32)> = tail
        .iter()
        .enumerate()
        .map(|(i, e)| (e.key_id, i as u32))
        .collect();
    order.sort_unstable();
    let mut blocks = Vec::new();
    // (key, start in `blocks`) of each new block.
    let mut new_blocks: Vec<(u32, usize)> = Vec::new();
    let mut live = input.dirs.live;
    let mut builder = DirBlockBuilder::default();
    for group in order.chunk_by(|a, b| a.0 == b.0) {
        let key_id = group[0].0;
        let old = match input.dir_of.get(key_id as usize).copied().unwrap_or(0) {
            0 => None,
            offset => Some(input.dirs.block(key_id, offset)?),
        };
        let (old_covered, old_step) = old.map_or((0, 1), |b| (b.covered, b.step));
        let covered = old_covered + group.len() as u32;
        let step = dir_step(covered, old_step);
        builder.clear();
        for k in 0..covered.div_ceil(step) {
            let depth = k * step;
            match old {
                // Kept fences are copied row for row (a damaged row keeps its bad CRC).
                Some(b) if depth < old_covered => {
                    builder.push_from(&b, (depth / old_step) as usize)
                }
                _ => {
                    let position = group[(depth - old_covered) as usize].1 as usize;
                    let entry = &tail[position];
                    if entry.depth != depth {
                        return Err(IndexError::Inconsistent(format!(
                            "key {key_id}'s entry at depth {} follows {old_covered} in the files",
                            entry.depth
                        )));
                    }
                    builder.push(&DirFence::of(p.base_versions + position as u64, entry));
                }
            }
        }
        live = live
            .checked_sub(old.map_or(0, |b| b.bytes().len() as u64))
            .ok_or_else(|| {
                IndexError::Inconsistent("the directory's live byte count is too small".into())
            })?;
        let start = blocks.len();
        builder.finish(covered, step, key_id, &mut blocks);
        live += (blocks.len() - start) as u64;
        new_blocks.push((key_id, start));
    }
    let appended = input.dirs.bytes + blocks.len() as u64;
    // A file holding more than twice its live blocks plus the slack (1 MiB) is rewritten.
    let plan = if appended > 2 * live + crate::fault::dirs_garbage_slack() {
        // A new generation holding only the current blocks, in key order.
        let mut new_at: HashMap<u32, (usize, usize)> = HashMap::with_capacity(new_blocks.len());
        for (i, &(key_id, start)) in new_blocks.iter().enumerate() {
            let end = new_blocks.get(i + 1).map_or(blocks.len(), |&(_, s)| s);
            new_at.insert(key_id, (start, end - start));
        }
        let mut pieces = Vec::with_capacity(input.sorted.len());
        let mut at = INDEX_HEADER_LEN as u64;
        for &key_id in &input.sorted {
            let (piece, len) = match new_at.get(&key_id) {
                Some(&(start, len)) => (Piece::New(start, len), len),
                None => {
                    let offset = dir_of[key_id as usize];
                    let len = input.dirs.block(key_id, offset)?.bytes().len();
                    (Piece::Old(offset, len), len)
                }
            };
            dir_of[key_id as usize] = at;
            pieces.push(piece);
            at += len as u64;
        }
        let bytes = at - INDEX_HEADER_LEN as u64;
        if bytes != live {
            return Err(IndexError::Inconsistent(format!(
                "directory blocks take {bytes} bytes, {live} counted live"
            )));
        }
        p.cp.dirs_generation = input.dirs.generation + 1;
        p.cp.dirs_bytes = bytes;
        DirsPlan {
            blocks,
            rewrite: Some(pieces),
        }
    } else {
        let base = INDEX_HEADER_LEN as u64 + input.dirs.bytes;
        for &(key_id, start) in &new_blocks {
            dir_of[key_id as usize] = base + start as u64;
        }
        // Generation 1 is created by the first checkpoint with blocks to write.
        p.cp.dirs_generation = if appended == 0 {
            0
        } else {
            input.dirs.generation.max(1)
        };
        p.cp.dirs_bytes = appended;
        DirsPlan {
            blocks,
            rewrite: None,
        }
    };
    p.cp.dirs_live = live;
    p.cp.dirs = dir_of;
    p.dirs = Some(plan);
    Ok(())
}

impl Prepared {
    /// The last revision the prepared checkpoint covers.
    pub(super) fn through_revision(&self) -> u64 {
        self.cp.through_revision
    }

    /// What the checkpoint writes, for its log line.
    pub(super) fn summary(&self) -> String {
        let plan = self.dirs.as_ref();
        format!(
            "{} entries, {} new directory bytes{}, {} directory bytes live of {}",
            self.tail_versions,
            plan.map_or(0, |p| p.blocks.len()),
            if plan.is_some_and(|p| p.rewrite.is_some()) {
                ", new generation"
            } else {
                ""
            },
            self.cp.dirs_live,
            self.cp.dirs_bytes
        )
    }
}

/// Writes a new generation of the directory whole: header, then the pieces.
fn write_generation(
    fs: &dyn Fs,
    path: &Path,
    history_id: &HistoryId,
    old: Option<&Mmap>,
    plan: &DirsPlan,
    pieces: &[Piece],
) -> Result<(), IndexError> {
    // A file of this generation is left only by a checkpoint that failed before its CHECKPOINT
    // named it: nothing refers to it.
    if fs.exists(path).map_err(io(path))? {
        fs.remove_file(path).map_err(io(path))?;
    }
    let mut file = fs.create_new(path).map_err(io(path))?;
    // Written in pieces of up to 1 MiB (a block or a run of old ones), as a buffered writer would.
    let mut buffer = Vec::with_capacity(1 << 20);
    buffer.extend_from_slice(&encode_index_header(DIRS_MAGIC, history_id, 0));
    for &piece in pieces {
        let bytes = match piece {
            Piece::Old(offset, len) => {
                let map = old.ok_or_else(|| {
                    IndexError::Inconsistent("an old directory block without a file".into())
                })?;
                &map[offset as usize..offset as usize + len]
            }
            Piece::New(start, len) => &plan.blocks[start..start + len],
        };
        if buffer.len() + bytes.len() > 1 << 20 {
            file.write_all(&buffer).map_err(io(path))?;
            buffer.clear();
        }
        if bytes.len() >= 1 << 20 {
            file.write_all(bytes).map_err(io(path))?;
        } else {
            buffer.extend_from_slice(bytes);
        }
    }
    file.write_all(&buffer).map_err(io(path))?;
    file.sync_data().map_err(io(path))
}

/// Appends the prepared bytes to the files, syncs them, then writes the CHECKPOINT (temporary
/// file, sync, rename, directory sync). Touches no in-memory state.
pub(super) fn write(
    fs: &dyn Fs,
    dir: &Path,
    history_id: &HistoryId,
    p: &Prepared,
) -> Result<(), IndexError> {
    let header = INDEX_HEADER_LEN as u64;
    append_synced(
        fs,
        &dir.join(VERSIONS_FILE),
        VERSIONS_MAGIC,
        history_id,
        VERSION_ENTRY_LEN as u32,
        header + p.base_versions * VERSION_ENTRY_LEN as u64,
        &p.versions,
    )?;
    append_synced(
        fs,
        &dir.join(REVS_FILE),
        REVS_MAGIC,
        history_id,
        REV_ENTRY_LEN as u32,
        header + p.base_revs * REV_ENTRY_LEN as u64,
        &p.revs,
    )?;
    append_synced(
        fs,
        &dir.join(KEYS_FILE),
        KEYS_MAGIC,
        history_id,
        0,
        header + p.base_keys_bytes,
        &p.keys,
    )?;
    let plan = p.dirs.as_ref().expect("planned before written");
    let dirs_path = dir.join(dirs_file_name(p.cp.dirs_generation));
    match &plan.rewrite {
        Some(pieces) => write_generation(
            fs,
            &dirs_path,
            history_id,
            p.dirs_input.dirs.map.as_deref(),
            plan,
            pieces,
        )?,
        None if !plan.blocks.is_empty() => append_synced(
            fs,
            &dirs_path,
            DIRS_MAGIC,
            history_id,
            0,
            header + p.dirs_input.dirs.bytes,
            &plan.blocks,
        )?,
        None => {}
    }
    let cp_path = dir.join(CHECKPOINT_FILE);
    write_file_atomic(fs, &cp_path, &p.cp.encode()).map_err(io(&cp_path))?;
    if plan.rewrite.is_some() {
        // The old generation is no longer named by the CHECKPOINT (its mapping stays valid
        // until the install replaces it); one left behind is removed at the next open.
        let old = dir.join(dirs_file_name(p.dirs_input.dirs.generation));
        match fs.remove_file(&old) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!(%error, "could not remove a superseded directory file");
            }
            _ => {}
        }
    }
    Ok(())
}

/// Maps the files up to the new checkpoint and drops the tail entries they now hold. Fails if
/// the state is no longer the one the checkpoint continued (a rebuild in between).
pub(super) fn install(
    dir: &Path,
    history_id: &HistoryId,
    state: &mut State,
    p: Prepared,
) -> Result<(), IndexError> {
    let unchanged = state.versions.count == p.base_versions
        && state.revs.count == p.base_revs
        && state.keys_checkpointed == p.base_keys
        && state.first_revision == p.cp.first_revision
        && state.versions_tail.len() >= p.tail_versions
        && state.revs_tail.len() >= p.tail_revs
        && state.keys.len() >= p.keys_total
        && state.dirs.generation == p.dirs_input.dirs.generation
        && state.dirs.bytes == p.dirs_input.dirs.bytes;
    if !unchanged {
        return Err(IndexError::Inconsistent(
            "the index changed while its checkpoint was written".into(),
        ));
    }
    let plan = p.dirs.expect("planned before installed");
    let revs_count = p.cp.through_revision + 1 - p.cp.first_revision;
    state.versions = open_entries(
        &dir.join(VERSIONS_FILE),
        VERSIONS_MAGIC,
        history_id,
        VERSION_ENTRY_LEN,
        p.cp.version_entries,
    )
    .map_err(IndexError::Inconsistent)?;
    state.revs = open_entries(
        &dir.join(REVS_FILE),
        REVS_MAGIC,
        history_id,
        REV_ENTRY_LEN,
        revs_count,
    )
    .map_err(IndexError::Inconsistent)?;
    state.dirs = open_dirs(
        dir,
        history_id,
        p.cp.dirs_generation,
        p.cp.dirs_bytes,
        p.cp.dirs_live,
    )
    .map_err(IndexError::Inconsistent)?;
    if plan.rewrite.is_some() || !plan.blocks.is_empty() {
        // The checkpoint's offsets for the keys it covers (keys interned since have none yet),
        // then one pass over the table in memory order: cheaper than a hash lookup per moved
        // key (a checkpoint typically moves a large share of the keys; a new generation all).
        state.dir_of[..p.cp.dirs.len()].copy_from_slice(&p.cp.dirs);
        let State {
            key_ids, dir_of, ..
        } = state;
        for slot in key_ids.values_mut() {
            slot.dir = dir_of[slot.id as usize];
        }
    }
    state.versions_tail.drain(..p.tail_versions);
    state.tail_values.drain(..p.tail_versions);
    state.revs_tail.drain(..p.tail_revs);
    state.keys_checkpointed = p.keys_total;
    state.keys_bytes = p.keys_bytes;
    state.keys_crc = p.keys_crc;
    Ok(())
}

/// Prepares, plans, writes and installs a checkpoint with the state locked throughout (open,
/// rebuild).
pub(super) fn checkpoint(
    fs: &dyn Fs,
    dir: &Path,
    history_id: &HistoryId,
    state: &mut State,
) -> Result<(), IndexError> {
    let mut prepared = prepare(history_id, state)?;
    plan_dirs(&mut prepared)?;
    write(fs, dir, history_id, &prepared)?;
    install(dir, history_id, state, prepared)
}
