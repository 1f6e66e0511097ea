//! The workload: the threads that run against the mount between two kills.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, RwLock};
use std::time::Duration;

use crate::common::{Rng, BUCKETS, TYPE_FILES};
use crate::model::{sed_script, type_file, value, Key, Model, HOUR, LIVE};
use crate::sources::{feed_bit, Set, FEEDS, LOCAL};

pub(crate) struct Shared {
    pub(crate) mnt: PathBuf,
    pub(crate) tmp: PathBuf,
    pub(crate) model: Mutex<Model>,
    /// Held for writing while the clock moves or aging runs; every mutation holds it for
    /// reading, so the clock is constant during a mutation.
    pub(crate) clock_lock: RwLock<()>,
    /// Per type: appends (to live/ or a feed) hold it for reading (they commute),
    /// replacements (of live/ or a feed's list) and removals for writing.
    pub(crate) type_locks: [RwLock<()>; 4],
    /// Set just before the daemon is killed: errors after it are the kill's.
    pub(crate) stop: AtomicBool,
    pub(crate) violations: Mutex<Vec<String>>,
    pub(crate) acked: AtomicU64,
    pub(crate) acked_lines: AtomicU64,
    /// Of `acked`, those by a feed (appends to and replaces of its files).
    pub(crate) source_acked: AtomicU64,
    pub(crate) in_flight_at_kill: AtomicU64,
    pub(crate) ops: AtomicU64,
    /// Seconds the clock may still move this round.
    pub(crate) clock_allowance: AtomicU64,
}

impl Shared {
    pub(crate) fn model(&self) -> MutexGuard<'_, Model> {
        self.model.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    pub(crate) fn violation(&self, what: String) {
        self.violations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(what);
    }

    /// An operation failed: expected if the daemon is being killed, a violation otherwise.
    /// Either way its outcome is unknown (a record may be durable even though the call
    /// failed), so the caller applies it as uncertain and stops.
    pub(crate) fn failed(&self, what: &str, err: &str) {
        if self.stopped() {
            self.in_flight_at_kill.fetch_add(1, Ordering::Relaxed);
        } else {
            self.violation(format!("{what} failed while the daemon was up: {err}"));
        }
    }

    pub(crate) fn ack(&self, lines: usize) {
        self.acked.fetch_add(1, Ordering::Relaxed);
        self.acked_lines.fetch_add(lines as u64, Ordering::Relaxed);
    }

    pub(crate) fn ctl(&self, cmd: &str) -> io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .open(self.mnt.join(".iocfs/ctl"))?;
        f.write_all(format!("{cmd}\n").as_bytes())
    }

    pub(crate) fn pause(&self, rng: &mut Rng, lo: u64, hi: u64) {
        std::thread::sleep(Duration::from_millis(rng.range(lo, hi)));
    }
}

pub(crate) fn rd<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn wr<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

/// Appends batches of new and known indicators until the daemon is killed: half of the
/// time to live/ (sightings by `local`), otherwise to a feed's file (sightings by it).
pub(crate) fn appender(sh: &Shared, mut rng: Rng) {
    while !sh.stopped() {
        let ty = rng.below(4) as u8;
        let (dir, by): (PathBuf, Set) = match rng.below(4) {
            0 | 1 => ("live".into(), LOCAL),
            f => {
                let f = (f - 2) as usize;
                (PathBuf::from("sources").join(FEEDS[f]), feed_bit(f))
            }
        };
        let _clock = rd(&sh.clock_lock);
        let _ty = rd(&sh.type_locks[usize::from(ty)]);
        if sh.stopped() {
            return;
        }
        let path = sh.mnt.join(dir).join(type_file(ty));
        let mut f = match OpenOptions::new().append(true).open(&path) {
            Ok(f) => f,
            Err(e) => {
                sh.failed(
                    &format!("open {} for append", path.display()),
                    &e.to_string(),
                );
                return;
            }
        };
        for _ in 0..rng.range(1, 4) {
            let n = rng.range(1, 50) as usize;
            let (keys, now, text) = {
                let mut m = sh.model();
                let mut keys = Vec::with_capacity(n);
                let mut text = String::new();
                for _ in 0..n {
                    let k = if rng.chance(0.3) {
                        m.alloc(ty)
                    } else {
                        m.known(ty, &mut rng)
                    };
                    let v = value(k.0, k.1);
                    // Input that normalizes to the same value, and comments, now and then.
                    if ty == 1 && rng.chance(0.1) {
                        text.push_str(&v.to_uppercase());
                        text.push_str(".\n");
                    } else {
                        text.push_str(&v);
                        text.push('\n');
                    }
                    if rng.chance(0.02) {
                        text.push_str("# torture comment\n");
                    }
                    keys.push(k);
                }
                (keys, m.clock, text)
            };
            sh.ops.fetch_add(1, Ordering::Relaxed);
            match f.write(text.as_bytes()) {
                Ok(len) if len == text.len() => {
                    sh.model().append(&keys, now, by, true);
                    sh.ack(keys.len());
                    if by != LOCAL {
                        sh.source_acked.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(len) => {
                    sh.violation(format!(
                        "append to {}: short write {len} of {}",
                        path.display(),
                        text.len()
                    ));
                    return;
                }
                Err(e) => {
                    sh.failed(&format!("append to {}", path.display()), &e.to_string());
                    sh.model().append(&keys, now, by, false);
                    return;
                }
            }
        }
        drop(f);
        drop(_ty);
        drop(_clock);
        sh.pause(&mut rng, 0, 4);
    }
}

pub(crate) fn run(cmd: &mut Command) -> Result<(), String> {
    match cmd.stdin(Stdio::null()).output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// `cp` of a new set, `sed -i '/…/d'`, or `remove VALUE…`, until the daemon is killed.
pub(crate) fn replacer(sh: &Shared, mut rng: Rng, round: u64) {
    let mut n = 0;
    while !sh.stopped() {
        sh.pause(&mut rng, 5, 60);
        let ty = rng.below(4) as u8;
        let _clock = rd(&sh.clock_lock);
        let _ty = wr(&sh.type_locks[usize::from(ty)]);
        if sh.stopped() {
            return;
        }
        let target = sh.mnt.join("live").join(type_file(ty));
        let pick = rng.below(100);
        sh.ops.fetch_add(1, Ordering::Relaxed);
        if pick < 45 {
            // cp: keep part of what may be live, add new ones, promote a few from tiers.
            let (set, now) = {
                let mut m = sh.model();
                let set = m.pick_set(
                    ty,
                    &mut rng,
                    |s| s.bucket() == Some(LIVE),
                    ((0, 5), (1, 15)),
                );
                (set, m.clock)
            };
            let mut ids: Vec<u32> = set.iter().copied().collect();
            ids.sort_unstable();
            // Shuffle so the file order differs from the id order.
            for i in (1..ids.len()).rev() {
                ids.swap(i, rng.below(i as u64 + 1) as usize);
            }
            let text: String = ids.iter().map(|&id| value(ty, id) + "\n").collect();
            let src = sh.tmp.join(format!("cp-{round}-{n}.txt"));
            n += 1;
            if let Err(e) = std::fs::write(&src, &text) {
                sh.violation(format!("write {}: {e}", src.display()));
                return;
            }
            let result = run(Command::new("cp").arg(&src).arg(&target));
            let _ = std::fs::remove_file(&src);
            match result {
                Ok(()) => {
                    sh.model().replace(ty, &set, now, true);
                    sh.ack(set.len());
                }
                Err(e) => {
                    sh.failed(&format!("cp to {}", target.display()), &e);
                    sh.model().replace(ty, &set, now, false);
                    return;
                }
            }
        } else if pick < 75 {
            let g = rng.below(64) as u32;
            let script = sed_script(ty, g);
            match run(Command::new("sed").arg("-i").arg(&script).arg(&target)) {
                Ok(()) => {
                    sh.model().sed(ty, g, true);
                    sh.ack(0);
                }
                Err(e) => {
                    sh.failed(&format!("sed -i '{script}' {}", target.display()), &e);
                    sh.model().sed(ty, g, false);
                    return;
                }
            }
        } else {
            // remove: mostly indicators that may be present, sometimes unknown ones.
            let keys: Vec<Key> = {
                let mut m = sh.model();
                (0..rng.range(1, 5))
                    .map(|_| m.known(ty, &mut rng))
                    .collect()
            };
            let values: Vec<String> = keys.iter().map(|k| value(k.0, k.1)).collect();
            let cmd = format!("remove {}", values.join(" "));
            match sh.ctl(&cmd) {
                Ok(()) => {
                    sh.model().remove(&keys, true);
                    sh.ack(keys.len());
                }
                Err(e) => {
                    sh.failed(&format!("ctl {cmd}"), &e.to_string());
                    sh.model().remove(&keys, false);
                    return;
                }
            }
        }
    }
}

/// Moves the clock, ages, commits and checkpoints, until the daemon is killed.
pub(crate) fn clock_thread(
    sh: &Shared,
    mut rng: Rng,
    max_step_hours: u64,
    exclusive_commits: bool,
) {
    while !sh.stopped() {
        sh.pause(&mut rng, 5, 50);
        let pick = rng.below(100);
        let allowance = sh.clock_allowance.load(Ordering::SeqCst) / HOUR;
        if pick < 35 && allowance > 0 {
            let hours = rng.range(1, max_step_hours.min(allowance));
            let _clock = wr(&sh.clock_lock);
            if sh.stopped() {
                return;
            }
            let target = {
                let mut m = sh.model();
                let target = m.clock + hours * HOUR;
                // Counted before the write: the daemon may apply it and die before answering.
                m.max_clock = m.max_clock.max(target);
                target
            };
            sh.clock_allowance.fetch_sub(hours * HOUR, Ordering::SeqCst);
            match sh.ctl(&format!("clock +{hours}h")) {
                Ok(()) => sh.model().clock = target,
                Err(e) => {
                    sh.failed("ctl clock", &e.to_string());
                    return;
                }
            }
        } else if pick < 70 {
            let _clock = wr(&sh.clock_lock);
            if sh.stopped() {
                return;
            }
            let now = sh.model().clock;
            match sh.ctl("age") {
                Ok(()) => sh.model().age(now, true),
                Err(e) => {
                    sh.failed("ctl age", &e.to_string());
                    sh.model().age(now, false);
                    return;
                }
            }
        } else {
            let cmd = if pick < 85 { "commit" } else { "checkpoint" };
            let _clock = exclusive_commits.then(|| wr(&sh.clock_lock));
            if sh.stopped() {
                return;
            }
            if let Err(e) = sh.ctl(cmd) {
                sh.failed(&format!("ctl {cmd}"), &e.to_string());
                return;
            }
        }
    }
}

/// Percent-encoding of `/` for `.iocfs/lookup/`.
pub(crate) fn lookup_name(v: &str) -> String {
    v.replace('/', "%2F")
}

/// Lookups and whole-file reads (buckets, feeds); only checks that they work and give whole
/// lines.
pub(crate) fn reader(sh: &Shared, mut rng: Rng) {
    while !sh.stopped() {
        let pick = rng.below(100);
        if pick < 50 {
            let ty = rng.below(4) as u8;
            let k = sh.model().known(ty, &mut rng);
            let path = sh
                .mnt
                .join(".iocfs/lookup")
                .join(lookup_name(&value(k.0, k.1)));
            match std::fs::read(&path) {
                Ok(body) if body.ends_with(b"}\n") => {}
                Ok(body) => sh.violation(format!(
                    "lookup {}: not a JSON line: {:?}",
                    path.display(),
                    String::from_utf8_lossy(&body)
                )),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    sh.failed(&format!("lookup {}", path.display()), &e.to_string());
                    return;
                }
            }
        } else {
            let f = TYPE_FILES[rng.below(9) as usize];
            let path = if pick < 85 {
                sh.mnt.join(BUCKETS[rng.below(4) as usize]).join(f)
            } else if pick < 97 {
                let feed = FEEDS[rng.below(2) as usize];
                sh.mnt.join("sources").join(feed).join(f)
            } else {
                sh.mnt.join(".iocfs/stats.json")
            };
            match std::fs::read(&path) {
                Ok(body) if body.is_empty() || body.ends_with(b"\n") => {}
                Ok(body) => sh.violation(format!(
                    "read {}: {} bytes not ending with a newline",
                    path.display(),
                    body.len()
                )),
                Err(e) => {
                    sh.failed(&format!("read {}", path.display()), &e.to_string());
                    return;
                }
            }
        }
        sh.pause(&mut rng, 0, 3);
    }
}
