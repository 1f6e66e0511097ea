//! The one place where backing files are replaced. The rule (README "Durability"): a backing file is
//! never modified in place; a new version is written to a temp file in the same directory,
//! fsync'd, renamed over the old name, and the directory is fsync'd so the rename itself is
//! durable. A crash at any point leaves the old file or the new one, never neither.
//!
//! Temp files are named `.<name>.<tag>.tmp` so recovery can recognise (and remove, or for a
//! journaled commit, finish) them.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

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
pub fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .ctx(|| format!("fsync directory {}", dir.display()))
}

/// Create `path` (truncating any leftover), fill it with `write`, flush and fsync it.
/// Returns the open file so callers can keep reading the version they wrote.
pub fn write_synced(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .ctx(|| format!("create {}", path.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, &file);
    write(&mut out)
        .and_then(|()| out.flush())
        .ctx(|| format!("write {}", path.display()))?;
    drop(out);
    file.sync_all()
        .ctx(|| format!("fsync {}", path.display()))?;
    Ok(file)
}

/// Rename without the directory fsync: for a group of renames, fsync each directory once after.
pub fn rename(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to).ctx(|| format!("rename {} to {}", from.display(), to.display()))
}

/// Durably replace `dir/name` with what `write` produces. On error the old file is untouched
/// and the temp file is removed.
pub fn replace_file(
    dir: &Path,
    name: &str,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<File> {
    let tmp = temp_path(dir, name, &std::process::id().to_string());
    let result = write_synced(&tmp, write).and_then(|file| {
        rename(&tmp, &dir.join(name))?;
        fsync_dir(dir)?;
        Ok(file)
    });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Remove temp files left by a crash; returns their names for the log.
pub fn remove_leftover_temps(dir: &Path) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(Error::io(format!("list {}", dir.display()), e)),
    };
    for entry in entries {
        let entry = entry.ctx(|| format!("list {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_temp_name(&name) {
            fs::remove_file(entry.path()).ctx(|| format!("remove {}", entry.path().display()))?;
            removed.push(name);
        }
    }
    if !removed.is_empty() {
        fsync_dir(dir)?;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};
    use std::time::Duration;

    #[test]
    fn replace_writes_new_content_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("f"), b"old").unwrap();
        replace_file(dir.path(), "f", |w| w.write_all(b"new")).unwrap();
        assert_eq!(fs::read(dir.path().join("f")).unwrap(), b"new");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn failed_write_keeps_old_file() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("f"), b"old").unwrap();
        let err = replace_file(dir.path(), "f", |w| {
            w.write_all(b"partial")?;
            Err(io::Error::other("boom"))
        })
        .unwrap_err();
        assert!(err.to_string().contains("boom"), "{err}");
        assert_eq!(fs::read(dir.path().join("f")).unwrap(), b"old");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn leftover_temps_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(temp_path(dir.path(), "ipv4.txt", "c7"), b"x").unwrap();
        fs::write(dir.path().join("ipv4.txt"), b"keep").unwrap();
        let removed = remove_leftover_temps(dir.path()).unwrap();
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
            replace_file(&dir, "f", |w| w.write_all(body.as_bytes())).unwrap();
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
