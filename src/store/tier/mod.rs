//! Tier sets: the read-only, gzip-backed buckets (chaud, tiede, froid).
//!
//! A [`TierVersion`] is an immutable list of blocks (≤ block_size bytes of whole lines each).
//! A block's bytes are either a member of a committed tier file ([`BlockData::Stored`], read
//! through the block cache) or, after a change not yet committed, held in memory
//! ([`BlockData::Mem`], with each line's times so a commit can write them). Every change
//! builds a new version; a handle opened on an old one keeps reading it. Block ids are global
//! and stable: moving a whole block to another tier keeps its id, and the block directory (in
//! the engine state) says which tier holds it, so no index entry has to change.

pub mod ahead;
mod fill;
pub mod format;
pub mod inflated;
pub mod prefetch;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::cache::BlockCache;
use crate::disk::Handle;
use crate::error::{Error, IoContext, Result};
use crate::ioc::IocType;
use crate::store::live::Times;
use crate::store::model::Tier;
pub use inflated::TierOpens;

/// An open, committed tier file. Its `id` is unique for the life of the process (cache key).
#[derive(Debug)]
pub struct TierFile {
    pub id: u64,
    pub path: PathBuf,
    pub file: Handle,
    pub applied_seq: u64,
    pub generation: u64,
}

impl TierFile {
    pub fn read_member(&self, offset: u64, len: u32) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; len as usize];
        self.file
            .read_exact_at(&mut buf, offset)
            .ctx(|| format!("read {} at offset {offset}", self.path.display()))?;
        Ok(buf)
    }
}

#[derive(Clone, Debug)]
pub enum BlockData {
    Stored {
        file: Arc<TierFile>,
        offset: u64,
        member_len: u32,
        /// Offset of the DEFLATE data within the member (known from the index, so a read
        /// needs no header parsing).
        data_offset: u32,
    },
    Mem {
        raw: Arc<Vec<u8>>,
        times: Arc<Vec<Times>>,
    },
}

#[derive(Clone, Debug)]
pub struct Block {
    pub id: u32,
    pub lines: u32,
    pub raw_len: u32,
    pub min_last: u32,
    pub max_last: u32,
    /// Failed to inflate at load: reads of it fail with EIO, aging leaves it where it is.
    pub bad: bool,
    pub data: BlockData,
}

impl Block {
    /// A block held in memory; `raw` is whole lines, one entry of `times` per line.
    pub fn mem(id: u32, raw: Vec<u8>, times: Vec<Times>) -> Block {
        let (min_last, max_last) = times
            .iter()
            .fold((u32::MAX, 0), |(lo, hi), t| (lo.min(t.1), hi.max(t.1)));
        Block {
            id,
            lines: times.len() as u32,
            raw_len: raw.len() as u32,
            min_last,
            max_last,
            bad: false,
            data: BlockData::Mem {
                raw: Arc::new(raw),
                times: Arc::new(times),
            },
        }
    }

    /// Identity of the bytes behind the block, stable while the block is alive.
    pub fn ident(&self) -> BlockIdent {
        match &self.data {
            BlockData::Stored { file, offset, .. } => BlockIdent::Stored(file.id, *offset),
            BlockData::Mem { raw, .. } => BlockIdent::Mem(Arc::as_ptr(raw) as usize),
        }
    }

    /// The block's decompressed bytes (counted as a cache hit or miss).
    pub fn raw(&self, cache: &BlockCache) -> Result<Arc<Vec<u8>>> {
        self.load(cache, true)
    }

    /// Same, for read-ahead: not counted in the hit rate users see.
    pub fn raw_uncounted(&self, cache: &BlockCache) -> Result<Arc<Vec<u8>>> {
        self.load(cache, false)
    }

    fn load(&self, cache: &BlockCache, counted: bool) -> Result<Arc<Vec<u8>>> {
        match &self.data {
            BlockData::Mem { raw, .. } => Ok(raw.clone()),
            BlockData::Stored {
                file,
                offset,
                member_len,
                data_offset,
            } => cache.get_or_load((file.id, *offset), counted, || {
                decode_stored(file, *offset, *member_len, *data_offset, self.raw_len)
            }),
        }
    }
}

/// Read and inflate one member, checking it against what the index said about it.
pub fn decode_stored(
    file: &TierFile,
    offset: u64,
    member_len: u32,
    data_offset: u32,
    raw_len: u32,
) -> Result<Vec<u8>> {
    let mut out = vec![0; raw_len as usize];
    decode_stored_into(file, offset, member_len, data_offset, &mut out)?;
    Ok(out)
}

/// [`decode_stored`] into `out` (exactly raw_len bytes). On error what `out` holds is
/// unspecified: the caller must not hand it out.
pub fn decode_stored_into(
    file: &TierFile,
    offset: u64,
    member_len: u32,
    data_offset: u32,
    out: &mut [u8],
) -> Result<()> {
    // The header was checked when the file was indexed; a read only needs the data. The
    // gzip CRC32 and ISIZE still check every byte inflated.
    let header = format::BlockHeader {
        block_id: 0,
        lines: 0,
        raw_len: out.len() as u32,
        member_len,
        data_offset,
        timestamps: Vec::new(),
    };
    SCRATCH.with(|scratch| {
        let mut member = scratch.borrow_mut();
        member.resize(member_len as usize, 0);
        file.file
            .read_exact_at(&mut member, offset)
            .ctx(|| format!("read {} at offset {offset}", file.path.display()))?;
        DECOMPRESSOR
            .with(|d| format::decode_block_into(&mut d.borrow_mut(), &member, &header, offset, out))
            .map_err(|e| Error::corruption(&file.path, Some(offset), e.to_string()))
    })
}

thread_local! {
    /// Reused buffer for compressed members read from disk.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    static DECOMPRESSOR: std::cell::RefCell<libdeflater::Decompressor> =
        std::cell::RefCell::new(libdeflater::Decompressor::new());
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BlockIdent {
    Stored(u64, u64),
    Mem(usize),
}

/// What readers of one tier file see.
#[derive(Debug)]
pub struct TierVersion {
    /// Unique among all versions of all files (the FUSE inode number).
    pub id: u64,
    pub tier: Tier,
    pub ty: IocType,
    blocks: Vec<Block>,
    /// Offset of each block's first byte in the served file.
    starts: Vec<u64>,
    size: u64,
    lines: u64,
    /// Compressed bytes of the blocks held in a committed file (stats, without a walk).
    stored: u64,
    pub mtime: u64,
    by_id: HashMap<u32, usize>,
    /// How its inode is open (see [`TierOpens`]): shared with the versions that rebase it
    /// (same id, so the same inode to the kernel).
    inode: Arc<TierInode>,
}

/// What belongs to a tier version's inode rather than to one `TierVersion` value: a commit
/// rebases a version onto the new file under the same id ([`TierVersion::rebased`]).
#[derive(Debug, Default)]
pub struct TierInode {
    opens: std::sync::Mutex<TierOpens>,
}

impl TierVersion {
    pub fn new(
        id: u64,
        tier: Tier,
        ty: IocType,
        blocks: Vec<Block>,
        mtime: u64,
    ) -> Arc<TierVersion> {
        TierVersion::with_inode(id, tier, ty, blocks, mtime, Arc::default())
    }

    /// The same version (id, content, mtime) on other blocks holding the same bytes, e.g.
    /// after a commit moved them into a new file; opens of its inode stay counted.
    pub fn rebased(&self, blocks: Vec<Block>) -> Arc<TierVersion> {
        TierVersion::with_inode(
            self.id,
            self.tier,
            self.ty,
            blocks,
            self.mtime,
            self.inode.clone(),
        )
    }

    fn with_inode(
        id: u64,
        tier: Tier,
        ty: IocType,
        blocks: Vec<Block>,
        mtime: u64,
        inode: Arc<TierInode>,
    ) -> Arc<TierVersion> {
        let mut starts = Vec::with_capacity(blocks.len());
        let mut size = 0u64;
        let mut lines = 0u64;
        let mut stored = 0u64;
        let mut by_id = HashMap::with_capacity(blocks.len());
        for (pos, b) in blocks.iter().enumerate() {
            starts.push(size);
            size += u64::from(b.raw_len);
            lines += u64::from(b.lines);
            if let BlockData::Stored { member_len, .. } = &b.data {
                stored += u64::from(*member_len);
            }
            by_id.insert(b.id, pos);
        }
        Arc::new(TierVersion {
            id,
            tier,
            ty,
            blocks,
            starts,
            size,
            lines,
            stored,
            mtime,
            by_id,
            inode,
        })
    }

    /// How its inode is open now; held, no other open or release of it is decided.
    pub fn opens(&self) -> std::sync::MutexGuard<'_, TierOpens> {
        crate::sync::lock(&self.inode.opens)
    }

    /// Its inode, alive while any version value of that id is (for what is kept per inode).
    pub fn inode(&self) -> std::sync::Weak<TierInode> {
        Arc::downgrade(&self.inode)
    }

    pub fn empty(id: u64, tier: Tier, ty: IocType) -> Arc<TierVersion> {
        TierVersion::new(id, tier, ty, Vec::new(), 0)
    }

    /// Decompressed size: exactly what a full read returns.
    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn lines(&self) -> u64 {
        self.lines
    }

    pub fn stored_bytes(&self) -> u64 {
        self.stored
    }

    pub fn blocks(&self) -> &[Block] {
        &self.blocks
    }

    pub fn block(&self, id: u32) -> Option<&Block> {
        self.by_id.get(&id).and_then(|&pos| self.blocks.get(pos))
    }

    /// Index of the block holding byte `offset`.
    pub fn block_at(&self, offset: u64) -> Option<usize> {
        if offset >= self.size {
            return None;
        }
        Some(self.starts.partition_point(|&s| s <= offset) - 1)
    }

    pub fn block_start(&self, pos: usize) -> u64 {
        self.starts.get(pos).copied().unwrap_or(self.size)
    }

    /// Copy up to `size` bytes at `offset`, decompressing only the blocks that overlap.
    pub fn read(&self, offset: u64, size: usize, cache: &BlockCache) -> Result<Vec<u8>> {
        self.read_blocks(offset, size, cache)
            .map(|(bytes, _)| bytes)
    }

    /// Like `read`, also returning the position of the last block touched (for read-ahead).
    pub fn read_blocks(
        &self,
        offset: u64,
        size: usize,
        cache: &BlockCache,
    ) -> Result<(Vec<u8>, usize)> {
        let end = self.size.min(offset.saturating_add(size as u64));
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        let Some(mut pos) = self.block_at(offset) else {
            return Ok((out, 0));
        };
        let mut at = offset;
        let mut last = pos;
        while at < end {
            last = pos;
            let Some(block) = self.blocks.get(pos) else {
                break;
            };
            let start = self.starts[pos];
            let raw = block.raw(cache)?;
            let from = (at - start) as usize;
            let to = ((end - start) as usize).min(raw.len());
            out.extend_from_slice(raw.get(from..to).unwrap_or_default());
            at = start + raw.len() as u64;
            pos += 1;
        }
        Ok((out, last))
    }
}

/// Appends lines at the end of a tier's block list, filling the last block up to the block
/// size before starting a new one, so aging many small batches doesn't fragment the file.
pub struct TailAppender<'a> {
    blocks: &'a mut Vec<Block>,
    block_size: usize,
    cur: Option<(u32, Vec<u8>, Vec<Times>)>,
}

impl<'a> TailAppender<'a> {
    /// Reopens the last block for appending when it has room.
    pub fn new(
        blocks: &'a mut Vec<Block>,
        block_size: usize,
        cache: &BlockCache,
    ) -> Result<TailAppender<'a>> {
        let mut cur = None;
        if let Some(last) = blocks.last().filter(|b| !b.bad) {
            if (last.raw_len as usize) < block_size / 2
                && (last.lines as usize) < format::MAX_BLOCK_LINES
            {
                if let BlockData::Mem { raw, times } = &last.data {
                    cur = Some((last.id, raw.as_ref().clone(), times.as_ref().clone()));
                } else {
                    // A small stored block: its line times are needed to rewrite it, and only
                    // the member header has them.
                    let times = stored_times(last)?;
                    cur = Some((last.id, last.raw(cache)?.as_ref().clone(), times));
                }
                blocks.pop();
            }
        }
        Ok(TailAppender {
            blocks,
            block_size,
            cur,
        })
    }

    /// Add one line (without '\n'); returns the id of the block it went into.
    pub fn push(&mut self, value: &[u8], times: Times, next_id: &mut u32) -> u32 {
        let need = value.len() + 1;
        let full = match &self.cur {
            Some((_, raw, t)) => {
                raw.len() + need > self.block_size || t.len() >= format::MAX_BLOCK_LINES
            }
            None => false,
        };
        if full {
            self.flush();
        }
        let (id, raw, t) = self.cur.get_or_insert_with(|| {
            let id = *next_id;
            *next_id += 1;
            (id, Vec::with_capacity(self_block_hint(need)), Vec::new())
        });
        raw.extend_from_slice(value);
        raw.push(b'\n');
        t.push(times);
        *id
    }

    fn flush(&mut self) {
        if let Some((id, raw, times)) = self.cur.take() {
            if !times.is_empty() {
                self.blocks.push(Block::mem(id, raw, times));
            }
        }
    }
}

impl Drop for TailAppender<'_> {
    fn drop(&mut self) {
        self.flush();
    }
}

fn self_block_hint(need: usize) -> usize {
    need.max(4096)
}

/// A block's inflated lines and each line's times.
pub type BlockContents = (Arc<Vec<u8>>, Arc<Vec<Times>>);

impl Block {
    /// The block's lines and each line's times, for a scan of a whole partition (a view
    /// build): taken from the cache if there, otherwise inflated without entering it.
    pub fn contents(&self, cache: &BlockCache) -> Result<BlockContents> {
        match &self.data {
            BlockData::Mem { raw, times } => Ok((raw.clone(), times.clone())),
            BlockData::Stored {
                file,
                offset,
                member_len,
                ..
            } => {
                let corrupt = |e: format::FormatError| {
                    Error::corruption(&file.path, Some(*offset), e.to_string())
                };
                let member = file.read_member(*offset, *member_len)?;
                let (format::Member::Block(header), _) =
                    format::parse_member(&member, *offset).map_err(corrupt)?
                else {
                    return Err(Error::corruption(
                        &file.path,
                        Some(*offset),
                        "expected a block member",
                    ));
                };
                let raw = match cache.peek((file.id, *offset)) {
                    Some(raw) => raw,
                    None => {
                        let mut out = Vec::new();
                        DECOMPRESSOR
                            .with(|d| {
                                format::decode_block(
                                    &mut d.borrow_mut(),
                                    &member,
                                    &header,
                                    *offset,
                                    &mut out,
                                )
                            })
                            .map_err(corrupt)?;
                        Arc::new(out)
                    }
                };
                Ok((raw, Arc::new(header.timestamps)))
            }
        }
    }
}

/// Per-line times of a stored block, from its member header.
pub fn stored_times(block: &Block) -> Result<Vec<Times>> {
    match &block.data {
        BlockData::Mem { times, .. } => Ok(times.as_ref().clone()),
        BlockData::Stored {
            file,
            offset,
            member_len,
            ..
        } => {
            let member = file.read_member(*offset, *member_len)?;
            match format::parse_member(&member, *offset) {
                Ok((format::Member::Block(h), _)) => Ok(h.timestamps),
                Ok(_) => Err(Error::corruption(
                    &file.path,
                    Some(*offset),
                    "expected a block member",
                )),
                Err(e) => Err(Error::corruption(&file.path, Some(*offset), e.to_string())),
            }
        }
    }
}

/// Split a block's bytes into lines (without '\n'); a last line may lack its '\n'.
/// Finds the ends with `memchr`: 3× faster than a byte-at-a-time split on IOC-length lines.
pub fn lines(raw: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = raw;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let (line, tail) = match memchr::memchr(b'\n', rest) {
            Some(nl) => (&rest[..nl], &rest[nl + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        rest = tail;
        Some(line)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_like_split_inclusive() {
        for raw in [
            &b""[..],
            b"\n",
            b"\n\n",
            b"a",
            b"a\n",
            b"a\nb",
            b"a\n\nb\n",
            b"\na",
        ] {
            let want: Vec<&[u8]> = raw
                .split_inclusive(|&b| b == b'\n')
                .map(|l| l.strip_suffix(b"\n").unwrap_or(l))
                .collect();
            assert_eq!(lines(raw).collect::<Vec<_>>(), want, "{raw:?}");
        }
    }

    fn version(blocks: Vec<Block>) -> Arc<TierVersion> {
        TierVersion::new(1, Tier::Chaud, IocType::Domain, blocks, 0)
    }

    #[test]
    fn reads_span_blocks_and_stop_at_size() {
        let v = version(vec![
            Block::mem(1, b"a.com\nb.com\n".to_vec(), vec![(1, 1), (2, 2)]),
            Block::mem(2, b"c.com\n".to_vec(), vec![(3, 3)]),
        ]);
        let cache = BlockCache::new(1 << 20);
        assert_eq!(v.size(), 18);
        assert_eq!(v.read(0, 100, &cache).unwrap(), b"a.com\nb.com\nc.com\n");
        assert_eq!(v.read(10, 5, &cache).unwrap(), b"m\nc.c");
        assert_eq!(v.read(18, 5, &cache).unwrap(), b"");
        assert_eq!(v.block_at(12), Some(1));
        assert_eq!(v.block(2).map(|b| b.lines), Some(1));
    }

    #[test]
    fn tail_appender_fills_then_splits_blocks() {
        let cache = BlockCache::new(1 << 20);
        let mut blocks = vec![Block::mem(7, b"x\n".to_vec(), vec![(1, 1)])];
        let mut next = 100;
        {
            let mut tail = TailAppender::new(&mut blocks, 8, &cache).unwrap();
            assert_eq!(
                tail.push(b"yy", (2, 2), &mut next),
                7,
                "fills the small last block"
            );
            assert_eq!(
                tail.push(b"zzz", (3, 3), &mut next),
                100,
                "full: a new block"
            );
        }
        assert_eq!(blocks.len(), 2);
        let v = version(blocks);
        assert_eq!(v.read(0, 100, &cache).unwrap(), b"x\nyy\nzzz\n");
        assert_eq!((v.blocks()[0].min_last, v.blocks()[0].max_last), (1, 2));
        assert_eq!(next, 101);
    }
}
