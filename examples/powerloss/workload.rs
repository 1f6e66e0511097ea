//! The seeded workload of the power-loss driver, run against the engine directly (no FUSE):
//! appends (new indicators and re-sightings), replaces (small ones in one record, large ones
//! staged in pieces), removals, imports into every bucket, aging steps on the manual clock,
//! commits and checkpoints. Choices depend only on the seed and on the store's state, so a
//! run and its re-runs (with a fault injected) take the same steps.

use std::collections::BTreeMap;
use std::sync::Arc;

use iocfs::clock::ManualClock;
use iocfs::disk::sim::Rng;
use iocfs::error::Result;
use iocfs::ioc::IocType;
use iocfs::store::model::{Bucket, Target};
use iocfs::store::mutation::Op;
use iocfs::store::staged::StagedReplace;
use iocfs::store::state::LOCAL_NAME;
use iocfs::store::Store;

/// The manual clock's start: 2023-11-14T22:13:20Z.
pub const T0: u64 = 1_700_000_000;
const HOUR: u64 = 3600;

pub const TYPES: [IocType; 3] = [IocType::Ipv4, IocType::Domain, IocType::Sha256];

/// One step of the workload: a mutation, or a commit or checkpoint.
#[derive(Debug, Clone)]
pub enum Action {
    Append(IocType, Vec<u8>),
    /// Lines appended to the allowlist (`allow/<type>.txt`).
    Allow(IocType, Vec<u8>),
    Replace(IocType, Vec<u8>),
    /// A replace journaled in pieces (the record limit is lowered: see `driver_config`).
    Staged(IocType, Vec<u8>),
    Remove(Vec<(IocType, Vec<u8>)>),
    Import(Bucket, IocType, Vec<u8>, Vec<(u32, u32)>),
    /// Move the clock on by this many seconds, then one aging step.
    Age(u64),
    Commit,
    Checkpoint,
    /// `mkdir sources/NAME`.
    Declare(&'static str),
    /// Lines appended to a source's file: sightings by it.
    SourceAppend(&'static str, IocType, Vec<u8>),
    /// A source's whole list of a type (journaled in pieces when large).
    SourceReplace(&'static str, IocType, Vec<u8>),
}

/// The feeds the workload writes as.
pub const FEEDS: [&str; 2] = ["feed_a", "feed_b"];

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Action::Append(..) => "append",
            Action::Allow(..) => "allowlist append",
            Action::Replace(..) => "replace",
            Action::Staged(..) => "staged replace",
            Action::Remove(..) => "remove",
            Action::Import(..) => "import",
            Action::Age(_) => "age",
            Action::Commit => "commit",
            Action::Checkpoint => "checkpoint",
            Action::Declare(_) => "declare source",
            Action::SourceAppend(..) => "source append",
            Action::SourceReplace(..) => "source replace",
        }
    }

    /// Whether it changes what is stored (commits and checkpoints only move it to files).
    pub fn is_mutation(&self) -> bool {
        !matches!(self, Action::Commit | Action::Checkpoint)
    }
}

pub struct Workload {
    rng: Rng,
    made: u64,
    declared: usize,
}

fn value(ty: IocType, n: u64) -> Vec<u8> {
    let v = match ty {
        IocType::Ipv4 => format!("1.{}.{}.{}", (n >> 16) & 255, (n >> 8) & 255, n & 255),
        IocType::Domain => format!("h{n}.example.com"),
        _ => {
            let mut r = Rng::new(n);
            (0..4).map(|_| format!("{:016x}", r.next_u64())).collect()
        }
    };
    v.into_bytes()
}

impl Workload {
    pub fn new(seed: u64) -> Workload {
        Workload {
            rng: Rng::new(seed),
            made: 0,
            declared: 0,
        }
    }

    fn ty(&mut self) -> IocType {
        TYPES[self.rng.below(TYPES.len() as u64) as usize]
    }

    /// A new indicator, or (`known`% of the time) one made before: a re-sighting.
    fn pick(&mut self, ty: IocType, known: u64) -> Vec<u8> {
        if self.made > 0 && self.rng.chance(known) {
            return value(ty, 1 + self.rng.below(self.made));
        }
        self.made += 1;
        value(ty, self.made)
    }

    fn lines(&mut self, ty: IocType, n: u64, known: u64) -> Vec<u8> {
        let mut out = Vec::new();
        for _ in 0..n {
            out.extend(self.pick(ty, known));
            out.push(b'\n');
        }
        out
    }

    /// Part of the live set of `ty`, some new lines and some known ones (from any bucket).
    fn new_set(&mut self, store: &Store, ty: IocType, extra: u64) -> Vec<u8> {
        let live = store.live(ty).read_all().unwrap_or_default();
        let mut out = Vec::new();
        for line in live.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            if self.rng.chance(70) {
                out.extend_from_slice(line);
                out.push(b'\n');
            }
        }
        let fresh = self.lines(ty, extra, 30);
        out.extend(fresh);
        out
    }

    /// Part of what `feed` lists of `ty`, some new lines and some known ones.
    fn feed_set(&mut self, store: &Store, feed: &str, ty: IocType, extra: u64) -> Vec<u8> {
        let listed = store
            .declared_source(feed)
            .map(|id| store.source_version(id, ty).read_all().unwrap_or_default())
            .unwrap_or_default();
        let mut out = Vec::new();
        for line in listed.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            if self.rng.chance(70) {
                out.extend_from_slice(line);
                out.push(b'\n');
            }
        }
        out.extend(self.lines(ty, extra, 40));
        out
    }

    pub fn next(&mut self, store: &Store) -> Action {
        if self.declared < FEEDS.len() {
            self.declared += 1;
            return Action::Declare(FEEDS[self.declared - 1]);
        }
        let roll = self.rng.below(100);
        let ty = self.ty();
        let feed = FEEDS[self.rng.below(FEEDS.len() as u64) as usize];
        match roll {
            0..=27 => {
                let n = 1 + self.rng.below(8);
                Action::Append(ty, self.lines(ty, n, 30))
            }
            28..=31 => {
                let n = 1 + self.rng.below(6);
                Action::SourceAppend(feed, ty, self.lines(ty, n, 40))
            }
            32..=35 => {
                let extra = if self.rng.chance(20) {
                    250
                } else {
                    self.rng.below(6)
                };
                Action::SourceReplace(feed, ty, self.feed_set(store, feed, ty, extra))
            }
            36..=39 => {
                let n = 1 + self.rng.below(3);
                Action::Allow(ty, self.lines(ty, n, 50))
            }
            40..=47 => {
                let extra = self.rng.below(6);
                Action::Replace(ty, self.new_set(store, ty, extra))
            }
            48..=51 => Action::Staged(ty, self.new_set(store, ty, 250)),
            52..=58 => {
                let n = 1 + self.rng.below(4);
                Action::Remove((0..n).map(|_| (ty, self.pick(ty, 100))).collect())
            }
            59..=64 => {
                let bucket = Bucket::ALL[self.rng.below(4) as usize];
                let n = 1 + self.rng.below(6);
                let values = self.lines(ty, n, 40);
                let now = store.clock.now();
                let times = (0..n)
                    .map(|_| {
                        let seen = now.saturating_sub(self.rng.below(40 * 24 * HOUR));
                        (seen as u32, seen as u32)
                    })
                    .collect();
                Action::Import(bucket, ty, values, times)
            }
            65..=76 => Action::Age(HOUR + self.rng.below(96 * HOUR)),
            77..=91 => Action::Commit,
            _ => Action::Checkpoint,
        }
    }
}

/// A replace as the FUSE layer journals it: one record, or pieces past one record's piece
/// (or always, `staged`).
fn replace_as_fuse(
    store: &Store,
    (target, ty): (Target, IocType),
    values: &[u8],
    staged: bool,
) -> Result<()> {
    if !staged && values.len() <= store.replace_part_size() {
        return store.replace_to(target, ty, values.to_vec()).map(drop);
    }
    let mut staged = StagedReplace::new(target, ty);
    let pushed = values
        .chunks(1024)
        .try_for_each(|piece| staged.push(store, piece));
    match pushed {
        Ok(()) => staged.finish(store).map(drop),
        Err(e) => {
            staged.abort(store);
            Err(e)
        }
    }
}

/// Run an action; Ok means acknowledged.
pub fn run(action: &Action, store: &Store, clock: &Arc<ManualClock>) -> Result<()> {
    match action {
        Action::Declare(name) => match store.declared_source(name) {
            Ok(_) => Ok(()),
            Err(_) => store.declare_source(name).map(drop),
        },
        Action::SourceAppend(feed, ty, values) => {
            let id = store.declared_source(feed)?;
            store
                .append_to(Target::Source(id), *ty, values.clone())
                .map(drop)
        }
        Action::SourceReplace(feed, ty, values) => {
            let id = store.declared_source(feed)?;
            replace_as_fuse(store, (Target::Source(id), *ty), values, false)
        }
        Action::Append(ty, values) => store.append(*ty, values.clone()).map(drop),
        Action::Allow(ty, values) => store
            .append_to(Target::Allow, *ty, values.clone())
            .map(drop),
        // As the FUSE layer does: a set past one record's piece is journaled in pieces.
        Action::Replace(ty, values) => replace_as_fuse(store, (Target::Live, *ty), values, false),
        Action::Staged(ty, values) => replace_as_fuse(store, (Target::Live, *ty), values, true),
        Action::Remove(items) => store.remove(items.clone()).map(drop),
        Action::Import(bucket, ty, values, times) => store
            .submit(Op::Import {
                bucket: *bucket,
                ty: *ty,
                values: values.clone(),
                times: times.clone(),
                source: iocfs::store::model::LOCAL,
            })
            .map(drop),
        Action::Age(secs) => {
            clock.advance(*secs);
            store.age().map(drop)
        }
        Action::Commit => store.commit().map(drop),
        Action::Checkpoint => store.checkpoint().map(drop),
    }
}

/// What the store serves: live and allowlist files byte for byte (their order is part of
/// the promise), tier files as sorted lines (a block layout is not). Keyed by directory.
pub type Contents = BTreeMap<(&'static str, IocType), Vec<u8>>;

pub fn contents(store: &Store) -> Result<Contents> {
    let mut out = Contents::new();
    for bucket in Bucket::ALL {
        for ty in TYPES {
            let bytes = match bucket.tier() {
                None => store.live(ty).read_all()?,
                Some(tier) => {
                    let v = store.tier(tier, ty);
                    let raw = v.read(0, v.size() as usize, &store.cache)?;
                    let mut lines: Vec<&[u8]> = raw
                        .split(|&b| b == b'\n')
                        .filter(|l| !l.is_empty())
                        .collect();
                    lines.sort();
                    lines
                        .iter()
                        .flat_map(|l| l.iter().chain(b"\n"))
                        .copied()
                        .collect()
                }
            };
            if !bytes.is_empty() {
                out.insert((bucket.name(), ty), bytes);
            }
        }
    }
    for ty in TYPES {
        let bytes = store.allow_version(ty).read_all()?;
        if !bytes.is_empty() {
            out.insert(("allow", ty), bytes);
        }
    }
    // Who lists what: each feed's list and local's, sorted; and which feeds are declared
    // (a lost declaration shows even when the feed lists nothing).
    let declared: Vec<u8> = store
        .source_names()
        .iter()
        .flat_map(|(_, n)| n.bytes().chain([b'\n']))
        .collect();
    if !declared.is_empty() {
        out.insert(("sources/declared", IocType::Ipv4), declared);
    }
    for (name, key) in [
        (LOCAL_NAME, "sources/local"),
        (FEEDS[0], "sources/feed_a"),
        (FEEDS[1], "sources/feed_b"),
    ] {
        let id = match store.declared_source(name) {
            Ok(id) => id,
            Err(_) if name == LOCAL_NAME => iocfs::store::model::LOCAL,
            Err(_) => continue,
        };
        for ty in TYPES {
            let bytes = store.source_version(id, ty).read_all()?;
            if !bytes.is_empty() {
                out.insert((key, ty), bytes);
            }
        }
    }
    Ok(out)
}

/// Every (type, value) stored, whatever its bucket.
pub fn values(c: &Contents) -> std::collections::BTreeSet<(IocType, Vec<u8>)> {
    c.iter()
        .filter(|((dir, _), _)| !dir.starts_with("sources/"))
        .flat_map(|((_, ty), bytes)| {
            bytes
                .split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .map(move |l| (*ty, l.to_vec()))
        })
        .collect()
}
