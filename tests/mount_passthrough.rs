//! Mounted tests of the default configuration's FUSE passthrough (`[mount] passthrough`,
//! on by default where it works: root, Linux >= 6.9): live files read by the kernel. A descriptor reads the version it opened; writers and replacements
//! keep working while such readers are open; opens after a change see the change.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use std::io::Read;
use std::os::unix::fs::FileExt;

use common::Daemon;

/// The default configuration: passthrough is on without being asked for.
fn start() -> Option<Daemon> {
    Daemon::start()
}

fn lines(n: usize, tag: &str) -> Vec<String> {
    (0..n).map(|i| format!("{tag}{i}.example.com")).collect()
}

#[test]
fn passthrough_reader_keeps_its_version_while_appends_and_new_opens_see_them() {
    let Some(d) = start() else { return };
    assert!(
        d.log()
            .contains("live files: read-only opens served by FUSE passthrough"),
        "the log says how live files are read:\n{}",
        d.log()
    );
    let first = lines(20_000, "a");
    d.append_bulk("live/domain.txt", &first);
    let held = common::readers::pinned_reader(&d, "live/domain.txt");
    let held_size = held.metadata().unwrap().len();
    // Appends while the reader is open must succeed (the kernel refuses plain opens of an
    // inode open for passthrough: the daemon moves writers to a fresh version).
    d.append_lines("live/domain.txt", &lines(10, "b"));
    d.sh_ok("echo c0.example.com >> live/domain.txt");
    // The held descriptor reads its version whole: exactly the first lines, no partial one.
    let mut old = String::new();
    (&held).read_to_string(&mut old).unwrap();
    assert_eq!(old.len() as u64, held_size);
    assert_eq!(old.lines().map(String::from).collect::<Vec<_>>(), first);
    assert_eq!(
        held.metadata().unwrap().len(),
        held_size,
        "fstat of the held descriptor"
    );
    let mut past = [0u8; 16];
    assert_eq!(held.read_at(&mut past, held_size).unwrap(), 0);
    // A new open sees everything.
    let now = d.lines("live/domain.txt");
    assert_eq!(now.len(), 20_011);
    assert_eq!(now.last().map(String::as_str), Some("c0.example.com"));
}

#[test]
fn replacement_and_sed_work_under_passthrough_readers() {
    let Some(d) = start() else { return };
    d.append_lines("live/ipv4.txt", &["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
    let held = std::fs::File::open(d.path("live/ipv4.txt")).unwrap();
    let list = d.root().join("list.txt");
    std::fs::write(&list, "192.0.2.1\n192.0.2.2\n").unwrap();
    d.sh_ok(&format!("cp {} live/ipv4.txt", list.display()));
    assert_eq!(d.lines("live/ipv4.txt"), vec!["192.0.2.1", "192.0.2.2"]);
    d.sh_ok("sed -i '/192.0.2.1/d' live/ipv4.txt");
    assert_eq!(d.lines("live/ipv4.txt"), vec!["192.0.2.2"]);
    let mut old = String::new();
    (&held).read_to_string(&mut old).unwrap();
    assert_eq!(old, "10.0.0.1\n10.0.0.2\n10.0.0.3\n");
}

#[test]
fn passthrough_reads_equal_daemon_served_content_and_size() {
    let Some(d) = start() else { return };
    d.append_bulk(
        "live/url.txt",
        &(0..5000)
            .map(|i| format!("http://h{i}.example.net/p?q={i}"))
            .collect::<Vec<_>>(),
    );
    let by_path = std::fs::read(d.path("live/url.txt")).unwrap();
    assert_eq!(
        by_path.len() as u64,
        std::fs::metadata(d.path("live/url.txt")).unwrap().len()
    );
    assert_eq!(by_path.iter().filter(|&&b| b == b'\n').count(), 5000);
    let wc = d.sh_ok("wc -l < live/url.txt");
    assert_eq!(String::from_utf8_lossy(&wc.stdout).trim(), "5000");
}

/// A version a reader stat'ed and the background copy made for passthrough readers hold the
/// same bytes: opening the first after the copy replaced it serves it, on its own inode
/// (`cp -a` compares the inode of its stat with the one it opened: "replaced while being
/// copied"), with the same mtime. A change of content still refuses the stale inode.
#[test]
fn a_copy_for_readers_keeps_the_inode_a_stat_showed() {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let Some(d) = start() else { return };
    let path = d.path("live/domain.txt");
    d.sh_ok("printf 'a.example\\nb.example\\n' >> live/domain.txt");
    // A handle on the inode the name shows now, as a stat sees it.
    let held = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(&path)
        .unwrap();
    let before = held.metadata().unwrap();
    // A read within a second of the write is served by the daemon and has the version
    // copied for the next readers: once the name's entry expires, it shows the copy.
    assert_eq!(std::fs::read(&path).unwrap(), b"a.example\nb.example\n");
    let copy = common::poll_until(std::time::Duration::from_secs(10), || {
        let now = std::fs::metadata(&path).unwrap();
        (now.ino() != before.ino()).then_some(now)
    })
    .expect("the version was copied for readers");
    assert_eq!(copy.mtime(), before.mtime());
    assert_eq!(
        copy.mtime_nsec(),
        before.mtime_nsec(),
        "same bytes, same mtime"
    );
    // Reopening the stat'ed inode itself (no lookup): served, the same bytes, that inode.
    let reopen = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&held));
    let f = std::fs::File::open(&reopen).expect("open the stat'ed inode");
    assert_eq!(f.metadata().unwrap().ino(), before.ino());
    assert_eq!(
        std::io::read_to_string(&f).unwrap(),
        "a.example\nb.example\n"
    );
    drop(f);
    // A new line: the stat'ed inode is stale for good.
    d.sh_ok("echo c.example >> live/domain.txt");
    let err = std::fs::File::open(&reopen).expect_err("a changed file's stale inode");
    assert_eq!(err.raw_os_error(), Some(libc::ESTALE), "{err}");
}

/// A descriptor opened within a second of a write is served by the daemon and sees appends
/// made after its open (README), also once the background copy for passthrough readers has
/// superseded the version it opened (`tail -f` right after a write).
#[test]
fn a_daemon_served_reader_follows_appends_past_a_copy_for_readers() {
    use std::io::Seek;
    use std::os::unix::fs::MetadataExt;
    let Some(d) = start() else { return };
    let path = d.path("live/domain.txt");
    d.sh_ok("echo a.example >> live/domain.txt");
    let mut held = std::fs::File::open(&path).unwrap();
    let opened = held.metadata().unwrap();
    let mut text = String::new();
    held.read_to_string(&mut text).unwrap();
    assert_eq!(text, "a.example\n");
    common::poll_until(std::time::Duration::from_secs(10), || {
        (std::fs::metadata(&path).unwrap().ino() != opened.ino()).then_some(())
    })
    .expect("the version was copied for readers");
    d.sh_ok("echo b.example >> live/domain.txt");
    text.clear();
    held.read_to_string(&mut text).unwrap();
    assert_eq!(
        text, "b.example\n",
        "the append, read through the held descriptor"
    );
    held.rewind().unwrap();
    text.clear();
    held.read_to_string(&mut text).unwrap();
    assert_eq!(text, "a.example\nb.example\n");

    // Replaced: the descriptor keeps what it read on into, never the shorter version it
    // opened (`tail -f` would say "file truncated").
    d.sh_ok("echo c.example > live/domain.txt");
    assert_eq!(d.read("live/domain.txt"), "c.example\n");
    assert_eq!(
        held.metadata().unwrap().len(),
        20,
        "fstat after the replace"
    );
    held.rewind().unwrap();
    text.clear();
    held.read_to_string(&mut text).unwrap();
    assert_eq!(text, "a.example\nb.example\n", "read after the replace");
}
