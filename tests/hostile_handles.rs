//! Hostile writers on the mount (README "Hostile local users and files"): what one open
//! handle can do to everybody else. Each test performs the attack through the mount.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use std::fs::OpenOptions;
use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use common::Daemon;

/// Item 13: an O_TRUNC descriptor dup'ed, one copy closed without writing and the other
/// kept open leaves an empty replace waiting for a release that does not come. Readers do
/// not wait for it (before: 100 ms per open, for every reader of the file).
#[test]
fn a_held_empty_replace_slows_no_reader() {
    let Some(d) = Daemon::start() else { return };
    d.append_lines("live/ipv4.txt", &["192.0.2.1", "192.0.2.2"]);
    let f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(d.path("live/ipv4.txt"))
        .unwrap();
    let dup = f.try_clone().unwrap();
    drop(f);
    let started = Instant::now();
    for _ in 0..50 {
        assert_eq!(d.lines("live/ipv4.txt"), ["192.0.2.1", "192.0.2.2"]);
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(2500),
        "50 reads took {took:?}: readers wait for the held replace"
    );
    // The second close by the same process without writing: the set is emptied now.
    drop(dup);
    assert_eq!(d.read("live/ipv4.txt"), "");

    // An append handle left with a last line and a copy held: readers wait for its release
    // just after the close (that line counts then), not at every open from then on.
    let mut f = OpenOptions::new()
        .append(true)
        .open(d.path("live/ipv4.txt"))
        .unwrap();
    f.write_all(b"192.0.2.3\n192.0.2.4").unwrap();
    let dup = f.try_clone().unwrap();
    drop(f);
    let started = Instant::now();
    for _ in 0..50 {
        assert_eq!(d.lines("live/ipv4.txt"), ["192.0.2.3"]);
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(2500),
        "50 reads took {took:?}: readers wait for a held last line"
    );
    drop(dup);
    assert_eq!(d.lines("live/ipv4.txt"), ["192.0.2.3", "192.0.2.4"]);
}

/// A close of a replace descriptor by a process that never wrote through it (here a child
/// that inherits the descriptor and closes it at exec, as any fork of a multithreaded
/// writer does) does not apply a half-written replace.
#[test]
fn a_forked_child_closing_its_copy_does_not_cut_a_replace_short() {
    let Some(d) = Daemon::start() else { return };
    d.append_lines("live/domain.txt", &["old.example"]);
    let mut f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(d.path("live/domain.txt"))
        .unwrap();
    f.write_all(b"first.example\n").unwrap();
    // The child gets a copy of the descriptor table, and exec closes the (close-on-exec) copy.
    assert!(Command::new("true").status().unwrap().success());
    assert_eq!(
        d.lines("live/domain.txt"),
        ["old.example"],
        "a child's close applied the replace midway"
    );
    f.write_all(b"second.example\n").unwrap();
    drop(f);
    assert_eq!(
        d.lines("live/domain.txt"),
        ["first.example", "second.example"]
    );
}

fn stats(d: &Daemon) -> serde_json::Value {
    serde_json::from_str(&d.read(".iocfs/stats.json")).unwrap()
}

#[cfg(feature = "testing")]
fn scratch_bytes(d: &Daemon) -> u64 {
    stats(d)["scratch"]["bytes"].as_u64().unwrap()
}

/// Item 3: scratch files are bounded in memory all together. Renaming one must not take its
/// bytes out of the count, and bytes written through the descriptor of an unlinked one count
/// until it is closed, then come back.
#[cfg(feature = "testing")]
#[test]
fn scratch_bytes_count_through_renames_and_unlinked_descriptors() {
    use common::{errno_of, poll_until};
    let Some(d) = Daemon::start() else { return };
    d.ctl("scratch-limit 1048576").unwrap();
    let body = vec![b'#'; 600 << 10];
    std::fs::write(d.path("live/a.tmp"), &body).unwrap();
    std::fs::rename(d.path("live/a.tmp"), d.path("live/b.tmp")).unwrap();
    assert!(
        scratch_bytes(&d) >= 600 << 10,
        "the rename dropped the count"
    );
    assert_eq!(
        errno_of(std::fs::write(d.path("live/c.tmp"), &body)),
        libc::ENOSPC,
        "a rename laundered 600 KiB out of a 1 MiB bound"
    );
    std::fs::remove_file(d.path("live/b.tmp")).unwrap();
    std::fs::remove_file(d.path("live/c.tmp")).unwrap();
    let freed = || {
        poll_until(Duration::from_secs(10), || {
            (scratch_bytes(&d) == 0).then_some(())
        })
    };
    assert!(freed().is_some(), "{} bytes left", scratch_bytes(&d));

    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(d.path("live/d.tmp"))
        .unwrap();
    std::fs::remove_file(d.path("live/d.tmp")).unwrap();
    f.write_all(&body).unwrap();
    assert_eq!(
        errno_of(std::fs::write(d.path("live/e.tmp"), &body)),
        libc::ENOSPC,
        "an open unlinked file's bytes were not counted"
    );
    drop(f);
    assert!(
        freed().is_some(),
        "an unlinked file's bytes stayed counted after its close"
    );
    std::fs::write(d.path("live/e.tmp"), &body).unwrap();
    assert_eq!(std::fs::read(d.path("live/e.tmp")).unwrap(), body);
}

/// The daemon's resident memory, KiB.
fn rss_kib(d: &Daemon) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", d.pid())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap()
}

/// Item 4: with `on_invalid = "skip"` an endless line is rejected once, dropped and skipped to
/// its newline; the handle never holds more than a line of it.
#[test]
fn an_endless_line_in_skip_mode_is_dropped_and_costs_no_memory() {
    let Some(d) = Daemon::builder()
        .config("[ingest]\non_invalid = \"skip\"\n")
        .start()
    else {
        return;
    };
    let before = rss_kib(&d);
    let mut f = OpenOptions::new()
        .append(true)
        .open(d.path("live/domain.txt"))
        .unwrap();
    f.write_all(b"first.example\n").unwrap();
    let chunk = vec![b'a'; 1 << 20];
    for _ in 0..128 {
        f.write_all(&chunk).unwrap();
    }
    let during = rss_kib(&d);
    f.write_all(b"\nkept.example\n").unwrap();
    drop(f);
    assert!(
        during < before + (32 << 10),
        "RSS {before} KiB -> {during} KiB while a 128 MiB line was being written"
    );
    assert_eq!(
        d.lines("live/domain.txt"),
        ["first.example", "kept.example"]
    );
    assert_eq!(stats(&d)["rejected_lines"]["domain"], 1);
}
