//! Crash points for tests: `LLMCM_CRASH_AT=<name>` makes the process abort (no unwinding, no
//! destructors, nothing flushed — as abrupt as `kill -9`) when it reaches the step of that name.
//! The crash tests in `tests/` use it to stop a server between the steps of snapshot writing and
//! compaction. Unset (always, outside tests), a crash point costs one cached comparison.

use std::sync::OnceLock;

/// The environment variable naming the crash point.
pub const CRASH_AT_ENV: &str = "LLMCM_CRASH_AT";

/// Aborts the process if `LLMCM_CRASH_AT` names this step.
pub fn crash_point(name: &str) {
    static TARGET: OnceLock<Option<String>> = OnceLock::new();
    let target = TARGET.get_or_init(|| std::env::var(CRASH_AT_ENV).ok());
    if target.as_deref() == Some(name) {
        eprintln!("crash point {name} reached: aborting");
        std::process::abort();
    }
}
