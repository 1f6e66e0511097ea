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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, TryLockError, Weak};

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
}

/// The copies kept, and where new ones are made.
pub struct InflatedCopies {
    /// Unnamed files are made in this directory; `None`: no copies (live versions are in
    /// memory, so passthrough is off or the filesystem has no O_TMPFILE).
    place: Option<(Disk, PathBuf)>,
    budget: AtomicU64,
    entries: Mutex<Vec<Entry>>,
    /// One inflate at a time: each uses every core already.
    making: Mutex<()>,
    /// Versions whose inflate failed (a damaged block, a read error): served from the
    /// blocks, not inflated again on every open. Dropped with their inode.
    failed: Mutex<HashMap<u64, Weak<TierInode>>>,
    tick: AtomicU64,
}

impl InflatedCopies {
    pub fn new(place: Option<(Disk, PathBuf)>, budget: u64) -> InflatedCopies {
        InflatedCopies {
            place,
            budget: AtomicU64::new(budget),
            entries: Mutex::new(Vec::new()),
            making: Mutex::new(()),
            failed: Mutex::new(HashMap::new()),
            tick: AtomicU64::new(0),
        }
    }

    /// Change the budget (config reload); copies over it go as soon as nobody holds them.
    pub fn set_budget(&self, budget: u64) {
        self.budget.store(budget, Ordering::Relaxed);
        self.trim();
    }

    /// Bytes of the copies kept for versions still alive (the others go at the next
    /// `trim`). A plain read: stats.json asks for it on every open.
    pub fn bytes(&self) -> u64 {
        crate::sync::lock(&self.entries)
            .iter()
            .filter(|e| alive(e))
            .map(|e| e.copy.size)
            .sum()
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
    /// someone holds) and no other copy is being made. `Ok(None)`: it is served from the
    /// blocks instead (too large, empty, damaged blocks, no room, another inflate under way
    /// — an open never waits for one of another file —, or no place for copies).
    pub fn get_or_make(
        &self,
        v: &Arc<TierVersion>,
        cache: &BlockCache,
    ) -> Result<Option<Arc<InflatedTier>>> {
        if let Some(hit) = self.find(v.id) {
            return Ok(Some(hit));
        }
        let Some((disk, dir)) = &self.place else {
            return Ok(None);
        };
        let budget = self.budget.load(Ordering::Relaxed);
        if v.size() == 0
            || v.size() > budget
            || v.blocks().iter().any(|b| b.bad)
            || crate::sync::lock(&self.failed).contains_key(&v.id)
        {
            return Ok(None);
        }
        let _making = match self.making.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return Ok(None),
        };
        if let Some(hit) = self.find(v.id) {
            return Ok(Some(hit));
        }
        // Only what nobody holds can make room; nothing is dropped unless the copy is made.
        if held_bytes(&crate::sync::lock(&self.entries)) + v.size() > budget
            || !leaves_room(dir, v.size())
        {
            return Ok(None);
        }
        let name = format!("{}/{}", v.tier, v.ty.file_name());
        let file = disk
            .create_unnamed(dir)
            .ctx(|| format!("create an unnamed file in {} for {name}", dir.display()))?;
        let started = std::time::Instant::now();
        if let Err(e) = super::fill::fill(v, &file, cache, &name) {
            crate::sync::lock(&self.failed).insert(v.id, v.inode());
            return Err(e);
        }
        log::debug!(
            "inflated {name} for passthrough readers: {} bytes, {} blocks, in {:?}",
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
        });
        drop(entries);
        drop(gone);
        Ok(Some(copy))
    }

    fn find(&self, version_id: u64) -> Option<Arc<InflatedTier>> {
        let mut entries = crate::sync::lock(&self.entries);
        let e = entries
            .iter_mut()
            .find(|e| e.copy.version_id == version_id && e.inode.strong_count() > 0)?;
        e.last_used = self.tick.fetch_add(1, Ordering::Relaxed);
        Some(e.copy.clone())
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

fn held_bytes(entries: &[Entry]) -> u64 {
    entries
        .iter()
        .filter(|e| held(e))
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
mod tests {
    use super::*;
    use crate::ioc::IocType;
    use crate::store::model::Tier;
    use crate::store::tier::Block;

    fn version(id: u64, lines: usize) -> Arc<TierVersion> {
        let blocks = (0..lines.div_ceil(100))
            .map(|b| {
                let n = (lines - b * 100).min(100);
                let raw: Vec<u8> = (0..n)
                    .flat_map(|i| format!("10.0.{b}.{i}\n").into_bytes())
                    .collect();
                Block::mem(b as u32, raw, vec![(1, 1); n])
            })
            .collect();
        TierVersion::new(id, Tier::Chaud, IocType::Ipv4, blocks, 0)
    }

    fn copies(budget: u64) -> (tempfile::TempDir, InflatedCopies) {
        let dir = tempfile::tempdir().unwrap();
        let place = Some((Disk::real(), dir.path().to_path_buf()));
        (dir, InflatedCopies::new(place, budget))
    }

    fn content(c: &InflatedTier) -> Vec<u8> {
        let mut buf = vec![0; c.size() as usize];
        c.file.read_exact_at(&mut buf, 0).unwrap();
        buf
    }

    #[test]
    fn a_copy_holds_the_version_byte_for_byte() {
        let (_dir, copies) = copies(1 << 20);
        let cache = BlockCache::new(1 << 20);
        let v = version(1, 2_345);
        let copy = copies.get_or_make(&v, &cache).unwrap().unwrap();
        assert_eq!(
            content(&copy),
            v.read(0, v.size() as usize, &cache).unwrap()
        );
        let again = copies.get_or_make(&v, &cache).unwrap().unwrap();
        assert!(
            Arc::ptr_eq(&copy, &again),
            "the second open reuses the copy"
        );
    }

    #[test]
    fn copies_held_stay_and_the_least_recently_used_go() {
        let cache = BlockCache::new(1 << 20);
        let (a, b, c) = (version(1, 1_000), version(2, 1_000), version(3, 1_000));
        let (_dir, copies) = copies(a.size() * 2 + 1);
        let held = copies.get_or_make(&a, &cache).unwrap().unwrap();
        drop(copies.get_or_make(&b, &cache).unwrap().unwrap());
        // Room for c only by dropping b (a is held, though used before b).
        let made = copies.get_or_make(&c, &cache).unwrap();
        assert!(made.is_some());
        assert_eq!(copies.bytes(), a.size() + c.size());
        // With a and c both held, nothing fits.
        assert!(copies.get_or_make(&b, &cache).unwrap().is_none());
        drop((held, made));
        assert!(copies.get_or_make(&b, &cache).unwrap().is_some());
    }

    #[test]
    fn a_rebased_version_keeps_its_copy_and_its_open_counts() {
        let (_dir, copies) = copies(1 << 20);
        let cache = BlockCache::new(1 << 20);
        let v = version(7, 1_000);
        let copy = copies.get_or_make(&v, &cache).unwrap().unwrap();
        v.opens().passthrough_opened(copy.clone());
        let rebased = v.rebased(v.blocks().to_vec());
        drop(v);
        assert!(
            rebased
                .opens()
                .held_copy()
                .is_some_and(|c| Arc::ptr_eq(&c, &copy)),
            "the counts belong to the inode"
        );
        let again = copies.get_or_make(&rebased, &cache).unwrap().unwrap();
        assert!(
            Arc::ptr_eq(&copy, &again),
            "no second inflate after a rebase"
        );
        rebased.opens().passthrough_closed();
        drop((copy, again));
        assert_eq!(copies.bytes(), rebased.size(), "kept while the inode lives");
    }

    #[test]
    fn a_failed_inflate_is_not_tried_again_and_a_busy_one_is_not_waited_for() {
        let (_dir, copies) = copies(1 << 20);
        let cache = BlockCache::new(1 << 20);
        // A block whose bytes are not raw_len long: the fill fails.
        let mut bad = Block::mem(0, b"10.0.0.1\n".to_vec(), vec![(1, 1)]);
        bad.raw_len = 20;
        let v = TierVersion::new(8, Tier::Chaud, IocType::Ipv4, vec![bad], 0);
        assert!(copies.get_or_make(&v, &cache).is_err());
        assert!(copies.get_or_make(&v, &cache).unwrap().is_none());
        // Another file being inflated: served from the blocks, no waiting.
        let other = version(9, 100);
        let busy = copies.making.lock().unwrap();
        assert!(copies.get_or_make(&other, &cache).unwrap().is_none());
        drop(busy);
        assert!(copies.get_or_make(&other, &cache).unwrap().is_some());
    }

    #[test]
    fn versions_gone_lose_their_copy_and_too_large_ones_get_none() {
        let cache = BlockCache::new(1 << 20);
        let (dir, copies) = copies(40_000);
        let v = version(1, 1_000);
        drop(copies.get_or_make(&v, &cache).unwrap().unwrap());
        assert_eq!(copies.bytes(), v.size());
        drop(v);
        assert_eq!(copies.bytes(), 0);
        assert!(copies
            .get_or_make(&version(2, 5_000), &cache)
            .unwrap()
            .is_none());
        // A copy must leave the filesystem room for writes.
        assert!(
            leaves_room(dir.path(), 4096),
            "this test needs a filesystem with room"
        );
        assert!(!leaves_room(dir.path(), u64::MAX / 2));
        assert!(!leaves_room(&dir.path().join("missing"), 0));
        assert!(InflatedCopies::new(None, 1 << 30)
            .get_or_make(&version(3, 10), &cache)
            .unwrap()
            .is_none());
    }
}
