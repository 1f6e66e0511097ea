//! Opening a data directory: lay it out, lock it, recover the state (last commit + WAL
//! replay), start the pipeline, and adopt files that no commit wrote.

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use super::health::{Health, Kind, Problem};
use super::live::Storage;
use super::model::{PartId, Target};
use super::recovery::{self, Foreign};
use super::tier::ahead::InflateAhead;
use super::tier::inflated::InflatedCopies;
use super::tier::prefetch::Prefetcher;
use super::wal::group_commit::Pipeline;
use super::{flush::Flusher, mutation::Op, Counters, Store, SUBDIRS};
use crate::cache::BlockCache;
use crate::clock::Clock;
use crate::config::Config;
use crate::disk::{Disk, LockGuard};
use crate::error::{Error, Result};

impl Store {
    /// Lock the data directory, recover the state (last commit + WAL replay) and get ready
    /// to take writes.
    pub fn open(config: Arc<Config>, clock: Arc<dyn Clock>) -> Result<Arc<Store>> {
        Store::open_on(Disk::real(), config, clock)
    }

    /// Open on a given file system (tests: the simulated disk of `disk::sim`).
    pub fn open_on(disk: Disk, config: Arc<Config>, clock: Arc<dyn Clock>) -> Result<Arc<Store>> {
        Store::open_with(disk, config, clock, recovery::Mode::Mount, None)
    }

    /// Open in a given recovery mode (`Salvage` for `iocfs check --repair`). `held`: the
    /// caller already holds the data directory's lock (and keeps it past the store's life).
    pub fn open_with(
        disk: Disk,
        config: Arc<Config>,
        clock: Arc<dyn Clock>,
        mode: recovery::Mode,
        held: Option<&DataDirLock>,
    ) -> Result<Arc<Store>> {
        // Other local users must not be able to plant anything where iocfs writes.
        let data_dir = disk.trusted_dir(&config.data_dir, "data directory", true)?;
        let marker = data_dir.join(super::backup::INCOMPLETE);
        if disk.exists(&marker) {
            return Err(Error::Invalid(format!(
                "{} is an incomplete backup ({} is still there: the backup that made it did not finish); \
                 make a new backup instead of using this one",
                data_dir.display(),
                marker.display()
            )));
        }
        for sub in SUBDIRS {
            disk.subdir(&data_dir, sub, true)?;
        }
        let lock = match held {
            Some(_) => None,
            None => Some(DataDirLock::take_on(&disk, &data_dir)?),
        };
        let cache = Arc::new(BlockCache::new(config.cache.size));
        let recovered = recovery::recover(&disk, &data_dir, &config, &cache, mode, &|_| {})
            .map_err(|e| needs_repair(e, &data_dir))?;
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
        let prefetcher = Prefetcher::start(crate::cores().max(2), cache.clone());
        // Tier copies for passthrough readers go where live versions do, on disk, or nowhere.
        let inflated = match recovered.state.storages().0 {
            Storage::Tmpfile(disk, dir) => Some((disk, dir)),
            Storage::Memfd => None,
        };
        let inflated = Arc::new(InflatedCopies::new(inflated, config.cache.size));
        let inflate_ahead = InflateAhead::start(inflated.clone(), cache.clone());
        let health = Health::default();
        if mode == recovery::Mode::Mount && !recovered.report.findings.is_empty() {
            health.set(Problem::new(
                Kind::Tier,
                format!(
                    "{} damaged tier blocks (reads of them fail with EIO); run `iocfs check --repair`",
                    recovered.report.findings.len()
                ),
            ));
        }
        let started_at = clock.now();
        let store = Arc::new(Store {
            disk,
            data_dir,
            config: RwLock::new(config),
            clock,
            state: RwLock::new(recovered.state),
            pipeline,
            cache,
            prefetcher,
            inflated,
            inflate_ahead,
            counters: Counters::default(),
            change_hooks: RwLock::new(Vec::new()),
            applied_hooks: RwLock::new(Vec::new()),
            flusher: Flusher::new(
                recovered
                    .report
                    .checkpoint_current
                    .map(|len| (recovered.report.committed_upto, len)),
            ),
            health,
            started: Instant::now(),
            started_at,
            recovery: recovered.report,
            replace_part: std::sync::atomic::AtomicUsize::new(super::mutation::REPLACE_PART),
            changes: std::sync::atomic::AtomicU64::new(0),
            sources: Default::default(),
            _lock: lock,
        });
        store.adopt(recovered.foreign)?;
        Ok(store)
    }

    /// Journal files found in the data dir that no commit wrote (plain gzip tier files, text
    /// dropped into live/) as imports, so the next commit rewrites them in iocfs's format.
    fn adopt(&self, foreign: Vec<Foreign>) -> Result<()> {
        for f in foreign {
            let ty = f.part.ty();
            log::info!("adopting {} into {}/{ty}", f.path.display(), f.part.dir());
            for chunk in f.chunks {
                self.submit(match f.part {
                    PartId::Bucket(bucket, _) => Op::Import {
                        bucket,
                        ty,
                        values: chunk.values,
                        times: chunk.times,
                        source: crate::store::model::LOCAL,
                    },
                    // The allowlist keeps no history worth importing: its values are allowed now.
                    // Provenance files are never foreign (see `recovery::foreign`).
                    PartId::Allow(_) | PartId::Sources(_) => Op::Append {
                        target: Target::Allow,
                        ty,
                        values: chunk.values,
                    },
                })?;
            }
            // Even if nothing was new, the file must be rewritten in iocfs's format.
            self.state_mut().changes_mut().mark_part(f.part);
        }
        Ok(())
    }
}

/// A data directory that recovery refuses: say how to repair it.
fn needs_repair(e: Error, data_dir: &Path) -> Error {
    match e {
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
    }
}

/// `DATA/LOCK`, held with flock while a daemon, `check` or `import` works on the data
/// directory: a second one refuses to start, and a restarting daemon and a repair never
/// touch the same files.
pub struct DataDirLock(#[allow(dead_code)] LockGuard);

impl DataDirLock {
    /// Take the lock (writing our pid in the file), or say who holds it.
    pub fn take(data_dir: &Path) -> Result<DataDirLock> {
        DataDirLock::take_on(&Disk::real(), data_dir)
    }

    pub fn take_on(disk: &Disk, data_dir: &Path) -> Result<DataDirLock> {
        disk.lock(data_dir).map(DataDirLock)
    }
}
