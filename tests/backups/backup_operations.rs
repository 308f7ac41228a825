//! What an operator hit following the backup guide, fixed: an incremental with nothing new is a
//! recorded success; pruned archive segments stay pruned across restarts; health judges the
//! backups of the current history (not those of the history a restore came from) and warns of
//! every repository that was never verified; a restore that would make an empty store is
//! refused, naming the point, unless `--allow-empty`.
//!
//! How: the real server and CLI with directory repositories.

use crate::server;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;
use server::{Server, client};

fn llmcm(server: Option<&Server>, args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_llmcm"));
    c.args(args).env_remove("LLMCM_TOKEN");
    if let Some(s) = server {
        c.env("LLMCM_SERVER", &s.base);
    }
    c.output().unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "status {:?}\nstdout {}\nstderr {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn repo_config(repos: &[(&str, &Path, bool)]) -> String {
    let mut config = "[storage]\nsegment_bytes_max = 65536\n".to_owned();
    for (name, path, archive) in repos {
        config.push_str(&format!(
            "\n[[backup.repositories]]\nname = {name:?}\nurl = {:?}\narchive = {archive}\n",
            path.display().to_string()
        ));
    }
    config
}

fn write(s: &Server, from: u32, count: u32) {
    let pad = "p".repeat(3000);
    for i in from..from + count {
        let r = client()
            .put(s.url(&format!("/v1/kv/svc/k{}", i % 9)))
            .body(format!("{{\"i\":{i},\"pad\":\"{pad}\"}}"))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
    }
}

fn health(s: &Server) -> Value {
    client()
        .get(s.url("/health"))
        .send()
        .unwrap()
        .json()
        .unwrap()
}

fn archived_records(repo: &Path) -> usize {
    archived_names(repo).len()
}

/// The archived segments' record names.
fn archived_names(repo: &Path) -> Vec<String> {
    let mut names = Vec::new();
    for h in std::fs::read_dir(repo.join("archive"))
        .into_iter()
        .flatten()
    {
        for f in std::fs::read_dir(h.unwrap().path().join("log"))
            .into_iter()
            .flatten()
        {
            let name = f.unwrap().file_name().to_string_lossy().into_owned();
            if name.ends_with(".log.json") {
                names.push(name);
            }
        }
    }
    names.sort();
    names
}

#[test]
fn an_incremental_with_nothing_new_is_a_recorded_success() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let s = Server::start(
        &tmp.path().join("data"),
        &repo_config(&[("main", &repo, false)]),
        &[],
    );
    write(&s, 0, 20);
    ok(&llmcm(
        Some(&s),
        &["backup", "create", "--repo", "main", "--kind", "full"],
    ));
    for kind in ["incremental", "differential", "incremental"] {
        let out = ok(&llmcm(
            Some(&s),
            &[
                "--json", "backup", "create", "--repo", "main", "--kind", kind,
            ],
        ));
        let created: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(created["kind"], kind, "{out}");
        assert_eq!(created["files_uploaded"], 0, "{out}");
    }
    let listed = ok(&llmcm(
        None,
        &[
            "--json",
            "backup",
            "list",
            "--repo",
            &repo.display().to_string(),
        ],
    ));
    let listed: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed["backups"].as_array().unwrap().len(), 4, "{listed}");
    let h = health(&s);
    let kinds: Vec<&str> = h["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.len(), 3, "{h}");
    // The empty backups restore like their parent.
    let target = tmp.path().join("restored");
    ok(&llmcm(
        None,
        &[
            "restore",
            "--repo",
            &repo.display().to_string(),
            "--to",
            &target.display().to_string(),
        ],
    ));
}

#[test]
fn pruned_archive_segments_are_not_archived_again() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let data = tmp.path().join("data");
    let config = repo_config(&[("main", &repo, true)]);
    let s = Server::start(&data, &config, &[]);
    write(&s, 0, 80);
    let wait_archived = |want: usize| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while archived_records(&repo) < want {
            assert!(
                Instant::now() < deadline,
                "archived {}",
                archived_records(&repo)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_archived(3);
    ok(&llmcm(
        Some(&s),
        &["backup", "create", "--repo", "main", "--kind", "full"],
    ));
    // The segment the backup sealed is archived within a second or two.
    std::thread::sleep(Duration::from_secs(2));
    let before = archived_records(&repo);
    write(&s, 80, 40);
    wait_archived(before + 1);
    std::thread::sleep(Duration::from_secs(2));
    let before_prune = archived_records(&repo);
    let pruned = ok(&llmcm(
        None,
        &[
            "--json",
            "backup",
            "prune",
            "--repo",
            &repo.display().to_string(),
            "--keep-full",
            "1",
        ],
    ));
    let pruned: Value = serde_json::from_str(&pruned).unwrap();
    let deleted = pruned["archive_deleted"].as_array().unwrap().len();
    assert!(deleted >= 3, "{pruned}");
    let after_prune = archived_records(&repo);
    assert_eq!(after_prune, before_prune - deleted);
    let deleted_names: Vec<String> = pruned["archive_deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| format!("{}.json", d.as_str().unwrap().rsplit('/').next().unwrap()))
        .collect();
    // A restart reads the archive again: what prune removed stays removed (the segment the
    // stop sealed is new, and is archived).
    s.stop();
    let s = Server::start(&data, &config, &[]);
    std::thread::sleep(Duration::from_secs(3));
    let now = archived_names(&repo);
    for name in &deleted_names {
        assert!(!now.contains(name), "pruned {name} came back: {now:?}");
    }
    let after_prune = now.len();
    // New segments are still archived.
    write(&s, 120, 40);
    let deadline = Instant::now() + Duration::from_secs(20);
    while archived_records(&repo) <= after_prune {
        assert!(Instant::now() < deadline, "archiving stopped");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn health_judges_the_current_history_and_every_repository() {
    let tmp = tempfile::tempdir().unwrap();
    let one = tmp.path().join("one");
    let two = tmp.path().join("two");
    let data = tmp.path().join("data");
    let config = repo_config(&[("one", &one, false), ("two", &two, false)]);
    let s = Server::start(&data, &config, &[]);
    write(&s, 0, 20);
    for repo in ["one", "two"] {
        ok(&llmcm(
            Some(&s),
            &["backup", "create", "--repo", repo, "--kind", "full"],
        ));
    }
    // Verified: only the first repository.
    ok(&llmcm(
        None,
        &["backup", "verify", "--repo", &one.display().to_string()],
    ));
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let h = health(&s);
        if h["unverified_repositories"] == serde_json::json!(["two"]) {
            break;
        }
        // The verify result is read every backup.poll (1 minute by default); SIGHUP re-reads it.
        s.signal("HUP");
        assert!(Instant::now() < deadline, "{h}");
        std::thread::sleep(Duration::from_millis(300));
    }
    let doctor = llmcm(Some(&s), &["doctor"]);
    let report = String::from_utf8_lossy(&doctor.stdout);
    assert!(
        report.contains("repository two holds backups but no recorded verify"),
        "{report}"
    );

    // A restored store is a new history: the backups of the old one are not its backups.
    s.stop();
    let restored = tmp.path().join("restored");
    ok(&llmcm(
        None,
        &[
            "restore",
            "--data-dir",
            &data.display().to_string(),
            "--to",
            &restored.display().to_string(),
        ],
    ));
    let s = Server::start(&restored, &config, &[]);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let h = health(&s);
        if h["warnings"]
            .to_string()
            .contains("no backup of this history")
        {
            assert_eq!(h["backups"], serde_json::json!([]), "{h}");
            assert_eq!(h["status"], "warn");
            break;
        }
        assert!(Instant::now() < deadline, "{h}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_restore_that_would_be_empty_is_refused_naming_the_point() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let s = Server::start(&data, "", &[]);
    let before_first = "2001-01-01T00:00:00Z";
    write(&s, 0, 5);
    s.stop();
    let src = data.display().to_string();
    let target = tmp.path().join("restored");
    let to = target.display().to_string();
    for extra in [
        vec!["--at", before_first],
        vec!["--revision", "0"],
        vec!["--prefix", "nothing/here/"],
    ] {
        let mut args = vec!["restore", "--data-dir", &src, "--to", &to];
        args.extend(extra.iter().copied());
        let out = llmcm(None, &args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{extra:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("nothing to restore"), "{stderr}");
        assert!(stderr.contains("--allow-empty"), "{stderr}");
        assert!(stderr.contains("at revision"), "{stderr}");
        assert!(!target.exists(), "{extra:?}: the target was made");
    }
    let out = llmcm(
        None,
        &[
            "restore",
            "--data-dir",
            &src,
            "--to",
            &to,
            "--prefix",
            "nothing/",
            "--allow-empty",
        ],
    );
    ok(&out);
}
