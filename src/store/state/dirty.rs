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
    sources: ByType<(u64, u64)>,
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
            .filter(|&ty| self.sources[ty].0 != self.sources[ty].1)
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

    /// A commit wrote `part` as it was at change count `count`.
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
