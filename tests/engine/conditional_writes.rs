//! Preconditions are atomic with the commit: many writers racing `if_revision = 0` on one key
//! (all in the same group-commit batches) produce exactly one winner, and a chain of
//! compare-and-set increments by concurrent writers loses no update.

use std::sync::Arc;

use llmcm::storage_format::commit::Op;
use llmcm::store::LogConfig;
use llmcm::store::{Condition, Point, Store, WriteError, WriteRequest};

fn put_if(store: &Store, key: &str, value: &str, revision: u64) -> Result<u64, WriteError> {
    store
        .write(WriteRequest {
            actor: "t".into(),
            reason: String::new(),
            ops: vec![Op::Put {
                key: key.into(),
                value: value.as_bytes().to_vec(),
            }],
            conditions: vec![Condition {
                key: key.into(),
                revision,
            }],
            must_exist: Vec::new(),
        })
        .map(|info| info.revision)
}

#[test]
fn racing_creates_have_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), LogConfig::default()).unwrap());
    for round in 0..20 {
        let key = format!("race/{round}");
        let handles: Vec<_> = (0..16)
            .map(|i| {
                let (store, key) = (store.clone(), key.clone());
                std::thread::spawn(move || put_if(&store, &key, &i.to_string(), 0))
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let winners = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(winners, 1, "round {round}: {results:?}");
        for r in &results {
            if let Err(e) = r {
                assert!(
                    matches!(e, WriteError::Conflict(c) if c[0].expected == 0 && c[0].actual > 0),
                    "{e:?}"
                );
            }
        }
    }
}

#[test]
fn compare_and_set_increments_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), LogConfig::default()).unwrap());
    put_if(&store, "counter", "0", 0).unwrap();
    let per_thread = 25;
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut done = 0;
                while done < per_thread {
                    let current = store.get("counter", Point::Latest).unwrap().unwrap();
                    let n: u64 = std::str::from_utf8(current.value.as_bytes())
                        .unwrap()
                        .parse()
                        .unwrap();
                    match put_if(&store, "counter", &(n + 1).to_string(), current.revision) {
                        Ok(_) => done += 1,
                        Err(WriteError::Conflict(_)) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let last = store.get("counter", Point::Latest).unwrap().unwrap();
    assert_eq!(
        last.value.as_bytes(),
        (8 * per_thread).to_string().as_bytes()
    );
}
