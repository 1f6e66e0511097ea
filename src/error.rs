//! One error type for the engine and the daemon, mapped to an errno at the FUSE boundary.

use std::io;
use std::path::PathBuf;

/// Errors carry enough context (file, offset, key) for an admin to act on them.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O failure, with what we were doing and on which file.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// Stored data failed a checksum or structural check.
    #[error("corruption in {}{}: {what}", path.display(), offset.map(|o| format!(" at offset {o}")).unwrap_or_default())]
    Corruption {
        path: PathBuf,
        offset: Option<u64>,
        what: String,
    },
    /// Input that the caller should fix (bad indicator, bad command).
    #[error("{0}")]
    Invalid(String),
    /// The WAL could not be made durable earlier; no write is acknowledged until a restart.
    #[error("writes are refused: {0}")]
    Failed(String),
    /// A thread panicked while handling this request; the store refuses writes from now on.
    #[error("thread {thread} panicked: {message}; writes are refused until a restart")]
    Panicked { thread: String, message: String },
    /// The daemon is stopping and takes no more writes.
    #[error("iocfs is shutting down")]
    ShuttingDown,
    /// Another process holds the data directory.
    #[error("{0}")]
    Locked(String),
    /// More than one record, or one file, can hold (EFBIG).
    #[error("{0}")]
    TooLarge(String),
    /// A path iocfs would trust is open to other users (or is not what it should be).
    #[error("{0}")]
    Unsafe(String),
    /// No such thing (a source by that name).
    #[error("{0}")]
    NotFound(String),
    /// It exists already (a source declared twice).
    #[error("{0}")]
    Exists(String),
    /// It still holds something (a source that lists indicators).
    #[error("{0}")]
    NotEmpty(String),
    /// A fixed-size table is full (63 declared sources).
    #[error("{0}")]
    Full(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(context: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub fn corruption(
        path: impl Into<PathBuf>,
        offset: Option<u64>,
        what: impl Into<String>,
    ) -> Error {
        Error::Corruption {
            path: path.into(),
            offset,
            what: what.into(),
        }
    }

    /// The errno a system call on the mount should fail with.
    pub fn errno(&self) -> i32 {
        match self {
            Error::Io { source, .. } => match source.raw_os_error() {
                Some(libc::ENOSPC) => libc::ENOSPC,
                Some(libc::EDQUOT) => libc::EDQUOT,
                Some(libc::ENOMEM) => libc::ENOMEM,
                // Out of descriptors fails that request, not the store (README "Reliability").
                Some(libc::EMFILE) => libc::EMFILE,
                Some(libc::ENFILE) => libc::ENFILE,
                // A batch refused before it was written hands its writers this error.
                Some(libc::EFBIG) => libc::EFBIG,
                _ => libc::EIO,
            },
            Error::Corruption { .. } | Error::Failed(_) | Error::Panicked { .. } => libc::EIO,
            Error::Invalid(_) => libc::EINVAL,
            Error::ShuttingDown => libc::EROFS,
            Error::Locked(_) => libc::EBUSY,
            Error::TooLarge(_) => libc::EFBIG,
            Error::Unsafe(_) => libc::EPERM,
            Error::NotFound(_) => libc::ENOENT,
            Error::Exists(_) => libc::EEXIST,
            Error::NotEmpty(_) => libc::ENOTEMPTY,
            Error::Full(_) => libc::ENOSPC,
        }
    }

    /// The filesystem, or the user's quota on it, is full.
    pub fn is_disk_full(&self) -> bool {
        matches!(self.errno(), libc::ENOSPC | libc::EDQUOT)
    }

    /// True for failures that leave nothing half-done, so the same request may succeed later
    /// (e.g. the disk was full and has been freed).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.errno(),
            libc::ENOSPC | libc::EDQUOT | libc::EMFILE | libc::ENFILE
        )
    }
}

/// Attach context to I/O results: `file.sync_all().ctx(|| format!("fsync {}", path.display()))`.
pub trait IoContext<T> {
    fn ctx<S: Into<String>>(self, context: impl FnOnce() -> S) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx<S: Into<String>>(self, context: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|source| Error::io(context(), source))
    }
}

impl<T> IoContext<T> for nix::Result<T> {
    fn ctx<S: Into<String>>(self, context: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|errno| Error::io(context(), io::Error::from(errno)))
    }
}
