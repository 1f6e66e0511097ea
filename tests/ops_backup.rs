//! `iocfs backup`: online while writers append, offline, a backup cut short by SIGKILL,
//! and the destinations a backup refuses.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{poll_until, Daemon, BIN, READY_TIMEOUT};
use iocfs::clock::SystemClock;
use iocfs::config::Config;
use iocfs::ioc::IocType;
use iocfs::store::Store;

fn iocfs(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn show(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Open a backup with the engine and check that every `(type, value)` is stored.
/// `iocfs backup --data DATA DEST` of a stopped store; panics unless it exits 0.
fn offline_backup(data: &Path, dest: &Path) {
    let out = iocfs(&[
        "backup",
        "--data",
        data.to_str().unwrap(),
        dest.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", show(&out));
}

fn assert_holds(dest: &Path, want: &[(IocType, String)]) {
    let config = Config {
        data_dir: dest.to_path_buf(),
        ..Config::default()
    };
    let store = Store::open(Arc::new(config), Arc::new(SystemClock)).unwrap();
    let missing: Vec<&(IocType, String)> = want
        .iter()
        .filter(|(ty, v)| store.find(*ty, v.as_bytes()).is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged lines missing from the backup, e.g. {:?}",
        missing.len(),
        missing.first()
    );
}

#[test]
fn an_online_backup_under_four_writers_holds_everything_acknowledged_before_it() {
    let Some(d) = Daemon::start() else {
        return;
    };
    d.sh_ok("echo 203.0.113.5 >> live/ipv4.txt");
    d.ctl("checkpoint").unwrap();
    let stop = AtomicBool::new(false);
    let acked: Mutex<Vec<(IocType, String)>> = Mutex::new(Vec::new());
    let dest = d.root().join("backup");
    let before: Vec<(IocType, String)> = std::thread::scope(|scope| {
        for w in 0..4 {
            let (stop, acked, d) = (&stop, &acked, &d);
            scope.spawn(move || {
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .open(d.path("live/domain.txt"))
                    .unwrap();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let v = format!("w{w}-{i}.example.com");
                    f.write_all(format!("{v}\n").as_bytes()).unwrap();
                    acked.lock().unwrap().push((IocType::Domain, v));
                    i += 1;
                }
            });
        }
        std::thread::sleep(Duration::from_millis(300));
        let before = acked.lock().unwrap().clone();
        let out = iocfs(&[
            "backup",
            "--mount",
            d.mnt().to_str().unwrap(),
            dest.to_str().unwrap(),
        ]);
        std::thread::sleep(Duration::from_millis(100));
        stop.store(true, Ordering::Relaxed);
        assert!(out.status.success(), "{}", show(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("clean"),
            "{}",
            show(&out)
        );
        before
    });
    assert!(before.len() > 20, "writers were slow: {}", before.len());
    let mut want = before.clone();
    want.push((IocType::Ipv4, "203.0.113.5".into()));
    assert_holds(&dest, &want);
    assert!(!dest.join("BACKUP-INCOMPLETE").exists());
    // The backup's files are hard links of the committed ones (same file system).
    let linked = walk(&dest).iter().any(|p| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(p).map(|m| m.nlink() > 1).unwrap_or(false)
    });
    assert!(linked, "nothing was hard-linked");
    // The source goes on working, and a backup never shares a file that changes.
    d.sh_ok("echo after.example.com >> live/domain.txt");
    assert!(d
        .lines("live/domain.txt")
        .contains(&"after.example.com".to_string()));
    let check = iocfs(&["check", dest.to_str().unwrap()]);
    assert!(check.status.success(), "{}", show(&check));
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn a_backup_cut_short_by_sigkill_leaves_the_data_intact_and_the_backup_refused() {
    let Some(mut d) = Daemon::start() else {
        return;
    };
    let lines: Vec<String> = (0..200).map(|i| format!("k{i}.example.net")).collect();
    d.append_lines("live/domain.txt", &lines);
    d.ctl("failpoint backup::pause eio").unwrap();
    let dest = d.root().join("cut");
    let mnt = d.mnt();
    let child = std::thread::spawn({
        let (mnt, dest) = (mnt.clone(), dest.clone());
        move || {
            iocfs(&[
                "backup",
                "--mount",
                mnt.to_str().unwrap(),
                dest.to_str().unwrap(),
            ])
        }
    });
    poll_until(READY_TIMEOUT, || dest.join("live").exists().then_some(()))
        .expect("the backup started");
    std::thread::sleep(Duration::from_millis(100));
    d.kill9();
    let out = child.join().unwrap();
    assert!(!out.status.success(), "{}", show(&out));
    assert!(dest.join("BACKUP-INCOMPLETE").exists());
    // The data directory is intact: every acknowledged line after a restart.
    d.restart();
    let served = d.lines("live/domain.txt");
    assert_eq!(
        served.iter().collect::<HashSet<_>>(),
        lines.iter().collect::<HashSet<_>>()
    );
    assert_eq!(d.read(".iocfs/health"), "ok\n");
    // The incomplete backup is refused, with the reason.
    let mnt2 = d.root().join("mnt2");
    std::fs::create_dir(&mnt2).unwrap();
    let refused = iocfs(&[
        "mount",
        "--data",
        dest.to_str().unwrap(),
        mnt2.to_str().unwrap(),
    ]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("incomplete backup"),
        "{}",
        show(&refused)
    );
    assert!(!common::is_mounted(&mnt2));
}

#[test]
fn offline_backups_and_refused_destinations() {
    let Some(mut d) = Daemon::start() else {
        return;
    };
    d.sh_ok("printf '198.51.100.1\\n198.51.100.2\\n' >> live/ipv4.txt");
    let data = d.data();
    // Mounted: the offline form refuses (the data directory is locked).
    let busy = iocfs(&[
        "backup",
        "--data",
        data.to_str().unwrap(),
        d.root().join("x").to_str().unwrap(),
    ]);
    assert!(!busy.status.success(), "{}", show(&busy));
    // A destination that holds something is refused.
    let full = d.root().join("full");
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join("keep"), "mine").unwrap();
    let out = iocfs(&[
        "backup",
        "--mount",
        d.mnt().to_str().unwrap(),
        full.to_str().unwrap(),
    ]);
    assert!(!out.status.success(), "{}", show(&out));
    assert_eq!(std::fs::read_to_string(full.join("keep")).unwrap(), "mine");
    // A destination inside the mount is refused before the daemon is asked (a directory
    // made in sources/ would declare a source).
    let inside = d.mnt().join("sources/bk");
    let out = iocfs(&[
        "backup",
        "--mount",
        d.mnt().to_str().unwrap(),
        inside.to_str().unwrap(),
    ]);
    assert!(!out.status.success(), "{}", show(&out));
    assert!(show(&out).contains("inside the mount"), "{}", show(&out));
    assert!(!inside.exists(), "no source declared");
    d.stop();
    let dest = d.root().join("offline");
    offline_backup(&data, &dest);
    assert_holds(
        &dest,
        &[
            (IocType::Ipv4, "198.51.100.1".into()),
            (IocType::Ipv4, "198.51.100.2".into()),
        ],
    );
}

#[test]
fn a_backup_copied_to_another_filesystem_keeps_the_lists_mtimes() {
    // /dev/shm is tmpfs: the committed files are copied there, not hard-linked.
    let Ok(shm) = tempfile::Builder::new()
        .prefix("iocfs-backup-")
        .tempdir_in("/dev/shm")
    else {
        eprintln!("SKIP: no /dev/shm");
        return;
    };
    let Some(mut d) = Daemon::start() else {
        return;
    };
    d.sh_ok("printf '198.51.100.1\\n' >> live/ipv4.txt");
    d.stop();
    let data = d.data();
    // The list was last changed long ago (what a commit dates it with).
    let then = std::time::UNIX_EPOCH + Duration::from_secs(1_600_000_000);
    let committed = data.join("live/ipv4.txt");
    std::fs::File::options()
        .write(true)
        .open(&committed)
        .unwrap()
        .set_modified(then)
        .unwrap();
    let dest = shm.path().join("b");
    offline_backup(&data, &dest);
    let copy = std::fs::metadata(dest.join("live/ipv4.txt")).unwrap();
    assert_eq!(copy.modified().unwrap(), then);
}
