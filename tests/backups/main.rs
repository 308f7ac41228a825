//! Backups against hostile repositories and as operators run them.
//!
//! One test binary per area, so the crate is linked a few times rather than once per file.

#[path = "../server/mod.rs"]
mod server;

mod backup_hostile;
mod backup_operations;
