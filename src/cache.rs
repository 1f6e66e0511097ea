//! Byte-bounded LRU cache of decompressed tier blocks.
//!
//! Ownership: the cache holds `Arc`s of immutable block contents keyed by (tier file id,
//! member offset). A tier file's id is never reused, so an entry can't be served for another
//! version's bytes; entries of files that are gone simply age out. Readers clone the `Arc`
//! and copy out of it without holding the cache lock.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use lru::LruCache;

pub type BlockKey = (u64, u64);

#[derive(Debug)]
pub struct BlockCache {
    inner: Mutex<Inner>,
    /// Signalled when a block being loaded lands (or its load failed).
    loaded: Condvar,
    hits: AtomicU64,
    misses: AtomicU64,
}

#[derive(Debug)]
struct Inner {
    lru: LruCache<BlockKey, Arc<Vec<u8>>>,
    bytes: u64,
    capacity: u64,
    /// Blocks some thread is inflating right now: others wait for it instead of doing the
    /// same work (a reader catching up with read-ahead).
    loading: HashSet<BlockKey>,
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
                loading: HashSet::new(),
            }),
            loaded: Condvar::new(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        crate::sync::lock(&self.inner)
    }

    #[cfg(test)]
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

    /// The cached block if there is one, without counting it or making it more recent
    /// (a bulk scan such as a view build must not evict what readers use).
    pub fn peek(&self, key: BlockKey) -> Option<Arc<Vec<u8>>> {
        self.lock().lru.peek(&key).cloned()
    }

    /// Look without counting a hit or miss (read-ahead uses this).
    pub fn contains(&self, key: BlockKey) -> bool {
        self.lock().lru.contains(&key)
    }

    /// The cached block, or `load` it — once: a thread asking for a block another thread is
    /// loading waits for that load. `counted`: whether this counts as a hit or miss.
    pub fn get_or_load<E>(
        &self,
        key: BlockKey,
        counted: bool,
        load: impl FnOnce() -> Result<Vec<u8>, E>,
    ) -> Result<Arc<Vec<u8>>, E> {
        let mut inner = self.lock();
        loop {
            if let Some(hit) = inner.lru.get(&key).cloned() {
                if counted {
                    self.hits.fetch_add(1, Ordering::Relaxed);
                }
                return Ok(hit);
            }
            if !inner.loading.contains(&key) {
                break;
            }
            inner = crate::sync::wait(&self.loaded, inner);
        }
        inner.loading.insert(key);
        drop(inner);
        if counted {
            self.misses.fetch_add(1, Ordering::Relaxed);
        }
        let loaded = load().map(Arc::new);
        let mut inner = self.lock();
        inner.loading.remove(&key);
        if let Ok(block) = &loaded {
            inner.put(key, block.clone());
        }
        drop(inner);
        self.loaded.notify_all();
        loaded
    }

    pub fn insert(&self, key: BlockKey, block: Arc<Vec<u8>>) {
        self.lock().put(key, block);
    }

    /// Change the bound (config reload); evicts down to it at once.
    pub fn set_capacity(&self, capacity: u64) {
        let mut inner = self.lock();
        inner.capacity = capacity;
        inner.evict();
    }

    /// Hits and misses so far, without the cache lock.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
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
    fn put(&mut self, key: BlockKey, block: Arc<Vec<u8>>) {
        let size = block.len() as u64;
        if size > self.capacity {
            return;
        }
        if let Some(old) = self.lru.put(key, block) {
            self.bytes -= old.len() as u64;
        }
        self.bytes += size;
        self.evict();
    }

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
