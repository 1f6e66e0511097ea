//! What the simulated disk keeps per file and per namespace: each file's bytes as they are
//! and as they were at its last sync, and the metadata operations a crash may keep a prefix of
//! (the model in the parent module's documentation).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::PAGE;
use crate::disk::{Entry, Kind};

/// One file's bytes: as they are, and as they are known to be on disk.
#[derive(Clone, Debug, Default)]
pub(super) struct Node {
    pub(super) data: Vec<u8>,
    /// The bytes as of the last sync (its length is the synced size).
    pub(super) synced: Vec<u8>,
    /// Sizes the file had since the last sync.
    pub(super) sizes: Vec<u64>,
    /// Pages changed since the last sync.
    pub(super) dirty: BTreeSet<u64>,
}

impl Node {
    pub(super) fn durable(data: Vec<u8>) -> Node {
        Node {
            synced: data.clone(),
            data,
            ..Node::default()
        }
    }

    pub(super) fn touch(&mut self, from: u64, to: u64) {
        if to > from {
            self.dirty.extend(from / PAGE..to.div_ceil(PAGE));
        }
    }

    pub(super) fn resize(&mut self, len: u64) {
        let old = self.data.len() as u64;
        if len != old {
            self.data.resize(len as usize, 0);
            self.touch(old.min(len), old.max(len));
            self.sizes.push(len);
        }
    }

    pub(super) fn sync(&mut self) {
        self.synced.clone_from(&self.data);
        self.sizes.clear();
        self.dirty.clear();
    }
}

/// A metadata operation, in the order made.
#[derive(Clone, Debug)]
pub(super) enum Meta {
    Create(PathBuf, u64),
    Link(PathBuf, u64),
    Rename(PathBuf, PathBuf),
    Unlink(PathBuf),
    Mkdir(PathBuf),
    Rmdir(PathBuf),
}

impl Meta {
    /// Whether an fsync of `dir` makes this durable.
    pub(super) fn touches(&self, dir: &Path) -> bool {
        let in_dir = |p: &Path| p.parent() == Some(dir);
        match self {
            Meta::Create(p, _) | Meta::Link(p, _) | Meta::Unlink(p) | Meta::Mkdir(p) => in_dir(p),
            Meta::Rmdir(p) => in_dir(p),
            Meta::Rename(from, to) => in_dir(from) || in_dir(to),
        }
    }
}

/// A namespace: directories, and names of files.
#[derive(Clone, Debug, Default)]
pub(super) struct Tree {
    pub(super) dirs: BTreeSet<PathBuf>,
    pub(super) files: BTreeMap<PathBuf, u64>,
}

impl Tree {
    pub(super) fn apply(&mut self, op: &Meta) {
        match op {
            Meta::Create(p, ino) | Meta::Link(p, ino) => {
                self.files.insert(p.clone(), *ino);
            }
            Meta::Rename(from, to) => {
                if let Some(ino) = self.files.remove(from) {
                    self.files.insert(to.clone(), ino);
                }
            }
            Meta::Unlink(p) => {
                self.files.remove(p);
            }
            Meta::Mkdir(p) => {
                self.dirs.insert(p.clone());
            }
            Meta::Rmdir(p) => {
                self.dirs.remove(p);
            }
        }
    }

    pub(super) fn children(&self, dir: &Path) -> Vec<Entry> {
        let mut out: Vec<Entry> = Vec::new();
        let child = |p: &Path| p.parent() == Some(dir) && p != dir;
        for d in self.dirs.iter().filter(|d| child(d)) {
            if let Some(name) = d.file_name() {
                out.push(Entry {
                    name: name.to_os_string(),
                    kind: Kind::Dir,
                });
            }
        }
        for f in self.files.keys().filter(|f| child(f)) {
            if let Some(name) = f.file_name() {
                out.push(Entry {
                    name: name.to_os_string(),
                    kind: Kind::File,
                });
            }
        }
        out
    }
}
