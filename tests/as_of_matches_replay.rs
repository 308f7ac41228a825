//! Every read at every point equals a naive replay. proptest generates commit sequences (puts and
//! deletes over a few nested keys, with segment rolls and a clock that moves by random steps); a
//! plain in-memory model replays them. Then, at random revisions and random times, `get`, `list`
//! (whole and paginated), `history` (whole and paginated), `commits` (ranges, time filters, prefix
//! and actor filters, pagination) and `diff` must equal the model — on the live store, after a
//! clean reopen, after the index files are deleted (rebuilt), and after index corruption.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use llmcm::clock::ManualClock;
use llmcm::storage_format::commit::Op;
use llmcm::store::{ChangeKind, CommitFilter, Point, Store};
use llmcm::store::{CommitRequest, LogConfig};
use proptest::prelude::*;

const KEYS: [&str; 7] = ["a", "a/b", "a/c", "ab/x", "b/x", "b/y/z", "c"];
const PREFIXES: [&str; 6] = ["", "a", "a/", "ab", "b/", "zz"];
const T0: u64 = 1_800_000_000_000_000;

#[derive(Debug, Clone)]
struct GenCommit {
    ops: Vec<(usize, Option<u32>)>,
    actor: usize,
    step_us: u64,
    roll: bool,
}

fn gen_commit() -> impl Strategy<Value = GenCommit> {
    (
        prop::collection::btree_map(
            0..KEYS.len(),
            prop::option::weighted(0.8, any::<u32>()),
            1..4,
        ),
        0..3usize,
        1u64..5_000_000,
        prop::bool::weighted(0.1),
    )
        .prop_map(|(ops, actor, step_us, roll)| GenCommit {
            ops: ops.into_iter().collect(),
            actor,
            step_us,
            roll,
        })
}

/// A key's state in the model.
#[derive(Debug, Clone, PartialEq)]
struct ModelVersion {
    value: Vec<u8>,
    revision: u64,
    create_revision: u64,
    version: u64,
    timestamp_us: u64,
}

struct Model {
    /// (revision, timestamp, actor, ops) of every commit.
    commits: Vec<(u64, u64, String, Vec<Op>)>,
}

impl Model {
    fn state_at(&self, revision: u64) -> BTreeMap<String, ModelVersion> {
        let mut state: BTreeMap<String, ModelVersion> = BTreeMap::new();
        for (rev, ts, _, ops) in self.commits.iter().take_while(|c| c.0 <= revision) {
            for op in ops {
                match op {
                    Op::Put { key, value } => {
                        let (create, version) = match state.get(key) {
                            Some(v) => (v.create_revision, v.version + 1),
                            None => (*rev, 1),
                        };
                        state.insert(
                            key.clone(),
                            ModelVersion {
                                value: value.clone(),
                                revision: *rev,
                                create_revision: create,
                                version,
                                timestamp_us: *ts,
                            },
                        );
                    }
                    Op::Delete { key } => {
                        state.remove(key);
                    }
                }
            }
        }
        state
    }

    fn revision_at(&self, t: u64) -> u64 {
        self.commits
            .iter()
            .take_while(|c| c.1 <= t)
            .last()
            .map_or(0, |c| c.0)
    }

    fn history(&self, key: &str) -> Vec<(u64, Option<Vec<u8>>, String)> {
        let mut out = Vec::new();
        for (rev, _, actor, ops) in &self.commits {
            for op in ops {
                match op {
                    Op::Put { key: k, value } if k == key => {
                        out.push((*rev, Some(value.clone()), actor.clone()))
                    }
                    Op::Delete { key: k } if k == key => out.push((*rev, None, actor.clone())),
                    _ => {}
                }
            }
        }
        out
    }
}

fn build(dir: &Path, clock: &Arc<ManualClock>, commits: &[GenCommit]) -> (Store, Model) {
    let config = LogConfig {
        segment_bytes_max: 64 << 10,
        ..LogConfig::default()
    };
    let store = Store::open_with_clock(dir, config, clock.clone()).unwrap();
    let mut model = Model {
        commits: Vec::new(),
    };
    for c in commits {
        clock.advance(c.step_us);
        let ops: Vec<Op> = c
            .ops
            .iter()
            .map(|(k, v)| match v {
                Some(n) => Op::Put {
                    key: KEYS[*k].to_owned(),
                    value: format!("{{\"n\":{n}}}").into_bytes(),
                },
                None => Op::Delete {
                    key: KEYS[*k].to_owned(),
                },
            })
            .collect();
        let actor = format!("actor{}", c.actor);
        let info = store
            .append(CommitRequest::change(&actor, "why", ops.clone()))
            .unwrap();
        model
            .commits
            .push((info.revision, info.timestamp_us, actor, ops));
        if c.roll {
            store.log().roll().unwrap();
        }
    }
    clock.advance(1_000_000);
    (store, model)
}

/// Every read kind at the given revisions and times equals the model.
fn check_reads(store: &Store, model: &Model, revisions: &[u64], times: &[u64]) {
    let head = model.commits.len() as u64;
    let mut points: Vec<(Point, u64)> = vec![(Point::Latest, head)];
    points.extend(
        revisions
            .iter()
            .map(|&r| (Point::Revision(r % (head + 1)), r % (head + 1))),
    );
    points.extend(
        times
            .iter()
            .map(|&t| (Point::Time(t), model.revision_at(t))),
    );
    for &(point, revision) in &points {
        let state = model.state_at(revision);
        for key in KEYS {
            let got = store.get(key, point).unwrap();
            let want = state.get(key);
            match (got, want) {
                (None, None) => {}
                (Some(g), Some(w)) => {
                    assert_eq!(g.value.as_bytes(), &w.value[..], "{key} at {point:?}");
                    assert_eq!(
                        (g.revision, g.create_revision, g.version, g.timestamp_us),
                        (w.revision, w.create_revision, w.version, w.timestamp_us),
                        "{key} at {point:?}"
                    );
                }
                (g, w) => panic!("{key} at {point:?}: got {g:?}, model {w:?}"),
            }
        }
        for prefix in PREFIXES {
            let want: Vec<(&String, &ModelVersion)> = state
                .iter()
                .filter(|(k, _)| k.starts_with(prefix))
                .collect();
            let page = store.list(prefix, point, None, 1000).unwrap();
            assert_eq!(page.revision, revision);
            let got: Vec<(String, Vec<u8>, u64)> = page
                .items
                .iter()
                .map(|v| (v.key.to_string(), v.value.as_bytes().to_vec(), v.revision))
                .collect();
            let expect: Vec<(String, Vec<u8>, u64)> = want
                .iter()
                .map(|(k, v)| ((*k).clone(), v.value.clone(), v.revision))
                .collect();
            assert_eq!(got, expect, "list {prefix:?} at {point:?}");
            assert_eq!(page.next, None);
            // Paginated by 2, the pages concatenate to the whole list.
            let mut after: Option<String> = None;
            let mut paged = Vec::new();
            loop {
                let page = store.list(prefix, point, after.as_deref(), 2).unwrap();
                paged.extend(page.items.iter().map(|v| v.key.to_string()));
                match page.next {
                    Some(n) => after = Some(n),
                    None => break,
                }
            }
            assert_eq!(
                paged,
                expect.iter().map(|e| e.0.clone()).collect::<Vec<_>>(),
                "paged list {prefix:?}"
            );
        }
    }
    // Diff between pairs of points.
    for pair in points.windows(2) {
        let (a, ra) = pair[0];
        let (b, rb) = pair[1];
        let (sa, sb) = (model.state_at(ra), model.state_at(rb));
        for prefix in PREFIXES {
            let diff = store.diff(prefix, a, b).unwrap();
            assert_eq!((diff.from, diff.to), (ra, rb));
            let mut want = Vec::new();
            for key in KEYS.iter().filter(|k| k.starts_with(prefix)) {
                let kind = match (sa.get(*key), sb.get(*key)) {
                    (None, Some(_)) => ChangeKind::Added,
                    (Some(_), None) => ChangeKind::Removed,
                    (Some(x), Some(y)) if x.value != y.value => ChangeKind::Changed,
                    _ => continue,
                };
                want.push((key.to_string(), kind));
            }
            let got: Vec<(String, ChangeKind)> = diff
                .changes
                .iter()
                .map(|c| (c.key.to_string(), c.kind))
                .collect();
            assert_eq!(got, want, "diff {prefix:?} {a:?}..{b:?}");
        }
    }
    // History, whole and paginated by 3.
    for key in KEYS {
        let want = model.history(key);
        let page = store.history(key, None, None, None, 1000).unwrap();
        let got: Vec<(u64, Option<Vec<u8>>, String)> = page
            .items
            .iter()
            .map(|i| {
                (
                    i.revision,
                    i.value.as_ref().map(|v| v.as_bytes().to_vec()),
                    i.actor.clone(),
                )
            })
            .collect();
        assert_eq!(got, want, "history of {key}");
        let mut after = None;
        let mut revs = Vec::new();
        loop {
            let page = store.history(key, None, None, after, 3).unwrap();
            revs.extend(page.items.iter().map(|i| i.revision));
            match page.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        assert_eq!(
            revs,
            want.iter().map(|w| w.0).collect::<Vec<_>>(),
            "paged history of {key}"
        );
        for &r in revisions {
            let to = r % (head + 1);
            let from = to / 2;
            let page = store
                .history(key, Some(from), Some(to), None, 1000)
                .unwrap();
            let expect: Vec<u64> = want
                .iter()
                .map(|w| w.0)
                .filter(|&x| x >= from && x <= to)
                .collect();
            assert_eq!(
                page.items.iter().map(|i| i.revision).collect::<Vec<_>>(),
                expect
            );
            // Newest first, in pages of 3: the same versions in reverse.
            let mut newest_first = Vec::new();
            let mut before = None;
            loop {
                let page = store
                    .history_newest_first(key, Some(from), Some(to), before, 3)
                    .unwrap();
                newest_first.extend(page.items.iter().map(|i| i.revision));
                match page.next {
                    Some(n) => before = Some(n),
                    None => break,
                }
            }
            let mut reversed = expect.clone();
            reversed.reverse();
            assert_eq!(newest_first, reversed, "history of {key} newest first");
        }
    }
    // Commits: ranges, filters, pagination.
    for &t in times {
        for prefix in [None, Some("a/"), Some("b")] {
            for actor in [None, Some("actor1")] {
                let filter = CommitFilter {
                    since_us: Some(t),
                    prefix: prefix.map(str::to_owned),
                    actor: actor.map(str::to_owned),
                    limit: 4,
                    ..CommitFilter::default()
                };
                let mut got = Vec::new();
                let mut f = filter.clone();
                loop {
                    let page = store.commits(&f).unwrap();
                    for item in &page.items {
                        if let Some(p) = prefix {
                            assert!(item.commit.ops.iter().all(|op| op.key().starts_with(p)));
                        }
                    }
                    got.extend(page.items.iter().map(|c| c.commit.revision));
                    match page.next {
                        Some(n) => f.after = Some(n),
                        None => break,
                    }
                }
                let want: Vec<u64> = model
                    .commits
                    .iter()
                    .filter(|c| c.1 >= t)
                    .filter(|c| actor.is_none_or(|a| c.2 == a))
                    .filter(|c| prefix.is_none_or(|p| c.3.iter().any(|op| op.key().starts_with(p))))
                    .map(|c| c.0)
                    .collect();
                assert_eq!(
                    got, want,
                    "commits since {t} prefix {prefix:?} actor {actor:?}"
                );
                // Newest first: the same commits in reverse, with the same hashes.
                let mut f = CommitFilter {
                    descending: true,
                    ..filter.clone()
                };
                let mut newest_first = Vec::new();
                loop {
                    let page = store.commits(&f).unwrap();
                    for item in &page.items {
                        let asc = store
                            .commits(&CommitFilter {
                                from_revision: Some(item.commit.revision),
                                to_revision: Some(item.commit.revision),
                                limit: 1,
                                ..CommitFilter::default()
                            })
                            .unwrap();
                        assert_eq!(asc.items[0].hash, item.hash);
                        assert_eq!(asc.items[0].prev_hash, item.prev_hash);
                    }
                    newest_first.extend(page.items.iter().map(|c| c.commit.revision));
                    match page.next {
                        Some(n) => f.after = Some(n),
                        None => break,
                    }
                }
                let mut reversed = want.clone();
                reversed.reverse();
                assert_eq!(newest_first, reversed, "commits newest first");
            }
        }
    }
    // Chained hashes line up across the whole history.
    let all = store
        .commits(&CommitFilter {
            limit: 1000,
            ..CommitFilter::default()
        })
        .unwrap();
    for pair in all.items.windows(2) {
        assert_eq!(pair[0].hash, pair[1].prev_hash);
    }
    let verification = store.verify_chain(None, None).unwrap();
    assert!(verification.ok(), "{verification:?}");
    assert_eq!(verification.commits, head);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn reads_at_any_point_match_the_replay(
        commits in prop::collection::vec(gen_commit(), 1..120),
        revisions in prop::collection::vec(any::<u64>(), 4),
        time_offsets in prop::collection::vec(0u64..400_000_000, 4),
    ) {
        // Directory files rewritten as soon as superseded blocks outweigh the live ones.
        llmcm::fault::set_dirs_garbage_slack(0);
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let clock = Arc::new(ManualClock::new(T0));
        let (store, model) = build(&dir, &clock, &commits);
        let now = llmcm::clock::Clock::now_us(&*clock);
        let span = now - (T0 - 1_000_000);
        let times: Vec<u64> = time_offsets.iter().map(|o| T0 - 1_000_000 + o % (span + 1)).collect();
        check_reads(&store, &model, &revisions, &times);

        // Clean reopen: the checkpoint plus the active segment.
        drop(store);
        let config = LogConfig { segment_bytes_max: 64 << 10, ..LogConfig::default() };
        let store = Store::open_with_clock(&dir, config.clone(), clock.clone()).unwrap();
        check_reads(&store, &model, &revisions, &times);

        // Index files deleted: rebuilt from the log.
        drop(store);
        std::fs::remove_dir_all(dir.join("index")).unwrap();
        let store = Store::open_with_clock(&dir, config, clock.clone()).unwrap();
        check_reads(&store, &model, &revisions, &times);
    }
}

#[test]
fn a_future_point_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let store = Store::open_with_clock(tmp.path(), LogConfig::default(), clock.clone()).unwrap();
    store
        .append(CommitRequest::change(
            "a",
            "",
            vec![Op::Put {
                key: "k".into(),
                value: b"1".to_vec(),
            }],
        ))
        .unwrap();
    assert!(matches!(
        store.get("k", Point::Revision(2)),
        Err(llmcm::store::ReadError::FutureRevision {
            requested: 2,
            head: 1
        })
    ));
    assert!(matches!(
        store.get("k", Point::Time(T0 + 10)),
        Err(llmcm::store::ReadError::FutureTime { .. })
    ));
    // A malformed key is refused, not answered "absent".
    for bad in ["", "a//b", "/k", "k/", "a/../b", "k y"] {
        assert!(
            matches!(
                store.get(bad, Point::Latest),
                Err(llmcm::store::ReadError::InvalidKey { .. })
            ),
            "{bad:?}"
        );
    }
    // A point before the first revision sees an empty store.
    assert!(store.get("k", Point::Revision(0)).unwrap().is_none());
    assert!(store.get("k", Point::Time(T0 - 1)).unwrap().is_none());
    assert!(
        store
            .list("", Point::Time(T0 - 1), None, 10)
            .unwrap()
            .items
            .is_empty()
    );
    // An answered time is never reused by a later commit.
    clock.set(T0 + 100);
    assert!(store.get("k", Point::Time(T0 + 100)).unwrap().is_some());
    clock.set(T0 + 50); // the clock steps back
    let info = store
        .append(CommitRequest::change(
            "a",
            "",
            vec![Op::Put {
                key: "k".into(),
                value: b"2".to_vec(),
            }],
        ))
        .unwrap();
    assert!(info.timestamp_us > T0 + 100);
}
