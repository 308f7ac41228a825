//! `llmcm restore --data-dir DIR [--at TIME | --revision N] [--prefix P] [--bump-revision N]
//! --to NEW_DIR`: point-in-time restore into a new data directory (see `crate::store::restore`).
//! Restores from backup repositories (`--repo`) come with the backup issue.

use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::json;
use storage_format::hex;

use crate::clock::format_timestamp_us;
use crate::store::restore::{RestoreError, RestorePoint, RestoreRequest, restore};

#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("source").required(true).args(["data_dir", "repo"]))]
pub struct Args {
    /// The data directory to restore from (only read; a running server may keep using it).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Or a backup repository (directory path or s3://bucket/prefix): the newest backup reaching
    /// the point is used, unless --id names one.
    #[arg(long, value_name = "URL")]
    pub repo: Option<String>,
    /// With --repo: the backup to restore from.
    #[arg(long, requires = "repo")]
    pub id: Option<String>,
    /// Restore the state after the last commit at or before this time: RFC 3339, or an age
    /// (30m, 2h, 1d) ago.
    #[arg(long, conflicts_with = "revision", value_name = "TIME")]
    pub at: Option<String>,
    /// Restore the state after this revision. Neither `--at` nor `--revision`: the latest.
    #[arg(long, value_name = "N")]
    pub revision: Option<u64>,
    /// Partial restore: only keys starting with this prefix.
    #[arg(long)]
    pub prefix: Option<String>,
    /// The restore commit's revision is at least this (it is always above the source's head):
    /// use it to stay above revisions a newer copy of the source may have handed out.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub bump_revision: u64,
    /// Make the new store even if no key is left at the point (under --prefix); without it
    /// that is refused, naming the point.
    #[arg(long)]
    pub allow_empty: bool,
    /// The new data directory (must not exist or be empty).
    #[arg(long, value_name = "DIR")]
    pub to: PathBuf,
    /// Print one JSON document.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let point = match (&args.at, args.revision) {
        (Some(t), _) => RestorePoint::Time(
            crate::clock::parse_timestamp_us(
                &super::client::time_arg(t).map_err(|e| anyhow::anyhow!("--at: {}", e.message))?,
            )
            .map_err(|e| anyhow::anyhow!("--at: {e}"))?,
        ),
        (None, Some(r)) => RestorePoint::Revision(r),
        (None, None) => RestorePoint::Latest,
    };
    let source = args
        .data_dir
        .clone()
        .map(|d| d.display().to_string())
        .or_else(|| args.repo.clone())
        .unwrap_or_default();
    let json = args.json;
    let mut announce = |resolved: &crate::store::restore::Resolved| {
        // Printed before anything is written, so an operator sees what the point resolved to
        // (over the progress line, if one is drawn).
        if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            eprint!("\r\x1b[2K");
        }
        eprintln!(
            "restoring revision {} ({}) of history {} (source head {}){} into {}",
            resolved.revision,
            if resolved.timestamp_us > 0 {
                format_timestamp_us(resolved.timestamp_us)
            } else {
                "before the first commit".into()
            },
            hex(&resolved.source_history),
            resolved.source_head,
            args.prefix
                .as_deref()
                .map(|p| format!(", keys under {p:?}"))
                .unwrap_or_default(),
            args.to.display()
        );
    };
    let ticker = super::progress::Ticker::start(&format!("restoring into {}", args.to.display()));
    let outcome = match (&args.data_dir, &args.repo) {
        (Some(data_dir), _) => {
            let request = RestoreRequest {
                source: data_dir.clone(),
                point,
                prefix: args.prefix.clone(),
                bump_revision: args.bump_revision,
                allow_empty: args.allow_empty,
                target: args.to.clone(),
                actor: std::env::var("USER").unwrap_or_else(|_| "llmcm-restore".into()),
            };
            match restore(&request, &mut announce) {
                Ok(outcome) => outcome,
                Err(error) => {
                    eprintln!("llmcm: error: {error}");
                    return Ok(ExitCode::from(exit_code(&error)));
                }
            }
        }
        (None, Some(url)) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let result = runtime.block_on(async {
                let repo = crate::backup::Repo::open_existing(url).await?;
                crate::backup::restore(
                    &repo,
                    args.id.as_deref(),
                    crate::store::restore::RestoreOptions::new(
                        point,
                        args.prefix.clone(),
                        args.bump_revision,
                        args.allow_empty,
                    ),
                    &args.to,
                    &mut announce,
                )
                .await
            });
            match result {
                Ok(outcome) => outcome,
                Err(error) => {
                    eprintln!("llmcm: error: {error}");
                    return Ok(ExitCode::from(match error {
                        crate::backup::BackupError::Invalid(_) => 2,
                        crate::backup::BackupError::Restore(e) => exit_code(&e),
                        _ => 1,
                    }));
                }
            }
        }
        (None, None) => unreachable!("clap requires one"),
    };
    drop(ticker);
    let r = &outcome.resolved;
    if json {
        let doc = json!({
            "source": source,
            "target": args.to,
            "revision": r.revision,
            "timestamp": (r.timestamp_us > 0).then(|| format_timestamp_us(r.timestamp_us)),
            "hash": hex(&r.hash),
            "source_history": hex(&r.source_history),
            "source_head": r.source_head,
            "history_id": hex(&outcome.history_id),
            "restore_revision": outcome.restore_revision,
            "prefix": args.prefix,
            "keys": outcome.keys,
            "base": outcome.base,
            "commits_replayed": outcome.commits_replayed,
            "bytes_read": outcome.bytes_read,
            "seconds": outcome.seconds,
            "verified": true,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!(
            "restored revision {} ({}) into {}: {}, new history {}, restore commit at \
             revision {}; from {} + {} commits replayed, {} bytes read in {:.2} s; verified",
            r.revision,
            format_timestamp_us(r.timestamp_us),
            args.to.display(),
            super::text::count(outcome.keys, "key", "keys"),
            hex(&outcome.history_id),
            outcome.restore_revision,
            outcome.base,
            outcome.commits_replayed,
            outcome.bytes_read,
            outcome.seconds
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The exit code of a failed restore: 2 for a point, prefix or target that cannot be used
/// (including one that would make an empty store), 8 below the horizon, 1 otherwise.
fn exit_code(error: &RestoreError) -> u8 {
    match error {
        RestoreError::Compacted { .. } => 8,
        RestoreError::Invalid(_) | RestoreError::Future(_) | RestoreError::Empty { .. } => 2,
        _ => 1,
    }
}
