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

/// Now, by the system clock, in microseconds since the epoch.
pub fn now_us() -> u64 {
    SystemClock.now_us()
}

/// `N` random bytes from the OS (`getrandom(2)`, which waits until the kernel's pool is
/// seeded), or why there are none.
pub fn try_random_bytes<const N: usize>() -> std::io::Result<[u8; N]> {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).map_err(|error| {
        std::io::Error::other(format!(
            "the operating system's random source failed: {error}"
        ))
    })?;
    Ok(out)
}

/// `N` random bytes from the OS. Panics if the OS has no random source to give: ids made
/// without one could repeat, and nothing may go on with such an id.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    try_random_bytes().unwrap_or_else(|error| panic!("{error}"))
}

/// An RFC 3339 time (`Z` or an offset) as microseconds since the epoch, UTC.
pub fn parse_timestamp_us(text: &str) -> Result<u64, String> {
    let invalid = |why: String| {
        format!("{text:?} is not an RFC 3339 time (e.g. 2026-11-26T22:15:00Z): {why}")
    };
    let ts: jiff::Timestamp = text
        .parse()
        .map_err(|e: jiff::Error| invalid(e.to_string()))?;
    u64::try_from(ts.as_microsecond()).map_err(|_| invalid("before 1970".into()))
}

/// Formats microseconds since the epoch as DESIGN.md §3 writes times: `2026-11-26T22:15:00.123456Z`.
/// Integer arithmetic only (every answer carries a time, and a general formatter was a visible
/// share of a GET); checked against jiff in the tests.
pub fn format_timestamp_us(us: u64) -> String {
    let mut out = String::with_capacity(27);
    write_timestamp_us(&mut out, us).expect("writing to a String does not fail");
    out
}

/// `format_timestamp_us` into `out`, without allocating.
pub fn write_timestamp_us(out: &mut impl std::fmt::Write, us: u64) -> std::fmt::Result {
    match timestamp_bytes(us) {
        Some(bytes) => out.write_str(std::str::from_utf8(&bytes).expect("ASCII digits")),
        None => write!(out, "@{us}us"),
    }
}

/// The 27 bytes of `format_timestamp_us`, digit by digit (no formatter); `None` past year 9999.
fn timestamp_bytes(us: u64) -> Option<[u8; 27]> {
    let seconds = us / 1_000_000;
    let micros = us % 1_000_000;
    let (year, month, day) = civil_from_days(seconds / 86_400);
    if year > 9999 {
        return None;
    }
    let of_day = seconds % 86_400;
    let mut out = *b"0000-00-00T00:00:00.000000Z";
    let mut digits = |at: usize, width: usize, mut n: u64| {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
    };
    digits(0, 4, year);
    digits(5, 2, month);
    digits(8, 2, day);
    digits(11, 2, of_day / 3600);
    digits(14, 2, of_day / 60 % 60);
    digits(17, 2, of_day % 60);
    digits(20, 6, micros);
    Some(out)
}

/// (year, month, day) of the `days`-th day after 1970-01-01, proleptic Gregorian (the
/// era-based algorithm of H. Hinnant's "chrono-compatible low-level date algorithms").
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting_matches_jiff() {
        let mut us: u64 = 0;
        for step in [
            1u64,
            999_999,
            86_399_000_000,
            3_600_000_123,
            31_556_952_000_007,
        ] {
            for _ in 0..400 {
                us = us.wrapping_add(step) % 253_402_300_799_000_000;
                let ts = jiff::Timestamp::from_microsecond(us as i64).unwrap();
                let want = format!("{}Z", ts.strftime("%Y-%m-%dT%H:%M:%S%.6f"));
                assert_eq!(format_timestamp_us(us), want, "{us}");
            }
        }
        assert_eq!(
            format_timestamp_us(951_782_400_000_000),
            "2000-02-29T00:00:00.000000Z"
        );
    }

    #[test]
    fn timestamps_have_six_digits_and_z() {
        assert_eq!(format_timestamp_us(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            format_timestamp_us(1_795_731_300_123_456),
            "2026-11-26T22:15:00.123456Z"
        );
    }
}
