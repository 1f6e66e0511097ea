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

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::model::PartId;
use super::mutation::{Manifest, Mutation, Op};
use super::wal::{record, segment};
use super::{recovery, Store, SUBDIRS};
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
        prepare(dest)?;
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
                    place(&self.data_dir.join(&rel), &dest.join(&rel), &mut report)?;
                }
            }
            crate::failpoint::pause("backup::pause");
            if let Some(ckpt) = newest_checkpoint(&self.data_dir.join("checkpoint"), manifest.upto)?
            {
                let rel = Path::new("checkpoint").join(ckpt.file_name().unwrap_or_default());
                place(&ckpt, &dest.join(rel), &mut report)?;
            }
            write_log(&dest.join("wal"), manifest, self.clock.now())?;
            Ok(report)
        })?;
        copy_views(
            &self.data_dir.join("views"),
            &dest.join("views"),
            &mut report,
        )?;
        for sub in SUBDIRS.iter().copied().chain(["views"]) {
            let dir = dest.join(sub);
            if dir.is_dir() {
                crate::atomic::fsync_dir(&dir)?;
            }
        }
        let marker = dest.join(INCOMPLETE);
        fs::remove_file(&marker).ctx(|| format!("remove {}", marker.display()))?;
        crate::atomic::fsync_dir(dest)?;
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
fn prepare(dest: &Path) -> Result<()> {
    crate::secure::trusted_parent(dest, "backup destination")?;
    match fs::read_dir(dest) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::Invalid(format!(
                    "backup destination {} is not empty; give a new or empty directory",
                    dest.display()
                )));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use std::os::unix::fs::DirBuilderExt;
            fs::DirBuilder::new()
                .mode(0o700)
                .create(dest)
                .ctx(|| format!("create {}", dest.display()))?;
        }
        Err(e) => return Err(Error::io(format!("open {}", dest.display()), e)),
    }
    crate::secure::trusted_dir(dest, "backup destination")?;
    fs::set_permissions(dest, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .ctx(|| format!("chmod {}", dest.display()))?;
    let marker = dest.join(INCOMPLETE);
    crate::atomic::create_new(&marker, 0o600)?
        .write_all(
            b"an iocfs backup is being written here; if this file is still present, it did not finish\n",
        )
        .ctx(|| format!("write {}", marker.display()))?;
    for sub in SUBDIRS {
        let dir = dest.join(sub);
        fs::create_dir(&dir).ctx(|| format!("create {}", dir.display()))?;
    }
    crate::atomic::fsync_dir(dest)
}

/// Hard-link `from` to `to` (immutable committed file), or copy it across file systems.
fn place(from: &Path, to: &Path, report: &mut BackupReport) -> Result<()> {
    if let Some(dir) = to.parent() {
        fs::create_dir_all(dir).ctx(|| format!("create {}", dir.display()))?;
    }
    let len = fs::metadata(from)
        .ctx(|| format!("stat {}", from.display()))?
        .len();
    match fs::hard_link(from, to) {
        Ok(()) => report.linked += 1,
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            let mut out = crate::atomic::create_new(to, 0o644)?;
            File::open(from)
                .and_then(|mut f| std::io::copy(&mut f, &mut out))
                .and_then(|_| out.sync_all())
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
    report.bytes += len;
    Ok(())
}

/// The newest checkpoint not ahead of the commit.
fn newest_checkpoint(dir: &Path, upto: u64) -> Result<Option<PathBuf>> {
    let mut best: Option<(u64, PathBuf)> = None;
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(None);
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(n) = name
            .strip_suffix(".ckpt")
            .and_then(|d| d.parse::<u64>().ok())
        else {
            continue;
        };
        if n <= upto && best.as_ref().is_none_or(|(b, _)| n > *b) {
            best = Some((n, e.path()));
        }
    }
    Ok(best.map(|(_, p)| p))
}

/// One segment with one commit record: DEST's whole log.
fn write_log(dir: &Path, manifest: &Manifest, now: u64) -> Result<()> {
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
    let mut f = crate::atomic::create_new(&path, 0o644)?;
    f.write_all(&bytes)
        .and_then(|()| f.sync_all())
        .ctx(|| format!("write {}", path.display()))
}

/// The published view files (derived data: a backup without them rebuilds them).
fn copy_views(from: &Path, to: &Path, report: &mut BackupReport) -> Result<()> {
    let Ok(views) = fs::read_dir(from) else {
        return Ok(());
    };
    for view in views.flatten().filter(|e| e.path().is_dir()) {
        for file in fs::read_dir(view.path()).into_iter().flatten().flatten() {
            let name = file.file_name().to_string_lossy().into_owned();
            if crate::atomic::is_temp_name(&name) || !file.path().is_file() {
                continue;
            }
            place(&file.path(), &to.join(view.file_name()).join(&name), report)?;
        }
        crate::atomic::fsync_dir(&to.join(view.file_name()))?;
    }
    Ok(())
}
