//! Segments roll by size, by age and on request; a sealed segment's bytes never change again;
//! an empty segment is never sealed.

use crate::common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use common::*;
use llmcm::clock::ManualClock;
use llmcm::fs::{Fs, MemFs};
use llmcm::store::LogConfig;

#[test]
fn segments_roll_by_size_and_sealed_bytes_never_change() {
    let fs = MemFs::new();
    let log = open_mem(&fs, small_segments());
    let mut sealed_bytes: HashMap<u64, Vec<u8>> = HashMap::new();
    for n in 0..600u64 {
        let value = format!("{{\"pad\":\"{}\",\"n\":{n}}}", "x".repeat(400));
        log.append(llmcm::store::CommitRequest::change(
            "t",
            "",
            vec![put("k", &value)],
        ))
        .unwrap();
        for seg in log.segments().iter().filter(|s| s.sealed) {
            let bytes = fs.read(&seg.path).unwrap();
            assert!(bytes.len() as u64 <= small_segments().segment_bytes_max + 1024);
            let first = sealed_bytes.entry(seg.seq).or_insert_with(|| bytes.clone());
            assert_eq!(*first, bytes, "sealed segment {} changed", seg.seq);
        }
    }
    let segments = log.segments();
    assert!(segments.len() >= 4, "{} segments", segments.len());
    for pair in segments.windows(2) {
        assert_eq!(pair[0].last_revision + 1, pair[1].first_revision);
    }
    assert!(!segments.last().unwrap().sealed);
    assert_eq!(log.stats().segments_sealed, segments.len() as u64 - 1);
    drop(log);
    assert_verifies(&fs, Path::new(DIR));
}

#[test]
fn segments_roll_by_age_and_on_request() {
    let fs = MemFs::new();
    let clock = Arc::new(ManualClock::new(1_000_000_000));
    let config = LogConfig {
        segment_age_max_us: 3_600_000_000,
        ..LogConfig::default()
    };
    let log = open_mem_clock(&fs, clock.clone(), config);
    assert!(!log.roll().unwrap(), "an empty segment is not sealed");
    assert!(!log.roll_if_due().unwrap());
    log.append(change("k", 1)).unwrap();
    clock.advance(3_599_000_000);
    assert!(!log.roll_if_due().unwrap(), "not yet an hour old");
    clock.advance(1_000_000);
    assert!(
        log.roll_if_due().unwrap(),
        "an hour old: rolled by the periodic check"
    );
    assert_eq!(log.segments().len(), 2);
    // Idle: nothing to roll.
    clock.advance(7_200_000_000);
    assert!(!log.roll_if_due().unwrap());
    // An append into an old segment rolls it first.
    log.append(change("k", 2)).unwrap();
    clock.advance(3_600_000_000);
    log.append(change("k", 3)).unwrap();
    let segments = log.segments();
    assert_eq!(segments.len(), 3);
    assert_eq!(
        (segments[1].first_revision, segments[1].last_revision),
        (2, 2)
    );
    assert_eq!(segments[2].first_revision, 3);
    // On request.
    assert!(log.roll().unwrap());
    assert_eq!(log.segments().len(), 4);
    drop(log);
    assert_verifies(&fs, Path::new(DIR));
    let log = open_mem_clock(&fs, clock, LogConfig::default());
    assert_eq!(log.head().revision, 3);
    assert_eq!(log.append(change("k", 4)).unwrap().revision, 4);
}

#[test]
fn a_crash_between_seal_and_successor_recovers() {
    // Seal, then "crash" before the successor's name is durable: the last segment is sealed.
    let fs = MemFs::new();
    let log = open_mem(&fs, small_segments());
    log.append(change("k", 1)).unwrap();
    // roll = write seal, sync, create tmp, write header, sync, rename, sync dir: fail the create.
    fs.set_fault(Some(llmcm::fs::Fault {
        after_ops: 2,
        disk_full: false,
        sticky: true,
    }));
    assert!(log.roll().is_err());
    assert!(
        log.read_only_reason().is_some(),
        "a sealed segment takes no more commits"
    );
    let crashed = fs.crash();
    drop(log);
    crashed.set_fault(None);
    let log = open_mem(&crashed, small_segments());
    assert_eq!(log.segments().len(), 2, "successor created at open");
    assert!(log.segments()[0].sealed);
    assert_eq!(log.append(change("k", 2)).unwrap().revision, 2);
    drop(log);
    assert_verifies(&crashed, Path::new(DIR));
}

#[test]
fn an_idle_store_rolls_by_age_on_its_own() {
    use llmcm::store::Store;
    let tmp = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000_000));
    let config = LogConfig {
        segment_age_max_us: 3_600_000_000,
        ..LogConfig::default()
    };
    let store = Store::open_with_clock(tmp.path(), config, clock.clone()).unwrap();
    store.append(change("k", 1)).unwrap();
    assert_eq!(store.log().segments().len(), 1);
    clock.advance(3_600_000_000);
    // The housekeeping thread checks every second; allow it generous time on a loaded machine.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while store.log().segments().len() < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let segments = store.log().segments();
    assert_eq!(segments.len(), 2, "sealed by age without any append");
    assert!(segments[0].sealed);
    store.close().unwrap();
}
