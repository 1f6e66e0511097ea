//! The committed form of provenance: `DATA/sources/<type>.sources`, written by the same
//! group commit as the buckets, so it always describes the indicators of that commit.
//!
//! ```text
//! magic "IOCFSSR1" | applied_seq u64 | generation u64 | seed u64
//! sources u8, per declared source: id u8 | declared u64 | name (u8 length, bytes)
//! times u8, per source with writes to this type: id u8 | last_append u64 | last_replace u64
//! entries u64, per indicator whose set is not {local}: key 3×u32 | set u64
//! CRC32C u32 of everything before
//! ```
//! All integers little-endian. Keys are digests under `seed` (see `model::Key`): recovery
//! keys the index with this seed whenever such a file exists (checkpoints of another seed
//! are then skipped), so the entries name the indicators they were written for. Every
//! file carries the whole registry; a registry change rewrites all nine.

use std::path::Path;

use crate::error::{Error, Result};
use crate::store::model::{Key, SourceId, MAX_SOURCES};
use crate::store::state::{SourceInfo, SourceTimes};

const MAGIC: &[u8; 8] = b"IOCFSSR1";

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProvenanceFile {
    pub applied_seq: u64,
    pub generation: u64,
    pub seed: u64,
    pub registry: Vec<(SourceId, SourceInfo)>,
    pub times: Vec<(SourceId, SourceTimes)>,
    pub entries: Vec<(Key, u64)>,
}

impl ProvenanceFile {
    /// Bytes up to and including the seed (magic, applied_seq, generation, seed).
    pub const SEED_END: usize = 32;

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.entries.len() * 20);
        out.extend_from_slice(MAGIC);
        for v in [self.applied_seq, self.generation, self.seed] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.push(self.registry.len() as u8);
        for (id, info) in &self.registry {
            out.push(*id);
            out.extend_from_slice(&info.declared.to_le_bytes());
            out.push(info.name.len() as u8);
            out.extend_from_slice(info.name.as_bytes());
        }
        out.push(self.times.len() as u8);
        for (id, t) in &self.times {
            out.push(*id);
            out.extend_from_slice(&t.last_append.to_le_bytes());
            out.extend_from_slice(&t.last_replace.to_le_bytes());
        }
        out.extend_from_slice(&(self.entries.len() as u64).to_le_bytes());
        for (key, set) in &self.entries {
            for w in key.words() {
                out.extend_from_slice(&w.to_le_bytes());
            }
            out.extend_from_slice(&set.to_le_bytes());
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    pub fn decode(bytes: &[u8], path: &Path) -> Result<ProvenanceFile> {
        let bad = |what: &str| Error::corruption(path, None, what.to_string());
        if bytes.len() < MAGIC.len() + 4 || &bytes[..8] != MAGIC {
            return Err(bad("not an iocfs provenance file"));
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if crc32c::crc32c(body) != u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]) {
            return Err(bad("checksum mismatch"));
        }
        let mut r = Cursor(&body[8..]);
        let truncated = || bad("truncated");
        let mut f = ProvenanceFile {
            applied_seq: r.u64().ok_or_else(truncated)?,
            generation: r.u64().ok_or_else(truncated)?,
            seed: r.u64().ok_or_else(truncated)?,
            ..Default::default()
        };
        let valid_id = |id: u8| id != 0 && usize::from(id) <= MAX_SOURCES;
        for _ in 0..r.u8().ok_or_else(truncated)? {
            let id = r.u8().ok_or_else(truncated)?;
            let declared = r.u64().ok_or_else(truncated)?;
            let len = r.u8().ok_or_else(truncated)?;
            let name = r.take(usize::from(len)).ok_or_else(truncated)?;
            let name = String::from_utf8(name.to_vec()).map_err(|_| bad("bad source name"))?;
            if !valid_id(id) || !crate::store::state::valid_name(&name) {
                return Err(bad("bad source id or name"));
            }
            f.registry.push((id, SourceInfo { name, declared }));
        }
        for _ in 0..r.u8().ok_or_else(truncated)? {
            let id = r.u8().ok_or_else(truncated)?;
            let t = SourceTimes {
                last_append: r.u64().ok_or_else(truncated)?,
                last_replace: r.u64().ok_or_else(truncated)?,
            };
            if usize::from(id) > MAX_SOURCES {
                return Err(bad("bad source id"));
            }
            f.times.push((id, t));
        }
        let n = r.u64().ok_or_else(truncated)?;
        if n.saturating_mul(20) != r.0.len() as u64 {
            return Err(bad("entry count does not match the file's length"));
        }
        f.entries.reserve(n as usize);
        for _ in 0..n {
            let words = [
                r.u32().ok_or_else(truncated)?,
                r.u32().ok_or_else(truncated)?,
                r.u32().ok_or_else(truncated)?,
            ];
            f.entries
                .push((Key::from_words(words), r.u64().ok_or_else(truncated)?));
        }
        Ok(f)
    }

    /// The seed of a file without decoding the rest (recovery picks the index seed first).
    pub fn seed_of(bytes: &[u8]) -> Option<u64> {
        (bytes.get(..8)? == MAGIC)
            .then(|| {
                bytes
                    .get(24..Self::SEED_END)?
                    .try_into()
                    .ok()
                    .map(u64::from_le_bytes)
            })
            .flatten()
    }
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)?.try_into().ok().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)?.try_into().ok().map(u64::from_le_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_detects_damage() {
        let f = ProvenanceFile {
            applied_seq: 7,
            generation: 99,
            seed: 0xabc,
            registry: vec![(
                3,
                SourceInfo {
                    name: "abuse_ch".into(),
                    declared: 1_700_000_000,
                },
            )],
            times: vec![(
                3,
                SourceTimes {
                    last_append: 5,
                    last_replace: 6,
                },
            )],
            entries: vec![(Key::from_words([1, 2, 3]), 0b1000)],
        };
        let bytes = f.encode();
        assert_eq!(ProvenanceFile::decode(&bytes, Path::new("p")).unwrap(), f);
        assert_eq!(ProvenanceFile::seed_of(&bytes), Some(0xabc));
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 1;
            assert!(
                ProvenanceFile::decode(&bad, Path::new("p")).is_err(),
                "flip at {i}"
            );
        }
        assert!(ProvenanceFile::decode(&bytes[..bytes.len() - 1], Path::new("p")).is_err());
    }
}
