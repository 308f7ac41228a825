//! Panics where the store must survive them (`llmcm::fault::arm_panic`): a background index
//! checkpoint that panics before installing is owed and paid by a later one; one that panics
//! while installing marks the index broken, and the next read rebuilds it from the log; a
//! group-commit leader that panics while writing a batch fails that batch and every append
//! after it (the log latches read-only) without leaving any appender waiting, and a reopen
//! finds exactly the acknowledged commits. Reads equal the model throughout.

use std::collections::BTreeMap;

use llmcm::fault;
use llmcm::storage_format::commit::Op;
use llmcm::store::{CommitRequest, LogConfig, StoreError};
use llmcm::store::{Point, Store};

/// The panic points are process-wide: one test at a time.
static SERIAL: parking_lot::Mutex<()> = parking_lot::Mutex::new(());

const KEYS: u64 = 23;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 64 << 10,
        ..LogConfig::default()
    }
}

fn value(n: u64) -> Vec<u8> {
    format!("{{\"n\":{n},\"pad\":\"{}\"}}", "p".repeat(1000)).into_bytes()
}

/// Per revision (index = revision): every key's live `n`.
type Model = Vec<BTreeMap<String, u64>>;

fn put(store: &Store, model: &mut Model, n: u64) -> Result<u64, StoreError> {
    let key = format!("app/k{:02}", n % KEYS);
    let committed = store.append(CommitRequest::change(
        "t",
        "",
        vec![Op::Put {
            key: key.clone(),
            value: value(n),
        }],
    ))?;
    let mut live = model.last().cloned().unwrap_or_default();
    live.insert(key, n);
    assert_eq!(committed.revision, model.len() as u64);
    model.push(live);
    Ok(committed.revision)
}

/// Every key at every 5th revision and at the head equals the model.
fn check(store: &Store, model: &Model) {
    let head = model.len() as u64 - 1;
    for r in (1..=head).filter(|r| r % 5 == 0 || *r == head) {
        for k in 0..KEYS {
            let key = format!("app/k{k:02}");
            let got = store
                .get(&key, Point::Revision(r))
                .unwrap()
                .map(|v| v.value.as_bytes().to_vec());
            let want = model[r as usize].get(&key).map(|&n| value(n));
            assert!(got == want, "{key} at revision {r}");
        }
    }
}

fn new_model() -> Model {
    vec![BTreeMap::new()]
}

fn survives_checkpoint_panic(point: &str, rebuilds: u64) {
    let _serial = SERIAL.lock();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), config()).unwrap();
    let mut model = new_model();
    for n in 1..=20 {
        put(&store, &mut model, n).unwrap();
    }
    fault::arm_panic(point, 1);
    // ~60 commits a segment: the first roll's checkpoint panics, later ones must work.
    let mut n = 21;
    while fault::armed_panics() > 0 {
        put(&store, &mut model, n).unwrap();
        n += 1;
        assert!(n < 2_000, "the checkpoint never reached {point}");
    }
    let mut write_segments = |model: &mut Model, count: usize| {
        let segments = store.log().segments().len();
        while store.log().segments().len() < segments + count {
            put(&store, model, n).unwrap();
            n += 1;
        }
    };
    write_segments(&mut model, 1);
    check(&store, &model);
    assert_eq!(store.index_rebuilds(), rebuilds, "rebuilds after {point}");
    write_segments(&mut model, 2);
    check(&store, &model);
    // The finisher thread survived: a later roll's checkpoint covers what the panicked one owed.
    let through = store.index_checkpointed_through();
    let sealed_head = store.log().segments()[store.log().segments().len() - 2].last_revision;
    assert!(
        through >= sealed_head,
        "checkpointed through {through}, sealed {sealed_head}"
    );
    assert_eq!(store.index_checkpoint_owed_since_us(), None);
    store.close().unwrap();
    drop(store);
    let store = Store::open(dir.path(), config()).unwrap();
    check(&store, &model);
    put(&store, &mut model, n).unwrap();
    store.close().unwrap();
}

#[test]
fn a_checkpoint_panicking_before_its_install_is_owed_and_paid() {
    survives_checkpoint_panic("index.checkpoint.write", 0);
}

#[test]
fn a_checkpoint_panicking_in_its_install_makes_the_next_read_rebuild() {
    survives_checkpoint_panic("index.checkpoint.install", 1);
}

#[test]
fn a_batch_write_panic_fails_the_batch_and_latches_the_log() {
    let _serial = SERIAL.lock();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), config()).unwrap();
    let mut model = new_model();
    for n in 1..=30 {
        put(&store, &mut model, n).unwrap();
    }
    fault::arm_panic("log.write_batch", 1);
    match put(&store, &mut model, 31) {
        Err(StoreError::ReadOnly { reason }) => assert!(reason.contains("panicked"), "{reason}"),
        other => panic!("expected ReadOnly, got {other:?}"),
    }
    assert_eq!(fault::armed_panics(), 0);
    // Latched: concurrent appenders all return, all refused; reads go on.
    std::thread::scope(|scope| {
        for t in 0..4 {
            let store = &store;
            scope.spawn(move || {
                for i in 0..10 {
                    let result = store.append(CommitRequest::change(
                        "t",
                        "",
                        vec![Op::Put {
                            key: format!("other/{t}/{i}"),
                            value: value(0),
                        }],
                    ));
                    assert!(
                        matches!(result, Err(StoreError::ReadOnly { .. })),
                        "{result:?}"
                    );
                }
            });
        }
    });
    check(&store, &model);
    drop(store);
    // A reopen finds the acknowledged commits and nothing else, and takes writes again.
    let store = Store::open(dir.path(), config()).unwrap();
    assert_eq!(store.log().head().revision, 30);
    check(&store, &model);
    put(&store, &mut model, 31).unwrap();
    check(&store, &model);
    store.close().unwrap();
}
