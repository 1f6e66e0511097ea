//! The crash policy: a panic in any thread of the daemon marks the store failed, instead of
//! the process carrying on half-broken (a dead commit or aging thread would otherwise go
//! unnoticed until the disk filled with WAL). From the first panic on, writes are refused
//! with EIO, `.iocfs/health` names the thread and its message, and the health loop stops
//! the systemd watchdog, so systemd restarts iocfs into recovery. Reads keep working.
//!
//! Two mechanisms, because a panic can happen with any lock held:
//! - a panic hook ([`install_hook`]) only records (thread, message) in a table that no
//!   other code locks for longer than a copy, so it can never deadlock;
//! - threads the daemon starts carry a [`PoisonDart`], dropped while unwinding (after
//!   every lock the thread held was released), which then calls the failure it was given
//!   (the daemon's fails the store).
//!
//! The WAL leader has its own guard (`store::wal::group_commit`) so that writers waiting
//! for a batch that panicked get an error instead of waiting forever.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, Once};

use crate::store::health::{Kind, Problem};
use crate::sync::{lock, thread_name};

static PANICKED: AtomicBool = AtomicBool::new(false);
static PANICS: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());
/// Panics remembered (the first ones matter; a cascade adds nothing).
const KEEP: usize = 8;

/// Record every panic of this process (once per process; the previous hook still prints).
pub fn install_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = crate::sync::panic_message(info.payload());
            let at = info
                .location()
                .map(|l| format!(" at {}:{}", l.file(), l.line()))
                .unwrap_or_default();
            record(thread_name(), format!("{message}{at}"));
            previous(info);
        }));
    });
}

fn record(thread: String, message: String) {
    PANICKED.store(true, Ordering::Release);
    let mut all = lock(&PANICS);
    if all.len() < KEEP {
        all.push((thread, message));
    }
}

/// True once any thread of this process panicked (with the hook installed).
pub fn has_panicked() -> bool {
    PANICKED.load(Ordering::Acquire)
}

/// The panics recorded so far, as health problems.
pub fn problems() -> Vec<Problem> {
    if !has_panicked() {
        return Vec::new();
    }
    lock(&PANICS)
        .iter()
        .map(|(thread, message)| panic_problem(thread, message))
        .collect()
}

pub fn panic_problem(thread: &str, message: &str) -> Problem {
    Problem::about(
        Kind::Panic,
        thread,
        format!("panicked: {message}; writes are refused, restart iocfs to recover"),
    )
}

/// The last message recorded for `thread`, if the hook saw its panic.
fn message_of(thread: &str) -> Option<String> {
    lock(&PANICS)
        .iter()
        .rev()
        .find(|(t, _)| t == thread)
        .map(|(_, m)| m.clone())
}

/// Carried by each thread the daemon starts (as fjall's PoisonDart): if the thread ends by
/// a panic, `fail` is called with the panic as a problem (the daemon's marks the store
/// failed).
pub struct PoisonDart {
    fail: Box<dyn Fn(Problem) + Send>,
}

impl PoisonDart {
    pub fn new(fail: impl Fn(Problem) + Send + 'static) -> PoisonDart {
        PoisonDart {
            fail: Box::new(fail),
        }
    }
}

impl Drop for PoisonDart {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let thread = thread_name();
            let message = message_of(&thread).unwrap_or_else(|| "(message not recorded)".into());
            (self.fail)(panic_problem(&thread, &message));
        }
    }
}
