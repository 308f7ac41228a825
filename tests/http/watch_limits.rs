//! Watches are capped per token and in all, so one token cannot lock others out; and they
//! follow the tokens as configured now: after a SIGHUP, the watch of a revoked token ends with
//! an `error` event, and a token whose prefixes shrank sees only the new ones from then on.
//!
//! How: the real binary with tokens, watches opened over HTTP, the configuration rewritten
//! and reloaded with SIGHUP.

use crate::server;

use std::time::{Duration, Instant};

use llmcm::config::Role;
use serde_json::Value;
use server::{Server, SseReader, client, token};

fn config(entries: &[&str], watchers_max: usize) -> String {
    format!(
        "[http]\nwatchers_max = {watchers_max}\n\n{}",
        entries.join("\n")
    )
}

fn watch(s: &Server, token: &str, prefix: &str) -> reqwest::blocking::Response {
    client()
        .get(s.url(&format!("/v1/watch?prefix={prefix}")))
        .bearer_auth(token)
        .send()
        .unwrap()
}

fn put(s: &Server, token: &str, key: &str) -> u64 {
    let resp = client()
        .put(s.url(&format!("/v1/kv/{key}")))
        .bearer_auth(token)
        .body("1")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200, "{:?}", resp.text());
    resp.json::<Value>().unwrap()["revision"].as_u64().unwrap()
}

/// The next event that is not `progress` (a watch at the head starts with one).
fn next_not_progress(reader: &mut SseReader) -> server::SseEvent {
    loop {
        let event = reader.next_event().expect("the stream goes on");
        if event.event != "progress" {
            return event;
        }
    }
}

#[test]
fn watches_are_capped_per_token_and_in_all() {
    let dir = tempfile::tempdir().unwrap();
    let (reader, reader_entry) = token("greedy", Role::Reader, &[]);
    let (admin, admin_entry) = token("admin", Role::Admin, &[]);
    let reader_entry = format!("{reader_entry}watches_max = 2\n");
    let s = Server::start(
        &dir.path().join("data"),
        &config(&[&reader_entry, &admin_entry], 4),
        &[],
    );
    let first = watch(&s, &reader, "");
    let second = watch(&s, &reader, "");
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    let third = watch(&s, &reader, "");
    assert_eq!(third.status(), 503);
    let body: Value = third.json().unwrap();
    assert_eq!(body["error"]["code"], "too_many_watchers");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("watches_max"),
        "{body}"
    );
    // Another token still gets its watches, up to the server's cap.
    let a1 = watch(&s, &admin, "");
    let a2 = watch(&s, &admin, "");
    assert_eq!((a1.status().as_u16(), a2.status().as_u16()), (200, 200));
    let over = watch(&s, &admin, "");
    assert_eq!(over.status(), 503);
    let body: Value = over.json().unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("http.watchers_max"),
        "{body}"
    );
    // Closing a watch gives its place back.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let again = watch(&s, &reader, "");
        if again.status() == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the closed watch's place never came back"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_reload_ends_revoked_watches_and_narrows_changed_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (writer, writer_entry) = token("writer", Role::Writer, &[]);
    let (revoked, revoked_entry) = token("leaver", Role::Reader, &[]);
    let (narrowed, narrowed_entry) = token("team", Role::Reader, &["a/", "b/"]);
    let s = Server::start(
        &dir.path().join("data"),
        &config(&[&writer_entry, &revoked_entry, &narrowed_entry], 100),
        &[],
    );
    let mut gone = SseReader::open(client().get(s.url("/v1/watch")).bearer_auth(&revoked));
    let mut team = SseReader::open(client().get(s.url("/v1/watch")).bearer_auth(&narrowed));
    let r1 = put(&s, &writer, "b/x");
    let first = next_not_progress(&mut gone);
    assert_eq!((first.event.as_str(), first.id), ("commit", Some(r1)));
    let seen = next_not_progress(&mut team);
    assert_eq!((seen.event.as_str(), seen.id), ("commit", Some(r1)));

    // The leaver's token is removed and the team loses b/.
    let narrowed_now = narrowed_entry.replace("\"b/\"", "\"a/\"");
    std::fs::write(
        s.config_path(),
        config(&[&writer_entry, &narrowed_now], 100),
    )
    .unwrap();
    s.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while client()
        .get(s.url("/v1/kv/a/none"))
        .bearer_auth(&revoked)
        .send()
        .unwrap()
        .status()
        != 401
    {
        assert!(Instant::now() < deadline, "the reload did not take effect");
        std::thread::sleep(Duration::from_millis(50));
    }
    let r2 = put(&s, &writer, "b/y");
    let r3 = put(&s, &writer, "a/z");

    let end = gone
        .next_event()
        .expect("the revoked watch says why it ends");
    assert_eq!(end.event, "error", "{end:?}");
    assert_eq!(end.data["error"]["code"], "unauthorized");
    assert!(gone.next_event().is_none(), "then it ends");

    let next = loop {
        let event = team.next_event().unwrap();
        if event.event == "commit" {
            break event;
        }
    };
    assert_eq!(next.id, Some(r3), "b/ ({r2}) is no longer visible");
    assert_eq!(next.data["ops"][0]["key"], "a/z");
}
