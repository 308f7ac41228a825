//! Values that are not one valid JSON document never enter the log, by any write path, and a
//! store that already holds some (written by an older server, whose check let invalid UTF-8
//! and duplicate member names through) still serves every read: the bad value alone is `null`
//! with a `value_error`, never a 500 for a whole page, list or stream.
//!
//! How: against the real binary, every hostile value is sent by `PUT` and inside a txn and must
//! be refused 400 with nothing committed; then a store is built in-process with the older check
//! (`llmcm::fault::set_legacy_value_check`), served, and read through get, list, history, diff,
//! commits (JSON, NDJSON, chain export), verify and watch.

mod server;

use llmcm::storage_format::commit::Op;
use llmcm::store::LogConfig;
use llmcm::store::{MaintenanceConfig, Store, WriteRequest};
use reqwest::StatusCode;
use serde_json::{Value, json};
use server::{Server, client, read_events};

/// Values every write path must refuse, with why.
fn hostile_values() -> Vec<(&'static str, Vec<u8>)> {
    let nested = |n: usize| {
        let mut v = "[".repeat(n).into_bytes();
        v.extend(std::iter::repeat_n(b']', n));
        v
    };
    vec![
        ("invalid UTF-8 in a string", b"\"\xff\xfe\"".to_vec()),
        ("invalid UTF-8 in a name", b"{\"\xff\":1}".to_vec()),
        ("an encoded surrogate", b"\"\xed\xa0\x80\"".to_vec()),
        ("an overlong encoding", b"\"\xc0\xaf\"".to_vec()),
        ("an unpaired surrogate escape", b"\"\\ud800\"".to_vec()),
        ("a duplicate member name", b"{\"a\":1,\"a\":2}".to_vec()),
        ("an escaped duplicate", b"{\"t\":1,\"\\u0074\":2}".to_vec()),
        (
            "too deep",
            nested(llmcm::storage_format::json::VALUE_DEPTH_MAX + 1),
        ),
        ("not JSON", b"{\"a\":".to_vec()),
    ]
}

fn head(s: &Server) -> u64 {
    let status: Value = client()
        .get(s.url("/v1/admin/status"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    status["head"]["revision"].as_u64().unwrap()
}

fn txn_with(value: &[u8]) -> Vec<u8> {
    let mut body =
        br#"{"ops":[{"op":"put","key":"app/ok","value":1},{"op":"put","key":"app/x","value":"#
            .to_vec();
    body.extend_from_slice(value);
    body.extend_from_slice(b"}]}");
    body
}

#[test]
fn every_write_path_refuses_what_is_not_one_valid_json_document() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"), "", &[]);
    let c = client();
    for (what, value) in hostile_values() {
        let resp = c
            .put(s.url("/v1/kv/app/x"))
            .body(value.clone())
            .send()
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "PUT of {what}");
        let body: Value = resp.json().unwrap();
        assert_eq!(
            body["error"]["code"], "invalid_json",
            "PUT of {what}: {body}"
        );
        let resp = c
            .post(s.url("/v1/txn"))
            .body(txn_with(&value))
            .send()
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "txn of {what}");
        let body: Value = resp.json().unwrap();
        assert_eq!(
            body["error"]["code"], "invalid_json",
            "txn of {what}: {body}"
        );
    }
    assert_eq!(head(&s), 0, "nothing was committed");

    // The deepest value a PUT takes, a txn takes too (the envelope's levels do not count).
    let depth = llmcm::storage_format::json::VALUE_DEPTH_MAX;
    let deepest = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let resp = c
        .put(s.url("/v1/kv/app/deep"))
        .body(deepest.clone())
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = c
        .post(s.url("/v1/txn"))
        .body(txn_with(deepest.as_bytes()))
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "{}", resp.text().unwrap());
    // (A JSON parser with serde's default depth limit could not read the answer around it.)
    let got = c.get(s.url("/v1/kv/app/x")).send().unwrap().text().unwrap();
    assert!(
        got.starts_with(&format!("{{\"key\":\"app/x\",\"value\":{deepest},")),
        "{got}"
    );

    // `null` is a JSON value: a txn puts it as PUT does.
    let resp = c
        .post(s.url("/v1/txn"))
        .json(&json!({"ops": [{"op": "put", "key": "app/null", "value": null}]}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let got: Value = c
        .get(s.url("/v1/kv/app/null"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(got["value"], Value::Null);
    assert!(got.get("value_error").is_none(), "{got}");
    // A put without a value is still refused.
    let resp = c
        .post(s.url("/v1/txn"))
        .json(&json!({"ops": [{"op": "put", "key": "app/none"}]}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    // A txn deleting an absent key is 404 naming it, as DELETE is, and commits nothing.
    let before = head(&s);
    let resp = c
        .post(s.url("/v1/txn"))
        .json(&json!({"ops": [
            {"op": "put", "key": "app/y", "value": 1},
            {"op": "delete", "key": "app/absent"},
        ]}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let body: Value = resp.json().unwrap();
    assert_eq!(body["error"]["key"], "app/absent", "{body}");
    assert_eq!(head(&s), before);
    let resp = c.get(s.url("/v1/kv/app/y")).send().unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

/// A store holding values the older check let through: revision 1 good, 2 invalid UTF-8 in a
/// string, 3 in a member name (beside a good key), 4 an encoded surrogate, 5 a duplicate name.
fn legacy_store(dir: &std::path::Path) {
    let store =
        Store::open_configured(dir, LogConfig::default(), MaintenanceConfig::manual()).unwrap();
    llmcm::fault::set_legacy_value_check(true);
    let puts: [&[(&str, &[u8])]; 5] = [
        &[("app/good", b"{\"a\":1}")],
        &[("app/bad", b"\"\xff\xfe\"")],
        &[("app/name", b"{\"\xff\":1}"), ("app/good2", b"[2]")],
        &[("app/surrogate", b"\"\xed\xa0\x80\"")],
        &[("app/dup", b"{\"a\":1,\"a\":2}")],
    ];
    for ops in puts {
        store
            .write(WriteRequest {
                actor: "old-server".into(),
                reason: "before the check".into(),
                ops: ops
                    .iter()
                    .map(|(key, value)| Op::Put {
                        key: (*key).into(),
                        value: value.to_vec(),
                    })
                    .collect(),
                conditions: Vec::new(),
                must_exist: Vec::new(),
            })
            .unwrap();
    }
    llmcm::fault::set_legacy_value_check(false);
    store.close().unwrap();
}

#[test]
fn a_store_holding_invalid_values_serves_every_read() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    legacy_store(&data);
    let s = Server::start(&data, "", &[]);
    let c = client();
    let get = |path: &str| {
        let resp = c.get(s.url(path)).send().unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        resp.json::<Value>().unwrap()
    };

    for (key, code) in [
        ("app/bad", "invalid_utf8"),
        ("app/name", "invalid_utf8"),
        ("app/surrogate", "invalid_utf8"),
    ] {
        let v = get(&format!("/v1/kv/{key}"));
        assert_eq!(v["value"], Value::Null, "{v}");
        assert_eq!(v["value_error"], code, "{v}");
        assert_eq!(v["key"], key);
        let h = get(&format!("/v1/history/{key}"));
        assert_eq!(h["items"][0]["value"], Value::Null, "{h}");
        assert_eq!(h["items"][0]["value_error"], code, "{h}");
    }
    // A stored duplicate name is valid JSON: served as stored.
    assert_eq!(get("/v1/kv/app/dup")["value"], json!({"a": 2}));
    let good = get("/v1/kv/app/good");
    assert_eq!(good["value"], json!({"a": 1}));
    assert!(good.get("value_error").is_none());

    let list = get("/v1/kv?prefix=app/");
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 6, "{list}");
    let by_key = |k: &str| items.iter().find(|i| i["key"] == k).unwrap().clone();
    assert_eq!(by_key("app/good2")["value"], json!([2]));
    assert_eq!(by_key("app/bad")["value_error"], "invalid_utf8");

    let diff = get("/v1/diff?prefix=app/&from=0&to=5");
    let changes = diff["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 6, "{diff}");
    let bad = changes.iter().find(|c| c["key"] == "app/bad").unwrap();
    assert_eq!(bad["new"], Value::Null);
    assert_eq!(bad["new_error"], "invalid_utf8");

    let commits = get("/v1/commits?limit=100");
    let items = commits["items"].as_array().unwrap();
    assert_eq!(items.len(), 5, "{commits}");
    assert_eq!(items[2]["ops"][0]["value_error"], "invalid_utf8");
    assert_eq!(items[2]["ops"][1]["value"], json!([2]));
    assert!(items[2]["ops"][1].get("value_error").is_none());

    let chain = c
        .get(s.url("/v1/commits?format=chain&limit=100"))
        .send()
        .unwrap();
    assert_eq!(chain.status(), StatusCode::OK);
    let stream = c
        .get(s.url("/v1/commits"))
        .header("Accept", "application/x-ndjson")
        .send()
        .unwrap()
        .text()
        .unwrap();
    let lines: Vec<Value> = stream
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5, "{stream}");
    assert_eq!(lines[3]["ops"][0]["value_error"], "invalid_utf8");

    assert_eq!(get("/v1/verify")["ok"], true);

    let events = read_events(&s.url("/v1/watch?prefix=app/&from_revision=0"), None, 5);
    let revisions: Vec<_> = events.iter().map(|e| e.id).collect();
    assert_eq!(revisions, [1, 2, 3, 4, 5].map(Some), "{events:?}");
    assert_eq!(events[1].data["ops"][0]["value"], Value::Null);
    assert_eq!(events[1].data["ops"][0]["value_error"], "invalid_utf8");
}
