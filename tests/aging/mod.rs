//! Helpers shared by the aging tests (`--features testing`): a daemon on a manual clock,
//! full scans of the 36 bucket files, lookups and stats.json.

// Each test file is its own crate and uses a different part of this module.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, UNIX_EPOCH};

use crate::common::{errno_of, split_lines, Daemon, BUCKETS, TYPE_FILES};

/// The manual clock's start: 2023-11-14T22:13:20Z.
pub const T0: u64 = 1_700_000_000;
pub const HOUR: u64 = 3600;
pub const DAY: u64 = 24 * HOUR;

/// Default retention (DESIGN §2), ages since the last sighting.
pub const LIVE_TO_CHAUD: u64 = DAY;
pub const CHAUD_TO_TIEDE: u64 = 7 * DAY;
pub const TIEDE_TO_FROID: u64 = 30 * DAY;
pub const FROID_RETENTION: u64 = 365 * DAY;

/// The bucket an indicator last seen at `last_seen` belongs in at `now`; None once dropped.
pub fn bucket_for(now: u64, last_seen: u64) -> Option<&'static str> {
    let age = now.saturating_sub(last_seen);
    if age < LIVE_TO_CHAUD {
        Some("live")
    } else if age < CHAUD_TO_TIEDE {
        Some("chaud")
    } else if age < TIEDE_TO_FROID {
        Some("tiede")
    } else if age < FROID_RETENTION {
        Some("froid")
    } else {
        None
    }
}

/// live 0, chaud 1, tiede 2, froid 3 (dropped would be 4).
pub fn rank(bucket: &str) -> usize {
    BUCKETS
        .iter()
        .position(|b| *b == bucket)
        .unwrap_or_else(|| panic!("not a bucket: {bucket}"))
}

/// Config TOML with the background aging thread out of the way (it would age on the
/// manual clock at random moments); `extra` is more TOML without an `[aging]` table.
pub fn config(extra: &str) -> String {
    format!("[aging]\ninterval = \"1h\"\n\n{extra}\n")
}

/// A daemon on a manual clock starting at `t`.
pub fn start_at(t: u64, extra_config: &str) -> Option<Daemon> {
    Daemon::builder()
        .arg("--manual-clock")
        .arg(t.to_string())
        .config(&config(extra_config))
        .start()
}

/// Restart (after `stop` or `kill9`) with the manual clock at `t`.
pub fn restart_at(d: &mut Daemon, t: u64) {
    d.set_args(["--manual-clock".to_string(), t.to_string()]);
    d.restart();
}

pub fn ctl_ok(d: &Daemon, cmd: &str) {
    d.ctl(cmd)
        .unwrap_or_else(|e| panic!("ctl {cmd}: {e}\ndaemon log:\n{}", d.log()));
}

/// Set the manual clock to `t` (absolute).
pub fn set_clock(d: &Daemon, t: u64) {
    ctl_ok(d, &format!("clock {t}"));
}

/// Set the clock to `t` and run one aging step.
pub fn age_at(d: &Daemon, t: u64) {
    set_clock(d, t);
    ctl_ok(d, "age");
}

/// Append all `lines` to `rel` (under the mount) through one append handle, in writes of
/// whole lines up to 256 KiB (one fsync per write instead of one per line).
///
/// Whole lines per write() matter: the kernel cuts a larger write into several FUSE
/// requests, and a close() of any duplicate of the descriptor in between (e.g. a child
/// process another test thread spawns inherits it until exec) sends a FLUSH that ends the
/// handle's partial line early — see tests/mount_partial_lines.rs.
pub fn append_all<S: AsRef<str>>(d: &Daemon, rel: &str, lines: &[S]) {
    let mut f = OpenOptions::new()
        .append(true)
        .open(d.path(rel))
        .unwrap_or_else(|e| panic!("open {rel} for append: {e}"));
    let mut buf = String::new();
    let mut flush = |buf: &mut String| {
        f.write_all(buf.as_bytes())
            .unwrap_or_else(|e| panic!("append {} lines to {rel}: {e}", lines.len()));
        buf.clear();
    };
    for l in lines {
        buf.push_str(l.as_ref());
        buf.push('\n');
        if buf.len() >= 256 * 1024 {
            flush(&mut buf);
        }
    }
    if !buf.is_empty() {
        flush(&mut buf);
    }
}

/// RFC 3339 (seconds, `Z`) as lookup/ prints it.
pub fn rfc3339(t: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(t)).to_string()
}

/// Every line of every bucket file, and where each value is.
pub struct Scan {
    /// (bucket, file name) → lines.
    pub files: BTreeMap<(&'static str, &'static str), Vec<String>>,
    /// value → every (bucket, file name) holding it (once per occurrence).
    pub places: BTreeMap<String, Vec<(&'static str, &'static str)>>,
}

impl Scan {
    /// value → its bucket; panics if a value is in two buckets, twice in one file, or in
    /// two files.
    pub fn single(&self, ctx: &str) -> BTreeMap<String, &'static str> {
        let multi: Vec<_> = self
            .places
            .iter()
            .filter(|(_, p)| p.len() > 1)
            .take(10)
            .collect();
        assert!(
            multi.is_empty(),
            "{ctx}: indicators in more than one place: {multi:?}"
        );
        self.places
            .iter()
            .map(|(v, p)| (v.clone(), p[0].0))
            .collect()
    }

    pub fn lines(&self, bucket: &str, file: &str) -> &[String] {
        self.files
            .iter()
            .find(|((b, f), _)| *b == bucket && *f == file)
            .map(|(_, l)| l.as_slice())
            .unwrap_or_else(|| panic!("no {bucket}/{file} in the scan"))
    }
}

/// Read all 36 files through the mount.
pub fn scan(d: &Daemon) -> Scan {
    let mut files = BTreeMap::new();
    let mut places: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for b in BUCKETS {
        for f in TYPE_FILES {
            let lines = d.lines(&format!("{b}/{f}"));
            for l in &lines {
                places.entry(l.clone()).or_default().push((b, f));
            }
            files.insert((b, f), lines);
        }
    }
    Scan { files, places }
}

/// The name of `value` under `.iocfs/lookup/` ('%' and '/' percent-encoded).
pub fn lookup_name(value: &str) -> String {
    value.replace('%', "%25").replace('/', "%2F")
}

/// `.iocfs/lookup/VALUE` parsed, or None if it does not exist (ENOENT).
pub fn lookup(d: &Daemon, value: &str) -> Option<serde_json::Value> {
    let name = lookup_name(value);
    let path = d.path(&format!(".iocfs/lookup/{name}"));
    match std::fs::read_to_string(&path) {
        Ok(text) => Some(
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("lookup/{name}: {e}: {text:?}")),
        ),
        Err(e) => {
            assert_eq!(
                errno_of::<()>(Err(e)),
                libc::ENOENT,
                "lookup/{name}: expected ENOENT"
            );
            None
        }
    }
}

/// The bucket lookup/ reports for `value`, None if it is not stored.
pub fn lookup_bucket(d: &Daemon, value: &str) -> Option<String> {
    lookup(d, value).map(|v| {
        v["bucket"]
            .as_str()
            .unwrap_or_else(|| panic!("lookup {value}: no bucket in {v}"))
            .to_string()
    })
}

pub fn stats(d: &Daemon) -> serde_json::Value {
    let text = d.read(".iocfs/stats.json");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("stats.json: {e}: {text}"))
}

/// `buckets.<bucket>.<type>.lines` of stats.json.
pub fn stat_lines(stats: &serde_json::Value, bucket: &str, ty: &str) -> u64 {
    stats["buckets"][bucket][ty]["lines"]
        .as_u64()
        .unwrap_or_else(|| panic!("stats.json has no buckets.{bucket}.{ty}.lines: {stats}"))
}

/// Content of every file of the mount's four buckets, for before/after comparisons.
pub fn snapshot(d: &Daemon) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for b in BUCKETS {
        for f in TYPE_FILES {
            let rel = format!("{b}/{f}");
            let bytes = std::fs::read(d.path(&rel))
                .unwrap_or_else(|e| panic!("read {rel}: {e}\ndaemon log:\n{}", d.log()));
            out.insert(rel, bytes);
        }
    }
    out
}

/// Assert two snapshots are equal, naming the first differing file.
pub fn assert_same(a: &BTreeMap<String, Vec<u8>>, b: &BTreeMap<String, Vec<u8>>, ctx: &str) {
    for (rel, bytes) in a {
        let other = &b[rel];
        if bytes != other {
            let (x, y) = (
                split_lines(&String::from_utf8_lossy(bytes), rel),
                split_lines(&String::from_utf8_lossy(other), rel),
            );
            panic!(
                "{ctx}: {rel} differs: {} lines before, {} after; first before {:?}, first after {:?}",
                x.len(),
                y.len(),
                x.first(),
                y.first()
            );
        }
    }
}

/// Open a tier file with O_DIRECT: served from its blocks, every read reaches the daemon
/// (unless passthrough readers hold the file: then it joins them).
pub fn open_direct(d: &Daemon, rel: &str) -> File {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(d.path(rel))
        .unwrap_or_else(|e| panic!("open {rel} O_DIRECT: {e}"))
}

/// No background aging, commits or checkpoints: the test decides when they happen.
pub const QUIET: &str = "[aging]\ninterval = \"3650d\"\n\
    [durability]\ncommit_interval = \"3650d\"\ncheckpoint_interval = \"3650d\"\n";

/// The `n`th address of 10.0.0.0/8.
pub fn ipv4(n: u32) -> String {
    format!("10.{}.{}.{}", (n >> 16) & 255, (n >> 8) & 255, n & 255)
}

/// Indicators of four types spread over the three tiers.
pub fn fill_tiers(d: &Daemon) {
    let ips: Vec<String> = (0..3000)
        .map(|i| format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256))
        .collect();
    let domains: Vec<String> = (0..3000)
        .map(|i| format!("host{i}.tiers.example"))
        .collect();
    let urls: Vec<String> = (0..1500)
        .map(|i| format!("https://u{i}.example/path/{i}?q={}", i * 7))
        .collect();
    let hashes: Vec<String> = (0..1000u64)
        .map(|i| format!("{:064x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
        .collect();
    // Written in thirds at t0, t0+10d, t0+35d; at t0+36d they are froid, tiede, chaud.
    for (k, at) in [T0, T0 + 10 * DAY, T0 + 35 * DAY].into_iter().enumerate() {
        age_at(d, at);
        let third = |v: &[String]| -> Vec<String> {
            let n = v.len() / 3;
            v[k * n..(k + 1) * n].to_vec()
        };
        append_all(d, "live/ipv4.txt", &third(&ips));
        append_all(d, "live/domain.txt", &third(&domains));
        append_all(d, "live/url.txt", &third(&urls));
        append_all(d, "live/sha256.txt", &third(&hashes));
    }
    age_at(d, T0 + 36 * DAY);
}
