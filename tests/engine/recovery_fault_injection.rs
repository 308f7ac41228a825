//! Recovery after I/O failures and power loss, driven by the in-memory file system: for every
//! point at which a mutating operation can fail, a workload runs until the fault, the machine
//! "loses power" (only synced bytes and synced directory entries survive), and the reopened log
//! must hold every acknowledged commit, dense revisions, and a verifying chain. Also: a failed
//! sync latches the log read-only, and a failed group fails every commit queued in it.

use crate::common;

use std::path::Path;
use std::sync::{Arc, Barrier};

use common::*;
use llmcm::fs::{Fault, MemFs};
use llmcm::log::LogError;

/// Appends until an error; returns the acknowledged revisions.
fn workload(fs: &MemFs, commits: u64) -> Vec<u64> {
    let log = match llmcm::log::Log::open_with(
        Arc::new(fs.clone()),
        Arc::new(llmcm::clock::SystemClock),
        Path::new(DIR),
        small_segments(),
    ) {
        Ok(log) => log,
        Err(_) => return Vec::new(),
    };
    let mut acked = Vec::new();
    for n in 0..commits {
        // ~1 KiB values: 64 KiB segments roll every ~60 commits.
        let value = format!("{{\"n\":{n},\"pad\":\"{}\"}}", "x".repeat(1000));
        match log.append(llmcm::store::CommitRequest::change(
            "t",
            "",
            vec![put(&format!("k/{}", n % 7), &value)],
        )) {
            Ok(info) => acked.push(info.revision),
            Err(_) => {
                assert!(log.read_only_reason().is_some() || fs.fault_fired());
                break;
            }
        }
        if n % 50 == 49 {
            let _ = log.roll();
        }
    }
    acked
}

#[test]
fn every_fault_point_recovers_every_acknowledged_commit() {
    // Count the mutating operations of a fault-free run, then fail at each of them in turn.
    let probe = MemFs::new();
    probe.set_fault(None);
    workload(&probe, 150);
    let total_ops = probe.mutating_ops();
    assert!(total_ops > 150, "expected many operations, got {total_ops}");
    let step = (total_ops / 120).max(1);
    let mut fault_at = 0;
    while fault_at < total_ops {
        for disk_full in [false, true] {
            let fs = MemFs::new();
            fs.set_fault(Some(Fault {
                after_ops: fault_at,
                disk_full,
                sticky: true,
            }));
            let acked = workload(&fs, 150);
            let crashed = fs.crash();
            crashed.set_fault(None);
            let log = open_mem(&crashed, small_segments());
            let all = read_all(&log);
            let revisions: Vec<u64> = all.iter().map(|c| c.0).collect();
            assert_eq!(
                revisions,
                (1..=revisions.len() as u64).collect::<Vec<_>>(),
                "dense revisions after fault at op {fault_at}"
            );
            if let Some(&last_acked) = acked.last() {
                assert!(
                    log.head().revision >= last_acked,
                    "fault at op {fault_at}: acknowledged {last_acked} but head is {}",
                    log.head().revision
                );
            }
            drop(log);
            assert_verifies(&crashed, Path::new(DIR));
            // The recovered log takes new commits.
            let log = open_mem(&crashed, small_segments());
            let head = log.head().revision;
            assert_eq!(
                log.append(change("after/crash", 1)).unwrap().revision,
                head + 1
            );
        }
        fault_at += step;
    }
}

#[test]
fn a_failed_sync_latches_read_only_and_nothing_unsynced_is_acknowledged() {
    let fs = MemFs::new();
    let log = open_mem(&fs, small_segments());
    for n in 0..5 {
        log.append(change("a", n)).unwrap();
    }
    // Next op is the batch write, the one after it the sync: fail the sync.
    fs.set_fault(Some(Fault {
        after_ops: 1,
        disk_full: false,
        sticky: false,
    }));
    let err = log.append(change("a", 99)).unwrap_err();
    assert!(matches!(err, LogError::ReadOnly { .. }), "{err}");
    assert!(log.read_only_reason().is_some());
    // The fault was not sticky: the disk works again, but the log must not retry.
    let err = log.append(change("a", 100)).unwrap_err();
    assert!(matches!(err, LogError::ReadOnly { .. }), "{err}");
    assert_eq!(log.head().revision, 5, "the failed commit is not visible");
    assert_eq!(read_all(&log).len(), 5);
}

#[test]
fn disk_full_turns_read_only_with_a_typed_cause() {
    let fs = MemFs::new();
    let log = open_mem(&fs, small_segments());
    log.append(change("a", 1)).unwrap();
    fs.set_fault(Some(Fault {
        after_ops: 0,
        disk_full: true,
        sticky: true,
    }));
    let err = log.append(change("a", 2)).unwrap_err();
    let reason = log.read_only_reason().expect("read-only");
    assert!(reason.contains("No space left"), "{reason}");
    assert!(matches!(err, LogError::ReadOnly { .. }));
    // Reads go on.
    assert_eq!(read_all(&log).len(), 1);
}

#[test]
fn a_failed_group_fails_every_commit_queued_in_it() {
    let fs = MemFs::new();
    let log = Arc::new(open_mem(&fs, small_segments()));
    log.append(change("warm", 0)).unwrap();
    fs.set_fault(Some(Fault {
        after_ops: 0,
        disk_full: false,
        sticky: true,
    }));
    let threads = 16;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let log = log.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                log.append(change(&format!("t/{t}"), t as u64))
            })
        })
        .collect();
    for h in handles {
        assert!(
            h.join().unwrap().is_err(),
            "no commit may succeed after the failure"
        );
    }
    assert_eq!(log.head().revision, 1);
    drop(log);
    let crashed = fs.crash();
    crashed.set_fault(None);
    let log = open_mem(&crashed, small_segments());
    assert_eq!(
        log.head().revision,
        1,
        "nothing of the failed group survives"
    );
}
