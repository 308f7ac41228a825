//! `llmcm doctor` against a real server: a healthy one passes (exit 0, every check listed); a
//! read-only one fails `ready` and `writable` (exit 1); an unreachable one fails at once.

mod server;

use std::process::{Command, Output};

use serde_json::Value;
use server::{Server, client};

fn doctor(base: &str, json: bool) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_llmcm"));
    if json {
        cmd.arg("--json");
    }
    cmd.arg("doctor")
        .env("LLMCM_SERVER", base)
        .env_remove("LLMCM_TOKEN")
        .output()
        .unwrap()
}

fn checks(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn status_of<'a>(doc: &'a Value, name: &str) -> &'a str {
    doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == name)
        .and_then(|c| c["status"].as_str())
        .unwrap_or_else(|| panic!("no check {name}: {doc}"))
}

#[test]
fn doctor_passes_a_healthy_server_and_fails_a_read_only_one() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), "", &[]);
    for i in 0..20 {
        let r = client()
            .put(s.url(&format!("/v1/kv/app/k{i}")))
            .body("{\"v\":1}")
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let out = doctor(&s.base, true);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let doc = checks(&out);
    for name in [
        "server reachable",
        "ready",
        "writable",
        "disk free",
        "fsync latency",
        "hash chain (recent tail)",
        "clock",
        "config",
    ] {
        assert_eq!(status_of(&doc, name), "pass", "{name}: {doc}");
    }
    // The readable table ends with the overall verdict.
    let text = String::from_utf8(doctor(&s.base, false).stdout).unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("pass  hash chain (recent tail)")),
        "{text}"
    );
    assert!(
        text.trim_end().ends_with("overall: pass") || text.trim_end().ends_with("overall: warn"),
        "{text}"
    );

    let r = client()
        .post(s.url("/v1/admin/read-only"))
        .json(&serde_json::json!({"on": true, "reason": "drill"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let out = doctor(&s.base, true);
    assert_eq!(out.status.code(), Some(1));
    let doc = checks(&out);
    assert_eq!(status_of(&doc, "ready"), "fail");
    assert_eq!(status_of(&doc, "writable"), "fail");
    assert_eq!(doc["status"], "fail");
    drop(s);

    let out = doctor("http://127.0.0.1:9", false);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("FAIL  server reachable"));
}
