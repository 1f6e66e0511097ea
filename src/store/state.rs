//! The engine's in-memory state: the index, the live sets, the tier versions, and the block
//! directory. Changed only by `apply` (one mutation at a time, in sequence order, under the
//! store's write lock); everything else reads it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::cache::BlockCache;
use crate::error::{Error, Result};
use crate::ioc::IocType;
use crate::store::index::Index;
use crate::store::live::{LiveSet, LiveVersion, Storage, Times};
use crate::store::model::{Bucket, Key, KeyMap, Loc, Meta};
use crate::store::mutation::{Manifest, Mutation, Op};
use crate::store::tier::{self, Block, TierVersion};
use crate::store::{aging, apply};

/// Slot id of a live line whose slot is being allocated within one apply.
pub const PENDING_SLOT: u32 = crate::store::model::MAX_LOC_ID;

/// What one applied mutation did, for counters and for the FUSE layer's cache invalidation.
#[derive(Debug, Default, Clone)]
pub struct Applied {
    /// Partitions that got a new version (not a mere append).
    pub new_versions: Vec<(Bucket, IocType)>,
    pub added: u64,
    pub sighted: u64,
    pub promoted: u64,
    pub removed: u64,
    pub aging: Option<aging::AgingReport>,
}

pub struct State {
    /// Seed of the index keys, random per process.
    pub seed: u64,
    pub index: Index,
    /// By type code.
    pub live: Vec<LiveSet>,
    /// By tier index (chaud, tiede, froid), then type code.
    pub tiers: Vec<Vec<Arc<TierVersion>>>,
    /// Which tier partition holds each block.
    pub dir: HashMap<u32, (Bucket, IocType)>,
    pub next_block_id: u32,
    pub applied_seq: u64,
    /// What the backing files hold (the last commit).
    pub manifest: Manifest,
    /// Count of changes of each partition (by bucket code, then type code), and the count
    /// its backing file reflects: the file lags while they differ.
    changes: [[u64; 9]; 4],
    committed: [[u64; 9]; 4],
    pub block_size: usize,
    pub(crate) ids: Arc<AtomicU64>,
    pub last_aging: Option<(u64, aging::AgingReport)>,
    /// Buffers reused by every append: replaying a log of one-line records would otherwise
    /// spend a third of its time in the allocator.
    pub(crate) scratch: Scratch,
}

#[derive(Default)]
pub(crate) struct Scratch {
    pub keys: Vec<Key>,
    pub bytes: Vec<u8>,
}

impl Scratch {
    /// Larger buffers (from a bulk write) are not kept.
    const KEEP: usize = 1 << 20;

    pub fn put_back(&mut self, mut keys: Vec<Key>, mut bytes: Vec<u8>) {
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
        let mut live = Vec::new();
        for ty in IocType::ALL {
            let id = ids.fetch_add(1, Ordering::Relaxed);
            live.push(LiveSet::empty(LiveVersion::new(
                id, ty, b"", 0, 0, storage,
            )?));
        }
        let tiers = Bucket::TIERS
            .iter()
            .map(|&b| {
                IocType::ALL
                    .iter()
                    .map(|&ty| TierVersion::empty(ids.fetch_add(1, Ordering::Relaxed), b, ty))
                    .collect()
            })
            .collect();
        Ok(State {
            seed,
            index: Index::default(),
            live,
            tiers,
            dir: HashMap::new(),
            next_block_id: 1,
            applied_seq: 0,
            manifest: Manifest::default(),
            changes: [[0; 9]; 4],
            committed: [[0; 9]; 4],
            block_size,
            ids,
            last_aging: None,
            scratch: Scratch::default(),
        })
    }

    /// Whether versions can be created in `storage` (O_TMPFILE needs filesystem support).
    pub fn probe_storage(storage: &Storage) -> Result<()> {
        LiveVersion::new(0, IocType::Ipv4, b"", 0, 0, storage).map(|_| ())
    }

    pub fn new_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }

    pub fn key(&self, ty: IocType, value: &[u8]) -> Key {
        Key::of(self.seed, ty, value)
    }

    pub fn live(&self, ty: IocType) -> &LiveSet {
        &self.live[usize::from(ty.code())]
    }

    pub fn live_mut(&mut self, ty: IocType) -> &mut LiveSet {
        &mut self.live[usize::from(ty.code())]
    }

    /// The current version id of every partition, by bucket index and type code.
    pub fn version_ids(&self) -> [[u64; 9]; 4] {
        let mut ids = [[0; 9]; 4];
        for b in Bucket::ALL {
            for ty in IocType::ALL {
                ids[b as usize][usize::from(ty.code())] = match b {
                    Bucket::Live => self.live(ty).version.id,
                    _ => self.tier(b, ty).id,
                };
            }
        }
        ids
    }

    /// Current version of a tier partition. Panics never: `bucket` must be a tier, and live
    /// is mapped to chaud only by programming error, which tests catch.
    pub fn tier(&self, bucket: Bucket, ty: IocType) -> &Arc<TierVersion> {
        let t = bucket.tier_index().unwrap_or(0);
        &self.tiers[t][usize::from(ty.code())]
    }

    pub fn set_tier(&mut self, bucket: Bucket, ty: IocType, blocks: Vec<Block>, mtime: u64) {
        let id = self.new_id();
        if let Some(t) = bucket.tier_index() {
            self.tiers[t][usize::from(ty.code())] = TierVersion::new(id, bucket, ty, blocks, mtime);
        }
    }

    /// Swap the blocks of the current version for ones with the same content (a commit moved
    /// them into the new file): the version keeps its id, so the kernel's cache stays valid.
    pub fn replace_tier_blocks(
        &mut self,
        bucket: Bucket,
        ty: IocType,
        id: u64,
        blocks: Vec<Block>,
        mtime: u64,
    ) {
        if let Some(t) = bucket.tier_index() {
            self.tiers[t][usize::from(ty.code())] = TierVersion::new(id, bucket, ty, blocks, mtime);
        }
    }

    /// Record a change of a partition: its backing file now lags. (`seq` is the change's
    /// sequence number, kept for the call sites' readability.)
    pub fn mark(&mut self, bucket: Bucket, ty: IocType, _seq: u64) {
        self.changes[usize::from(bucket.code())][usize::from(ty.code())] += 1;
    }

    /// The change count of a partition, to hand back to `committed_to` after a commit.
    pub fn change_count(&self, bucket: Bucket, ty: IocType) -> u64 {
        self.changes[usize::from(bucket.code())][usize::from(ty.code())]
    }

    /// A commit wrote the partition as it was at change count `count`.
    pub fn committed_to(&mut self, bucket: Bucket, ty: IocType, count: u64) {
        self.committed[usize::from(bucket.code())][usize::from(ty.code())] = count;
    }

    pub fn is_dirty(&self, bucket: Bucket, ty: IocType) -> bool {
        let (b, t) = (usize::from(bucket.code()), usize::from(ty.code()));
        self.changes[b][t] != self.committed[b][t]
    }

    /// Partitions whose backing file lags the state.
    pub fn dirty(&self) -> Vec<(Bucket, IocType)> {
        Bucket::ALL
            .into_iter()
            .flat_map(|b| IocType::ALL.into_iter().map(move |ty| (b, ty)))
            .filter(|&(b, ty)| self.is_dirty(b, ty))
            .collect()
    }

    /// Make every backing file lag, so the next commit rewrites them all (repair).
    pub fn mark_all(&mut self) {
        for b in Bucket::ALL {
            for ty in IocType::ALL {
                self.mark(b, ty, 0);
            }
        }
    }

    /// Bucket and times of a stored indicator.
    pub fn find(&self, ty: IocType, value: &[u8]) -> Option<(Bucket, Times)> {
        let meta = self.index.get(&self.key(ty, value))?;
        match meta.loc() {
            Loc::Live { slot, .. } => Some((Bucket::Live, self.live(ty).times(slot)?)),
            Loc::Block { block, .. } => {
                let (bucket, _) = self.dir.get(&block)?;
                Some((*bucket, (meta.first_seen, meta.last_seen)))
            }
        }
    }

    /// Bucket holding a block (a tier).
    pub fn block_bucket(&self, block: u32) -> Result<Bucket> {
        self.dir
            .get(&block)
            .map(|(b, _)| *b)
            .ok_or_else(|| Error::Invalid(format!("internal: block {block} is in no tier")))
    }

    /// Apply one mutation. An error here means the state no longer matches the log: the
    /// caller must stop taking writes (a restart replays the log).
    pub fn apply(&mut self, seq: u64, m: &Mutation, cache: &BlockCache) -> Result<Applied> {
        let applied = match &m.op {
            Op::Append { ty, values } => apply::append(self, seq, m.ts, *ty, values, cache)?,
            Op::Replace { ty, values } => apply::replace(self, seq, m.ts, *ty, values, cache)?,
            Op::Remove { items } => apply::remove(self, seq, m.ts, items, cache)?,
            Op::Import {
                bucket,
                ty,
                values,
                times,
            } => apply::import(self, seq, m.ts, *bucket, *ty, values, times, cache)?,
            Op::Age { policy } => aging::age(self, seq, m.ts, policy, cache)?,
            Op::Commit { manifest } => {
                self.manifest = manifest.as_ref().clone();
                Applied::default()
            }
        };
        self.applied_seq = seq;
        Ok(applied)
    }

    /// Remove `doomed` keys from the tier blocks that hold them (the caller has already dealt
    /// with their index entries). Kept lines take their times from the index.
    pub fn drop_from_tier(
        &mut self,
        seq: u64,
        ts: u64,
        bucket: Bucket,
        ty: IocType,
        doomed: &KeyMap<u32>,
        cache: &BlockCache,
    ) -> Result<()> {
        if doomed.is_empty() {
            return Ok(());
        }
        let mut touched: HashMap<u32, ()> = HashMap::new();
        for &block in doomed.values() {
            touched.insert(block, ());
        }
        let version = self.tier(bucket, ty).clone();
        let mut blocks = Vec::with_capacity(version.blocks().len());
        for block in version.blocks() {
            if !touched.contains_key(&block.id) {
                blocks.push(block.clone());
                continue;
            }
            let raw = block.raw(cache)?;
            let mut kept = Vec::with_capacity(raw.len());
            let mut times = Vec::with_capacity(block.lines as usize);
            for line in tier::lines(&raw) {
                let key = self.key(ty, line);
                if doomed.contains_key(&key) {
                    continue;
                }
                let meta = self.index.get(&key).ok_or_else(|| {
                    Error::Invalid(format!(
                        "internal: {} line in block {} is not indexed",
                        ty, block.id
                    ))
                })?;
                kept.extend_from_slice(line);
                kept.push(b'\n');
                times.push((meta.first_seen, meta.last_seen));
            }
            if times.is_empty() {
                self.dir.remove(&block.id);
            } else {
                blocks.push(Block::mem(block.id, kept, times));
            }
        }
        self.set_tier(bucket, ty, blocks, ts);
        self.mark(bucket, ty, seq);
        Ok(())
    }

    /// Append lines to the end of a tier partition, indexing each.
    #[allow(clippy::too_many_arguments)]
    pub fn add_to_tier(
        &mut self,
        seq: u64,
        ts: u64,
        bucket: Bucket,
        ty: IocType,
        whole_blocks: Vec<Block>,
        lines: Vec<(Vec<u8>, Times, Key)>,
        cache: &BlockCache,
    ) -> Result<()> {
        if whole_blocks.is_empty() && lines.is_empty() {
            return Ok(());
        }
        let mut blocks = self.tier(bucket, ty).blocks().to_vec();
        for b in &whole_blocks {
            self.dir.insert(b.id, (bucket, ty));
        }
        blocks.extend(whole_blocks);
        let mut next_id = self.next_block_id;
        {
            let mut tail = tier::TailAppender::new(&mut blocks, self.block_size, cache)?;
            for (value, times, key) in lines {
                let id = tail.push(&value, times, &mut next_id);
                self.dir.insert(id, (bucket, ty));
                self.index.insert(
                    key,
                    Meta::new(times.0, times.1, Loc::Block { ty, block: id }),
                );
            }
        }
        if next_id > crate::store::model::MAX_LOC_ID {
            return Err(Error::Invalid(
                "block ids exhausted; run iocfs check --repair to renumber".into(),
            ));
        }
        self.next_block_id = next_id;
        self.set_tier(bucket, ty, blocks, ts);
        self.mark(bucket, ty, seq);
        Ok(())
    }
}

impl State {
    /// Cross-check the index against the sets (for `iocfs check` and tests): every entry
    /// points at a live slot or a tier block that exists, every stored line is indexed
    /// exactly once, and per-partition line counts add up. Returns one line per problem.
    pub fn verify(&self, cache: &BlockCache) -> Vec<String> {
        let mut problems = Vec::new();
        let mut per_partition: HashMap<(Bucket, IocType), u64> = HashMap::new();
        for meta in self.index.values() {
            match meta.loc() {
                Loc::Live { ty, slot } => {
                    if self.live(ty).times(slot).is_none() {
                        problems.push(format!(
                            "index points at a missing live/{} line (slot {slot})",
                            ty.file_name()
                        ));
                    }
                    *per_partition.entry((Bucket::Live, ty)).or_default() += 1;
                }
                Loc::Block { ty, block } => match self.dir.get(&block) {
                    Some(&(bucket, dty))
                        if dty == ty && self.tier(bucket, ty).block(block).is_some() =>
                    {
                        *per_partition.entry((bucket, ty)).or_default() += 1;
                    }
                    _ => problems.push(format!("index points at a missing {ty} block {block}")),
                },
            }
        }
        for ty in IocType::ALL {
            let set = self.live(ty);
            let indexed = per_partition.get(&(Bucket::Live, ty)).copied().unwrap_or(0);
            if set.lines() as u64 != indexed || set.version.lines() != indexed {
                problems.push(format!(
                    "live/{}: {} lines, {} indexed",
                    ty.file_name(),
                    set.version.lines(),
                    indexed
                ));
            }
            let _ = set.for_each_line(|v, slot| {
                let meta = self.index.get(&self.key(ty, v));
                if meta.map(|m| m.loc()) != Some(Loc::Live { ty, slot }) {
                    problems.push(format!(
                        "live/{}: line not indexed at its slot",
                        ty.file_name()
                    ));
                }
            });
            for bucket in Bucket::TIERS {
                let v = self.tier(bucket, ty);
                let good: u64 = v
                    .blocks()
                    .iter()
                    .filter(|b| !b.bad)
                    .map(|b| u64::from(b.lines))
                    .sum();
                let indexed = per_partition.get(&(bucket, ty)).copied().unwrap_or(0);
                if good != indexed {
                    problems.push(format!(
                        "{bucket}/{}: {good} lines, {indexed} indexed",
                        bucket.backing_name(ty)
                    ));
                }
                for block in v.blocks().iter().filter(|b| !b.bad) {
                    if self.dir.get(&block.id) != Some(&(bucket, ty)) {
                        problems.push(format!(
                            "{bucket}/{}: block {} is not in the directory",
                            bucket.backing_name(ty),
                            block.id
                        ));
                    }
                    let Ok(raw) = block.raw(cache) else { continue };
                    for line in tier::lines(&raw) {
                        let found = self.index.get(&self.key(ty, line)).map(|m| m.loc());
                        if found
                            != Some(Loc::Block {
                                ty,
                                block: block.id,
                            })
                        {
                            problems.push(format!(
                                "{bucket}/{}: a line of block {} is indexed elsewhere (stored twice?)",
                                bucket.backing_name(ty),
                                block.id
                            ));
                            break;
                        }
                    }
                }
            }
        }
        problems
    }
}
