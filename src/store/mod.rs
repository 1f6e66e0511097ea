//! The storage engine. It knows nothing of FUSE: it takes mutations, makes them durable in
//! the WAL (group commit), applies them to the in-memory state, flushes backing files
//! atomically, ages indicators and answers reads. `crate::fs` is a thin translation on top.
//!
//! Durable state = the backing files of the last flush (listed by the newest commit record
//! in the WAL) + the WAL records after it. See docs/internals.md.
//!
//! [`Store`] is a facade: opening a data dir is `open`, the problems it reports are
//! `health`, commits and checkpoints are `flush`, the state and its invariant are `state`,
//! and what a mutation does to it is `apply`.

pub mod apply;
pub mod backup;
mod batch;
pub mod checkpoint;
mod codec;
pub mod flush;
pub mod health;
pub mod index;
pub mod live;
pub mod manifest;
pub mod model;
pub mod mutation;
mod open;
pub mod partition;
pub mod provenance_file;
pub mod read;
pub mod recovery;
pub mod sources;
pub mod staged;
pub mod state;
pub mod stats;
pub mod tier;
pub mod wal;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use crate::cache::BlockCache;
use crate::clock::Clock;
use crate::config::Config;
use crate::disk::Disk;
use crate::error::{Error, Result};
use crate::ioc::{Invalid, IocType, Limits};
use crate::sync;
pub use flush::{CheckpointInfo, CommitInfo};
use flush::{Engine, Flusher};
use health::{Health, Kind, Problem};
pub use model::PartId;
use model::{Bucket, Policy, Target};
use mutation::Op;
pub use open::DataDirLock;
use partition::ByType;
use state::State;
use wal::group_commit::Pipeline;

/// The data directory layout (docs/internals.md, "Data directory").
pub const SUBDIRS: [&str; 8] = [
    "live",
    "chaud",
    "tiede",
    "froid",
    "allow",
    "sources",
    "wal",
    "checkpoint",
];

/// Called with each [`Change`] (see [`Store::on_change`]).
pub type ChangeHook = Box<dyn Fn(&Change) + Send + Sync>;
/// Called after each applied batch (see [`Store::on_applied`]).
pub type AppliedHook = Box<dyn Fn() + Send + Sync>;

/// A partition got a new version: the FUSE layer drops the kernel's cached attributes of
/// the version it superseded, so a `stat` by name finds out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub part: PartId,
    /// The version (inode) that was current before.
    pub superseded: u64,
}

/// Counters that are not part of the durable state.
#[derive(Debug)]
pub struct Counters {
    pub rejected: ByType<AtomicU64>,
    /// Rejected lines written to each source's files (`local`: live/).
    pub rejected_by_source: [AtomicU64; 64],
    /// The same by reason: positions in [`crate::ioc::REASONS`].
    pub rejected_by_reason: ByType<[AtomicU64; crate::ioc::REASONS.len()]>,
    pub appended_lines: AtomicU64,
    /// Indicators aging moved since the store opened (recovery's replay not counted), by
    /// "from->to" ("froid->gone": dropped).
    pub aging_moved: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            rejected: ByType::default(),
            rejected_by_source: std::array::from_fn(|_| AtomicU64::new(0)),
            rejected_by_reason: ByType::default(),
            appended_lines: AtomicU64::new(0),
            aging_moved: Default::default(),
        }
    }
}

pub struct Store {
    /// Where every file of the store is read and written (the real file system, or in
    /// tests a simulated disk).
    pub disk: Disk,
    pub data_dir: PathBuf,
    config: RwLock<Arc<Config>>,
    pub clock: Arc<dyn Clock>,
    state: RwLock<State>,
    pipeline: Pipeline,
    pub cache: Arc<BlockCache>,
    prefetcher: tier::prefetch::Prefetcher,
    /// Whole tier versions inflated for passthrough readers.
    inflated: Arc<tier::inflated::InflatedCopies>,
    inflate_ahead: tier::ahead::InflateAhead,
    pub counters: Counters,
    change_hooks: RwLock<Vec<ChangeHook>>,
    /// Called after every applied batch (derived outputs such as views look again).
    applied_hooks: RwLock<Vec<AppliedHook>>,
    flusher: Flusher,
    health: Health,
    started: Instant,
    /// The clock's time when the store opened (Unix seconds).
    started_at: u64,
    pub recovery: recovery::Report,
    /// Largest piece of a staged replace ([`mutation::REPLACE_PART`]; smaller in tests).
    replace_part: AtomicUsize,
    /// Bumped by everything stats.json shows that has no counter of its own.
    changes: AtomicU64,
    /// Declaring and removing sources, and the lists they read as.
    sources: sources::SourceRegistryLock,
    /// Held (flock) for the life of the store, unless its opener holds it.
    _lock: Option<DataDirLock>,
}

impl Store {
    pub fn config(&self) -> Arc<Config> {
        sync::read(&self.config).clone()
    }

    /// Take a new config (SIGHUP). Settings that need a restart are left as they were by
    /// the caller; this applies cache size and batch window, others are read when used.
    pub fn set_config(&self, config: Arc<Config>) {
        self.cache.set_capacity(config.cache.size);
        self.inflated.set_budget(config.cache.size);
        self.pipeline
            .set_batch_window(config.durability.batch_window);
        *sync::write(&self.config) = config;
        self.changed();
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
        sync::read(&self.state)
    }

    fn state_mut(&self) -> RwLockWriteGuard<'_, State> {
        sync::write(&self.state)
    }

    /// Call `hook` with every new version, before the mutation that made it is
    /// acknowledged (so it must not block on the caller).
    pub fn on_change(&self, hook: ChangeHook) {
        sync::write(&self.change_hooks).push(hook);
    }

    /// Call `hook` after every applied batch of mutations (it must be quick and not block).
    pub fn on_applied(&self, hook: AppliedHook) {
        sync::write(&self.applied_hooks).push(hook);
    }

    /// Sequence, make durable and apply one mutation.
    pub fn submit(&self, op: Op) -> Result<u64> {
        let result = self.pipeline.submit(op, self);
        // A full disk (or quota) fails writes with ENOSPC (not sticky): health says so until
        // one of them goes through again.
        match &result {
            Err(e) if e.is_disk_full() => self.health.disk_full(format!("writes fail: {e}")),
            Ok(_) => self.health.write_succeeded(),
            Err(Error::Panicked { thread, message }) => {
                self.fail(crate::crash::panic_problem(thread, message))
            }
            Err(_) => {}
        }
        result
    }

    /// Tell the hooks (the FUSE layer's kernel cache invalidation) which files have new
    /// versions.
    fn notify(&self, changes: &[Change]) {
        if changes.is_empty() {
            return;
        }
        let hooks = sync::read(&self.change_hooks);
        for hook in hooks.iter() {
            changes.iter().for_each(hook);
        }
    }

    /// Append normalized lines ("v\n"…) to a live file.
    pub fn append(&self, ty: IocType, values: Vec<u8>) -> Result<u64> {
        self.append_to(Target::Live, ty, values)
    }

    /// Make normalized lines the whole live set of a type (at most one replace piece; larger
    /// sets go through [`staged::StagedReplace`]).
    pub fn replace(&self, ty: IocType, values: Vec<u8>) -> Result<u64> {
        self.replace_to(Target::Live, ty, values)
    }

    /// Test builds (`live-slot-limit` in ctl): fewer lines per live set, to reach the bound.
    pub fn set_live_slot_limit(&self, lines: usize) {
        self.state_mut().set_live_slot_limit(lines);
    }

    /// How many bytes of lines a staged replace journals per record.
    pub fn replace_part_size(&self) -> usize {
        self.replace_part.load(Ordering::Relaxed)
    }

    /// Test builds (`record-limit` in ctl): lower the WAL record limit, and the replace piece
    /// size with it, so that large-write handling is exercised with small writes.
    pub fn set_record_limit(&self, bytes: usize) {
        self.pipeline.set_max_payload(bytes);
        let piece = (self.pipeline.max_payload() / 4).max(crate::ioc::MAX_LINE_LEN + 1);
        self.replace_part.store(piece, Ordering::Relaxed);
    }

    /// Append normalized lines to a writable set (live, allow).
    pub fn append_to(&self, target: Target, ty: IocType, values: Vec<u8>) -> Result<u64> {
        self.submit(Op::Append { target, ty, values })
    }

    /// Make normalized lines the whole writable set of a type (live, allow).
    pub fn replace_to(&self, target: Target, ty: IocType, values: Vec<u8>) -> Result<u64> {
        self.submit(Op::Replace { target, ty, values })
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

    /// The aging loop's step: journaled only when something is due (`apply::aging_due`).
    /// A step that moves nothing changes no partition, so no commit would ever cover its
    /// record: an idle store would append one every interval, keep them in its log and
    /// replay them all at every start. When nothing is due, the check is the step (stats
    /// and the metric show it as the last aging). True when a step was journaled.
    pub fn age_if_due(&self) -> Result<bool> {
        let (now, policy) = (self.clock.now(), self.policy());
        if apply::aging_due(&self.state(), now, &policy) {
            return self.age().map(|_| true);
        }
        let mut st = self.state_mut();
        // Never back over a step journaled meanwhile (`ctl age`) at the same or a later time.
        if st.last_aging().is_none_or(|(at, _)| *at < now) {
            st.set_last_aging(now, model::AgingReport::default());
        }
        drop(st);
        self.changed();
        Ok(false)
    }

    /// fsync the WAL now (batch and periodic modes; a no-op when nothing is pending).
    pub fn sync(&self) -> Result<()> {
        self.pipeline.sync()
    }

    /// A writer's open was refused (passthrough readers hold the inode it opened, and the
    /// kernel refuses any other kind of open of it); it looks the name up again and retries
    /// once. Make sure the current version then takes it: if readers pin that one too, give
    /// `ty` a new current version with the same bytes (copied without the state lock: a
    /// pinned version never grows); either way, pin nothing new of `ty` for a moment.
    pub fn make_room_for_writer(&self, ty: IocType) -> Result<()> {
        let pause = |st: &mut state::State| st.pause_pins(ty, Duration::from_secs(1));
        let v = self.live(ty);
        if v.has_passthrough_readers() {
            let copy = v.copy(self.state().new_id(), v.mtime())?;
            self.install_live_copy(&v, copy, pause)?;
        } else {
            pause(&mut self.state_mut());
        }
        Ok(())
    }

    /// Give readers a copy of the current version `v` of a live file that they can pin for
    /// passthrough, when opens served by the daemon keep `v` itself from being pinned (see
    /// `Pin::PlainOpenSettling`): else a file read often would stay served by the daemon.
    /// Copies are rationed (`State::ration_copies`): false, and nothing done, while they
    /// are. True if `v` is no longer current (the reader looks the name up again).
    pub fn rotate_live_for_readers(&self, v: &Arc<live::LiveVersion>) -> Result<bool> {
        if !self.state().may_pin(v.ty) {
            return Ok(false);
        }
        let bytes = v.len();
        // Not `copy`: its failpoint stands for the copies batches and writers wait for.
        // The same bytes: the same mtime (a list's mtime is when its content changed).
        let copy = v.copy_into(self.state().new_id(), v.mtime(), v.storage())?;
        self.install_live_copy(v, copy, |st| st.ration_copies(v.ty, bytes))
    }

    /// Make `copy` (of `v`, made without the state lock) current if `v` still is, as it
    /// was; `installing` runs under the lock just before. True if `v` is no longer current.
    fn install_live_copy(
        &self,
        v: &Arc<live::LiveVersion>,
        copy: Arc<live::LiveVersion>,
        installing: impl FnOnce(&mut state::State),
    ) -> Result<bool> {
        let ty = v.ty;
        let superseded = {
            let mut st = self.state_mut();
            if st.live(ty).version.id != v.id {
                return Ok(true);
            }
            installing(&mut st);
            st.install_live_copy(ty, v.id, copy)
        };
        if let Some(superseded) = superseded {
            self.notify(&[Change {
                part: PartId::Bucket(Bucket::Live, ty),
                superseded,
            }]);
        }
        Ok(superseded.is_some())
    }

    /// Lines written to a `target`'s `ty` file refused (or skipped) as invalid, counted per
    /// type, per reason, and per source (`local`: live/).
    pub fn count_rejected<'a>(
        &self,
        (target, ty): (Target, IocType),
        why: impl IntoIterator<Item = &'a Invalid>,
    ) {
        let mut n = 0;
        for w in why {
            self.counters.rejected_by_reason[ty][w.kind().reason()].fetch_add(1, Ordering::Relaxed);
            n += 1;
        }
        if n > 0 {
            self.counters.rejected[ty].fetch_add(n, Ordering::Relaxed);
            if let Some(source) = target.source() {
                self.counters.rejected_by_source[usize::from(source)]
                    .fetch_add(n, Ordering::Relaxed);
            }
            self.changed();
        }
    }

    fn changed(&self) {
        self.changes.fetch_add(1, Ordering::Relaxed);
    }

    /// Changes to what stats.json shows (except time, and the cache's own counters): equal
    /// values mean an earlier snapshot is still true.
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Relaxed) + self.health.changes()
    }

    /// Group-commit the backing files that lag the state (see `flush`).
    pub fn commit(&self) -> Result<Option<CommitInfo>> {
        // Tier copies for passthrough readers give back room the commit may need.
        self.inflated.trim();
        let result = self.flusher.commit(self);
        self.changed();
        match &result {
            Ok(_) => self.health.clear(Kind::Commit),
            Err(e) => self
                .health
                .set(Problem::new(Kind::Commit, format!("commit failed: {e}"))),
        }
        result
    }

    /// Commit, then snapshot the index of every committed tier partition so the next start
    /// can skip rescanning those files.
    pub fn checkpoint(&self) -> Result<CheckpointInfo> {
        self.checkpoint_with(false)
    }

    /// `echo checkpoint > .iocfs/ctl`: write one even if the newest is current (an admin
    /// who asks may have removed or damaged it).
    pub fn checkpoint_now(&self) -> Result<CheckpointInfo> {
        self.checkpoint_with(true)
    }

    fn checkpoint_with(&self, force: bool) -> Result<CheckpointInfo> {
        let result = self.flusher.checkpoint(self, force);
        self.changed();
        match &result {
            Ok(_) => self.health.clear(Kind::Checkpoint),
            Err(e) => self.health.set(Problem::new(
                Kind::Checkpoint,
                format!("checkpoint failed: {e}"),
            )),
        }
        result
    }

    pub fn last_checkpoint(&self) -> Option<CheckpointInfo> {
        self.flusher.last_checkpoint()
    }

    pub fn last_commit(&self) -> Option<CommitInfo> {
        self.flusher.last_commit()
    }

    pub fn commits(&self) -> u64 {
        self.flusher.commits()
    }

    pub fn checkpoints(&self) -> u64 {
        self.flusher.checkpoints()
    }

    /// How long the WAL's fsyncs took (read without waiting for one).
    pub fn wal_fsyncs(&self) -> &wal::fsync_stats::FsyncHistogram {
        self.pipeline.fsync_histogram()
    }

    /// Have the next commit rewrite every backing file (repair).
    pub fn mark_all_dirty(&self) {
        let mut st = self.state_mut();
        st.changes_mut().mark_all();
        if st.provenance().in_use() {
            for ty in IocType::ALL {
                st.changes_mut().mark_sources(ty);
            }
        }
    }

    /// Refuse user writes from now on (EROFS); commits still run.
    pub fn close_writes(&self) {
        self.pipeline.close();
    }

    /// Stop taking writes and commit everything (clean shutdown). The change hooks are
    /// dropped (they hold the FUSE session's notifier).
    pub fn shutdown(&self) -> Result<()> {
        self.close_writes();
        sync::write(&self.change_hooks).clear();
        sync::write(&self.applied_hooks).clear();
        // local's last writes (stats, metrics) outlive a clean stop.
        self.state_mut().changes_mut().persist_local_writes();
        self.commit()?;
        if let Err(e) = self.pipeline.trim_wal() {
            log::debug!("trim the WAL's zero-filled end: {e}");
        }
        Ok(())
    }

    /// Stop acknowledging writes because of `problem` (a panic, a commit that could not
    /// finish): health says why, and only a restart (recovery) settles the state.
    pub fn fail(&self, problem: Problem) {
        log::error!(
            "{}; no further writes are acknowledged until restart",
            problem.line()
        );
        self.pipeline.set_fatal(&problem.line());
        self.health.set(problem);
        self.changed();
    }

    /// True once writes are refused until a restart (the WAL failed, the store did, or a
    /// thread of the daemon panicked).
    pub fn is_failed(&self) -> bool {
        self.pipeline.fatal().is_some() || crate::crash::has_panicked()
    }

    /// One line per problem; empty when healthy.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut problems = self.health.problems();
        for p in crate::crash::problems() {
            if !problems
                .iter()
                .any(|q| q.kind == p.kind && q.subject == p.subject)
            {
                problems.push(p);
            }
        }
        // A WAL failure is the pipeline's own; a failure the store declared is in health.
        if let Some(why) = self.pipeline.fatal() {
            if !problems
                .iter()
                .any(|p| matches!(p.kind, Kind::Panic | Kind::Failed))
            {
                out.push(format!("wal: {why}; restart iocfs to recover"));
            }
        }
        problems.extend(self.stale_sources());
        out.extend(problems.iter().map(Problem::line));
        out
    }

    pub fn health(&self) -> &Health {
        &self.health
    }

    /// When the store opened, by its clock (Unix seconds).
    pub fn started_at(&self) -> u64 {
        self.started_at
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

    /// The counter version ids come from; the FUSE layer numbers its other inodes from it
    /// too, so no inode number is ever given twice.
    pub fn id_source(&self) -> Arc<AtomicU64> {
        self.state().id_source()
    }
}

impl Engine for Store {
    fn disk(&self) -> &Disk {
        &self.disk
    }
    fn data_dir(&self) -> &Path {
        &self.data_dir
    }
    fn state(&self) -> RwLockReadGuard<'_, State> {
        Store::state(self)
    }
    fn state_mut(&self) -> RwLockWriteGuard<'_, State> {
        Store::state_mut(self)
    }
    fn journal(&self, op: Op) -> Result<u64> {
        self.submit(op)
    }
    fn retire_wal(&self, upto: u64) -> Result<()> {
        self.pipeline.retire_upto(upto).map(|_| ())
    }
    fn fail(&self, why: &str) {
        Store::fail(
            self,
            Problem::new(Kind::Failed, format!("{why}; restart iocfs to recover")),
        );
    }
    fn now(&self) -> u64 {
        self.clock.now()
    }
}

#[cfg(test)]
mod tests;
