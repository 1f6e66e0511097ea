//! Torture driver behind `scripts/torture`: a seeded workload against a mounted iocfs (a
//! `--features testing` build on a manual clock) that SIGKILLs the daemon at random moments,
//! remounts it and checks the served state against a model of what was acknowledged.
//!
//! Between two kills these threads run against the mount:
//! - three appenders: `O_APPEND` opens, 1–4 write()s of 1–50 lines each, new and already
//!   known indicators of four types (ipv4, domain, url, sha256);
//! - a replacer: `cp` of a set built from the model (keeps part of the live set, drops the
//!   rest, adds new ones and promotes some tier ones), `sed -i '/pattern/d'`, or
//!   `remove VALUE…` in `.iocfs/ctl`;
//! - a clock thread: `clock +Nh`, `age`, `commit`, `checkpoint` in `.iocfs/ctl`;
//! - a reader: `.iocfs/lookup/VALUE`, whole files of every bucket, stats.json.
//!
//! The model keeps, per indicator, the set of states the daemon may be in: absent, or
//! present in a bucket with a last-seen time. An acknowledged operation maps every possible
//! state to its result; one whose outcome is unknown because the daemon was killed while it
//! was in flight adds its result to the possible states (either outcome is fine) until a
//! later acknowledged operation decides it again. Operations that don't commute are
//! serialized (the clock/age thread excludes all writers; `cp`, `sed -i` and `remove`
//! exclude appenders of their type), so the model's order is the daemon's order.
//!
//! After each kill: restart on the same data dir with the manual clock at the largest value
//! ever written, then check (a) every indicator against its possible states (a certainly
//! present one missing counts as lost), (b) no line is served twice over the 36 files, and
//! sampled lookups give the modelled bucket and last-seen time, (c) after one more `age`
//! every indicator is in the bucket its age demands. Every 10 kills and at the end: SIGTERM
//! (exit 0), `iocfs check DATA` (clean), restart.
//!
//! `--exclusive-commits` turns background commits and checkpoints off and has the clock
//! thread run `commit`/`checkpoint` while no mutation is in flight: a way to tell races of
//! the group commit with writers from everything else.
//!
//! The last line is `torture: kills=N acknowledged=M lost=L duplicated=D check=clean|failed
//! seed=S`; `acknowledged` counts acknowledged mutations (append write()s, replacements,
//! removals). The exit status is non-zero on any violation, listed above that line.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

use std::collections::{HashMap, HashSet};
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant, UNIX_EPOCH};

mod common;
use common::{Daemon, Rng, BUCKETS, TYPE_FILES};

/// The manual clock's start: 2023-11-14T22:13:20Z.
const T0: u64 = 1_700_000_000;
const HOUR: u64 = 3600;
const DAY: u64 = 24 * HOUR;
/// How far the clock moves over a whole run: past froid_retention, so drops happen too.
const CLOCK_BUDGET: u64 = 500 * DAY;

/// The types the workload writes (index = type code in the model).
const TYPES: [&str; 4] = ["ipv4", "domain", "url", "sha256"];
const LIVE: u8 = 0;

/// `COMMITS` is replaced by the commit and checkpoint intervals.
const CONFIG: &str = r#"# written by examples/torture.rs
[aging]
# Aging only when the workload asks for it (`age` in ctl), so the model knows when it ran.
interval = "3650d"
[durability]
COMMITS
segment_size = "1MiB"
[tiers]
block_size = "4KiB"
[cache]
size = "1MiB"
"#;

/// Background commits and checkpoints run concurrently with everything.
const CONCURRENT_COMMITS: &str = "commit_interval = \"300ms\"\ncheckpoint_interval = \"2s\"";
/// `--exclusive-commits`: only the ctl commands of the clock thread commit, while no
/// mutation runs.
const EXCLUSIVE_COMMITS: &str = "commit_interval = \"3650d\"\ncheckpoint_interval = \"3650d\"";

/// How many violation messages are printed per check (all are counted).
const SHOW: usize = 12;

// ---------------------------------------------------------------------------------------
// Values, buckets, PRNG

/// The value of indicator `id` of type `ty`. `id % 64` is its group, which `sed -i` patterns
/// select on.
fn value(ty: u8, id: u32) -> String {
    let (g, r) = (id % 64, id / 64);
    match ty {
        0 => {
            assert!(r < 1 << 16, "ipv4 id space exhausted");
            format!("10.{g}.{}.{}", r >> 8, r & 255)
        }
        1 => format!("g{g:02}x{r}.torture.example"),
        2 => format!("http://g{g:02}x{r}.torture.example/p/{r}"),
        _ => format!("{g:02x}{:030x}{:032x}", Rng::new(u64::from(id)).next(), id),
    }
}

fn group(id: u32) -> u32 {
    id % 64
}

/// `sed` address matching exactly the values of group `g`.
fn sed_script(ty: u8, g: u32) -> String {
    match ty {
        0 => format!("/^10\\.{g}\\./d"),
        1 | 2 => format!("/g{g:02}x/d"),
        _ => format!("/^{g:02x}/d"),
    }
}

fn type_file(ty: u8) -> String {
    format!("{}.txt", TYPES[usize::from(ty)])
}

/// The bucket (0 live … 3 froid) for an indicator last seen at `last` when aged at `now`;
/// None once past froid_retention (default retention).
fn bucket_for(now: u64, last: u64) -> Option<u8> {
    let age = now.saturating_sub(last);
    [DAY, 7 * DAY, 30 * DAY, 365 * DAY]
        .iter()
        .position(|&limit| age < limit)
        .map(|b| b as u8)
}

// ---------------------------------------------------------------------------------------
// The model

/// One possible state of an indicator.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
enum St {
    Absent,
    /// In bucket (0 live … 3 froid), last seen at.
    At(u8, u64),
}

impl St {
    fn bucket(self) -> Option<u8> {
        match self {
            St::Absent => None,
            St::At(b, _) => Some(b),
        }
    }
}

fn describe(states: &[St]) -> String {
    let parts: Vec<String> = states
        .iter()
        .map(|s| match s {
            St::Absent => "absent".to_string(),
            St::At(b, l) => format!(
                "{} (last seen T0{:+}h)",
                BUCKETS[usize::from(*b)],
                (*l as i64 - T0 as i64) / HOUR as i64
            ),
        })
        .collect();
    parts.join(" or ")
}

type Key = (u8, u32);

#[derive(Default)]
struct Model {
    /// Per type, id → possible states (sorted, deduplicated); a key never written is
    /// certainly absent.
    ioc: [HashMap<u32, Vec<St>>; 4],
    next_id: [u32; 4],
    by_value: HashMap<String, Key>,
    /// The daemon's manual clock (as last acknowledged, or restarted at).
    clock: u64,
    /// The largest value ever written to the clock (acknowledged or not).
    max_clock: u64,
}

/// Apply `f` to every possible state; when the outcome is unknown (`certain` false) the old
/// states stay possible too.
fn map_states(states: &mut Vec<St>, certain: bool, f: impl Fn(St) -> St) {
    if certain {
        for s in states.iter_mut() {
            *s = f(*s);
        }
    } else {
        let mapped: Vec<St> = states.iter().map(|&s| f(s)).collect();
        states.extend(mapped);
    }
    if states.len() > 1 {
        states.sort_unstable();
        states.dedup();
    }
}

impl Model {
    fn alloc(&mut self, ty: u8) -> Key {
        let id = self.next_id[usize::from(ty)];
        self.next_id[usize::from(ty)] += 1;
        self.by_value.insert(value(ty, id), (ty, id));
        (ty, id)
    }

    /// A key of `ty` written before (any state), or a new one if there is none yet.
    fn known(&mut self, ty: u8, rng: &mut Rng) -> Key {
        match self.next_id[usize::from(ty)] {
            0 => self.alloc(ty),
            n => (ty, rng.below(u64::from(n)) as u32),
        }
    }

    /// Every key ever written, with its possible states.
    fn entries(&self) -> impl Iterator<Item = (Key, &Vec<St>)> {
        self.ioc
            .iter()
            .enumerate()
            .flat_map(|(ty, m)| m.iter().map(move |(&id, s)| ((ty as u8, id), s)))
    }

    /// Apply `f` to every possible state of `k`; when the outcome is unknown (`certain`
    /// false) the old states stay possible too.
    fn update(&mut self, k: Key, certain: bool, f: impl Fn(St) -> St) {
        let states = self.ioc[usize::from(k.0)]
            .entry(k.1)
            .or_insert_with(|| vec![St::Absent]);
        map_states(states, certain, f);
    }

    fn append(&mut self, keys: &[Key], now: u64, certain: bool) {
        for &k in keys {
            self.update(k, certain, |_| St::At(LIVE, now));
        }
    }

    fn remove(&mut self, keys: &[Key], certain: bool) {
        for &k in keys {
            self.update(k, certain, |_| St::Absent);
        }
    }

    /// `set` becomes the live set of `ty`: live lines in it keep their times, others in it
    /// are sighted now; live lines not in it are deleted; tier lines not in it stay.
    fn replace(&mut self, ty: u8, set: &HashSet<u32>, now: u64, certain: bool) {
        let map = &mut self.ioc[usize::from(ty)];
        for &id in set {
            map.entry(id).or_insert_with(|| vec![St::Absent]);
        }
        for (id, states) in map.iter_mut() {
            if set.contains(id) {
                map_states(states, certain, |s| match s {
                    St::At(LIVE, l) => St::At(LIVE, l),
                    _ => St::At(LIVE, now),
                });
            } else {
                map_states(states, certain, |s| match s {
                    St::At(LIVE, _) => St::Absent,
                    other => other,
                });
            }
        }
    }

    /// `sed -i '/group g/d'` on the live file of `ty`.
    fn sed(&mut self, ty: u8, g: u32, certain: bool) {
        for (_, states) in self.ioc[usize::from(ty)]
            .iter_mut()
            .filter(|(id, _)| group(**id) == g)
        {
            map_states(states, certain, |s| match s {
                St::At(LIVE, _) => St::Absent,
                other => other,
            });
        }
    }

    /// One aging step at `now`: indicators move to older buckets only, or are dropped.
    fn age(&mut self, now: u64, certain: bool) {
        for states in self.ioc.iter_mut().flat_map(|m| m.values_mut()) {
            map_states(states, certain, |s| match s {
                St::Absent => St::Absent,
                St::At(b, l) => match bucket_for(now, l) {
                    None => St::Absent,
                    Some(nb) => St::At(nb.max(b), l),
                },
            });
        }
    }

    /// (certainly present, certainly absent, uncertain) among keys ever written.
    fn census(&self) -> (usize, usize, usize) {
        let mut c = (0, 0, 0);
        for (_, states) in self.entries() {
            if states.iter().all(|s| *s != St::Absent) {
                c.0 += 1;
            } else if states.len() == 1 {
                c.1 += 1;
            } else {
                c.2 += 1;
            }
        }
        c
    }
}

// ---------------------------------------------------------------------------------------
// The workload

struct Shared {
    mnt: PathBuf,
    tmp: PathBuf,
    model: Mutex<Model>,
    /// Held for writing while the clock moves or aging runs; every mutation holds it for
    /// reading, so the clock is constant during a mutation.
    clock_lock: RwLock<()>,
    /// Per type: appends hold it for reading (they commute), replacements and removals for
    /// writing.
    type_locks: [RwLock<()>; 4],
    /// Set just before the daemon is killed: errors after it are the kill's.
    stop: AtomicBool,
    violations: Mutex<Vec<String>>,
    acked: AtomicU64,
    acked_lines: AtomicU64,
    in_flight_at_kill: AtomicU64,
    ops: AtomicU64,
    /// Seconds the clock may still move this round.
    clock_allowance: AtomicU64,
}

impl Shared {
    fn model(&self) -> MutexGuard<'_, Model> {
        self.model.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn violation(&self, what: String) {
        self.violations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(what);
    }

    /// An operation failed: expected if the daemon is being killed, a violation otherwise.
    /// Either way its outcome is unknown (a record may be durable even though the call
    /// failed), so the caller applies it as uncertain and stops.
    fn failed(&self, what: &str, err: &str) {
        if self.stopped() {
            self.in_flight_at_kill.fetch_add(1, Ordering::Relaxed);
        } else {
            self.violation(format!("{what} failed while the daemon was up: {err}"));
        }
    }

    fn ack(&self, lines: usize) {
        self.acked.fetch_add(1, Ordering::Relaxed);
        self.acked_lines.fetch_add(lines as u64, Ordering::Relaxed);
    }

    fn ctl(&self, cmd: &str) -> io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .open(self.mnt.join(".iocfs/ctl"))?;
        f.write_all(format!("{cmd}\n").as_bytes())
    }

    fn pause(&self, rng: &mut Rng, lo: u64, hi: u64) {
        std::thread::sleep(Duration::from_millis(rng.range(lo, hi)));
    }
}

fn rd<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn wr<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

/// Appends batches of new and known indicators until the daemon is killed.
fn appender(sh: &Shared, mut rng: Rng) {
    while !sh.stopped() {
        let ty = rng.below(4) as u8;
        let _clock = rd(&sh.clock_lock);
        let _ty = rd(&sh.type_locks[usize::from(ty)]);
        if sh.stopped() {
            return;
        }
        let path = sh.mnt.join("live").join(type_file(ty));
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
                    sh.model().append(&keys, now, true);
                    sh.ack(keys.len());
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
                    sh.model().append(&keys, now, false);
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

fn run(cmd: &mut Command) -> Result<(), String> {
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
fn replacer(sh: &Shared, mut rng: Rng, round: u64) {
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
                let mut set = HashSet::new();
                let mut tier = Vec::new();
                let mut mine: Vec<(u32, &Vec<St>)> = m.ioc[usize::from(ty)]
                    .iter()
                    .map(|(&id, s)| (id, s))
                    .collect();
                mine.sort_unstable();
                for (id, states) in mine {
                    if states.iter().any(|s| s.bucket() == Some(LIVE)) {
                        if rng.chance(0.75) {
                            set.insert(id);
                        }
                    } else if states.iter().any(|s| s.bucket().is_some()) {
                        tier.push(id);
                    }
                }
                for _ in 0..rng.range(0, 5).min(tier.len() as u64) {
                    set.insert(tier[rng.below(tier.len() as u64) as usize]);
                }
                for _ in 0..rng.range(1, 15) {
                    set.insert(m.alloc(ty).1);
                }
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
fn clock_thread(sh: &Shared, mut rng: Rng, max_step_hours: u64, exclusive_commits: bool) {
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
fn lookup_name(v: &str) -> String {
    v.replace('/', "%2F")
}

/// Lookups and whole-file reads; only checks that they work and give whole lines.
fn reader(sh: &Shared, mut rng: Rng) {
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
            let path = if pick < 97 {
                let b = BUCKETS[rng.below(4) as usize];
                let f = TYPE_FILES[rng.below(9) as usize];
                sh.mnt.join(b).join(f)
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

// ---------------------------------------------------------------------------------------
// Verification

#[derive(Default)]
struct Tally {
    lost: u64,
    duplicated: u64,
    other: u64,
    check_failed: bool,
}

/// Every line served, with (bucket, file) for each place it is served from.
type Scan = HashMap<String, Vec<(u8, usize)>>;

fn scan(mnt: &Path) -> Result<Scan, String> {
    let mut all: Scan = HashMap::new();
    for (b, bucket) in BUCKETS.iter().enumerate() {
        for (f, file) in TYPE_FILES.iter().enumerate() {
            let path = mnt.join(bucket).join(file);
            let bytes =
                std::fs::read(&path).map_err(|e| format!("read {}: {e}", path.display()))?;
            if bytes.is_empty() {
                continue;
            }
            let text = String::from_utf8(bytes)
                .map_err(|e| format!("{} is not UTF-8: {e}", path.display()))?;
            let Some(body) = text.strip_suffix('\n') else {
                return Err(format!("{} does not end with a newline", path.display()));
            };
            for line in body.split('\n') {
                all.entry(line.to_string()).or_default().push((b as u8, f));
            }
        }
    }
    Ok(all)
}

struct Checker<'a> {
    tally: &'a mut Tally,
    shown: usize,
    ctx: String,
}

impl Checker<'_> {
    fn report(&mut self, what: String) {
        if self.shown < SHOW {
            println!("VIOLATION ({}): {what}", self.ctx);
        } else if self.shown == SHOW {
            println!("VIOLATION ({}): … more not shown", self.ctx);
        }
        self.shown += 1;
    }

    fn other(&mut self, what: String) {
        self.tally.other += 1;
        self.report(what);
    }

    /// (a)/(b)/(c): the served lines against the model's possible states.
    fn against_model(&mut self, model: &Model, served: &Scan) {
        for (line, places) in served {
            if places.len() > 1 {
                self.tally.duplicated += 1;
                let at: Vec<String> = places
                    .iter()
                    .map(|&(b, f)| format!("{}/{}", BUCKETS[usize::from(b)], TYPE_FILES[f]))
                    .collect();
                self.report(format!(
                    "{line} served {} times: {}",
                    places.len(),
                    at.join(", ")
                ));
            }
            let Some(&(ty, id)) = model.by_value.get(line) else {
                self.other(format!("{line} is served but was never written"));
                continue;
            };
            let (_, f) = places[0];
            if TYPE_FILES[f] != type_file(ty) {
                self.other(format!("{line} is served from {}", TYPE_FILES[f]));
            }
            if !model.ioc[usize::from(ty)].contains_key(&id) {
                self.other(format!("{line} is served but no write of it was ever sent"));
            }
        }
        let mut keys: Vec<(Key, &Vec<St>)> = model.entries().collect();
        keys.sort_unstable();
        for (k, states) in keys {
            let v = value(k.0, k.1);
            let actual = served.get(&v).map(|p| p[0].0);
            if states.iter().any(|s| s.bucket() == actual) {
                continue;
            }
            let where_ = actual.map_or("absent".to_string(), |b| {
                format!("in {}", BUCKETS[usize::from(b)])
            });
            if actual.is_none() {
                self.tally.lost += 1;
                self.report(format!("LOST {v}: expected {}", describe(states)));
            } else {
                self.other(format!("{v}: {where_}, expected {}", describe(states)));
            }
        }
    }

    /// Lookups of a sample of certainly present indicators: bucket and last seen.
    fn lookups(&mut self, model: &Model, mnt: &Path, rng: &mut Rng) {
        let mut certain: Vec<(Key, St)> = model
            .entries()
            .filter(|(_, s)| s.len() == 1 && s[0] != St::Absent)
            .map(|(k, s)| (k, s[0]))
            .collect();
        certain.sort_unstable();
        for _ in 0..certain.len().min(30) {
            let (k, st) = certain[rng.below(certain.len() as u64) as usize];
            let v = value(k.0, k.1);
            let path = mnt.join(".iocfs/lookup").join(lookup_name(&v));
            let body = match std::fs::read_to_string(&path) {
                Ok(b) => b,
                Err(e) => {
                    self.other(format!("lookup {v}: {e} (expected {})", describe(&[st])));
                    continue;
                }
            };
            let json: serde_json::Value = match serde_json::from_str(&body) {
                Ok(j) => j,
                Err(e) => {
                    self.other(format!("lookup {v}: bad JSON {body:?}: {e}"));
                    continue;
                }
            };
            let last = json["last_seen"]
                .as_str()
                .and_then(|t| humantime::parse_rfc3339(t).ok())
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_secs());
            let bucket = json["bucket"]
                .as_str()
                .and_then(|b| BUCKETS.iter().position(|x| *x == b))
                .map(|b| b as u8);
            let got = match (bucket, last) {
                (Some(b), Some(l)) => St::At(b, l),
                _ => {
                    self.other(format!("lookup {v}: unexpected {body:?}"));
                    continue;
                }
            };
            if got != st || json["type"].as_str() != Some(TYPES[usize::from(k.0)]) {
                self.other(format!(
                    "lookup {v}: {} ({body:?}), expected {}",
                    describe(&[got]),
                    describe(&[st])
                ));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The run

struct Args {
    kills: u64,
    seed: u64,
    bin: PathBuf,
    dir: Option<PathBuf>,
    verbose: bool,
    exclusive_commits: bool,
}

fn usage() -> ! {
    eprintln!(
        "usage: torture [--quick] [--kills N] [--seed S] [--bin PATH/iocfs] [--dir WORKDIR] [--verbose]\n\
         \x20              [--exclusive-commits]\n\
         (run by scripts/torture; needs root, /dev/fuse and a `--features testing` iocfs)"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut args = Args {
        kills: 200,
        seed: 0,
        bin: PathBuf::new(),
        dir: None,
        verbose: false,
        exclusive_commits: false,
    };
    let mut seed = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--quick" => args.kills = 20,
            "--kills" => args.kills = val().parse().unwrap_or_else(|_| usage()),
            "--seed" => seed = Some(val().parse().unwrap_or_else(|_| usage())),
            "--bin" => args.bin = PathBuf::from(val()),
            "--dir" => args.dir = Some(PathBuf::from(val())),
            "--verbose" | "-v" => args.verbose = true,
            "--exclusive-commits" => args.exclusive_commits = true,
            _ => usage(),
        }
    }
    args.seed = seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64 % 1_000_000_000)
            .unwrap_or(1)
    });
    if args.bin.as_os_str().is_empty() {
        args.bin = common::sibling_iocfs();
    }
    args
}

struct Run {
    args: Args,
    daemon: Daemon,
    shared: Shared,
    tally: Tally,
    rng: Rng,
    kills: u64,
    checks: u64,
    /// Time spent restarting, verifying, and in clean SIGTERM/check cycles.
    spent: [Duration; 3],
}

impl Run {
    fn restart(&mut self) -> Result<(), String> {
        let clock = {
            let mut m = self.shared.model();
            m.clock = m.max_clock;
            m.clock
        };
        self.daemon.start(Some(clock))
    }

    fn ctl(&self, cmd: &str) -> Result<(), String> {
        self.shared
            .ctl(cmd)
            .map_err(|e| format!("ctl {cmd} after restart: {e}"))
    }

    /// One round: the workload, then a SIGKILL after 20–500 ms.
    fn round(&mut self, round: u64) {
        let sh = &self.shared;
        sh.stop.store(false, Ordering::SeqCst);
        // Up to three times the run's average per round, within the whole run's budget.
        let per_round = (3 * CLOCK_BUDGET / self.args.kills.max(1)).max(HOUR);
        let left = (T0 + CLOCK_BUDGET).saturating_sub(sh.model().clock);
        sh.clock_allowance
            .store(per_round.min(left), Ordering::SeqCst);
        let max_step = (per_round / HOUR / 4).max(72);
        let delay = self.rng.range(20, 500);
        let seed = self.args.seed;
        let exclusive = self.args.exclusive_commits;
        let daemon = &mut self.daemon;
        let stuck = std::thread::scope(|s| {
            for i in 0..3 {
                let rng = Rng::derive(seed, round, i);
                s.spawn(move || appender(sh, rng));
            }
            let rng = Rng::derive(seed, round, 10);
            s.spawn(move || replacer(sh, rng, round));
            let rng = Rng::derive(seed, round, 11);
            s.spawn(move || clock_thread(sh, rng, max_step, exclusive));
            let rng = Rng::derive(seed, round, 12);
            s.spawn(move || reader(sh, rng));
            std::thread::sleep(Duration::from_millis(delay));
            sh.stop.store(true, Ordering::SeqCst);
            daemon.kill9()
        });
        if let Some(what) = stuck {
            sh.violation(what);
        }
        self.kills += 1;
        if self.args.verbose {
            let (p, a, u) = self.shared.model().census();
            println!(
                "kill {round}: after {delay} ms; model: {p} present, {a} absent, {u} uncertain"
            );
        }
    }

    fn thread_violations(&mut self, ctx: &str) {
        let found: Vec<String> = std::mem::take(
            &mut *self
                .shared
                .violations
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        let mut c = Checker {
            tally: &mut self.tally,
            shown: 0,
            ctx: ctx.to_string(),
        };
        for v in found {
            c.other(v);
        }
    }

    /// After a restart: (a), (b), lookups, then one `age` and (c).
    fn verify(&mut self, ctx: &str) -> Result<(), String> {
        let mnt = self.shared.mnt.clone();
        let health = std::fs::read_to_string(mnt.join(".iocfs/health"))
            .map_err(|e| format!("read health: {e}"))?;
        let served = scan(&mnt)?;
        {
            let model = self.shared.model();
            let mut c = Checker {
                tally: &mut self.tally,
                shown: 0,
                ctx: ctx.to_string(),
            };
            if health != "ok\n" {
                c.other(format!("health after restart: {health:?}"));
            }
            c.against_model(&model, &served);
            c.lookups(&model, &mnt, &mut self.rng);
        }
        // (c) one more aging step at the restarted clock.
        self.ctl("age")?;
        let served = scan(&mnt)?;
        let model = {
            let mut m = self.shared.model();
            let now = m.clock;
            m.age(now, true);
            m
        };
        let mut c = Checker {
            tally: &mut self.tally,
            shown: 0,
            ctx: format!("{ctx}, after age"),
        };
        c.against_model(&model, &served);
        // The model's own invariant: a known state is where its age puts it.
        for (k, states) in model.entries() {
            for s in states {
                if let St::At(b, l) = *s {
                    if Some(b) != bucket_for(model.clock, l) {
                        c.other(format!(
                            "model bug: {} in {} at clock T0{:+}h",
                            value(k.0, k.1),
                            describe(&[*s]),
                            (model.clock as i64 - T0 as i64) / HOUR as i64
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// `iocfs check DATA` (the daemon stopped) must say "clean".
    fn check_data(&mut self, ctx: &str) -> Result<(), String> {
        let problem = self.daemon.check()?;
        self.checks += 1;
        if let Some(why) = problem {
            self.tally.check_failed = true;
            self.tally.other += 1;
            println!("VIOLATION ({ctx}): {why}");
        }
        Ok(())
    }

    /// SIGTERM (exit 0), `iocfs check DATA` (clean), restart, check again.
    fn clean_cycle(&mut self, ctx: &str) -> Result<(), String> {
        let status = self.daemon.stop()?;
        if !status.success() {
            self.tally.other += 1;
            println!(
                "VIOLATION ({ctx}): SIGTERM exit status {status}; log tail:\n{}",
                self.daemon.log_tail(20)
            );
        }
        self.check_data(ctx)?;
        self.restart()?;
        self.verify(&format!("{ctx}, after SIGTERM and check"))
    }

    fn progress(&self, started: Instant) {
        let m = self.shared.model();
        let (p, a, u) = m.census();
        println!(
            "torture: {} kills in {:.0} s (restarts {:.0} s, checks {:.0} s, SIGTERM+check cycles {:.0} s): \
             {} acknowledged ({} lines), {} in flight at a kill; \
             model {p} present, {a} absent, {u} uncertain; clock T0+{}d; violations {}",
            self.kills,
            started.elapsed().as_secs_f64(),
            self.spent[0].as_secs_f64(),
            self.spent[1].as_secs_f64(),
            self.spent[2].as_secs_f64(),
            self.shared.acked.load(Ordering::Relaxed),
            self.shared.acked_lines.load(Ordering::Relaxed),
            self.shared.in_flight_at_kill.load(Ordering::Relaxed),
            (m.clock - T0) / DAY,
            self.tally.lost + self.tally.duplicated + self.tally.other,
        );
    }

    fn go(&mut self) -> Result<(), String> {
        let started = Instant::now();
        self.restart()?;
        for k in 1..=self.args.kills {
            self.round(k);
            let ctx = format!("kill {k}");
            self.thread_violations(&ctx);
            let t = Instant::now();
            self.restart()?;
            self.spent[0] += t.elapsed();
            let t = Instant::now();
            self.verify(&ctx)?;
            self.spent[1] += t.elapsed();
            if k % 10 == 0 || k == self.args.kills {
                let t = Instant::now();
                self.clean_cycle(&ctx)?;
                self.spent[2] += t.elapsed();
                self.progress(started);
            }
        }
        let status = self.daemon.stop()?;
        if !status.success() {
            self.tally.other += 1;
            println!("VIOLATION (final stop): SIGTERM exit status {status}");
        }
        Ok(())
    }
}

fn main() {
    let args = parse_args();
    let (_tmpdir, dir) = common::work_dir(
        args.dir.as_deref(),
        "iocfs-torture-",
        &["data", "mnt", "tmp"],
    );
    let dir = dir.canonicalize().expect("canonicalize work dir");
    let config = dir.join("iocfs.toml");
    let commits = if args.exclusive_commits {
        EXCLUSIVE_COMMITS
    } else {
        CONCURRENT_COMMITS
    };
    std::fs::write(&config, CONFIG.replace("COMMITS", commits)).expect("write config");
    println!(
        "torture: seed={} kills={} dir={} bin={}{}",
        args.seed,
        args.kills,
        dir.display(),
        args.bin.display(),
        if args.exclusive_commits {
            " (exclusive commits)"
        } else {
            ""
        }
    );
    let model = Model {
        clock: T0,
        max_clock: T0,
        ..Model::default()
    };
    let started = Instant::now();
    let mut run = Run {
        daemon: Daemon::new("torture", &args.bin, &config, &dir),
        shared: Shared {
            mnt: dir.join("mnt"),
            tmp: dir.join("tmp"),
            model: Mutex::new(model),
            clock_lock: RwLock::new(()),
            type_locks: Default::default(),
            stop: AtomicBool::new(false),
            violations: Mutex::new(Vec::new()),
            acked: AtomicU64::new(0),
            acked_lines: AtomicU64::new(0),
            in_flight_at_kill: AtomicU64::new(0),
            ops: AtomicU64::new(0),
            clock_allowance: AtomicU64::new(0),
        },
        tally: Tally::default(),
        rng: Rng::new(args.seed),
        kills: 0,
        checks: 0,
        spent: [Duration::ZERO; 3],
        args,
    };
    let result = run.go();
    if let Some(what) = run.daemon.kill9() {
        println!("VIOLATION (final): {what}");
        run.tally.other += 1;
    }
    if let Err(e) = &result {
        run.tally.other += 1;
        println!("FATAL: {e}");
        // What does the offline check make of the data directory left behind?
        if let Err(e) = run.check_data("after the fatal error") {
            println!("FATAL: {e}");
        }
    }
    let t = &run.tally;
    let failed = result.is_err() || t.lost + t.duplicated + t.other > 0 || t.check_failed;
    println!(
        "torture: {} operations sent, {} iocfs checks, {:.1} s; daemon log {}",
        run.shared.ops.load(Ordering::Relaxed),
        run.checks,
        started.elapsed().as_secs_f64(),
        run.daemon.log.display()
    );
    if failed {
        run.daemon.print_errors();
        println!(
            "torture: FAILED ({} lost, {} duplicated, {} other violations)",
            t.lost, t.duplicated, t.other
        );
    }
    println!(
        "torture: kills={} acknowledged={} lost={} duplicated={} check={} seed={}",
        run.kills,
        run.shared.acked.load(Ordering::Relaxed),
        t.lost,
        t.duplicated,
        if t.check_failed { "failed" } else { "clean" },
        run.args.seed
    );
    std::process::exit(i32::from(failed));
}
