//! Point-in-time restore from a data directory, compared with as-of reads of the original.
//!
//! One source store (random commits over nested keys, small segments, a snapshot in the middle,
//! then a compaction) stays open while proptest picks points (a revision or a time at or after
//! the horizon) and optional prefixes: each restore's content must equal the source's list at that
//! point (under the prefix), its restore commit must sit above the source's head in a new history,
//! its chain must verify, and the source must be unchanged byte for byte.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use llmcm::clock::ManualClock;
use llmcm::storage_format::commit::Op;
use llmcm::store::restore::{RestoreError, RestorePoint, RestoreRequest, restore};
use llmcm::store::{CommitFilter, MaintenanceConfig, Point, Store};
use llmcm::store::{CommitRequest, LogConfig};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

const KEYS: [&str; 8] = ["a", "a/b", "a/c", "ab/x", "b/x", "b/y/z", "c", "d/e"];
const PREFIXES: [&str; 4] = ["a/", "b", "zz", "a"];
// Times must be in the past for restore (it refuses future points): 2025-01-01.
const T0: u64 = 1_735_689_600_000_000;

fn open(dir: &Path, clock: &Arc<ManualClock>) -> Store {
    let maintenance = MaintenanceConfig {
        snapshot_every_commits: 0,
        snapshot_every_us: 0,
        io_bytes_per_sec: 0,
        ..MaintenanceConfig::default()
    };
    let log = LogConfig {
        segment_bytes_max: 64 << 10,
        ..LogConfig::default()
    };
    Store::open_full(dir, log, maintenance, clock.clone()).unwrap()
}

fn write(store: &Store, clock: &ManualClock, seed: &mut u64, commits: usize) {
    for i in 0..commits {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let r = *seed >> 33;
        clock.advance(1 + r % 2_000_000);
        let key = KEYS[(r % KEYS.len() as u64) as usize];
        let second = KEYS[((r >> 8) % KEYS.len() as u64) as usize];
        let mut ops = vec![if r.is_multiple_of(6) {
            Op::Delete { key: key.into() }
        } else {
            Op::Put {
                key: key.into(),
                value: format!(
                    "{{\"i\":{i},\"pad\":\"{}\"}}",
                    "p".repeat((r % 1500) as usize)
                )
                .into_bytes(),
            }
        }];
        if second != key {
            ops.push(Op::Put {
                key: second.into(),
                value: format!("[{i}]").into_bytes(),
            });
        }
        store
            .append(CommitRequest::change("writer", "test", ops))
            .unwrap();
    }
}

type Listing = BTreeMap<String, (Vec<u8>, u64, u64, u64, u64)>;

fn listing(store: &Store, point: Point, prefix: &str) -> Listing {
    let mut out = BTreeMap::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.list(prefix, point, after.as_deref(), 1000).unwrap();
        for v in page.items {
            out.insert(
                v.key.to_string(),
                (
                    v.value.as_bytes().to_vec(),
                    v.revision,
                    v.create_revision,
                    v.version,
                    v.timestamp_us,
                ),
            );
        }
        match page.next {
            Some(n) => after = Some(n),
            None => return out,
        }
    }
}

/// Every file under `dir` with its bytes (the source must not change).
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if !p.starts_with(dir.join("index")) && p.file_name().unwrap() != "LOCK" {
                out.insert(
                    p.strip_prefix(dir).unwrap().display().to_string(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    out
}

#[test]
fn restores_equal_as_of_reads_of_the_source() {
    let tmp = tempfile::tempdir().unwrap();
    let source_dir = tmp.path().join("source");
    let clock = Arc::new(ManualClock::new(T0));
    let source = open(&source_dir, &clock);
    let mut seed = 11u64;
    write(&source, &clock, &mut seed, 150);
    source.snapshot().unwrap();
    write(&source, &clock, &mut seed, 150);
    let before_compaction = source.log().head();
    let span = before_compaction.timestamp_us - T0;
    let outcome = source.compact(span / 2, "op", "test").unwrap().unwrap();
    write(&source, &clock, &mut seed, 60);
    source.snapshot().unwrap();
    write(&source, &clock, &mut seed, 40);
    let horizon = outcome.horizon;
    let head = source.log().head();
    let before = files(&source_dir);

    let mut runner = TestRunner::new(Config {
        cases: 24,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (
        prop::bool::ANY,
        0u64..1_000_000,
        prop::option::of(0..PREFIXES.len()),
        prop::bool::weighted(0.2),
    );
    let case = std::sync::atomic::AtomicU32::new(0);
    runner
        .run(&strategy, |(by_time, pick, prefix, bump)| {
            let case = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let (point, as_of) = if by_time {
                let t = horizon.timestamp_us
                    + (head.timestamp_us - horizon.timestamp_us) * pick / 999_999;
                (RestorePoint::Time(t), Point::Time(t))
            } else {
                let r = horizon.revision + pick % (head.revision - horizon.revision + 1);
                (RestorePoint::Revision(r), Point::Revision(r))
            };
            let prefix = prefix.map(|i| PREFIXES[i].to_owned());
            let bump_revision = if bump { head.revision + 1000 } else { 0 };
            let target = tmp.path().join(format!("restored-{case}"));
            let mut printed = None;
            let outcome = restore(
                &RestoreRequest {
                    source: source_dir.clone(),
                    point,
                    prefix: prefix.clone(),
                    bump_revision,
                    // A random prefix may hold nothing at the point: compared all the same.
                    allow_empty: true,
                    target: target.clone(),
                    actor: "restorer".into(),
                },
                &mut |resolved| printed = Some(*resolved),
            )
            .unwrap();
            prop_assert_eq!(printed, Some(outcome.resolved));
            let expected_rev = (head.revision + 1).max(bump_revision);
            prop_assert_eq!(outcome.restore_revision, expected_rev);

            let restored = Store::open(&target, LogConfig::default()).unwrap();
            let want = listing(&source, as_of, prefix.as_deref().unwrap_or(""));
            prop_assert_eq!(listing(&restored, Point::Latest, ""), want.clone());
            // The restored point itself reads the same in the new history.
            prop_assert_eq!(
                listing(&restored, Point::Revision(outcome.resolved.revision), ""),
                want
            );
            prop_assert_ne!(restored.log().history_id(), source.log().history_id());
            let commits = restored
                .commits(&CommitFilter {
                    limit: 10,
                    ..CommitFilter::default()
                })
                .unwrap();
            prop_assert_eq!(commits.items.len(), 1);
            let commit = &commits.items[0];
            prop_assert_eq!(commit.commit.kind.name(), "restore");
            prop_assert_eq!(commit.commit.revision, expected_rev);
            prop_assert_eq!(commit.prev_hash, outcome.resolved.hash);
            let detail: serde_json::Value = serde_json::from_slice(&commit.commit.detail).unwrap();
            prop_assert_eq!(
                detail["point"]["revision"].as_u64(),
                Some(outcome.resolved.revision)
            );
            prop_assert!(restored.verify_chain(None, None).unwrap().ok());
            // Writes continue above the restore commit.
            let next = restored
                .append(CommitRequest::change(
                    "w",
                    "",
                    vec![Op::Put {
                        key: "after/restore".into(),
                        value: b"1".to_vec(),
                    }],
                ))
                .unwrap();
            prop_assert_eq!(next.revision, expected_rev + 1);
            Ok(())
        })
        .unwrap();
    assert_eq!(files(&source_dir), before, "the source was modified");
}

#[test]
fn restore_refuses_what_it_cannot_do_right() {
    let tmp = tempfile::tempdir().unwrap();
    let source_dir = tmp.path().join("source");
    let clock = Arc::new(ManualClock::new(T0));
    let source = open(&source_dir, &clock);
    let mut seed = 5u64;
    write(&source, &clock, &mut seed, 200);
    let span = source.log().head().timestamp_us - T0;
    let horizon = source.compact(span / 2, "op", "").unwrap().unwrap().horizon;
    let head = source.log().head().revision;
    let request = |point, target: &str| RestoreRequest {
        source: source_dir.clone(),
        point,
        prefix: None,
        bump_revision: 0,
        allow_empty: true,
        target: tmp.path().join(target),
        actor: "r".into(),
    };
    let run = |r: RestoreRequest| restore(&r, &mut |_| {});
    assert!(matches!(
        run(request(RestorePoint::Revision(horizon.revision - 1), "t1")),
        Err(RestoreError::Compacted { .. })
    ));
    assert!(matches!(
        run(request(RestorePoint::Time(horizon.timestamp_us - 1), "t2")),
        Err(RestoreError::Compacted { .. })
    ));
    assert!(matches!(
        run(request(RestorePoint::Revision(head + 1), "t3")),
        Err(RestoreError::Future(_))
    ));
    std::fs::create_dir_all(tmp.path().join("full")).unwrap();
    std::fs::write(tmp.path().join("full/x"), b"x").unwrap();
    assert!(matches!(
        run(request(RestorePoint::Latest, "full")),
        Err(RestoreError::Invalid(_))
    ));
    assert!(matches!(
        run(request(RestorePoint::Latest, "source")),
        Err(RestoreError::Invalid(_))
    ));
    // Nothing was left behind by the refusals.
    for t in ["t1", "t2", "t3"] {
        assert!(!tmp.path().join(t).exists(), "{t}");
    }
    // Restoring at the horizon itself works (the base image alone).
    let at_horizon = run(request(RestorePoint::Revision(horizon.revision), "t4")).unwrap();
    assert_eq!(at_horizon.commits_replayed, 0);
    let restored = Store::open(tmp.path().join("t4"), LogConfig::default()).unwrap();
    assert_eq!(
        listing(&restored, Point::Latest, ""),
        listing(&source, Point::Revision(horizon.revision), "")
    );
    // A restore of a restored store works too (a source whose first segment starts in a gap).
    drop(restored);
    let again = run(RestoreRequest {
        source: tmp.path().join("t4"),
        ..request(RestorePoint::Latest, "t5")
    })
    .unwrap();
    assert_eq!(again.resolved.revision, at_horizon.restore_revision);
}
