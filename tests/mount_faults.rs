//! Mounted storage fault injection (`--features testing`): bit flips in tier files, a full
//! disk (a small tmpfs as the data directory), and failing WAL syscalls (failpoints).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report
#![cfg(feature = "testing")]

mod aging;
mod common;

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aging::{ctl_ok, snapshot, DAY, T0};
use common::{
    copy_dir, detach, errno_of, Daemon, MountGuard, Rng, BUCKETS, READY_TIMEOUT, TYPE_FILES,
};
use iocfs::store::tier::format;

/// No background aging, commits or checkpoints: the test decides when they happen.
const QUIET: &str = "[aging]\ninterval = \"3650d\"\n\
    [durability]\ncommit_interval = \"3650d\"\ncheckpoint_interval = \"3650d\"\n";

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

fn ipv4(n: u32) -> String {
    format!("10.{}.{}.{}", (n >> 16) & 255, (n >> 8) & 255, n & 255)
}

// ---------------------------------------------------------------------------------------
// Bit flips in tier files

/// A daemon started by the test itself on the harness's data dir and mount point, so a
/// start that fails (a refused mount) can be observed. Killed and detached when dropped.
struct Mount {
    child: Child,
    mnt: PathBuf,
    log: PathBuf,
}

enum Started {
    Refused(String),
    Mounted(Mount),
}

fn try_mount(d: &Daemon, log: &Path) -> Started {
    let mnt = d.mnt();
    detach(&mnt);
    let out = File::create(log).unwrap();
    let child = d
        .command(&mnt)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("spawn iocfs");
    let mut m = Mount {
        child,
        mnt: mnt.clone(),
        log: log.to_path_buf(),
    };
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if fs::read(mnt.join(".iocfs/health")).is_ok() {
            return Started::Mounted(m);
        }
        if let Some(status) = m.child.try_wait().unwrap() {
            let text = fs::read_to_string(log).unwrap_or_default();
            assert!(!status.success(), "iocfs exited 0 during start: {text}");
            return Started::Refused(text);
        }
        assert!(
            Instant::now() < deadline,
            "iocfs neither mounted nor exited; log:\n{}",
            fs::read_to_string(&m.log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        detach(&self.mnt);
    }
}

/// Data in three tiers, committed and checkpointed; the daemon stopped. Returns what the
/// mount served.
fn tiered(d: &mut Daemon) -> BTreeMap<String, Vec<u8>> {
    let doms: Vec<String> = (0..3000).map(|i| format!("t{i:05}.flip.example")).collect();
    let ips: Vec<String> = (0..3000).map(ipv4).collect();
    let urls: Vec<String> = (0..600)
        .map(|i| format!("http://u{i}.flip.example/a/{i}"))
        .collect();
    // ipv4 ends in froid, half the domains in tiede, urls and the other half in chaud.
    d.append_bulk("live/ipv4.txt", &ips);
    ctl_ok(d, &format!("clock {}", T0 + 40 * DAY));
    d.append_bulk("live/domain.txt", &doms[..1500]);
    ctl_ok(d, &format!("clock {}", T0 + 47 * DAY));
    d.append_bulk("live/url.txt", &urls);
    d.append_bulk("live/domain.txt", &doms[1500..]);
    ctl_ok(d, &format!("clock {}", T0 + 50 * DAY));
    ctl_ok(d, "age");
    d.append_bulk("live/sha256.txt", &[format!("{:064x}", 42)]);
    ctl_ok(d, "checkpoint");
    let served = snapshot(d);
    let status = d.stop();
    assert!(status.success(), "SIGTERM: {status}");
    let nonempty = served
        .iter()
        .filter(|(k, v)| !k.starts_with("live/") && !v.is_empty())
        .count();
    assert!(nonempty >= 4, "too few tier files: {:?}", served.keys());
    served
}

/// Tier files with at least one block: (path, served name, blocks).
fn tier_files(data: &Path) -> Vec<(PathBuf, String, Vec<format::IndexedBlock>)> {
    let mut out = Vec::new();
    for b in &BUCKETS[1..] {
        for f in TYPE_FILES {
            let path = data.join(b).join(format!("{f}.gz"));
            let Ok(file) = File::open(&path) else {
                continue;
            };
            let file = iocfs::disk::real::RealFile::new(file, &path);
            let index =
                format::read_index(&file).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            if !index.blocks.is_empty() {
                out.push((path, format!("{b}/{f}"), index.blocks));
            }
        }
    }
    out
}

/// Can the flip at `at` go unnoticed without changing a served byte? Only when it is in the
/// DEFLATE data of a member and the damaged file still inflates to the same bytes (a flip
/// of a padding bit after the end of the compressed stream).
fn harmless(path: &Path, member: &format::IndexedBlock, at: u64, original: &[u8]) -> bool {
    let data_from = member.offset + u64::from(member.header.data_offset);
    let data_to = member.offset + u64::from(member.header.member_len) - 8;
    if !(data_from..data_to).contains(&at) {
        return false;
    }
    let mut out = Vec::new();
    let mut z = flate2::read::MultiGzDecoder::new(File::open(path).unwrap());
    z.read_to_end(&mut out).is_ok() && out == original
}

#[derive(Default, Debug)]
struct Tally {
    refused: u32,
    eio: u32,
    quarantined_at_load: u32,
    harmless: u32,
}

fn tier_bit_flips(with_checkpoint: bool, seed: u64) {
    let Some(mut d) = Daemon::builder()
        .manual_clock(T0)
        .config(&format!(
            "{QUIET}[tiers]\nblock_size = \"4KiB\"\n[cache]\nsize = \"1MiB\"\n"
        ))
        .start()
    else {
        return;
    };
    let original = tiered(&mut d);
    let data = d.data();
    let pristine = d.root().join("pristine");
    copy_dir(&data, &pristine);
    let files = tier_files(&data);
    let log = d.root().join("flip.log");
    let mut rng = Rng::new(seed);
    let mut tally = Tally::default();
    let mut failures: Vec<String> = Vec::new();
    for i in 0..50 {
        fs::remove_dir_all(&data).unwrap();
        copy_dir(&pristine, &data);
        if !with_checkpoint {
            for e in fs::read_dir(data.join("checkpoint")).unwrap() {
                fs::remove_file(e.unwrap().path()).unwrap();
            }
        }
        let (path, name, blocks) = &files[rng.range(0, files.len() as u64) as usize];
        let j = rng.range(0, blocks.len() as u64) as usize;
        let member = &blocks[j];
        let at = member.offset + rng.range(0, u64::from(member.header.member_len));
        let bit = rng.range(0, 8);
        let mut bytes = fs::read(path).unwrap();
        bytes[at as usize] ^= 1 << bit;
        fs::write(path, &bytes).unwrap();
        let start: u64 = blocks[..j]
            .iter()
            .map(|b| u64::from(b.header.raw_len))
            .sum();
        let end = start + u64::from(member.header.raw_len);
        let part = if at < member.offset + u64::from(member.header.data_offset) {
            "header/extra"
        } else if at >= member.offset + u64::from(member.header.member_len) - 8 {
            "gzip CRC32/ISIZE"
        } else {
            "DEFLATE data"
        };
        let ctx = format!(
            "flip {i}: bit {bit} of byte {at} of {} ({part} of block {j} at offset {}, serving {start}..{end})",
            path.display(),
            member.offset
        );
        let want = &original[name];
        match try_mount(&d, &log) {
            Started::Refused(text) => {
                tally.refused += 1;
                let names_it = text.contains(&path.display().to_string())
                    && (text.contains(&format!("offset {}", member.offset))
                        || text.contains(&format!("offset {at}")));
                if !names_it {
                    failures.push(format!(
                        "{ctx}: refused without naming file and offset:\n{text}"
                    ));
                }
            }
            Started::Mounted(m) => {
                let mnt = m.mnt.clone();
                let health_at_mount = fs::read_to_string(mnt.join(".iocfs/health")).unwrap();
                let f = OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_DIRECT)
                    .open(mnt.join(name))
                    .unwrap();
                let size = f.metadata().unwrap().len();
                if size != want.len() as u64 {
                    failures.push(format!("{ctx}: st_size {size}, {} expected", want.len()));
                }
                let mut failed_reads = 0;
                let mut off = 0u64;
                while off < want.len() as u64 {
                    let mut buf = vec![0u8; 4096];
                    let overlaps = off < end && off + 4096 > start;
                    match f.read_at(&mut buf, off) {
                        Ok(n) => {
                            let expect = &want[off as usize..(off as usize + 4096).min(want.len())];
                            if &buf[..n] != expect {
                                failures.push(format!(
                                    "{ctx}: WRONG BYTES served at {off} ({n} bytes)"
                                ));
                                break;
                            }
                        }
                        Err(e) if e.raw_os_error() == Some(libc::EIO) && overlaps => {
                            failed_reads += 1;
                        }
                        Err(e) => failures.push(format!(
                            "{ctx}: read at {off} (outside the damaged block: {}) failed: {e}",
                            !overlaps
                        )),
                    }
                    off += 4096;
                }
                drop(f);
                // Every other file reads whole and unchanged.
                for (rel, bytes) in &original {
                    if rel != name {
                        match fs::read(mnt.join(rel)) {
                            Ok(b) if &b == bytes => {}
                            Ok(_) => failures.push(format!("{ctx}: {rel} changed")),
                            Err(e) => failures.push(format!("{ctx}: read {rel}: {e}")),
                        }
                    }
                }
                let health = fs::read_to_string(mnt.join(".iocfs/health")).unwrap();
                if health_at_mount != "ok\n" {
                    tally.quarantined_at_load += 1;
                }
                if failed_reads > 0 {
                    tally.eio += 1;
                    if health == "ok\n" {
                        failures.push(format!(
                            "{ctx}: {failed_reads} reads failed with EIO but .iocfs/health says ok"
                        ));
                    }
                } else if harmless(path, member, at, want) {
                    tally.harmless += 1;
                } else {
                    failures.push(format!(
                        "{ctx}: damage NOT DETECTED (all reads succeeded; health {health:?})"
                    ));
                }
                drop(m);
            }
        }
    }
    eprintln!(
        "tier bit flips ({}): {tally:?}",
        if with_checkpoint {
            "checkpoint: blocks inflated at first read"
        } else {
            "no checkpoint: every block inflated at load"
        }
    );
    assert!(
        failures.is_empty(),
        "{} of 50 flips mishandled ({tally:?}):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn tier_bit_flips_without_checkpoint_are_refused_or_quarantined() {
    tier_bit_flips(false, 0x71e5_0001);
}

#[test]
fn tier_bit_flips_with_checkpoint_are_refused_or_fail_reads_with_eio() {
    tier_bit_flips(true, 0x71e5_0002);
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
