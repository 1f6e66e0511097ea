//! The read side of the store: current versions, reads of tier versions, finding one
//! indicator, and consistent snapshots of whole partitions (for view builds).

use std::sync::Arc;

use super::health::{Kind, Problem};
use super::live::{LiveVersion, Times};
use super::model::{Bucket, Key, KeyMap, PartId, SourceId, Target, Tier};
use super::state::State;
use super::tier::inflated::InflatedTier;
use super::tier::TierVersion;
use super::Store;
use crate::error::{Error, Result};
use crate::ioc::IocType;

/// Who lists each indicator of one type, readable without the state lock.
pub struct ProvenanceSnapshot {
    seed: u64,
    /// The indicators whose set is not `{local}`.
    sets: KeyMap<u64>,
    /// Every source (`local` too) by name.
    names: std::collections::HashMap<String, SourceId>,
}

impl ProvenanceSnapshot {
    /// The set of sources `names` stand for (undeclared names: none).
    pub fn mask(&self, names: &[String]) -> u64 {
        names
            .iter()
            .filter_map(|n| self.names.get(n))
            .fold(0, |m, &id| m | super::state::bit(id))
    }

    /// The sources of a stored value of `ty`.
    pub fn sources_of(&self, ty: IocType, value: &[u8]) -> u64 {
        self.sets
            .get(&Key::of(self.seed, ty, value))
            .copied()
            .unwrap_or(super::state::LOCAL_SET)
    }
}

/// What [`Store::pin_for_passthrough`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Pin {
    Pinned,
    /// Superseded, being appended to, or copies of its type are rationed: serve it plainly.
    Refused,
    /// An open served by the daemon may still be on its way to the kernel: pinning now
    /// could fail it. A fresh copy can be pinned (`Store::rotate_live_for_readers`).
    PlainOpenSettling,
}

/// One partition as it was at one instant, readable without the state lock.
pub enum PartitionSnapshot {
    /// A live version and the times of its first `times.len()` lines (`len` bytes).
    Live {
        version: Arc<LiveVersion>,
        len: u64,
        times: Vec<Times>,
    },
    Tier(Arc<TierVersion>),
}

impl Store {
    /// The current version of a writable file: `live/<type>.txt`, `allow/<type>.txt` or
    /// `sources/<name>/<type>.txt`.
    pub fn current(&self, (target, ty): (Target, IocType)) -> Arc<LiveVersion> {
        if let Target::Source(id) = target {
            return self.source_version(id, ty);
        }
        let st = self.state();
        match target {
            Target::Allow => st.allow(ty).version().clone(),
            _ => st.live(ty).version.clone(),
        }
    }

    /// The current allowlist version of `ty`.
    pub fn allow_version(&self, ty: IocType) -> Arc<LiveVersion> {
        self.state().allow(ty).version().clone()
    }

    /// The allowlist of `ty` as it is now, and its change count (see `change_count`).
    pub fn allow_snapshot(&self, ty: IocType) -> (Arc<LiveVersion>, u64) {
        let st = self.state();
        (
            st.allow(ty).version().clone(),
            st.changes().part_count(PartId::Allow(ty)),
        )
    }

    /// How many times a partition (a provenance file's content included) changed since
    /// the store opened.
    pub fn change_count_of(&self, part: PartId) -> u64 {
        self.state().changes().part_count(part)
    }

    /// How many times the allowlist of `ty` changed since the store opened.
    pub fn allow_change_count(&self, ty: IocType) -> u64 {
        self.state().changes().part_count(PartId::Allow(ty))
    }

    /// When an exact value was allowed (first and last written), if it is.
    pub fn allowed(&self, ty: IocType, value: &[u8]) -> Option<Times> {
        let st = self.state();
        st.allow(ty).times(&st.key(ty, value))
    }

    pub fn live(&self, ty: IocType) -> Arc<LiveVersion> {
        self.state().live(ty).version.clone()
    }

    /// Count a FUSE-passthrough reader on `v` if it is still the current version (under the
    /// state lock, so no append is halfway through it). From then on appends go to a new
    /// version until the last `passthrough_closed`.
    pub fn pin_for_passthrough(&self, v: &LiveVersion) -> Pin {
        let st = self.state();
        // Not while a batch that appends to it is between its prepare and its apply.
        if st.live(v.ty).version.id != v.id || !st.may_pin(v.ty) {
            return Pin::Refused;
        }
        if v.pin() {
            Pin::Pinned
        } else {
            Pin::PlainOpenSettling
        }
    }

    pub fn tier(&self, tier: Tier, ty: IocType) -> Arc<TierVersion> {
        self.state().tier(tier, ty).clone()
    }

    /// Read from a tier version; `sequential` readers get the next blocks inflated ahead.
    pub fn read_tier(
        &self,
        v: &Arc<TierVersion>,
        offset: u64,
        size: usize,
        sequential: bool,
    ) -> Result<Vec<u8>> {
        let (bytes, last) = match v.read_blocks(offset, size, &self.cache) {
            Ok(read) => read,
            Err(e) => {
                // Damage found at read time (checkpointed blocks are inflated lazily) is a
                // problem of the data dir, not of one read: health reports it until restart.
                if matches!(e, Error::Corruption { .. }) {
                    self.health.set(Problem::about(
                        Kind::Tier,
                        format!("{}/{}", v.tier, v.ty.file_name()),
                        format!("{e}; stop iocfs and run `iocfs check --repair`"),
                    ));
                }
                return Err(e);
            }
        };
        if sequential {
            self.prefetcher.ahead(v, last, &self.cache);
        }
        Ok(bytes)
    }

    /// The whole of a tier version, inflated into a file for the kernel to read (FUSE
    /// passthrough): kept from an earlier open, or made now. `Ok(None)`: read it from the
    /// blocks (see [`InflatedCopies::get_or_make`](super::tier::inflated::InflatedCopies)).
    pub fn inflated_tier(&self, v: &Arc<TierVersion>) -> Result<Option<Arc<InflatedTier>>> {
        self.inflated.get_or_make(v, &self.cache)
    }

    /// Inflate `next`, in order, for passthrough readers before anyone opens them (a reader
    /// walking the tier files will); see
    /// [`InflatedCopies::make_ahead`](super::tier::inflated::InflatedCopies::make_ahead).
    pub fn inflate_ahead(&self, next: Vec<Arc<TierVersion>>) {
        self.inflate_ahead.ask(next);
    }

    /// What inflating ahead of opens did.
    pub fn inflated_ahead(&self) -> &crate::store::tier::inflated::AheadCounts {
        self.inflated.ahead_counts()
    }

    /// Bytes of tier versions inflated for passthrough readers.
    pub fn inflated_bytes(&self) -> u64 {
        self.inflated.bytes()
    }

    /// Drop the inflated tier copies nobody reads (no more are made).
    pub fn drop_inflated(&self) {
        self.inflated.drop_unheld();
    }

    /// Bucket and (first_seen, last_seen) of a stored indicator.
    pub fn find(&self, ty: IocType, value: &[u8]) -> Option<(Bucket, Times)> {
        self.state().find(ty, value)
    }

    /// [`find`](Self::find) for several values of one type, under one lock.
    pub fn find_each<S: AsRef<[u8]>>(
        &self,
        ty: IocType,
        values: &[S],
    ) -> Vec<Option<(Bucket, Times)>> {
        let st = self.state();
        // Each probe is a cache miss in a large index: fetch them all at once.
        let keys: Vec<_> = values.iter().map(|v| st.key(ty, v.as_ref())).collect();
        keys.iter().for_each(|k| st.prefetch(k));
        keys.iter()
            .map(|k| {
                let found = st.locate(ty, k).ok().flatten()?;
                Some((found.bucket(), found.times()))
            })
            .collect()
    }

    /// Lines in the allowlist of `ty`.
    pub fn allow_lines(&self, ty: IocType) -> usize {
        self.state().allow(ty).lines()
    }

    /// Which of `values` the allowlist of `ty` holds as is, under one lock.
    pub fn allowed_each<S: AsRef<[u8]>>(&self, ty: IocType, values: &[S]) -> Vec<bool> {
        let st = self.state();
        let allow = st.allow(ty);
        if allow.lines() == 0 {
            return vec![false; values.len()];
        }
        values
            .iter()
            .map(|v| allow.contains(&st.key(ty, v.as_ref())))
            .collect()
    }

    /// A consistent copy of one partition: the state lock is held only to clone the version
    /// (and, for live, its times), never while values are read.
    pub fn snapshot(&self, bucket: Bucket, ty: IocType) -> PartitionSnapshot {
        snapshot_of(&self.state(), bucket, ty)
    }

    /// Snapshots of the partitions of `ty` in `buckets`, taken at one instant (an indicator
    /// moving between buckets is in exactly one of them), with each one's change count.
    pub fn snapshot_type(
        &self,
        buckets: &[Bucket],
        ty: IocType,
    ) -> (Vec<PartitionSnapshot>, Vec<u64>) {
        let st = self.state();
        buckets
            .iter()
            .map(|&b| (snapshot_of(&st, b, ty), st.changes().count(b, ty)))
            .unzip()
    }

    /// The provenance of `ty` as it is now (for a view that selects by source), with its
    /// change count. Taken with the state lock held like `snapshot_type`: call it right
    /// after, and a change between them moves the count, so the view is built again.
    pub fn provenance_snapshot(&self, ty: IocType) -> (ProvenanceSnapshot, u64) {
        let st = self.state();
        let sets = st.non_local(ty).into_iter().collect();
        let names = st
            .provenance()
            .sources()
            .map(|(id, i)| (i.name.clone(), id))
            .collect();
        (
            ProvenanceSnapshot {
                seed: st.seed(),
                sets,
                names,
            },
            st.changes().part_count(PartId::Sources(ty)),
        )
    }

    /// The manifest of the last commit, when the state is exactly what that commit wrote
    /// (no partition lags its backing file): what a derived output built now reflects.
    pub fn settled_manifest(&self) -> Option<super::manifest::Manifest> {
        let st = self.state();
        st.changes()
            .dirty_parts()
            .is_empty()
            .then(|| st.manifest().clone())
    }

    /// How many times a partition changed since the store opened: a derived output (a view)
    /// built from it is stale once this moves.
    pub fn change_count(&self, bucket: Bucket, ty: IocType) -> u64 {
        self.state().changes().count(bucket, ty)
    }
}

fn snapshot_of(st: &State, bucket: Bucket, ty: IocType) -> PartitionSnapshot {
    match bucket.tier() {
        None => {
            let set = st.live(ty);
            PartitionSnapshot::Live {
                version: set.version.clone(),
                len: set.version.len(),
                times: set.times_in_order(),
            }
        }
        Some(tier) => PartitionSnapshot::Tier(st.tier(tier, ty).clone()),
    }
}
