//! What acts on the whole store needs a token that sees the whole store, probes tell strangers
//! no more than the status, and an operator switch that changes nothing records nothing.
//!
//! How: the real binary with a scoped and an unscoped operator token; every `POST /v1/admin/*`
//! by each; `/health` and `/health/ready` with and without a token while read-only; the
//! read-only switch sent twice.

use crate::server;

use llmcm::config::Role;
use serde_json::{Value, json};
use server::{Server, client, token};

#[test]
fn store_wide_actions_need_an_unscoped_token() {
    let dir = tempfile::tempdir().unwrap();
    let (scoped, scoped_entry) = token("team-ops", Role::Operator, &["team/"]);
    let (scoped_admin, scoped_admin_entry) = token("team-admin", Role::Admin, &["team/"]);
    let (ops, ops_entry) = token("ops", Role::Operator, &[]);
    let repo = dir.path().join("repo");
    let config = format!(
        "[[backup.repositories]]\nname = \"main\"\nurl = {:?}\n\n{scoped_entry}\n{scoped_admin_entry}\n{ops_entry}",
        repo.display().to_string()
    );
    let s = Server::start(&dir.path().join("data"), &config, &[]);
    let c = client();
    let actions: [(&str, Value); 4] = [
        ("/v1/admin/snapshot", json!({})),
        ("/v1/admin/compact", json!({"retain": "30d"})),
        ("/v1/admin/backup", json!({"repo": "main", "kind": "full"})),
        (
            "/v1/admin/read-only",
            json!({"on": true, "reason": "drill"}),
        ),
    ];
    for (path, body) in &actions {
        for who in [&scoped, &scoped_admin] {
            let resp = c
                .post(s.url(path))
                .bearer_auth(who)
                .json(body)
                .send()
                .unwrap();
            assert_eq!(resp.status(), 403, "{path}");
            let err: Value = resp.json().unwrap();
            assert!(
                err["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("every key"),
                "{err}"
            );
        }
    }
    let status: Value = c
        .get(s.url("/v1/admin/status"))
        .bearer_auth(&ops)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(status["head"]["revision"], 0, "nothing was done");
    assert_eq!(status["read_only"]["on"], false);
    // Something to back up, then every action by the unscoped operator.
    let put = c
        .put(s.url("/v1/kv/team/x"))
        .bearer_auth(&scoped_admin)
        .body("1")
        .send()
        .unwrap();
    assert_eq!(put.status(), 200);
    for (path, body) in &actions {
        let resp = c
            .post(s.url(path))
            .bearer_auth(&ops)
            .json(body)
            .send()
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}: {:?}", resp.text());
    }
}

#[test]
fn a_switch_that_changes_nothing_records_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"), "", &[]);
    let c = client();
    let switch = |on: bool| -> Value {
        let resp = c
            .post(s.url("/v1/admin/read-only"))
            .json(&json!({"on": on, "reason": "maintenance"}))
            .send()
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.json().unwrap()
    };
    let off = switch(false);
    assert_eq!(off["changed"], false, "{off}");
    assert_eq!(off["revision"], 0);
    let on = switch(true);
    assert_eq!(
        (on["changed"].clone(), on["revision"].clone()),
        (json!(true), json!(1))
    );
    let again = switch(true);
    assert_eq!(again["changed"], false, "{again}");
    assert_eq!(again["revision"], 1, "the head, unchanged");
    let off = switch(false);
    assert_eq!(off["revision"], 2);
    let commits: Value = c.get(s.url("/v1/commits")).send().unwrap().json().unwrap();
    assert_eq!(commits["items"].as_array().unwrap().len(), 2);
    // The CLI says so too.
    let out = s.llmcm(&["read-only", "off"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("already"), "{text}");
}

#[test]
fn probes_tell_strangers_the_status_only() {
    let dir = tempfile::tempdir().unwrap();
    let (reader, entry) = token("probe-reader", Role::Reader, &[]);
    let (admin, admin_entry) = token("admin", Role::Admin, &[]);
    let data = dir.path().join("data");
    let s = Server::start(&data, &format!("{entry}\n{admin_entry}"), &[]);
    let c = client();
    let resp = c
        .post(s.url("/v1/admin/read-only"))
        .bearer_auth(&admin)
        .json(&json!({"on": true, "reason": "see /var/lib/secret/path"}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);

    let anonymous = c.get(s.url("/health")).send().unwrap();
    assert_eq!(anonymous.status(), 503);
    let text = anonymous.text().unwrap();
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["status"], "degraded");
    let data_dir = data.display().to_string();
    for secret in [
        "/var/lib/secret",
        data_dir.as_str(),
        "storage",
        "read_only_reason",
    ] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    let ready = c
        .get(s.url("/health/ready"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(!ready.contains("/var/lib/secret"), "{ready}");

    let with_token: Value = c
        .get(s.url("/health"))
        .bearer_auth(&reader)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(
        with_token["storage"]["read_only_reason"]
            .as_str()
            .unwrap()
            .contains("/var/lib/secret"),
        "{with_token}"
    );
    let ready = c
        .get(s.url("/health/ready"))
        .bearer_auth(&reader)
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(ready.contains("/var/lib/secret"), "{ready}");
}
