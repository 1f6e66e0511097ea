//! Views that need no rebuild after a clean stop.
//!
//! A file's build inputs are change counts kept in memory, so without this every start
//! rebuilt every view (1.8 s of CPU on a 5M-indicator store), competing with the first
//! readers for the cores. At a clean stop, after the final commit, the daemon writes
//! `DATA/views/.fresh`: the published files that were built from the state as committed,
//! under a key of everything else their bytes depend on — the last commit's manifest (the
//! generation of every backing file), the effective config and the executable.
//!
//! The next start reads and durably removes it before anything can change (so a start that
//! crashes later never finds it), and takes a file as current only when no partition lags
//! its backing file after recovery, the key is the same, the view still serves that type
//! and the version on disk is the one recorded. Records replayed from the log are fine as
//! long as they change no partition (an aging pass that moved nothing is never committed,
//! so a daemon up for more than a minute always leaves some); one that does leaves its
//! partition lagging. A file whose `max_age` has since
//! dropped an indicator is due at once, as it would have been. Everything else is rebuilt
//! as before: `iocfs import`, `check --repair` and any other commit change the manifest.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{disk, BuildInfo, FileState, Inputs, Views};
use crate::error::{Error, Result};
use crate::ioc::IocType;
use crate::store::Store;
use crate::sync::lock;

const FRESH: &str = ".fresh";

#[derive(Serialize, Deserialize)]
struct Record {
    key: String,
    files: Vec<FreshFile>,
}

#[derive(Serialize, Deserialize)]
struct FreshFile {
    view: String,
    #[serde(rename = "type")]
    ty: String,
    ino: u64,
    len: u64,
    hash: String,
    /// Clock time at which `max_age` drops an indicator the build included.
    expires: Option<u64>,
    last: Option<BuildInfo>,
}

impl Views {
    /// At a clean stop (the final commit done, no build running or to come): record which
    /// files are current. Returns how many.
    pub fn save_fresh(&self, store: &Store) -> Result<usize> {
        let _no_builds = lock(&self.build);
        let Some(key) = key(store) else {
            return Ok(0);
        };
        let config = self.config();
        let now = store.clock.now();
        let mut fresh = Vec::new();
        {
            let files = lock(&self.files);
            for (name, def) in &config.defs {
                for &ty in &def.types {
                    let Some(st) = files.get(&(name.clone(), ty)) else {
                        continue;
                    };
                    let current = st.held.is_none()
                        && st.expires.is_none_or(|e| e > now)
                        && st.built_from.as_ref() == Some(&Inputs::now(store, &config, def, ty));
                    let Some(file) = self.file(name, ty).filter(|_| current) else {
                        continue;
                    };
                    fresh.push(FreshFile {
                        view: name.clone(),
                        ty: ty.name().to_string(),
                        ino: file.ino,
                        len: file.len,
                        hash: disk::hex(file.hash),
                        expires: st.expires,
                        last: st.last.clone(),
                    });
                }
            }
        }
        let n = fresh.len();
        let bytes = serde_json::to_vec(&Record { key, files: fresh })
            .map_err(|e| Error::Invalid(format!("encode views/{FRESH}: {e}")))?;
        self.disk.put_file(FRESH, &bytes)?;
        Ok(n)
    }

    /// At start, before anything can change the store: take up what the last clean stop
    /// recorded as current (see the module's doc). Returns how many files need no build.
    pub fn adopt_fresh(&self, store: &Store) -> Result<usize> {
        let Some(bytes) = self.disk.take_file(FRESH)? else {
            return Ok(0);
        };
        let record = serde_json::from_slice::<Record>(&bytes)
            .map_err(|e| format!("views/{FRESH} does not parse: {e}"))
            .and_then(|r| match key(store).as_deref() == Some(r.key.as_str()) {
                true => Ok(r),
                false => Err("the data, config or executable changed since".to_string()),
            });
        match record {
            Ok(record) => {
                let n = self.adopt(store, record.files);
                log::info!("views: {n} files current since the clean stop; the rest are rebuilt");
                Ok(n)
            }
            Err(why) => {
                log::info!("views: every file is rebuilt ({why})");
                Ok(0)
            }
        }
    }

    fn adopt(&self, store: &Store, recorded: Vec<FreshFile>) -> usize {
        let config = self.config();
        let mut adopted = BTreeMap::new();
        for f in recorded {
            let Some(ty) = IocType::from_name(&f.ty) else {
                continue;
            };
            let Some(def) = config.defs.get(&f.view).filter(|d| d.types.contains(&ty)) else {
                continue;
            };
            let same = self
                .file(&f.view, ty)
                .is_some_and(|p| p.ino == f.ino && p.len == f.len && disk::hex(p.hash) == f.hash);
            if !same {
                continue;
            }
            let state = FileState {
                built_from: Some(Inputs::now(store, &config, def, ty)),
                built_at: None,
                expires: f.expires,
                last: f.last,
                held: None,
            };
            adopted.insert((f.view, ty), state);
        }
        let n = adopted.len();
        lock(&self.files).extend(adopted);
        self.changes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        n
    }
}

/// Everything but the partitions' content that a build's bytes depend on, hashed; None
/// while the state is ahead of the backing files.
fn key(store: &Store) -> Option<String> {
    let manifest = store.settled_manifest()?;
    let material = format!("{manifest:?}\n{:?}\n{}", store.config(), executable()?);
    Some(disk::hex(disk::hash(material.as_bytes())))
}

/// The running executable's identity: an upgrade (or a rebuild) renders anew.
fn executable() -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(std::env::current_exe().ok()?).ok()?;
    Some(format!(
        "{} {}:{} {} {}.{}",
        env!("CARGO_PKG_VERSION"),
        m.dev(),
        m.ino(),
        m.len(),
        m.mtime(),
        m.mtime_nsec()
    ))
}
