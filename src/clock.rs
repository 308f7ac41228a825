//! Wall-clock time in microseconds since the Unix epoch, behind a trait so tests can step it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub trait Clock: Send + Sync + 'static {
    fn now_us(&self) -> u64;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_us(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0)
    }
}

/// A clock that only moves when told to.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    pub fn new(now_us: u64) -> Self {
        ManualClock(AtomicU64::new(now_us))
    }
    pub fn set(&self, now_us: u64) {
        self.0.store(now_us, Ordering::SeqCst);
    }
    pub fn advance(&self, by_us: u64) {
        self.0.fetch_add(by_us, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_us(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Formats microseconds since the epoch as DESIGN.md §3 writes times: `2026-11-26T22:15:00.123456Z`.
pub fn format_timestamp_us(us: u64) -> String {
    let seconds = (us / 1_000_000) as i64;
    let micros = (us % 1_000_000) as i32;
    match jiff::Timestamp::new(seconds, micros * 1000) {
        Ok(ts) => format!("{}.{micros:06}Z", ts.strftime("%Y-%m-%dT%H:%M:%S")),
        Err(_) => format!("@{us}us"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_have_six_digits_and_z() {
        assert_eq!(format_timestamp_us(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            format_timestamp_us(1_795_731_300_123_456),
            "2026-11-26T22:15:00.123456Z"
        );
    }
}
