//! Clients that hold on to a server without doing their part cannot take its memory, its
//! descriptors or its probes: slow watchers are ended with `lagged` and hold a bounded number
//! of bytes; connections are capped, an idle one makes room for a newcomer, and room is kept
//! for `/health*` and `/metrics` when all are busy; silent, slow-header, idle, slow-body and
//! never-reading connections are timed out.
//!
//! How: against the real binary with low limits, raw TCP connections play the hostile clients;
//! the server's anonymous memory (RssAnon) and its own metrics are the measure. Every wait is
//! bounded; the connections are closed when each test ends.

use crate::server;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;
use server::{Server, SseReader, client, rss_anon_bytes};

fn addr(s: &Server) -> String {
    s.base.trim_start_matches("http://").to_owned()
}

/// A raw connection that has sent `request` (and reads nothing unless asked).
fn raw(s: &Server, request: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr(s)).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    stream
}

/// Reads until the server closes the connection or `limit` passes: what arrived, and whether
/// it was closed.
fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (String, bool) {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (String::from_utf8_lossy(&got).into_owned(), false);
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return (String::from_utf8_lossy(&got).into_owned(), true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return (String::from_utf8_lossy(&got).into_owned(), true);
            }
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), false),
        }
    }
}

fn metric(s: &Server, name: &str) -> f64 {
    s.metric(name).unwrap_or(0.0)
}

/// `metric` over a connection the server closes after answering (`Connection: close`), so the
/// check leaves no idle connection behind.
fn metric_closing(s: &Server, name: &str) -> f64 {
    let mut stream = raw(
        s,
        "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    let (text, _) = read_until_closed(&mut stream, Duration::from_secs(10));
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Polls `check` every 100 ms until it holds or `limit` passes.
fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    check()
}

fn put_big(s: &Server, key: &str, bytes: usize) -> u64 {
    let value = format!("\"{}\"", "x".repeat(bytes));
    let resp = client()
        .put(s.url(&format!("/v1/kv/{key}")))
        .body(value)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json::<Value>().unwrap()["revision"].as_u64().unwrap()
}

#[test]
fn slow_watchers_are_lagged_and_hold_bounded_memory() {
    const WATCHERS: usize = 20;
    const COMMITS: usize = 40;
    const VALUE_BYTES: usize = 512 << 10;
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        &dir.path().join("data"),
        "[http]\nwatch_buffer_bytes_max = 65536\nsend_timeout = \"60s\"\n",
        &[],
    );
    let mut peaks = Vec::new();
    for round in 0..2 {
        let silent: Vec<TcpStream> = (0..WATCHERS)
            .map(|_| raw(&s, "GET /v1/watch?prefix=big/ HTTP/1.1\r\nHost: t\r\n\r\n"))
            .collect();
        assert!(eventually(Duration::from_secs(10), || metric(
            &s,
            "llmcm_watchers"
        ) >= WATCHERS as f64));
        // A client that reads, but only much later.
        let mut late = SseReader::open(client().get(s.url("/v1/watch?prefix=big/")));
        let base = rss_anon_bytes(s.pid());
        let mut peak = base;
        let mut last = 0;
        for i in 0..COMMITS {
            last = put_big(&s, &format!("big/k{}", i % 4), VALUE_BYTES);
            peak = peak.max(rss_anon_bytes(s.pid()));
        }
        // Unbounded, each watcher would hold every commit: WATCHERS × 20 MB. Bounded, each
        // holds its 64 KiB buffer, one event let through, and a page being queued.
        for _ in 0..20 {
            std::thread::sleep(Duration::from_millis(100));
            peak = peak.max(rss_anon_bytes(s.pid()));
        }
        let grown = peak.saturating_sub(base);
        eprintln!("round {round}: RssAnon {base} -> peak {peak} (+{grown} bytes)");
        assert!(
            grown < 120 << 20,
            "{WATCHERS} slow watchers grew the server by {grown} bytes"
        );
        let buffered = metric(&s, "llmcm_watch_buffered_bytes");
        assert!(
            buffered <= (WATCHERS + 1) as f64 * (65536.0 + 2.0 * VALUE_BYTES as f64),
            "buffered {buffered}"
        );
        peaks.push(peak);

        // The late reader gets what was queued for it, then `lagged` naming where to resume;
        // resuming from there gives every later commit once.
        std::thread::sleep(Duration::from_secs(6));
        let mut seen = Vec::new();
        let lagged = loop {
            let event = late.next_event().expect("the stream ends with lagged");
            match event.event.as_str() {
                "commit" => seen.push(event.id.unwrap()),
                "lagged" => break event.data["revision"].as_u64().unwrap(),
                "progress" => {}
                other => panic!("unexpected event {other}"),
            }
        };
        assert!(late.next_event().is_none(), "the stream ends after lagged");
        assert!(lagged < last, "lagged at {lagged}, last commit {last}");
        assert_eq!(seen.last().copied().unwrap_or(lagged), lagged);
        let mut resumed = SseReader::open(
            client().get(s.url(&format!("/v1/watch?prefix=big/&from_revision={lagged}"))),
        );
        let mut next = lagged + 1;
        while next <= last {
            let event = resumed.next_event().unwrap();
            if event.event == "commit" {
                assert_eq!(event.id, Some(next));
                next += 1;
            }
        }
        drop(resumed);

        // The silent watchers end with `lagged`, which frees their places; once their clients
        // go away, their buffered bytes are given back.
        assert!(
            eventually(Duration::from_secs(20), || metric(&s, "llmcm_watchers")
                == 0.0),
            "watchers left: {}",
            metric(&s, "llmcm_watchers")
        );
        drop(silent);
        assert!(
            eventually(Duration::from_secs(10), || metric(
                &s,
                "llmcm_watch_buffered_bytes"
            ) == 0.0),
            "buffered: {}",
            metric(&s, "llmcm_watch_buffered_bytes")
        );
    }
    // A second round does not pile memory on the first.
    eprintln!("peaks: {peaks:?}");
    assert!(
        peaks[1] < peaks[0] + (40 << 20),
        "memory grew across rounds: {peaks:?}"
    );
    assert!(metric(&s, "llmcm_watchers_lagged_total") >= (2 * WATCHERS) as f64);
}

#[test]
fn connections_over_the_limit_make_room_or_get_probes_only() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        &dir.path().join("data"),
        "[http]\nconnections_max = 16\nidle_timeout = \"30s\"\nheader_read_timeout = \"30s\"\n",
        &[],
    );
    // Sixteen connections that hold a slot without a request: a new one makes room by closing
    // the oldest, and is served in full.
    let mut silent: Vec<TcpStream> = (0..16)
        .map(|_| TcpStream::connect(addr(&s)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut api = raw(
        &s,
        "GET /v1/kv?prefix= HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    let (answer, _) = read_until_closed(&mut api, Duration::from_secs(10));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let (_, closed) = read_until_closed(&mut silent[0], Duration::from_secs(5));
    assert!(closed, "the oldest idle connection made room");
    assert!(metric_closing(&s, "llmcm_http_connections_evicted_total") >= 1.0);
    drop(silent);

    // Sixteen busy connections (watches): nothing to close, so a newcomer gets the probes'
    // reserve — health and metrics, one request, nothing else.
    let watches: Vec<TcpStream> = (0..16)
        .map(|_| raw(&s, "GET /v1/watch HTTP/1.1\r\nHost: t\r\n\r\n"))
        .collect();
    assert!(eventually(Duration::from_secs(10), || metric_closing(
        &s,
        "llmcm_watchers"
    ) >= 16.0));
    // The metrics connection (a reserve one, closed after its answer) must be gone first, or
    // the newcomer finds it idle, evicts it and is served as an ordinary connection.
    std::thread::sleep(Duration::from_millis(500));
    let mut api = raw(&s, "GET /v1/kv/k HTTP/1.1\r\nHost: t\r\n\r\n");
    let (answer, _) = read_until_closed(&mut api, Duration::from_secs(10));
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("too_many_connections"), "{answer}");
    // The refused connection is closed before the server stops counting it: let it go, or the
    // next newcomer finds it idle, evicts it and is served as an ordinary connection.
    std::thread::sleep(Duration::from_millis(500));
    let mut probe = raw(&s, "GET /health/live HTTP/1.1\r\nHost: t\r\n\r\n");
    let (answer, closed) = read_until_closed(&mut probe, Duration::from_secs(10));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(closed, "a reserve connection serves one request");
    // A reserve slot cannot be held: silent, it is closed within the short header timeout.
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let mut holder = TcpStream::connect(addr(&s)).unwrap();
    let (_, closed) = read_until_closed(&mut holder, Duration::from_secs(10));
    assert!(closed);
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    drop(watches);
    assert!(eventually(Duration::from_secs(10), || {
        client()
            .get(s.url("/v1/kv?prefix="))
            .send()
            .is_ok_and(|r| r.status() == 200)
    }));
}

#[test]
fn silent_slow_idle_and_slow_body_connections_are_timed_out() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        &dir.path().join("data"),
        "[http]\nidle_timeout = \"3s\"\nheader_read_timeout = \"1s\"\nbody_read_timeout = \"2s\"\nconcurrent_requests_max = 4\n",
        &[],
    );
    // Connected, silent: closed by the header timeout.
    let started = Instant::now();
    let mut silent = TcpStream::connect(addr(&s)).unwrap();
    let (_, closed) = read_until_closed(&mut silent, Duration::from_secs(10));
    assert!(closed);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );

    // Headers a byte at a time, never finished: closed although bytes keep coming.
    let started = Instant::now();
    let mut drip = TcpStream::connect(addr(&s)).unwrap();
    let closed = loop {
        if drip.write_all(b"X").is_err() {
            break true;
        }
        let (_, closed) = read_until_closed(&mut drip, Duration::from_millis(200));
        if closed || started.elapsed() > Duration::from_secs(10) {
            break closed;
        }
    };
    assert!(closed, "a drip-fed request head is cut");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    // Kept alive after an answer: closed after the idle timeout, not the header timeout.
    let mut kept = raw(&s, "GET /health/live HTTP/1.1\r\nHost: t\r\n\r\n");
    let (answer, closed) = read_until_closed(&mut kept, Duration::from_millis(1500));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        !closed,
        "idle for less than idle_timeout, the connection stays"
    );
    let (_, closed) = read_until_closed(&mut kept, Duration::from_secs(6));
    assert!(closed, "idle past idle_timeout, it is closed");

    // Bodies declared and not sent hold every request permit; probes still answer at once,
    // and the slow requests get 408.
    let mut slow: Vec<TcpStream> = (0..8)
        .map(|i| {
            raw(
                &s,
                &format!(
                    "PUT /v1/kv/slow/{i} HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\n\"abc"
                ),
            )
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let asked = Instant::now();
    let live = client().get(s.url("/health/live")).send().unwrap();
    assert_eq!(live.status(), 200);
    assert!(
        asked.elapsed() < Duration::from_millis(1500),
        "liveness waited {:?} behind slow bodies",
        asked.elapsed()
    );
    for stream in &mut slow {
        let (answer, _) = read_until_closed(stream, Duration::from_secs(15));
        assert!(
            answer.starts_with("HTTP/1.1 408") || answer.is_empty(),
            "{answer}"
        );
        if !answer.is_empty() {
            assert!(answer.contains("body_timeout"), "{answer}");
        }
    }
    assert!(metric(&s, "llmcm_http_timeouts_total{kind=\"body\"}") >= 4.0);
    // Nothing was committed.
    let status: Value = client()
        .get(s.url("/v1/admin/status"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(status["head"]["revision"], 0);
}

#[test]
fn a_client_that_stops_reading_is_cut_by_the_send_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        &dir.path().join("data"),
        "[http]\nsend_timeout = \"2s\"\n",
        &[],
    );
    for i in 0..40 {
        put_big(&s, &format!("big/k{i}"), 512 << 10);
    }
    // An NDJSON export of 20 MB that is never read.
    let mut stream = raw(
        &s,
        "GET /v1/commits HTTP/1.1\r\nHost: t\r\nAccept: application/x-ndjson\r\n\r\n",
    );
    std::thread::sleep(Duration::from_secs(6));
    let (_, closed) = read_until_closed(&mut stream, Duration::from_secs(10));
    assert!(closed, "the server cut the connection");
    assert!(metric(&s, "llmcm_http_timeouts_total{kind=\"send\"}") >= 1.0);
}

/// The total bound holds even for first events: with every queue empty an event always passes
/// (however large), but a watcher's first event does not pass the total once others hold it.
#[test]
fn the_total_watch_buffer_bound_holds_for_first_events_too() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        &dir.path().join("data"),
        "[http]\nwatch_buffer_bytes_max = 65536\nwatch_buffer_bytes_total_max = 1048576\nsend_timeout = \"60s\"\n",
        &[],
    );
    let silent: Vec<TcpStream> = (0..12)
        .map(|_| raw(&s, "GET /v1/watch?prefix=big/ HTTP/1.1\r\nHost: t\r\n\r\n"))
        .collect();
    assert!(eventually(Duration::from_secs(10), || metric(
        &s,
        "llmcm_watchers"
    ) >= 12.0));
    let mut most = 0.0f64;
    // 12 MB for each watcher: past what the kernel's socket buffers take.
    for i in 0..40 {
        put_big(&s, &format!("big/k{}", i % 8), 300 << 10);
        most = most.max(metric(&s, "llmcm_watch_buffered_bytes"));
    }
    std::thread::sleep(Duration::from_secs(1));
    most = most.max(metric(&s, "llmcm_watch_buffered_bytes"));
    assert!(most > 0.0);
    assert!(
        most <= (1 << 20) as f64,
        "buffered {most} bytes over the 1 MiB total"
    );
    drop(silent);
}
