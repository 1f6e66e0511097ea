//! The two feeds of the workload (`sources/feed_a`, `sources/feed_b`, DESIGN §9): what a
//! source replace does to each possible state of the model, the thread that replaces the
//! feeds' lists, and the reading of what the daemon says each feed lists.
//!
//! Appends to a feed's files are the appenders' (`workload::appender`, a sighting by the
//! feed: `Model::append` with the feed's bit); `local` is the source of writes to live/.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;

use crate::common::{Rng, TYPE_FILES};
use crate::model::{group, map_states, sed_script, type_file, value, Model, St, LIVE, TYPES};
use crate::workload::{rd, run, wr, Shared};

/// A set of sources, one bit each: `LOCAL`, then the feeds in declaration order.
pub(crate) type Set = u8;
pub(crate) const LOCAL: Set = 1;
/// The declared feeds, in declaration order (the order lookups list them in).
pub(crate) const FEEDS: [&str; 2] = ["feed_a", "feed_b"];

pub(crate) fn feed_bit(f: usize) -> Set {
    2 << f
}

/// The names of `set`, in the order lookups give them (`local` first, then declaration).
pub(crate) fn set_names(set: Set) -> Vec<&'static str> {
    std::iter::once("local")
        .chain(FEEDS)
        .enumerate()
        .filter(|(i, _)| set & (1 << i) != 0)
        .map(|(_, name)| name)
        .collect()
}

/// The set a lookup's `sources` array names; an error for anything else (unknown names,
/// not in the canonical order, not an array of strings).
pub(crate) fn parse_set(json: &serde_json::Value) -> Result<Set, String> {
    let names: Vec<&str> = json
        .as_array()
        .and_then(|a| a.iter().map(|n| n.as_str()).collect())
        .ok_or_else(|| format!("sources is not an array of names: {json}"))?;
    let mut set = 0;
    for name in &names {
        let i = std::iter::once("local")
            .chain(FEEDS)
            .position(|n| n == *name)
            .ok_or_else(|| format!("unknown source {name:?}"))?;
        set |= 1 << i;
    }
    if names != set_names(set) {
        return Err(format!(
            "sources {names:?}: not local first, then declaration order"
        ));
    }
    Ok(set)
}

// ---------------------------------------------------------------------------------------
// The model of a source replace

/// What the feeds' replaces did (counted on the possible states: a sign the interesting
/// paths ran, not a check).
#[derive(Default, Clone, Copy)]
pub(crate) struct FeedStats {
    /// Indicators a replace withdrew from every bucket (no other source listed them).
    pub(crate) withdrawn: u64,
    /// Indicators that lost a feed but stayed, listed by another source.
    pub(crate) kept: u64,
    /// Indicators a replace listed while they were in a tier (they stay there).
    pub(crate) listed_in_tier: u64,
}

impl FeedStats {
    fn count(&mut self, states: &[St], fb: Set, listed: bool) {
        let any = |f: &dyn Fn(u8, Set) -> bool| {
            states
                .iter()
                .any(|s| matches!(*s, St::At(b, _, set) if f(b, set)))
        };
        if listed {
            self.listed_in_tier += u64::from(any(&|b, set| b != LIVE && set & fb == 0));
        } else if any(&|_, set| set == fb) {
            self.withdrawn += 1;
        } else if any(&|_, set| set & fb != 0) {
            self.kept += 1;
        }
    }
}

impl Model {
    /// `list` becomes feed `f`'s whole list of `ty`. Stored indicators it lists gain the
    /// feed, keeping their bucket and times (not a sighting); listed ones not stored are
    /// added to live, listed by the feed alone; those the feed listed and no longer does
    /// lose it, and one left with no source is gone from every bucket.
    pub(crate) fn source_replace(
        &mut self,
        ty: u8,
        f: usize,
        list: &HashSet<u32>,
        now: u64,
        certain: bool,
    ) {
        let fb = feed_bit(f);
        let map = &mut self.ioc[usize::from(ty)];
        for &id in list {
            map.entry(id).or_insert_with(|| vec![St::Absent]);
        }
        for (id, states) in map.iter_mut() {
            self.feed_stats.count(states, fb, list.contains(id));
            if list.contains(id) {
                map_states(states, certain, |s| match s {
                    St::Absent => St::At(LIVE, now, fb),
                    St::At(b, l, set) => St::At(b, l, set | fb),
                });
            } else {
                map_states(states, certain, |s| withdraw(s, fb));
            }
        }
    }

    /// `sed -i '/group g/d'` on feed `f`'s file of `ty`: its list minus group `g`, which
    /// loses the feed (what it lists outside `g` is listed again: unchanged).
    pub(crate) fn source_sed(&mut self, ty: u8, f: usize, g: u32, certain: bool) {
        let fb = feed_bit(f);
        for (_, states) in self.ioc[usize::from(ty)]
            .iter_mut()
            .filter(|(id, _)| group(**id) == g)
        {
            self.feed_stats.count(states, fb, false);
            map_states(states, certain, |s| withdraw(s, fb));
        }
    }

    /// Per feed, how many indicators it certainly lists.
    pub(crate) fn feed_census(&self) -> [usize; 2] {
        let mut c = [0; 2];
        for (_, states) in self.entries() {
            for (f, n) in c.iter_mut().enumerate() {
                if states.iter().all(|s| s.set() & feed_bit(f) != 0) {
                    *n += 1;
                }
            }
        }
        c
    }
}

/// `s` no longer listed by the sources of `fb`: gone if nothing else lists it.
fn withdraw(s: St, fb: Set) -> St {
    match s {
        St::At(b, l, set) if set & fb != 0 => match set & !fb {
            0 => St::Absent,
            left => St::At(b, l, left),
        },
        other => other,
    }
}

// ---------------------------------------------------------------------------------------
// The workload

/// `mkdir` of each feed: at the start of a run (and harmless later: `EEXIST`).
pub(crate) fn declare(mnt: &Path) -> Result<(), String> {
    for feed in FEEDS {
        let dir = mnt.join("sources").join(feed);
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("mkdir {}: {e}", dir.display())),
        }
    }
    Ok(())
}

/// Replaces a feed's list of one type (`cp`, a scratch file renamed onto the name, or
/// `sed -i '/…/d'`), now and then tries `rmdir` of a feed that lists something, until the
/// daemon is killed. Each holds its type's lock for writing: a replace can remove
/// indicators, so it must not run beside appenders of its type (to any target) nor other
/// replaces or removals of it.
pub(crate) fn source_replacer(sh: &Shared, mut rng: Rng, round: u64) {
    let mut n = 0;
    while !sh.stopped() {
        sh.pause(&mut rng, 5, 60);
        let ty = rng.below(4) as u8;
        let f = rng.below(2) as usize;
        let _clock = rd(&sh.clock_lock);
        let _ty = wr(&sh.type_locks[usize::from(ty)]);
        if sh.stopped() {
            return;
        }
        let dir = sh.mnt.join("sources").join(FEEDS[f]);
        let target = dir.join(type_file(ty));
        let pick = rng.below(100);
        sh.ops.fetch_add(1, Ordering::Relaxed);
        if pick < 5 {
            // rmdir of a feed that certainly lists something (of the type whose lock is
            // held: nothing can withdraw it meanwhile) must fail with ENOTEMPTY.
            let fb = feed_bit(f);
            let listing = sh.model().ioc[usize::from(ty)]
                .values()
                .any(|s| s.iter().all(|s| s.set() & fb != 0));
            if listing {
                match std::fs::remove_dir(&dir) {
                    Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => {}
                    Err(e) => {
                        sh.failed(
                            &format!("rmdir {} (ENOTEMPTY expected)", dir.display()),
                            &e.to_string(),
                        );
                        return;
                    }
                    Ok(()) => {
                        sh.violation(format!(
                            "rmdir {}: removed a feed that lists indicators",
                            dir.display()
                        ));
                        return;
                    }
                }
            }
        } else if pick < 70 {
            let (list, now) = {
                let mut m = sh.model();
                (new_list(&mut m, ty, f, &mut rng), m.clock)
            };
            let mut ids: Vec<u32> = list.iter().copied().collect();
            ids.sort_unstable();
            for i in (1..ids.len()).rev() {
                ids.swap(i, rng.below(i as u64 + 1) as usize);
            }
            let text: String = ids.iter().map(|&id| value(ty, id) + "\n").collect();
            n += 1;
            let (what, result) = if pick < 45 {
                let src = sh.tmp.join(format!("feed-{round}-{n}.txt"));
                if let Err(e) = std::fs::write(&src, &text) {
                    sh.violation(format!("write {}: {e}", src.display()));
                    return;
                }
                let result = run(Command::new("cp").arg(&src).arg(&target));
                let _ = std::fs::remove_file(&src);
                (format!("cp to {}", target.display()), result)
            } else {
                // A scratch file does nothing until renamed, and does not survive a restart.
                let scratch = dir.join(format!(".torture-{round}-{n}.tmp"));
                if let Err(e) = std::fs::write(&scratch, &text) {
                    sh.failed(&format!("write {}", scratch.display()), &e.to_string());
                    return;
                }
                let result = std::fs::rename(&scratch, &target).map_err(|e| e.to_string());
                (
                    format!("rename {} onto its type file", scratch.display()),
                    result,
                )
            };
            match result {
                Ok(()) => {
                    sh.model().source_replace(ty, f, &list, now, true);
                    sh.ack(list.len());
                    sh.source_acked.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    sh.failed(&what, &e);
                    sh.model().source_replace(ty, f, &list, now, false);
                    return;
                }
            }
        } else {
            let g = rng.below(64) as u32;
            let script = sed_script(ty, g);
            match run(Command::new("sed").arg("-i").arg(&script).arg(&target)) {
                Ok(()) => {
                    sh.model().source_sed(ty, f, g, true);
                    sh.ack(0);
                    sh.source_acked.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    sh.failed(&format!("sed -i '{script}' {}", target.display()), &e);
                    sh.model().source_sed(ty, f, g, false);
                    return;
                }
            }
        }
    }
}

/// Feed `f`'s next list of `ty`: most of what it may list now (the rest withdrawn), a few
/// stored indicators it doesn't list (from any bucket), a few new ones.
fn new_list(m: &mut Model, ty: u8, f: usize, rng: &mut Rng) -> HashSet<u32> {
    let fb = feed_bit(f);
    m.pick_set(ty, rng, |s| s.set() & fb != 0, ((0, 8), (0, 10)))
}

// ---------------------------------------------------------------------------------------
// What the daemon says

/// Per value, the feeds whose files list it.
pub(crate) type Listed = HashMap<String, Set>;

/// Read every feed's nine files: the feeds listed (with `problems` for anything but a
/// canonical list: sorted, each value once, in its type's file). `sources/` must hold
/// exactly the declared feeds.
pub(crate) fn scan_listed(mnt: &Path, problems: &mut Vec<String>) -> Result<Listed, String> {
    let root = mnt.join("sources");
    let mut names: Vec<String> = std::fs::read_dir(&root)
        .map_err(|e| format!("read {}: {e}", root.display()))?
        .filter_map(|e| e.ok().and_then(|e| e.file_name().into_string().ok()))
        .collect();
    names.sort();
    if names != FEEDS {
        problems.push(format!("sources/ holds {names:?}, declared {FEEDS:?}"));
    }
    let mut listed = Listed::new();
    for (f, feed) in FEEDS.iter().enumerate() {
        for file in TYPE_FILES {
            let path = root.join(feed).join(file);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("read {}: {e}", path.display()))?;
            let ours = TYPES.iter().any(|t| format!("{t}.txt") == file);
            if !ours && !text.is_empty() {
                problems.push(format!("{} is not empty", path.display()));
                continue;
            }
            if text.is_empty() {
                continue;
            }
            let Some(body) = text.strip_suffix('\n') else {
                problems.push(format!("{} does not end with a newline", path.display()));
                continue;
            };
            let mut prev: Option<&str> = None;
            for line in body.split('\n') {
                if let Some(p) = prev {
                    if canonical_cmp(file, p, line) != std::cmp::Ordering::Less {
                        problems.push(format!(
                            "sources/{feed}/{file}: {line} after {p} (not sorted, or twice)"
                        ));
                    }
                }
                prev = Some(line);
                *listed.entry(line.to_string()).or_default() |= feed_bit(f);
            }
        }
    }
    Ok(listed)
}

/// The order of a source file: addresses numerically, other types bytewise.
fn canonical_cmp(file: &str, a: &str, b: &str) -> std::cmp::Ordering {
    if file == "ipv4.txt" {
        if let (Ok(x), Ok(y)) = (a.parse::<Ipv4Addr>(), b.parse::<Ipv4Addr>()) {
            return x.cmp(&y);
        }
    }
    a.as_bytes().cmp(b.as_bytes())
}
