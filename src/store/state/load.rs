//! Loading committed files into the state at recovery.

use super::State;
use crate::error::Result;
use crate::ioc::IocType;
use crate::store::index::Entry;
use crate::store::live::Times;
use crate::store::model::{Key, Loc, Meta, Tier, MAX_LOC_ID};
use crate::store::tier::{self, Block, TierVersion};

/// Loading committed files at recovery: the state is built partition by partition, younger
/// buckets first, so an indicator met again in an older bucket is a stale copy.
impl State {
    /// The committed live file of `ty`: its lines with their times, and when it last
    /// changed (0: unknown). Returns the lines that were already indexed (duplicates: the
    /// file was not written by iocfs as it is).
    pub fn load_live(
        &mut self,
        ty: IocType,
        text: &[u8],
        times: &[Times],
        mtime: u64,
    ) -> Result<Vec<Vec<u8>>> {
        let id = self.new_id();
        self.live[ty].replace(id, text, times.to_vec(), mtime)?;
        let mut duplicates = Vec::new();
        for (line, slot) in tier::lines(text).zip(0u32..) {
            let key = self.key(ty, line);
            if self
                .index
                .insert(key, Meta::new(0, 0, Loc::Live { ty, slot }))
                .is_some()
            {
                duplicates.push(line.to_vec());
            }
        }
        Ok(duplicates)
    }

    /// Index one line of a committed tier block; false if it is stored already (a younger
    /// bucket has it: this copy is to be dropped).
    pub fn load_tier_line(&mut self, ty: IocType, key: Key, times: Times, block: u32) -> bool {
        self.load_entry(key, Meta::new(times.0, times.1, Loc::Block { ty, block }))
    }

    /// Index an entry from a checkpoint; false if the key is stored already.
    pub fn load_entry(&mut self, key: Key, meta: Meta) -> bool {
        match self.index.entry(key) {
            Entry::Occupied(_) => false,
            Entry::Vacant(slot) => {
                slot.insert(meta);
                true
            }
        }
    }

    /// Whether a block id read from a committed file can be used: in range, and held by
    /// no partition loaded so far. Errs saying why not.
    pub fn check_block_id(&self, id: u32) -> std::result::Result<(), String> {
        if id == 0 || id > MAX_LOC_ID {
            return Err(format!("block id {id} is out of range (1..={MAX_LOC_ID})"));
        }
        if self.dir.contains_key(&id) {
            return Err(format!("block id {id} is used twice"));
        }
        Ok(())
    }

    /// The blocks of a committed tier file (each checked with [`State::check_block_id`]).
    /// Errs (saying why) when the file lists one block id twice.
    pub fn load_tier(
        &mut self,
        tier: Tier,
        ty: IocType,
        blocks: Vec<Block>,
        mtime: u64,
    ) -> std::result::Result<(), String> {
        for b in &blocks {
            self.check_block_id(b.id)?;
            self.dir.insert(b.id, (tier, ty));
            self.next_block_id = self.next_block_id.max(b.id + 1);
        }
        let id = self.new_id();
        self.tiers[tier][ty] = TierVersion::new(id, tier, ty, blocks, mtime);
        Ok(())
    }
}
