//! The manifest of a commit: which backing file each partition has on disk.

use super::codec::{put_u32, put_u64, Reader};
use crate::ioc::IocType;
use crate::store::model::{Bucket, PartId};
use crate::store::partition::{ByBucket, ByType};

/// The backing file each partition (bucket × type) should have on disk after a commit.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Manifest {
    /// Every record up to this sequence is reflected in the backing files.
    pub upto: u64,
    pub parts: ByBucket<ByType<PartFile>>,
    /// The allowlist files.
    pub allow: ByType<PartFile>,
    /// The provenance files (`DATA/sources/<type>.sources`).
    pub sources: ByType<PartFile>,
}

/// Identity of one committed backing file. `generation == 0`: no file (empty partition).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PartFile {
    pub applied_seq: u64,
    pub generation: u64,
}

impl Manifest {
    pub fn part(&self, bucket: Bucket, ty: IocType) -> PartFile {
        self.parts[bucket][ty]
    }

    pub fn set_part(&mut self, bucket: Bucket, ty: IocType, part: PartFile) {
        self.parts[bucket][ty] = part;
    }

    /// The committed file of any partition, allowlists included.
    pub fn file_of(&self, part: PartId) -> PartFile {
        match part {
            PartId::Bucket(b, ty) => self.parts[b][ty],
            PartId::Allow(ty) => self.allow[ty],
            PartId::Sources(ty) => self.sources[ty],
        }
    }

    pub fn set_file_of(&mut self, part: PartId, file: PartFile) {
        match part {
            PartId::Bucket(b, ty) => self.parts[b][ty] = file,
            PartId::Allow(ty) => self.allow[ty] = file,
            PartId::Sources(ty) => self.sources[ty] = file,
        }
    }

    /// `upto`, the bucket files (bucket × type, 16 bytes each), then (commit v2) a count
    /// and that many extra entries: kind u8 (1: allowlist, 2: provenance), type u8,
    /// applied_seq, generation. Provenance entries are written only for files that exist,
    /// so a store that never used sources writes what older versions read.
    pub(super) fn encode(&self, out: &mut Vec<u8>) {
        put_u64(out, self.upto);
        for row in self.parts.values() {
            for p in row.values() {
                put_u64(out, p.applied_seq);
                put_u64(out, p.generation);
            }
        }
        put_u32(
            out,
            (self.allow.values().count() + self.source_files()) as u32,
        );
        let allow = self.allow.iter().map(|(ty, p)| (1, ty, p));
        let sources = self.sources.iter().filter(|(_, p)| p.generation != 0);
        for (kind, ty, p) in allow.chain(sources.map(|(ty, p)| (2, ty, p))) {
            out.push(kind);
            out.push(ty.code());
            put_u64(out, p.applied_seq);
            put_u64(out, p.generation);
        }
    }

    fn source_files(&self) -> usize {
        self.sources.values().filter(|p| p.generation != 0).count()
    }

    pub(super) fn encoded_len(&self) -> usize {
        8 + 16
            * self
                .parts
                .values()
                .map(|row| row.values().count())
                .sum::<usize>()
            + 4
            + 18 * (self.allow.values().count() + self.source_files())
    }

    /// `v2`: with the extra entries (commit records of tag 14).
    pub(super) fn decode(r: &mut Reader<'_>, v2: bool) -> Option<Manifest> {
        let mut m = Manifest {
            upto: r.u64()?,
            ..Default::default()
        };
        for row in m.parts.values_mut() {
            for p in row.values_mut() {
                *p = PartFile {
                    applied_seq: r.u64()?,
                    generation: r.u64()?,
                };
            }
        }
        if v2 {
            for _ in 0..r.u32()? {
                let (kind, ty) = (r.u8()?, IocType::from_code(r.u8()?)?);
                let part = PartFile {
                    applied_seq: r.u64()?,
                    generation: r.u64()?,
                };
                match kind {
                    1 => m.allow[ty] = part,
                    2 => m.sources[ty] = part,
                    _ => return None,
                }
            }
        }
        Some(m)
    }
}
