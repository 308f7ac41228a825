//! Reading sealed segments back into the page cache after their rolls
//! (`LogConfig::reread_sealed_segments`): each 2 MiB piece is dropped from the mapping and the
//! page cache and read back while readers go on. Readers racing the re-reads, and every read
//! afterwards, see exactly the bytes that were written; with the setting off nothing is re-read.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use llmcm::storage_format::commit::Op;
use llmcm::store::{CommitRequest, LogConfig};
use llmcm::store::{Point, Store};

const KEYS: u64 = 97;
/// ~16 KiB values: 800 commits fill three 4 MiB segments and part of a fourth.
const COMMITS: u64 = 800;

fn config(reread: bool) -> LogConfig {
    LogConfig {
        segment_bytes_max: 4 << 20,
        reread_sealed_segments: reread,
        ..LogConfig::default()
    }
}

/// The value commit `n` (1-based, one put each) wrote: distinct per commit, 16 KiB.
fn value(n: u64) -> Vec<u8> {
    format!("{{\"n\":{n},\"pad\":\"{}\"}}", "x".repeat(16_000)).into_bytes()
}

fn key(n: u64) -> String {
    format!("app/k{:03}", n % KEYS)
}

/// Checks `key(k)` as of revision `r` (commit n is revision n): its last write at or before
/// `r`, or absence before its first.
fn check(store: &Store, k: u64, r: u64) {
    let got = store.get(&key(k), Point::Revision(r)).unwrap();
    let last = (1..=r).rev().find(|n| n % KEYS == k % KEYS);
    match (got, last) {
        (None, None) => {}
        (Some(v), Some(n)) => {
            assert_eq!(v.revision, n, "{} at {r}", key(k));
            assert!(
                v.value.as_bytes() == value(n).as_slice(),
                "{} at {r}",
                key(k)
            );
        }
        (got, last) => panic!(
            "{} at {r}: got {:?}, expected {last:?}",
            key(k),
            got.map(|v| v.revision)
        ),
    }
}

fn write_and_read(reread: bool) -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), config(reread)).unwrap();
    let head = AtomicU64::new(0);
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        // Readers race the writes, the rolls and the re-reads that follow them.
        for seed in 1..=2u64 {
            let (store, head, done) = (&store, &head, &done);
            scope.spawn(move || {
                let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
                while !done.load(Ordering::SeqCst) {
                    let h = head.load(Ordering::SeqCst);
                    if h == 0 {
                        continue;
                    }
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    check(store, x % KEYS, 1 + (x >> 20) % h);
                }
            });
        }
        for n in 1..=COMMITS {
            let committed = store
                .append(CommitRequest::change(
                    "t",
                    "",
                    vec![Op::Put {
                        key: key(n),
                        value: value(n),
                    }],
                ))
                .unwrap();
            assert_eq!(committed.revision, n);
            head.store(n, Ordering::SeqCst);
        }
        // Let the readers overlap the last roll's re-read too.
        let deadline = Instant::now() + Duration::from_secs(30);
        while reread && store.sealed_bytes_reread() < 3 * (4 << 20) - 3 * (2 << 20) {
            assert!(Instant::now() < deadline, "sealed segments not re-read");
            std::thread::sleep(Duration::from_millis(10));
        }
        done.store(true, Ordering::SeqCst);
    });
    assert!(store.log().segments().len() >= 4);
    (store, dir)
}

#[test]
fn reads_racing_and_after_the_reread_see_the_written_bytes() {
    let (store, dir) = write_and_read(true);
    // Each sealed 4 MiB segment (a little less: the roll comes before it would overflow) has
    // one whole 2 MiB piece at least.
    let sealed = (store.log().segments().len() - 1) as u64;
    assert!(store.sealed_bytes_reread() >= sealed * (2 << 20));
    for r in (1..=COMMITS).step_by(3) {
        for k in 0..KEYS {
            check(&store, k, r);
        }
    }
    store.close().unwrap();
    drop(store);
    let store = Store::open(dir.path(), config(true)).unwrap();
    for k in 0..KEYS {
        check(&store, k, COMMITS);
    }
    store.close().unwrap();
}

#[test]
fn nothing_is_reread_when_turned_off() {
    let (store, _dir) = write_and_read(false);
    store.index_checkpointed_through();
    assert_eq!(store.sealed_bytes_reread(), 0);
    check(&store, 5, COMMITS);
    store.close().unwrap();
}
