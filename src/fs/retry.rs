//! Telling the kernel's retry of a stale open from a fresh open.
//!
//! Every version of a file is its own inode, and an open of a superseded version answers
//! ESTALE so that the kernel looks the name up again: an open that starts after a change
//! sees the change. The kernel retries such an open exactly once. When the file changes
//! again between that retry's lookup and its open, a second ESTALE would reach the caller
//! (`cat: Stale file handle`). That version was current during the caller's own syscall,
//! so serving it is as if the open had happened at the lookup: the retry is recognised by
//! its thread (FUSE requests carry the caller's thread id, and a thread makes one syscall
//! at a time) going ESTALE → LOOKUP → OPEN of the inode that lookup returned.

use std::collections::HashMap;
use std::sync::Mutex;

use fuser::INodeNo;

/// Threads whose open was refused with ESTALE, and the inode their next lookup returned.
#[derive(Default)]
pub(super) struct StaleRetries(Mutex<HashMap<u32, Option<INodeNo>>>);

/// Threads remembered at most; a refused open whose retry never comes (the caller was
/// killed) leaves an entry, so the map is emptied when it grows past this.
const MAX_THREADS: usize = 4096;

impl StaleRetries {
    /// An open by `tid` was refused with ESTALE: its retry comes next.
    pub(super) fn refused(&self, tid: u32) {
        let mut m = crate::sync::lock(&self.0);
        if m.len() >= MAX_THREADS {
            m.clear();
        }
        m.insert(tid, None);
    }

    /// A lookup by `tid` returned `ino`.
    pub(super) fn looked_up(&self, tid: u32, ino: INodeNo) {
        let mut m = crate::sync::lock(&self.0);
        if let Some(seen) = m.get_mut(&tid) {
            *seen = Some(ino);
        }
    }

    /// Whether an open of the superseded `ino` by `tid` is the retry of a refused open
    /// whose lookup returned `ino`. Any open by `tid` ends its retry.
    pub(super) fn is_retry(&self, tid: u32, ino: INodeNo) -> bool {
        let mut m = crate::sync::lock(&self.0);
        m.remove(&tid) == Some(Some(ino))
    }

    /// An open by `tid` went through: any retry it was is over.
    pub(super) fn opened(&self, tid: u32) {
        let mut m = crate::sync::lock(&self.0);
        if !m.is_empty() {
            m.remove(&tid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_lookup_after_a_refusal_makes_a_retry() {
        let r = StaleRetries::default();
        r.looked_up(7, INodeNo(100));
        assert!(!r.is_retry(7, INodeNo(100)), "no refusal before");
        r.refused(7);
        r.looked_up(8, INodeNo(101));
        r.looked_up(7, INodeNo(101));
        assert!(!r.is_retry(8, INodeNo(101)), "another thread");
        assert!(r.is_retry(7, INodeNo(101)));
        assert!(!r.is_retry(7, INodeNo(101)), "one retry per refusal");
    }

    #[test]
    fn a_retry_of_another_inode_or_after_an_open_is_not_served() {
        let r = StaleRetries::default();
        r.refused(7);
        r.looked_up(7, INodeNo(101));
        assert!(!r.is_retry(7, INodeNo(102)));
        r.refused(7);
        r.looked_up(7, INodeNo(101));
        r.opened(7);
        assert!(!r.is_retry(7, INodeNo(101)));
    }
}
