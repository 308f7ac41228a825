//! What a new operator tripped over in the command line, fixed and held: every flag and
//! argument explains itself, offline commands do not offer connection options, output has no
//! Rust syntax; `txn FILE`, `log -n`, listings that say when more remain, missing keys that exit
//! 3, ages as times, `diff` to the head, deep values printed (never `null`), plain connection
//! errors, quiet offline commands, `token new --json`, and a `watch` that resumes by itself
//! across a server restart.
//!
//! How: the clap command tree walked whole; the real binary against a real server.

use crate::server;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use server::{Server, client};

fn llmcm(s: Option<&Server>, args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_llmcm"));
    c.args(args)
        .env_remove("LLMCM_TOKEN")
        .env_remove("RUST_LOG");
    if let Some(s) = s {
        c.env("LLMCM_SERVER", &s.base);
    }
    c.output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn put(s: &Server, key: &str, value: &str) -> u64 {
    let r = client()
        .put(s.url(&format!("/v1/kv/{key}")))
        .body(value.to_owned())
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json::<Value>().unwrap()["revision"].as_u64().unwrap()
}

#[test]
fn every_option_explains_itself_and_offline_commands_take_no_connection() {
    fn walk(command: &clap::Command, path: &str, out: &mut Vec<(String, clap::Command)>) {
        out.push((path.to_owned(), command.clone()));
        for sub in command.get_subcommands() {
            walk(sub, &format!("{path} {}", sub.get_name()), out);
        }
    }
    let mut all = Vec::new();
    let mut root = llmcm::cli::command();
    root.build();
    walk(&root, "llmcm", &mut all);
    for (path, command) in &all {
        for arg in command.get_arguments() {
            if arg.is_hide_set() || ["help", "version"].contains(&arg.get_id().as_str()) {
                continue;
            }
            assert!(
                arg.get_help()
                    .is_some_and(|h| !h.to_string().trim().is_empty()),
                "`{path}`: {} has no help line",
                arg.get_id()
            );
        }
        let help = command.clone().render_long_help().to_string();
        assert!(!help.contains("..="), "`{path}` help shows Rust syntax");
        let takes_server = command
            .get_arguments()
            .any(|a| a.get_id() == "server" && !a.is_hide_set());
        let offline = [
            "llmcm restore",
            "llmcm verify",
            "llmcm token new",
            "llmcm demo",
            "llmcm backup list",
            "llmcm backup verify",
            "llmcm backup prune",
            "llmcm serve",
        ];
        if offline.contains(&path.as_str()) {
            assert!(!takes_server, "`{path}` is offline but offers --server");
        }
        if [
            "llmcm get",
            "llmcm watch",
            "llmcm doctor",
            "llmcm backup create",
        ]
        .contains(&path.as_str())
        {
            assert!(
                takes_server,
                "`{path}` talks to a server but takes no --server"
            );
        }
    }
    // The connection options also work before the command name.
    let out = llmcm(None, &["--server", "http://127.0.0.1:1", "get", "k"]);
    assert_eq!(out.status.code(), Some(6));
    assert!(
        stderr(&out).contains("connection refused"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn client_commands_do_what_their_users_expect() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"), "", &[]);
    for i in 0..5 {
        put(&s, &format!("app/k{i}"), &i.to_string());
    }
    put(&s, "app/k0", "10");

    // txn FILE (the name alone, as the README says), and @FILE.
    let body = dir.path().join("txn.json");
    std::fs::write(&body, r#"{"ops":[{"op":"put","key":"app/t","value":1}]}"#).unwrap();
    let out = llmcm(Some(&s), &["txn", &body.display().to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = llmcm(Some(&s), &["txn", &format!("@{}", body.display())]);
    assert!(out.status.success(), "{}", stderr(&out));

    // log -n: the newest, newest first; --limit: says when more remain, --json gives `next`.
    let out = llmcm(Some(&s), &["--json", "log", "-n", "2"]);
    let log: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let revisions: Vec<u64> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["revision"].as_u64().unwrap())
        .collect();
    assert_eq!(revisions, [8, 7]);
    let out = llmcm(Some(&s), &["log", "--limit", "3"]);
    assert!(out.status.success());
    assert!(stderr(&out).contains("more remain"), "{}", stderr(&out));
    let out = llmcm(Some(&s), &["--json", "ls", "app/", "--limit", "2"]);
    let page: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(page["next"], "app/k1", "{page}");
    let out = llmcm(Some(&s), &["--json", "ls", "app/", "--after", "app/k1"]);
    let rest: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(rest["items"][0]["key"], "app/k2", "{rest}");
    let out = llmcm(Some(&s), &["--json", "history", "app/k0", "-n", "1"]);
    let h: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(h["items"][0]["revision"], 6, "{h}");

    // A missing key exits 3 from get, ls and history alike.
    for args in [
        vec!["get", "app/none"],
        vec!["ls", "nothing/"],
        vec!["history", "app/none"],
    ] {
        let out = llmcm(Some(&s), &args);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {}", stderr(&out));
    }

    // Ages as times; diff to the head by default.
    let out = llmcm(Some(&s), &["get", "app/k1", "--at", "0s ago"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = llmcm(Some(&s), &["get", "app/k1", "--at", "2d"]);
    assert_eq!(out.status.code(), Some(3), "nothing existed two days ago");
    let out = llmcm(Some(&s), &["get", "app/k1", "--at", "yesterday"]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    let out = llmcm(
        Some(&s),
        &["--json", "diff", "--prefix", "app/", "--from", "2"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let diff: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(diff["to"], 8, "{diff}");

    // A value as deep as the server takes is printed, not `null`.
    let depth = llmcm::storage_format::json::VALUE_DEPTH_MAX;
    put(
        &s,
        "app/deep",
        &format!("{}{}", "[".repeat(depth), "]".repeat(depth)),
    );
    let out = llmcm(Some(&s), &["get", "app/deep"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let printed: String = stdout(&out)
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    assert_eq!(printed.len(), 2 * depth, "{printed}");
}

#[test]
fn offline_commands_are_quiet_and_token_new_speaks_json() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo").display().to_string();
    let out = llmcm(None, &["demo", "--data-dir", &data]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = llmcm(None, &["verify", "--data-dir", &data]);
    assert!(out.status.success());
    assert!(!stderr(&out).contains("INFO"), "{}", stderr(&out));
    let out = llmcm(None, &["-v", "verify", "--data-dir", &data]);
    assert!(out.status.success());
    let out = llmcm(
        None,
        &[
            "--json", "token", "new", "--name", "bot", "--role", "reader",
        ],
    );
    let doc: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(doc["token"].as_str().unwrap().starts_with("llmcm_"));
    assert_eq!(doc["entry"]["role"], "reader");
}

#[test]
fn watch_resumes_by_itself_across_a_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = Server::start(&data, "", &[]);
    let addr = s.base.trim_start_matches("http://").to_owned();
    let mut watcher = Command::new(env!("CARGO_BIN_EXE_llmcm"))
        .args(["--json", "watch", "app/"])
        .env("LLMCM_SERVER", &s.base)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watcher.stdout.take().unwrap()).lines();
    // Wait for the watch to be open, then commit.
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.metric("llmcm_watchers").unwrap_or(0.0) < 1.0 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(50));
    }
    let first = put(&s, "app/a", "1");
    let line = lines.next().unwrap().unwrap();
    let event: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["revision"], first);
    // Restart on the same address; the commits made meanwhile and after arrive once each.
    s.stop();
    let s = Server::start(&data, "", &["--listen", &addr]);
    let second = put(&s, "app/b", "2");
    let third = put(&s, "app/c", "3");
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let line = lines.next().unwrap().unwrap();
        let event: Value = serde_json::from_str(&line).unwrap();
        seen.push(event["revision"].as_u64().unwrap());
    }
    assert_eq!(seen, [second, third]);
    let _ = watcher.kill();
    let _ = watcher.wait();
}
