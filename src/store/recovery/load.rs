//! Loading the committed backing files listed by the newest commit record into the state.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::foreign;
use super::{commit_temp, move_to_lost_found, Foreign, Mode};
use crate::cache::BlockCache;
use crate::disk::Disk;
use crate::error::{Error, IoContext, Result};
use crate::ioc::{self, IocType, Limits};
use crate::store::checkpoint::Snapshot;
use crate::store::live::format as live_format;
use crate::store::model::{Bucket, KeyMap, Loc, PartId, Tier};
use crate::store::mutation::{Manifest, PartFile};
use crate::store::provenance_file::ProvenanceFile;
use crate::store::state::State;
use crate::store::tier::{self, format, Block, BlockData, TierFile};

pub struct Loaded {
    pub foreign: Vec<Foreign>,
    /// Copies of indicators already loaded from a younger bucket, to drop.
    pub duplicates: Vec<(Tier, IocType, KeyMap<u32>)>,
    pub from_snapshot: usize,
    pub findings: Vec<String>,
}

struct Loader<'a> {
    state: &'a mut State,
    disk: &'a Disk,
    data_dir: &'a Path,
    manifest: &'a Manifest,
    limits: Limits,
    mode: Mode,
    snapshot: Option<Snapshot>,
    on_loaded: &'a dyn Fn(u64),
    out: Loaded,
}

/// The key seed of the committed provenance files, if there are any.
pub fn provenance_seed(disk: &Disk, data_dir: &Path, manifest: &Manifest) -> Option<u64> {
    IocType::ALL.into_iter().find_map(|ty| {
        let id = PartId::Sources(ty);
        if manifest.file_of(id).generation == 0 {
            return None;
        }
        let dir = data_dir.join(id.dir());
        let name = id.backing_name();
        // `iocfs check` reads an unfinished commit's temp where the mount would rename it.
        let tmp = super::commit_temp(&dir, &name, manifest.upto);
        let path = if disk.exists(&tmp) {
            tmp
        } else {
            dir.join(name)
        };
        // Only the header: the whole file is read once, by `Loader::provenance`.
        let mut head = [0u8; ProvenanceFile::SEED_END];
        disk.open_read(&path)
            .and_then(|f| f.read_exact_at(&mut head, 0))
            .ok()
            .and_then(|()| ProvenanceFile::seed_of(&head))
    })
}

#[allow(clippy::too_many_arguments)]
pub fn load_all(
    state: &mut State,
    disk: &Disk,
    data_dir: &Path,
    manifest: &Manifest,
    limits: Limits,
    snapshot: Option<Snapshot>,
    mode: Mode,
    cache: &BlockCache,
    on_loaded: &dyn Fn(u64),
) -> Result<Loaded> {
    let mut loader = Loader {
        state,
        disk,
        data_dir,
        manifest,
        limits,
        mode,
        snapshot,
        on_loaded,
        out: Loaded {
            foreign: Vec::new(),
            duplicates: Vec::new(),
            from_snapshot: 0,
            findings: Vec::new(),
        },
    };
    // Younger buckets first: an indicator found again in an older one is a stale copy.
    for id in PartId::all() {
        let part = manifest.file_of(id);
        let loaded = match id {
            PartId::Bucket(bucket, ty) => match bucket.tier() {
                None => loader.text(id, part),
                Some(tier) => loader.tier(tier, ty, part, cache),
            },
            PartId::Allow(_) => loader.text(id, part),
            PartId::Sources(ty) => loader.provenance(ty, part),
        };
        if let Err(e) = loaded {
            loader.damaged(id, e)?;
        }
    }
    Ok(loader.out)
}

impl Loader<'_> {
    /// The file a partition's commit wrote. `iocfs check` reads the pending temp of an
    /// unfinished commit where the mount would have renamed it.
    fn path(&self, subdir: &str, name: &str) -> PathBuf {
        let dir = self.data_dir.join(subdir);
        if self.mode == Mode::ReadOnly {
            let tmp = commit_temp(&dir, name, self.manifest.upto);
            if self.disk.exists(&tmp) {
                return tmp;
            }
        }
        dir.join(name)
    }

    /// A committed file that won't load: refuse the mount, report it, or salvage it.
    fn damaged(&mut self, id: PartId, e: Error) -> Result<()> {
        match self.mode {
            Mode::Mount => Err(Error::Invalid(format!(
                "{e}\nthe data in {} needs attention: run `iocfs check --repair {}`",
                self.data_dir.display(),
                self.data_dir.display()
            ))),
            Mode::ReadOnly => {
                self.out.findings.push(e.to_string());
                Ok(())
            }
            Mode::Salvage => {
                let mut moved = Vec::new();
                for name in super::backing_names(id) {
                    let path = self.data_dir.join(id.dir()).join(&name);
                    if self.disk.exists(&path) {
                        moved.push(move_to_lost_found(self.disk, self.data_dir, &path)?);
                    }
                }
                let text = moved
                    .iter()
                    .find(|p| !p.to_string_lossy().ends_with(".meta"));
                let mut salvaged = 0;
                if let Some(copy) = text {
                    let mtime = self.disk.metadata(copy).map(|m| mtime_of(&m)).unwrap_or(0);
                    let read = foreign::read(self.disk, id, copy, mtime, &self.limits)?;
                    salvaged = read.chunks.iter().map(|c| c.times.len()).sum::<usize>();
                    self.out.findings.extend(
                        read.damage
                            .iter()
                            .map(|d| format!("{}: {d}", copy.display())),
                    );
                    self.out.foreign.push(Foreign {
                        part: id,
                        path: copy.clone(),
                        chunks: read.chunks,
                    });
                }
                self.state.changes_mut().mark_part(id);
                self.out.findings.push(format!(
                    "{e}; moved to {} and re-imported the {salvaged} lines that still read",
                    self.data_dir.join("lost+found").display()
                ));
                Ok(())
            }
        }
    }

    /// A raw-text partition: a live file or an allowlist, with its `.meta` sidecar.
    fn text(&mut self, id: PartId, part: PartFile) -> Result<()> {
        let name = id.backing_name();
        if part.generation == 0 {
            let path = self.data_dir.join(id.dir()).join(&name);
            return self.maybe_foreign(id, &path);
        }
        let text_path = self.path(id.dir(), &name);
        let text = self
            .disk
            .read(&text_path)
            .ctx(|| format!("read {} (listed in the last commit)", text_path.display()))?;
        let meta_path = self.path(id.dir(), &live_format::meta_name(&name));
        let meta_bytes = self
            .disk
            .read(&meta_path)
            .ctx(|| format!("read {}", meta_path.display()))?;
        let (meta, times) = live_format::decode(&meta_bytes, &meta_path)?;
        if times.len() > crate::store::live::MAX_LIVE_LINES {
            return Err(Error::corruption(
                &meta_path,
                None,
                format!("{} lines, more than a live set can hold", times.len()),
            ));
        }
        (self.on_loaded)((text.len() + meta_bytes.len()) as u64);
        check_generation(&meta_path, (meta.generation, meta.applied_seq), part)?;
        if text.len() as u64 != meta.text_len || crc32c::crc32c(&text) != meta.text_crc {
            return Err(Error::corruption(
                &text_path,
                None,
                "content does not match its checksum in the .meta sidecar",
            ));
        }
        let lines = tier::lines(&text).count();
        if lines != times.len() || text.last().is_some_and(|&b| b != b'\n') {
            return Err(Error::corruption(
                &text_path,
                None,
                format!(
                    "{lines} lines, but its .meta sidecar has times for {}",
                    times.len()
                ),
            ));
        }
        // The commit dated the file with its content's last change (`flush::write_text`).
        let mtime = self.committed_mtime(&text_path);
        let duplicates = match id {
            PartId::Allow(ty) => self.state.load_allow(ty, &text, &times, mtime)?,
            PartId::Bucket(_, ty) => self.state.load_live(ty, &text, &times, mtime)?,
            PartId::Sources(_) => Vec::new(),
        };
        for line in duplicates {
            self.out.findings.push(format!(
                "{}/{name}: duplicate line \"{}\"",
                id.dir(),
                ioc::escape_excerpt(&line, 80)
            ));
        }
        Ok(())
    }

    /// The provenance of `ty` (after every bucket: it names their indicators). No file:
    /// every indicator of the type is `local`'s, as in a data dir from before sources.
    fn provenance(&mut self, ty: IocType, part: PartFile) -> Result<()> {
        if part.generation == 0 {
            return Ok(());
        }
        let id = PartId::Sources(ty);
        let path = self.path(id.dir(), &id.backing_name());
        let bytes = self
            .disk
            .read(&path)
            .ctx(|| format!("read {} (listed in the last commit)", path.display()))?;
        (self.on_loaded)(bytes.len() as u64);
        let file = ProvenanceFile::decode(&bytes, &path)?;
        check_generation(&path, (file.generation, file.applied_seq), part)?;
        if file.seed != self.state.seed() {
            return Err(Error::corruption(
                &path,
                None,
                "keyed under another seed than the other provenance files",
            ));
        }
        for (id, info) in file.registry {
            if self.state.provenance().info(id).is_none() {
                self.state.restore_source(id, info);
            }
        }
        self.state
            .restore_provenance(ty, &file.entries, &file.times);
        Ok(())
    }

    fn tier(&mut self, tier: Tier, ty: IocType, part: PartFile, cache: &BlockCache) -> Result<()> {
        let bucket = tier.bucket();
        let name = bucket.backing_name(ty);
        if part.generation == 0 {
            let path = self.data_dir.join(bucket.name()).join(&name);
            return self.maybe_foreign(PartId::Bucket(bucket, ty), &path);
        }
        let path = self.path(bucket.name(), &name);
        let file = self
            .disk
            .open_read(&path)
            .ctx(|| format!("open {} (listed in the last commit)", path.display()))?;
        let index = format::read_index(&*file)
            .map_err(|e| Error::corruption(&path, e.offset(), e.to_string()))?;
        check_generation(
            &path,
            (index.trailer.generation, index.trailer.applied_seq),
            part,
        )?;
        let tier_file = Arc::new(TierFile {
            id: self.state.new_id(),
            path: self.data_dir.join(bucket.name()).join(&name),
            file,
            applied_seq: part.applied_seq,
            generation: part.generation,
        });
        let snapshot = self
            .snapshot
            .as_mut()
            .and_then(|s| s.parts.remove(&(tier, ty)))
            .filter(|p| p.generation == part.generation)
            .filter(|p| {
                // Checksums prove what was written, not that it fits: every entry must point
                // at a block of this file, or the snapshot is not used for it.
                let ids: std::collections::HashSet<u32> =
                    index.blocks.iter().map(|b| b.header.block_id).collect();
                let fits = p.entries.iter().all(|(_, m)| {
                    matches!(m.loc(), Loc::Block { ty: t, block } if t == ty && ids.contains(&block))
                });
                if !fits {
                    log::warn!(
                        "checkpoint entries of {}/{} point outside its file; reading the file instead",
                        bucket.name(),
                        bucket.backing_name(ty)
                    );
                }
                fits
            });
        let mut doomed: KeyMap<u32> = KeyMap::default();
        if let Some(snap) = &snapshot {
            self.out.from_snapshot += 1;
            self.state.reserve_index(snap.entries.len());
            for (key, meta) in &snap.entries {
                if !self.state.load_entry(*key, *meta) {
                    if let Loc::Block { block, .. } = meta.loc() {
                        doomed.insert(*key, block);
                    }
                }
            }
        }
        let mut blocks = Vec::with_capacity(index.blocks.len());
        for ib in index.blocks {
            let h = &ib.header;
            let mut block = Block {
                id: h.block_id,
                lines: h.lines,
                raw_len: h.raw_len,
                min_last: h.timestamps.iter().map(|t| t.1).min().unwrap_or(u32::MAX),
                max_last: h.timestamps.iter().map(|t| t.1).max().unwrap_or(0),
                bad: false,
                data: BlockData::Stored {
                    file: tier_file.clone(),
                    offset: ib.offset,
                    member_len: h.member_len,
                    data_offset: h.data_offset,
                },
            };
            if let Err(why) = self.state.check_block_id(h.block_id) {
                return Err(Error::corruption(&path, Some(ib.offset), why));
            }
            (self.on_loaded)(u64::from(h.member_len));
            // With a snapshot the keys are known: the block need not be inflated now (a
            // damaged one then shows at its first read). `iocfs check` inflates everything.
            if snapshot.is_some() && self.mode != Mode::ReadOnly {
                blocks.push(block);
                continue;
            }
            match block.raw(cache) {
                Ok(raw) => {
                    let lines = tier::lines(&raw).count();
                    if lines != h.timestamps.len() {
                        return Err(Error::corruption(
                            &path,
                            Some(ib.offset),
                            "line count differs from the block header",
                        ));
                    }
                    if snapshot.is_none() {
                        for (line, times) in tier::lines(&raw).zip(&h.timestamps) {
                            let key = self.state.key(ty, line);
                            if !self.state.load_tier_line(ty, key, *times, h.block_id) {
                                doomed.insert(key, h.block_id);
                            }
                        }
                    }
                    if self.mode == Mode::ReadOnly {
                        self.check_lines(bucket, ty, &raw, ib.offset);
                    }
                }
                Err(e) => self.bad_block(bucket, ty, &mut block, e)?,
            }
            if !(block.bad && self.mode == Mode::Salvage) {
                blocks.push(block);
            }
        }
        let mtime = self.committed_mtime(&path);
        self.state
            .load_tier(tier, ty, blocks, mtime)
            .map_err(|why| Error::corruption(&path, None, why))?;
        if !doomed.is_empty() {
            self.out.duplicates.push((tier, ty, doomed));
        }
        Ok(())
    }

    /// When a committed file's content last changed: the commit dates it so (0: unknown,
    /// e.g. on a simulated disk). A time ahead of the clock (a clock set back) is kept:
    /// it is what the file showed before the restart.
    fn committed_mtime(&self, path: &Path) -> u64 {
        self.disk.metadata(path).map_or(0, |m| m.mtime_secs())
    }

    /// A block that won't inflate: at mount it is quarantined (reads of it fail with EIO,
    /// aging leaves it alone, health says so); `--repair` drops it, keeping its bytes.
    fn bad_block(
        &mut self,
        bucket: Bucket,
        ty: IocType,
        block: &mut Block,
        e: Error,
    ) -> Result<()> {
        block.bad = true;
        let what = format!(
            "{bucket}/{}: block {} ({} lines) is damaged: {e}",
            bucket.backing_name(ty),
            block.id,
            block.lines
        );
        if self.mode == Mode::Salvage {
            if let BlockData::Stored {
                file,
                offset,
                member_len,
                ..
            } = &block.data
            {
                let bytes = file.read_member(*offset, *member_len)?;
                let lf = super::lost_found(self.disk, self.data_dir)?;
                let target = lf.join(format!(
                    "{}_{}_block{}.gz",
                    bucket.name(),
                    ty.name(),
                    block.id
                ));
                crate::atomic::replace_file(
                    self.disk,
                    &lf,
                    &target.file_name().unwrap_or_default().to_string_lossy(),
                    |w| w.write_all(&bytes),
                )?;
            }
            self.state.mark(bucket, ty, 0);
            self.out
                .findings
                .push(format!("{what}; dropped (its bytes are in lost+found)"));
        } else {
            log::error!("{what}; reads of it fail with EIO until `iocfs check --repair`");
            self.out.findings.push(what);
        }
        Ok(())
    }

    /// `iocfs check`: every line of a tier block is a normalized indicator of its type.
    fn check_lines(&mut self, bucket: Bucket, ty: IocType, raw: &[u8], offset: u64) {
        for line in tier::lines(raw) {
            match ioc::normalize(ty, line, &self.limits) {
                Ok(Some(v)) if v.as_bytes() == line => {}
                _ => {
                    self.out.findings.push(format!(
                        "{bucket}/{}: block at offset {offset} holds a line that is not a normalized {ty}: \"{}\"",
                        bucket.backing_name(ty),
                        ioc::escape_excerpt(line, 80)
                    ));
                    return;
                }
            }
        }
    }

    /// A file where the last commit wrote none: read it for import.
    fn maybe_foreign(&mut self, id: PartId, path: &Path) -> Result<()> {
        let meta = match self.disk.metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(format!("stat {}", path.display()), e)),
        };
        if meta.len == 0 {
            return Ok(());
        }
        if self.mode == Mode::ReadOnly {
            self.out.findings.push(format!(
                "{}: not written by iocfs; the next mount imports it",
                path.display()
            ));
            return Ok(());
        }
        let read = foreign::read(self.disk, id, path, mtime_of(&meta), &self.limits)?;
        self.out.foreign.push(Foreign {
            part: id,
            path: path.to_path_buf(),
            chunks: read.chunks,
        });
        Ok(())
    }
}

fn mtime_of(meta: &crate::disk::Metadata) -> u32 {
    u32::try_from(meta.mtime_secs()).unwrap_or(u32::MAX)
}

fn check_generation(path: &Path, found: (u64, u64), part: PartFile) -> Result<()> {
    if found != (part.generation, part.applied_seq) {
        return Err(Error::corruption(
            path,
            None,
            format!(
                "generation {} at sequence {} does not match the commit log ({} at {}); it was changed outside iocfs",
                found.0, found.1, part.generation, part.applied_seq
            ),
        ));
    }
    Ok(())
}
