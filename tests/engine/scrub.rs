//! The background scrub, against the real server: it re-reads every sealed segment each
//! `storage.scrub_every`; one damaged byte in a sealed segment is reported — `/health` warning
//! naming the file and offset, `llmcm_scrub_damaged_segments`, `llmcm doctor` failing — without
//! touching the file or stopping reads of anything else; once the bytes are good again the next
//! pass clears the report.

use crate::server;

use std::time::{Duration, Instant};

use serde_json::Value;
use server::{Server, client};

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn scrub_reports_damage_in_a_sealed_segment_and_clears_when_good() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let config = "[storage]\nscrub_every = \"1s\"\nsegment_bytes_max = 65536\n";
    let s = Server::start(&data, config, &[]);
    let value = format!("\"{}\"", "v".repeat(1000));
    for i in 0..200 {
        let r = client()
            .put(s.url(&format!("/v1/kv/app/k{}", i % 20)))
            .body(value.clone())
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let mut sealed: Vec<_> = std::fs::read_dir(data.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    sealed.sort();
    sealed.pop(); // the active segment
    assert!(sealed.len() >= 2, "{sealed:?}");
    wait_until("a clean scrub pass", || {
        s.health()["scrub"]["passes"].as_u64() >= Some(1)
    });
    assert_eq!(s.metric("llmcm_scrub_damaged_segments"), Some(0.0));
    assert!(s.metric("llmcm_scrub_last_pass_timestamp_seconds").unwrap() > 1.7e9);
    assert_eq!(s.health()["status"], "ok");

    // One damaged byte inside a record of the first sealed segment.
    let victim = &sealed[0];
    let good = std::fs::read(victim).unwrap();
    let mut bad = good.clone();
    bad[300] ^= 0x10;
    // In place (the server has the file mapped: never truncate it).
    let poke = |byte: u8| {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(victim)
            .unwrap();
        f.write_all_at(&[byte], 300).unwrap();
    };
    poke(bad[300]);
    let name = victim.file_name().unwrap().to_str().unwrap().to_owned();
    wait_until("the damage to be reported", || {
        s.metric("llmcm_scrub_damaged_segments") == Some(1.0)
    });
    let h = s.health();
    let warnings = h["warnings"].to_string();
    assert!(
        warnings.contains(&format!("scrub: log/{name}: corruption at offset")),
        "{h}"
    );
    assert_eq!(h["status"], "warn");
    let doctor = s.llmcm(&["--json", "doctor"]);
    assert_eq!(doctor.status.code(), Some(1));
    let doc: Value = serde_json::from_slice(&doctor.stdout).unwrap();
    let check = doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "log scrub")
        .unwrap()
        .clone();
    assert_eq!(check["status"], "fail", "{doc}");
    // The scrub only reports: the file is as damaged as we left it, and the server still answers.
    assert_eq!(std::fs::read(victim).unwrap(), bad);
    let r = client().get(s.url("/v1/kv/app/k19")).send().unwrap();
    assert_eq!(r.status(), 200);

    poke(good[300]);
    wait_until("the report to clear", || {
        s.metric("llmcm_scrub_damaged_segments") == Some(0.0)
    });
    assert_eq!(s.health()["status"], "ok");
    s.stop();
}
