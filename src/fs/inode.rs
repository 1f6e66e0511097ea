//! Inode numbers and attributes of the mount.
//!
//! Fixed inodes: the directories and the `.iocfs` files. Every version of a live or tier
//! file is its own inode (the version's id), so a descriptor opened before a replacement
//! keeps reading — and fstat'ing — the old version, and the kernel page cache (kept across
//! opens of tier files) is never stale. Scratch files and lookup entries take their ids
//! from the same 64-bit counter as versions (the store's), so no two can ever be equal,
//! however many are made; a lookup entry keeps its inode while the kernel holds it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{FileAttr, FileType, INodeNo};

use crate::store::model::{Bucket, SourceId, Target, MAX_SOURCES};

pub const ROOT: INodeNo = INodeNo(1);
pub const CONTROL_DIR: INodeNo = INodeNo(6);
pub const STATS: INodeNo = INodeNo(7);
pub const HEALTH: INodeNo = INodeNo(8);
pub const CTL: INodeNo = INodeNo(9);
pub const LOOKUP_DIR: INodeNo = INodeNo(10);
pub const VIEWS_DIR: INodeNo = INodeNo(11);
pub const ALLOW_DIR: INodeNo = INodeNo(12);
pub const SOURCES_DIR: INodeNo = INodeNo(13);
/// `sources/<name>/`: this plus the source's id (1..=63).
const SOURCE_DIR_BASE: u64 = 64;
pub const METRICS: INodeNo = INodeNo(14);
/// Versions, scratch files and lookup entries: one counter, from here up.
pub const FIRST_DYNAMIC: u64 = crate::store::recovery::FIRST_VERSION_ID;

pub const CONTROL_DIR_NAME: &str = ".iocfs";
pub const VIEWS_DIR_NAME: &str = "views";
pub const ALLOW_DIR_NAME: &str = "allow";
pub const SOURCES_DIR_NAME: &str = "sources";

/// The directories whose type files take writes (and scratch files): live/, allow/ and
/// each source's folder (whether that source is declared is the caller's to check).
pub fn writable_dir(ino: INodeNo) -> Option<Target> {
    match ino {
        ALLOW_DIR => Some(Target::Allow),
        _ if dir_bucket(ino) == Some(Bucket::Live) => Some(Target::Live),
        _ => dir_source(ino).map(Target::Source),
    }
}

/// The directory inode of a writable file's target.
pub fn target_dir(target: Target) -> INodeNo {
    match target {
        Target::Live => bucket_dir(Bucket::Live),
        Target::Allow => ALLOW_DIR,
        Target::Source(id) => source_dir(id),
    }
}

pub fn source_dir(id: SourceId) -> INodeNo {
    INodeNo(SOURCE_DIR_BASE + u64::from(id))
}

/// The source whose folder `ino` is.
pub fn dir_source(ino: INodeNo) -> Option<SourceId> {
    let id = ino.0.checked_sub(SOURCE_DIR_BASE)?;
    (1..=MAX_SOURCES as u64)
        .contains(&id)
        .then_some(id as SourceId)
}

pub fn bucket_dir(bucket: Bucket) -> INodeNo {
    INodeNo(2 + u64::from(bucket.code()))
}

pub fn dir_bucket(ino: INodeNo) -> Option<Bucket> {
    ino.0
        .checked_sub(2)
        .and_then(|c| u8::try_from(c).ok())
        .and_then(Bucket::from_code)
}

/// What `.iocfs` file a fixed inode is.
pub fn control_name(ino: INodeNo) -> Option<&'static str> {
    match ino {
        STATS => Some("stats.json"),
        METRICS => Some("metrics"),
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

/// The inode of a file version: its id, unique among all versions of all files.
pub fn version(id: u64) -> INodeNo {
    INodeNo(id)
}

pub fn time(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// `attr` of one version of a list (live, tier or view file), `version` its id (for a live
/// version, the id of the version whose bytes it holds). List times are kept in whole
/// seconds; the nanoseconds number the version (its id modulo [`VERSION_NANOS`]), so that
/// two versions made within one second, of one size, still show different mtimes, as they
/// would on ext4: `rsync --modify-window=-1`, `make` and `find -newer` see the change
/// (rsync's default quick check compares whole seconds, on any filesystem). Under a
/// microsecond: a file's mtime is never visibly ahead of the clock (`make` warns of clock
/// skew for a file dated even 0.3 s ahead).
pub const VERSION_NANOS: u64 = 1_000;

pub fn version_attr(
    ino: INodeNo,
    version: u64,
    perm: u16,
    size: u64,
    mtime: u64,
    owner: &Owner,
) -> FileAttr {
    let mut a = attr(ino, FileType::RegularFile, perm, size, mtime, owner);
    let t = time(mtime) + Duration::from_nanos(version % VERSION_NANOS);
    (a.atime, a.mtime, a.ctime, a.crtime) = (t, t, t, t);
    a
}

pub fn attr(
    ino: INodeNo,
    kind: FileType,
    perm: u16,
    size: u64,
    mtime: u64,
    owner: &Owner,
) -> FileAttr {
    let t = time(mtime);
    FileAttr {
        ino,
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

/// Directory permissions: live/ and allow/ take new (scratch) files; tiers and the control
/// tree don't.
pub fn dir_perm(ino: INodeNo) -> u16 {
    if ino == ROOT || ino == SOURCES_DIR || writable_dir(ino).is_some() {
        0o755
    } else {
        0o555
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ioc::IocType;
    use crate::store::sources::first_list_id;

    #[test]
    fn fixed_inodes_do_not_overlap() {
        let mut all = vec![
            ROOT,
            CONTROL_DIR,
            STATS,
            METRICS,
            HEALTH,
            CTL,
            LOOKUP_DIR,
            VIEWS_DIR,
            ALLOW_DIR,
            SOURCES_DIR,
        ];
        all.extend(Bucket::ALL.map(bucket_dir));
        all.extend((1..=MAX_SOURCES as SourceId).map(source_dir));
        let mut sorted = all.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), all.len());
        assert!(all.iter().all(|&i| i.0 < FIRST_DYNAMIC));
        // The fixed ids of source lists lie between the fixed inodes and the counter's.
        let lists: Vec<u64> = (0..=MAX_SOURCES as SourceId)
            .flat_map(|id| IocType::ALL.map(|ty| first_list_id(id, ty)))
            .collect();
        let fixed_max = all.iter().map(|i| i.0).max().unwrap();
        assert!(lists.iter().all(|&l| fixed_max < l && l < FIRST_DYNAMIC));
        let mut distinct = lists.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), lists.len());
        for b in Bucket::ALL {
            assert_eq!(dir_bucket(bucket_dir(b)), Some(b));
        }
        assert_eq!(dir_bucket(ROOT), None);
        for id in 1..=MAX_SOURCES as SourceId {
            assert_eq!(dir_source(source_dir(id)), Some(id));
            assert_eq!(writable_dir(source_dir(id)), Some(Target::Source(id)));
        }
        assert_eq!(dir_source(SOURCES_DIR), None);
        assert_eq!(dir_source(INodeNo(SOURCE_DIR_BASE)), None);
    }
}
