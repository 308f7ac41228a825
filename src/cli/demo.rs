//! `llmcm demo`: the main job until the server exists — append commits, read them back as of
//! earlier points, diff two moments, verify the directory.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use storage_format::commit::Op;
use storage_format::hex;

use crate::clock::format_timestamp_us;
use crate::store::{CommitRequest, LogConfig};
use crate::store::{Point, Store};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Data directory (created if missing).
    #[arg(long, default_value = "./llmcm-demo-data")]
    pub data_dir: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let store = Store::open(&args.data_dir, LogConfig::default())
        .with_context(|| format!("opening {}", args.data_dir.display()))?;
    let start = store.head().revision;
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
    let mut first_time = None;
    for (reason, ops) in changes {
        let info = store.append(CommitRequest::change("demo", reason, ops))?;
        first_time.get_or_insert(info.timestamp_us);
        println!(
            "appended revision {} at {} hash {}",
            info.revision,
            format_timestamp_us(info.timestamp_us),
            &hex(&info.hash)[..16]
        );
    }
    let first_time = first_time.expect("three commits");
    let sampling_then = store.get("prod/chatbot/sampling", Point::Time(first_time))?;
    let sampling_now = store.get("prod/chatbot/sampling", Point::Latest)?;
    if let (Some(then), Some(now)) = (sampling_then, sampling_now) {
        println!(
            "\nprod/chatbot/sampling as of {}: {}  (revision {})",
            format_timestamp_us(first_time),
            String::from_utf8_lossy(then.value.as_bytes()),
            then.revision
        );
        println!(
            "prod/chatbot/sampling now: {}  (revision {}, version {})",
            String::from_utf8_lossy(now.value.as_bytes()),
            now.revision,
            now.version
        );
    }
    let page = store.list("prod/chatbot/", Point::Latest, None, 100)?;
    println!("\nprod/chatbot/ at revision {}:", page.revision);
    for item in &page.items {
        println!(
            "  {} = {}",
            item.key,
            String::from_utf8_lossy(item.value.as_bytes())
        );
    }
    let diff = store.diff("prod/", Point::Revision(start + 1), Point::Latest)?;
    println!("\ndiff prod/ from revision {} to {}:", diff.from, diff.to);
    for change in &diff.changes {
        println!("  {:<8} {}", change.kind.name(), change.key);
    }
    let verification = store.verify_chain(None, None)?;
    if let Some((revision, reason)) = &verification.failure {
        eprintln!("llmcm: chain verification failed at revision {revision}: {reason}");
        return Ok(ExitCode::FAILURE);
    }
    println!(
        "\nchain verified over {} commits, head hash {}",
        verification.commits,
        hex(&verification.head_hash)
    );
    println!("\nthe new commits, as the chain export writes them:");
    let mut out = std::io::stdout().lock();
    store.export_chain(start + 1, u64::MAX, &mut out)?;
    drop(out);
    let dir = store.dir().to_path_buf();
    store.close()?;
    drop(store);
    let report = crate::store::verify_dir(&dir);
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
