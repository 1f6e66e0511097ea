//! The allowlist: per type, the values no view may serve (README "Allowlist"). Written like
//! a live file (append, replace) and journaled like every mutation, but never aged, never
//! in the index of stored indicators (a value can be both listed and allowed), and only
//! ever read by views and lookups. Each set is a live set (a version readers open, the
//! times each line was first and last written) plus its own key map for deduplication.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::State;
use crate::clock::to_u32;
use crate::error::Result;
use crate::ioc::IocType;
use crate::store::live::{LiveSet, LiveVersion, Times};
use crate::store::model::{Key, KeyMap};
use crate::store::tier;

/// Feeds a new list's lines, piece by piece, to the function it is given (one record's
/// values, or a staged replace's parts then its end record's).
pub type Chunks<'a> = dyn FnMut(&mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> + 'a;

pub struct AllowSet {
    set: LiveSet,
    /// Key of each allowed value → its slot in `set`.
    slots: KeyMap<u32>,
}

impl AllowSet {
    pub fn empty(version: Arc<LiveVersion>) -> AllowSet {
        AllowSet {
            set: LiveSet::empty(version),
            slots: KeyMap::default(),
        }
    }

    pub fn set(&self) -> &LiveSet {
        &self.set
    }

    pub fn version(&self) -> &Arc<LiveVersion> {
        &self.set.version
    }

    pub fn lines(&self) -> usize {
        self.set.lines()
    }

    /// Lines that can still be added before slot ids run out.
    pub fn room(&self) -> usize {
        self.set.room()
    }

    /// Times of every line in file order (for commits).
    pub fn times_in_order(&self) -> Vec<Times> {
        self.set.times_in_order()
    }

    pub fn contains(&self, key: &Key) -> bool {
        self.slots.contains_key(key)
    }

    /// When an allowed value was first and last written.
    pub fn times(&self, key: &Key) -> Option<Times> {
        self.slots.get(key).and_then(|&s| self.set.times(s))
    }
}

impl State {
    pub fn allow(&self, ty: IocType) -> &AllowSet {
        &self.allow[ty]
    }

    /// Add values to the allowlist of `ty`; a value already there has its last-written time
    /// moved forward. Returns how many were new.
    pub fn allow_append(&mut self, ty: IocType, values: &[u8], ts: u64) -> Result<u64> {
        let now = to_u32(ts);
        let seed = self.seed;
        let ids = &self.ids;
        let allow = &mut self.allow[ty];
        let mut bytes = Vec::new();
        let mut added = 0u64;
        for value in tier::lines(values).filter(|v| !v.is_empty()) {
            let key = Key::of(seed, ty, value);
            if let Some(&slot) = allow.slots.get(&key) {
                allow.set.touch(slot, now);
                continue;
            }
            let slot = allow.set.push_line((now, now))?;
            allow.slots.insert(key, slot);
            bytes.extend_from_slice(value);
            bytes.push(b'\n');
            added += 1;
        }
        if added > 0 {
            allow
                .set
                .publish(&bytes, added, ts, || ids.fetch_add(1, Ordering::Relaxed))?;
        }
        Ok(added)
    }

    /// Make the allowlist of `ty` exactly the values `chunks` yields (whole lines, first
    /// occurrence wins); values that stay keep their times. Returns (added, removed). The
    /// same lines in the same order change nothing.
    pub fn allow_replace(
        &mut self,
        ty: IocType,
        ts: u64,
        chunks: &mut Chunks<'_>,
    ) -> Result<(u64, u64)> {
        let now = to_u32(ts);
        let version = self.allow[ty].set.new_version(self.new_id(), ts)?;
        let seed = self.seed;
        let old = &self.allow[ty];
        let mut slots: KeyMap<u32> = KeyMap::default();
        let mut times: Vec<Times> = Vec::new();
        let mut added = 0u64;
        let mut buf = Vec::new();
        chunks(&mut |chunk: &[u8]| {
            buf.clear();
            let mut lines = 0u64;
            for value in tier::lines(chunk).filter(|v| !v.is_empty()) {
                let key = Key::of(seed, ty, value);
                if slots.contains_key(&key) {
                    continue;
                }
                slots.insert(key, times.len() as u32);
                times.push(old.times(&key).unwrap_or_else(|| {
                    added += 1;
                    (now, now)
                }));
                buf.extend_from_slice(value);
                buf.push(b'\n');
                lines += 1;
            }
            if lines > 0 {
                version.fill(&buf, lines, ts)?;
            }
            Ok(())
        })?;
        // The list as it stands, in the same order (`rsync -a` or a config tool copying an
        // unchanged list again): the version, its inode and mtime stay; no view rebuilds.
        if added == 0 && slots.len() == old.lines() && version.same_content_as(old.version())? {
            return Ok((0, 0));
        }
        let kept = slots.len() as u64 - added;
        let removed = old.lines() as u64 - kept;
        let allow = &mut self.allow[ty];
        allow.set.install(version, times)?;
        allow.slots = slots;
        Ok((added, removed))
    }

    /// The committed allowlist file of `ty` (recovery), and when it last changed (0:
    /// unknown). Returns lines found twice.
    pub fn load_allow(
        &mut self,
        ty: IocType,
        text: &[u8],
        times: &[Times],
        mtime: u64,
    ) -> Result<Vec<Vec<u8>>> {
        let id = self.new_id();
        let seed = self.seed;
        let allow = &mut self.allow[ty];
        allow.set.replace(id, text, times.to_vec(), mtime)?;
        allow.slots = KeyMap::default();
        let mut duplicates = Vec::new();
        for (line, slot) in tier::lines(text).zip(0u32..) {
            if allow.slots.insert(Key::of(seed, ty, line), slot).is_some() {
                duplicates.push(line.to_vec());
            }
        }
        Ok(duplicates)
    }
}
