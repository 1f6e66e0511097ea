//! Sources at the store's surface (README "Sources"): declaring and removing them, the
//! read of what one lists now, and who lists an indicator.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use super::health::{Kind, Problem};
use super::live::{LiveVersion, Storage};
use super::model::{PartId, SourceId, Target, Tier, LOCAL};
use super::mutation::Op;
use super::state::{valid_name, SourceTimes, State};
use super::Store;
use crate::error::{Error, Result};
use crate::ioc::IocType;
use crate::sync::lock;

/// The last built version of one source file.
#[derive(Clone)]
struct Built {
    /// The change count (see `list_count`) it reflects.
    count: u64,
    version: Arc<LiveVersion>,
    /// When it was built, or last found to hold the list still (clock seconds).
    at: u64,
}

/// The source files' last built versions. Entries are never removed: a source id declared
/// again in the same session must not take the fixed id of the one removed (the kernel may
/// still hold that inode).
#[derive(Default)]
struct SourceVersions {
    built: HashMap<(SourceId, IocType), Built>,
    /// The files whose first version of this start took their fixed id.
    fixed_taken: HashSet<(SourceId, IocType)>,
}

/// One at a time: a declaration or removal is checked, then journaled, and no other can
/// slip in between (apply must not see a conflicting record).
#[derive(Default)]
pub struct SourceRegistryLock {
    registry: Mutex<()>,
    versions: Mutex<SourceVersions>,
}

/// What stats.json shows of one source.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SourceStats {
    pub name: String,
    /// Stored indicators it lists.
    pub listed: u64,
    /// Unix seconds, 0: never.
    pub last_append: u64,
    pub last_replace: u64,
    pub declared: u64,
    /// Lines its writes carried since the daemon started.
    pub accepted: u64,
    pub rejected: u64,
}

impl Store {
    /// `mkdir sources/NAME`.
    pub fn declare_source(&self, name: &str) -> Result<SourceId> {
        if !valid_name(name) {
            return Err(Error::Invalid(format!(
                "{name:?} can't name a source: use 1 to 64 of a-z, 0-9, '_' and '-' (and not 'local')"
            )));
        }
        let _one_at_a_time = lock(&self.sources.registry);
        let id = {
            let st = self.state();
            if st.provenance().id_of(name).is_some() {
                return Err(Error::Exists(format!("source {name} exists already")));
            }
            st.provenance().free_id().ok_or_else(|| {
                Error::Full(format!(
                    "source {name}: {} sources are declared already, the most there can be",
                    super::model::MAX_SOURCES
                ))
            })?
        };
        self.submit(Op::DeclareSource {
            id,
            name: name.to_string(),
        })?;
        log::info!("source {name} declared (id {id})");
        Ok(id)
    }

    /// `rmdir sources/NAME`: only a source that lists nothing.
    pub fn remove_source(&self, name: &str) -> Result<()> {
        let _one_at_a_time = lock(&self.sources.registry);
        let id = self.declared_source(name)?;
        if self.state().source_lists_any(id) {
            return Err(not_empty(name));
        }
        self.submit(Op::RemoveSource { id })?;
        // A write that raced this request may have made it list something again.
        if self.state().provenance().info(id).is_some() {
            return Err(not_empty(name));
        }
        log::info!("source {name} removed");
        Ok(())
    }

    /// The id of a declared source (not `local`, which has no folder).
    pub fn declared_source(&self, name: &str) -> Result<SourceId> {
        match self.state().provenance().id_of(name) {
            Some(id) if id != LOCAL => Ok(id),
            _ => Err(Error::NotFound(format!("no source named {name}"))),
        }
    }

    /// The declared sources, by id.
    pub fn source_names(&self) -> Vec<(SourceId, String)> {
        self.state()
            .provenance()
            .declared()
            .into_iter()
            .map(|(id, i)| (id, i.name))
            .collect()
    }

    /// The name of a source by id, while it is declared.
    pub fn source_name(&self, id: SourceId) -> Option<String> {
        self.state().provenance().info(id).map(|i| i.name.clone())
    }

    /// Who lists a stored indicator, `local` first (None: not stored).
    pub fn sources_of(&self, ty: IocType, value: &[u8]) -> Option<Vec<String>> {
        let st = self.state();
        let set = st.sources_of(&st.key(ty, value))?;
        Some(st.provenance().names_of(set))
    }

    /// What `sources/<id>/<ty>.txt` reads now: the values the source lists, in canonical
    /// order (addresses numerically, the rest bytewise). Built when its type's provenance
    /// changed since the last read; a tier block that can't be read leaves its lines out
    /// (logged), as views do.
    ///
    /// Its mtime is when its content last changed, as for every file: a rebuild with the
    /// same content (another source wrote to the type) keeps the version, inode and mtime;
    /// a new one is dated by the source's last write to the type when that write made it,
    /// also after a start, where the first version has a fixed id ([`first_list_id`]): a
    /// restart is no change for `rsync`, backup tools or a web server's `Last-Modified`.
    pub fn source_version(&self, id: SourceId, ty: IocType) -> Arc<LiveVersion> {
        let count = list_count(&self.state(), id, ty);
        let cached = lock(&self.sources.versions).built.get(&(id, ty)).cloned();
        if let Some(b) = cached.as_ref().filter(|b| b.count == count) {
            return b.version.clone();
        }
        let st = self.state();
        // Counted again under the same lock the content is read under.
        let count = list_count(&st, id, ty);
        let (text, lines, unreadable) = listed_text(&st, id, ty, &self.cache);
        let fresh_id = st.new_id();
        let SourceTimes {
            last_append,
            last_replace,
        } = st.provenance().times(ty, id);
        drop(st);
        if unreadable > 0 {
            log::warn!(
                "sources: {unreadable} unreadable tier blocks left out of a source list of {ty}"
            );
        }
        let now = self.clock.now();
        let remember = |version: &Arc<LiveVersion>| {
            let built = Built {
                count,
                version: version.clone(),
                at: now,
            };
            lock(&self.sources.versions).built.insert((id, ty), built);
        };
        if let Some(b) = cached.as_ref().filter(|b| b.version.holds(&text)) {
            remember(&b.version);
            return b.version.clone();
        }
        // Built when first read after the change: a change the source's own write made (it
        // wrote since the last build) is dated by that write; one it did not make (a
        // removal, another feed's replace of live/) by now. Whole seconds, the nanoseconds
        // numbering the version, as for live files.
        let last_write = last_append.max(last_replace);
        let since = cached.as_ref().map_or(0, |b| b.at);
        let mtime = if last_write > since && last_write <= now {
            last_write
        } else {
            now
        };
        // The fixed id goes to one version per file and start, decided under the lock: two
        // first builds racing a write must not give one inode two contents.
        let new_id = if lock(&self.sources.versions).fixed_taken.insert((id, ty)) {
            first_list_id(id, ty)
        } else {
            fresh_id
        };
        let version = match LiveVersion::new(
            new_id,
            (Target::Source(id), ty),
            &text,
            lines,
            mtime,
            &Storage::Memfd,
        ) {
            Ok(v) => v,
            Err(e) => {
                log::error!("sources: can't hold a source list of {ty} in memory: {e}");
                return cached
                    .map(|b| b.version)
                    .unwrap_or_else(|| self.current((Target::Live, ty)));
            }
        };
        remember(&version);
        version
    }

    /// Per source, for stats.json: `local` first.
    pub fn source_stats(&self) -> Vec<SourceStats> {
        let st = self.state();
        let p = st.provenance();
        let stored: u64 = IocType::ALL.into_iter().map(|ty| st.stored_lines(ty)).sum();
        p.sources()
            .map(|(id, info)| {
                let times = IocType::ALL.into_iter().map(|ty| p.times(ty, id)).fold(
                    SourceTimes::default(),
                    |a, t| SourceTimes {
                        last_append: a.last_append.max(t.last_append),
                        last_replace: a.last_replace.max(t.last_replace),
                    },
                );
                let listed = if id == LOCAL {
                    stored.saturating_sub(
                        IocType::ALL.into_iter().map(|ty| p.lacking_local(ty)).sum(),
                    )
                } else {
                    IocType::ALL.into_iter().map(|ty| p.listed(ty, id)).sum()
                };
                SourceStats {
                    name: info.name.clone(),
                    listed,
                    last_append: times.last_append,
                    last_replace: times.last_replace,
                    declared: info.declared,
                    accepted: p.accepted(id),
                    rejected: self.counters.rejected_by_source[usize::from(id)]
                        .load(std::sync::atomic::Ordering::Relaxed),
                }
            })
            .collect()
    }
}

impl Store {
    /// `[sources.NAME] expect_every`: a source with no successful write for twice that
    /// (since it was declared, if it never wrote), or one configured but not declared.
    pub(super) fn stale_sources(&self) -> Vec<Problem> {
        let config = self.config();
        let now = self.clock.now();
        let st = self.state();
        let p = st.provenance();
        let mut out = Vec::new();
        for (name, def) in &config.sources.defs {
            let Some(every) = def.expect_every else {
                continue;
            };
            let Some(id) = p.id_of(name).filter(|&id| id != LOCAL) else {
                out.push(Problem::about(
                    Kind::Source,
                    name.clone(),
                    format!("configured but not declared (mkdir MOUNT/sources/{name})"),
                ));
                continue;
            };
            let last = IocType::ALL
                .into_iter()
                .map(|ty| {
                    let t = p.times(ty, id);
                    t.last_append.max(t.last_replace)
                })
                .max()
                .unwrap_or(0);
            let since = if last > 0 {
                last
            } else {
                p.info(id).map_or(0, |i| i.declared)
            };
            let quiet = now.saturating_sub(since);
            if quiet > 2 * every.as_secs() {
                let what = if last > 0 {
                    "no write"
                } else {
                    "no write since it was declared"
                };
                out.push(Problem::about(
                    Kind::Source,
                    name.clone(),
                    format!(
                        "{what} for {} (expected every {})",
                        humantime::format_duration(std::time::Duration::from_secs(quiet)),
                        humantime::format_duration(every)
                    ),
                ));
            }
        }
        out
    }
}

/// Ids of the first version of each source list after a start: fixed per (source, type),
/// between the fixed inodes and the counter's range, so a list unchanged across a restart
/// keeps its inode and the nanoseconds of its mtime (backup tools compare both).
const FIRST_LIST_IDS: u64 = 1 << 24;

/// The id of the first version of `sources/<id>/<ty>.txt` after a start.
pub fn first_list_id(id: SourceId, ty: IocType) -> u64 {
    FIRST_LIST_IDS + u64::from(id) * IocType::ALL.len() as u64 + u64::from(ty.code())
}

/// What a source's list of `ty` depends on: the type's provenance changes; for `local`,
/// whose new indicators take no provenance entry, every change to the type's buckets too.
fn list_count(st: &State, id: SourceId, ty: IocType) -> u64 {
    let provenance = st.changes().part_count(PartId::Sources(ty));
    if id != LOCAL {
        return provenance;
    }
    crate::store::model::Bucket::ALL
        .into_iter()
        .map(|b| st.changes().count(b, ty))
        .fold(provenance, u64::wrapping_add)
}

fn not_empty(name: &str) -> Error {
    Error::NotEmpty(format!(
        "source {name} still lists indicators: replace its files with empty ones first"
    ))
}

/// What `id` lists of `ty` as the file's text (canonical order) and its line count, and
/// how many tier blocks could not be read. Each stored line is keyed and its slot's source
/// set checked; the values go to one arena (a million small allocations and their frees
/// cost more than the rest together).
fn listed_text(
    st: &State,
    id: SourceId,
    ty: IocType,
    cache: &crate::cache::BlockCache,
) -> (Vec<u8>, u64, usize) {
    if id != LOCAL && st.provenance().listed(ty, id) == 0 {
        return (Vec::new(), 0, 0);
    }
    let want = super::state::bit(id);
    let mut arena = Vec::new();
    let mut spans: Vec<(usize, usize)> = Vec::new();
    let mut take = |v: &[u8]| {
        if st
            .sources_of(&st.key(ty, v))
            .is_some_and(|set| set & want != 0)
        {
            spans.push((arena.len(), v.len()));
            arena.extend_from_slice(v);
        }
    };
    let mut unreadable = 0;
    if st.live(ty).for_each_line(|v, _| take(v)).is_err() {
        unreadable += 1;
    }
    for tier in Tier::ALL {
        for block in st.tier(tier, ty).blocks() {
            match block.raw(cache) {
                Ok(raw) => crate::store::tier::lines(&raw).for_each(&mut take),
                Err(_) => unreadable += 1,
            }
        }
    }
    let value = |&(at, len): &(usize, usize)| &arena[at..at + len];
    // Addresses and networks numerically, everything else bytewise.
    if matches!(ty, IocType::Ipv4 | IocType::Ipv6) {
        let mut keyed: Vec<(Option<crate::cidr::Net>, (usize, usize))> = spans
            .iter()
            .map(|s| {
                let net = std::str::from_utf8(value(s))
                    .ok()
                    .and_then(|t| t.parse().ok());
                (net, *s)
            })
            .collect();
        keyed.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| value(&a.1).cmp(value(&b.1))));
        spans = keyed.into_iter().map(|(_, s)| s).collect();
    } else {
        spans.sort_unstable_by(|a, b| value(a).cmp(value(b)));
    }
    let mut text = Vec::with_capacity(arena.len() + spans.len());
    for s in &spans {
        text.extend_from_slice(value(s));
        text.push(b'\n');
    }
    (text, spans.len() as u64, unreadable)
}
