//! `llmcm serve`: load the configuration, then run the HTTP server until SIGTERM/SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::config::Config;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// TOML configuration file (see docs/configuration.md).
    #[arg(long, env = "LLMCM_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory. Default: ./llmcm-data.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Address to listen on. Default: 127.0.0.1:7070.
    #[arg(long)]
    pub listen: Option<String>,
    /// Serve without tokens on a non-loopback address.
    #[arg(long)]
    pub insecure_no_auth: bool,
}

/// The configuration `serve` runs with: file, environment, then these flags.
pub fn load(args: &Args) -> anyhow::Result<Config> {
    let mut config = Config::load(args.config.as_deref())?;
    if let Some(dir) = &args.data_dir {
        config.data_dir = dir.clone();
    }
    if let Some(listen) = &args.listen {
        config.listen = listen.clone();
    }
    config.insecure_no_auth |= args.insecure_no_auth;
    config.validate()?;
    Ok(config)
}

pub fn run(config: Config) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("llmcm-http")
        .build()
        .context("start the async runtime")?;
    runtime.block_on(crate::api::serve(config))?;
    Ok(ExitCode::SUCCESS)
}
