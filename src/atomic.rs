//! The one place where backing files are replaced. The rule (README "Durability"): a backing file is
//! never modified in place; a new version is written to a temp file in the same directory,
//! fsync'd, renamed over the old name, and the directory is fsync'd so the rename itself is
//! durable. A crash at any point leaves the old file or the new one, never neither.
//!
//! Temp files are named `.<name>.<tag>.tmp` so recovery can recognise (and remove, or for a
//! journaled commit, finish) them.
//!
//! Every file iocfs creates is created here ([`create_new`]): `openat` relative to its
//! directory (itself opened without following a symlink) with `O_CREAT|O_EXCL|O_NOFOLLOW`,
//! so a name planted ahead of iocfs (a symlink to /etc/shadow) is never followed or
//! truncated: it is removed (the link itself) and the file created anew.

use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::disk::{Disk, Handle, Writer};
use crate::error::{Error, IoContext, Result};

const TEMP_SUFFIX: &str = ".tmp";

/// Path of the temp file that will become `dir/name`.
pub fn temp_path(dir: &Path, name: &str, tag: &str) -> PathBuf {
    dir.join(format!(".{name}.{tag}{TEMP_SUFFIX}"))
}

/// Whether a directory entry is one of our temp files.
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(TEMP_SUFFIX)
}

/// fsync a directory, making renames, creations and deletions in it durable.
pub fn fsync_dir(disk: &Disk, dir: &Path) -> Result<()> {
    disk.sync_dir(dir)
        .ctx(|| format!("fsync directory {}", dir.display()))
}

/// Create the new file `path` for reading and writing (mode `mode`): never through a symlink,
/// never over an existing file. A leftover of the same name (a temp a crash left, or anything
/// planted there) is unlinked first, the name only, whatever it points to.
pub fn create_new(disk: &Disk, path: &Path, mode: u32) -> Result<Handle> {
    disk.create_new(path, mode)
        .ctx(|| format!("create {}", path.display()))
}

/// Open an existing regular file of iocfs's for writing, never through a symlink.
pub fn open_existing(disk: &Disk, path: &Path) -> Result<Handle> {
    disk.open_rw(path).map_err(|e| {
        if e.kind() == io::ErrorKind::InvalidInput {
            Error::Unsafe(format!("{}: {e}", path.display()))
        } else {
            Error::io(format!("open {}", path.display()), e)
        }
    })
}

/// Create `path` (see [`create_new`]), fill it with `write`, flush and fsync it.
/// Returns the open file so callers can keep reading the version they wrote.
pub fn write_synced(
    disk: &Disk,
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<Handle> {
    write_synced_dated(disk, path, 0, write)
}

/// [`write_synced`], the file dated `mtime` (Unix seconds; 0: left at the write's time).
pub fn write_synced_dated(
    disk: &Disk,
    path: &Path,
    mtime: u64,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<Handle> {
    let file = create_new(disk, path, 0o644)?;
    let mut out = BufWriter::with_capacity(1 << 20, Writer::new(&*file));
    write(&mut out)
        .and_then(|()| out.flush())
        .ctx(|| format!("write {}", path.display()))?;
    drop(out);
    if mtime > 0 {
        file.set_mtime(mtime)
            .ctx(|| format!("set the mtime of {}", path.display()))?;
    }
    file.sync_all()
        .ctx(|| format!("fsync {}", path.display()))?;
    Ok(file)
}

/// Rename without the directory fsync: for a group of renames, fsync each directory once after.
pub fn rename(disk: &Disk, from: &Path, to: &Path) -> Result<()> {
    disk.rename(from, to)
        .ctx(|| format!("rename {} to {}", from.display(), to.display()))
}

/// Durably replace `dir/name` with what `write` produces. On error the old file is untouched
/// and the temp file is removed.
pub fn replace_file(
    disk: &Disk,
    dir: &Path,
    name: &str,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<Handle> {
    let tmp = temp_path(dir, name, &std::process::id().to_string());
    let result = write_synced(disk, &tmp, write).and_then(|file| {
        rename(disk, &tmp, &dir.join(name))?;
        fsync_dir(disk, dir)?;
        Ok(file)
    });
    if result.is_err() {
        let _ = disk.remove_file(&tmp);
    }
    result
}

/// Remove temp files left by a crash; returns their names for the log.
pub fn remove_leftover_temps(disk: &Disk, dir: &Path) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    let entries = match disk.read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(Error::io(format!("list {}", dir.display()), e)),
    };
    for entry in entries {
        let name = entry.name.to_string_lossy().into_owned();
        if is_temp_name(&name) {
            let path = dir.join(&entry.name);
            disk.remove_file(&path)
                .ctx(|| format!("remove {}", path.display()))?;
            removed.push(name);
        }
    }
    if !removed.is_empty() {
        fsync_dir(disk, dir)?;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::process::{Command, Stdio};
    use std::time::Duration;

    fn real() -> Disk {
        Disk::real()
    }

    #[test]
    fn replace_writes_new_content_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("f"), b"old").unwrap();
        replace_file(&real(), dir.path(), "f", |w| w.write_all(b"new")).unwrap();
        assert_eq!(fs::read(dir.path().join("f")).unwrap(), b"new");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn failed_write_keeps_old_file() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("f"), b"old").unwrap();
        let err = replace_file(&real(), dir.path(), "f", |w| {
            w.write_all(b"partial")?;
            Err(io::Error::other("boom"))
        })
        .unwrap_err();
        assert!(err.to_string().contains("boom"), "{err}");
        assert_eq!(fs::read(dir.path().join("f")).unwrap(), b"old");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_planted_symlink_is_replaced_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"secret").unwrap();
        let tmp = temp_path(dir.path(), "f", "c9");
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        write_synced(&real(), &tmp, |w| w.write_all(b"mine")).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"secret");
        assert!(!fs::symlink_metadata(&tmp).unwrap().file_type().is_symlink());
        assert_eq!(fs::read(&tmp).unwrap(), b"mine");
        std::os::unix::fs::symlink(&victim, dir.path().join("link")).unwrap();
        assert!(open_existing(&real(), &dir.path().join("link")).is_err());
        assert_eq!(fs::read(&victim).unwrap(), b"secret");
    }

    #[test]
    fn leftover_temps_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(temp_path(dir.path(), "ipv4.txt", "c7"), b"x").unwrap();
        fs::write(dir.path().join("ipv4.txt"), b"keep").unwrap();
        let removed = remove_leftover_temps(&real(), dir.path()).unwrap();
        assert_eq!(removed, vec![".ipv4.txt.c7.tmp".to_string()]);
        assert!(dir.path().join("ipv4.txt").exists());
    }

    /// Child side of `killed_writer_leaves_old_or_new_never_neither`: rewrites the file forever.
    #[test]
    #[ignore = "helper process for the crash test"]
    fn atomic_crash_child() {
        let Some(dir) = std::env::var_os("IOCFS_ATOMIC_CHILD_DIR") else {
            return;
        };
        let dir = PathBuf::from(dir);
        for round in 0u64.. {
            let body = format!("{round}\n").repeat(20_000);
            replace_file(&real(), &dir, "f", |w| w.write_all(body.as_bytes())).unwrap();
        }
    }

    #[test]
    fn killed_writer_leaves_old_or_new_never_neither() {
        let dir = tempfile::tempdir().unwrap();
        let initial = "0\n".repeat(20_000);
        fs::write(dir.path().join("f"), &initial).unwrap();
        let exe = std::env::current_exe().unwrap();
        for attempt in 0..8u64 {
            let mut child = Command::new(&exe)
                .args([
                    "--exact",
                    "atomic::tests::atomic_crash_child",
                    "--ignored",
                    "--nocapture",
                ])
                .env("IOCFS_ATOMIC_CHILD_DIR", dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis(30 + attempt * 17));
            child.kill().unwrap();
            child.wait().unwrap();
            let body = fs::read_to_string(dir.path().join("f")).unwrap();
            let first = body.lines().next().unwrap().to_string();
            assert_eq!(
                body,
                format!("{first}\n").repeat(20_000),
                "torn file after kill {attempt}"
            );
        }
    }
}
