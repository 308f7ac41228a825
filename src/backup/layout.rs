//! The names inside a repository (FORMAT.md "Backup repositories"), checked. Everything read
//! from a repository — manifests, archive records, verify records, locks, the names a listing
//! returns — is untrusted: an edited `manifest.json` could name `/etc/passwd` or `../../x` as a
//! file to restore. So every name is checked against the layout here before any use, and local
//! paths are built only from the checked parts (a sequence number, a revision), never from the
//! text read.

use std::path::{Path, PathBuf};

use storage_format::image::{SNAPSHOT_DIR, base_image_file_name, snapshot_file_name};
use storage_format::segment::{SEGMENT_DIR, segment_file_name};

use super::FileKind;

/// A manifest, archive record or verify record larger than this is refused unread.
pub const RECORD_BYTES_MAX: u64 = 64 << 20;
/// Files one manifest may list.
pub const MANIFEST_FILES_MAX: usize = 1_000_000;

/// A data file of a backup, by what it is: its name is made from these parts only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataFile {
    /// `log/seg-<seq>.log`
    Segment(u64),
    /// `snapshots/snap-<revision>.img`
    Snapshot(u64),
    /// `base-<seq>.img`
    Base(u64),
}

impl DataFile {
    /// `name` as a file of `kind`, if it is exactly the name the layout gives such a file.
    pub fn parse(name: &str, kind: FileKind) -> Result<DataFile, String> {
        let bad = || format!("{name:?} is not the name of a {} file", kind_name(kind));
        let file = match kind {
            FileKind::Segment => name
                .strip_prefix(SEGMENT_DIR)
                .and_then(|rest| rest.strip_prefix('/'))
                .and_then(storage_format::segment::parse_segment_file_name)
                .map(DataFile::Segment),
            FileKind::Snapshot => name
                .strip_prefix(SNAPSHOT_DIR)
                .and_then(|rest| rest.strip_prefix('/'))
                .and_then(storage_format::image::parse_snapshot_file_name)
                .map(DataFile::Snapshot),
            FileKind::Base => {
                storage_format::image::parse_base_image_file_name(name).map(DataFile::Base)
            }
        }
        .ok_or_else(bad)?;
        // Parsing accepts only the canonical form; the round trip says so.
        if file.name() != name {
            return Err(bad());
        }
        Ok(file)
    }

    /// The name in a data directory and in a backup's directory.
    pub fn name(&self) -> String {
        match *self {
            DataFile::Segment(seq) => format!("{SEGMENT_DIR}/{}", segment_file_name(seq)),
            DataFile::Snapshot(revision) => {
                format!("{SNAPSHOT_DIR}/{}", snapshot_file_name(revision))
            }
            DataFile::Base(seq) => base_image_file_name(seq),
        }
    }

    /// Where it goes in the data directory `dir`: always inside it.
    pub fn path_in(&self, dir: &Path) -> PathBuf {
        match *self {
            DataFile::Segment(seq) => dir.join(SEGMENT_DIR).join(segment_file_name(seq)),
            DataFile::Snapshot(revision) => {
                dir.join(SNAPSHOT_DIR).join(snapshot_file_name(revision))
            }
            DataFile::Base(seq) => dir.join(base_image_file_name(seq)),
        }
    }
}

fn kind_name(kind: FileKind) -> &'static str {
    match kind {
        FileKind::Segment => "segment",
        FileKind::Snapshot => "snapshot",
        FileKind::Base => "base image",
    }
}

/// A backup id: `<UTC time>-<kind>-<6 hex>`, e.g. `2026-11-27T055944283990-full-fb913f`.
pub fn check_backup_id(id: &str) -> Result<(), String> {
    let bad = || format!("{id:?} is not a backup id (like 2026-11-27T055944283990-full-fb913f)");
    let b = id.as_bytes();
    // YYYY-MM-DDTHHMMSSffffff: 23 bytes.
    let time_ok = b.len() > 24
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[5..7].iter().all(u8::is_ascii_digit)
        && b[7] == b'-'
        && b[8..10].iter().all(u8::is_ascii_digit)
        && b[10] == b'T'
        && b[11..23].iter().all(u8::is_ascii_digit)
        && b[23] == b'-';
    if !time_ok {
        return Err(bad());
    }
    let (kind, hex) = id[24..].rsplit_once('-').ok_or_else(bad)?;
    if !matches!(kind, "full" | "incremental" | "differential") || !is_hex(hex, 6) {
        return Err(bad());
    }
    Ok(())
}

/// A history id: 32 lowercase hex digits.
pub fn check_history_id(history: &str) -> Result<(), String> {
    if is_hex(history, 32) {
        Ok(())
    } else {
        Err(format!("{history:?} is not a history id (32 hex digits)"))
    }
}

/// A SHA-256: 64 lowercase hex digits.
pub fn check_sha256(sha256: &str) -> Result<(), String> {
    if is_hex(sha256, 64) {
        Ok(())
    } else {
        Err(format!("{sha256:?} is not a SHA-256 (64 hex digits)"))
    }
}

fn is_hex(text: &str, len: usize) -> bool {
    text.len() == len && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_canonical_names_of_their_kind_pass() {
        for (name, kind) in [
            ("log/seg-00000000000000000007.log", FileKind::Segment),
            (
                "snapshots/snap-00000000000000000042.img",
                FileKind::Snapshot,
            ),
            ("base-00000000000000000003.img", FileKind::Base),
        ] {
            let file = DataFile::parse(name, kind).unwrap();
            assert_eq!(file.name(), name);
            let dir = Path::new("/restore/x.staging");
            assert!(file.path_in(dir).starts_with(dir));
            assert_eq!(file.path_in(dir), dir.join(name));
        }
        for (name, kind) in [
            ("/etc/passwd", FileKind::Segment),
            ("../../x", FileKind::Segment),
            ("log/../../../x", FileKind::Segment),
            (
                "log/seg-00000000000000000007.log/../../x",
                FileKind::Segment,
            ),
            ("log//seg-00000000000000000007.log", FileKind::Segment),
            ("./log/seg-00000000000000000007.log", FileKind::Segment),
            ("log/seg-7.log", FileKind::Segment),
            ("log/seg-00000000000000000007.log", FileKind::Snapshot),
            ("base-00000000000000000003.img", FileKind::Segment),
            ("snapshots/base-00000000000000000003.img", FileKind::Base),
            ("log\\seg-00000000000000000007.log", FileKind::Segment),
            ("", FileKind::Base),
        ] {
            assert!(DataFile::parse(name, kind).is_err(), "{name:?} as {kind:?}");
        }
    }

    #[test]
    fn ids_and_digests_are_checked() {
        assert!(check_backup_id("2026-11-27T055944283990-full-fb913f").is_ok());
        assert!(check_backup_id("2026-11-27T055944283990-incremental-000000").is_ok());
        for id in [
            "",
            "..",
            "../2026-11-27T055944283990-full-fb913f",
            "2026-11-27T055944283990-full-fb913f/..",
            "2026-11-27T055944283990-weekly-fb913f",
            "2026-11-27T055944283990-full-FB913F",
            "2026-11-27T055944283990-full-fb913",
            "2026-11-27 055944283990-full-fb913f",
        ] {
            assert!(check_backup_id(id).is_err(), "{id:?}");
        }
        assert!(check_history_id(&"ab".repeat(16)).is_ok());
        assert!(check_history_id("../x").is_err());
        assert!(check_sha256(&"0f".repeat(32)).is_ok());
        assert!(check_sha256(&"0F".repeat(32)).is_err());
    }
}
