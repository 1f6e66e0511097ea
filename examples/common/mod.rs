//! Shared by the harness examples (`torture`, `load`): the mounted daemon under test, the
//! workload PRNG, and the daemon log summary.

// Each example is its own crate and uses a different part of this module.
#![allow(dead_code)]

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::mount::{umount2, MntFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

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

/// The library's splitmix64, with what a workload draws from it.
#[derive(Clone)]
pub struct Rng(iocfs::splitmix::Rng);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(iocfs::splitmix::Rng(seed))
    }

    pub fn next(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0.below(n)
    }

    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64) / ((1u64 << 53) as f64) < p
    }

    /// A generator for stream `stream` of round `round` of run `seed`.
    pub fn derive(seed: u64, round: u64, stream: u64) -> Rng {
        let mut r = Rng::new(seed ^ round.wrapping_mul(0x2545_f491_4f6c_dd1d));
        for _ in 0..=stream {
            r.next();
        }
        Rng::new(r.next() ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }
}

/// One `iocfs mount` child on `WORKDIR/{data,mnt}`, logging to `WORKDIR/iocfs.log`, its pid
/// in `WORKDIR/daemon.pid` (for the calling script's cleanup). Killed and unmounted on drop.
pub struct Daemon {
    /// Names the harness in the log's start banners.
    pub tag: &'static str,
    pub bin: PathBuf,
    pub config: PathBuf,
    pub data: PathBuf,
    pub mnt: PathBuf,
    pub log: PathBuf,
    pub pidfile: PathBuf,
    child: Option<Child>,
}

/// The `iocfs` binary built with this example: target/<profile>/examples/X →
/// target/<profile>/iocfs.
pub fn sibling_iocfs() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    exe.parent()
        .and_then(Path::parent)
        .map(|p| p.join("iocfs"))
        .unwrap_or_default()
}

/// The work directory: `dir` if given, else a new temp dir (removed when the returned
/// guard drops), with `subs` created in it.
pub fn work_dir(
    dir: Option<&Path>,
    prefix: &str,
    subs: &[&str],
) -> (Option<tempfile::TempDir>, PathBuf) {
    let (guard, dir) = match dir {
        Some(d) => (None, d.to_path_buf()),
        None => {
            let t = tempfile::Builder::new()
                .prefix(prefix)
                .tempdir()
                .expect("temp dir");
            let p = t.path().to_path_buf();
            (Some(t), p)
        }
    };
    for sub in subs {
        std::fs::create_dir_all(dir.join(sub)).expect("create work dirs");
    }
    (guard, dir)
}

pub fn mounted(mnt: &Path) -> bool {
    let want = mnt.to_string_lossy();
    std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(want.as_ref()))
}

/// Lazily unmount `mnt`, however many mounts are stacked on it.
pub fn detach(mnt: &Path) {
    for _ in 0..16 {
        if !mounted(mnt) || umount2(mnt, MntFlags::MNT_DETACH).is_err() {
            return;
        }
    }
}

impl Daemon {
    pub fn new(tag: &'static str, bin: &Path, config: &Path, dir: &Path) -> Daemon {
        Daemon {
            tag,
            bin: bin.to_path_buf(),
            config: config.to_path_buf(),
            data: dir.join("data"),
            mnt: dir.join("mnt"),
            log: dir.join("iocfs.log"),
            pidfile: dir.join("daemon.pid"),
            child: None,
        }
    }

    /// Mount and wait until it answers; `manual_clock` needs a `--features testing` build.
    pub fn start(&mut self, manual_clock: Option<u64>) -> Result<(), String> {
        assert!(self.child.is_none(), "the daemon is already running");
        detach(&self.mnt);
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("open {}: {e}", self.log.display()))?;
        let banner = match manual_clock {
            Some(clock) => format!("{}: start, manual clock {clock}", self.tag),
            None => format!("{}: start", self.tag),
        };
        let _ = writeln!(log, "===== {banner} =====");
        let out = log.try_clone().map_err(|e| format!("dup log: {e}"))?;
        let mut cmd = Command::new(&self.bin);
        cmd.arg("mount")
            .arg("--config")
            .arg(&self.config)
            .arg("--data")
            .arg(&self.data);
        if let Some(clock) = manual_clock {
            cmd.arg("--manual-clock").arg(clock.to_string());
        }
        cmd.arg(&self.mnt)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(log);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        // SAFETY: prctl is async-signal-safe; the daemon dies with this process.
        #[allow(unsafe_code)]
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", self.bin.display()))?;
        let _ = std::fs::write(&self.pidfile, format!("{}\n", child.id()));
        self.child = Some(child);
        let health = self.mnt.join(".iocfs/health");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if std::fs::read(&health).is_ok() {
                return Ok(());
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                let _ = std::fs::remove_file(&self.pidfile);
                return Err(format!(
                    "iocfs exited during start ({status}); log tail:\n{}",
                    self.log_tail(40)
                ));
            }
            if Instant::now() >= deadline {
                let _ = self.kill9();
                return Err(format!(
                    "iocfs did not answer within 30 s; log tail:\n{}",
                    self.log_tail(40)
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The running daemon's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, reap, lazily unmount. A daemon that is still not gone 10 s after SIGKILL (a
    /// thread stuck in the kernel, e.g. a FUSE notification waiting for a directory lock
    /// that a client holds while it waits for an answer nobody will send) gets its FUSE
    /// connection aborted (`umount -f`); what was stuck is returned for the report.
    pub fn kill9(&mut self) -> Option<String> {
        let mut stuck = None;
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let killed = Instant::now();
            loop {
                match child.try_wait() {
                    Ok(None) if killed.elapsed() < Duration::from_secs(10) => {}
                    Ok(None) if killed.elapsed() < Duration::from_secs(40) => {
                        if stuck.is_none() {
                            stuck = Some(format!(
                                "iocfs (pid {}) was not gone 10 s after SIGKILL; aborting its FUSE \
                                 connection (umount -f); its threads:\n{}",
                                child.id(),
                                thread_states(child.id())
                            ));
                        }
                        let _ = umount2(&self.mnt, MntFlags::MNT_FORCE);
                    }
                    Ok(None) => {
                        let _ = stuck.get_or_insert_with(String::new).write_str(
                            "\nstill not gone 40 s after SIGKILL, even with its connection aborted",
                        );
                        break;
                    }
                    Ok(Some(_)) | Err(_) => break,
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = std::fs::remove_file(&self.pidfile);
        detach(&self.mnt);
        stuck
    }

    /// SIGTERM and wait (30 s at most, then SIGKILL).
    pub fn stop(&mut self) -> Result<ExitStatus, String> {
        let Some(mut child) = self.child.take() else {
            return Err("stop: not running".into());
        };
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let _ = std::fs::remove_file(&self.pidfile);
                detach(&self.mnt);
                return Ok(status);
            }
            if Instant::now() >= deadline {
                self.child = Some(child);
                let _ = self.kill9();
                return Err(format!(
                    "iocfs did not exit within 30 s of SIGTERM; log tail:\n{}",
                    self.log_tail(40)
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `iocfs check DATA` (the daemon stopped): Ok(None) if it says "clean", Ok(Some(why))
    /// with its output otherwise.
    pub fn check(&self) -> Result<Option<String>, String> {
        let out = Command::new(&self.bin)
            .arg("check")
            .arg("--config")
            .arg(&self.config)
            .arg(&self.data)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("run iocfs check: {e}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if out.status.success() && stdout.lines().any(|l| l.trim() == "clean") {
            return Ok(None);
        }
        Ok(Some(format!(
            "iocfs check {} ({}):\n{stdout}{}",
            self.data.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )))
    }

    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// The daemon's ERROR lines, with numbers and paths folded, most frequent first.
    pub fn print_errors(&self) {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut counts: HashMap<String, usize> = HashMap::new();
        for line in text.lines().filter(|l| l.contains(" ERROR ")) {
            let msg = line.split_once("] ").map_or(line, |(_, m)| m);
            let folded: String = msg
                .split(' ')
                .map(|w| {
                    if w.starts_with('/') {
                        "PATH"
                    } else if w.chars().any(|c| c.is_ascii_digit()) {
                        "N"
                    } else {
                        w
                    }
                })
                .collect::<Vec<_>>()
                .join(" ");
            *counts.entry(folded).or_default() += 1;
        }
        let mut sorted: Vec<(usize, String)> = counts.into_iter().map(|(m, n)| (n, m)).collect();
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        for (n, msg) in sorted.iter().take(6) {
            println!("{}: daemon log: {n}× ERROR {msg}", self.tag);
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.kill9();
    }
}

/// Name, state and (for threads not running or sleeping) kernel stack of every thread.
fn thread_states(pid: u32) -> String {
    let mut out = String::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        let dir = task.path();
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
        let stat = read("stat");
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .unwrap_or("?")
            .to_string();
        let _ = writeln!(out, "  {} {}", read("comm").trim(), state);
        if state == "D" {
            for line in read("stack").lines() {
                let _ = writeln!(out, "      {line}");
            }
        }
    }
    out
}
