//! Item 5 of issue 13 (README "Hostile local users and files"): with FUSE passthrough a
//! reader pins the version it opened, and appends then go to a copy. A non-root reader
//! reopening after every append must not be able to pin a copy per append, no copy is made
//! under the state lock (everything else keeps being served while one is made), and running
//! out of descriptors fails the request that needed one, not the store.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report
#![cfg(feature = "testing")]

mod common;

use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{errno_of, poll_until, Daemon, READY_TIMEOUT};

fn lines(n: usize, tag: &str) -> Vec<String> {
    (0..n).map(|i| format!("{tag}{i}.example.com")).collect()
}

/// Unnamed files (passthrough storage) the daemon holds open.
fn unnamed_files(d: &Daemon) -> usize {
    fs::read_dir(format!("/proc/{}/fd", d.pid()))
        .unwrap()
        .filter_map(|e| fs::read_link(e.ok()?.path()).ok())
        .filter(|l| l.to_string_lossy().contains("/data/live/#"))
        .count()
}

#[test]
fn a_reader_reopening_after_every_append_pins_a_bounded_number_of_copies() {
    let Some(d) = Daemon::builder()
        .config("[mount]\npassthrough = true\nallow_other = true\n")
        .start()
    else {
        return;
    };
    fs::set_permissions(d.root(), fs::Permissions::from_mode(0o755)).unwrap();
    d.append_bulk("live/domain.txt", &lines(20_000, "seed"));
    let baseline = unnamed_files(&d);
    // nobody opens the file (read-only, held), then root appends a line, 100 times.
    let mut reader = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "bash", "-c"])
        .arg(
            "for i in $(seq 100); do exec {fd}<\"$1\" || exit 1; echo ok; read -r _; done; read -r _",
        )
        .arg("bash")
        .arg(d.path("live/domain.txt"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut to = reader.stdin.take().unwrap();
    let mut from = BufReader::new(reader.stdout.take().unwrap());
    for i in 0..100 {
        let mut line = String::new();
        from.read_line(&mut line).unwrap();
        assert_eq!(line, "ok\n", "nobody's open #{i} failed");
        d.append_lines("live/domain.txt", &[format!("added{i}.example.com")]);
        to.write_all(b"\n").unwrap();
    }
    let held = unnamed_files(&d);
    drop(to);
    reader.wait().unwrap();
    assert!(
        held <= baseline + 16 + 4,
        "one reader's 100 opens made the daemon hold {held} files (from {baseline})"
    );
    assert_eq!(d.lines("live/domain.txt").len(), 20_100);
}

/// Runs `f` on another thread; panics if it does not finish within 10 s (a lock it needs is
/// held while a copy is paused).
fn finishes<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| panic!("{what} waited for the copy of a pinned live file"))
}

#[test]
fn a_pinned_live_file_is_copied_without_holding_up_anyone_else() {
    let pause = tempfile::tempdir().unwrap();
    let Some(d) = Daemon::builder()
        .config("[mount]\npassthrough = true\n")
        .env("IOCFS_PAUSE_DIR", pause.path())
        .start()
    else {
        return;
    };
    d.append_bulk("live/domain.txt", &lines(20_000, "seed"));
    d.append_lines("live/ipv4.txt", &["192.0.2.1"]);
    let gate = pause.path().join("live::copy");
    let reached = pause.path().join("live::copy.reached");
    let read_elsewhere = |d: &Daemon| {
        let (ipv4, stats) = (d.path("live/ipv4.txt"), d.path(".iocfs/stats.json"));
        finishes("a read of another file", move || {
            (
                fs::read_to_string(ipv4).unwrap(),
                fs::read(stats).unwrap().len(),
            )
        })
    };
    let paused_copy = |what: &str, act: Box<dyn FnOnce() -> std::io::Result<()> + Send>| {
        fs::write(&gate, b"").unwrap();
        let writer = std::thread::spawn(act);
        let paused = poll_until(READY_TIMEOUT, || reached.exists().then_some(()));
        let others = paused.map(|()| read_elsewhere(&d));
        fs::remove_file(&gate).unwrap();
        let _ = fs::remove_file(&reached);
        assert!(paused.is_some(), "{what} made no copy of the pinned file");
        let (ipv4, stats_len) = others.unwrap();
        assert_eq!(ipv4, "192.0.2.1\n");
        assert!(stats_len > 0);
        writer.join().unwrap().unwrap();
    };
    // An append while a reader pins the version: the batch copies it before applying.
    let mut w = OpenOptions::new()
        .append(true)
        .open(d.path("live/domain.txt"))
        .unwrap();
    // Right after a writer's open, its inode can't be pinned (the kernel may not have
    // finished that open): a reader is served by the daemon and the version is copied in
    // the background; the next reader pins the copy.
    let mut held = vec![common::readers::pinned_reader(&d, "live/domain.txt")];
    paused_copy(
        "an append",
        Box::new(move || w.write_all(b"during.example.com\n")),
    );
    // A writer's open while a reader pins the version: it moves to a copy.
    held.push(fs::File::open(d.path("live/domain.txt")).unwrap());
    let path = d.path("live/domain.txt");
    paused_copy(
        "a writer's open",
        Box::new(move || OpenOptions::new().append(true).open(path).map(drop)),
    );
    // The first held descriptor still reads its version; a new open sees the append.
    let mut old = String::new();
    (&held[0]).read_to_string(&mut old).unwrap();
    assert_eq!(old.lines().count(), 20_000);
    assert_eq!(
        d.lines("live/domain.txt").last().map(String::as_str),
        Some("during.example.com")
    );
}

/// The daemon's soft limit on descriptors.
fn soft_nofile(d: &Daemon) -> String {
    let limits = fs::read_to_string(format!("/proc/{}/limits", d.pid())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    line.split_whitespace().nth(3).unwrap().to_string()
}

/// Set the daemon's soft descriptor limit (raising the hard one would need
/// CAP_SYS_RESOURCE): `None` makes it the lowest free descriptor number, so no new one can
/// be opened.
fn nofile(d: &Daemon, soft: Option<&str>) {
    let limit = soft.map_or_else(
        || {
            let used: Vec<u32> = fs::read_dir(format!("/proc/{}/fd", d.pid()))
                .unwrap()
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect();
            (0..).find(|n| !used.contains(n)).unwrap().to_string()
        },
        str::to_string,
    );
    let out = Command::new("prlimit")
        .arg(format!("--pid={}", d.pid()))
        .arg(format!("--nofile={limit}:"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "prlimit --nofile={limit}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn running_out_of_descriptors_fails_the_request_not_the_store() {
    let Some(d) = Daemon::builder()
        .config(
            "[durability]\nsegment_size = \"1MiB\"\ncommit_interval = \"3650d\"\n\
             [views]\nrefresh = \"1h\"\n",
        )
        .start()
    else {
        return;
    };
    // No view build may open or close a file while descriptors are cut off (a descriptor
    // closed below the limit would let the replace below through).
    d.wait_first_view_builds();
    let health = |d: &Daemon| d.read(".iocfs/health");
    let bulk: String = lines(60_000, "bulk")
        .iter()
        .map(|l| format!("{l}\n"))
        .collect();
    let (a, b) = bulk.as_bytes().split_at(bulk.len() / 2);
    d.append_lines("live/url.txt", &["http://old.example/"]);
    let soft = soft_nofile(&d);
    nofile(&d, None);
    // A new WAL segment is needed: its file can't be created.
    let mut f = OpenOptions::new()
        .append(true)
        .open(d.path("live/domain.txt"))
        .unwrap_or_else(|e| panic!("open: {e}"));
    f.write_all(a).unwrap();
    assert_eq!(errno_of(f.write(b)), libc::EMFILE);
    // A replace needs a file for its new version: its close (where it applies) fails.
    let mut r = fs::File::create(d.path("live/url.txt")).unwrap();
    r.write_all(b"http://new.example/\n").unwrap();
    assert_eq!(nix::unistd::close(r), Err(nix::errno::Errno::EMFILE));
    assert_eq!(d.lines("live/url.txt"), ["http://old.example/"]);
    assert_eq!(
        health(&d),
        "ok\n",
        "running out of descriptors failed the store"
    );
    nofile(&d, Some(&soft));
    f.write_all(b).unwrap();
    drop(f);
    fs::write(d.path("live/url.txt"), "http://new.example/\n").unwrap();
    assert_eq!(d.lines("live/domain.txt").len(), 60_000);
    assert_eq!(d.lines("live/url.txt"), ["http://new.example/"]);
    assert_eq!(health(&d), "ok\n");
}
