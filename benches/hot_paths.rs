//! Micro-benchmarks of the hot paths: commit encode and decode, a segment scan, an index point
//! lookup at the head and an as-of descent into older versions. `cargo bench` runs them and
//! prints nanoseconds per operation (median of several rounds); nothing is asserted, so a slow
//! machine cannot fail them. The end-to-end harnesses (against SQLite, etcd, over HTTP) are in
//! tools/ — see benches/README.md.

use std::hint::black_box;
use std::time::{Duration, Instant};

use llmcm::store::{CommitRequest, LogConfig, Op, Point, Store};
use storage_format::commit::{Commit, CommitKind, decode_commit_payload, encode_commit_payload};

/// Rounds per benchmark; the median is printed with the spread.
const ROUNDS: usize = 7;
/// Each round runs for about this long.
const ROUND_TIME: Duration = Duration::from_millis(200);

/// Runs `op` in rounds of about `ROUND_TIME` and prints ns/op: median, min and max over rounds.
fn bench(name: &str, mut op: impl FnMut()) {
    // Calibrate: how many calls fill a round.
    let mut calls = 1u64;
    loop {
        let started = Instant::now();
        for _ in 0..calls {
            op();
        }
        if started.elapsed() >= ROUND_TIME / 4 || calls >= 1 << 30 {
            let per_call = started.elapsed().as_secs_f64() / calls as f64;
            calls = ((ROUND_TIME.as_secs_f64() / per_call.max(1e-9)) as u64).max(1);
            break;
        }
        calls *= 4;
    }
    let mut ns: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..calls {
                op();
            }
            started.elapsed().as_nanos() as f64 / calls as f64
        })
        .collect();
    ns.sort_by(f64::total_cmp);
    println!(
        "{name:<40} {:>10.1} ns/op  (min {:.1}, max {:.1}; {calls} calls x {ROUNDS} rounds)",
        ns[ROUNDS / 2],
        ns[0],
        ns[ROUNDS - 1]
    );
}

fn commit(revision: u64, value_bytes: usize) -> Commit {
    let value = format!("\"{}\"", "x".repeat(value_bytes.saturating_sub(2)));
    Commit {
        revision,
        timestamp_us: 1_800_000_000_000_000 + revision,
        kind: CommitKind::Change,
        actor: "deploy-bot".into(),
        reason: "raise the temperature".into(),
        detail: Vec::new(),
        ops: (0..4)
            .map(|i| Op::Put {
                key: format!("prod/chatbot/param{i}"),
                value: value.clone().into_bytes(),
            })
            .collect(),
    }
}

fn encode_decode() {
    for value_bytes in [64, 4096] {
        let c = commit(42, value_bytes);
        let prev = [7u8; 32];
        bench(&format!("commit encode, 4 ops x {value_bytes} B"), || {
            black_box(encode_commit_payload(black_box(&c), &prev).unwrap());
        });
        let (payload, _) = encode_commit_payload(&c, &prev).unwrap();
        bench(&format!("commit decode, 4 ops x {value_bytes} B"), || {
            black_box(decode_commit_payload(black_box(&payload)).unwrap());
        });
    }
}

/// A store of `keys` keys with `versions` versions each, written in commits of one op by 32
/// threads (so group commit batches the fsyncs and the build takes seconds).
fn build_store(dir: &std::path::Path, keys: u64, versions: u64) -> Store {
    const WRITERS: u64 = 32;
    let store = Store::open(dir, LogConfig::default()).unwrap();
    std::thread::scope(|scope| {
        for w in 0..WRITERS {
            let store = &store;
            scope.spawn(move || {
                for v in 0..versions {
                    for k in (w..keys).step_by(WRITERS as usize) {
                        let op = Op::Put {
                            key: format!("app/key{k:05}"),
                            value: format!("{{\"v\":{v},\"model\":\"m-{k}\"}}").into_bytes(),
                        };
                        store
                            .append(CommitRequest::change("bench", "", vec![op]))
                            .unwrap();
                    }
                }
            });
        }
    });
    store.roll().unwrap();
    store
}

fn reads_and_scan() {
    let dir = tempfile::tempdir().unwrap();
    let (keys, versions) = (2_000u64, 10u64);
    let store = build_store(dir.path(), keys, versions);
    let head = store.head().revision;
    let mut k = 0u64;
    bench("index point lookup at the head", || {
        k = (k + 7919) % keys;
        black_box(store.get(&format!("app/key{k:05}"), Point::Latest).unwrap());
    });
    let mut r = 0u64;
    bench("as-of descent to a random revision", || {
        k = (k + 7919) % keys;
        r = (r + 104_729) % head + 1;
        black_box(
            store
                .get(&format!("app/key{k:05}"), Point::Revision(r))
                .unwrap(),
        );
    });
    let segment = store
        .segments()
        .into_iter()
        .find(|s| s.sealed && s.last_revision >= s.first_revision)
        .expect("a sealed segment");
    let bytes = std::fs::read(&segment.path).unwrap();
    let commits = segment.last_revision - segment.first_revision + 1;
    let mut scanned = 0u64;
    let started = Instant::now();
    bench(
        &format!("segment scan, {commits} commits, {} KiB", bytes.len() >> 10),
        || {
            let outcome = storage_format::scan::scan_segment(
                black_box(&bytes),
                storage_format::scan::TailPolicy::Strict,
                &mut |_, _| {},
            )
            .unwrap();
            scanned += outcome.commit_count;
        },
    );
    println!(
        "{:<40} {:>10.0} commits/s",
        "segment scan throughput",
        scanned as f64 / started.elapsed().as_secs_f64()
    );
    store.close().unwrap();
}

fn main() {
    // `cargo test --benches` runs this binary with `--bench` absent: keep that quick.
    if !std::env::args().any(|a| a == "--bench") {
        println!("hot_paths: run with `cargo bench` to measure");
        return;
    }
    encode_decode();
    reads_and_scan();
}
