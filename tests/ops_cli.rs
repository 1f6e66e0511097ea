//! The admin's commands (DESIGN §6): validate-config, check [--repair], import, stats, and
//! the root-only ctl. Most mount a filesystem; none needs the `testing` feature.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{as_nobody, wait_timeout, Daemon, BIN, READY_TIMEOUT};

/// Run `iocfs ARGS…`; (success, stdout + stderr).
fn iocfs<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> (bool, String) {
    let out: Output = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run iocfs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn validate(dir: &Path, name: &str, toml: &str) -> (bool, String) {
    let path = dir.join(name);
    std::fs::write(&path, toml).unwrap();
    iocfs(&[Path::new("validate-config"), &path])
}

#[test]
fn validate_config_accepts_the_shipped_file_and_names_the_bad_key() {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/iocfs.toml");
    let (ok, text) = iocfs(&[Path::new("validate-config"), &shipped]);
    assert!(ok, "systemd/iocfs.toml: {text}");

    let dir = tempfile::tempdir().unwrap();
    let (ok, text) = validate(dir.path(), "empty.toml", "");
    assert!(ok, "an empty file is all defaults: {text}");
    for (name, toml, key) in [
        (
            "mode.toml",
            "[durability]\nmode = \"sometimes\"\n",
            "durability.mode",
        ),
        (
            "unknown.toml",
            "[durability]\nmood = \"always\"\n",
            "durability.mood",
        ),
        ("top.toml", "bogus = 1\n", "bogus"),
        (
            "duration.toml",
            "[aging]\ninterval = \"soon\"\n",
            "aging.interval",
        ),
        (
            "bare-number.toml",
            "[retention]\nlive_to_chaud = 86400\n",
            "retention.live_to_chaud",
        ),
        ("size.toml", "[cache]\nsize = \"lots\"\n", "cache.size"),
    ] {
        let (ok, text) = validate(dir.path(), name, toml);
        assert!(!ok, "{name} ({toml:?}) was accepted: {text}");
        assert!(
            text.contains(key),
            "{name}: the message lacks {key:?}: {text}"
        );
        assert!(
            text.contains(name),
            "{name}: the message lacks the file: {text}"
        );
    }
}

fn check(data: &Path, repair: bool) -> (bool, String) {
    let mut args = vec![PathBuf::from("check")];
    if repair {
        args.push("--repair".into());
    }
    args.push(data.to_path_buf());
    iocfs(&args)
}

fn lost_found(data: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(data.join("lost+found"))
        .map(|rd| {
            rd.map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn addrs(from: u32, n: u32) -> Vec<String> {
    (from..from + n)
        .map(|i| format!("192.0.{}.{}", i / 256, i % 256))
        .collect()
}

/// Commits only at shutdown, so after a SIGKILL the WAL alone holds the recent writes.
const NO_COMMITS: &str = "[durability]\ncommit_interval = \"1h\"\n[aging]\ninterval = \"1h\"\n";

#[test]
fn check_is_clean_on_a_stopped_dir_refuses_while_mounted_and_repairs_a_torn_tail() {
    let Some(mut d) = Daemon::builder().config(NO_COMMITS).start() else {
        return;
    };
    let first = addrs(0, 100);
    d.append_lines("live/ipv4.txt", &first);
    let (ok, text) = check(&d.data(), false);
    assert!(!ok, "check while mounted succeeded: {text}");
    assert!(text.contains("in use"), "check while mounted: {text}");

    let status = d.stop();
    assert!(status.success(), "SIGTERM exit status {status}");
    // A clean stop trims the zeros the WAL writes ahead of its records.
    let seg = common::wal_segments(&d.data())
        .pop()
        .expect("a WAL segment");
    let bytes = std::fs::read(&seg).unwrap();
    assert_eq!(
        common::wal_records_end(&bytes),
        bytes.len(),
        "{} does not end on its last record",
        seg.display()
    );
    let (ok, text) = check(&d.data(), false);
    assert!(ok, "check on a cleanly stopped dir: {text}");
    assert!(text.contains("clean"), "{text}");

    // Appends after the restart live only in the WAL (no commit before the SIGKILL).
    d.restart();
    let second = addrs(100, 50);
    d.append_lines("live/ipv4.txt", &second);
    d.kill9();
    let seg = common::wal_segments(&d.data())
        .pop()
        .expect("a WAL segment");
    let orig = std::fs::read(&seg).unwrap();
    assert!(
        common::wal_records(&orig).len() >= 50,
        "{} holds {} records",
        seg.display(),
        common::wal_records(&orig).len()
    );
    let cut = common::wal_records_end(&orig) - 3;
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(cut as u64).unwrap();
    drop(f);

    let (ok, text) = check(&d.data(), false);
    assert!(!ok, "check of a torn tail succeeded: {text}");
    assert!(
        text.contains("torn tail") && text.contains(&seg.display().to_string()),
        "check of a torn tail: {text}"
    );
    let (ok, text) = check(&d.data(), true);
    assert!(ok, "check --repair of a torn tail: {text}");
    assert!(text.contains("clean"), "{text}");
    // (The repair also sets every checkpoint aside there.)
    let kept = lost_found(&d.data());
    let wal_cuts: Vec<_> = kept
        .iter()
        .filter(|(n, _)| n.contains(".wal.cut-at-"))
        .collect();
    assert_eq!(wal_cuts.len(), 1, "lost+found: {:?}", names(&kept));
    let (name, bytes) = wal_cuts[0];
    assert!(
        !bytes.is_empty() && orig[..cut].ends_with(bytes) && bytes.len() < 100,
        "lost+found/{name} ({} bytes) is not the cut end of the segment",
        bytes.len()
    );
    let (ok, text) = check(&d.data(), false);
    assert!(ok, "check after --repair: {text}");

    d.restart();
    assert_eq!(d.read(".iocfs/health"), "ok\n");
    let want: Vec<String> = first.iter().chain(&second).cloned().collect();
    let got = d.lines("live/ipv4.txt");
    // The torn record was the last append.
    assert!(
        got == want || got == want[..want.len() - 1],
        "after repair: {} lines, last {:?}",
        got.len(),
        got.last()
    );
}

fn names(v: &[(String, Vec<u8>)]) -> Vec<&str> {
    v.iter().map(|(n, _)| n.as_str()).collect()
}

/// Write 60 appends (one WAL record each), SIGKILL, then flip a bit in the payload of the
/// 11th record of the last segment. (segment, its damaged bytes, offset of the record).
fn damage_an_early_record(d: &mut Daemon, lines: &[String]) -> (PathBuf, Vec<u8>, usize) {
    d.append_lines("live/ipv4.txt", lines);
    d.kill9();
    let seg = common::wal_segments(&d.data())
        .pop()
        .expect("a WAL segment");
    let mut bytes = std::fs::read(&seg).unwrap();
    let offsets: Vec<usize> = common::wal_records(&bytes).iter().map(|r| r.0).collect();
    assert!(offsets.len() >= lines.len(), "{} records", offsets.len());
    // Dozens of valid records follow it: corruption, not a torn tail.
    let victim = offsets[10];
    let payload_len = offsets[11] - victim - 16;
    bytes[victim + 16 + payload_len / 2] ^= 0x01;
    std::fs::write(&seg, &bytes).unwrap();
    (seg, bytes, victim)
}

#[test]
fn check_reports_a_damaged_early_wal_record_and_repair_cuts_the_log_there() {
    let Some(mut d) = Daemon::builder().config(NO_COMMITS).start() else {
        return;
    };
    let lines = addrs(0, 60);
    let (seg, bytes, victim) = damage_an_early_record(&mut d, &lines);

    let (ok, text) = check(&d.data(), false);
    assert!(!ok, "check of a damaged log succeeded: {text}");
    assert!(
        text.contains(&seg.display().to_string()) && text.contains(&format!("offset {victim}")),
        "check does not name {} at offset {victim}: {text}",
        seg.display()
    );

    let (ok, text) = check(&d.data(), true);
    assert!(ok, "check --repair: {text}");
    assert!(text.contains("clean"), "{text}");
    let kept = lost_found(&d.data());
    let cut = kept
        .iter()
        .find(|(_, b)| b.as_slice() == &bytes[victim..])
        .unwrap_or_else(|| {
            panic!(
                "no file in lost+found holds the {} bytes cut at {victim}: {:?}",
                bytes.len() - victim,
                names(&kept)
            )
        });
    assert!(cut.0.contains(&format!("cut-at-{victim}")), "{}", cut.0);

    d.restart();
    assert_eq!(d.read(".iocfs/health"), "ok\n");
    let got = d.lines("live/ipv4.txt");
    assert!(
        got.len() < lines.len() && got == lines[..got.len()],
        "after repair the log holds the records before the damage: {got:?}"
    );
    d.append_lines("live/ipv4.txt", &["203.0.113.1"]);
    assert_eq!(d.lines("live/ipv4.txt").last().unwrap(), "203.0.113.1");
}

#[test]
fn mount_refuses_a_damaged_log_naming_the_file_the_offset_and_the_repair() {
    let Some(mut d) = Daemon::builder().config(NO_COMMITS).start() else {
        return;
    };
    let (seg, _, victim) = damage_an_early_record(&mut d, &addrs(0, 60));
    let err_path = d.root().join("refused.log");
    let mut child = d
        .command(&d.mnt())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let status = wait_timeout(&mut child, READY_TIMEOUT);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
        common::detach(&d.mnt());
    }
    let stderr = std::fs::read_to_string(&err_path).unwrap();
    let status = status.unwrap_or_else(|| panic!("iocfs mounted a damaged log: {stderr}"));
    assert!(!status.success(), "{status}: {stderr}");
    assert!(
        !common::is_mounted(&d.mnt()),
        "a refused start left a mount"
    );
    assert!(
        stderr.contains(&seg.display().to_string()) && stderr.contains(&format!("offset {victim}")),
        "the refusal does not name {} at offset {victim}: {stderr}",
        seg.display()
    );
    // DESIGN §4: "... refuses to mount with a message that names the file and offset and
    // points to `iocfs check --repair`".
    assert!(
        stderr.contains("iocfs check --repair"),
        "the refusal does not point to `iocfs check --repair`: {stderr}"
    );
}

fn gzip(path: &Path, text: &str) {
    let mut enc =
        flate2::write::GzEncoder::new(File::create(path).unwrap(), flate2::Compression::default());
    enc.write_all(text.as_bytes()).unwrap();
    enc.finish().unwrap();
}

#[test]
fn import_adopts_a_tinycti_folder() {
    // Mount once to get a data dir and mount point, stop, import offline, mount again.
    let Some(mut d) = Daemon::builder()
        .config("[aging]\ninterval = \"1h\"\n")
        .start()
    else {
        return;
    };
    assert!(d.stop().success());
    let src = d.root().join("tinycti");
    for b in common::BUCKETS {
        std::fs::create_dir_all(src.join(b)).unwrap();
    }
    let h = |c: char| c.to_string().repeat(64);
    std::fs::write(
        src.join("live/malicious-ips.txt"),
        "1.1.1.1\n# a comment\nnot-an-ip\n2.2.2.2\n1.1.1.1\n  3.3.3.3  \n",
    )
    .unwrap();
    std::fs::write(src.join("live/sha256.txt"), format!("{}\n", h('a'))).unwrap();
    std::fs::write(src.join("live/notes.txt"), "remember the milk\n").unwrap();
    gzip(
        &src.join("chaud/domain.txt.gz"),
        "Evil.Example.\nbad.example\nevil.example\n",
    );
    std::fs::write(
        src.join("tiede/malicious-urls.txt"),
        "HTTP://Phish.Example/login\nhttps://x.example/a?b=c\n",
    )
    .unwrap();
    // a… is in live too: it stays only there.
    std::fs::write(
        src.join("froid/sha256.txt"),
        format!("{}\n{}\n{}\n", h('b'), h('A'), h('c')),
    )
    .unwrap();

    let config = d.config_path().to_path_buf();
    let (ok, text) = iocfs(&[
        Path::new("import"),
        Path::new("--config"),
        &config,
        Path::new("--data"),
        &d.data(),
        &src,
    ]);
    assert!(ok, "import: {text}");
    let ips = src.join("live/malicious-ips.txt");
    assert!(
        text.contains(&format!("{}:3", ips.display())) && text.contains("not-an-ip"),
        "the invalid line is not reported as file:line: {text}"
    );
    let notes = src.join("live/notes.txt");
    assert!(
        text.lines()
            .any(|l| l.contains(&notes.display().to_string())
                && l.contains("maps to no indicator type")),
        "notes.txt is not reported: {text}"
    );

    d.restart();
    assert_eq!(d.read(".iocfs/health"), "ok\n");
    assert_eq!(d.lines("live/ipv4.txt"), ["1.1.1.1", "2.2.2.2", "3.3.3.3"]);
    assert_eq!(d.lines("live/sha256.txt"), [h('a')]);
    // Tier order is not specified: compare sorted.
    let sorted = |rel: &str| {
        let mut v = d.lines(rel);
        v.sort();
        v
    };
    assert_eq!(sorted("froid/sha256.txt"), [h('b'), h('c')]);
    assert_eq!(sorted("chaud/domain.txt"), ["bad.example", "evil.example"]);
    assert_eq!(
        sorted("tiede/url.txt"),
        ["http://phish.example/login", "https://x.example/a?b=c"]
    );
    // Nothing else anywhere; no file named after notes.txt.
    let mut total = 0;
    for b in common::BUCKETS {
        for f in common::TYPE_FILES {
            total += d.lines(&format!("{b}/{f}")).len();
        }
    }
    assert_eq!(total, 10, "indicators served in all");
    assert!(!d.path("live/notes.txt").exists());
    let st: serde_json::Value = serde_json::from_str(&d.read(".iocfs/stats.json")).unwrap();
    for (b, n) in [("live", 4), ("chaud", 2), ("tiede", 2), ("froid", 2)] {
        assert_eq!(st["buckets"][b]["total"]["lines"], n, "stats.json {b}");
    }
}

#[test]
fn stats_prints_a_table_and_json() {
    let Some(d) = Daemon::start() else { return };
    d.append_lines("live/ipv4.txt", &["1.1.1.1", "2.2.2.2", "3.3.3.3"]);
    d.append_lines("live/domain.txt", &["a.example", "b.example"]);
    d.append_lines("allow/domain.txt", &["ok.example"]);
    let (ok, text) = iocfs(&[Path::new("stats"), &d.mnt()]);
    assert!(ok, "iocfs stats: {text}");
    let row = |name: &str| -> Vec<String> {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no {name} row in:\n{text}"))
            .split_whitespace()
            .map(String::from)
            .collect()
    };
    assert_eq!(
        row("type"),
        ["type", "live", "chaud", "tiede", "froid", "allow"]
    );
    assert_eq!(row("ipv4"), ["ipv4", "3", "0", "0", "0", "0"]);
    assert_eq!(row("domain"), ["domain", "2", "0", "0", "0", "1"]);
    assert_eq!(row("total"), ["total", "5", "0", "0", "0", "1"]);

    let (ok, json) = iocfs(&[Path::new("stats"), Path::new("--json"), &d.mnt()]);
    assert!(ok, "iocfs stats --json: {json}");
    let v: serde_json::Value =
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("stats --json: {e}: {json}"));
    assert_eq!(v["buckets"]["live"]["ipv4"]["lines"], 3, "{json}");
    assert_eq!(v["buckets"]["live"]["total"]["lines"], 5, "{json}");
    assert_eq!(v["allow"]["domain"]["lines"], 1, "{json}");

    let (ok, text) = iocfs(&[Path::new("stats"), &d.root().join("data")]);
    assert!(
        !ok,
        "iocfs stats on a directory that is not a mount: {text}"
    );
}

fn aging_last(d: &Daemon) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(&d.read(".iocfs/stats.json")).unwrap();
    v["aging"]["last"].clone()
}

#[test]
fn a_non_root_user_cannot_write_ctl() {
    for allow_other in [false, true] {
        let Some(d) = Daemon::builder()
            .config(&format!(
                "[aging]\ninterval = \"1h\"\n[mount]\nallow_other = {allow_other}\n"
            ))
            .start()
        else {
            return;
        };
        let ctx = format!("allow_other = {allow_other}");
        assert!(aging_last(&d).is_null(), "{ctx}: aged before the test");
        let ctl = d.path(".iocfs/ctl");
        if allow_other {
            // Let nobody reach the mount point: then only ctl's own permission stops it.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(d.root(), std::fs::Permissions::from_mode(0o755)).unwrap();
            let (ok, err) = as_nobody(&format!(
                "cat {} >/dev/null",
                d.path(".iocfs/health").display()
            ));
            assert!(ok, "{ctx}: nobody cannot read health: {err}");
        }
        let (ok, err) = as_nobody(&format!("echo age > {}", ctl.display()));
        assert!(!ok, "{ctx}: nobody wrote ctl");
        assert!(
            err.contains("Permission denied"),
            "{ctx}: not a permission error: {err}"
        );
        assert!(
            aging_last(&d).is_null(),
            "{ctx}: aging ran: {}",
            aging_last(&d)
        );
        // Root can.
        d.ctl("age").expect("root writes ctl");
        assert!(aging_last(&d).is_object(), "{ctx}: root's age did not run");
    }
}
