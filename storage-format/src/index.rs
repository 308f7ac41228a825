//! Index files (`index/` in a data directory): derived from the log, never its source of truth.
//! FORMAT.md "Index files" specifies them; a missing or inconsistent index is rebuilt.
//!
//! - `versions.idx`: one 88-byte `VersionEntry` per (commit, op), in log order. Each entry links to
//!   its key's previous version (`parent`) and to a skew-binary `jump` ancestor, so finding a key's
//!   version as of a revision or time costs O(log versions) (Myers' jump pointers).
//! - `revs.idx`: one 24-byte `RevEntry` per revision: timestamp and record position.
//! - `keys.idx`: the key dictionary, keys in order of first appearance (the key id).
//! - `dirs-G.idx`: per key, a small block listing its versions (all of them, or evenly spaced
//!   "fences" for a long history) with their revisions, times and value locations, so a point
//!   read as of a revision or time finds its answer in one contiguous block.
//! - `CHECKPOINT`: how much of the files is valid, and every key's newest entry and block.
//!
//! Every entry carries a CRC, checked when it is read, so a damaged index is detected at use
//! without reading it whole at open.

use crate::codec::{FixedLayout, check_crc, u32_at, u64_at};
use crate::{
    DecodeError, FormatVersion, HISTORY_ID_LEN, HistoryId, MAGIC_LEN, Reader, VERSION_LEN, Writer,
    crc32,
};

/// Directory, under the data directory, of the index files.
pub const INDEX_DIR: &str = "index";
pub const VERSIONS_FILE: &str = "versions.idx";
pub const REVS_FILE: &str = "revs.idx";
pub const KEYS_FILE: &str = "keys.idx";
pub const CHECKPOINT_FILE: &str = "CHECKPOINT";

/// The name of generation `generation` of the version directory file.
pub fn dirs_file_name(generation: u64) -> String {
    format!("dirs-{generation:08}.idx")
}

/// The generation of a version directory file name, if it is one.
pub fn parse_dirs_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("dirs-")?.strip_suffix(".idx")?;
    if digits.len() < 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

const fn magic(name: &[u8; 3]) -> [u8; MAGIC_LEN] {
    [0x89, name[0], name[1], name[2], 0x0D, 0x0A, 0x1A, 0x0A]
}
pub const VERSIONS_MAGIC: [u8; MAGIC_LEN] = magic(b"LCV");
pub const REVS_MAGIC: [u8; MAGIC_LEN] = magic(b"LCR");
pub const KEYS_MAGIC: [u8; MAGIC_LEN] = magic(b"LCK");
pub const CHECKPOINT_MAGIC: [u8; MAGIC_LEN] = magic(b"LCP");
pub const DIRS_MAGIC: [u8; MAGIC_LEN] = magic(b"LCD");

/// "No entry" in `parent`.
pub const NO_ENTRY: u64 = u64::MAX;
/// Bit of `value_len` marking a delete.
pub const DELETE_FLAG: u32 = 1 << 31;

// ---- file header: the first 64 bytes of versions.idx, revs.idx and keys.idx ----

pub const INDEX_HEADER_VERSION_OFFSET: usize = MAGIC_LEN;
pub const INDEX_HEADER_LEN_OFFSET: usize = INDEX_HEADER_VERSION_OFFSET + VERSION_LEN;
pub const INDEX_HEADER_HISTORY_OFFSET: usize = INDEX_HEADER_LEN_OFFSET + 4;
pub const INDEX_HEADER_ENTRY_LEN_OFFSET: usize = INDEX_HEADER_HISTORY_OFFSET + HISTORY_ID_LEN;
pub const INDEX_HEADER_RESERVED_OFFSET: usize = INDEX_HEADER_ENTRY_LEN_OFFSET + 4;
pub const INDEX_HEADER_CRC_OFFSET: usize = 60;
pub const INDEX_HEADER_LEN: usize = INDEX_HEADER_CRC_OFFSET + 4;
const _: () = assert!(INDEX_HEADER_RESERVED_OFFSET == 36);
const _: () = assert!(INDEX_HEADER_LEN == 64);

/// The index headers' frame, for encoding (decoding compares with the expected header whole).
const HEADER_LAYOUT: FixedLayout = FixedLayout {
    what: "index header",
    magic: None,
    len: INDEX_HEADER_LEN,
    reserved_offset: INDEX_HEADER_RESERVED_OFFSET,
    reserved_field: "index_header.reserved",
    exact: false,
};

/// Encodes an index file header (`entry_len` 0 for the variable-length keys file).
pub fn encode_index_header(
    magic: [u8; MAGIC_LEN],
    history_id: &HistoryId,
    entry_len: u32,
) -> [u8; INDEX_HEADER_LEN] {
    let mut w = Writer::with_capacity(INDEX_HEADER_LEN);
    w.bytes(&magic);
    w.u32(FormatVersion::CURRENT.as_u32());
    w.u32(INDEX_HEADER_LEN as u32);
    w.bytes(history_id);
    w.u32(entry_len);
    HEADER_LAYOUT.seal(&mut w);
    w.buf.try_into().expect("INDEX_HEADER_LEN bytes")
}

/// Checks an index file header: magic, CRC, version, history, entry length.
pub fn check_index_header(
    bytes: &[u8],
    magic: [u8; MAGIC_LEN],
    history_id: &HistoryId,
    entry_len: u32,
) -> Result<(), DecodeError> {
    const WHAT: &str = "index header";
    if bytes.len() < INDEX_HEADER_LEN {
        return Err(DecodeError::Truncated {
            what: WHAT,
            needed: INDEX_HEADER_LEN as u64,
            available: bytes.len() as u64,
        });
    }
    let bytes = &bytes[..INDEX_HEADER_LEN];
    let expected = encode_index_header(magic, history_id, entry_len);
    if bytes[..MAGIC_LEN] != magic {
        return Err(DecodeError::BadMagic { what: WHAT });
    }
    check_crc(bytes, INDEX_HEADER_CRC_OFFSET, WHAT)?;
    FormatVersion::from_u32(u32_at(bytes, INDEX_HEADER_VERSION_OFFSET), WHAT)?;
    if bytes != expected {
        return Err(DecodeError::InvalidField {
            field: "index.header",
            reason: "another history, entry size or layout".to_owned(),
        });
    }
    Ok(())
}

// ---- versions.idx entries ----

pub const VE_REVISION_OFFSET: usize = 0;
pub const VE_TIMESTAMP_OFFSET: usize = VE_REVISION_OFFSET + 8;
pub const VE_CREATE_REVISION_OFFSET: usize = VE_TIMESTAMP_OFFSET + 8;
pub const VE_PARENT_OFFSET: usize = VE_CREATE_REVISION_OFFSET + 8;
pub const VE_JUMP_OFFSET: usize = VE_PARENT_OFFSET + 8;
pub const VE_JUMP_REVISION_OFFSET: usize = VE_JUMP_OFFSET + 8;
pub const VE_JUMP_TIMESTAMP_OFFSET: usize = VE_JUMP_REVISION_OFFSET + 8;
pub const VE_DEPTH_OFFSET: usize = VE_JUMP_TIMESTAMP_OFFSET + 8;
pub const VE_KEY_ID_OFFSET: usize = VE_DEPTH_OFFSET + 4;
pub const VE_VERSION_OFFSET: usize = VE_KEY_ID_OFFSET + 4;
pub const VE_SEGMENT_OFFSET: usize = VE_VERSION_OFFSET + 4;
pub const VE_VALUE_OFFSET_OFFSET: usize = VE_SEGMENT_OFFSET + 4;
pub const VE_VALUE_LEN_OFFSET: usize = VE_VALUE_OFFSET_OFFSET + 4;
pub const VE_RESERVED_OFFSET: usize = VE_VALUE_LEN_OFFSET + 4;
pub const VE_CRC_OFFSET: usize = VE_RESERVED_OFFSET + 4;
pub const VERSION_ENTRY_LEN: usize = VE_CRC_OFFSET + 4;
const _: () = assert!(VERSION_ENTRY_LEN == 88);

const VERSION_ENTRY_LAYOUT: FixedLayout = FixedLayout {
    what: "version entry",
    magic: None,
    len: VERSION_ENTRY_LEN,
    reserved_offset: VE_RESERVED_OFFSET,
    reserved_field: "version_entry.reserved",
    exact: true,
};

/// One version of one key: what a point read returns, and the links to older versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionEntry {
    pub revision: u64,
    pub timestamp_us: u64,
    /// Revision that created the key (0 for a delete).
    pub create_revision: u64,
    /// Entry index of the key's previous version, or `NO_ENTRY`.
    pub parent: u64,
    /// Entry index of a skew-binary ancestor (itself for a key's first version).
    pub jump: u64,
    /// Revision and timestamp of the `jump` entry, so a search decides whether to jump without
    /// reading it.
    pub jump_revision: u64,
    pub jump_timestamp_us: u64,
    /// Position of this version in its key's sequence of versions, from 0.
    pub depth: u32,
    pub key_id: u32,
    /// Puts since the key was last created (0 for a delete).
    pub version: u32,
    pub segment_seq: u32,
    /// Offset of the value bytes in the segment file (0 for a delete).
    pub value_offset: u32,
    /// Value length, with `DELETE_FLAG` set for a delete.
    pub value_len: u32,
}

impl VersionEntry {
    pub fn is_delete(&self) -> bool {
        self.value_len & DELETE_FLAG != 0
    }

    pub fn value_len(&self) -> u32 {
        self.value_len & !DELETE_FLAG
    }

    pub fn encode(&self) -> [u8; VERSION_ENTRY_LEN] {
        let mut w = Writer::with_capacity(VERSION_ENTRY_LEN);
        w.u64(self.revision);
        w.u64(self.timestamp_us);
        w.u64(self.create_revision);
        w.u64(self.parent);
        w.u64(self.jump);
        w.u64(self.jump_revision);
        w.u64(self.jump_timestamp_us);
        w.u32(self.depth);
        w.u32(self.key_id);
        w.u32(self.version);
        w.u32(self.segment_seq);
        w.u32(self.value_offset);
        w.u32(self.value_len);
        VERSION_ENTRY_LAYOUT.seal(&mut w);
        w.buf.try_into().expect("VERSION_ENTRY_LEN bytes")
    }

    pub fn decode(bytes: &[u8]) -> Result<VersionEntry, DecodeError> {
        const WHAT: &str = VERSION_ENTRY_LAYOUT.what;
        let mut r = Reader::new(VERSION_ENTRY_LAYOUT.open(bytes)?, WHAT);
        let entry = VersionEntry {
            revision: r.u64()?,
            timestamp_us: r.u64()?,
            create_revision: r.u64()?,
            parent: r.u64()?,
            jump: r.u64()?,
            jump_revision: r.u64()?,
            jump_timestamp_us: r.u64()?,
            depth: r.u32()?,
            key_id: r.u32()?,
            version: r.u32()?,
            segment_seq: r.u32()?,
            value_offset: r.u32()?,
            value_len: r.u32()?,
        };
        r.finish()?;
        Ok(entry)
    }
}

// ---- revs.idx entries ----

pub const RE_TIMESTAMP_OFFSET: usize = 0;
pub const RE_SEGMENT_OFFSET: usize = RE_TIMESTAMP_OFFSET + 8;
pub const RE_RECORD_OFFSET_OFFSET: usize = RE_SEGMENT_OFFSET + 4;
pub const RE_RESERVED_OFFSET: usize = RE_RECORD_OFFSET_OFFSET + 4;
pub const RE_CRC_OFFSET: usize = RE_RESERVED_OFFSET + 4;
pub const REV_ENTRY_LEN: usize = RE_CRC_OFFSET + 4;
const _: () = assert!(REV_ENTRY_LEN == 24);

const REV_ENTRY_LAYOUT: FixedLayout = FixedLayout {
    what: "revision entry",
    magic: None,
    len: REV_ENTRY_LEN,
    reserved_offset: RE_RESERVED_OFFSET,
    reserved_field: "rev_entry.reserved",
    exact: true,
};

/// Where one revision's commit record is, and its timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RevEntry {
    pub timestamp_us: u64,
    pub segment_seq: u32,
    pub record_offset: u32,
}

impl RevEntry {
    pub fn encode(&self) -> [u8; REV_ENTRY_LEN] {
        let mut w = Writer::with_capacity(REV_ENTRY_LEN);
        w.u64(self.timestamp_us);
        w.u32(self.segment_seq);
        w.u32(self.record_offset);
        REV_ENTRY_LAYOUT.seal(&mut w);
        w.buf.try_into().expect("REV_ENTRY_LEN bytes")
    }

    pub fn decode(bytes: &[u8]) -> Result<RevEntry, DecodeError> {
        const WHAT: &str = REV_ENTRY_LAYOUT.what;
        let mut r = Reader::new(REV_ENTRY_LAYOUT.open(bytes)?, WHAT);
        let entry = RevEntry {
            timestamp_us: r.u64()?,
            segment_seq: r.u32()?,
            record_offset: r.u32()?,
        };
        r.finish()?;
        Ok(entry)
    }
}

// ---- CHECKPOINT ----

pub const CP_VERSION_OFFSET: usize = MAGIC_LEN;
pub const CP_LEN_OFFSET: usize = CP_VERSION_OFFSET + VERSION_LEN;
pub const CP_HISTORY_OFFSET: usize = CP_LEN_OFFSET + 4;
pub const CP_FIRST_REVISION_OFFSET: usize = CP_HISTORY_OFFSET + HISTORY_ID_LEN;
pub const CP_THROUGH_REVISION_OFFSET: usize = CP_FIRST_REVISION_OFFSET + 8;
pub const CP_VERSION_ENTRIES_OFFSET: usize = CP_THROUGH_REVISION_OFFSET + 8;
pub const CP_KEY_COUNT_OFFSET: usize = CP_VERSION_ENTRIES_OFFSET + 8;
pub const CP_KEYS_BYTES_OFFSET: usize = CP_KEY_COUNT_OFFSET + 8;
pub const CP_KEYS_CRC_OFFSET: usize = CP_KEYS_BYTES_OFFSET + 8;
pub const CP_HEADS_CRC_OFFSET: usize = CP_KEYS_CRC_OFFSET + 4;
pub const CP_DIRS_GENERATION_OFFSET: usize = CP_HEADS_CRC_OFFSET + 4;
pub const CP_DIRS_BYTES_OFFSET: usize = CP_DIRS_GENERATION_OFFSET + 8;
pub const CP_DIRS_LIVE_OFFSET: usize = CP_DIRS_BYTES_OFFSET + 8;
pub const CP_RESERVED_OFFSET: usize = CP_DIRS_LIVE_OFFSET + 8;
pub const CP_CRC_OFFSET: usize = 124;
pub const CP_FIXED_LEN: usize = CP_CRC_OFFSET + 4;
const _: () = assert!(CP_RESERVED_OFFSET == 104);
const _: () = assert!(CP_FIXED_LEN == 128);

/// The frame of CHECKPOINT's fixed part (the heads follow it, under their own CRC).
const CHECKPOINT_LAYOUT: FixedLayout = FixedLayout {
    what: "index checkpoint",
    magic: Some(CHECKPOINT_MAGIC),
    len: CP_FIXED_LEN,
    reserved_offset: CP_RESERVED_OFFSET,
    reserved_field: "checkpoint.reserved",
    exact: false,
};
/// Keys in an index, at most (key ids are u32).
pub const INDEX_KEYS_MAX: u64 = u32::MAX as u64;

/// Bytes of one head in CHECKPOINT: the entry index, the entry itself, then the offset of the
/// key's block in the version directory file.
pub const CHECKPOINT_HEAD_LEN: usize = 8 + VERSION_ENTRY_LEN + 8;

/// How much of the index files is valid, and every key's newest version entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub history_id: HistoryId,
    /// Revision of `revs.idx` entry 0.
    pub first_revision: u64,
    /// Last revision indexed (`first_revision - 1` when none).
    pub through_revision: u64,
    pub version_entries: u64,
    /// Bytes of `keys.idx` after its header that are valid.
    pub keys_bytes: u64,
    /// CRC of those bytes.
    pub keys_crc: u32,
    /// The version directory file in use (`dirs-G.idx`), its valid bytes after the header, and
    /// how many of them are the keys' current blocks (the rest are superseded blocks).
    pub dirs_generation: u64,
    pub dirs_bytes: u64,
    pub dirs_live: u64,
    /// `dirs[key_id]`: file offset of the key's current block (0: none). As long as `heads`.
    pub dirs: Vec<u64>,
    /// `heads[key_id]`: the key's newest version entry and its index. Its length is the key
    /// count. Kept whole so a read starts its descent without touching versions.idx.
    pub heads: Vec<(u64, VersionEntry)>,
}

impl Checkpoint {
    pub fn encode(&self) -> Vec<u8> {
        let mut heads = Writer::with_capacity(self.heads.len() * CHECKPOINT_HEAD_LEN);
        assert_eq!(self.heads.len(), self.dirs.len(), "a block offset per head");
        for ((index, entry), dir) in self.heads.iter().zip(&self.dirs) {
            heads.u64(*index);
            heads.bytes(&entry.encode());
            heads.u64(*dir);
        }
        let mut w = Writer::with_capacity(CP_FIXED_LEN + heads.len());
        w.bytes(&CHECKPOINT_MAGIC);
        w.u32(FormatVersion::CURRENT.as_u32());
        w.u32(CP_FIXED_LEN as u32);
        w.bytes(&self.history_id);
        w.u64(self.first_revision);
        w.u64(self.through_revision);
        w.u64(self.version_entries);
        w.u64(self.heads.len() as u64);
        w.u64(self.keys_bytes);
        w.u32(self.keys_crc);
        w.u32(crc32(&heads.buf));
        w.u64(self.dirs_generation);
        w.u64(self.dirs_bytes);
        w.u64(self.dirs_live);
        CHECKPOINT_LAYOUT.seal(&mut w);
        w.bytes(&heads.buf);
        w.buf
    }

    pub fn decode(bytes: &[u8]) -> Result<Checkpoint, DecodeError> {
        const WHAT: &str = CHECKPOINT_LAYOUT.what;
        let mut r = Reader::new(CHECKPOINT_LAYOUT.open(bytes)?, WHAT);
        FormatVersion::from_u32(r.u32()?, WHAT)?;
        if r.u32()? as usize != CP_FIXED_LEN {
            return Err(DecodeError::InvalidField {
                field: "checkpoint.len",
                reason: format!("expected {CP_FIXED_LEN}"),
            });
        }
        let history_id = r.array()?;
        let first_revision = r.u64()?;
        let through_revision = r.u64()?;
        let version_entries = r.u64()?;
        let key_count = r.u64()?;
        let keys_bytes = r.u64()?;
        let keys_crc = r.u32()?;
        let heads_crc = r.u32()?;
        let dirs_generation = r.u64()?;
        let dirs_bytes = r.u64()?;
        let dirs_live = r.u64()?;
        r.finish()?;
        if dirs_live > dirs_bytes {
            return Err(DecodeError::InvalidField {
                field: "checkpoint.dirs_live",
                reason: format!("{dirs_live} live bytes of {dirs_bytes}"),
            });
        }
        if key_count > INDEX_KEYS_MAX {
            return Err(DecodeError::TooLarge {
                what: "checkpoint.key_count",
                value: key_count,
                max: INDEX_KEYS_MAX,
            });
        }
        let heads_bytes = &bytes[CP_FIXED_LEN..];
        if heads_bytes.len() as u64 != key_count * CHECKPOINT_HEAD_LEN as u64 {
            return Err(DecodeError::InvalidField {
                field: "checkpoint.heads",
                reason: format!("{} bytes for {key_count} keys", heads_bytes.len()),
            });
        }
        let actual = crc32(heads_bytes);
        if actual != heads_crc {
            return Err(DecodeError::ChecksumMismatch {
                what: "checkpoint heads",
                expected: heads_crc,
                actual,
            });
        }
        if first_revision == 0 || through_revision + 1 < first_revision {
            return Err(DecodeError::InvalidField {
                field: "checkpoint.through_revision",
                reason: format!("{through_revision} before first revision {first_revision}"),
            });
        }
        let mut heads = Vec::with_capacity(key_count as usize);
        let mut dirs = Vec::with_capacity(key_count as usize);
        for c in heads_bytes.chunks_exact(CHECKPOINT_HEAD_LEN) {
            let index = u64_at(c, 0);
            let entry = VersionEntry::decode(&c[8..8 + VERSION_ENTRY_LEN])?;
            heads.push((index, entry));
            dirs.push(u64_at(c, 8 + VERSION_ENTRY_LEN));
        }
        Ok(Checkpoint {
            history_id,
            first_revision,
            through_revision,
            version_entries,
            keys_bytes,
            keys_crc,
            dirs_generation,
            dirs_bytes,
            dirs_live,
            dirs,
            heads,
        })
    }
}

// ---- version directory blocks (dirs-G.idx) ----

/// Fences in one block, at most: a key with more versions than this keeps every `step`-th one.
pub const DIR_FENCES_MAX: usize = 16;

pub const DB_COVERED_OFFSET: usize = 0;
pub const DB_FENCES_OFFSET: usize = DB_COVERED_OFFSET + 4;
pub const DB_STEP_OFFSET: usize = DB_FENCES_OFFSET + 4;
pub const DB_KEY_ID_OFFSET: usize = DB_STEP_OFFSET + 4;
pub const DB_RESERVED_OFFSET: usize = DB_KEY_ID_OFFSET + 4;
pub const DB_CRC_OFFSET: usize = DB_RESERVED_OFFSET + 4;
pub const DIR_HEADER_LEN: usize = DB_CRC_OFFSET + 4;
const _: () = assert!(DIR_HEADER_LEN == 24);

pub const DR_INDEX_OFFSET: usize = 0;
pub const DR_CREATE_REVISION_OFFSET: usize = DR_INDEX_OFFSET + 8;
pub const DR_VERSION_OFFSET: usize = DR_CREATE_REVISION_OFFSET + 8;
pub const DR_SEGMENT_OFFSET: usize = DR_VERSION_OFFSET + 4;
pub const DR_VALUE_OFFSET_OFFSET: usize = DR_SEGMENT_OFFSET + 4;
pub const DR_VALUE_LEN_OFFSET: usize = DR_VALUE_OFFSET_OFFSET + 4;
pub const DR_RESERVED_OFFSET: usize = DR_VALUE_LEN_OFFSET + 4;
pub const DR_CRC_OFFSET: usize = DR_RESERVED_OFFSET + 4;
pub const DIR_ROW_LEN: usize = DR_CRC_OFFSET + 4;
const _: () = assert!(DIR_ROW_LEN == 40);

const DIR_ROW_LAYOUT: FixedLayout = FixedLayout {
    what: "directory row",
    magic: None,
    len: DIR_ROW_LEN,
    reserved_offset: DR_RESERVED_OFFSET,
    reserved_field: "dir_row.reserved",
    exact: true,
};

/// Bytes of a block of `fences` fences: header, timestamps, revisions, rows.
pub const fn dir_block_len(fences: usize) -> usize {
    DIR_HEADER_LEN + fences * (16 + DIR_ROW_LEN)
}

/// The largest block.
pub const DIR_BLOCK_LEN_MAX: usize = dir_block_len(DIR_FENCES_MAX);

/// Where fence `k`'s row starts in a block of `fences` fences.
const fn dir_row_start(fences: usize, k: usize) -> usize {
    DIR_HEADER_LEN + 16 * fences + DIR_ROW_LEN * k
}

/// The CRC a block's header carries: of its first 20 bytes and its two search arrays.
fn dir_block_crc(block: &[u8], fences: usize) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&block[..DB_CRC_OFFSET]);
    crc.update(&block[DIR_HEADER_LEN..dir_row_start(fences, 0)]);
    crc.finalize()
}

/// One fence of a version directory block: a version's revision and time (searched) and what a
/// read of it returns (its entry index and value location).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirFence {
    pub timestamp_us: u64,
    pub revision: u64,
    /// The version's entry index in versions.idx.
    pub index: u64,
    pub create_revision: u64,
    pub version: u32,
    pub segment_seq: u32,
    pub value_offset: u32,
    /// With `DELETE_FLAG` for a delete, as in the entry.
    pub value_len: u32,
}

impl DirFence {
    /// The fence of entry `index`.
    pub fn of(index: u64, e: &VersionEntry) -> DirFence {
        DirFence {
            timestamp_us: e.timestamp_us,
            revision: e.revision,
            index,
            create_revision: e.create_revision,
            version: e.version,
            segment_seq: e.segment_seq,
            value_offset: e.value_offset,
            value_len: e.value_len,
        }
    }
}

/// Fences a block covering `covered` versions keeps: every `step`-th version from depth 0,
/// `step` the smallest power of two (at least `min_step`) that keeps at most `DIR_FENCES_MAX`.
pub fn dir_step(covered: u32, min_step: u32) -> u32 {
    let mut step = min_step.max(1);
    while covered.div_ceil(step) as usize > DIR_FENCES_MAX {
        step *= 2;
    }
    step
}

/// Builds a block fence by fence, in depth order: new fences, or fences of an older block whose
/// rows are copied byte for byte (their CRCs with them, so damage is carried, never hidden).
#[derive(Default)]
pub struct DirBlockBuilder {
    timestamps: Vec<u64>,
    revisions: Vec<u64>,
    rows: Vec<u8>,
}

impl DirBlockBuilder {
    pub fn clear(&mut self) {
        self.timestamps.clear();
        self.revisions.clear();
        self.rows.clear();
    }

    pub fn push(&mut self, f: &DirFence) {
        self.timestamps.push(f.timestamp_us);
        self.revisions.push(f.revision);
        let mut row = Writer::with_capacity(DIR_ROW_LEN);
        row.u64(f.index);
        row.u64(f.create_revision);
        row.u32(f.version);
        row.u32(f.segment_seq);
        row.u32(f.value_offset);
        row.u32(f.value_len);
        DIR_ROW_LAYOUT.seal(&mut row);
        self.rows.extend_from_slice(&row.buf);
    }

    /// Fence `k` of `block` (whose header and arrays `DirBlock::open` checked).
    pub fn push_from(&mut self, block: &DirBlock<'_>, k: usize) {
        self.timestamps.push(block.timestamp(k));
        self.revisions.push(block.revision(k));
        let start = dir_row_start(block.fences, k);
        self.rows
            .extend_from_slice(&block.bytes[start..start + DIR_ROW_LEN]);
    }

    /// Appends the block to `out`.
    pub fn finish(&self, covered: u32, step: u32, key_id: u32, out: &mut Vec<u8>) {
        let fences = self.timestamps.len();
        assert!(fences > 0 && fences <= DIR_FENCES_MAX);
        assert_eq!(covered.div_ceil(step) as usize, fences);
        let start = out.len();
        out.reserve(dir_block_len(fences));
        for v in [covered, fences as u32, step, key_id, 0, 0] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for v in self.timestamps.iter().chain(&self.revisions) {
            out.extend_from_slice(&v.to_le_bytes());
        }
        let crc = dir_block_crc(&out[start..], fences).to_le_bytes();
        out[start + DB_CRC_OFFSET..start + DIR_HEADER_LEN].copy_from_slice(&crc);
        out.extend_from_slice(&self.rows);
        debug_assert_eq!(out.len() - start, dir_block_len(fences));
    }
}

/// A checked view of one block: its header and search arrays are verified when opened, each row
/// when read.
#[derive(Debug, Clone, Copy)]
pub struct DirBlock<'a> {
    bytes: &'a [u8],
    /// Versions covered: depths 0..covered.
    pub covered: u32,
    pub fences: usize,
    /// Fence k is the version at depth k × step.
    pub step: u32,
    pub key_id: u32,
}

impl<'a> DirBlock<'a> {
    /// Opens the block at the start of `bytes` (which may run on past it): its shape, header
    /// CRC (which covers the search arrays) and reserved field are checked; rows, when read.
    pub fn open(bytes: &'a [u8]) -> Result<DirBlock<'a>, DecodeError> {
        const WHAT: &str = "directory block";
        let truncated = |needed: usize| DecodeError::Truncated {
            what: WHAT,
            needed: needed as u64,
            available: bytes.len() as u64,
        };
        if bytes.len() < DIR_HEADER_LEN {
            return Err(truncated(DIR_HEADER_LEN));
        }
        let covered = u32_at(bytes, DB_COVERED_OFFSET);
        let fences = u32_at(bytes, DB_FENCES_OFFSET) as usize;
        let step = u32_at(bytes, DB_STEP_OFFSET);
        let key_id = u32_at(bytes, DB_KEY_ID_OFFSET);
        if fences == 0 || fences > DIR_FENCES_MAX {
            return Err(DecodeError::InvalidField {
                field: "dir_block.fences",
                reason: format!("{fences}, not 1..={DIR_FENCES_MAX}"),
            });
        }
        if bytes.len() < dir_block_len(fences) {
            return Err(truncated(dir_block_len(fences)));
        }
        if !step.is_power_of_two() || covered.div_ceil(step) as usize != fences {
            return Err(DecodeError::InvalidField {
                field: "dir_block.step",
                reason: format!("{fences} fences every {step} of {covered} versions"),
            });
        }
        let actual = dir_block_crc(bytes, fences);
        let expected = u32_at(bytes, DB_CRC_OFFSET);
        if actual != expected {
            return Err(DecodeError::ChecksumMismatch {
                what: WHAT,
                expected,
                actual,
            });
        }
        if u32_at(bytes, DB_RESERVED_OFFSET) != 0 {
            return Err(DecodeError::InvalidField {
                field: "dir_block.reserved",
                reason: "not zero".to_owned(),
            });
        }
        Ok(DirBlock {
            bytes: &bytes[..dir_block_len(fences)],
            covered,
            fences,
            step,
            key_id,
        })
    }

    /// The block's bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Timestamp of fence `k`.
    #[inline]
    pub fn timestamp(&self, k: usize) -> u64 {
        u64_at(self.bytes, DIR_HEADER_LEN + 8 * k)
    }

    /// Revision of fence `k`.
    #[inline]
    pub fn revision(&self, k: usize) -> u64 {
        u64_at(self.bytes, DIR_HEADER_LEN + 8 * (self.fences + k))
    }

    /// Fence `k`, its row CRC-checked.
    pub fn fence(&self, k: usize) -> Result<DirFence, DecodeError> {
        let start = dir_row_start(self.fences, k);
        let row = DIR_ROW_LAYOUT.open(&self.bytes[start..start + DIR_ROW_LEN])?;
        Ok(DirFence {
            timestamp_us: self.timestamp(k),
            revision: self.revision(k),
            index: u64_at(row, DR_INDEX_OFFSET),
            create_revision: u64_at(row, DR_CREATE_REVISION_OFFSET),
            version: u32_at(row, DR_VERSION_OFFSET),
            segment_seq: u32_at(row, DR_SEGMENT_OFFSET),
            value_offset: u32_at(row, DR_VALUE_OFFSET_OFFSET),
            value_len: u32_at(row, DR_VALUE_LEN_OFFSET),
        })
    }

    /// All fences, in depth order.
    pub fn all(&self) -> Result<Vec<DirFence>, DecodeError> {
        (0..self.fences).map(|k| self.fence(k)).collect()
    }
}

/// The skew-binary jump target for a new entry whose parent is `parent` (at `parent_depth`),
/// given the depth of the parent's jump (`jump_depth`) and that one's jump (`jump_jump`, at
/// `jump_jump_depth`). With these jumps any ancestor is reached in O(log depth) steps (Myers,
/// "An applicative random-access stack", 1983).
pub fn skew_jump(
    parent: u64,
    parent_depth: u32,
    jump_depth: u32,
    jump_jump: u64,
    jump_jump_depth: u32,
) -> u64 {
    if parent_depth - jump_depth == jump_depth - jump_jump_depth {
        jump_jump
    } else {
        parent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Appends a block (FORMAT.md "Version directory") of these fences to `out`.
    fn encode_dir_block(
        covered: u32,
        step: u32,
        key_id: u32,
        fences: &[DirFence],
        out: &mut Vec<u8>,
    ) {
        let mut builder = DirBlockBuilder::default();
        for f in fences {
            builder.push(f);
        }
        builder.finish(covered, step, key_id, out);
    }

    fn sample_entry() -> VersionEntry {
        VersionEntry {
            revision: 9,
            timestamp_us: 10,
            create_revision: 3,
            parent: 4,
            jump: 2,
            jump_revision: 8,
            jump_timestamp_us: 9,
            depth: 5,
            key_id: 6,
            version: 7,
            segment_seq: 1,
            value_offset: 300,
            value_len: 12,
        }
    }

    #[test]
    fn entries_round_trip_and_detect_damage() {
        let e = VersionEntry {
            revision: 9,
            timestamp_us: 10,
            create_revision: 3,
            parent: 4,
            jump: 2,
            jump_revision: 8,
            jump_timestamp_us: 9,
            depth: 5,
            key_id: 6,
            version: 7,
            segment_seq: 1,
            value_offset: 300,
            value_len: 12,
        };
        let bytes = e.encode();
        assert_eq!(VersionEntry::decode(&bytes).unwrap(), e);
        for i in 0..VERSION_ENTRY_LEN {
            let mut bad = bytes;
            bad[i] ^= 1;
            assert!(VersionEntry::decode(&bad).is_err(), "flip at {i}");
        }
        let r = RevEntry {
            timestamp_us: 1,
            segment_seq: 2,
            record_offset: 3,
        };
        assert_eq!(RevEntry::decode(&r.encode()).unwrap(), r);
    }

    #[test]
    fn checkpoint_round_trips() {
        let cp = Checkpoint {
            history_id: [1; 16],
            first_revision: 1,
            through_revision: 50,
            version_entries: 70,
            keys_bytes: 123,
            keys_crc: 4,
            dirs_generation: 3,
            dirs_bytes: 900,
            dirs_live: 500,
            dirs: vec![64, 400],
            heads: vec![(1, sample_entry()), (69, sample_entry())],
        };
        let bytes = cp.encode();
        assert_eq!(Checkpoint::decode(&bytes).unwrap(), cp);
        let mut bad = bytes.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(Checkpoint::decode(&bad).is_err());
        assert!(Checkpoint::decode(&bytes[..bytes.len() - 8]).is_err());
    }

    #[test]
    fn dir_blocks_round_trip_and_detect_damage() {
        let fences: Vec<DirFence> = (0..3)
            .map(|k| {
                DirFence::of(
                    10 + k,
                    &VersionEntry {
                        revision: 100 + k,
                        timestamp_us: 1000 + k,
                        ..sample_entry()
                    },
                )
            })
            .collect();
        let mut out = vec![7u8; 5];
        encode_dir_block(5, dir_step(5, 2), 6, &fences, &mut out);
        assert_eq!(out.len(), 5 + dir_block_len(3));
        let block = DirBlock::open(&out[5..]).unwrap();
        assert_eq!(
            (block.covered, block.fences, block.step, block.key_id),
            (5, 3, 2, 6)
        );
        assert_eq!(block.all().unwrap(), fences);
        assert_eq!((block.timestamp(2), block.revision(1)), (1002, 101));
        // A flipped bit in the header or arrays fails the open; in a row, that row's read.
        for at in [0, 30, 70] {
            let mut bad = out[5..].to_vec();
            bad[at] ^= 1;
            assert!(DirBlock::open(&bad).is_err(), "byte {at}");
        }
        let mut bad = out[5..].to_vec();
        bad[dir_block_len(3) - 10] ^= 1;
        let block = DirBlock::open(&bad).unwrap();
        assert!(block.fence(2).is_err());
        assert!(block.fence(1).is_ok());
        assert!(DirBlock::open(&out[5..out.len() - 1]).is_err());
        assert_eq!(dir_step(16, 1), 1);
        assert_eq!(dir_step(17, 1), 2);
        assert_eq!(dir_step(100, 1), 8);
        assert_eq!(parse_dirs_file_name(&dirs_file_name(42)), Some(42));
        assert_eq!(parse_dirs_file_name("dirs-1.idx"), None);
    }

    #[test]
    fn headers_bind_history_and_entry_size() {
        let h = encode_index_header(VERSIONS_MAGIC, &[5; 16], 72);
        check_index_header(&h, VERSIONS_MAGIC, &[5; 16], 72).unwrap();
        assert!(check_index_header(&h, VERSIONS_MAGIC, &[6; 16], 72).is_err());
        assert!(check_index_header(&h, REVS_MAGIC, &[5; 16], 72).is_err());
        assert!(check_index_header(&h, VERSIONS_MAGIC, &[5; 16], 24).is_err());
    }
}
