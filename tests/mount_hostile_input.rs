//! Mounted test: a corpus of hostile input against the live files (DESIGN §3).
//!
//! Every rejected write must fail with EINVAL and apply nothing: the content of all 36
//! bucket files stays byte-identical, the valid lines written next to the bad one are not
//! stored (lookup/ says ENOENT), the rejection is logged once per bad line with its file,
//! line number and an escaped excerpt, and `rejected_lines` in stats.json counts it.
//! Input the docs say is accepted (`\r\n`, blank and comment lines, surrounding
//! whitespace, shell metacharacters where the type allows them) must be stored exactly as
//! documented. Scratch-file names must not reach outside live/, and names longer than
//! NAME_MAX (255) fail with ENAMETOOLONG.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod aging;
mod common;
mod hostile_input;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;

use common::{errno_of, Daemon, TYPE_FILES};
use hostile_input::*;

/// The excerpt format the daemon logs (README: "an escaped excerpt"): printable ASCII
/// as is with `\` doubled, every other byte `\xNN`, cut to 80 characters with `...`.
fn escape(raw: &[u8]) -> String {
    let pieces: Vec<String> = (raw.iter())
        .map(|&b| match b {
            b'\\' => "\\\\".to_string(),
            0x20..=0x7e => char::from(b).to_string(),
            _ => format!("\\x{b:02x}"),
        })
        .collect();
    if pieces.concat().len() <= 80 {
        return pieces.concat();
    }
    let mut s = String::new();
    for p in &pieces {
        if s.len() + p.len() > 77 {
            break;
        }
        s.push_str(p);
    }
    s + "..."
}

/// A valid, never-used value of each type (the `i`th), to surround bad lines with.
fn fresh(file: &str, i: u64) -> String {
    match file {
        "ipv4.txt" => format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255),
        "ipv6.txt" => format!("2001:db8:1::{:x}", i & 0xffff),
        "domain.txt" => format!("ok{i}.example.com"),
        "url.txt" => format!("http://ok{i}.example.com/p"),
        "email.txt" => format!("ok{i}@example.com"),
        "md5.txt" => format!("{i:032x}"),
        "sha1.txt" => format!("{i:040x}"),
        "sha256.txt" => format!("{i:064x}"),
        "sha512.txt" => format!("{i:0128x}"),
        _ => panic!("not a type file: {file}"),
    }
}

fn ty(file: &str) -> &str {
    file.strip_suffix(".txt").unwrap()
}

/// What a rejection is compared against.
struct Before {
    files: BTreeMap<String, Vec<u8>>,
    counters: serde_json::Value,
    log_len: usize,
}

struct Run {
    d: Daemon,
    cases: u64,
    rejected: u64,
    accepted: u64,
    next: u64,
    /// Rejections logged by the current daemon process (see LOG_BUDGET).
    logged: u64,
}

impl Run {
    /// All 36 files, byte for byte.
    fn stored(&self) -> BTreeMap<String, Vec<u8>> {
        aging::snapshot(&self.d)
    }

    fn rejected_counters(&self) -> serde_json::Value {
        aging::stats(&self.d)["rejected_lines"].clone()
    }

    fn log_bytes(&self) -> Vec<u8> {
        std::fs::read(self.d.log_path()).unwrap_or_default()
    }

    fn before(&self) -> Before {
        Before {
            files: self.stored(),
            counters: self.rejected_counters(),
            log_len: self.log_bytes().len(),
        }
    }

    fn fresh(&mut self, file: &str) -> String {
        self.next += 1;
        fresh(file, self.next)
    }

    fn is_stored(&self, value: &str) -> bool {
        let name = aging::lookup_name(value);
        self.d.path(&format!(".iocfs/lookup/{name}")).exists()
    }

    /// What a rejection must leave behind: the same files, no valid neighbour stored, one
    /// clean log line per bad line, the counters up by the number of bad lines.
    fn rejected(
        &mut self,
        what: &str,
        file: &str,
        action: &str,
        b: Before,
        nb: &[String],
        bad: &[Bad],
    ) {
        let after = self.stored();
        for (rel, bytes) in &b.files {
            // (The harness prints the daemon log when a test fails.)
            assert!(after[rel] == *bytes, "{what}: {rel} changed");
        }
        for v in nb {
            assert!(!self.is_stored(v), "{what}: {v} was stored");
        }
        let n = bad.len() as u64;
        let now = self.rejected_counters();
        for key in [ty(file), "total"] {
            let want = b.counters[key].as_u64().map(|c| c + n);
            assert_eq!(now[key].as_u64(), want, "{what}: rejected_lines.{key}");
        }
        // Escaped means one printable line per record: no raw control byte, no byte that
        // is not ASCII, no line a hostile value could forge.
        let log = self.log_bytes();
        let new = &log[b.log_len..];
        for l in new.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let clean = l.starts_with(b"[") && l.iter().all(|b| (0x20..0x7f).contains(b));
            let l = String::from_utf8_lossy(l);
            assert!(clean, "{what}: unescaped log output: {l:?}");
        }
        let new = String::from_utf8_lossy(new);
        let lines: Vec<&str> = new.lines().filter(|l| l.contains(action)).collect();
        assert_eq!(lines.len(), bad.len(), "{what}: log lines {lines:#?}");
        for (no, raw, reason) in bad {
            let (path, at) = (format!("live/{file}"), format!(" line {no}: "));
            let excerpt = format!("\"{}\"", escape(raw));
            let found = (lines.iter()).any(|l| {
                l.contains(&path) && l.contains(&at) && l.contains(reason) && l.ends_with(&excerpt)
            });
            assert!(
                found,
                "{what}: no log of {path},{at}{reason:?}, {excerpt}: {lines:#?}"
            );
        }
        self.logged += n;
        assert!(
            self.logged < LOG_BUDGET,
            "the corpus outgrew one log budget"
        );
        self.rejected += 1;
    }

    /// One write() of `data` to live/`file` must fail with EINVAL and change nothing.
    fn reject_write(&mut self, what: &str, file: &str, data: &[u8], nb: &[String], bad: &[Bad]) {
        self.cases += 1;
        let b = self.before();
        let path = self.d.path(&format!("live/{file}"));
        let mut f = OpenOptions::new().append(true).open(path).unwrap();
        // One write() call: it fails whole, never short.
        assert_eq!(errno_of(f.write(data)), libc::EINVAL, "{what}");
        drop(f);
        self.rejected(what, file, "rejected write to", b, nb, bad);
    }

    /// `good \n bad \n good \n` in one write: EINVAL, line 2 logged, neither good stored.
    fn reject_line(&mut self, what: &str, file: &str, bad: &[u8], reason: &str) {
        let (a, b) = (self.fresh(file), self.fresh(file));
        let data = [a.as_bytes(), b"\n", bad, b"\n", b.as_bytes(), b"\n"].concat();
        self.reject_write(what, file, &data, &[a, b], &[(2, bad, reason)]);
    }

    /// A shell command that must fail and change nothing; `bad` are its rejected lines.
    fn reject_sh(
        &mut self,
        what: &str,
        cmd: &str,
        file: &str,
        action: &str,
        bad: &[Bad],
    ) -> String {
        self.cases += 1;
        let b = self.before();
        let out = self.d.sh(cmd);
        assert!(!out.status.success(), "{what}: `{cmd}` succeeded");
        self.rejected(what, file, action, b, &[], bad);
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// One write() of `data` succeeds and appends exactly `added` to live/`file`.
    fn accept(&mut self, what: &str, file: &str, data: &[u8], added: &[&str]) {
        self.cases += 1;
        let (mut want, counters) = (self.stored(), self.rejected_counters());
        let rel = format!("live/{file}");
        let mut f = OpenOptions::new()
            .append(true)
            .open(self.d.path(&rel))
            .unwrap();
        let n = f.write(data).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(n, data.len(), "{what}: short write");
        drop(f);
        for v in added {
            want.get_mut(&rel)
                .unwrap()
                .extend_from_slice(format!("{v}\n").as_bytes());
        }
        let got = self.stored();
        for (rel, bytes) in &want {
            let (g, w) = (
                String::from_utf8_lossy(&got[rel]),
                String::from_utf8_lossy(bytes),
            );
            assert!(got[rel] == *bytes, "{what}: {rel} is {g:?}, expected {w:?}");
        }
        assert_eq!(
            self.rejected_counters(),
            counters,
            "{what}: counted as rejected"
        );
        self.accepted += 1;
    }

    /// Stop (SIGTERM) and start again: the stored set must come back identical, so no
    /// part of a rejected write reached the log. The log budget starts afresh.
    fn restart(&mut self) {
        let before = self.stored();
        assert!(self.d.stop().success(), "iocfs did not exit 0 on SIGTERM");
        self.d.restart();
        assert!(
            self.stored() == before,
            "the stored set changed across a restart"
        );
        self.logged = 0;
    }
}

#[test]
fn hostile_input_is_rejected_whole_and_changes_nothing() {
    let Some(d) = Daemon::start() else { return };
    let mut r = Run {
        d,
        cases: 0,
        rejected: 0,
        accepted: 0,
        next: 0,
        logged: 0,
    };
    // Something stored in every live file, so "unchanged" is not just "still empty".
    for (file, _) in SAMPLES {
        let v = r.fresh(file);
        r.d.append_lines(&format!("live/{file}"), &[v]);
    }

    for (what, file, bad, reason) in MALFORMED {
        r.reject_line(what, file, bad, reason);
    }
    // A 1 MiB line: refused as soon as it can't end within 4096 bytes (the kernel hands
    // a write over in requests of up to 1 MiB; the first one already fails).
    let nb = [r.fresh("domain.txt")];
    let data = [format!("{}\n", nb[0]).as_bytes(), &[b'a'; 1 << 20], b"\n"].concat();
    let bad: &[Bad] = &[(2, &[b'a'; 200], LONG)]; // the excerpt shows only the start
    r.reject_write("1 MiB line", "domain.txt", &data, &nb, bad);
    // Two bad lines among good ones: each logged with its own line number.
    let nb: Vec<String> = (0..3).map(|_| r.fresh("ipv4.txt")).collect();
    let data = format!("{}\n203.0.113.300\n{}\n\x07\n{}\n", nb[0], nb[1], nb[2]);
    let bad: &[Bad] = &[(2, b"203.0.113.300", ""), (4, b"\x07", CTRL)];
    r.reject_write("two bad lines", "ipv4.txt", data.as_bytes(), &nb, bad);
    // A line split over two writes: the write completing it badly fails alone; the partial
    // line stays and a good completion still stores it.
    r.cases += 1;
    let path = r.d.path("live/domain.txt");
    let mut f = OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(b"split-evil.exa").unwrap();
    let b = r.before();
    assert_eq!(errno_of(f.write(b"mple.com\x1b[0m\n")), libc::EINVAL);
    let bad: &[Bad] = &[(1, b"split-evil.example.com\x1b[0m", CTRL)];
    r.rejected("split line", "domain.txt", "rejected write to", b, &[], bad);
    f.write_all(b"mple.com\n").unwrap();
    drop(f);
    assert!(r.is_stored("split-evil.example.com"));

    for (what, file, data, added) in ACCEPTED {
        r.accept(what, file, data, added);
    }
    // The longest line there is (4096 bytes, counted without the `\r`).
    let max = format!("http://max.example.com/{}", "m".repeat(4096 - 23));
    assert_eq!(max.len(), 4096);
    r.accept(
        "4096 bytes",
        "url.txt",
        format!("{max}\r\n").as_bytes(),
        &[&max],
    );

    // Every type written to every other type's file (README: "a domain in ipv4.txt").
    r.restart();
    for (file, _) in SAMPLES {
        for (other, sample) in SAMPLES.iter().filter(|(o, _)| *o != file) {
            let reason = format!("{} indicator, not {}", ty(other), ty(file));
            let what = format!("{} in {file}", ty(other));
            r.reject_line(&what, file, sample.as_bytes(), &reason);
        }
    }

    // Real tools: the command fails (non-zero exit), nothing changes.
    r.restart();
    for (what, cmd, file, bad, names_errno) in SHELL {
        let stderr = r.reject_sh(what, cmd, file, "rejected write to", &[*bad]);
        if *names_errno {
            assert!(stderr.contains("Invalid argument"), "{what}: {stderr}");
        }
    }
    // sed -i writes a scratch file and renames it onto the type file: EINVAL at the
    // rename, each line of the edited copy logged.
    let lines = r.d.lines("live/domain.txt");
    let edited: Vec<String> = lines.iter().map(|l| format!("{l} $(reboot)")).collect();
    let bad: Vec<Bad> = (edited.iter().zip(1..))
        .map(|(l, no)| (no, l.as_bytes(), WS))
        .collect();
    let sed = "sed -i 's/$/ $(reboot)/' live/domain.txt";
    r.reject_sh("sed -i", sed, "domain.txt", "rejected rename of", &bad);
    r.d.sh_ok("rm -f live/sed*");

    scratch_files(&mut r);

    // A flood of bad lines in one write: all counted, the log kept within its budget.
    r.cases += 1;
    let flood: String = (0..5000).map(|i| format!("bad-{i}\n")).collect();
    let counters = r.rejected_counters();
    let mut f = OpenOptions::new()
        .append(true)
        .open(r.d.path("live/domain.txt"))
        .unwrap();
    assert_eq!(errno_of(f.write(flood.as_bytes())), libc::EINVAL);
    drop(f);
    let want = counters["domain"].as_u64().map(|n| n + 5000);
    assert_eq!(r.rejected_counters()["domain"].as_u64(), want);
    r.rejected += 1;
    r.restart();
    let log = r.d.log();
    let flood_life = log.rsplit("===== test harness: start").nth(1).unwrap();
    let logged = flood_life.matches("rejected ").count() as u64;
    assert!(
        logged <= LOG_BUDGET,
        "{logged} rejections logged within a minute"
    );

    eprintln!(
        "hostile input: {} cases, {} rejected with the right errno, {} accepted as documented, \
         stored set unchanged",
        r.cases, r.rejected, r.accepted
    );
}

/// Scratch files: odd names stay names inside live/, NAME_MAX holds, and renaming one
/// with hostile content onto a type file is EINVAL at the rename.
fn scratch_files(r: &mut Run) {
    let live = r.d.path("live");
    let path = |name: &[u8]| live.join(OsStr::from_bytes(name));
    #[rustfmt::skip]
    let names: &[&[u8]] = &[b"..%2F..%2Fetc%2Fpasswd", b"a..b", b"...", b"..\x01\x1b[2J",
        b"evil\nname", b"IPV4.TXT", b"ipv4.txt ", &[b'n'; 255]];
    for name in names {
        r.cases += 1;
        let res = std::fs::write(path(name), b"203.0.113.30\n");
        res.unwrap_or_else(|e| panic!("create {name:?}: {e}"));
        assert_eq!(std::fs::read(path(name)).unwrap(), b"203.0.113.30\n");
        r.accepted += 1;
    }
    let mut listed: Vec<Vec<u8>> = (std::fs::read_dir(&live).unwrap())
        .map(|e| e.unwrap().file_name().as_bytes().to_vec())
        .collect();
    listed.sort();
    let mut want: Vec<Vec<u8>> = (TYPE_FILES.iter().map(|f| f.as_bytes()))
        .chain(names.iter().copied())
        .map(<[u8]>::to_vec)
        .collect();
    want.sort();
    assert_eq!(
        listed, want,
        "live/ lists the nine files and the scratch files"
    );
    let mut root: Vec<_> = (std::fs::read_dir(r.d.mnt()).unwrap())
        .map(|e| e.unwrap().file_name())
        .collect();
    root.sort();
    assert_eq!(
        root,
        [".iocfs", "allow", "chaud", "froid", "live", "sources", "tiede", "views"]
    );
    // Scratch files are held in memory: none of their names is on disk, none was decoded
    // into a path.
    for p in walk(&r.d.data()) {
        let leaf = p.rsplit('/').next().unwrap().as_bytes();
        assert!(!names.contains(&leaf), "{p} on disk");
    }
    for dir in [r.d.root(), &r.d.data()] {
        assert!(!dir.join("etc").exists(), "{}/etc exists", dir.display());
    }
    for name in names {
        std::fs::remove_file(path(name)).unwrap();
    }

    // Refused names: `..` is resolved by the kernel (live/../x is the root, which takes no
    // files); more than NAME_MAX (255, as statfs says) is ENAMETOOLONG, as elsewhere.
    std::fs::write(live.join("s"), b"203.0.113.41\n").unwrap();
    let long = |n| live.join("n".repeat(n));
    #[rustfmt::skip]
    let refused = [
        ("create live/../x", std::fs::write(live.join("../x"), b"x\n"), libc::EPERM),
        ("create chaud/x", std::fs::write(live.join("../chaud/x"), b"x\n"), libc::EROFS),
        ("create, 256 bytes", std::fs::write(long(256), b"x\n"), libc::ENAMETOOLONG),
        ("create, 1000 bytes", std::fs::write(long(1000), b"x\n"), libc::ENAMETOOLONG),
        ("stat, 256 bytes", std::fs::metadata(long(256)).map(drop), libc::ENAMETOOLONG),
        ("rename to 256 bytes", std::fs::rename(live.join("s"), long(256)), libc::ENAMETOOLONG),
        ("rename into a tier", std::fs::rename(live.join("s"), r.d.path("chaud/ipv4.txt")), libc::EROFS),
        ("rename into the root", std::fs::rename(live.join("s"), live.join("../ipv4.txt")), libc::EPERM),
    ];
    for (what, res, errno) in refused {
        r.cases += 1;
        assert_eq!(errno_of(res), errno, "{what}");
        r.rejected += 1;
    }
    std::fs::remove_file(live.join("s")).unwrap();

    // Hostile content renamed onto a type file: EINVAL, set unchanged, scratch kept.
    let a = r.fresh("ipv4.txt");
    let big = [a.as_bytes(), b"\n", &[b'9'; 1 << 20], b"\n"].concat();
    let big_start = &big[a.len() + 1..a.len() + 200];
    #[rustfmt::skip]
    let contents: &[(&[u8], &str, Bad)] = &[
        (b"203.0.113.40\n\0\n", "NUL", (2, b"\0", NUL)),
        (b"203.0.113.40\n\xc3\x28\n", "invalid UTF-8", (2, b"\xc3\x28", UTF8)),
        (&big, "1 MiB line", (2, big_start, LONG)),
        (b"203.0.113.40\nevil.example.com\n", "wrong type", (2, b"evil.example.com", "domain indicator, not ipv4")),
    ];
    for (i, (content, what, bad)) in contents.iter().enumerate() {
        // The name is hostile too: the log must not let it forge or garble a line.
        let name = format!("tmp{i}\n[2099-01-01T00:00:00Z INFO  iocfs] forged\x1b[2J");
        let scratch = live.join(&name);
        std::fs::write(&scratch, content).unwrap();
        r.cases += 1;
        let b = r.before();
        let res = std::fs::rename(&scratch, live.join("ipv4.txt"));
        assert_eq!(errno_of(res), libc::EINVAL, "rename of {what}");
        let nb = [a.clone()];
        r.rejected(what, "ipv4.txt", "rejected rename of", b, &nb, &[*bad]);
        assert_eq!(std::fs::read(&scratch).unwrap(), *content, "scratch kept");
        std::fs::remove_file(&scratch).unwrap();
    }
}

/// Every path under `dir`, relative to it.
fn walk(dir: &std::path::Path) -> Vec<String> {
    let (mut out, mut todo) = (Vec::new(), vec![dir.to_path_buf()]);
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            out.push(p.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
            if e.file_type().unwrap().is_dir() {
                todo.push(p);
            }
        }
    }
    out
}
