//! iocfs: a FUSE filesystem daemon for threat-intel indicators of compromise.
//!
//! `store` is the engine (no FUSE); `fs` translates it to FUSE; `daemon` runs the threads.

pub mod atomic;
pub mod bucket;
pub mod cache;
pub mod cidr;
pub mod cli;
pub mod clock;
pub mod config;
pub mod crash;
pub mod daemon;
pub mod disk;
pub mod domainset;
pub mod error;
pub mod failpoint;
pub mod fs;
pub mod ingest;
pub mod ioc;
pub mod logging;
pub mod lograte;
pub mod lookup;
pub mod metrics;
pub mod reserved;
pub mod secure;
pub mod splitmix;
pub mod store;
pub mod sync;
pub mod views;

/// Cores to spread work over (normalizing a large write, inflating tier blocks ahead of a
/// reader, selecting and rendering views), at most 8. Asked once: the answer reads cgroup files.
pub fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get().min(8)))
}
