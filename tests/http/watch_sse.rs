//! Watch over Server-Sent Events, against the real binary: commit events carry exactly the
//! commits touching the prefix (ops narrowed to it) with the revision as id; a quiet prefix gets
//! progress events with the head as id; resuming by `Last-Event-ID` or `from_revision` — also
//! after a server restart — gives every later commit exactly once; a point after the head is 400.

use crate::server;

use serde_json::Value;
use server::{Server, client, read_events};

fn put(s: &Server, key: &str, value: &str) -> u64 {
    let resp = client()
        .put(s.url(&format!("/v1/kv/{key}")))
        .body(value.to_owned())
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json::<Value>().unwrap()["revision"].as_u64().unwrap()
}

#[test]
fn watch_delivers_resumes_and_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = Server::start(&data, "", &[]);
    let mut expected = Vec::new();
    for i in 0..6 {
        expected.push(put(&s, &format!("app/k{i}"), &i.to_string()));
        put(&s, &format!("other/k{i}"), "0");
    }
    // A txn touching both prefixes arrives with only the watched ops.
    let resp = client()
        .post(s.url("/v1/txn"))
        .json(&serde_json::json!({"ops": [{"op": "put", "key": "app/t", "value": 1}, {"op": "put", "key": "other/t", "value": 2}]}))
        .send()
        .unwrap();
    expected.push(resp.json::<Value>().unwrap()["revision"].as_u64().unwrap());

    let all = read_events(
        &s.url("/v1/watch?prefix=app/&from_revision=0"),
        None,
        expected.len(),
    );
    let ids: Vec<u64> = all.iter().map(|e| e.id.unwrap()).collect();
    assert_eq!(ids, expected);
    assert!(all.iter().all(|e| e.event == "commit"));
    let last = all.last().unwrap();
    assert_eq!(
        last.data["ops"].as_array().unwrap().len(),
        1,
        "{:?}",
        last.data
    );
    assert_eq!(last.data["ops"][0]["key"], "app/t");

    // Resume after the third event with Last-Event-ID: the rest, once each.
    let resumed = read_events(
        &s.url("/v1/watch?prefix=app/"),
        Some(expected[2]),
        expected.len() - 3,
    );
    let ids: Vec<u64> = resumed.iter().map(|e| e.id.unwrap()).collect();
    assert_eq!(ids, expected[3..]);

    // A quiet prefix gets progress with the head as id.
    let head = *expected.last().unwrap();
    let progress = read_events(&s.url("/v1/watch?prefix=quiet/"), None, 1);
    assert_eq!(progress[0].event, "progress");
    assert_eq!(progress[0].id, Some(head));
    assert_eq!(progress[0].data["revision"], head);

    // A point after the head is refused.
    let resp = client()
        .get(s.url(&format!("/v1/watch?from_revision={}", head + 10)))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 400);

    // Across a restart: resume from the last id seen, then new commits arrive exactly once.
    assert!(s.stop().success());
    let s = Server::start(&data, "", &[]);
    let mut later = Vec::new();
    for i in 0..3 {
        later.push(put(&s, &format!("app/after{i}"), "1"));
    }
    let resumed = read_events(
        &s.url(&format!("/v1/watch?prefix=app/&from_revision={head}")),
        None,
        3,
    );
    let ids: Vec<u64> = resumed.iter().map(|e| e.id.unwrap()).collect();
    assert_eq!(ids, later);
}

/// Watchers at the head share a cache of the newest commits; one resuming from further back
/// reads the store until it reaches the cache, then the cache: every commit once, in order.
#[test]
fn a_watcher_behind_the_shared_cache_catches_up_through_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"), "", &[]);
    let mut expected: Vec<u64> = (0..30)
        .map(|i| put(&s, &format!("app/k{}", i % 4), "1"))
        .collect();
    // A watcher at the head; the next commit starts the cache there.
    let mut at_head = server::SseReader::open(client().get(s.url("/v1/watch?prefix=app/")));
    expected.push(put(&s, "app/last", "2"));
    let first = loop {
        let e = at_head.next_event().unwrap();
        if e.event == "commit" {
            break e.id.unwrap();
        }
    };
    assert_eq!(first, *expected.last().unwrap());
    let events = read_events(
        &s.url("/v1/watch?prefix=app/&from_revision=0"),
        None,
        expected.len(),
    );
    let ids: Vec<u64> = events.iter().map(|e| e.id.unwrap()).collect();
    assert_eq!(ids, expected);
}
