//! Compaction equivalence and snapshots, in the library.
//!
//! Random commit sequences over nested keys, with small segments; then, for every revision from
//! the horizon to the head and at random times after the horizon's, every read (get of every key,
//! the whole list, history of every key, commits, diffs) is identical before and after
//! compaction — on the live store, after a reopen, after the index is deleted (rebuilt from the
//! base image and the log), and after a second compaction. Every point before the horizon is
//! `Compacted`; the chain verifies from the horizon. Snapshots: a damaged newest snapshot is set
//! aside and the store opens.

use std::path::Path;
use std::sync::Arc;

use llmcm::clock::ManualClock;
use llmcm::storage_format::commit::Op;
use llmcm::store::{CommitFilter, MaintenanceConfig, Point, ReadError, Store};
use llmcm::store::{CommitRequest, LogConfig};

const KEYS: [&str; 9] = [
    "a",
    "a/b",
    "a/c",
    "ab/x",
    "b/x",
    "b/y/z",
    "c",
    "_schemas/q",
    "d/e",
];
const T0: u64 = 1_800_000_000_000_000;

/// xorshift64*: deterministic cases without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 64 << 10,
        ..LogConfig::default()
    }
}

fn open(dir: &Path, clock: &Arc<ManualClock>) -> Store {
    let maintenance = MaintenanceConfig {
        snapshot_every_commits: 0,
        snapshot_every_us: 0,
        io_bytes_per_sec: 0,
        ..MaintenanceConfig::default()
    };
    Store::open_full(dir, config(), maintenance, clock.clone()).unwrap()
}

fn write_random(store: &Store, clock: &ManualClock, rng: &mut Rng, commits: usize) {
    for i in 0..commits {
        clock.advance(1 + rng.below(3_000_000));
        let mut keys: Vec<&str> = Vec::new();
        for _ in 0..1 + rng.below(3) {
            let k = KEYS[rng.below(KEYS.len() as u64) as usize];
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
        let ops = keys
            .into_iter()
            .map(|k| {
                if rng.below(5) == 0 {
                    Op::Delete { key: k.into() }
                } else {
                    // Values big enough that segments roll every few dozen commits.
                    let pad = "x".repeat(rng.below(2000) as usize);
                    Op::Put {
                        key: k.into(),
                        value: format!("{{\"n\":{i},\"pad\":\"{pad}\"}}").into_bytes(),
                    }
                }
            })
            .collect();
        let actor = ["alice", "bob"][rng.below(2) as usize];
        store
            .append(CommitRequest::change(actor, "test", ops))
            .unwrap();
    }
}

/// Everything a reader can see at `point`, as text.
fn dump_point(store: &Store, point: Point) -> Result<String, ReadError> {
    let mut out = String::new();
    for key in KEYS {
        match store.get(key, point)? {
            Some(v) => out.push_str(&format!(
                "get {key} = {:?} r{} c{} v{} t{}\n",
                v.value, v.revision, v.create_revision, v.version, v.timestamp_us
            )),
            None => out.push_str(&format!("get {key} absent\n")),
        }
    }
    let mut after: Option<String> = None;
    loop {
        let page = store.list("", point, after.as_deref(), 2)?;
        for v in &page.items {
            out.push_str(&format!("list {} r{}\n", v.key, v.revision));
        }
        out.push_str(&format!("page at r{}\n", page.revision));
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    Ok(out)
}

/// History and commits after the horizon, and diffs between points at or after it.
fn dump_history(store: &Store, from: u64, to: u64) -> String {
    let mut out = String::new();
    for key in KEYS {
        let page = store.history(key, None, Some(to), None, 1000).unwrap();
        for item in page.items {
            out.push_str(&format!(
                "history {key} r{} {:?} {}\n",
                item.revision, item.value, item.actor
            ));
        }
    }
    let mut after = None;
    loop {
        let page = store
            .commits(&CommitFilter {
                to_revision: Some(to),
                after,
                limit: 7,
                ..CommitFilter::default()
            })
            .unwrap();
        for c in &page.items {
            out.push_str(&format!(
                "commit r{} {} ops {}\n",
                c.commit.revision,
                storage_format_hex(&c.hash),
                c.commit.ops.len()
            ));
        }
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    for (a, b) in [(from, to), (to, from), (from, (from + to) / 2)] {
        let diff = store
            .diff("", Point::Revision(a), Point::Revision(b))
            .unwrap();
        for c in diff.changes {
            out.push_str(&format!("diff {a}->{b} {} {}\n", c.key, c.kind.name()));
        }
    }
    out
}

fn storage_format_hex(bytes: &[u8]) -> String {
    llmcm::storage_format::hex(bytes)
}

struct Capture {
    points: Vec<(Point, String)>,
    history: String,
}

fn capture(store: &Store, horizon: u64, head: u64, times: &[u64]) -> Capture {
    let mut points = Vec::new();
    for r in horizon..=head {
        points.push((
            Point::Revision(r),
            dump_point(store, Point::Revision(r)).unwrap(),
        ));
    }
    for &t in times {
        points.push((Point::Time(t), dump_point(store, Point::Time(t)).unwrap()));
    }
    Capture {
        points,
        history: dump_history(store, horizon, head),
    }
}

fn assert_same(store: &Store, expected: &Capture, horizon: u64, head: u64, when: &str) {
    for (point, text) in &expected.points {
        assert_eq!(
            &dump_point(store, *point).unwrap(),
            text,
            "{when}: reads at {point:?}"
        );
    }
    // History and commits now start after the horizon: compare that part of the capture.
    let got = dump_history(store, horizon, head);
    let keep = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| {
                let rev = l
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix('r').and_then(|n| n.parse::<u64>().ok()));
                !(l.starts_with("history") || l.starts_with("commit"))
                    || rev.is_some_and(|r| r > horizon)
            })
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(keep(&got), keep(&expected.history), "{when}: history");
}

fn assert_gone_below(store: &Store, horizon: u64, horizon_ts: u64) {
    for r in [0, 1, horizon - 1] {
        assert!(
            matches!(
                store.get("a", Point::Revision(r)),
                Err(ReadError::Compacted { earliest_revision, .. }) if earliest_revision == horizon
            ),
            "get at {r}"
        );
        assert!(matches!(
            store.list("", Point::Revision(r), None, 10),
            Err(ReadError::Compacted { .. })
        ));
        assert!(matches!(
            store.diff("", Point::Revision(r), Point::Latest),
            Err(ReadError::Compacted { .. })
        ));
    }
    assert!(matches!(
        store.get("a", Point::Time(horizon_ts - 1)),
        Err(ReadError::Compacted { .. })
    ));
    assert!(matches!(
        store.history("a", Some(1), None, None, 10),
        Err(ReadError::Compacted { .. })
    ));
    assert!(matches!(
        store.commits(&CommitFilter {
            from_revision: Some(horizon),
            limit: 10,
            ..CommitFilter::default()
        }),
        Err(ReadError::Compacted { .. })
    ));
    let verified = store.verify_chain(None, None).unwrap();
    assert!(verified.ok(), "{:?}", verified.failure);
    assert_eq!(verified.from, horizon + 1);
}

#[test]
fn every_read_after_the_horizon_is_unchanged_by_compaction() {
    for seed in 1..=4u64 {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let clock = Arc::new(ManualClock::new(T0));
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let store = open(&dir, &clock);
        write_random(&store, &clock, &mut rng, 300);
        let head = store.log().head().revision;
        let head_ts = store.log().head().timestamp_us;
        // Keep the newest ~40% of the time span.
        let retain = (head_ts - T0) * 2 / 5;
        let outcome = store
            .compact(retain, "operator", "test")
            .unwrap()
            .expect("old segments exist");
        let h = outcome.horizon.revision;
        assert!(h > 1 && h < head, "horizon {h} of {head}");
        assert!(outcome.segments_dropped > 0 && outcome.bytes_reclaimed > 0);
        assert_eq!(outcome.commit_revision, head + 1);
        let h_ts = outcome.horizon.timestamp_us;
        assert!(h_ts <= clock_now(&clock) - retain);

        // Compare with a second store holding the same history, never compacted.
        let twin_dir = tmp.path().join("twin");
        let twin_clock = Arc::new(ManualClock::new(T0));
        let twin = open(&twin_dir, &twin_clock);
        write_random(
            &twin,
            &twin_clock,
            &mut Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            300,
        );
        let mut times = vec![h_ts, head_ts];
        for _ in 0..20 {
            times.push(h_ts + rng.below(head_ts - h_ts + 1));
        }
        let expected = capture(&twin, h, head, &times);
        drop(twin);

        assert_same(&store, &expected, h, head, "live");
        assert_gone_below(&store, h, h_ts);
        drop(store);

        let store = open(&dir, &clock);
        assert_same(&store, &expected, h, head, "reopened");
        assert_gone_below(&store, h, h_ts);
        drop(store);

        std::fs::remove_dir_all(dir.join("index")).unwrap();
        let store = open(&dir, &clock);
        assert_same(&store, &expected, h, head, "index rebuilt");
        assert_gone_below(&store, h, h_ts);

        // A second compaction, with more commits, keeps the same answers after its horizon.
        write_random(&store, &clock, &mut rng, 100);
        clock.advance(10_000_000);
        let second = store
            .compact(5_000_000, "operator", "again")
            .unwrap()
            .unwrap();
        let h2 = second.horizon.revision;
        assert!(h2 > h);
        assert_eq!(second.previous_horizon, h);
        let kept: Vec<_> = expected
            .points
            .iter()
            .filter(|(p, _)| match p {
                Point::Revision(r) => *r >= h2,
                Point::Time(t) => *t >= second.horizon.timestamp_us,
                Point::Latest => true,
            })
            .cloned()
            .collect();
        for (point, text) in &kept {
            assert_eq!(&dump_point(&store, *point).unwrap(), text, "{point:?}");
        }
        assert_gone_below(&store, h2, second.horizon.timestamp_us);
        let bases: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().into_string().unwrap())
            .filter(|n| n.starts_with("base-"))
            .collect();
        assert_eq!(bases.len(), 1, "{bases:?}");
        drop(store);
        let store = open(&dir, &clock);
        assert_gone_below(&store, h2, second.horizon.timestamp_us);
        let commits = store
            .commits(&CommitFilter {
                limit: 1000,
                ..CommitFilter::default()
            })
            .unwrap();
        let last = commits.items.last().unwrap();
        assert_eq!(last.commit.kind.name(), "compaction");
    }
}

fn clock_now(clock: &ManualClock) -> u64 {
    use llmcm::clock::Clock;
    clock.now_us()
}

#[test]
fn nothing_to_compact_is_not_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let store = open(tmp.path(), &clock);
    assert!(store.compact(0, "op", "").unwrap().is_none());
    write_random(&store, &clock, &mut Rng(7), 5);
    // Everything is younger than a day.
    assert!(store.compact(86_400_000_000, "op", "").unwrap().is_none());
}

#[test]
fn a_damaged_newest_snapshot_is_set_aside_and_the_store_opens() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let clock = Arc::new(ManualClock::new(T0));
    let store = open(dir, &clock);
    let mut rng = Rng(42);
    write_random(&store, &clock, &mut rng, 50);
    let first = store.snapshot().unwrap();
    write_random(&store, &clock, &mut rng, 50);
    let second = store.snapshot().unwrap();
    assert!(second.revision > first.revision);
    assert_eq!(
        store.snapshot().unwrap(),
        second,
        "same head, same snapshot"
    );
    let expected = dump_point(&store, Point::Latest).unwrap();
    drop(store);

    let mut bytes = std::fs::read(&second.path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&second.path, &bytes).unwrap();

    let store = open(dir, &clock);
    store.check_snapshots();
    let snapshots = store.snapshots();
    assert_eq!(
        snapshots.iter().map(|s| s.revision).collect::<Vec<_>>(),
        vec![first.revision]
    );
    assert!(snapshots[0].checked);
    let mut aside = second.path.clone().into_os_string();
    aside.push(".corrupt");
    assert!(Path::new(&aside).exists());
    assert_eq!(dump_point(&store, Point::Latest).unwrap(), expected);
}

#[test]
fn snapshots_beyond_the_keep_count_are_thinned_evenly() {
    let tmp = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let maintenance = MaintenanceConfig {
        snapshot_keep: 3,
        ..MaintenanceConfig::manual()
    };
    let store = Store::open_full(tmp.path(), config(), maintenance, clock.clone()).unwrap();
    let mut rng = Rng(3);
    let mut taken = Vec::new();
    for _ in 0..5 {
        write_random(&store, &clock, &mut rng, 3);
        taken.push(store.snapshot().unwrap().revision);
    }
    // Five snapshots at even spacing, three kept: the oldest, the middle and the newest.
    let kept: Vec<u64> = store.snapshots().iter().map(|s| s.revision).collect();
    assert_eq!(kept, vec![taken[0], taken[2], taken[4]]);
    let files = std::fs::read_dir(tmp.path().join("snapshots"))
        .unwrap()
        .count();
    assert_eq!(files, 3);
}

#[test]
fn damaged_images_are_named_by_verify_and_a_damaged_base_image_fails_the_open() {
    use llmcm::log::verify::{Severity, verify_dir};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let clock = Arc::new(ManualClock::new(T0));
    let store = open(dir, &clock);
    write_random(&store, &clock, &mut Rng(9), 120);
    let snapshot = store.snapshot().unwrap();
    clock.advance(1_000_000);
    store.compact(0, "op", "").unwrap().unwrap();
    drop(store);
    let report = verify_dir(&llmcm::fs::RealFs, dir);
    assert_eq!(report.problems(), 0, "{:?}", report.findings);

    let flip = |path: &Path| {
        let mut bytes = std::fs::read(path).unwrap();
        let i = bytes.len() / 2;
        bytes[i] ^= 0x20;
        std::fs::write(path, bytes).unwrap();
    };
    flip(&snapshot.path);
    let base = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("base-")
        })
        .unwrap();
    flip(&base);
    let report = verify_dir(&llmcm::fs::RealFs, dir);
    let problems: Vec<&str> = report
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Problem)
        .map(|f| f.file.as_str())
        .collect();
    let base_name = base.file_name().unwrap().to_string_lossy().into_owned();
    let snap_name = format!(
        "snapshots/{}",
        snapshot.path.file_name().unwrap().to_string_lossy()
    );
    assert_eq!(problems, vec![base_name.as_str(), snap_name.as_str()]);
    let error = Store::open_full(dir, config(), MaintenanceConfig::default(), clock.clone())
        .err()
        .expect("a damaged base image fails the open");
    assert!(error.to_string().contains(&base_name), "{error}");
}

#[test]
fn scheduled_snapshots_and_retention_run_by_themselves() {
    let tmp = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let maintenance = MaintenanceConfig {
        snapshot_every_commits: 100,
        snapshot_every_us: 0,
        snapshot_keep: 2,
        retain_us: Some(3_600_000_000),
        compaction_every_us: 1,
        io_bytes_per_sec: 0,
        scrub_every_us: 0,
    };
    let store = Store::open_full(tmp.path(), config(), maintenance, clock.clone()).unwrap();
    write_random(&store, &clock, &mut Rng(17), 250);
    let wait_for = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !done() {
            assert!(
                std::time::Instant::now() < deadline,
                "{what} did not happen"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    // 250 commits, a snapshot due every 100: the housekeeping thread takes one at the head.
    wait_for("a scheduled snapshot", &|| {
        store
            .snapshots()
            .last()
            .is_some_and(|s| s.revision == store.log().head().revision)
    });
    // Two hours later, everything sealed is older than the one-hour retention.
    store.log().roll().unwrap();
    clock.advance(2 * 3_600_000_000);
    // The horizon moves before the compaction is recorded as done: wait for the record.
    wait_for("a scheduled compaction", &|| {
        store.last_compaction().is_some()
    });
    let last = store.last_compaction().unwrap();
    assert_eq!(last.horizon.revision, store.log().horizon().revision);
    assert!(store.snapshots().len() <= 2);
}
