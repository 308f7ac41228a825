//! Reads run concurrently with appends, segment rolls and index checkpoints (which remap the index
//! files): no read fails, every value is the JSON a writer put, and history is immutable — the
//! answer for a key at a past revision, recorded once, is the same when asked again later, after
//! more commits, rolls and checkpoints, and after a reopen.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use llmcm::storage_format::commit::Op;
use llmcm::store::{CommitRequest, LogConfig};
use llmcm::store::{Point, Store};

fn config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 64 << 10,
        ..LogConfig::default()
    }
}

type Answer = Option<(Vec<u8>, u64)>;

fn answer(store: &Store, key: &str, revision: u64) -> Answer {
    store
        .get(key, Point::Revision(revision))
        .unwrap()
        .map(|v| (v.value.as_bytes().to_vec(), v.revision))
}

#[test]
fn past_answers_never_change_under_concurrent_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(tmp.path(), config()).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..3u64)
        .map(|w| {
            let store = store.clone();
            std::thread::spawn(move || {
                for n in 0..700u64 {
                    let key = format!("svc/k{}", (n * 7 + w) % 40);
                    let op = if n % 13 == 12 {
                        Op::Delete { key }
                    } else {
                        let value =
                            format!("{{\"w\":{w},\"n\":{n},\"pad\":\"{}\"}}", "x".repeat(150));
                        Op::Put {
                            key,
                            value: value.into_bytes(),
                        }
                    };
                    store
                        .append(CommitRequest::change("w", "", vec![op]))
                        .unwrap();
                }
            })
        })
        .collect();
    let readers: Vec<_> = (0..2u64)
        .map(|r| {
            let store = store.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut recorded: HashMap<(String, u64), Answer> = HashMap::new();
                let mut i = r;
                while !stop.load(Ordering::SeqCst) {
                    i = i
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let head = store.log().head().revision;
                    if head == 0 {
                        continue;
                    }
                    let key = format!("svc/k{}", (i >> 33) % 40);
                    let revision = 1 + (i >> 20) % head;
                    let got = answer(&store, &key, revision);
                    if let Some((value, _)) = &got {
                        serde_json::from_slice::<serde_json::Value>(value)
                            .expect("a writer's JSON");
                    }
                    match recorded.get(&(key.clone(), revision)) {
                        Some(first) => assert_eq!(first, &got, "{key} at {revision} changed"),
                        None => {
                            recorded.insert((key.clone(), revision), got);
                        }
                    }
                    let page = store
                        .list("svc/", Point::Revision(revision), None, 100)
                        .unwrap();
                    assert!(page.items.iter().all(|v| v.revision <= revision));
                    store.history(&key, None, Some(revision), None, 50).unwrap();
                }
                recorded
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    let recorded: Vec<_> = readers.into_iter().map(|r| r.join().unwrap()).collect();
    assert!(
        store.log().segments().len() > 3,
        "rolls and checkpoints happened meanwhile"
    );
    let checked: usize = recorded.iter().map(HashMap::len).sum();
    assert!(checked > 100, "readers checked only {checked} points");
    // After a reopen (index from checkpoint + replay), every recorded answer still holds.
    drop(store);
    let store = Store::open(tmp.path(), config()).unwrap();
    for map in &recorded {
        for ((key, revision), first) in map {
            assert_eq!(
                &answer(&store, key, *revision),
                first,
                "{key} at {revision} after reopen"
            );
        }
    }
}
