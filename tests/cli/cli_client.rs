//! The `llmcm` client commands against a real server: every command's readable output and
//! `--json`, values inline / `@file` / stdin, the token from `LLMCM_TOKEN`, and a distinct exit
//! code per kind of failure (3 not found, 4 conflict, 5 denied, 6 unavailable, 7 rejected).

use crate::server;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use server::Server;

fn llmcm(s: &Server, token: Option<&str>, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_llmcm"));
    cmd.args(args)
        .env("LLMCM_SERVER", &s.base)
        .env_remove("LLMCM_TOKEN");
    if let Some(t) = token {
        cmd.env("LLMCM_TOKEN", t);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        child
            .stdin
            .as_mut()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn fails(out: &Output, code: i32) -> String {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout {} stderr {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8(out.stderr.clone()).unwrap();
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("llmcm: error: "), "{err}");
    err
}

#[test]
fn client_commands_and_exit_codes() {
    let (admin, entry) = llmcm::token::new_token("ops", llmcm::config::Role::Admin, &[]).unwrap();
    let (reader, reader_entry) =
        llmcm::token::new_token("ro", llmcm::config::Role::Reader, &[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        &dir.path().join("data"),
        &format!("{entry}{reader_entry}"),
        &[],
    );
    let t = Some(admin.as_str());

    assert!(
        ok(&llmcm(
            &s,
            t,
            &["put", "prod/m", r#"{"model":"m1"}"#, "--reason", "first"],
            None
        ))
        .starts_with("revision 1 at ")
    );
    let file = dir.path().join("v.json");
    std::fs::write(&file, r#"{"model":"m2"}"#).unwrap();
    ok(&llmcm(
        &s,
        t,
        &["put", "prod/m", &format!("@{}", file.display())],
        None,
    ));
    ok(&llmcm(&s, t, &["put", "prod/n", "-"], Some("[1,2]")));
    let got: Value = serde_json::from_str(&ok(&llmcm(&s, t, &["get", "prod/m"], None))).unwrap();
    assert_eq!(got, serde_json::json!({"model": "m2"}));
    let got: Value = serde_json::from_str(&ok(&llmcm(
        &s,
        t,
        &["get", "prod/m", "--revision", "1", "--json"],
        None,
    )))
    .unwrap();
    assert_eq!(got["value"]["model"], "m1");
    assert_eq!(got["version"], 1);

    let ls = ok(&llmcm(&s, t, &["ls", "prod/"], None));
    assert!(ls.lines().next().unwrap().starts_with("KEY"), "{ls}");
    assert_eq!(ls.lines().count(), 3, "{ls}");
    let ls: Value =
        serde_json::from_str(&ok(&llmcm(&s, t, &["ls", "prod/", "--json"], None))).unwrap();
    assert_eq!(ls["items"].as_array().unwrap().len(), 2);
    let history = ok(&llmcm(&s, t, &["history", "prod/m"], None));
    assert!(
        history.contains("first") && history.lines().count() == 3,
        "{history}"
    );
    let log = ok(&llmcm(&s, t, &["log", "--prefix", "prod/"], None));
    assert_eq!(log.lines().count(), 4, "{log}");
    let diff = ok(&llmcm(
        &s,
        t,
        &["diff", "--prefix", "prod/", "--from", "1", "--to", "3"],
        None,
    ));
    assert!(
        diff.contains("~ prod/m") && diff.contains("+ prod/n"),
        "{diff}"
    );
    let txn = r#"{"ops": [{"op": "delete", "key": "prod/n"}], "reason": "cleanup"}"#;
    ok(&llmcm(&s, t, &["txn", "-"], Some(txn)));
    assert!(
        ok(&llmcm(
            &s,
            t,
            &["rollback", "prod/", "--revision", "1"],
            None
        ))
        .starts_with("rolled back")
    );
    assert!(
        ok(&llmcm(
            &s,
            t,
            &["rollback", "prod/", "--revision", "1"],
            None
        ))
        .starts_with("nothing to change")
    );
    let status = ok(&llmcm(&s, t, &["status"], None));
    assert!(status.contains("read-only  off"), "{status}");
    ok(&llmcm(
        &s,
        t,
        &["read-only", "on", "--reason", "drill"],
        None,
    ));
    fails(&llmcm(&s, t, &["put", "prod/m", "1"], None), 6);
    ok(&llmcm(&s, t, &["read-only", "off"], None));

    // Exit codes by kind.
    fails(&llmcm(&s, t, &["get", "prod/absent"], None), 3);
    let conflict = fails(
        &llmcm(&s, t, &["put", "prod/m", "1", "--if-revision", "1"], None),
        4,
    );
    assert!(conflict.contains("prod/m is at revision"), "{conflict}");
    fails(&llmcm(&s, None, &["get", "prod/m"], None), 5);
    fails(
        &llmcm(&s, Some(reader.as_str()), &["put", "prod/m", "1"], None),
        5,
    );
    fails(&llmcm(&s, t, &["put", "a//b", "1"], None), 7);
    fails(&llmcm(&s, t, &["put", "a/b", "{not json"], None), 7);
    let mut gone = llmcm(&s, t, &["status"], None);
    gone.status = Command::new(env!("CARGO_BIN_EXE_llmcm"))
        .args(["get", "a/b", "--server", "http://127.0.0.1:1"])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(gone.status.code(), Some(6));
    let usage = Command::new(env!("CARGO_BIN_EXE_llmcm"))
        .args(["get"])
        .output()
        .unwrap();
    assert_eq!(usage.status.code(), Some(2));

    let completions = Command::new(env!("CARGO_BIN_EXE_llmcm"))
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(completions.status.success());
    assert!(String::from_utf8_lossy(&completions.stdout).contains("llmcm"));
}
