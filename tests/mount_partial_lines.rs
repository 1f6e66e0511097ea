//! Mounted tests: a line written in pieces by several write() calls of one open file is one
//! line, even when a duplicate of the descriptor is closed in between (DESIGN §3: "partial
//! lines are buffered per handle; the trailing unterminated line counts at close").
//!
//! Every close() of any descriptor sends the daemon a FLUSH for the handle, but only the
//! last one ends the handle: a shell's `{ cmd1; cmd2; } >> file` (each child closes its
//! copy when it exits), a child spawned by another thread (its copy is closed at exec, even
//! with O_CLOEXEC), `dup` + `close`. The kernel also cuts a write() of more than max_write
//! (1 MiB) into several FUSE requests, so a big write's lines straddle requests too.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use std::fs::OpenOptions;
use std::io::Write;

use common::Daemon;

#[test]
fn a_line_split_across_writes_survives_closing_a_dup_of_the_descriptor() {
    let Some(d) = Daemon::start() else { return };
    let mut f = OpenOptions::new()
        .append(true)
        .open(d.path("live/domain.txt"))
        .unwrap();
    f.write_all(b"first.example\nevil.exa").unwrap();
    // close() of a duplicate: the handle stays open, the line is not finished.
    drop(f.try_clone().unwrap());
    f.write_all(b"mple.com\nlast.example\n")
        .expect("the rest of the line");
    drop(f);
    assert_eq!(
        d.lines("live/domain.txt"),
        ["first.example", "evil.example.com", "last.example"],
        "daemon log:\n{}",
        d.log()
    );
}

#[test]
fn a_line_written_by_two_commands_of_one_redirection_is_one_line() {
    let Some(d) = Daemon::start() else { return };
    // External printf: each is a child holding a copy of the descriptor until it exits.
    let out = d.sh("{ /usr/bin/printf '1.2.'; /usr/bin/printf '3.4\\n'; } >> live/ipv4.txt");
    assert!(
        out.status.success(),
        "{}: {}\ndaemon log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );
    assert_eq!(d.lines("live/ipv4.txt"), ["1.2.3.4"]);
}

#[test]
fn a_refused_unterminated_last_line_fails_the_openers_close() {
    let Some(d) = Daemon::start() else { return };
    d.sh_ok("printf 'old.example\\n' > live/domain.txt");
    // A feed download cut short or ending in junk: cp and tee say so (their close fails)
    // and the set stays as it was.
    std::fs::write(
        d.root().join("feed.txt"),
        "t1.example.com\nt2.example.com\n</html>",
    )
    .unwrap();
    let feed = d.root().join("feed.txt");
    let out = d.sh(&format!("cp {} live/domain.txt", feed.display()));
    assert!(
        !out.status.success(),
        "cp of a feed with a junk tail succeeded"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Invalid argument"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = d.sh("printf 'x.example\\n\\032' | tee live/domain.txt");
    assert!(!out.status.success(), "tee of a junk tail succeeded");
    assert_eq!(d.lines("live/domain.txt"), ["old.example"]);
    // An append: its complete lines are in, the close fails for the refused last line.
    let mut f = OpenOptions::new()
        .append(true)
        .open(d.path("live/domain.txt"))
        .unwrap();
    f.write_all(b"new.example\n<junk").unwrap();
    assert_eq!(nix::unistd::close(f), Err(nix::errno::Errno::EINVAL));
    assert_eq!(d.lines("live/domain.txt"), ["old.example", "new.example"]);
    // A valid last line closes fine.
    d.sh_ok("printf 'a.example\\nb.example' | tee -a live/domain.txt");
    assert_eq!(
        d.lines("live/domain.txt"),
        ["old.example", "new.example", "a.example", "b.example"]
    );
}

/// A parent that hands a descriptor to a child and closes its own copy while the child is
/// mid-line (a download into the file): its close does not fail, the line completes.
#[test]
fn a_parent_closing_while_its_child_writes_a_line_does_not_fail() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let Some(d) = Daemon::start() else { return };
    let f = std::fs::File::create(d.path("live/url.txt")).unwrap();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(
            "printf 'http://a.example/\\nhtt'; echo ready >&2; read go; printf 'p://b.example/\\n'",
        )
        .stdout(f.try_clone().unwrap())
        .stderr(Stdio::piped())
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert_eq!(ready, "ready\n");
    // "htt" is pending and invalid as it stands; the child wrote it, not this thread.
    assert_eq!(nix::unistd::close(f), Ok(()));
    writeln!(child.stdin.take().unwrap(), "go").unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(
        d.lines("live/url.txt"),
        ["http://a.example/", "http://b.example/"],
        "daemon log:\n{}",
        d.log()
    );
}

#[test]
fn the_start_of_a_line_whose_rest_was_refused_is_not_stored() {
    let Some(d) = Daemon::start() else { return };
    let path = d.path("live/ipv4.txt");
    // `cat feed >> f` of a feed with a bad line past the first MiB: the request that was
    // refused held the end of the line the request before ended in ("45.3.12.2|00").
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(b"1.2.3.4\n45.3.12.2").unwrap();
    let refused = f.write_all(b"00\n999.1.1.1\n5.6.7.8\n");
    assert_eq!(common::errno_of(refused), libc::EINVAL);
    drop(f);
    assert_eq!(
        d.lines("live/ipv4.txt"),
        ["1.2.3.4"],
        "a fragment of 45.3.12.200 was stored; daemon log:\n{}",
        d.log()
    );
    assert!(d
        .log()
        .contains("the write with the rest of that line failed"));

    // A writer that goes on after the refused write completes the line as usual.
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(b"9.9.").unwrap();
    assert_eq!(
        common::errno_of(f.write_all(b"9.9\nnot-an-ip\n")),
        libc::EINVAL
    );
    f.write_all(b"9.9\n").unwrap();
    drop(f);
    assert_eq!(d.lines("live/ipv4.txt"), ["1.2.3.4", "9.9.9.9"]);
}
