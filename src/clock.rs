//! The wall clock behind the control plane's time decisions: the `now` that envelope timestamps
//! are checked against (raised to the persisted time floor, [`trusted_now`]), the
//! stamps of the dedupe store and the timestamps of the messages the device sends.
//!
//! Test hook: [`CLOCK_HOOK_ENV`] names a file holding an offset in seconds (signed, fractions
//! allowed); every reading adds what the file says at that moment, so a test steps a running
//! daemon's clock without touching the host's (a time namespace does not move CLOCK_REALTIME).
//! Unset in production: a reading is then the system clock and one check of a cached `Option`.
//! A [`WallClock`] can also be stepped in-process ([`WallClock::step`]) for unit tests, without
//! moving any other test's clock.

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};

/// Test hook: a file whose content (seconds) is added to every reading. Not `VISTTER_*`: those
/// are configuration.
pub const CLOCK_HOOK_ENV: &str = "VSA_TEST_CLOCK_OFFSET_FILE";

/// The system clock plus the test hook's offset.
pub fn now() -> jiff::Timestamp {
    shifted(jiff::Timestamp::now(), hook_offset_ms())
}

/// The time checks run against: the system clock, but never earlier than the persisted time floor
/// (a device that boots without a real-time clock in 1970 must not reopen old commands).
pub fn trusted_now(system: jiff::Timestamp, floor_ms: i64) -> jiff::Timestamp {
    let floor = jiff::Timestamp::from_millisecond(floor_ms).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    system.max(floor)
}

/// A handle on the wall clock; clones share their steps.
#[derive(Debug, Clone, Default)]
pub struct WallClock {
    /// Added to every reading of this clock and its clones (tests step it; 0 otherwise).
    step_ms: Arc<AtomicI64>,
}

impl WallClock {
    pub fn now(&self) -> jiff::Timestamp {
        shifted(now(), self.step_ms.load(Ordering::SeqCst))
    }

    /// Moves this clock (and its clones) by `ms`, forward or back.
    pub fn step(&self, ms: i64) {
        self.step_ms.fetch_add(ms, Ordering::SeqCst);
    }
}

fn shifted(t: jiff::Timestamp, ms: i64) -> jiff::Timestamp {
    if ms == 0 {
        return t;
    }
    jiff::Timestamp::from_millisecond(t.as_millisecond().saturating_add(ms)).unwrap_or(t)
}

fn hook_offset_ms() -> i64 {
    static PATH: OnceLock<Option<PathBuf>> = OnceLock::new();
    let path = PATH.get_or_init(|| {
        let p = std::env::var_os(CLOCK_HOOK_ENV).filter(|p| !p.is_empty()).map(PathBuf::from)?;
        tracing::warn!("test hook: the wall clock is offset by the seconds in {} ({CLOCK_HOOK_ENV})", p.display());
        Some(p)
    });
    path.as_deref().map_or(0, offset_in)
}

/// The offset a hook file holds, ms (0 when it cannot be read: the clock is then the system's).
fn offset_in(path: &std::path::Path) -> i64 {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    s.trim().parse::<f64>().ok().filter(|s| s.is_finite()).map_or(0, |s| (s * 1000.0) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clock_steps_with_its_clones_and_a_hook_file_is_read_in_seconds() {
        let c = WallClock::default();
        let other = WallClock::default();
        c.clone().step(86_400_000);
        // The unstepped clock is read first: the stepped one, read after it, is at least a day on.
        let base = other.now().as_millisecond();
        let ahead = c.now().as_millisecond() - base;
        assert!((86_400_000..86_460_000).contains(&ahead), "{ahead}");
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("offset");
        assert_eq!(offset_in(&f), 0, "no file: no offset");
        std::fs::write(&f, "-90.5\n").unwrap();
        assert_eq!(offset_in(&f), -90_500);
        std::fs::write(&f, "soon").unwrap();
        assert_eq!(offset_in(&f), 0);
    }
}
