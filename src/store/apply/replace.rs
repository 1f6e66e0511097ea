//! Replacing a whole live set: from one record, or from a stage of parts ended by its last
//! record (`store::mutation`). Both build the new version piece by piece, so a staged
//! replace of gigabytes never holds its text in memory twice.

use super::{Applied, Leaving};
use crate::cache::BlockCache;
use crate::clock::to_u32;
use crate::error::Result;
use crate::ioc::IocType;
use crate::store::live::{LiveVersion, Times};
use crate::store::model::{Bucket, Key, KeyMap, Target, LOCAL};
use crate::store::state::{Found, State};
use crate::store::tier;

/// The whole live set of `ty` becomes `values` (deduplicated, first occurrence wins). Lines
/// already live keep their times; lines from tiers are promoted; live lines not in the new
/// set are deleted.
pub(super) fn replace(
    state: &mut State,
    seq: u64,
    ts: u64,
    ty: IocType,
    values: &[u8],
    cache: &BlockCache,
) -> Result<Applied> {
    let mut r = Replacer::new(state, ty, ts, memchr::memchr_iter(b'\n', values).count())?;
    r.feed(state, values)?;
    r.finish(state, seq, cache)
}

/// The end of a staged replace: its parts, then `values`, become the set.
pub(super) fn replace_end(
    state: &mut State,
    seq: u64,
    ts: u64,
    (ty, stage): (IocType, u64),
    values: &[u8],
    cache: &BlockCache,
) -> Result<Applied> {
    let staged = state.take_stage(stage, (Target::Live, ty))?;
    let lines = staged.lines as usize + memchr::memchr_iter(b'\n', values).count();
    let mut r = Replacer::new(state, ty, ts, lines)?;
    staged.for_each_chunk(|chunk| r.feed(state, chunk))?;
    r.feed(state, values)?;
    r.finish(state, seq, cache)
}

/// A new set being built, line by line, beside the current one (which readers keep seeing).
struct Replacer {
    ty: IocType,
    ts: u64,
    version: std::sync::Arc<LiveVersion>,
    wanted: KeyMap<()>,
    keys: Vec<Key>,
    times: Vec<Times>,
    leaving: Leaving,
    applied: Applied,
    /// Reused for each piece's new lines.
    buf: Vec<u8>,
    /// Lines written, for local's stats.
    lines: usize,
}

impl Replacer {
    /// `lines`: how many the new set may have, to size everything once (growing tables
    /// of millions by doubling would hold two copies at each step).
    fn new(state: &State, ty: IocType, ts: u64, lines: usize) -> Result<Replacer> {
        let mut wanted = KeyMap::default();
        wanted.reserve(lines);
        Ok(Replacer {
            ty,
            ts,
            version: state.new_live_version(ty, ts)?,
            wanted,
            keys: Vec::with_capacity(lines),
            times: Vec::with_capacity(lines),
            leaving: Leaving::default(),
            applied: Applied::default(),
            buf: Vec::new(),
            lines,
        })
    }

    /// Whole lines of the new set, in order.
    fn feed(&mut self, state: &State, values: &[u8]) -> Result<()> {
        let now = to_u32(self.ts);
        let ty = self.ty;
        self.buf.clear();
        let mut lines = 0u64;
        for value in tier::lines(values).filter(|v| !v.is_empty()) {
            let key = state.key(ty, value);
            if self.wanted.insert(key, ()).is_some() {
                continue;
            }
            self.times.push(match state.locate(ty, &key)? {
                Some(Found::Live { times, .. }) => times,
                Some(Found::Tier { tier, block, times }) => {
                    self.leaving.add(tier, ty, key, block);
                    self.applied.promoted += 1;
                    (times.0, now)
                }
                None => {
                    self.applied.added += 1;
                    (now, now)
                }
            });
            self.buf.extend_from_slice(value);
            self.buf.push(b'\n');
            self.keys.push(key);
            lines += 1;
        }
        if lines > 0 {
            self.version.fill(&self.buf, lines, self.ts)?;
        }
        Ok(())
    }

    fn finish(self, state: &mut State, seq: u64, cache: &BlockCache) -> Result<Applied> {
        let Replacer {
            ty,
            ts,
            version,
            wanted,
            keys,
            times,
            leaving,
            mut applied,
            lines,
            ..
        } = self;
        // A replace of live/ is local's whole list (sources' replaces: `sources::replace`).
        state.source_wrote(ty, LOCAL, ts, true, lines as u64);
        // The set as it stands, in the same order (`rsync -a` of an unchanged list, which
        // copies again at every run since the file keeps its own mtime): nothing changes,
        // so the version, its inode and its mtime stay, and no view rebuilds.
        let current = &state.live(ty).version;
        if applied.added == 0
            && applied.promoted == 0
            && keys.len() == state.live(ty).lines()
            && version.same_content_as(current)?
        {
            return Ok(applied);
        }
        applied.removed =
            state.replace_live(ty, version, &keys, times, |k| wanted.contains_key(k))?;
        state.mark(Bucket::Live, ty, seq);
        applied.new_versions.push((Bucket::Live, ty));
        leaving.apply(state, seq, ts, cache, &mut applied)?;
        Ok(applied)
    }
}
