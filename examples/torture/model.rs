//! The model: indicator values, buckets by age, and per indicator the set of states the
//! daemon may be in.

use std::collections::{HashMap, HashSet};

use crate::common::{Rng, BUCKETS};
use crate::sources::{set_names, FeedStats, Set, LOCAL};

/// The manual clock's start: 2023-11-14T22:13:20Z.
pub(crate) const T0: u64 = 1_700_000_000;
pub(crate) const HOUR: u64 = 3600;
pub(crate) const DAY: u64 = 24 * HOUR;

/// The types the workload writes (index = type code in the model).
pub(crate) const TYPES: [&str; 4] = ["ipv4", "domain", "url", "sha256"];
pub(crate) const LIVE: u8 = 0;

/// The value of indicator `id` of type `ty`. `id % 64` is its group, which `sed -i` patterns
/// select on.
pub(crate) fn value(ty: u8, id: u32) -> String {
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

pub(crate) fn group(id: u32) -> u32 {
    id % 64
}

/// `sed` address matching exactly the values of group `g`.
pub(crate) fn sed_script(ty: u8, g: u32) -> String {
    match ty {
        0 => format!("/^10\\.{g}\\./d"),
        1 | 2 => format!("/g{g:02}x/d"),
        _ => format!("/^{g:02x}/d"),
    }
}

pub(crate) fn type_file(ty: u8) -> String {
    format!("{}.txt", TYPES[usize::from(ty)])
}

/// The bucket (0 live … 3 froid) for an indicator last seen at `last` when aged at `now`;
/// None once past froid_retention (default retention).
pub(crate) fn bucket_for(now: u64, last: u64) -> Option<u8> {
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
pub(crate) enum St {
    Absent,
    /// In bucket (0 live … 3 froid), last seen at, listed by the sources of the set (never
    /// empty: see `sources::Set`).
    At(u8, u64, Set),
}

impl St {
    pub(crate) fn bucket(self) -> Option<u8> {
        match self {
            St::Absent => None,
            St::At(b, _, _) => Some(b),
        }
    }

    /// The sources listing it (empty when absent).
    pub(crate) fn set(self) -> Set {
        match self {
            St::Absent => 0,
            St::At(_, _, set) => set,
        }
    }
}

pub(crate) fn describe(states: &[St]) -> String {
    let parts: Vec<String> = states
        .iter()
        .map(|s| match s {
            St::Absent => "absent".to_string(),
            St::At(b, l, set) => format!(
                "{} (last seen T0{:+}h, sources {})",
                BUCKETS[usize::from(*b)],
                (*l as i64 - T0 as i64) / HOUR as i64,
                set_names(*set).join("+")
            ),
        })
        .collect();
    parts.join(" or ")
}

pub(crate) type Key = (u8, u32);

#[derive(Default)]
pub(crate) struct Model {
    /// Per type, id → possible states (sorted, deduplicated); a key never written is
    /// certainly absent.
    pub(crate) ioc: [HashMap<u32, Vec<St>>; 4],
    pub(crate) next_id: [u32; 4],
    pub(crate) by_value: HashMap<String, Key>,
    /// The daemon's manual clock (as last acknowledged, or restarted at).
    pub(crate) clock: u64,
    /// The largest value ever written to the clock (acknowledged or not).
    pub(crate) max_clock: u64,
    pub(crate) feed_stats: FeedStats,
}

/// Apply `f` to every possible state; when the outcome is unknown (`certain` false) the old
/// states stay possible too.
pub(crate) fn map_states(states: &mut Vec<St>, certain: bool, f: impl Fn(St) -> St) {
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
    /// A new set of ids of `ty` for a replace: about 3 in 4 of the indicators `keep` holds
    /// for in some possible state, up to `others` (a range) of the other stored ones, and
    /// `new` (a range) new ones. Ids are visited in order, so a seed gives the same set.
    pub(crate) fn pick_set(
        &mut self,
        ty: u8,
        rng: &mut Rng,
        keep: impl Fn(&St) -> bool,
        (others, new): ((u64, u64), (u64, u64)),
    ) -> HashSet<u32> {
        let mut set = HashSet::new();
        let mut rest = Vec::new();
        let mut mine: Vec<(u32, &Vec<St>)> = self.ioc[usize::from(ty)]
            .iter()
            .map(|(&id, s)| (id, s))
            .collect();
        mine.sort_unstable();
        for (id, states) in mine {
            if states.iter().any(&keep) {
                if rng.chance(0.75) {
                    set.insert(id);
                }
            } else if states.iter().any(|s| s.bucket().is_some()) {
                rest.push(id);
            }
        }
        for _ in 0..rng.range(others.0, others.1).min(rest.len() as u64) {
            set.insert(rest[rng.below(rest.len() as u64) as usize]);
        }
        for _ in 0..rng.range(new.0, new.1) {
            set.insert(self.alloc(ty).1);
        }
        set
    }

    pub(crate) fn alloc(&mut self, ty: u8) -> Key {
        let id = self.next_id[usize::from(ty)];
        self.next_id[usize::from(ty)] += 1;
        self.by_value.insert(value(ty, id), (ty, id));
        (ty, id)
    }

    /// A key of `ty` written before (any state), or a new one if there is none yet.
    pub(crate) fn known(&mut self, ty: u8, rng: &mut Rng) -> Key {
        match self.next_id[usize::from(ty)] {
            0 => self.alloc(ty),
            n => (ty, rng.below(u64::from(n)) as u32),
        }
    }

    /// Every key ever written, with its possible states.
    pub(crate) fn entries(&self) -> impl Iterator<Item = (Key, &Vec<St>)> {
        self.ioc
            .iter()
            .enumerate()
            .flat_map(|(ty, m)| m.iter().map(move |(&id, s)| ((ty as u8, id), s)))
    }

    /// Apply `f` to every possible state of `k`; when the outcome is unknown (`certain`
    /// false) the old states stay possible too.
    pub(crate) fn update(&mut self, k: Key, certain: bool, f: impl Fn(St) -> St) {
        let states = self.ioc[usize::from(k.0)]
            .entry(k.1)
            .or_insert_with(|| vec![St::Absent]);
        map_states(states, certain, f);
    }

    /// A sighting of `keys` by the sources of `by` (`LOCAL` for live/, one feed for its
    /// files): live, last seen now, listed by them too.
    pub(crate) fn append(&mut self, keys: &[Key], now: u64, by: Set, certain: bool) {
        for &k in keys {
            self.update(k, certain, |s| St::At(LIVE, now, s.set() | by));
        }
    }

    pub(crate) fn remove(&mut self, keys: &[Key], certain: bool) {
        for &k in keys {
            self.update(k, certain, |_| St::Absent);
        }
    }

    /// `set` becomes the live set of `ty`: live lines in it keep their times, others in it
    /// are sighted now; live lines not in it are deleted; tier lines not in it stay. Stored
    /// ones keep their sources (a replace of live/ is not a sighting by `local`); new ones
    /// are listed by `local` alone.
    pub(crate) fn replace(&mut self, ty: u8, set: &HashSet<u32>, now: u64, certain: bool) {
        let map = &mut self.ioc[usize::from(ty)];
        for &id in set {
            map.entry(id).or_insert_with(|| vec![St::Absent]);
        }
        for (id, states) in map.iter_mut() {
            if set.contains(id) {
                map_states(states, certain, |s| match s {
                    St::At(LIVE, ..) => s,
                    St::At(_, _, set) => St::At(LIVE, now, set),
                    St::Absent => St::At(LIVE, now, LOCAL),
                });
            } else {
                map_states(states, certain, |s| match s {
                    St::At(LIVE, ..) => St::Absent,
                    other => other,
                });
            }
        }
    }

    /// `sed -i '/group g/d'` on the live file of `ty`.
    pub(crate) fn sed(&mut self, ty: u8, g: u32, certain: bool) {
        for (_, states) in self.ioc[usize::from(ty)]
            .iter_mut()
            .filter(|(id, _)| group(**id) == g)
        {
            map_states(states, certain, |s| match s {
                St::At(LIVE, ..) => St::Absent,
                other => other,
            });
        }
    }

    /// One aging step at `now`: indicators move to older buckets only (keeping their
    /// sources), or are dropped.
    pub(crate) fn age(&mut self, now: u64, certain: bool) {
        for states in self.ioc.iter_mut().flat_map(|m| m.values_mut()) {
            map_states(states, certain, |s| match s {
                St::Absent => St::Absent,
                St::At(b, l, set) => match bucket_for(now, l) {
                    None => St::Absent,
                    Some(nb) => St::At(nb.max(b), l, set),
                },
            });
        }
    }

    /// (certainly present, certainly absent, uncertain) among keys ever written.
    pub(crate) fn census(&self) -> (usize, usize, usize) {
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
