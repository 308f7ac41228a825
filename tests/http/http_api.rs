//! The HTTP API contract of DESIGN.md §3, end to end against the real binary on a loopback port:
//! shapes and status codes of every v1 endpoint, conditions, schemas, limits, errors for unknown
//! routes, methods and malformed input, the NDJSON and chain exports (re-verified by
//! `tools/verify_chain.py`), and the auth matrix — every role × every endpoint × a key inside /
//! outside the token's prefixes.

use crate::server;

use llmcm::config::Role;
use llmcm::token::new_token;
use reqwest::StatusCode;
use reqwest::blocking::{Client, RequestBuilder};
use serde_json::{Value, json};
use server::{Server, client};

/// Limits low enough to hit in a test.
const LIMITS: &str = "[storage]\nvalue_bytes_max = 4096\ncommit_ops_max = 10\n";

fn send(req: RequestBuilder) -> (StatusCode, Value) {
    let resp = req.send().unwrap();
    let status = resp.status();
    let text = resp.text().unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

fn put(c: &Client, s: &Server, key: &str, value: &str) -> (StatusCode, Value) {
    send(
        c.put(s.url(&format!("/v1/kv/{key}")))
            .body(value.to_owned()),
    )
}

fn assert_error(status: StatusCode, body: &Value, want: StatusCode, code: &str) {
    assert_eq!(status, want, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
}

#[test]
fn every_endpoint_walks_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"), LIMITS, &[]);
    let c = client();

    // Put, get, versions, timestamps; values come back byte for byte.
    let (st, w1) = put(
        &c,
        &s,
        "prod/chatbot/model",
        r#"{"model": "m1",  "t": 0.5}"#,
    );
    assert_eq!(st, StatusCode::OK, "{w1}");
    assert_eq!(w1["revision"], 1);
    let t1 = w1["timestamp"].as_str().unwrap().to_owned();
    assert!(t1.ends_with('Z') && t1.len() == 27, "{t1}");
    let raw = c
        .get(s.url("/v1/kv/prod/chatbot/model"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        raw.contains(r#""value":{"model": "m1",  "t": 0.5}"#),
        "{raw}"
    );
    let (_, w2) = put(&c, &s, "prod/chatbot/model", r#"{"model":"m2"}"#);
    let (st, v) = send(c.get(s.url("/v1/kv/prod/chatbot/model")));
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["value"], json!({"model": "m2"}));
    assert_eq!(
        (
            v["revision"].clone(),
            v["create_revision"].clone(),
            v["version"].clone()
        ),
        (json!(2), json!(1), json!(2))
    );
    // As of a revision and of a time.
    let (_, v) = send(c.get(s.url("/v1/kv/prod/chatbot/model?revision=1")));
    assert_eq!(v["value"]["model"], "m1");
    let (_, v) = send(c.get(s.url(&format!("/v1/kv/prod/chatbot/model?at={t1}"))));
    assert_eq!(v["revision"], 1);
    let offset = t1.replace('Z', "+00:00").replace('+', "%2B");
    let (st, v) = send(c.get(s.url(&format!("/v1/kv/prod/chatbot/model?at={offset}"))));
    assert_eq!(
        (st, v["revision"].clone()),
        (StatusCode::OK, json!(1)),
        "{v}"
    );
    let (st, _) = send(c.get(s.url("/v1/kv/prod/chatbot/model?at=2001-01-01T00:00:00Z")));
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, b) = send(c.get(s.url("/v1/kv/prod/chatbot/model?revision=99")));
    assert_error(st, &b, StatusCode::BAD_REQUEST, "future_point");
    let (st, b) = send(c.get(s.url("/v1/kv/prod/chatbot/model?at=2999-01-01T00:00:00Z")));
    assert_error(st, &b, StatusCode::BAD_REQUEST, "future_point");
    let (st, b) =
        send(c.get(s.url("/v1/kv/prod/chatbot/model?revision=1&at=2001-01-01T00:00:00Z")));
    assert_error(st, &b, StatusCode::BAD_REQUEST, "invalid_query");
    let (st, b) = send(c.get(s.url("/v1/kv/prod/chatbot/model?at=yesterday")));
    assert_error(st, &b, StatusCode::BAD_REQUEST, "invalid_time");

    // Compare-and-set.
    let (st, b) = send(
        c.put(s.url("/v1/kv/prod/chatbot/model?if_revision=1"))
            .body("3"),
    );
    assert_error(st, &b, StatusCode::CONFLICT, "conflict");
    assert_eq!(
        b["error"]["conflicts"],
        json!([{"key": "prod/chatbot/model", "expected": 1, "actual": 2}])
    );
    let (st, _) = send(c.put(s.url("/v1/kv/prod/new?if_revision=0")).body("1"));
    assert_eq!(st, StatusCode::OK);
    let (st, b) = send(c.put(s.url("/v1/kv/prod/new?if_revision=0")).body("1"));
    assert_error(st, &b, StatusCode::CONFLICT, "conflict");

    // Delete: 404 when absent.
    let (st, _) = send(c.delete(s.url("/v1/kv/prod/new?reason=cleanup")));
    assert_eq!(st, StatusCode::OK);
    let (st, b) = send(c.delete(s.url("/v1/kv/prod/new")));
    assert_error(st, &b, StatusCode::NOT_FOUND, "not_found");
    let (st, _) = send(c.get(s.url("/v1/kv/prod/new")));
    assert_eq!(st, StatusCode::NOT_FOUND);

    // Txn: atomic, with conditions; a failed condition writes nothing.
    let txn = json!({"ops": [{"op": "put", "key": "prod/a", "value": [1, 2]},
                             {"op": "put", "key": "prod/b", "value": {"x": null}}],
                     "conditions": [{"key": "prod/a", "revision": 0}], "reason": "pair"});
    let (st, w) = send(c.post(s.url("/v1/txn")).json(&txn));
    assert_eq!(st, StatusCode::OK, "{w}");
    let (st, b) = send(c.post(s.url("/v1/txn")).json(&txn));
    assert_error(st, &b, StatusCode::CONFLICT, "conflict");
    let too_many: Vec<Value> = (0..11)
        .map(|i| json!({"op": "delete", "key": format!("k/{i}")}))
        .collect();
    let (st, b) = send(c.post(s.url("/v1/txn")).json(&json!({"ops": too_many})));
    assert_error(st, &b, StatusCode::PAYLOAD_TOO_LARGE, "too_large");
    let (st, b) = send(
        c.post(s.url("/v1/txn"))
            .json(&json!({"ops": [{"op": "put", "key": "a//b", "value": 1}]})),
    );
    assert_error(st, &b, StatusCode::BAD_REQUEST, "invalid_key");
    let (st, b) = send(c.post(s.url("/v1/txn")).body("{not json"));
    assert_error(st, &b, StatusCode::BAD_REQUEST, "invalid_json");
    let (st, b) = send(c.post(s.url("/v1/txn")).json(
        &json!({"ops": [{"op": "put", "key": "a", "value": 1}, {"op": "delete", "key": "a"}]}),
    ));
    assert_error(st, &b, StatusCode::BAD_REQUEST, "duplicate_key");

    // Schemas: violations name key and JSON path; an invalid schema is refused when put.
    let schema = json!({"type": "object", "properties": {"temperature": {"type": "number", "maximum": 2}}, "required": ["model"]});
    let (st, _) = put(&c, &s, "_schemas/prod/chatbot", &schema.to_string());
    assert_eq!(st, StatusCode::OK);
    let (st, b) = put(&c, &s, "prod/chatbot/model", r#"{"temperature": 5}"#);
    assert_error(st, &b, StatusCode::UNPROCESSABLE_ENTITY, "schema_violation");
    let violations = b["error"]["violations"].as_array().unwrap();
    assert_eq!(violations.len(), 2, "{b}");
    assert!(
        violations
            .iter()
            .any(|v| v["path"] == "/temperature" && v["key"] == "prod/chatbot/model")
    );
    let (st, b) = put(&c, &s, "_schemas/prod", r#"{"type": "nonsense"}"#);
    assert_error(st, &b, StatusCode::UNPROCESSABLE_ENTITY, "invalid_schema");
    let (st, _) = put(
        &c,
        &s,
        "prod/chatbot/model",
        r#"{"model": "m3", "temperature": 1}"#,
    );
    assert_eq!(st, StatusCode::OK);
    let (st, b) = send(c.post(s.url("/v1/txn")).json(&json!({"ops": [
        {"op": "put", "key": "prod/chatbot/x", "value": {"temperature": 9}},
        {"op": "put", "key": "prod/chatbot/y", "value": {"model": 1, "temperature": "hot"}}]})));
    assert_error(st, &b, StatusCode::UNPROCESSABLE_ENTITY, "schema_violation");
    assert!(
        b["error"]["violations"].as_array().unwrap().len() >= 3,
        "{b}"
    );

    // Limits and malformed input.
    let (st, b) = put(&c, &s, "prod/big", &format!("\"{}\"", "x".repeat(5000)));
    assert_error(st, &b, StatusCode::PAYLOAD_TOO_LARGE, "too_large");
    let (st, b) = put(&c, &s, "prod/bad", "{oops");
    assert_error(st, &b, StatusCode::BAD_REQUEST, "invalid_json");
    let (st, b) = put(&c, &s, &"k".repeat(600), "1");
    assert_error(st, &b, StatusCode::BAD_REQUEST, "invalid_key");
    let (st, b) = send(c.get(s.url("/v1/kv/a/../b")));
    assert!(
        st == StatusCode::BAD_REQUEST || st == StatusCode::NOT_FOUND,
        "{st} {b}"
    );
    let (st, b) = send(c.get(s.url("/v1/kv?limit=100000")));
    assert_error(st, &b, StatusCode::BAD_REQUEST, "invalid_query");
    let (st, b) = send(c.get(s.url("/v1/kv?limit=-1")));
    assert_error(st, &b, StatusCode::BAD_REQUEST, "invalid_query");
    let (st, b) = send(c.get(s.url("/v1/nothing")));
    assert_error(st, &b, StatusCode::NOT_FOUND, "not_found");
    let (st, b) = send(c.patch(s.url("/v1/kv/a")));
    assert_error(st, &b, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    let (st, b) = send(c.delete(s.url("/v1/txn")));
    assert_error(st, &b, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    let (st, b) = send(
        c.get(s.url("/v1/kv/x"))
            .header("X-Big", "v".repeat(512 << 10)),
    );
    assert!(st.is_client_error(), "{st} {b}");

    // List with pagination.
    for i in 0..5 {
        put(&c, &s, &format!("list/k{i}"), &i.to_string());
    }
    let (_, page) = send(c.get(s.url("/v1/kv?prefix=list/&limit=2")));
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    assert_eq!(page["next"], "list/k1");
    let rev = page["revision"].clone();
    let (_, page2) = send(c.get(s.url(&format!(
        "/v1/kv?prefix=list/&limit=10&after=list/k1&revision={rev}"
    ))));
    let keys: Vec<&str> = page2["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["list/k2", "list/k3", "list/k4"]);
    assert_eq!(page2["next"], Value::Null);

    // History, commits, diff.
    let (st, h) = send(c.get(s.url("/v1/history/prod/chatbot/model")));
    assert_eq!(st, StatusCode::OK);
    let items = h["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    assert_eq!(items[0]["op"], "put");
    assert_eq!(items[0]["actor"], "anonymous");
    let (_, h) = send(c.get(s.url("/v1/history/prod/new")));
    let ops: Vec<&str> = h["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["op"].as_str().unwrap())
        .collect();
    assert_eq!(ops, ["put", "delete"]);
    let (_, cm) = send(c.get(s.url("/v1/commits?prefix=prod/a&limit=5")));
    assert_eq!(cm["items"].as_array().unwrap().len(), 1);
    assert_eq!(cm["items"][0]["ops"].as_array().unwrap().len(), 1, "{cm}");
    assert_eq!(cm["items"][0]["reason"], "pair");
    let ndjson = c
        .get(s.url("/v1/commits"))
        .header("Accept", "application/x-ndjson")
        .send()
        .unwrap()
        .text()
        .unwrap();
    let head: u64 = send(c.get(s.url("/v1/admin/status"))).1["head"]["revision"]
        .as_u64()
        .unwrap();
    assert_eq!(ndjson.lines().count() as u64, head);
    let (_, d) = send(c.get(s.url(&format!("/v1/diff?prefix=prod/&from=1&to={head}"))));
    let changes = d["changes"].as_array().unwrap();
    assert!(
        changes
            .iter()
            .any(|ch| ch["key"] == "prod/a" && ch["change"] == "added")
    );
    assert!(changes.iter().any(|ch| ch["key"] == "prod/chatbot/model"
        && ch["change"] == "changed"
        && ch["old"]["model"] == "m1"));
    let (st, b) = send(c.get(s.url("/v1/diff?from=1")));
    assert_error(st, &b, StatusCode::BAD_REQUEST, "invalid_query");

    // The chain export verifies with the standalone script; verify checks a saved digest.
    let chain = c
        .get(s.url("/v1/commits?format=chain"))
        .header("Accept", "application/x-ndjson")
        .send()
        .unwrap()
        .text()
        .unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tools/verify_chain.py");
    let mut py = std::process::Command::new("python3")
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(py.stdin.as_mut().unwrap(), chain.as_bytes()).unwrap();
    drop(py.stdin.take());
    assert!(py.wait_with_output().unwrap().status.success());
    let (_, v) = send(c.get(s.url("/v1/verify")));
    assert_eq!(v["ok"], true, "{v}");
    let digest = format!("{}:{}", v["to"], v["head_hash"].as_str().unwrap());
    let (_, v2) = send(c.get(s.url(&format!("/v1/verify?expected={digest}"))));
    assert_eq!(
        (v2["ok"].clone(), v2["expected_matched"].clone()),
        (json!(true), json!(true))
    );
    let wrong = format!("{}:{}", v["to"], "0".repeat(64));
    let (_, v3) = send(c.get(s.url(&format!("/v1/verify?expected={wrong}"))));
    assert_eq!(v3["ok"], false);
    let (st, b) = send(c.get(s.url("/v1/verify?expected=7")));
    assert_error(st, &b, StatusCode::BAD_REQUEST, "invalid_query");

    // Rollback: one new commit; nothing to change → changed false and no commit.
    let (st, r) = send(c.post(s.url("/v1/rollback")).json(
        &json!({"prefix": "prod/chatbot/", "revision": w2["revision"], "reason": "bad model"}),
    ));
    assert_eq!(
        (st, r["changed"].clone()),
        (StatusCode::OK, json!(true)),
        "{r}"
    );
    let (_, v) = send(c.get(s.url("/v1/kv/prod/chatbot/model")));
    assert_eq!(v["value"], json!({"model": "m2"}));
    let (st, _) = send(c.get(s.url("/v1/kv/_schemas/prod/chatbot")));
    assert_eq!(
        st,
        StatusCode::OK,
        "a rollback of prod/chatbot/ leaves _schemas/ alone"
    );
    let (_, r2) = send(
        c.post(s.url("/v1/rollback"))
            .json(&json!({"prefix": "prod/chatbot/", "revision": w2["revision"]})),
    );
    assert_eq!(r2, json!({"changed": false, "revision": r["revision"]}));
    let (st, b) = send(
        c.post(s.url("/v1/rollback"))
            .json(&json!({"prefix": "prod/"})),
    );
    assert_error(st, &b, StatusCode::BAD_REQUEST, "invalid_argument");

    // Admin status, health, OpenAPI describing every route.
    let (_, status) = send(c.get(s.url("/v1/admin/status")));
    assert_eq!(status["read_only"]["on"], false);
    assert_eq!(status["history_id"].as_str().unwrap().len(), 32);
    for path in ["/health/live", "/health/ready", "/health"] {
        assert_eq!(send(c.get(s.url(path))).0, StatusCode::OK, "{path}");
    }
    let (_, doc) = send(c.get(s.url("/openapi.json")));
    for (path, method) in [
        ("/v1/kv/{key}", "get"),
        ("/v1/kv/{key}", "put"),
        ("/v1/kv/{key}", "delete"),
        ("/v1/kv", "get"),
        ("/v1/txn", "post"),
        ("/v1/rollback", "post"),
        ("/v1/history/{key}", "get"),
        ("/v1/commits", "get"),
        ("/v1/diff", "get"),
        ("/v1/verify", "get"),
        ("/v1/admin/status", "get"),
        ("/health/live", "get"),
        ("/health/ready", "get"),
        ("/health", "get"),
    ] {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} is not described"
        );
    }

    // Everything acknowledged survives a clean restart.
    assert!(s.stop().success());
    let s = Server::start(&dir.path().join("data"), LIMITS, &[]);
    let (_, v) = send(c.get(s.url("/v1/kv/prod/chatbot/model")));
    assert_eq!(v["value"], json!({"model": "m2"}));
    let (_, again) = send(c.get(s.url("/v1/admin/status")));
    assert_eq!(again["head"], status["head"]);
}

/// An endpoint of the matrix: how to call it on a key inside or outside the token's prefixes.
struct Endpoint {
    name: &'static str,
    action: &'static str,
    /// Whether a key outside the prefixes is refused (403) rather than filtered out.
    scoped: bool,
    call: fn(&Client, &Server, &str) -> RequestBuilder,
}

const ENDPOINTS: &[Endpoint] = &[
    Endpoint {
        name: "get",
        action: "read",
        scoped: true,
        call: |c, s, p| c.get(s.url(&format!("/v1/kv/{p}x"))),
    },
    Endpoint {
        name: "list",
        action: "read",
        scoped: false,
        call: |c, s, p| c.get(s.url(&format!("/v1/kv?prefix={p}"))),
    },
    Endpoint {
        name: "put",
        action: "write",
        scoped: true,
        call: |c, s, p| c.put(s.url(&format!("/v1/kv/{p}y"))).body("1"),
    },
    Endpoint {
        name: "delete",
        action: "write",
        scoped: true,
        call: |c, s, p| c.delete(s.url(&format!("/v1/kv/{p}absent"))),
    },
    Endpoint {
        name: "txn",
        action: "write",
        scoped: true,
        call: |c, s, p| {
            c.post(s.url("/v1/txn"))
                .json(&json!({"ops": [{"op": "put", "key": format!("{p}t"), "value": 1}]}))
        },
    },
    Endpoint {
        name: "rollback",
        action: "write",
        scoped: true,
        call: |c, s, p| {
            c.post(s.url("/v1/rollback"))
                .json(&json!({"prefix": p, "revision": 2}))
        },
    },
    Endpoint {
        name: "history",
        action: "audit",
        scoped: true,
        call: |c, s, p| c.get(s.url(&format!("/v1/history/{p}x"))),
    },
    Endpoint {
        name: "commits",
        action: "audit",
        scoped: false,
        call: |c, s, p| c.get(s.url(&format!("/v1/commits?prefix={p}"))),
    },
    Endpoint {
        name: "diff",
        action: "audit",
        scoped: false,
        call: |c, s, p| c.get(s.url(&format!("/v1/diff?prefix={p}&from=1&to=2"))),
    },
    Endpoint {
        name: "verify",
        action: "audit",
        scoped: false,
        call: |c, s, _| c.get(s.url("/v1/verify")),
    },
    Endpoint {
        name: "status",
        action: "admin",
        scoped: false,
        call: |c, s, _| c.get(s.url("/v1/admin/status")),
    },
];

fn allows(role: Role, action: &str) -> bool {
    matches!(
        (role, action),
        (_, "read")
            | (Role::Writer | Role::Admin, "write")
            | (Role::Auditor | Role::Operator | Role::Admin, "audit")
            | (Role::Operator | Role::Admin, "admin")
    )
}

#[test]
fn auth_matrix_roles_endpoints_prefixes() {
    let roles = [
        Role::Reader,
        Role::Writer,
        Role::Auditor,
        Role::Operator,
        Role::Admin,
    ];
    let mut config = String::new();
    let mut tokens = Vec::new();
    for role in roles {
        let (token, entry) = new_token(
            &format!("{role:?}-in").to_lowercase(),
            role,
            &["in/".into()],
        )
        .unwrap();
        config.push_str(&entry);
        tokens.push((role, token));
    }
    let (root, entry) = new_token("root", Role::Admin, &[]).unwrap();
    config.push_str(&entry);
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"), &config, &[]);
    let c = client();
    let bearer = |t: &str| format!("Bearer {t}");
    for key in ["in/x", "out/x"] {
        let (st, b) = send(
            c.put(s.url(&format!("/v1/kv/{key}")))
                .header("Authorization", bearer(&root))
                .body("1"),
        );
        assert_eq!(st, StatusCode::OK, "{b}");
    }
    // Commit 3 touches both prefixes.
    send(c.post(s.url("/v1/txn")).header("Authorization", bearer(&root)).json(&json!({"ops": [
        {"op": "put", "key": "in/both", "value": 1}, {"op": "put", "key": "out/both", "value": 1}]})));

    // No token, a wrong token, a malformed header: 401. Health and OpenAPI need none.
    for header in [
        None,
        Some("Bearer llmcm_00".to_string()),
        Some(root.clone()),
    ] {
        let mut req = c.get(s.url("/v1/kv/in/x"));
        if let Some(h) = &header {
            req = req.header("Authorization", h);
        }
        let (st, b) = send(req);
        assert_error(st, &b, StatusCode::UNAUTHORIZED, "unauthorized");
    }
    for path in ["/health/live", "/health/ready", "/health", "/openapi.json"] {
        assert_eq!(send(c.get(s.url(path))).0, StatusCode::OK, "{path}");
    }

    let mut checked = 0;
    for (role, token) in &tokens {
        for ep in ENDPOINTS {
            for (prefix, inside) in [("in/", true), ("out/", false)] {
                let (st, body) =
                    send((ep.call)(&c, &s, prefix).header("Authorization", bearer(token)));
                let role_ok = allows(*role, ep.action);
                let what = format!("{role:?} {} on {prefix}: {st} {body}", ep.name);
                if !role_ok || (ep.scoped && !inside) {
                    assert_error(st, &body, StatusCode::FORBIDDEN, "forbidden");
                } else {
                    assert!(
                        st != StatusCode::FORBIDDEN && st != StatusCode::UNAUTHORIZED,
                        "{what}"
                    );
                    assert!(!st.is_server_error(), "{what}");
                }
                checked += 1;
            }
        }
        // What a prefix-limited token sees: only its keys and ops.
        let (_, list) = send(
            c.get(s.url("/v1/kv"))
                .header("Authorization", bearer(token)),
        );
        for item in list["items"].as_array().unwrap() {
            assert!(
                item["key"].as_str().unwrap().starts_with("in/"),
                "{role:?} saw {item}"
            );
        }
        if allows(*role, "audit") {
            let (_, commits) = send(
                c.get(s.url("/v1/commits"))
                    .header("Authorization", bearer(token)),
            );
            let items = commits["items"].as_array().unwrap();
            assert!(items.iter().all(|cm| {
                cm["ops"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|op| op["key"].as_str().unwrap().starts_with("in/"))
            }));
            assert!(
                items.iter().all(|cm| cm["revision"] != 2),
                "commit 2 touches only out/"
            );
            let (_, d) = send(
                c.get(s.url("/v1/diff?from=0&to=3"))
                    .header("Authorization", bearer(token)),
            );
            assert!(
                d["changes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|ch| ch["key"].as_str().unwrap().starts_with("in/")),
                "{d}"
            );
        }
    }
    assert_eq!(checked, 5 * ENDPOINTS.len() * 2);

    // The actor is the token's name.
    let writer = &tokens[1].1;
    send(
        c.put(s.url("/v1/kv/in/by-writer"))
            .header("Authorization", bearer(writer))
            .body("1"),
    );
    let (_, h) = send(
        c.get(s.url("/v1/history/in/by-writer"))
            .header("Authorization", bearer(&root)),
    );
    assert_eq!(h["items"][0]["actor"], "writer-in");
}

#[test]
fn refuses_to_listen_beyond_loopback_without_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_llmcm"))
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--insecure-no-auth"), "{stderr}");
    assert!(
        !dir.path().join("data").exists(),
        "nothing is created before refusing"
    );
}

/// Writes whose values exceed 64 KiB are checked on a blocking thread instead of the request's
/// task; both paths commit and read back alike, and a large txn is one commit.
#[test]
fn large_and_small_writes_commit_alike() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), "", &[]);
    let c = client();
    let big = format!("{{\"prompt\":\"{}\"}}", "p".repeat(200 << 10));
    let (status, small_put) = put(&c, &s, "app/small", "{\"n\":1}");
    assert_eq!(status, StatusCode::OK, "{small_put}");
    let (status, big_put) = put(&c, &s, "app/big", &big);
    assert_eq!(status, StatusCode::OK, "{big_put}");
    assert_eq!(
        big_put["revision"].as_u64().unwrap(),
        small_put["revision"].as_u64().unwrap() + 1
    );
    let (status, got) = send(c.get(s.url("/v1/kv/app/big")));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["value"]["prompt"].as_str().unwrap().len(), 200 << 10);
    let half = format!("\"{}\"", "t".repeat(40 << 10));
    let txn = format!(
        "{{\"ops\":[{{\"op\":\"put\",\"key\":\"app/t1\",\"value\":{half}}},{{\"op\":\"put\",\"key\":\"app/t2\",\"value\":{half}}}]}}"
    );
    let (status, body) = send(
        c.post(s.url("/v1/txn"))
            .header("content-type", "application/json")
            .body(txn),
    );
    assert_eq!(status, StatusCode::OK, "{body}");
    for key in ["app/t1", "app/t2"] {
        let (status, got) = send(c.get(s.url(&format!("/v1/kv/{key}"))));
        assert_eq!(status, StatusCode::OK);
        assert_eq!(got["revision"], body["revision"], "one commit");
    }
    s.stop();
}
