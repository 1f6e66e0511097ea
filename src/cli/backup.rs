//! `iocfs backup --mount MOUNT DEST` (asks the running daemon) and `iocfs backup --data DATA
//! DEST` (offline): DEST becomes a data directory holding every write acknowledged before the
//! command started (see `store::backup`), then `iocfs check` verifies it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::clock::SystemClock;
use crate::config::Config;
use crate::error::{Error, IoContext, Result};
use crate::store::Store;

/// DEST as an absolute path (the daemon's working directory is not the caller's).
pub fn absolute_dest(dest: &Path) -> Result<PathBuf> {
    let name = dest
        .file_name()
        .ok_or_else(|| Error::Invalid(format!("{}: not a directory name", dest.display())))?;
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let parent = parent
        .canonicalize()
        .ctx(|| format!("the parent of {} must exist", dest.display()))?;
    Ok(parent.join(name))
}

/// Ask the daemon mounted at `mount` to back itself up into `dest`; returns when it is done.
/// A `dest` inside the mount is refused before the daemon is asked: the daemon would write
/// the backup through its own mount (a directory made in `sources/` declares a source).
pub fn online(mount: &Path, dest: &Path) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;
    let dev = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.dev())
            .ctx(|| format!("stat {}", p.display()))
    };
    if let Some(parent) = dest.parent() {
        if dev(parent)? == dev(mount)? {
            return Err(Error::Invalid(format!(
                "{} is inside the mount {}: back up to a directory outside it",
                dest.display(),
                mount.display()
            )));
        }
    }
    let ctl = mount.join(".iocfs/ctl");
    let mut f = std::fs::OpenOptions::new().write(true).open(&ctl).ctx(|| {
        format!(
            "open {} (is iocfs mounted there? are you root?)",
            ctl.display()
        )
    })?;
    f.write_all(format!("backup {}\n", dest.display()).as_bytes())
        .ctx(|| format!("backup into {} (the daemon's log says why)", dest.display()))
}

/// Back up a data directory nobody has mounted: recover it, commit, copy.
pub fn offline(config: &Config, dest: &Path) -> Result<crate::store::backup::BackupReport> {
    let store = Store::open(Arc::new(config.clone()), Arc::new(SystemClock))?;
    let report = store.backup(dest)?;
    store.shutdown()?;
    Ok(report)
}
