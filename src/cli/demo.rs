//! `llmcm demo`: the main job until the server exists — append commits, read them back, verify.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use storage_format::commit::Op;
use storage_format::hex;

use crate::clock::format_timestamp_us;
use crate::fs::RealFs;
use crate::log::{CommitRequest, Log, LogConfig};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Data directory (created if missing).
    #[arg(long, default_value = "./llmcm-demo-data")]
    pub data_dir: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let log = Log::open(&args.data_dir, LogConfig::default())
        .with_context(|| format!("opening {}", args.data_dir.display()))?;
    let start = log.head().revision;
    let changes: [(&str, Vec<Op>); 3] = [
        (
            "initial chatbot config",
            vec![
                put("prod/chatbot/model", r#"{"provider":"acme","model":"m1"}"#),
                put(
                    "prod/chatbot/sampling",
                    r#"{"temperature":0.2,"top_p":0.9}"#,
                ),
            ],
        ),
        (
            "warmer answers",
            vec![put(
                "prod/chatbot/sampling",
                r#"{"temperature":0.7,"top_p":0.9}"#,
            )],
        ),
        (
            "retire the old prompt",
            vec![
                put("prod/chatbot/prompt", r#""You are a helpful assistant.""#),
                Op::Delete {
                    key: "prod/chatbot/legacy-prompt".into(),
                },
            ],
        ),
    ];
    for (reason, ops) in changes {
        let info = log.append(CommitRequest::change("demo", reason, ops))?;
        println!(
            "appended revision {} at {} hash {}",
            info.revision,
            format_timestamp_us(info.timestamp_us),
            &hex(&info.hash)[..16]
        );
    }
    println!("\nread back from the log:");
    let mut out = std::io::stdout().lock();
    crate::chain::export_chain(&log, start + 1, u64::MAX, &mut out)?;
    let dir = log.dir().to_path_buf();
    log.close()?;
    let report = crate::log::verify::verify_dir(&RealFs, &dir);
    println!(
        "\nverified {}: {} commits, head revision {}, {} problems",
        dir.display(),
        report.commits,
        report.last_revision.unwrap_or(0),
        report.problems()
    );
    Ok(if report.problems() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn put(key: &str, value: &str) -> Op {
    Op::Put {
        key: key.into(),
        value: value.as_bytes().to_vec(),
    }
}
