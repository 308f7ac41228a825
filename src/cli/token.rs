//! `llmcm token new`: print a fresh bearer token once, with the config entry that admits it.

use std::process::ExitCode;

use anyhow::Context;

use crate::config::Role;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Print a new token and its `[[auth.tokens]]` entry (only the SHA-256 goes in the config).
    New {
        /// Recorded as the actor of the token's commits.
        #[arg(long)]
        name: String,
        /// What it may do: reader, writer, auditor, operator or admin.
        #[arg(long)]
        role: Role,
        /// Limit the token to keys under this prefix (repeatable); none: every key.
        #[arg(long = "prefix")]
        prefixes: Vec<String>,
    },
}

pub fn run(command: Command, json: bool) -> anyhow::Result<ExitCode> {
    match command {
        Command::New {
            name,
            role,
            prefixes,
        } => {
            let (token, entry) =
                crate::token::new_token(&name, role, &prefixes).context("generate a token")?;
            // Check the entry the way the server will before showing it.
            let config: crate::config::Config =
                toml::from_str(&entry).context("parse the generated entry")?;
            config.validate()?;
            if json {
                let token_entry = &config.auth.tokens[0];
                let doc = serde_json::json!({
                    "token": token,
                    "entry": token_entry,
                    "toml": entry,
                });
                println!("{}", serde_json::to_string_pretty(&doc)?);
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "# token (shown once; give it to the client as `Authorization: Bearer <token>`):"
            );
            println!("# {token}");
            print!("{entry}");
            Ok(ExitCode::SUCCESS)
        }
    }
}
