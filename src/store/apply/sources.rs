//! Applying writes to a source's files (`sources/<name>/<type>.txt`, README "Sources"):
//! an append is a sighting by the source; a replace is the source's whole current list.

use super::{writes, Applied};
use crate::cache::BlockCache;
use crate::error::Result;
use crate::ioc::IocType;
use crate::store::model::{Key, KeyMap, SourceId};
use crate::store::state::{bit, Chunks, State};
use crate::store::tier;

/// Lines appended by `source`: sightings, as an append to live/, listed by the source
/// (`local` for live/ itself).
pub(super) fn append(
    state: &mut State,
    (seq, ts): (u64, u64),
    (ty, source): (IocType, SourceId),
    values: &[u8],
    cache: &BlockCache,
) -> Result<Applied> {
    let applied = writes::append(state, seq, ts, (ty, source), values, cache)?;
    let lines = tier::lines(values).filter(|v| !v.is_empty()).count() as u64;
    state.source_wrote(ty, source, ts, false, lines);
    Ok(applied)
}

/// `source`'s list of `ty` becomes the lines of `chunks`. Stored indicators it lists gain
/// it (their times and buckets unchanged: a snapshot that lists an indicator again is not a
/// new sighting); new ones are added to live as sightings; indicators it listed before and
/// no longer does lose it, and one left with no source is removed from every bucket.
pub(super) fn replace(
    state: &mut State,
    (seq, ts): (u64, u64),
    (ty, source): (IocType, SourceId),
    chunks: &mut Chunks<'_>,
    cache: &BlockCache,
) -> Result<Applied> {
    let mut listed: KeyMap<()> = KeyMap::default();
    let mut new_values = Vec::new();
    let mut lines = 0u64;
    chunks(&mut |chunk: &[u8]| {
        for value in tier::lines(chunk).filter(|v| !v.is_empty()) {
            let key = state.key(ty, value);
            if listed.insert(key, ()).is_some() {
                continue;
            }
            lines += 1;
            if !state.add_source(ty, &key, source) {
                new_values.extend_from_slice(value);
                new_values.push(b'\n');
            }
        }
        Ok(())
    })?;
    let mut doomed: Vec<(IocType, Key)> = Vec::new();
    for (key, set) in state.keys_listed_by(ty, source) {
        if listed.contains_key(&key) {
            continue;
        }
        let left = set & !bit(source);
        if left == 0 {
            doomed.push((ty, key));
        } else {
            state.set_sources(ty, &key, left);
        }
    }
    let mut applied = writes::remove_keys(state, seq, ts, &doomed, cache)?;
    if !new_values.is_empty() {
        let added = writes::append(state, seq, ts, (ty, source), &new_values, cache)?;
        applied.added += added.added;
        applied.new_versions.extend(added.new_versions);
    }
    state.source_wrote(ty, source, ts, true, lines);
    Ok(applied)
}
