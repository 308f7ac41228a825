//! The key lookup table: key → id and the key's newest entry, in one hash-table bucket. Short keys
//! are stored inline, so a point read finds its key and its newest version without chasing a
//! pointer (each pointer is a likely cache miss on a large store).

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use storage_format::index::VersionEntry;

/// Keys up to this many bytes are stored inline.
pub const INLINE_KEY_BYTES_MAX: usize = 46;

/// A key as stored in the lookup table.
#[derive(Clone)]
pub enum TableKey {
    Inline {
        len: u8,
        bytes: [u8; INLINE_KEY_BYTES_MAX],
    },
    Shared(Arc<str>),
}

impl TableKey {
    pub fn new(key: &Arc<str>) -> TableKey {
        if key.len() <= INLINE_KEY_BYTES_MAX {
            let mut bytes = [0u8; INLINE_KEY_BYTES_MAX];
            bytes[..key.len()].copy_from_slice(key.as_bytes());
            TableKey::Inline {
                len: key.len() as u8,
                bytes,
            }
        } else {
            TableKey::Shared(key.clone())
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            // Built only from a `str` in `new`, so always UTF-8; checking is cheap for short keys.
            TableKey::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..*len as usize]).expect("built from a str")
            }
            TableKey::Shared(key) => key,
        }
    }
}

impl Borrow<str> for TableKey {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

// Hash and equality are those of the string, as `Borrow<str>` requires.
impl Hash for TableKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialEq for TableKey {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for TableKey {}

/// The table: key → slot. Hashed with foldhash (seeded per process, so keys chosen by clients
/// cannot be aimed at one bucket), several times cheaper than the standard SipHash on short keys.
pub type KeyTable = std::collections::HashMap<TableKey, KeySlot, foldhash::fast::RandomState>;

/// What the table holds for a key: its id, its newest entry (with that entry's index) and where
/// its version directory block is (0: none yet).
#[derive(Clone, Copy)]
pub struct KeySlot {
    pub id: u32,
    pub head_index: u64,
    pub head: VersionEntry,
    pub dir: u64,
}
