//! Fault injection for tests, in the style of raft-engine's failpoints. Only builds with the
//! `testing` feature can arm one (through `.iocfs/ctl`: `failpoint NAME ERRNO|off`); in release
//! builds `check` compiles to nothing.
//!
//! I/O failpoints sit on the I/O seam ([`io`], called by `disk::real`): `wal::write`,
//! `wal::zero_fill`, `wal::sync`, `commit::write`. Panics:
//! `apply::panic`, `aging::panic` (see [`panic_if`]); pauses (see [`pause`]): `backup::pause`,
//! `wal::sync_pause`, `live::copy`, `tier::read`, `check::locked`, `views::build`.

use std::io;
use std::path::Path;

#[cfg(feature = "testing")]
mod armed {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};

    pub(super) fn table() -> &'static Mutex<HashMap<String, i32>> {
        static TABLE: OnceLock<Mutex<HashMap<String, i32>>> = OnceLock::new();
        TABLE.get_or_init(|| Mutex::new(HashMap::new()))
    }
}

/// Fail with the armed errno if `name` is armed.
#[inline]
pub fn check(name: &str) -> io::Result<()> {
    #[cfg(feature = "testing")]
    {
        let table = crate::sync::lock(armed::table());
        if let Some(&errno) = table.get(name) {
            return Err(io::Error::from_raw_os_error(errno));
        }
    }
    let _ = name;
    Ok(())
}

/// The operations of the I/O seam that failpoints can fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoOp {
    Write,
    /// The WAL's zeros written ahead of its records.
    Zeros,
    /// fdatasync.
    SyncData,
}

/// Called by the real file system before `op` on `path`: fails with the errno of the
/// failpoint that names it, if armed. `wal::write`, `wal::zero_fill` and `wal::sync` are a
/// write, a zero fill and an fdatasync of a WAL segment; `commit::write` a write of a commit's
/// temp file (`.<name>.c<seq>.tmp` in a bucket directory).
#[inline]
pub fn io(op: IoOp, path: &Path) -> io::Result<()> {
    #[cfg(feature = "testing")]
    if let Some(name) = io_name(op, path) {
        return check(name);
    }
    let _ = (op, path);
    Ok(())
}

#[cfg(feature = "testing")]
fn io_name(op: IoOp, path: &Path) -> Option<&'static str> {
    let dir = path.parent()?.file_name()?.to_str()?;
    let name = path.file_name()?.to_str()?;
    match (op, dir) {
        (IoOp::Write, "wal") => Some("wal::write"),
        (IoOp::Zeros, "wal") => Some("wal::zero_fill"),
        (IoOp::SyncData, "wal") => Some("wal::sync"),
        (IoOp::Write, "live" | "chaud" | "tiede" | "froid") => {
            let tag = name.strip_suffix(".tmp")?.rsplit('.').next()?;
            let digits = tag.strip_prefix('c')?;
            (name.starts_with('.')
                && !digits.is_empty()
                && digits.bytes().all(|b| b.is_ascii_digit()))
            .then_some("commit::write")
        }
        _ => None,
    }
}

/// Panic if `name` is armed (any errno arms it): how tests exercise the crash policy.
#[inline]
pub fn panic_if(name: &str) {
    if let Err(e) = check(name) {
        panic!("failpoint {name}: injected panic ({e})");
    }
}

/// Test builds: wait here while `name` is armed (at most 30 s: how tests hold an operation
/// midway, e.g. to SIGKILL the daemon in the middle of a backup), and while the file
/// `$IOCFS_PAUSE_DIR/<name>` exists, after creating `<name>.reached` beside it: a test (in
/// any process, the daemon or `iocfs check`) creates the file, waits for `.reached`, checks
/// what must still work while this thread is stuck here, then removes the file. Release
/// builds compile this to nothing.
pub fn pause(name: &str) {
    if check(name).is_err() {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while check(name).is_err() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
    #[cfg(feature = "testing")]
    {
        static DIR: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();
        let Some(dir) = DIR.get_or_init(|| std::env::var_os("IOCFS_PAUSE_DIR").map(Into::into))
        else {
            return;
        };
        let gate = dir.join(name);
        if !gate.exists() {
            return;
        }
        let _ = std::fs::write(dir.join(format!("{name}.reached")), b"");
        while gate.exists() {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }
}

/// Arm (`Some(errno)`) or disarm (`None`) a failpoint. Returns false in builds without `testing`.
pub fn set(name: &str, errno: Option<i32>) -> bool {
    #[cfg(feature = "testing")]
    {
        let mut table = crate::sync::lock(armed::table());
        match errno {
            Some(e) => table.insert(name.to_string(), e),
            None => table.remove(name),
        };
        true
    }
    #[cfg(not(feature = "testing"))]
    {
        let _ = (name, errno);
        false
    }
}
