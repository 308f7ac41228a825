//! The chain export is re-verifiable without llmcm: `tools/verify_chain.py` (Python standard
//! library only) accepts the library's export of a real log — across segments and commit kinds —
//! and rejects every kind of tampering: an edited value, a removed commit, reordered commits, a
//! forged hash, and a wrong expected digest.

use crate::common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::*;
use llmcm::log::{CommitRequest, Log};
use llmcm::storage_format::commit::CommitKind;

fn run_script(input: &str, args: &[&str]) -> (i32, String) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tools/verify_chain.py");
    let mut child = Command::new("python3")
        .arg(script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 is installed (.ci/run installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

fn export() -> (String, Vec<(u64, String)>) {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_segments()).unwrap();
    let mut hashes = Vec::new();
    for n in 0..40u64 {
        let ops = vec![put(
            &format!("prod/k{}", n % 5),
            &format!("{{\"n\":{n},\"s\":\"é\\u00e9\"}}"),
        )];
        let info = log
            .append(CommitRequest::change("auditor-test", "reason ✓", ops))
            .unwrap();
        hashes.push((info.revision, llmcm::storage_format::hex(&info.hash)));
        if n == 20 {
            log.roll().unwrap();
        }
    }
    let system = CommitRequest {
        kind: CommitKind::ReadOnly,
        actor: "operator".into(),
        reason: "maintenance".into(),
        detail: br#"{"on":true}"#.to_vec(),
        ops: vec![],
    };
    log.append(system).unwrap();
    log.append(CommitRequest::change("a", "", vec![delete("prod/k1")]))
        .unwrap();
    let mut out = Vec::new();
    let count = llmcm::chain::export_chain(&log, 1, u64::MAX, &mut out).unwrap();
    assert_eq!(count, 42);
    (String::from_utf8(out).unwrap(), hashes)
}

#[test]
fn the_script_accepts_the_library_export() {
    let (text, hashes) = export();
    let (code, out) = run_script(&text, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("ok: 42 commits, revisions 1..42"), "{out}");
    let (rev, hash) = &hashes[9];
    let (code, out) = run_script(&text, &["--expected", &format!("{rev}:{hash}")]);
    assert_eq!(code, 0, "{out}");
    // A partial export (from the middle) verifies too.
    let tail: String = text.lines().skip(10).map(|l| format!("{l}\n")).collect();
    let (code, out) = run_script(&tail, &[]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn the_script_rejects_tampering() {
    let (text, hashes) = export();
    let lines: Vec<&str> = text.lines().collect();
    let joined = |ls: &[&str]| ls.iter().map(|l| format!("{l}\n")).collect::<String>();

    // An edited value inside the canonical bytes ("n":5 → "n":6 in hex).
    let mut edited = lines.clone();
    let line5 = edited[5].replace("226e223a35", "226e223a36");
    assert_ne!(line5, edited[5]);
    edited[5] = &line5;
    let (code, out) = run_script(&joined(&edited), &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("revision 6"), "{out}");

    // A removed commit.
    let mut removed = lines.clone();
    removed.remove(7);
    let (code, out) = run_script(&joined(&removed), &[]);
    assert_eq!(code, 1, "{out}");

    // Two commits swapped.
    let mut swapped = lines.clone();
    swapped.swap(3, 4);
    let (code, _) = run_script(&joined(&swapped), &[]);
    assert_eq!(code, 1);

    // A forged hash.
    let forged = text.replacen(&hashes[0].1, &"0".repeat(64), 1);
    let (code, _) = run_script(&forged, &[]);
    assert_eq!(code, 1);

    // A wrong saved digest.
    let (code, out) = run_script(&text, &["--expected", &format!("3:{}", "ab".repeat(32))]);
    assert_eq!(code, 1, "{out}");

    // Not an export at all.
    let (code, _) = run_script("not json\n", &[]);
    assert_eq!(code, 2);
}
