//! Live sets: the raw, writable bucket.
//!
//! A [`LiveVersion`] is what a reader sees: the file's bytes, kept in a memfd so they can be
//! read with pread (and later handed to the kernel for FUSE passthrough). Appends only extend
//! a version, and become visible by publishing the new length *after* the bytes are written,
//! so a reader never sees a partial line. Anything else (replace, removal, aging) builds a new
//! version; handles opened on the old one keep reading it whole.
//!
//! A [`LiveSet`] is the engine's side: the current version plus the first/last-seen times of
//! each line, held in a slot table whose ids stay stable while other lines come and go (the
//! index points at slots, so removing lines never rewrites other keys' entries).

pub mod format;
mod version;

use std::sync::Arc;

pub use version::{LiveVersion, Storage};

use crate::error::{Error, Result};

/// First and last sighting, Unix seconds.
pub type Times = (u32, u32);

#[derive(Debug)]
pub struct LiveSet {
    pub version: Arc<LiveVersion>,
    /// Times by slot id. Freed slots are reused.
    slots: Vec<Times>,
    free: Vec<u32>,
    /// Slot of each line, in file order.
    order: Vec<u32>,
    /// A lower bound of last_seen over all lines: aging skips the set while it is recent.
    min_last: u32,
    /// Recovery: appended bytes are gathered here and written in pieces of
    /// [`DEFERRED_WRITE_SIZE`], instead of one write per replayed record. (Bytes, lines, mtime.)
    deferred: Option<(Vec<u8>, u64, u64)>,
    /// A copy of the version with this id, for an append while it is pinned.
    successor: Option<(u64, Arc<LiveVersion>)>,
    /// Most lines the set may hold: slot ids must fit an index entry ([`MAX_LIVE_LINES`];
    /// lower in tests).
    slot_limit: usize,
}

/// Most lines a live set can hold: its slot ids are 27 bits in an index entry.
pub const MAX_LIVE_LINES: usize = crate::store::model::MAX_LOC_ID as usize + 1;

/// Deferred appends are written out once this many bytes are gathered: large enough to
/// make the writes few, small enough that the buffer is reused rather than grown (fresh
/// memory costs a page fault per 4 KiB).
const DEFERRED_WRITE_SIZE: usize = 4 << 20;

/// A line taken out of a live set, with its times.
pub struct Removed {
    pub value: Vec<u8>,
    pub times: Times,
}

impl LiveSet {
    pub fn empty(version: Arc<LiveVersion>) -> LiveSet {
        LiveSet {
            version,
            slots: Vec::new(),
            free: Vec::new(),
            order: Vec::new(),
            min_last: u32::MAX,
            deferred: None,
            successor: None,
            slot_limit: MAX_LIVE_LINES,
        }
    }

    /// Lines that can still be added before the set is full.
    pub fn room(&self) -> usize {
        self.slot_limit.saturating_sub(self.order.len())
    }

    /// Test builds (`live-slot-limit` in ctl): a smaller bound, to reach it.
    pub fn set_slot_limit(&mut self, limit: usize) {
        self.slot_limit = limit.min(MAX_LIVE_LINES);
    }

    pub fn lines(&self) -> usize {
        self.order.len()
    }

    pub fn times(&self, slot: u32) -> Option<Times> {
        self.slots.get(slot as usize).copied()
    }

    pub fn min_last(&self) -> u32 {
        self.min_last
    }

    /// Record a new sighting of the line in `slot`.
    pub fn touch(&mut self, slot: u32, now: u32) {
        if let Some(t) = self.slots.get_mut(slot as usize) {
            t.1 = t.1.max(now);
        }
    }

    /// A slot for a line: a freed one, or a new one while ids stay in range (an id past it
    /// would alias another line's in the index). Writes are checked against [`Self::room`]
    /// before they are journaled, so this failing means a bug, never a user's write.
    fn alloc(&mut self, times: Times) -> Result<u32> {
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None if self.slots.len() < self.slot_limit => {
                self.slots.push(times);
                (self.slots.len() - 1) as u32
            }
            None => {
                return Err(Error::TooLarge(format!(
                    "live/{} holds {} lines, the most a live set can",
                    self.version.ty.file_name(),
                    self.slot_limit
                )))
            }
        };
        self.slots[slot as usize] = times;
        self.min_last = self.min_last.min(times.1);
        Ok(slot)
    }

    /// Take the slot of a line about to be appended (lines are pushed in file order);
    /// `publish` then writes the lines' bytes.
    pub fn push_line(&mut self, times: Times) -> Result<u32> {
        let slot = self.alloc(times)?;
        self.order.push(slot);
        Ok(slot)
    }

    /// Write the bytes of the `lines` pushed since the last publish; readers see them now.
    /// Returns true when that took a new version (passthrough readers held the old one).
    pub fn publish(
        &mut self,
        values: &[u8],
        lines: u64,
        mtime: u64,
        mut new_id: impl FnMut() -> u64,
    ) -> Result<bool> {
        if let Some((bytes, n, at)) = &mut self.deferred {
            bytes.extend_from_slice(values);
            *n += lines;
            *at = mtime;
            if bytes.len() >= DEFERRED_WRITE_SIZE {
                write_deferred(&mut self.version, bytes, *n, *at, new_id)?;
                bytes.clear();
                *n = 0;
            }
            return Ok(false);
        }
        if self.version.has_passthrough_readers() {
            let next = match self.successor.take() {
                Some((base, copy))
                    if base == self.version.id && copy.len() == self.version.len() =>
                {
                    copy
                }
                // Not prepared (a pin that raced the batch): copy now, under the lock.
                _ => {
                    log::warn!(
                        "live/{}: copying a pinned version under the state lock",
                        self.version.ty.file_name()
                    );
                    self.version.copy(new_id(), mtime)?
                }
            };
            self.version =
                append_or_move_to_memory(&next, values, lines, mtime, &mut new_id)?.unwrap_or(next);
            return Ok(true);
        }
        match append_or_move_to_memory(&self.version, values, lines, mtime, &mut new_id)? {
            Some(moved) => {
                self.version = moved;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// A copy of the current version `base`, made before the state lock was taken, for
    /// the next append to extend if passthrough readers still pin `base` (see `publish`).
    pub fn offer_successor(&mut self, base: u64, copy: Arc<LiveVersion>) {
        self.successor = Some((base, copy));
    }

    /// Drop a copy the batch did not use.
    pub fn drop_successor(&mut self) {
        self.successor = None;
    }

    /// Gather appends in memory until `finish_deferring` (used while replaying the log).
    pub fn start_deferring(&mut self) {
        self.deferred.get_or_insert((Vec::new(), 0, 0));
    }

    pub fn finish_deferring(&mut self, new_id: impl FnMut() -> u64) -> Result<()> {
        if let Some((bytes, lines, mtime)) = self.deferred.take() {
            if !bytes.is_empty() {
                write_deferred(&mut self.version, &bytes, lines, mtime, new_id)?;
            }
        }
        Ok(())
    }

    /// The set's bytes, including appends not written out yet.
    fn content(&self) -> Result<Vec<u8>> {
        let mut content = self.version.read_all()?;
        if let Some((bytes, _, _)) = &self.deferred {
            content.extend_from_slice(bytes);
        }
        Ok(content)
    }

    /// Append whole lines (`values` = "v\n" for each entry of `times`), returning their slots.
    pub fn append(
        &mut self,
        values: &[u8],
        times: &[Times],
        mtime: u64,
        new_id: impl FnMut() -> u64,
    ) -> Result<Vec<u32>> {
        let slots = times
            .iter()
            .map(|&t| self.push_line(t))
            .collect::<Result<Vec<u32>>>()?;
        self.publish(values, times.len() as u64, mtime, new_id)?;
        Ok(slots)
    }

    /// Make `copy` (of the version `base`, made without the lock) current, if `base` is
    /// still current and unchanged. True if it was.
    pub fn install_copy(&mut self, base: u64, copy: Arc<LiveVersion>) -> bool {
        let v = &self.version;
        if v.id != base || v.len() != copy.len() {
            return false;
        }
        self.version = copy;
        true
    }

    /// Times of every line in file order (for commits).
    pub fn times_in_order(&self) -> Vec<Times> {
        self.order.iter().map(|&s| self.slots[s as usize]).collect()
    }

    /// Keep the lines for which `keep(value, times)` is true, in order, as a new version with
    /// id `new_id`; return what was dropped. The slots of kept lines do not change.
    pub fn retain(
        &mut self,
        new_id: u64,
        mtime: u64,
        mut keep: impl FnMut(&[u8], Times) -> bool,
    ) -> Result<Vec<Removed>> {
        let content = self.content()?;
        let mut kept = Vec::with_capacity(content.len());
        let mut order = Vec::with_capacity(self.order.len());
        let mut removed = Vec::new();
        let mut min_last = u32::MAX;
        for (line, &slot) in content.split_inclusive(|&b| b == b'\n').zip(&self.order) {
            let value = line.strip_suffix(b"\n").unwrap_or(line);
            let times = self.slots[slot as usize];
            if keep(value, times) {
                kept.extend_from_slice(line);
                order.push(slot);
                min_last = min_last.min(times.1);
            } else {
                removed.push(Removed {
                    value: value.to_vec(),
                    times,
                });
                self.free.push(slot);
            }
        }
        if removed.is_empty() {
            self.min_last = min_last;
            return Ok(removed);
        }
        self.version = LiveVersion::new(
            new_id,
            self.version.of(),
            &kept,
            order.len() as u64,
            mtime,
            self.version.storage(),
        )?;
        if let Some(deferred) = &mut self.deferred {
            // The new version holds every kept line, deferred ones included.
            *deferred = (Vec::new(), 0, 0);
        }
        self.order = order;
        self.min_last = min_last;
        if self.order.is_empty() {
            // Everything aged out: give the slot table's memory back.
            self.slots = Vec::new();
            self.free = Vec::new();
        }
        Ok(removed)
    }

    /// Replace everything with `values` (whole lines) and their times; returns the new slots
    /// in line order. Old slot ids become invalid.
    pub fn replace(
        &mut self,
        new_id: u64,
        values: &[u8],
        times: Vec<Times>,
        mtime: u64,
    ) -> Result<()> {
        let version = LiveVersion::new(
            new_id,
            self.version.of(),
            values,
            times.len() as u64,
            mtime,
            self.version.storage(),
        )?;
        self.install(version, times)
    }

    /// An empty version in this set's storage, for a replace to [`LiveVersion::fill`].
    pub fn new_version(&self, new_id: u64, mtime: u64) -> Result<Arc<LiveVersion>> {
        LiveVersion::new(
            new_id,
            self.version.of(),
            b"",
            0,
            mtime,
            self.version.storage(),
        )
    }

    /// Make `version` (filled with the lines of `times`, in order) the whole set; its lines
    /// take slots 0, 1, 2… in order. Old slot ids become invalid.
    pub fn install(&mut self, version: Arc<LiveVersion>, times: Vec<Times>) -> Result<()> {
        if times.len() > self.slot_limit {
            return Err(Error::TooLarge(format!(
                "live/{} would hold {} lines, more than a live set can ({})",
                version.ty.file_name(),
                times.len(),
                self.slot_limit
            )));
        }
        let deferring = self.deferred.is_some();
        let limit = self.slot_limit;
        *self = LiveSet::empty(version);
        self.slot_limit = limit;
        if deferring {
            self.start_deferring();
        }
        self.min_last = times.iter().map(|t| t.1).min().unwrap_or(u32::MAX);
        self.order = (0..times.len() as u32).collect();
        // The times become the slot table as they are (a replace of millions of lines
        // does not copy them).
        self.slots = times;
        Ok(())
    }

    /// Iterate (value, slot) over the current content; used at load and by checks. The
    /// bytes are read in pieces: a set of gigabytes is never copied whole.
    pub fn for_each_line(&self, mut f: impl FnMut(&[u8], u32)) -> Result<()> {
        const PIECE: usize = 4 << 20;
        let mut order = self.order.iter();
        let mut each = |text: &[u8]| {
            for line in text.split_inclusive(|&b| b == b'\n') {
                if let Some(&slot) = order.next() {
                    f(line.strip_suffix(b"\n").unwrap_or(line), slot);
                }
            }
        };
        let len = self.version.len();
        let mut at = 0u64;
        let mut carry: Vec<u8> = Vec::new();
        while at < len {
            let piece = self.version.read_at(at, PIECE)?;
            at += piece.len() as u64;
            carry.extend_from_slice(&piece);
            let cut = memchr::memrchr(b'\n', &carry).map_or(0, |nl| nl + 1);
            each(&carry[..cut]);
            carry.drain(..cut);
        }
        if let Some((bytes, _, _)) = &self.deferred {
            carry.extend_from_slice(bytes);
        }
        each(&carry);
        Ok(())
    }
}

/// Write appends gathered during recovery to `version` (moved to memory if the disk is
/// full: recovery on a full disk must still come up).
fn write_deferred(
    version: &mut Arc<LiveVersion>,
    bytes: &[u8],
    lines: u64,
    mtime: u64,
    mut new_id: impl FnMut() -> u64,
) -> Result<()> {
    if let Some(moved) = append_or_move_to_memory(version, bytes, lines, mtime, &mut new_id)? {
        *version = moved;
    }
    Ok(())
}

/// Append to `v`; if its file can't grow because the data directory's filesystem is full
/// (live versions are unnamed files there when served by FUSE passthrough), a copy of it in
/// memory takes the lines instead (returned): the record being applied is durable already,
/// and failing to apply it would stop the store. Readers of `v` keep it as it was.
fn append_or_move_to_memory(
    v: &Arc<LiveVersion>,
    values: &[u8],
    lines: u64,
    mtime: u64,
    new_id: &mut impl FnMut() -> u64,
) -> Result<Option<Arc<LiveVersion>>> {
    match v.append(values, lines, mtime) {
        Err(e) if e.is_disk_full() && *v.storage() != Storage::Memfd => {
            log::warn!(
                "{}/{}: {e}; this set is kept in memory until its next version",
                v.target.dir(),
                v.ty.file_name()
            );
            let moved = v.copy_into(new_id(), mtime, &Storage::Memfd)?;
            moved.append(values, lines, mtime)?;
            Ok(Some(moved))
        }
        Err(e) => Err(e),
        Ok(()) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ioc::IocType;

    #[test]
    fn an_append_under_a_passthrough_reader_makes_a_new_version() {
        let dir = tempfile::tempdir().unwrap();
        for storage in [
            Storage::Memfd,
            Storage::Tmpfile(crate::disk::Disk::real(), dir.path().to_path_buf()),
        ] {
            let mut s = LiveSet::empty(
                LiveVersion::new(
                    1,
                    (crate::store::model::Target::Live, IocType::Ipv4),
                    b"",
                    0,
                    0,
                    &storage,
                )
                .unwrap(),
            );
            s.append(b"1.1.1.1\n", &[(1, 1)], 5, || 99).unwrap();
            let held = s.version.clone();
            assert!(held.pin());
            assert!(s.publish(b"2.2.2.2\n", 1, 6, || 7).unwrap());
            s.push_line((2, 2)).unwrap();
            assert_eq!(
                held.read_all().unwrap(),
                b"1.1.1.1\n",
                "the held version never grows"
            );
            assert_eq!(s.version.id, 7);
            assert_eq!(s.version.read_all().unwrap(), b"1.1.1.1\n2.2.2.2\n");
            assert_eq!(s.version.lines(), 2);
            held.passthrough_closed();
            // Nobody holds the new one: it grows in place.
            assert!(!s.publish(b"3.3.3.3\n", 1, 7, || 8).unwrap());
            assert_eq!(s.version.id, 7);
        }
    }

    fn set(content: &[u8], times: &[Times]) -> LiveSet {
        let mut s = LiveSet::empty(
            LiveVersion::new(
                1,
                (crate::store::model::Target::Live, IocType::Ipv4),
                b"",
                0,
                0,
                &Storage::Memfd,
            )
            .unwrap(),
        );
        s.append(content, times, 5, || 99).unwrap();
        s
    }

    #[test]
    fn append_extends_the_same_version() {
        let mut s = set(b"1.1.1.1\n", &[(1, 1)]);
        let v = s.version.clone();
        s.append(b"2.2.2.2\n", &[(2, 2)], 6, || 99).unwrap();
        assert!(Arc::ptr_eq(&v, &s.version));
        assert_eq!(v.read_all().unwrap(), b"1.1.1.1\n2.2.2.2\n");
        assert_eq!(v.read_at(8, 100).unwrap(), b"2.2.2.2\n");
        assert_eq!(v.read_at(100, 10).unwrap(), b"");
        assert_eq!((v.lines(), v.mtime()), (2, 6));
    }

    #[test]
    fn retain_makes_a_new_version_and_keeps_slots() {
        let mut s = set(b"a\nb\nc\n", &[(1, 10), (2, 20), (3, 30)]);
        let old = s.version.clone();
        let removed = s.retain(2, 7, |v, _| v != b"b").unwrap();
        assert_eq!(removed.len(), 1);
        assert_eq!(removed[0].value, b"b");
        assert_eq!(removed[0].times, (2, 20));
        assert_eq!(s.version.read_all().unwrap(), b"a\nc\n");
        assert_eq!(
            old.read_all().unwrap(),
            b"a\nb\nc\n",
            "old version stays whole"
        );
        assert_eq!(s.times_in_order(), vec![(1, 10), (3, 30)]);
        assert_eq!(s.min_last(), 10);
        // The freed slot is reused.
        let slots = s.append(b"d\n", &[(4, 40)], 8, || 99).unwrap();
        assert_eq!(slots, vec![1]);
        assert_eq!(s.times_in_order(), vec![(1, 10), (3, 30), (4, 40)]);
    }

    #[test]
    fn deferred_appends_are_seen_by_every_operation_and_written_once() {
        let mut s = set(b"a\n", &[(1, 1)]);
        s.start_deferring();
        s.append(b"b\nc\n", &[(2, 2), (3, 3)], 9, || 99).unwrap();
        assert_eq!(s.version.read_all().unwrap(), b"a\n", "not written yet");
        let mut seen = Vec::new();
        s.for_each_line(|v, _| seen.push(v.to_vec())).unwrap();
        assert_eq!(seen, vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
        s.retain(2, 9, |v, _| v != b"b").unwrap();
        s.append(b"d\n", &[(4, 4)], 9, || 99).unwrap();
        s.finish_deferring(|| 1000).unwrap();
        assert_eq!(s.version.read_all().unwrap(), b"a\nc\nd\n");
        assert_eq!(s.version.lines(), 3);
    }

    #[test]
    fn a_large_deferred_batch_is_written_in_pieces_in_order() {
        let mut s = set(b"", &[]);
        s.start_deferring();
        let mut want = Vec::new();
        for i in 0..100_000u32 {
            let line = format!("{i:060}\n");
            s.append(line.as_bytes(), &[(i, i)], u64::from(i), || 99)
                .unwrap();
            want.extend_from_slice(line.as_bytes());
        }
        assert!(want.len() > DEFERRED_WRITE_SIZE, "test too small");
        let written = s.version.read_all().unwrap();
        assert!(!written.is_empty() && written.len() < want.len());
        assert!(want.starts_with(&written));
        let mut seen = Vec::new();
        s.for_each_line(|v, _| seen.push(v.len())).unwrap();
        assert_eq!(seen.len(), 100_000);
        s.finish_deferring(|| 1000).unwrap();
        assert_eq!(s.version.read_all().unwrap(), want);
        assert_eq!(s.version.lines(), 100_000);
        assert_eq!(s.version.mtime(), 99_999);
    }

    #[test]
    fn touch_moves_last_seen_forward_only() {
        let mut s = set(b"a\n", &[(5, 5)]);
        s.touch(0, 9);
        s.touch(0, 7);
        assert_eq!(s.times(0), Some((5, 9)));
    }
}
