//! The tier partitions of the state: their versions, the block directory that names each
//! block's partition, and the index entries of the lines aging moves into and out of them.

use super::State;
use crate::cache::BlockCache;
use crate::error::{Error, Result};
use crate::ioc::IocType;
use crate::store::live::Times;
use crate::store::model::{Key, KeyMap, Loc, Meta, Tier, MAX_LOC_ID};
use crate::store::tier::{self, Block, TierVersion};

impl State {
    /// Make `blocks` the content of a tier partition (a new version), keeping the block
    /// directory in step: blocks that left it leave the directory, new ones enter it.
    fn install_tier(
        &mut self,
        tier: Tier,
        ty: IocType,
        blocks: Vec<Block>,
        mtime: u64,
    ) -> Result<()> {
        let old = self.tiers[tier][ty].clone();
        for b in old.blocks() {
            if self.dir.get(&b.id) == Some(&(tier, ty)) {
                self.dir.remove(&b.id);
            }
        }
        for b in &blocks {
            if let Some(other) = self.dir.insert(b.id, (tier, ty)) {
                return Err(Error::Invalid(format!(
                    "internal: block {} is in {}/{} and {tier}/{ty}",
                    b.id, other.0, other.1
                )));
            }
        }
        let id = self.new_id();
        self.tiers[tier][ty] = TierVersion::new(id, tier, ty, blocks, mtime);
        Ok(())
    }

    /// A new version of a tier partition holding `blocks`, some of the old ones (aging keeps
    /// or splits them). Lines that left the partition are the caller's: re-added elsewhere
    /// or removed from the index.
    pub fn set_tier_blocks(
        &mut self,
        seq: u64,
        tier: Tier,
        ty: IocType,
        blocks: Vec<Block>,
        mtime: u64,
    ) -> Result<()> {
        self.install_tier(tier, ty, blocks, mtime)?;
        self.mark(tier.bucket(), ty, seq);
        Ok(())
    }

    /// Swap the blocks of the current version for ones with the same content (a commit moved
    /// them into the new file): the version keeps its id, so the kernel's cache stays valid.
    pub fn rebase_tier(&mut self, tier: Tier, ty: IocType, blocks: Vec<Block>) {
        self.tiers[tier][ty] = self.tiers[tier][ty].rebased(blocks);
    }

    /// Remove `doomed` keys (key → block) from the tier blocks that hold them; the caller
    /// has already dealt with their index entries. Kept lines take their times from the
    /// index.
    pub fn drop_from_tier(
        &mut self,
        seq: u64,
        ts: u64,
        tier: Tier,
        ty: IocType,
        doomed: &KeyMap<u32>,
        cache: &BlockCache,
    ) -> Result<()> {
        if doomed.is_empty() {
            return Ok(());
        }
        let touched: std::collections::HashSet<u32> = doomed.values().copied().collect();
        let version = self.tiers[tier][ty].clone();
        let mut blocks = Vec::with_capacity(version.blocks().len());
        for block in version.blocks() {
            if !touched.contains(&block.id) {
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
                        "internal: {ty} line in block {} is not indexed",
                        block.id
                    ))
                })?;
                kept.extend_from_slice(line);
                kept.push(b'\n');
                times.push((meta.first_seen, meta.last_seen));
            }
            if !times.is_empty() {
                blocks.push(Block::mem(block.id, kept, times));
            }
        }
        self.set_tier_blocks(seq, tier, ty, blocks, ts)
    }

    /// Append whole blocks and lines to the end of a tier partition, indexing each line
    /// there (an entry it had elsewhere is replaced).
    #[allow(clippy::too_many_arguments)]
    pub fn add_to_tier(
        &mut self,
        seq: u64,
        ts: u64,
        tier: Tier,
        ty: IocType,
        whole_blocks: Vec<Block>,
        lines: Vec<(Vec<u8>, Times, Key)>,
        cache: &BlockCache,
    ) -> Result<()> {
        if whole_blocks.is_empty() && lines.is_empty() {
            return Ok(());
        }
        let mut blocks = self.tiers[tier][ty].blocks().to_vec();
        blocks.extend(whole_blocks);
        let mut next_id = self.next_block_id;
        let mut placed = Vec::with_capacity(lines.len());
        {
            let mut tail = tier::TailAppender::new(&mut blocks, self.block_size, cache)?;
            for (value, times, key) in lines {
                placed.push((key, times, tail.push(&value, times, &mut next_id)));
            }
        }
        if next_id > MAX_LOC_ID {
            return Err(Error::Invalid(
                "block ids exhausted; run iocfs check --repair to renumber".into(),
            ));
        }
        self.next_block_id = next_id;
        self.set_tier_blocks(seq, tier, ty, blocks, ts)?;
        for (key, times, block) in placed {
            self.index
                .insert(key, Meta::new(times.0, times.1, Loc::Block { ty, block }));
        }
        Ok(())
    }
}
