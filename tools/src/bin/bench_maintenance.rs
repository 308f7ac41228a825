//! Snapshots, point-in-time restore and compaction at scale. Prints figures and ratios; it is not
//! a test.
//!
//! 1. Open time with snapshots at 1M and 10M commits: each store gets a snapshot at its head,
//!    then is opened three times in a fresh process (median), after `sync`.
//! 2. PITR of the large store to a random revision against `cp -r` + `sync` of its data directory
//!    on the same disk, alternated (cp, restore, cp, restore); throughput is the source data
//!    directory's bytes per second of wall time, so both are measured by the same yardstick.
//! 3. Compaction of the 1M store's older half while one thread reads (random keys, as of random
//!    times after the horizon) and one thread writes; read p99 during compaction against the same
//!    load for the same time without it, alternated (without, with, without).
//!
//! The stores are built by `bench_reads --build-only` (same data: 100,000 keys, 512-byte values,
//! one put per commit, 64 writers).
//!
//!     cargo run --release -p llmcm-tools --bin bench_reads -- --build-only /work/store-10m --commits 10000000
//!     cargo run --release -p llmcm-tools --bin bench_maintenance -- --dir /work/bench-maint \
//!         --large-existing /work/store-10m

use llmcm_tools::{Rng, dir_bytes, sync};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use llmcm::storage_format::commit::Op;
use llmcm::store::restore::{RestorePoint, RestoreRequest, restore};
use llmcm::store::{CommitRequest, LogConfig};
use llmcm::store::{MaintenanceConfig, Point, Store};

#[derive(Parser)]
struct Args {
    /// Scratch directory on the disk under test; emptied first.
    #[arg(long, default_value = "./bench-maint")]
    dir: PathBuf,
    #[arg(long, default_value_t = 1_000_000)]
    commits: u64,
    /// An existing large store (built with `bench_reads --build-only`); it is copied, not changed.
    #[arg(long)]
    large_existing: Option<PathBuf>,
    /// Internal: open the store at DIR, print the open time in ms, exit.
    #[arg(long)]
    open_only: Option<PathBuf>,
    /// Seconds of reads in each phase of the compaction measurement (at least as long as the
    /// compaction itself).
    #[arg(long, default_value_t = 8)]
    phase_seconds: u64,
}

const KEYS: u64 = 100_000;

fn key(k: u64) -> String {
    format!("svc{:04}/key{:03}", k / 100, k % 100)
}

fn quiet() -> MaintenanceConfig {
    MaintenanceConfig {
        snapshot_every_commits: 0,
        snapshot_every_us: 0,
        ..MaintenanceConfig::default()
    }
}

/// Median of three opens, each in a fresh process.
fn open_in_child(dir: &Path) -> f64 {
    sync();
    std::thread::sleep(Duration::from_secs(1));
    let exe = std::env::current_exe().unwrap();
    let mut runs: Vec<f64> = (0..3)
        .map(|_| {
            let out = Command::new(&exe)
                .arg("--open-only")
                .arg(dir)
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .expect("open ms")
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    runs[1]
}

fn build(dir: &Path, commits: u64) {
    let exe = std::env::current_exe()
        .unwrap()
        .with_file_name("bench_reads");
    let status = Command::new(exe)
        .arg("--build-only")
        .arg(dir)
        .arg("--commits")
        .arg(commits.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "bench_reads --build-only failed");
}

/// Takes a snapshot at the head; returns (seconds, bytes, keys).
fn snapshot(dir: &Path) -> (f64, u64, u64) {
    let store = Store::open_configured(dir, LogConfig::default(), quiet()).unwrap();
    let started = Instant::now();
    let info = store.snapshot().unwrap();
    let took = started.elapsed().as_secs_f64();
    store.close().unwrap();
    (took, info.bytes, info.keys)
}

fn copy_tree(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-r")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

fn main() {
    let args = Args::parse();
    if let Some(dir) = args.open_only {
        let start = Instant::now();
        let store = Store::open_configured(&dir, LogConfig::default(), quiet()).unwrap();
        println!("{:.1}", start.elapsed().as_secs_f64() * 1000.0);
        std::mem::forget(store); // measure open only; the OS releases the lock at exit
        return;
    }
    let _ = std::fs::remove_dir_all(&args.dir);
    std::fs::create_dir_all(&args.dir).unwrap();
    let small = args.dir.join("store-1m");
    println!("building {} commits ...", args.commits);
    build(&small, args.commits);
    let (s_secs, s_bytes, s_keys) = snapshot(&small);
    println!(
        "snapshot at {} commits: {s_keys} keys, {s_bytes} bytes, {s_secs:.2} s ({:.0} MB/s of image)",
        args.commits,
        s_bytes as f64 / s_secs / 1e6
    );
    let open_small = open_in_child(&small);
    println!(
        "open at {} commits with a snapshot: {open_small:.1} ms",
        args.commits
    );

    if let Some(large_src) = &args.large_existing {
        let large = args.dir.join("store-large");
        println!("copying {} ...", large_src.display());
        copy_tree(large_src, &large);
        let (l_secs, l_bytes, l_keys) = snapshot(&large);
        println!("snapshot of the large store: {l_keys} keys, {l_bytes} bytes, {l_secs:.2} s");
        let head = Store::open_configured(&large, LogConfig::default(), quiet())
            .unwrap()
            .log()
            .head()
            .revision;
        let open_large = open_in_child(&large);
        let open_small_again = open_in_child(&small);
        println!(
            "open at {head} commits with a snapshot: {open_large:.1} ms ({:.2}x the {}-commit open, re-measured at {open_small_again:.1} ms)",
            open_large / open_small_again.min(open_small),
            args.commits
        );

        // PITR against cp -r + sync, alternated.
        let source_bytes = dir_bytes(&large);
        let mut rng = Rng(0x5EED);
        let mut cp_rates = Vec::new();
        let mut pitr_rates = Vec::new();
        for round in 0..3 {
            let copy = args.dir.join(format!("cp-{round}"));
            sync();
            let started = Instant::now();
            copy_tree(&large, &copy);
            sync();
            let cp_secs = started.elapsed().as_secs_f64();
            std::fs::remove_dir_all(&copy).unwrap();
            cp_rates.push(source_bytes as f64 / cp_secs);
            println!(
                "cp -r + sync of {source_bytes} bytes: {cp_secs:.2} s ({:.0} MB/s)",
                source_bytes as f64 / cp_secs / 1e6
            );

            let point = 1 + rng.next() % head;
            let target = args.dir.join(format!("pitr-{round}"));
            sync();
            let started = Instant::now();
            let outcome = restore(
                &RestoreRequest {
                    source: large.clone(),
                    point: RestorePoint::Revision(point),
                    prefix: None,
                    bump_revision: 0,
                    allow_empty: true,
                    target: target.clone(),
                    actor: "bench".into(),
                },
                &mut |_| {},
            )
            .unwrap();
            sync();
            let secs = started.elapsed().as_secs_f64();
            std::fs::remove_dir_all(&target).unwrap();
            pitr_rates.push(source_bytes as f64 / secs);
            println!(
                "PITR to revision {point}: {secs:.2} s ({:.0} MB/s of source), from {} + {} commits replayed, {} bytes read, {} keys",
                source_bytes as f64 / secs / 1e6,
                outcome.base,
                outcome.commits_replayed,
                outcome.bytes_read,
                outcome.keys
            );
        }
        let cp = cp_rates.iter().sum::<f64>() / cp_rates.len() as f64;
        let pitr = pitr_rates.iter().sum::<f64>() / pitr_rates.len() as f64;
        let worst = pitr_rates.iter().copied().fold(f64::INFINITY, f64::min);
        println!(
            "PITR throughput mean {:.0} MB/s, worst {:.0} MB/s vs cp -r + sync {:.0} MB/s: {:.2}x mean, {:.2}x worst (target >= 0.70x)",
            pitr / 1e6,
            worst / 1e6,
            cp / 1e6,
            pitr / cp,
            worst / cp
        );
        std::fs::remove_dir_all(&large).unwrap();
    }

    compaction(&small, args.phase_seconds);
}

/// Read p99 (and write p99) without and during a compaction of the older half.
fn compaction(dir: &Path, phase_seconds: u64) {
    let store = Arc::new(Store::open_configured(dir, LogConfig::default(), quiet()).unwrap());
    let head = store.log().head();
    let oldest = store
        .commits(&llmcm::store::CommitFilter {
            limit: 1,
            ..Default::default()
        })
        .unwrap()
        .items[0]
        .commit
        .timestamp_us;
    let middle = oldest + (head.timestamp_us - oldest) / 2;
    // `compact`: read until the compaction ends; else read for `seconds`.
    let phase = |label: &str, compact: bool, seconds: f64| {
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let store = store.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut hist = Histogram::<u64>::new(3).unwrap();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    store
                        .append(CommitRequest::change(
                            "bench",
                            "",
                            vec![Op::Put {
                                key: key(n % KEYS),
                                value: format!("{{\"n\":{n}}}").into_bytes(),
                            }],
                        ))
                        .unwrap();
                    hist.record(t.elapsed().as_nanos() as u64).unwrap();
                    n += 1;
                }
                hist
            })
        };
        let compactor = compact.then(|| {
            let store = store.clone();
            std::thread::spawn(move || {
                let now = llmcm::clock::Clock::now_us(&llmcm::clock::SystemClock);
                let started = Instant::now();
                let outcome = store.compact(now - middle, "bench", "").unwrap();
                (started.elapsed(), outcome)
            })
        });
        let mut hist = Histogram::<u64>::new(3).unwrap();
        let mut rng = Rng(0xC0FFEE);
        let started = Instant::now();
        let mut reads = 0u64;
        loop {
            let done = match &compactor {
                Some(c) => c.is_finished(),
                None => started.elapsed() >= Duration::from_secs_f64(seconds),
            };
            if done {
                break;
            }
            let k = key(rng.next() % KEYS);
            // As of a random time after the middle of the history (valid after the compaction).
            let at = middle + rng.next() % (head.timestamp_us - middle + 1);
            let t = Instant::now();
            std::hint::black_box(store.get(&k, Point::Time(at)).unwrap());
            hist.record(t.elapsed().as_nanos() as u64).unwrap();
            reads += 1;
        }
        let elapsed = started.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        let whist = writer.join().unwrap();
        let compacted = compactor.map(|c| c.join().unwrap());
        println!(
            "{label}: {reads} reads in {elapsed:.2} s, read p50 {:.2} us, p99 {:.2} us, max {:.0} us; {} durable writes, write p99 {:.2} ms",
            hist.value_at_quantile(0.5) as f64 / 1e3,
            hist.value_at_quantile(0.99) as f64 / 1e3,
            hist.max() as f64 / 1e3,
            whist.len(),
            whist.value_at_quantile(0.99) as f64 / 1e6,
        );
        if let Some((took, Some(outcome))) = &compacted {
            println!(
                "  compaction: horizon {}, {} segments dropped, {} bytes reclaimed, base image {} bytes ({} keys), {:.2} s: {:.0} MB/s reclaimed",
                outcome.horizon.revision,
                outcome.segments_dropped,
                outcome.bytes_reclaimed,
                outcome.base_image_bytes,
                outcome.keys,
                took.as_secs_f64(),
                outcome.bytes_reclaimed as f64 / took.as_secs_f64() / 1e6
            );
        }
        (hist.value_at_quantile(0.99) as f64, elapsed)
    };
    let (before, _) = phase("without compaction", false, phase_seconds as f64);
    let (during, took) = phase("during compaction ", true, 0.0);
    let (after, _) = phase("without compaction (as long)", false, took);
    println!(
        "read p99 during compaction / without: {:.2}x (vs the run before) and {:.2}x (vs the run after) (target <= 2x)",
        during / before,
        during / after
    );
}
