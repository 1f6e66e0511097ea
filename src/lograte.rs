//! One rate limit for the log lines a request can cause: rejected lines, refused writes,
//! reads of damaged blocks, bad ctl commands. Anyone who can make requests could otherwise
//! flood the journal, and journald's own rate limit would then drop lines that matter (a
//! WAL failure, which is logged without this limit).
//!
//! At most [`BUDGET_PER_MINUTE`] such lines are logged per minute; the rest are counted and
//! summed up in one line when the next minute begins.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const BUDGET_PER_MINUTE: u64 = 100;

static SUPPRESSED: AtomicU64 = AtomicU64::new(0);
static WINDOW: Mutex<Option<(Instant, u64)>> = Mutex::new(None);

/// Log `message()` at `level`, within the budget (the message is only built if logged).
pub fn log(level: log::Level, message: impl FnOnce() -> String) {
    if !log::log_enabled!(level) {
        return;
    }
    let mut window = crate::sync::lock(&WINDOW);
    let now = Instant::now();
    let (start, logged) = window.get_or_insert((now, 0));
    if now.duration_since(*start) > Duration::from_secs(60) {
        let dropped = SUPPRESSED.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            log::warn!(
                "{dropped} more log lines caused by requests were not logged in the last minute"
            );
        }
        *start = now;
        *logged = 0;
    }
    if *logged < BUDGET_PER_MINUTE {
        *logged += 1;
        log::log!(level, "{}", message());
    } else {
        SUPPRESSED.fetch_add(1, Ordering::Relaxed);
    }
}

pub fn warn(message: impl FnOnce() -> String) {
    log(log::Level::Warn, message);
}

pub fn error(message: impl FnOnce() -> String) {
    log(log::Level::Error, message);
}
