//! As-of reads of the llmcm store against SQLite, single-threaded: point reads (random key,
//! random time), prefix reads of 100-key prefixes as of a random time, and open time and anonymous
//! RSS after open at 1M and 10M commits (each measured in a fresh child process). Prints figures
//! and ratios; it is not a test.
//!
//! Data: N commits over 100,000 keys (`svcPPPP/keyKKK`: 1,000 prefixes of 100 keys), one put of a
//! 512-byte JSON value per commit, written by 64 threads (group commit). SQLite gets exactly the
//! same rows (same revisions and timestamps) in the schema of `bench_log` with its index on
//! (key, timestamp), WAL mode.
//!
//! Each measurement is a warm-up of a third as many reads (not measured: without it, whichever
//! store is measured first after the other read 10–25% slower, its index pushed out of the
//! caches by the other's reads), then two passes: untimed (reads/s, and the ratios), then with
//! every read timed (p50/p99; its reads/s is printed too — timing each read keeps consecutive
//! reads from overlapping, which slows sub-microsecond reads by 20–30%). Every pass reads its
//! own fresh random list: this machine's 480 MiB L3 holds much of what a pass of 300k reads
//! touched, so a pass repeating an earlier pass's reads would find their values cached.
//!
//! The rounds run twice: with the page cache as the build left it, then after both stores' files
//! are dropped from the page cache and reopened (as after a restart). Point reads are measured
//! with `get` (an owned version) and `get_with` (lent in place, as the server's GET reads), which
//! goes first alternating from round to round. Every result passes through `black_box`, so no
//! read's value load can be optimized away.
//!
//!     cargo run --release -p llmcm-tools --bin bench_reads -- --dir /work/bench-reads

use llmcm_tools::Rng;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use llmcm::storage_format::commit::Op;
use llmcm::store::{CommitRequest, LogConfig};
use llmcm::store::{Point, Store};

#[derive(Parser)]
struct Args {
    /// Scratch directory on the disk under test; emptied first (unless --open-only).
    #[arg(long, default_value = "./bench-reads")]
    dir: PathBuf,
    #[arg(long, default_value_t = 1_000_000)]
    commits: u64,
    /// Commits of the large store used for open time and RSS (0 skips it).
    #[arg(long, default_value_t = 10_000_000)]
    large_commits: u64,
    #[arg(long, default_value_t = 200_000)]
    point_reads: u64,
    #[arg(long, default_value_t = 5_000)]
    prefix_reads: u64,
    /// Rounds of reads; round 1 also pays first-touch page faults of the mappings.
    #[arg(long, default_value_t = 3)]
    rounds: u64,
    /// Internal: open the store at DIR, print open time and RssAnon, exit.
    #[arg(long)]
    open_only: Option<PathBuf>,
    /// Only build a store of --commits commits at DIR and keep it.
    #[arg(long)]
    build_only: Option<PathBuf>,
    /// With --build-only: take snapshots every this many commits while building (the server's
    /// schedule; `snapshot.keep` 8). 0: none.
    #[arg(long, default_value_t = 0)]
    snapshot_every: u64,
    /// Keep the scratch directory at the end.
    #[arg(long)]
    keep: bool,
    /// Use this existing store (built with --build-only) as the large store instead of building.
    #[arg(long)]
    large_existing: Option<PathBuf>,
    /// Turn off `reread_sealed_segments` (for an A/B of reading sealed segments back after rolls).
    #[arg(long)]
    no_reread: bool,
}

/// `--no-reread`, set once in `main`.
static NO_REREAD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn log_config() -> LogConfig {
    LogConfig {
        reread_sealed_segments: !NO_REREAD.load(std::sync::atomic::Ordering::Relaxed),
        ..LogConfig::default()
    }
}

const KEYS: u64 = 100_000;
const WRITERS: u64 = 64;

fn key(k: u64) -> String {
    format!("svc{:04}/key{:03}", k / 100, k % 100)
}

fn value(n: u64) -> Vec<u8> {
    let head = format!(
        "{{\"model\":\"m{}\",\"temperature\":0.7,\"n\":{n},\"prompt\":\"",
        n % 7
    );
    let pad = 512 - head.len() - 2;
    format!("{head}{}\"}}", "x".repeat(pad)).into_bytes()
}

fn rss_anon_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn build_store(dir: &Path, commits: u64) -> Duration {
    build_store_with(dir, commits, 0)
}

fn build_store_with(dir: &Path, commits: u64, snapshot_every: u64) -> Duration {
    let _ = std::fs::remove_dir_all(dir);
    let maintenance = llmcm::store::MaintenanceConfig {
        snapshot_every_commits: snapshot_every,
        snapshot_every_us: 0,
        ..llmcm::store::MaintenanceConfig::manual()
    };
    let store = Arc::new(Store::open_configured(dir, log_config(), maintenance).unwrap());
    let start = Instant::now();
    let per_writer = commits / WRITERS;
    let handles: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (w + 1));
                for i in 0..per_writer {
                    let n = w * per_writer + i;
                    let op = Op::Put {
                        key: key(rng.next() % KEYS),
                        value: value(n),
                    };
                    store
                        .append(CommitRequest::change("bench", "", vec![op]))
                        .unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let took = start.elapsed();
    store.close().unwrap();
    took
}

fn build_sqlite(store: &Store, path: &Path) -> rusqlite::Connection {
    let _ = std::fs::remove_file(path);
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.execute_batch(
        "CREATE TABLE events (revision INTEGER PRIMARY KEY, timestamp INTEGER NOT NULL,
           kind TEXT NOT NULL, actor TEXT NOT NULL, reason TEXT NOT NULL, key TEXT NOT NULL,
           op TEXT NOT NULL, value BLOB, hash BLOB NOT NULL, prev_hash BLOB NOT NULL);",
    )
    .unwrap();
    let tx = conn.unchecked_transaction().unwrap();
    {
        let mut insert = tx
            .prepare(
                "INSERT INTO events VALUES (?1, ?2, 'change', 'bench', '', ?3, 'put', ?4, ?5, ?6)",
            )
            .unwrap();
        store
            .log()
            .for_each_commit(1, u64::MAX, &mut |link| {
                let c = &link.payload.commit;
                let Op::Put { key, value } = &c.ops[0] else {
                    unreachable!()
                };
                insert
                    .execute(rusqlite::params![
                        c.revision as i64,
                        c.timestamp_us as i64,
                        key,
                        value,
                        &link.payload.hash[..],
                        &link.prev_hash[..]
                    ])
                    .unwrap();
            })
            .unwrap();
    }
    tx.commit().unwrap();
    conn.execute_batch("CREATE INDEX events_key_time ON events (key, timestamp); ANALYZE;")
        .unwrap();
    conn
}

/// Drops `path` (a file, or every file under a directory) from the page cache.
fn evict_page_cache(path: &Path) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            evict_page_cache(&entry.unwrap().path());
        }
        return;
    }
    let Ok(file) = std::fs::File::open(path) else {
        return;
    };
    use std::os::fd::AsRawFd;
    // SAFETY: a plain advice call on an open descriptor.
    unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
}

/// Prints a measurement; returns (reads/s of the untimed pass, reads/s of the timed pass).
fn report(name: &str, count: u64, m: &Measured) -> (f64, f64) {
    let per_s = count as f64 / m.untimed.as_secs_f64();
    let timed_per_s = count as f64 / m.timed.as_secs_f64();
    println!(
        "  {name:<34} {per_s:>10.0} reads/s  p50 {:>6.2} us  p99 {:>7.2} us  (timed pass {timed_per_s:.0}/s)",
        m.hist.value_at_quantile(0.5) as f64 / 1000.0,
        m.hist.value_at_quantile(0.99) as f64 / 1000.0
    );
    (per_s, timed_per_s)
}

/// Two passes over the same reads: one untimed (its elapsed time gives reads/s), then one with
/// every read timed into a histogram (p50/p99). Timing each read costs two clock reads, and the
/// clock read waits for earlier loads to finish, so it stops consecutive reads from overlapping:
/// a timed pass understates the throughput of sub-microsecond reads (here by 20–30%), much less
/// that of slower ones (SQLite: 1–3%). Both passes are reported.
struct Measured {
    untimed: Duration,
    timed: Duration,
    hist: Histogram<u64>,
}

/// Reads `warmup` fresh requests from `requests` (not measured), then `count` without timers,
/// then `count` more timing each read.
fn timed<T, F: FnMut(&T) -> u64>(
    requests: impl Fn(u64) -> Vec<T>,
    warmup: u64,
    count: u64,
    mut f: F,
) -> Measured {
    let (warmup, untimed, timed) = (requests(warmup), requests(count), requests(count));
    // `black_box`: the result (a byte of each value read) must be computed, or the compiler may
    // drop the value loads of an inlined read as dead code.
    let mut sink = 0;
    for item in &warmup {
        sink += std::hint::black_box(f(item));
    }
    let start = Instant::now();
    for item in &untimed {
        sink += std::hint::black_box(f(item));
    }
    let untimed = start.elapsed();
    let mut hist = Histogram::<u64>::new(3).unwrap();
    let start = Instant::now();
    for item in &timed {
        let t = Instant::now();
        sink += std::hint::black_box(f(item));
        hist.record(t.elapsed().as_nanos() as u64).unwrap();
    }
    std::hint::black_box(sink);
    Measured {
        untimed,
        timed: start.elapsed(),
        hist,
    }
}

/// Opens the store in a fresh process three times; returns (median open ms, RssAnon kB). Runs
/// `sync` first so the kernel's writeback of a freshly built store does not land in the figure.
fn open_in_child(dir: &Path) -> (f64, u64) {
    let _ = Command::new("sync").status();
    std::thread::sleep(Duration::from_secs(2));
    let exe = std::env::current_exe().unwrap();
    let mut runs = Vec::new();
    for _ in 0..3 {
        let out = Command::new(&exe)
            .arg("--open-only")
            .arg(dir)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let mut fields = text.split_whitespace();
        let ms: f64 = fields.next().and_then(|f| f.parse().ok()).expect("open ms");
        let rss: u64 = fields.next().and_then(|f| f.parse().ok()).expect("rss kB");
        runs.push((ms, rss));
    }
    runs.sort_by(|a, b| a.0.total_cmp(&b.0));
    runs[1]
}

fn main() {
    let args = Args::parse();
    NO_REREAD.store(args.no_reread, std::sync::atomic::Ordering::Relaxed);
    if let Some(dir) = args.open_only {
        let start = Instant::now();
        let store = Store::open(&dir, LogConfig::default()).unwrap();
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        println!("{ms:.1} {}", rss_anon_kb());
        std::mem::forget(store); // measure open only; the OS releases the lock at exit
        return;
    }
    if let Some(dir) = args.build_only {
        let took = build_store_with(&dir, args.commits, args.snapshot_every);
        println!(
            "built {} commits in {:.1} s",
            args.commits,
            took.as_secs_f64()
        );
        return;
    }
    std::fs::create_dir_all(&args.dir).unwrap();
    println!(
        "bench_reads: {} commits over {KEYS} keys, 512-byte values, single-threaded reads, {} cores, sealed segments {}",
        args.commits,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        if args.no_reread {
            "not re-read"
        } else {
            "re-read after rolls"
        }
    );
    let store_dir = args.dir.join("llmcm-1m");
    let took = build_store(&store_dir, args.commits);
    println!("built llmcm store in {:.1} s", took.as_secs_f64());
    let store = Store::open(&store_dir, log_config()).unwrap();
    let t_first = store.get(&key(0), Point::Latest).ok();
    drop(t_first);
    let first_ts = store
        .commits(&llmcm::store::CommitFilter {
            limit: 1,
            ..Default::default()
        })
        .unwrap()
        .items[0]
        .commit
        .timestamp_us;
    let last_ts = store.log().head().timestamp_us;
    let sqlite_path = args.dir.join("events.db");
    let started = Instant::now();
    let conn = build_sqlite(&store, &sqlite_path);
    println!(
        "built SQLite copy in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // A fresh random list for every pass (see the top of the file); a third as many reads warm
    // each measurement up.
    let (warm_points, warm_prefixes) = (args.point_reads / 3, args.prefix_reads / 3);
    let rng = std::cell::RefCell::new(Rng(42));
    let points = |n: u64| -> Vec<(String, u64)> {
        let mut rng = rng.borrow_mut();
        (0..n)
            .map(|_| {
                (
                    key(rng.next() % KEYS),
                    first_ts + rng.next() % (last_ts - first_ts + 1),
                )
            })
            .collect()
    };
    let prefixes = |n: u64| -> Vec<(String, String, u64)> {
        let mut rng = rng.borrow_mut();
        (0..n)
            .map(|_| {
                let p = rng.next() % (KEYS / 100);
                (
                    format!("svc{p:04}/"),
                    format!("svc{p:04}0"),
                    first_ts + rng.next() % (last_ts - first_ts + 1),
                )
            })
            .collect()
    };

    let mut ratios_point = Vec::new();
    let mut ratios_get_with = Vec::new();
    let mut ratios_point_timed = Vec::new();
    let mut ratios_prefix = Vec::new();
    let mut store = Some(store);
    let mut conn = Some(conn);
    // Phase 1 reads a page cache filled by the build's writes; phase 2 evicts both stores'
    // files from the page cache and reopens them, so the cache is filled by reads, as after a
    // restart (llmcm's mappings then get 2 MiB pages where the kernel can).
    for phase in ["warm after the build", "after eviction"] {
        if phase == "after eviction" {
            if let Some(s) = store.take() {
                s.close().unwrap();
                drop(s);
            }
            drop(conn.take());
            let _ = Command::new("sync").status();
            evict_page_cache(&store_dir);
            evict_page_cache(&args.dir.join("events.db"));
            evict_page_cache(&args.dir.join("events.db-wal"));
            store = Some(Store::open(&store_dir, log_config()).unwrap());
            conn = Some(rusqlite::Connection::open(&sqlite_path).unwrap());
        }
        let store = store.as_ref().expect("open");
        let conn = conn.as_ref().expect("open");
        let mut point_stmt = conn
            .prepare("SELECT value, op FROM events WHERE key = ?1 AND timestamp <= ?2 ORDER BY timestamp DESC LIMIT 1")
            .unwrap();
        let mut prefix_stmt = conn
            .prepare(
                "SELECT key, value, op, MAX(timestamp) FROM events
                 WHERE key >= ?1 AND key < ?2 AND timestamp <= ?3 GROUP BY key",
            )
            .unwrap();
        for round in 1..=args.rounds {
            println!(
                "{phase}, round {round}: as-of point reads (random key, random time), {} reads",
                args.point_reads
            );
            let measure_get = || {
                timed(points, warm_points, args.point_reads, |(k, t)| {
                    store
                        .get(k, Point::Time(*t))
                        .unwrap()
                        .map_or(0, |v| v.value.as_bytes()[10] as u64)
                })
            };
            // The value lent in place (what the server's GET uses): no key copy, no owned value.
            let measure_get_with = || {
                timed(points, warm_points, args.point_reads, |(k, t)| {
                    store
                        .get_with(k, Point::Time(*t), |v| v.value[10] as u64)
                        .unwrap()
                        .unwrap_or(0)
                })
            };
            // Alternated from round to round: the second finds more of the index cached.
            let (m_get, m_get_with) = if round % 2 == 1 {
                let a = measure_get();
                (a, measure_get_with())
            } else {
                let b = measure_get_with();
                (measure_get(), b)
            };
            let ours = report("llmcm get(key, at=T)", args.point_reads, &m_get);
            let ours_with = report("llmcm get_with(key, at=T)", args.point_reads, &m_get_with);
            let m = timed(points, warm_points, args.point_reads, |(k, t)| {
                point_stmt
                    .query_row(rusqlite::params![k, *t as i64], |r| {
                        let v: Vec<u8> = r.get(0)?;
                        Ok(v[10] as u64)
                    })
                    .unwrap_or(0)
            });
            let theirs = report("SQLite (key, timestamp) index", args.point_reads, &m);
            println!(
                "  ratio llmcm/SQLite point reads: {:.1}x (get), {:.1}x (get_with); timed passes {:.1}x, {:.1}x",
                ours.0 / theirs.0,
                ours_with.0 / theirs.0,
                ours.1 / theirs.1,
                ours_with.1 / theirs.1
            );
            ratios_point.push(ours.0 / theirs.0);
            ratios_get_with.push(ours_with.0 / theirs.0);
            ratios_point_timed.push(ours.1 / theirs.1);

            println!(
                "{phase}, round {round}: prefix-as-of reads of 100-key prefixes, {} reads",
                args.prefix_reads
            );
            let m = timed(prefixes, warm_prefixes, args.prefix_reads, |(p, _, t)| {
                let page = store.list(p, Point::Time(*t), None, 1000).unwrap();
                // Touch every value, as SQLite's query copies every value.
                page.items
                    .iter()
                    .map(|v| v.value.as_bytes()[10] as u64)
                    .sum::<u64>()
            });
            let ours = report("llmcm list(prefix, at=T)", args.prefix_reads, &m);
            let m = timed(prefixes, warm_prefixes, args.prefix_reads, |(lo, hi, t)| {
                let mut rows = prefix_stmt
                    .query(rusqlite::params![lo, hi, *t as i64])
                    .unwrap();
                let mut sum = 0;
                while let Some(row) = rows.next().unwrap() {
                    let op: String = row.get(2).unwrap();
                    let v: Vec<u8> = row.get(1).unwrap();
                    if op == "put" {
                        sum += v[10] as u64;
                    }
                }
                sum
            });
            let theirs = report("SQLite GROUP BY key MAX(timestamp)", args.prefix_reads, &m);
            println!(
                "  ratio llmcm/SQLite prefix reads: {:.1}x (timed passes {:.1}x)",
                ours.0 / theirs.0,
                ours.1 / theirs.1
            );
            ratios_prefix.push(ours.0 / theirs.0);
        }
    }
    let store = store.expect("open");
    drop(conn);
    store.close().unwrap();
    drop(store);

    let (open_1m, rss_1m) = open_in_child(&store_dir);
    println!(
        "open at {} commits: {open_1m:.1} ms, RssAnon after open {rss_1m} kB",
        args.commits
    );
    let large = match (&args.large_existing, args.large_commits) {
        (Some(dir), _) => Some(dir.clone()),
        (None, 0) => None,
        (None, n) => {
            let dir = args.dir.join("llmcm-large");
            let took = build_store(&dir, n);
            println!("built {n}-commit store in {:.1} s", took.as_secs_f64());
            Some(dir)
        }
    };
    if let Some(dir) = large {
        let head = Store::open(&dir, LogConfig::default())
            .unwrap()
            .log()
            .head()
            .revision;
        let (open_large, rss_large) = open_in_child(&dir);
        // Alternate once more with the small store, so both see the same machine state.
        let (open_small, _) = open_in_child(&store_dir);
        println!(
            "open at {head} commits: {open_large:.1} ms ({:.2}x the {}-commit open, re-measured at {open_small:.1} ms), RssAnon after open {rss_large} kB",
            open_large / open_small.min(open_1m),
            args.commits
        );
    }
    println!(
        "summary: point reads {:.1}x..{:.1}x SQLite (get_with {:.1}x..{:.1}x; get in timed passes {:.1}x..{:.1}x), prefix reads {:.1}x..{:.1}x SQLite",
        ratios_point.iter().cloned().fold(f64::INFINITY, f64::min),
        ratios_point.iter().cloned().fold(0.0, f64::max),
        ratios_get_with
            .iter()
            .cloned()
            .fold(f64::INFINITY, f64::min),
        ratios_get_with.iter().cloned().fold(0.0, f64::max),
        ratios_point_timed
            .iter()
            .cloned()
            .fold(f64::INFINITY, f64::min),
        ratios_point_timed.iter().cloned().fold(0.0, f64::max),
        ratios_prefix.iter().cloned().fold(f64::INFINITY, f64::min),
        ratios_prefix.iter().cloned().fold(0.0, f64::max),
    );
    if !args.keep {
        let _ = std::fs::remove_dir_all(&args.dir);
    }
}
