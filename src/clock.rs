//! Time source. Everything time-based (aging, first/last seen) reads a [`Clock`], so tests
//! move a [`ManualClock`] instead of sleeping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch, UTC.
pub trait Clock: Send + Sync {
    fn now(&self) -> u64;
}

/// The wall clock.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }
}

/// A clock that only moves when told to. Production code never builds one: the daemon
/// creates it only in builds with the `testing` feature.
#[derive(Debug)]
pub struct ManualClock {
    secs: AtomicU64,
}

impl ManualClock {
    pub fn new(start: u64) -> ManualClock {
        ManualClock {
            secs: AtomicU64::new(start),
        }
    }

    pub fn set(&self, secs: u64) {
        self.secs.store(secs, Ordering::SeqCst);
    }

    pub fn advance(&self, secs: u64) -> u64 {
        self.secs.fetch_add(secs, Ordering::SeqCst) + secs
    }
}

impl Clock for ManualClock {
    fn now(&self) -> u64 {
        self.secs.load(Ordering::SeqCst)
    }
}

/// Index timestamps are u32 seconds (good until 2106), which halves their memory.
pub fn to_u32(secs: u64) -> u32 {
    u32::try_from(secs).unwrap_or(u32::MAX)
}

/// RFC 3339 rendering of a Unix timestamp, for JSON and logs.
pub fn rfc3339(secs: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + std::time::Duration::from_secs(secs)).to_string()
}

#[cfg(feature = "testing")]
static MANUAL: std::sync::OnceLock<std::sync::Arc<ManualClock>> = std::sync::OnceLock::new();

/// Test builds only: make `clock` available to the `clock` ctl command.
#[cfg(feature = "testing")]
pub fn install_manual(clock: std::sync::Arc<ManualClock>) {
    let _ = MANUAL.set(clock);
}

/// The daemon's manual clock, if it runs on one (test builds only).
#[cfg(feature = "testing")]
pub fn manual() -> Option<std::sync::Arc<ManualClock>> {
    MANUAL.get().cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(1_000);
        assert_eq!(c.now(), 1_000);
        assert_eq!(c.advance(25 * 3600), 1_000 + 25 * 3600);
        c.set(5);
        assert_eq!(c.now(), 5);
    }

    #[test]
    fn timestamps_render_as_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(to_u32(u64::MAX), u32::MAX);
    }
}
