//! Fault injection for tests, in the style of raft-engine's failpoints. Only builds with the
//! `testing` feature can arm one (through `.iocfs/ctl`: `failpoint NAME ERRNO|off`); in release
//! builds `check` compiles to nothing.
//!
//! Names in use: `wal::write`, `wal::zero_fill`, `wal::sync`, `commit::write`; panics:
//! `apply::panic`, `aging::panic` (see [`panic_if`]); pauses: `backup::pause` (see [`pause`]).

use std::io;

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

/// Panic if `name` is armed (any errno arms it): how tests exercise the crash policy.
#[inline]
pub fn panic_if(name: &str) {
    if let Err(e) = check(name) {
        panic!("failpoint {name}: injected panic ({e})");
    }
}

/// Wait while `name` is armed (at most 30 s): how tests hold an operation midway, e.g. to
/// SIGKILL the daemon in the middle of a backup.
pub fn pause(name: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while check(name).is_err() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
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
