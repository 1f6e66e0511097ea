//! Mounted storage fault injection (`--features testing`): a full disk (a small tmpfs as the
//! data directory) and failing WAL syscalls (failpoints). Bit flips in tier files:
//! `mount_bit_flips.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report
#![cfg(feature = "testing")]

mod aging;
mod common;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;

use aging::{ctl_ok, ipv4, DAY, QUIET, T0};
use common::{errno_of, Daemon, MountGuard, BUCKETS, TYPE_FILES};

/// One write() of `lines` on `f`.
fn write_lines(f: &mut File, lines: &[String]) -> std::io::Result<usize> {
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    f.write(text.as_bytes())
}

fn open_append(d: &Daemon, rel: &str) -> File {
    OpenOptions::new()
        .append(true)
        .open(d.path(rel))
        .unwrap_or_else(|e| panic!("open {rel} for append: {e}"))
}

// ---------------------------------------------------------------------------------------
// A full disk

/// The data directory of `d` (stopped, then restarted) on an 8 MiB tmpfs with 2 MiB of it
/// taken by a filler file, and `live/ipv4.txt` appended to, 1000 new lines per write(), until
/// a write fails: that one with ENOSPC. Returns the tmpfs (unmounted on drop), the filler,
/// the lines acknowledged, the lines of the failed write, the next line number and the
/// append handle.
struct FullDisk {
    tmpfs: MountGuard,
    filler: PathBuf,
    acked: Vec<String>,
    lost_batch: Vec<String>,
    next: u32,
    f: File,
}

impl FullDisk {
    /// Close the append handle (its partial line ends; a handle open across a kill or
    /// restart would only see ENOTCONN).
    fn close_handle(&mut self) {
        self.f = File::open("/dev/null").unwrap();
    }

    fn batch(&mut self, n: u32) -> Vec<String> {
        let b = (self.next..self.next + n).map(ipv4).collect();
        self.next += n;
        b
    }
}

fn fill_disk(d: &mut Daemon) -> FullDisk {
    let status = d.stop();
    assert!(status.success(), "SIGTERM: {status}");
    let data = d.data();
    // mode=0750: a tmpfs root is 1777 by default, which iocfs refuses as a data directory.
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m,mode=0750", "tmpfs"])
        .arg(&data)
        .status()
        .expect("run mount");
    assert!(mounted.success(), "mount -t tmpfs: {mounted}");
    let tmpfs = MountGuard(data.clone());
    let filler = data.join("filler");
    let mut f = File::create(&filler).unwrap();
    f.write_all(&vec![0x5a; 2 << 20]).unwrap();
    f.sync_all().unwrap();
    drop(f);
    d.restart();
    let mut full = FullDisk {
        tmpfs,
        filler,
        acked: Vec::new(),
        lost_batch: Vec::new(),
        next: 0,
        f: open_append(d, "live/ipv4.txt"),
    };
    let err = loop {
        assert!(full.acked.len() < 2_000_000, "8 MiB never filled up");
        let b = full.batch(1000);
        match write_lines(&mut full.f, &b) {
            Ok(_) => full.acked.extend(b),
            Err(e) => {
                full.lost_batch = b;
                break e;
            }
        }
    };
    assert_eq!(
        err.raw_os_error(),
        Some(libc::ENOSPC),
        "the write on a full disk failed with {err}, not ENOSPC, after {} lines\nlog:\n{}",
        full.acked.len(),
        d.log()
    );
    eprintln!("disk full after {} acknowledged lines", full.acked.len());
    full
}

#[test]
fn full_disk_fails_appends_with_enospc_and_writes_resume_once_space_is_freed() {
    let Some(mut d) = Daemon::builder().config(QUIET).start() else {
        return;
    };
    let mut full = fill_disk(&mut d);
    // Still full: still ENOSPC (not a sticky EIO), and reads work.
    let more = full.batch(1000);
    assert_eq!(
        errno_of(write_lines(&mut full.f, &more)),
        libc::ENOSPC,
        "second write on a full disk"
    );
    assert!(
        d.lines("live/ipv4.txt") == full.acked,
        "served set on a full disk"
    );
    let v = d.read(&format!(
        ".iocfs/lookup/{}",
        full.acked[full.acked.len() / 2]
    ));
    assert!(v.contains("\"live\""), "lookup on a full disk: {v}");
    for b in BUCKETS {
        for t in TYPE_FILES {
            let _ = d.read(&format!("{b}/{t}"));
        }
    }
    let health = d.read(".iocfs/health");
    assert!(
        health.starts_with("disk: writes fail") && health.contains("No space left"),
        "health on a full disk: {health:?}"
    );

    // Free space: writes succeed again, same daemon, same descriptor and a new one.
    fs::remove_file(&full.filler).unwrap();
    let after: Vec<String> = full.batch(500);
    let n = write_lines(&mut full.f, &after[..250])
        .unwrap_or_else(|e| panic!("write after freeing space: {e}\nlog:\n{}", d.log()));
    assert!(n > 0);
    drop(full.f);
    let mut f2 = open_append(&d, "live/ipv4.txt");
    write_lines(&mut f2, &after[250..])
        .unwrap_or_else(|e| panic!("write on a new descriptor after freeing space: {e}"));
    drop(f2);
    let mut acked = full.acked;
    acked.extend(after);
    let served = d.lines("live/ipv4.txt");
    assert!(served == acked, "served set after freeing space");
    assert_eq!(
        d.read(".iocfs/health"),
        "ok\n",
        "health once writes go through again"
    );
    assert!(
        !served.iter().any(|l| full.lost_batch.contains(l)),
        "lines of the failed write are served"
    );

    // And after a crash and restart, everything acknowledged is there, nothing else.
    d.kill9();
    d.restart();
    let served = d.lines("live/ipv4.txt");
    assert_eq!(served.len(), acked.len(), "after restart");
    assert!(served == acked, "served set after restart differs");
    let _ = d.stop();
    drop(full.tmpfs);
}

/// A daemon killed while its disk is full comes back on a disk still full (filled again
/// after the crash freed its unnamed files) serving every acknowledged line, its live sets
/// in memory; a write then either goes through or fails with ENOSPC, and once space is
/// freed writes go through and survive another crash.
#[test]
fn a_restart_on_a_still_full_disk_serves_every_acknowledged_line() {
    let Some(mut d) = Daemon::builder().config(QUIET).start() else {
        return;
    };
    let mut full = fill_disk(&mut d);
    full.close_handle();
    d.kill9();
    let refill = full.filler.with_file_name("refill");
    let mut f = File::create(&refill).unwrap();
    let chunk = vec![0x5a; 64 << 10];
    while f.write_all(&chunk).is_ok() {}
    drop(f);
    d.restart();
    assert!(
        d.lines("live/ipv4.txt") == full.acked,
        "served set after a restart on a full disk\nlog:\n{}",
        d.log()
    );
    full.f = open_append(&d, "live/ipv4.txt");
    let more = full.batch(1000);
    match write_lines(&mut full.f, &more) {
        Ok(_) => full.acked.extend(more),
        Err(e) => assert_eq!(
            e.raw_os_error(),
            Some(libc::ENOSPC),
            "write on a full disk: {e}"
        ),
    }
    fs::remove_file(&full.filler).unwrap();
    fs::remove_file(&refill).unwrap();
    let after = full.batch(100);
    write_lines(&mut full.f, &after)
        .unwrap_or_else(|e| panic!("write after freeing space: {e}\nlog:\n{}", d.log()));
    full.acked.extend(after);
    full.close_handle();
    assert!(
        d.lines("live/ipv4.txt") == full.acked,
        "after freeing space"
    );
    d.kill9();
    d.restart();
    assert!(
        d.lines("live/ipv4.txt") == full.acked,
        "after another crash"
    );
    let _ = d.stop();
    drop(full.tmpfs);
}

/// Aging on a full disk: lines seen a day ago move to chaud (a tier partition in memory
/// until a commit has room) and lines seen since stay live (a new live version without
/// the others, in memory since the disk has no room for it); nothing acknowledged is lost
/// and writes go through once space is freed, before and after a crash.
#[test]
fn aging_on_a_full_disk_loses_nothing_and_writes_resume_when_space_is_freed() {
    let Some(mut d) = Daemon::builder().manual_clock(T0).config(QUIET).start() else {
        return;
    };
    let mut full = fill_disk(&mut d);
    // With room again: domains (a live set still in an unnamed file on the disk), then
    // lines seen later, which stay live; then the disk full again.
    fs::remove_file(&full.filler).unwrap();
    let domains = |from: u32| -> Vec<String> {
        (from..from + 300)
            .map(|i| format!("d{i}.example.org"))
            .collect()
    };
    let (old_domains, recent_domains) = (domains(0), domains(1000));
    d.append_lines("live/domain.txt", &old_domains);
    aging::set_clock(&d, T0 + DAY + DAY / 2);
    d.append_lines("live/domain.txt", &recent_domains);
    let recent = full.batch(200);
    write_lines(&mut full.f, &recent).unwrap();
    let refill = full.filler.with_file_name("refill");
    let mut f = File::create(&refill).unwrap();
    let chunk = vec![0x5a; 64 << 10];
    while f.write_all(&chunk).is_ok() {}
    drop(f);
    aging::age_at(&d, T0 + 2 * DAY);
    let (chaud, live) = (d.lines("chaud/ipv4.txt"), d.lines("live/ipv4.txt"));
    assert!(
        chaud == full.acked && live == recent,
        "after aging on a full disk: chaud {} lines of {}, live {} of {}\nlog:\n{}",
        chaud.len(),
        full.acked.len(),
        live.len(),
        recent.len(),
        d.log()
    );
    assert_eq!(d.lines("chaud/domain.txt"), old_domains, "chaud domains");
    assert_eq!(d.lines("live/domain.txt"), recent_domains, "live domains");
    fs::remove_file(&refill).unwrap();
    let after = full.batch(100);
    write_lines(&mut full.f, &after)
        .unwrap_or_else(|e| panic!("write after freeing space: {e}\nlog:\n{}", d.log()));
    full.close_handle();
    ctl_ok(&d, "commit");
    d.kill9();
    aging::restart_at(&mut d, T0 + 2 * DAY);
    let live_now: Vec<String> = recent.iter().chain(&after).cloned().collect();
    assert!(
        d.lines("chaud/ipv4.txt") == full.acked,
        "chaud after restart"
    );
    assert!(d.lines("live/ipv4.txt") == live_now, "live after restart");
    assert_eq!(
        d.lines("chaud/domain.txt"),
        old_domains,
        "chaud domains after restart"
    );
    assert_eq!(
        d.lines("live/domain.txt"),
        recent_domains,
        "live domains after restart"
    );
    let _ = d.stop();
    drop(full.tmpfs);
}

// ---------------------------------------------------------------------------------------
// Failing WAL syscalls

#[test]
fn failed_wal_fsync_refuses_writes_until_restart_and_loses_nothing_acknowledged() {
    let Some(mut d) = Daemon::builder().config(QUIET).start() else {
        return;
    };
    let acked: Vec<String> = (0..20).map(ipv4).collect();
    d.append_lines("live/ipv4.txt", &acked);
    ctl_ok(&d, "failpoint wal::sync eio");
    let mut f = open_append(&d, "live/ipv4.txt");
    let f1: Vec<String> = (100..103).map(ipv4).collect();
    let f2: Vec<String> = (200..203).map(ipv4).collect();
    let f3: Vec<String> = (300..303).map(ipv4).collect();
    let f4: Vec<String> = (400..403).map(ipv4).collect();
    assert_eq!(errno_of(write_lines(&mut f, &f1)), libc::EIO, "first write");
    assert_eq!(
        errno_of(write_lines(&mut f, &f2)),
        libc::EIO,
        "second write"
    );
    ctl_ok(&d, "failpoint wal::sync off");
    assert_eq!(
        errno_of(write_lines(&mut f, &f3)),
        libc::EIO,
        "a write after the failpoint is off: an fsync failure must not be retried as if nothing happened"
    );
    drop(f);
    let mut f = open_append(&d, "live/ipv4.txt");
    assert_eq!(
        errno_of(write_lines(&mut f, &f4)),
        libc::EIO,
        "a new descriptor"
    );
    drop(f);
    let health = d.read(".iocfs/health");
    assert!(
        health.lines().any(|l| l.starts_with("wal:")),
        "health does not report the WAL: {health:?}"
    );
    // Reads still work and show exactly what was acknowledged.
    assert_eq!(d.lines("live/ipv4.txt"), acked, "served after the failure");
    assert!(d
        .read(&format!(".iocfs/lookup/{}", acked[3]))
        .contains("\"live\""));
    assert!(fs::metadata(d.path(&format!(".iocfs/lookup/{}", f1[0]))).is_err());

    let status = d.stop();
    eprintln!("SIGTERM with a failed WAL: {status}");
    d.restart();
    assert_eq!(d.read(".iocfs/health"), "ok\n", "health after restart");
    let served = d.lines("live/ipv4.txt");
    for (what, lines) in [
        ("first", &f1),
        ("second", &f2),
        ("third", &f3),
        ("fourth", &f4),
    ] {
        let back: Vec<&String> = lines.iter().filter(|l| served.contains(l)).collect();
        assert!(
            back.is_empty(),
            "after restart, lines of the {what} failed write are served: {back:?}"
        );
    }
    assert_eq!(served, acked, "after restart");
    let more = vec![ipv4(500)];
    d.append_lines("live/ipv4.txt", &more);
    assert_eq!(d.lines("live/ipv4.txt").len(), acked.len() + 1);
}

#[test]
fn wal_write_enospc_fails_that_write_and_writes_resume_when_it_clears() {
    let Some(mut d) = Daemon::builder().config(QUIET).start() else {
        return;
    };
    let mut acked: Vec<String> = (0..20).map(ipv4).collect();
    d.append_lines("live/ipv4.txt", &acked);
    ctl_ok(&d, "failpoint wal::write enospc");
    let mut f = open_append(&d, "live/ipv4.txt");
    let lost: Vec<String> = (100..105).map(ipv4).collect();
    assert_eq!(errno_of(write_lines(&mut f, &lost)), libc::ENOSPC, "write");
    assert_eq!(
        errno_of(write_lines(&mut f, &lost[..2])),
        libc::ENOSPC,
        "write while still failing"
    );
    assert_eq!(d.lines("live/ipv4.txt"), acked, "served while failing");
    ctl_ok(&d, "failpoint wal::write off");
    let later: Vec<String> = (200..205).map(ipv4).collect();
    write_lines(&mut f, &later)
        .unwrap_or_else(|e| panic!("write after the failpoint is off: {e}\nlog:\n{}", d.log()));
    drop(f);
    acked.extend(later);
    assert_eq!(d.lines("live/ipv4.txt"), acked, "served after it cleared");
    assert_eq!(d.read(".iocfs/health"), "ok\n");
    d.kill9();
    d.restart();
    let served = d.lines("live/ipv4.txt");
    assert_eq!(served, acked, "after a crash and restart");
}
