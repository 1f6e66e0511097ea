//! Mounted tests: `flock` on a type file excludes across the file's versions (every
//! replace, and an append a passthrough reader made a copy for, puts the name on a new
//! inode), and a waiter can still be interrupted or killed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{poll_until, wait_timeout, Daemon};

/// A child process in a process group of its own, killed with everything it started if
/// the test ends before it does (`flock -c` runs a shell, which would hold the lock, and
/// loop, for good).
struct Killed(Option<Child>);

impl Drop for Killed {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            if let Ok(pid) = i32::try_from(c.id()) {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = c.wait();
        }
    }
}

impl Killed {
    fn spawn(cmd: &mut Command) -> Killed {
        use std::os::unix::process::CommandExt;
        Killed(Some(
            cmd.stdout(Stdio::null()).process_group(0).spawn().unwrap(),
        ))
    }

    fn wait(mut self, what: &str) -> std::process::ExitStatus {
        let mut c = self.0.take().unwrap();
        let status = wait_timeout(&mut c, Duration::from_secs(120));
        if status.is_none() {
            let _ = c.kill();
            let _ = c.wait();
        }
        status.unwrap_or_else(|| panic!("{what} did not end"))
    }
}

/// Start `flock FILE -c 'THEN; touch HELD; wait for GO'` in the mount; returns once it holds.
fn hold(d: &Daemon, file: &str, then: &str) -> Killed {
    let held = d.root().join("held");
    let go = d.root().join("go");
    let _ = std::fs::remove_file(&held);
    let _ = std::fs::remove_file(&go);
    let script = format!(
        "{then}; touch {held}; while [ -e {held} ] && [ ! -e {go} ]; do sleep 0.02; done",
        held = held.display(),
        go = go.display()
    );
    let child = Killed::spawn(
        Command::new("flock")
            .arg(file)
            .args(["-c", &script])
            .current_dir(d.mnt()),
    );
    poll_until(Duration::from_secs(10), || held.exists().then_some(()))
        .expect("the holder took the lock");
    child
}

fn let_go(d: &Daemon, holder: Killed) {
    std::fs::write(d.root().join("go"), b"").unwrap();
    let status = holder.wait("the holder");
    assert!(status.success(), "holder: {status}");
}

fn flock_nb(d: &Daemon, file: &str) -> bool {
    d.sh(&format!("flock -n {file} -c true")).status.success()
}

#[test]
fn a_flock_outlives_a_replace_and_an_append() {
    let Some(d) = Daemon::start() else { return };
    d.sh_ok("echo 1.2.3.4 > live/ipv4.txt");
    // Replaced while locked: the name is on a new inode, the lock still holds.
    let holder = hold(&d, "live/ipv4.txt", "echo 5.6.7.8 > live/ipv4.txt");
    assert!(
        !flock_nb(&d, "live/ipv4.txt"),
        "got the lock after a replace"
    );
    let_go(&d, holder);
    assert!(flock_nb(&d, "live/ipv4.txt"), "free once let go");
    // flock(1) opens read-only: when its descriptor is a passthrough reader, an append
    // moves the name to a copy.
    let holder = hold(&d, "live/ipv4.txt", "echo 9.9.9.9 >> live/ipv4.txt");
    assert!(
        !flock_nb(&d, "live/ipv4.txt"),
        "got the lock after an append"
    );
    let_go(&d, holder);
    assert_eq!(d.lines("live/ipv4.txt"), ["5.6.7.8", "9.9.9.9"]);
    // Other files are other locks.
    let holder = hold(&d, "live/domain.txt", "true");
    assert!(flock_nb(&d, "live/url.txt"));
    let_go(&d, holder);
}

#[test]
fn read_modify_write_under_flock_loses_nothing() {
    let Some(d) = Daemon::start() else { return };
    d.sh_ok(": > live/email.txt");
    let tmp = d.root().join("rmw");
    std::fs::create_dir(&tmp).unwrap();
    let workers: Vec<Killed> = (1..=3)
        .map(|w| {
            let script = format!(
                "for i in $(seq 1 12); do flock live/email.txt -c \
                 \"cat live/email.txt > {t}/{w}; echo user$i@w{w}.example.com >> {t}/{w}; \
                 cp {t}/{w} live/email.txt\" || exit 1; done",
                t = tmp.display()
            );
            Killed::spawn(
                Command::new("sh")
                    .args(["-c", &script])
                    .current_dir(d.mnt())
                    .stdin(Stdio::null()),
            )
        })
        .collect();
    for w in workers {
        let status = w.wait("a worker");
        assert!(status.success(), "worker: {status}");
    }
    assert_eq!(d.lines("live/email.txt").len(), 36, "{}", d.log());
}

#[test]
fn a_flock_waiter_can_time_out_and_be_killed() {
    let Some(d) = Daemon::start() else { return };
    d.sh_ok("echo a.example > live/domain.txt");
    let holder = hold(&d, "live/domain.txt", "true");
    // flock -w: its alarm interrupts the wait; it gives up while the lock is still held.
    let out = d.sh("flock -w 0.3 live/domain.txt -c 'echo got it'");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stdout.is_empty());
    // A waiter killed by SIGKILL dies (the kernel would wait out the daemon's answer).
    let mut waiter = Killed::spawn(
        Command::new("flock")
            .args(["live/domain.txt", "-c", "echo got it"])
            .current_dir(d.mnt()),
    );
    std::thread::sleep(Duration::from_millis(300));
    if let Some(c) = waiter.0.as_mut() {
        c.kill().unwrap();
    }
    let status = waiter.wait("the killed waiter, while the lock was held,");
    assert!(!status.success());
    // A waiter gets the lock once the holder lets go.
    let waiter = Killed::spawn(
        Command::new("flock")
            .args(["live/domain.txt", "-c", "true"])
            .current_dir(d.mnt()),
    );
    let_go(&d, holder);
    assert!(waiter.wait("the waiter").success());
}
