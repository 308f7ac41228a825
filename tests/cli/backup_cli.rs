//! Backups through the real server and the `llmcm` commands, against a directory repository and
//! moto's S3: `backup create` through the server (repositories named in its config), `backup
//! list`, `backup verify --deep`, `backup prune --dry-run`, `restore --repo`; and a server killed
//! in the middle of a backup (after an upload, before the manifest): the repository still
//! verifies (the interrupted backup is incomplete, never used), the dead holder's lock is broken,
//! and the next backup and a restore are correct.

use crate::server;

use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use server::{Server, client};

use crate::s3;
use s3::S3;

fn llmcm(s3: &S3, server: Option<&Server>, args: &[&str]) -> Output {
    llmcm_env(s3, server, args, &[])
}

fn llmcm_env(s3: &S3, server: Option<&Server>, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_llmcm"));
    cmd.envs(env.iter().copied());
    cmd.args(args).env_remove("LLMCM_TOKEN");
    for (k, v) in s3.env() {
        cmd.env(k, v);
    }
    if let Some(s) = server {
        cmd.env("LLMCM_SERVER", &s.base);
    }
    cmd.output().unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "stdout {} stderr {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn start(s3: &S3, dir: &std::path::Path, config: &str, crash_at: Option<&str>) -> Server {
    let env = s3.env();
    let mut pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    if let Some(step) = crash_at {
        pairs.push(("LLMCM_CRASH_AT", step));
    }
    Server::start_with_env(&pairs, dir, config, &[])
}

fn write(s: &Server, from: u32, count: u32) {
    let pad = "p".repeat(2000);
    for i in from..from + count {
        let r = client()
            .put(s.url(&format!("/v1/kv/svc/k{}", i % 25)))
            .body(format!("{{\"i\":{i},\"pad\":\"{pad}\"}}"))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
    }
}

fn list(s: &Server) -> Value {
    let v: Value = client()
        .get(s.url("/v1/kv?prefix=svc/&limit=1000"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let items: Vec<Value> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| serde_json::json!([i["key"], i["value"], i["revision"]]))
        .collect();
    Value::Array(items)
}

#[test]
fn backups_through_the_server_survive_a_crash_in_the_middle() {
    let s3 = S3::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir_repo = tmp.path().join("repo");
    let config = format!(
        "[storage]\nsegment_bytes_max = 65536\n\n[[backup.repositories]]\nname = \"local\"\nurl = \"{}\"\n\n[[backup.repositories]]\nname = \"s3\"\nurl = \"s3://backups/server\"\n",
        dir_repo.display()
    );
    let data = tmp.path().join("data");
    for (name, url) in [
        ("local", dir_repo.display().to_string()),
        ("s3", "s3://backups/server".to_string()),
    ] {
        let _ = std::fs::remove_dir_all(&data);
        let s = start(&s3, &data, &config, None);
        write(&s, 0, 60);
        let out = ok(&llmcm(
            &s3,
            Some(&s),
            &[
                "--json", "backup", "create", "--repo", name, "--kind", "full",
            ],
        ));
        let full: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(full["kind"], "full", "{out}");
        assert!(full["bytes"].as_u64().unwrap() > 100_000);
        // Health and metrics know the backup; compaction does not pass what it holds.
        let health: Value = client()
            .get(s.url("/health"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(health["status"], "ok", "{health}");
        assert_eq!(health["backups"][0]["id"], full["id"]);
        let metrics = client()
            .get(s.url("/metrics"))
            .send()
            .unwrap()
            .text()
            .unwrap();
        assert!(
            metrics.contains("llmcm_backup_last_bytes{kind=\"full\"}"),
            "{metrics}"
        );
        assert!(metrics.contains(&format!(
            "llmcm_backup_safe_revision {}",
            full["last_revision"]
        )));
        write(&s, 1000, 40);
        let compacted: Value = client()
            .post(s.url("/v1/admin/compact"))
            .json(&serde_json::json!({"retain": "0s"}))
            .send()
            .unwrap()
            .json()
            .unwrap();
        let safe = full["last_revision"].as_u64().unwrap();
        if compacted["compacted"] == true {
            let h = compacted["horizon"]["revision"].as_u64().unwrap();
            assert!(
                h <= safe,
                "horizon {h} passed the backed-up revision {safe}"
            );
        }
        // Unknown repository names and kinds are refused by the server.
        let bad = llmcm(&s3, Some(&s), &["backup", "create", "--repo", "nope"]);
        assert_eq!(bad.status.code(), Some(7), "{bad:?}");
        write(&s, 60, 40);

        // Killed after uploading a file of an incremental backup, before its manifest.
        drop(s);
        for step in ["backup:after-upload", "backup:before-manifest"] {
            let mut s = start(&s3, &data, &config, Some(step));
            let answer = llmcm(
                &s3,
                Some(&s),
                &["backup", "create", "--repo", name, "--kind", "incremental"],
            );
            assert!(!answer.status.success(), "{step}: {answer:?}");
            s.wait_exit(Duration::from_secs(30))
                .expect("the server crashed");
        }
        let listed = ok(&llmcm(&s3, None, &["backup", "list", "--repo", &url]));
        assert!(listed.contains("incomplete"), "{listed}");
        let verified = ok(&llmcm(&s3, None, &["backup", "verify", "--repo", &url]));
        assert!(verified.contains("incomplete"), "{verified}");

        // The next backup works (the dead server's lock is broken) and is correct.
        let s = start(&s3, &data, &config, None);
        write(&s, 100, 30);
        let out = ok(&llmcm(
            &s3,
            Some(&s),
            &[
                "--json",
                "backup",
                "create",
                "--repo",
                name,
                "--kind",
                "incremental",
            ],
        ));
        let incr: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(incr["parent"], full["id"]);
        let want = list(&s);
        ok(&llmcm(
            &s3,
            None,
            &["backup", "verify", "--repo", &url, "--deep"],
        ));
        let dry = ok(&llmcm(
            &s3,
            None,
            &[
                "backup",
                "prune",
                "--repo",
                &url,
                "--keep-full",
                "1",
                "--dry-run",
            ],
        ));
        assert!(
            dry.contains("(incomplete)") && dry.contains("kept 2"),
            "{dry}"
        );
        ok(&llmcm(
            &s3,
            None,
            &["backup", "prune", "--repo", &url, "--keep-full", "1"],
        ));
        let listed = ok(&llmcm(&s3, None, &["backup", "list", "--repo", &url]));
        assert!(!listed.contains("incomplete"), "{listed}");

        // The drill: restore the newest backup to scratch, compare with the live chain, time it.
        let drill = ok(&llmcm(
            &s3,
            Some(&s),
            &["--json", "backup", "drill", "--repo", &url],
        ));
        let drill: Value = serde_json::from_str(&drill).unwrap();
        assert_eq!(drill["ok"], true, "{drill}");
        assert_eq!(drill["server"]["matched"], true, "{drill}");
        assert_eq!(drill["revision"], incr["last_revision"]);
        assert!(drill["restore_seconds"].as_f64().unwrap() > 0.0);

        // Restore the newest backup through the CLI and serve it: the same content, and the
        // restore commit above every revision the repository knows.
        let target = tmp.path().join(format!("restored-{name}"));
        let out = ok(&llmcm(
            &s3,
            None,
            &[
                "restore",
                "--json",
                "--repo",
                &url,
                "--to",
                target.to_str().unwrap(),
            ],
        ));
        let report: Value = serde_json::from_str(&out).unwrap();
        assert!(
            report["restore_revision"].as_u64().unwrap() > incr["last_revision"].as_u64().unwrap()
        );
        drop(s);
        let restored = Server::start(&target, "", &[]);
        assert_eq!(list(&restored), want);
    }
}

#[test]
fn continuous_archiving_lets_a_restore_reach_the_last_sealed_segment() {
    let s3 = S3::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir_repo = tmp.path().join("repo");
    let config = format!(
        "[storage]\nsegment_bytes_max = 65536\n\n[[backup.repositories]]\nname = \"local\"\nurl = \"{}\"\narchive = true\n\n[[backup.repositories]]\nname = \"s3\"\nurl = \"s3://backups/archived\"\narchive = true\n",
        dir_repo.display()
    );
    let data = tmp.path().join("data");
    let s = start(&s3, &data, &config, None);
    write(&s, 0, 40);
    let mut fulls = Vec::new();
    for name in ["local", "s3"] {
        let out = ok(&llmcm(
            &s3,
            Some(&s),
            &["--json", "backup", "create", "--repo", name],
        ));
        let full: Value = serde_json::from_str(&out).unwrap();
        fulls.push(full["last_revision"].as_u64().unwrap());
    }
    write(&s, 40, 120);
    // Segments seal every ~30 of these writes: wait until both archives are 60 revisions past
    // the backups.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let archived = loop {
        let health: Value = client()
            .get(s.url("/health"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        let revs: Vec<u64> = health["archives"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["archived_revision"].as_u64().unwrap())
            .collect();
        if revs.len() == 2 && revs.iter().all(|&r| r > fulls[1] + 60) {
            assert_eq!(health["warnings"], serde_json::json!([]), "{health}");
            break revs.into_iter().min().unwrap();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "archiving stalled: {health}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let metrics = client()
        .get(s.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("llmcm_archive_lag_seconds{repo=\"local\"}"),
        "{metrics}"
    );
    let want: Value = {
        let v: Value = client()
            .get(s.url(&format!(
                "/v1/kv?prefix=svc/&limit=1000&revision={archived}"
            )))
            .send()
            .unwrap()
            .json()
            .unwrap();
        Value::Array(
            v["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| serde_json::json!([i["key"], i["value"], i["revision"]]))
                .collect(),
        )
    };
    for url in [
        dir_repo.display().to_string(),
        "s3://backups/archived".into(),
    ] {
        let verified = ok(&llmcm(&s3, None, &["backup", "verify", "--repo", &url]));
        assert!(verified.contains("archived segments checked"), "{verified}");
        let target = tmp.path().join(format!("restored-{}", url.len()));
        ok(&llmcm(
            &s3,
            None,
            &[
                "restore",
                "--repo",
                &url,
                "--revision",
                &archived.to_string(),
                "--to",
                target.to_str().unwrap(),
            ],
        ));
        let restored = Server::start(&target, "", &[]);
        assert_eq!(list(&restored), want, "{url}");
    }
}
