//! Mounted tests of the crash policy: a panic in the apply path or in a background thread
//! fails the store (writes get EIO, `.iocfs/health` names the thread, the systemd watchdog
//! stops being petted), never strands a writer, and loses nothing acknowledged.
//!
//! The panics are injected with the test build's failpoints (`apply::panic`,
//! `aging::panic`); the watchdog is observed through a `NOTIFY_SOCKET` of our own, as
//! systemd would see it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::{errno_of, poll_until, Daemon, READY_TIMEOUT};

/// A fake systemd: the daemon's sd_notify messages arrive here.
struct Systemd {
    socket: UnixDatagram,
    _dir: tempfile::TempDir,
}

impl Systemd {
    fn new() -> (Systemd, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket.set_nonblocking(true).unwrap();
        (Systemd { socket, _dir: dir }, path)
    }

    /// Throw away what was sent so far (before the failure).
    fn drain(&self) {
        let mut buf = [0u8; 4096];
        while self.socket.recv(&mut buf).is_ok() {}
    }

    /// WATCHDOG=1 messages received during `window`.
    fn watchdog_pings(&self, window: Duration) -> usize {
        let deadline = Instant::now() + window;
        let mut pings = 0;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            match self.socket.recv(&mut buf) {
                Ok(n) => {
                    let msg = String::from_utf8_lossy(&buf[..n]);
                    pings += msg.lines().filter(|l| *l == "WATCHDOG=1").count();
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        pings
    }
}

/// A mount whose daemon reports to a fake systemd with a 200 ms watchdog.
fn start_watched(config: &str) -> Option<(Daemon, Systemd)> {
    let (systemd, path) = Systemd::new();
    let d = Daemon::builder()
        .config(config)
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "200000")
        .start()?;
    Some((d, systemd))
}

fn append(d: &Daemon, line: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(d.path("live/domain.txt"))?;
    f.write_all(format!("{line}\n").as_bytes())
}

#[test]
fn a_panic_in_apply_fails_every_writer_stops_the_watchdog_and_loses_nothing_acknowledged() {
    let Some((mut d, systemd)) = start_watched("") else {
        return;
    };
    assert!(
        systemd.watchdog_pings(Duration::from_millis(600)) > 0,
        "a healthy daemon pets the watchdog"
    );
    let acknowledged: Vec<String> = (0..20).map(|i| format!("ok{i}.example.com")).collect();
    for l in &acknowledged {
        append(&d, l).unwrap();
    }
    d.ctl("failpoint apply::panic eio").unwrap();
    // Several writers at once: the leader panics; none of them may hang.
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let path = d.path("live/domain.txt");
            std::thread::spawn(move || {
                use std::io::Write;
                let mut f = std::fs::OpenOptions::new().append(true).open(path)?;
                f.write_all(format!("lost{w}.example.com\n").as_bytes())
            })
        })
        .collect();
    let started = Instant::now();
    for w in writers {
        assert_eq!(errno_of(w.join().unwrap()), libc::EIO);
    }
    assert!(started.elapsed() < READY_TIMEOUT, "writers were stranded");
    // Refused from now on, even with the failpoint gone: the state needs a restart.
    d.ctl("failpoint apply::panic off").unwrap();
    assert_eq!(errno_of(append(&d, "after.example.com")), libc::EIO);
    let health = d.read(".iocfs/health");
    assert!(
        health
            .lines()
            .any(|l| l.starts_with("panic ") && l.contains("injected panic")),
        "{health}"
    );
    // Reads still work.
    for l in &acknowledged {
        assert!(d.lines("live/domain.txt").contains(l));
    }
    // The watchdog stops: systemd would restart iocfs. Allow a ping already in flight.
    std::thread::sleep(Duration::from_millis(250));
    systemd.drain();
    assert!(
        systemd.watchdog_pings(Duration::from_millis(800)) == 0,
        "a failed store must stop petting the watchdog"
    );
    // What systemd does: kill and restart. Recovery replays the log: nothing acknowledged
    // is lost, and the store takes writes again.
    d.kill9();
    d.restart();
    let lines = d.lines("live/domain.txt");
    for l in &acknowledged {
        assert!(lines.contains(l), "{l} lost");
    }
    assert_eq!(d.read(".iocfs/health"), "ok\n");
    append(&d, "after.example.com").unwrap();
}

#[test]
fn a_panic_in_the_aging_thread_fails_the_store_and_says_which_thread() {
    let Some((mut d, systemd)) = start_watched("[aging]\ninterval = \"50ms\"\n") else {
        return;
    };
    let acknowledged: Vec<String> = (0..10).map(|i| format!("keep{i}.example.com")).collect();
    for l in &acknowledged {
        append(&d, l).unwrap();
    }
    d.ctl("failpoint aging::panic eio").unwrap();
    let health = poll_until(READY_TIMEOUT, || {
        let h = d.read(".iocfs/health");
        h.contains("panic iocfs-aging").then_some(h)
    })
    .expect("health names the aging thread");
    assert!(health.contains("injected panic"), "{health}");
    assert_eq!(errno_of(append(&d, "refused.example.com")), libc::EIO);
    std::thread::sleep(Duration::from_millis(250));
    systemd.drain();
    assert_eq!(systemd.watchdog_pings(Duration::from_millis(800)), 0);
    assert!(d.log().contains("aging::panic"), "the panic is logged");
    d.ctl("failpoint aging::panic off").unwrap();
    d.kill9();
    d.restart();
    let lines = d.lines("live/domain.txt");
    for l in &acknowledged {
        assert!(lines.contains(l), "{l} lost");
    }
    assert!(!lines.contains(&"refused.example.com".to_string()));
    assert_eq!(d.read(".iocfs/health"), "ok\n");
}
