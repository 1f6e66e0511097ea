//! Filling an inflated copy of a tier version (see `inflated`): every block inflated into
//! its place in the file, on every core.
//!
//! Where the filesystem reserves blocks on `fallocate` (ext4, XFS, tmpfs), workers inflate
//! straight into a shared mapping of the file: no second copy of each byte and no inode
//! lock between them (`pwrite` from two threads serialized on it: 145–168 ms for the
//! bench's 58 MiB file, 85–105 ms through the mapping). Elsewhere (copy-on-write
//! filesystems, where a write fault could still find no space and kill the process with
//! SIGBUS) each run of blocks is inflated into a buffer and written with `pwrite`.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use super::{decode_stored_into, Block, BlockData, TierVersion};
use crate::cache::BlockCache;
use crate::disk::mapped_mut::MappedMut;
use crate::disk::Handle;
use crate::error::{Error, IoContext, Result};

/// Blocks a worker takes at once (fewer claims; neighbouring pages filled by one thread).
const BLOCKS_PER_CLAIM: usize = 8;

/// Inflate every block of `v` into `file` (new and empty) at its offset. Blocks in the block
/// cache are copied as they are; the others are inflated without entering it (a whole-file
/// copy would evict what other readers use). `name` (`chaud/url.txt`) is for errors. Once
/// `stop` is set the workers take no more blocks: the file is then incomplete.
pub fn fill(
    v: &TierVersion,
    file: &Handle,
    cache: &BlockCache,
    name: &str,
    stop: &AtomicBool,
) -> Result<()> {
    let mapped = file.fd().is_some_and(reserves_on_fallocate);
    fill_by(v, file, cache, name, mapped, stop)
}

/// [`fill`] through a mapping of `file` (`mapped`) or with `pwrite`.
fn fill_by(
    v: &TierVersion,
    file: &Handle,
    cache: &BlockCache,
    name: &str,
    mapped: bool,
    stop: &AtomicBool,
) -> Result<()> {
    let blocks = v.blocks();
    let claims: Vec<Range<usize>> = (0..blocks.len())
        .step_by(BLOCKS_PER_CLAIM)
        .map(|from| from..(from + BLOCKS_PER_CLAIM).min(blocks.len()))
        .collect();
    let run_len = |r: &Range<usize>| (v.block_start(r.end) - v.block_start(r.start)) as usize;
    match file.fd().filter(|_| mapped) {
        Some(fd) => {
            let mut map = match MappedMut::reserve(fd, v.size()) {
                Ok(map) => map,
                // ext2/ext3 (ext4's magic number too) and ext4 without extents: no
                // fallocate, so no mapping either.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EINVAL)) => {
                    return fill_by(v, file, cache, name, false, stop)
                }
                Err(e) => {
                    return Err(e).ctx(|| {
                        format!("reserve {} bytes for the inflated copy of {name}", v.size())
                    })
                }
            };
            // The mapping cut into one slice per claim, handed out to the workers.
            let mut runs = Vec::with_capacity(claims.len());
            let mut rest = map.bytes_mut();
            for r in claims {
                let (run, after) = std::mem::take(&mut rest).split_at_mut(run_len(&r));
                runs.push((r, run));
                rest = after;
            }
            on_every_core(runs, name, stop, || {
                |(r, out): (Range<usize>, &mut [u8])| fill_run(&blocks[r], out, cache, name)
            })
        }
        None => on_every_core(claims, name, stop, || {
            let mut buf = Vec::new();
            move |r: Range<usize>| {
                buf.resize(run_len(&r), 0);
                let at = v.block_start(r.start);
                fill_run(&blocks[r], &mut buf, cache, name)?;
                file.write_all_at(&buf, at)
                    .ctx(|| format!("write the inflated copy of {name} at offset {at}"))
            }
        }),
    }
}

/// Whether the filesystem of `fd` allocates on `fallocate` for good, so a write fault on
/// the range can't fail for lack of space.
fn reserves_on_fallocate(fd: std::os::fd::BorrowedFd<'_>) -> bool {
    use nix::sys::statfs::{fstatfs, EXT4_SUPER_MAGIC, TMPFS_MAGIC, XFS_SUPER_MAGIC};
    fstatfs(fd).is_ok_and(|st| {
        [EXT4_SUPER_MAGIC, XFS_SUPER_MAGIC, TMPFS_MAGIC].contains(&st.filesystem_type())
    })
}

/// Inflate `blocks` (consecutive) into `out`, exactly their bytes long.
fn fill_run(blocks: &[Block], mut out: &mut [u8], cache: &BlockCache, name: &str) -> Result<()> {
    for block in blocks {
        let len = block.raw_len as usize;
        if out.len() < len {
            return Err(Error::Invalid(format!(
                "internal: block {} of {name} is longer than its place in the copy",
                block.id
            )));
        }
        let (here, after) = std::mem::take(&mut out).split_at_mut(len);
        out = after;
        let cached;
        let raw: &[u8] = match &block.data {
            BlockData::Mem { raw, .. } => raw,
            BlockData::Stored {
                file,
                offset,
                member_len,
                data_offset,
            } => match cache.peek((file.id, *offset)) {
                Some(raw) => {
                    cached = raw;
                    &cached
                }
                None => {
                    decode_stored_into(file, *offset, *member_len, *data_offset, here)?;
                    continue;
                }
            },
        };
        if raw.len() != len {
            return Err(Error::Invalid(format!(
                "internal: block {} of {name} holds {} bytes, not raw_len {len}",
                block.id,
                raw.len()
            )));
        }
        here.copy_from_slice(raw);
    }
    Ok(())
}

/// Hand out `queue`'s items, in order, to this thread and up to `cores() - 1` others, each
/// running its own `worker()`; once one fails, or `stop` is set, the others stop at their
/// next item (the copy is lost anyway). The error: a damaged block's if any worker met one
/// (the caller remembers those), else the first. A thread that can't be started is done
/// without.
fn on_every_core<T, W, F>(mut queue: Vec<T>, name: &str, stop: &AtomicBool, worker: W) -> Result<()>
where
    T: Send,
    W: Fn() -> F + Sync,
    F: FnMut(T) -> Result<()>,
{
    let workers = crate::cores().min(queue.len()).max(1);
    queue.reverse();
    let queue = Mutex::new(queue);
    let work = || -> Result<()> {
        let mut each = worker();
        loop {
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            let Some(item) = crate::sync::lock(&queue).pop() else {
                return Ok(());
            };
            if let Err(e) = each(item) {
                crate::sync::lock(&queue).clear();
                return Err(e);
            }
        }
    };
    let results: Vec<Result<()>> = std::thread::scope(|s| {
        let others: Vec<_> = (1..workers)
            .filter_map(|i| {
                std::thread::Builder::new()
                    .name(format!("iocfs-inflate-{i}"))
                    .spawn_scoped(s, work)
                    .ok()
            })
            .collect();
        let mine = work();
        others
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(Error::Invalid(format!(
                        "internal: a worker inflating {name} panicked"
                    )))
                })
            })
            .chain(std::iter::once(mine))
            .collect()
    });
    let mut errors: Vec<Error> = results.into_iter().filter_map(Result::err).collect();
    if errors.is_empty() {
        return Ok(());
    }
    let pick = errors
        .iter()
        .position(|e| matches!(e, Error::Corruption { .. }))
        .unwrap_or(0);
    Err(errors.swap_remove(pick))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::real::RealFile;
    use crate::ioc::IocType;
    use crate::store::model::Tier;
    use std::sync::Arc;

    /// `blocks` blocks of `lines` domains each.
    fn version(blocks: u32, lines: usize) -> Arc<TierVersion> {
        let blocks = (0..blocks)
            .map(|b| {
                let raw: Vec<u8> = (0..lines)
                    .flat_map(|i| format!("h{b}-{i}.example\n").into_bytes())
                    .collect();
                Block::mem(b, raw, vec![(1, 1); lines])
            })
            .collect();
        TierVersion::new(1, Tier::Froid, IocType::Domain, blocks, 0)
    }

    /// What a fill of `v` (`mapped` or not, `stop` set before it or not) leaves in the file.
    fn filled(v: &TierVersion, cache: &BlockCache, mapped: bool, stop: bool) -> Vec<u8> {
        let f = tempfile::tempfile().unwrap();
        let mut seen = f.try_clone().unwrap();
        let file: Handle = RealFile::boxed(f, "(test)");
        let stop = AtomicBool::new(stop);
        fill_by(v, &file, cache, "froid/domain.txt", mapped, &stop).unwrap();
        let mut got = Vec::new();
        std::io::Read::read_to_end(&mut seen, &mut got).unwrap();
        got
    }

    #[test]
    fn both_ways_of_filling_write_the_version_byte_for_byte() {
        let v = version(37, 50);
        let cache = BlockCache::new(1 << 20);
        let want = v.read(0, v.size() as usize, &cache).unwrap();
        for mapped in [true, false] {
            assert_eq!(filled(&v, &cache, mapped, false), want, "mapped: {mapped}");
        }
    }

    #[test]
    fn a_stopped_fill_inflates_no_block() {
        let v = version(20, 1);
        let cache = BlockCache::new(1 << 20);
        for mapped in [true, false] {
            let got = filled(&v, &cache, mapped, true);
            assert!(got.iter().all(|&b| b == 0), "mapped: {mapped}: {got:?}");
        }
    }
}
