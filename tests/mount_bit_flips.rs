//! Mounted storage fault injection (`--features testing`): bit flips in tier files, each
//! refused at start or failing only the reads of its block (with EIO).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report
#![cfg(feature = "testing")]

mod aging;
mod common;

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use aging::{ctl_ok, ipv4, snapshot, DAY, QUIET, T0};
use common::{copy_dir, detach, Daemon, Rng, BUCKETS, READY_TIMEOUT, TYPE_FILES};
use iocfs::store::tier::format;

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
