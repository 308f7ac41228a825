//! The storage engine: the log, the indexes, recovery, corruption, compaction, restore and
//! maintenance, each against a model or a twin store.
//!
//! One test binary per area, so the crate is linked a few times rather than once per file.

#[path = "../common/mod.rs"]
mod common;
#[path = "../server/mod.rs"]
mod server;

mod append_limits;
mod as_of_after_sigkill;
mod chain_export;
mod compaction;
mod concurrent_reads_writes;
mod conditional_writes;
mod corruption_each_file_kind;
mod crash_consistency;
mod crash_maintenance;
mod format_spec;
mod golden_fixtures;
mod group_commit_async;
mod index_repair;
mod log_matches_model;
mod maintenance_faults;
mod recovery_fault_injection;
mod recovery_tail_corruption;
mod restore;
mod scrub;
mod segment_reread;
mod segment_roll;
