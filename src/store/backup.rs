//! Online backup (README "Backup and restore"): a new data directory holding every write
//! acknowledged before the backup started, consistent at one commit point.
//!
//! 1. DEST is created (or must be empty) with a `BACKUP-INCOMPLETE` marker: a mount refuses
//!    a data directory holding it, so a backup cut short by a crash is never mistaken for a
//!    good one.
//! 2. A commit writes every backing file that lags; holding the commit lock (writers go
//!    on: they need the log, not the lock), the files its manifest lists are hard-linked
//!    into DEST — they are immutable, a commit replaces them by rename — or copied when DEST
//!    is on another file system. The newest checkpoint the manifest covers and the
//!    published view files come along (both optional accelerators).
//! 3. DEST's log is one segment holding one commit record with that manifest: recovery of
//!    DEST loads exactly those files and replays nothing.
//! 4. Everything is fsync'd, the marker removed and DEST's directory fsync'd.

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::model::PartId;
use super::mutation::{Manifest, Mutation, Op};
use super::wal::{record, segment};
use super::{recovery, Store, SUBDIRS};
use crate::disk::{Disk, Kind, Writer};
use crate::error::{Error, IoContext, Result};

/// Present while a backup is being made; a data directory holding it is refused.
pub const INCOMPLETE: &str = "BACKUP-INCOMPLETE";

#[derive(Debug, Default, Clone)]
pub struct BackupReport {
    /// The state DEST holds: every record up to this sequence.
    pub upto: u64,
    pub linked: usize,
    pub copied: usize,
    pub bytes: u64,
    pub millis: u64,
}

impl Store {
    /// Make `dest` a data directory holding this store's state as of now.
    pub fn backup(&self, dest: &Path) -> Result<BackupReport> {
        let started = Instant::now();
        let disk = &self.disk;
        prepare(disk, dest)?;
        let mut report = self.flusher.with_committed(self, |manifest| {
            let mut report = BackupReport {
                upto: manifest.upto,
                ..BackupReport::default()
            };
            for id in PartId::all() {
                if manifest.file_of(id).generation == 0 {
                    continue;
                }
                for name in recovery::backing_names(id) {
                    let rel = Path::new(id.dir()).join(name);
                    place(
                        disk,
                        &self.data_dir.join(&rel),
                        &dest.join(&rel),
                        &mut report,
                    )?;
                }
            }
            crate::failpoint::pause("backup::pause");
            let checkpoints = self.data_dir.join("checkpoint");
            if let Some(ckpt) = newest_checkpoint(disk, &checkpoints, manifest.upto)? {
                let rel = Path::new("checkpoint").join(ckpt.file_name().unwrap_or_default());
                place(disk, &ckpt, &dest.join(rel), &mut report)?;
            }
            write_log(disk, &dest.join("wal"), manifest, self.clock.now())?;
            Ok(report)
        })?;
        copy_views(
            disk,
            &self.data_dir.join("views"),
            &dest.join("views"),
            &mut report,
        )?;
        for sub in SUBDIRS.iter().copied().chain(["views"]) {
            let dir = dest.join(sub);
            if disk.is_dir(&dir) {
                crate::atomic::fsync_dir(disk, &dir)?;
            }
        }
        let marker = dest.join(INCOMPLETE);
        disk.remove_file(&marker)
            .ctx(|| format!("remove {}", marker.display()))?;
        crate::atomic::fsync_dir(disk, dest)?;
        report.millis = started.elapsed().as_millis() as u64;
        log::info!(
            "backup to {}: state at sequence {}, {} files linked, {} copied ({} bytes) in {} ms",
            dest.display(),
            report.upto,
            report.linked,
            report.copied,
            report.bytes,
            report.millis
        );
        Ok(report)
    }
}

/// DEST must not exist, or be an empty directory; it gets the layout and the marker. Like a
/// data directory, it must be out of other users' reach (`secure`): whatever they planted
/// there would be written through by root.
fn prepare(disk: &Disk, dest: &Path) -> Result<()> {
    if disk.is_real() {
        crate::secure::trusted_parent(dest, "backup destination")?;
    }
    match disk.read_dir(dest) {
        Ok(entries) => {
            if !entries.is_empty() {
                return Err(Error::Invalid(format!(
                    "backup destination {} is not empty; give a new or empty directory",
                    dest.display()
                )));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            disk.create_dir(dest, 0o700)
                .ctx(|| format!("create {}", dest.display()))?;
        }
        Err(e) => return Err(Error::io(format!("open {}", dest.display()), e)),
    }
    disk.trusted_dir(dest, "backup destination", false)?;
    if disk.is_real() {
        std::fs::set_permissions(dest, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .ctx(|| format!("chmod {}", dest.display()))?;
    }
    let marker = dest.join(INCOMPLETE);
    crate::atomic::create_new(disk, &marker, 0o600)?
        .write_all_at(
            b"an iocfs backup is being written here; if this file is still present, it did not finish\n",
            0,
        )
        .ctx(|| format!("write {}", marker.display()))?;
    for sub in SUBDIRS {
        let dir = dest.join(sub);
        disk.create_dir(&dir, 0o750)
            .ctx(|| format!("create {}", dir.display()))?;
    }
    crate::atomic::fsync_dir(disk, dest)
}

/// Hard-link `from` to `to` (immutable committed file), or copy it across file systems.
fn place(disk: &Disk, from: &Path, to: &Path, report: &mut BackupReport) -> Result<()> {
    if let Some(dir) = to.parent() {
        create_dir_all(disk, dir)?;
    }
    let meta = disk
        .metadata(from)
        .ctx(|| format!("stat {}", from.display()))?;
    match disk.hard_link(from, to) {
        Ok(()) => report.linked += 1,
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            let out = crate::atomic::create_new(disk, to, 0o644)?;
            disk.open_read(from)
                .and_then(|f| {
                    std::io::copy(&mut crate::disk::Reader::new(f), &mut Writer::new(&*out))
                })
                // The mtime is the content's last change, which a restore shows again.
                .and_then(|_| match meta.mtime_secs() {
                    0 => Ok(()),
                    t => out.set_mtime(t),
                })
                .and_then(|()| out.sync_all())
                .ctx(|| format!("copy {} to {}", from.display(), to.display()))?;
            report.copied += 1;
        }
        Err(e) => {
            return Err(Error::io(
                format!("link {} to {}", from.display(), to.display()),
                e,
            ))
        }
    }
    report.bytes += meta.len;
    Ok(())
}

fn create_dir_all(disk: &Disk, dir: &Path) -> Result<()> {
    if disk.is_dir(dir) {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dir_all(disk, parent)?;
    }
    match disk.create_dir(dir, 0o750) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            Err(Error::io(format!("create {}", dir.display()), e))
        }
        _ => Ok(()),
    }
}

/// The newest checkpoint not ahead of the commit.
fn newest_checkpoint(disk: &Disk, dir: &Path, upto: u64) -> Result<Option<PathBuf>> {
    let mut best: Option<(u64, PathBuf)> = None;
    let Ok(entries) = disk.read_dir(dir) else {
        return Ok(None);
    };
    for e in entries {
        let name = e.name.to_string_lossy().into_owned();
        let Some(n) = name
            .strip_suffix(".ckpt")
            .and_then(|d| d.parse::<u64>().ok())
        else {
            continue;
        };
        if n <= upto && best.as_ref().is_none_or(|(b, _)| n > *b) {
            best = Some((n, dir.join(&e.name)));
        }
    }
    Ok(best.map(|(_, p)| p))
}

/// One segment with one commit record: DEST's whole log.
fn write_log(disk: &Disk, dir: &Path, manifest: &Manifest, now: u64) -> Result<()> {
    let seq = manifest.upto + 1;
    let mut bytes = segment::header().to_vec();
    let m = Mutation {
        ts: now,
        op: Op::Commit {
            manifest: Box::new(manifest.clone()),
        },
    };
    record::encode_with(seq, &mut bytes, |out| m.encode(out));
    let path = dir.join(segment::file_name(seq));
    let f = crate::atomic::create_new(disk, &path, 0o644)?;
    f.write_all_at(&bytes, 0)
        .and_then(|()| f.sync_all())
        .ctx(|| format!("write {}", path.display()))
}

/// The published view files (derived data: a backup without them rebuilds them).
fn copy_views(disk: &Disk, from: &Path, to: &Path, report: &mut BackupReport) -> Result<()> {
    let Ok(views) = disk.read_dir(from) else {
        return Ok(());
    };
    for view in views.into_iter().filter(|e| e.kind == Kind::Dir) {
        let dir = from.join(&view.name);
        for file in disk.read_dir(&dir).into_iter().flatten() {
            let name = file.name.to_string_lossy().into_owned();
            if crate::atomic::is_temp_name(&name) || file.kind != Kind::File {
                continue;
            }
            place(
                disk,
                &dir.join(&name),
                &to.join(&view.name).join(&name),
                report,
            )?;
        }
        crate::atomic::fsync_dir(disk, &to.join(&view.name))?;
    }
    Ok(())
}
