//! The daemon's side of the systemd protocol: READY=1/STATUS=, WATCHDOG=1, STOPPING=1, a
//! restart over the stale mount of a killed daemon, and running with only the unit's
//! capability bounding set. Mounted tests: they need root and /dev/fuse, and without them
//! print a skip line unless IOCFS_REQUIRE_FUSE=1, where they fail.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::mount::{umount2, MntFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use common::ops::{repo, service_values, shipped_unit, show, temp_root};
use common::BIN;

/// `(source, fstype)` of the mount at `path` in /proc/mounts (octal escapes such as \040 for a
/// space decoded).
fn mounted_at(path: &Path) -> Option<(String, String)> {
    let want = path.to_str().unwrap();
    let mounts = fs::read_to_string("/proc/mounts").unwrap();
    mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        (unescape_mount(f[1]) == want).then(|| (f[0].to_string(), f[2].to_string()))
    })
}

fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let v = std::str::from_utf8(&b[i + 1..i + 4]).unwrap();
            out.push(u8::from_str_radix(v, 8).unwrap());
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// A daemon under test. Dropping it (also when a test panics) SIGKILLs the process if it is
/// still running and lazily unmounts whatever is left at the mount point.
struct Daemon {
    child: Child,
    exit: Option<ExitStatus>,
    mnt: PathBuf,
    log: PathBuf,
}

impl Daemon {
    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The exit status, if the process has ended.
    fn exited(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().unwrap();
        }
        self.exit
    }

    fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.exited() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "daemon still running {limit:?} after SIGTERM; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if mounted_at(&self.mnt).is_some() {
            let _ = umount2(&self.mnt, MntFlags::MNT_DETACH);
        }
    }
}

/// The service manager's end of NOTIFY_SOCKET: every datagram received, in order.
struct NotifySocket {
    sock: UnixDatagram,
    seen: Vec<String>,
}

impl NotifySocket {
    fn bind(path: &Path) -> Self {
        let sock = UnixDatagram::bind(path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        NotifySocket {
            sock,
            seen: Vec::new(),
        }
    }

    fn recv(&mut self) -> Option<String> {
        let mut buf = [0u8; 4096];
        match self.sock.recv(&mut buf) {
            Ok(n) => {
                let msg = String::from_utf8(buf[..n].to_vec()).expect("notification is UTF-8");
                self.seen.push(msg.clone());
                Some(msg)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(e) => panic!("recv on the notify socket: {e}"),
        }
    }

    /// The first message holding the line `line`, waiting up to `limit`.
    /// Fails at once if the daemon exits without sending it.
    fn wait_for(&mut self, line: &str, limit: Duration, daemon: &mut Daemon) -> String {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            match self.recv() {
                Some(msg) if msg.lines().any(|l| l == line) => return msg,
                Some(_) => {}
                None => {
                    if let Some(status) = daemon.exited() {
                        // Whatever it sent before exiting is queued already.
                        while let Some(msg) = self.recv() {
                            if msg.lines().any(|l| l == line) {
                                return msg;
                            }
                        }
                        panic!(
                            "daemon exited ({status}) without sending {line:?}; received {:?}; \
                             log:\n{}",
                            self.seen,
                            daemon.log()
                        );
                    }
                }
            }
        }
        panic!(
            "no {line:?} within {limit:?}; received {:?}; daemon log:\n{}",
            self.seen,
            daemon.log()
        )
    }

    /// How many messages holding `line` arrive during `window`.
    fn count_during(&mut self, line: &str, window: Duration) -> usize {
        let end = Instant::now() + window;
        let mut n = 0;
        while Instant::now() < end {
            if let Some(msg) = self.recv() {
                n += msg.lines().filter(|l| *l == line).count();
            }
        }
        n
    }
}

/// Start `[wrapper...] iocfs mount --config <shipped config> --data BASE/data BASE/mnt` with
/// NOTIFY_SOCKET bound by the test (BASE/RUN.sock; stderr in BASE/RUN.log).
fn start_daemon(
    base: &Path,
    run: &str,
    wrapper: &[String],
    env: &[(&str, &str)],
) -> (Daemon, NotifySocket) {
    let mnt = base.join("mnt");
    if !mnt.exists() {
        fs::create_dir(&mnt).unwrap();
    }
    let notify_path = base.join(format!("{run}.sock"));
    let notify = NotifySocket::bind(&notify_path);
    let log = base.join(format!("{run}.log"));

    let iocfs_args = [
        BIN.to_string(),
        "mount".into(),
        "--config".into(),
        repo().join("systemd/iocfs.toml").display().to_string(),
        "--data".into(),
        base.join("data").display().to_string(),
        mnt.display().to_string(),
    ];
    let argv: Vec<String> = wrapper.iter().cloned().chain(iocfs_args).collect();
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env("NOTIFY_SOCKET", &notify_path)
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {argv:?}: {e}"));
    (
        Daemon {
            child,
            exit: None,
            mnt,
            log,
        },
        notify,
    )
}

const EMPTY_STATUS: &str = "STATUS=live 0, chaud 0, tiede 0, froid 0";

#[test]
fn daemon_notifies_ready_watchdog_and_stopping() {
    if !common::fuse_available() {
        return;
    }
    let (_tmp, base) = temp_root();
    // 200 ms: the daemon pings every 100 ms (no WATCHDOG_PID, as sd_notify allows).
    let (mut daemon, mut notify) =
        start_daemon(&base, "daemon", &[], &[("WATCHDOG_USEC", "200000")]);

    let ready = notify.wait_for("READY=1", Duration::from_secs(20), &mut daemon);
    // READY=1 means mounted and serving: the mount is in place when the message arrives.
    // (fuser's direct mount(2) records the type as plain "fuse", the source as "iocfs".)
    let (source, fstype) = mounted_at(&daemon.mnt)
        .unwrap_or_else(|| panic!("READY=1 arrived before the mount; log:\n{}", daemon.log()));
    assert_eq!(source, "iocfs");
    assert!(fstype == "fuse" || fstype == "fuse.iocfs", "{fstype}");
    assert!(
        ready.lines().any(|l| l == EMPTY_STATUS),
        "READY=1 must come with a STATUS= line, got {ready:?}"
    );
    assert_eq!(
        fs::read_to_string(daemon.mnt.join("live/ipv4.txt")).unwrap(),
        ""
    );

    let pings = notify.count_during("WATCHDOG=1", Duration::from_secs(1));
    assert!(
        pings >= 2,
        "{pings} WATCHDOG=1 in 1 s with WATCHDOG_USEC=200000; received {:?}",
        notify.seen
    );

    // The mount takes writes, and STATUS= follows the counts.
    fs::OpenOptions::new()
        .append(true)
        .open(daemon.mnt.join("live/ipv4.txt"))
        .unwrap()
        .write_all(b"203.0.113.7\n")
        .unwrap();
    assert_eq!(
        fs::read_to_string(daemon.mnt.join("live/ipv4.txt")).unwrap(),
        "203.0.113.7\n"
    );
    notify.wait_for(
        "STATUS=live 1, chaud 0, tiede 0, froid 0",
        Duration::from_secs(5),
        &mut daemon,
    );

    kill(daemon.pid(), Signal::SIGTERM).unwrap();
    notify.wait_for("STOPPING=1", Duration::from_secs(10), &mut daemon);
    let status = daemon.wait_exit(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "log:\n{}", daemon.log());
    assert_eq!(
        mounted_at(&daemon.mnt),
        None,
        "the mount outlived the daemon"
    );
    assert_eq!(
        notify
            .seen
            .iter()
            .filter(|m| m.lines().any(|l| l == "READY=1"))
            .count(),
        1,
        "READY=1 is sent once: {:?}",
        notify.seen
    );
}

#[test]
fn daemon_sends_no_watchdog_for_another_watchdog_pid() {
    if !common::fuse_available() {
        return;
    }
    let (_tmp, base) = temp_root();
    // systemd names the process the watchdog is for; pings meant for another process (say, a
    // parent that exec'd iocfs with its environment) must not be sent.
    let (mut daemon, mut notify) = start_daemon(
        &base,
        "daemon",
        &[],
        &[("WATCHDOG_USEC", "200000"), ("WATCHDOG_PID", "1")],
    );
    notify.wait_for("READY=1", Duration::from_secs(20), &mut daemon);
    let pings = notify.count_during("WATCHDOG=1", Duration::from_millis(700));
    assert_eq!(
        pings, 0,
        "WATCHDOG_PID names another process: {:?}",
        notify.seen
    );
    kill(daemon.pid(), Signal::SIGTERM).unwrap();
    notify.wait_for("STOPPING=1", Duration::from_secs(10), &mut daemon);
    assert_eq!(daemon.wait_exit(Duration::from_secs(15)).code(), Some(0));
    assert_eq!(mounted_at(&daemon.mnt), None);
}

#[test]
fn daemon_restarts_over_the_stale_mount_of_a_killed_one() {
    if !common::fuse_available() {
        return;
    }
    // What Restart=on-failure does after a crash or a watchdog kill: start again at once on
    // the same mount point, where the dead daemon's mount is still attached.
    let (_tmp, base) = temp_root();
    let (mut first, mut notify) = start_daemon(&base, "first", &[], &[]);
    notify.wait_for("READY=1", Duration::from_secs(20), &mut first);
    let mnt = first.mnt.clone();
    fs::OpenOptions::new()
        .append(true)
        .open(mnt.join("live/ipv4.txt"))
        .unwrap()
        .write_all(b"203.0.113.7\n")
        .unwrap();
    // `ls -la`: the kernel now answers stat() of the mount root from its attribute cache,
    // even after the daemon is gone.
    for entry in fs::read_dir(mnt.join("live")).unwrap() {
        entry.unwrap().metadata().unwrap();
    }
    fs::metadata(&mnt).unwrap();
    kill(first.pid(), Signal::SIGKILL).unwrap();
    assert!(first.wait_exit(Duration::from_secs(10)).code().is_none());
    assert!(
        mounted_at(&mnt).is_some(),
        "the killed daemon's mount stays behind"
    );

    let (mut second, mut notify) = start_daemon(&base, "second", &[], &[]);
    notify.wait_for("READY=1", Duration::from_secs(20), &mut second);
    // The acknowledged append survived the kill.
    assert_eq!(
        fs::read_to_string(mnt.join("live/ipv4.txt")).unwrap(),
        "203.0.113.7\n"
    );
    assert!(
        second.log().contains("stale mount"),
        "log:\n{}",
        second.log()
    );
    kill(second.pid(), Signal::SIGTERM).unwrap();
    notify.wait_for("STOPPING=1", Duration::from_secs(10), &mut second);
    assert_eq!(second.wait_exit(Duration::from_secs(15)).code(), Some(0));
    assert_eq!(mounted_at(&mnt), None, "neither mount may remain");
}

#[test]
fn daemon_fails_before_ready_on_a_bad_config() {
    // No mount happens, so no root or FUSE needed: Type=notify sees a plain exit 1.
    let (_tmp, base) = temp_root();
    let conf = base.join("bad.toml");
    fs::write(&conf, "[durability]\nmode = \"sometimes\"\n").unwrap();
    fs::create_dir(base.join("mnt")).unwrap();
    let notify_path = base.join("notify.sock");
    let mut notify = NotifySocket::bind(&notify_path);
    let out = Command::new(BIN)
        .args(["mount", "--config"])
        .arg(&conf)
        .arg("--data")
        .arg(base.join("data"))
        .arg(base.join("mnt"))
        .env("NOTIFY_SOCKET", &notify_path)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("durability.mode"),
        "{}",
        show(&out)
    );
    while notify.recv().is_some() {}
    assert!(
        notify.seen.iter().all(|m| !m.contains("READY=1")),
        "{:?}",
        notify.seen
    );
}

/// CapEff/CapBnd/NoNewPrivs/Umask from /proc/PID/status.
fn proc_status(pid: Pid, key: &str) -> String {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
        .trim()
        .to_string()
}

fn cap_number(name: &str) -> u32 {
    // The capabilities this unit may plausibly list (linux/capability.h).
    match name {
        "CAP_CHOWN" => 0,
        "CAP_DAC_OVERRIDE" => 1,
        "CAP_DAC_READ_SEARCH" => 2,
        "CAP_FOWNER" => 3,
        "CAP_SYS_RESOURCE" => 24,
        "CAP_SYS_ADMIN" => 21,
        other => panic!("add {other} to cap_number"),
    }
}

#[test]
fn daemon_works_with_only_the_units_capabilities() {
    if !common::fuse_available() {
        return;
    }
    // systemd applies CapabilityBoundingSet=, NoNewPrivileges= and UMask= before exec; setpriv
    // and the shell's umask do the same here, read from the shipped unit.
    let unit = shipped_unit();
    let caps: Vec<String> = service_values(&unit, "CapabilityBoundingSet")
        .iter()
        .flat_map(|v| v.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .collect();
    assert!(
        !caps.is_empty() && caps.iter().all(|c| c.starts_with("CAP_")),
        "{caps:?}"
    );
    let bounding = std::iter::once("-all".to_string())
        .chain(
            caps.iter()
                .map(|c| format!("+{}", c["CAP_".len()..].to_lowercase())),
        )
        .collect::<Vec<_>>()
        .join(",");
    let nnp = service_values(&unit, "NoNewPrivileges") == ["yes"];
    let umask = service_values(&unit, "UMask");
    assert_eq!(umask.len(), 1);

    let mut wrapper: Vec<String> = vec![
        "sh".into(),
        "-c".into(),
        "umask \"$1\"; shift; exec \"$@\"".into(),
        "sh".into(),
        umask[0].clone(),
        "setpriv".into(),
        "--bounding-set".into(),
        bounding,
    ];
    if nnp {
        wrapper.push("--no-new-privs".into());
    }
    wrapper.push("--".into());

    let (_tmp, base) = temp_root();
    let (mut daemon, mut notify) = start_daemon(&base, "daemon", &wrapper, &[]);
    notify.wait_for("READY=1", Duration::from_secs(20), &mut daemon);
    let pid = daemon.pid();

    let want: u64 = caps.iter().map(|c| 1u64 << cap_number(c)).sum();
    let have = |key: &str| u64::from_str_radix(&proc_status(pid, key), 16).unwrap();
    assert_eq!(have("CapBnd"), want, "bounding set not applied");
    assert_eq!(
        have("CapEff"),
        want,
        "effective set must be the bounding set"
    );
    assert_eq!(proc_status(pid, "NoNewPrivs"), if nnp { "1" } else { "0" });
    assert_eq!(
        u32::from_str_radix(&proc_status(pid, "Umask"), 8).unwrap(),
        u32::from_str_radix(&umask[0], 8).unwrap()
    );

    // Writes, commits, checkpoints and stats work with nothing but those capabilities.
    let mnt = daemon.mnt.clone();
    fs::OpenOptions::new()
        .append(true)
        .open(mnt.join("live/domain.txt"))
        .unwrap()
        .write_all(b"evil.example.com\n")
        .unwrap();
    for cmd in ["commit\n", "checkpoint\n"] {
        fs::write(mnt.join(".iocfs/ctl"), cmd).unwrap();
    }
    assert_eq!(
        fs::read_to_string(base.join("data/live/domain.txt")).unwrap(),
        "evil.example.com\n",
        "commit must reach the backing file"
    );
    assert_eq!(
        fs::read_to_string(mnt.join(".iocfs/health"))
            .unwrap()
            .trim(),
        "ok"
    );

    kill(pid, Signal::SIGTERM).unwrap();
    notify.wait_for("STOPPING=1", Duration::from_secs(10), &mut daemon);
    assert_eq!(
        daemon.wait_exit(Duration::from_secs(15)).code(),
        Some(0),
        "log:\n{}",
        daemon.log()
    );
    assert_eq!(mounted_at(&daemon.mnt), None);
    assert!(
        !daemon.log().contains("ERROR"),
        "errors under the unit's capabilities:\n{}",
        daemon.log()
    );
}
