//! Every answer is bounded by bytes as well as by items: list, history and commits pages end
//! once they hold `store::PAGE_BYTES_MAX` (with `next`, so following the cursor still gives
//! everything exactly once); a diff over `DIFF_BYTES_MAX` of values is 413; an NDJSON export is
//! produced as the client reads it, so clients that do not read hold the server to a few pages.
//!
//! How: the real binary, values of hundreds of KiB, the server's RssAnon as the measure.

use crate::server;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use llmcm::store::PAGE_BYTES_MAX;
use serde_json::Value;
use server::{Server, client, rss_anon_bytes};

const VALUE_BYTES: usize = 300 << 10;

fn put_big(s: &Server, key: &str, bytes: usize) {
    let resp = client()
        .put(s.url(&format!("/v1/kv/{key}")))
        .body(format!("\"{}\"", "x".repeat(bytes)))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
}

fn get(s: &Server, path: &str) -> Value {
    let resp = client().get(s.url(path)).send().unwrap();
    assert_eq!(resp.status(), 200, "{path}");
    resp.json().unwrap()
}

/// Follows `next` from `first_path` (which ends with `&after=` left to fill); every page's
/// items, and the largest page's length.
fn all_pages(s: &Server, path: &str) -> (Vec<Value>, usize, usize) {
    let (mut items, mut pages, mut largest) = (Vec::new(), 0, 0);
    let mut after: Option<String> = None;
    loop {
        let url = match &after {
            None => path.to_owned(),
            Some(a) => format!("{path}&after={a}"),
        };
        let page = get(s, &url);
        let page_items = page["items"].as_array().unwrap();
        largest = largest.max(page_items.len());
        items.extend(page_items.iter().cloned());
        pages += 1;
        match &page["next"] {
            Value::Null => return (items, pages, largest),
            Value::String(k) => after = Some(k.clone()),
            other => after = Some(other.to_string()),
        }
    }
}

#[test]
fn pages_are_bounded_by_bytes_and_complete_by_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"), "", &[]);
    for i in 0..12 {
        put_big(&s, &format!("big/k{i:02}"), VALUE_BYTES);
    }
    for _ in 0..12 {
        put_big(&s, "big/k00", VALUE_BYTES);
    }
    // Items per page: the page ends at the first item that takes it to PAGE_BYTES_MAX.
    let per_page = PAGE_BYTES_MAX.div_ceil(VALUE_BYTES);
    let (commits, pages, largest) = all_pages(&s, "/v1/commits?limit=1000");
    assert_eq!(commits.len(), 24);
    assert!(largest <= per_page, "a commits page held {largest} items");
    assert!(pages >= 24 / per_page);
    let revisions: Vec<u64> = commits
        .iter()
        .map(|c| c["revision"].as_u64().unwrap())
        .collect();
    assert_eq!(revisions, (1..=24).collect::<Vec<_>>());

    let (list, _, largest) = all_pages(&s, "/v1/kv?prefix=big/&limit=1000");
    assert_eq!(list.len(), 12);
    assert!(largest <= per_page, "a list page held {largest} items");
    let (history, _, largest) = all_pages(&s, "/v1/history/big/k00?limit=1000");
    assert_eq!(history.len(), 13);
    assert!(largest <= per_page, "a history page held {largest} items");
}

#[test]
fn a_diff_over_its_byte_bound_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"), "", &[]);
    let value_bytes = 1000 << 10;
    let count = llmcm::store::DIFF_BYTES_MAX / value_bytes + 2;
    for i in 0..count {
        put_big(&s, &format!("d/k{i:03}"), value_bytes);
    }
    let resp = client()
        .get(s.url(&format!("/v1/diff?prefix=d/&from=0&to={count}")))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 413);
    let body: Value = resp.json().unwrap();
    assert_eq!(body["error"]["code"], "too_large");
    // A narrower prefix answers.
    let resp = client()
        .get(s.url(&format!("/v1/diff?prefix=d/k00&from=0&to={count}")))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    // A rollback over the same prefix is not an answer: its own limits apply, not the diff's.
    let resp = client()
        .post(s.url("/v1/rollback"))
        .json(&serde_json::json!({"prefix": "d/", "revision": 0, "reason": "undo"}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200, "{:?}", resp.text());
}

#[test]
fn commit_streams_are_produced_as_they_are_read() {
    const COMMITS: usize = 60;
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"), "", &[]);
    for i in 0..COMMITS {
        put_big(&s, &format!("big/k{}", i % 5), 512 << 10);
    }
    let base = rss_anon_bytes(s.pid());
    let addr = s.base.trim_start_matches("http://").to_owned();
    // Three exports of 30 MB each that nobody reads.
    let readers: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut t = TcpStream::connect(&addr).unwrap();
            t.write_all(
                b"GET /v1/commits HTTP/1.1\r\nHost: t\r\nAccept: application/x-ndjson\r\n\r\n",
            )
            .unwrap();
            t
        })
        .collect();
    let mut peak = base;
    for _ in 0..30 {
        std::thread::sleep(Duration::from_millis(100));
        peak = peak.max(rss_anon_bytes(s.pid()));
    }
    let grown = peak.saturating_sub(base);
    eprintln!("RssAnon {base} -> {peak} (+{grown})");
    assert!(
        grown < 40 << 20,
        "three unread exports grew the server by {grown} bytes"
    );
    drop(readers);
    // And one that reads gets every commit.
    let text = client()
        .get(s.url("/v1/commits"))
        .header("Accept", "application/x-ndjson")
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert_eq!(text.lines().count(), COMMITS);
}
