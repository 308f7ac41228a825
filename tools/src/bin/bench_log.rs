//! Durable commits/s of the llmcm log against SQLite, with 1 and 64 concurrent writers, 512-byte
//! JSON values, and bytes on disk per commit. Prints figures and ratios; it is not a test.
//!
//! SQLite is configured as a careful user would for durable writes: WAL, `synchronous=FULL`,
//! `busy_timeout`, an `events` table with the same columns as a commit (revision, timestamp, kind,
//! actor, reason, key, op, value, hash, prev_hash) and an index on (key, timestamp). Each SQLite
//! commit is one `BEGIN IMMEDIATE` transaction that reads the previous hash, chains, and inserts,
//! so both contenders do the same work per commit.
//!
//! This disk's fsync latency changes phase over minutes, so contenders alternate within each round
//! and every round is reported: compare figures of the same round.
//!
//!     cargo run --release -p llmcm-tools --bin bench_log -- --dir /work/bench-data

use llmcm_tools::dir_bytes;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use llmcm::log::{CommitRequest, Log, LogConfig};
use llmcm::storage_format::commit::Op;
use sha2::{Digest, Sha256};

#[derive(Parser)]
struct Args {
    /// Scratch directory on the disk under test (not tmpfs); emptied first.
    #[arg(long, default_value = "./bench-data")]
    dir: PathBuf,
    /// Commits per single-writer run.
    #[arg(long, default_value_t = 2000)]
    single_commits: u64,
    /// Commits per multi-writer run (split across the writers).
    #[arg(long, default_value_t = 25_600)]
    multi_commits: u64,
    #[arg(long, default_value_t = 64)]
    writers: u64,
    /// Alternation rounds.
    #[arg(long, default_value_t = 3)]
    rounds: u64,
}

fn value(n: u64) -> Vec<u8> {
    let head = format!(
        "{{\"model\":\"m{}\",\"temperature\":0.7,\"prompt\":\"",
        n % 7
    );
    let tail = "\"}";
    let pad = 512 - head.len() - tail.len();
    let v = format!("{head}{}{tail}", "x".repeat(pad));
    assert_eq!(v.len(), 512);
    v.into_bytes()
}

fn key(n: u64) -> String {
    format!("prod/svc{}/key{}", n % 10, n % 100)
}

struct RunResult {
    commits_per_s: f64,
    p50_us: u64,
    p99_us: u64,
    bytes_per_commit: f64,
    batch_mean: Option<f64>,
}

fn run_writers(
    writers: u64,
    commits: u64,
    commit: Arc<dyn Fn(u64) + Send + Sync>,
) -> (Duration, Histogram<u64>) {
    let per_writer = commits / writers;
    let start = Instant::now();
    let handles: Vec<_> = (0..writers)
        .map(|w| {
            let commit = commit.clone();
            std::thread::spawn(move || {
                let mut hist = Histogram::<u64>::new(3).unwrap();
                for i in 0..per_writer {
                    let t = Instant::now();
                    commit(w * per_writer + i);
                    hist.record(t.elapsed().as_micros() as u64).unwrap();
                }
                hist
            })
        })
        .collect();
    let mut hist = Histogram::<u64>::new(3).unwrap();
    for h in handles {
        hist.add(h.join().unwrap()).unwrap();
    }
    (start.elapsed(), hist)
}

fn bench_llmcm(dir: &Path, writers: u64, commits: u64) -> RunResult {
    let _ = std::fs::remove_dir_all(dir);
    let log = Arc::new(Log::open(dir, LogConfig::default()).unwrap());
    let l = log.clone();
    let commit: Arc<dyn Fn(u64) + Send + Sync> = Arc::new(move |n| {
        let ops = vec![Op::Put {
            key: key(n),
            value: value(n),
        }];
        l.append(CommitRequest::change("bench", "", ops)).unwrap();
    });
    let (elapsed, hist) = run_writers(writers, commits, commit);
    let done = (commits / writers) * writers;
    let stats = log.stats();
    drop(log);
    RunResult {
        commits_per_s: done as f64 / elapsed.as_secs_f64(),
        p50_us: hist.value_at_quantile(0.5),
        p99_us: hist.value_at_quantile(0.99),
        bytes_per_commit: dir_bytes(&dir.join("log")) as f64 / done as f64,
        batch_mean: Some(stats.commits as f64 / stats.batches as f64),
    }
}

fn sqlite_open(path: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.busy_timeout(Duration::from_secs(60)).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "synchronous", "FULL").unwrap();
    conn
}

fn bench_sqlite(dir: &Path, writers: u64, commits: u64) -> RunResult {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("events.db");
    let setup = sqlite_open(&path);
    setup
        .execute_batch(
            "CREATE TABLE events (revision INTEGER PRIMARY KEY, timestamp INTEGER NOT NULL,
               kind TEXT NOT NULL, actor TEXT NOT NULL, reason TEXT NOT NULL, key TEXT NOT NULL,
               op TEXT NOT NULL, value BLOB, hash BLOB NOT NULL, prev_hash BLOB NOT NULL);
             CREATE INDEX events_key_time ON events (key, timestamp);",
        )
        .unwrap();
    let pool: Arc<Vec<parking_lot::Mutex<rusqlite::Connection>>> = Arc::new(
        (0..writers)
            .map(|_| parking_lot::Mutex::new(sqlite_open(&path)))
            .collect(),
    );
    let per_writer = commits / writers;
    let commit: Arc<dyn Fn(u64) + Send + Sync> = Arc::new(move |n| {
        let mut conn = pool[(n / per_writer) as usize].lock();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .unwrap();
        let (prev_rev, prev_hash): (i64, Vec<u8>) = tx
            .query_row(
                "SELECT revision, hash FROM events ORDER BY revision DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap_or((0, vec![0u8; 32]));
        let (k, v) = (key(n), value(n));
        let mut hasher = Sha256::new();
        hasher.update(&prev_hash);
        hasher.update(k.as_bytes());
        hasher.update(&v);
        let hash = hasher.finalize().to_vec();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros() as i64;
        tx.execute(
            "INSERT INTO events VALUES (?1, ?2, 'change', 'bench', '', ?3, 'put', ?4, ?5, ?6)",
            rusqlite::params![prev_rev + 1, now, k, v, hash, prev_hash],
        )
        .unwrap();
        tx.commit().unwrap();
    });
    let (elapsed, hist) = run_writers(writers, commits, commit);
    let done = per_writer * writers;
    setup
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    drop(setup);
    RunResult {
        commits_per_s: done as f64 / elapsed.as_secs_f64(),
        p50_us: hist.value_at_quantile(0.5),
        p99_us: hist.value_at_quantile(0.99),
        bytes_per_commit: dir_bytes(dir) as f64 / done as f64,
        batch_mean: None,
    }
}

fn report(round: u64, name: &str, writers: u64, r: &RunResult) {
    let batch = r
        .batch_mean
        .map(|b| format!("  mean batch {b:.1}"))
        .unwrap_or_default();
    println!(
        "round {round}  {name:<7} {writers:>2} writers  {:>9.0} commits/s  p50 {:>6} us  p99 {:>6} us  {:>6.0} bytes/commit{batch}",
        r.commits_per_s, r.p50_us, r.p99_us, r.bytes_per_commit
    );
}

fn main() {
    let args = Args::parse();
    std::fs::create_dir_all(&args.dir).unwrap();
    println!(
        "bench_log: {} cores, values 512 B, {} commits single / {} multi, {} writers, dir {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        args.single_commits,
        args.multi_commits,
        args.writers,
        args.dir.display()
    );
    let mut ratios_single = Vec::new();
    let mut ratios_multi = Vec::new();
    let mut bytes = (0.0, 0.0);
    for round in 1..=args.rounds {
        for writers in [1, args.writers] {
            let commits = if writers == 1 {
                args.single_commits
            } else {
                args.multi_commits
            };
            // Alternate who goes first, so neither always gets the same disk phase.
            let order = if round % 2 == 1 {
                ["llmcm", "sqlite"]
            } else {
                ["sqlite", "llmcm"]
            };
            let mut results = std::collections::HashMap::new();
            for name in order {
                let dir = args.dir.join(name);
                let r = if name == "llmcm" {
                    bench_llmcm(&dir, writers, commits)
                } else {
                    bench_sqlite(&dir, writers, commits)
                };
                report(round, name, writers, &r);
                results.insert(name, r);
            }
            let ratio = results["llmcm"].commits_per_s / results["sqlite"].commits_per_s;
            println!("round {round}  ratio llmcm/sqlite at {writers} writers: {ratio:.1}x");
            if writers == 1 {
                ratios_single.push(ratio);
            } else {
                ratios_multi.push(ratio);
                bytes = (
                    results["llmcm"].bytes_per_commit,
                    results["sqlite"].bytes_per_commit,
                );
            }
        }
    }
    let min = |v: &[f64]| v.iter().cloned().fold(f64::INFINITY, f64::min);
    let max = |v: &[f64]| v.iter().cloned().fold(0.0, f64::max);
    println!(
        "summary: llmcm/sqlite durable commits/s — 1 writer {:.1}x..{:.1}x, {} writers {:.1}x..{:.1}x; bytes/commit llmcm {:.0} vs sqlite {:.0} ({:.2}x)",
        min(&ratios_single),
        max(&ratios_single),
        args.writers,
        min(&ratios_multi),
        max(&ratios_multi),
        bytes.0,
        bytes.1,
        bytes.0 / bytes.1
    );
    let _ = std::fs::remove_dir_all(&args.dir);
}
