//! The `llmcm` command line: argument definitions and one module per command.

mod demo;
pub mod serve;
mod token;
mod verify;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// LLM Config Manager: a configuration store with full, verifiable history.
#[derive(Debug, Parser)]
#[command(name = "llmcm", version, about)]
pub struct Cli {
    /// Log filter (e.g. `info`, `llmcm=debug`); `RUST_LOG` overrides it.
    #[arg(long, global = true, default_value = "info")]
    pub log_level: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Append a few example commits to a data directory and print them back.
    Demo(demo::Args),
    /// Check every file of a data directory offline; exits 1 on any problem.
    Verify(verify::Args),
    /// Run the HTTP server (with no arguments: ./llmcm-data on 127.0.0.1:7070).
    Serve(serve::Args),
    /// Manage bearer tokens.
    #[command(subcommand)]
    Token(token::Command),
}

/// Runs a parsed command and returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Verify(args) => verify::run(args),
        Command::Serve(args) => serve::run(serve::load(&args)?),
        Command::Token(command) => token::run(command),
    }
}
