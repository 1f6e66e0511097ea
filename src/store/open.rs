//! Opening a data directory: lay it out, lock it, recover the state (last commit + WAL
//! replay), start the pipeline, and adopt files that no commit wrote.

use std::fs::File;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use super::health::{Health, Kind, Problem};
use super::model::{PartId, Target};
use super::recovery::{self, Foreign};
use super::tier::prefetch::Prefetcher;
use super::wal::group_commit::Pipeline;
use super::{flush::Flusher, mutation::Op, Counters, Store, SUBDIRS};
use crate::cache::BlockCache;
use crate::clock::Clock;
use crate::config::Config;
use crate::error::{Error, IoContext, Result};

impl Store {
    /// Lock the data directory, recover the state (last commit + WAL replay) and get ready
    /// to take writes.
    pub fn open(config: Arc<Config>, clock: Arc<dyn Clock>) -> Result<Arc<Store>> {
        Store::open_with(config, clock, recovery::Mode::Mount, None)
    }

    /// Open in a given recovery mode (`Salvage` for `iocfs check --repair`). `held`: the
    /// caller already holds the data directory's lock (and keeps it past the store's life).
    pub fn open_with(
        config: Arc<Config>,
        clock: Arc<dyn Clock>,
        mode: recovery::Mode,
        held: Option<&DataDirLock>,
    ) -> Result<Arc<Store>> {
        // Other local users must not be able to plant anything where iocfs writes.
        let data_dir = crate::secure::ensure_trusted_dir(&config.data_dir, "data directory")?;
        let marker = data_dir.join(super::backup::INCOMPLETE);
        if marker.exists() {
            return Err(Error::Invalid(format!(
                "{} is an incomplete backup ({} is still there: the backup that made it did not finish); \
                 make a new backup instead of using this one",
                data_dir.display(),
                marker.display()
            )));
        }
        for sub in SUBDIRS {
            crate::secure::subdir(&data_dir, sub, true)?;
        }
        let lock = match held {
            Some(_) => None,
            None => Some(DataDirLock::take(&data_dir)?),
        };
        let cache = Arc::new(BlockCache::new(config.cache.size));
        let recovered = recovery::recover(&data_dir, &config, &cache, mode, &|_| {})
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
            applied_hooks: RwLock::new(Vec::new()),
            flusher: Flusher::default(),
            health,
            started: Instant::now(),
            recovery: recovered.report,
            replace_part: std::sync::atomic::AtomicUsize::new(super::mutation::REPLACE_PART),
            changes: std::sync::atomic::AtomicU64::new(0),
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
                    },
                    // The allowlist keeps no history worth importing: its values are allowed now.
                    PartId::Allow(_) => Op::Append {
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

/// Open `DATA/LOCK`, creating it if missing, never through a symlink.
pub fn open_lock_file(data_dir: &Path) -> Result<File> {
    use nix::fcntl::OFlag;
    let path = data_dir.join("LOCK");
    let dir = crate::atomic::open_dir(data_dir)?;
    let fd = nix::fcntl::openat(
        &dir,
        "LOCK",
        OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::from_bits_truncate(0o640),
    )
    .ctx(|| format!("open {}", path.display()))?;
    let file = File::from(fd);
    if !file
        .metadata()
        .ctx(|| format!("stat {}", path.display()))?
        .is_file()
    {
        return Err(Error::Unsafe(format!(
            "{} is not a regular file; fix: remove it",
            path.display()
        )));
    }
    Ok(file)
}

/// `DATA/LOCK`, held with flock while a daemon, `check` or `import` works on the data
/// directory: a second one refuses to start, and a restarting daemon and a repair never
/// touch the same files.
pub struct DataDirLock(#[allow(dead_code)] nix::fcntl::Flock<File>);

impl DataDirLock {
    /// Take the lock (writing our pid in the file), or say who holds it.
    pub fn take(data_dir: &Path) -> Result<DataDirLock> {
        use std::io::Write;
        let path = data_dir.join("LOCK");
        let file = open_lock_file(data_dir)?;
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
        Ok(DataDirLock(locked))
    }
}
