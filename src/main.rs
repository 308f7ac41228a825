//! The `llmcm` binary: parse arguments, set up logging, run the command.

use std::process::ExitCode;

use clap::Parser;
use llmcm::cli::{Cli, run};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cli.log_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("llmcm: error: {error:#}");
            ExitCode::from(2)
        }
    }
}
