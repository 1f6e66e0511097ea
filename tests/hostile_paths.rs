//! Hostile local users (README "Hostile local users and files"): data directories, mount
//! points and source trees another user could tamper with, and symlinks planted where iocfs
//! creates files. Each test performs the attack through `iocfs` itself (mount, check,
//! import, the demo script) and checks that it fails safely: refused with a message naming
//! the path and the fix, or the planted link removed, never followed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{fuse_available, is_mounted, poll_until, wait_timeout, Daemon, BIN, READY_TIMEOUT};

const NOBODY: u32 = 65534;

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

fn chown(p: &Path, uid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(uid)).unwrap();
}

/// A private (0700) temp dir, canonical.
fn temp_root() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().canonicalize().unwrap();
    (tmp, path)
}

/// Run `iocfs ARGS…` to its end (it must not mount anything); (success, stdout + stderr).
fn iocfs(args: &[&dyn AsRef<std::ffi::OsStr>]) -> (bool, String) {
    let mut child = Command::new(BIN)
        .args(args.iter().map(|a| a.as_ref()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_timeout(&mut child, READY_TIMEOUT).unwrap_or_else(|| {
        let _ = child.kill();
        panic!(
            "iocfs {:?} did not finish",
            args.iter().map(|a| a.as_ref()).collect::<Vec<_>>()
        )
    });
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (status.success(), text)
}

/// `iocfs mount` that must be refused before mounting: the message.
fn mount_refused(base: &Path, data: &Path, mnt: &Path) -> String {
    let config = base.join("empty.toml");
    fs::write(&config, "").unwrap();
    let (ok, text) = iocfs(&[&"mount", &"--config", &config, &"--data", &data, &mnt]);
    assert!(!ok, "mounted on {}: {text}", mnt.display());
    assert!(!is_mounted(mnt), "{} is mounted", mnt.display());
    text
}

#[test]
fn mount_refuses_a_data_dir_or_mount_point_other_users_can_tamper_with() {
    if !fuse_available() {
        return;
    }
    let (_tmp, base) = temp_root();
    let (data, mnt) = (base.join("data"), base.join("mnt"));
    fs::create_dir(&data).unwrap();
    fs::create_dir(&mnt).unwrap();
    chmod(&data, 0o777);
    let text = mount_refused(&base, &data, &mnt);
    assert!(
        text.contains(&format!("chmod go-w {}", data.display())),
        "{text}"
    );
    chmod(&data, 0o770);
    let text = mount_refused(&base, &data, &mnt);
    assert!(text.contains("its group"), "{text}");
    chmod(&data, 0o750);
    chown(&data, NOBODY);
    let text = mount_refused(&base, &data, &mnt);
    assert!(
        text.contains(&format!("chown 0 {}", data.display())) && text.contains("nobody"),
        "{text}"
    );
    chown(&data, 0);
    assert!(
        fs::read_dir(&data).unwrap().next().is_none(),
        "a refused mount created files"
    );

    chmod(&mnt, 0o777);
    let text = mount_refused(&base, &data, &mnt);
    assert!(
        text.contains(&format!("chmod go-w {}", mnt.display())),
        "{text}"
    );
    chmod(&mnt, 0o755);

    // The old scripts/demo attack: another user owns the directory holding the mount point
    // and points `mnt` at a directory of their choice (here a stand-in for /etc).
    let evil = base.join("evil");
    let target = base.join("etc");
    fs::create_dir(&evil).unwrap();
    fs::create_dir(&target).unwrap();
    fs::write(target.join("shadow"), "root:secret\n").unwrap();
    symlink(&target, evil.join("mnt")).unwrap();
    chown(&evil, NOBODY);
    let text = mount_refused(&base, &data, &evil.join("mnt"));
    assert!(text.contains("evil") && text.contains("nobody"), "{text}");
    assert!(!is_mounted(&target));
    assert_eq!(
        fs::read_to_string(target.join("shadow")).unwrap(),
        "root:secret\n"
    );
    // Same for the data directory: a data dir reached through their directory.
    let text = mount_refused(&base, &evil.join("mnt"), &mnt);
    assert!(text.contains("evil"), "{text}");
    assert_eq!(
        fs::read_dir(&target).unwrap().count(),
        1,
        "files created in the target"
    );

    // A sticky, world-writable directory (like /tmp) holding our own directories is fine.
    let shared = base.join("shared");
    fs::create_dir(&shared).unwrap();
    chmod(&shared, 0o1777);
    fs::create_dir(shared.join("mnt")).unwrap();
    let mut child = Command::new(BIN)
        .args(["mount", "--config"])
        .arg(base.join("empty.toml"))
        .arg("--data")
        .arg(shared.join("data"))
        .arg(shared.join("mnt"))
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let up = poll_until(READY_TIMEOUT, || {
        fs::read(shared.join("mnt/.iocfs/health")).ok()
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = wait_timeout(&mut child, READY_TIMEOUT).expect("iocfs exits on SIGTERM");
    assert_eq!(
        up.as_deref(),
        Some(&b"ok\n"[..]),
        "a private dir in /tmp-like dir"
    );
    assert!(status.success());
}

/// `BASE/src`, a bucket tree holding one address in live/, and where its data dir goes.
fn one_address_tree(base: &Path) -> (PathBuf, PathBuf) {
    let (data, src) = (base.join("data"), base.join("src"));
    fs::create_dir_all(src.join("live")).unwrap();
    fs::write(src.join("live/ipv4.txt"), "192.0.2.1\n").unwrap();
    (data, src)
}

#[test]
fn check_and_import_refuse_a_data_dir_other_users_can_write() {
    if !fuse_available() {
        return;
    }
    let (_tmp, base) = temp_root();
    let (data, src) = one_address_tree(&base);
    let (ok, text) = iocfs(&[&"import", &"--data", &data, &src]);
    assert!(ok, "{text}");
    let (ok, text) = iocfs(&[&"check", &data]);
    assert!(ok, "{text}");
    for (path, mode) in [(data.clone(), 0o777), (data.join("wal"), 0o757)] {
        chmod(&path, mode);
        let fix = format!("chmod go-w {}", path.display());
        let (ok, text) = iocfs(&[&"check", &data]);
        assert!(!ok && text.contains(&fix), "check: {text}");
        let (ok, text) = iocfs(&[&"check", &"--repair", &data]);
        assert!(!ok && text.contains(&fix), "check --repair: {text}");
        let (ok, text) = iocfs(&[&"import", &"--data", &data, &src]);
        assert!(!ok && text.contains(&fix), "import: {text}");
        chmod(&path, 0o750);
    }
    let (ok, text) = iocfs(&[&"check", &data]);
    assert!(ok, "{text}");
}

/// Symlinks planted (by root here; another user can't, see above) where iocfs creates files:
/// a commit temp, a checkpoint temp, LOCK, lost+found. None is followed.
#[test]
fn a_symlink_planted_where_iocfs_creates_a_file_is_never_followed() {
    let Some(mut d) = Daemon::builder()
        .config("[durability]\ncommit_interval = \"3650d\"\ncheckpoint_interval = \"3650d\"\n")
        .start()
    else {
        return;
    };
    let victim = d.root().join("victim");
    fs::write(&victim, "precious\n").unwrap();
    d.append_lines("live/domain.txt", &["planted.example"]);
    let stats: serde_json::Value = serde_json::from_str(&d.read(".iocfs/stats.json")).unwrap();
    let upto = stats["wal"]["applied_seq"].as_u64().unwrap();
    let commit_tmp = d.data().join(format!("live/.domain.txt.c{upto}.tmp"));
    symlink(&victim, &commit_tmp).unwrap();
    let ckpt_tmp = d
        .data()
        .join(format!("checkpoint/.{upto:020}.ckpt.{}.tmp", d.pid()));
    symlink(&victim, &ckpt_tmp).unwrap();
    d.ctl("checkpoint").unwrap();
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
    assert_eq!(
        fs::read_to_string(d.data().join("live/domain.txt")).unwrap(),
        "planted.example\n"
    );
    assert!(
        d.log().contains("removing a leftover in the way"),
        "{}",
        d.log()
    );
    assert!(d.stop().success());

    fs::remove_file(d.data().join("LOCK")).unwrap();
    symlink(&victim, d.data().join("LOCK")).unwrap();
    let text = mount_refused(d.root(), &d.data(), &d.mnt());
    assert!(text.contains("LOCK"), "{text}");
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
    fs::remove_file(d.data().join("LOCK")).unwrap();

    let elsewhere = d.root().join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    symlink(&elsewhere, d.data().join("lost+found")).unwrap();
    let (ok, text) = iocfs(&[&"check", &"--repair", &d.data()]);
    assert!(
        !ok && text.contains("lost+found") && text.contains("symlink"),
        "{text}"
    );
    assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0);
    fs::remove_file(d.data().join("lost+found")).unwrap();
    d.restart();
    assert_eq!(d.lines("live/domain.txt"), ["planted.example"]);
}

#[test]
fn import_reads_a_hostile_tree_without_following_links_hanging_or_echoing_raw_names() {
    if !fuse_available() {
        return;
    }
    let (_tmp, base) = temp_root();
    let (data, src) = one_address_tree(&base);
    // A file outside the tree the collector should not be able to make root read.
    let secret = base.join("secret-domains.txt");
    fs::write(&secret, "secret.example\n").unwrap();
    symlink(&secret, src.join("live/domain.txt")).unwrap();
    let other = base.join("other");
    fs::create_dir_all(&other).unwrap();
    fs::write(other.join("url.txt"), "http://secret.example/\n").unwrap();
    symlink(&other, src.join("chaud")).unwrap();
    nix::unistd::mkfifo(
        &src.join("live/url.txt"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    let odd = "evil\n\u{1b}[2Jname.txt";
    fs::write(src.join("live").join(odd), "x\n").unwrap();
    // A 256 MiB line with no newline, then a valid one: bounded memory, one rejection.
    let mut f = fs::File::create(src.join("live/sha256.txt")).unwrap();
    let chunk = vec![b'a'; 1 << 20];
    for _ in 0..256 {
        f.write_all(&chunk).unwrap();
    }
    writeln!(f, "\n{}", "b".repeat(64)).unwrap();
    drop(f);

    let before = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .unwrap()
        .max_rss();
    let (ok, text) = iocfs(&[&"import", &"--data", &data, &src]);
    let after = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .unwrap()
        .max_rss();
    assert!(ok, "{text}");
    assert!(
        after.max(before) < 128 << 10,
        "an import child grew to {after} KiB: the long line was held in memory"
    );
    assert!(
        text.contains("live/domain.txt: a symlink (not followed)"),
        "{text}"
    );
    assert!(text.contains("chaud: a symlink (not followed)"), "{text}");
    assert!(text.contains("live/url.txt: not a regular file"), "{text}");
    assert!(text.contains("evil\\x0a\\x1b[2Jname.txt"), "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "a raw escape sequence reached the terminal"
    );
    assert!(text.contains("sha256.txt:1: line longer than"), "{text}");

    let d = BufReader::new(
        Command::new(BIN)
            .arg("check")
            .arg(&data)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
            .stdout
            .unwrap(),
    );
    assert!(d.lines().any(|l| l.unwrap() == "clean"));
    // What was imported: the regular files only.
    let mnt = base.join("mnt");
    fs::create_dir(&mnt).unwrap();
    // Written before the daemon starts: it reads its config first thing.
    fs::write(base.join("none.toml"), "").unwrap();
    let mut child = Command::new(BIN)
        .arg("mount")
        .arg("--config")
        .arg(base.join("none.toml"))
        .arg("--data")
        .arg(&data)
        .arg(&mnt)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let read = |rel: &str| fs::read_to_string(mnt.join(rel)).unwrap_or_default();
    let up = poll_until(READY_TIMEOUT, || fs::read(mnt.join(".iocfs/health")).ok());
    let seen = (
        read("live/ipv4.txt"),
        read("live/domain.txt"),
        read("chaud/url.txt"),
        read("live/sha256.txt"),
    );
    let _ = child.kill();
    let _ = child.wait();
    common::detach(&mnt);
    assert!(up.is_some(), "the imported data dir did not mount");
    assert_eq!(
        seen,
        (
            "192.0.2.1\n".to_string(),
            String::new(),
            String::new(),
            format!("{}\n", "b".repeat(64))
        )
    );
}

/// scripts/demo makes its own private directory: an attacker's `iocfs-demo` tree planted
/// in the same temp dir (with `data/LOCK` pointing at a file to clobber) is never touched.
#[test]
fn the_demo_uses_a_private_directory_it_created() {
    if !fuse_available() {
        return;
    }
    let (_tmp, base) = temp_root();
    let planted = base.join("iocfs-demo/data");
    fs::create_dir_all(&planted).unwrap();
    let victim = base.join("victim");
    fs::write(&victim, "precious\n").unwrap();
    symlink(&victim, planted.join("LOCK")).unwrap();
    let mut demo = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/demo"))
        .env("IOCFS_BIN", BIN)
        .env("TMPDIR", &base)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(demo.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    let mnt = PathBuf::from(
        first
            .strip_prefix("iocfs demo: mounting ")
            .and_then(|r| r.split(" (data").next())
            .unwrap_or_else(|| panic!("unexpected demo output: {first}")),
    );
    let up = poll_until(READY_TIMEOUT, || fs::read(mnt.join(".iocfs/health")).ok());
    let dir = mnt.parent().unwrap().to_path_buf();
    let md = fs::metadata(&dir).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(demo.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = wait_timeout(&mut demo, Duration::from_secs(15));
    assert!(up.is_some(), "the demo did not mount {}", mnt.display());
    assert!(status.is_some_and(|s| s.success()));
    assert_ne!(dir, base.join("iocfs-demo"));
    assert!(dir.starts_with(&base), "{}", dir.display());
    assert_eq!(md.permissions().mode() & 0o777, 0o700);
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
    assert!(fs::symlink_metadata(planted.join("LOCK"))
        .unwrap()
        .file_type()
        .is_symlink());
}

/// Item 9: `iocfs check` holds the data directory's lock for its whole run (before, it let go
/// right after testing it): a daemon starting meanwhile refuses, so it and a repair never
/// work on the same files.
#[cfg(feature = "testing")]
#[test]
fn check_holds_the_data_dir_lock_for_its_whole_run() {
    let Some(mut d) = Daemon::start() else { return };
    d.append_lines("live/domain.txt", &["locked.example"]);
    assert!(d.stop().success());
    let pause = tempfile::tempdir().unwrap();
    for args in [&["check"][..], &["check", "--repair"]] {
        let gate = pause.path().join("check::locked");
        let reached = pause.path().join("check::locked.reached");
        fs::write(&gate, b"").unwrap();
        let mut check = Command::new(BIN)
            .args(args)
            .arg(d.data())
            .env("IOCFS_PAUSE_DIR", pause.path())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let paused = poll_until(READY_TIMEOUT, || reached.exists().then_some(()));
        let refused = paused.map(|()| mount_refused(d.root(), &d.data(), &d.mnt()));
        let (ok, second) = iocfs(&[&"check", &d.data()]);
        fs::remove_file(&gate).unwrap();
        let _ = fs::remove_file(&reached);
        let status = wait_timeout(&mut check, READY_TIMEOUT).expect("check finishes");
        assert!(paused.is_some(), "{args:?} never reached its pause");
        assert!(refused.unwrap().contains("in use"), "{args:?}");
        assert!(
            !ok && second.contains("in use"),
            "a second check ran: {second}"
        );
        assert!(status.success(), "{args:?}");
    }
    d.restart();
    assert_eq!(d.lines("live/domain.txt"), ["locked.example"]);
}

/// A backup writes as root into its destination: one another user controls (or a directory
/// above it they control) is refused like a data directory.
#[test]
fn backup_refuses_a_destination_other_users_can_tamper_with() {
    let Some(mut d) = Daemon::start() else { return };
    d.append_lines("live/domain.txt", &["kept.example"]);
    assert!(d.stop().success());
    let theirs = d.root().join("theirs");
    fs::create_dir(&theirs).unwrap();
    chown(&theirs, NOBODY);
    let (ok, text) = iocfs(&[&"backup", &"--data", &d.data(), &theirs.join("dest")]);
    assert!(
        !ok && text.contains("theirs") && text.contains("nobody"),
        "{text}"
    );
    assert_eq!(fs::read_dir(&theirs).unwrap().count(), 0);
    let planted = d.root().join("planted");
    fs::create_dir(&planted).unwrap();
    chown(&planted, NOBODY);
    let (ok, text) = iocfs(&[&"backup", &"--data", &d.data(), &planted]);
    assert!(
        !ok && text.contains(&format!("chown 0 {}", planted.display())),
        "{text}"
    );
    let good = d.root().join("good");
    let (ok, text) = iocfs(&[&"backup", &"--data", &d.data(), &good]);
    assert!(ok, "{text}");
    assert!(fs::read_to_string(good.join("live/domain.txt"))
        .unwrap()
        .contains("kept.example"));
}
