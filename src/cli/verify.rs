//! `llmcm verify --data-dir DIR`: print what every file holds and exit non-zero on any problem.

use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::json;

use crate::store::{Severity, verify_dir};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The data directory to check (not modified; a running server may keep using it).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Print one JSON document instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if !args.data_dir.is_dir() {
        anyhow::bail!("{} is not a directory", args.data_dir.display());
    }
    let report = verify_dir(&args.data_dir);
    let label = |s: Severity| match s {
        Severity::Ok => "ok",
        Severity::Note => "note",
        Severity::Problem => "PROBLEM",
    };
    if args.json {
        let findings: Vec<_> = report
            .findings
            .iter()
            .map(|f| json!({"severity": label(f.severity), "file": f.file, "message": f.message}))
            .collect();
        let doc = json!({
            "data_dir": args.data_dir,
            "history_id": report.history_id,
            "commits": report.commits,
            "first_revision": report.first_revision,
            "last_revision": report.last_revision,
            "head_hash": report.head_hash.map(|h| storage_format::hex(&h)),
            "problems": report.problems(),
            "findings": findings,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        for f in &report.findings {
            println!("{:<8} {:<34} {}", label(f.severity), f.file, f.message);
        }
        println!(
            "{}: {}{}, {}",
            args.data_dir.display(),
            super::text::count(report.commits, "commit", "commits"),
            match (
                report.first_revision,
                report.last_revision,
                report.head_hash
            ) {
                (Some(a), Some(b), Some(h)) => format!(
                    ", revisions {a} to {b}, head hash {}",
                    storage_format::hex(&h)
                ),
                _ => String::new(),
            },
            super::text::count(report.problems() as u64, "problem", "problems")
        );
    }
    Ok(if report.problems() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
