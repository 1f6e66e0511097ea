//! Which backing files lag the state: per partition, a count of changes and the count the
//! backing file reflects. A commit snapshots the count with the content it writes, and
//! hands it back once the file is in place, so changes made meanwhile keep it lagging.

use crate::ioc::IocType;
use crate::store::model::Bucket;
use crate::store::partition::{ByBucket, ByType};

#[derive(Default)]
pub struct ChangeCounts {
    changes: ByBucket<ByType<u64>>,
    committed: ByBucket<ByType<u64>>,
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

    /// Make every backing file lag, so the next commit rewrites them all (repair).
    pub fn mark_all(&mut self) {
        for b in Bucket::ALL {
            for ty in IocType::ALL {
                self.mark(b, ty);
            }
        }
    }
}
