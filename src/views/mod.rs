//! Views (README "Views"): curated, firewall-ready lists built from the buckets and served
//! read-only as `views/<view>/<type>.txt`.
//!
//! A view file is an immutable version with its own inode; a build that yields the same
//! bytes keeps the version (inode and mtime), across restarts too (`disk`), so a web
//! server's ETag and Last-Modified change exactly when the list does. Builds run in the
//! background (the daemon's views thread): a file is rebuilt when its inputs changed — the
//! partitions it reads, its definition, or time passing `max_age` — and its last build is
//! at least `[views] refresh` old. Readers keep the last complete version meanwhile. A
//! rebuild that would shrink a file and remove more than `max_shrink` of its entries at
//! once is held (health says so) until `release-view NAME`.
//!
//! Building one file: `select` (buckets, max_age) → `suppress` (allowlist, reserved ranges)
//! → `render` (format, max_entries newest first, aggregation, canonical order) → publish or
//! hold.

pub mod disk;
mod first_build;
pub mod format;
mod fresh;
mod line_index;
mod lookup;
pub mod nets;
mod publish;
pub mod render;
pub mod select;
pub mod suppress;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use crate::config::views::{View, Views as ViewsConfig};
use crate::error::{Error, Result};
use crate::ioc::IocType;
use crate::store::health::{Kind, Problem};
use crate::store::Store;
use crate::sync::{lock, read, write};
use disk::{Disk, ViewFile};
use publish::Held;
use render::FileStats;

/// Inode numbers of view files start here, far above every other id the daemon hands out
/// (fixed inodes, fixed source-list ids from 2^24, then a counter from 2^32), so a persisted
/// one can never collide.
pub const FIRST_VIEW_INO: u64 = 1 << 62;

/// Called with the inode a new version superseded (the FUSE layer drops its cached attrs).
pub type SupersededHook = Box<dyn Fn(u64) + Send + Sync>;

type FileKey = (String, IocType);

pub struct Views {
    disk: Disk,
    allow: suppress::AllowIndexes,
    config: RwLock<Arc<ViewsConfig>>,
    published: RwLock<BTreeMap<FileKey, Arc<ViewFile>>>,
    files: Mutex<BTreeMap<FileKey, FileState>>,
    /// One build pass at a time (the views thread, ctl refresh-views and release-view).
    build: Mutex<()>,
    next_ino: AtomicU64,
    hooks: RwLock<Vec<SupersededHook>>,
    wake: Condvar,
    woken: Mutex<bool>,
    /// Bumped whenever what `stats` or `problems` shows changes (a shared stats.json
    /// snapshot knows it is stale).
    changes: AtomicU64,
    first_builds: first_build::FirstBuilds,
}

#[derive(Default)]
struct FileState {
    /// What the last build read: a new build is due when this changes.
    built_from: Option<Inputs>,
    built_at: Option<Instant>,
    /// Clock time at which `max_age` drops an indicator the last build included.
    expires: Option<u64>,
    last: Option<BuildInfo>,
    held: Option<Held>,
}

#[derive(Clone, PartialEq)]
struct Inputs {
    counts: Vec<u64>,
    /// The provenance change count of the type, for a view that selects by source.
    provenance: Option<u64>,
    /// Change counts of the allowlists the file is filtered by (`suppress::inputs_of`).
    allow: Vec<u64>,
    suppress_reserved: bool,
    def: View,
}

impl Inputs {
    /// What a build of `def`'s file of `ty` would read now.
    fn now(store: &Store, config: &ViewsConfig, def: &View, ty: IocType) -> Inputs {
        Inputs {
            counts: def
                .buckets
                .iter()
                .map(|&b| store.change_count(b, ty))
                .collect(),
            provenance: def
                .by_source()
                .then(|| store.change_count_of(crate::store::PartId::Sources(ty))),
            allow: allow_counts(store, ty),
            suppress_reserved: config.suppress_reserved,
            def: def.clone(),
        }
    }
}

impl AsRef<View> for Inputs {
    fn as_ref(&self) -> &View {
        &self.def
    }
}

/// The last build of one file, for stats.json.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct BuildInfo {
    #[serde(flatten)]
    pub stats: FileStats,
    /// Clock time of the build.
    pub at: u64,
    /// What building this file took: the selection (shared by the files of views that
    /// select alike, see `build_files`) and its own rendering.
    pub millis: u64,
    /// Damaged tier blocks the build could not read.
    pub unreadable_blocks: u64,
}

impl Views {
    /// Open `DATA/views` and take up the versions published before the last stop.
    pub fn open(
        fs: &crate::disk::Disk,
        data_dir: &std::path::Path,
        config: &ViewsConfig,
    ) -> Result<Views> {
        let disk = Disk::open(fs, data_dir)?;
        let mut published = BTreeMap::new();
        let mut next = FIRST_VIEW_INO;
        for (name, def) in &config.defs {
            for &ty in &def.types {
                if let Some(f) = disk.load(name, ty) {
                    next = next.max(f.ino + 1);
                    published.insert((name.clone(), ty), Arc::new(f));
                }
            }
        }
        Ok(Views {
            disk,
            allow: suppress::AllowIndexes::default(),
            config: RwLock::new(Arc::new(config.clone())),
            published: RwLock::new(published),
            files: Mutex::new(BTreeMap::new()),
            build: Mutex::new(()),
            next_ino: AtomicU64::new(next),
            hooks: RwLock::new(Vec::new()),
            wake: Condvar::new(),
            woken: Mutex::new(false),
            changes: AtomicU64::new(0),
            first_builds: first_build::FirstBuilds::default(),
        })
    }

    pub fn config(&self) -> Arc<ViewsConfig> {
        read(&self.config).clone()
    }

    /// A new `[views]` config (SIGHUP): views are added, changed and removed by the next
    /// build pass.
    pub fn set_config(&self, config: ViewsConfig) {
        *write(&self.config) = Arc::new(config);
        self.changes.fetch_add(1, Ordering::Relaxed);
        self.wake();
    }

    /// Changes to what `stats` and `problems` show, so far.
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Relaxed)
    }

    pub fn on_superseded(&self, hook: SupersededHook) {
        write(&self.hooks).push(hook);
    }

    /// The configured view names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.config().defs.keys().cloned().collect()
    }

    /// The types a view serves.
    pub fn types(&self, view: &str) -> Option<Vec<IocType>> {
        self.config().defs.get(view).map(|d| d.types.clone())
    }

    /// The index of the allowlist of `ty` the builds use (see `suppress`).
    pub fn allow_index(&self, store: &Store, ty: IocType) -> Result<Arc<suppress::AllowIndex>> {
        self.allow.get(store, ty)
    }

    /// The special-purpose ranges views leave out with `suppress_reserved`.
    pub fn reserved_ranges(&self) -> &crate::cidr::IntervalSet {
        self.allow.reserved()
    }

    /// The current version of a view file (None before its first build).
    pub fn file(&self, view: &str, ty: IocType) -> Option<Arc<ViewFile>> {
        read(&self.published).get(&(view.to_string(), ty)).cloned()
    }

    /// The current version of a view file; when the view serves `ty` but has no version of
    /// it yet, wait for its first build (`first_build`): up to `patience`, with at most
    /// `max_waiters` readers waiting at once.
    pub fn file_or_first_build(
        &self,
        view: &str,
        ty: IocType,
        patience: Duration,
        max_waiters: usize,
    ) -> Option<Arc<ViewFile>> {
        if let Some(f) = self.file(view, ty) {
            return Some(f);
        }
        if !self.types(view).is_some_and(|t| t.contains(&ty)) {
            return None;
        }
        self.first_builds
            .wait(patience, max_waiters, || self.file(view, ty))
    }

    /// The current versions of a view's files, in the order of its types; when some have
    /// none yet, wait for their first build as [`file_or_first_build`](Self::file_or_first_build)
    /// does (a listing is never partial), then give what there is.
    pub fn files_or_first_build(
        &self,
        view: &str,
        patience: Duration,
        max_waiters: usize,
    ) -> Vec<Arc<ViewFile>> {
        let types = self.types(view).unwrap_or_default();
        let current = || -> Vec<Arc<ViewFile>> {
            types.iter().filter_map(|&ty| self.file(view, ty)).collect()
        };
        self.first_builds
            .wait(patience, max_waiters, || {
                Some(current()).filter(|files| files.len() == types.len())
            })
            .unwrap_or_else(current)
    }

    /// The views thread stopped: readers waiting for a first build are answered.
    pub fn stop_waits(&self) {
        self.first_builds.close();
    }

    /// Ask the views thread to look for due builds now.
    pub fn wake(&self) {
        *lock(&self.woken) = true;
        self.wake.notify_all();
    }

    /// Wait until woken or `timeout` passes.
    pub fn wait(&self, timeout: Duration) {
        let guard = lock(&self.woken);
        let mut guard = crate::sync::wait_timeout_while(&self.wake, guard, timeout, |w| !*w);
        *guard = false;
    }

    /// Build every file that is due (`force`: every file, ignoring `refresh`). Returns how
    /// long until a file held back by `refresh` becomes due, if one is.
    pub fn rebuild(&self, store: &Store, force: bool) -> Result<Option<Duration>> {
        let _one_at_a_time = lock(&self.build);
        self.first_builds.pass_started();
        let _ended = PassEnd(&self.first_builds);
        crate::failpoint::pause("views::build");
        let config = self.config();
        self.drop_unconfigured(&config)?;
        let mut next_due: Option<Duration> = None;
        let mut due = Vec::new();
        let now = store.clock.now();
        for (name, def) in &config.defs {
            for &ty in &def.types {
                let key = (name.clone(), ty);
                let inputs = Inputs::now(store, &config, def, ty);
                let (stale, since) = {
                    let files = lock(&self.files);
                    let st = files.get(&key);
                    let stale = st.is_none_or(|s| {
                        s.built_from.as_ref() != Some(&inputs)
                            || s.expires.is_some_and(|e| e <= now)
                    }) || self.file(name, ty).is_none();
                    (stale, st.and_then(|s| s.built_at).map(|t| t.elapsed()))
                };
                if !stale && !force {
                    continue;
                }
                if let Some(since) = since.filter(|s| !force && *s < config.refresh) {
                    let wait = config.refresh - since;
                    next_due = Some(next_due.map_or(wait, |n| n.min(wait)));
                    continue;
                }
                due.push((name.clone(), ty, inputs));
            }
        }
        // Files of one type whose views select alike are rendered from one selection.
        while !due.is_empty() {
            let (_, ty, first) = &due[0];
            let (ty, lead) = (*ty, first.def.clone());
            let (group, rest) = due
                .into_iter()
                .partition(|(_, t, i)| *t == ty && i.def.selects_like(&lead));
            due = rest;
            self.build_files(store, ty, group)?;
        }
        Ok(next_due)
    }

    /// Build the files of type `ty` of views that select alike (`View::selects_like`): one
    /// snapshot, selection and suppression, rendered for each.
    fn build_files(
        &self,
        store: &Store,
        ty: IocType,
        group: Vec<(String, IocType, Inputs)>,
    ) -> Result<()> {
        let Some((_, _, lead)) = group.first() else {
            return Ok(());
        };
        let started = Instant::now();
        let now = store.clock.now();
        let suppress_reserved = lead.suppress_reserved;
        let lead = lead.def.clone();
        let (parts, counts) = store.snapshot_type(&lead.buckets, ty);
        let mut provenance = None;
        let filter = lead.by_source().then(|| {
            let (snapshot, count) = store.provenance_snapshot(ty);
            provenance = Some(count);
            select::SourceFilter::of(&lead, snapshot)
        });
        let mut selected = select::select(&lead, ty, &parts, now, (&store.cache, filter.as_ref()))?;
        drop(filter);
        drop(parts);
        let (expires, unreadable) = (selected.expires, selected.unreadable_blocks);
        let picked = selected.len() as u64;
        let allow = allow_counts(store, ty);
        let suppression = self
            .allow
            .rules(store, ty, suppress_reserved)?
            .apply(&mut selected);
        // Each file's build time counts the shared selection and its own rendering, not
        // the files rendered before or beside it.
        let selecting = started.elapsed();
        let mut selected = Some(selected);
        let last = group.len() - 1;
        // Files are rendered side by side, as many at once as there are cores (each sorts
        // and writes up to millions of lines): a plain and an aggregated list are served
        // when the slower is done, not after both in turn. Every file but the last renders
        // a copy of the selection, made when its turn comes: at most one copy per core.
        let cores = crate::cores();
        let mut group = group.into_iter().enumerate().peekable();
        while group.peek().is_some() {
            let mut jobs = Vec::with_capacity(cores);
            for (i, (name, _, inputs)) in group.by_ref().take(cores) {
                let this = match i == last {
                    true => selected.take(),
                    false => selected.clone(),
                };
                let this =
                    this.ok_or_else(|| Error::Invalid("internal: selection used up".into()))?;
                let staged = self.disk.stage(&name, ty)?;
                jobs.push((name, inputs, this, staged));
            }
            let rendered = render::render_side_by_side(ty, jobs);
            for (name, mut inputs, staged, stats, rendering) in rendered {
                let mut stats = stats
                    .map_err(|e| Error::io(format!("write views/{name}/{}", ty.file_name()), e))?;
                inputs.counts = counts.clone();
                inputs.provenance = provenance;
                inputs.allow = allow.clone();
                let def = inputs.def.clone();
                stats.selected = picked;
                stats.suppression = suppression;
                // Only the shrink guard reads it; the build's record keeps no copy.
                let uncapped = stats.uncapped.take();
                let info = BuildInfo {
                    stats: stats.clone(),
                    at: now,
                    millis: (selecting + rendering).as_millis() as u64,
                    unreadable_blocks: unreadable,
                };
                let held =
                    self.publish_or_hold(store, (&name, &def, ty), staged, stats, uncapped)?;
                let mut files = lock(&self.files);
                let st = files.entry((name, ty)).or_default();
                st.built_from = Some(inputs);
                st.built_at = Some(Instant::now());
                st.expires = expires;
                st.last = Some(info);
                st.held = held;
                self.changes.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Forget views (or types of a view) that the config no longer has.
    fn drop_unconfigured(&self, config: &ViewsConfig) -> Result<()> {
        let gone: Vec<FileKey> = read(&self.published)
            .keys()
            .filter(|(v, ty)| !config.defs.get(v).is_some_and(|d| d.types.contains(ty)))
            .cloned()
            .collect();
        for key in &gone {
            write(&self.published).remove(key);
            lock(&self.files).remove(key);
        }
        for view in self.disk.views_on_disk() {
            let keep = config
                .defs
                .get(&view)
                .map(|d| d.types.clone())
                .unwrap_or_default();
            self.disk.remove(&view, &keep)?;
        }
        Ok(())
    }

    /// One problem per held file.
    pub fn problems(&self) -> Vec<Problem> {
        lock(&self.files)
            .iter()
            .filter_map(|((view, ty), st)| {
                let h = st.held.as_ref()?;
                Some(Problem::about(
                    Kind::View,
                    format!("{view}/{}", ty.name()),
                    format!(
                        "held: a rebuild would remove {} of {} entries (more than max_shrink); the last version is still served; `echo 'release-view {view}' > .iocfs/ctl` publishes it",
                        h.removed, h.of
                    ),
                ))
            })
            .collect()
    }

    /// The `views` object of stats.json.
    pub fn stats(&self) -> Value {
        let files = lock(&self.files);
        let mut out = Map::new();
        for (name, def) in &self.config().defs {
            let mut per_type = Map::new();
            for &ty in &def.types {
                let key = (name.clone(), ty);
                let st = files.get(&key);
                let f = self.file(name, ty);
                per_type.insert(
                    ty.name().into(),
                    json!({
                        "entries": f.as_ref().map(|f| f.entries),
                        "bytes": f.as_ref().map(|f| f.len),
                        "mtime": f.as_ref().map(|f| crate::clock::rfc3339(f.mtime)),
                        "last_build": st.and_then(|s| s.last.as_ref()).map(|b| {
                            let mut v = json!(b);
                            v["at"] = json!(crate::clock::rfc3339(b.at));
                            v
                        }),
                        "held": st.is_some_and(|s| s.held.is_some()),
                    }),
                );
            }
            out.insert(name.clone(), Value::Object(per_type));
        }
        Value::Object(out)
    }
}

/// Ends a build pass for readers waiting on a first build, however the pass ends.
struct PassEnd<'a>(&'a first_build::FirstBuilds);

impl Drop for PassEnd<'_> {
    fn drop(&mut self) {
        self.0.pass_finished();
    }
}

/// The change counts of the allowlists a file of `ty` is filtered by.
fn allow_counts(store: &Store, ty: IocType) -> Vec<u64> {
    suppress::inputs_of(ty)
        .iter()
        .map(|&t| store.allow_change_count(t))
        .collect()
}

#[cfg(test)]
mod tests;
