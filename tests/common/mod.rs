//! Harness for the mounted tests: one `iocfs mount` per test, in its own temp dir, always
//! unmounted at the end (also when the test panics).
//!
//! ```ignore
//! let Some(d) = Daemon::start() else { return };  // None: FUSE unavailable, test skipped
//! d.sh("echo 1.2.3.4 >> live/ipv4.txt");
//! assert_eq!(d.lines("live/ipv4.txt"), ["1.2.3.4"]);
//! ```
//!
//! Without `/dev/fuse` or root the tests print a skip line and pass; set
//! `IOCFS_REQUIRE_FUSE=1` (CI) to make that a failure instead.

// Each test file is its own crate and uses a different part of this module.
#![allow(dead_code)]

pub mod datadir;
pub mod files;
pub mod ops;
pub mod readers;
pub mod rng;
pub mod tools;

// As for dead_code: each test crate uses some of them.
#[allow(unused_imports)]
pub use datadir::{
    checkpoints, copy_dir, files_with_ext, wal_records, wal_records_end, wal_segments,
};
#[allow(unused_imports)]
pub use files::{open_ro, split_lines};
#[allow(unused_imports)]
pub use rng::Rng;

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::mount::{umount2, MntFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

pub const BIN: &str = env!("CARGO_BIN_EXE_iocfs");
/// How often waits poll.
pub const POLL: Duration = Duration::from_millis(20);
/// Longest wait for a mount to answer, or for a process to exit.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// The nine file names of every bucket directory.
pub const TYPE_FILES: [&str; 9] = [
    "ipv4.txt",
    "ipv6.txt",
    "domain.txt",
    "url.txt",
    "email.txt",
    "md5.txt",
    "sha1.txt",
    "sha256.txt",
    "sha512.txt",
];
pub const BUCKETS: [&str; 4] = ["live", "chaud", "tiede", "froid"];

/// Can this process mount FUSE filesystems? If not: `Err(reason)`.
fn fuse_usable() -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("not running as root".into());
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .map(drop)
        .map_err(|e| format!("cannot open /dev/fuse read-write: {e}"))
}

/// True if mounted tests can run; otherwise prints why and returns false, or panics when
/// `IOCFS_REQUIRE_FUSE=1`.
pub fn fuse_available() -> bool {
    match fuse_usable() {
        Ok(()) => true,
        Err(why) if std::env::var_os("IOCFS_REQUIRE_FUSE").is_some_and(|v| v == "1") => {
            panic!("IOCFS_REQUIRE_FUSE=1 but FUSE mounts are not possible here: {why}")
        }
        Err(why) => {
            eprintln!("SKIP: mounted iocfs test skipped: {why} (set IOCFS_REQUIRE_FUSE=1 to fail)");
            false
        }
    }
}

/// `sh -c CMD` as nobody (uid/gid 65534, no groups); (success, stderr).
pub fn as_nobody(cmd: &str) -> (bool, String) {
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sh",
            "-c",
            cmd,
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run setpriv");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The names in a directory, sorted.
pub fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("list {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// The nine type files' names, sorted (what `names_in` gives for a bucket).
pub fn type_files_sorted() -> Vec<&'static str> {
    let mut want = TYPE_FILES.to_vec();
    want.sort();
    want
}

/// Lazily unmount `mnt`, ignoring "not mounted".
pub fn detach(mnt: &Path) {
    let _ = umount2(mnt, MntFlags::MNT_DETACH);
}

/// SIGKILL `child` and reap it. False if it did not die: a thread stuck in the kernel on
/// its own FUSE connection; the connection is then aborted (`umount -f`) so it can die and
/// nothing is left hanging.
fn kill_and_reap(child: &mut Child, mnt: &Path) -> bool {
    let _ = child.kill();
    if wait_timeout(child, STOP_TIMEOUT).is_some() {
        return true;
    }
    let _ = umount2(mnt, MntFlags::MNT_FORCE);
    let _ = child.wait();
    false
}

/// How many times `mnt` is listed in `/proc/mounts` (mounts can stack).
pub fn mount_count(mnt: &Path) -> usize {
    let mounts = std::fs::read_to_string("/proc/mounts").expect("read /proc/mounts");
    let want = mnt.to_str().expect("UTF-8 mount point");
    mounts
        .lines()
        .filter(|l| l.split(' ').nth(1) == Some(want))
        .count()
}

/// Is `mnt` listed in `/proc/mounts`?
pub fn is_mounted(mnt: &Path) -> bool {
    mount_count(mnt) > 0
}

/// Unmounts a mount point when dropped (for extra mounts a test makes itself).
pub struct MountGuard(pub PathBuf);

impl Drop for MountGuard {
    fn drop(&mut self) {
        detach(&self.0);
    }
}

/// Wait for `child` to exit, up to `timeout`; None if it is still running.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(POLL);
    }
}

/// Poll `check` every [`POLL`] until it returns Some or `timeout` passes.
pub fn poll_until<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(POLL);
    }
}

/// The OS error number of an I/O result (panics on success: the caller expected a failure).
pub fn errno_of<T: std::fmt::Debug>(r: io::Result<T>) -> i32 {
    match r {
        Ok(v) => panic!("expected an error, got Ok({v:?})"),
        Err(e) => e
            .raw_os_error()
            .unwrap_or_else(|| panic!("error without an errno: {e}")),
    }
}

#[derive(Default, Clone)]
pub struct Builder {
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    config: String,
}

impl Builder {
    /// An extra argument to `iocfs mount` (before the mount point).
    pub fn arg(mut self, a: impl Into<OsString>) -> Builder {
        self.args.push(a.into());
        self
    }

    /// Run the daemon on the manual clock, starting at `secs` (Unix time): tests move it
    /// with `ctl clock`, and nothing dated moves while they look.
    pub fn manual_clock(self, secs: u64) -> Builder {
        self.arg("--manual-clock").arg(secs.to_string())
    }

    pub fn env(mut self, k: impl Into<OsString>, v: impl Into<OsString>) -> Builder {
        self.envs.push((k.into(), v.into()));
        self
    }

    /// TOML for the config file the daemon is given (default: empty, i.e. built-in
    /// defaults; a file is always passed so `/etc/iocfs/iocfs.toml` never leaks in).
    pub fn config(mut self, toml: &str) -> Builder {
        self.config = toml.to_string();
        self
    }

    /// Mount; None (after a skip message) when FUSE is unavailable.
    pub fn start(self) -> Option<Daemon> {
        if !fuse_available() {
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("iocfs-test-")
            .tempdir()
            .expect("create temp dir");
        let root = dir.path().canonicalize().expect("canonicalize temp dir");
        for sub in ["data", "mnt"] {
            std::fs::create_dir(root.join(sub)).expect("create data/mnt");
        }
        let config_path = root.join("iocfs.toml");
        std::fs::write(&config_path, &self.config).expect("write config");
        let mut d = Daemon {
            _dir: dir,
            root,
            builder: self,
            config_path,
            child: None,
            starts: 0,
        };
        d.spawn_and_wait(true);
        Some(d)
    }
}

/// A running (or stopped) `iocfs mount` on `ROOT/data`, mounted at `ROOT/mnt`.
pub struct Daemon {
    // Dropped last (after `Drop::drop` unmounted), removing the whole tree.
    _dir: tempfile::TempDir,
    root: PathBuf,
    builder: Builder,
    config_path: PathBuf,
    child: Option<Child>,
    starts: u32,
}

impl Daemon {
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Mount with default settings; None when FUSE is unavailable (test skipped).
    pub fn start() -> Option<Daemon> {
        Builder::default().start()
    }

    pub fn mnt(&self) -> PathBuf {
        self.root.join("mnt")
    }

    pub fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    /// The temp dir holding data/, mnt/, the config and the log (free for test files).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The config file passed with `--config` (rewrite it, then SIGHUP, to test reloads).
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Replace the extra `iocfs mount` arguments for the next start (e.g. a new
    /// `--manual-clock` value before [`Daemon::restart`]).
    pub fn set_args<I, S>(&mut self, args: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.builder.args = args.into_iter().map(Into::into).collect();
    }

    pub fn log_path(&self) -> PathBuf {
        self.root.join("iocfs.log")
    }

    /// Everything the daemon wrote to stderr/stdout, over all its starts.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// `rel` under the mount point.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.mnt().join(rel)
    }

    /// The running daemon's process id (for /proc/<pid>/status, /proc/<pid>/fd).
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .expect("pid: the daemon is not running")
            .id()
    }

    /// Send `sig` to the running daemon.
    pub fn signal(&self, sig: Signal) {
        let child = self
            .child
            .as_ref()
            .expect("signal: the daemon is not running");
        kill(Pid::from_raw(child.id() as i32), sig).expect("send a signal to iocfs");
    }

    /// The daemon command line for this test's data dir, mounting at `mnt`.
    pub fn command(&self, mnt: &Path) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.arg("mount")
            .arg("--config")
            .arg(&self.config_path)
            .arg("--data")
            .arg(self.data())
            .args(&self.builder.args)
            .arg(mnt);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        for (k, v) in &self.builder.envs {
            cmd.env(k, v);
        }
        cmd
    }

    fn spawn_and_wait(&mut self, clear_stale_mount: bool) {
        assert!(self.child.is_none(), "the daemon is already running");
        let mnt = self.mnt();
        if clear_stale_mount {
            detach(&mnt);
        }
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open log");
        writeln!(log, "===== test harness: start #{} =====", self.starts).expect("write log");
        let stdout = log.try_clone().expect("dup log");
        let child = self
            .command(&mnt)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(log)
            .spawn()
            .expect("spawn iocfs");
        self.child = Some(child);
        let health = mnt.join(".iocfs/health");
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if std::fs::read(&health).is_ok() {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                panic!(
                    "iocfs exited during start ({status}) before {} was readable; log:\n{}",
                    health.display(),
                    self.log()
                );
            }
            if Instant::now() >= deadline {
                self.kill9();
                panic!(
                    "iocfs did not answer {} within {READY_TIMEOUT:?}; log:\n{}",
                    health.display(),
                    self.log()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Start again on the same data dir and mount point (after `stop` or `kill9`).
    pub fn restart(&mut self) {
        self.spawn_and_wait(true);
    }

    /// Start again without first unmounting whatever a dead daemon left at the mount point
    /// (the daemon has to cope with it itself).
    pub fn restart_on_a_dead_mount(&mut self) {
        self.spawn_and_wait(false);
    }

    /// Wait for a daemon that was signalled by the test itself to exit; its status.
    pub fn reap(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("reap: the daemon is not running");
        wait_timeout(&mut child, STOP_TIMEOUT).unwrap_or_else(|| {
            self.child = Some(child);
            panic!("iocfs did not exit within {STOP_TIMEOUT:?}")
        })
    }

    /// SIGKILL the daemon, reap it, then lazily unmount the dead mount. Panics if the
    /// daemon did not die (after aborting its connection so that it does).
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            if !kill_and_reap(&mut child, &self.mnt()) {
                detach(&self.mnt());
                panic!("iocfs did not die within {STOP_TIMEOUT:?} of SIGKILL");
            }
        }
        detach(&self.mnt());
    }

    /// SIGTERM the daemon and wait for it to exit; its exit status. The mount is left as
    /// the daemon left it (tests check it is gone).
    pub fn stop(&mut self) -> ExitStatus {
        self.signal(Signal::SIGTERM);
        let mut child = self.child.take().expect("stop: the daemon is not running");
        match wait_timeout(&mut child, STOP_TIMEOUT) {
            Some(status) => status,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                detach(&self.mnt());
                panic!(
                    "iocfs did not exit within {STOP_TIMEOUT:?} of SIGTERM; log:\n{}",
                    self.log()
                );
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_and_reap(&mut child, &self.mnt());
        }
        detach(&self.mnt());
        if std::thread::panicking() {
            eprintln!(
                "----- iocfs log ({}) -----\n{}",
                self.log_path().display(),
                self.log()
            );
        }
    }
}
