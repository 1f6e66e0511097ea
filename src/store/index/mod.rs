//! The indicator index: key → metadata and source set, one 24-byte slot per indicator
//! (the source-set id rides in the 16 bits of the key's last word that keys leave unused).
//!
//! Open addressing with linear probing in one flat array. Why not `std::collections::HashMap`:
//! its slot is 25 bytes (a control byte each) and it only grows by doubling, while this
//! table grows by half once large, so 10 M indicators need ~30% less memory; and bulk
//! appends can *prefetch* the slots of the next keys while handling the current one, which
//! hides most of the cache misses that dominate inserting into a table far larger than the
//! CPU cache. Keys are already uniform hashes; the slot is the high bits of key × table
//! size (a multiply-shift, which works for any size), salted per table. An all-zero key marks an empty
//! slot (`Key::of` never returns it). Deletion shifts the following run back, so there are
//! no tombstones. Growth rehashes in place, in a mapping that keeps its pages (`table`).

#![allow(unsafe_code)] // prefetch hints, the block documented

mod table;

use crate::store::model::{Key, Meta};
use table::SlotTable;

#[derive(Clone, Copy)]
#[repr(C)]
struct Slot {
    /// The key, tagged with which sources list the indicator: an id of the state's interned
    /// source sets, 0 for the common `{local}` (`state::provenance`). The tag is kept when
    /// `insert` moves the indicator (aging, a promotion); a new key starts at 0.
    tagged: Key,
    meta: Meta,
}

impl Slot {
    fn key(&self) -> Key {
        self.tagged.untag().0
    }

    fn sources(&self) -> u32 {
        u32::from(self.tagged.untag().1)
    }

    fn is_empty(&self) -> bool {
        self.key().is_empty()
    }
}

/// Most source-set ids a slot can hold (`u16`).
pub const MAX_SOURCE_SETS: usize = 1 << 16;

const EMPTY: Slot = Slot {
    tagged: Key::EMPTY,
    meta: Meta::ZERO,
};

/// Grow when more than 4/5 full: an insert of a new key scans to the end of its run,
/// ~13 slots on average at this load (~32 at 7/8).
const MAX_LOAD_NUM: usize = 4;
const MAX_LOAD_DEN: usize = 5;

pub struct Index {
    slots: SlotTable,
    len: usize,
    salt: u64,
}

/// Cache lines [`Index::prefetch`] asks for, from a key's home slot on.
const PREFETCH_LINES: usize = 4;

/// Slots of an empty index; `reserve` grows it from there.
const MIN_SLOTS: usize = 16;

impl Default for Index {
    fn default() -> Self {
        use std::hash::BuildHasher;
        let salt = std::collections::hash_map::RandomState::new().hash_one(0x1d3e_u64) | 1;
        Index {
            slots: SlotTable::zeroed(MIN_SLOTS),
            len: 0,
            salt,
        }
    }
}

impl Index {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn home(&self, key: &Key) -> usize {
        let h = (key.low64() ^ self.salt).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        ((u128::from(h) * self.slots.len() as u128) >> 64) as usize
    }

    fn next(&self, i: usize) -> usize {
        if i + 1 == self.slots.len() {
            0
        } else {
            i + 1
        }
    }

    /// Position of `key`, or of the empty slot where it would go.
    fn probe(&self, key: &Key) -> (usize, bool) {
        let mut i = self.home(key);
        loop {
            let slot = &self.slots[i];
            if slot.key() == *key {
                return (i, true);
            }
            if slot.is_empty() {
                return (i, false);
            }
            i = self.next(i);
        }
    }

    /// How far ahead of the key being handled to [`Index::prefetch`]: enough to cover a
    /// memory access while a few keys are handled.
    pub const PREFETCH_AHEAD: usize = 8;

    /// Hint the CPU to fetch the slot `key` would probe first and the lines after it:
    /// inserting a new key scans to the end of its run, ~13 slots (5 lines) at the highest
    /// load. Two lines: one `cat` of 1.5M new lines 519 → 474 ms (mean of 5 interleaved
    /// pairs); four: 3M new lines 1.01 → 0.88 s (ipv4) and 0.94 → 0.91 s (domain), medians
    /// of 5 interleaved pairs, re-sighting 3M lines no different.
    #[inline]
    pub fn prefetch(&self, key: &Key) {
        #[cfg(target_arch = "x86_64")]
        {
            let i = self.home(key);
            // SAFETY: i < len, so `add(i)` stays inside the allocation; the lines after are
            // computed with `wrapping_add` and may lie past its end, which is harmless: a
            // prefetch reads nothing and never faults.
            unsafe {
                let p = self.slots.as_ptr().add(i) as *const i8;
                for line in 0..PREFETCH_LINES {
                    core::arch::x86_64::_mm_prefetch(
                        p.wrapping_add(64 * line),
                        core::arch::x86_64::_MM_HINT_T0,
                    );
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = key;
    }

    pub fn get(&self, key: &Key) -> Option<&Meta> {
        match self.probe(key) {
            (i, true) => Some(&self.slots[i].meta),
            _ => None,
        }
    }

    pub fn get_mut(&mut self, key: &Key) -> Option<&mut Meta> {
        match self.probe(key) {
            (i, true) => Some(&mut self.slots[i].meta),
            _ => None,
        }
    }

    /// The source-set id of `key`, if indexed.
    pub fn sources(&self, key: &Key) -> Option<u32> {
        match self.probe(key) {
            (i, true) => Some(self.slots[i].sources()),
            _ => None,
        }
    }

    /// Set the source-set id (below [`MAX_SOURCE_SETS`]) of an indexed key; returns the
    /// old one (None: not indexed).
    pub fn set_sources(&mut self, key: &Key, sources: u32) -> Option<u32> {
        match self.probe(key) {
            (i, true) => {
                let old = self.slots[i].sources();
                self.slots[i].tagged = key.tagged(sources as u16);
                Some(old)
            }
            _ => None,
        }
    }

    /// Entries whose source set is not `{local}`: (key, meta, source-set id).
    pub fn with_sources(&self) -> impl Iterator<Item = (Key, &Meta, u32)> {
        self.slots
            .iter()
            .filter(|s| s.sources() != 0)
            .map(|s| (s.key(), &s.meta, s.sources()))
    }

    /// Give every slot's source-set id a new number.
    pub fn remap_sources(&mut self, mut f: impl FnMut(u32) -> u32) {
        for slot in self.slots.iter_mut().filter(|s| s.sources() != 0) {
            slot.tagged = slot.key().tagged(f(slot.sources()) as u16);
        }
    }

    pub fn contains_key(&self, key: &Key) -> bool {
        self.probe(key).1
    }

    pub fn insert(&mut self, key: Key, meta: Meta) -> Option<Meta> {
        match self.entry(key) {
            Entry::Occupied(mut e) => Some(std::mem::replace(e.get_mut(), meta)),
            Entry::Vacant(e) => {
                e.insert(meta);
                None
            }
        }
    }

    pub fn entry(&mut self, key: Key) -> Entry<'_> {
        self.reserve(1);
        match self.probe(&key) {
            (i, true) => Entry::Occupied(OccupiedEntry { index: self, at: i }),
            (i, false) => Entry::Vacant(VacantEntry {
                index: self,
                at: i,
                key,
            }),
        }
    }

    pub fn remove(&mut self, key: &Key) -> Option<Meta> {
        self.remove_with_sources(key).map(|(meta, _)| meta)
    }

    /// Remove `key`, returning its metadata and source-set id.
    pub fn remove_with_sources(&mut self, key: &Key) -> Option<(Meta, u32)> {
        let (mut hole, found) = self.probe(key);
        if !found {
            return None;
        }
        let removed = (self.slots[hole].meta, self.slots[hole].sources());
        // Shift back every following entry of the run that may move into the hole.
        let cap = self.slots.len();
        let mut j = self.next(hole);
        while !self.slots[j].is_empty() {
            let home = self.home(&self.slots[j].key());
            let dist = |a: usize, b: usize| (b + cap - a) % cap;
            if dist(home, j) >= dist(hole, j) {
                self.slots[hole] = self.slots[j];
                hole = j;
            }
            j = self.next(j);
        }
        self.slots[hole] = EMPTY;
        self.len -= 1;
        Some(removed)
    }

    /// Make room for `more` entries without growing.
    pub fn reserve(&mut self, more: usize) {
        let need = self.len + more;
        if need * MAX_LOAD_DEN <= self.slots.len() * MAX_LOAD_NUM {
            return;
        }
        let mut cap = self.slots.len().max(MIN_SLOTS);
        while need * MAX_LOAD_DEN > cap * MAX_LOAD_NUM {
            // Double while small; grow by half once large, where memory is what matters.
            cap = if cap < (1 << 20) {
                cap * 2
            } else {
                cap + cap / 2
            };
        }
        self.grow(cap);
    }

    /// Grow the table to `cap` slots and move every entry to its place there, in place (the
    /// table keeps its pages: `SlotTable::grow`). A slot's home only moves up when the table
    /// grows (home = hash × size, scaled), so sweeping the old slots from the top down, each
    /// entry is put in the first empty slot from its new home: every slot from there up holds
    /// an entry already placed (they never move again) or nothing, and slots below the
    /// sweep, which still hold old entries, are never touched. The few entries whose new
    /// home lies below the sweep, or whose run reaches the end of the table, are inserted
    /// once the sweep is done. Both sweeps stream through memory, as a copy would.
    fn grow(&mut self, cap: usize) {
        let old_cap = self.slots.len();
        self.slots.grow(cap);
        let mut later = Vec::new();
        for i in (0..old_cap).rev() {
            if self.slots[i].is_empty() {
                continue;
            }
            let slot = std::mem::replace(&mut self.slots[i], EMPTY);
            let home = self.home(&slot.key());
            let Some(free) = (home >= i)
                .then(|| (home..cap).find(|&j| self.slots[j].is_empty()))
                .flatten()
            else {
                later.push(slot);
                continue;
            };
            self.slots[free] = slot;
        }
        for slot in later {
            let (free, _) = self.probe(&slot.key());
            self.slots[free] = slot;
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (Key, &Meta)> {
        self.slots
            .iter()
            .filter(|s| !s.is_empty())
            .map(|s| (s.key(), &s.meta))
    }

    pub fn values(&self) -> impl Iterator<Item = &Meta> {
        self.iter().map(|(_, m)| m)
    }

    /// Bytes held by the table (for stats).
    pub fn memory(&self) -> usize {
        self.slots.len() * std::mem::size_of::<Slot>()
    }
}

pub enum Entry<'a> {
    Occupied(OccupiedEntry<'a>),
    Vacant(VacantEntry<'a>),
}

pub struct OccupiedEntry<'a> {
    index: &'a mut Index,
    at: usize,
}

impl OccupiedEntry<'_> {
    pub fn get_mut(&mut self) -> &mut Meta {
        &mut self.index.slots[self.at].meta
    }

    pub fn sources(&self) -> u32 {
        self.index.slots[self.at].sources()
    }

    /// Set the source-set id (below [`MAX_SOURCE_SETS`]).
    pub fn set_sources(&mut self, sources: u32) {
        let slot = &mut self.index.slots[self.at];
        slot.tagged = slot.key().tagged(sources as u16);
    }
}

pub struct VacantEntry<'a> {
    index: &'a mut Index,
    at: usize,
    key: Key,
}

impl VacantEntry<'_> {
    /// Room was reserved when the entry was made, so the slot found stays valid.
    pub fn insert(self, meta: Meta) {
        self.insert_with_sources(meta, 0);
    }

    pub fn insert_with_sources(self, meta: Meta, sources: u32) {
        self.index.slots[self.at] = Slot {
            tagged: self.key.tagged(sources as u16),
            meta,
        };
        self.index.len += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ioc::IocType;
    use crate::store::model::Loc;
    use std::collections::HashMap;

    fn key(i: u64) -> Key {
        Key::of(42, IocType::Domain, format!("k{i}").as_bytes())
    }

    fn meta(i: u32) -> Meta {
        Meta::new(
            i,
            i + 1,
            Loc::Block {
                ty: IocType::Domain,
                block: i % 1000,
            },
        )
    }

    #[test]
    fn an_empty_slot_is_all_zero_bytes() {
        assert_eq!(EMPTY.tagged.words(), [0, 0, 0]);
        let m = EMPTY.meta;
        assert_eq!((m.first_seen, m.last_seen, m.loc_bits()), (0, 0, 0));
        assert_eq!(std::mem::size_of::<Slot>(), 24, "no padding");
        let slots = SlotTable::zeroed(100_000);
        assert_eq!(slots.len(), 100_000);
        assert!(slots.iter().all(|s| s.is_empty()));
        assert!(SlotTable::zeroed(0).is_empty());
    }

    #[test]
    fn behaves_like_a_hash_map_under_random_inserts_and_removes() {
        let mut idx = Index::default();
        let mut model: HashMap<u64, u32> = HashMap::new();
        let mut x = 0x2545F4914F6CDD1Du64;
        for step in 0..200_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let k = x % 5000;
            match x % 3 {
                0 | 1 => {
                    assert_eq!(
                        idx.insert(key(k), meta(step)).is_some(),
                        model.insert(k, step).is_some()
                    );
                }
                _ => {
                    assert_eq!(
                        idx.remove(&key(k)).map(|m| m.first_seen),
                        model.remove(&k),
                        "step {step}"
                    );
                }
            }
            assert_eq!(idx.len(), model.len());
        }
        for (k, v) in &model {
            assert_eq!(idx.get(&key(*k)).map(|m| m.first_seen), Some(*v));
        }
        assert_eq!(idx.iter().count(), model.len());
    }

    /// Linear probing's invariant: every slot from an entry's home to the entry is occupied.
    fn assert_runs_unbroken(idx: &Index) {
        for (at, slot) in idx.slots.iter().enumerate() {
            if slot.is_empty() {
                continue;
            }
            let mut i = idx.home(&slot.key());
            while i != at {
                assert!(!idx.slots[i].is_empty(), "hole at {i} before {at}");
                i = idx.next(i);
            }
        }
    }

    #[test]
    fn growing_in_place_keeps_every_run_unbroken() {
        // Small tables wrap runs around their end often; many salts, many growth steps.
        for salt in 0..200u64 {
            let mut idx = Index {
                salt: salt.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
                ..Index::default()
            };
            for i in 0..(200 + salt * 7) {
                let cap = idx.slots.len();
                idx.insert(key(i), meta(i as u32));
                if idx.slots.len() != cap {
                    assert_runs_unbroken(&idx);
                }
            }
            assert_eq!(idx.len(), 200 + salt as usize * 7);
            assert!((0..idx.len() as u64).all(|i| idx.contains_key(&key(i))));
        }
        // Large enough to grow by half (past 2^20 slots) as well as by doubling.
        let mut idx = Index::default();
        for i in 0..1_200_000u64 {
            idx.insert(key(i), meta(i as u32));
        }
        assert!(idx.slots.len() > 1 << 20);
        assert_runs_unbroken(&idx);
        assert!((0..1_200_000u64).all(|i| idx.contains_key(&key(i))));
    }

    #[test]
    fn entry_api_and_growth_keep_every_entry() {
        let mut idx = Index::default();
        for i in 0..100_000u64 {
            match idx.entry(key(i)) {
                Entry::Vacant(v) => v.insert(meta(i as u32)),
                Entry::Occupied(_) => panic!("duplicate"),
            }
        }
        for i in 0..100_000u64 {
            let Entry::Occupied(mut e) = idx.entry(key(i)) else {
                panic!("missing {i}")
            };
            e.get_mut().last_seen += 1;
        }
        assert!(
            (0..100_000u64).all(|i| idx.get(&key(i)).map(|m| m.last_seen) == Some(i as u32 + 2))
        );
        assert!(idx.memory() <= 100_000 * 24 * 2 + 24 * 16);
    }
}
