//! Readers of a view file that has no version yet — the first mount after an import, a view
//! or type just added by SIGHUP — wait for its first build instead of being told the file
//! does not exist: a firewall or web server fetching the list right after the daemon starts
//! gets the list, not a 404 (and never an empty list, which would unblock everything).
//!
//! A reader waits until the file is published, or until a build pass that began after it
//! started waiting has ended without publishing it (the build failed: the reader gets
//! ENOENT and the next pass retries), or the views stop, or its patience runs out. Each
//! waiter holds a FUSE thread, so only a bounded number wait at once; the others are
//! answered at once with what exists.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::sync::{lock, wait_timeout};

#[derive(Default)]
pub(super) struct FirstBuilds {
    state: Mutex<Passes>,
    changed: Condvar,
}

#[derive(Default)]
struct Passes {
    started: u64,
    finished: u64,
    waiters: usize,
    closed: bool,
}

impl FirstBuilds {
    pub(super) fn pass_started(&self) {
        lock(&self.state).started += 1;
    }

    pub(super) fn pass_finished(&self) {
        lock(&self.state).finished += 1;
        self.changed.notify_all();
    }

    /// A version was published (under the state lock, so a waiter between its check and its
    /// sleep cannot miss it).
    pub(super) fn published(&self) {
        let _st = lock(&self.state);
        self.changed.notify_all();
    }

    /// The views stopped building (shutdown): nobody waits any more.
    pub(super) fn close(&self) {
        lock(&self.state).closed = true;
        self.changed.notify_all();
    }

    /// `current()` once it gives something, or what it gives when waiting ends (see the
    /// module doc); with `max_waiters` already waiting, at once.
    pub(super) fn wait<T>(
        &self,
        patience: Duration,
        max_waiters: usize,
        mut current: impl FnMut() -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + patience;
        let mut st = lock(&self.state);
        if let Some(found) = current() {
            return Some(found);
        }
        if st.closed || st.waiters >= max_waiters {
            return None;
        }
        // The pass in progress may have been planned before the file existed in the config:
        // only one that starts from now on surely builds it.
        let until = st.started + 1;
        st.waiters += 1;
        let found = loop {
            if let Some(found) = current() {
                break Some(found);
            }
            let now = Instant::now();
            if st.closed || st.finished >= until || now >= deadline {
                break None;
            }
            st = wait_timeout(&self.changed, st, deadline - now);
        };
        st.waiters -= 1;
        found
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use super::*;

    const LONG: Duration = Duration::from_secs(30);

    /// Runs `wait` on a thread; the test then drives the passes.
    fn waiter(
        first: &Arc<FirstBuilds>,
        flag: &Arc<AtomicBool>,
        max: usize,
    ) -> std::thread::JoinHandle<Option<u32>> {
        let (first, flag) = (first.clone(), flag.clone());
        std::thread::spawn(move || {
            first.wait(LONG, max, || flag.load(Ordering::SeqCst).then_some(7))
        })
    }

    fn until_waiting(first: &FirstBuilds, n: usize) {
        while lock(&first.state).waiters != n {
            std::thread::yield_now();
        }
    }

    #[test]
    fn a_reader_waits_for_the_publication_in_the_pass_under_way() {
        let first = Arc::new(FirstBuilds::default());
        let flag = Arc::new(AtomicBool::new(false));
        first.pass_started();
        let w = waiter(&first, &flag, 4);
        until_waiting(&first, 1);
        flag.store(true, Ordering::SeqCst);
        first.published();
        assert_eq!(w.join().unwrap(), Some(7));
    }

    #[test]
    fn a_pass_begun_after_the_wait_that_ends_without_the_file_ends_it() {
        let first = Arc::new(FirstBuilds::default());
        let flag = Arc::new(AtomicBool::new(false));
        first.pass_started();
        let w = waiter(&first, &flag, 4);
        until_waiting(&first, 1);
        // The pass under way ends without it: it may have been planned without the file.
        first.pass_finished();
        std::thread::sleep(Duration::from_millis(20));
        assert!(!w.is_finished(), "gave up on the pass planned before it");
        first.pass_started();
        first.pass_finished();
        assert_eq!(w.join().unwrap(), None);
    }

    #[test]
    fn waiters_over_the_limit_and_after_close_are_answered_at_once() {
        let first = Arc::new(FirstBuilds::default());
        let flag = Arc::new(AtomicBool::new(false));
        let w = waiter(&first, &flag, 1);
        until_waiting(&first, 1);
        assert_eq!(first.wait(LONG, 1, || None::<u32>), None, "over the limit");
        first.close();
        assert_eq!(w.join().unwrap(), None);
        assert_eq!(first.wait(LONG, 4, || None::<u32>), None, "closed");
        assert_eq!(
            first.wait(LONG, 0, || Some(1)),
            Some(1),
            "found needs no wait"
        );
    }

    #[test]
    fn patience_runs_out() {
        let first = FirstBuilds::default();
        let t = Instant::now();
        assert_eq!(
            first.wait(Duration::from_millis(30), 4, || None::<u32>),
            None
        );
        assert!(t.elapsed() >= Duration::from_millis(30));
    }
}
