//! `llmcm backup create|list|verify|prune` (DESIGN.md §4, §6). `create` goes through the server
//! (which names the repository); the others run here, on a repository path or `s3://` URL.

use std::process::ExitCode;

use serde_json::json;

use super::client::Connection;
use super::text;
use crate::backup::{self, BackupError, Keep, Repo};
use crate::clock::format_timestamp_us;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Take a backup through the server into a repository it names in its config.
    Create {
        /// The repository's name in the server's `[[backup.repositories]]`.
        #[arg(long, value_name = "NAME")]
        repo: String,
        /// full, incremental (since the previous backup) or differential (since the last full).
        #[arg(long, default_value = "full", value_parser = ["full", "incremental", "differential"])]
        kind: String,
    },
    /// List the complete backups of a repository, oldest first (by their recorded sequence).
    List {
        /// The repository: a directory path or s3://bucket/prefix.
        #[arg(long, value_name = "URL", env = "LLMCM_REPO")]
        repo: Option<String>,
    },
    /// Re-read every file of every backup (or one) against its manifest; --deep also restores
    /// each into a scratch directory, replaying and checking the hash chain. Exit 1 on a problem.
    Verify {
        /// The repository: a directory path or s3://bucket/prefix.
        #[arg(long, value_name = "URL", env = "LLMCM_REPO")]
        repo: Option<String>,
        /// Check this backup only.
        #[arg(long)]
        id: Option<String>,
        /// Also restore each backup into a scratch directory and check its chain and content.
        #[arg(long)]
        deep: bool,
    },
    /// Restore the newest backup into a scratch directory, verify it (checksums, chain, content),
    /// compare its head with the live server's chain (--server / LLMCM_SERVER), and report the
    /// measured restore time (one part of the recovery time: not the time to notice, decide,
    /// and put the store into service). Exit 1 if anything fails or differs.
    Drill {
        /// The repository: a directory path or s3://bucket/prefix.
        #[arg(long, value_name = "URL", env = "LLMCM_REPO")]
        repo: Option<String>,
        /// Skip the comparison with a live server.
        #[arg(long)]
        no_server: bool,
    },
    /// Delete backups not kept (and incomplete ones), never what a kept backup needs.
    #[command(group = clap::ArgGroup::new("keep").required(true).args(["keep_full", "keep_days"]))]
    Prune {
        /// The repository: a directory path or s3://bucket/prefix.
        #[arg(long, value_name = "URL", env = "LLMCM_REPO")]
        repo: Option<String>,
        /// Keep the newest N full backups and their chains.
        #[arg(long, value_name = "N")]
        keep_full: Option<usize>,
        /// Keep backups from the last D days and what they need.
        #[arg(long, value_name = "DAYS")]
        keep_days: Option<u64>,
        /// Print what would be deleted; delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

pub fn run(conn: &Connection, command: Command) -> anyhow::Result<ExitCode> {
    if let Command::Create { repo, kind } = &command {
        let body = json!({"repo": repo, "kind": kind});
        // The server reports the running backup's bytes in its status; the bar polls it.
        let status_conn = conn.clone();
        let ticker = super::progress::Ticker::with_progress(
            &format!("{kind} backup into {repo}"),
            move || {
                let status = super::client::get_json(&status_conn, "/v1/admin/status").ok()?;
                let running = &status["backup_running"];
                Some((
                    running["bytes_done"].as_u64()?,
                    running["bytes_total"].as_u64()?,
                ))
            },
        );
        let answer = super::client::post_json(conn, "/v1/admin/backup", &body);
        drop(ticker);
        return Ok(match answer {
            Ok(v) => {
                if conn.json {
                    println!("{}", serde_json::to_string_pretty(&v)?);
                } else {
                    println!(
                        "backup {} ({}, parent {}): revisions {} to {}, {} ({} uploaded, {}), {:.2} s",
                        v["id"].as_str().unwrap_or(""),
                        v["kind"].as_str().unwrap_or(""),
                        v["parent"].as_str().unwrap_or("none"),
                        v["first_revision"],
                        v["last_revision"],
                        text::count(v["files"].as_u64().unwrap_or(0), "file", "files"),
                        v["files_uploaded"],
                        text::bytes(v["bytes"].as_u64().unwrap_or(0)),
                        v["seconds"].as_f64().unwrap_or(0.0)
                    );
                }
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("llmcm: error: {}", error.message);
                error.exit_code()
            }
        });
    }
    if let Command::Drill { repo, no_server } = &command {
        let Ok(url) = repo_url(repo.clone()) else {
            eprintln!("llmcm: error: give the repository: --repo URL, or LLMCM_REPO");
            return Ok(ExitCode::from(2));
        };
        return drill(conn, &url, *no_server);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let label = match &command {
        Command::Verify {
            repo: Some(repo), ..
        } => format!("verifying {repo}"),
        Command::Prune {
            repo: Some(repo), ..
        } => format!("pruning {repo}"),
        _ => String::new(),
    };
    let ticker = (!label.is_empty()).then(|| super::progress::Ticker::start(&label));
    let result = runtime.block_on(offline(conn.json, command, ticker));
    match result {
        Ok(code) => Ok(code),
        Err(error) => {
            eprintln!("llmcm: error: {error}");
            Ok(ExitCode::from(match error {
                BackupError::Invalid(_) => 2,
                BackupError::Locked(_) => 4,
                BackupError::Repo { .. } => 6,
                _ => 1,
            }))
        }
    }
}

/// The repository of an offline command: `--repo`, or `LLMCM_REPO` (so usage does not show it
/// as required when the environment gives it).
fn repo_url(repo: Option<String>) -> Result<String, BackupError> {
    repo.ok_or_else(|| {
        BackupError::Invalid("give the repository: --repo URL, or LLMCM_REPO".into())
    })
}

/// `backup drill`: restore the newest backup to scratch, time it, compare with the live chain.
fn drill(conn: &Connection, url: &str, no_server: bool) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let scratch = std::env::temp_dir().join(format!(
        "llmcm-drill-{}",
        crate::backup::repo::random_hex::<4>()
    ));
    let target = scratch.join("restored");
    let ticker =
        super::progress::Ticker::start(&format!("drill: restoring the newest backup of {url}"));
    let started = std::time::Instant::now();
    let result = runtime.block_on(async {
        let repo = Repo::open_existing(url).await?;
        let (manifests, _) = backup::catalog(&repo).await?;
        let newest = manifests
            .last()
            .cloned()
            .ok_or_else(|| BackupError::Invalid(format!("no backup in {url}")))?;
        let outcome = backup::restore(
            &repo,
            Some(&newest.id),
            crate::store::restore::RestoreOptions::new(
                crate::store::restore::RestorePoint::Latest,
                None,
                0,
                true,
            ),
            &target,
            &mut |_| {},
        )
        .await?;
        Ok::<_, BackupError>((newest, outcome))
    });
    let rto = started.elapsed().as_secs_f64();
    drop(ticker);
    let _ = std::fs::remove_dir_all(&scratch);
    let (newest, outcome) = match result {
        Ok(r) => r,
        Err(error) => {
            eprintln!("llmcm: error: drill failed: {error}");
            return Ok(ExitCode::from(1));
        }
    };
    let r = &outcome.resolved;
    let comparison = if no_server {
        None
    } else {
        let expected = format!("{}:{}", r.revision, storage_format::hex(&r.hash));
        Some(
            match super::client::get_json(conn, &format!("/v1/verify?expected={expected}")) {
                Ok(v) => match v["expected_matched"].as_bool() {
                    Some(true) => {
                        Ok("the live server's chain has the same hash at that revision".to_owned())
                    }
                    Some(false) => Err(format!(
                        "the live server's chain has a different hash at revision {}",
                        r.revision
                    )),
                    None => Err(format!("the server did not compare: {v}")),
                },
                Err(e) => Err(format!("cannot compare with the server: {}", e.message)),
            },
        )
    };
    let ok = comparison.as_ref().is_none_or(|c| c.is_ok());
    if conn.json {
        let doc = json!({
            "ok": ok,
            "backup": newest.id,
            "kind": newest.kind.name(),
            "revision": r.revision,
            "hash": storage_format::hex(&r.hash),
            "keys": outcome.keys,
            "restore_seconds": rto,
            "bytes_read": outcome.bytes_read,
            "server": comparison.as_ref().map(|c| match c {
                Ok(m) => json!({"matched": true, "message": m}),
                Err(m) => json!({"matched": false, "message": m}),
            }),
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!(
            "drill: restored backup {} ({}) to revision {} ({}) and verified it in {rto:.2} s (the restore time from here; the recovery time adds noticing, deciding and putting the store into service)",
            newest.id,
            newest.kind.name(),
            r.revision,
            text::count(outcome.keys, "key", "keys")
        );
        match &comparison {
            Some(Ok(m)) => println!("drill: {m}"),
            Some(Err(m)) => println!("drill: PROBLEM: {m}"),
            None => println!("drill: not compared with a live server (--no-server)"),
        }
    }
    if let Some(Err(m)) = comparison {
        eprintln!("llmcm: error: drill: {m}");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs an offline command; the ticker (if any) stops before anything is printed.
async fn offline(
    json: bool,
    command: Command,
    mut ticker: Option<super::progress::Ticker>,
) -> Result<ExitCode, BackupError> {
    match command {
        Command::Create { .. } | Command::Drill { .. } => unreachable!("handled above"),
        Command::List { repo } => {
            let repo = Repo::open_existing(&repo_url(repo)?).await?;
            let (manifests, incomplete) = backup::catalog(&repo).await?;
            if json {
                let items: Vec<_> = manifests
                    .iter()
                    .map(|m| crate::backup::view::backup_view(m, 0))
                    .collect();
                let doc = json!({"backups": items, "incomplete": incomplete});
                println!("{}", serde_json::to_string_pretty(&doc).expect("JSON"));
            } else {
                println!(
                    "{:>4}  {:<43}  {:<12}  {:<19}  {:>17}  {:>10}",
                    "SEQ", "ID", "KIND", "CREATED (UTC)", "REVISIONS", "SIZE"
                );
                for m in &manifests {
                    println!(
                        "{:>4}  {:<43}  {:<12}  {:<19}  {:>17}  {:>10}",
                        m.sequence,
                        m.id,
                        m.kind.name(),
                        format_timestamp_us(m.created_us)[..19].replace('T', " "),
                        format!("{} to {}", m.first_revision, m.last_revision),
                        text::bytes(m.bytes)
                    );
                }
                for id in &incomplete {
                    println!("incomplete (interrupted, no manifest): {id}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify { repo, id, deep } => {
            let repo = Repo::open_existing(&repo_url(repo)?).await?;
            let scratch = std::env::temp_dir().join(format!(
                "llmcm-verify-{}",
                crate::backup::repo::random_hex::<4>()
            ));
            let findings = backup::verify(&repo, id.as_deref(), deep, &scratch).await;
            ticker.take();
            let _ = std::fs::remove_dir_all(&scratch);
            let findings = findings?;
            let failures = findings.iter().filter(|f| !f.ok).count();
            // The result goes into the repository for the server's metrics, health and doctor.
            let record = backup::VerifyRecord::of(&findings, id.as_deref(), deep);
            if let Err(e) = record.save(&repo).await {
                eprintln!(
                    "llmcm: warning: the verify result was not recorded in the repository: {e}"
                );
            }
            if json {
                let doc = json!({"ok": failures == 0, "findings": findings});
                println!("{}", serde_json::to_string_pretty(&doc).expect("JSON"));
            } else {
                for f in &findings {
                    println!(
                        "{:<7} {:<44} {:<34} {}",
                        if f.ok { "ok" } else { "PROBLEM" },
                        f.backup,
                        f.file,
                        f.message
                    );
                }
            }
            if let Some(first) = findings.iter().find(|f| !f.ok) {
                eprintln!(
                    "llmcm: error: backup {}, file {}: {}",
                    first.backup,
                    if first.file.is_empty() {
                        "-"
                    } else {
                        &first.file
                    },
                    first.message
                );
                return Ok(ExitCode::from(1));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Prune {
            repo,
            keep_full,
            keep_days,
            dry_run,
        } => {
            let repo = Repo::open_existing(&repo_url(repo)?).await?;
            let keep = match (keep_full, keep_days) {
                (Some(n), _) if n >= 1 => Keep::Full(n),
                (Some(_), _) => {
                    return Err(BackupError::Invalid(
                        "--keep-full must be at least 1".into(),
                    ));
                }
                (None, Some(d)) => Keep::Days(d),
                (None, None) => unreachable!("clap requires one"),
            };
            let pruned = backup::prune(&repo, keep, dry_run).await;
            ticker.take();
            let pruned = pruned?;
            if json {
                let doc = json!({"dry_run": dry_run, "deleted": pruned.deleted,
                    "incomplete_deleted": pruned.incomplete_deleted, "kept": pruned.kept,
                    "archive_deleted": pruned.archive_deleted});
                println!("{}", serde_json::to_string_pretty(&doc).expect("JSON"));
            } else {
                let verb = if dry_run { "would delete" } else { "deleted" };
                for id in &pruned.deleted {
                    println!("{verb} {id}");
                }
                for id in &pruned.incomplete_deleted {
                    println!("{verb} {id} (incomplete)");
                }
                if !pruned.archive_deleted.is_empty() {
                    println!(
                        "{verb} {}: {} to {}",
                        text::count(
                            pruned.archive_deleted.len() as u64,
                            "archived segment",
                            "archived segments"
                        ),
                        pruned.archive_deleted[0],
                        pruned.archive_deleted[pruned.archive_deleted.len() - 1]
                    );
                }
                println!(
                    "kept {}",
                    text::count(pruned.kept.len() as u64, "backup", "backups")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
