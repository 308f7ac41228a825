//! Images: the full state of a store at one revision — every live key with its metadata and value,
//! plus the chain hash at that revision. Snapshots (`snapshots/snap-<revision>.img`) and base
//! images (`base-<seq>.img`, the state at the compaction horizon) share this format (FORMAT.md
//! "Images").
//!
//! An image is a header, blocks of entries (each compressed and checksummed on its own), and a
//! footer holding the SHA-256 of everything before it. Compression is supplied by the caller
//! (zstd in the store; the fuzz target passes the identity), so this crate stays free of it.

use sha2::{Digest, Sha256};

use crate::codec::FixedLayout;
use crate::{
    DecodeError, FormatVersion, HASH_LEN, HISTORY_ID_LEN, Hash, HistoryId, KEY_BYTES_MAX,
    MAGIC_LEN, Reader, VALUE_BYTES_MAX, VERSION_LEN, Writer, crc32, validate_key,
};

/// Magic of an image file.
pub const IMAGE_MAGIC: [u8; MAGIC_LEN] = [0x89, b'L', b'C', b'I', 0x0D, 0x0A, 0x1A, 0x0A];
/// Directory, under the data directory, of the snapshots.
pub const SNAPSHOT_DIR: &str = "snapshots";
/// Suffix of an image file.
pub const IMAGE_SUFFIX: &str = ".img";
/// Suffix given to a snapshot that failed its checks (kept for inspection, never read again).
pub const CORRUPT_SUFFIX: &str = ".corrupt";

/// `snap-<revision as 20 digits>.img`.
pub fn snapshot_file_name(revision: u64) -> String {
    format!("snap-{revision:020}{IMAGE_SUFFIX}")
}

/// The revision in a snapshot file name, if `name` is one.
pub fn parse_snapshot_file_name(name: &str) -> Option<u64> {
    parse_numbered(name, "snap-")
}

/// `base-<seq as 20 digits>.img`, in the data directory.
pub fn base_image_file_name(seq: u64) -> String {
    format!("base-{seq:020}{IMAGE_SUFFIX}")
}

/// The sequence number in a base image file name, if `name` is one.
pub fn parse_base_image_file_name(name: &str) -> Option<u64> {
    parse_numbered(name, "base-")
}

fn parse_numbered(name: &str, prefix: &str) -> Option<u64> {
    let digits = name.strip_prefix(prefix)?.strip_suffix(IMAGE_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

// ---- header: the first 128 bytes ----

pub const IMAGE_VERSION_OFFSET: usize = MAGIC_LEN;
pub const IMAGE_HEADER_LEN_OFFSET: usize = IMAGE_VERSION_OFFSET + VERSION_LEN;
pub const IMAGE_HISTORY_OFFSET: usize = IMAGE_HEADER_LEN_OFFSET + 4;
pub const IMAGE_REVISION_OFFSET: usize = IMAGE_HISTORY_OFFSET + HISTORY_ID_LEN;
pub const IMAGE_TIMESTAMP_OFFSET: usize = IMAGE_REVISION_OFFSET + 8;
pub const IMAGE_HASH_OFFSET: usize = IMAGE_TIMESTAMP_OFFSET + 8;
pub const IMAGE_CREATED_OFFSET: usize = IMAGE_HASH_OFFSET + HASH_LEN;
pub const IMAGE_KIND_OFFSET: usize = IMAGE_CREATED_OFFSET + 8;
pub const IMAGE_RESERVED_OFFSET: usize = IMAGE_KIND_OFFSET + 1;
pub const IMAGE_CRC_OFFSET: usize = 124;
pub const IMAGE_HEADER_LEN: usize = IMAGE_CRC_OFFSET + 4;
const _: () = assert!(IMAGE_RESERVED_OFFSET == 89);
const _: () = assert!(IMAGE_HEADER_LEN == 128);

const HEADER_LAYOUT: FixedLayout = FixedLayout {
    what: "image header",
    magic: Some(IMAGE_MAGIC),
    len: IMAGE_HEADER_LEN,
    reserved_offset: IMAGE_RESERVED_OFFSET,
    reserved_field: "image_header.reserved",
    exact: false,
};

// ---- block header: 24 bytes before each block's compressed bytes ----

pub const BLOCK_COMPRESSED_LEN_OFFSET: usize = 0;
pub const BLOCK_RAW_LEN_OFFSET: usize = 4;
pub const BLOCK_ENTRY_COUNT_OFFSET: usize = 8;
pub const BLOCK_COMPRESSED_CRC_OFFSET: usize = 12;
pub const BLOCK_RAW_CRC_OFFSET: usize = 16;
pub const BLOCK_HEADER_CRC_OFFSET: usize = 20;
pub const BLOCK_HEADER_LEN: usize = 24;

const BLOCK_LAYOUT: FixedLayout = FixedLayout {
    what: "image block header",
    magic: None,
    len: BLOCK_HEADER_LEN,
    reserved_offset: BLOCK_HEADER_CRC_OFFSET,
    reserved_field: "image_block.reserved",
    exact: false,
};

/// Raw (uncompressed) bytes of one block, at most. A block is closed once it passes the
/// encoder's target (1 MiB by default), so this bounds target + one largest entry.
pub const BLOCK_RAW_MAX: usize = 8 << 20;
/// Compressed bytes of one block, at most (zstd's bound for `BLOCK_RAW_MAX`, rounded up).
pub const BLOCK_COMPRESSED_MAX: usize = 9 << 20;
/// Fixed bytes of one entry: key_len, revision, create_revision, version, timestamp, value_len.
pub const ENTRY_FIXED_LEN: usize = 2 + 8 + 8 + 8 + 8 + 4;
/// Default raw size at which the encoder closes a block.
pub const BLOCK_TARGET_DEFAULT: usize = 1 << 20;

// ---- footer: the last 64 bytes ----

pub const FOOTER_BLOCK_COUNT_OFFSET: usize = 0;
pub const FOOTER_KEY_COUNT_OFFSET: usize = 8;
pub const FOOTER_BODY_LEN_OFFSET: usize = 16;
pub const FOOTER_SHA256_OFFSET: usize = 24;
pub const FOOTER_RESERVED_OFFSET: usize = FOOTER_SHA256_OFFSET + 32;
pub const FOOTER_CRC_OFFSET: usize = 60;
pub const FOOTER_LEN: usize = 64;
const _: () = assert!(FOOTER_RESERVED_OFFSET == 56);

const FOOTER_LAYOUT: FixedLayout = FixedLayout {
    what: "image footer",
    magic: None,
    len: FOOTER_LEN,
    reserved_offset: FOOTER_RESERVED_OFFSET,
    reserved_field: "image_footer.reserved",
    exact: true,
};

/// What an image is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageKind {
    /// A snapshot, taken on demand or on a schedule; any number may exist.
    Snapshot,
    /// The base image named by the MANIFEST: the state at the horizon.
    Base,
}

impl ImageKind {
    pub fn code(self) -> u8 {
        match self {
            ImageKind::Snapshot => 1,
            ImageKind::Base => 2,
        }
    }
    fn from_code(code: u8) -> Result<ImageKind, DecodeError> {
        match code {
            1 => Ok(ImageKind::Snapshot),
            2 => Ok(ImageKind::Base),
            _ => Err(DecodeError::InvalidField {
                field: "image_header.kind",
                reason: format!("unknown kind {code}"),
            }),
        }
    }
}

/// The header of an image: which history and revision it holds the state of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageHeader {
    pub version: FormatVersion,
    pub history_id: HistoryId,
    /// The state is that after this revision (0: the empty state before the first commit).
    pub revision: u64,
    /// Timestamp of `revision` (0 when it is 0).
    pub timestamp_us: u64,
    /// Chain hash of `revision`.
    pub hash: Hash,
    pub created_unix_us: u64,
    pub kind: ImageKind,
}

impl ImageHeader {
    pub fn encode(&self) -> [u8; IMAGE_HEADER_LEN] {
        let mut w = Writer::with_capacity(IMAGE_HEADER_LEN);
        w.bytes(&IMAGE_MAGIC);
        w.u32(self.version.as_u32());
        w.u32(IMAGE_HEADER_LEN as u32);
        w.bytes(&self.history_id);
        w.u64(self.revision);
        w.u64(self.timestamp_us);
        w.bytes(&self.hash);
        w.u64(self.created_unix_us);
        w.u8(self.kind.code());
        HEADER_LAYOUT.seal(&mut w);
        w.buf.try_into().expect("IMAGE_HEADER_LEN bytes")
    }

    pub fn decode(bytes: &[u8]) -> Result<ImageHeader, DecodeError> {
        const WHAT: &str = HEADER_LAYOUT.what;
        let mut r = Reader::new(HEADER_LAYOUT.open(bytes)?, WHAT);
        let version = FormatVersion::from_u32(r.u32()?, WHAT)?;
        if r.u32()? as usize != IMAGE_HEADER_LEN {
            return Err(DecodeError::InvalidField {
                field: "image_header.header_len",
                reason: format!("expected {IMAGE_HEADER_LEN}"),
            });
        }
        let header = ImageHeader {
            version,
            history_id: r.array()?,
            revision: r.u64()?,
            timestamp_us: r.u64()?,
            hash: r.array()?,
            created_unix_us: r.u64()?,
            kind: ImageKind::from_code(r.u8()?)?,
        };
        r.finish()?;
        Ok(header)
    }
}

/// The footer: counts, the body's length and its SHA-256.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageFooter {
    pub block_count: u64,
    pub key_count: u64,
    /// Bytes before the footer (header and blocks).
    pub body_len: u64,
    /// SHA-256 of those bytes.
    pub sha256: Hash,
}

impl ImageFooter {
    pub fn encode(&self) -> [u8; FOOTER_LEN] {
        let mut w = Writer::with_capacity(FOOTER_LEN);
        w.u64(self.block_count);
        w.u64(self.key_count);
        w.u64(self.body_len);
        w.bytes(&self.sha256);
        FOOTER_LAYOUT.seal(&mut w);
        w.buf.try_into().expect("FOOTER_LEN bytes")
    }

    pub fn decode(bytes: &[u8]) -> Result<ImageFooter, DecodeError> {
        let mut r = Reader::new(FOOTER_LAYOUT.open(bytes)?, FOOTER_LAYOUT.what);
        let footer = ImageFooter {
            block_count: r.u64()?,
            key_count: r.u64()?,
            body_len: r.u64()?,
            sha256: r.array()?,
        };
        r.finish()?;
        Ok(footer)
    }
}

/// One live key of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageEntry<'a> {
    pub key: &'a str,
    /// Revision of the commit that last put the key.
    pub revision: u64,
    pub create_revision: u64,
    /// Puts since the key was last created (≥ 1).
    pub version: u64,
    pub timestamp_us: u64,
    pub value: &'a [u8],
}

impl ImageEntry<'_> {
    fn encoded_len(&self) -> usize {
        ENTRY_FIXED_LEN + self.key.len() + self.value.len()
    }

    fn encode(&self, out: &mut Vec<u8>) {
        let mut w = Writer {
            buf: std::mem::take(out),
        };
        w.u16(self.key.len() as u16);
        w.bytes(self.key.as_bytes());
        w.u64(self.revision);
        w.u64(self.create_revision);
        w.u64(self.version);
        w.u64(self.timestamp_us);
        w.u32(self.value.len() as u32);
        w.bytes(self.value);
        *out = w.buf;
    }
}

/// Compresses a block's raw bytes.
pub type Compress = dyn Fn(&[u8]) -> Vec<u8> + Send + Sync;
/// Decompresses a block into exactly `raw_len` bytes (at most `BLOCK_RAW_MAX`), or says why not.
pub type Decompress = dyn Fn(&[u8], usize) -> Result<Vec<u8>, String>;

/// Writes an image as a stream of byte chunks: `new` gives the header, `push` a finished block
/// now and then, `finish` the last block and the footer. Keys must come in ascending order.
pub struct ImageEncoder {
    header: ImageHeader,
    compress: Box<Compress>,
    block_target: usize,
    raw: Vec<u8>,
    raw_entries: u32,
    blocks: u64,
    keys: u64,
    last_key: Option<String>,
    sha: Sha256,
    body_len: u64,
}

impl ImageEncoder {
    /// Starts an image; returns the encoder and the header bytes to write first.
    pub fn new(
        header: ImageHeader,
        block_target: usize,
        compress: Box<Compress>,
    ) -> (ImageEncoder, Vec<u8>) {
        assert!((1..=BLOCK_RAW_MAX / 2).contains(&block_target));
        let bytes = header.encode().to_vec();
        let mut sha = Sha256::new();
        sha.update(&bytes);
        let encoder = ImageEncoder {
            header,
            compress,
            block_target,
            raw: Vec::with_capacity(block_target + 4096),
            raw_entries: 0,
            blocks: 0,
            keys: 0,
            last_key: None,
            sha,
            body_len: bytes.len() as u64,
        };
        (encoder, bytes)
    }

    pub fn header(&self) -> &ImageHeader {
        &self.header
    }

    /// Keys written so far.
    pub fn key_count(&self) -> u64 {
        self.keys
    }

    /// Adds an entry; returns a finished block's bytes when one filled up.
    ///
    /// Panics if the entry breaks the format's rules (keys out of order or invalid, value too
    /// large, revision past the image's): callers hand over state read from a checked store.
    pub fn push(&mut self, entry: &ImageEntry<'_>) -> Option<Vec<u8>> {
        assert!(
            self.last_key.as_deref().is_none_or(|last| last < entry.key),
            "image keys ascend"
        );
        assert!(validate_key(entry.key).is_ok() && entry.value.len() <= VALUE_BYTES_MAX);
        assert!(entry.revision <= self.header.revision && entry.version >= 1);
        let full = self.raw_entries > 0 && self.raw.len() + entry.encoded_len() > BLOCK_RAW_MAX;
        let flushed = if full { Some(self.flush()) } else { None };
        entry.encode(&mut self.raw);
        self.raw_entries += 1;
        self.keys += 1;
        self.last_key = Some(entry.key.to_owned());
        if flushed.is_some() {
            return flushed;
        }
        (self.raw.len() >= self.block_target).then(|| self.flush())
    }

    fn flush(&mut self) -> Vec<u8> {
        let compressed = (self.compress)(&self.raw);
        assert!(compressed.len() <= BLOCK_COMPRESSED_MAX);
        let mut w = Writer::with_capacity(BLOCK_HEADER_LEN + compressed.len());
        w.u32(compressed.len() as u32);
        w.u32(self.raw.len() as u32);
        w.u32(self.raw_entries);
        w.u32(crc32(&compressed));
        w.u32(crc32(&self.raw));
        BLOCK_LAYOUT.seal(&mut w);
        w.bytes(&compressed);
        self.raw.clear();
        self.raw_entries = 0;
        self.blocks += 1;
        self.sha.update(&w.buf);
        self.body_len += w.buf.len() as u64;
        w.buf
    }

    /// The last block (if it holds entries) and the footer.
    pub fn finish(mut self) -> (Vec<u8>, ImageFooter) {
        let mut out = if self.raw_entries > 0 {
            self.flush()
        } else {
            Vec::new()
        };
        let footer = ImageFooter {
            block_count: self.blocks,
            key_count: self.keys,
            body_len: self.body_len,
            sha256: self.sha.finalize().into(),
        };
        out.extend_from_slice(&footer.encode());
        (out, footer)
    }
}

/// Checks the frame of an image cheaply: header, footer, and that the footer's length matches
/// the file's. The body's SHA-256 and the blocks are checked by `decode_image`.
pub fn check_image_frame(
    header_bytes: &[u8],
    footer_bytes: &[u8],
    file_len: u64,
) -> Result<(ImageHeader, ImageFooter), DecodeError> {
    let header = ImageHeader::decode(header_bytes)?;
    let footer = ImageFooter::decode(footer_bytes)?;
    if footer.body_len.checked_add(FOOTER_LEN as u64) != Some(file_len) {
        return Err(DecodeError::InvalidField {
            field: "image_footer.body_len",
            reason: format!(
                "{} + {FOOTER_LEN} footer bytes is not the file's length {file_len}",
                footer.body_len
            ),
        });
    }
    Ok((header, footer))
}

/// Decodes and checks a whole image: header, footer, the body's SHA-256, then every block's CRCs,
/// lengths and entries (valid keys in strictly ascending order, metadata consistent with the
/// header), calling `visit` for each entry in key order.
pub fn decode_image(
    bytes: &[u8],
    decompress: &Decompress,
    visit: &mut dyn FnMut(&ImageEntry<'_>),
) -> Result<(ImageHeader, ImageFooter), DecodeError> {
    if bytes.len() < IMAGE_HEADER_LEN + FOOTER_LEN {
        return Err(DecodeError::Truncated {
            what: "image",
            needed: (IMAGE_HEADER_LEN + FOOTER_LEN) as u64,
            available: bytes.len() as u64,
        });
    }
    let body_end = bytes.len() - FOOTER_LEN;
    let (header, footer) = check_image_frame(bytes, &bytes[body_end..], bytes.len() as u64)?;
    let digest: Hash = Sha256::digest(&bytes[..body_end]).into();
    if digest != footer.sha256 {
        return Err(DecodeError::InvalidField {
            field: "image_footer.sha256",
            reason: "the SHA-256 of the image does not match its footer".to_owned(),
        });
    }
    let mut position = IMAGE_HEADER_LEN;
    let (mut blocks, mut keys) = (0u64, 0u64);
    let mut last_key: Option<String> = None;
    while position < body_end {
        let block = &bytes[position..body_end];
        if block.len() < BLOCK_HEADER_LEN {
            return Err(DecodeError::Truncated {
                what: "image block header",
                needed: BLOCK_HEADER_LEN as u64,
                available: block.len() as u64,
            });
        }
        let fields = BLOCK_LAYOUT.open(&block[..BLOCK_HEADER_LEN])?;
        let mut r = Reader::new(fields, BLOCK_LAYOUT.what);
        let compressed_len = r.u32()? as usize;
        let raw_len = r.u32()? as usize;
        let entry_count = r.u32()?;
        let compressed_crc = r.u32()?;
        let raw_crc = r.u32()?;
        r.finish()?;
        check_max(
            "image block compressed_len",
            compressed_len,
            BLOCK_COMPRESSED_MAX,
        )?;
        check_max("image block raw_len", raw_len, BLOCK_RAW_MAX)?;
        let compressed =
            Reader::new(&block[BLOCK_HEADER_LEN..], "image block").bytes(compressed_len)?;
        check_crc_of(compressed, compressed_crc, "image block (compressed)")?;
        let raw = decompress(compressed, raw_len).map_err(|reason| DecodeError::InvalidField {
            field: "image block",
            reason: format!("does not decompress: {reason}"),
        })?;
        if raw.len() != raw_len {
            return Err(DecodeError::InvalidField {
                field: "image_block.raw_len",
                reason: format!("decompressed to {} bytes, not {raw_len}", raw.len()),
            });
        }
        check_crc_of(&raw, raw_crc, "image block (raw)")?;
        let mut r = Reader::new(&raw, "image entry");
        let mut in_block = 0u32;
        while r.remaining() > 0 {
            let entry = decode_entry(&mut r, &header)?;
            if last_key.as_deref().is_some_and(|last| last >= entry.key) {
                return Err(DecodeError::InvalidField {
                    field: "image_entry.key",
                    reason: format!("{:?} does not follow the previous key in order", entry.key),
                });
            }
            last_key = Some(entry.key.to_owned());
            visit(&entry);
            in_block += 1;
            keys += 1;
        }
        if in_block != entry_count || entry_count == 0 {
            return Err(DecodeError::InvalidField {
                field: "image_block.entry_count",
                reason: format!("says {entry_count}, holds {in_block} (a block is never empty)"),
            });
        }
        blocks += 1;
        position += BLOCK_HEADER_LEN + compressed_len;
    }
    if blocks != footer.block_count || keys != footer.key_count {
        return Err(DecodeError::InvalidField {
            field: "image_footer",
            reason: format!(
                "says {} blocks and {} keys, the image holds {blocks} and {keys}",
                footer.block_count, footer.key_count
            ),
        });
    }
    Ok((header, footer))
}

fn decode_entry<'a>(
    r: &mut Reader<'a>,
    header: &ImageHeader,
) -> Result<ImageEntry<'a>, DecodeError> {
    let key_len = r.u16()? as usize;
    check_max("image entry key_len", key_len, KEY_BYTES_MAX)?;
    let key = std::str::from_utf8(r.bytes(key_len)?).map_err(|_| DecodeError::InvalidField {
        field: "image_entry.key",
        reason: "not UTF-8".to_owned(),
    })?;
    validate_key(key).map_err(|e| DecodeError::InvalidField {
        field: "image_entry.key",
        reason: e.to_string(),
    })?;
    let revision = r.u64()?;
    let create_revision = r.u64()?;
    let version = r.u64()?;
    let timestamp_us = r.u64()?;
    let value_len = r.u32()? as usize;
    check_max("image entry value_len", value_len, VALUE_BYTES_MAX)?;
    let value = r.bytes(value_len)?;
    let consistent = revision >= 1
        && revision <= header.revision
        && (1..=revision).contains(&create_revision)
        && version >= 1
        && timestamp_us <= header.timestamp_us;
    if !consistent {
        return Err(DecodeError::InvalidField {
            field: "image_entry",
            reason: format!(
                "{key:?}: revision {revision}, create_revision {create_revision}, version \
                 {version}, timestamp {timestamp_us} do not fit an image at revision {}",
                header.revision
            ),
        });
    }
    Ok(ImageEntry {
        key,
        revision,
        create_revision,
        version,
        timestamp_us,
        value,
    })
}

fn check_max(what: &'static str, value: usize, max: usize) -> Result<(), DecodeError> {
    if value > max {
        return Err(DecodeError::TooLarge {
            what,
            value: value as u64,
            max: max as u64,
        });
    }
    Ok(())
}

fn check_crc_of(bytes: &[u8], stored: u32, what: &'static str) -> Result<(), DecodeError> {
    let actual = crc32(bytes);
    if actual != stored {
        return Err(DecodeError::ChecksumMismatch {
            what,
            expected: stored,
            actual,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> Box<Compress> {
        Box::new(|raw: &[u8]| raw.to_vec())
    }

    fn copy(compressed: &[u8], raw_len: usize) -> Result<Vec<u8>, String> {
        if compressed.len() != raw_len {
            return Err("length".into());
        }
        Ok(compressed.to_vec())
    }

    fn sample(keys: usize, block_target: usize) -> Vec<u8> {
        let header = ImageHeader {
            version: FormatVersion::CURRENT,
            history_id: [3; 16],
            revision: 100,
            timestamp_us: 5000,
            hash: [9; 32],
            created_unix_us: 7,
            kind: ImageKind::Snapshot,
        };
        let (mut encoder, mut out) = ImageEncoder::new(header, block_target, identity());
        for i in 0..keys {
            let key = format!("k/{i:05}");
            let value = format!("{{\"v\":{i}}}");
            if let Some(block) = encoder.push(&ImageEntry {
                key: &key,
                revision: 1 + i as u64 % 100,
                create_revision: 1,
                version: 2,
                timestamp_us: 40,
                value: value.as_bytes(),
            }) {
                out.extend_from_slice(&block);
            }
        }
        out.extend_from_slice(&encoder.finish().0);
        out
    }

    #[test]
    fn images_round_trip_across_blocks() {
        for (keys, target) in [(0, 64), (1, 64), (500, 64), (500, 1 << 20)] {
            let bytes = sample(keys, target);
            let mut seen = Vec::new();
            let (header, footer) =
                decode_image(&bytes, &copy, &mut |e| seen.push(e.key.to_owned())).unwrap();
            assert_eq!(header.revision, 100);
            assert_eq!(footer.key_count, keys as u64);
            assert_eq!(seen.len(), keys);
            assert!(seen.windows(2).all(|w| w[0] < w[1]));
        }
    }

    #[test]
    fn any_flipped_byte_is_detected() {
        let bytes = sample(40, 200);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x04;
            assert!(
                decode_image(&bad, &copy, &mut |_| {}).is_err(),
                "flip at {i}"
            );
        }
        assert!(decode_image(&bytes[..bytes.len() - 1], &copy, &mut |_| {}).is_err());
    }

    #[test]
    fn file_names_parse_back() {
        assert_eq!(parse_snapshot_file_name(&snapshot_file_name(42)), Some(42));
        assert_eq!(
            parse_base_image_file_name(&base_image_file_name(7)),
            Some(7)
        );
        assert_eq!(parse_snapshot_file_name("snap-42.img"), None);
        assert_eq!(parse_snapshot_file_name(&base_image_file_name(7)), None);
    }
}
