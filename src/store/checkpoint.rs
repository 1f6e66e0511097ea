//! Index snapshots ("checkpoints"): the index entries of every tier partition whose file is
//! committed and unchanged, so a restart can skip inflating and hashing every tier file.
//!
//! ```text
//! magic "IOCFSCK1" | upto u64 | seed u64 | partitions u32
//! per partition: bucket u8 | type u8 | generation u64 | entries u64
//!                entries × (key 3×u32 | first_seen u32 | last_seen u32 | location u32)
//! CRC32C u32 of everything before
//! ```
//! All integers little-endian. Written as `DATA/checkpoint/<upto>.ckpt` by the atomic-replace
//! rule; the newest two are kept. At recovery the newest one that reads back whole is used
//! for each partition whose file generation still matches; a damaged one is skipped with a
//! warning naming it (the older one, or a rescan of the files, takes its place — the files
//! remain the source of truth, so a bad snapshot never stops a mount).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::atomic;
use crate::disk::Disk;
use crate::error::{Error, IoContext, Result};
use crate::ioc::IocType;
use crate::store::model::{Bucket, Key, Loc, Meta, Tier};
use crate::store::state::State;

const MAGIC: &[u8; 8] = b"IOCFSCK1";
const SUFFIX: &str = ".ckpt";
const KEEP: usize = 2;

/// Entries of one partition as they were when its file had `generation`.
pub struct Partition {
    pub generation: u64,
    pub entries: Vec<(Key, Meta)>,
}

pub struct Snapshot {
    pub upto: u64,
    /// The file's length in bytes.
    pub len: u64,
    pub seed: u64,
    pub parts: HashMap<(Tier, IocType), Partition>,
    pub path: PathBuf,
}

/// Encode the clean tier partitions of `state` (file committed and unchanged since).
pub fn encode(state: &State) -> (u64, Vec<u8>) {
    let manifest = state.manifest();
    let mut clean: HashMap<(Tier, IocType), Vec<(Key, Meta)>> = HashMap::new();
    for tier in Tier::ALL {
        for ty in IocType::ALL {
            let part = manifest.part(tier.bucket(), ty);
            if part.generation != 0 && !state.changes().is_dirty(tier.bucket(), ty) {
                clean.insert((tier, ty), Vec::new());
            }
        }
    }
    for (key, meta) in state.index().iter() {
        if let Loc::Block { ty, block } = meta.loc() {
            if let Some((tier, _)) = state.block_tier(block) {
                if let Some(list) = clean.get_mut(&(tier, ty)) {
                    list.push((key, *meta));
                }
            }
        }
    }
    let upto = manifest.upto;
    let mut out = Vec::with_capacity(64 + clean.values().map(|v| v.len() * 24 + 18).sum::<usize>());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&upto.to_le_bytes());
    out.extend_from_slice(&state.seed().to_le_bytes());
    out.extend_from_slice(&(clean.len() as u32).to_le_bytes());
    for ((tier, ty), entries) in &clean {
        out.push(tier.bucket().code());
        out.push(ty.code());
        out.extend_from_slice(&manifest.part(tier.bucket(), *ty).generation.to_le_bytes());
        out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
        for (key, meta) in entries {
            for w in key.words() {
                out.extend_from_slice(&w.to_le_bytes());
            }
            for v in [meta.first_seen, meta.last_seen, meta.loc_bits()] {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    (upto, out)
}

/// The name of the snapshot made at commit `upto`.
pub fn file_name(upto: u64) -> String {
    format!("{upto:020}{SUFFIX}")
}

/// Write a snapshot and drop the older ones beyond the newest `KEEP`.
pub fn write(disk: &Disk, dir: &Path, upto: u64, bytes: &[u8]) -> Result<PathBuf> {
    let name = file_name(upto);
    atomic::replace_file(disk, dir, &name, |w| w.write_all(bytes))?;
    let mut all = list(disk, dir)?;
    all.sort();
    while all.len() > KEEP {
        let (_, old) = all.remove(0);
        disk.remove_file(&old)
            .ctx(|| format!("remove {}", old.display()))?;
    }
    Ok(dir.join(name))
}

fn list(disk: &Disk, dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    let entries = match disk.read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io(format!("list {}", dir.display()), e)),
    };
    for entry in entries {
        let name = entry.name.to_string_lossy().into_owned();
        if let Some(upto) = name
            .strip_suffix(SUFFIX)
            .and_then(|d| d.parse::<u64>().ok())
        {
            out.push((upto, dir.join(&entry.name)));
        }
    }
    Ok(out)
}

/// The newest snapshot that reads back whole and is not ahead of the log (`max_upto`, the
/// last commit); damaged ones are reported and skipped.
pub fn newest_valid(disk: &Disk, dir: &Path, max_upto: u64) -> Result<Option<Snapshot>> {
    let mut all = list(disk, dir)?;
    all.sort();
    while let Some((upto, path)) = all.pop() {
        if upto > max_upto {
            log::warn!(
                "ignoring checkpoint {}: it is ahead of the log (commit {max_upto})",
                path.display()
            );
            continue;
        }
        let bytes = disk
            .read(&path)
            .ctx(|| format!("read {}", path.display()))?;
        match decode(&bytes, &path) {
            Ok(s) => return Ok(Some(s)),
            Err(e) => log::warn!("ignoring damaged checkpoint: {e}; falling back to an older one or to the tier files"),
        }
    }
    Ok(None)
}

pub fn decode(bytes: &[u8], path: &Path) -> Result<Snapshot> {
    let bad =
        |offset: usize, what: &str| Error::corruption(path, Some(offset as u64), what.to_string());
    if bytes.len() < 32 || &bytes[..8] != MAGIC {
        return Err(bad(0, "not an iocfs checkpoint"));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32c::crc32c(body) != u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]) {
        return Err(bad(body.len(), "checksum mismatch"));
    }
    let mut r = Cursor { buf: body, at: 8 };
    let upto = r.u64().ok_or_else(|| bad(r.at, "truncated header"))?;
    let seed = r.u64().ok_or_else(|| bad(r.at, "truncated header"))?;
    let n = r.u32().ok_or_else(|| bad(r.at, "truncated header"))?;
    let mut parts = HashMap::new();
    for _ in 0..n {
        let at = r.at;
        let part = (|| {
            let tier = Bucket::from_code(r.u8()?)?.tier()?;
            let ty = IocType::from_code(r.u8()?)?;
            let generation = r.u64()?;
            let count = r.u64()? as usize;
            let mut entries = Vec::with_capacity(count.min(body.len() / 24));
            for _ in 0..count {
                let key = Key::from_words([r.u32()?, r.u32()?, r.u32()?]);
                let meta = Meta::from_bits(r.u32()?, r.u32()?, r.u32()?);
                entries.push((key, meta));
            }
            Some((
                (tier, ty),
                Partition {
                    generation,
                    entries,
                },
            ))
        })()
        .ok_or_else(|| bad(at, "malformed partition"))?;
        parts.insert(part.0, part.1);
    }
    if r.at != body.len() {
        return Err(bad(r.at, "trailing bytes"));
    }
    Ok(Snapshot {
        upto,
        len: bytes.len() as u64,
        seed,
        parts,
        path: path.to_path_buf(),
    })
}

struct Cursor<'a> {
    buf: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let b = self.buf.get(self.at..self.at + N)?;
        self.at += N;
        b.try_into().ok()
    }
    fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take::<4>().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take::<8>().map(u64::from_le_bytes)
    }
}
