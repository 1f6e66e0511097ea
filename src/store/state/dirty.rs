//! Which backing files lag the state: per partition, a count of changes and the count the
//! backing file reflects. A commit snapshots the count with the content it writes, and
//! hands it back once the file is in place, so changes made meanwhile keep it lagging.

use crate::ioc::IocType;
use crate::store::model::{Bucket, PartId};
use crate::store::partition::{ByBucket, ByType};

#[derive(Default)]
pub struct ChangeCounts {
    changes: ByBucket<ByType<u64>>,
    committed: ByBucket<ByType<u64>>,
    allow: ByType<(u64, u64)>,
    /// Changes of the sources of each type's indicators, and the commit count (see
    /// `commit_count`) its provenance file reflects.
    sources: ByType<(u64, u64)>,
    /// Writes by `local` (to live/), whose times the provenance file holds too; not a change
    /// of anyone's sources (views and listings ignore it).
    local_writes: ByType<u64>,
    /// Whether local's writes alone make a provenance file lag: only for the final commit
    /// of a clean stop. A provenance file can be large (every indicator a feed lists) and
    /// live/ is written all the time: rewriting it at every commit for local's last-write
    /// time would cost more than that time is worth. After a crash, replayed writes set it
    /// again; only writes committed since the last provenance write are forgotten.
    persist_local_writes: bool,
}

impl ChangeCounts {
    pub fn mark(&mut self, bucket: Bucket, ty: IocType) {
        self.changes[bucket][ty] += 1;
    }

    /// The change count of a partition, to hand back to `committed_to` after a commit.
    pub fn count(&self, bucket: Bucket, ty: IocType) -> u64 {
        self.changes[bucket][ty]
    }

    /// A commit wrote the partition as it was at change count `count`.
    pub fn committed_to(&mut self, bucket: Bucket, ty: IocType, count: u64) {
        self.committed[bucket][ty] = count;
    }

    pub fn is_dirty(&self, bucket: Bucket, ty: IocType) -> bool {
        self.changes[bucket][ty] != self.committed[bucket][ty]
    }

    /// Partitions whose backing file lags the state.
    pub fn dirty(&self) -> Vec<(Bucket, IocType)> {
        Bucket::ALL
            .into_iter()
            .flat_map(|b| IocType::ALL.into_iter().map(move |ty| (b, ty)))
            .filter(|&(b, ty)| self.is_dirty(b, ty))
            .collect()
    }

    /// Every partition whose backing file lags, allowlists included.
    pub fn dirty_parts(&self) -> Vec<PartId> {
        let buckets = self
            .dirty()
            .into_iter()
            .map(|(b, ty)| PartId::Bucket(b, ty));
        let allow = IocType::ALL
            .into_iter()
            .filter(|&ty| self.allow[ty].0 != self.allow[ty].1)
            .map(PartId::Allow);
        let sources = IocType::ALL
            .into_iter()
            .filter(|&ty| self.commit_count(PartId::Sources(ty)) != self.sources[ty].1)
            .map(PartId::Sources);
        buckets.chain(allow).chain(sources).collect()
    }

    /// Make a partition's backing file lag (see `mark`).
    pub fn mark_part(&mut self, part: PartId) {
        match part {
            PartId::Bucket(b, ty) => self.mark(b, ty),
            PartId::Allow(ty) => self.mark_allow(ty),
            PartId::Sources(ty) => self.mark_sources(ty),
        }
    }

    pub fn mark_sources(&mut self, ty: IocType) {
        self.sources[ty].0 += 1;
    }

    pub fn mark_local_write(&mut self, ty: IocType) {
        self.local_writes[ty] += 1;
    }

    /// From now on local's writes make provenance files lag (the final commit).
    pub fn persist_local_writes(&mut self) {
        self.persist_local_writes = true;
    }

    pub fn mark_allow(&mut self, ty: IocType) {
        self.allow[ty].0 += 1;
    }

    /// The change count of a partition (see `count`).
    pub fn part_count(&self, part: PartId) -> u64 {
        match part {
            PartId::Bucket(b, ty) => self.count(b, ty),
            PartId::Allow(ty) => self.allow[ty].0,
            PartId::Sources(ty) => self.sources[ty].0,
        }
    }

    /// The count a commit snapshots with `part` and hands back to `part_committed_to`: the
    /// change count, plus local's writes for a provenance file.
    pub fn commit_count(&self, part: PartId) -> u64 {
        match part {
            PartId::Sources(ty) if self.persist_local_writes => {
                self.sources[ty].0 + self.local_writes[ty]
            }
            part => self.part_count(part),
        }
    }

    /// A commit wrote `part` as it was at commit count `count` (see `commit_count`).
    pub fn part_committed_to(&mut self, part: PartId, count: u64) {
        match part {
            PartId::Bucket(b, ty) => self.committed_to(b, ty, count),
            PartId::Allow(ty) => self.allow[ty].1 = count,
            PartId::Sources(ty) => self.sources[ty].1 = count,
        }
    }

    /// Make every backing file lag, so the next commit rewrites them all (repair); the
    /// provenance files are the caller's (they exist only once sources are used).
    pub fn mark_all(&mut self) {
        for b in Bucket::ALL {
            for ty in IocType::ALL {
                self.mark(b, ty);
            }
        }
        for ty in IocType::ALL {
            self.mark_allow(ty);
        }
    }
}
