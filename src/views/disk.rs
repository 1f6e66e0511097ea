//! Published view files on disk: `DATA/views/<view>/<type>.txt` holds exactly the served
//! bytes, and `DATA/views/<view>/.<type>.txt.meta` (JSON) what must survive a restart so
//! that an identical rebuild keeps the version: its inode number, its mtime (the time
//! the content last changed), length, entry count and a 128-bit hash of the content.
//!
//! Both are replaced by the atomic rule (temp, fsync, rename, directory fsync), the text
//! first. A crash between the two leaves a sidecar that does not match the text: at the
//! next start the pair is not trusted and the next build publishes a new version. View
//! files are derived data — losing one costs a rebuild and one changed ETag, never an
//! indicator.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::atomic;
use crate::disk::{Disk as Fs, FileHandle, Handle, Kind};
use crate::error::{Error, IoContext, Result};
use crate::ioc::IocType;

/// One published version of one view file: immutable, readable while anyone holds it.
#[derive(Debug)]
pub struct ViewFile {
    /// Its inode number, stable across restarts while the content is the same.
    pub ino: u64,
    pub view: String,
    pub ty: IocType,
    pub len: u64,
    /// When the content last changed (Unix seconds).
    pub mtime: u64,
    pub entries: u64,
    pub hash: u128,
    file: Handle,
    /// What an address file covers, once a lookup or the views thread asked (`lookup`).
    pub(super) coverage: std::sync::OnceLock<crate::cidr::IntervalSet>,
    /// The sparse index of any other file's sorted lines, likewise (`lookup`).
    pub(super) line_index: std::sync::OnceLock<super::line_index::LineIndex>,
}

impl ViewFile {
    /// Read up to `size` bytes at `offset`.
    pub fn read_at(&self, offset: u64, size: usize) -> Result<Vec<u8>> {
        let end = self.len.min(offset.saturating_add(size as u64));
        if offset >= end {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; (end - offset) as usize];
        self.file.read_exact_at(&mut buf, offset).ctx(|| {
            format!(
                "read views/{}/{} at {offset}",
                self.view,
                self.ty.file_name()
            )
        })?;
        Ok(buf)
    }

    /// The file, for FUSE passthrough.
    pub fn file(&self) -> &dyn FileHandle {
        &*self.file
    }
}

#[derive(Serialize, Deserialize)]
struct Meta {
    ino: u64,
    mtime: u64,
    len: u64,
    entries: u64,
    hash: String,
}

pub fn hash(bytes: &[u8]) -> u128 {
    xxhash_rust::xxh3::xxh3_128(bytes)
}

/// A [`hash`] as the sidecars and `.fresh` write it.
pub fn hex(hash: u128) -> String {
    format!("{hash:032x}")
}

/// A new version being written: a temp file, hashed as it is written. Dropped without
/// [`Disk::commit`], its file is removed.
pub struct Staged {
    /// None once committed.
    out: Option<std::io::BufWriter<Out>>,
    fs: Fs,
    path: PathBuf,
    hasher: xxhash_rust::xxh3::Xxh3,
    len: u64,
}

impl Staged {
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn hash(&self) -> u128 {
        self.hasher.digest128()
    }

    /// The content written so far (flushed first).
    pub fn read_all(&mut self) -> Result<Vec<u8>> {
        let path = self.path.display().to_string();
        let mut buf = vec![0u8; self.len as usize];
        let out = self.writer().ctx(|| format!("read {path}"))?;
        out.flush().ctx(|| format!("write {path}"))?;
        out.get_ref()
            .file
            .read_exact_at(&mut buf, 0)
            .ctx(|| format!("read {path}"))?;
        Ok(buf)
    }

    fn writer(&mut self) -> std::io::Result<&mut std::io::BufWriter<Out>> {
        self.out
            .as_mut()
            .ok_or_else(|| std::io::Error::other("staged view file already committed"))
    }
}

impl std::io::Write for Staged {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.writer()?.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.writer()?.flush()
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if self.out.is_some() {
            let _ = self.fs.remove_file(&self.path);
        }
    }
}

/// Sequential writes to a staged file.
struct Out {
    file: Handle,
    at: u64,
}

impl std::io::Write for Out {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write_at(buf, self.at)?;
        self.at += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `DATA/views`.
pub struct Disk {
    fs: Fs,
    dir: PathBuf,
}

impl Disk {
    pub fn open(fs: &Fs, data_dir: &Path) -> Result<Disk> {
        // A directory of ours, like the data directory's others (`secure`).
        let (dir, created) = fs.subdir(data_dir, "views", true)?;
        if created {
            atomic::fsync_dir(fs, data_dir)?;
        }
        let disk = Disk {
            fs: fs.clone(),
            dir,
        };
        // Builds a crash interrupted.
        for view in disk.views_on_disk() {
            atomic::remove_leftover_temps(fs, &disk.view_dir(&view))?;
        }
        Ok(disk)
    }

    fn view_dir(&self, view: &str) -> PathBuf {
        self.dir.join(view)
    }

    fn meta_name(ty: IocType) -> String {
        format!(".{}.meta", ty.file_name())
    }

    /// The published version of `view`/`ty`, if a trustworthy one is on disk.
    pub fn load(&self, view: &str, ty: IocType) -> Option<ViewFile> {
        let dir = self.view_dir(view);
        let meta_path = dir.join(Self::meta_name(ty));
        let text_path = dir.join(ty.file_name());
        let meta: Meta = match self.fs.read(&meta_path) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(m) => m,
                Err(e) => {
                    log::warn!("{}: {e}; the view is rebuilt", meta_path.display());
                    return None;
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                log::warn!("read {}: {e}; the view is rebuilt", meta_path.display());
                return None;
            }
        };
        let content = self.fs.read(&text_path).ok()?;
        let content_hash = hash(&content);
        if content.len() as u64 != meta.len || hex(content_hash) != meta.hash {
            log::warn!(
                "{}: does not match its sidecar (a crash between the two?); the view is rebuilt",
                text_path.display()
            );
            return None;
        }
        let file = self.fs.open_read(&text_path).ok()?;
        Some(ViewFile {
            ino: meta.ino,
            view: view.to_string(),
            ty,
            len: meta.len,
            mtime: meta.mtime,
            entries: meta.entries,
            hash: content_hash,
            file,
            coverage: std::sync::OnceLock::new(),
            line_index: std::sync::OnceLock::new(),
        })
    }

    /// A temp file in the view's directory to write a new version into.
    pub fn stage(&self, view: &str, ty: IocType) -> Result<Staged> {
        let (dir, created) = self.fs.subdir(&self.dir, view, true)?;
        if created {
            atomic::fsync_dir(&self.fs, &self.dir)?;
        }
        // Unique: a held build keeps its staged file while later ones are staged.
        static STAGED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = STAGED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = atomic::temp_path(
            &dir,
            ty.file_name(),
            &format!("b{}-{n}", std::process::id()),
        );
        let file = atomic::create_new(&self.fs, &path, 0o644)?;
        Ok(Staged {
            out: Some(std::io::BufWriter::with_capacity(
                1 << 20,
                Out { file, at: 0 },
            )),
            fs: self.fs.clone(),
            path,
            hasher: xxhash_rust::xxh3::Xxh3::new(),
            len: 0,
        })
    }

    /// Durably publish a staged file as the new version of `view`/`ty`: fsync it, rename it
    /// over the old one, fsync the directory, then write the sidecar the same way.
    pub fn commit(
        &self,
        view: &str,
        ty: IocType,
        mut staged: Staged,
        ino: u64,
        mtime: u64,
        entries: u64,
    ) -> Result<ViewFile> {
        let dir = self.view_dir(view);
        let (path, len, content_hash) = (staged.path.clone(), staged.len, staged.hash());
        let out = staged
            .writer()
            .ctx(|| format!("commit {}", path.display()))?;
        out.flush().ctx(|| format!("write {}", path.display()))?;
        out.get_ref()
            .file
            .sync_all()
            .ctx(|| format!("fsync {}", path.display()))?;
        atomic::rename(&self.fs, &path, &dir.join(ty.file_name()))?;
        // Renamed: nothing to remove on drop.
        let file = match staged.out.take().map(std::io::BufWriter::into_inner) {
            Some(Ok(out)) => out.file,
            _ => {
                return Err(Error::Invalid(format!(
                    "internal: {} lost its file",
                    path.display()
                )))
            }
        };
        atomic::fsync_dir(&self.fs, &dir)?;
        let meta = Meta {
            ino,
            mtime,
            len,
            entries,
            hash: hex(content_hash),
        };
        let encoded = serde_json::to_vec(&meta)
            .map_err(|e| Error::Invalid(format!("encode view metadata: {e}")))?;
        atomic::replace_file(&self.fs, &dir, &Self::meta_name(ty), |w| {
            w.write_all(&encoded)
        })?;
        Ok(ViewFile {
            ino,
            view: view.to_string(),
            ty,
            len,
            mtime,
            entries,
            hash: content_hash,
            file,
            coverage: std::sync::OnceLock::new(),
            line_index: std::sync::OnceLock::new(),
        })
    }

    /// Delete the files of a view that is no longer configured (or of types it dropped).
    pub fn remove(&self, view: &str, keep: &[IocType]) -> Result<()> {
        let dir = self.view_dir(view);
        for ty in IocType::ALL.into_iter().filter(|t| !keep.contains(t)) {
            for name in [ty.file_name().to_string(), Self::meta_name(ty)] {
                match self.fs.remove_file(&dir.join(&name)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(Error::io(format!("remove {}", dir.join(name).display()), e))
                    }
                }
            }
        }
        if keep.is_empty() {
            let _ = self.fs.remove_dir(&dir);
        }
        Ok(())
    }

    /// Durably write `DATA/views/<name>` (a file beside the view directories).
    pub fn put_file(&self, name: &str, bytes: &[u8]) -> Result<()> {
        atomic::replace_file(&self.fs, &self.dir, name, |w| w.write_all(bytes)).map(drop)
    }

    /// Read `DATA/views/<name>` and durably remove it: None if there was none.
    pub fn take_file(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let path = self.dir.join(name);
        let bytes = match self.fs.read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(format!("read {}", path.display()), e)),
        };
        self.fs
            .remove_file(&path)
            .ctx(|| format!("remove {}", path.display()))?;
        atomic::fsync_dir(&self.fs, &self.dir)?;
        Ok(Some(bytes))
    }

    /// Names of the view directories on disk.
    pub fn views_on_disk(&self) -> Vec<String> {
        self.fs
            .read_dir(&self.dir)
            .map(|entries| {
                entries
                    .into_iter()
                    .filter(|e| e.kind == Kind::Dir)
                    .filter_map(|e| e.name.into_string().ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}
