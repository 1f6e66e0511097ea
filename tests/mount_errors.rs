//! Mounted tests: what is refused, with which errno, and that a refusal changes nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use std::fs::OpenOptions;
use std::io::Write;

use common::{errno_of, Daemon, TYPE_FILES};

#[test]
fn invalid_line_from_the_shell_fails_and_leaves_the_file_byte_identical() {
    let Some(d) = Daemon::start() else { return };
    d.sh_ok("printf '1.2.3.4\\n5.6.7.8\\n' >> live/ipv4.txt");
    let before = std::fs::read(d.path("live/ipv4.txt")).unwrap();
    let out = d.sh("echo bad >> live/ipv4.txt");
    assert!(!out.status.success(), "appending `bad` succeeded");
    assert_eq!(std::fs::read(d.path("live/ipv4.txt")).unwrap(), before);
    // dash's builtin echo reports any write error as "I/O error"; coreutils' echo shows
    // the errno the write really failed with.
    let out = d.sh("/bin/echo bad >> live/ipv4.txt");
    assert!(!out.status.success(), "appending `bad` succeeded");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Invalid argument"), "stderr: {stderr}");
    assert_eq!(std::fs::read(d.path("live/ipv4.txt")).unwrap(), before);
    // A value of another type is just as invalid in this file.
    let out = d.sh("echo example.com >> live/ipv4.txt");
    assert!(
        !out.status.success(),
        "appending a domain to ipv4.txt succeeded"
    );
    assert_eq!(std::fs::read(d.path("live/ipv4.txt")).unwrap(), before);
    assert!(
        d.log().contains("live/ipv4.txt"),
        "the rejection is not logged with its file:\n{}",
        d.log()
    );
}

#[test]
fn write_with_one_invalid_line_among_valid_ones_is_einval_and_applies_none() {
    let Some(d) = Daemon::start() else { return };
    d.append_lines("live/ipv4.txt", &["192.0.2.1"]);
    let mut f = OpenOptions::new()
        .append(true)
        .open(d.path("live/ipv4.txt"))
        .unwrap();
    let r = f.write_all(b"10.0.0.1\n10.0.0.2\nnot-an-ip\n10.0.0.3\n");
    assert_eq!(errno_of(r), libc::EINVAL);
    assert_eq!(d.read("live/ipv4.txt"), "192.0.2.1\n");
    for bad in [
        &b"10.0.0.4\n10.0.\x000.5\n"[..], // NUL
        b"10.0.0.4\n\xff\xfe\n",          // invalid UTF-8
        b"10.0.0.4\n0.0.0.0/0\n",         // broader than /8
        b"10.0.0.4\n300.1.1.1\n",         // octet out of range
    ] {
        let r = f.write_all(bad);
        assert_eq!(errno_of(r), libc::EINVAL, "write of {bad:?}");
        assert_eq!(d.read("live/ipv4.txt"), "192.0.2.1\n", "after {bad:?}");
    }
    let long = format!("10.0.0.4\n{}.com\n", "a".repeat(5000));
    let mut dom = OpenOptions::new()
        .append(true)
        .open(d.path("live/domain.txt"))
        .unwrap();
    assert_eq!(errno_of(dom.write_all(long.as_bytes())), libc::EINVAL);
    drop(dom);
    assert_eq!(d.read("live/domain.txt"), "");
    // The same handle still takes a good write afterwards.
    f.write_all(b"10.0.0.9\n").unwrap();
    drop(f);
    assert_eq!(d.lines("live/ipv4.txt"), ["192.0.2.1", "10.0.0.9"]);
}

#[test]
fn tier_files_are_read_only() {
    let Some(d) = Daemon::start() else { return };
    for tier in ["chaud", "tiede", "froid"] {
        for f in TYPE_FILES {
            let path = d.path(&format!("{tier}/{f}"));
            let r = OpenOptions::new().append(true).open(&path);
            assert_eq!(errno_of(r), libc::EROFS, "append-open of {tier}/{f}");
        }
    }
    let out = d.sh("echo 1.2.3.4 > tiede/ipv4.txt");
    assert!(!out.status.success(), "`>` on a tier file succeeded");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Read-only file system"), "stderr: {stderr}");
    let out = d.sh("echo 1.2.3.4 >> froid/ipv4.txt");
    assert!(!out.status.success(), "`>>` on a tier file succeeded");
    assert_eq!(
        errno_of(std::fs::remove_file(d.path("chaud/ipv4.txt"))),
        libc::EROFS
    );
    assert_eq!(
        errno_of(std::fs::write(d.path("chaud/new.txt"), b"x\n")),
        libc::EROFS
    );
    assert_eq!(
        errno_of(std::fs::create_dir(d.path("chaud/d"))),
        libc::EROFS
    );
    for tier in ["chaud", "tiede", "froid"] {
        assert_eq!(d.read(&format!("{tier}/ipv4.txt")), "", "{tier}/ipv4.txt");
    }
}

#[test]
fn removing_a_live_type_file_is_eperm() {
    let Some(d) = Daemon::start() else { return };
    d.append_lines("live/ipv4.txt", &["1.2.3.4"]);
    assert_eq!(
        errno_of(std::fs::remove_file(d.path("live/ipv4.txt"))),
        libc::EPERM
    );
    let out = d.sh("rm live/ipv4.txt");
    assert!(!out.status.success(), "rm live/ipv4.txt succeeded");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Operation not permitted"),
        "stderr: {stderr}"
    );
    // Nor can it be renamed away.
    assert_eq!(
        errno_of(std::fs::rename(
            d.path("live/ipv4.txt"),
            d.path("live/old.txt")
        )),
        libc::EPERM
    );
    assert_eq!(d.lines("live/ipv4.txt"), ["1.2.3.4"]);
}

#[test]
fn mkdir_in_live_is_eperm() {
    let Some(d) = Daemon::start() else { return };
    assert_eq!(errno_of(std::fs::create_dir(d.path("live/d"))), libc::EPERM);
    let out = d.sh("mkdir live/d");
    assert!(!out.status.success(), "mkdir live/d succeeded");
    assert!(!d.path("live/d").exists());
}

#[test]
fn truncate_to_zero_by_path_empties_the_set() {
    let Some(d) = Daemon::start() else { return };
    d.append_lines("live/ipv4.txt", &["1.2.3.4", "5.6.7.8"]);
    d.sh_ok("truncate -s0 live/ipv4.txt");
    assert_eq!(d.read("live/ipv4.txt"), "");
    assert_eq!(std::fs::metadata(d.path("live/ipv4.txt")).unwrap().len(), 0);
    assert!(!d.path(".iocfs/lookup/1.2.3.4").exists());
    // Truncating to any other size has no meaning for a set of lines.
    d.append_lines("live/ipv4.txt", &["9.9.9.9"]);
    let out = d.sh("truncate -s3 live/ipv4.txt");
    assert!(!out.status.success(), "truncate -s3 succeeded");
    assert_eq!(d.lines("live/ipv4.txt"), ["9.9.9.9"]);
}

/// `rsync --append` writes the source's tail at the end of the file, then truncates to the
/// size it wrote up to; normalization (here IPv6 compression) makes the set's size differ.
#[test]
fn truncating_an_append_handle_to_where_its_writes_ended_is_a_no_op() {
    if !common::tools::have("rsync", "rsync") {
        return;
    }
    let Some(d) = Daemon::start() else { return };
    d.append_lines("live/ipv6.txt", &["2001:db8::1"]);
    let src = d.root().join("feed6.txt");
    std::fs::write(&src, "2001:db8::1\n2001:0DB8:0:0::2\n").unwrap();
    d.sh_ok(&format!("rsync --append {} live/ipv6.txt", src.display()));
    assert_eq!(d.lines("live/ipv6.txt"), ["2001:db8::1", "2001:db8::2"]);
    // Only where this handle's writes ended: another size is still refused.
    let mut f = OpenOptions::new()
        .append(true)
        .open(d.path("live/ipv6.txt"))
        .unwrap();
    f.write_all(b"2001:db8::3\n").unwrap();
    assert_eq!(errno_of(f.set_len(5)), libc::EINVAL);
    drop(f);
    assert_eq!(
        d.lines("live/ipv6.txt"),
        ["2001:db8::1", "2001:db8::2", "2001:db8::3"]
    );
}

#[test]
fn refusing_to_remove_a_type_file_says_what_to_do_instead() {
    let Some(d) = Daemon::start() else { return };
    d.sh_ok("echo 192.0.2.9 >> live/ipv4.txt");
    let src = d.root().join("new.txt");
    std::fs::write(&src, "192.0.2.10\n").unwrap();
    for cmd in [
        "rm live/ipv4.txt".to_string(),
        format!("install -m 644 {} live/ipv4.txt", src.display()),
        "mv live/ipv4.txt live/other.txt".to_string(),
    ] {
        let out = d.sh(&cmd);
        assert!(!out.status.success(), "{cmd} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("Operation not permitted"), "{cmd}: {err}");
    }
    let log = d.log();
    assert!(
        log.contains("unlink of live/ipv4.txt refused (EPERM)")
            && log.contains("cp NEW live/ipv4.txt"),
        "{log}"
    );
    assert!(
        log.contains("rename of live/ipv4.txt refused (EPERM)"),
        "{log}"
    );
    assert_eq!(d.lines("live/ipv4.txt"), ["192.0.2.9"], "nothing changed");
    // What the message advises works.
    d.sh_ok(&format!("cp {} live/ipv4.txt", src.display()));
    assert_eq!(d.lines("live/ipv4.txt"), ["192.0.2.10"]);
}
