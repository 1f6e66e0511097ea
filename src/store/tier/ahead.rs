//! Inflating the tier files a reader walking the tiers will open next (`grep -r`, `tar`, a
//! glob), while it reads the one it has: its next opens then find the copies made, or join
//! the inflate under way, instead of starting it (see `inflated`). One thread, one file at
//! a time, back to back; each new guess replaces the files not started yet.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};

use super::inflated::InflatedCopies;
use super::TierVersion;
use crate::cache::BlockCache;

#[derive(Default)]
struct Queue {
    next: VecDeque<Arc<TierVersion>>,
    closed: bool,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
}

/// The thread ends when this is dropped (with the store), after the inflate under way.
pub struct InflateAhead {
    shared: Arc<Shared>,
}

impl InflateAhead {
    pub fn start(copies: Arc<InflatedCopies>, cache: Arc<BlockCache>) -> InflateAhead {
        let shared = Arc::new(Shared::default());
        let theirs = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("iocfs-inflate-ahead".into())
            .spawn(move || {
                while let Some(v) = theirs.take() {
                    if let Err(e) = copies.make_ahead(&v, &cache) {
                        log::debug!("inflating {}/{} ahead: {e}", v.tier, v.ty.file_name());
                    }
                }
            });
        // Without the thread nothing is inflated ahead: opens inflate as before.
        crate::sync::lock(&shared.queue).closed = spawned.is_err();
        InflateAhead { shared }
    }

    /// Inflate `next`, in order, ahead of their opens (instead of what an earlier call
    /// asked for and is not under way yet).
    pub fn ask(&self, next: Vec<Arc<TierVersion>>) {
        let mut q = crate::sync::lock(&self.shared.queue);
        if !q.closed {
            q.next = next.into();
            self.shared.wake.notify_one();
        }
    }
}

impl Shared {
    /// The next file to inflate, waiting for one; `None` once closed.
    fn take(&self) -> Option<Arc<TierVersion>> {
        let mut q = crate::sync::lock(&self.queue);
        loop {
            if q.closed {
                return None;
            }
            if let Some(v) = q.next.pop_front() {
                return Some(v);
            }
            q = self
                .wake
                .wait(q)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }
}

impl Drop for InflateAhead {
    fn drop(&mut self) {
        crate::sync::lock(&self.shared.queue).closed = true;
        self.shared.wake.notify_one();
    }
}
