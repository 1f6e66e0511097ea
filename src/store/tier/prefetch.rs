//! Read-ahead for sequential readers of tier files: while the reader copies one block,
//! worker threads inflate the next ones into the block cache, so a cold `cat` of a tier file
//! uses every core instead of inflating one block at a time on the reader's thread.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use crate::cache::BlockCache;
use crate::store::tier::{BlockData, TierVersion};

/// Blocks to keep inflated ahead of a sequential reader.
pub const WINDOW: usize = 16;

struct Job {
    version: Arc<TierVersion>,
    pos: usize,
}

pub struct Prefetcher {
    tx: Mutex<Option<SyncSender<Job>>>,
}

impl Prefetcher {
    pub fn start(workers: usize, cache: Arc<BlockCache>) -> Prefetcher {
        // A bounded queue: when the workers are behind, read-ahead is skipped, not queued.
        let (tx, rx) = sync_channel::<Job>(workers * WINDOW);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..workers {
            let (rx, cache) = (rx.clone(), cache.clone());
            let _ = std::thread::Builder::new()
                .name(format!("iocfs-readahead-{i}"))
                .spawn(move || work(&rx, &cache));
        }
        Prefetcher {
            tx: Mutex::new(Some(tx)),
        }
    }

    /// Inflate the blocks after `pos` that are not cached yet.
    pub fn ahead(&self, version: &Arc<TierVersion>, pos: usize, cache: &BlockCache) {
        let guard = crate::sync::lock(&self.tx);
        let Some(tx) = guard.as_ref() else { return };
        for next in pos + 1..(pos + 1 + WINDOW).min(version.blocks().len()) {
            let Some(block) = version.blocks().get(next) else {
                break;
            };
            let BlockData::Stored { file, offset, .. } = &block.data else {
                continue;
            };
            if cache.contains((file.id, *offset)) {
                continue;
            }
            match tx.try_send(Job {
                version: version.clone(),
                pos: next,
            }) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => break,
            }
        }
    }

    /// Stop the workers (they finish the jobs already queued).
    pub fn stop(&self) {
        crate::sync::lock(&self.tx).take();
    }
}

fn work(rx: &Mutex<Receiver<Job>>, cache: &BlockCache) {
    loop {
        let job = {
            let rx = crate::sync::lock(rx);
            match rx.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        if let Some(block) = job.version.blocks().get(job.pos) {
            if let BlockData::Stored { file, offset, .. } = &block.data {
                if cache.contains((file.id, *offset)) {
                    continue;
                }
            }
            if let Err(e) = block.raw_uncounted(cache) {
                log::debug!(
                    "read-ahead of {}/{} block {}: {e}",
                    job.version.tier,
                    job.version.ty,
                    block.id
                );
            }
        }
    }
}
