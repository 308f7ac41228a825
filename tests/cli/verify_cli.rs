//! The `llmcm` binary: `demo` appends and reads back; `verify --data-dir` exits 0 on a healthy
//! directory, 1 naming file and offset on corruption (table and JSON), and 2 with a one-line error
//! on bad input; the demo fails when its chain verification finds damage, and refuses to open a
//! store whose sealed segment's seal is damaged.

use std::process::Command;

fn llmcm(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_llmcm"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn demo_then_verify_then_corrupt() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let dir_arg = dir.to_str().unwrap();
    let (code, out, err) = llmcm(&["demo", "--data-dir", dir_arg]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("appended revision 3"), "{out}");
    assert!(out.contains("\"key\":\"prod/chatbot/model\""), "{out}");
    assert!(out.contains("0 problems"), "{out}");

    let (code, out, _) = llmcm(&["verify", "--data-dir", dir_arg]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("3 commits, revisions 1 to 3"), "{out}");
    assert!(out.contains("0 problems"), "{out}");

    // Damage the first record's payload.
    let segment = dir.join("log/seg-00000000000000000001.log");
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[128 + 32 + 5] ^= 0x10;
    std::fs::write(&segment, bytes).unwrap();
    let (code, out, _) = llmcm(&["verify", "--data-dir", dir_arg]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("PROBLEM  log/seg-00000000000000000001.log"),
        "{out}"
    );
    assert!(out.contains("offset 128 (revision 1)"), "{out}");
    let (code, out, _) = llmcm(&["verify", "--data-dir", dir_arg, "--json"]);
    assert_eq!(code, 1);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["problems"], 1);

    // The demo's chain verification finds the damaged record and fails.
    let (code, _, err) = llmcm(&["demo", "--data-dir", dir_arg]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("chain verification failed at revision 1"),
        "{err}"
    );

    // A damaged seal: the store refuses to open, naming the file and offset.
    let len = std::fs::metadata(&segment).unwrap().len();
    let mut bytes = std::fs::read(&segment).unwrap();
    let at = bytes.len() - 20;
    bytes[at] ^= 0x10;
    std::fs::write(&segment, bytes).unwrap();
    let (code, _, err) = llmcm(&["demo", "--data-dir", dir_arg]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!(
            "seg-00000000000000000001.log at offset {}",
            len - 128
        )),
        "{err}"
    );
}

#[test]
fn bad_input_is_one_line_and_exit_2() {
    let (code, out, err) = llmcm(&["verify", "--data-dir", "/nonexistent/llmcm"]);
    assert_eq!(code, 2, "{out}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.starts_with("llmcm: error:"), "{err}");
}
