//! Verification after a restart: the served state against the model.

use std::collections::HashMap;
use std::path::Path;
use std::time::UNIX_EPOCH;

use crate::common::{Rng, BUCKETS, TYPE_FILES};
use crate::model::{describe, type_file, value, Key, Model, St, TYPES};
use crate::sources::{parse_set, set_names, Listed, LOCAL};
use crate::workload::lookup_name;

/// How many violation messages are printed per check (all are counted).
const SHOW: usize = 12;
/// How many lookups each check makes.
const LOOKUPS: usize = 200;

#[derive(Default)]
pub(crate) struct Tally {
    pub(crate) lost: u64,
    pub(crate) duplicated: u64,
    pub(crate) other: u64,
    /// Indicators whose sources (a feed's files, or a lookup) are no possible state.
    pub(crate) sources_wrong: u64,
    pub(crate) check_failed: bool,
}

/// Every line served, with (bucket, file) for each place it is served from.
pub(crate) type Scan = HashMap<String, Vec<(u8, usize)>>;

pub(crate) fn scan(mnt: &Path) -> Result<Scan, String> {
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

pub(crate) struct Checker<'a> {
    pub(crate) tally: &'a mut Tally,
    pub(crate) shown: usize,
    pub(crate) ctx: String,
}

impl Checker<'_> {
    pub(crate) fn report(&mut self, what: String) {
        if self.shown < SHOW {
            println!("VIOLATION ({}): {what}", self.ctx);
        } else if self.shown == SHOW {
            println!("VIOLATION ({}): … more not shown", self.ctx);
        }
        self.shown += 1;
    }

    pub(crate) fn other(&mut self, what: String) {
        self.tally.other += 1;
        self.report(what);
    }

    /// A set of sources the model does not allow.
    pub(crate) fn sources_wrong(&mut self, what: String) {
        self.tally.sources_wrong += 1;
        self.report(what);
    }

    /// (a)/(b)/(c): the served lines and the feeds' lists against the model's possible
    /// states: each indicator's bucket, and which feeds list it, must be one possible state.
    pub(crate) fn against_model(&mut self, model: &Model, served: &Scan, listed: &Listed) {
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
        for line in listed.keys() {
            if !model.by_value.contains_key(line) {
                self.other(format!("{line} is listed by a feed but was never written"));
            }
        }
        let mut keys: Vec<(Key, &Vec<St>)> = model.entries().collect();
        keys.sort_unstable();
        for (k, states) in keys {
            let v = value(k.0, k.1);
            let actual = served.get(&v).map(|p| p[0].0);
            let feeds = listed.get(&v).copied().unwrap_or(0);
            if states.iter().any(|s| s.bucket() == actual) {
                // The feeds' files tell every bit but `local` (lookups check that one).
                if !states
                    .iter()
                    .any(|s| s.bucket() == actual && s.set() & !LOCAL == feeds)
                {
                    let where_ = actual.map_or("absent".to_string(), |b| {
                        format!("in {}", BUCKETS[usize::from(b)])
                    });
                    self.sources_wrong(format!(
                        "{v}: {where_}, listed by {:?}, expected {}",
                        set_names(feeds),
                        describe(states)
                    ));
                }
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

    /// Lookups of a sample of indicators: bucket, last seen and sources (`local` included)
    /// must be one possible state. Half of the sample is certainly present, half is among
    /// those some feed may list (where `local` is not the whole story).
    pub(crate) fn lookups(&mut self, model: &Model, mnt: &Path, rng: &mut Rng) {
        let mut certain: Vec<Key> = Vec::new();
        let mut fed: Vec<Key> = Vec::new();
        for (k, s) in model.entries() {
            if s.len() == 1 && s[0] != St::Absent {
                certain.push(k);
            }
            if s.iter().any(|s| s.set() & !LOCAL != 0) {
                fed.push(k);
            }
        }
        certain.sort_unstable();
        fed.sort_unstable();
        for pool in [&certain, &fed] {
            for _ in 0..pool.len().min(LOOKUPS / 2) {
                let k = pool[rng.below(pool.len() as u64) as usize];
                self.lookup(k, &model.ioc[usize::from(k.0)][&k.1], mnt);
            }
        }
    }

    fn lookup(&mut self, k: Key, states: &[St], mnt: &Path) {
        let v = value(k.0, k.1);
        let path = mnt.join(".iocfs/lookup").join(lookup_name(&v));
        let body = match std::fs::read_to_string(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !states.contains(&St::Absent) {
                    self.other(format!("lookup {v}: {e} (expected {})", describe(states)));
                }
                return;
            }
            Err(e) => {
                self.other(format!("lookup {v}: {e} (expected {})", describe(states)));
                return;
            }
        };
        let json: serde_json::Value = match serde_json::from_str(&body) {
            Ok(j) => j,
            Err(e) => {
                self.other(format!("lookup {v}: bad JSON {body:?}: {e}"));
                return;
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
        let set = match parse_set(&json["sources"]) {
            Ok(set) => set,
            Err(e) => {
                self.sources_wrong(format!("lookup {v}: {e} in {body:?}"));
                return;
            }
        };
        let (b, l) = match (bucket, last) {
            (Some(b), Some(l)) => (b, l),
            _ => {
                self.other(format!("lookup {v}: unexpected {body:?}"));
                return;
            }
        };
        if json["type"].as_str() != Some(TYPES[usize::from(k.0)]) {
            self.other(format!("lookup {v}: wrong type in {body:?}"));
        }
        let got = St::At(b, l, set);
        if states.contains(&got) {
            return;
        }
        let what = format!(
            "lookup {v}: {} ({body:?}), expected {}",
            describe(&[got]),
            describe(states)
        );
        if states
            .iter()
            .any(|s| matches!(*s, St::At(sb, sl, _) if (sb, sl) == (b, l)))
        {
            self.sources_wrong(what);
        } else {
            self.other(what);
        }
    }
}
