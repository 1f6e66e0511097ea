//! The `.iocfs` control tree (README "The control files"): stats.json, metrics, health, ctl
//! and lookup/.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fuser::{Errno, FileAttr, INodeNo, Request};
use serde_json::{json, Value};

use super::inode::{METRICS, STATS};
use super::nodes::{Snapshot, SnapshotOf};
use super::{errno, IocFs, NO_TTL};
use crate::ioc;
use crate::lograte;

/// `.iocfs/stats.json` as last built, with what it was built from. Every `stat` and open
/// of the file shares it: it is rebuilt only when something it shows has changed (a second
/// of uptime included, so it is never more than a second old), and building it walks no
/// tier blocks and takes no lock that a WAL fsync holds. `.iocfs/metrics` is rendered from
/// it and kept the same way; its text shows no clock (a start time, not an uptime), so time
/// alone does not change it: its size at `stat` is what an open right after reads (a web
/// server sends that many bytes).
#[derive(Default)]
pub struct StatsSnapshot {
    last: Mutex<Option<(StatsKey, Built)>>,
    metrics: Mutex<Option<(StatsKey, Arc<Vec<u8>>)>>,
    builds: AtomicU64,
}

/// Everything a rebuild would show differently: the store's and the views' change counts,
/// WAL fsyncs, time, the cache's, tier copies' and scratch files' figures, failure.
type StatsKey = [u64; 12];

/// A built snapshot: the stats and their stats.json bytes.
type Built = (Arc<Value>, Arc<Vec<u8>>);

impl IocFs {
    fn stats_key(&self) -> StatsKey {
        let (hits, misses) = self.store.cache.counts();
        [
            self.store.changes(),
            self.views.changes(),
            self.store.wal_fsyncs().count(),
            self.store.clock.now(),
            self.store.uptime_secs(),
            hits,
            misses,
            self.store.inflated_bytes(),
            self.store.inflated_ahead().sum(),
            self.nodes.scratch_pool.bytes(),
            self.nodes.scratch_count() as u64,
            u64::from(self.store.is_failed()),
        ]
    }

    /// The shared stats snapshot: its value and its stats.json bytes.
    fn stats_snapshot(&self) -> Built {
        let key = self.stats_key();
        // Held while building: concurrent opens wait for this build and share it.
        let mut last = crate::sync::lock(&self.stats.last);
        if let Some((k, built)) = &*last {
            if *k == key {
                return built.clone();
            }
        }
        let builds = self.stats.builds.fetch_add(1, Ordering::Relaxed) + 1;
        let mut stats = crate::store::stats::stats(&self.store);
        stats["views"] = self.views.stats();
        // The same problems as .iocfs/health.
        if let Some(problems) = stats["problems"].as_array_mut() {
            problems.extend(self.views.problems().iter().map(|p| json!(p.line())));
        }
        stats["scratch"] = json!({
            "files": self.nodes.scratch_count(),
            "bytes": self.nodes.scratch_pool.bytes(),
        });
        stats["stats_json"] = json!({ "builds": builds });
        let mut out = serde_json::to_vec_pretty(&stats).unwrap_or_default();
        out.push(b'\n');
        let built = (Arc::new(stats), Arc::new(out));
        *last = Some((key, built.clone()));
        built
    }

    pub(super) fn stats_bytes(&self) -> Arc<Vec<u8>> {
        self.stats_snapshot().1
    }

    /// `.iocfs/metrics`: the stats snapshot in the Prometheus text format.
    pub(super) fn metrics_bytes(&self) -> Arc<Vec<u8>> {
        let key = self.stats_key();
        let mut last = crate::sync::lock(&self.stats.metrics);
        if let Some((k, bytes)) = &*last {
            if *k == key {
                return bytes.clone();
            }
        }
        let (stats, _) = self.stats_snapshot();
        let bytes = Arc::new(crate::metrics::render(&stats).into_bytes());
        *last = Some((key, bytes.clone()));
        bytes
    }

    pub(super) fn health_bytes(&self) -> Vec<u8> {
        let mut problems = self.store.problems();
        problems.extend(self.views.problems().iter().map(|p| p.line()));
        if problems.is_empty() {
            return b"ok\n".to_vec();
        }
        problems
            .iter()
            .flat_map(|p| format!("{p}\n").into_bytes())
            .collect()
    }

    /// `.iocfs/lookup/VALUE`: exists iff VALUE is stored or covered (see `crate::lookup`);
    /// `/` in values is written `%2F`. Never pinned (`stat_pins`): a lookup shows the
    /// value's state of its moment, and copying tools do not walk lookup/.
    pub(super) fn lookup_entry(&self, name: &OsStr) -> Result<(FileAttr, Duration), Errno> {
        let raw = percent_decode(name.as_bytes()).ok_or(Errno::ENOENT)?;
        let answer = crate::lookup::lookup(&self.store, &self.views, &raw).ok_or(Errno::ENOENT)?;
        let mut bytes = serde_json::to_vec(&answer.body).unwrap_or_default();
        bytes.push(b'\n');
        let of = SnapshotOf::Lookup((answer.ty, answer.value.into_bytes()));
        Ok(self.snapshot_entry(of, Arc::new(bytes)))
    }

    /// A lookup of stats.json, metrics or health (`file` is its fixed inode) by `tid`: the
    /// inode of its current bytes (see `nodes`: a descriptor's fstat gives the size it
    /// reads), or of the bytes `tid` looked up last if it has not opened them yet.
    pub(super) fn control_entry(&self, file: INodeNo, tid: u32) -> (FileAttr, Duration) {
        let of = SnapshotOf::Control(file);
        if let Some(ino) = self.stat_pins.pinned(tid, &of) {
            if let Some((len, built)) = self.nodes.look_up_snapshot_again(ino) {
                return (self.snapshot_attr(ino, len, built), NO_TTL);
            }
        }
        let (attr, ttl) = self.snapshot_entry(of.clone(), self.control_bytes(file));
        self.stat_pins.pin(tid, of, attr.ino);
        (attr, ttl)
    }

    /// The current bytes of stats.json, metrics or health.
    pub(super) fn control_bytes(&self, file: INodeNo) -> Arc<Vec<u8>> {
        match file {
            STATS => self.stats_bytes(),
            METRICS => self.metrics_bytes(),
            _ => Arc::new(self.health_bytes()),
        }
    }

    fn snapshot_entry(&self, of: SnapshotOf, bytes: Arc<Vec<u8>>) -> (FileAttr, Duration) {
        let len = bytes.len() as u64;
        let (ino, built) = self
            .nodes
            .remember_snapshot(of, bytes, self.store.clock.now());
        (self.snapshot_attr(ino, len, built), NO_TTL)
    }

    /// Give the kernel's page cache of a snapshot's inode its bytes at the first open, before
    /// the open returns: the reads that follow need no round trip (a lookup answer costs a
    /// LOOKUP and an OPEN). The inode's bytes never change, so the cache stays right for as
    /// long as the kernel keeps it; reads it dropped come to `read` as before.
    pub(super) fn prefill(&self, ino: INodeNo, s: &Snapshot) {
        let Some(kernel) = self.kernel.get() else {
            return;
        };
        if s.prefilled.swap(true, Ordering::Relaxed) {
            return;
        }
        if let Err(e) = kernel.store(ino, 0, &s.bytes) {
            lograte::warn(|| format!("handing the kernel a generated file's bytes: {e}"));
        }
    }

    /// Commands written to `.iocfs/ctl`, one per line: `age`, `commit`, `checkpoint`,
    /// `remove VALUE…` (and, in test builds, `clock …` and `failpoint …`).
    pub(super) fn write_ctl(
        &self,
        req: &Request,
        buf: &Mutex<Vec<u8>>,
        data: &[u8],
    ) -> Result<(), Errno> {
        if req.uid() != 0 {
            return Err(Errno::EACCES);
        }
        let mut buf = crate::sync::lock(buf);
        buf.extend_from_slice(data);
        while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            let line = String::from_utf8_lossy(&line).trim().to_string();
            if !line.is_empty() {
                self.run_command(&line)?;
            }
        }
        // A command without a final newline (`printf age > ctl`) runs now too.
        if !buf.is_empty() {
            let line = String::from_utf8_lossy(&buf).trim().to_string();
            buf.clear();
            if !line.is_empty() {
                self.run_command(&line)?;
            }
        }
        Ok(())
    }

    fn run_command(&self, line: &str) -> Result<(), Errno> {
        let mut words = line.split_whitespace();
        let cmd = words.next().unwrap_or_default();
        let args: Vec<&str> = words.collect();
        log::info!("ctl: {}", crate::ioc::escape_excerpt(line.as_bytes(), 1024));
        let result = match (cmd, args.as_slice()) {
            ("age", []) => self.store.age().map(|_| ()),
            ("commit", []) => self.store.commit().map(|_| ()),
            ("checkpoint", []) => self.store.checkpoint_now().map(|_| ()),
            ("refresh-views", []) => self.views.rebuild(&self.store, true).map(|_| ()),
            ("backup", [_, ..]) => {
                // The path is the rest of the line (it may hold spaces).
                let dest = line.trim_start()["backup".len()..].trim();
                self.store.backup(std::path::Path::new(dest)).map(|_| ())
            }
            ("release-view", [name]) => self.views.release(&self.store, name).map(|n| {
                log::info!("ctl release-view {name}: {n} held files published");
            }),
            ("remove", values) if !values.is_empty() => {
                let limits = self.store.limits();
                let mut items = Vec::new();
                for v in values {
                    match ioc::classify(v.as_bytes(), &limits) {
                        Some((ty, norm)) => items.push((ty, norm.into_bytes())),
                        None => {
                            let v = ioc::escape_excerpt(v.as_bytes(), 200);
                            lograte::warn(|| {
                                format!("ctl remove: \"{v}\" is not a valid indicator")
                            });
                            return Err(Errno::EINVAL);
                        }
                    }
                }
                self.store
                    .remove(items)
                    .map(|n| log::info!("ctl remove: {n} of {} found and removed", values.len()))
            }
            _ => match self.test_command(cmd, &args) {
                Some(r) => r,
                None => {
                    let line = ioc::escape_excerpt(line.as_bytes(), 200);
                    let what = if is_command(cmd) {
                        "wrong arguments in"
                    } else {
                        "unknown command"
                    };
                    lograte::warn(|| {
                        let expected: Vec<&str> =
                            COMMANDS.iter().map(|(usage, _)| *usage).collect();
                        format!("ctl: {what} \"{line}\" (expected {})", expected.join(", "))
                    });
                    return Err(Errno::EINVAL);
                }
            },
        };
        result.map_err(|e| {
            lograte::warn(|| format!("ctl {cmd}: {e}"));
            errno(&e)
        })
    }

    /// Hooks compiled only into test builds: move the manual clock, arm failpoints, lower
    /// the WAL record limit.
    #[cfg(feature = "testing")]
    fn test_command(&self, cmd: &str, args: &[&str]) -> Option<crate::error::Result<()>> {
        let bad = || Some(Err(crate::error::Error::Invalid("bad test command".into())));
        match (cmd, args) {
            ("clock", [arg]) => {
                let clock = crate::clock::manual()?;
                if let Some(delta) = arg.strip_prefix('+') {
                    match crate::config::parse_duration(delta) {
                        Ok(d) => clock.advance(d.as_secs()),
                        Err(_) => return bad(),
                    };
                } else {
                    match arg.parse::<u64>() {
                        Ok(t) => clock.set(t),
                        Err(_) => return bad(),
                    }
                }
                Some(Ok(()))
            }
            ("live-slot-limit", [lines]) => match lines.parse() {
                Ok(n) => {
                    self.store.set_live_slot_limit(n);
                    Some(Ok(()))
                }
                Err(_) => bad(),
            },
            ("scratch-limit", [bytes]) => match bytes.parse() {
                Ok(n) => {
                    self.nodes.scratch_pool.set_limit(n);
                    Some(Ok(()))
                }
                Err(_) => bad(),
            },
            ("record-limit", [bytes]) => match bytes.parse() {
                Ok(n) => {
                    self.store.set_record_limit(n);
                    Some(Ok(()))
                }
                Err(_) => bad(),
            },
            ("failpoint", [name, what]) => {
                let errno = match *what {
                    "off" => None,
                    "eio" => Some(libc::EIO),
                    "enospc" => Some(libc::ENOSPC),
                    n => match n.parse() {
                        Ok(n) => Some(n),
                        Err(_) => return bad(),
                    },
                };
                crate::failpoint::set(name, errno);
                Some(Ok(()))
            }
            _ => None,
        }
    }

    #[cfg(not(feature = "testing"))]
    fn test_command(&self, _cmd: &str, _args: &[&str]) -> Option<crate::error::Result<()>> {
        None
    }
}

/// The commands `.iocfs/ctl` takes: usage and what each does (what reading it prints).
const COMMANDS: [(&str, &str); 7] = [
    ("age", "run an aging step now"),
    ("commit", "write every changed backing file now"),
    (
        "checkpoint",
        "commit, then snapshot the index (faster restarts)",
    ),
    (
        "remove VALUE...",
        "delete indicators from whatever bucket holds them",
    ),
    ("refresh-views", "rebuild every view now"),
    (
        "release-view NAME",
        "publish the builds of view NAME that max_shrink held back",
    ),
    (
        "backup DEST",
        "back up into DEST, a new or empty directory (see iocfs backup)",
    ),
];

/// Whether `cmd` names one of the [`COMMANDS`] (whatever its arguments).
fn is_command(cmd: &str) -> bool {
    COMMANDS
        .iter()
        .any(|(usage, _)| usage.split(' ').next() == Some(cmd))
}

/// What reading `.iocfs/ctl` prints: the commands it takes, one per line.
pub(super) fn ctl_help() -> Vec<u8> {
    let mut text = String::from(
        "# .iocfs/ctl: write one of these commands (root only), e.g. echo age > .iocfs/ctl\n",
    );
    for (cmd, what) in COMMANDS {
        text.push_str(&format!("{cmd:<18} {what}\n"));
    }
    text.into_bytes()
}

/// `%XX` → byte; anything else as is. None for a malformed escape.
pub fn percent_decode(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            let text = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(text, 16).ok()?);
            i += 3;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn percent_decoding() {
        assert_eq!(
            percent_decode(b"http:%2F%2Fx.com%2Fa").unwrap(),
            b"http://x.com/a"
        );
        assert_eq!(percent_decode(b"10.0.0.0%2f8").unwrap(), b"10.0.0.0/8");
        assert_eq!(percent_decode(b"%zz"), None);
        assert_eq!(percent_decode(b"%2"), None);
        assert_eq!(percent_decode(b"plain").unwrap(), b"plain");
    }
}
