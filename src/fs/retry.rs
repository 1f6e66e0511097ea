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

use crate::ioc::IocType;
use crate::store::model::Target;

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

/// Threads whose replace (an `O_TRUNC` open) of a type file was refused with ESTALE so
/// that they reopen it through an inode of their own (see `IocFs::open_live`), with that
/// inode once their lookup made it.
#[derive(Default)]
pub(super) struct ReplaceRetries(Mutex<HashMap<u32, (PartKey, Option<INodeNo>)>>);

/// A type file: its directory (live/, allow/, a source's) and type.
type PartKey = (Target, IocType);

impl ReplaceRetries {
    /// A replace open of `of` by `tid` through the inode readers share: true if it is to be
    /// refused (ESTALE) and reopened through its own inode. False when this is already the
    /// kernel's retry of such a refusal that looked nothing up: then it goes through as is
    /// (a second ESTALE would reach the caller).
    pub(super) fn refuse(&self, tid: u32, of: PartKey) -> bool {
        let mut m = crate::sync::lock(&self.0);
        if m.remove(&tid).is_some() {
            return false;
        }
        if m.len() >= MAX_THREADS {
            m.clear();
        }
        m.insert(tid, (of, None));
        true
    }

    /// The inode a lookup of `of` by `tid` gives if `tid` is reopening a replace of it:
    /// `make` makes it at the first such lookup, later ones give the same.
    pub(super) fn inode(
        &self,
        tid: u32,
        of: PartKey,
        make: impl FnOnce() -> INodeNo,
    ) -> Option<INodeNo> {
        let mut m = crate::sync::lock(&self.0);
        match m.get_mut(&tid) {
            Some((wanted, ino)) if *wanted == of => Some(*ino.get_or_insert_with(make)),
            _ => None,
        }
    }

    /// An open by `tid` went through or failed otherwise: its reopening is over.
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
    fn a_refused_replace_reopens_through_one_inode_of_its_own() {
        let r = ReplaceRetries::default();
        let of = (Target::Live, IocType::Domain);
        assert_eq!(r.inode(7, of, || INodeNo(9)), None, "no refusal before");
        assert!(r.refuse(7, of));
        assert_eq!(r.inode(8, of, || INodeNo(9)), None, "another thread");
        assert_eq!(
            r.inode(7, (Target::Live, IocType::Ipv4), || INodeNo(9)),
            None
        );
        assert_eq!(r.inode(7, of, || INodeNo(10)), Some(INodeNo(10)));
        assert_eq!(
            r.inode(7, of, || INodeNo(11)),
            Some(INodeNo(10)),
            "the same one"
        );
        r.opened(7);
        assert_eq!(r.inode(7, of, || INodeNo(12)), None, "over at the open");
    }

    #[test]
    fn a_retry_that_looked_nothing_up_is_not_refused_again() {
        let r = ReplaceRetries::default();
        let of = (Target::Live, IocType::Domain);
        assert!(r.refuse(7, of));
        assert!(!r.refuse(7, of));
        assert!(r.refuse(7, of), "a new open later is refused again");
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
