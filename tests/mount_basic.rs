//! Mounted tests: the layout, appends (normalization, dedup, concurrency), `tail -f`, sizes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{poll_until, Daemon, BUCKETS, TYPE_FILES};

#[test]
fn mount_shows_four_buckets_the_allowlist_of_nine_files_sources_and_control_files() {
    let Some(d) = Daemon::start() else { return };
    let mut top: Vec<String> = std::fs::read_dir(d.mnt())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    top.sort();
    assert_eq!(
        top,
        [".iocfs", "allow", "chaud", "froid", "live", "sources", "tiede", "views"]
    );
    let mut want: Vec<&str> = TYPE_FILES.to_vec();
    want.sort();
    for bucket in BUCKETS.iter().chain(&["allow"]) {
        let mut names: Vec<String> = std::fs::read_dir(d.path(bucket))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, want, "files in {bucket}/");
        for f in TYPE_FILES {
            assert_eq!(
                d.read(&format!("{bucket}/{f}")),
                "",
                "{bucket}/{f} of a new mount"
            );
        }
    }
    assert_eq!(d.read(".iocfs/health"), "ok\n");
    let stats: serde_json::Value =
        serde_json::from_str(&d.read(".iocfs/stats.json")).expect(".iocfs/stats.json is JSON");
    assert!(stats.is_object(), "stats.json: {stats}");
    assert!(d.path(".iocfs/ctl").exists());
    assert!(d.path(".iocfs/lookup").is_dir());
}

#[test]
fn append_then_cat_shows_the_line() {
    let Some(d) = Daemon::start() else { return };
    d.sh_ok("echo 1.2.3.4 >> live/ipv4.txt");
    let out = d.sh_ok("cat live/ipv4.txt");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1.2.3.4\n");
    d.sh_ok("echo 5.6.7.8 >> live/ipv4.txt");
    assert_eq!(d.lines("live/ipv4.txt"), ["1.2.3.4", "5.6.7.8"]);
}

#[test]
fn duplicate_append_keeps_one_line() {
    let Some(d) = Daemon::start() else { return };
    d.sh_ok("echo 1.2.3.4 >> live/ipv4.txt");
    d.sh_ok("echo 9.9.9.9 >> live/ipv4.txt");
    d.sh_ok("echo 1.2.3.4 >> live/ipv4.txt");
    d.sh_ok("printf '1.2.3.4\\n1.2.3.4\\n' >> live/ipv4.txt");
    assert_eq!(d.lines("live/ipv4.txt"), ["1.2.3.4", "9.9.9.9"]);
}

#[test]
fn appended_lines_are_normalized() {
    let Some(d) = Daemon::start() else { return };
    // CIDR to its network, comments and blank lines dropped, CRLF accepted.
    d.sh_ok("printf '# a feed header\\n\\n1.2.3.4/24\\r\\n  8.8.8.8  \\n; other comment\\n10.1.1.1 # inline\\n' >> live/ipv4.txt");
    assert_eq!(
        d.lines("live/ipv4.txt"),
        ["1.2.3.0/24", "8.8.8.8", "10.1.1.1"]
    );
    // An equivalent network is a duplicate.
    d.sh_ok("echo 1.2.3.77/24 >> live/ipv4.txt");
    assert_eq!(d.lines("live/ipv4.txt").len(), 3);

    d.sh_ok("printf 'Evil.EXAMPLE.com.\\r\\nevil.example.com\\n' >> live/domain.txt");
    assert_eq!(d.lines("live/domain.txt"), ["evil.example.com"]);

    d.sh_ok("echo 2001:DB8:0:0:0:0:0:1 >> live/ipv6.txt");
    assert_eq!(d.lines("live/ipv6.txt"), ["2001:db8::1"]);

    d.sh_ok("echo D41D8CD98F00B204E9800998ECF8427E >> live/md5.txt");
    d.sh_ok("echo d41d8cd98f00b204e9800998ecf8427e >> live/md5.txt");
    assert_eq!(
        d.lines("live/md5.txt"),
        ["d41d8cd98f00b204e9800998ecf8427e"]
    );

    d.sh_ok("echo 'HTTP://Evil.COM/Path?Q=1' >> live/url.txt");
    assert_eq!(d.lines("live/url.txt"), ["http://evil.com/Path?Q=1"]);

    d.sh_ok("echo 'Bob@Example.COM' >> live/email.txt");
    assert_eq!(d.lines("live/email.txt"), ["Bob@example.com"]);
}

#[test]
fn unterminated_last_line_counts_at_close() {
    let Some(d) = Daemon::start() else { return };
    d.sh_ok("printf '1.1.1.1\\n2.2.2.2' >> live/ipv4.txt");
    assert_eq!(d.lines("live/ipv4.txt"), ["1.1.1.1", "2.2.2.2"]);
}

#[test]
fn eight_threads_of_a_thousand_appends_all_land_once() {
    let Some(d) = Daemon::start() else { return };
    let path = d.path("live/ipv4.txt");
    std::thread::scope(|s| {
        for t in 0..8u32 {
            let path = &path;
            s.spawn(move || {
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .open(path)
                    .expect("open for append");
                for i in 0..1000u32 {
                    let line = format!("10.{t}.{}.{}\n", i / 256, i % 256);
                    f.write_all(line.as_bytes())
                        .unwrap_or_else(|e| panic!("thread {t} append {line:?}: {e}"));
                }
            });
        }
    });
    let lines = d.lines("live/ipv4.txt");
    assert_eq!(lines.len(), 8000, "line count");
    let got: HashSet<&str> = lines.iter().map(String::as_str).collect();
    assert_eq!(got.len(), 8000, "lines are not all distinct");
    for t in 0..8u32 {
        for i in 0..1000u32 {
            let line = format!("10.{t}.{}.{}", i / 256, i % 256);
            assert!(got.contains(line.as_str()), "{line} is missing");
        }
    }
}

/// With `passthrough = false` every read is served by the daemon and a held descriptor sees
/// appends. (With the default, passthrough, a descriptor reads the version it opened:
/// `mount_passthrough.rs`.)
#[test]
fn tail_f_shows_lines_appended_after_it_started_without_passthrough() {
    let Some(d) = Daemon::builder()
        .config("[mount]\npassthrough = false\n")
        .start()
    else {
        return;
    };
    d.sh_ok("echo 1.1.1.1 >> live/ipv4.txt");
    let mut tail = Command::new("tail")
        .args(["-f", "-n", "+1", "-s", "0.1"])
        .arg(d.path("live/ipv4.txt"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn tail");
    let mut stdout = tail.stdout.take().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reader = {
        let seen = seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
    };
    let saw = |want: &str| {
        poll_until(Duration::from_secs(5), || {
            seen.lock().unwrap().contains(want).then_some(())
        })
        .is_some()
    };
    let first = saw("1.1.1.1\n");
    d.sh_ok("echo 2.2.2.2 >> live/ipv4.txt");
    let second = saw("2.2.2.2\n");
    d.sh_ok("echo 3.3.3.3 >> live/ipv4.txt");
    let third = saw("3.3.3.3\n");
    let _ = tail.kill();
    let _ = tail.wait();
    let _ = reader.join();
    let out = seen.lock().unwrap().clone();
    assert!(
        first && second && third,
        "tail -f output after 5 s per line: {out:?}"
    );
    assert_eq!(out, "1.1.1.1\n2.2.2.2\n3.3.3.3\n");
}

#[test]
fn st_size_equals_bytes_read_for_every_file() {
    let Some(d) = Daemon::start() else { return };
    d.sh_ok("printf '1.2.3.4\\n10.0.0.0/8\\n' >> live/ipv4.txt");
    d.sh_ok("echo Example.COM >> live/domain.txt");
    d.sh_ok("echo 'http://a.example/x?y=1' >> live/url.txt");
    d.sh_ok(&format!("echo {} >> live/sha256.txt", "AB".repeat(32)));
    for bucket in BUCKETS {
        for f in TYPE_FILES {
            let rel = format!("{bucket}/{f}");
            let size = std::fs::metadata(d.path(&rel)).unwrap().len();
            let bytes = std::fs::read(d.path(&rel)).unwrap();
            assert_eq!(size, bytes.len() as u64, "st_size of {rel}");
        }
    }
    // fstat on an open descriptor agrees too, and with what it reads.
    let mut f = std::fs::File::open(d.path("live/ipv4.txt")).unwrap();
    let size = f.metadata().unwrap().len();
    let mut content = Vec::new();
    f.read_to_end(&mut content).unwrap();
    assert_eq!(content, b"1.2.3.4\n10.0.0.0/8\n");
    assert_eq!(size, content.len() as u64);
    // And `wc -c` (which trusts st_size for regular files) gives the same answer.
    let wc = d.sh_ok("wc -c < live/ipv4.txt");
    assert_eq!(String::from_utf8_lossy(&wc.stdout).trim(), "19");
}

/// The daemon widens its mount's read-ahead window (the kernel gives FUSE 128 KiB), so a
/// sequential reader of a tier file has several large READs in flight.
#[test]
fn the_mount_reads_ahead_4_mib() {
    let Some(d) = Daemon::start() else { return };
    let mnt = d.mnt().canonicalize().unwrap();
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let dev = info
        .lines()
        .rev()
        .map(|l| l.split(' ').collect::<Vec<_>>())
        .find(|f| f.len() > 4 && std::path::Path::new(f[4]) == mnt)
        .map(|f| f[2].to_string())
        .expect("the mount in /proc/self/mountinfo");
    let kb = std::fs::read_to_string(format!("/sys/class/bdi/{dev}/read_ahead_kb")).unwrap();
    assert_eq!(kb.trim(), "4096");
}

#[test]
fn files_served_by_the_daemon_can_be_mapped() {
    // Without passthrough every live descriptor is served by the daemon with direct I/O,
    // as are the control files: `look`, ripgrep and Python's mmap map them.
    let Some(d) = Daemon::builder()
        .config("[mount]\npassthrough = false\n")
        .start()
    else {
        return;
    };
    d.append_lines("live/email.txt", &["a@evil.example", "b@evil.example"]);
    for f in ["live/email.txt", ".iocfs/metrics"] {
        // The views thread's first builds change the metrics at any moment: compare the
        // mapping with reads that agree on both sides of it.
        let settled = (0..20).find_map(|_| {
            let before = std::fs::read(d.path(f)).unwrap();
            let got = common::readers::mapped(&d.path(f), true)
                .unwrap_or_else(|e| panic!("mmap of {f}: {e}"));
            (std::fs::read(d.path(f)).unwrap() == before).then_some((got, before))
        });
        let (got, want) = settled.unwrap_or_else(|| panic!("{f} never settled"));
        assert_eq!(got, want, "{f}");
    }
    // stats.json shows the uptime: another second may have passed since a read.
    let stats = common::readers::mapped(&d.path(".iocfs/stats.json"), true).unwrap();
    let stats: serde_json::Value = serde_json::from_slice(&stats).unwrap();
    assert_eq!(stats["buckets"]["live"]["email"]["lines"], 2);
    // A mapping made after an append shows it.
    d.append_lines("live/email.txt", &["c@evil.example"]);
    assert_eq!(
        common::readers::mapped(&d.path("live/email.txt"), true).unwrap(),
        b"a@evil.example\nb@evil.example\nc@evil.example\n"
    );
}
