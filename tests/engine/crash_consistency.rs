//! Crash consistency with real processes: a child process appends from several threads and
//! prints each acknowledged revision; the parent SIGKILLs it at a random moment, then checks
//! that every acknowledged commit is in the log with its content, revisions are dense, and the
//! chain verifies. Rounds accumulate in one data directory with small segments, so kills land
//! during appends, rolls, recoveries and truncations alike.
//!
//! `LLMCM_CRASH_ROUNDS` sets the number of rounds (default 50).

use crate::common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use llmcm::fs::RealFs;
use llmcm::log::{CommitRequest, Log};
use llmcm::storage_format::commit::Op;

const CHILD_ENV: &str = "LLMCM_CRASH_CHILD_DIR";
const WRITER_THREADS: usize = 4;

/// The child's body: runs only when the parent re-executes this test binary for it.
#[test]
#[ignore = "child process of crash_consistency; run by the parent test"]
fn crash_child() {
    let dir = std::env::var(CHILD_ENV).expect("run by the parent with the data directory");
    let log = Arc::new(Log::open(&dir, small_segments()).expect("child open"));
    let threads: Vec<_> = (0..WRITER_THREADS)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                for n in 0u64.. {
                    let key = format!("w{t}/k{}", n % 13);
                    let value = format!("{{\"t\":{t},\"n\":{n},\"pad\":\"{}\"}}", "p".repeat(300));
                    let info = log
                        .append(CommitRequest::change("crash", "", vec![put(&key, &value)]))
                        .expect("append");
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ACK {} {key} {t} {n}", info.revision).expect("stdout");
                    out.flush().expect("flush");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// xorshift64*: enough randomness for kill timing, reproducible from the printed seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[test]
fn acknowledged_commits_survive_sigkill() {
    let rounds: u64 = std::env::var("LLMCM_CRASH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(50);
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("crash test seed {seed}, {rounds} rounds");
    let mut rng = Rng(seed);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    // revision → (key, thread, n) of every acknowledged commit so far.
    let mut acked: BTreeMap<u64, (String, u64, u64)> = BTreeMap::new();
    for round in 0..rounds {
        let run_for = Duration::from_millis(20 + rng.next() % 180);
        let lines = run_child_and_kill("crash_consistency::crash_child", CHILD_ENV, &dir, run_for);
        let parsed = lines.iter().map(|rest| {
            let f: Vec<&str> = rest.split(' ').collect();
            (
                f[0].parse::<u64>().unwrap(),
                f[1].to_owned(),
                f[2].parse::<u64>().unwrap(),
                f[3].parse::<u64>().unwrap(),
            )
        });
        for (revision, key, t, n) in parsed {
            assert!(
                acked.insert(revision, (key, t, n)).is_none(),
                "revision {revision} acknowledged twice"
            );
        }

        if round % 2 == 0 {
            // Recover here: every acknowledged commit is present with its content.
            let log = Log::open(&dir, small_segments()).expect("reopen after SIGKILL");
            let head = log.head().revision;
            let max_acked = acked.keys().next_back().copied().unwrap_or(0);
            assert!(
                head >= max_acked,
                "round {round}: head {head} < acknowledged {max_acked}"
            );
            let mut seen = 0u64;
            log.for_each_commit(1, u64::MAX, &mut |link| {
                seen += 1;
                let commit = &link.payload.commit;
                assert_eq!(commit.revision, seen, "dense revisions");
                if let Some((key, t, n)) = acked.get(&commit.revision) {
                    let Op::Put { key: k, value } = &commit.ops[0] else {
                        panic!("a put")
                    };
                    assert_eq!(k, key);
                    let text = String::from_utf8_lossy(value);
                    assert!(
                        text.starts_with(&format!("{{\"t\":{t},\"n\":{n},")),
                        "{text}"
                    );
                }
            })
            .unwrap();
            assert_eq!(seen, head);
            drop(log);
        }
        // Offline, the whole chain verifies (a torn tail left for the next open is a note).
        let report = llmcm::log::verify::verify_dir(&RealFs, Path::new(&dir));
        assert_eq!(
            report.problems(),
            0,
            "round {round}: {:#?}",
            report.findings
        );
    }
    assert!(
        acked.len() > 100,
        "the children acknowledged only {} commits",
        acked.len()
    );
    let log = Log::open(&dir, small_segments()).unwrap();
    assert!(log.segments().len() > 2, "rolls happened under the kills");
    eprintln!(
        "{} acknowledged commits over {rounds} kills, {} segments",
        acked.len(),
        log.segments().len()
    );
}
