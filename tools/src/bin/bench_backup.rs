//! Backups at scale, into a directory repository on the same disk. Prints figures and ratios; it
//! is not a test.
//!
//! 1. Full backup of a store (default 1M commits, built by `bench_reads --build-only`) against
//!    `cp -r` + `sync` of its data directory, alternated (cp, full, cp, full); throughput is the
//!    data directory's bytes per second.
//! 2. An incremental backup after 1% more commits, as a share of the full backup's time.
//! 3. Restore of the newest backup from the repository into a new directory (throughput in
//!    repository bytes read per second).
//!
//!     cargo run --release -p llmcm-tools --bin bench_backup -- --dir /work/bench-backup

use llmcm_tools::{dir_bytes, sync};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use llmcm::backup::{self, BackupKind, Repo};
use llmcm::storage_format::commit::Op;
use llmcm::store::restore::RestorePoint;
use llmcm::store::{CommitRequest, LogConfig};
use llmcm::store::{MaintenanceConfig, Store};

#[derive(Parser)]
struct Args {
    /// Scratch directory on the disk under test; emptied first.
    #[arg(long, default_value = "./bench-backup")]
    dir: PathBuf,
    #[arg(long, default_value_t = 1_000_000)]
    commits: u64,
}

/// "name 12.3 ms, ..." for a backup's phases.
fn phases(phases: &[(&str, f64)]) -> String {
    phases
        .iter()
        .map(|(name, secs)| format!("{name} {:.1} ms", secs * 1e3))
        .collect::<Vec<_>>()
        .join(", ")
}

fn main() {
    let args = Args::parse();
    let _ = std::fs::remove_dir_all(&args.dir);
    std::fs::create_dir_all(&args.dir).unwrap();
    let data = args.dir.join("store");
    let exe = std::env::current_exe()
        .unwrap()
        .with_file_name("bench_reads");
    let status = Command::new(exe)
        .arg("--build-only")
        .arg(&data)
        .arg("--commits")
        .arg(args.commits.to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let store = Arc::new(
        Store::open_configured(&data, LogConfig::default(), MaintenanceConfig::manual()).unwrap(),
    );
    store.snapshot().unwrap();
    let bytes = dir_bytes(&data);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut cp_rates = Vec::new();
    let mut full_rates = Vec::new();
    let mut full_secs = Vec::new();
    for round in 0..2 {
        let copy = args.dir.join(format!("cp-{round}"));
        sync();
        let t = Instant::now();
        let status = Command::new("cp")
            .arg("-r")
            .arg(&data)
            .arg(&copy)
            .status()
            .unwrap();
        assert!(status.success());
        sync();
        let secs = t.elapsed().as_secs_f64();
        std::fs::remove_dir_all(&copy).unwrap();
        cp_rates.push(bytes as f64 / secs);
        println!(
            "cp -r + sync of {bytes} bytes: {secs:.2} s ({:.0} MB/s)",
            bytes as f64 / secs / 1e6
        );

        let repo_dir = args.dir.join(format!("repo-{round}"));
        let repo = Repo::open(repo_dir.to_str().unwrap()).unwrap();
        sync();
        let t = Instant::now();
        let created = rt
            .block_on(backup::create(&store, &repo, BackupKind::Full))
            .unwrap();
        sync();
        let secs = t.elapsed().as_secs_f64();
        full_rates.push(bytes as f64 / secs);
        full_secs.push(secs);
        println!(
            "full backup: {} files, {} bytes uploaded (each read back and checked, fsynced), {secs:.2} s ({:.0} MB/s of the data directory)",
            created.manifest.files.len(),
            created.manifest.bytes,
            bytes as f64 / secs / 1e6
        );
        println!("full backup phases: {}", phases(&created.phases));
        if round == 0 {
            std::fs::remove_dir_all(&repo_dir).unwrap();
        }
    }
    let cp = cp_rates.iter().sum::<f64>() / cp_rates.len() as f64;
    let full = full_rates.iter().sum::<f64>() / full_rates.len() as f64;
    println!(
        "full backup throughput {:.0} MB/s vs cp -r + sync {:.0} MB/s: {:.2}x (target >= 0.70x)",
        full / 1e6,
        cp / 1e6,
        full / cp
    );

    // 1% more commits, then an incremental backup.
    let repo = Repo::open(args.dir.join("repo-1").to_str().unwrap()).unwrap();
    let more = args.commits / 100;
    for i in 0..more {
        store
            .append(CommitRequest::change(
                "bench",
                "",
                vec![Op::Put {
                    key: format!("svc{:04}/key{:03}", (i / 100) % 1000, i % 100),
                    value: format!("{{\"more\":{i},\"pad\":\"{}\"}}", "y".repeat(480)).into_bytes(),
                }],
            ))
            .unwrap();
    }
    sync();
    let t = Instant::now();
    let incr = rt
        .block_on(backup::create(&store, &repo, BackupKind::Incremental))
        .unwrap();
    sync();
    let incr_secs = t.elapsed().as_secs_f64();
    println!("incremental phases: {}", phases(&incr.phases));
    let full_mean = full_secs.iter().sum::<f64>() / full_secs.len() as f64;
    println!(
        "incremental after {more} more commits (1%): {} files uploaded, {} bytes, {incr_secs:.3} s = {:.1}% of the full backup's {full_mean:.2} s (target <= 3%)",
        incr.files_uploaded,
        incr.manifest.bytes,
        incr_secs / full_mean * 100.0
    );

    // Restore the newest backup.
    let target = args.dir.join("restored");
    let repo_bytes = dir_bytes(&args.dir.join("repo-1"));
    let t = Instant::now();
    let outcome = rt
        .block_on(backup::restore(
            &repo,
            None,
            llmcm::store::restore::RestoreOptions::new(RestorePoint::Latest, None, 0, true),
            &target,
            &mut |_| {},
        ))
        .unwrap();
    sync();
    let secs = t.elapsed().as_secs_f64();
    println!(
        "restore of the newest backup (revision {}, {} keys, from {} + {} commits): {secs:.2} s, {:.0} MB/s of repository ({repo_bytes} bytes)",
        outcome.resolved.revision,
        outcome.keys,
        outcome.base,
        outcome.commits_replayed,
        repo_bytes as f64 / secs / 1e6
    );
    drop(store);
    let _ = std::fs::remove_dir_all(&args.dir);
}
