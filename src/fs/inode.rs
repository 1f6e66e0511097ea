//! Inode numbers and attributes of the mount.
//!
//! Fixed inodes: the directories and the `.iocfs` files. Every version of a live or tier
//! file is its own inode (the version's id), so a descriptor opened before a replacement
//! keeps reading — and fstat'ing — the old version, and the kernel page cache (kept across
//! opens of tier files) is never stale. Scratch files and lookup entries get ids from a
//! counter between the two ranges.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{FileAttr, FileType, INodeNo};

use crate::store::model::Bucket;

pub const ROOT: u64 = 1;
pub const CONTROL_DIR: u64 = 6;
pub const STATS: u64 = 7;
pub const HEALTH: u64 = 8;
pub const CTL: u64 = 9;
pub const LOOKUP_DIR: u64 = 10;
/// Scratch files and lookup entries: from here up to the first version id.
pub const FIRST_DYNAMIC: u64 = 1 << 20;

pub const CONTROL_DIR_NAME: &str = ".iocfs";

pub fn bucket_dir(bucket: Bucket) -> u64 {
    2 + u64::from(bucket.code())
}

pub fn dir_bucket(ino: u64) -> Option<Bucket> {
    ino.checked_sub(2)
        .and_then(|c| u8::try_from(c).ok())
        .and_then(Bucket::from_code)
}

/// What `.iocfs` file a fixed inode is.
pub fn control_name(ino: u64) -> Option<&'static str> {
    match ino {
        STATS => Some("stats.json"),
        HEALTH => Some("health"),
        CTL => Some("ctl"),
        LOOKUP_DIR => Some("lookup"),
        _ => None,
    }
}

/// Ownership and permissions from the config.
#[derive(Debug, Clone, Copy)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
    pub file_mode: u16,
}

pub fn time(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

pub fn attr(ino: u64, kind: FileType, perm: u16, size: u64, mtime: u64, owner: &Owner) -> FileAttr {
    let t = time(mtime);
    FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: size.div_ceil(512),
        atime: t,
        mtime: t,
        ctime: t,
        crtime: t,
        kind,
        perm,
        nlink: if kind == FileType::Directory { 2 } else { 1 },
        uid: owner.uid,
        gid: owner.gid,
        rdev: 0,
        // Tools size their buffers by st_blksize (cat, cp): one kernel write request of
        // max_write bytes means one WAL fsync per MiB of input instead of per 128 KiB.
        blksize: super::MAX_WRITE,
        flags: 0,
    }
}

/// Directory permissions: live takes new (scratch) files; tiers and the control tree don't.
pub fn dir_perm(ino: u64) -> u16 {
    match dir_bucket(ino) {
        Some(Bucket::Live) => 0o755,
        _ if ino == ROOT => 0o755,
        _ => 0o555,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_inodes_do_not_overlap() {
        let mut all = vec![ROOT, CONTROL_DIR, STATS, HEALTH, CTL, LOOKUP_DIR];
        all.extend(Bucket::ALL.map(bucket_dir));
        let mut sorted = all.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), all.len());
        assert!(all.iter().all(|&i| i < FIRST_DYNAMIC));
        for b in Bucket::ALL {
            assert_eq!(dir_bucket(bucket_dir(b)), Some(b));
        }
        assert_eq!(dir_bucket(ROOT), None);
    }
}
