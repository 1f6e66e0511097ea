//! iocfs: a FUSE filesystem daemon for threat-intel indicators of compromise.
//!
//! `store` is the engine (no FUSE); `fs` translates it to FUSE; `daemon` runs the threads.

pub mod atomic;
pub mod cache;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod error;
pub mod failpoint;
pub mod fs;
pub mod import;
pub mod ingest;
pub mod ioc;
pub mod report;
pub mod store;
