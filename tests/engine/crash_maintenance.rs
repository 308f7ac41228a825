//! Crashes during snapshot writing and at each step of compaction, against the real binary.
//!
//! A data directory with history is prepared with the library and its reads recorded (the
//! model). Then a server is started on it and asked for a snapshot or a compaction, and killed in
//! the middle: at every named step (`LLMCM_CRASH_AT`, which aborts the process there — no
//! unwinding, nothing flushed, as abrupt as `kill -9` for what is on disk), and with a real
//! SIGKILL at random moments while a slowly paced image is being written. After each crash the
//! directory is reopened: the horizon is the old one or the new one, never a mix; every read at
//! or after it equals the model; every point before it is `Compacted`; the chain verifies;
//! `llmcm verify` passes; and the next snapshot and compaction succeed.

use crate::server;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use llmcm::storage_format::commit::Op;
use llmcm::store::{CommitRequest, LogConfig};
use llmcm::store::{MaintenanceConfig, Point, ReadError, Store};
use server::{Server, client};

const KEYS: u64 = 1500;
const COMMITS: u64 = 300;
const CONFIG: &str =
    "[storage]\nsegment_bytes_max = 65536\n[snapshot]\nevery_commits = 0\nevery = \"0s\"\n";

fn store_config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 65536,
        ..LogConfig::default()
    }
}

fn quiet() -> MaintenanceConfig {
    MaintenanceConfig {
        snapshot_every_commits: 0,
        snapshot_every_us: 0,
        ..MaintenanceConfig::default()
    }
}

/// Writes the history; returns the model: revision → a digest of every live key at it.
fn prepare(dir: &Path) -> BTreeMap<u64, BTreeMap<String, (Vec<u8>, u64)>> {
    let store = Store::open_configured(dir, store_config(), quiet()).unwrap();
    let mut state: BTreeMap<String, (Vec<u8>, u64)> = BTreeMap::new();
    let mut model = BTreeMap::new();
    let mut seed = 0x1234_5678u64;
    for i in 0..COMMITS {
        let mut ops = Vec::new();
        let mut keys = Vec::new();
        for _ in 0..5 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let key = format!("svc/{:04}", (seed >> 33) % KEYS);
            if keys.contains(&key) {
                continue;
            }
            keys.push(key.clone());
            if (seed >> 20).is_multiple_of(10) {
                ops.push(Op::Delete { key });
            } else {
                let value = format!("{{\"i\":{i},\"pad\":\"{}\"}}", "v".repeat(400));
                ops.push(Op::Put {
                    key,
                    value: value.into_bytes(),
                });
            }
        }
        let info = store
            .append(CommitRequest::change("w", "", ops.clone()))
            .unwrap();
        for op in ops {
            match op {
                Op::Put { key, value } => {
                    state.insert(key, (value, info.revision));
                }
                Op::Delete { key } => {
                    state.remove(&key);
                }
            }
        }
        model.insert(info.revision, state.clone());
    }
    store.close().unwrap();
    model
}

fn listing(store: &Store, point: Point) -> Result<BTreeMap<String, (Vec<u8>, u64)>, ReadError> {
    let mut out = BTreeMap::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.list("", point, after.as_deref(), 1000)?;
        for v in page.items {
            out.insert(v.key.to_string(), (v.value.as_bytes().to_vec(), v.revision));
        }
        match page.next {
            Some(n) => after = Some(n),
            None => return Ok(out),
        }
    }
}

/// Reopens and checks everything against the model; returns the horizon found.
fn check(dir: &Path, model: &BTreeMap<u64, BTreeMap<String, (Vec<u8>, u64)>>, when: &str) -> u64 {
    let store = Store::open_configured(dir, store_config(), quiet()).unwrap();
    store.check_snapshots();
    let horizon = store.log().horizon().revision;
    let last = *model.keys().last().unwrap();
    // Every 7th revision and the edges: the full list equals the model.
    for (&r, want) in model.range(horizon.max(1)..) {
        if r.is_multiple_of(7) || r == horizon || r == last {
            assert_eq!(
                &listing(&store, Point::Revision(r)).unwrap(),
                want,
                "{when}: revision {r}"
            );
        }
    }
    if horizon > 1 {
        assert!(
            matches!(
                store.get("svc/0001", Point::Revision(horizon - 1)),
                Err(ReadError::Compacted { .. })
            ),
            "{when}: below the horizon"
        );
    }
    let verified = store.verify_chain(None, None).unwrap();
    assert!(verified.ok(), "{when}: {:?}", verified.failure);
    for snapshot in store.snapshots() {
        assert!(snapshot.checked || snapshot.revision < store.snapshots().last().unwrap().revision);
    }
    drop(store);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_llmcm"))
        .args(["verify", "--data-dir"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{when}: llmcm verify: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    horizon
}

/// After a crash, the next snapshot and compaction work and keep the model.
fn next_ones_work(dir: &Path, model: &BTreeMap<u64, BTreeMap<String, (Vec<u8>, u64)>>) {
    let store = Store::open_configured(dir, store_config(), quiet()).unwrap();
    let snap = store.snapshot().unwrap();
    assert!(snap.revision >= *model.keys().last().unwrap());
    store.compact(0, "op", "after crash").unwrap();
    let horizon = store.log().horizon().revision;
    assert!(horizon > 0);
    drop(store);
    let got = check(dir, model, "after the next compaction");
    assert_eq!(got, horizon);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

#[test]
fn a_crash_at_any_step_of_a_snapshot_or_compaction_leaves_old_or_new() {
    let tmp = tempfile::tempdir().unwrap();
    let pristine = tmp.path().join("pristine");
    let model = prepare(&pristine);
    let steps = [
        ("/v1/admin/snapshot", "image:before-finish"),
        ("/v1/admin/snapshot", "image:before-sync"),
        ("/v1/admin/snapshot", "image:before-rename"),
        ("/v1/admin/compact", "image:before-finish"),
        ("/v1/admin/compact", "compaction:after-base-image"),
        ("/v1/admin/compact", "compaction:before-manifest"),
        ("/v1/admin/compact", "compaction:after-manifest"),
        ("/v1/admin/compact", "compaction:removing-segments"),
        ("/v1/admin/compact", "compaction:before-commit"),
    ];
    for (i, (route, step)) in steps.iter().enumerate() {
        let dir = tmp.path().join(format!("case-{i}"));
        copy_dir(&pristine, &dir);
        let mut s = Server::start_with_env(&[("LLMCM_CRASH_AT", step)], &dir, CONFIG, &[]);
        let answer = client()
            .post(s.url(route))
            .json(&serde_json::json!({"retain": "0s"}))
            .send();
        assert!(
            answer.is_err(),
            "{step}: the server answered instead of crashing"
        );
        let status = s
            .wait_exit(Duration::from_secs(30))
            .expect("the server died");
        assert!(!status.success(), "{step}: {status:?}");
        let horizon = check(&dir, &model, step);
        let expect_new = matches!(
            *step,
            "compaction:after-manifest"
                | "compaction:removing-segments"
                | "compaction:before-commit"
        );
        assert_eq!(horizon > 0, expect_new, "{step}: horizon {horizon}");
        // No stray files: temporary images and unnamed base images are gone after reopen.
        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .chain(std::fs::read_dir(dir.join("snapshots")).unwrap())
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(
            !names.iter().any(|n| n.ends_with(".tmp")),
            "{step}: {names:?}"
        );
        assert!(
            names.iter().filter(|n| n.starts_with("base-")).count() <= usize::from(expect_new),
            "{step}: {names:?}"
        );
        next_ones_work(&dir, &model);
    }
}

#[test]
fn sigkill_while_an_image_is_written_leaves_old_or_new() {
    let tmp = tempfile::tempdir().unwrap();
    let pristine = tmp.path().join("pristine");
    let model = prepare(&pristine);
    // Paced to 128 KiB/s, an image of this state takes a few seconds to write.
    let config = format!("{CONFIG}io_bytes_per_sec = 131072\n");
    for (i, (route, delay_ms)) in [
        ("/v1/admin/snapshot", 300u64),
        ("/v1/admin/snapshot", 1500),
        ("/v1/admin/compact", 200),
        ("/v1/admin/compact", 900),
        ("/v1/admin/compact", 2500),
    ]
    .into_iter()
    .enumerate()
    {
        let dir = tmp.path().join(format!("kill-{i}"));
        copy_dir(&pristine, &dir);
        let s = Server::start(&dir, &config, &[]);
        let url = s.url(route);
        let request = std::thread::spawn(move || {
            client()
                .post(url)
                .json(&serde_json::json!({"retain": "0s"}))
                .send()
                .map(|r| r.status().as_u16())
        });
        std::thread::sleep(Duration::from_millis(delay_ms));
        s.kill();
        let answered = request.join().unwrap();
        let when = format!("SIGKILL after {delay_ms} ms of {route} (answer {answered:?})");
        assert!(
            answered.is_err(),
            "{when}: the image was done before the kill"
        );
        check(&dir, &model, &when);
        next_ones_work(&dir, &model);
    }
}
