//! Aging (README "Buckets and aging"): at time `ts`, every indicator moves to the bucket its age since the last
//! sighting calls for — live → chaud → tiede → froid → dropped — possibly skipping buckets.
//!
//! A tier block whose oldest and newest lines share a target moves whole: it keeps its id and
//! its compressed member (no recompression, no index update; only the block directory
//! changes). Only blocks that straddle a boundary are split line by line. The whole step is
//! one mutation applied under the state lock, so readers see it all or nothing.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::cache::BlockCache;
use crate::error::Result;
use crate::ioc::IocType;
use crate::store::live::Times;
use crate::store::model::{Bucket, Key, Policy};
use crate::store::state::{Applied, State};
use crate::store::tier::{self, Block};

/// What one aging step moved, for logs and stats.json.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct AgingReport {
    /// "live->chaud" → count, etc.; "froid->gone" for dropped ones.
    pub moved: BTreeMap<String, u64>,
    /// Blocks moved between tiers without being rewritten.
    pub whole_blocks: u64,
}

impl AgingReport {
    fn count(&mut self, from: Bucket, to: Option<Bucket>, n: u64) {
        if n > 0 {
            let to = to.map_or("gone", Bucket::name);
            *self
                .moved
                .entry(format!("{}->{to}", from.name()))
                .or_default() += n;
        }
    }

    pub fn total(&self) -> u64 {
        self.moved.values().sum()
    }
}

/// Incoming blocks and lines per destination tier (chaud, tiede, froid).
type Incoming = [(Vec<Block>, Vec<(Vec<u8>, Times, Key)>); 3];

pub fn age(
    state: &mut State,
    seq: u64,
    ts: u64,
    policy: &Policy,
    cache: &BlockCache,
) -> Result<Applied> {
    let mut report = AgingReport::default();
    let mut applied = Applied::default();
    for ty in IocType::ALL {
        let mut incoming: Incoming = Default::default();
        // Oldest tier first: what arrives in a tier in this step is already where it belongs.
        for src in [Bucket::Froid, Bucket::Tiede, Bucket::Chaud] {
            if age_tier(
                state,
                seq,
                ts,
                policy,
                src,
                ty,
                cache,
                &mut incoming,
                &mut report,
            )? {
                applied.new_versions.push((src, ty));
            }
        }
        if age_live(state, seq, ts, policy, ty, &mut incoming, &mut report)? {
            applied.new_versions.push((Bucket::Live, ty));
        }
        for (dst, (blocks, lines)) in Bucket::TIERS.into_iter().zip(incoming) {
            if !blocks.is_empty() || !lines.is_empty() {
                state.add_to_tier(seq, ts, dst, ty, blocks, lines, cache)?;
                applied.new_versions.push((dst, ty));
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
    state.last_aging = Some((ts, report.clone()));
    applied.aging = Some(report);
    Ok(applied)
}

fn slot_of(dst: Bucket) -> usize {
    dst.tier_index().unwrap_or(0)
}

#[allow(clippy::too_many_arguments)]
fn age_tier(
    state: &mut State,
    seq: u64,
    ts: u64,
    policy: &Policy,
    src: Bucket,
    ty: IocType,
    cache: &BlockCache,
    incoming: &mut Incoming,
    report: &mut AgingReport,
) -> Result<bool> {
    let version = state.tier(src, ty).clone();
    let mut kept = Vec::with_capacity(version.blocks().len());
    let mut changed = false;
    for block in version.blocks() {
        let youngest = policy.aged_target(ts, src, block.max_last);
        let oldest = policy.aged_target(ts, src, block.min_last);
        // A damaged block stays put until `iocfs check --repair` deals with it.
        if block.bad || (youngest == Some(src) && oldest == Some(src)) {
            kept.push(block.clone());
            continue;
        }
        changed = true;
        if youngest == oldest {
            report.count(src, youngest, u64::from(block.lines));
            match youngest {
                Some(dst) => {
                    report.whole_blocks += 1;
                    incoming[slot_of(dst)].0.push(block.clone());
                }
                None => {
                    for line in tier::lines(&block.raw(cache)?) {
                        let key = state.key(ty, line);
                        state.index.remove(&key);
                    }
                    state.dir.remove(&block.id);
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
            let Some(meta) = state.index.get(&key).copied() else {
                log::warn!(
                    "aging: {src}/{ty} line in block {} is not indexed; dropping it",
                    block.id
                );
                continue;
            };
            let times = (meta.first_seen, meta.last_seen);
            match policy.aged_target(ts, src, meta.last_seen) {
                Some(dst) if dst == src => {
                    stay.extend_from_slice(line);
                    stay.push(b'\n');
                    stay_times.push(times);
                }
                Some(dst) => {
                    report.count(src, Some(dst), 1);
                    incoming[slot_of(dst)].1.push((line.to_vec(), times, key));
                }
                None => {
                    report.count(src, None, 1);
                    state.index.remove(&key);
                }
            }
        }
        if stay_times.is_empty() {
            state.dir.remove(&block.id);
        } else {
            kept.push(Block::mem(block.id, stay, stay_times));
        }
    }
    if changed {
        state.set_tier(src, ty, kept, ts);
        state.mark(src, ty, seq);
    }
    Ok(changed)
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
    let live = state.live(ty);
    if live.lines() == 0
        || policy.aged_target(ts, Bucket::Live, live.min_last()) == Some(Bucket::Live)
    {
        return Ok(false);
    }
    let id = state.new_id();
    let removed = state.live_mut(ty).retain(id, ts, |_, times| {
        policy.aged_target(ts, Bucket::Live, times.1) == Some(Bucket::Live)
    })?;
    if removed.is_empty() {
        return Ok(false);
    }
    for r in removed {
        let key = state.key(ty, &r.value);
        let target = policy.aged_target(ts, Bucket::Live, r.times.1);
        report.count(Bucket::Live, target, 1);
        match target {
            Some(dst) if dst != Bucket::Live => {
                incoming[slot_of(dst)].1.push((r.value, r.times, key))
            }
            _ => {
                state.index.remove(&key);
            }
        }
    }
    state.mark(Bucket::Live, ty, seq);
    Ok(true)
}
