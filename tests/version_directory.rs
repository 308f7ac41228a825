//! The version directory (FORMAT.md "Version directory"): a point read that gets past a key's
//! in-memory entries finds its answer in the key's block. Exercised here where the property
//! test's short histories do not reach: a key with hundreds of versions (its block keeps every
//! 32nd, so reads descend from a fence), deletes among them, dozens of checkpoints, and directory
//! files rewritten into new generations. Every read at every revision, and at times between
//! commits, equals the expected — live, after a reopen, and after the directory file is deleted.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use llmcm::clock::ManualClock;
use llmcm::storage_format::commit::Op;
use llmcm::store::{CommitRequest, LogConfig};
use llmcm::store::{Point, Store};

const T0: u64 = 1_800_000_000_000_000;
const STEP_US: u64 = 1_000;
const COMMITS: u64 = 900;
const COLD_KEYS: u64 = 40;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 64 << 10,
        ..LogConfig::default()
    }
}

fn value(n: u64) -> Vec<u8> {
    format!("{{\"n\":{n},\"pad\":\"{}\"}}", "p".repeat(900)).into_bytes()
}

/// Per revision: every key's live `n` after it.
type States = Vec<BTreeMap<String, u64>>;

fn build(dir: &Path, clock: &Arc<ManualClock>) -> States {
    let store = Store::open_with_clock(dir, config(), clock.clone()).unwrap();
    let mut live: BTreeMap<String, u64> = BTreeMap::new();
    let mut states = vec![live.clone()];
    for n in 1..=COMMITS {
        clock.advance(STEP_US);
        let key = if n.is_multiple_of(3) {
            format!("cold/k{:02}", n % COLD_KEYS)
        } else {
            "hot".to_owned()
        };
        // Every 7th commit of the hot key deletes it — unless it is already absent (deleting an
        // absent key is refused).
        let delete = key == "hot" && n.is_multiple_of(7) && live.contains_key(&key);
        let op = if delete {
            Op::Delete { key: key.clone() }
        } else {
            Op::Put {
                key: key.clone(),
                value: value(n),
            }
        };
        store
            .append(CommitRequest::change("t", "", vec![op]))
            .unwrap();
        if delete {
            live.remove(&key);
        } else {
            live.insert(key, n);
        }
        states.push(live.clone());
    }
    clock.advance(STEP_US);
    assert!(
        store.log().segments().len() >= 10,
        "dozens of checkpoints: {} segments",
        store.log().segments().len()
    );
    states
}

fn n_of(store: &Store, key: &str, point: Point) -> Option<u64> {
    store.get(key, point).unwrap().map(|v| {
        let text = String::from_utf8_lossy(v.value.as_bytes()).into_owned();
        text["{\"n\":".len()..text.find(',').unwrap()]
            .parse()
            .unwrap()
    })
}

fn check(store: &Store, states: &States, what: &str) {
    for (revision, state) in states.iter().enumerate().skip(1) {
        let revision = revision as u64;
        let at = T0 + revision * STEP_US + STEP_US / 2;
        for key in ["hot", "cold/k00", "cold/k07", "cold/k39"] {
            let want = state.get(key).copied();
            assert_eq!(
                n_of(store, key, Point::Revision(revision)),
                want,
                "{what}: {key} at revision {revision}"
            );
            assert_eq!(
                n_of(store, key, Point::Time(at)),
                want,
                "{what}: {key} at time {at}"
            );
        }
        if revision.is_multiple_of(50) {
            let page = store
                .list("cold/", Point::Revision(revision), None, 1000)
                .unwrap();
            let got: Vec<&str> = page.items.iter().map(|v| &*v.key).collect();
            let want: Vec<&str> = state
                .keys()
                .filter(|k| k.starts_with("cold/"))
                .map(|k| k.as_str())
                .collect();
            assert_eq!(got, want, "{what}: list at {revision}");
        }
    }
    assert_eq!(n_of(store, "hot", Point::Time(T0)), None, "{what}: before");
}

fn dirs_generations(dir: &Path) -> Vec<u64> {
    std::fs::read_dir(dir.join("index"))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            llmcm::storage_format::index::parse_dirs_file_name(&name)
        })
        .collect()
}

#[test]
fn long_histories_read_right_through_the_directory() {
    // Rewrite the directory file as soon as superseded blocks outweigh the live ones.
    llmcm::fault::set_dirs_garbage_slack(0);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let clock = Arc::new(ManualClock::new(T0));
    let states = build(&dir, &clock);
    let store = Store::open_with_clock(&dir, config(), clock.clone()).unwrap();
    check(&store, &states, "live");
    let generations = dirs_generations(&dir);
    assert_eq!(generations.len(), 1, "old generations are removed");
    assert!(generations[0] > 1, "rewritten: {generations:?}");
    drop(store);

    // Directory file deleted: the open notices and rebuilds the index.
    let path = dir
        .join("index")
        .join(llmcm::storage_format::index::dirs_file_name(generations[0]));
    std::fs::remove_file(&path).unwrap();
    let store = Store::open_with_clock(&dir, config(), clock.clone()).unwrap();
    check(&store, &states, "after the directory file was deleted");
}

#[test]
fn close_leaves_every_checkpoint_written() {
    // Rolls hand their checkpoints to the store's checkpoint thread; close must wait for the
    // last one, so the CHECKPOINT on disk reaches the head and the next open indexes nothing.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let clock = Arc::new(ManualClock::new(T0));
    build(&dir, &clock);
    let bytes = std::fs::read(dir.join("index").join("CHECKPOINT")).unwrap();
    let cp = llmcm::storage_format::index::Checkpoint::decode(&bytes).unwrap();
    assert_eq!(
        cp.through_revision, COMMITS,
        "the last roll's checkpoint is on disk"
    );
    assert!(
        dir.join("index")
            .join(llmcm::storage_format::index::dirs_file_name(
                cp.dirs_generation
            ))
            .exists()
    );
}
