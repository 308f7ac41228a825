//! Each write step of a snapshot, a compaction and an index checkpoint fails in turn (EIO, or
//! ENOSPC), through `FaultyFs` over the real file system: the operation may fail, but the store
//! keeps giving the answers it gave before, and after a reopen on a sound disk it gives them
//! still — nothing half-written is ever read, and nothing is lost.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use llmcm::clock::ManualClock;
use llmcm::fs::{Fault, FaultyFs, RealFs};
use llmcm::store::{CommitRequest, LogConfig, MaintenanceConfig, Op, Point, Store};

const T0: u64 = 1_800_000_000_000_000;
const KEYS: usize = 12;
/// Faults tried per operation, at most (each operation has far fewer steps).
const STEPS_MAX: u64 = 400;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 64 << 10,
        reread_sealed_segments: false,
        ..LogConfig::default()
    }
}

fn open(dir: &Path, clock: &Arc<ManualClock>, fs: Option<&FaultyFs>) -> Store {
    let fs: Arc<dyn llmcm::fs::Fs> = match fs {
        Some(fs) => Arc::new(fs.clone()),
        None => Arc::new(RealFs),
    };
    Store::open_with_fs(
        dir,
        config(),
        MaintenanceConfig::manual(),
        clock.clone(),
        fs,
    )
    .unwrap()
}

/// `commits` commits of three puts of ~1 KiB each, a second apart.
fn populate(store: &Store, clock: &ManualClock, commits: usize) {
    for i in 0..commits {
        let ops = (0..3)
            .map(|j| Op::Put {
                key: format!("app/k{:02}", (i * 3 + j) % KEYS),
                value: format!("{{\"i\":{i},\"pad\":\"{}\"}}", "x".repeat(1000)).into_bytes(),
            })
            .collect();
        store.append(CommitRequest::change("t", "", ops)).unwrap();
        clock.advance(1_000_000);
    }
}

/// Every key at every revision in a range, and now (`u64::MAX`): the value's commit and length,
/// and the revision that put it.
type Answers = BTreeMap<(String, u64), Option<(String, u64)>>;

/// A value as the answers keep it: `{"i":N` (the commit that wrote it) and its length.
fn summary(value: &[u8]) -> String {
    let text = String::from_utf8_lossy(value);
    let head = text.split(',').next().unwrap_or_default();
    format!("{head} ({} bytes)", value.len())
}

/// The answers at revisions `from..=to` (a compaction's own commit, after `to`, changes no key).
fn answers(store: &Store, from: u64, to: u64) -> Answers {
    let mut out = BTreeMap::new();
    for k in 0..KEYS {
        let key = format!("app/k{k:02}");
        for revision in from..=to {
            let got = store
                .get(&key, Point::Revision(revision))
                .unwrap_or_else(|e| panic!("{key} at {revision}: {e}"))
                .map(|v| (summary(v.value.as_bytes()), v.revision));
            out.insert((key.clone(), revision), got);
        }
        let latest = store
            .get(&key, Point::Latest)
            .unwrap()
            .map(|v| (summary(v.value.as_bytes()), v.revision));
        out.insert((key, u64::MAX), latest);
    }
    out
}

/// The answers at past revisions only (not now).
fn past(answers: Answers) -> Answers {
    answers
        .into_iter()
        .filter(|((_, r), _)| *r != u64::MAX)
        .collect()
}

/// `expected` restricted to revisions at or after `from` (and now).
fn at_or_after(expected: &Answers, from: u64) -> Answers {
    expected
        .iter()
        .filter(|((_, r), _)| *r == u64::MAX || *r >= from)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn no_temporary_files(dir: &Path) {
    for sub in ["", "snapshots", "index", "log"] {
        let Ok(entries) = std::fs::read_dir(dir.join(sub)) else {
            continue;
        };
        for entry in entries {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            assert!(!name.ends_with(".tmp"), "{sub}/{name} left behind");
        }
    }
}

/// Runs `operation` on a fresh store once per write step it makes, failing that step; checks
/// the answers live and after a reopen. Returns how many steps the operation has.
fn fail_each_step(
    commits: usize,
    operation: &dyn Fn(&Store, &ManualClock) -> Result<(), String>,
) -> u64 {
    for step in 0..STEPS_MAX {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let clock = Arc::new(ManualClock::new(T0));
        let fs = FaultyFs::new(Arc::new(RealFs));
        let store = open(&dir, &clock, Some(&fs));
        populate(&store, &clock, commits);
        let head = store.head().revision;
        let before = answers(&store, 1, head);
        fs.set_fault(Some(Fault {
            after_ops: step,
            disk_full: step % 2 == 1,
            sticky: false,
        }));
        let result = operation(&store, &clock);
        let fired = fs.fault_fired();
        fs.set_fault(None);
        if !fired {
            result.unwrap();
            eprintln!("{step} write steps, each failed in turn");
            return step;
        }
        // Live: every answer at or after the horizon (a compaction that got far enough moved
        // it) is what it was.
        let from = store.horizon().revision.max(1);
        assert_eq!(
            answers(&store, from, head),
            at_or_after(&before, from),
            "step {step} ({result:?}): live answers changed"
        );
        // The next checkpoint, after the failed one, writes over what the failure left.
        if store.read_only_reason().is_none() {
            populate(&store, &clock, 1);
            store.roll().unwrap();
            assert_eq!(store.index_checkpointed_through(), store.head().revision);
            assert_eq!(
                past(answers(&store, from, head)),
                past(at_or_after(&before, from)),
                "step {step} ({result:?}): answers changed after the next checkpoint"
            );
            // Answered from the files the checkpoints wrote, not from a rebuild that hid
            // damage they left.
            assert_eq!(
                store.index_rebuilds(),
                0,
                "step {step}: the index was rebuilt"
            );
        }
        drop(store);
        let store = open(&dir, &clock, None);
        let horizon = store.horizon().revision.max(from);
        assert_eq!(
            past(answers(&store, horizon, head)),
            past(at_or_after(&before, horizon)),
            "step {step} ({result:?}): answers changed after reopening"
        );
        let verified = store.verify_chain(None, None).unwrap();
        assert!(verified.ok(), "step {step}: {:?}", verified.failure);
        // The store takes writes again on a sound disk.
        populate(&store, &clock, 1);
        drop(store);
        no_temporary_files(&dir);
    }
    panic!("the operation made more than {STEPS_MAX} write steps")
}

#[test]
fn a_failed_snapshot_step_changes_no_answer() {
    let steps = fail_each_step(40, &|store, _| {
        store.snapshot().map(|_| ()).map_err(|e| e.to_string())
    });
    assert!(
        steps >= 3,
        "a snapshot writes, syncs and renames: {steps} steps"
    );
}

#[test]
fn a_failed_compaction_step_changes_no_answer_after_the_horizon() {
    let steps = fail_each_step(120, &|store, clock| {
        clock.advance(10_000_000);
        // Keep the newest minute of the two-minute history.
        match store.compact(60_000_000, "op", "test") {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err("nothing compacted".into()),
            Err(e) => Err(e.to_string()),
        }
    });
    assert!(steps >= 5, "a compaction has several write steps: {steps}");
}

#[test]
fn a_failed_checkpoint_step_changes_no_answer() {
    let steps = fail_each_step(40, &|store, _| {
        // The roll seals the segment; the checkpoint thread writes the index files for it.
        store.roll().map_err(|e| e.to_string())?;
        let head = store.head().revision;
        let through = store.index_checkpointed_through();
        if through == head {
            Ok(())
        } else {
            Err(format!("checkpointed through {through}, head {head}"))
        }
    });
    assert!(
        steps >= 5,
        "a roll and its checkpoint have several write steps: {steps}"
    );
}
