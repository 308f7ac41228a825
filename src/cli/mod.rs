//! The `llmcm` command line: argument definitions and one module per command.

mod backup;
pub mod client;
mod demo;
mod doctor;
pub mod logging;
mod progress;
mod restore;
pub mod serve;
mod token;
mod verify;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// LLM Config Manager: a configuration store with full, verifiable history.
#[derive(Debug, Parser)]
#[command(name = "llmcm", version, about)]
pub struct Cli {
    /// Log filter (e.g. `info`, `llmcm=debug`); `RUST_LOG` overrides it. Default: the config's
    /// `log_level` for `serve`, else `info`.
    #[arg(long, global = true)]
    pub log_level: Option<String>,
    /// Log lines as text or JSON (one object per line).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "LLMCM_LOG_FORMAT"
    )]
    pub log_format: logging::LogFormat,
    #[command(flatten)]
    pub connection: client::Connection,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Append a few example commits to a data directory and print them back.
    Demo(demo::Args),
    /// Check every file of a data directory offline; exits 1 on any problem.
    Verify(verify::Args),
    /// Restore a data directory or a backup repository at a point in time into a new directory
    /// (offline, read-only on the source), verify it, and print the resolved revision and time
    /// first.
    Restore(restore::Args),
    /// Run the HTTP server (with no arguments: ./llmcm-data on 127.0.0.1:7070).
    Serve(serve::Args),
    /// Backups: create (through the server); list, verify, prune, drill (on a repository).
    #[command(subcommand)]
    Backup(backup::Command),
    /// One health check for the on-call engineer, through the server: a pass/warn/fail table
    /// (exit 1 on any fail).
    Doctor,
    /// Manage bearer tokens.
    #[command(subcommand)]
    Token(token::Command),
    #[command(flatten)]
    Client(client::Command),
    /// Print shell completions (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
}

/// Runs a parsed command and returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Command::Serve(args) = &cli.command {
        let config = serve::load(args)?;
        let level = cli.log_level.clone().unwrap_or(config.log_level.clone());
        logging::init(&level, cli.log_format);
        return serve::run(args.clone(), config, cli.log_level.is_some());
    }
    logging::init(cli.log_level.as_deref().unwrap_or("info"), cli.log_format);
    match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Verify(args) => verify::run(args),
        Command::Restore(args) => restore::run(args),
        Command::Serve(_) => unreachable!("handled above"),
        Command::Client(command) => match client::run(&cli.connection, command) {
            Ok(()) => Ok(ExitCode::SUCCESS),
            Err(error) => {
                eprintln!("llmcm: error: {}", error.message);
                Ok(error.exit_code())
            }
        },
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "llmcm", &mut script);
            // A closed pipe (`| head`) is not an error worth a message.
            let _ = std::io::Write::write_all(&mut std::io::stdout(), &script);
            Ok(ExitCode::SUCCESS)
        }
        Command::Token(command) => token::run(command),
        Command::Backup(command) => backup::run(&cli.connection, command),
        Command::Doctor => doctor::run(&cli.connection),
    }
}
