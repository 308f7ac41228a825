//! `llmcm-inspect`: look inside a data directory or a single segment, for developers and on-call
//! engineers. Read-only except `chain`, which opens the store (and so takes its lock).
//!
//!   llmcm-inspect segments --data-dir DIR    one line per segment: header, seal, revisions
//!   llmcm-inspect dump FILE                  one line per record of a segment file
//!   llmcm-inspect chain --data-dir DIR [--from N] [--to N]   the chain export (NDJSON)

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use llmcm::log::{Log, LogConfig};
use llmcm::storage_format::scan::{ScanEnd, TailPolicy, scan_segment};
use llmcm::storage_format::segment::{SEGMENT_DIR, parse_segment_file_name};
use llmcm::storage_format::{hex, record::RECORD_HEADER_LEN};

#[derive(Parser)]
#[command(name = "llmcm-inspect", about = "Look inside llmcm data files")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// One line per segment of a data directory.
    Segments {
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// One line per record of a segment file.
    Dump { file: PathBuf },
    /// Write the chain export (one JSON commit per line, with canonical bytes).
    Chain {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long, default_value_t = 1)]
        from: u64,
        #[arg(long, default_value_t = u64::MAX)]
        to: u64,
    },
}

fn describe(bytes: &[u8]) -> String {
    match scan_segment(bytes, TailPolicy::AllowTornTail, &mut |_, _| {}) {
        Ok(o) => {
            let end = match o.end {
                ScanEnd::Open => "open".to_owned(),
                ScanEnd::Sealed(s) => format!("sealed, last hash {}", &hex(&s.last_hash)[..16]),
                ScanEnd::TornTail { offset, bytes } => {
                    format!("torn tail of {bytes} bytes at {offset}")
                }
            };
            format!(
                "seq {} revisions {}..={} ({} commits) {} bytes, {end}",
                o.header.segment_seq,
                o.header.first_revision,
                o.last_revision,
                o.commit_count,
                bytes.len()
            )
        }
        Err(e) => format!("CORRUPT {e}"),
    }
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Segments { data_dir } => {
            let log_dir = data_dir.join(SEGMENT_DIR);
            let mut names: Vec<(u64, String)> = std::fs::read_dir(&log_dir)
                .with_context(|| format!("listing {}", log_dir.display()))?
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    parse_segment_file_name(&name).map(|seq| (seq, name))
                })
                .collect();
            names.sort();
            for (_, name) in names {
                let bytes = std::fs::read(log_dir.join(&name))?;
                println!("{name}  {}", describe(&bytes));
            }
        }
        Command::Dump { file } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let outcome = scan_segment(&bytes, TailPolicy::AllowTornTail, &mut |offset, p| {
                let c = &p.commit;
                println!(
                    "offset {offset:>10}  rev {:>8}  {:<10} ops {:>4}  bytes {:>8}  actor {:?}  hash {}",
                    c.revision,
                    c.kind.name(),
                    c.ops.len(),
                    RECORD_HEADER_LEN + p.canonical.len() + 32,
                    c.actor,
                    &hex(&p.hash)[..16]
                );
            });
            println!("{}", describe(&bytes));
            if let Err(e) = outcome {
                anyhow::bail!("{}: {e}", file.display());
            }
        }
        Command::Chain { data_dir, from, to } => {
            let log = Log::open(&data_dir, LogConfig::default())?;
            let mut out = std::io::stdout().lock();
            llmcm::chain::export_chain(&log, from, to, &mut out)?;
        }
    }
    Ok(())
}
