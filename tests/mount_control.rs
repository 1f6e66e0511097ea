//! Mounted tests: the `.iocfs` control tree (lookup/, ctl, health, stats.json).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use common::{errno_of, Daemon};

fn lookup_json(d: &Daemon, name: &str) -> serde_json::Value {
    let text = d.read(&format!(".iocfs/lookup/{name}"));
    assert!(text.ends_with('\n'), "lookup/{name}: {text:?}");
    assert_eq!(
        text.lines().count(),
        1,
        "lookup/{name} is not one line: {text:?}"
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("lookup/{name}: {e}: {text:?}"))
}

#[test]
fn lookup_entry_exists_iff_the_value_is_stored() {
    let Some(d) = Daemon::start() else { return };
    assert!(!d.path(".iocfs/lookup/1.2.3.4").exists());
    assert_eq!(
        errno_of(std::fs::read(d.path(".iocfs/lookup/1.2.3.4"))),
        libc::ENOENT
    );
    d.append_lines("live/ipv4.txt", &["1.2.3.4"]);
    d.append_lines("live/domain.txt", &["evil.example"]);
    assert!(d.path(".iocfs/lookup/1.2.3.4").exists());
    let v = lookup_json(&d, "1.2.3.4");
    assert_eq!(v["value"], "1.2.3.4");
    assert_eq!(v["type"], "ipv4");
    assert_eq!(v["bucket"], "live");
    for key in ["first_seen", "last_seen"] {
        assert!(
            v[key]
                .as_str()
                .is_some_and(|s| s.ends_with('Z') && s.len() == 20),
            "{key}: {v}"
        );
    }
    // Looked up by any spelling that normalizes to a stored value.
    assert_eq!(lookup_json(&d, "Evil.Example.")["value"], "evil.example");
    assert!(!d.path(".iocfs/lookup/5.6.7.8").exists());
    assert!(!d.path(".iocfs/lookup/other.example").exists());
    assert!(!d.path(".iocfs/lookup/garbage value").exists());
}

#[test]
fn lookup_of_url_and_cidr_uses_percent_encoded_slashes() {
    let Some(d) = Daemon::start() else { return };
    d.sh_ok("echo http://evil.com/x >> live/url.txt");
    d.sh_ok("echo 10.20.0.0/16 >> live/ipv4.txt");
    let v = lookup_json(&d, "http:%2F%2Fevil.com%2Fx");
    assert_eq!(v["value"], "http://evil.com/x");
    assert_eq!(v["type"], "url");
    assert_eq!(v["bucket"], "live");
    assert_eq!(lookup_json(&d, "10.20.0.0%2F16")["type"], "ipv4");
    assert!(!d.path(".iocfs/lookup/http:%2F%2Fevil.com%2Fy").exists());
    assert!(!d.path(".iocfs/lookup/10.21.0.0%2F16").exists());
}

#[test]
fn ctl_remove_deletes_the_value() {
    let Some(d) = Daemon::start() else { return };
    d.append_lines("live/ipv4.txt", &["1.1.1.1", "2.2.2.2", "3.3.3.3"]);
    d.append_lines("live/url.txt", &["http://evil.com/x", "http://ok.com/"]);
    d.ctl("remove 2.2.2.2 http://evil.com/x")
        .expect("ctl remove");
    assert_eq!(d.lines("live/ipv4.txt"), ["1.1.1.1", "3.3.3.3"]);
    assert_eq!(d.lines("live/url.txt"), ["http://ok.com/"]);
    assert!(!d.path(".iocfs/lookup/2.2.2.2").exists());
    assert!(!d.path(".iocfs/lookup/http:%2F%2Fevil.com%2Fx").exists());
    assert!(d.path(".iocfs/lookup/1.1.1.1").exists());
    // From the shell too, as an admin would.
    d.sh_ok("echo 'remove 1.1.1.1' > .iocfs/ctl");
    assert_eq!(d.lines("live/ipv4.txt"), ["3.3.3.3"]);
    // A removed value can come back.
    d.append_lines("live/ipv4.txt", &["2.2.2.2"]);
    assert_eq!(d.lines("live/ipv4.txt"), ["3.3.3.3", "2.2.2.2"]);
}

#[test]
fn ctl_lists_its_commands_when_read_and_rejects_unknown_ones() {
    use std::os::unix::fs::MetadataExt;
    let Some(d) = Daemon::builder().manual_clock(1_700_000_000).start() else {
        return;
    };
    let dated = || std::fs::metadata(d.path(".iocfs/ctl")).unwrap().mtime();
    let before = dated();
    // Reading lists the commands (so tar and rsync can read every file of a mount).
    let help = d.read(".iocfs/ctl");
    for cmd in [
        "age",
        "commit",
        "checkpoint",
        "remove VALUE",
        "refresh-views",
        "release-view NAME",
        "backup DEST",
    ] {
        assert!(
            help.lines().any(|l| l.starts_with(cmd)),
            "{cmd} missing from:\n{help}"
        );
    }
    assert_eq!(
        std::fs::metadata(d.path(".iocfs/ctl")).unwrap().len(),
        help.len() as u64,
        "st_size is what a read returns"
    );
    assert_eq!(errno_of(d.ctl("frobnicate")), libc::EINVAL);
    assert_eq!(errno_of(d.ctl("remove not..valid")), libc::EINVAL);
    for cmd in ["commit", "checkpoint", "age", "clock +1h"] {
        d.ctl(cmd).unwrap_or_else(|e| panic!("ctl {cmd}: {e}"));
    }
    assert_eq!(d.read(".iocfs/health"), "ok\n");
    assert_eq!(
        dated(),
        before,
        "its bytes never change: rsync -a copies it once"
    );
    d.ctl("remove").unwrap_err();
    assert!(
        d.log().contains("wrong arguments in \"remove\""),
        "{}",
        d.log()
    );
}

#[test]
fn stats_json_counts_live_lines() {
    let Some(d) = Daemon::start() else { return };
    d.append_lines("live/ipv4.txt", &["1.1.1.1", "2.2.2.2"]);
    let stats: serde_json::Value = serde_json::from_str(&d.read(".iocfs/stats.json")).unwrap();
    let text = stats.to_string();
    assert_eq!(
        stats["buckets"]["live"]["total"]["lines"], 2,
        "stats.json: {text}"
    );
}

#[test]
fn lseek_finds_data_everywhere_and_the_hole_at_the_end() {
    use std::os::fd::AsRawFd;
    let Some(d) = Daemon::builder().manual_clock(1_700_000_000).start() else {
        return;
    };
    d.append_lines("live/domain.txt", &["old.example.com"]);
    d.ctl("clock +2d").unwrap();
    d.ctl("age").unwrap();
    d.append_lines("live/ipv4.txt", &["192.0.2.1", "192.0.2.2"]);
    for rel in [
        "live/ipv4.txt",
        "chaud/domain.txt",
        ".iocfs/health",
        ".iocfs/ctl",
    ] {
        let f = std::fs::File::open(d.path(rel)).unwrap();
        let size = f.metadata().unwrap().len() as i64;
        assert!(size > 0, "{rel} is empty");
        let fd = f.as_raw_fd();
        // SAFETY: a plain lseek on a descriptor this test owns.
        #[allow(unsafe_code)]
        let seek = |off: i64, whence: i32| unsafe { libc::lseek(fd, off, whence) };
        assert_eq!(seek(0, libc::SEEK_DATA), 0, "{rel}");
        assert_eq!(seek(1, libc::SEEK_DATA), 1, "{rel}");
        assert_eq!(seek(0, libc::SEEK_HOLE), size, "{rel}");
        assert_eq!(seek(size, libc::SEEK_DATA), -1, "{rel}");
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::ENXIO)
        );
        assert_eq!(seek(0, libc::SEEK_END), size, "{rel}");
    }
    assert!(!d.log().contains("Not Implemented"), "{}", d.log());
}

/// A whole mount copies as root with tar, rsync -a and cp -r: every file can be read (ctl
/// lists its commands), each tool exits 0, the copies hold the lists, and none of them makes
/// the daemon log a "Not Implemented" operation (lseek, copy_file_range…).
#[test]
fn tar_rsync_and_cp_of_a_whole_mount_exit_0_and_log_nothing_unimplemented() {
    if !common::tools::have("rsync", "rsync") {
        return;
    }
    // A manual clock: the control files' times do not move while tar reads them.
    let Some(d) = Daemon::builder().manual_clock(1_700_000_000).start() else {
        return;
    };
    d.append_lines("live/domain.txt", &["old.example.com", "older.example.com"]);
    d.ctl("clock +2d").unwrap();
    d.ctl("age").unwrap();
    d.append_lines("live/ipv4.txt", &["5.1.2.3", "45.67.89.10"]);
    d.ctl("commit").unwrap();
    let root = d.root().display().to_string();
    let tar = d.sh_ok(&format!(
        "tar -cf {root}/all.tar . && tar -tf {root}/all.tar"
    ));
    let listed = String::from_utf8_lossy(&tar.stdout).into_owned();
    for want in [
        "./.iocfs/ctl",
        "./.iocfs/metrics",
        "./.iocfs/stats.json",
        "./chaud/domain.txt",
        "./live/ipv4.txt",
        "./froid/sha512.txt",
    ] {
        assert!(
            listed.lines().any(|l| l == want),
            "{want} not in:\n{listed}"
        );
    }
    std::fs::create_dir(d.root().join("untarred")).unwrap();
    d.sh_ok(&format!("tar -xf {root}/all.tar -C {root}/untarred"));
    d.sh_ok(&format!("rsync -a ./ {root}/rsynced/"));
    d.sh_ok(&format!("cp -r . {root}/copied"));
    let help = d.read(".iocfs/ctl");
    for copy in ["untarred", "rsynced", "copied"] {
        let at = |rel: &str| std::fs::read_to_string(d.root().join(copy).join(rel)).unwrap();
        assert_eq!(
            at("chaud/domain.txt"),
            "old.example.com\nolder.example.com\n",
            "{copy}"
        );
        assert_eq!(at("live/ipv4.txt"), "5.1.2.3\n45.67.89.10\n", "{copy}");
        assert_eq!(at(".iocfs/ctl"), help, "{copy}");
        assert_eq!(at("live/domain.txt"), "", "{copy}");
    }
    let log = d.log();
    assert!(!log.contains("Not Implemented"), "{log}");
    assert_eq!(d.read(".iocfs/health"), "ok\n");
}
