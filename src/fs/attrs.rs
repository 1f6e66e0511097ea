//! Attributes and name lookup: what `stat` and path resolution see.

use std::ffi::OsStr;
use std::time::Duration;

use fuser::{Errno, FileAttr, FileHandle, FileType, INodeNo};

use super::inode::{
    self, version, Owner, ALLOW_DIR, ALLOW_DIR_NAME, CONTROL_DIR, CONTROL_DIR_NAME, CTL, HEALTH,
    LOOKUP_DIR, METRICS, ROOT, SOURCES_DIR, SOURCES_DIR_NAME, STATS, VIEWS_DIR, VIEWS_DIR_NAME,
};
use super::nodes::Node;
use super::{IocFs, NO_TTL, STABLE_TTL, VERSION_TTL};
use crate::ioc::IocType;
use crate::store::live::LiveVersion;
use crate::store::model::{Bucket, Target, Tier};

impl IocFs {
    /// A read-only file generated on demand (stats.json, metrics, health, lookup entries): readable
    /// by whom `mount.file_mode` lets read the lists, no one else (a 0640 mount must not let
    /// every local user test whether a value is stored).
    pub(super) fn snapshot_attr(&self, ino: INodeNo, len: u64, built: u64) -> FileAttr {
        inode::attr(
            ino,
            FileType::RegularFile,
            self.owner.file_mode & 0o444,
            len,
            built,
            &self.owner,
        )
    }

    pub(super) fn dir_attr(&self, ino: INodeNo) -> FileAttr {
        let perm = if ino == LOOKUP_DIR {
            // Searchable by those who may read the lists: r-x for each r of file_mode.
            let read = self.owner.file_mode & 0o444;
            read | read >> 2
        } else {
            inode::dir_perm(ino)
        };
        inode::attr(
            ino,
            FileType::Directory,
            perm,
            0,
            self.contentless_time,
            &self.owner,
        )
    }

    /// The mtime a file shows: when its content last changed, or, never changed (0),
    /// `contentless_time`.
    pub(super) fn shown_mtime(&self, changed: u64) -> u64 {
        if changed == 0 {
            self.contentless_time
        } else {
            changed
        }
    }

    /// A live version's attributes; `ino` is its id, or a scratch inode standing for it.
    pub(super) fn live_attr(&self, ino: INodeNo, v: &LiveVersion) -> FileAttr {
        let mtime = self.shown_mtime(v.mtime());
        // A copy of the same bytes shows the same mtime as its original.
        let content = v.content();
        inode::version_attr(
            ino,
            content,
            self.owner.file_mode,
            v.len(),
            mtime,
            &self.owner,
        )
    }

    pub(super) fn tier_attr(&self, v: &crate::store::tier::TierVersion) -> FileAttr {
        let mtime = self.shown_mtime(v.mtime);
        // Tiers are read-only whatever the configured mode says.
        inode::version_attr(
            version(v.id),
            v.id,
            self.owner.file_mode & !0o222,
            v.size(),
            mtime,
            &self.owner,
        )
    }

    pub(super) fn control_attr(&self, ino: INodeNo) -> FileAttr {
        let now = self.store.clock.now();
        match ino {
            CTL => inode::attr(
                ino,
                FileType::RegularFile,
                0o644,
                super::control::ctl_help().len() as u64,
                // Its bytes never change: dated like empty files (`rsync -a` copies it once).
                self.contentless_time,
                &Owner {
                    uid: 0,
                    gid: 0,
                    ..self.owner
                },
            ),
            // Reached by no lookup (those get a snapshot inode): the current bytes.
            STATS | METRICS | HEALTH => {
                self.snapshot_attr(ino, self.control_bytes(ino).len() as u64, now)
            }
            _ => self.dir_attr(ino),
        }
    }

    /// The target of a directory whose type files take writes: live/, allow/, and the
    /// folder of a source while it is declared.
    pub(super) fn writable(&self, ino: INodeNo) -> Option<Target> {
        match inode::writable_dir(ino)? {
            Target::Source(id) if self.store.source_name(id).is_none() => None,
            t => Some(t),
        }
    }

    /// Attributes of any inode, with the entry TTL the kernel may keep them for.
    pub(super) fn attr_of(
        &self,
        ino: INodeNo,
        fh: Option<FileHandle>,
    ) -> Result<(FileAttr, Duration), Errno> {
        if ino == ROOT
            || inode::dir_bucket(ino).is_some()
            || ino == CONTROL_DIR
            || ino == LOOKUP_DIR
            || ino == VIEWS_DIR
            || ino == ALLOW_DIR
            || ino == SOURCES_DIR
        {
            return Ok((self.dir_attr(ino), STABLE_TTL));
        }
        if inode::dir_source(ino).is_some() {
            // A source's folder lives as long as the source: never cached past an rmdir.
            return match self.writable(ino) {
                Some(_) => Ok((self.dir_attr(ino), NO_TTL)),
                None => Err(Errno::ENOENT),
            };
        }
        if self.view_of_dir(ino).is_some() {
            return Ok((self.dir_attr(ino), VERSION_TTL));
        }
        if matches!(ino, STATS | METRICS | HEALTH | CTL) {
            return Ok((self.control_attr(ino), NO_TTL));
        }
        let _ = fh;
        match self.nodes.get(ino) {
            // A superseded version that no descriptor holds is reached only through a name
            // the kernel still maps to it: answer for the current version, uncached, so a
            // `stat` by name sees the change (an open through it gets ESTALE and looks the
            // name up again). A held one answers for itself: each version is its own inode,
            // so fstat on a descriptor held across a replacement reports the size that
            // descriptor reads (the kernel does not say which it is; see VERSION_TTL).
            // One superseded by a copy of the same bytes answers for itself, uncached (an
            // open through it serves it, see `open_live`; a later change must show).
            Some(Node::Live(v)) => {
                let current = self.store.current(v.of());
                let superseded = current.id != v.id && !self.handles.holds(ino);
                if superseded && !current.same_bytes_as(&v) {
                    Ok((self.live_attr(version(current.id), &current), NO_TTL))
                } else if superseded {
                    Ok((self.live_attr(ino, &v), NO_TTL))
                } else if !v.has_passthrough_readers() {
                    // Held by descriptors the daemon serves: the size they read now (see
                    // `following`).
                    let reads = self.following_given(&v, current);
                    Ok((self.live_attr(ino, &reads), VERSION_TTL))
                } else {
                    Ok((self.live_attr(ino, &v), VERSION_TTL))
                }
            }
            Some(Node::Tier(v)) => {
                let current = self.store.tier(v.tier, v.ty);
                if current.id != v.id && !self.handles.holds(ino) {
                    Ok((self.tier_attr(&current), NO_TTL))
                } else {
                    Ok((self.tier_attr(&v), VERSION_TTL))
                }
            }
            Some(Node::View(f)) => self.view_version_attr(ino, &f),
            Some(Node::Scratch(s)) => Ok((self.scratch_attr(&s), NO_TTL)),
            Some(Node::LiveAlias(of)) => {
                let mut attr = self.live_attr(ino, &self.store.current(of));
                // A replace's own inode: through it the file is what the replace has
                // written so far (fstat, SEEK_END and O_APPEND start from 0 after O_TRUNC).
                if let Some(written) = self.replacing.written(ino) {
                    attr.size = written;
                    attr.blocks = written.div_ceil(512);
                }
                Ok((attr, NO_TTL))
            }
            // Immutable: its attributes may be cached as long as a version's.
            Some(Node::Snapshot(s)) => Ok((
                self.snapshot_attr(ino, s.bytes.len() as u64, s.built),
                VERSION_TTL,
            )),
            None => self.current_version(ino).ok_or(Errno::ENOENT),
        }
    }

    /// Attributes of an inode the kernel knows from readdir only: a current version.
    pub(super) fn current_version(&self, ino: INodeNo) -> Option<(FileAttr, Duration)> {
        for ty in IocType::ALL {
            let sources = self.store.source_names().into_iter();
            for target in [Target::Live, Target::Allow]
                .into_iter()
                .chain(sources.map(|(id, _)| Target::Source(id)))
            {
                let v = self.store.current((target, ty));
                if version(v.id) == ino {
                    return Some((self.live_attr(ino, &v), VERSION_TTL));
                }
            }
            for tier in Tier::ALL {
                let t = self.store.tier(tier, ty);
                if version(t.id) == ino {
                    return Some((self.tier_attr(&t), VERSION_TTL));
                }
            }
        }
        None
    }

    /// The entry of `name` in `parent`, as looked up by thread `tid`.
    pub(super) fn lookup_name(
        &self,
        parent: INodeNo,
        name: &OsStr,
        tid: u32,
    ) -> Result<(FileAttr, Duration), Errno> {
        // Not in lookup/, whose names are values (a long URL is still one).
        if parent != LOOKUP_DIR {
            super::namespace::check_name_len(name)?;
        }
        let text = name.to_str();
        match (parent, text) {
            (ROOT, Some(CONTROL_DIR_NAME)) => return Ok((self.dir_attr(CONTROL_DIR), STABLE_TTL)),
            (ROOT, Some(VIEWS_DIR_NAME)) => return Ok((self.dir_attr(VIEWS_DIR), STABLE_TTL)),
            (ROOT, Some(ALLOW_DIR_NAME)) => return Ok((self.dir_attr(ALLOW_DIR), STABLE_TTL)),
            (ROOT, Some(SOURCES_DIR_NAME)) => return Ok((self.dir_attr(SOURCES_DIR), STABLE_TTL)),
            (SOURCES_DIR, Some(n)) => {
                return match self.store.declared_source(n) {
                    Ok(id) => Ok((self.dir_attr(inode::source_dir(id)), NO_TTL)),
                    Err(_) => Err(Errno::ENOENT),
                }
            }
            (ROOT, Some(n)) => {
                return Bucket::from_name(n)
                    .map(|b| (self.dir_attr(inode::bucket_dir(b)), STABLE_TTL))
                    .ok_or(Errno::ENOENT)
            }
            (CONTROL_DIR, Some(n)) => {
                return match [STATS, METRICS, HEALTH, CTL, LOOKUP_DIR]
                    .into_iter()
                    .find(|&i| inode::control_name(i) == Some(n))
                {
                    Some(i @ (STATS | METRICS | HEALTH)) => Ok(self.control_entry(i, tid)),
                    Some(i) => self.attr_of(i, None),
                    None => Err(Errno::ENOENT),
                };
            }
            (LOOKUP_DIR, _) => return self.lookup_entry(name),
            _ => {}
        }
        if let Some(found) = self.lookup_view(parent, name) {
            return found;
        }
        let ty = text.and_then(IocType::from_file_name);
        if let Some(dir) = self.writable(parent) {
            if let Some(ty) = ty {
                let alias = self
                    .replace_retries
                    .inode(tid, (dir, ty), || self.nodes.allocate());
                if let Some(ino) = alias {
                    self.nodes.remember(ino, Node::LiveAlias((dir, ty)));
                    return self.attr_of(ino, None);
                }
                let v = self.store.current((dir, ty));
                self.nodes.remember(version(v.id), Node::Live(v.clone()));
                return Ok((self.live_attr(version(v.id), &v), VERSION_TTL));
            }
            if let Some(s) = self.nodes.scratch(dir, name) {
                let attr = self.scratch_attr(&s);
                self.nodes.remember(attr.ino, Node::Scratch(s));
                return Ok((attr, NO_TTL));
            }
            return Err(Errno::ENOENT);
        }
        let tier = inode::dir_bucket(parent).and_then(Bucket::tier);
        let (Some(tier), Some(ty)) = (tier, ty) else {
            return Err(Errno::ENOENT);
        };
        let v = self.store.tier(tier, ty);
        self.nodes.remember(version(v.id), Node::Tier(v.clone()));
        Ok((self.tier_attr(&v), VERSION_TTL))
    }
}
