//! Crash points and panic points for tests, a pause after each fsync for benchmarks, and the
//! index directory's garbage slack (tests lower it to exercise directory rewrites).
//!
//! Crash points: `LLMCM_CRASH_AT=<name>` makes the process abort (no unwinding, no
//! destructors, nothing flushed — as abrupt as `kill -9`) when it reaches the step of that name.
//! The crash tests in `tests/` use it to stop a server between the steps of snapshot writing and
//! compaction.
//!
//! Crash points, panic points, the fsync pause and the legacy value check exist only with the
//! `fault-injection` feature (tests and tools turn it on); without it each is an empty inline
//! function, and the functions that arm them do not exist, so nothing can arm them in a release
//! binary and no test that needs them compiles without them.

use std::sync::atomic::{AtomicU64, Ordering};
#[cfg(feature = "fault-injection")]
use std::{sync::OnceLock, sync::atomic::AtomicBool, time::Duration};

/// The environment variable naming the crash point.
pub const CRASH_AT_ENV: &str = "LLMCM_CRASH_AT";

/// Aborts the process if `LLMCM_CRASH_AT` names this step.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn crash_point(_name: &str) {}

/// Aborts the process if `LLMCM_CRASH_AT` names this step.
#[cfg(feature = "fault-injection")]
pub fn crash_point(name: &str) {
    static TARGET: OnceLock<Option<String>> = OnceLock::new();
    let target = TARGET.get_or_init(|| std::env::var(CRASH_AT_ENV).ok());
    if target.as_deref() == Some(name) {
        eprintln!("crash point {name} reached: aborting");
        std::process::abort();
    }
}

/// The environment variable adding a pause after every group-commit fsync, in microseconds: the
/// HTTP benchmark uses it (or `set_sync_pad`) to emulate this machine's slow disk phase (~4 ms per
/// fsync) on demand.
pub const SYNC_PAD_ENV: &str = "LLMCM_SYNC_PAD_US";

/// Microseconds of pause after each fsync; `u64::MAX` until first read from the environment.
#[cfg(feature = "fault-injection")]
static SYNC_PAD_US: AtomicU64 = AtomicU64::new(u64::MAX);

/// Sleeps the configured pause: none without `fault-injection`.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn sync_pad() {}

/// Sleeps the configured pause, if any (never outside benchmarks and tests); without one, one
/// atomic load and a comparison.
#[cfg(feature = "fault-injection")]
pub fn sync_pad() {
    let mut pad = SYNC_PAD_US.load(Ordering::Relaxed);
    if pad == u64::MAX {
        pad = std::env::var(SYNC_PAD_ENV)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let _ = SYNC_PAD_US.compare_exchange(u64::MAX, pad, Ordering::Relaxed, Ordering::Relaxed);
    }
    if pad > 0 {
        std::thread::sleep(Duration::from_micros(pad));
    }
}

/// Sets the pause after each fsync for this process (benchmarks).
#[cfg(feature = "fault-injection")]
pub fn set_sync_pad(pad: Duration) {
    SYNC_PAD_US.store(pad.as_micros() as u64, Ordering::Relaxed);
}

/// Garbage allowed in the index's version directory file beyond twice its live blocks before a
/// checkpoint rewrites it into a new generation (FORMAT.md "Version directory").
static DIRS_GARBAGE_SLACK: AtomicU64 = AtomicU64::new(1 << 20);

/// The current slack, in bytes.
pub fn dirs_garbage_slack() -> u64 {
    DIRS_GARBAGE_SLACK.load(Ordering::Relaxed)
}

/// Sets the slack for this process: tests set 0 so that small stores rewrite their directory
/// file often (a rewrite then happens as soon as superseded blocks outweigh the live ones).
pub fn set_dirs_garbage_slack(bytes: u64) {
    DIRS_GARBAGE_SLACK.store(bytes, Ordering::Relaxed);
}

/// Whether a panic point is armed (the fast path of `panic_point` reads only this).
#[cfg(feature = "fault-injection")]
static PANIC_ARMED: AtomicBool = AtomicBool::new(false);
/// The armed panic point and how many more times it fires.
#[cfg(feature = "fault-injection")]
static PANIC_AT: parking_lot::Mutex<Option<(String, u32)>> = parking_lot::Mutex::new(None);

/// Makes the step named `name` panic the next `times` times it is reached, in this process
/// (tests of the code that must survive a panic: a group-commit leader's batch, a background
/// index checkpoint).
#[cfg(feature = "fault-injection")]
pub fn arm_panic(name: &str, times: u32) {
    *PANIC_AT.lock() = (times > 0).then(|| (name.to_owned(), times));
    PANIC_ARMED.store(times > 0, Ordering::SeqCst);
}

/// Firings left of the armed panic point (0: none armed).
#[cfg(feature = "fault-injection")]
pub fn armed_panics() -> u32 {
    PANIC_AT.lock().as_ref().map_or(0, |(_, times)| *times)
}

/// Panics if `arm_panic` armed this step: never without `fault-injection`.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn panic_point(_name: &str) {}

/// Panics if `arm_panic` armed this step and it has firings left. Unarmed (always, outside
/// tests), one relaxed load.
#[cfg(feature = "fault-injection")]
pub fn panic_point(name: &str) {
    if !PANIC_ARMED.load(Ordering::Relaxed) {
        return;
    }
    let mut armed = PANIC_AT.lock();
    let Some((at, times)) = armed.as_mut() else {
        return;
    };
    if at != name {
        return;
    }
    *times -= 1;
    if *times == 0 {
        *armed = None;
        PANIC_ARMED.store(false, Ordering::SeqCst);
    }
    drop(armed);
    panic!("panic point {name} reached");
}

/// Whether writes check values as servers before the value check did (serde_json's lenient
/// scan: invalid UTF-8 inside strings and duplicate names let through).
#[cfg(feature = "fault-injection")]
static LEGACY_VALUE_CHECK: AtomicBool = AtomicBool::new(false);

/// Makes this process's writes accept what older servers accepted, so tests can build a store
/// that holds such values and check that every read still serves it. Never set outside tests.
#[cfg(feature = "fault-injection")]
pub fn set_legacy_value_check(on: bool) {
    LEGACY_VALUE_CHECK.store(on, Ordering::SeqCst);
}

/// Whether `set_legacy_value_check` is on: never without `fault-injection`.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn legacy_value_check() -> bool {
    false
}

/// Whether `set_legacy_value_check` is on (one relaxed load).
#[cfg(feature = "fault-injection")]
pub fn legacy_value_check() -> bool {
    LEGACY_VALUE_CHECK.load(Ordering::Relaxed)
}
