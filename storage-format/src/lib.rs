//! On-disk types and codecs of llmcm, exactly as `FORMAT.md` (beside this crate's `Cargo.toml`)
//! specifies them. This crate knows nothing of files, threads or HTTP: it turns values into bytes
//! and bytes into values, and every decoder checks every length against its maximum before it
//! looks further.
//!
//! Invariants kept by every encoder here:
//! - integers are little-endian (clippy's `big_endian_bytes`/`host_endian_bytes` are denied);
//! - an object's bytes are a pure function of its value, so the commit's canonical bytes are unique;
//! - every decoder returns `DecodeError`, never panics, on any input.

pub mod clean;
mod codec;
pub mod commit;
mod error;
pub mod image;
pub mod index;
pub mod json;
pub mod manifest;
pub mod record;
pub mod scan;
pub mod segment;

pub use codec::{Reader, Writer};
pub use error::{DecodeError, KeyError};

/// Length of every file kind's magic.
pub const MAGIC_LEN: usize = 8;

/// Builds a PNG-style magic: a high-bit byte (catches 7-bit channels), a three-letter name, then
/// CR LF (catches line-ending conversion), SUB (stops `type` on DOS) and LF.
const fn magic(name: &[u8; 3]) -> [u8; MAGIC_LEN] {
    [0x89, name[0], name[1], name[2], 0x0D, 0x0A, 0x1A, 0x0A]
}

/// Magic of a log segment file.
pub const SEGMENT_MAGIC: [u8; MAGIC_LEN] = magic(b"LCS");
/// Magic of the MANIFEST file.
pub const MANIFEST_MAGIC: [u8; MAGIC_LEN] = magic(b"LCM");
/// Magic of the clean-shutdown marker.
pub const CLEAN_MAGIC: [u8; MAGIC_LEN] = magic(b"LCC");

/// Length of the version field that follows every magic.
pub const VERSION_LEN: usize = 4;

/// A format version, asked about by capability rather than compared by number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FormatVersion(u32);

impl FormatVersion {
    /// The version this code writes.
    pub const CURRENT: FormatVersion = FormatVersion(1);

    /// Accepts the versions this code can read.
    pub fn from_u32(version: u32, what: &'static str) -> Result<Self, DecodeError> {
        match version {
            1 => Ok(FormatVersion(version)),
            _ => Err(DecodeError::UnsupportedVersion { what, version }),
        }
    }
    pub fn as_u32(self) -> u32 {
        self.0
    }
    /// Record headers carry the first revision of their group-commit batch, which tells a torn
    /// batch from corruption of an acknowledged one (FORMAT.md "Recovery").
    pub fn has_batch_marks(self) -> bool {
        self.0 >= 1
    }
    /// The manifest names a horizon and a base image (compaction); zero when there is none.
    pub fn has_base_image(self) -> bool {
        self.0 >= 1
    }
}

/// Length of a SHA-256 digest, the chain hash.
pub const HASH_LEN: usize = 32;
/// A chain hash.
pub type Hash = [u8; HASH_LEN];
/// The predecessor of a history's first commit.
pub const GENESIS_HASH: Hash = [0u8; HASH_LEN];
/// Length of a history id.
pub const HISTORY_ID_LEN: usize = 16;
/// Identifies one history (fixed at creation, new after a restore).
pub type HistoryId = [u8; HISTORY_ID_LEN];

/// Bytes of a key, at most (DESIGN.md §2).
pub const KEY_BYTES_MAX: usize = 512;
/// Bytes of a value, at most, that the format accepts. The store may be configured lower.
pub const VALUE_BYTES_MAX: usize = 1 << 20;
/// Bytes of a commit's actor name, at most.
pub const ACTOR_BYTES_MAX: usize = 256;
/// Bytes of a commit's reason, at most (DESIGN.md §2: 4 KiB).
pub const REASON_BYTES_MAX: usize = 4096;
/// Bytes of a system commit's detail document, at most.
pub const DETAIL_BYTES_MAX: usize = 64 << 10;
/// Operations in one commit, at most, at the format level. Change commits are limited to 1000 by
/// the store (DESIGN.md §2); a rollback commit may hold more, up to this bound.
pub const COMMIT_OPS_MAX: usize = 100_000;
/// Bytes of one record's payload, at most. Change commits are limited to 8 MiB by the store; a
/// rollback commit may be larger, up to this bound.
pub const RECORD_PAYLOAD_BYTES_MAX: usize = 64 << 20;

/// Checks a key against DESIGN.md §2: UTF-8 (guaranteed by `&str`), 1–512 bytes, `/`-separated
/// segments of `[A-Za-z0-9._-]`, no empty segment, no leading or trailing `/`, no `.` or `..`.
pub fn validate_key(key: &str) -> Result<(), KeyError> {
    if key.is_empty() {
        return Err(KeyError::Empty);
    }
    if key.len() > KEY_BYTES_MAX {
        return Err(KeyError::TooLong {
            len: key.len(),
            max: KEY_BYTES_MAX,
        });
    }
    if key.starts_with('/') || key.ends_with('/') {
        return Err(KeyError::EdgeSlash);
    }
    if let Some(ch) = key
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/')))
    {
        return Err(KeyError::BadCharacter { ch });
    }
    for segment in key.split('/') {
        if segment.is_empty() {
            return Err(KeyError::EmptySegment);
        }
        if segment == "." || segment == ".." {
            return Err(KeyError::DotSegment);
        }
    }
    Ok(())
}

/// CRC-32 (IEEE) of a byte string, as every checksum in the format.
pub fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// Lower-case hex of a byte string (hashes, history ids).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 0xf) as usize] as char);
    }
    out
}

/// Parses lower- or upper-case hex into exactly `N` bytes.
pub fn parse_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let text = text.as_bytes();
    if text.len() != N * 2 {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; N];
    for (i, pair) in text.chunks_exact(2).enumerate() {
        out[i] = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_design() {
        for good in [
            "a",
            "prod/chatbot/model",
            "a.b/c_d/e-f",
            "x/..y/z",
            &"k".repeat(512),
        ] {
            assert_eq!(validate_key(good), Ok(()), "{good}");
        }
        assert_eq!(validate_key(""), Err(KeyError::Empty));
        assert!(matches!(
            validate_key(&"k".repeat(513)),
            Err(KeyError::TooLong { .. })
        ));
        assert_eq!(validate_key("/a"), Err(KeyError::EdgeSlash));
        assert_eq!(validate_key("a/"), Err(KeyError::EdgeSlash));
        assert_eq!(validate_key("a//b"), Err(KeyError::EmptySegment));
        assert_eq!(validate_key("a/./b"), Err(KeyError::DotSegment));
        assert_eq!(validate_key(".."), Err(KeyError::DotSegment));
        assert_eq!(validate_key("a b"), Err(KeyError::BadCharacter { ch: ' ' }));
        assert_eq!(validate_key("é"), Err(KeyError::BadCharacter { ch: 'é' }));
    }

    #[test]
    fn hex_round_trips() {
        let bytes = [0x00, 0x1f, 0xa0, 0xff];
        assert_eq!(hex(&bytes), "001fa0ff");
        assert_eq!(parse_hex::<4>("001FA0ff"), Some(bytes));
        assert_eq!(parse_hex::<4>("001fa0f"), None);
        assert_eq!(parse_hex::<4>("001fa0fg"), None);
    }

    #[test]
    fn magics_are_png_style_and_distinct() {
        for m in [SEGMENT_MAGIC, MANIFEST_MAGIC, CLEAN_MAGIC] {
            assert_eq!(m[0], 0x89);
            assert_eq!(&m[4..], &[0x0D, 0x0A, 0x1A, 0x0A]);
        }
        assert_ne!(SEGMENT_MAGIC, MANIFEST_MAGIC);
        assert_ne!(SEGMENT_MAGIC, CLEAN_MAGIC);
    }
}
