//! HTTP throughput of `llmcm serve` against a bare axum handler, with wrk, 64 connections on
//! loopback: GET latest, GET as of a random past time, durable PUT at 64 connections and at 1.
//! The bare handler returns a fixed JSON body of the same size as a GET answer; the two servers
//! run in this process on separate ports and are measured alternately. Prints figures, ratios and
//! the mean group-commit batch (from the server's own metrics). It is not a test.
//!
//!     cargo run --release -p llmcm-tools --bin bench_http -- --dir /work/bench-http
//!
//! Needs `wrk` (apt-get install wrk).

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use llmcm::config::Config;
use llmcm::storage_format::commit::Op;
use llmcm::store::{CommitRequest, LogConfig};
use llmcm::store::{Point, Store};

#[derive(Parser)]
struct Args {
    /// Scratch directory on the disk under test; emptied first.
    #[arg(long, default_value = "./bench-http")]
    dir: PathBuf,
    /// Keys seeded (each with several versions).
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Commits seeded.
    #[arg(long, default_value_t = 100_000)]
    commits: u64,
    /// Seconds per wrk run.
    #[arg(long, default_value_t = 8)]
    seconds: u64,
    #[arg(long, default_value_t = 64)]
    connections: u64,
    /// Alternation rounds.
    #[arg(long, default_value_t = 2)]
    rounds: u64,
    /// Also measure durable PUT with this many milliseconds of pause after every fsync (emulates
    /// this disk's slow phase, ~4 ms per fsync, when it does not occur by itself); 0: skip.
    #[arg(long, default_value_t = 0.0)]
    slow_sync_pad_ms: f64,
    /// Turn off `storage.reread_sealed_segments` (for an A/B of reading sealed segments back).
    #[arg(long)]
    no_reread: bool,
}

fn value(n: u64) -> String {
    let head = format!(
        "{{\"model\":\"m{}\",\"temperature\":0.7,\"prompt\":\"",
        n % 7
    );
    let tail = "\"}";
    format!("{head}{}{tail}", "x".repeat(512 - head.len() - tail.len()))
}

/// Runs wrk and returns (requests/s, p50 ms, p99 ms).
fn wrk(
    url: &str,
    script: &str,
    connections: u64,
    seconds: u64,
    dir: &std::path::Path,
) -> (f64, String, String) {
    let path = dir.join("script.lua");
    std::fs::write(&path, script).unwrap();
    let out = Command::new("wrk")
        .args([
            if connections > 1 { "-t2" } else { "-t1" },
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--latency",
            "-s",
        ])
        .arg(&path)
        .arg(url)
        .output()
        .expect("wrk is installed (apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let field = |prefix: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or("?")
            .to_owned()
    };
    let rps = field("Requests/sec:").parse().unwrap_or(0.0);
    let non2xx = text
        .lines()
        .find(|l| l.contains("Non-2xx"))
        .map(str::to_owned);
    // Printed by the caller's line would be clearer, but this prints before it: say which run.
    if let Some(line) = non2xx {
        println!("    (the next line's run) wrk: {}", line.trim());
    }
    (rps, field("50%"), field("99%"))
}

fn metric(base: &str, name: &str) -> f64 {
    let out = Command::new("curl")
        .args(["-s", &format!("{base}/metrics")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn main() {
    let args = Args::parse();
    let _ = std::fs::remove_dir_all(&args.dir);
    std::fs::create_dir_all(&args.dir).unwrap();
    let data = args.dir.join("data");

    // Seed: commits spread over the keys, by 64 writer threads (group commit).
    let log_config = LogConfig {
        reread_sealed_segments: !args.no_reread,
        ..LogConfig::default()
    };
    let store = Arc::new(Store::open(&data, log_config).unwrap());
    let per = args.commits / 64;
    let threads: Vec<_> = (0..64)
        .map(|w| {
            let (store, keys) = (store.clone(), args.keys);
            std::thread::spawn(move || {
                for i in 0..per {
                    let n = w * per + i;
                    let op = Op::Put {
                        key: format!("bench/k{}", n % keys),
                        value: value(n).into_bytes(),
                    };
                    store
                        .append(CommitRequest::change("seed", "", vec![op]))
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let first = store
        .get("bench/k0", Point::Revision(1))
        .ok()
        .flatten()
        .map(|v| v.timestamp_us)
        .unwrap_or(0);
    let sample = store.get("bench/k1", Point::Latest).unwrap().unwrap();
    let last = store.log().head().timestamp_us;
    store.close().unwrap();
    drop(store);
    let first = if first == 0 { last - 1_000_000 } else { first };

    // The bare handler's body: a key version of the same size.
    let bare_body = format!(
        "{{\"key\":\"bench/k1\",\"value\":{},\"revision\":{},\"create_revision\":1,\"version\":9,\"timestamp\":\"2026-11-27T00:00:00.000000Z\"}}",
        String::from_utf8_lossy(sample.value.as_bytes()),
        sample.revision
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let bare_listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let bare = format!("http://{}", bare_listener.local_addr().unwrap());
    let body = Arc::new(bare_body.clone());
    runtime.spawn(async move {
        let app = axum::Router::new().route(
            "/v1/kv/{*key}",
            axum::routing::get(move || {
                let body = body.clone();
                async move { ([("content-type", "application/json")], (*body).clone()) }
            }),
        );
        axum::serve(bare_listener, app).await.unwrap();
    });

    // llmcm serve in this process, on a free port found by binding first.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = Config {
        data_dir: data.clone(),
        listen: format!("127.0.0.1:{port}"),
        log_level: "warn".into(),
        storage: llmcm::config::StorageConfig {
            reread_sealed_segments: !args.no_reread,
            ..Default::default()
        },
        ..Config::default()
    };
    let base = format!("http://127.0.0.1:{port}");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        let options = llmcm::api::ServeOptions {
            reload_config: Box::new(|| Err("no reload in the benchmark".into())),
            set_log_level: Box::new(|_| Ok(())),
        };
        rt.block_on(llmcm::api::serve(config, options)).unwrap();
    });
    for _ in 0..200 {
        let ok = Command::new("curl")
            .args(["-sf", &format!("{base}/health/ready")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if ok {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    let keys = args.keys;
    let get_latest = format!(
        "math.randomseed(7)\nrequest = function() return wrk.format(\"GET\", \"/v1/kv/bench/k\" .. math.random(0, {})) end\n",
        keys - 1
    );
    let get_at = format!(
        "math.randomseed(11)\nrequest = function()\n  local us = {first} + math.floor(math.random() * {span})\n  local s = math.floor(us / 1000000)\n  local at = os.date(\"!%Y-%m-%dT%H:%M:%S\", s) .. string.format(\".%06dZ\", us % 1000000)\n  return wrk.format(\"GET\", \"/v1/kv/bench/k\" .. math.random(0, {k}) .. \"?at=\" .. at)\nend\n",
        span = last - first,
        k = keys - 1
    );
    let put = format!(
        "math.randomseed(13)\nwrk.method = \"PUT\"\nwrk.body = '{}'\nwrk.headers[\"Content-Type\"] = \"application/json\"\nrequest = function() return wrk.format(\"PUT\", \"/v1/kv/bench/p\" .. math.random(0, {})) end\n",
        value(1),
        keys - 1
    );
    println!(
        "bench_http: {} commits over {} keys seeded; wrk -t2 -c{} -d{}s; {} cores; answer body {} bytes",
        args.commits,
        keys,
        args.connections,
        args.seconds,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        bare_body.len()
    );
    for round in 1..=args.rounds {
        println!("round {round}");
        let (b, b50, b99) = wrk(
            &bare,
            &get_latest,
            args.connections,
            args.seconds,
            &args.dir,
        );
        println!("  bare axum handler (fixed body)   {b:>9.0} req/s  p50 {b50:>8}  p99 {b99:>8}");
        let (l, l50, l99) = wrk(
            &base,
            &get_latest,
            args.connections,
            args.seconds,
            &args.dir,
        );
        println!(
            "  llmcm GET latest                 {l:>9.0} req/s  p50 {l50:>8}  p99 {l99:>8}  = {:.0}% of bare",
            100.0 * l / b
        );
        let (a, a50, a99) = wrk(&base, &get_at, args.connections, args.seconds, &args.dir);
        println!(
            "  llmcm GET ?at=random past time   {a:>9.0} req/s  p50 {a50:>8}  p99 {a99:>8}  = {:.0}% of bare",
            100.0 * a / b
        );
        // Durable PUT at `connections`, with the mean group-commit batch and fsync of the run.
        let put_run = |label: &str| {
            let (sum0, count0) = (
                metric(&base, "llmcm_group_commit_batch_commits_sum"),
                metric(&base, "llmcm_group_commit_batch_commits_count"),
            );
            let fsync0 = metric(&base, "llmcm_fsync_seconds_sum");
            let (p, p50, p99) = wrk(&base, &put, args.connections, args.seconds, &args.dir);
            let (sum1, count1) = (
                metric(&base, "llmcm_group_commit_batch_commits_sum"),
                metric(&base, "llmcm_group_commit_batch_commits_count"),
            );
            let batch = (sum1 - sum0) / (count1 - count0).max(1.0);
            let fsync_ms = 1000.0 * (metric(&base, "llmcm_fsync_seconds_sum") - fsync0)
                / (count1 - count0).max(1.0);
            println!(
                "  llmcm durable PUT, {} conns{label} {p:>9.0} req/s  p50 {p50:>8}  p99 {p99:>8}  mean batch {batch:.1} commits/fsync, mean fsync {fsync_ms:.2} ms",
                args.connections
            );
        };
        put_run("     ");
        if args.slow_sync_pad_ms > 0.0 {
            // The slow disk phase, emulated: every group-commit fsync is followed by a pause.
            llmcm::fault::set_sync_pad(Duration::from_secs_f64(args.slow_sync_pad_ms / 1000.0));
            put_run(&format!(
                ", emulated slow disk (each fsync + {} ms)",
                args.slow_sync_pad_ms
            ));
            llmcm::fault::set_sync_pad(Duration::ZERO);
        }
        let (p1, p150, p199) = wrk(&base, &put, 1, args.seconds, &args.dir);
        println!(
            "  llmcm durable PUT, 1 conn        {p1:>9.0} req/s  p50 {p150:>8}  p99 {p199:>8}"
        );
    }
    let _ = std::fs::remove_dir_all(&args.dir);
}
