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

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::atomic;
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
    file: File,
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
    pub fn file(&self) -> &File {
        &self.file
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

/// `DATA/views`.
pub struct Disk {
    dir: PathBuf,
}

impl Disk {
    pub fn open(data_dir: &Path) -> Result<Disk> {
        let dir = data_dir.join("views");
        std::fs::create_dir_all(&dir).ctx(|| format!("create {}", dir.display()))?;
        Ok(Disk { dir })
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
        let meta: Meta = match std::fs::read(&meta_path) {
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
        let content = std::fs::read(&text_path).ok()?;
        let hash_hex = format!("{:032x}", hash(&content));
        if content.len() as u64 != meta.len || hash_hex != meta.hash {
            log::warn!(
                "{}: does not match its sidecar (a crash between the two?); the view is rebuilt",
                text_path.display()
            );
            return None;
        }
        let file = File::open(&text_path).ok()?;
        Some(ViewFile {
            ino: meta.ino,
            view: view.to_string(),
            ty,
            len: meta.len,
            mtime: meta.mtime,
            entries: meta.entries,
            hash: hash(&content),
            file,
        })
    }

    /// Durably publish `bytes` as the new version of `view`/`ty`.
    #[allow(clippy::too_many_arguments)]
    pub fn publish(
        &self,
        view: &str,
        ty: IocType,
        bytes: &[u8],
        ino: u64,
        mtime: u64,
        entries: u64,
    ) -> Result<ViewFile> {
        let dir = self.view_dir(view);
        std::fs::create_dir_all(&dir).ctx(|| format!("create {}", dir.display()))?;
        let file = atomic::replace_file(&dir, ty.file_name(), |w| w.write_all(bytes))?;
        let content_hash = hash(bytes);
        let meta = Meta {
            ino,
            mtime,
            len: bytes.len() as u64,
            entries,
            hash: format!("{content_hash:032x}"),
        };
        let encoded = serde_json::to_vec(&meta)
            .map_err(|e| Error::Invalid(format!("encode view metadata: {e}")))?;
        atomic::replace_file(&dir, &Self::meta_name(ty), |w| w.write_all(&encoded))?;
        Ok(ViewFile {
            ino,
            view: view.to_string(),
            ty,
            len: bytes.len() as u64,
            mtime,
            entries,
            hash: content_hash,
            file,
        })
    }

    /// Delete the files of a view that is no longer configured (or of types it dropped).
    pub fn remove(&self, view: &str, keep: &[IocType]) -> Result<()> {
        let dir = self.view_dir(view);
        for ty in IocType::ALL.into_iter().filter(|t| !keep.contains(t)) {
            for name in [ty.file_name().to_string(), Self::meta_name(ty)] {
                match std::fs::remove_file(dir.join(&name)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(Error::io(format!("remove {}", dir.join(name).display()), e))
                    }
                }
            }
        }
        if keep.is_empty() {
            let _ = std::fs::remove_dir(&dir);
        }
        Ok(())
    }

    /// Names of the view directories on disk.
    pub fn views_on_disk(&self) -> Vec<String> {
        std::fs::read_dir(&self.dir)
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.path().is_dir())
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}
