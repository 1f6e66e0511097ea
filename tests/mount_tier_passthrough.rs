//! Mounted tests of tier files under FUSE passthrough (the default where it works): the
//! first open inflates the version whole into a file the kernel reads itself; `O_DIRECT`
//! opens, files over `cache.size` and opens while daemon-served readers hold the inode are
//! served from the blocks. The kernel fails with EIO any open that mixes the two wrongly,
//! so every read here also checks that the daemon chose consistently.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod aging;
mod common;

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;

use aging::*;
use common::{poll_until, Daemon};
use std::time::Duration;

const BLOCKS: &str = "[tiers]\nblock_size = \"4KiB\"";

fn domains(n: usize, tag: &str) -> Vec<String> {
    (0..n).map(|i| format!("{tag}{i}.tier.example")).collect()
}

/// A daemon whose chaud/domain.txt holds `n` domains (many 4 KiB blocks).
fn with_chaud(n: usize, extra: &str) -> Option<Daemon> {
    let d = start_at(T0, &format!("{BLOCKS}\n{extra}"))?;
    append_all(&d, "live/domain.txt", &domains(n, "a"));
    age_at(&d, T0 + DAY + 1);
    Some(d)
}

fn stats(d: &Daemon) -> serde_json::Value {
    serde_json::from_str(&d.read(".iocfs/stats.json")).unwrap()
}

fn inflated(d: &Daemon) -> u64 {
    stats(d)["cache"]["inflated_bytes"].as_u64().unwrap()
}

/// Releases reach the daemon after `close()` returns: what they change shows soon after.
fn soon<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    poll_until(Duration::from_secs(10), &mut check).unwrap_or_else(|| panic!("never: {what}"))
}

/// Every byte through a descriptor, in aligned 64 KiB preads (what O_DIRECT requires).
fn read_aligned(f: &File) -> Vec<u8> {
    let mut buf = AlignedPage::new();
    let mut out = Vec::new();
    loop {
        let n = f.read_at(buf.bytes(), out.len() as u64).unwrap();
        out.extend_from_slice(&buf.bytes()[..n]);
        if n == 0 {
            return out;
        }
    }
}

/// 64 KiB aligned to 4 KiB, for O_DIRECT reads.
struct AlignedPage(Vec<u8>, usize);

impl AlignedPage {
    fn new() -> AlignedPage {
        let v = vec![0u8; (64 << 10) + 4096];
        let skip = v.as_ptr().align_offset(4096);
        AlignedPage(v, skip)
    }

    fn bytes(&mut self) -> &mut [u8] {
        &mut self.0[self.1..self.1 + (64 << 10)]
    }
}

fn sorted_lines(bytes: &[u8]) -> Vec<String> {
    let mut v: Vec<String> = String::from_utf8(bytes.to_vec())
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    v.sort();
    v
}

#[test]
fn a_tier_file_is_read_whole_from_its_inflated_copy_and_equals_the_blocks() {
    let Some(d) = with_chaud(20_000, "") else {
        return;
    };
    assert_eq!(inflated(&d), 0, "nothing inflated before an open");
    // Served from the blocks: the reference.
    let from_blocks = read_aligned(&open_direct(&d, "chaud/domain.txt"));
    assert_eq!(inflated(&d), 0, "an O_DIRECT open inflates nothing");
    let mut want = domains(20_000, "a");
    want.sort();
    assert_eq!(sorted_lines(&from_blocks), want);
    // Through the copy (once the O_DIRECT descriptor's release arrived: until then opens
    // are served from the blocks): byte for byte the same, with the size stat gives.
    let size = std::fs::metadata(d.path("chaud/domain.txt")).unwrap().len();
    let whole = soon("a plain open inflates the file", || {
        let whole = std::fs::read(d.path("chaud/domain.txt")).unwrap();
        assert_eq!(whole, from_blocks);
        (inflated(&d) > 0).then_some(whole)
    });
    assert_eq!(size, whole.len() as u64);
    assert_eq!(inflated(&d), size, "the copy is kept for the next open");
    let out = d.sh_ok("grep -c '^a1999[0-9]\\.tier' chaud/domain.txt");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "10");
    assert_eq!(
        common::readers::mapped(&d.path("chaud/domain.txt"), false).unwrap(),
        whole,
        "mmap reads the copy too"
    );
    let last = String::from_utf8_lossy(&whole)
        .lines()
        .last()
        .unwrap()
        .to_string();
    let out = d.sh_ok("tail -n 1 chaud/domain.txt");
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{last}\n"));
    let out = d.sh_ok("head -c 100 chaud/domain.txt");
    assert_eq!(out.stdout, whole[..100]);
}

#[test]
fn a_held_reader_keeps_its_version_across_aging_and_the_copy_goes_with_it() {
    let Some(d) = with_chaud(5_000, "") else {
        return;
    };
    let mut held = File::open(d.path("chaud/domain.txt")).unwrap();
    let held_size = held.metadata().unwrap().len();
    assert_eq!(inflated(&d), held_size);
    // New lines reach chaud: a new version of chaud/domain.txt.
    append_all(&d, "live/domain.txt", &domains(3_000, "b"));
    age_at(&d, T0 + 2 * DAY + 2);
    let now = std::fs::read(d.path("chaud/domain.txt")).unwrap();
    assert_eq!(
        sorted_lines(&now).len(),
        8_000,
        "a new open sees the change"
    );
    let mut old = Vec::new();
    held.read_to_end(&mut old).unwrap();
    assert_eq!(old.len() as u64, held_size);
    let mut want = domains(5_000, "a");
    want.sort();
    assert_eq!(
        sorted_lines(&old),
        want,
        "the held descriptor reads its version whole"
    );
    assert_eq!(
        inflated(&d),
        held_size + now.len() as u64,
        "both copies are in use"
    );
    drop(held);
    soon(
        "the superseded version's copy goes once nobody reads it",
        || (inflated(&d) == now.len() as u64).then_some(()),
    );
}

#[test]
fn direct_and_plain_opens_share_a_tier_file_with_passthrough_readers_either_way() {
    let Some(d) = with_chaud(10_000, "") else {
        return;
    };
    let rel = "chaud/domain.txt";
    let want = std::fs::read(d.path(rel)).unwrap();
    // The kernel refuses other opens of an inode passthrough readers hold: an O_DIRECT open
    // joins them (and reads the copy).
    let held = File::open(d.path(rel)).unwrap();
    assert_eq!(read_aligned(&open_direct(&d, rel)), want);
    drop(held);
    // And a passthrough open of an inode a daemon-served descriptor reads through the page
    // cache: refused too, so plain opens are served from the blocks while it is open.
    let superseding = domains(2_000, "c");
    append_all(&d, "live/domain.txt", &superseding);
    age_at(&d, T0 + 2 * DAY + 2);
    let direct = open_direct(&d, rel);
    let before = inflated(&d);
    let plain = std::fs::read(d.path(rel)).unwrap();
    assert_eq!(plain.len() as u64, direct.metadata().unwrap().len());
    assert_eq!(read_aligned(&direct), plain);
    assert_eq!(
        inflated(&d),
        before,
        "no copy made while a daemon-served reader holds it"
    );
    drop(direct);
    soon("an open after the release inflates it", || {
        assert_eq!(std::fs::read(d.path(rel)).unwrap(), plain);
        (inflated(&d) > before).then_some(())
    });
}

#[test]
fn a_tier_file_over_the_cache_size_is_served_from_its_blocks() {
    let Some(d) = with_chaud(60_000, "[cache]\nsize = \"1MiB\"") else {
        return;
    };
    let whole = std::fs::read(d.path("chaud/domain.txt")).unwrap();
    assert!(whole.len() > 1 << 20);
    let mut want = domains(60_000, "a");
    want.sort();
    assert_eq!(sorted_lines(&whole), want);
    assert_eq!(inflated(&d), 0);
}

/// A commit moves an aged version's blocks into the new file under the same inode (a new
/// value of the version, same id): opens counted before it still count. Without that, an
/// O_DIRECT open after the commit was taken for the first of its inode, answered as served
/// by the daemon, and refused with EIO by the kernel while a passthrough reader held it.
#[test]
fn a_commit_under_held_readers_keeps_their_inode_open_the_same_way() {
    let Some(d) = with_chaud(5_000, "[durability]\ncommit_interval = \"1h\"") else {
        return;
    };
    let rel = "chaud/domain.txt";
    let held = File::open(d.path(rel)).unwrap();
    let size = held.metadata().unwrap().len();
    assert_eq!(inflated(&d), size);
    ctl_ok(&d, "commit");
    // The next lookup of the name hands the daemon's node table the rebased version. The
    // kernel sends one once the entry it has is older than the daemon's entry TTL for
    // versions (1 s): a wait for the kernel's dentry cache, which no manual clock drives.
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(std::fs::metadata(d.path(rel)).unwrap().len(), size);
    let direct = open_direct(&d, rel);
    let whole = std::fs::read(d.path(rel)).unwrap();
    assert_eq!(read_aligned(&direct), whole);
    assert_eq!(
        inflated(&d),
        size,
        "the copy outlives the rebase: no second inflate"
    );
    drop((held, direct));
    soon(
        "the copy stays for the next open once its readers are gone",
        || {
            assert_eq!(std::fs::read(d.path(rel)).unwrap(), whole);
            (inflated(&d) == size).then_some(())
        },
    );
}

/// A committed version's blocks are gzip members of DATA/chaud/domain.txt.gz: the copy is
/// inflated from them (nothing of the file in the block cache yet) and equals `zcat`.
#[test]
fn a_committed_tier_file_is_inflated_from_its_members_and_equals_zcat() {
    let Some(d) = with_chaud(20_000, "[durability]\ncommit_interval = \"1h\"") else {
        return;
    };
    ctl_ok(&d, "commit");
    let whole = std::fs::read(d.path("chaud/domain.txt")).unwrap();
    assert_eq!(inflated(&d), whole.len() as u64);
    let zcat = std::process::Command::new("zcat")
        .arg(d.data().join("chaud/domain.txt.gz"))
        .output()
        .unwrap();
    assert!(zcat.status.success());
    assert_eq!(zcat.stdout, whole);
    let stats = stats(&d);
    assert_eq!(
        stats["cache"]["misses"], 0,
        "the copy was inflated without going through the block cache"
    );
}

#[test]
fn a_reader_walking_the_tier_files_finds_the_next_ones_inflated_ahead() {
    let Some(d) = start_at(T0, BLOCKS) else {
        return;
    };
    let ipv4: Vec<String> = (0..3_000)
        .map(|i| format!("10.1.{}.{}", i / 256, i % 256))
        .collect();
    let urls: Vec<String> = (0..4_000)
        .map(|i| format!("http://u{i}.example/p/{i}"))
        .collect();
    append_all(&d, "live/ipv4.txt", &ipv4);
    append_all(&d, "live/domain.txt", &domains(5_000, "a"));
    append_all(&d, "live/url.txt", &urls);
    age_at(&d, T0 + DAY + 1);
    let ahead = |what: &str| stats(&d)["cache"]["inflated_ahead"][what].as_u64().unwrap();
    let size = |rel: &str| std::fs::metadata(d.path(rel)).unwrap().len();
    // One open is no walk: only the file opened is inflated.
    assert_eq!(
        sorted_lines(d.read("chaud/ipv4.txt").as_bytes()).len(),
        3_000
    );
    assert_eq!(inflated(&d), size("chaud/ipv4.txt"));
    // The next file in directory order (empty): the next two with lines are inflated,
    // before anyone opens them.
    assert_eq!(d.read("chaud/ipv6.txt"), "");
    soon("two files inflated ahead", || {
        (ahead("made") == 2).then_some(())
    });
    let files = ["chaud/ipv4.txt", "chaud/domain.txt", "chaud/url.txt"];
    assert_eq!(inflated(&d), files.iter().map(|f| size(f)).sum::<u64>());
    // The walk goes on: its opens read those copies, byte for byte what the blocks hold.
    for (rel, want) in [("chaud/domain.txt", 5_000), ("chaud/url.txt", 4_000)] {
        let whole = std::fs::read(d.path(rel)).unwrap();
        assert_eq!(whole, read_aligned(&open_direct(&d, rel)), "{rel}");
        assert_eq!(sorted_lines(&whole).len(), want, "{rel}");
    }
    assert_eq!(ahead("opened"), 2);
    assert_eq!(ahead("stopped"), 0);
    assert_eq!(ahead("made"), 2, "nothing else has lines");
    let text = d.read(".iocfs/metrics");
    assert!(
        text.contains("iocfs_cache_inflated_ahead_opened_total 2"),
        "{text}"
    );
}
