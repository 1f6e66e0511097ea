//! Hostile files (README "Hostile local users and files"): checksum-valid bytes on disk that
//! lie (ids out of range, sizes that would make iocfs allocate gigabytes, a WAL segment
//! that made the damage scan quadratic, checkpoints and live sidecars that don't match
//! their files), and a live set driven to the most lines its ids can number.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report
#![cfg(feature = "testing")]

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use common::{errno_of, wal_records_end, wal_segments, Daemon, BIN, READY_TIMEOUT};
use iocfs::disk::real::RealFile;
use iocfs::store::tier::format;

const QUIET: &str = "[aging]\ninterval = \"3650d\"\n";

fn start() -> Option<Daemon> {
    Daemon::builder()
        .manual_clock(1_700_000_000)
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
        let file = RealFile::new(File::open(&path).unwrap(), &path);
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

/// A block header (checksum-valid) that claims 3.75 GiB of raw bytes, with the gzip size
/// and the trailer's totals made to agree: refused as a header, before anything of that size
/// is allocated.
#[test]
fn a_block_claiming_gigabytes_is_refused_before_it_is_allocated() {
    let Some(mut d) = start() else { return };
    let path = chaud_file(&mut d);
    let file = RealFile::new(File::open(&path).unwrap(), &path);
    let index = format::read_index(&file).unwrap();
    let b = &index.blocks[0];
    let huge: u32 = 0xF000_0000;
    patch_block_header(&path, b.offset, |p| {
        p[10..14].copy_from_slice(&huge.to_le_bytes())
    });
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    let isize_at = b.offset + u64::from(b.header.member_len) - 4;
    f.write_all_at(&huge.to_le_bytes(), isize_at).unwrap();
    let mut t = index.trailer;
    t.raw_bytes = t.raw_bytes - u64::from(b.header.raw_len) + u64::from(huge);
    let mut trailer = Vec::new();
    format::encode_trailer(&t, &mut trailer);
    f.write_all_at(&trailer, index.file_len - trailer.len() as u64)
        .unwrap();
    let text = refused(&d);
    assert!(
        text.contains(&format!("{huge} bytes")) && text.contains(&format!("offset {}", b.offset)),
        "{text}"
    );
}

/// A blocked gzip no commit wrote (adopted at mount, member by member) whose first member
/// claims to run past the end of the file: read up to there, its length never allocated
/// (a length past any valid member is refused as a header first).
#[test]
fn an_adopted_file_with_a_member_past_its_end_is_read_up_to_there() {
    for past_any in [false, true] {
        let Some(mut d) = start() else { return };
        let path = chaud_file(&mut d);
        // Make it a file no commit wrote: another partition's name, not in the manifest.
        let foreign = d.data().join("chaud/url.txt.gz");
        fs::copy(&path, &foreign).unwrap();
        let first = &format::read_index(&RealFile::new(File::open(&foreign).unwrap(), &foreign))
            .unwrap()
            .blocks[0];
        let claim = if past_any {
            0xFFFF_FFF0
        } else {
            format::max_member_len(first.header.raw_len) as u32
        };
        assert!(u64::from(claim) > fs::metadata(&foreign).unwrap().len());
        patch_block_header(&foreign, first.offset, |p| {
            p[14..18].copy_from_slice(&claim.to_le_bytes())
        });
        d.restart();
        let said = if past_any {
            "bad member header"
        } else {
            "runs past the end of the file"
        };
        assert!(d.log().contains(said), "{}", d.log());
        assert_eq!(d.lines("chaud/domain.txt").len(), 2000);
    }
}

/// A WAL whose tail after a bad record is 8 MiB of overlapping, plausible record headers,
/// each claiming the rest of the segment: the scan that tells a torn tail from damage
/// checked each one's CRC over its whole length (hours); now the mount takes seconds.
#[test]
fn a_crafted_wal_tail_does_not_make_the_damage_scan_quadratic() {
    let Some(mut d) = start() else { return };
    d.append_lines("live/ipv4.txt", &["192.0.2.1", "192.0.2.2"]);
    d.kill9();
    let seg = wal_segments(&d.data()).pop().unwrap();
    let bytes = fs::read(&seg).unwrap();
    let end = wal_records_end(&bytes);
    let next = common::wal_records(&bytes).last().unwrap().1 + 1;
    let mut tail = vec![0u8; 8 << 20];
    tail[0] = 0xEE; // not a record, not zeros
    let n = tail.len();
    for at in (16..n - 16).step_by(16) {
        let len = (n - at - 16) as u32;
        tail[at..at + 4].copy_from_slice(&len.to_le_bytes());
        tail[at + 4..at + 12].copy_from_slice(&(next + 1).to_le_bytes());
    }
    let f = OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(end as u64).unwrap();
    f.write_all_at(&tail, end as u64).unwrap();
    drop(f);
    let started = Instant::now();
    d.restart();
    assert!(d.log().contains("torn tail"), "{}", d.log());
    assert_eq!(d.lines("live/ipv4.txt"), ["192.0.2.1", "192.0.2.2"]);
    assert!(started.elapsed() < READY_TIMEOUT);
}

/// A checkpoint (checksum-valid) whose entries point at a live slot instead of a block of the
/// file it describes: not used for that file (it is read instead), nothing indexed wrong.
#[test]
fn a_checkpoint_pointing_outside_its_file_is_not_used() {
    let Some(mut d) = start() else { return };
    chaud_file(&mut d);
    let ckpt = common::checkpoints(&d.data()).pop().unwrap();
    let mut bytes = fs::read(&ckpt).unwrap();
    let n = bytes.len();
    // The first entry of the first partition: header 28 bytes, partition header 18.
    let loc = 28 + 18 + 20;
    bytes[loc + 3] |= 0x80;
    let crc = crc32c::crc32c(&bytes[..n - 4]);
    bytes[n - 4..].copy_from_slice(&crc.to_le_bytes());
    fs::write(&ckpt, &bytes).unwrap();
    d.restart();
    assert!(d.log().contains("point outside its file"), "{}", d.log());
    assert_eq!(d.lines("chaud/domain.txt").len(), 2000);
    assert!(d.path(".iocfs/lookup/d0.example.org").exists());
    assert!(d.stop().success());
    let out = Command::new(BIN)
        .arg("check")
        .arg(d.data())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// A live file and its sidecar, both checksum-valid, that disagree on the number of lines:
/// refused (before, the extra lines were served but not indexed).
#[test]
fn a_live_sidecar_that_does_not_match_its_text_is_refused() {
    let Some(mut d) = start() else { return };
    d.append_lines("live/domain.txt", &["a.example.org", "b.example.org"]);
    assert!(d.stop().success());
    let text_path = d.data().join("live/domain.txt");
    let meta_path = d.data().join("live/.domain.txt.meta");
    let text = b"a.example.org\nb.example.org\nc.example.org\n";
    fs::write(&text_path, text).unwrap();
    let mut meta = fs::read(&meta_path).unwrap();
    meta[32..40].copy_from_slice(&(text.len() as u64).to_le_bytes());
    meta[40..44].copy_from_slice(&crc32c::crc32c(text).to_le_bytes());
    let n = meta.len();
    let crc = crc32c::crc32c(&meta[..n - 4]);
    meta[n - 4..].copy_from_slice(&crc.to_le_bytes());
    fs::write(&meta_path, &meta).unwrap();
    let out = refused(&d);
    assert!(
        out.contains("3 lines, but its .meta sidecar has times for 2"),
        "{out}"
    );
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
