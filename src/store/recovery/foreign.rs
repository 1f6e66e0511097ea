//! Reading files that no commit wrote (a plain gzip left by an older installation, a text
//! file dropped into live/, a damaged file being salvaged) into normalized lines with times,
//! ready to be journaled as imports.

use std::io::BufReader;
use std::path::Path;

use crate::disk::{Disk, FileHandle, Reader};
use crate::error::{IoContext, Result};
use crate::ioc::{self, IocType, Limits, MAX_LINE_LEN};
use crate::store::live::Times;
use crate::store::model::{Bucket, PartId};
use crate::store::tier::{self, format};

/// Lines per import record: keeps WAL records and replay memory bounded.
pub const IMPORT_CHUNK_LINES: usize = 100_000;

pub struct ImportChunk {
    pub values: Vec<u8>,
    pub times: Vec<Times>,
}

/// Normalized lines, cut into chunks; invalid lines are skipped and logged.
struct Chunks<'a> {
    ty: IocType,
    limits: &'a Limits,
    path: &'a Path,
    chunks: Vec<ImportChunk>,
}

impl Chunks<'_> {
    fn push(&mut self, raw: &[u8], times: Times, line_no: u64) {
        if self
            .chunks
            .last()
            .is_none_or(|c| c.times.len() >= IMPORT_CHUNK_LINES)
        {
            self.chunks.push(ImportChunk {
                values: Vec::new(),
                times: Vec::new(),
            });
        }
        let Some(chunk) = self.chunks.last_mut() else {
            return;
        };
        let before = chunk.values.len();
        match ioc::normalize_into(self.ty, raw, self.limits, &mut chunk.values) {
            Ok(ioc::Line::Value) => {
                chunk.values.push(b'\n');
                chunk.times.push(times);
            }
            Ok(ioc::Line::Skip) => {}
            Err(why) => {
                chunk.values.truncate(before);
                log::warn!(
                    "{} line {line_no} skipped: {why}: {}",
                    self.path.display(),
                    ioc::escape_excerpt(raw, 80)
                );
            }
        }
    }
}

/// What reading a foreign file produced.
pub struct Read {
    pub chunks: Vec<ImportChunk>,
    /// Damage found (a block that would not inflate…), for the salvage report.
    pub damage: Vec<String>,
}

/// Lines of `path` for `ty`. A blocked tier file keeps its own times (and is walked member
/// by member, so a damaged one yields every block before and after the damage that still
/// reads); anything else gets `mtime` as first and last seen.
pub fn read(disk: &Disk, id: PartId, path: &Path, mtime: u32, limits: &Limits) -> Result<Read> {
    let ty = id.ty();
    // Live and allowlist files are raw text; the tiers' are gzip.
    let text = matches!(id, PartId::Bucket(Bucket::Live, _) | PartId::Allow(_));
    let mut out = Chunks {
        ty,
        limits,
        path,
        chunks: Vec::new(),
    };
    let mut damage = Vec::new();
    let file = disk
        .open_read(path)
        .ctx(|| format!("open {}", path.display()))?;
    let mut head = [0u8; format::PROBE_LEN];
    let n = file
        .read_at(&mut head, 0)
        .ctx(|| format!("read {}", path.display()))?;
    let kind = if text {
        format::Kind::NotGzip
    } else {
        format::probe_kind(&head[..n])
    };
    match kind {
        format::Kind::Blocked => {
            let mut line_no = 0;
            for block in walk_blocks(&*file, &mut damage) {
                for (line, times) in tier::lines(&block.0).zip(&block.1) {
                    line_no += 1;
                    out.push(line, *times, line_no);
                }
            }
            for d in &damage {
                log::warn!("{}: {d}", path.display());
            }
        }
        format::Kind::PlainGzip | format::Kind::NotGzip => {
            let reader: Box<dyn std::io::Read> = if kind == format::Kind::PlainGzip {
                Box::new(flate2::read::MultiGzDecoder::new(Reader::new(file)))
            } else {
                if !text {
                    log::warn!("{}: not gzip; reading it as plain text", path.display());
                }
                Box::new(Reader::new(file))
            };
            let mut reader = BufReader::with_capacity(1 << 20, reader);
            let mut line = Vec::new();
            let mut line_no = 0;
            loop {
                // A longer line keeps one byte too many: normalizing rejects it as too long.
                match crate::ingest::read_line_bounded(&mut reader, &mut line, MAX_LINE_LEN + 1) {
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(e) => {
                        damage.push(format!("read stopped after line {line_no}: {e}"));
                        break;
                    }
                }
                line_no += 1;
                out.push(&line, (mtime, mtime), line_no);
            }
        }
        format::Kind::Empty => {}
    }
    Ok(Read {
        chunks: out.chunks,
        damage,
    })
}

/// Every block member of a blocked file that inflates and checks out, in order, walking
/// member by member: a damaged member is skipped when its length is still readable.
pub fn walk_blocks(file: &dyn FileHandle, damage: &mut Vec<String>) -> Vec<(Vec<u8>, Vec<Times>)> {
    let mut blocks = Vec::new();
    let len = file.size().unwrap_or(0);
    let mut offset = 0u64;
    let mut decompressor = libdeflater::Decompressor::new();
    while offset < len {
        let mut head = vec![0u8; format::MAX_BLOCK_HEADER_LEN.min((len - offset) as usize)];
        if let Err(e) = file.read_exact_at(&mut head, offset) {
            damage.push(format!("unreadable at offset {offset}: {e}"));
            break;
        }
        let header = match format::parse_member(&head, offset) {
            Ok((format::Member::Block(h), _)) => h,
            Ok((format::Member::Trailer(_), _)) => break,
            Err(e) => {
                damage.push(format!("{e}; nothing after offset {offset} could be read"));
                break;
            }
        };
        // Allocated only once the file is known to hold that much.
        if u64::from(header.member_len) > len - offset {
            damage.push(format!(
                "block {} at offset {offset} runs past the end of the file ({} bytes); nothing after it could be read",
                header.block_id, header.member_len
            ));
            break;
        }
        let mut member = vec![0u8; header.member_len as usize];
        let mut raw = Vec::new();
        let decoded = file
            .read_exact_at(&mut member, offset)
            .map_err(|e| e.to_string())
            .and_then(|()| {
                format::decode_block(&mut decompressor, &member, &header, offset, &mut raw)
                    .map_err(|e| e.to_string())
            });
        match decoded {
            Ok(()) => blocks.push((raw, header.timestamps)),
            Err(e) => damage.push(format!(
                "block {} at offset {offset} ({} lines) lost: {e}",
                header.block_id, header.lines
            )),
        }
        offset += u64::from(header.member_len);
    }
    blocks
}
