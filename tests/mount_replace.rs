//! Mounted tests: replacing a whole set (`cp`, `>`, O_TRUNC, `sed -i`) and what readers see.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;

use common::{errno_of, open_ro, Daemon};

fn ls_live(d: &Daemon) -> Vec<String> {
    let out = d.sh_ok("ls -A live");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect()
}

const NINE: [&str; 9] = [
    "domain.txt",
    "email.txt",
    "ipv4.txt",
    "ipv6.txt",
    "md5.txt",
    "sha1.txt",
    "sha256.txt",
    "sha512.txt",
    "url.txt",
];

/// A replace handle (`O_WRONLY | O_TRUNC`) on `path`.
fn open_replace(path: impl AsRef<std::path::Path>) -> std::fs::File {
    OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .unwrap()
}

#[test]
fn cp_replaces_the_whole_set() {
    let Some(d) = Daemon::start() else { return };
    d.append_lines("live/domain.txt", &["old.example", "kept.example"]);
    let list = d.root().join("list.txt");
    std::fs::write(
        &list,
        "# my list\nkept.example\nNew.Example.\n\nthird.example\n",
    )
    .unwrap();
    d.sh_ok(&format!("cp {} live/domain.txt", list.display()));
    assert_eq!(
        d.lines("live/domain.txt"),
        ["kept.example", "new.example", "third.example"]
    );
    assert!(!d.path(".iocfs/lookup/old.example").exists());
    assert!(d.path(".iocfs/lookup/new.example").exists());
    assert_eq!(ls_live(&d), NINE);
}

#[test]
fn shell_redirect_replaces_the_set() {
    let Some(d) = Daemon::start() else { return };
    d.append_lines("live/ipv4.txt", &["1.1.1.1", "2.2.2.2"]);
    d.sh_ok("printf '3.3.3.3\\n2.2.2.2\\n' > live/ipv4.txt");
    assert_eq!(d.lines("live/ipv4.txt"), ["3.3.3.3", "2.2.2.2"]);
}

#[test]
fn empty_redirect_empties_the_set_by_the_time_the_shell_returns() {
    let Some(d) = Daemon::start() else { return };
    // Once is a coin toss if the set is emptied late (at the kernel's asynchronous
    // release); twenty times is not.
    for round in 0..20 {
        d.append_lines("live/ipv4.txt", &["1.1.1.1", "2.2.2.2"]);
        d.sh_ok(": > live/ipv4.txt");
        assert_eq!(
            d.read("live/ipv4.txt"),
            "",
            "round {round}: `: > live/ipv4.txt` returned but the set is not empty yet"
        );
    }
}

#[test]
fn sed_in_place_removes_a_line_and_leaves_no_scratch_file() {
    let Some(d) = Daemon::start() else { return };
    d.append_lines("live/domain.txt", &["alpha.org", "xray.org", "charlie.org"]);
    d.sh_ok("sed -i '/x/d' live/domain.txt");
    assert_eq!(d.lines("live/domain.txt"), ["alpha.org", "charlie.org"]);
    assert_eq!(ls_live(&d), NINE);
    // And once more, now that the name was renamed onto.
    d.sh_ok("sed -i 's/^alpha/zulu/' live/domain.txt");
    assert_eq!(d.lines("live/domain.txt"), ["zulu.org", "charlie.org"]);
    assert_eq!(ls_live(&d), NINE);
    d.sh_ok("echo delta.org >> live/domain.txt");
    assert_eq!(
        d.lines("live/domain.txt"),
        ["zulu.org", "charlie.org", "delta.org"]
    );
}

#[test]
fn scratch_file_renamed_onto_a_type_file_replaces_the_set() {
    let Some(d) = Daemon::start() else { return };
    d.append_lines("live/ipv4.txt", &["1.1.1.1"]);
    std::fs::write(d.path("live/new.tmp"), "4.4.4.4\n5.5.5.5\n").unwrap();
    assert_eq!(d.read("live/new.tmp"), "4.4.4.4\n5.5.5.5\n");
    assert_eq!(d.lines("live/ipv4.txt"), ["1.1.1.1"], "before the rename");
    std::fs::rename(d.path("live/new.tmp"), d.path("live/ipv4.txt")).unwrap();
    assert_eq!(d.lines("live/ipv4.txt"), ["4.4.4.4", "5.5.5.5"]);
    assert_eq!(ls_live(&d), NINE);
    // A scratch file with an invalid line is refused and the set stays.
    std::fs::write(d.path("live/bad.tmp"), "6.6.6.6\nnope\n").unwrap();
    let r = std::fs::rename(d.path("live/bad.tmp"), d.path("live/ipv4.txt"));
    assert_eq!(errno_of(r), libc::EINVAL);
    assert_eq!(d.lines("live/ipv4.txt"), ["4.4.4.4", "5.5.5.5"]);
    std::fs::remove_file(d.path("live/bad.tmp")).unwrap();
    assert_eq!(ls_live(&d), NINE);
}

#[test]
fn cp_of_a_list_with_an_invalid_line_fails_and_keeps_the_old_set() {
    let Some(d) = Daemon::start() else { return };
    d.append_lines("live/ipv4.txt", &["1.1.1.1", "2.2.2.2"]);
    let before = std::fs::read(d.path("live/ipv4.txt")).unwrap();
    let list = d.root().join("bad.txt");
    std::fs::write(&list, "3.3.3.3\nnot-an-address\n4.4.4.4\n").unwrap();
    let out = d.sh(&format!("cp {} live/ipv4.txt", list.display()));
    assert!(!out.status.success(), "cp of an invalid list succeeded");
    assert_eq!(std::fs::read(d.path("live/ipv4.txt")).unwrap(), before);
}

#[test]
fn replace_handle_applies_only_at_close() {
    let Some(d) = Daemon::start() else { return };
    d.append_lines("live/ipv4.txt", &["1.1.1.1", "2.2.2.2"]);
    let mut w = open_replace(d.path("live/ipv4.txt"));
    assert_eq!(
        d.read("live/ipv4.txt"),
        "1.1.1.1\n2.2.2.2\n",
        "O_TRUNC open emptied the set before close"
    );
    w.write_all(b"7.7.7.7\n").unwrap();
    w.write_all(b"8.8.8.8\n").unwrap();
    assert_eq!(
        d.read("live/ipv4.txt"),
        "1.1.1.1\n2.2.2.2\n",
        "readers saw a replace before close"
    );
    drop(w);
    assert_eq!(d.lines("live/ipv4.txt"), ["7.7.7.7", "8.8.8.8"]);
}

/// A program holding a replace open while it runs other programs (a script that fetches
/// with `curl`): each child closes its inherited copy of the descriptor when it exits, a
/// close without writes. Children one after another often get the same descriptor table
/// address, which is the id the kernel gives a closer; that must not read as one process
/// closing twice without writing (`: > f`, which empties the set at once).
#[test]
fn a_replace_held_while_its_writer_runs_children_shows_the_old_set_until_it_is_written() {
    let Some(d) = Daemon::start() else { return };
    d.append_lines("live/domain.txt", &["old.example.com"]);
    let out = d.sh_ok(
        "exec 3>live/domain.txt
         for i in 1 2 3 4 5 6 7 8; do /bin/true; cat live/domain.txt; done
         echo new.example.com >&3",
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "old.example.com\n".repeat(8),
        "readers while the replace was open"
    );
    assert_eq!(d.lines("live/domain.txt"), ["new.example.com"]);
}

/// While a replace is open, its descriptor is on an inode of its own, not the one readers
/// open by name: the kernel sets the size of the inode an `O_TRUNC` open went through to 0
/// (and to the writer's offset after each write) before it drops its cached attributes,
/// so a reader's fstat on a shared inode could get that size while it reads the old
/// version (a web server then sends a wrong Content-Length).
#[test]
fn a_replace_is_written_through_an_inode_no_reader_opens() {
    let Some(d) = Daemon::start() else { return };
    d.append_lines("live/domain.txt", &["old.example.com"]);
    let path = d.path("live/domain.txt");
    let mut w = open_replace(&path);
    w.write_all(b"new.example.com\n").unwrap();
    let writer = w.metadata().unwrap().ino();
    let mut r = open_ro(&path);
    let reader = r.metadata().unwrap();
    assert_ne!(
        reader.ino(),
        writer,
        "the replace and a reader share an inode"
    );
    assert_eq!(std::fs::metadata(&path).unwrap().ino(), reader.ino());
    assert_eq!(reader.len(), 16);
    let mut text = String::new();
    r.read_to_string(&mut text).unwrap();
    assert_eq!(text, "old.example.com\n");
    drop(w);
    assert_eq!(d.lines("live/domain.txt"), ["new.example.com"]);
}

/// A replace's own descriptor shows what it has written so far, not the old set: fstat
/// gives 0 after the `O_TRUNC` open and the bytes written after each write, `SEEK_END`
/// goes there, and an `O_TRUNC | O_APPEND` writer that asks the size first still writes
/// where it expects (it was refused with EINVAL, and the set then emptied at its close).
#[test]
fn a_replace_descriptor_shows_what_it_has_written() {
    use std::io::{Seek, SeekFrom};
    use std::os::unix::fs::OpenOptionsExt;
    let Some(d) = Daemon::start() else { return };
    d.append_lines("live/domain.txt", &["old1.example.com", "old2.example.com"]);
    let path = d.path("live/domain.txt");
    let mut w = open_replace(&path);
    assert_eq!(w.metadata().unwrap().len(), 0, "after the O_TRUNC open");
    w.write_all(b"new1.example.com\n").unwrap();
    assert_eq!(w.metadata().unwrap().len(), 17, "after a write");
    assert_eq!(w.seek(SeekFrom::End(0)).unwrap(), 17);
    w.write_all(b"new2.example.com\n").unwrap();
    assert_eq!(
        d.read("live/domain.txt").len(),
        34,
        "readers keep the old set"
    );
    drop(w);
    assert_eq!(
        d.lines("live/domain.txt"),
        ["new1.example.com", "new2.example.com"]
    );

    let mut a = OpenOptions::new()
        .append(true)
        .custom_flags(libc::O_TRUNC)
        .open(&path)
        .unwrap();
    assert_eq!(a.metadata().unwrap().len(), 0);
    a.write_all(b"new3.example.com\n").unwrap();
    drop(a);
    assert_eq!(d.lines("live/domain.txt"), ["new3.example.com"]);
}

/// 50,000 lines: far more than one read() request, so a reader that switched versions
/// midway would show a mix.
fn big_list(n: u32, second_octet: u32) -> String {
    (0..n)
        .map(|i| format!("10.{second_octet}.{}.{}\n", i / 256, i % 256))
        .collect()
}

#[test]
fn reader_holding_a_descriptor_across_cp_reads_the_old_version_whole() {
    let Some(d) = Daemon::start() else { return };
    let old = big_list(50_000, 1);
    let new = big_list(30_000, 2);
    let old_file = d.root().join("old.txt");
    let new_file = d.root().join("new.txt");
    std::fs::write(&old_file, &old).unwrap();
    std::fs::write(&new_file, &new).unwrap();
    d.sh_ok(&format!("cp {} live/ipv4.txt", old_file.display()));
    assert_eq!(d.read("live/ipv4.txt"), old);

    let mut held = open_ro(&d.path("live/ipv4.txt"));
    // Read a little first, as a slow consumer would have.
    let mut head = vec![0u8; 4096];
    held.read_exact(&mut head).unwrap();
    let size_before = held.metadata().unwrap().len();

    d.sh_ok(&format!("cp {} live/ipv4.txt", new_file.display()));

    // A new open sees the new version...
    assert_eq!(d.read("live/ipv4.txt"), new);
    // ...while the held descriptor reads the old one, whole, to its end.
    let mut rest = Vec::new();
    held.read_to_end(&mut rest).unwrap();
    head.extend_from_slice(&rest);
    assert_eq!(
        head.len(),
        old.len(),
        "length read through the old descriptor"
    );
    assert!(
        head == old.as_bytes(),
        "the held descriptor did not read the old version whole"
    );
    assert_eq!(size_before, old.len() as u64);
}

#[test]
fn fstat_on_a_descriptor_held_across_cp_gives_the_size_it_reads() {
    let Some(d) = Daemon::start() else { return };
    let old = big_list(50_000, 4);
    let new = big_list(30_000, 5);
    let old_file = d.root().join("old.txt");
    let new_file = d.root().join("new.txt");
    std::fs::write(&old_file, &old).unwrap();
    std::fs::write(&new_file, &new).unwrap();
    d.sh_ok(&format!("cp {} live/ipv4.txt", old_file.display()));
    let mut held = open_ro(&d.path("live/ipv4.txt"));
    assert_eq!(held.metadata().unwrap().len(), old.len() as u64);
    d.sh_ok(&format!("cp {} live/ipv4.txt", new_file.display()));
    // What an HTTP server does: fstat for Content-Length, then send the body.
    let size = held.metadata().unwrap().len();
    let mut body = Vec::new();
    held.read_to_end(&mut body).unwrap();
    assert_eq!(
        body.len(),
        old.len(),
        "bytes read through the held descriptor"
    );
    assert_eq!(
        size,
        body.len() as u64,
        "st_size from fstat on the held descriptor vs the bytes it reads"
    );
}

/// The kernel's name for a type file keeps pointing at the inode of the version it last
/// looked up (names are never invalidated; see VERSION_TTL in src/fs): a `stat` by name
/// right after each change must still report the new version.
#[test]
fn stat_by_name_sees_every_replacement_at_once() {
    let Some(d) = Daemon::start() else { return };
    let path = d.path("live/ipv4.txt");
    let mut seen_inodes = std::collections::HashSet::new();
    for n in 1..=50u32 {
        let list = big_list(n * 10, 6);
        std::fs::write(&path, &list).unwrap();
        let st = std::fs::metadata(&path).unwrap();
        assert_eq!(st.len(), list.len() as u64, "stat after replacement {n}");
        seen_inodes.insert(st.ino());
        // And an append through another descriptor.
        d.sh_ok("echo 9.9.9.9 >> live/ipv4.txt");
        let st = std::fs::metadata(&path).unwrap();
        assert_eq!(st.len(), list.len() as u64 + 8, "stat after append {n}");
    }
    let out = d.sh_ok("sed -i '/^9.9.9.9$/d' live/ipv4.txt && stat -c %s live/ipv4.txt");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        big_list(500, 6).len().to_string()
    );
    assert_eq!(seen_inodes.len(), 50, "each replacement is a new inode");
}

#[test]
fn reader_holding_a_descriptor_across_sed_in_place_reads_the_old_version_whole() {
    let Some(d) = Daemon::start() else { return };
    let old = big_list(50_000, 3);
    let old_file = d.root().join("old.txt");
    std::fs::write(&old_file, &old).unwrap();
    d.sh_ok(&format!("cp {} live/ipv4.txt", old_file.display()));
    let mut held = open_ro(&d.path("live/ipv4.txt"));
    d.sh_ok("sed -i '/^10\\.3\\.1[0-9]*\\./d' live/ipv4.txt");
    let new = d.read("live/ipv4.txt");
    assert!(new.len() < old.len() && !new.contains("\n10.3.100."));
    let mut got = String::new();
    held.read_to_string(&mut got).unwrap();
    assert!(
        got == old,
        "the held descriptor did not read the old version whole"
    );
}

/// Opens by name racing back-to-back replacements never fail: the kernel retries a stale
/// open once after looking the name up again, and a version that changed again in between
/// is still one that was current during that open, so it is served.
#[test]
fn opens_by_name_racing_back_to_back_replacements_never_fail() {
    let Some(d) = Daemon::start() else { return };
    let path = d.path("live/domain.txt");
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (reads, stale) = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            for g in 0..2000u32 {
                let body = format!("g{g}-a.example\ng{g}-b.example\n");
                if let Err(e) = std::fs::write(&path, body) {
                    stop.store(true, std::sync::atomic::Ordering::SeqCst);
                    panic!("replacement {g}: {e}");
                }
            }
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        let readers: Vec<_> = (0..3)
            .map(|_| {
                s.spawn(|| {
                    let (mut reads, mut stale) = (0u64, Vec::new());
                    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                        match std::fs::read_to_string(&path) {
                            Ok(text) => {
                                // One version: both lines of one generation, or empty.
                                let lines: Vec<&str> = text.lines().collect();
                                if !lines.is_empty() {
                                    let gen = lines[0].split('-').next().unwrap_or("");
                                    assert_eq!(lines.len(), 2, "{text:?}");
                                    assert!(lines.iter().all(|l| l.starts_with(gen)), "{text:?}");
                                }
                                reads += 1;
                            }
                            Err(e) => stale.push(e.to_string()),
                        }
                    }
                    (reads, stale)
                })
            })
            .collect();
        writer.join().unwrap();
        readers.into_iter().map(|r| r.join().unwrap()).fold(
            (0, Vec::new()),
            |(n, mut all), (r, s)| {
                all.extend(s);
                (n + r, all)
            },
        )
    });
    eprintln!(
        "{reads} reads racing 2000 replacements, {} failed",
        stale.len()
    );
    assert!(
        stale.is_empty(),
        "{} opens failed: {:?}",
        stale.len(),
        &stale[..stale.len().min(5)]
    );
}

#[test]
fn cp_a_and_rsync_a_of_a_saved_copy_restore_lists_and_exit_0() {
    // Restoring lists saved from the mount: the copy tools set the modes, owners and
    // times the copy has (the mount's own), which must not fail them.
    if !common::tools::have("rsync", "rsync") {
        return;
    }
    let Some(d) = Daemon::start() else { return };
    d.append_lines("live/ipv4.txt", &["5.1.2.3", "45.67.89.10"]);
    d.append_lines("live/domain.txt", &["evil.example.com"]);
    d.append_lines("allow/domain.txt", &["good.example.com"]);
    d.sh_ok("mkdir sources/feed");
    d.append_lines("sources/feed/url.txt", &["http://feed.example.net/a"]);
    let root = d.root().display().to_string();
    d.sh_ok(&format!("cp -a . {root}/saved"));
    // Later changes, then the saved lists put back.
    d.append_lines("live/ipv4.txt", &["45.9.9.9"]);
    d.sh_ok("printf 'other.example.com\\n' > live/domain.txt");
    d.sh_ok(&format!("cp -a {root}/saved/live/ipv4.txt live/ipv4.txt"));
    assert_eq!(d.lines("live/ipv4.txt"), ["5.1.2.3", "45.67.89.10"]);
    std::fs::create_dir(d.root().join("tree")).unwrap();
    d.sh_ok(&format!(
        "cp -a {root}/saved/live {root}/saved/allow {root}/tree/ && \
         printf 'evil.example.com\\nnew.example.com\\n' > {root}/tree/live/domain.txt && \
         rsync -a {root}/tree/ ./"
    ));
    assert_eq!(
        d.lines("live/domain.txt"),
        ["evil.example.com", "new.example.com"]
    );
    assert_eq!(d.lines("allow/domain.txt"), ["good.example.com"]);
    // A feed's lists too, from a copy whose sources/ has other times (another mount's):
    // rsync sets them on sources/ itself.
    d.sh_ok("printf 'http://feed.example.net/bb\\n' > sources/feed/url.txt");
    d.sh_ok(&format!(
        "touch -d @1600000000 {root}/saved/sources && rsync -a {root}/saved/sources/ sources/"
    ));
    assert_eq!(
        d.lines("sources/feed/url.txt"),
        ["http://feed.example.net/a"]
    );
    // tar -x replaces the lists with --overwrite (README "Backup and restore").
    d.append_lines("live/ipv4.txt", &["45.6.6.6"]);
    d.sh_ok(&format!(
        "tar -C {root}/saved -cf {root}/lists.tar live && tar --overwrite -xf {root}/lists.tar"
    ));
    assert_eq!(d.lines("live/ipv4.txt"), ["5.1.2.3", "45.67.89.10"]);
    // A mode or owner the lists do not have is still refused.
    let chmod = d.sh("chmod 600 live/ipv4.txt");
    assert!(!chmod.status.success());
    assert!(!d.sh("chown 1234 live").status.success());
}

/// Lists keep their times in whole seconds; the nanoseconds tell versions apart, so a list
/// replaced by one of the same size within the second it was copied in still looks changed
/// to tools that compare whole mtimes (`rsync --modify-window=-1`, `make`, `find -newer`), as
/// it would on ext4. (rsync's default quick check compares whole seconds only, on any
/// filesystem.)
#[test]
fn a_same_size_replace_within_one_second_shows_a_new_mtime() {
    if !common::tools::have("rsync", "rsync") {
        return;
    }
    // A manual clock: both versions are made in the same second.
    let Some(d) = Daemon::builder().manual_clock(1_700_000_000).start() else {
        return;
    };
    d.append_lines("live/ipv4.txt", &["198.51.100.1", "198.51.100.2"]);
    let mtime = |rel: &str| std::fs::metadata(d.path(rel)).unwrap().modified().unwrap();
    let before = mtime("live/ipv4.txt");
    let root = d.root().display().to_string();
    let rsync = format!("rsync -a --modify-window=-1 live/ {root}/backup/");
    d.sh_ok(&rsync);
    d.sh_ok("sed -i 's/198.51.100.2/198.51.100.3/' live/ipv4.txt");
    let after = mtime("live/ipv4.txt");
    let secs =
        |t: std::time::SystemTime| t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert_eq!(secs(before), secs(after));
    assert_ne!(before, after);
    d.sh_ok(&rsync);
    assert_eq!(
        std::fs::read_to_string(d.root().join("backup/ipv4.txt")).unwrap(),
        "198.51.100.1\n198.51.100.3\n"
    );
}

#[test]
fn copying_the_same_list_again_changes_nothing() {
    let Some(d) = Daemon::start() else { return };
    for file in ["live/ipv4.txt", "allow/ipv4.txt"] {
        let saved = d.root().join("saved.txt");
        std::fs::write(&saved, "9.9.9.9\n1.2.3.4\n").unwrap();
        let copy = |how: &str| d.sh_ok(&format!("{how} {} {file}", saved.display()));
        copy("cp");
        let first = std::fs::metadata(d.path(file)).unwrap();
        // rsync -a copies again at every run (the file keeps its own mtime, not the saved
        // one's): the same set in the same order keeps the version, its inode and mtime.
        copy("cp");
        copy("rsync -a");
        let again = std::fs::metadata(d.path(file)).unwrap();
        assert_eq!(
            (again.ino(), again.mtime(), again.mtime_nsec()),
            (first.ino(), first.mtime(), first.mtime_nsec()),
            "{file}"
        );
        assert_eq!(d.lines(file), ["9.9.9.9", "1.2.3.4"]);
        std::fs::write(&saved, "1.2.3.4\n").unwrap();
        copy("cp");
        assert_ne!(std::fs::metadata(d.path(file)).unwrap().ino(), first.ino());
    }
}
