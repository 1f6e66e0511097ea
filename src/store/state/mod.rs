//! The engine's in-memory state: the index, the live sets, the tier versions and the block
//! directory, with one invariant kept here and nowhere else: every indexed indicator is in
//! exactly one place — a live slot of its type, or a block of one tier partition that the
//! block directory names — and every stored line is indexed. The fields are private; the
//! mutation code (`store::apply`) and recovery change the state only through the methods
//! below, each of which leaves the invariant true (or, for the few that hand lines over to
//! another method, says what the caller must do next).
//!
//! Changed only by apply (one mutation at a time, in sequence order, under the store's
//! write lock) and by recovery before the store opens; everything else reads it.

mod allow;
pub use allow::Chunks;
mod dirty;
mod load;
mod pins;
mod provenance;
mod stage;
mod tiers;

pub use provenance::{bit, valid_name, Provenance, SourceInfo, SourceTimes, LOCAL_NAME, LOCAL_SET};

pub use allow::AllowSet;
pub use dirty::ChangeCounts;
pub use stage::Stage;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::ioc::IocType;
use crate::store::index::{Entry, Index};
use crate::store::live::{LiveSet, LiveVersion, Storage, Times};
use crate::store::model::{
    AgingReport, Bucket, Key, KeyMap, Loc, Meta, SourceId, Target, Tier, LOCAL,
};
use crate::store::mutation::Manifest;
use crate::store::partition::{ByBucket, ByTier, ByType, Per};
use crate::store::tier::TierVersion;

/// Where a stored indicator is, with its times.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    Live {
        slot: u32,
        times: Times,
    },
    Tier {
        tier: Tier,
        block: u32,
        times: Times,
    },
}

impl Found {
    pub fn bucket(&self) -> Bucket {
        match self {
            Found::Live { .. } => Bucket::Live,
            Found::Tier { tier, .. } => tier.bucket(),
        }
    }

    pub fn times(&self) -> Times {
        match self {
            Found::Live { times, .. } | Found::Tier { times, .. } => *times,
        }
    }
}

/// What [`State::sight_or_add`] did with one appended line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sighting {
    /// Already live: its last_seen moved forward.
    Sighted,
    /// New: it has a live slot now; its bytes are still to be published.
    Added,
    /// It was in a tier block: it has a live slot now (keeping its first_seen), and the
    /// caller must drop it from that block ([`State::drop_from_tier`]).
    Promoted { tier: Tier, block: u32 },
}

pub struct State {
    /// Seed of the index keys, random per process.
    seed: u64,
    index: Index,
    live: ByType<LiveSet>,
    /// What views never serve (README "Allowlist").
    allow: ByType<AllowSet>,
    tiers: ByTier<ByType<Arc<TierVersion>>>,
    /// Which tier partition holds each block.
    dir: HashMap<u32, (Tier, IocType)>,
    next_block_id: u32,
    applied_seq: u64,
    /// What the backing files hold (the last commit).
    manifest: Manifest,
    changes: ChangeCounts,
    block_size: usize,
    ids: Arc<AtomicU64>,
    last_aging: Option<(u64, AgingReport)>,
    /// Buffers reused by every append: replaying a log of one-line records would otherwise
    /// spend a third of its time in the allocator.
    scratch: Scratch,
    /// Replaces journaled in pieces, by stage (the sequence number of their first part).
    stages: BTreeMap<u64, Stage>,
    /// Where staged parts are kept.
    staging: Storage,
    /// Per type: batches between their prepare and their apply (no new passthrough pins).
    appending: ByType<usize>,
    /// Per type: no new passthrough pins before this instant (see `State::ration_copies`).
    pins_paused_until: ByType<Option<std::time::Instant>>,
    /// The source sets of the index's slots, the declared sources and their counts.
    provenance: Provenance,
}

#[derive(Default)]
struct Scratch {
    keys: Vec<Key>,
    bytes: Vec<u8>,
}

impl Scratch {
    /// Larger buffers (from a bulk write) are not kept.
    const KEEP: usize = 1 << 20;

    fn put_back(&mut self, mut keys: Vec<Key>, mut bytes: Vec<u8>) {
        if keys.capacity() * std::mem::size_of::<Key>() <= Self::KEEP {
            keys.clear();
            self.keys = keys;
        }
        if bytes.capacity() <= Self::KEEP {
            bytes.clear();
            self.bytes = bytes;
        }
    }
}

impl State {
    pub fn new(
        seed: u64,
        ids: Arc<AtomicU64>,
        block_size: usize,
        storage: &Storage,
    ) -> Result<State> {
        let next = || ids.fetch_add(1, Ordering::Relaxed);
        let live = Per::try_from_fn(|ty| {
            LiveVersion::new(next(), (Target::Live, ty), b"", 0, 0, storage).map(LiveSet::empty)
        })?;
        let allow = Per::try_from_fn(|ty| {
            LiveVersion::new(next(), (Target::Allow, ty), b"", 0, 0, &Storage::Memfd)
                .map(AllowSet::empty)
        })?;
        let tiers = Per::from_fn(|tier| Per::from_fn(|ty| TierVersion::empty(next(), tier, ty)));
        Ok(State {
            seed,
            index: Index::default(),
            live,
            allow,
            tiers,
            dir: HashMap::new(),
            next_block_id: 1,
            applied_seq: 0,
            manifest: Manifest::default(),
            changes: ChangeCounts::default(),
            block_size,
            ids,
            last_aging: None,
            scratch: Scratch::default(),
            stages: BTreeMap::new(),
            staging: Storage::Memfd,
            appending: ByType::default(),
            pins_paused_until: ByType::default(),
            provenance: Provenance::default(),
        })
    }

    /// Whether versions can be created in `storage` (O_TMPFILE needs filesystem support).
    pub fn probe_storage(storage: &Storage) -> Result<()> {
        LiveVersion::new(0, (Target::Live, IocType::Ipv4), b"", 0, 0, storage).map(|_| ())
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// A fresh version id (inode number).
    pub fn new_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }

    pub fn id_source(&self) -> Arc<AtomicU64> {
        self.ids.clone()
    }

    pub fn key(&self, ty: IocType, value: &[u8]) -> Key {
        Key::of(self.seed, ty, value)
    }

    pub fn applied_seq(&self) -> u64 {
        self.applied_seq
    }

    /// The last mutation applied (recovery also sets it past records with no effect).
    pub fn set_applied_seq(&mut self, seq: u64) {
        self.applied_seq = seq;
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The backing files now hold `manifest`.
    pub fn set_manifest(&mut self, manifest: Manifest) {
        self.manifest = manifest;
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    pub fn last_aging(&self) -> Option<&(u64, AgingReport)> {
        self.last_aging.as_ref()
    }

    pub fn set_last_aging(&mut self, at: u64, report: AgingReport) {
        self.last_aging = Some((at, report));
    }

    /// The index, to read (checkpoints, checks).
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// Make room for `more` indicators, so a bulk insert does not grow the table midway.
    pub fn reserve_index(&mut self, more: usize) {
        self.index.reserve(more);
    }

    /// Hint the CPU to fetch `key`'s index slot (see [`Index::prefetch`]).
    #[inline]
    pub fn prefetch(&self, key: &Key) {
        self.index.prefetch(key);
    }

    pub fn live(&self, ty: IocType) -> &LiveSet {
        &self.live[ty]
    }

    pub fn tier(&self, tier: Tier, ty: IocType) -> &Arc<TierVersion> {
        &self.tiers[tier][ty]
    }

    /// The tier partition holding `block`.
    pub fn block_tier(&self, block: u32) -> Option<(Tier, IocType)> {
        self.dir.get(&block).copied()
    }

    /// The current version id of every partition.
    pub fn version_ids(&self) -> ByBucket<ByType<u64>> {
        Per::from_fn(|bucket: Bucket| {
            Per::from_fn(|ty| match bucket.tier() {
                None => self.live[ty].version.id,
                Some(tier) => self.tiers[tier][ty].id,
            })
        })
    }

    /// Where the indicator with `key` is, if stored. An index entry pointing at a block no
    /// tier holds is an internal error (the invariant is broken), never a guess.
    pub fn locate(&self, ty: IocType, key: &Key) -> Result<Option<Found>> {
        let Some(meta) = self.index.get(key) else {
            return Ok(None);
        };
        self.found(ty, meta).map(Some)
    }

    fn found(&self, ty: IocType, meta: &Meta) -> Result<Found> {
        match meta.loc() {
            Loc::Live { slot, .. } => {
                let times = self.live[ty].times(slot).ok_or_else(|| {
                    Error::Invalid(format!(
                        "internal: live/{} slot {slot} is indexed but empty",
                        ty.file_name()
                    ))
                })?;
                Ok(Found::Live { slot, times })
            }
            Loc::Block { block, .. } => {
                let (tier, _) = self.block_tier(block).ok_or_else(|| {
                    Error::Invalid(format!("internal: block {block} is in no tier"))
                })?;
                Ok(Found::Tier {
                    tier,
                    block,
                    times: (meta.first_seen, meta.last_seen),
                })
            }
        }
    }

    /// Bucket and times of a stored indicator.
    pub fn find(&self, ty: IocType, value: &[u8]) -> Option<(Bucket, Times)> {
        self.locate(ty, &self.key(ty, value))
            .ok()
            .flatten()
            .map(|f| (f.bucket(), f.times()))
    }

    /// One line of an append, in one index probe (the bulk-ingest hot path): sight it if it
    /// is live, give it a live slot if it is new or in a tier. Call [`State::publish_live`]
    /// with the bytes of the lines that got a slot, in the same order.
    /// `source` lists it from now on.
    pub fn sight_or_add(
        &mut self,
        ty: IocType,
        key: Key,
        now: u32,
        source: SourceId,
    ) -> Result<Sighting> {
        let live = &mut self.live[ty];
        match self.index.entry(key) {
            Entry::Occupied(mut e) => {
                let id = e.sources();
                if source != LOCAL || id != 0 {
                    let set = self.provenance.set(id);
                    if set & bit(source) == 0 {
                        match self.provenance.changed(ty, set, set | bit(source)) {
                            Some(new) => e.set_sources(new),
                            // The table of sets is full: the slow path compacts it.
                            None => {
                                self.add_source(ty, &key, source);
                                return self.sight_or_add(ty, key, now, source);
                            }
                        }
                        self.changes.mark_sources(ty);
                    }
                }
                let meta = e.get_mut();
                match meta.loc() {
                    Loc::Live { slot, .. } => {
                        live.touch(slot, now);
                        Ok(Sighting::Sighted)
                    }
                    Loc::Block { block, .. } => {
                        let (tier, _) = self.dir.get(&block).copied().ok_or_else(|| {
                            Error::Invalid(format!("internal: block {block} is in no tier"))
                        })?;
                        let slot = live.push_line((meta.first_seen, now))?;
                        *meta = Meta::new(0, 0, Loc::Live { ty, slot });
                        Ok(Sighting::Promoted { tier, block })
                    }
                }
            }
            Entry::Vacant(e) => {
                let slot = live.push_line((now, now))?;
                let meta = Meta::new(0, 0, Loc::Live { ty, slot });
                match (source == LOCAL)
                    .then_some(0)
                    .or_else(|| self.provenance.added(ty, bit(source)))
                {
                    Some(id) => {
                        e.insert_with_sources(meta, id);
                        if id != 0 {
                            self.changes.mark_sources(ty);
                        }
                    }
                    // The table of sets is full: the slow path compacts it.
                    None => {
                        e.insert(meta);
                        self.set_sources(ty, &key, bit(source));
                    }
                }
                Ok(Sighting::Added)
            }
        }
    }

    /// Publish the bytes of the lines [`State::sight_or_add`] gave slots to. True when that
    /// took a new version (passthrough readers held the old one).
    pub fn publish_live(
        &mut self,
        ty: IocType,
        values: &[u8],
        lines: u64,
        mtime: u64,
    ) -> Result<bool> {
        let ids = &self.ids;
        self.live[ty].publish(values, lines, mtime, || ids.fetch_add(1, Ordering::Relaxed))
    }

    /// Buffers for one append's keys and bytes; hand them back with `put_back_buffers`.
    pub fn take_buffers(&mut self) -> (Vec<Key>, Vec<u8>) {
        (
            std::mem::take(&mut self.scratch.keys),
            std::mem::take(&mut self.scratch.bytes),
        )
    }

    pub fn put_back_buffers(&mut self, keys: Vec<Key>, bytes: Vec<u8>) {
        self.scratch.put_back(keys, bytes);
    }

    /// An empty live version of `ty` for a replace to fill, then hand to `replace_live`.
    pub fn new_live_version(&self, ty: IocType, mtime: u64) -> Result<Arc<LiveVersion>> {
        self.live[ty].new_version(self.new_id(), mtime)
    }

    /// Make `version` (whole lines, keys `keys`, times `times`) the whole live set of `ty`.
    /// Live lines for which `kept` is false leave the index; returns how many did. Lines
    /// that were in a tier must be dropped from it by the caller.
    pub fn replace_live(
        &mut self,
        ty: IocType,
        version: Arc<LiveVersion>,
        keys: &[Key],
        times: Vec<Times>,
        kept: impl Fn(&Key) -> bool,
    ) -> Result<u64> {
        let seed = self.seed;
        let mut gone = Vec::new();
        self.live[ty].for_each_line(|v, _| {
            let key = Key::of(seed, ty, v);
            if !kept(&key) {
                gone.push(key);
            }
        })?;
        for key in &gone {
            self.forget(ty, key);
        }
        // One table of the final size, not a doubling (and a copy) per power of two.
        self.index.reserve(keys.len());
        self.live[ty].install(version, times)?;
        for (&key, slot) in keys.iter().zip(0u32..) {
            self.index
                .insert(key, Meta::new(0, 0, Loc::Live { ty, slot }));
        }
        Ok(gone.len() as u64)
    }

    /// Append whole lines to the live set of `ty` with their own times (imports), indexing
    /// each at its slot. The caller has checked that none is live already.
    pub fn append_live(
        &mut self,
        ty: IocType,
        values: &[u8],
        keys: &[Key],
        times: &[Times],
        mtime: u64,
    ) -> Result<()> {
        let ids = &self.ids;
        let slots =
            self.live[ty].append(values, times, mtime, || ids.fetch_add(1, Ordering::Relaxed))?;
        for (&key, slot) in keys.iter().zip(slots) {
            self.index
                .insert(key, Meta::new(0, 0, Loc::Live { ty, slot }));
        }
        Ok(())
    }

    /// Delete the live lines of `ty` whose key is in `doomed` (and their index entries), as
    /// a new version. True if any was there.
    pub fn remove_live(&mut self, ty: IocType, doomed: &KeyMap<()>, mtime: u64) -> Result<bool> {
        let id = self.new_id();
        let seed = self.seed;
        let removed = self.live[ty].retain(id, mtime, |v, _| {
            !doomed.contains_key(&Key::of(seed, ty, v))
        })?;
        for r in &removed {
            self.forget(ty, &Key::of(seed, ty, &r.value));
        }
        Ok(!removed.is_empty())
    }

    /// Take the live lines of `ty` for which `keep(times)` is false out of the set (a new
    /// version), returning them with their keys: aging hands each to [`State::add_to_tier`]
    /// (which re-points its index entry, keeping its sources) or lets it go
    /// ([`State::forget`]). Until then their index entries point at slots that are gone.
    pub fn take_live(
        &mut self,
        ty: IocType,
        mtime: u64,
        mut keep: impl FnMut(Times) -> bool,
    ) -> Result<Vec<(Vec<u8>, Times, Key)>> {
        let id = self.new_id();
        let removed = self.live[ty].retain(id, mtime, |_, times| keep(times))?;
        Ok(removed
            .into_iter()
            .map(|r| {
                let key = self.key(ty, &r.value);
                (r.value, r.times, key)
            })
            .collect())
    }

    /// Remove an indicator's index entry, returning where it was. A live one must then be
    /// removed from its set ([`State::remove_live`] does both), a tier one from its block.
    pub fn unindex(&mut self, ty: IocType, key: &Key) -> Result<Option<Found>> {
        let Some(meta) = self.index.get(key).copied() else {
            return Ok(None);
        };
        let found = self.found(ty, &meta)?;
        self.forget(ty, key);
        Ok(Some(found))
    }

    /// Drop an indicator's index entry (it is no longer stored anywhere).
    pub fn forget(&mut self, ty: IocType, key: &Key) -> Option<Meta> {
        let (meta, sources) = self.index.remove_with_sources(key)?;
        self.sources_forgotten(ty, sources);
        Some(meta)
    }

    /// Times of an indicator stored in a tier block (the block's own copy may be older).
    pub fn tier_times(&self, key: &Key) -> Option<Times> {
        self.index
            .get(key)
            .filter(|m| matches!(m.loc(), Loc::Block { .. }))
            .map(|m| (m.first_seen, m.last_seen))
    }

    /// Replay gathers live appends in memory and writes them in large pieces.
    pub fn defer_live_writes(&mut self, on: bool) -> Result<()> {
        let ids = self.id_source();
        for set in self.live.values_mut() {
            if on {
                set.start_deferring();
            } else {
                set.finish_deferring(|| ids.fetch_add(1, Ordering::Relaxed))?;
            }
        }
        Ok(())
    }

    /// Record a change of a partition: its backing file now lags. (`seq` is the change's
    /// sequence number, kept for the call sites' readability.)
    pub fn mark(&mut self, bucket: Bucket, ty: IocType, _seq: u64) {
        self.changes.mark(bucket, ty);
    }

    /// Which backing files lag the state.
    pub fn changes(&self) -> &ChangeCounts {
        &self.changes
    }

    pub fn changes_mut(&mut self) -> &mut ChangeCounts {
        &mut self.changes
    }
}
