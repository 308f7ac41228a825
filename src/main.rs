//! The `llmcm` binary: parse arguments, set up logging, run the command.

use std::process::ExitCode;

use llmcm::cli::{parse, run};

fn main() -> ExitCode {
    let cli = parse();
    if !matches!(cli.command, llmcm::cli::Command::Serve(_)) {
        // A client command piped into `head` ends quietly when the pipe closes, as other command
        // line tools do, instead of failing on the write. (The server keeps SIGPIPE ignored:
        // a client closing its connection must only fail that write.)
        // SAFETY: called first in main, before any other thread exists; SIG_DFL is a valid
        // disposition for SIGPIPE.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            // The error and its causes, each once: many messages already quote their cause.
            let mut message = error.to_string();
            for cause in error.chain().skip(1) {
                let cause = cause.to_string();
                if !message.contains(&cause) {
                    message = format!("{message}: {cause}");
                }
            }
            eprintln!("llmcm: error: {message}");
            ExitCode::from(2)
        }
    }
}
