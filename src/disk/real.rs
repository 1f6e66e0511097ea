//! The real file system: std and `openat`, with the failpoints of test builds
//! ([`crate::failpoint::io`]; they compile to nothing otherwise).

use std::fs::{self, File};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use super::{Bytes, Entry, FileHandle, FileSystem, Handle, Kind, LockGuard, Mapped, Metadata};
use crate::error::{Error, IoContext, Result};
use crate::failpoint::{self, IoOp};

pub struct RealFs;

/// An open file of the real file system.
#[derive(Debug)]
pub struct RealFile {
    file: File,
    path: PathBuf,
}

impl RealFile {
    /// `path` names it in errors (a memfd has none of its own).
    pub fn new(file: File, path: impl Into<PathBuf>) -> RealFile {
        RealFile {
            file,
            path: path.into(),
        }
    }

    pub fn boxed(file: File, path: impl Into<PathBuf>) -> Handle {
        Box::new(RealFile::new(file, path))
    }
}

impl FileHandle for RealFile {
    fn path(&self) -> &Path {
        &self.path
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.file.read_at(buf, offset)
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        failpoint::io(IoOp::Write, &self.path)?;
        self.file.write_at(buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        failpoint::io(IoOp::Write, &self.path)?;
        self.file.write_all_at(buf, offset)
    }

    fn write_zeros(&self, mut offset: u64, len: u64) -> io::Result<()> {
        static ZEROS: [u8; 1 << 16] = [0; 1 << 16];
        failpoint::io(IoOp::Zeros, &self.path)?;
        let end = offset + len;
        while offset < end {
            let n = (end - offset).min(ZEROS.len() as u64) as usize;
            self.file.write_all_at(&ZEROS[..n], offset)?;
            offset += n as u64;
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn sync_all(&self) -> io::Result<()> {
        self.file.sync_all()
    }

    fn sync_data(&self) -> io::Result<()> {
        failpoint::io(IoOp::SyncData, &self.path)?;
        self.file.sync_data()
    }

    fn set_mtime(&self, secs: u64) -> io::Result<()> {
        self.file
            .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
    }

    fn fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.file.as_fd())
    }
}

/// A directory, opened without following a symlink at its last component.
pub fn open_dir(dir: &Path) -> io::Result<std::os::fd::OwnedFd> {
    nix::fcntl::open(
        dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io::Error::from)
}

fn split(path: &Path) -> io::Result<(&Path, &std::ffi::OsStr)> {
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => Ok((
            if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            },
            name,
        )),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} names no file in a directory", path.display()),
        )),
    }
}

fn kind_of(ft: fs::FileType) -> Kind {
    if ft.is_file() {
        Kind::File
    } else if ft.is_dir() {
        Kind::Dir
    } else if ft.is_symlink() {
        Kind::Symlink
    } else {
        Kind::Other
    }
}

impl FileSystem for RealFs {
    fn name(&self) -> &'static str {
        "real"
    }

    fn create_new(&self, path: &Path, mode: u32) -> io::Result<Handle> {
        let (dir, name) = split(path)?;
        let dir_fd = open_dir(dir)?;
        let flags = OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW;
        let mode = Mode::from_bits_truncate(mode);
        let create = || nix::fcntl::openat(&dir_fd, name, flags | OFlag::O_CLOEXEC, mode);
        let fd = match create() {
            Err(nix::errno::Errno::EEXIST) => {
                log::warn!("{}: removing a leftover in the way", path.display());
                nix::unistd::unlinkat(&dir_fd, name, nix::unistd::UnlinkatFlags::NoRemoveDir)?;
                create()
            }
            other => other,
        }?;
        Ok(RealFile::boxed(File::from(fd), path))
    }

    fn open_rw(&self, path: &Path) -> io::Result<Handle> {
        let fd = nix::fcntl::open(
            path,
            OFlag::O_RDWR | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        let file = File::from(fd);
        if !file.metadata()?.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file; fix: move it away",
            ));
        }
        Ok(RealFile::boxed(file, path))
    }

    fn open_read(&self, path: &Path) -> io::Result<Handle> {
        Ok(RealFile::boxed(File::open(path)?, path))
    }

    fn create_unnamed(&self, dir: &Path) -> io::Result<Handle> {
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC)
            .mode(0o600)
            .open(dir)?;
        Ok(RealFile::boxed(file, dir.join("(unnamed)")))
    }

    fn map(&self, path: &Path) -> io::Result<Bytes> {
        Mapped::open(path).map(Bytes::Mapped)
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::hard_link(from, to)
    }

    fn create_dir(&self, path: &Path, mode: u32) -> io::Result<()> {
        fs::DirBuilder::new().mode(mode).create(path)
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        fs::remove_dir(path)
    }

    fn read_dir(&self, dir: &Path) -> io::Result<Vec<Entry>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            out.push(Entry {
                name: entry.file_name(),
                kind: kind_of(entry.file_type()?),
            });
        }
        Ok(out)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn metadata(&self, path: &Path) -> io::Result<Metadata> {
        let md = fs::symlink_metadata(path)?;
        Ok(Metadata {
            len: md.len(),
            mtime: md.mtime(),
            kind: kind_of(md.file_type()),
        })
    }

    fn trusted_dir(&self, path: &Path, what: &str, create: bool) -> Result<PathBuf> {
        if create {
            crate::secure::ensure_trusted_dir(path, what)
        } else {
            crate::secure::trusted_dir(path, what)
        }
    }

    fn subdir(&self, parent: &Path, name: &str, create: bool) -> Result<(PathBuf, bool)> {
        let existed = fs::symlink_metadata(parent.join(name)).is_ok();
        let path = crate::secure::subdir(parent, name, create)?;
        Ok((path, create && !existed))
    }

    fn lock(&self, data_dir: &Path) -> Result<LockGuard> {
        use std::io::Write;
        let path = data_dir.join("LOCK");
        let file = open_lock_file(data_dir)?;
        let mut locked =
            match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
                Ok(locked) => locked,
                Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                    let holder = fs::read_to_string(&path).unwrap_or_default();
                    return Err(Error::Locked(format!(
                        "data directory {} is in use by another iocfs{}; stop it first",
                        data_dir.display(),
                        holder
                            .trim()
                            .parse::<u32>()
                            .map(|p| format!(" (pid {p})"))
                            .unwrap_or_default()
                    )));
                }
                Err((_, errno)) => {
                    return Err(Error::io(format!("flock {}", path.display()), errno.into()))
                }
            };
        locked
            .set_len(0)
            .and_then(|()| writeln!(*locked, "{}", std::process::id()))
            .ctx(|| format!("write {}", path.display()))?;
        Ok(Box::new(locked))
    }
}

/// Open `DATA/LOCK`, creating it if missing, never through a symlink.
pub fn open_lock_file(data_dir: &Path) -> Result<File> {
    let path = data_dir.join("LOCK");
    let dir = open_dir(data_dir).ctx(|| format!("open directory {}", data_dir.display()))?;
    let fd = nix::fcntl::openat(
        &dir,
        "LOCK",
        OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o640),
    )
    .ctx(|| format!("open {}", path.display()))?;
    let file = File::from(fd);
    if !file
        .metadata()
        .ctx(|| format!("stat {}", path.display()))?
        .is_file()
    {
        return Err(Error::Unsafe(format!(
            "{} is not a regular file; fix: remove it",
            path.display()
        )));
    }
    Ok(file)
}
