//! `llmcm doctor` against a real server: a healthy one passes (exit 0, every check listed); a
//! read-only one fails `ready` and `writable` (exit 1); an unreachable one fails at once.

use crate::server;

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
    ] {
        assert_eq!(status_of(&doc, name), "pass", "{name}: {doc}");
    }
    // Config sanity: this scratch server has no tokens and no repository — both named.
    assert_eq!(status_of(&doc, "config"), "warn", "{doc}");
    let config = doc.to_string();
    assert!(config.contains("auth is off (no tokens)"), "{config}");
    assert!(
        config.contains("no backup repository is configured"),
        "{config}"
    );
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

/// The latest `backup verify` result travels through the repository to the server (every
/// `backup.poll`, which a SIGHUP changes at once): metrics, `/health` and `doctor` pass after a
/// clean verify, and fail (naming the file) after one that found a corrupted repository file.
#[test]
fn doctor_and_metrics_report_the_last_backup_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let config = |poll: &str| {
        format!(
            "[backup]\npoll = \"{poll}\"\n[[backup.repositories]]\nname = \"main\"\nurl = \"{}\"\n",
            repo.display()
        )
    };
    // Polled hourly at first: the verify below is seen only once a SIGHUP shortens the poll.
    let s = Server::start(&tmp.path().join("data"), &config("1h"), &[]);
    for i in 0..20 {
        let r = client()
            .put(s.url(&format!("/v1/kv/app/k{i}")))
            .body("{\"v\":1}")
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let out = s.llmcm(&["backup", "create", "--repo", "main", "--kind", "full"]);
    assert!(out.status.success(), "{out:?}");
    // Backups but no verify yet: a warning.
    assert_eq!(
        status_of(&checks(&doctor(&s.base, true)), "backup verify"),
        "warn"
    );

    let repo_arg = repo.to_str().unwrap();
    let out = s.llmcm(&["backup", "verify", "--repo", repo_arg]);
    assert!(out.status.success(), "{out:?}");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(
        s.metric("llmcm_backup_verify_last_success{repo=\"main\"}"),
        None,
        "not re-read before the next poll, an hour away"
    );
    std::fs::write(s.config_path(), config("1s")).unwrap();
    s.signal("HUP");
    let wait_for = |want: f64| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while s.metric("llmcm_backup_verify_last_success{repo=\"main\"}") != Some(want) {
            assert!(
                std::time::Instant::now() < deadline,
                "metric never became {want}"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    };
    wait_for(1.0);
    assert!(
        s.metric("llmcm_backup_verify_last_timestamp_seconds{repo=\"main\"}")
            .unwrap()
            > 1.7e9
    );
    assert_eq!(
        status_of(&checks(&doctor(&s.base, true)), "backup verify"),
        "pass"
    );

    // One byte of one backed-up file flipped: verify fails, and so do the metric, health, doctor.
    let victim = walk(&repo)
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "log"))
        .expect("a backed-up segment");
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[100] ^= 0x40;
    std::fs::write(&victim, bytes).unwrap();
    let out = s.llmcm(&["backup", "verify", "--repo", repo_arg]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    wait_for(0.0);
    let health = s.health();
    let warnings = health["warnings"].to_string();
    assert!(
        warnings.contains("the last verify of repository main"),
        "{health}"
    );
    assert_eq!(health["verifications"][0]["ok"], false, "{health}");
    let out = doctor(&s.base, true);
    assert_eq!(out.status.code(), Some(1));
    let doc = checks(&out);
    assert_eq!(status_of(&doc, "backup verify"), "fail", "{doc}");
    let name = victim.file_name().unwrap().to_str().unwrap();
    assert!(
        doc.to_string().contains(name),
        "the failure names the file: {doc}"
    );
    s.stop();
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}
