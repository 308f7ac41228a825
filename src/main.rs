//! The `llmcm` binary: parse arguments, set up logging, run the command.

use std::process::ExitCode;

use clap::Parser;
use llmcm::cli::{Cli, run};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("llmcm: error: {error:#}");
            ExitCode::from(2)
        }
    }
}
