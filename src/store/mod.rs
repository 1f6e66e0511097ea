//! The storage engine. It knows nothing of FUSE: it takes mutations, makes them durable in
//! the WAL (group commit), applies them to the in-memory state, commits backing files
//! atomically, ages indicators and answers reads. `crate::fs` is a thin translation on top.
//!
//! Durable state = the backing files of the last group commit (listed by the newest commit
//! record in the WAL) + the WAL records after it. See `docs/internals.md`.

pub mod aging;
pub mod apply;
pub mod checkpoint;
pub mod flush;
pub mod index;
pub mod live;
pub mod model;
pub mod mutation;
pub mod recovery;
pub mod state;
pub mod stats;
pub mod tier;
pub mod wal;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

use crate::cache::BlockCache;
use crate::clock::Clock;
use crate::config::Config;
use crate::error::{Error, IoContext, Result};
use crate::ioc::{IocType, Limits};
use live::{LiveVersion, Times};
use model::{Bucket, Policy};
use mutation::{Mutation, Op};
use state::{Applied, State};
use tier::TierVersion;
use wal::group_commit::Pipeline;

/// The data directory layout (docs/internals.md, "Data directory").
pub const SUBDIRS: [&str; 6] = ["live", "chaud", "tiede", "froid", "wal", "checkpoint"];

/// Called with each [`Change`] (see [`Store::on_change`]).
pub type ChangeHook = Box<dyn Fn(&Change) + Send + Sync>;

/// A partition got a new version: the FUSE layer drops the kernel's cached attributes of
/// the version it superseded, so a `stat` by name finds out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub bucket: Bucket,
    pub ty: IocType,
    /// The version (inode) that was current before.
    pub superseded: u64,
}

/// Counters that are not part of the durable state.
#[derive(Debug, Default)]
pub struct Counters {
    pub rejected: [AtomicU64; 9],
    pub commits: AtomicU64,
    pub appended_lines: AtomicU64,
}

#[derive(Debug, Clone, Default)]
pub struct CheckpointInfo {
    pub at: u64,
    pub upto: u64,
    pub bytes: u64,
    pub millis: u64,
}

#[derive(Debug, Clone, Default)]
pub struct CommitInfo {
    pub at: u64,
    pub upto: u64,
    pub files: usize,
    pub bytes: u64,
    pub millis: u64,
}

pub struct Store {
    pub data_dir: PathBuf,
    config: RwLock<Arc<Config>>,
    pub clock: Arc<dyn Clock>,
    state: RwLock<State>,
    pipeline: Pipeline,
    pub cache: Arc<BlockCache>,
    prefetcher: tier::prefetch::Prefetcher,
    pub counters: Counters,
    change_hooks: RwLock<Vec<ChangeHook>>,
    commit_lock: Mutex<()>,
    checkpoint_lock: Mutex<()>,
    last_commit: Mutex<Option<CommitInfo>>,
    last_checkpoint: Mutex<Option<CheckpointInfo>>,
    problems: Mutex<Vec<String>>,
    /// A write failed with ENOSPC and none has succeeded since (see `submit`).
    disk_full: AtomicBool,
    started: Instant,
    pub recovery: recovery::Report,
    /// Held (flock) for the life of the store.
    _lock: nix::fcntl::Flock<File>,
}

impl Store {
    /// Lock the data directory, recover the state (last commit + WAL replay) and get ready
    /// to take writes.
    pub fn open(config: Arc<Config>, clock: Arc<dyn Clock>) -> Result<Arc<Store>> {
        Store::open_with(config, clock, recovery::Mode::Mount)
    }

    /// Open in a given recovery mode (`Salvage` for `iocfs check --repair`).
    pub fn open_with(
        config: Arc<Config>,
        clock: Arc<dyn Clock>,
        mode: recovery::Mode,
    ) -> Result<Arc<Store>> {
        let data_dir = config.data_dir.clone();
        for sub in SUBDIRS {
            let dir = data_dir.join(sub);
            std::fs::create_dir_all(&dir).ctx(|| format!("create {}", dir.display()))?;
        }
        let lock = lock_data_dir(&data_dir)?;
        let cache = Arc::new(BlockCache::new(config.cache.size));
        let recovered = recovery::recover(&data_dir, &config, &cache, mode, &|_| {}).map_err(|e| match e {
            Error::Corruption { path, offset, what } => Error::Corruption {
                path,
                offset,
                what: format!(
                    "{what}\nthe data directory needs repair: stop here and run `iocfs check --repair {}` \
                     (it keeps a copy of anything it removes in lost+found/)",
                    data_dir.display()
                ),
            },
            other => other,
        })?;
        let wal = recovered
            .wal
            .ok_or_else(|| Error::Invalid("internal: recovery returned no WAL".into()))?;
        let pipeline = Pipeline::new(
            wal,
            config.durability.mode,
            config.durability.batch_window,
            clock.clone(),
        );
        // A cold sequential read of a tier file inflates as fast as there are cores for it.
        let inflaters = crate::cores().max(2);
        let prefetcher = tier::prefetch::Prefetcher::start(inflaters, cache.clone());
        let store = Arc::new(Store {
            data_dir,
            config: RwLock::new(config),
            clock,
            state: RwLock::new(recovered.state),
            pipeline,
            cache,
            prefetcher,
            counters: Counters::default(),
            change_hooks: RwLock::new(Vec::new()),
            commit_lock: Mutex::new(()),
            checkpoint_lock: Mutex::new(()),
            last_commit: Mutex::new(None),
            last_checkpoint: Mutex::new(None),
            problems: Mutex::new(Vec::new()),
            disk_full: AtomicBool::new(false),
            started: Instant::now(),
            recovery: recovered.report,
            _lock: lock,
        });
        if mode == recovery::Mode::Mount && !store.recovery.findings.is_empty() {
            store.set_problem(
                "tier",
                &format!(
                    "{} damaged tier blocks (reads of them fail with EIO); run `iocfs check --repair`",
                    store.recovery.findings.len()
                ),
            );
        }
        store.adopt(recovered.foreign)?;
        Ok(store)
    }

    pub fn config(&self) -> Arc<Config> {
        crate::sync::read(&self.config).clone()
    }

    /// Take a new config (SIGHUP). Settings that need a restart are left as they were by
    /// the caller; this applies cache size and batch window, others are read when used.
    pub fn set_config(&self, config: Arc<Config>) {
        self.cache.set_capacity(config.cache.size);
        self.pipeline
            .set_batch_window(config.durability.batch_window);
        *crate::sync::write(&self.config) = config;
    }

    pub fn limits(&self) -> Limits {
        let c = self.config();
        Limits {
            min_prefix_v4: c.ingest.min_prefix_v4,
            min_prefix_v6: c.ingest.min_prefix_v6,
        }
    }

    pub fn policy(&self) -> Policy {
        let r = &self.config().retention;
        Policy {
            live_to_chaud: r.live_to_chaud.as_secs(),
            chaud_to_tiede: r.chaud_to_tiede.as_secs(),
            tiede_to_froid: r.tiede_to_froid.as_secs(),
            froid_retention: r.froid_retention.as_secs(),
        }
    }

    pub(crate) fn state(&self) -> RwLockReadGuard<'_, State> {
        crate::sync::read(&self.state)
    }

    fn state_mut(&self) -> RwLockWriteGuard<'_, State> {
        crate::sync::write(&self.state)
    }

    /// Call `hook` with every new version, before the mutation that made it is
    /// acknowledged (so it must not block on the caller).
    pub fn on_change(&self, hook: ChangeHook) {
        crate::sync::write(&self.change_hooks).push(hook);
    }

    /// Sequence, make durable and apply one mutation.
    pub fn submit(&self, op: Op) -> Result<u64> {
        let result = self.pipeline.submit(op, &|batch| self.apply_batch(batch));
        // A full disk (or quota) fails writes with ENOSPC (not sticky): health says so until one of
        // them goes through again.
        match &result {
            Err(e) if matches!(e.errno(), libc::ENOSPC | libc::EDQUOT) => {
                self.disk_full.store(true, Ordering::Relaxed);
                self.set_problem("disk", &format!("writes fail: {e}"));
            }
            Ok(_) if self.disk_full.swap(false, Ordering::Relaxed) => self.clear_problem("disk"),
            _ => {}
        }
        result
    }

    fn apply_batch(&self, batch: &[(u64, Mutation)]) -> Result<()> {
        let mut changes = Vec::new();
        {
            let mut st = self.state_mut();
            let before = st.version_ids();
            for (seq, m) in batch {
                let applied: Applied = st.apply(*seq, m, &self.cache)?;
                self.counters
                    .appended_lines
                    .fetch_add(applied.added, Ordering::Relaxed);
                changes.extend(applied.new_versions.into_iter().map(|(bucket, ty)| Change {
                    bucket,
                    ty,
                    superseded: before[bucket as usize][usize::from(ty.code())],
                }));
            }
        }
        changes.sort_by_key(|c| (c.bucket, c.ty));
        changes.dedup();
        self.notify(&changes);
        Ok(())
    }

    /// Tell the hooks (the FUSE layer's kernel cache invalidation) which files have new
    /// versions.
    fn notify(&self, changes: &[Change]) {
        if changes.is_empty() {
            return;
        }
        let hooks = crate::sync::read(&self.change_hooks);
        for hook in hooks.iter() {
            changes.iter().for_each(hook);
        }
    }

    /// Append normalized lines ("v\n"…) to a live file.
    pub fn append(&self, ty: IocType, values: Vec<u8>) -> Result<u64> {
        self.submit(Op::Append { ty, values })
    }

    /// Make normalized lines the whole live set of a type.
    pub fn replace(&self, ty: IocType, values: Vec<u8>) -> Result<u64> {
        self.submit(Op::Replace { ty, values })
    }

    /// Delete indicators from any bucket; returns how many were stored.
    pub fn remove(&self, items: Vec<(IocType, Vec<u8>)>) -> Result<usize> {
        let present = {
            let st = self.state();
            items
                .iter()
                .filter(|(ty, v)| st.find(*ty, v).is_some())
                .count()
        };
        self.submit(Op::Remove { items })?;
        Ok(present)
    }

    /// One aging step now.
    pub fn age(&self) -> Result<u64> {
        self.submit(Op::Age {
            policy: self.policy(),
        })
    }

    /// fsync the WAL now (batch and periodic modes; a no-op when nothing is pending).
    pub fn sync(&self) -> Result<()> {
        self.pipeline.sync()
    }

    pub fn live(&self, ty: IocType) -> Arc<LiveVersion> {
        self.state().live(ty).version.clone()
    }

    /// Give `ty` a new current version with the same bytes when passthrough readers hold
    /// the current one: the kernel refuses any other kind of open of an inode that is open
    /// for passthrough, so a writer must open a fresh one. True if it rotated.
    pub fn rotate_live_if_held(&self, ty: IocType) -> Result<bool> {
        let (rotated, superseded) = {
            let mut st = self.state_mut();
            let superseded = st.live(ty).version.id;
            let id = st.new_id();
            (
                st.live_mut(ty).rotate_if_held(id, self.clock.now())?,
                superseded,
            )
        };
        if rotated {
            self.notify(&[Change {
                bucket: Bucket::Live,
                ty,
                superseded,
            }]);
        }
        Ok(rotated)
    }

    /// Count a FUSE-passthrough reader on `v` if it is still the current version (under
    /// the state lock, so no append is halfway through it). From then on appends go to a
    /// new version until `passthrough_closed`.
    pub fn pin_for_passthrough(&self, v: &LiveVersion) -> bool {
        let st = self.state();
        let current = st.live(v.ty).version.id == v.id;
        if current {
            v.passthrough_opened();
        }
        current
    }

    pub fn tier(&self, bucket: Bucket, ty: IocType) -> Arc<TierVersion> {
        self.state().tier(bucket, ty).clone()
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
                    self.set_problem(
                        &format!("tier {}/{}.txt", v.bucket, v.ty),
                        &format!("{e}; stop iocfs and run `iocfs check --repair`"),
                    );
                }
                return Err(e);
            }
        };
        if sequential {
            self.prefetcher.ahead(v, last, &self.cache);
        }
        Ok(bytes)
    }

    /// Bucket and (first_seen, last_seen) of a stored indicator.
    pub fn find(&self, ty: IocType, value: &[u8]) -> Option<(Bucket, Times)> {
        self.state().find(ty, value)
    }

    pub fn count_rejected(&self, ty: IocType, n: u64) {
        self.counters.rejected[usize::from(ty.code())].fetch_add(n, Ordering::Relaxed);
    }

    /// Group-commit the backing files that lag the state (see `flush`).
    pub fn commit(&self) -> Result<Option<CommitInfo>> {
        let _one_at_a_time = crate::sync::lock(&self.commit_lock);
        let result = flush::commit(self);
        match &result {
            Ok(Some(info)) => {
                self.counters.commits.fetch_add(1, Ordering::Relaxed);
                *crate::sync::lock(&self.last_commit) = Some(info.clone());
                self.clear_problem("commit");
            }
            Ok(None) => {}
            Err(e) => self.set_problem("commit", &format!("commit failed: {e}")),
        }
        result
    }

    /// Commit, then snapshot the index of every committed tier partition so the next start
    /// can skip rescanning those files.
    pub fn checkpoint(&self) -> Result<CheckpointInfo> {
        let _one_at_a_time = crate::sync::lock(&self.checkpoint_lock);
        self.commit()?;
        let started = Instant::now();
        let (upto, bytes) = checkpoint::encode(&self.state());
        let result = checkpoint::write(&self.data_dir.join("checkpoint"), upto, &bytes);
        match result {
            Ok(path) => {
                let info = CheckpointInfo {
                    at: self.clock.now(),
                    upto,
                    bytes: bytes.len() as u64,
                    millis: started.elapsed().as_millis() as u64,
                };
                log::info!(
                    "checkpoint {}: {} bytes in {} ms",
                    path.display(),
                    info.bytes,
                    info.millis
                );
                *crate::sync::lock(&self.last_checkpoint) = Some(info.clone());
                self.clear_problem("checkpoint");
                Ok(info)
            }
            Err(e) => {
                self.set_problem("checkpoint", &format!("checkpoint failed: {e}"));
                Err(e)
            }
        }
    }

    pub fn last_checkpoint(&self) -> Option<CheckpointInfo> {
        crate::sync::lock(&self.last_checkpoint).clone()
    }

    pub fn last_commit(&self) -> Option<CommitInfo> {
        crate::sync::lock(&self.last_commit).clone()
    }

    /// Have the next commit rewrite every backing file (repair).
    pub fn mark_all_dirty(&self) {
        self.state_mut().mark_all();
    }

    /// Refuse user writes from now on (EROFS); commits still run.
    pub fn close_writes(&self) {
        self.pipeline.close();
    }

    /// Stop taking writes and commit everything (clean shutdown). The change hooks are
    /// dropped (they hold the FUSE session's notifier).
    pub fn shutdown(&self) -> Result<()> {
        self.close_writes();
        crate::sync::write(&self.change_hooks).clear();
        self.commit()?;
        if let Err(e) = self.pipeline.trim_wal() {
            log::debug!("trim the WAL's zero-filled end: {e}");
        }
        Ok(())
    }

    /// One line per problem; empty when healthy.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(why) = self.pipeline.fatal() {
            out.push(format!("wal: {why}; restart iocfs to recover"));
        }
        out.extend(crate::sync::lock(&self.problems).iter().cloned());
        out
    }

    fn set_problem(&self, tag: &str, message: &str) {
        let mut p = crate::sync::lock(&self.problems);
        p.retain(|m| !m.starts_with(&format!("{tag}:")));
        p.push(format!("{tag}: {message}"));
    }

    fn clear_problem(&self, tag: &str) {
        let mut p = crate::sync::lock(&self.problems);
        p.retain(|m| !m.starts_with(&format!("{tag}:")));
    }

    pub fn uptime_secs(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    pub fn wal_size(&self) -> (u64, usize) {
        self.pipeline.wal_size()
    }

    pub fn next_seq(&self) -> u64 {
        self.pipeline.next_seq()
    }

    /// Journal files found in the data dir that no commit wrote (plain gzip tier files, text
    /// dropped into live/) as imports, so the next commit rewrites them in iocfs's format.
    fn adopt(&self, foreign: Vec<recovery::Foreign>) -> Result<()> {
        for f in foreign {
            log::info!("adopting {} into {}/{}", f.path.display(), f.bucket, f.ty);
            for chunk in f.chunks {
                self.submit(Op::Import {
                    bucket: f.bucket,
                    ty: f.ty,
                    values: chunk.values,
                    times: chunk.times,
                })?;
            }
            // Even if nothing was new, the file must be rewritten in iocfs's format.
            let mut st = self.state_mut();
            let seq = st.applied_seq;
            st.mark(f.bucket, f.ty, seq);
        }
        Ok(())
    }
}

/// Take `DATA/LOCK` with flock so a second daemon on the same data refuses to start.
fn lock_data_dir(data_dir: &Path) -> Result<nix::fcntl::Flock<File>> {
    use std::io::Write;
    let path = data_dir.join("LOCK");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .ctx(|| format!("open {}", path.display()))?;
    let mut locked =
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(locked) => locked,
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                return Err(Error::Locked(format!(
                    "data directory {} is in use by another iocfs{}; stop it first",
                    data_dir.display(),
                    holder
                        .trim()
                        .parse::<u32>()
                        .map(|p| format!(" (pid {p})"))
                        .unwrap_or_default()
                )));
            }
            Err((_, errno)) => {
                return Err(Error::io(format!("flock {}", path.display()), errno.into()))
            }
        };
    locked
        .set_len(0)
        .and_then(|()| writeln!(*locked, "{}", std::process::id()))
        .ctx(|| format!("write {}", path.display()))?;
    Ok(locked)
}
#[cfg(test)]
mod tests;
