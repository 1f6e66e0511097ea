//! The store's side of group commit (`wal::group_commit::Batch`): what a batch needs before
//! its record is written, and applying it once it is durable.
//!
//! Applying a durable record must not fail for want of a resource, or the store stops
//! taking writes until a restart. So `prepare` gets, before anything is written, every file
//! the batch's apply will create (new live versions, a staged replace's file) and, with
//! FUSE passthrough, a copy of each live version this batch appends to that a reader pins
//! (see `state::pins`). Running out of descriptors then fails the batch's writers with
//! EMFILE and the next write tries again.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::live::LiveVersion;
use super::model::{Bucket, PartId, Target};
use super::mutation::{Mutation, Op};
use super::partition::ByType;
use super::wal::group_commit::Batch;
use super::{apply, Change, Store};
use crate::error::Result;
use crate::ioc::IocType;

/// What `prepare` set up for one batch.
#[derive(Default)]
pub struct Prepared {
    /// Types whose live set the batch appends to (pins held off until the apply).
    appending: Vec<IocType>,
    /// Copies of pinned versions: (type, the version copied, the copy).
    copies: Vec<(IocType, u64, Arc<LiveVersion>)>,
}

/// Files a batch's apply may create: (live versions, staged-replace files), and the live
/// types it appends to.
fn needs(batch: &[(u64, Mutation)]) -> (usize, usize, Vec<IocType>) {
    let (mut live, mut staged) = (0, 0);
    let mut appending = ByType::<bool>::default();
    for (_, m) in batch {
        match &m.op {
            Op::Append {
                target: Target::Live | Target::Source(_),
                ty,
                ..
            }
            | Op::Import {
                bucket: Bucket::Live,
                ty,
                ..
            } => appending[*ty] = true,
            // A source's replace may remove live lines (a version) and append new ones.
            Op::Replace {
                target: Target::Source(_),
                ty,
                ..
            }
            | Op::ReplaceEnd {
                target: Target::Source(_),
                ty,
                ..
            } => {
                live += 1;
                appending[*ty] = true;
            }
            Op::Replace { .. } | Op::ReplaceEnd { .. } => live += 1,
            Op::ReplacePart { stage: 0, .. } => staged += 1,
            Op::Remove { items } => {
                let mut types = ByType::<bool>::default();
                items.iter().for_each(|(ty, _)| types[*ty] = true);
                live += IocType::ALL.iter().filter(|&&t| types[t]).count();
            }
            Op::Age { .. } => live += IocType::ALL.len(),
            _ => {}
        }
    }
    let types = IocType::ALL.into_iter().filter(|&t| appending[t]).collect();
    (live, staged, types)
}

/// Which set a target's lines end up in: 0 live (a source's new lines go there), 1 allow.
fn set_of(target: Target) -> usize {
    usize::from(target == Target::Allow)
}

/// Whether a replace of `target` starts its set over (a source's only adds to live).
fn starts_over(target: Target) -> bool {
    !matches!(target, Target::Source(_))
}

/// Lines in `values`, or a bound on them that is cheap when far from `room`.
fn lines_within(values: &[u8], room: usize) -> usize {
    // Every line takes at least two bytes ("x\n").
    if values.len() / 2 <= room {
        return values.len() / 2;
    }
    memchr::memchr_iter(b'\n', values).count()
}

impl Store {
    /// Refuse (EFBIG, before anything is journaled) a batch that could give a live set more
    /// lines than its slot ids can number. Lines that turn out to be known are counted too:
    /// this errs on the side of refusing, and only near 2^27 lines.
    fn check_room(&self, batch: &[(u64, Mutation)]) -> Result<()> {
        let st = self.state();
        // Per target (live, allow) and type: lines that can still be added, and the most.
        let mut room = [ByType::<usize>::default(), ByType::<usize>::default()];
        let mut limit = [ByType::<usize>::default(), ByType::<usize>::default()];
        for ty in IocType::ALL {
            room[0][ty] = st.live_room(ty);
            limit[0][ty] = st.live(ty).lines() + room[0][ty];
            room[1][ty] = st.allow(ty).room();
            limit[1][ty] = st.allow(ty).lines() + room[1][ty];
        }
        for (_, m) in batch {
            let (t, ty, lines) = match &m.op {
                Op::Append { target, ty, values } => {
                    let t = set_of(*target);
                    (t, *ty, lines_within(values, room[t][*ty]))
                }
                Op::Import {
                    bucket: Bucket::Live,
                    ty,
                    times,
                    ..
                } => (0, *ty, times.len()),
                // A replace starts the set over.
                Op::Replace { target, ty, values } => {
                    let t = set_of(*target);
                    if starts_over(*target) {
                        room[t][*ty] = limit[t][*ty];
                    }
                    (t, *ty, lines_within(values, room[t][*ty]))
                }
                Op::ReplaceEnd {
                    target,
                    ty,
                    stage,
                    values,
                } => {
                    let t = set_of(*target);
                    if starts_over(*target) {
                        room[t][*ty] = limit[t][*ty];
                    }
                    let staged = st.stage_lines(*stage) as usize;
                    (t, *ty, staged + lines_within(values, room[t][*ty]))
                }
                _ => continue,
            };
            if lines > room[t][ty] {
                let dir = if t == 0 { "live" } else { "allow" };
                return Err(crate::error::Error::TooLarge(format!(
                    "{dir}/{} would hold more lines than a set can; refused",
                    ty.file_name()
                )));
            }
            room[t][ty] -= lines;
        }
        Ok(())
    }
}

impl Batch for Store {
    type Prepared = Prepared;

    fn prepare(&self, batch: &[(u64, Mutation)]) -> Result<Prepared> {
        self.check_room(batch)?;
        let (live, staged, appending) = needs(batch);
        let (live_storage, staging) = self.state().storages();
        live_storage.reserve(live)?;
        staging.reserve(staged)?;
        if !self.config().mount.passthrough || appending.is_empty() {
            return Ok(Prepared::default());
        }
        let bases: Vec<Arc<LiveVersion>> = {
            let mut st = self.state_mut();
            appending.iter().map(|&ty| st.begin_append(ty)).collect()
        };
        let mut prepared = Prepared {
            appending,
            copies: Vec::new(),
        };
        for v in bases.into_iter().filter(|v| v.has_passthrough_readers()) {
            // Pinned: it can't grow, so it is copied without any lock.
            let id = self.state().new_id();
            match v.copy(id, self.clock.now()) {
                Ok(copy) => {
                    self.state_mut().ration_copies(v.ty, copy.len());
                    prepared.copies.push((v.ty, v.id, copy))
                }
                Err(e) => {
                    self.abandon(prepared);
                    return Err(e);
                }
            }
        }
        Ok(prepared)
    }

    fn apply(&self, batch: &[(u64, Mutation)], prepared: Prepared) -> Result<()> {
        let mut changes = Vec::new();
        let applied = {
            let mut st = self.state_mut();
            for (ty, base, copy) in prepared.copies {
                st.offer_successor(ty, base, copy);
            }
            let before = st.version_ids();
            let applied = batch.iter().try_for_each(|(seq, m)| {
                let applied = apply::apply(&mut st, *seq, m, &self.cache)?;
                self.counters
                    .appended_lines
                    .fetch_add(applied.added, Ordering::Relaxed);
                if let Some(aging) = &applied.aging {
                    let mut moved = crate::sync::lock(&self.counters.aging_moved);
                    for (step, n) in &aging.moved {
                        *moved.entry(step.clone()).or_default() += n;
                    }
                }
                changes.extend(applied.new_versions.into_iter().map(|(bucket, ty)| Change {
                    part: PartId::Bucket(bucket, ty),
                    superseded: before[bucket][ty],
                }));
                changes.extend(applied.superseded_allow.into_iter().map(|(ty, id)| Change {
                    part: PartId::Allow(ty),
                    superseded: id,
                }));
                Ok(())
            });
            for ty in prepared.appending {
                st.end_append(ty);
            }
            applied
        };
        self.changed();
        applied?;
        changes.sort_by_key(|c| c.superseded);
        changes.dedup();
        self.notify(&changes);
        for hook in crate::sync::read(&self.applied_hooks).iter() {
            hook();
        }
        Ok(())
    }

    fn abandon(&self, prepared: Prepared) {
        if prepared.appending.is_empty() {
            return;
        }
        let mut st = self.state_mut();
        for ty in prepared.appending {
            st.end_append(ty);
        }
    }
}
