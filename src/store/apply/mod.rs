//! Applying mutations to the state: the one function replay and the live pipeline share.
//! Each mutation is deterministic in (state, mutation), so replaying the log on the
//! committed state rebuilds the same state. User writes are in `writes`, aging in `aging`;
//! both change the state only through [`State`]'s methods.

mod aging;
mod allow;
mod replace;
mod sources;
mod writes;

pub use aging::due as aging_due;

use std::collections::HashMap;

use crate::cache::BlockCache;
use crate::error::Result;
use crate::ioc::IocType;
use crate::store::model::{AgingReport, Bucket, Key, KeyMap, Target, Tier, LOCAL};
use crate::store::mutation::{Mutation, Op};
use crate::store::state::State;

/// What one applied mutation did, for counters and for the FUSE layer's cache invalidation.
#[derive(Debug, Default, Clone)]
pub struct Applied {
    /// Partitions that got a new version (not a mere append).
    pub new_versions: Vec<(Bucket, IocType)>,
    /// Allowlist versions this mutation superseded: (type, version id).
    pub superseded_allow: Vec<(IocType, u64)>,
    pub added: u64,
    pub sighted: u64,
    pub promoted: u64,
    pub removed: u64,
    pub aging: Option<AgingReport>,
}

/// Apply one mutation. An error here means the state no longer matches the log: the caller
/// must stop taking writes (a restart replays the log).
pub fn apply(state: &mut State, seq: u64, m: &Mutation, cache: &BlockCache) -> Result<Applied> {
    crate::failpoint::panic_if("apply::panic");
    let applied = match &m.op {
        Op::Append {
            target: Target::Live,
            ty,
            values,
        } => sources::append(state, (seq, m.ts), (*ty, LOCAL), values, cache)?,
        // A write that raced the removal of its (then empty) source is dropped.
        Op::Append {
            target: Target::Source(id),
            ..
        }
        | Op::Replace {
            target: Target::Source(id),
            ..
        } if !state.accepts(*id) => {
            log::warn!("a write to source id {id}, removed meanwhile, was dropped");
            Applied::default()
        }
        Op::Append {
            target: Target::Source(id),
            ty,
            values,
        } => sources::append(state, (seq, m.ts), (*ty, *id), values, cache)?,
        Op::Replace {
            target: Target::Source(id),
            ty,
            values,
        } => sources::replace(state, (seq, m.ts), (*ty, *id), &mut |f| f(values), cache)?,
        Op::ReplaceEnd {
            target: Target::Source(id),
            ty,
            stage,
            values,
        } => {
            let staged = state.take_stage(*stage, (Target::Source(*id), *ty))?;
            if !state.accepts(*id) {
                log::warn!("a replace of source id {id}, removed meanwhile, was dropped");
                return finish(state, seq, Applied::default());
            }
            sources::replace(
                state,
                (seq, m.ts),
                (*ty, *id),
                &mut |f| {
                    staged.for_each_chunk(&mut *f)?;
                    f(values)
                },
                cache,
            )?
        }
        Op::DeclareSource { id, name } => {
            state.declare_source(*id, name, m.ts);
            Applied::default()
        }
        Op::RemoveSource { id } => {
            state.remove_source(*id);
            Applied::default()
        }
        Op::Replace {
            target: Target::Live,
            ty,
            values,
        } => replace::replace(state, seq, m.ts, *ty, values, cache)?,
        Op::Append {
            target: Target::Allow,
            ty,
            values,
        } => allow::append(state, m.ts, *ty, values)?,
        Op::Replace {
            target: Target::Allow,
            ty,
            values,
        } => allow::replace(state, m.ts, *ty, &mut |f| f(values))?,
        Op::ReplacePart {
            target,
            ty,
            stage,
            values,
        } => {
            state.stage_part(seq, (*target, *ty), *stage, values)?;
            Applied::default()
        }
        Op::ReplaceEnd {
            target: Target::Live,
            ty,
            stage,
            values,
        } => replace::replace_end(state, seq, m.ts, (*ty, *stage), values, cache)?,
        Op::ReplaceEnd {
            target: Target::Allow,
            ty,
            stage,
            values,
        } => {
            let staged = state.take_stage(*stage, (Target::Allow, *ty))?;
            allow::replace(state, m.ts, *ty, &mut |f| {
                staged.for_each_chunk(&mut *f)?;
                f(values)
            })?
        }
        Op::ReplaceAbort { stage } => {
            state.drop_stage(*stage);
            Applied::default()
        }
        Op::Remove { items } => writes::remove(state, seq, m.ts, items, cache)?,
        Op::Import {
            bucket,
            ty,
            values,
            times,
            source,
        } => writes::import(
            state,
            seq,
            m.ts,
            (*bucket, *source),
            *ty,
            values,
            times,
            cache,
        )?,
        Op::Age { policy } => aging::age(state, seq, m.ts, policy, cache)?,
        Op::Commit { manifest } => {
            state.set_manifest(manifest.as_ref().clone());
            Applied::default()
        }
    };
    finish(state, seq, applied)
}

fn finish(state: &mut State, seq: u64, applied: Applied) -> Result<Applied> {
    state.set_applied_seq(seq);
    Ok(applied)
}

/// Tier lines leaving their tier, grouped by partition: key → block.
#[derive(Default)]
struct Leaving(HashMap<(Tier, IocType), KeyMap<u32>>);

impl Leaving {
    fn add(&mut self, tier: Tier, ty: IocType, key: Key, block: u32) {
        self.0.entry((tier, ty)).or_default().insert(key, block);
    }

    /// Drop the lines from their blocks (their index entries are the caller's).
    fn apply(
        self,
        state: &mut State,
        seq: u64,
        ts: u64,
        cache: &BlockCache,
        applied: &mut Applied,
    ) -> Result<()> {
        for ((tier, ty), doomed) in self.0 {
            state.drop_from_tier(seq, ts, tier, ty, &doomed, cache)?;
            applied.new_versions.push((tier.bucket(), ty));
        }
        Ok(())
    }
}
