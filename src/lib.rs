//! LLM Config Manager: a configuration store whose every change is an immutable, hash-chained
//! commit in a segmented append-only log (see `docs/architecture.md`).
//!
//! Layers only look down: `cli` → `log` → `fs` and the `storage-format` crate.

pub mod api;
pub mod backup;
pub mod chain;
pub mod cli;
pub mod clock;
pub mod config;
pub mod fault;
pub mod fs;
pub mod image;
pub mod index;
pub mod log;
pub mod restore;
pub mod store;

pub use storage_format;
