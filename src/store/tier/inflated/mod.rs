//! Whole tier versions inflated into unnamed files on the data directory's filesystem, for
//! readers the kernel serves itself (FUSE passthrough): a whole-file reader then waits for
//! one inflate on every core and reads at page-cache speed, instead of a FUSE round trip
//! per 128 KiB and a copy of every block out of the daemon.
//!
//! Copies are kept, least recently used first out, up to a byte budget (`cache.size`: the
//! same bound as the block cache, spent on disk space and reclaimable page cache instead of
//! the daemon's memory). A copy someone holds is never dropped: the kernel wants every
//! passthrough open of an inode to read the same backing file.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError, Weak};

use super::{TierInode, TierVersion};
use crate::cache::BlockCache;
use crate::disk::{Disk, Handle};
use crate::error::{IoContext, Result};

/// The bytes of one tier version, whole, in an unnamed file.
#[derive(Debug)]
pub struct InflatedTier {
    pub version_id: u64,
    file: Handle,
    size: u64,
}

impl InflatedTier {
    pub fn fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.file.fd()
    }

    pub fn size(&self) -> u64 {
        self.size
    }
}

/// How a tier version's inode is open. The kernel refuses a passthrough open of an inode
/// that descriptors read through its page cache, and any other open of one that
/// passthrough readers hold: so one kind at a time. Both are counted from the daemon's
/// answer to the release, which the kernel sends once it has let go of the file.
#[derive(Debug, Default)]
pub struct TierOpens {
    passthrough: usize,
    cached: usize,
    /// What the passthrough readers read.
    copy: Option<Arc<InflatedTier>>,
}

impl TierOpens {
    /// The copy passthrough readers hold: a new open must read it too.
    pub fn held_copy(&self) -> Option<Arc<InflatedTier>> {
        self.copy.clone().filter(|_| self.passthrough > 0)
    }

    /// Whether readers through the page cache hold the inode (no passthrough open now).
    pub fn cached_readers(&self) -> bool {
        self.cached > 0
    }

    pub fn passthrough_opened(&mut self, copy: Arc<InflatedTier>) {
        self.passthrough += 1;
        self.copy = Some(copy);
    }

    pub fn cached_opened(&mut self) {
        self.cached += 1;
    }

    pub fn passthrough_closed(&mut self) {
        self.passthrough = self.passthrough.saturating_sub(1);
        if self.passthrough == 0 {
            // Unheld, the copy may go when the budget needs room.
            self.copy = None;
        }
    }

    pub fn cached_closed(&mut self) {
        self.cached = self.cached.saturating_sub(1);
    }
}

struct Entry {
    /// Dead once the version is superseded and nobody reads it: the copy goes at once.
    inode: Weak<TierInode>,
    copy: Arc<InflatedTier>,
    last_used: u64,
    /// Made ahead and not opened yet.
    unopened_ahead: bool,
}

/// The copies kept, and where new ones are made.
pub struct InflatedCopies {
    /// Unnamed files are made in this directory; `None`: no copies (live versions are in
    /// memory, so passthrough is off or the filesystem has no O_TMPFILE).
    place: Option<(Disk, PathBuf)>,
    budget: AtomicU64,
    entries: Mutex<Vec<Entry>>,
    /// The inflate under way, if any (one at a time: each uses every core already), and
    /// the opens waiting for one to end.
    making: Mutex<MakingState>,
    /// Signalled when an inflate ends (made, failed or stopped).
    made: Condvar,
    /// Versions whose inflate failed (a damaged block, a read error): served from the
    /// blocks, not inflated again on every open. Dropped with their inode.
    failed: Mutex<HashMap<u64, Weak<TierInode>>>,
    tick: AtomicU64,
    ahead: AheadCounts,
}

/// What inflating ahead of opens did (stats.json `cache.inflated_ahead`).
#[derive(Debug, Default)]
pub struct AheadCounts {
    /// Copies made ahead of any open.
    pub made: AtomicU64,
    /// Of those, copies an open then found made.
    pub opened: AtomicU64,
    /// Copies stopped half-made because another file was opened.
    pub stopped: AtomicU64,
}

impl AheadCounts {
    /// Changes whenever any count does (each only grows).
    pub fn sum(&self) -> u64 {
        [&self.made, &self.opened, &self.stopped]
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }
}

impl InflatedCopies {
    pub fn new(place: Option<(Disk, PathBuf)>, budget: u64) -> InflatedCopies {
        InflatedCopies {
            place,
            budget: AtomicU64::new(budget),
            entries: Mutex::new(Vec::new()),
            making: Mutex::new(MakingState::default()),
            made: Condvar::new(),
            failed: Mutex::new(HashMap::new()),
            tick: AtomicU64::new(0),
            ahead: AheadCounts::default(),
        }
    }

    pub fn ahead_counts(&self) -> &AheadCounts {
        &self.ahead
    }

    /// Change the budget (config reload); copies over it go as soon as nobody holds them.
    pub fn set_budget(&self, budget: u64) {
        self.budget.store(budget, Ordering::Relaxed);
        self.trim();
    }

    /// Bytes of the copies kept for versions still alive (the others go at the next
    /// `trim`). A plain read: stats.json asks for it on every open.
    pub fn bytes(&self) -> u64 {
        live_bytes(&crate::sync::lock(&self.entries))
    }

    /// Drop the copies of versions gone, and the unheld ones over the budget or, when the
    /// filesystem runs short of room for writes, all of them. Every commit trims (each
    /// `commit_interval`), so copies give space back even when no new copy is made.
    pub fn trim(&self) {
        let low = self
            .place
            .as_ref()
            .is_some_and(|(_, dir)| !leaves_room(dir, 0));
        let room = if low {
            0
        } else {
            self.budget.load(Ordering::Relaxed)
        };
        self.evict_to(room);
        crate::sync::lock(&self.failed).retain(|_, inode| inode.strong_count() > 0);
    }

    /// Drop every copy nobody holds (passthrough for tier files was turned off).
    pub fn drop_unheld(&self) {
        self.evict_to(0);
    }

    /// `evict` down to `room`; the files are closed after the lock is let go (the last
    /// close of a large unnamed file frees its blocks there and then).
    fn evict_to(&self, room: u64) {
        let gone = evict(&mut crate::sync::lock(&self.entries), room);
        drop(gone);
    }

    /// The copy of `v`, made now if there is none, it fits the budget (next to the copies
    /// someone holds) and no other reader's copy is being made. `Ok(None)`: it is served from
    /// the blocks instead (too large, empty, damaged blocks, no room, another reader's
    /// inflate under way — an open never waits for one of another file —, or no place for
    /// copies). A copy of `v` being made ahead is waited for; one of another file is stopped.
    pub fn get_or_make(
        &self,
        v: &Arc<TierVersion>,
        cache: &BlockCache,
    ) -> Result<Option<Arc<InflatedTier>>> {
        self.make(v, cache, false)
    }

    /// Make the copy of `v` before anyone opens it (a reader walking the tier files is
    /// expected to open it next), if nothing is being made and it fits in the budget's free
    /// room: it never drops another copy. The first open of another file stops it.
    pub fn make_ahead(&self, v: &Arc<TierVersion>, cache: &BlockCache) -> Result<()> {
        self.make(v, cache, true).map(drop)
    }

    fn make(
        &self,
        v: &Arc<TierVersion>,
        cache: &BlockCache,
        ahead: bool,
    ) -> Result<Option<Arc<InflatedTier>>> {
        let Some((disk, dir)) = &self.place else {
            return Ok(None);
        };
        let mut making = crate::sync::lock(&self.making);
        loop {
            if let Some(hit) = self.find(v.id, !ahead) {
                return Ok(Some(hit));
            }
            // A guess never delays an open: not while one waits for the cores.
            if ahead && (making.now.is_some() || making.waiting > 0) {
                return Ok(None);
            }
            let budget = self.budget.load(Ordering::Relaxed);
            if v.size() == 0
                || v.size() > budget
                || v.blocks().iter().any(|b| b.bad)
                || crate::sync::lock(&self.failed).contains_key(&v.id)
            {
                return Ok(None);
            }
            match making.now.as_mut() {
                None => break,
                // The guess was right: this open waits for it, which makes it an open's
                // inflate (no other open may stop it now).
                Some(m) if m.version_id == v.id => m.ahead = false,
                // A guess that missed: this open needs the cores.
                Some(m) if m.ahead => m.stop.store(true, Ordering::Relaxed),
                Some(_) => return Ok(None),
            }
            making.waiting += 1;
            making = self
                .made
                .wait(making)
                .unwrap_or_else(PoisonError::into_inner);
            making.waiting -= 1;
        }
        let budget = self.budget.load(Ordering::Relaxed);
        // Only what nobody holds can make room (nothing when made ahead); nothing is
        // dropped unless the copy is made.
        let taken = {
            let entries = crate::sync::lock(&self.entries);
            if ahead {
                live_bytes(&entries)
            } else {
                held_bytes(&entries)
            }
        };
        if taken + v.size() > budget || !leaves_room(dir, v.size()) {
            return Ok(None);
        }
        let stop = Arc::new(AtomicBool::new(false));
        making.now = Some(Making {
            version_id: v.id,
            ahead,
            stop: stop.clone(),
        });
        // Opens of other files must see it while it runs (and not wait for the lock).
        drop(making);
        let mark = MakingMark(self);
        let name = format!("{}/{}", v.tier, v.ty.file_name());
        let file = disk
            .create_unnamed(dir)
            .ctx(|| format!("create an unnamed file in {} for {name}", dir.display()))?;
        let started = std::time::Instant::now();
        let filled = super::fill::fill(v, &file, cache, &name, &stop);
        if let Err(e) = filled {
            // An open tries a guess's file again itself (and says why it failed).
            if !ahead {
                crate::sync::lock(&self.failed).insert(v.id, v.inode());
            }
            return Err(e);
        }
        if stop.load(Ordering::Relaxed) {
            self.ahead.stopped.fetch_add(1, Ordering::Relaxed);
            log::debug!("stopped inflating {name} ahead: another file was opened");
            // Its blocks are freed before the open that stopped it checks for room.
            drop(file);
            return Ok(None);
        }
        log::debug!(
            "inflated {name}{}: {} bytes, {} blocks, in {:?}",
            if ahead {
                " ahead of its open"
            } else {
                " for passthrough readers"
            },
            v.size(),
            v.blocks().len(),
            started.elapsed()
        );
        let copy = Arc::new(InflatedTier {
            version_id: v.id,
            file,
            size: v.size(),
        });
        let mut entries = crate::sync::lock(&self.entries);
        let gone = evict(&mut entries, budget.saturating_sub(v.size()));
        entries.push(Entry {
            inode: v.inode(),
            copy: copy.clone(),
            last_used: self.tick.fetch_add(1, Ordering::Relaxed),
            unopened_ahead: ahead,
        });
        if ahead {
            self.ahead.made.fetch_add(1, Ordering::Relaxed);
        }
        drop(entries);
        drop(mark);
        drop(gone);
        Ok(Some(copy))
    }

    /// The copy of a version; `by_open`: for an open, which marks it used.
    fn find(&self, version_id: u64, by_open: bool) -> Option<Arc<InflatedTier>> {
        let mut entries = crate::sync::lock(&self.entries);
        let e = entries
            .iter_mut()
            .find(|e| e.copy.version_id == version_id && e.inode.strong_count() > 0)?;
        if by_open {
            e.last_used = self.tick.fetch_add(1, Ordering::Relaxed);
            if std::mem::take(&mut e.unopened_ahead) {
                self.ahead.opened.fetch_add(1, Ordering::Relaxed);
            }
        }
        Some(e.copy.clone())
    }
}

#[derive(Default)]
struct MakingState {
    now: Option<Making>,
    /// Opens waiting for `now` to end.
    waiting: usize,
}

/// The inflate under way.
struct Making {
    version_id: u64,
    /// Made ahead of any open of it.
    ahead: bool,
    /// Set to stop it (its workers finish the blocks they hold, the copy is dropped).
    stop: Arc<AtomicBool>,
}

/// Marks the inflate under way as done when dropped, however it ends (made, failed,
/// stopped): the mark goes and waiters wake.
struct MakingMark<'a>(&'a InflatedCopies);

impl Drop for MakingMark<'_> {
    fn drop(&mut self) {
        crate::sync::lock(&self.0.making).now = None;
        self.0.made.notify_all();
    }
}

/// Free space a copy must leave on the data directory's filesystem: reads must never take
/// the room that writes (the WAL, commits) need. At least this much, and 5% of the
/// filesystem when that is more.
const ROOM_LEFT: u64 = 1 << 30;

/// Whether a copy of `size` bytes in `dir` leaves `ROOM_LEFT` free (false when that can't
/// be known).
fn leaves_room(dir: &std::path::Path, size: u64) -> bool {
    let Ok(st) = nix::sys::statvfs::statvfs(dir) else {
        return false;
    };
    let unit = st.fragment_size();
    let free = st.blocks_available().saturating_mul(unit);
    let total = st.blocks().saturating_mul(unit);
    free.saturating_sub(size) >= ROOM_LEFT.max(total / 20)
}

/// Its version is still current or read by someone, or someone reads the copy.
fn alive(e: &Entry) -> bool {
    e.inode.strong_count() > 0 || held(e)
}

/// Passthrough readers hold it (their `TierOpens`), or an open is handing it out.
fn held(e: &Entry) -> bool {
    Arc::strong_count(&e.copy) > 1
}

/// Bytes of the copies of versions still alive (what `bytes` reports).
fn live_bytes(entries: &[Entry]) -> u64 {
    bytes_of(entries, alive)
}

fn held_bytes(entries: &[Entry]) -> u64 {
    bytes_of(entries, held)
}

fn bytes_of(entries: &[Entry], which: fn(&Entry) -> bool) -> u64 {
    entries
        .iter()
        .filter(|e| which(e))
        .map(|e| e.copy.size)
        .sum()
}

/// Take out the copies of versions gone, then the least recently used ones nobody holds
/// until the rest fit in `room`; returned, for the caller to close outside its lock.
fn evict(entries: &mut Vec<Entry>, room: u64) -> Vec<Entry> {
    entries.sort_by_key(|e| std::cmp::Reverse(e.last_used));
    let mut kept = held_bytes(entries);
    let (keep, gone) = std::mem::take(entries).into_iter().partition(|e| {
        if held(e) {
            return true;
        }
        let keep = alive(e) && kept + e.copy.size <= room;
        if keep {
            kept += e.copy.size;
        }
        keep
    });
    *entries = keep;
    gone
}

#[cfg(test)]
mod tests;
