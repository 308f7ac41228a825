//! The `llmcm` command line: argument definitions and one module per command.

mod backup;
pub mod client;
mod demo;
mod doctor;
pub mod logging;
mod progress;
mod restore;
pub mod serve;
mod text;
mod token;
mod verify;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use client::Connection;

/// LLM Config Manager: a configuration store with full, verifiable history.
#[derive(Debug, Parser)]
#[command(name = "llmcm", version, about, next_help_heading = "Global options")]
pub struct Cli {
    /// Log filter (e.g. `info`, `llmcm=debug`); `RUST_LOG` overrides it. Default: the config's
    /// `log_level` for `serve`; `warn` for other commands (`info` with -v).
    #[arg(long, global = true, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Log lines as text or JSON (one object per line).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "LLMCM_LOG_FORMAT",
        value_name = "FORMAT"
    )]
    pub log_format: logging::LogFormat,
    /// Print JSON instead of tables and sentences.
    #[arg(long, global = true)]
    pub json: bool,
    /// Log progress at `info` (commands other than `serve` log only warnings and errors).
    #[arg(short, long, global = true)]
    pub verbose: bool,
    /// How to reach the server, for the commands that talk to one (see `parse`).
    #[arg(skip)]
    pub connection: client::Connection,
    #[command(subcommand)]
    pub command: Command,
}

/// The commands that talk to a server, by their subcommand path: they take the connection
/// options (`client::Connection`); the others are offline and do not.
const ONLINE_COMMANDS: &[&[&str]] = &[
    &["get"],
    &["put"],
    &["delete"],
    &["ls"],
    &["history"],
    &["log"],
    &["diff"],
    &["watch"],
    &["rollback"],
    &["txn"],
    &["status"],
    &["snapshot"],
    &["compact"],
    &["read-only"],
    &["doctor"],
    &["backup", "create"],
    &["backup", "drill"],
];

/// The clap command of `llmcm`: `Cli` with the connection options added to each online
/// command, and accepted (hidden) before the command name too (`llmcm --server URL get k`).
pub fn command() -> clap::Command {
    use clap::{Args, CommandFactory};
    let mut command = client::Connection::augment_args(Cli::command());
    for id in client::CONNECTION_ARGS {
        command = command.mut_arg(id, |a| a.hide(true));
    }
    for path in ONLINE_COMMANDS {
        command = command.mut_subcommand(path[0], |sub| match path.get(1) {
            None => client::Connection::augment_args(sub),
            Some(name) => sub.mut_subcommand(name, client::Connection::augment_args),
        });
    }
    command
}

/// Parses the process's arguments (exits with clap's message on a usage error).
pub fn parse() -> Cli {
    use clap::FromArgMatches;
    let matches = command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let mut leaf = &matches;
    while let Some((_, sub)) = leaf.subcommand() {
        leaf = sub;
    }
    if leaf.try_contains_id("server").unwrap_or(false) {
        let mut connection =
            client::Connection::from_arg_matches(leaf).unwrap_or_else(|e| e.exit());
        // An option given before the command name counts unless given after it too.
        let top = client::Connection::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
        let given = |m: &clap::ArgMatches, id: &str| {
            m.value_source(id) == Some(clap::parser::ValueSource::CommandLine)
        };
        if !given(leaf, "server") && given(&matches, "server") {
            connection.server = top.server;
        }
        if !given(leaf, "token") && given(&matches, "token") {
            connection.token = top.token;
        }
        if !given(leaf, "ca_file") && given(&matches, "ca_file") {
            connection.ca_file = top.ca_file;
        }
        cli.connection = connection;
    }
    cli.connection.json = cli.json;
    cli
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
    /// Print shell completions.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

/// Runs a parsed command and returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Command::Serve(args) = &cli.command {
        let config = serve::load(args)?;
        let level = cli.log_level.clone().unwrap_or(config.log_level.clone());
        logging::init(&level, cli.log_format);
        return serve::run(args.clone(), config, cli.log_level.is_some());
    }
    let level = match (&cli.log_level, cli.verbose) {
        (Some(level), _) => level.as_str(),
        (None, true) => "info",
        (None, false) => "warn",
    };
    logging::init(level, cli.log_format);
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
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command(), "llmcm", &mut script);
            // A closed pipe (`| head`) is not an error worth a message.
            let _ = std::io::Write::write_all(&mut std::io::stdout(), &script);
            Ok(ExitCode::SUCCESS)
        }
        Command::Token(command) => token::run(command, cli.json),
        Command::Backup(command) => backup::run(&cli.connection, command),
        Command::Doctor => doctor::run(&cli.connection),
    }
}
