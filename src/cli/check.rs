//! `iocfs check [--repair] DATA` (README "Checking, repairing, importing"): an offline consistency check of a data
//! directory, and the repairs a human would otherwise do by hand.
//!
//! Check reads everything and changes nothing: the WAL (framing, CRC, sequence), the
//! checkpoints, every backing file the last commit lists (structure, checksums, every tier
//! block inflated, every line a normalized indicator of its file's type), then replays the
//! log in memory and cross-checks the index against the sets (no indicator in two buckets).
//!
//! Repair keeps a copy of everything it removes under `DATA/lost+found/`: it cuts the WAL
//! at its first damaged record (the records after it are reported and kept there), moves
//! damaged checkpoints and files away, re-imports whatever still reads of them, rewrites
//! every backing file from the recovered state, and checks again.

use std::cell::Cell;
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::cache::BlockCache;
use crate::clock::SystemClock;
use crate::config::Config;
use crate::disk::Disk;
use crate::error::{Error, IoContext, Result};
use crate::ioc::IocType;
use crate::store::model::{Bucket, Loc, Tier};
use crate::store::recovery::{self, Mode};
use crate::store::state::State;
use crate::store::tier;
use crate::store::wal::segment;
use crate::store::{checkpoint, DataDirLock, Store};

#[derive(Debug, Default)]
pub struct CheckReport {
    /// What was looked at, one line each.
    pub summary: Vec<String>,
    /// What is wrong (empty: clean).
    pub problems: Vec<String>,
    /// What `--repair` did.
    pub repaired: Vec<String>,
}

impl CheckReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// What a check reports as it goes (a terminal shows it; `iocfs check` under systemd or in
/// a pipe prints only the summary).
pub trait Progress {
    /// A new step begins.
    fn phase(&self, what: &str);
    /// `done` of the `total` bytes of committed files were read (the long step).
    fn loaded(&self, done: u64, total: u64);
}

/// Check `config.data_dir`; with `repair`, fix what can be fixed and check again.
pub fn run(config: &Config, repair: bool, progress: &dyn Progress) -> Result<CheckReport> {
    let data = &config.data_dir;
    // What --repair writes, and what a check reads, must be out of other users' reach.
    crate::secure::trusted_dir(data, "data directory")?;
    for sub in crate::store::SUBDIRS.iter().chain(&["lost+found"]) {
        crate::secure::subdir(data, sub, false)?;
    }
    if !data.join("wal").is_dir() {
        return Err(Error::Invalid(format!(
            "{} is not an iocfs data directory (no wal/)",
            data.display()
        )));
    }
    // Held for the whole run: a daemon (re)starting meanwhile refuses, so it and a repair
    // never touch the same files.
    let lock = lock_for_check(data, repair)?;
    crate::failpoint::pause("check::locked");
    if !repair {
        return check(&Disk::real(), config, progress);
    }
    let mut repaired = Vec::new();
    progress.phase("repairing the write-ahead log");
    repaired.extend(repair_wal(data)?);
    progress.phase("setting checkpoints aside");
    repaired.extend(repair_checkpoints(data)?);
    progress.phase("recovering and rewriting every backing file");
    {
        let store = Store::open_with(
            Disk::real(),
            Arc::new(config.clone()),
            Arc::new(SystemClock),
            Mode::Salvage,
            lock.as_ref(),
        )?;
        repaired.extend(store.recovery.findings.iter().cloned());
        store.mark_all_dirty();
        store.shutdown()?;
        store.checkpoint()?;
        repaired.push(format!(
            "rewrote every backing file at sequence {}",
            store.last_commit().map_or(0, |c| c.upto)
        ));
    }
    let mut report = check(&Disk::real(), config, progress)?;
    report.repaired = repaired;
    Ok(report)
}

/// The data directory's lock, for the whole check. A read-only one (a backup on read-only
/// media) that can't take a lock file is checked without: no daemon can be writing to it.
fn lock_for_check(data: &Path, repair: bool) -> Result<Option<DataDirLock>> {
    match DataDirLock::take(data) {
        Ok(lock) => Ok(Some(lock)),
        Err(Error::Locked(_)) => Err(Error::Locked(format!(
            "{} is in use by a running iocfs (pid {}); stop it before checking",
            data.display(),
            fs::read_to_string(data.join("LOCK"))
                .unwrap_or_default()
                .trim()
        ))),
        Err(Error::Io { source, .. })
            if !repair && matches!(source.raw_os_error(), Some(libc::EROFS | libc::EACCES)) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// The check of a data directory on any file system (the power-cut simulator checks its
/// crash images with it), without a lock or progress.
pub fn check_on(disk: &Disk, config: &Config) -> Result<CheckReport> {
    struct Quiet;
    impl Progress for Quiet {
        fn phase(&self, _: &str) {}
        fn loaded(&self, _: u64, _: u64) {}
    }
    check(disk, config, &Quiet)
}

fn check(disk: &Disk, config: &Config, progress: &dyn Progress) -> Result<CheckReport> {
    let data = &config.data_dir;
    let mut report = CheckReport::default();
    progress.phase("scanning the write-ahead log");
    let wal_ok = check_wal(disk, data, &mut report)?;
    progress.phase("reading checkpoints");
    check_checkpoints(disk, data, &mut report)?;
    if !wal_ok {
        report.problems.push(
            "the committed files can't be checked against a damaged log: run with --repair".into(),
        );
        return Ok(report);
    }
    progress.phase("loading committed files");
    let cache = BlockCache::new(config.cache.size);
    let total = committed_bytes(disk, data);
    let done = Cell::new(0u64);
    let on_loaded = |n: u64| {
        done.set(done.get() + n);
        progress.loaded(done.get().min(total), total);
    };
    let recovered = match recovery::recover(disk, data, config, &cache, Mode::ReadOnly, &on_loaded)
    {
        Ok(r) => r,
        Err(e) => {
            report.problems.push(e.to_string());
            return Ok(report);
        }
    };
    let r = &recovered.report;
    report.summary.push(format!(
        "commit: state at sequence {} in the backing files, {} later records replay on top",
        r.committed_upto, r.replayed
    ));
    report.problems.extend(r.findings.iter().cloned());
    progress.phase("cross-checking the index");
    report.problems.extend(verify(&recovered.state, &cache));
    let st = &recovered.state;
    let mut counts = Vec::new();
    for b in Bucket::ALL {
        let n: u64 = IocType::ALL
            .iter()
            .map(|&ty| match b.tier() {
                None => st.live(ty).version.lines(),
                Some(tier) => st.tier(tier, ty).lines(),
            })
            .sum();
        counts.push(format!("{} {n}", b.name()));
    }
    report
        .summary
        .push(format!("indicators: {}", counts.join(", ")));
    Ok(report)
}

/// Bytes of the backing files under the bucket directories: what loading will read.
fn committed_bytes(disk: &Disk, data: &Path) -> u64 {
    Bucket::ALL
        .iter()
        .map(|b| data.join(b.name()))
        .filter_map(|dir| Some((disk.read_dir(&dir).ok()?, dir)))
        .flat_map(|(entries, dir)| entries.into_iter().map(move |e| dir.join(e.name)))
        .filter_map(|path| disk.metadata(&path).ok())
        .filter(|m| m.kind == crate::disk::Kind::File)
        .map(|m| m.len)
        .sum()
}

/// Frame-level check of every segment. False when the log is damaged before its tail.
fn check_wal(disk: &Disk, data: &Path, report: &mut CheckReport) -> Result<bool> {
    let dir = data.join("wal");
    let segments = segment::list(disk, &dir)?;
    let mut next: Option<u64> = None;
    let mut records = 0usize;
    let mut bytes = 0u64;
    for (i, (first, path)) in segments.iter().enumerate() {
        let buf = disk.read(path).ctx(|| format!("read {}", path.display()))?;
        if let Some(expected) = next.filter(|&n| n != *first) {
            report.problems.push(format!(
                "{}: starts at sequence {first}, expected {expected}: records are missing",
                path.display()
            ));
            return Ok(false);
        }
        match segment::scan(
            &buf,
            path,
            Some(next.unwrap_or(*first)),
            i + 1 == segments.len(),
        ) {
            Ok(scan) => {
                records += scan.records.len();
                // Records only: a segment may end in zeros written ahead of them.
                bytes += scan.valid_len as u64;
                if let Some(why) = scan.torn {
                    report.problems.push(format!(
                        "{}: torn tail at offset {} ({why}); a mount or --repair truncates it",
                        path.display(),
                        scan.valid_len
                    ));
                }
                next = Some(scan.records.last().map_or(*first, |r| r.seq + 1));
            }
            Err(e) => {
                report.problems.push(e.to_string());
                return Ok(false);
            }
        }
    }
    report.summary.push(format!(
        "wal: {} segments, {records} records, {bytes} bytes",
        segments.len()
    ));
    Ok(true)
}

fn check_checkpoints(disk: &Disk, data: &Path, report: &mut CheckReport) -> Result<()> {
    let dir = data.join("checkpoint");
    for path in checkpoint_files(disk, &dir)? {
        let bytes = disk
            .read(&path)
            .ctx(|| format!("read {}", path.display()))?;
        match checkpoint::decode(&bytes, &path) {
            Ok(s) => report.summary.push(format!(
                "checkpoint {}: sequence {}, {} partitions",
                path.display(),
                s.upto,
                s.parts.len()
            )),
            Err(e) => report
                .problems
                .push(format!("{e} (a mount ignores it; --repair sets it aside)")),
        }
    }
    Ok(())
}

fn checkpoint_files(disk: &Disk, dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    if let Ok(entries) = disk.read_dir(dir) {
        for e in entries {
            if e.name.to_string_lossy().ends_with(".ckpt") {
                out.push(dir.join(e.name));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Cut the log at its first damaged record; keep the cut bytes in lost+found.
fn repair_wal(data: &Path) -> Result<Vec<String>> {
    let dir = data.join("wal");
    let segments = segment::list(&Disk::real(), &dir)?;
    let mut done = Vec::new();
    let mut next: Option<u64> = None;
    for (i, (first, path)) in segments.iter().enumerate() {
        let buf = fs::read(path).ctx(|| format!("read {}", path.display()))?;
        let gap = next.is_some_and(|n| n != *first);
        let scan = if gap {
            None
        } else {
            // Scan as if last so a damaged record is reported with where it stops.
            segment::scan(&buf, path, Some(next.unwrap_or(*first)), true).ok()
        };
        let clean = scan.as_ref().filter(|s| s.torn.is_none());
        let Some(clean) = clean else {
            let cut_at = match (&scan, gap) {
                (Some(s), false) => s.valid_len,
                _ => first_bad_offset(&buf, path, next.unwrap_or(*first)),
            };
            let kept = cut_segment(data, path, &buf, cut_at)?;
            done.push(format!(
                "{}: cut at offset {cut_at}; {} damaged or unreadable bytes kept in {}",
                path.display(),
                buf.len() - cut_at,
                kept.display()
            ));
            for (_, later) in &segments[i + 1..] {
                let moved = recovery::move_to_lost_found(&Disk::real(), data, later)?;
                done.push(format!(
                    "{}: after the damage, records in it are dropped; kept as {}",
                    later.display(),
                    moved.display()
                ));
            }
            return Ok(done);
        };
        next = Some(clean.records.last().map_or(*first, |r| r.seq + 1));
    }
    Ok(done)
}

/// Offset of the first record that does not scan (used when a segment is out of sequence).
fn first_bad_offset(buf: &[u8], path: &Path, first: u64) -> usize {
    match segment::scan(buf, path, Some(first), true) {
        Ok(s) => s.valid_len,
        Err(Error::Corruption {
            offset: Some(o), ..
        }) => o as usize,
        Err(_) => segment::HEADER_LEN.min(buf.len()),
    }
}

fn cut_segment(data: &Path, path: &Path, buf: &[u8], at: usize) -> Result<PathBuf> {
    let disk = Disk::real();
    let lf = recovery::lost_found(&disk, data)?;
    let name = format!(
        "{}.cut-at-{at}",
        path.file_name().unwrap_or_default().to_string_lossy()
    );
    crate::atomic::replace_file(&disk, &lf, &name, |w| {
        w.write_all(buf.get(at..).unwrap_or_default())
    })?;
    let file = crate::atomic::open_existing(&disk, path)?;
    file.set_len(at as u64)
        .and_then(|()| file.sync_all())
        .ctx(|| format!("truncate {}", path.display()))?;
    Ok(lf.join(name))
}

/// Checkpoints are only an accelerator and the repair rewrites every file (new
/// generations), so all of them are set aside; a fresh one is written at the end.
fn repair_checkpoints(data: &Path) -> Result<Vec<String>> {
    let mut done = Vec::new();
    for path in checkpoint_files(&Disk::real(), &data.join("checkpoint"))? {
        let bytes = fs::read(&path).ctx(|| format!("read {}", path.display()))?;
        let moved = recovery::move_to_lost_found(&Disk::real(), data, &path)?;
        if let Err(e) = checkpoint::decode(&bytes, &path) {
            done.push(format!("{e}; moved to {}", moved.display()));
        }
    }
    Ok(done)
}

/// Cross-check the index against the sets: every entry points at a live slot or a tier
/// block that exists, every stored line is indexed exactly once, and per-partition line
/// counts add up. Returns one line per problem.
pub fn verify(state: &State, cache: &BlockCache) -> Vec<String> {
    let mut problems = Vec::new();
    let mut per_partition: HashMap<(Bucket, IocType), u64> = HashMap::new();
    for meta in state.index().values() {
        match meta.loc() {
            Loc::Live { ty, slot } => {
                if state.live(ty).times(slot).is_none() {
                    problems.push(format!(
                        "index points at a missing live/{} line (slot {slot})",
                        ty.file_name()
                    ));
                }
                *per_partition.entry((Bucket::Live, ty)).or_default() += 1;
            }
            Loc::Block { ty, block } => match state.block_tier(block) {
                Some((tier, dty)) if dty == ty && state.tier(tier, ty).block(block).is_some() => {
                    *per_partition.entry((tier.bucket(), ty)).or_default() += 1;
                }
                _ => problems.push(format!("index points at a missing {ty} block {block}")),
            },
        }
    }
    for ty in IocType::ALL {
        let set = state.live(ty);
        let indexed = per_partition.get(&(Bucket::Live, ty)).copied().unwrap_or(0);
        if set.lines() as u64 != indexed || set.version.lines() != indexed {
            problems.push(format!(
                "live/{}: {} lines, {} indexed",
                ty.file_name(),
                set.version.lines(),
                indexed
            ));
        }
        let _ = set.for_each_line(|v, slot| {
            let meta = state.index().get(&state.key(ty, v));
            if meta.map(|m| m.loc()) != Some(Loc::Live { ty, slot }) {
                problems.push(format!(
                    "live/{}: line not indexed at its slot",
                    ty.file_name()
                ));
            }
        });
        for tier in Tier::ALL {
            let bucket = tier.bucket();
            let v = state.tier(tier, ty);
            let good: u64 = v
                .blocks()
                .iter()
                .filter(|b| !b.bad)
                .map(|b| u64::from(b.lines))
                .sum();
            let indexed = per_partition.get(&(bucket, ty)).copied().unwrap_or(0);
            if good != indexed {
                problems.push(format!(
                    "{bucket}/{}: {good} lines, {indexed} indexed",
                    bucket.backing_name(ty)
                ));
            }
            for block in v.blocks().iter().filter(|b| !b.bad) {
                if state.block_tier(block.id) != Some((tier, ty)) {
                    problems.push(format!(
                        "{bucket}/{}: block {} is not in the directory",
                        bucket.backing_name(ty),
                        block.id
                    ));
                }
                let Ok(raw) = block.raw(cache) else { continue };
                for line in tier::lines(&raw) {
                    let found = state.index().get(&state.key(ty, line)).map(|m| m.loc());
                    if found
                        != Some(Loc::Block {
                            ty,
                            block: block.id,
                        })
                    {
                        problems.push(format!(
                            "{bucket}/{}: a line of block {} is indexed elsewhere (stored twice?)",
                            bucket.backing_name(ty),
                            block.id
                        ));
                        break;
                    }
                }
            }
        }
    }
    problems
}
