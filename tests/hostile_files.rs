//! Hostile files (README "Hostile local users and files"): checksum-valid bytes on disk that
//! lie (ids out of range), and a live set driven to the most lines its ids can number.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report
#![cfg(feature = "testing")]

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{errno_of, Daemon, BIN, READY_TIMEOUT};
use iocfs::store::tier::format;

const QUIET: &str = "[aging]\ninterval = \"3650d\"\n";

fn start() -> Option<Daemon> {
    Daemon::builder()
        .arg("--manual-clock")
        .arg("1700000000")
        .config(QUIET)
        .start()
}

/// 2000 domains aged into chaud, committed; the daemon stopped. The chaud file's path.
fn chaud_file(d: &mut Daemon) -> PathBuf {
    let doms: Vec<String> = (0..2000).map(|i| format!("d{i}.example.org")).collect();
    d.append_bulk("live/domain.txt", &doms);
    d.ctl("clock +25h").unwrap();
    d.ctl("age").unwrap();
    assert!(d.stop().success());
    d.data().join("chaud/domain.txt.gz")
}

/// Start iocfs on the test's data dir and expect it to refuse; its output.
fn refused(d: &Daemon) -> String {
    let mut child = d
        .command(&d.mnt())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = common::wait_timeout(&mut child, READY_TIMEOUT);
    if status.is_none() {
        let _ = child.kill();
        common::detach(&d.mnt());
        panic!("iocfs mounted a data dir it should refuse");
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Patch a block member's header at `member` (offset) with `edit` on its extra-field payload,
/// and make the payload's CRC32C valid again.
fn patch_block_header(path: &Path, member: u64, edit: impl FnOnce(&mut [u8])) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut head = vec![0u8; 12];
    f.read_exact_at(&mut head, member).unwrap();
    let xlen = u16::from_le_bytes([head[10], head[11]]) as usize;
    let mut extra = vec![0u8; xlen];
    f.read_exact_at(&mut extra, member + 12).unwrap();
    let payload = &mut extra[4..];
    let n = payload.len();
    edit(&mut payload[..n - 4]);
    let crc = crc32c::crc32c(&payload[..n - 4]);
    payload[n - 4..].copy_from_slice(&crc.to_le_bytes());
    f.write_all_at(&extra, member + 12).unwrap();
}

#[test]
fn block_ids_out_of_range_are_refused_at_mount_naming_the_file() {
    for bad_id in [u32::MAX, 1 << 27, 0] {
        let Some(mut d) = start() else { return };
        let path = chaud_file(&mut d);
        let file = File::open(&path).unwrap();
        let first = format::read_index(&file).unwrap().blocks[0].offset;
        patch_block_header(&path, first, |p| {
            p[2..6].copy_from_slice(&bad_id.to_le_bytes())
        });
        let text = refused(&d);
        assert!(
            text.contains(&format!("block id {bad_id} is out of range"))
                && text.contains("chaud/domain.txt.gz"),
            "block id {bad_id}: {text}"
        );
        let out = Command::new(BIN)
            .arg("check")
            .arg(d.data())
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(
            !out.status.success() && report.contains("out of range"),
            "{report}"
        );
    }
}

/// Item 10: a live set can't be given more lines than its slot ids number (2^27; lowered
/// here through ctl): the write that would is refused with EFBIG and applies nothing.
#[test]
fn a_live_set_refuses_lines_past_the_most_its_ids_can_number() {
    let Some(mut d) = start() else { return };
    d.ctl("live-slot-limit 100").unwrap();
    let lines = |from: usize, n: usize| -> Vec<String> {
        (from..from + n)
            .map(|i| format!("n{i}.example.org"))
            .collect()
    };
    d.append_bulk("live/domain.txt", &lines(0, 90));
    let mut f = OpenOptions::new()
        .append(true)
        .open(d.path("live/domain.txt"))
        .unwrap();
    let more: String = lines(90, 20).iter().map(|l| format!("{l}\n")).collect();
    assert_eq!(errno_of(f.write(more.as_bytes())), libc::EFBIG);
    assert_eq!(d.lines("live/domain.txt").len(), 90);
    d.append_bulk("live/domain.txt", &lines(90, 10));
    assert_eq!(errno_of(f.write(b"one.more.example.org\n")), libc::EFBIG);
    drop(f);
    let src = d.root().join("list.txt");
    fs::write(
        &src,
        lines(500, 101)
            .iter()
            .map(|l| format!("{l}\n"))
            .collect::<String>(),
    )
    .unwrap();
    let out = d.sh(&format!("cp {} live/domain.txt", src.display()));
    assert!(!out.status.success(), "a replace past the bound was taken");
    assert_eq!(d.lines("live/domain.txt"), lines(0, 100));
    d.kill9();
    d.restart();
    assert_eq!(d.lines("live/domain.txt"), lines(0, 100));
}
