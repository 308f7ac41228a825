//! `llmcm serve`: load the configuration, then run the HTTP server until SIGTERM/SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::config::Config;

#[derive(Debug, Clone, clap::Args)]
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
    /// Serve tokens over plain HTTP on a non-loopback address (they travel in clear text).
    #[arg(long)]
    pub insecure_plaintext: bool,
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
    config.insecure_plaintext |= args.insecure_plaintext;
    config.validate()?;
    Ok(config)
}

/// Runs the server; SIGHUP re-reads the configuration from the same file, environment and flags.
/// With `--log-level` given, SIGHUP keeps it.
pub fn run(args: Args, config: Config, log_level_flag: bool) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("llmcm-http")
        .build()
        .context("start the async runtime")?;
    let options = crate::api::ServeOptions {
        reload_config: Box::new(move || load(&args).map_err(|e| format!("{e:#}"))),
        set_log_level: Box::new(move |level| {
            if log_level_flag {
                Ok(())
            } else {
                super::logging::set_level(level)
            }
        }),
    };
    runtime.block_on(crate::api::serve(config, options))?;
    Ok(ExitCode::SUCCESS)
}
