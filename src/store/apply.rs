//! Applying writes from users: appends, replacements, removals and imports.
//! Each function is deterministic in (state, mutation), so replay rebuilds the same state.

use crate::store::index::{Entry, Index};
use std::collections::HashMap;
use std::sync::atomic::Ordering;

use crate::cache::BlockCache;
use crate::clock::to_u32;
use crate::error::Result;
use crate::ioc::IocType;
use crate::store::live::Times;
use crate::store::model::{Bucket, Key, KeyMap, Loc, Meta};
use crate::store::state::{Applied, State, PENDING_SLOT};
use crate::store::tier;

/// Tier lines leaving their tier, grouped by partition: key → block.
#[derive(Default)]
struct Leaving(HashMap<(Bucket, IocType), KeyMap<u32>>);

impl Leaving {
    fn add(&mut self, bucket: Bucket, ty: IocType, key: Key, block: u32) {
        self.0.entry((bucket, ty)).or_default().insert(key, block);
    }

    fn apply(
        self,
        state: &mut State,
        seq: u64,
        ts: u64,
        cache: &BlockCache,
        applied: &mut Applied,
    ) -> Result<()> {
        for ((bucket, ty), doomed) in self.0 {
            state.drop_from_tier(seq, ts, bucket, ty, &doomed, cache)?;
            applied.new_versions.push((bucket, ty));
        }
        Ok(())
    }
}

/// New lines are appended in order; known live lines are sighted (last_seen = now); lines
/// found in a tier move back to live keeping their first_seen.
pub fn append(
    state: &mut State,
    seq: u64,
    ts: u64,
    ty: IocType,
    values: &[u8],
    cache: &BlockCache,
) -> Result<Applied> {
    let now = to_u32(ts);
    let mut applied = Applied::default();
    let mut keys = std::mem::take(&mut state.scratch.keys);
    let mut add_bytes = std::mem::take(&mut state.scratch.bytes);
    let mut added_lines = 0u64;
    let mut leaving = Leaving::default();
    let published = {
        // One index probe per line: this loop is the bulk-ingest hot path.
        let State {
            seed,
            index,
            live,
            dir,
            ids,
            ..
        } = &mut *state;
        let live = &mut live[usize::from(ty.code())];
        let lines = || tier::lines(values).filter(|v| !v.is_empty());
        keys.extend(lines().map(|v| Key::of(*seed, ty, v)));
        // The index is far larger than the CPU cache: ask for the slots of the next keys
        // while handling this one. No growth in the loop, so the hints stay valid.
        index.reserve(keys.len());
        for key in keys.iter().take(Index::PREFETCH_AHEAD) {
            index.prefetch(key);
        }
        for (i, (value, &key)) in lines().zip(&keys).enumerate() {
            if let Some(next) = keys.get(i + Index::PREFETCH_AHEAD) {
                index.prefetch(next);
            }
            match index.entry(key) {
                Entry::Occupied(mut e) => {
                    let meta = e.get_mut();
                    match meta.loc() {
                        Loc::Live { slot, .. } => {
                            live.touch(slot, now);
                            applied.sighted += 1;
                            continue;
                        }
                        Loc::Block { block, .. } => {
                            let bucket = dir.get(&block).map_or(Bucket::Chaud, |d| d.0);
                            leaving.add(bucket, ty, key, block);
                            let slot = live.push_line((meta.first_seen, now));
                            *meta = Meta::new(0, 0, Loc::Live { ty, slot });
                            applied.promoted += 1;
                        }
                    }
                }
                Entry::Vacant(e) => {
                    let slot = live.push_line((now, now));
                    e.insert(Meta::new(0, 0, Loc::Live { ty, slot }));
                    applied.added += 1;
                }
            }
            add_bytes.extend_from_slice(value);
            add_bytes.push(b'\n');
            added_lines += 1;
        }
        if added_lines > 0 {
            live.publish(&add_bytes, added_lines, ts, || {
                ids.fetch_add(1, Ordering::Relaxed)
            })
        } else {
            Ok(false)
        }
    };
    state.scratch.put_back(keys, add_bytes);
    if published? {
        applied.new_versions.push((Bucket::Live, ty));
    }
    if added_lines > 0 || applied.sighted > 0 {
        // Sightings change only times, but those are part of the committed live state.
        state.mark(Bucket::Live, ty, seq);
    }
    leaving.apply(state, seq, ts, cache, &mut applied)?;
    Ok(applied)
}

/// The whole live set of `ty` becomes `values` (deduplicated, first occurrence wins). Lines
/// already live keep their times; lines from tiers are promoted; live lines not in the new
/// set are deleted.
pub fn replace(
    state: &mut State,
    seq: u64,
    ts: u64,
    ty: IocType,
    values: &[u8],
    cache: &BlockCache,
) -> Result<Applied> {
    let now = to_u32(ts);
    let mut applied = Applied::default();
    let mut wanted: KeyMap<()> = KeyMap::default();
    let mut content = Vec::with_capacity(values.len());
    let mut times: Vec<Times> = Vec::new();
    let mut keys = Vec::new();
    let mut leaving = Leaving::default();
    for value in tier::lines(values).filter(|v| !v.is_empty()) {
        let key = state.key(ty, value);
        if wanted.insert(key, ()).is_some() {
            continue;
        }
        times.push(
            match state.index.get(&key).map(|m| (m.loc(), m.first_seen)) {
                Some((Loc::Live { slot, .. }, _)) => {
                    state.live(ty).times(slot).unwrap_or((now, now))
                }
                Some((Loc::Block { block, .. }, first)) => {
                    let bucket = state.dir.get(&block).map_or(Bucket::Chaud, |d| d.0);
                    leaving.add(bucket, ty, key, block);
                    applied.promoted += 1;
                    (first, now)
                }
                None => {
                    applied.added += 1;
                    (now, now)
                }
            },
        );
        content.extend_from_slice(value);
        content.push(b'\n');
        keys.push(key);
    }
    let mut gone = Vec::new();
    state.live(ty).for_each_line(|v, _| {
        let key = Key::of(state.seed, ty, v);
        if !wanted.contains_key(&key) {
            gone.push(key);
        }
    })?;
    for key in &gone {
        state.index.remove(key);
    }
    applied.removed = gone.len() as u64;
    let id = state.new_id();
    let slots = state.live_mut(ty).replace(id, &content, &times, ts)?;
    for (key, slot) in keys.into_iter().zip(slots) {
        state
            .index
            .insert(key, Meta::new(0, 0, Loc::Live { ty, slot }));
    }
    state.mark(Bucket::Live, ty, seq);
    applied.new_versions.push((Bucket::Live, ty));
    leaving.apply(state, seq, ts, cache, &mut applied)?;
    Ok(applied)
}

/// Delete indicators from whichever bucket holds them. Unknown values are ignored.
pub fn remove(
    state: &mut State,
    seq: u64,
    ts: u64,
    items: &[(IocType, Vec<u8>)],
    cache: &BlockCache,
) -> Result<Applied> {
    let mut applied = Applied::default();
    let mut live_doomed: HashMap<IocType, KeyMap<()>> = HashMap::new();
    let mut leaving = Leaving::default();
    for (ty, value) in items {
        let key = state.key(*ty, value);
        let Some(meta) = state.index.remove(&key) else {
            continue;
        };
        applied.removed += 1;
        match meta.loc() {
            Loc::Live { .. } => {
                live_doomed.entry(*ty).or_default().insert(key, ());
            }
            Loc::Block { block, .. } => {
                let bucket = state.dir.get(&block).map_or(Bucket::Chaud, |d| d.0);
                leaving.add(bucket, *ty, key, block);
            }
        }
    }
    for (ty, doomed) in live_doomed {
        let id = state.new_id();
        let seed = state.seed;
        state
            .live_mut(ty)
            .retain(id, ts, |v, _| !doomed.contains_key(&Key::of(seed, ty, v)))?;
        state.mark(Bucket::Live, ty, seq);
        applied.new_versions.push((Bucket::Live, ty));
    }
    leaving.apply(state, seq, ts, cache, &mut applied)?;
    Ok(applied)
}

/// Adopt indicators into `bucket` with their own times (plain gzip tier files, `import`).
/// An indicator already in a younger bucket stays there; one in an older bucket moves here.
#[allow(clippy::too_many_arguments)]
pub fn import(
    state: &mut State,
    seq: u64,
    ts: u64,
    bucket: Bucket,
    ty: IocType,
    values: &[u8],
    times: &[Times],
    cache: &BlockCache,
) -> Result<Applied> {
    let mut applied = Applied::default();
    let mut leaving = Leaving::default();
    let mut lines = Vec::new();
    let mut live_bytes = Vec::new();
    let mut live_times = Vec::new();
    let mut live_keys = Vec::new();
    let mut seen: KeyMap<()> = KeyMap::default();
    for (value, &t) in tier::lines(values).zip(times) {
        let key = state.key(ty, value);
        if value.is_empty() || seen.insert(key, ()).is_some() {
            continue;
        }
        if let Some(meta) = state.index.get(&key).copied() {
            let holder = match meta.loc() {
                Loc::Live { .. } => Bucket::Live,
                Loc::Block { block, .. } => state.dir.get(&block).map_or(Bucket::Chaud, |d| d.0),
            };
            if holder <= bucket {
                applied.sighted += 1;
                continue;
            }
            if let Loc::Block { block, .. } = meta.loc() {
                leaving.add(holder, ty, key, block);
            }
            applied.promoted += 1;
        } else {
            applied.added += 1;
        }
        if bucket == Bucket::Live {
            state.index.insert(
                key,
                Meta::new(
                    0,
                    0,
                    Loc::Live {
                        ty,
                        slot: PENDING_SLOT,
                    },
                ),
            );
            live_bytes.extend_from_slice(value);
            live_bytes.push(b'\n');
            live_times.push(t);
            live_keys.push(key);
        } else {
            lines.push((value.to_vec(), t, key));
        }
    }
    // Leave the old tiers first, so kept lines there still find their (unchanged) entries.
    leaving.apply(state, seq, ts, cache, &mut applied)?;
    if !live_keys.is_empty() {
        let ids = state.ids.clone();
        let slots = state
            .live_mut(ty)
            .append(&live_bytes, &live_times, ts, || {
                ids.fetch_add(1, Ordering::Relaxed)
            })?;
        for (key, slot) in live_keys.into_iter().zip(slots) {
            state
                .index
                .insert(key, Meta::new(0, 0, Loc::Live { ty, slot }));
        }
        state.mark(Bucket::Live, ty, seq);
    }
    if !lines.is_empty() {
        state.add_to_tier(seq, ts, bucket, ty, Vec::new(), lines, cache)?;
        applied.new_versions.push((bucket, ty));
    }
    Ok(applied)
}
