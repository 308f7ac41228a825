//! The `llmcm` CLI, the documents and deployment artefacts, and the code's own layer map.
//!
//! One test binary per area, so the crate is linked a few times rather than once per file.

#[path = "../cli_lines/mod.rs"]
mod cli_lines;
#[path = "../s3/mod.rs"]
mod s3;
#[path = "../server/mod.rs"]
mod server;

mod architecture;
mod backup_cli;
mod cli_client;
mod cli_usability;
mod configuration_doc;
mod deploy_artifacts;
mod doctor;
mod runbooks;
mod verify_cli;
