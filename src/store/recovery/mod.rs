//! Recovery at mount (docs/internals.md, "Recovery"): read the WAL (truncating a torn tail, refusing on damage
//! in the middle), find the newest commit record, finish its renames, remove leftover temp
//! files, load the committed backing files it lists, and replay every later record.
//!
//! The same walk serves `iocfs check` (changing nothing on disk) and `iocfs check --repair`
//! (salvaging damaged files instead of refusing), see [`Mode`].

mod foreign;
mod load;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

pub use foreign::{ImportChunk, IMPORT_CHUNK_LINES};

use crate::atomic;
use crate::cache::BlockCache;
use crate::config::Config;
use crate::disk::{Disk, Kind};
use crate::error::{Error, Result};
use crate::ioc::Limits;
use crate::store::index::Index;
use crate::store::live::format;
use crate::store::live::Storage;
use crate::store::model::{Bucket, PartId, Target};
use crate::store::mutation::{self, Manifest, Mutation, Op};
use crate::store::state::State;
use crate::store::wal::{self, WalFiles};
use crate::store::{apply, checkpoint};

/// Inode-like ids of versions start here, above the FUSE layer's fixed inode numbers.
pub const FIRST_VERSION_ID: u64 = 1 << 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Normal start: truncate a torn WAL tail, finish the last commit, remove temp files;
    /// damaged committed files refuse the mount.
    Mount,
    /// `iocfs check`: read everything, change nothing; damage is reported.
    ReadOnly,
    /// `iocfs check --repair`: like `Mount`, but a damaged file is moved to `lost+found/`
    /// and whatever still reads of it is imported back.
    Salvage,
}

/// What recovery did, for the mount log line and stats.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub committed_upto: u64,
    pub replayed: usize,
    pub truncated: Option<(PathBuf, u64, String)>,
    pub removed_temps: usize,
    pub finished_renames: usize,
    /// Tier partitions whose index came from a checkpoint instead of a file scan.
    pub from_checkpoint: usize,
    /// The length of the checkpoint loaded, if it was made at the last commit and used
    /// whole: one now would write it again.
    pub checkpoint_current: Option<u64>,
    /// Problems met (in `ReadOnly` and `Salvage` modes, and quarantined blocks at mount).
    pub findings: Vec<String>,
    /// Staged replaces with no durable end record, dropped (see `state::stage`).
    pub abandoned_replaces: usize,
    pub millis: u64,
}

/// Lines of a file no commit wrote, to be imported.
pub struct Foreign {
    pub part: PartId,
    pub path: PathBuf,
    pub chunks: Vec<ImportChunk>,
}

pub struct Recovered {
    pub state: State,
    /// The log, open for appending (None in `ReadOnly` mode).
    pub wal: Option<WalFiles>,
    pub report: Report,
    pub foreign: Vec<Foreign>,
}

/// Recover the state of `data_dir`. `on_loaded` is told the bytes of each committed file
/// part (a tier block, a live file) as it is loaded, for progress.
pub fn recover(
    disk: &Disk,
    data_dir: &Path,
    config: &Config,
    cache: &BlockCache,
    mode: Mode,
    on_loaded: &dyn Fn(u64),
) -> Result<Recovered> {
    let started = Instant::now();
    let wal_dir = data_dir.join("wal");
    let (wal, records, wal_report) = match mode {
        Mode::ReadOnly => {
            let (records, report, _) = wal::read_log(disk, &wal_dir, false)?;
            (None, records, report)
        }
        _ => {
            let (wal, records, report) =
                WalFiles::open(disk, &wal_dir, config.durability.segment_size)?;
            (Some(wal), records, report)
        }
    };
    // Records are decoded where they are used rather than all at once: a million decoded
    // mutations held together would be another copy of the log in fresh memory. This pass
    // checks that every record decodes before anything is applied, keeping the last commit.
    let decode = |r: &wal::Record| {
        Mutation::decode(r.payload()).ok_or_else(|| {
            Error::corruption(
                &wal_dir,
                None,
                format!(
                    "record {} is not a valid iocfs mutation (written by a newer version?)",
                    r.seq
                ),
            )
        })
    };
    let mut manifest = Manifest::default();
    for r in &records {
        if let Op::Commit { manifest: m } = decode(r)?.op {
            manifest = *m;
        }
    }
    let mut report = Report {
        committed_upto: manifest.upto,
        truncated: wal_report.truncated,
        ..Default::default()
    };
    if mode == Mode::ReadOnly {
        report_temps(disk, data_dir, &manifest, &mut report)?;
    } else {
        report.finished_renames = finish_renames(disk, data_dir, &manifest)?;
        for dir in subdirs_with_temps() {
            let dir = data_dir.join(dir);
            report.removed_temps += if mode == Mode::Salvage {
                keep_temps_in_lost_found(disk, data_dir, &dir)?.len()
            } else {
                atomic::remove_leftover_temps(disk, &dir)?.len()
            };
        }
    }

    let mut snapshot = checkpoint::newest_valid(disk, &data_dir.join("checkpoint"), manifest.upto)?;
    // Provenance files name indicators by key: the index must use their seed, and a
    // checkpoint made under another one can't be used (the files are the truth).
    let provenance_seed = load::provenance_seed(disk, data_dir, &manifest);
    if let (Some(p), Some(s)) = (provenance_seed, snapshot.as_ref()) {
        if s.seed != p {
            log::info!(
                "checkpoint {} was made under another key seed than the provenance files; rescanning",
                s.path.display()
            );
            snapshot = None;
        }
    }
    let seed = provenance_seed
        .or(snapshot.as_ref().map(|s| s.seed))
        .unwrap_or_else(random_seed);
    let ids = Arc::new(AtomicU64::new(FIRST_VERSION_ID));
    let mut state = State::new(
        seed,
        ids,
        config.tiers.block_size as usize,
        &live_storage(disk, data_dir, config),
    )?;
    let limits = Limits {
        min_prefix_v4: config.ingest.min_prefix_v4,
        min_prefix_v6: config.ingest.min_prefix_v6,
    };
    let snapshot_made = snapshot.as_ref().map(|s| (s.upto, s.parts.len(), s.len));
    let loaded = load::load_all(
        &mut state, disk, data_dir, &manifest, limits, snapshot, mode, cache, on_loaded,
    )?;
    report.from_checkpoint = loaded.from_snapshot;
    // Current only if made at the last commit and used whole (a partition whose entries
    // did not fit its file was read from the file instead).
    report.checkpoint_current = snapshot_made
        .filter(|&(upto, parts, _)| (upto, parts) == (manifest.upto, loaded.from_snapshot))
        .map(|(_, _, len)| len);
    report.findings.extend(loaded.findings);
    state.set_manifest(manifest.clone());
    state.set_applied_seq(manifest.upto);
    for (tier, ty, doomed) in loaded.duplicates {
        let what = format!(
            "{tier}/{ty}: {} indicators also stored in a younger bucket; dropping these copies",
            doomed.len()
        );
        log::warn!("{what}");
        report.findings.push(what);
        state.drop_from_tier(manifest.upto, 0, tier, ty, &doomed, cache)?;
    }
    state.set_staging(staging_storage(disk, data_dir));
    // Parts of a replace still open at the last commit precede it in the log (retirement
    // keeps them from its first part on, see `flush`): stage them again; their end record,
    // if durable, follows. Parts of stages that ended by then may have lost their first
    // part to retirement: they are of no use and skipped.
    for r in records.iter().filter(|r| r.seq <= manifest.upto) {
        if !mutation::is_stage_record(r.payload()) {
            continue;
        }
        match decode(r)?.op {
            Op::ReplaceEnd { stage, .. } | Op::ReplaceAbort { stage } => state.drop_stage(stage),
            Op::ReplacePart {
                target,
                ty,
                stage,
                values,
            } if stage == 0 || state.has_stage(stage) => {
                state.stage_part(r.seq, (target, ty), stage, &values)?
            }
            _ => {}
        }
    }
    state.defer_live_writes(true)?;
    let last_seq = records.last().map(|r| r.seq);
    let replay = records.iter().filter(|r| r.seq > manifest.upto);
    // Size the index once for a log of small appends (the usual log after a crash: many
    // writers of a few lines each) instead of growing it step by step, each step a fresh
    // table to fault in and fill. One slot per record bounds the guess when the records
    // are re-sightings; bulk records are few, and the growth they need is amortized.
    state.reserve_index(replay.clone().count());
    let mut pending = replay.filter_map(|r| match decode(r) {
        Ok(Mutation {
            op: Op::Commit { .. },
            ..
        }) => None,
        other => Some(other.map(|m| (r.seq, m))),
    });
    // Each record's memory is freed as soon as it is applied. A log of small appends is one
    // index probe per record, each a cache miss: the slot of a record a few places ahead is
    // fetched while this one is applied.
    let mut window = std::collections::VecDeque::with_capacity(Index::PREFETCH_AHEAD + 1);
    for next in pending.by_ref().take(Index::PREFETCH_AHEAD) {
        window.push_back(next?);
    }
    while let Some((seq, m)) = window.pop_front() {
        if let Some(next) = pending.next() {
            let next = next?;
            prefetch_first_line(&state, &next.1);
            window.push_back(next);
        }
        apply::apply(&mut state, seq, &m, cache)?;
        report.replayed += 1;
    }
    state.defer_live_writes(false)?;
    // A replace whose end record never became durable: its writer went away with the
    // daemon (the replace was not acknowledged), so the old set stands.
    for (stage, (target, ty), bytes) in state.abandon_stages() {
        log::warn!(
            "recovery: a replace of {}/{} ({bytes} bytes staged from record {stage}) was \
             still being written when iocfs stopped; discarded, the file is as before it",
            target.dir(),
            ty.file_name()
        );
        report.abandoned_replaces += 1;
    }
    if let Some(seq) = last_seq {
        state.set_applied_seq(state.applied_seq().max(seq));
    }
    report.millis = started.elapsed().as_millis() as u64;
    Ok(Recovered {
        state,
        wal,
        report,
        foreign: loaded.foreign,
    })
}

/// The first line `append` will look up (it skips empty lines the same way).
fn prefetch_first_line(state: &State, m: &Mutation) {
    if let Op::Append {
        target: Target::Live,
        ty,
        values,
    } = &m.op
    {
        if let Some(first) = crate::store::tier::lines(values).find(|v| !v.is_empty()) {
            state.prefetch(&state.key(*ty, first));
        }
    }
}

/// Live versions live in unnamed files on the data directory's filesystem when served by
/// FUSE passthrough (as fast to read as any file there), in memory otherwise.
fn live_storage(disk: &Disk, data_dir: &Path, config: &Config) -> Storage {
    if !config.mount.passthrough {
        return Storage::Memfd;
    }
    let tmp = Storage::Tmpfile(disk.clone(), data_dir.join("live"));
    match State::probe_storage(&tmp) {
        Ok(()) => tmp,
        Err(e) => {
            log::warn!("passthrough: {e}; keeping live files in memory instead");
            Storage::Memfd
        }
    }
}

/// Staged replaces go to unnamed files on the data directory's filesystem (disk, not
/// memory) when it supports them.
fn staging_storage(disk: &Disk, data_dir: &Path) -> Storage {
    let tmp = Storage::Tmpfile(disk.clone(), data_dir.join("live"));
    match State::probe_storage(&tmp) {
        Ok(()) => tmp,
        Err(e) => {
            log::warn!("staging large replaces in memory: {e}");
            Storage::Memfd
        }
    }
}

/// The data directory's subdirectories a commit or checkpoint writes temps into (all but
/// the log's).
fn subdirs_with_temps() -> impl Iterator<Item = &'static str> {
    crate::store::SUBDIRS.into_iter().filter(|&d| d != "wal")
}

fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0x0069_6f63_6673);
    h.finish()
}

/// Backing files a partition's commit wrote: raw text (live, allow) has a sidecar too.
pub fn backing_names(part: PartId) -> Vec<String> {
    let name = part.backing_name();
    match part {
        PartId::Bucket(Bucket::Live, _) | PartId::Allow(_) => vec![format::meta_name(&name), name],
        PartId::Bucket(..) | PartId::Sources(_) => vec![name],
    }
}

/// The temp file a commit up to `upto` wrote for `dir/name`.
pub fn commit_temp(dir: &Path, name: &str, upto: u64) -> PathBuf {
    atomic::temp_path(dir, name, &format!("c{upto}"))
}

/// The newest commit record is durable but a crash may have come before all its renames.
fn finish_renames(disk: &Disk, data_dir: &Path, manifest: &Manifest) -> Result<usize> {
    let mut done = 0;
    let mut dirs: Vec<&str> = Vec::new();
    for id in PartId::all() {
        let part = manifest.file_of(id);
        if part.generation == 0 || part.applied_seq != manifest.upto {
            continue;
        }
        let dir = data_dir.join(id.dir());
        for name in backing_names(id) {
            let tmp = commit_temp(&dir, &name, manifest.upto);
            if disk.exists(&tmp) {
                atomic::rename(disk, &tmp, &dir.join(&name))?;
                if !dirs.contains(&id.dir()) {
                    dirs.push(id.dir());
                }
                done += 1;
            }
        }
    }
    for dir in dirs {
        atomic::fsync_dir(disk, &data_dir.join(dir))?;
    }
    if done > 0 {
        log::warn!(
            "recovery: finished {done} renames of commit {}",
            manifest.upto
        );
    }
    Ok(done)
}

/// `iocfs check`: say what a mount would finish or remove.
fn report_temps(
    disk: &Disk,
    data_dir: &Path,
    manifest: &Manifest,
    report: &mut Report,
) -> Result<()> {
    for dir in subdirs_with_temps() {
        let dir = data_dir.join(dir);
        let Ok(entries) = disk.read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let name = entry.name.to_string_lossy().into_owned();
            let path = dir.join(&entry.name);
            if !atomic::is_temp_name(&name) {
                continue;
            }
            let pending = name.ends_with(&format!(".c{}.tmp", manifest.upto));
            report.findings.push(if pending {
                format!(
                    "{}: the last commit's rename is unfinished (a mount or --repair finishes it)",
                    path.display()
                )
            } else {
                format!(
                    "{}: leftover temp file (a mount removes it)",
                    path.display()
                )
            });
        }
    }
    Ok(())
}

/// Where `--repair` keeps a copy of everything it removes: a directory of its own, never a
/// symlink someone planted.
pub fn lost_found(disk: &Disk, data_dir: &Path) -> Result<PathBuf> {
    let (path, created) = disk.subdir(data_dir, "lost+found", true)?;
    if created {
        atomic::fsync_dir(disk, data_dir)?;
    }
    Ok(path)
}

/// Move a file into `lost+found/`, under a name that says where it came from.
pub fn move_to_lost_found(disk: &Disk, data_dir: &Path, path: &Path) -> Result<PathBuf> {
    let lf = lost_found(disk, data_dir)?;
    let rel = path.strip_prefix(data_dir).unwrap_or(path);
    let name = rel.to_string_lossy().replace('/', "_");
    let mut target = lf.join(&name);
    let mut n = 1;
    while disk.exists(&target) {
        target = lf.join(format!("{name}.{n}"));
        n += 1;
    }
    atomic::rename(disk, path, &target)?;
    if let Some(dir) = path.parent() {
        atomic::fsync_dir(disk, dir)?;
    }
    atomic::fsync_dir(disk, &lf)?;
    Ok(target)
}

fn keep_temps_in_lost_found(disk: &Disk, data_dir: &Path, dir: &Path) -> Result<Vec<PathBuf>> {
    let mut moved = Vec::new();
    let Ok(entries) = disk.read_dir(dir) else {
        return Ok(moved);
    };
    for entry in entries.into_iter().filter(|e| e.kind != Kind::Dir) {
        if atomic::is_temp_name(&entry.name.to_string_lossy()) {
            moved.push(move_to_lost_found(disk, data_dir, &dir.join(&entry.name))?);
        }
    }
    Ok(moved)
}
