//! Aging (README "Buckets and aging"): at time `ts`, every indicator moves to the bucket its
//! age since the last sighting calls for — live → chaud → tiede → froid → dropped — possibly
//! skipping buckets.
//!
//! A tier block whose oldest and newest lines share a target moves whole: it keeps its id and
//! its compressed member (no recompression, no index update; only the block directory
//! changes). Only blocks that straddle a boundary are split line by line. The whole step is
//! one mutation applied under the state lock, so readers see it all or nothing.

use super::Applied;
use crate::cache::BlockCache;
use crate::error::Result;
use crate::ioc::IocType;
use crate::store::live::Times;
use crate::store::model::{AgingReport, Bucket, Key, Policy, Tier};
use crate::store::partition::ByTier;
use crate::store::state::State;
use crate::store::tier::{self, Block};

/// Incoming blocks and lines per destination tier.
type Incoming = ByTier<(Vec<Block>, Vec<(Vec<u8>, Times, Key)>)>;

pub(super) fn age(
    state: &mut State,
    seq: u64,
    ts: u64,
    policy: &Policy,
    cache: &BlockCache,
) -> Result<Applied> {
    let mut report = AgingReport::default();
    let mut applied = Applied::default();
    for ty in IocType::ALL {
        let mut incoming = Incoming::default();
        // Oldest tier first: what arrives in a tier in this step is already where it belongs.
        for src in [Tier::Froid, Tier::Tiede, Tier::Chaud] {
            let step = Step {
                seq,
                ts,
                policy,
                ty,
            };
            if step.age_tier(state, src, cache, &mut incoming, &mut report)? {
                applied.new_versions.push((src.bucket(), ty));
            }
        }
        if age_live(state, seq, ts, policy, ty, &mut incoming, &mut report)? {
            applied.new_versions.push((Bucket::Live, ty));
        }
        for (dst, (blocks, lines)) in incoming.iter_mut() {
            if !blocks.is_empty() || !lines.is_empty() {
                let (blocks, lines) = (std::mem::take(blocks), std::mem::take(lines));
                state.add_to_tier(seq, ts, dst, ty, blocks, lines, cache)?;
                applied.new_versions.push((dst.bucket(), ty));
            }
        }
    }
    if report.total() > 0 {
        log::info!(
            "aging at {}: {}",
            crate::clock::rfc3339(ts),
            report
                .moved
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    state.set_last_aging(ts, report.clone());
    applied.aging = Some(report);
    Ok(applied)
}

/// Whether an aging step at `ts` would move anything: some live set or tier block holds an
/// indicator that no longer belongs where it is (the same tests `age` makes, moving
/// nothing). The aging loop journals a step only then.
pub fn due(state: &State, ts: u64, policy: &Policy) -> bool {
    IocType::ALL.into_iter().any(|ty| {
        !live_stays(state, ts, policy, ty)
            || [Tier::Froid, Tier::Tiede, Tier::Chaud]
                .into_iter()
                .any(|src| {
                    let version = state.tier(src, ty);
                    let mut blocks = version.blocks().iter();
                    blocks.any(|block| !block_stays(policy, ts, src, block))
                })
    })
}

/// Whether a tier block stays whole where it is at `ts`: it is damaged (left for `iocfs
/// check --repair`), or its oldest and youngest lines both belong in `src`.
fn block_stays(policy: &Policy, ts: u64, src: Tier, block: &Block) -> bool {
    block.bad
        || (tier_target(policy, ts, src, block.max_last) == Some(src)
            && tier_target(policy, ts, src, block.min_last) == Some(src))
}

/// Whether every line of a live set stays live at `ts` (its oldest last sighting does).
fn live_stays(state: &State, ts: u64, policy: &Policy, ty: IocType) -> bool {
    let live = state.live(ty);
    live.lines() == 0 || policy.aged_target(ts, Bucket::Live, live.min_last()) == Some(Bucket::Live)
}

/// The target of an indicator leaving a tier: a younger bucket is never a target.
fn tier_target(policy: &Policy, ts: u64, src: Tier, last_seen: u32) -> Option<Tier> {
    policy
        .aged_target(ts, src.bucket(), last_seen)
        .and_then(Bucket::tier)
}

/// One type's aging step.
struct Step<'a> {
    seq: u64,
    ts: u64,
    policy: &'a Policy,
    ty: IocType,
}

impl Step<'_> {
    fn age_tier(
        &self,
        state: &mut State,
        src: Tier,
        cache: &BlockCache,
        incoming: &mut Incoming,
        report: &mut AgingReport,
    ) -> Result<bool> {
        let (ts, ty) = (self.ts, self.ty);
        let version = state.tier(src, ty).clone();
        let mut kept = Vec::with_capacity(version.blocks().len());
        let mut changed = false;
        for block in version.blocks() {
            if block_stays(self.policy, ts, src, block) {
                kept.push(block.clone());
                continue;
            }
            let youngest = tier_target(self.policy, ts, src, block.max_last);
            let oldest = tier_target(self.policy, ts, src, block.min_last);
            changed = true;
            if youngest == oldest {
                report.count(
                    src.bucket(),
                    youngest.map(Tier::bucket),
                    u64::from(block.lines),
                );
                match youngest {
                    Some(dst) => {
                        report.whole_blocks += 1;
                        incoming[dst].0.push(block.clone());
                    }
                    None => {
                        for line in tier::lines(&block.raw(cache)?) {
                            let key = state.key(ty, line);
                            state.unindex(ty, &key)?;
                        }
                    }
                }
                continue;
            }
            // Straddles a boundary: split line by line.
            let raw = block.raw(cache)?;
            let mut stay = Vec::new();
            let mut stay_times = Vec::new();
            for line in tier::lines(&raw) {
                let key = state.key(ty, line);
                let Some(times) = state.tier_times(&key) else {
                    log::warn!(
                        "aging: {src}/{ty} line in block {} is not indexed; dropping it",
                        block.id
                    );
                    continue;
                };
                match tier_target(self.policy, ts, src, times.1) {
                    Some(dst) if dst == src => {
                        stay.extend_from_slice(line);
                        stay.push(b'\n');
                        stay_times.push(times);
                    }
                    Some(dst) => {
                        report.count(src.bucket(), Some(dst.bucket()), 1);
                        incoming[dst].1.push((line.to_vec(), times, key));
                    }
                    None => {
                        report.count(src.bucket(), None, 1);
                        state.unindex(ty, &key)?;
                    }
                }
            }
            if !stay_times.is_empty() {
                kept.push(Block::mem(block.id, stay, stay_times));
            }
        }
        if changed {
            state.set_tier_blocks(self.seq, src, ty, kept, ts)?;
        }
        Ok(changed)
    }
}

fn age_live(
    state: &mut State,
    seq: u64,
    ts: u64,
    policy: &Policy,
    ty: IocType,
    incoming: &mut Incoming,
    report: &mut AgingReport,
) -> Result<bool> {
    if live_stays(state, ts, policy, ty) {
        return Ok(false);
    }
    let stays = |times: Times| policy.aged_target(ts, Bucket::Live, times.1) == Some(Bucket::Live);
    let removed = state.take_live(ty, ts, stays)?;
    if removed.is_empty() {
        return Ok(false);
    }
    for (value, times, key) in removed {
        let target = policy.aged_target(ts, Bucket::Live, times.1);
        report.count(Bucket::Live, target, 1);
        match target.and_then(Bucket::tier) {
            Some(dst) => incoming[dst].1.push((value, times, key)),
            None => {
                state.forget(ty, &key);
            }
        }
    }
    state.mark(Bucket::Live, ty, seq);
    Ok(true)
}
