//! Watch at scale: N watchers of one prefix on one server (a child process running
//! `llmcm::api::serve`), a writer committing at a fixed rate; prints the delivery latency from
//! each commit's timestamp to its arrival at each watcher (p50, p99, max), the server's
//! anonymous memory per idle watcher, and its growth with 100 watchers that never read while
//! large commits are written. All on loopback, bounded in time. It is not a test.
//!
//!     cargo run --release -p llmcm-tools --bin bench_watch -- --dir /work/bench-watch
//!
//! Phases (each with a fresh server): 1,000 watchers at 100 commits/s; 10,000 watchers at 10
//! commits/s (the bench raises `ulimit -n` to its hard limit, and the server's caps); 100
//! watchers that never read, with `--slow-commits` commits of `--slow-value-bytes` each. The
//! watchers and the writer share this process (one thread) and the machine's cores with the
//! server: on 2 cores the figures include that contention.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Parser)]
struct Args {
    /// Scratch directory; emptied first.
    #[arg(long, default_value = "./bench-watch")]
    dir: PathBuf,
    /// Seconds of writing per latency phase.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Watchers and commit rate of the phases, as `N@RATE` (commits per second).
    #[arg(long, default_values_t = ["1000@100".to_string(), "10000@10".to_string()])]
    phase: Vec<String>,
    /// Watchers that never read, in the slow phase (0: skip it).
    #[arg(long, default_value_t = 100)]
    slow_watchers: usize,
    /// Commits written in the slow phase.
    #[arg(long, default_value_t = 100)]
    slow_commits: usize,
    /// Value size of those commits.
    #[arg(long, default_value_t = 256 << 10)]
    slow_value_bytes: usize,
    /// `http.watch_buffer_bytes_max` of the server in the slow phase.
    #[arg(long, default_value_t = 1 << 20)]
    watch_buffer_bytes: usize,
    /// Internal: run as the server child on this data directory and port.
    #[arg(long, hide = true)]
    serve_child: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    raise_descriptor_limit();
    if let Some(spec) = &args.serve_child {
        return serve_child(spec);
    }
    let _ = std::fs::remove_dir_all(&args.dir);
    std::fs::create_dir_all(&args.dir)?;
    println!(
        "bench_watch: {} s of writing per phase; server and clients share {} cores",
        args.seconds,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    for (i, phase) in args.phase.iter().enumerate() {
        let (watchers, rate) = phase
            .split_once('@')
            .and_then(|(n, r)| Some((n.parse::<usize>().ok()?, r.parse::<u64>().ok()?)))
            .ok_or_else(|| anyhow::anyhow!("--phase {phase:?}: give N@RATE"))?;
        latency_phase(&args, i, watchers, rate)?;
    }
    if args.slow_watchers > 0 {
        slow_phase(&args)?;
    }
    Ok(())
}

fn raise_descriptor_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to an rlimit we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// The server child: `DIR,PORT,WATCHERS_MAX,BUFFER_BYTES`.
fn serve_child(spec: &str) -> anyhow::Result<()> {
    let parts: Vec<&str> = spec.split(',').collect();
    let [dir, port, watchers_max, buffer] = parts[..] else {
        anyhow::bail!("bad child spec {spec}");
    };
    let mut config = llmcm::config::Config {
        data_dir: PathBuf::from(dir),
        listen: format!("127.0.0.1:{port}"),
        log_level: "warn".into(),
        ..Default::default()
    };
    config.http.watchers_max = watchers_max.parse()?;
    config.http.connections_max = 20_000;
    config.http.concurrent_requests_max = 4096;
    config.http.watch_buffer_bytes_max = buffer.parse()?;
    config.validate()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let options = llmcm::api::ServeOptions {
        reload_config: Box::new(|| Err("no reload in the bench".into())),
        set_log_level: Box::new(|_| Ok(())),
    };
    runtime.block_on(llmcm::api::serve(config, options))?;
    Ok(())
}

/// Connections the writer spreads its commits over.
const WRITER_CONNECTIONS: u64 = 8;

struct ServerChild {
    child: Child,
    addr: String,
}

impl ServerChild {
    fn start(dir: &Path, watchers_max: usize, buffer: usize) -> anyhow::Result<ServerChild> {
        let port = free_port();
        let spec = format!("{},{port},{watchers_max},{buffer}", dir.display());
        let mut child = Command::new(std::env::current_exe()?)
            .args(["--serve-child", &spec])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()?;
        let mut out = BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        while !line.starts_with("ready") {
            line.clear();
            if out.read_line(&mut line)? == 0 {
                anyhow::bail!("the server child exited before it was ready");
            }
        }
        Ok(ServerChild {
            child,
            addr: format!("127.0.0.1:{port}"),
        })
    }

    fn rss_anon(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("RssAnon:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    }
}

impl Drop for ServerChild {
    fn drop(&mut self) {
        // SAFETY: kill with a pid of our own child process.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// One watcher: reads the event stream (HTTP/1.0: the body ends with the connection, no
/// chunking), and records each commit's delivery latency (now minus the commit's timestamp).
async fn watcher(
    addr: String,
    latency: Arc<Mutex<Histogram<u64>>>,
    received: Arc<AtomicU64>,
    opened: Arc<AtomicU64>,
) -> anyhow::Result<()> {
    let mut stream = TcpStream::connect(&addr).await?;
    stream
        .write_all(b"GET /v1/watch?prefix=bench/ HTTP/1.0\r\nHost: bench\r\n\r\n")
        .await?;
    let mut buf = vec![0u8; 16 << 10];
    let mut pending: Vec<u8> = Vec::new();
    let mut headers_done = false;
    let mut in_commit = false;
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        pending.extend_from_slice(&buf[..n]);
        if !headers_done {
            let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            anyhow::ensure!(
                pending.starts_with(b"HTTP/1.0 200") || pending.starts_with(b"HTTP/1.1 200"),
                "watch refused: {}",
                String::from_utf8_lossy(&pending[..end])
            );
            pending.drain(..end + 4);
            headers_done = true;
            opened.fetch_add(1, Ordering::Relaxed);
        }
        let now_us = llmcm::clock::now_us();
        let mut consumed = 0;
        while let Some(at) = pending[consumed..].iter().position(|&b| b == b'\n') {
            let line = &pending[consumed..consumed + at];
            consumed += at + 1;
            if line == b"event: commit" {
                in_commit = true;
            } else if line.starts_with(b"event: ") {
                in_commit = false;
            } else if in_commit && line.starts_with(b"data: ") {
                if let Some(t) = timestamp_in(line) {
                    latency.lock().saturating_record(now_us.saturating_sub(t));
                    received.fetch_add(1, Ordering::Relaxed);
                }
                in_commit = false;
            }
        }
        pending.drain(..consumed);
    }
}

/// The commit's `"timestamp":"…"` in an event's data line, in µs.
fn timestamp_in(line: &[u8]) -> Option<u64> {
    let key = b"\"timestamp\":\"";
    let at = line.windows(key.len()).position(|w| w == key)? + key.len();
    let text = std::str::from_utf8(line.get(at..at + 27)?).ok()?;
    llmcm::clock::parse_timestamp_us(text).ok()
}

/// A minimal HTTP/1.1 client on one kept-alive connection: PUT, then read the whole answer.
struct Writer {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Writer {
    async fn connect(addr: &str) -> anyhow::Result<Writer> {
        Ok(Writer {
            stream: TcpStream::connect(addr).await?,
            buf: Vec::new(),
        })
    }

    async fn put(&mut self, key: &str, value: &str) -> anyhow::Result<()> {
        let request = format!(
            "PUT /v1/kv/{key} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{value}",
            value.len()
        );
        self.stream.write_all(request.as_bytes()).await?;
        self.buf.clear();
        let mut chunk = [0u8; 4096];
        loop {
            let n = self.stream.read(&mut chunk).await?;
            anyhow::ensure!(n > 0, "the server closed the writer's connection");
            self.buf.extend_from_slice(&chunk[..n]);
            let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = String::from_utf8_lossy(&self.buf[..end]).to_ascii_lowercase();
            anyhow::ensure!(head.starts_with("http/1.1 200"), "PUT failed: {head}");
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if self.buf.len() >= end + 4 + length {
                return Ok(());
            }
        }
    }
}

fn latency_phase(args: &Args, index: usize, watchers: usize, rate: u64) -> anyhow::Result<()> {
    let dir = args.dir.join(format!("phase-{index}"));
    let server = ServerChild::start(&dir, watchers.max(1000) + 100, 1 << 20)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        // Something to watch, so the first commit does not create the prefix's first key.
        let mut writer = Writer::connect(&server.addr).await?;
        writer.put("bench/seed", "0").await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let base = server.rss_anon();
        let latency = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?));
        let received = Arc::new(AtomicU64::new(0));
        let opened = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let mut tasks = Vec::with_capacity(watchers);
        for _ in 0..watchers {
            tasks.push(tokio::spawn(watcher(
                server.addr.clone(),
                latency.clone(),
                received.clone(),
                opened.clone(),
            )));
            // Connect in bursts without overflowing the listen backlog.
            if tasks.len() % 256 == 0 {
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        while opened.load(Ordering::Relaxed) < watchers as u64 {
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(120),
                "only {} of {watchers} watches opened",
                opened.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let connect_s = started.elapsed().as_secs_f64();
        // Idle: let every watch settle (a progress event each), then measure.
        tokio::time::sleep(Duration::from_secs(6)).await;
        let idle = server.rss_anon();
        let per_watcher = idle.saturating_sub(base) as f64 / watchers as f64;

        let commits = rate * args.seconds;
        // The writer has its own thread and connections: the watchers' reading must not delay
        // the commits, nor one slow commit the next (each connection takes every
        // WRITER_CONNECTIONS-th slot of the schedule).
        let addr = server.addr.clone();
        let writer_thread = std::thread::spawn(move || -> anyhow::Result<f64> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let interval = Duration::from_secs_f64(1.0 / rate as f64);
                let start = tokio::time::Instant::now() + Duration::from_millis(100);
                let value = format!(
                    "{{\"model\":\"m1\",\"temperature\":0.7,\"pad\":\"{}\"}}",
                    "x".repeat(128)
                );
                let mut tasks = Vec::new();
                for c in 0..WRITER_CONNECTIONS {
                    let (addr, value) = (addr.clone(), value.clone());
                    tasks.push(tokio::spawn(async move {
                        let mut writer = Writer::connect(&addr).await?;
                        let mut slot = c;
                        while slot < commits {
                            tokio::time::sleep_until(start + interval * slot as u32).await;
                            writer.put(&format!("bench/k{}", slot % 64), &value).await?;
                            slot += WRITER_CONNECTIONS;
                        }
                        Ok::<_, anyhow::Error>(())
                    }));
                }
                let started = std::time::Instant::now();
                for t in tasks {
                    t.await??;
                }
                Ok(started.elapsed().as_secs_f64())
            })
        });
        let write_started = Instant::now();
        let mut peak = idle;
        while !writer_thread.is_finished() {
            tokio::time::sleep(Duration::from_millis(500)).await;
            peak = peak.max(server.rss_anon());
        }
        let _ = write_started;
        let write_s = writer_thread
            .join()
            .map_err(|_| anyhow::anyhow!("the writer panicked"))??;
        // Let the last deliveries arrive.
        let expected = commits * watchers as u64;
        let drain_started = Instant::now();
        while received.load(Ordering::Relaxed) < expected
            && drain_started.elapsed() < Duration::from_secs(30)
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let got = received.load(Ordering::Relaxed);
        let h = latency.lock().clone();
        println!(
            "{watchers:>6} watchers, {rate:>3} commits/s ({commits} commits in {write_s:.1} s, {:.0}/s achieved): \
             delivered {got} of {expected} ({:.2}%), latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; \
             watches opened in {connect_s:.1} s",
            commits as f64 / write_s,
            100.0 * got as f64 / expected as f64,
            h.value_at_quantile(0.50) as f64 / 1e3,
            h.value_at_quantile(0.99) as f64 / 1e3,
            h.max() as f64 / 1e3,
        );
        println!(
            "        server RssAnon: {:.1} MiB before, {:.1} MiB with the watchers idle ({:.1} KiB per idle watcher), peak {:.1} MiB while writing",
            base as f64 / 1048576.0,
            idle as f64 / 1048576.0,
            per_watcher / 1024.0,
            peak as f64 / 1048576.0,
        );
        for task in tasks {
            task.abort();
        }
        Ok::<_, anyhow::Error>(())
    })?;
    drop(server);
    Ok(())
}

fn slow_phase(args: &Args) -> anyhow::Result<()> {
    let dir = args.dir.join("slow");
    let server = ServerChild::start(&dir, 10_000, args.watch_buffer_bytes)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut writer = Writer::connect(&server.addr).await?;
        writer.put("bench/seed", "0").await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let base = server.rss_anon();
        // Watchers that send their request and never read a byte.
        let mut silent = Vec::new();
        for _ in 0..args.slow_watchers {
            let mut s = TcpStream::connect(&server.addr).await?;
            s.write_all(b"GET /v1/watch?prefix=bench/ HTTP/1.1\r\nHost: bench\r\n\r\n")
                .await?;
            silent.push(s);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let value = format!("\"{}\"", "x".repeat(args.slow_value_bytes));
        let mut peak = server.rss_anon();
        let started = Instant::now();
        for i in 0..args.slow_commits {
            writer.put(&format!("bench/k{}", i % 16), &value).await?;
            if i % 10 == 0 {
                peak = peak.max(server.rss_anon());
            }
        }
        let write_s = started.elapsed().as_secs_f64();
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            peak = peak.max(server.rss_anon());
        }
        let grown = peak.saturating_sub(base);
        let unbounded = (args.slow_watchers * args.slow_commits * args.slow_value_bytes) as f64;
        // Per watcher: its buffer, one event let through, one being queued, one in hyper's hands.
        let bound = args.slow_watchers as f64
            * (args.watch_buffer_bytes as f64 + 3.0 * args.slow_value_bytes as f64);
        println!(
            "{:>6} watchers that never read, {} commits of {} KiB in {write_s:.1} s: server RssAnon grew {:.1} MiB \
             (bound from watch_buffer_bytes_max {} KiB: {:.1} MiB; unbounded, every commit to every watcher: {:.0} MiB)",
            args.slow_watchers,
            args.slow_commits,
            args.slow_value_bytes >> 10,
            grown as f64 / 1048576.0,
            args.watch_buffer_bytes >> 10,
            bound / 1048576.0,
            unbounded / 1048576.0,
        );
        drop(silent);
        tokio::time::sleep(Duration::from_secs(2)).await;
        println!(
            "        after they disconnect: RssAnon {:.1} MiB (was {:.1} MiB before them)",
            server.rss_anon() as f64 / 1048576.0,
            base as f64 / 1048576.0
        );
        Ok::<_, anyhow::Error>(())
    })?;
    drop(server);
    let _ = Write::flush(&mut std::io::stdout());
    Ok(())
}
