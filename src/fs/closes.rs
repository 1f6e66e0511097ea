//! Closes of live write handles: who closed a descriptor (a replace applies at its
//! writer's close, not at an idle copy's), and closes whose release later opens wait for.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::ioc::IocType;
use crate::store::model::Target;

/// Who closed a descriptor (a FLUSH).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closer {
    /// The descriptor table's id (the kernel's lock owner), also carried by every write.
    pub owner: u64,
    /// The closing thread. Programs started one after another often get the same table
    /// address, so the same id: with the thread, two children closing their inherited copy
    /// do not look like one process closing twice.
    pub pid: u32,
}

/// Which processes (descriptor tables, the kernel's lock owner ids) wrote through a write
/// handle, and which closed it without having written. A few at most; capped.
#[derive(Debug, Default)]
pub struct Closers {
    writers: Vec<u64>,
    /// A write came without an owner id: any close counts as the writer's.
    anonymous: bool,
    idle: Vec<Closer>,
}

impl Closers {
    const MAX: usize = 64;

    pub(super) fn wrote(&mut self, owner: Option<u64>) {
        match owner {
            Some(o) if !self.writers.contains(&o) && self.writers.len() < Self::MAX => {
                self.writers.push(o)
            }
            Some(_) => {}
            None => self.anonymous = true,
        }
    }

    /// Whether every write came from `owner`'s descriptor table (and at least one did).
    pub(super) fn only_writer(&self, owner: u64) -> bool {
        !self.anonymous && self.writers == [owner]
    }

    pub(super) fn is_writer(&self, owner: u64) -> bool {
        self.anonymous || self.writers.len() >= Self::MAX || self.writers.contains(&owner)
    }

    /// Record a close without writes by `closer`; true if it had closed so before.
    pub(super) fn closed_idle(&mut self, closer: Closer) -> bool {
        if self.idle.contains(&closer) {
            return true;
        }
        if self.idle.len() < Self::MAX {
            self.idle.push(closer);
        }
        false
    }
}

/// Write handles whose close waits for the release (an empty replace closed once, an open
/// last line), per type: the kernel sends the release after close() has returned, so opens
/// right after the close wait for it a moment. Writers wait for any of them, so `: > f`
/// (closed once, without writes, by a program) is not undone by an append that follows it;
/// readers only for a last line (`printf 'a\nb' >> f; cat f` shows `b`). Each waits at most
/// [`PENDING_WAIT`] after the close that registered it: a handle someone keeps open (a dup
/// held after closing one copy) delays opens once, not every open from then on.
#[derive(Default)]
pub struct Pending {
    entries: Mutex<HashMap<(Target, IocType), Vec<PendingClose>>>,
    next: std::sync::atomic::AtomicU64,
    settled: std::sync::Condvar,
}

struct PendingClose {
    id: u64,
    at: std::time::Instant,
    /// An unterminated last line (readers wait for it too).
    open_line: bool,
}

/// How long an open waits for such a release.
const PENDING_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

impl Pending {
    pub(super) fn add(&self, of: (Target, IocType), open_line: bool) -> u64 {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        crate::sync::lock(&self.entries)
            .entry(of)
            .or_default()
            .push(PendingClose {
                id,
                at: std::time::Instant::now(),
                open_line,
            });
        id
    }

    pub(super) fn done(&self, of: (Target, IocType), id: u64) {
        let mut entries = crate::sync::lock(&self.entries);
        if let Some(list) = entries.get_mut(&of) {
            list.retain(|p| p.id != id);
            if list.is_empty() {
                entries.remove(&of);
            }
        }
        self.settled.notify_all();
    }

    /// Wait (briefly) for the releases an open of a type file must follow.
    pub fn wait(&self, of: (Target, IocType), writer: bool) {
        let mut entries = crate::sync::lock(&self.entries);
        loop {
            let now = std::time::Instant::now();
            let until = entries
                .get(&of)
                .into_iter()
                .flatten()
                .filter(|p| writer || p.open_line)
                .map(|p| p.at + PENDING_WAIT)
                .filter(|&end| end > now)
                .max();
            let Some(until) = until else { return };
            entries = crate::sync::wait_timeout(&self.settled, entries, until - now);
        }
    }
}
