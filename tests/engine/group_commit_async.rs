//! Group commit with async appenders (the server's writes): tasks that await their batch share
//! one order with threads that append at the same time; a write abandoned after it was queued
//! (its future dropped, as when a client goes away) still commits; conditions are atomic with
//! the commit; a failed batch fails every task waiting on it or behind it, and nothing
//! acknowledged is lost.

use crate::common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use futures_util::FutureExt;
use llmcm::fs::{Fault, MemFs};
use llmcm::log::{Log, LogError};
use llmcm::storage_format::commit::Op;
use llmcm::store::{Condition, Point, Store, WriteError, WriteRequest};

fn put_request(key: &str, n: u64, condition: Option<u64>) -> WriteRequest {
    WriteRequest {
        actor: "t".into(),
        reason: String::new(),
        ops: vec![Op::Put {
            key: key.into(),
            value: format!("{{\"n\":{n}}}").into_bytes(),
        }],
        conditions: condition
            .map(|revision| Condition {
                key: key.into(),
                revision,
            })
            .into_iter()
            .collect(),
        must_exist: Vec::new(),
    }
}

#[test]
fn tasks_threads_and_abandoned_writes_share_one_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), small_segments()).unwrap());
    let rt = runtime();
    let (tasks, per_task, threads, per_thread, abandoned) = (32u64, 25u64, 4u64, 25u64, 20u64);
    let thread_handles: Vec<_> = (0..threads)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                (0..per_thread)
                    .map(|n| {
                        store
                            .write(put_request(&format!("thread{t}/k"), n, None))
                            .unwrap()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut acked = rt.block_on(async {
        let handles: Vec<_> = (0..tasks)
            .map(|t| {
                let store = store.clone();
                tokio::spawn(async move {
                    let mut infos = Vec::new();
                    for n in 0..per_task {
                        let info = store
                            .write_async(put_request(&format!("task{t}/k"), n, None))
                            .await
                            .unwrap();
                        infos.push(info);
                    }
                    infos
                })
            })
            .collect();
        // Abandoned writes: polled once (queued, waiting for their batch), then dropped.
        for a in 0..abandoned {
            let store = store.clone();
            tokio::spawn(async move {
                let write = store.write_async(put_request(&format!("abandoned/{a}"), a, None));
                // Usually not durable yet at the first poll; dropped either way.
                let _ = write.now_or_never();
            })
            .await
            .unwrap();
        }
        let mut all = Vec::new();
        for h in handles {
            let infos = h.await.unwrap();
            assert!(
                infos.windows(2).all(|w| w[0].revision < w[1].revision),
                "a task's own writes keep its order"
            );
            all.extend(infos);
        }
        all
    });
    for h in thread_handles {
        acked.extend(h.join().unwrap());
    }
    let total = tasks * per_task + threads * per_thread + abandoned;
    // The abandoned writes land without anyone waiting for them.
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.log().head().revision < total {
        assert!(
            Instant::now() < deadline,
            "abandoned writes never committed"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(store.log().head().revision, total);
    for a in 0..abandoned {
        let v = store
            .get(&format!("abandoned/{a}"), Point::Latest)
            .unwrap()
            .expect("an abandoned write committed");
        assert_eq!(v.value.as_bytes(), format!("{{\"n\":{a}}}").as_bytes());
    }
    acked.sort_by_key(|i| i.revision);
    acked.dedup_by_key(|i| i.revision);
    assert_eq!(
        acked.len() as u64,
        total - abandoned,
        "distinct revisions for every acknowledged write"
    );
    let stats = store.log().stats();
    assert!(
        stats.batches < stats.commits,
        "fsyncs were shared: {} batches for {} commits",
        stats.batches,
        stats.commits
    );
    drop(rt);
    Arc::try_unwrap(store)
        .ok()
        .expect("no other handle")
        .close()
        .unwrap();
    let report = assert_verifies(&llmcm::fs::RealFs, dir.path());
    assert_eq!(report.commits, total);
}

#[test]
fn async_racing_creates_have_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), small_segments()).unwrap());
    let rt = runtime();
    for round in 0..10 {
        let key = format!("race/{round}");
        let results = rt.block_on(async {
            let handles: Vec<_> = (0..16)
                .map(|n| {
                    let store = store.clone();
                    let key = key.clone();
                    tokio::spawn(
                        async move { store.write_async(put_request(&key, n, Some(0))).await },
                    )
                })
                .collect();
            let mut results = Vec::new();
            for h in handles {
                results.push(h.await.unwrap());
            }
            results
        });
        let winners = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(winners, 1, "round {round}: exactly one create wins");
        assert!(
            results
                .iter()
                .filter_map(|r| r.as_ref().err())
                .all(|e| matches!(e, WriteError::Conflict(_))),
            "the others see a conflict"
        );
    }
}

#[test]
fn a_failed_batch_fails_its_waiting_tasks_and_loses_nothing_acknowledged() {
    let fs = MemFs::new();
    let log = Arc::new(open_mem(&fs, small_segments()));
    let rt = runtime();
    let results = rt.block_on(async {
        let handles: Vec<_> = (0..16u64)
            .map(|t| {
                let log = log.clone();
                tokio::spawn(async move {
                    let mut results = Vec::new();
                    for n in 0..40u64 {
                        let r = Log::append_checked_async(
                            &log,
                            change(&format!("t{t}/k"), n),
                            1000,
                            |_| Ok::<(), ()>(()),
                        )
                        .await
                        .map(|checked| checked.unwrap());
                        results.push(r);
                    }
                    results
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(5)).await;
        fs.set_fault(Some(Fault {
            after_ops: 3,
            disk_full: false,
            sticky: true,
        }));
        let mut all = Vec::new();
        for h in handles {
            all.push(h.await.unwrap());
        }
        all
    });
    assert!(fs.fault_fired(), "the fault fired while tasks were writing");
    let mut acked = Vec::new();
    for task in &results {
        // Each task: acknowledged writes, then only refusals (the log is latched read-only).
        let first_err = task.iter().position(|r| r.is_err()).unwrap_or(task.len());
        assert!(
            task[first_err..]
                .iter()
                .all(|r| matches!(r, Err(LogError::ReadOnly { .. })))
        );
        acked.extend(task[..first_err].iter().map(|r| *r.as_ref().unwrap()));
    }
    assert!(
        results.iter().any(|t| t.iter().any(|r| r.is_err())),
        "some write failed"
    );
    let durable = log.head().revision;
    assert!(acked.iter().all(|i| i.revision <= durable));
    drop(rt);
    drop(log);
    fs.set_fault(None);
    let reopened = open_mem(&fs.crash(), small_segments());
    let recovered = read_all(&reopened);
    for info in &acked {
        assert!(
            recovered.iter().any(|(r, _, _)| *r == info.revision),
            "acknowledged revision {} survived",
            info.revision
        );
    }
}
