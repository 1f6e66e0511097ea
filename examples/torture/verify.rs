//! Verification after a restart: the served state against the model.

use std::collections::HashMap;
use std::path::Path;
use std::time::UNIX_EPOCH;

use crate::common::{Rng, BUCKETS, TYPE_FILES};
use crate::model::{describe, type_file, value, Key, Model, St, TYPES};
use crate::workload::lookup_name;

/// How many violation messages are printed per check (all are counted).
const SHOW: usize = 12;

#[derive(Default)]
pub(crate) struct Tally {
    pub(crate) lost: u64,
    pub(crate) duplicated: u64,
    pub(crate) other: u64,
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

    /// (a)/(b)/(c): the served lines against the model's possible states.
    pub(crate) fn against_model(&mut self, model: &Model, served: &Scan) {
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
    pub(crate) fn lookups(&mut self, model: &Model, mnt: &Path, rng: &mut Rng) {
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
