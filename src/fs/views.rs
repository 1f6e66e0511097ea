//! `views/`: one read-only directory per configured view, one file per type it serves.
//!
//! A view file's inode is its version (persisted, see `views::disk`). Its bytes never
//! change, so the kernel keeps them in its page cache across opens (`FOPEN_KEEP_CACHE`): a
//! web server fetching the list again reads memory, not the daemon. As with tier files, an
//! open through a name the kernel still maps to a superseded version answers ESTALE, so
//! every open after a rebuild gets the new version. Before a file's first build, a lookup
//! of it and a listing of its directory wait for it (`views::first_build`).

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::sync::Arc;
use std::time::Duration;

use fuser::{Errno, FileAttr, FileType, INodeNo};

use super::inode::{self, VIEWS_DIR};
use super::nodes::Node;
use super::{IocFs, NO_TTL, VERSION_TTL};
use crate::ioc::IocType;
use crate::sync::lock;
use crate::views::disk::ViewFile;

/// How long a lookup of a view file with no version yet waits for its first build (see
/// `views::first_build`): first builds of tens of millions of indicators take seconds.
const FIRST_BUILD_PATIENCE: Duration = Duration::from_secs(30);

/// Directory inodes of views, allocated at first sight of a name and kept for the run (a
/// view removed and added again keeps its inode).
#[derive(Default)]
pub(super) struct ViewDirs {
    by_name: HashMap<String, INodeNo>,
    by_ino: HashMap<INodeNo, String>,
}

impl IocFs {
    fn view_dir_ino(&self, name: &str) -> INodeNo {
        let mut dirs = lock(&self.view_dirs);
        if let Some(&ino) = dirs.by_name.get(name) {
            return ino;
        }
        let ino = self.nodes.allocate();
        dirs.by_name.insert(name.to_string(), ino);
        dirs.by_ino.insert(ino, name.to_string());
        ino
    }

    /// The view a directory inode stands for, if it is still configured.
    pub(super) fn view_of_dir(&self, ino: INodeNo) -> Option<String> {
        let name = lock(&self.view_dirs).by_ino.get(&ino).cloned()?;
        self.views.types(&name).map(|_| name)
    }

    pub(super) fn view_attr(&self, f: &ViewFile) -> FileAttr {
        let mtime = self.shown_mtime(f.mtime);
        inode::version_attr(
            INodeNo(f.ino),
            f.ino,
            self.owner.file_mode & !0o222,
            f.len,
            mtime,
            &self.owner,
        )
    }

    /// `lookup` in `views/` or in a view's directory.
    pub(super) fn lookup_view(
        &self,
        parent: INodeNo,
        name: &OsStr,
    ) -> Option<Result<(FileAttr, Duration), Errno>> {
        let text = name.to_str();
        if parent == VIEWS_DIR {
            // Views come and go with the config (SIGHUP): names are cached for seconds only.
            let found = text
                .filter(|n| self.views.types(n).is_some())
                .map(|n| (self.dir_attr(self.view_dir_ino(n)), VERSION_TTL))
                .ok_or(Errno::ENOENT);
            return Some(found);
        }
        let view = self.view_of_dir(parent)?;
        let found = text
            .and_then(IocType::from_file_name)
            .and_then(|ty| self.view_file(&view, ty))
            .map(|f| {
                let attr = self.view_attr(&f);
                self.nodes.remember(attr.ino, Node::View(f));
                (attr, VERSION_TTL)
            })
            .ok_or(Errno::ENOENT);
        Some(found)
    }

    /// The current version of a view file, waiting for its first build if it has none yet.
    fn view_file(&self, view: &str, ty: IocType) -> Option<Arc<ViewFile>> {
        self.views
            .file_or_first_build(view, ty, FIRST_BUILD_PATIENCE, self.first_build_waiters())
    }

    /// Half the FUSE threads at most wait for a first build: the others keep serving.
    fn first_build_waiters(&self) -> usize {
        self.store.config().mount.threads / 2
    }

    /// Attributes of a view file version: a superseded one no descriptor holds answers for
    /// the current version (see `attr_of`).
    pub(super) fn view_version_attr(
        &self,
        ino: INodeNo,
        f: &Arc<ViewFile>,
    ) -> Result<(FileAttr, Duration), Errno> {
        match self.views.file(&f.view, f.ty) {
            Some(cur) if cur.ino != f.ino && !self.handles.holds(ino) => {
                Ok((self.view_attr(&cur), NO_TTL))
            }
            _ => Ok((self.view_attr(f), VERSION_TTL)),
        }
    }

    /// Whether `f` stopped being the current version of its name.
    pub(super) fn view_superseded(&self, f: &ViewFile) -> bool {
        self.views
            .file(&f.view, f.ty)
            .is_none_or(|cur| cur.ino != f.ino)
    }

    /// Entries of `views/` (None: `ino` is not a views directory).
    pub(super) fn view_entries(&self, ino: INodeNo) -> Option<Vec<(INodeNo, FileType, OsString)>> {
        if ino == VIEWS_DIR {
            return Some(
                self.views
                    .names()
                    .into_iter()
                    .map(|n| (self.view_dir_ino(&n), FileType::Directory, n.into()))
                    .collect(),
            );
        }
        let view = self.view_of_dir(ino)?;
        Some(
            self.views
                .files_or_first_build(&view, FIRST_BUILD_PATIENCE, self.first_build_waiters())
                .into_iter()
                .map(|f| {
                    (
                        INodeNo(f.ino),
                        FileType::RegularFile,
                        f.ty.file_name().into(),
                    )
                })
                .collect(),
        )
    }
}
