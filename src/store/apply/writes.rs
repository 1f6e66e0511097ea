//! Applying writes from users: appends, replacements, removals and imports.

use std::collections::HashMap;

use super::{Applied, Leaving};
use crate::cache::BlockCache;
use crate::clock::to_u32;
use crate::error::Result;
use crate::ioc::IocType;
use crate::store::index::Index;
use crate::store::live::Times;
use crate::store::model::{Bucket, Key, KeyMap, SourceId, LOCAL};
use crate::store::state::{bit, Found, Sighting, State};
use crate::store::tier;

/// New lines are appended in order; known live lines are sighted (last_seen = now); lines
/// found in a tier move back to live keeping their first_seen. Every line is listed by
/// `source` from now on.
pub(super) fn append(
    state: &mut State,
    seq: u64,
    ts: u64,
    (ty, source): (IocType, SourceId),
    values: &[u8],
    cache: &BlockCache,
) -> Result<Applied> {
    let now = to_u32(ts);
    let mut applied = Applied::default();
    let (mut keys, mut add_bytes) = state.take_buffers();
    let mut added_lines = 0u64;
    let mut leaving = Leaving::default();
    let lines = || tier::lines(values).filter(|v| !v.is_empty());
    keys.extend(lines().map(|v| state.key(ty, v)));
    // One index probe per line: this loop is the bulk-ingest hot path. The index is far
    // larger than the CPU cache: ask for the slots of the next keys while handling this
    // one. No growth in the loop, so the hints stay valid.
    state.reserve_index(keys.len());
    for key in keys.iter().take(Index::PREFETCH_AHEAD) {
        state.prefetch(key);
    }
    let mut outcome = Ok(());
    for (i, (value, &key)) in lines().zip(&keys).enumerate() {
        if let Some(next) = keys.get(i + Index::PREFETCH_AHEAD) {
            state.prefetch(next);
        }
        match state.sight_or_add(ty, key, now, source) {
            Ok(Sighting::Sighted) => {
                applied.sighted += 1;
                continue;
            }
            Ok(Sighting::Added) => applied.added += 1,
            Ok(Sighting::Promoted { tier, block }) => {
                leaving.add(tier, ty, key, block);
                applied.promoted += 1;
            }
            Err(e) => {
                outcome = Err(e);
                break;
            }
        }
        add_bytes.extend_from_slice(value);
        add_bytes.push(b'\n');
        added_lines += 1;
    }
    let published = outcome.and_then(|()| {
        if added_lines > 0 {
            state.publish_live(ty, &add_bytes, added_lines, ts)
        } else {
            Ok(false)
        }
    });
    state.put_back_buffers(keys, add_bytes);
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

/// Delete indicators from whichever bucket holds them. Unknown values are ignored.
pub(super) fn remove(
    state: &mut State,
    seq: u64,
    ts: u64,
    items: &[(IocType, Vec<u8>)],
    cache: &BlockCache,
) -> Result<Applied> {
    let keys: Vec<(IocType, Key)> = items
        .iter()
        .map(|(ty, value)| (*ty, state.key(*ty, value)))
        .collect();
    remove_keys(state, seq, ts, &keys, cache)
}

/// Delete indicators, by key, from whichever bucket holds them. Unknown keys are ignored.
pub(super) fn remove_keys(
    state: &mut State,
    seq: u64,
    ts: u64,
    keys: &[(IocType, Key)],
    cache: &BlockCache,
) -> Result<Applied> {
    let mut applied = Applied::default();
    let mut live_doomed: HashMap<IocType, KeyMap<()>> = HashMap::new();
    let mut leaving = Leaving::default();
    for &(ty, key) in keys {
        let ty = &ty;
        match state.locate(*ty, &key)? {
            None => continue,
            Some(Found::Live { .. }) => {
                if live_doomed
                    .entry(*ty)
                    .or_default()
                    .insert(key, ())
                    .is_some()
                {
                    continue; // listed twice
                }
            }
            Some(Found::Tier { tier, block, .. }) => {
                state.unindex(*ty, &key)?;
                leaving.add(tier, *ty, key, block);
            }
        }
        applied.removed += 1;
    }
    for (ty, doomed) in live_doomed {
        if state.remove_live(ty, &doomed, ts)? {
            state.mark(Bucket::Live, ty, seq);
            applied.new_versions.push((Bucket::Live, ty));
        }
    }
    leaving.apply(state, seq, ts, cache, &mut applied)?;
    Ok(applied)
}

/// Adopt indicators into `bucket` with their own times (plain gzip tier files, `import`).
/// An indicator already in a younger bucket stays there; one in an older bucket moves here.
/// Every imported indicator is listed by `source` from then on.
#[allow(clippy::too_many_arguments)]
pub(super) fn import(
    state: &mut State,
    seq: u64,
    ts: u64,
    (bucket, source): (Bucket, SourceId),
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
    let mut new_keys: KeyMap<()> = KeyMap::default();
    for (value, &t) in tier::lines(values).zip(times) {
        let key = state.key(ty, value);
        if value.is_empty() || seen.insert(key, ()).is_some() {
            continue;
        }
        match state.locate(ty, &key)? {
            Some(found) if found.bucket() <= bucket => {
                applied.sighted += 1;
                continue;
            }
            Some(Found::Tier { tier, block, .. }) => {
                leaving.add(tier, ty, key, block);
                applied.promoted += 1;
            }
            // Live is the youngest bucket: a live indicator always stays (arm above).
            Some(Found::Live { .. }) => continue,
            None => {
                applied.added += 1;
                new_keys.insert(key, ());
            }
        }
        match bucket.tier() {
            None => {
                live_bytes.extend_from_slice(value);
                live_bytes.push(b'\n');
                live_times.push(t);
                live_keys.push(key);
            }
            Some(_) => lines.push((value.to_vec(), t, key)),
        }
    }
    // Leave the old tiers first, so kept lines there still find their (unchanged) entries.
    leaving.apply(state, seq, ts, cache, &mut applied)?;
    if !live_keys.is_empty() {
        state.append_live(ty, &live_bytes, &live_keys, &live_times, ts)?;
        state.mark(Bucket::Live, ty, seq);
    }
    if let Some(tier) = bucket.tier().filter(|_| !lines.is_empty()) {
        state.add_to_tier(seq, ts, tier, ty, Vec::new(), lines, cache)?;
        applied.new_versions.push((bucket, ty));
    }
    // Until some indicator has another source, every one is `{local}` and stays so.
    let attributed = source != LOCAL || state.provenance().in_use();
    for key in seen.keys().filter(|_| attributed) {
        if new_keys.contains_key(key) {
            // New ones were indexed as `{local}`: the import's source alone lists them.
            state.set_sources(ty, key, bit(source));
        } else {
            state.add_source(ty, key, source);
        }
    }
    Ok(applied)
}
