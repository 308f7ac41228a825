//! Snapshots, compaction and restore through the server, the CLI and the health surface: the
//! admin endpoints and commands, `410 compacted` naming the earliest point on every read kind
//! below the horizon (get, list, history, commits, diff, watch), verify saying it starts at the
//! horizon, status and metrics showing snapshots and the horizon, and `llmcm restore` from the
//! live server's directory.

use crate::server;

use std::process::{Command, Output};

use serde_json::{Value, json};
use server::{Server, client};

const CONFIG: &str = "[storage]\nsegment_bytes_max = 65536\n";

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn get(s: &Server, path: &str) -> (u16, Value) {
    let r = client().get(s.url(path)).send().unwrap();
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

fn post(s: &Server, path: &str, body: Value) -> (u16, Value) {
    let r = client().post(s.url(path)).json(&body).send().unwrap();
    let status = r.status().as_u16();
    (status, r.json().unwrap())
}

fn assert_gone(s: &Server, path: &str, earliest: u64) {
    let (status, body) = get(s, path);
    assert_eq!(status, 410, "{path}: {body}");
    assert_eq!(body["error"]["code"], "compacted", "{path}");
    assert_eq!(
        body["error"]["earliest_revision"],
        json!(earliest),
        "{path}"
    );
    assert!(body["error"]["earliest_timestamp"].is_string(), "{path}");
}

#[test]
fn snapshot_compact_and_restore_through_the_server() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let s = Server::start(&dir, CONFIG, &[]);
    let pad = "x".repeat(3000);
    let mut first_time = String::new();
    for i in 0..120 {
        let r = client()
            .put(s.url(&format!("/v1/kv/app/k{}", i % 10)))
            .body(format!("{{\"i\":{i},\"pad\":\"{pad}\"}}"))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        if i == 0 {
            let v: Value = r.json().unwrap();
            first_time = v["timestamp"].as_str().unwrap().to_owned();
        }
    }

    // Snapshot on demand, through the CLI; status and metrics show it.
    let out = stdout(&s.llmcm(&["snapshot"]));
    assert!(out.starts_with("snapshot at revision 120"), "{out}");
    let (_, status) = get(&s, "/v1/admin/status");
    // (The server's schedule may have taken one earlier: its first check takes one when none
    // exists.) The newest is the one just asked for.
    let newest = status["snapshots"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(newest["revision"], 120);
    assert_eq!(newest["keys"], 10);
    assert_eq!(status["horizon"]["revision"], 0);
    let metrics = client()
        .get(s.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(metrics.contains("llmcm_snapshot_revision 120"), "{metrics}");
    assert!(metrics.contains("llmcm_compaction_horizon_revision 0"));

    // No retention configured: compact needs one.
    let (code, body) = post(&s, "/v1/admin/compact", json!({}));
    assert_eq!(code, 400, "{body}");
    let (code, _) = post(&s, "/v1/admin/compact", json!({"retain": "soon"}));
    assert_eq!(code, 400);
    let (code, _) = post(&s, "/v1/admin/compact", json!({"retain": "0s", "bogus": 1}));
    assert_eq!(code, 400);

    // Keep a day: nothing is that old.
    let out = stdout(&s.llmcm(&["compact", "--retain", "1d"]));
    assert!(out.starts_with("nothing compacted"), "{out}");

    let out = stdout(&s.llmcm(&["--json", "compact", "--retain", "0s"]));
    let c: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(c["compacted"], true);
    let h = c["horizon"]["revision"].as_u64().unwrap();
    assert_eq!(
        h, 120,
        "the roll seals everything, so the horizon is the head"
    );
    assert!(c["segments_dropped"].as_u64().unwrap() >= 3);
    assert!(c["bytes_reclaimed"].as_u64().unwrap() > 300_000);
    assert_eq!(c["revision"], 121);

    // Reads below the horizon: 410 naming the earliest point, on every kind of read.
    assert_gone(&s, "/v1/kv/app/k1?revision=5", h);
    assert_gone(&s, &format!("/v1/kv/app/k1?at={first_time}"), h);
    assert_gone(&s, "/v1/kv?prefix=app/&revision=119", h);
    assert_gone(&s, "/v1/diff?prefix=app/&from=1&to=121", h);
    assert_gone(&s, "/v1/history/app/k1?from=3", h + 1);
    assert_gone(&s, "/v1/commits?from_revision=1", h + 1);
    assert_gone(&s, "/v1/watch?from_revision=3", h);
    // At and after the horizon: the state, unchanged.
    let (code, v) = get(&s, &format!("/v1/kv/app/k9?revision={h}"));
    assert_eq!(code, 200);
    assert_eq!(v["revision"], 120);
    assert_eq!(v["value"]["i"], 119);
    let (_, list) = get(&s, "/v1/kv?prefix=app/");
    assert_eq!(list["items"].as_array().unwrap().len(), 10);
    let (_, commits) = get(&s, "/v1/commits");
    assert_eq!(commits["items"][0]["kind"], "compaction");
    assert_eq!(commits["items"][0]["detail"]["horizon_revision"], 120);
    let (_, verify) = get(&s, "/v1/verify");
    assert_eq!(verify["ok"], true);
    assert_eq!(verify["from"], h + 1);
    assert_eq!(verify["horizon"]["revision"], h);
    assert!(
        verify["horizon"]["note"]
            .as_str()
            .unwrap()
            .contains("compacted")
    );
    let (_, status) = get(&s, "/v1/admin/status");
    assert_eq!(status["horizon"]["revision"], h);
    assert_eq!(status["horizon"]["last_compaction"]["revision"], 121);
    let metrics = client()
        .get(s.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(metrics.contains(&format!("llmcm_compaction_horizon_revision {h}")));
    assert!(metrics.contains("llmcm_compactions_total 1"));
    let out = stdout(&s.llmcm(&["status"]));
    assert!(out.contains(&format!("revision {h} at")), "{out}");

    // Restore from the live server's directory (read only), at the horizon, partial.
    let target = tmp.path().join("restored");
    let out = Command::new(env!("CARGO_BIN_EXE_llmcm"))
        .args([
            "restore",
            "--json",
            "--revision",
            &h.to_string(),
            "--prefix",
            "app/k1",
        ])
        .arg("--data-dir")
        .arg(&dir)
        .arg("--to")
        .arg(&target)
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stderr).to_string();
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(
        printed.starts_with(&format!("restoring revision {h} (")),
        "{printed}"
    );
    assert_eq!(report["keys"], 1, "{report}");
    assert_eq!(report["restore_revision"], 122);
    assert_eq!(report["verified"], true);
    // Into a non-empty directory: refused, exit 2.
    let again = Command::new(env!("CARGO_BIN_EXE_llmcm"))
        .args(["restore", "--data-dir"])
        .arg(&dir)
        .arg("--to")
        .arg(&target)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2));
    // Below the horizon: exit 8, like a 410.
    let below = Command::new(env!("CARGO_BIN_EXE_llmcm"))
        .args(["restore", "--revision", "3", "--data-dir"])
        .arg(&dir)
        .arg("--to")
        .arg(tmp.path().join("never"))
        .output()
        .unwrap();
    assert_eq!(below.status.code(), Some(8));

    // The server still writes, and the restored directory serves.
    let r = client()
        .put(s.url("/v1/kv/app/after"))
        .body("1")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(s.stop().code(), Some(0));
    let restored = Server::start(&target, "", &[]);
    let (code, v) = get(&restored, "/v1/kv/app/k1");
    assert_eq!(code, 200);
    assert_eq!(v["value"]["i"], 111);
    let (code, _) = get(&restored, "/v1/kv/app/k2");
    assert_eq!(code, 404);
    let (_, commits) = get(&restored, "/v1/commits");
    assert_eq!(commits["items"][0]["kind"], "restore");
    assert_eq!(commits["items"][0]["revision"], 122);
}

/// Continuous archiving follows SIGHUP: switched on in the config and reloaded, segments are
/// shipped without a restart; the repository removed and reloaded, the loop stops and `/health`
/// no longer lists it.
#[test]
fn archiving_starts_and_stops_on_sighup() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let with = |archive: bool| {
        format!(
            "{CONFIG}\n[[backup.repositories]]\nname = \"main\"\nurl = \"{}\"\narchive = {archive}\n",
            repo.display()
        )
    };
    let s = Server::start(&tmp.path().join("data"), &with(false), &[]);
    let put = |i: u32| {
        let r = client()
            .put(s.url(&format!("/v1/kv/app/k{}", i % 10)))
            .body(format!("{{\"i\":{i},\"pad\":\"{}\"}}", "x".repeat(2000)))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
    };
    let archives = || -> Value {
        let h: Value = client()
            .get(s.url("/health"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        h["archives"].clone()
    };
    for i in 0..80 {
        put(i);
    }
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(archives(), json!([]), "archiving is off");
    assert!(!repo.join("archive").exists());

    std::fs::write(s.config_path(), with(true)).unwrap();
    s.signal("HUP");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let a = archives();
        if a[0]["archived_revision"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never archived: {a}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(repo.join("archive").exists());

    std::fs::write(s.config_path(), CONFIG).unwrap();
    s.signal("HUP");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while archives() != json!([]) {
        assert!(
            std::time::Instant::now() < deadline,
            "archiving did not stop"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    s.stop();
}
