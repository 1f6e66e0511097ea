//! The least a FUSE daemon can do: every name in the root is a one-line file, found, opened
//! and read with no state behind it. `scripts/bench` mounts it next to iocfs (same fuser
//! settings: 16 threads, a cloned descriptor each, direct I/O) to measure the round-trip
//! floor of the machine, against which the lookup rows' targets can be read.
//!
//!     cargo run --release --example fuse_floor -- MOUNTPOINT   (root; SIGTERM or umount ends it)

use std::ffi::OsStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    LockOwner, MountOption, OpenFlags, ReplyAttr, ReplyData, ReplyEntry, ReplyOpen, Request,
    Session,
};

const BODY: &[u8] = b"{\"value\":\"192.0.2.1\",\"bucket\":\"live\",\"type\":\"ipv4\",\"n\":1}\n";

/// Hands out a new inode per lookup, like lookup/VALUE for distinct values.
struct Floor(AtomicU64);

fn attr(ino: INodeNo) -> FileAttr {
    let dir = ino == INodeNo::ROOT;
    FileAttr {
        ino,
        size: if dir { 0 } else { BODY.len() as u64 },
        blocks: 1,
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind: if dir {
            FileType::Directory
        } else {
            FileType::RegularFile
        },
        perm: if dir { 0o755 } else { 0o444 },
        nlink: 1,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

impl Filesystem for Floor {
    fn lookup(&self, _req: &Request, parent: INodeNo, _name: &OsStr, reply: ReplyEntry) {
        if parent != INodeNo::ROOT {
            return reply.error(Errno::ENOENT);
        }
        let ino = INodeNo(self.0.fetch_add(1, Ordering::Relaxed));
        reply.entry(&Duration::ZERO, &attr(ino), Generation(0));
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        reply.attr(&Duration::ZERO, &attr(ino));
    }

    fn open(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.opened(
            FileHandle(1),
            FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_NOFLUSH,
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        _size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let from = usize::try_from(offset).map_or(BODY.len(), |o| o.min(BODY.len()));
        reply.data(&BODY[from..]);
    }
}

fn main() -> std::io::Result<()> {
    let Some(mountpoint) = std::env::args_os().nth(1) else {
        eprintln!("usage: fuse_floor MOUNTPOINT");
        std::process::exit(2);
    };
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("fuse_floor".into()),
        MountOption::NoAtime,
    ];
    config.n_threads = Some(16);
    config.clone_fd = true;
    Session::new(
        Floor(AtomicU64::new(2)),
        std::path::Path::new(&mountpoint),
        &config,
    )?
    .run()
}
