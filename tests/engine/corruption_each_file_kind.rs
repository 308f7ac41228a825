//! Flipping, truncating and zeroing bytes in each kind of file: MANIFEST, a sealed segment's
//! header, records and seal, the active segment's header, and the clean-shutdown marker. Damage
//! that open reads (manifest, segment headers and seals, the active segment) fails the open with a
//! typed error naming the file; damage inside a sealed segment's records (open reads only its
//! header and seal, so open time stays flat) is found by `verify` and by any read of it; a damaged
//! clean-shutdown marker is ignored.

use crate::common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use llmcm::fs::{Fs, MemFs};
use llmcm::log::{Log, LogError};
use llmcm::storage_format::record::SEAL_RECORD_LEN;
use llmcm::storage_format::segment::{SEGMENT_HEADER_LEN, segment_file_name};

fn seg(seq: u64) -> PathBuf {
    Path::new(DIR).join("log").join(segment_file_name(seq))
}

/// A store with two sealed segments and an active one, closed cleanly or crashed.
fn store(clean: bool) -> MemFs {
    let fs = MemFs::new();
    let log = open_mem(&fs, small_segments());
    for round in 0..3 {
        for i in 0..20 {
            log.append(change(&format!("r{round}/k{i}"), i)).unwrap();
        }
        if round < 2 {
            assert!(log.roll().unwrap());
        }
    }
    if clean {
        drop(log);
        fs
    } else {
        let crashed = fs.crash();
        drop(log);
        crashed
    }
}

fn try_open(fs: &MemFs) -> Result<Log, LogError> {
    Log::open_with(
        Arc::new(fs.clone()),
        Arc::new(llmcm::clock::SystemClock),
        Path::new(DIR),
        small_segments(),
    )
}

fn damage(fs: &MemFs, path: &Path, how: &str, at: usize) {
    let mut bytes = fs.read(path).unwrap();
    match how {
        "flip" => bytes[at] ^= 0x20,
        "zero" => {
            let end = (at + 16).min(bytes.len());
            bytes[at..end].fill(0)
        }
        "truncate" => bytes.truncate(at),
        _ => unreachable!(),
    }
    fs.overwrite(path, bytes);
}

fn assert_open_fails_naming(fs: &MemFs, file: &Path) {
    match try_open(fs) {
        Err(LogError::Corrupted { file: f, .. }) => assert_eq!(f, file),
        Err(other) => panic!("expected corruption in {}, got {other}", file.display()),
        Ok(_) => panic!("open must fail for damage in {}", file.display()),
    }
}

#[test]
fn manifest_damage_fails_the_open() {
    let manifest = Path::new(DIR).join("MANIFEST");
    for (how, at) in [
        ("flip", 0),
        ("flip", 20),
        ("flip", 127),
        ("zero", 40),
        ("truncate", 100),
    ] {
        let fs = store(true);
        damage(&fs, &manifest, how, at);
        assert_open_fails_naming(&fs, &manifest);
        assert!(llmcm::log::verify::verify_dir(&fs, Path::new(DIR)).problems() > 0);
    }
}

#[test]
fn sealed_segment_header_and_seal_damage_fails_the_open() {
    for clean in [true, false] {
        for (how, at_from_end, at) in [
            ("flip", false, 3),
            ("flip", false, 40),
            ("zero", false, 16),
            ("flip", true, 5),
            ("flip", true, SEAL_RECORD_LEN - 40),
            ("zero", true, SEAL_RECORD_LEN - 60),
        ] {
            let fs = store(clean);
            let path = seg(1);
            let len = fs.file_len(&path).unwrap() as usize;
            let offset = if at_from_end { len - at } else { at };
            damage(&fs, &path, how, offset);
            assert_open_fails_naming(&fs, &path);
        }
        let fs = store(clean);
        damage(&fs, &seg(2), "truncate", 1000);
        assert_open_fails_naming(&fs, &seg(2));
    }
}

#[test]
fn sealed_segment_record_damage_is_found_by_verify_and_reads() {
    let fs = store(true);
    damage(&fs, &seg(1), "flip", SEGMENT_HEADER_LEN + 200);
    let log = try_open(&fs).expect("open reads only headers and seals of sealed segments");
    let err = log.for_each_commit(1, 5, &mut |_| {}).unwrap_err();
    assert!(
        matches!(err, LogError::Corrupted { ref file, .. } if *file == seg(1)),
        "{err}"
    );
    drop(log);
    let report = llmcm::log::verify::verify_dir(&fs, Path::new(DIR));
    assert_eq!(report.problems(), 1, "{:#?}", report.findings);
    let problem = report
        .findings
        .iter()
        .find(|f| f.severity == llmcm::log::verify::Severity::Problem)
        .unwrap();
    assert!(problem.file.ends_with(&segment_file_name(1)));
    assert!(problem.message.contains("offset"), "{}", problem.message);
}

#[test]
fn active_segment_header_damage_fails_the_open() {
    for clean in [true, false] {
        for (how, at) in [("flip", 0), ("flip", 33), ("zero", 16), ("truncate", 60)] {
            let fs = store(clean);
            damage(&fs, &seg(3), how, at);
            assert_open_fails_naming(&fs, &seg(3));
        }
    }
}

#[test]
fn active_segment_middle_damage_fails_the_open() {
    for clean in [true, false] {
        let fs = store(clean);
        damage(&fs, &seg(3), "flip", SEGMENT_HEADER_LEN + 100);
        assert_open_fails_naming(&fs, &seg(3));
    }
}

#[test]
fn a_damaged_clean_marker_is_ignored() {
    let clean = Path::new(DIR).join("CLEAN");
    for (how, at) in [("flip", 50), ("zero", 0), ("truncate", 10)] {
        let fs = store(true);
        damage(&fs, &clean, how, at);
        let log = try_open(&fs).expect("a bad marker only costs a full scan");
        assert_eq!(log.head().revision, 60);
    }
}

#[test]
fn a_missing_or_renumbered_segment_fails_the_open() {
    let fs = store(true);
    fs.remove_file(&seg(2)).unwrap();
    assert_open_fails_naming(&fs, &seg(2));

    // Segment 3 renamed to 4: its header says 3.
    let fs = store(true);
    let bytes = fs.read(&seg(3)).unwrap();
    fs.remove_file(&seg(3)).unwrap();
    let mut f = fs.create_new(&seg(4)).unwrap();
    f.write_all(&bytes).unwrap();
    drop(f);
    // Now 3 is missing between 2 and 4.
    assert_open_fails_naming(&fs, &seg(3));
}

#[test]
fn a_revision_gap_between_segments_fails_the_open() {
    use llmcm::storage_format::segment::SegmentHeader;
    let fs = store(true);
    let mut bytes = fs.read(&seg(2)).unwrap();
    let mut header = SegmentHeader::decode(&bytes).unwrap();
    header.first_revision += 1;
    bytes[..SEGMENT_HEADER_LEN].copy_from_slice(&header.encode());
    fs.overwrite(&seg(2), bytes);
    match try_open(&fs) {
        Err(LogError::Corrupted {
            file,
            kind: llmcm::log::Corruption::RevisionGap { expected, found },
            ..
        }) => {
            assert_eq!(file, seg(2));
            assert_eq!((expected, found), (21, 22));
        }
        Err(other) => panic!("unexpected {other}"),
        Ok(_) => panic!("open must fail"),
    }
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let fs = MemFs::new();
    let _log = open_mem(&fs, small_segments());
    assert!(matches!(try_open(&fs), Err(LogError::Locked { .. })));
    let dir = tempfile::tempdir().unwrap();
    let _real = Log::open(dir.path(), small_segments()).unwrap();
    let err = Log::open(dir.path(), small_segments())
        .err()
        .expect("locked");
    assert!(matches!(err, LogError::Locked { .. }), "{err}");
    assert!(err.to_string().contains("in use by another process"));
}

#[test]
fn a_directory_with_foreign_files_is_not_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
    let err = Log::open(dir.path(), small_segments())
        .err()
        .expect("refused");
    assert!(matches!(err, LogError::NotAStore { .. }), "{err}");
    assert_eq!(
        std::fs::read(dir.path().join("notes.txt")).unwrap(),
        b"mine"
    );
}
