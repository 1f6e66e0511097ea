//! A control file (`stats.json`, `metrics`, `health`) a thread has looked up and not yet
//! opened keeps its content for that thread's next lookups, for a few milliseconds.
//!
//! Each content of these files is its own inode (a descriptor's fstat gives the size it
//! reads). Tools that `lstat` a file, open it and compare the two failed whenever a figure
//! moved in between: `cp` refuses a file "replaced while being copied" when the inode
//! numbers differ, and did so for 107 of 200 copies of `metrics` under an appending writer.
//! So a lookup pins the inode it gave, for the thread that asked, until that thread opens
//! the file (the open takes the pin), changes anything in the mount, or [`PIN_FOR`]
//! passes; the thread's lookups of the name in between give the same inode. Every read
//! (lookup, then open) still gets the content of its moment, and a thread that looked a
//! file up, wrote, and reads it sees its write.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fuser::INodeNo;

use super::nodes::SnapshotOf;
use crate::sync::lock;

/// How long a lookup's content stays pinned without an open: `cp`'s stat to open takes
/// 0.2–0.7 ms here (under strace) and 2 ms was too short once other tests loaded the
/// machine. The cost: a thread that stats a control file, waits for another process to
/// change the store (a durable append by a new `sh` takes 0.85 ms here) and then reads
/// the file within this time reads the figures of its stat.
const PIN_FOR: Duration = Duration::from_millis(10);

/// Pins kept at most: many threads that stat without opening (`find`, `ls -l` in loops)
/// must not grow the table without bound.
const MAX_PINS: usize = 4096;

#[derive(Default)]
pub struct StatPins {
    pins: Mutex<HashMap<(u32, SnapshotOf), (INodeNo, Instant)>>,
    /// Whether `pins` may hold anything: writes, which all call `changes`, skip the lock
    /// while nobody has looked a control file up.
    any: AtomicBool,
}

impl StatPins {
    /// The inode thread `tid` was given for `of` and has not opened yet, if recent.
    pub fn pinned(&self, tid: u32, of: &SnapshotOf) -> Option<INodeNo> {
        let pins = lock(&self.pins);
        let &(ino, at) = pins.get(&(tid, of.clone()))?;
        (at.elapsed() < PIN_FOR).then_some(ino)
    }

    /// Thread `tid` was given `ino` for `of`.
    pub fn pin(&self, tid: u32, of: SnapshotOf, ino: INodeNo) {
        let mut pins = lock(&self.pins);
        if pins.len() >= MAX_PINS {
            pins.retain(|_, (_, at)| at.elapsed() < PIN_FOR);
            if pins.len() >= MAX_PINS {
                pins.clear();
            }
        }
        pins.insert((tid, of), (ino, Instant::now()));
        self.any.store(true, Ordering::Release);
    }

    /// Thread `tid` opened the file `of`: its next lookup gets the content of its moment.
    pub fn opened(&self, tid: u32, of: &SnapshotOf) {
        lock(&self.pins).remove(&(tid, of.clone()));
    }

    /// Thread `tid` changes something: its next lookups show it.
    pub fn changes(&self, tid: u32) {
        if !self.any.load(Ordering::Acquire) {
            return;
        }
        let mut pins = lock(&self.pins);
        pins.retain(|(t, _), (_, at)| *t != tid && at.elapsed() < PIN_FOR);
        if pins.is_empty() {
            self.any.store(false, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::inode::STATS;

    #[test]
    fn a_pin_holds_for_its_thread_until_it_opens() {
        let pins = StatPins::default();
        let of = SnapshotOf::Control(STATS);
        pins.pin(7, of.clone(), INodeNo(100));
        assert_eq!(pins.pinned(7, &of), Some(INodeNo(100)));
        assert_eq!(
            pins.pinned(8, &of),
            None,
            "another thread's lookup is its own"
        );
        pins.opened(7, &of);
        assert_eq!(pins.pinned(7, &of), None);
        pins.pin(7, of.clone(), INodeNo(101));
        pins.pin(8, of.clone(), INodeNo(101));
        pins.changes(7);
        assert_eq!(
            pins.pinned(7, &of),
            None,
            "a thread that writes sees its write"
        );
        assert_eq!(pins.pinned(8, &of), Some(INodeNo(101)));
        std::thread::sleep(PIN_FOR);
        assert_eq!(pins.pinned(8, &of), None, "pins are short-lived");
    }

    #[test]
    fn the_table_stays_bounded() {
        let pins = StatPins::default();
        for tid in 0..(MAX_PINS as u32 + 10) {
            pins.pin(tid, SnapshotOf::Control(STATS), INodeNo(u64::from(tid)));
        }
        assert!(lock(&pins.pins).len() <= MAX_PINS);
        let last = MAX_PINS as u32 + 9;
        assert_eq!(
            pins.pinned(last, &SnapshotOf::Control(STATS)),
            Some(INodeNo(u64::from(last)))
        );
    }
}
