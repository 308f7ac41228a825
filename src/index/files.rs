//! The index files on disk: loading them at open (checked against the checkpoint, truncated to
//! it, then mapped) and appending the in-memory entries at a checkpoint.
//!
//! Appends go to the files first, are synced, and only then does a new CHECKPOINT (temporary
//! file, sync, rename, directory sync) make them count; bytes past the checkpoint are truncated
//! at the next open. The index is derived data: any failure to load is answered by a rebuild.

use std::collections::{BTreeMap, HashMap};
use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use memmap2::Mmap;
use storage_format::index::{
    CHECKPOINT_FILE, Checkpoint, INDEX_HEADER_LEN, KEYS_FILE, KEYS_MAGIC, REV_ENTRY_LEN, REVS_FILE,
    REVS_MAGIC, VERSION_ENTRY_LEN, VERSIONS_FILE, VERSIONS_MAGIC, check_index_header,
    encode_index_header,
};
use storage_format::{HistoryId, validate_key};

use super::table::{KeySlot, TableKey};
use super::{IndexError, Mapped, State};
use crate::fs::{RealFs, write_file_atomic};

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> IndexError + '_ {
    move |source| IndexError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Removes every index file (before a rebuild).
pub(super) fn remove_all(dir: &Path) -> Result<(), IndexError> {
    for name in [CHECKPOINT_FILE, VERSIONS_FILE, REVS_FILE, KEYS_FILE] {
        let path = dir.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&path)(e)),
        }
    }
    Ok(())
}

/// Opens a fixed-entry file, checks its header, truncates it to `count` entries and maps it.
fn open_entries(
    path: &Path,
    magic: [u8; 8],
    history_id: &HistoryId,
    entry_len: usize,
    count: u64,
) -> Result<Mapped, String> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    let want = INDEX_HEADER_LEN as u64 + count * entry_len as u64;
    if len < want {
        return Err(format!(
            "{} holds {len} bytes, the checkpoint needs {want}",
            path.display()
        ));
    }
    if len > want {
        file.set_len(want).map_err(|e| e.to_string())?;
    }
    // SAFETY: index files are only appended to at a checkpoint, after which they are remapped; this
    // mapping covers a prefix that is never truncated or rewritten while the store runs (the only
    // truncation is the one above, before mapping).
    let map = unsafe { Mmap::map(&file) }.map_err(|e| e.to_string())?;
    // Huge pages where the kernel can (pages read in after this mapping, e.g. after a restart,
    // come in 2 MiB folios on ext4): fewer TLB misses on random reads. Advice only.
    let _ = map.advise(memmap2::Advice::HugePage);
    check_index_header(&map, magic, history_id, entry_len as u32)
        .map_err(|e| format!("{}: {e}", path.display()))?;
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
            "index covers revisions {}..={}, the log starts at {first_revision}",
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
    let mut key_ids = HashMap::with_capacity(keys.len());
    for (id, key) in keys.iter().enumerate() {
        let (head_index, head) = cp.heads[id];
        let slot = KeySlot {
            id: id as u32,
            head_index,
            head,
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
    Ok(State {
        first_revision: cp.first_revision,
        through_revision: cp.through_revision,
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
        broken: None,
        horizon: Default::default(),
        base_values: Default::default(),
    })
}

/// Appends `bytes` to an index file and syncs it. The file is created with its header when
/// missing, and first cut back to `valid_len` (bytes past the last checkpoint, from a checkpoint
/// that failed, are not part of the index).
fn append_synced(
    path: &Path,
    magic: [u8; 8],
    history_id: &HistoryId,
    entry_len: u32,
    valid_len: u64,
    bytes: &[u8],
) -> Result<(), IndexError> {
    let exists = path.exists();
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io(path))?;
    if !exists || file.metadata().map_err(io(path))?.len() == 0 {
        file.write_all(&encode_index_header(magic, history_id, entry_len))
            .map_err(io(path))?;
    }
    if file.metadata().map_err(io(path))?.len() != valid_len {
        file.set_len(valid_len).map_err(io(path))?;
    }
    file.write_all(bytes).map_err(io(path))?;
    file.sync_data().map_err(io(path))
}

/// A checkpoint ready to write: the bytes to append to each file, the new CHECKPOINT, and how
/// much of the in-memory state they cover. Prepared under the read lock, written with no lock
/// held, installed (files remapped, covered tail entries dropped) under the write lock — so
/// readers are never blocked by the checkpoint's writes and fsyncs.
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
    cp: Checkpoint,
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
        heads: state.heads.clone(),
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
        cp,
    })
}

impl Prepared {
    /// The last revision the prepared checkpoint covers.
    pub(super) fn through_revision(&self) -> u64 {
        self.cp.through_revision
    }
}

/// Appends the prepared bytes to the files, syncs them, then writes the CHECKPOINT (temporary
/// file, sync, rename, directory sync). Touches no in-memory state.
pub(super) fn write(dir: &Path, history_id: &HistoryId, p: &Prepared) -> Result<(), IndexError> {
    let header = INDEX_HEADER_LEN as u64;
    append_synced(
        &dir.join(VERSIONS_FILE),
        VERSIONS_MAGIC,
        history_id,
        VERSION_ENTRY_LEN as u32,
        header + p.base_versions * VERSION_ENTRY_LEN as u64,
        &p.versions,
    )?;
    append_synced(
        &dir.join(REVS_FILE),
        REVS_MAGIC,
        history_id,
        REV_ENTRY_LEN as u32,
        header + p.base_revs * REV_ENTRY_LEN as u64,
        &p.revs,
    )?;
    append_synced(
        &dir.join(KEYS_FILE),
        KEYS_MAGIC,
        history_id,
        0,
        header + p.base_keys_bytes,
        &p.keys,
    )?;
    let cp_path = dir.join(CHECKPOINT_FILE);
    write_file_atomic(&RealFs, &cp_path, &p.cp.encode()).map_err(io(&cp_path))
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
        && state.keys.len() >= p.keys_total;
    if !unchanged {
        return Err(IndexError::Inconsistent(
            "the index changed while its checkpoint was written".into(),
        ));
    }
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
    state.versions_tail.drain(..p.tail_versions);
    state.tail_values.drain(..p.tail_versions);
    state.revs_tail.drain(..p.tail_revs);
    state.keys_checkpointed = p.keys_total;
    state.keys_bytes = p.keys_bytes;
    state.keys_crc = p.keys_crc;
    Ok(())
}

/// Prepares, writes and installs a checkpoint with the state locked throughout (open, rebuild).
pub(super) fn checkpoint(
    dir: &Path,
    history_id: &HistoryId,
    state: &mut State,
) -> Result<(), IndexError> {
    let prepared = prepare(history_id, state)?;
    write(dir, history_id, &prepared)?;
    install(dir, history_id, state, prepared)
}
