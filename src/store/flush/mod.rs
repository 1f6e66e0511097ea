//! Flushing the state to its backing files: the atomic group rewrite of every partition
//! whose file lags (docs/internals.md, "Group commit of backing files"), and checkpoints.
//!
//! 1. Under the read lock, take a consistent snapshot at sequence X of every partition whose
//!    backing file lags, and stop holding the lock.
//! 2. Write each new file as `.<name>.cX.tmp` in its directory and fsync it. Tier files copy
//!    the compressed members of unchanged blocks verbatim and compress only changed blocks.
//! 3. Journal a `Commit` record (the new manifest) in the WAL and wait for it to be durable:
//!    this is the commit point. Recovery finishes the renames of the newest commit record.
//! 4. Rename each temp over its backing file and fsync the directories.
//! 5. Re-point the current tier versions at the new files (same bytes, same inode), so
//!    changed blocks stop living in memory and the old files can close.
//! 6. Retire the WAL segments the commit covers.
//!
//! A failure before 3 leaves the old files and removes the temps. A failure in 4 leaves a
//! durable commit record with renames undone: the store stops taking writes and a restart
//! finishes the job.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

use crate::atomic;
use crate::disk::Disk;
use crate::error::{Error, Result};
use crate::ioc::IocType;
use crate::store::checkpoint;
use crate::store::live::format::{self as live_format, LiveMeta};
use crate::store::live::{LiveVersion, Times};
use crate::store::model::{PartId, Tier};
use crate::store::mutation::{Manifest, Op, PartFile};
use crate::store::provenance_file::ProvenanceFile;
use crate::store::state::State;
use crate::store::tier::{format, Block, BlockData, BlockIdent, TierFile, TierVersion};
use crate::sync::lock;
use write::{write_provenance, write_text, write_tier};

mod write;

/// What a flush needs from the engine it flushes: the store, or a test's stand-in.
pub trait Engine {
    fn disk(&self) -> &Disk;
    fn data_dir(&self) -> &Path;
    fn state(&self) -> RwLockReadGuard<'_, State>;
    fn state_mut(&self) -> RwLockWriteGuard<'_, State>;
    /// Journal a record (the commit record) and wait until it is durable and applied.
    fn journal(&self, op: Op) -> Result<u64>;
    /// Delete the WAL segments holding only records up to `upto`.
    fn retire_wal(&self, upto: u64) -> Result<()>;
    /// Stop acknowledging writes: the durable state is ahead of the files in a way only a
    /// restart (recovery) can settle.
    fn fail(&self, why: &str);
    fn now(&self) -> u64;
}

/// What the last commit did, for stats.
#[derive(Debug, Clone, Default)]
pub struct CommitInfo {
    pub at: u64,
    pub upto: u64,
    pub files: usize,
    pub bytes: u64,
    pub millis: u64,
}

/// What the last checkpoint did, for stats.
#[derive(Debug, Clone, Default)]
pub struct CheckpointInfo {
    pub at: u64,
    pub upto: u64,
    pub bytes: u64,
    pub millis: u64,
}

/// Runs commits and checkpoints one at a time each, and remembers the last of each.
#[derive(Default)]
pub struct Flusher {
    commit_lock: Mutex<()>,
    checkpoint_lock: Mutex<()>,
    last_commit: Mutex<Option<CommitInfo>>,
    last_checkpoint: Mutex<Option<CheckpointInfo>>,
    commits: AtomicU64,
    checkpoints: AtomicU64,
    /// The commit the newest checkpoint on disk was made at and its length, once known
    /// (loaded at the start, or written since): a file of another length was damaged.
    checkpoint_at: Mutex<Option<(u64, u64)>>,
}

impl Flusher {
    /// `checkpoint_at`: the commit the checkpoint recovery loaded was made at and its
    /// length, if it was the last one.
    pub fn new(checkpoint_at: Option<(u64, u64)>) -> Flusher {
        Flusher {
            checkpoint_at: Mutex::new(checkpoint_at),
            ..Flusher::default()
        }
    }

    /// Group-commit the backing files that lag the state. None: nothing lagged.
    pub fn commit(&self, engine: &dyn Engine) -> Result<Option<CommitInfo>> {
        let _one_at_a_time = lock(&self.commit_lock);
        let info = commit(engine)?;
        if let Some(info) = &info {
            self.committed(info.clone());
        }
        Ok(info)
    }

    /// A commit moved files: the newest checkpoint may name their old generations (a
    /// commit can run at the same sequence, e.g. for duplicates dropped at recovery).
    fn committed(&self, info: CommitInfo) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        *lock(&self.last_commit) = Some(info);
        *lock(&self.checkpoint_at) = None;
    }

    /// Commit, then run `f` with the manifest of the files on disk while no other commit
    /// can replace them (an online backup links exactly those files). Writers are not held.
    pub fn with_committed<T>(
        &self,
        engine: &dyn Engine,
        f: impl FnOnce(&Manifest) -> Result<T>,
    ) -> Result<T> {
        let _one_at_a_time = lock(&self.commit_lock);
        if let Some(info) = commit(engine)? {
            self.committed(info);
        }
        let manifest = engine.state().manifest().clone();
        f(&manifest)
    }

    /// Commit, then snapshot the index of every committed tier partition so the next start
    /// can skip rescanning those files. Unless `force`d, skipped while the newest snapshot
    /// (still on disk) was made at the last commit: writing it again (200 MB for 15M
    /// indicators) at every clean stop and every interval of an idle store gains nothing.
    pub fn checkpoint(&self, engine: &dyn Engine, force: bool) -> Result<CheckpointInfo> {
        let _one_at_a_time = lock(&self.checkpoint_lock);
        self.commit(engine)?;
        let committed = engine.state().manifest().upto;
        let path = engine
            .data_dir()
            .join("checkpoint")
            .join(checkpoint::file_name(committed));
        let len_on_disk = || engine.disk().metadata(&path).ok().map(|m| m.len);
        let current = *lock(&self.checkpoint_at);
        if !force
            && current.is_some_and(|(upto, len)| upto == committed && len_on_disk() == Some(len))
        {
            log::debug!("checkpoint: the one at commit {committed} is current");
            return Ok(lock(&self.last_checkpoint)
                .clone()
                .unwrap_or(CheckpointInfo {
                    at: engine.now(),
                    upto: committed,
                    bytes: 0,
                    millis: 0,
                }));
        }
        let started = Instant::now();
        // A commit from here on (the commit loop does not wait for checkpoints) may move
        // files at this same sequence: the snapshot is then not current.
        let commits_before = self.commits.load(Ordering::SeqCst);
        let (upto, bytes) = checkpoint::encode(&engine.state());
        let path = checkpoint::write(
            engine.disk(),
            &engine.data_dir().join("checkpoint"),
            upto,
            &bytes,
        )?;
        let info = CheckpointInfo {
            at: engine.now(),
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
        self.checkpoints.fetch_add(1, Ordering::Relaxed);
        *lock(&self.last_checkpoint) = Some(info.clone());
        let mut mark = lock(&self.checkpoint_at);
        *mark =
            (self.commits.load(Ordering::SeqCst) == commits_before).then_some((upto, info.bytes));
        drop(mark);
        Ok(info)
    }

    pub fn last_commit(&self) -> Option<CommitInfo> {
        lock(&self.last_commit).clone()
    }

    pub fn last_checkpoint(&self) -> Option<CheckpointInfo> {
        lock(&self.last_checkpoint).clone()
    }

    /// Commits done since the store opened.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Checkpoints written since the store opened.
    pub fn checkpoints(&self) -> u64 {
        self.checkpoints.load(Ordering::Relaxed)
    }
}

enum Snap {
    /// A raw-text partition: a live file or an allowlist.
    Text {
        /// The partition's change count at the snapshot.
        count: u64,
        part: PartId,
        version: Arc<LiveVersion>,
        len: u64,
        times: Vec<Times>,
    },
    Tier {
        count: u64,
        tier: Tier,
        ty: IocType,
        version: Arc<TierVersion>,
    },
    /// A provenance file, encoded but for its applied_seq and generation.
    Provenance {
        count: u64,
        ty: IocType,
        file: ProvenanceFile,
    },
}

/// Where each block of a new tier file landed: member offset, length, data offset.
type Placement = HashMap<BlockIdent, (u64, u32, u32)>;

/// A written, fsync'd temp file waiting for its rename.
struct Written {
    id: PartId,
    part: PartFile,
    renames: Vec<(PathBuf, PathBuf)>,
    bytes: u64,
    /// For tier files: the new file and where each block landed in it.
    tier: Option<(Arc<TierFile>, Placement)>,
    /// The version written, kept alive until the rebase: blocks held in memory are matched
    /// by their address, which must not be reused by a newer block meanwhile.
    _written_version: Option<Arc<TierVersion>>,
    /// The partition's change count the file reflects.
    count: u64,
}

fn commit(store: &dyn Engine) -> Result<Option<CommitInfo>> {
    let started = Instant::now();
    let (upto, mut manifest, snaps, stage_floor) = {
        let st = store.state();
        let dirty = st.changes().dirty_parts();
        if dirty.is_empty() {
            return Ok(None);
        }
        let snaps: Vec<Snap> = dirty
            .into_iter()
            .map(|part| {
                let count = st.changes().commit_count(part);
                let text = |set: &crate::store::live::LiveSet| Snap::Text {
                    count,
                    part,
                    version: set.version.clone(),
                    len: set.version.len(),
                    times: set.times_in_order(),
                };
                match part {
                    PartId::Sources(ty) => Snap::Provenance {
                        count,
                        ty,
                        file: ProvenanceFile {
                            seed: st.seed(),
                            registry: st.provenance().declared(),
                            times: st.provenance().written(ty),
                            entries: st.non_local(ty),
                            ..Default::default()
                        },
                    },
                    PartId::Allow(ty) => text(st.allow(ty).set()),
                    PartId::Bucket(bucket, ty) => match bucket.tier() {
                        None => text(st.live(ty)),
                        Some(tier) => Snap::Tier {
                            count,
                            tier,
                            ty,
                            version: st.tier(tier, ty).clone(),
                        },
                    },
                }
            })
            .collect();
        (
            st.applied_seq(),
            st.manifest().clone(),
            snaps,
            st.open_stage_floor(),
        )
    };
    let tag = format!("c{upto}");
    let mut written = Vec::new();
    for snap in snaps {
        let result = match snap {
            Snap::Text {
                count,
                part,
                version,
                len,
                times,
            } => write_text(store, &tag, upto, part, &version, len, &times).map(|w| (w, count)),
            Snap::Tier {
                count,
                tier,
                ty,
                version,
            } => write_tier(store, &tag, upto, tier, ty, &version).map(|w| (w, count)),
            Snap::Provenance { count, ty, file } => {
                write_provenance(store, &tag, upto, ty, file).map(|w| (w, count))
            }
        };
        match result {
            Ok((mut w, count)) => {
                w.count = count;
                written.push(w)
            }
            Err(e) => {
                remove_temps(store.disk(), &written);
                return Err(e);
            }
        }
    }
    manifest.upto = upto;
    for w in &written {
        manifest.set_file_of(w.id, w.part);
    }
    // The temps' names must be durable before the record that names them: a power cut
    // after the record would otherwise leave a commit whose files never existed.
    if let Err(e) = sync_dirs(
        store.disk(),
        written.iter().flat_map(|w| &w.renames).map(|r| &r.0),
    ) {
        remove_temps(store.disk(), &written);
        return Err(e);
    }
    if let Err(e) = store.journal(Op::Commit {
        manifest: Box::new(manifest),
    }) {
        remove_temps(store.disk(), &written);
        return Err(e);
    }
    let mut dirs: Vec<PathBuf> = Vec::new();
    for w in &written {
        for (from, to) in &w.renames {
            if let Err(e) = atomic::rename(store.disk(), from, to) {
                store.fail(&format!("commit {upto} could not finish ({e})"));
                return Err(e);
            }
            if let Some(dir) = to.parent() {
                if !dirs.iter().any(|d| d == dir) {
                    dirs.push(dir.to_path_buf());
                }
            }
        }
    }
    for dir in &dirs {
        if let Err(e) = atomic::fsync_dir(store.disk(), dir) {
            store.fail(&format!("commit {upto} could not finish ({e})"));
            return Err(e);
        }
    }
    rebase(store, &written);
    // A replace still being staged needs its parts replayed after a crash: keep the log
    // from its first part on.
    store.retire_wal(stage_floor.map_or(upto, |first| upto.min(first.saturating_sub(1))))?;
    let info = CommitInfo {
        at: store.now(),
        upto,
        files: written.iter().map(|w| w.renames.len()).sum(),
        bytes: written.iter().map(|w| w.bytes).sum(),
        millis: started.elapsed().as_millis() as u64,
    };
    log::debug!(
        "commit {upto}: {} files, {} bytes in {} ms",
        info.files,
        info.bytes,
        info.millis
    );
    Ok(Some(info))
}

/// fsync the directory of each path, once.
fn sync_dirs<'a>(disk: &Disk, paths: impl Iterator<Item = &'a PathBuf>) -> Result<()> {
    let mut dirs: Vec<&Path> = paths.filter_map(|p| p.parent()).collect();
    dirs.sort();
    dirs.dedup();
    dirs.into_iter()
        .try_for_each(|dir| atomic::fsync_dir(disk, dir))
}

fn remove_temps(disk: &Disk, written: &[Written]) {
    for w in written {
        for (from, _) in &w.renames {
            let _ = disk.remove_file(from);
        }
    }
}

/// Point current tier versions at the files just committed: same content, same inode.
fn rebase(store: &dyn Engine, written: &[Written]) {
    let mut st = store.state_mut();
    for w in written {
        st.changes_mut().part_committed_to(w.id, w.count);
        let (Some((file, placed)), PartId::Bucket(bucket, ty)) = (&w.tier, w.id) else {
            continue;
        };
        let Some(tier) = bucket.tier() else {
            continue;
        };
        let current = st.tier(tier, ty).clone();
        let mut moved = false;
        let blocks: Vec<Block> = current
            .blocks()
            .iter()
            .map(|b| match placed.get(&b.ident()) {
                Some(&(offset, member_len, data_offset)) => {
                    moved = true;
                    Block {
                        data: BlockData::Stored {
                            file: file.clone(),
                            offset,
                            member_len,
                            data_offset,
                        },
                        ..b.clone()
                    }
                }
                None => b.clone(),
            })
            .collect();
        if moved {
            st.rebase_tier(tier, ty, blocks);
        }
    }
}

#[cfg(test)]
mod tests;
