//! A backup repository is untrusted input: an edited manifest or archive record cannot make
//! `restore`, `verify` or `prune` touch anything outside the repository and the restore's own
//! staging directory, and a failed restore leaves no staging directory behind. Offline commands
//! given something that is not a repository say so and write nothing.
//!
//! How: a real backup (and archived segments) taken through the server into a directory
//! repository; copies of it edited as an attacker would (absolute and `..` names, a foreign
//! history id, a record describing another file); canary files where a traversal would land,
//! checked unchanged after every command.

use crate::server;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use server::{Server, client};

fn llmcm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_llmcm"))
        .args(args)
        .env_remove("LLMCM_TOKEN")
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout {}\nstderr {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A repository holding one full backup and archived segments, made through a real server.
fn make_repository(tmp: &Path) -> PathBuf {
    let repo = tmp.join("repo");
    let config = format!(
        "[storage]\nsegment_bytes_max = 65536\n\n[[backup.repositories]]\nname = \"main\"\nurl = {:?}\narchive = true\n",
        repo.display().to_string()
    );
    let s = Server::start(&tmp.join("data"), &config, &[]);
    let pad = "p".repeat(3000);
    for i in 0..60 {
        let r = client()
            .put(s.url(&format!("/v1/kv/svc/k{}", i % 7)))
            .body(format!("{{\"i\":{i},\"pad\":\"{pad}\"}}"))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let out = Command::new(env!("CARGO_BIN_EXE_llmcm"))
        .args(["backup", "create", "--repo", "main", "--kind", "full"])
        .env("LLMCM_SERVER", &s.base)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    // Archiving ships sealed segments within a second.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while records(&repo).is_empty() {
        assert!(std::time::Instant::now() < deadline, "nothing was archived");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    s.stop();
    repo
}

fn manifest_path(repo: &Path) -> PathBuf {
    let backups = repo.join("backups");
    let id = std::fs::read_dir(&backups)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    id.path().join("manifest.json")
}

fn records(repo: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(histories) = std::fs::read_dir(repo.join("archive")) else {
        return out;
    };
    for h in histories {
        let log = h.unwrap().path().join("log");
        for f in std::fs::read_dir(log).into_iter().flatten() {
            let p = f.unwrap().path();
            if p.to_string_lossy().ends_with(".log.json") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn edit_json(path: &Path, edit: impl FnOnce(&mut Value)) {
    let mut v: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

/// An edit of a copied repository.
type Attack = Box<dyn Fn(&Path)>;

#[test]
fn edited_repositories_cannot_reach_outside_the_restore_target() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = make_repository(tmp.path());
    let out_dir = tmp.path().join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let target = out_dir.join("restored");
    let staging = out_dir.join("restored.staging");
    // Where each traversal would land, from the staging directory `out/restored.staging`.
    let absolute = tmp.path().join("canary-absolute");
    let up_two = tmp.path().join("canary-up");
    let canaries = [&absolute, &up_two];
    for c in canaries {
        std::fs::write(c, "keep").unwrap();
    }
    let attacks: Vec<(&str, Attack)> = vec![
        ("an absolute file name", {
            let absolute = absolute.clone();
            Box::new(move |r: &Path| {
                edit_json(&manifest_path(r), |m| {
                    m["files"][0]["name"] = Value::String(absolute.display().to_string())
                })
            })
        }),
        (
            "a relative name climbing out",
            Box::new(|r: &Path| {
                edit_json(&manifest_path(r), |m| {
                    m["files"][0]["name"] = Value::String("../../canary-up".into())
                })
            }),
        ),
        (
            "a name climbing out after a directory",
            Box::new(|r: &Path| {
                edit_json(&manifest_path(r), |m| {
                    m["files"][0]["name"] = Value::String("log/../../../canary-up".into())
                })
            }),
        ),
        (
            "a history id that is a path",
            Box::new(|r: &Path| {
                edit_json(&manifest_path(r), |m| {
                    m["history_id"] = Value::String("../../..".into())
                })
            }),
        ),
        (
            "a holder that is a path",
            Box::new(|r: &Path| {
                edit_json(&manifest_path(r), |m| {
                    m["files"][0]["backup"] = Value::String("../..".into())
                })
            }),
        ),
        (
            "an archive record naming another file",
            Box::new(|r: &Path| {
                let record = records(r).pop().unwrap();
                edit_json(&record, |a| {
                    a["name"] = Value::String("../../../../canary-up".into())
                })
            }),
        ),
    ];
    for (what, attack) in &attacks {
        let copy = tmp.path().join("copy");
        let _ = std::fs::remove_dir_all(&copy);
        copy_dir(&repo, &copy);
        attack(&copy);
        let copy_url = copy.display().to_string();
        let target_arg = target.display().to_string();
        let restore = llmcm(&["restore", "--repo", &copy_url, "--to", &target_arg]);
        assert!(!restore.status.success(), "{what}: {}", text(&restore));
        assert!(!target.exists(), "{what}: the target was made");
        assert!(!staging.exists(), "{what}: the staging directory was left");
        let verify = llmcm(&["backup", "verify", "--repo", &copy_url]);
        assert!(!verify.status.success(), "{what}: {}", text(&verify));
        let prune = llmcm(&["backup", "prune", "--repo", &copy_url, "--keep-full", "1"]);
        for c in canaries {
            assert_eq!(
                std::fs::read_to_string(c).unwrap(),
                "keep",
                "{what}: {}",
                c.display()
            );
        }
        // Nothing outside the copy appeared either.
        let mut names: Vec<String> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "canary-absolute",
                "canary-up",
                "copy",
                "data",
                "data.toml",
                "out",
                "repo"
            ],
            "{what}: prune said {}",
            text(&prune)
        );
    }
    // The untouched repository restores.
    let restore = llmcm(&[
        "restore",
        "--repo",
        &repo.display().to_string(),
        "--to",
        &target.display().to_string(),
    ]);
    assert!(restore.status.success(), "{}", text(&restore));
    assert!(!staging.exists());
}

#[test]
fn offline_commands_refuse_what_is_not_a_repository() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let missing = tmp.path().join("main");
    for repo in [&missing, &empty] {
        let url = repo.display().to_string();
        for args in [
            vec!["backup", "list", "--repo", &url],
            vec!["backup", "verify", "--repo", &url],
            vec!["backup", "prune", "--repo", &url, "--keep-full", "1"],
            vec![
                "restore",
                "--repo",
                &url,
                "--to",
                "/nonexistent/llmcm-target",
            ],
        ] {
            let out = llmcm(&args);
            assert!(!out.status.success(), "{args:?}: {}", text(&out));
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                stderr.contains("not a backup repository"),
                "{args:?}: {stderr}"
            );
        }
    }
    assert!(!missing.exists(), "a missing repository was created");
    assert_eq!(
        std::fs::read_dir(&empty).unwrap().count(),
        0,
        "something was written"
    );
}
