//! Recovery at mount (DESIGN §4): read the WAL (truncating a torn tail, refusing on damage
//! in the middle), find the newest commit record, finish its renames, remove leftover temp
//! files, load the committed backing files it lists, and replay every later record.
//!
//! Files in the data dir that no commit wrote (a plain gzip from an older installation, a
//! text file dropped into live/) are read here and handed back to be journaled as imports.

use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use crate::atomic;
use crate::cache::BlockCache;
use crate::config::Config;
use crate::error::{Error, IoContext, Result};
use crate::ioc::{self, IocType, Limits};
use crate::store::live::Times;
use crate::store::model::{Bucket, KeyMap, Loc, Meta};
use crate::store::mutation::{Manifest, Mutation, Op, PartFile};
use crate::store::state::State;
use crate::store::tier::{format, Block, BlockData, TierFile, TierVersion};
use crate::store::wal::WalFiles;
use crate::store::{checkpoint, livefile};

/// Inode-like ids of versions start here, above the FUSE layer's fixed inode numbers.
pub const FIRST_VERSION_ID: u64 = 1 << 32;

/// What recovery did, for the mount log line and stats.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub committed_upto: u64,
    pub replayed: usize,
    pub truncated: Option<(PathBuf, u64, String)>,
    pub removed_temps: usize,
    pub finished_renames: usize,
    /// Tier partitions whose index came from a checkpoint instead of a file scan.
    pub from_checkpoint: usize,
    pub millis: u64,
}

/// Lines of a file no commit wrote, to be imported.
pub struct Foreign {
    pub bucket: Bucket,
    pub ty: IocType,
    pub path: PathBuf,
    pub chunks: Vec<ImportChunk>,
}

pub struct ImportChunk {
    pub values: Vec<u8>,
    pub times: Vec<Times>,
}

pub struct Recovered {
    pub state: State,
    pub wal: WalFiles,
    pub report: Report,
    pub foreign: Vec<Foreign>,
}

const IMPORT_CHUNK_LINES: usize = 100_000;

pub fn recover(data_dir: &Path, config: &Config, cache: &BlockCache) -> Result<Recovered> {
    let started = Instant::now();
    let wal_dir = data_dir.join("wal");
    let (wal, records, wal_report) = WalFiles::open(&wal_dir, config.durability.segment_size)?;
    let mut mutations = Vec::with_capacity(records.len());
    for r in records {
        let m = Mutation::decode(&r.payload).ok_or_else(|| {
            Error::corruption(
                &wal_dir,
                None,
                format!(
                    "record {} is not a valid iocfs mutation (written by a newer version?)",
                    r.seq
                ),
            )
        })?;
        mutations.push((r.seq, m));
    }
    let manifest = mutations
        .iter()
        .rev()
        .find_map(|(_, m)| match &m.op {
            Op::Commit { manifest } => Some(manifest.as_ref().clone()),
            _ => None,
        })
        .unwrap_or_default();
    let mut report = Report {
        committed_upto: manifest.upto,
        truncated: wal_report.truncated,
        ..Default::default()
    };
    report.finished_renames = finish_renames(data_dir, &manifest)?;
    for b in Bucket::ALL {
        report.removed_temps += atomic::remove_leftover_temps(&data_dir.join(b.name()))?.len();
    }
    report.removed_temps += atomic::remove_leftover_temps(&data_dir.join("checkpoint"))?.len();

    let snapshot = checkpoint::newest_valid(&data_dir.join("checkpoint"))?;
    let seed = snapshot.as_ref().map_or_else(random_seed, |s| s.seed);
    let ids = Arc::new(AtomicU64::new(FIRST_VERSION_ID));
    let mut state = State::new(seed, ids, config.tiers.block_size as usize)?;
    let limits = Limits {
        min_prefix_v4: config.ingest.min_prefix_v4,
        min_prefix_v6: config.ingest.min_prefix_v6,
    };
    let mut foreign = Vec::new();
    let mut loader = Loader {
        state: &mut state,
        data_dir,
        limits,
        foreign: &mut foreign,
        duplicates: Vec::new(),
        snapshot,
        from_snapshot: 0,
    };
    for ty in IocType::ALL {
        loader.live(ty, manifest.part(Bucket::Live, ty))?;
    }
    for bucket in Bucket::TIERS {
        for ty in IocType::ALL {
            loader.tier(bucket, ty, manifest.part(bucket, ty), cache)?;
        }
    }
    report.from_checkpoint = loader.from_snapshot;
    let duplicates = std::mem::take(&mut loader.duplicates);
    state.manifest = manifest.clone();
    state.applied_seq = manifest.upto;
    for (bucket, ty, doomed) in duplicates {
        log::warn!(
            "{bucket}/{ty}: {} indicators also stored in a younger bucket; dropping these copies",
            doomed.len()
        );
        state.drop_from_tier(manifest.upto, 0, bucket, ty, &doomed, cache)?;
    }
    for (seq, m) in &mutations {
        if *seq <= manifest.upto || matches!(m.op, Op::Commit { .. }) {
            continue;
        }
        state.apply(*seq, m, cache)?;
        report.replayed += 1;
    }
    if let Some((seq, _)) = mutations.last() {
        state.applied_seq = state.applied_seq.max(*seq);
    }
    report.millis = started.elapsed().as_millis() as u64;
    Ok(Recovered {
        state,
        wal,
        report,
        foreign,
    })
}

fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0x0069_6f63_6673);
    h.finish()
}

/// Backing files a partition's commit wrote: live has the text and its sidecar.
pub fn backing_names(bucket: Bucket, ty: IocType) -> Vec<String> {
    let name = bucket.backing_name(ty);
    match bucket {
        Bucket::Live => vec![livefile::meta_name(&name), name],
        _ => vec![name],
    }
}

/// The newest commit record is durable but a crash may have come before all its renames.
fn finish_renames(data_dir: &Path, manifest: &Manifest) -> Result<usize> {
    let tag = format!("c{}", manifest.upto);
    let mut done = 0;
    for bucket in Bucket::ALL {
        let dir = data_dir.join(bucket.name());
        let mut renamed = false;
        for ty in IocType::ALL {
            let part = manifest.part(bucket, ty);
            if part.generation == 0 || part.applied_seq != manifest.upto {
                continue;
            }
            for name in backing_names(bucket, ty) {
                let tmp = atomic::temp_path(&dir, &name, &tag);
                if tmp.exists() {
                    atomic::rename(&tmp, &dir.join(&name))?;
                    renamed = true;
                    done += 1;
                }
            }
        }
        if renamed {
            atomic::fsync_dir(&dir)?;
        }
    }
    if done > 0 {
        log::warn!(
            "recovery: finished {done} renames of commit {}",
            manifest.upto
        );
    }
    Ok(done)
}

struct Loader<'a> {
    state: &'a mut State,
    data_dir: &'a Path,
    limits: Limits,
    foreign: &'a mut Vec<Foreign>,
    duplicates: Vec<(Bucket, IocType, KeyMap<u32>)>,
    snapshot: Option<checkpoint::Snapshot>,
    from_snapshot: usize,
}

impl Loader<'_> {
    fn live(&mut self, ty: IocType, part: PartFile) -> Result<()> {
        let dir = self.data_dir.join("live");
        let text_path = dir.join(ty.file_name());
        if part.generation == 0 {
            return self.maybe_foreign(Bucket::Live, ty, &text_path);
        }
        let text = fs::read(&text_path)
            .ctx(|| format!("read {} (listed in the last commit)", text_path.display()))?;
        let meta_path = dir.join(livefile::meta_name(ty.file_name()));
        let meta_bytes = fs::read(&meta_path).ctx(|| format!("read {}", meta_path.display()))?;
        let (meta, times) = livefile::decode(&meta_bytes, &meta_path)?;
        if meta.generation != part.generation || meta.applied_seq != part.applied_seq {
            return Err(Error::corruption(
                &meta_path,
                None,
                format!(
                    "generation {} at sequence {} does not match the commit log ({} at {}); it was changed outside iocfs",
                    meta.generation, meta.applied_seq, part.generation, part.applied_seq
                ),
            ));
        }
        if text.len() as u64 != meta.text_len || crc32c::crc32c(&text) != meta.text_crc {
            return Err(Error::corruption(
                &text_path,
                None,
                "content does not match its checksum in the .meta sidecar",
            ));
        }
        let id = self.state.new_id();
        let slots = self.state.live_mut(ty).replace(id, &text, &times, 0)?;
        for (line, slot) in crate::store::tier::lines(&text).zip(slots) {
            let key = self.state.key(ty, line);
            if self
                .state
                .index
                .insert(key, Meta::new(0, 0, Loc::Live { ty, slot }))
                .is_some()
            {
                log::warn!(
                    "live/{}: duplicate line {:?}",
                    ty.file_name(),
                    ioc::escape_excerpt(line, 80)
                );
            }
        }
        Ok(())
    }

    fn tier(
        &mut self,
        bucket: Bucket,
        ty: IocType,
        part: PartFile,
        cache: &BlockCache,
    ) -> Result<()> {
        let path = self
            .data_dir
            .join(bucket.name())
            .join(bucket.backing_name(ty));
        if part.generation == 0 {
            return self.maybe_foreign(bucket, ty, &path);
        }
        let file = File::open(&path)
            .ctx(|| format!("open {} (listed in the last commit)", path.display()))?;
        let index = format::read_index(&file).map_err(|e| corrupt(&path, e))?;
        if index.trailer.generation != part.generation
            || index.trailer.applied_seq != part.applied_seq
        {
            return Err(Error::corruption(
                &path,
                None,
                format!(
                    "generation {} at sequence {} does not match the commit log ({} at {}); it was changed outside iocfs",
                    index.trailer.generation, index.trailer.applied_seq, part.generation, part.applied_seq
                ),
            ));
        }
        let tier_file = Arc::new(TierFile {
            id: self.state.new_id(),
            path: path.clone(),
            file,
            applied_seq: part.applied_seq,
            generation: part.generation,
        });
        let snapshot = self
            .snapshot
            .as_mut()
            .and_then(|s| s.parts.remove(&(bucket, ty)))
            .filter(|p| p.generation == part.generation);
        let mut blocks = Vec::with_capacity(index.blocks.len());
        let mut doomed: KeyMap<u32> = KeyMap::default();
        if let Some(snap) = &snapshot {
            self.from_snapshot += 1;
            for (key, meta) in &snap.entries {
                match self.state.index.entry(*key) {
                    std::collections::hash_map::Entry::Occupied(_) => {
                        if let Loc::Block { block, .. } = meta.loc() {
                            doomed.insert(*key, block);
                        }
                    }
                    std::collections::hash_map::Entry::Vacant(slot) => {
                        slot.insert(*meta);
                    }
                }
            }
        }
        for ib in index.blocks {
            let h = &ib.header;
            let block = Block {
                id: h.block_id,
                lines: h.lines,
                raw_len: h.raw_len,
                min_last: h.timestamps.iter().map(|t| t.1).min().unwrap_or(u32::MAX),
                max_last: h.timestamps.iter().map(|t| t.1).max().unwrap_or(0),
                data: BlockData::Stored {
                    file: tier_file.clone(),
                    offset: ib.offset,
                    member_len: h.member_len,
                },
            };
            // With a snapshot the keys are known: no need to inflate the block.
            let raw = match snapshot {
                Some(_) => Default::default(),
                None => block.raw(cache)?,
            };
            for (line, times) in crate::store::tier::lines(&raw).zip(&h.timestamps) {
                let key = self.state.key(ty, line);
                let meta = Meta::new(
                    times.0,
                    times.1,
                    Loc::Block {
                        ty,
                        block: h.block_id,
                    },
                );
                match self.state.index.entry(key) {
                    std::collections::hash_map::Entry::Occupied(_) => {
                        doomed.insert(key, h.block_id);
                    }
                    std::collections::hash_map::Entry::Vacant(slot) => {
                        slot.insert(meta);
                    }
                }
            }
            if self.state.dir.insert(h.block_id, (bucket, ty)).is_some() {
                return Err(Error::corruption(
                    &path,
                    Some(ib.offset),
                    format!("block id {} is used twice", h.block_id),
                ));
            }
            self.state.next_block_id = self.state.next_block_id.max(h.block_id + 1);
            blocks.push(block);
        }
        let id = self.state.new_id();
        if let Some(t) = bucket.tier_index() {
            self.state.tiers[t][usize::from(ty.code())] =
                TierVersion::new(id, bucket, ty, blocks, 0);
        }
        if !doomed.is_empty() {
            self.duplicates.push((bucket, ty, doomed));
        }
        Ok(())
    }

    /// A file where the last commit wrote none: read it for import.
    fn maybe_foreign(&mut self, bucket: Bucket, ty: IocType, path: &Path) -> Result<()> {
        let meta = match fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(format!("stat {}", path.display()), e)),
        };
        if meta.len() == 0 {
            return Ok(());
        }
        let mtime = u32::try_from(meta.mtime().max(0)).unwrap_or(u32::MAX);
        let chunks = read_foreign(bucket, ty, path, mtime, &self.limits)?;
        self.foreign.push(Foreign {
            bucket,
            ty,
            path: path.to_path_buf(),
            chunks,
        });
        Ok(())
    }
}

fn corrupt(path: &Path, e: format::FormatError) -> Error {
    Error::corruption(path, e.offset(), e.to_string())
}

/// Lines of a foreign file, normalized, with times: a blocked file keeps its own, anything
/// else gets the file's mtime as first and last seen. Invalid lines are skipped and logged.
fn read_foreign(
    bucket: Bucket,
    ty: IocType,
    path: &Path,
    mtime: u32,
    limits: &Limits,
) -> Result<Vec<ImportChunk>> {
    let mut chunks: Vec<ImportChunk> = Vec::new();
    let mut push = |raw: &[u8], times: Times, line_no: usize| {
        if chunks
            .last()
            .is_none_or(|c| c.times.len() >= IMPORT_CHUNK_LINES)
        {
            chunks.push(ImportChunk {
                values: Vec::new(),
                times: Vec::new(),
            });
        }
        let Some(chunk) = chunks.last_mut() else {
            return;
        };
        let before = chunk.values.len();
        match ioc::normalize_into(ty, raw, limits, &mut chunk.values) {
            Ok(ioc::Line::Value) => {
                chunk.values.push(b'\n');
                chunk.times.push(times);
            }
            Ok(ioc::Line::Skip) => {}
            Err(why) => {
                chunk.values.truncate(before);
                log::warn!(
                    "adopting {}: line {line_no} skipped: {why}: {}",
                    path.display(),
                    ioc::escape_excerpt(raw, 80)
                );
            }
        }
    };
    let file = File::open(path).ctx(|| format!("open {}", path.display()))?;
    let mut head = [0u8; format::PROBE_LEN];
    let n = read_prefix(&file, &mut head).ctx(|| format!("read {}", path.display()))?;
    let kind = if bucket == Bucket::Live {
        format::Kind::NotGzip
    } else {
        format::probe_kind(&head[..n])
    };
    match kind {
        format::Kind::Blocked => {
            let index = format::read_index(&file).map_err(|e| corrupt(path, e))?;
            let mut line_no = 0;
            for ib in index.blocks {
                let mut member = vec![0u8; ib.header.member_len as usize];
                std::os::unix::fs::FileExt::read_exact_at(&file, &mut member, ib.offset)
                    .ctx(|| format!("read {} at {}", path.display(), ib.offset))?;
                let mut raw = Vec::new();
                format::decode_block(
                    &mut libdeflater::Decompressor::new(),
                    &member,
                    &ib.header,
                    ib.offset,
                    &mut raw,
                )
                .map_err(|e| corrupt(path, e))?;
                for (line, times) in crate::store::tier::lines(&raw).zip(&ib.header.timestamps) {
                    line_no += 1;
                    push(line, *times, line_no);
                }
            }
        }
        format::Kind::PlainGzip | format::Kind::NotGzip => {
            let reader: Box<dyn std::io::Read> = if kind == format::Kind::PlainGzip {
                Box::new(flate2::read::MultiGzDecoder::new(file))
            } else {
                if bucket != Bucket::Live {
                    log::warn!("{}: not gzip; reading it as plain text", path.display());
                }
                Box::new(file)
            };
            let mut reader = BufReader::with_capacity(1 << 20, reader);
            let mut line = Vec::new();
            let mut line_no = 0;
            loop {
                line.clear();
                let n = reader
                    .read_until(b'\n', &mut line)
                    .ctx(|| format!("read {}", path.display()))?;
                if n == 0 {
                    break;
                }
                line_no += 1;
                let raw = line.strip_suffix(b"\n").unwrap_or(&line);
                push(raw, (mtime, mtime), line_no);
            }
        }
        format::Kind::Empty => {}
    }
    Ok(chunks)
}

fn read_prefix(file: &File, buf: &mut [u8]) -> std::io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(file, buf, 0)
}
