//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use llmcm::clock::{Clock, ManualClock, SystemClock};
use llmcm::fs::{Fs, MemFs};
use llmcm::log::{CommitRequest, Log, LogConfig};
use llmcm::storage_format::commit::Op;

pub const DIR: &str = "/data";

pub fn put(key: &str, value: &str) -> Op {
    Op::Put {
        key: key.to_owned(),
        value: value.as_bytes().to_vec(),
    }
}

pub fn delete(key: &str) -> Op {
    Op::Delete {
        key: key.to_owned(),
    }
}

/// A change commit putting `{"n": n}` at `key`.
pub fn change(key: &str, n: u64) -> CommitRequest {
    CommitRequest::change("tester", "test", vec![put(key, &format!("{{\"n\":{n}}}"))])
}

/// Small segments so tests cross segment boundaries.
pub fn small_segments() -> LogConfig {
    LogConfig {
        segment_bytes_max: 64 << 10,
        ..LogConfig::default()
    }
}

pub fn open_mem(fs: &MemFs, config: LogConfig) -> Log {
    Log::open_with(
        Arc::new(fs.clone()),
        Arc::new(SystemClock),
        Path::new(DIR),
        config,
    )
    .expect("open")
}

pub fn open_mem_clock(fs: &MemFs, clock: Arc<ManualClock>, config: LogConfig) -> Log {
    let clock: Arc<dyn Clock> = clock;
    Log::open_with(Arc::new(fs.clone()), clock, Path::new(DIR), config).expect("open")
}

/// Every durable commit's (revision, first key, value) in order.
pub fn read_all(log: &Log) -> Vec<(u64, String, Vec<u8>)> {
    let mut out = Vec::new();
    log.for_each_commit(0, u64::MAX, &mut |link| {
        let commit = &link.payload.commit;
        let (key, value) = match &commit.ops[0] {
            Op::Put { key, value } => (key.clone(), value.clone()),
            Op::Delete { key } => (key.clone(), Vec::new()),
        };
        out.push((commit.revision, key, value));
    })
    .expect("read back");
    out
}

/// Runs the offline verifier and asserts it found no problem.
pub fn assert_verifies(fs: &dyn Fs, dir: &Path) -> llmcm::log::verify::VerifyReport {
    let report = llmcm::log::verify::verify_dir(fs, dir);
    assert_eq!(
        report.problems(),
        0,
        "verify found problems: {:#?}",
        report.findings
    );
    report
}

/// Runs the ignored test `child_test` of this same test binary as a child process (with `env` set
/// to `dir`), lets it work for `run_for`, SIGKILLs it, and returns what followed `ACK ` on each
/// line it printed before dying.
pub fn run_child_and_kill(
    child_test: &str,
    env: &str,
    dir: &Path,
    run_for: std::time::Duration,
) -> Vec<String> {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut child = Command::new(std::env::current_exe().expect("the test binary"))
        .args([
            child_test,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(env, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the child");
    let stdout = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .filter_map(|line| line.strip_prefix("ACK ").map(str::to_owned))
            .collect::<Vec<_>>()
    });
    std::thread::sleep(run_for);
    child.kill().expect("SIGKILL");
    child.wait().expect("reap the child");
    reader.join().expect("the reader thread")
}

/// A two-worker runtime, as the server's on this machine.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}
