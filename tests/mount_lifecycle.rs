//! Mounted tests: the process around the mount (lock, clean stop, restart).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use std::fs::File;
use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{is_mounted, wait_timeout, Daemon, MountGuard, READY_TIMEOUT};

#[test]
fn second_mount_on_the_same_data_dir_is_refused() {
    let Some(d) = Daemon::start() else { return };
    d.append_lines("live/ipv4.txt", &["1.2.3.4"]);
    let mnt2 = d.root().join("mnt2");
    std::fs::create_dir(&mnt2).unwrap();
    let _guard = MountGuard(mnt2.clone());
    let err_path = d.root().join("second.log");
    let mut second = d
        .command(&mnt2)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&err_path).unwrap())
        .spawn()
        .expect("spawn a second iocfs");
    let status = wait_timeout(&mut second, READY_TIMEOUT);
    if status.is_none() {
        let _ = second.kill();
        let _ = second.wait();
    }
    let stderr = std::fs::read_to_string(&err_path).unwrap();
    let status = status.unwrap_or_else(|| {
        panic!("a second iocfs on the same data dir was still running after {READY_TIMEOUT:?}; its stderr:\n{stderr}")
    });
    assert!(!status.success(), "second mount exited {status}: {stderr}");
    assert_eq!(status.code(), Some(1), "exit status; stderr: {stderr}");
    assert!(
        stderr.contains("in use by another iocfs"),
        "stderr of the second mount: {stderr}"
    );
    assert!(!is_mounted(&mnt2), "the refused daemon left a mount");
    // The first one is unaffected.
    assert_eq!(d.read(".iocfs/health"), "ok\n");
    d.append_lines("live/ipv4.txt", &["5.6.7.8"]);
    assert_eq!(d.lines("live/ipv4.txt"), ["1.2.3.4", "5.6.7.8"]);
}

#[test]
fn sigterm_exits_zero_unmounts_and_a_restart_sees_every_line() {
    let Some(mut d) = Daemon::start() else { return };
    assert!(is_mounted(&d.mnt()));
    let lines: Vec<String> = (0..1000)
        .map(|i| format!("172.16.{}.{}", i / 256, i % 256))
        .collect();
    d.append_lines("live/ipv4.txt", &lines);
    d.append_lines("live/sha1.txt", &["a".repeat(40)]);
    let status = d.stop();
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM");
    assert!(
        !is_mounted(&d.mnt()),
        "{} is still in /proc/mounts after a clean stop",
        d.mnt().display()
    );
    assert!(d.log().contains("stopped cleanly"), "log:\n{}", d.log());
    // Committed at shutdown: the backing file already holds everything.
    let committed = std::fs::read_to_string(d.data().join("live/ipv4.txt")).unwrap();
    assert_eq!(common::split_lines(&committed, "DATA/live/ipv4.txt"), lines);

    d.restart();
    assert_eq!(d.read(".iocfs/health"), "ok\n");
    assert_eq!(d.lines("live/ipv4.txt"), lines);
    assert_eq!(d.lines("live/sha1.txt"), ["a".repeat(40)]);
}

#[test]
fn sigterm_with_a_file_held_open_still_exits_zero_and_unmounts() {
    let Some(mut d) = Daemon::start() else { return };
    d.append_lines("live/ipv4.txt", &["1.2.3.4"]);
    let mut held = File::open(d.path("live/ipv4.txt")).unwrap();
    let mut buf = String::new();
    held.read_to_string(&mut buf).unwrap();
    let started = Instant::now();
    let status = d.stop();
    let took = started.elapsed();
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM");
    assert!(
        took < Duration::from_secs(10),
        "took {took:?} to exit with a file open"
    );
    assert!(
        !is_mounted(&d.mnt()),
        "{} is still in /proc/mounts",
        d.mnt().display()
    );
    drop(held);
    d.restart();
    assert_eq!(d.lines("live/ipv4.txt"), ["1.2.3.4"]);
}

#[test]
fn restart_after_sigkill_clears_the_dead_mount_by_itself() {
    let Some(mut d) = Daemon::start() else { return };
    d.append_lines("live/ipv4.txt", &["1.2.3.4"]);
    // Kill without the harness's lazy unmount, as a crash under systemd would: the next
    // daemon finds a dead mount (ENOTCONN) at its mount point and must clear it.
    d.signal(nix::sys::signal::Signal::SIGKILL);
    let status = d.reap();
    assert!(!status.success(), "a SIGKILLed daemon exited {status}");
    let r = std::fs::read(d.path(".iocfs/health"));
    assert_eq!(
        common::errno_of(r),
        libc::ENOTCONN,
        "the mount after SIGKILL"
    );
    d.restart_on_a_dead_mount();
    assert_eq!(d.read(".iocfs/health"), "ok\n");
    assert_eq!(d.lines("live/ipv4.txt"), ["1.2.3.4"]);
    assert_eq!(
        common::mount_count(&d.mnt()),
        1,
        "mounts at {} after the restart (a dead one left underneath?):\n{}",
        d.mnt().display(),
        std::fs::read_to_string("/proc/mounts").unwrap()
    );
}

/// A second `iocfs mount` on a mount point a running iocfs serves is refused (it would hide
/// the first, and every client would see the second's empty lists); the first keeps serving.
#[test]
fn a_mount_over_a_running_iocfs_is_refused() {
    let Some(d) = Daemon::start() else {
        return;
    };
    d.append_lines("live/ipv4.txt", &["192.0.2.7"]);
    let other = tempfile::tempdir().unwrap();
    let data = other.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let mut child = std::process::Command::new(common::BIN)
        .arg("mount")
        .arg("--data")
        .arg(&data)
        .arg(d.mnt())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_timeout(&mut child, READY_TIMEOUT);
    let mut err = String::new();
    if status.is_none() {
        // It mounted over the first: take it away again.
        let _ = child.kill();
        let _ = child.wait();
        common::detach(&d.mnt());
    }
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        status.is_some_and(|s| s.code() == Some(1)),
        "second mount: {status:?}\n{err}"
    );
    assert!(
        err.contains("a running FUSE filesystem is mounted there"),
        "{err}"
    );
    assert_eq!(
        common::mount_count(&d.mnt()),
        1,
        "mounts at the mount point"
    );
    assert_eq!(d.lines("live/ipv4.txt"), ["192.0.2.7"]);
}

#[test]
fn every_list_keeps_its_mtime_across_a_restart_and_a_sigkill() {
    // `rsync -a` and a web server's Last-Modified go by mtime: a restart must not change it.
    let start = 1_700_000_000u64;
    let Some(mut d) = Daemon::builder().manual_clock(start).start() else {
        return;
    };
    d.append_lines("live/domain.txt", &["old.example"]);
    d.ctl("clock +2d").unwrap();
    d.ctl("age").unwrap();
    d.ctl("clock +1h").unwrap();
    d.append_lines("live/ipv4.txt", &["5.1.2.3"]);
    d.append_lines("allow/domain.txt", &["good.example"]);
    let files = ["live/ipv4.txt", "chaud/domain.txt", "allow/domain.txt"];
    let mtimes = |d: &Daemon| -> Vec<i64> {
        use std::os::unix::fs::MetadataExt;
        files
            .iter()
            .map(|f| std::fs::metadata(d.path(f)).unwrap().mtime())
            .collect()
    };
    let (aged, written) = (
        (start + 2 * 86400) as i64,
        (start + 2 * 86400 + 3600) as i64,
    );
    assert_eq!(mtimes(&d), [written, aged, written]);
    assert_eq!(d.stop().code(), Some(0));
    d.restart();
    assert_eq!(
        mtimes(&d),
        [written, aged, written],
        "after a clean restart"
    );
    // A change the WAL alone holds is dated by its record.
    d.ctl("clock +3d").unwrap();
    d.append_lines("live/ipv4.txt", &["5.1.2.4"]);
    d.kill9();
    d.restart();
    let appended = (start + 3 * 86400) as i64;
    assert_eq!(d.lines("live/ipv4.txt"), ["5.1.2.3", "5.1.2.4"]);
    assert_eq!(mtimes(&d), [appended, aged, written], "after SIGKILL");
}

#[test]
fn empty_files_and_directories_show_when_the_data_directory_was_made() {
    let Some(mut d) = Daemon::start() else { return };
    assert_eq!(d.stop().code(), Some(0));
    // Made long ago: nothing at its top level changes once it exists.
    let made = 1_600_000_000i64;
    let when = std::time::UNIX_EPOCH + Duration::from_secs(made as u64);
    File::open(d.data()).unwrap().set_modified(when).unwrap();
    d.restart();
    for f in ["live/url.txt", "froid/md5.txt", "live", "views", "."] {
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(d.path(f)).unwrap().mtime(), made, "{f}");
    }
}

/// A stop while a view build runs (the first builds after a restore or a crash take
/// seconds on a large store) waits for it and ends cleanly: the grace period for files held
/// open on a detached mount does not cut it short once the mount is gone.
#[cfg(feature = "testing")]
#[test]
fn a_stop_during_a_long_view_build_ends_cleanly() {
    let pause = tempfile::tempdir().unwrap();
    let gate = pause.path().join("views::build");
    std::fs::write(&gate, b"").unwrap();
    let Some(mut d) = Daemon::builder()
        .env("IOCFS_PAUSE_DIR", pause.path())
        .start()
    else {
        return;
    };
    let reached = pause.path().join("views::build.reached");
    common::poll_until(READY_TIMEOUT, || reached.exists().then_some(()))
        .expect("the first build pass reached its pause");
    d.append_lines("live/ipv4.txt", &["6.51.100.9"]);
    d.signal(nix::sys::signal::Signal::SIGTERM);
    // Past the 3 s grace period, with the mount gone and the build still held.
    common::poll_until(READY_TIMEOUT, || (!is_mounted(&d.mnt())).then_some(())).expect("unmounted");
    std::thread::sleep(Duration::from_millis(3500));
    std::fs::remove_file(&gate).unwrap();
    assert_eq!(d.reap().code(), Some(0));
    let log = d.log();
    assert!(log.contains("stopped cleanly"), "log:\n{log}");
    assert!(!log.contains("files were still open"), "log:\n{log}");
    d.restart();
    assert_eq!(d.lines("live/ipv4.txt"), ["6.51.100.9"]);
}
