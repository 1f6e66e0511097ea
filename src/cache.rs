//! Byte-bounded LRU cache of decompressed tier blocks.
//!
//! Ownership: the cache holds `Arc`s of immutable block contents keyed by (tier file id,
//! member offset). A tier file's id is never reused, so an entry can't be served for another
//! version's bytes; entries of files that are gone simply age out. Readers clone the `Arc`
//! and copy out of it without holding the cache lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use lru::LruCache;

pub type BlockKey = (u64, u64);

#[derive(Debug)]
pub struct BlockCache {
    inner: Mutex<Inner>,
    hits: AtomicU64,
    misses: AtomicU64,
}

#[derive(Debug)]
struct Inner {
    lru: LruCache<BlockKey, Arc<Vec<u8>>>,
    bytes: u64,
    capacity: u64,
}

/// A consistent reading of the counters for stats.json.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub bytes: u64,
    pub capacity: u64,
    pub entries: u64,
}

impl BlockCache {
    pub fn new(capacity: u64) -> BlockCache {
        BlockCache {
            inner: Mutex::new(Inner {
                lru: LruCache::unbounded(),
                bytes: 0,
                capacity,
            }),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, key: BlockKey) -> Option<Arc<Vec<u8>>> {
        let found = self.lock().lru.get(&key).cloned();
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Look without counting a hit or miss (read-ahead uses this).
    pub fn contains(&self, key: BlockKey) -> bool {
        self.lock().lru.contains(&key)
    }

    /// Get without counting a hit or miss (read-ahead uses this).
    pub fn peek(&self, key: BlockKey) -> Option<Arc<Vec<u8>>> {
        self.lock().lru.get(&key).cloned()
    }

    pub fn insert(&self, key: BlockKey, block: Arc<Vec<u8>>) {
        let mut inner = self.lock();
        let size = block.len() as u64;
        if size > inner.capacity {
            return;
        }
        if let Some(old) = inner.lru.put(key, block) {
            inner.bytes -= old.len() as u64;
        }
        inner.bytes += size;
        inner.evict();
    }

    /// Change the bound (config reload); evicts down to it at once.
    pub fn set_capacity(&self, capacity: u64) {
        let mut inner = self.lock();
        inner.capacity = capacity;
        inner.evict();
    }

    pub fn stats(&self) -> CacheStats {
        let inner = self.lock();
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            bytes: inner.bytes,
            capacity: inner.capacity,
            entries: inner.lru.len() as u64,
        }
    }
}

impl Inner {
    fn evict(&mut self) {
        while self.bytes > self.capacity {
            match self.lru.pop_lru() {
                Some((_, old)) => self.bytes -= old.len() as u64,
                None => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_within_its_byte_bound_and_evicts_least_recent() {
        let c = BlockCache::new(250);
        for i in 0..10u64 {
            c.insert((1, i), Arc::new(vec![0; 100]));
            assert!(c.stats().bytes <= 250);
        }
        assert!(c.get((1, 9)).is_some());
        assert!(c.get((1, 8)).is_some());
        assert!(c.get((1, 0)).is_none());
        let s = c.stats();
        assert_eq!((s.hits, s.misses, s.entries, s.bytes), (2, 1, 2, 200));
        c.set_capacity(100);
        assert_eq!(c.stats().bytes, 100);
        assert!(c.get((1, 9)).is_none(), "least recently used went first");
    }

    #[test]
    fn oversized_blocks_are_not_cached() {
        let c = BlockCache::new(10);
        c.insert((1, 1), Arc::new(vec![0; 11]));
        assert_eq!(c.stats().entries, 0);
    }
}
