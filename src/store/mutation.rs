//! The payload of a WAL record: one mutation of the indicator set, stamped with the time it
//! was sequenced. Replaying the same mutations on the same committed state gives the same
//! state, so everything a mutation's effect depends on (time, retention policy) is inside it.
//!
//! ```text
//! u64 LE  ts (Unix seconds)
//! u8      tag: 1 append, 2 replace, 3 remove, 4 age, 5 import, 6 commit (v1),
//!              7 replace part, 8 replace end, 9 replace abort (1, 2, 7, 8: to live/),
//!              10 append, 11 replace, 12 replace part, 13 replace end (to a target),
//!              14 commit, 15 import (by a source), 16 declare source, 17 remove source
//! ...     body (below); byte strings are u32 LE length + bytes
//!   append/replace: [u8 target,] u8 type, bytes values ("v1\nv2\n": normalized lines)
//!   remove:         u32 count, then count × (u8 type, bytes value)
//!   age:            4 × u64 policy thresholds in seconds
//!   import:         [u8 source,] u8 bucket, u8 type, bytes values, u32 count,
//!                   count × (u32 first, u32 last)
//!   declare source: u8 id, bytes name
//!   remove source:  u8 id
//!   commit:         the manifest (see `Manifest::encode`)
//!   part/end:       [u8 target,] u8 type, u64 stage, bytes values
//!   abort:          u64 stage
//! ```
//! Targets: 0 live, 1 allow, 64 + id a source (`model::Target`). Writes to live keep the tags they had before
//! targets existed, so logs written by older versions replay unchanged.
//!
//! A replace larger than [`REPLACE_PART`] is journaled in pieces (a *stage*): parts, then an
//! end record that makes them the set. A stage is named by the sequence number of its first
//! part (which carries stage 0). Until its end record is durable nothing of it is applied,
//! so a crash midway leaves the old set (see `state::stage`).

use super::codec::{put_bytes, put_u32, put_u64, Reader};
use crate::ioc::IocType;
pub use crate::store::manifest::{Manifest, PartFile};
use crate::store::model::{Bucket, Policy, SourceId, Target};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mutation {
    pub ts: u64,
    pub op: Op,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Lines appended to a writable file: to live, new ones are added and known ones
    /// sighted; to the allowlist, new ones are allowed.
    Append {
        target: Target,
        ty: IocType,
        values: Vec<u8>,
    },
    /// The whole set of a type, from a replace handle or a renamed scratch file.
    Replace {
        target: Target,
        ty: IocType,
        values: Vec<u8>,
    },
    /// `remove VALUE…` from ctl: deleted from whatever bucket holds them.
    Remove { items: Vec<(IocType, Vec<u8>)> },
    /// One aging step at `ts` under this policy.
    Age { policy: Policy },
    /// Indicators adopted into a bucket with their own times (plain gzip tier files, `import`).
    Import {
        bucket: Bucket,
        ty: IocType,
        values: Vec<u8>,
        times: Vec<(u32, u32)>,
        /// Who lists them from now on (`local` unless `import --source`).
        source: SourceId,
    },
    /// `mkdir sources/NAME`: the source `id` exists from now on.
    DeclareSource { id: SourceId, name: String },
    /// `rmdir sources/NAME` of a source that lists nothing.
    RemoveSource { id: SourceId },
    /// A group commit of backing files: they now hold the state at `manifest.upto`.
    Commit { manifest: Box<Manifest> },
    /// One piece of a large replace, kept aside until its `ReplaceEnd`. `stage` is the
    /// sequence number of the stage's first part, 0 in that first part itself.
    ReplacePart {
        target: Target,
        ty: IocType,
        stage: u64,
        values: Vec<u8>,
    },
    /// The last piece: the stage's parts and `values` become the whole set of `ty`.
    ReplaceEnd {
        target: Target,
        ty: IocType,
        stage: u64,
        values: Vec<u8>,
    },
    /// The stage is dropped unapplied (an invalid line, a failed write).
    ReplaceAbort { stage: u64 },
}

/// Largest piece of a staged replace: well under the record limit (1 GiB), and the most a
/// replace handle holds in memory before journaling it.
pub const REPLACE_PART: usize = 16 << 20;

/// The tags of the stage records (recovery reads them from before the last commit too).
const STAGE_TAGS: [u8; 5] = [7, 8, 9, 12, 13];

/// Whether an encoded payload is a stage record, without decoding it.
pub fn is_stage_record(payload: &[u8]) -> bool {
    payload.get(8).is_some_and(|t| STAGE_TAGS.contains(t))
}

impl Mutation {
    pub fn encode(&self, out: &mut Vec<u8>) {
        put_u64(out, self.ts);
        match &self.op {
            Op::Append { target, ty, values } | Op::Replace { target, ty, values } => {
                let append = matches!(self.op, Op::Append { .. });
                if *target == Target::Live {
                    out.push(if append { 1 } else { 2 });
                } else {
                    out.push(if append { 10 } else { 11 });
                    out.push(target.code());
                }
                out.push(ty.code());
                put_bytes(out, values);
            }
            Op::Remove { items } => {
                out.push(3);
                put_u32(out, items.len() as u32);
                for (ty, v) in items {
                    out.push(ty.code());
                    put_bytes(out, v);
                }
            }
            Op::Age { policy } => {
                out.push(4);
                for t in [
                    policy.live_to_chaud,
                    policy.chaud_to_tiede,
                    policy.tiede_to_froid,
                    policy.froid_retention,
                ] {
                    put_u64(out, t);
                }
            }
            Op::Import {
                bucket,
                ty,
                values,
                times,
                source,
            } => {
                if *source == crate::store::model::LOCAL {
                    out.push(5);
                } else {
                    out.push(15);
                    out.push(*source);
                }
                out.push(bucket.code());
                out.push(ty.code());
                put_bytes(out, values);
                put_u32(out, times.len() as u32);
                for (f, l) in times {
                    put_u32(out, *f);
                    put_u32(out, *l);
                }
            }
            Op::Commit { manifest } => {
                out.push(14);
                manifest.encode(out);
            }
            Op::ReplacePart {
                target,
                ty,
                stage,
                values,
            }
            | Op::ReplaceEnd {
                target,
                ty,
                stage,
                values,
            } => {
                let part = matches!(self.op, Op::ReplacePart { .. });
                if *target == Target::Live {
                    out.push(if part { 7 } else { 8 });
                } else {
                    out.push(if part { 12 } else { 13 });
                    out.push(target.code());
                }
                out.push(ty.code());
                put_u64(out, *stage);
                put_bytes(out, values);
            }
            Op::ReplaceAbort { stage } => {
                out.push(9);
                put_u64(out, *stage);
            }
            Op::DeclareSource { id, name } => {
                out.push(16);
                out.push(*id);
                put_bytes(out, name.as_bytes());
            }
            Op::RemoveSource { id } => {
                out.push(17);
                out.push(*id);
            }
        }
    }

    /// Bytes `encode` appends, computed without encoding (a record over the limit is refused
    /// before it takes memory or a sequence number).
    pub fn encoded_len(&self) -> usize {
        let body = match &self.op {
            Op::Append { target, values, .. } | Op::Replace { target, values, .. } => {
                usize::from(*target != Target::Live) + 1 + 4 + values.len()
            }
            Op::Remove { items } => 4 + items.iter().map(|(_, v)| 1 + 4 + v.len()).sum::<usize>(),
            Op::Age { .. } => 4 * 8,
            Op::Import {
                values,
                times,
                source,
                ..
            } => {
                usize::from(*source != crate::store::model::LOCAL)
                    + 2
                    + 4
                    + values.len()
                    + 4
                    + times.len() * 8
            }
            Op::DeclareSource { name, .. } => 1 + 4 + name.len(),
            Op::RemoveSource { .. } => 1,
            Op::Commit { manifest } => manifest.encoded_len(),
            Op::ReplacePart { target, values, .. } | Op::ReplaceEnd { target, values, .. } => {
                usize::from(*target != Target::Live) + 1 + 8 + 4 + values.len()
            }
            Op::ReplaceAbort { .. } => 8,
        };
        8 + 1 + body
    }

    /// Decode a payload; None if it is not a well-formed mutation (the CRC passed, so this
    /// means a format from a newer version or a bug — reported as corruption by the caller).
    pub fn decode(payload: &[u8]) -> Option<Mutation> {
        let mut r = Reader(payload);
        let ts = r.u64()?;
        let op = match r.u8()? {
            tag @ (1 | 2 | 10 | 11) => {
                let target = if tag < 10 {
                    Target::Live
                } else {
                    Target::from_code(r.u8()?)?
                };
                let ty = IocType::from_code(r.u8()?)?;
                let values = r.bytes()?.to_vec();
                if tag == 1 || tag == 10 {
                    Op::Append { target, ty, values }
                } else {
                    Op::Replace { target, ty, values }
                }
            }
            3 => {
                let n = r.u32()? as usize;
                let mut items = Vec::with_capacity(n.min(1 << 16));
                for _ in 0..n {
                    items.push((IocType::from_code(r.u8()?)?, r.bytes()?.to_vec()));
                }
                Op::Remove { items }
            }
            4 => Op::Age {
                policy: Policy {
                    live_to_chaud: r.u64()?,
                    chaud_to_tiede: r.u64()?,
                    tiede_to_froid: r.u64()?,
                    froid_retention: r.u64()?,
                },
            },
            tag @ (5 | 15) => {
                let source = if tag == 15 {
                    let id = r.u8()?;
                    (id != 0 && usize::from(id) <= crate::store::model::MAX_SOURCES)
                        .then_some(id)?
                } else {
                    crate::store::model::LOCAL
                };
                let bucket = Bucket::from_code(r.u8()?)?;
                let ty = IocType::from_code(r.u8()?)?;
                let values = r.bytes()?.to_vec();
                let n = r.u32()? as usize;
                let mut times = Vec::with_capacity(n.min(1 << 20));
                for _ in 0..n {
                    times.push((r.u32()?, r.u32()?));
                }
                Op::Import {
                    bucket,
                    ty,
                    values,
                    times,
                    source,
                }
            }
            16 => {
                let id = r.u8()?;
                let name = String::from_utf8(r.bytes()?.to_vec()).ok()?;
                (id != 0 && usize::from(id) <= crate::store::model::MAX_SOURCES).then_some(())?;
                Op::DeclareSource { id, name }
            }
            17 => Op::RemoveSource { id: r.u8()? },
            tag @ (6 | 14) => Op::Commit {
                manifest: Box::new(Manifest::decode(&mut r, tag == 14)?),
            },
            tag @ (7 | 8 | 12 | 13) => {
                let target = if tag < 10 {
                    Target::Live
                } else {
                    Target::from_code(r.u8()?)?
                };
                let ty = IocType::from_code(r.u8()?)?;
                let stage = r.u64()?;
                let values = r.bytes()?.to_vec();
                if tag == 7 || tag == 12 {
                    Op::ReplacePart {
                        target,
                        ty,
                        stage,
                        values,
                    }
                } else {
                    Op::ReplaceEnd {
                        target,
                        ty,
                        stage,
                        values,
                    }
                }
            }
            9 => Op::ReplaceAbort { stage: r.u64()? },
            _ => return None,
        };
        r.0.is_empty().then_some(Mutation { ts, op })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(m: Mutation) {
        let mut buf = Vec::new();
        m.encode(&mut buf);
        assert_eq!(m.encoded_len(), buf.len(), "{m:?}");
        assert_eq!(
            is_stage_record(&buf),
            matches!(
                m.op,
                Op::ReplacePart { .. } | Op::ReplaceEnd { .. } | Op::ReplaceAbort { .. }
            )
        );
        assert_eq!(Mutation::decode(&buf), Some(m.clone()));
        // Every strict prefix is rejected, never misread.
        for cut in 0..buf.len() {
            assert_eq!(Mutation::decode(&buf[..cut]), None, "{m:?} cut at {cut}");
        }
    }

    #[test]
    fn every_op_round_trips() {
        let mut manifest = Manifest {
            upto: 99,
            ..Default::default()
        };
        manifest.set_part(
            Bucket::Tiede,
            IocType::Sha1,
            PartFile {
                applied_seq: 98,
                generation: 7,
            },
        );
        manifest.allow[IocType::Domain] = PartFile {
            applied_seq: 97,
            generation: 5,
        };
        let mut with_sources = manifest.clone();
        with_sources.sources[IocType::Md5] = PartFile {
            applied_seq: 96,
            generation: 4,
        };
        for op in [
            Op::Append {
                target: Target::Live,
                ty: IocType::Ipv4,
                values: b"1.2.3.4\n5.6.7.8\n".to_vec(),
            },
            Op::Append {
                target: Target::Allow,
                ty: IocType::Ipv4,
                values: b"10.0.0.0/8\n".to_vec(),
            },
            Op::Replace {
                target: Target::Live,
                ty: IocType::Domain,
                values: Vec::new(),
            },
            Op::Replace {
                target: Target::Allow,
                ty: IocType::Domain,
                values: b"good.example\n".to_vec(),
            },
            Op::Remove {
                items: vec![
                    (IocType::Url, b"http://x/".to_vec()),
                    (IocType::Md5, b"ab".to_vec()),
                ],
            },
            Op::Age {
                policy: Policy {
                    live_to_chaud: 1,
                    chaud_to_tiede: 2,
                    tiede_to_froid: 3,
                    froid_retention: 4,
                },
            },
            Op::Import {
                bucket: Bucket::Froid,
                ty: IocType::Email,
                values: b"a@b.c\n".to_vec(),
                times: vec![(1, 2)],
                source: crate::store::model::LOCAL,
            },
            Op::Import {
                bucket: Bucket::Chaud,
                ty: IocType::Email,
                values: b"a@b.c\n".to_vec(),
                times: vec![(1, 2)],
                source: 5,
            },
            Op::DeclareSource {
                id: 63,
                name: "abuse_ch".into(),
            },
            Op::RemoveSource { id: 63 },
            Op::Append {
                target: Target::Source(1),
                ty: IocType::Ipv4,
                values: b"1.2.3.4\n".to_vec(),
            },
            Op::ReplaceEnd {
                target: Target::Source(63),
                ty: IocType::Url,
                stage: 79,
                values: b"http://ok/\n".to_vec(),
            },
            Op::Commit {
                manifest: Box::new(manifest.clone()),
            },
            Op::Commit {
                manifest: Box::new(with_sources),
            },
            Op::ReplacePart {
                target: Target::Live,
                ty: IocType::Sha256,
                stage: 0,
                values: b"ab\n".to_vec(),
            },
            Op::ReplacePart {
                target: Target::Allow,
                ty: IocType::Sha256,
                stage: 3,
                values: b"ab\n".to_vec(),
            },
            Op::ReplaceEnd {
                target: Target::Live,
                ty: IocType::Url,
                stage: 77,
                values: Vec::new(),
            },
            Op::ReplaceEnd {
                target: Target::Allow,
                ty: IocType::Url,
                stage: 79,
                values: b"http://ok/\n".to_vec(),
            },
            Op::ReplaceAbort { stage: 78 },
        ] {
            round_trip(Mutation {
                ts: 1_700_000_000,
                op,
            });
        }
    }

    #[test]
    fn unknown_tag_is_rejected() {
        let mut buf = 5u64.to_le_bytes().to_vec();
        buf.push(99);
        assert_eq!(Mutation::decode(&buf), None);
    }

    #[test]
    fn records_from_before_targets_and_allowlists_decode() {
        // An append of the previous release: tag 1, no target byte.
        let mut old = 7u64.to_le_bytes().to_vec();
        old.push(1);
        old.push(IocType::Ipv4.code());
        put_bytes(&mut old, b"1.2.3.4\n");
        assert_eq!(
            Mutation::decode(&old).map(|m| m.op),
            Some(Op::Append {
                target: Target::Live,
                ty: IocType::Ipv4,
                values: b"1.2.3.4\n".to_vec()
            })
        );
        // A commit record of the previous release: tag 6, bucket files only.
        let mut commit = 8u64.to_le_bytes().to_vec();
        commit.push(6);
        put_u64(&mut commit, 41);
        for i in 0..36u64 {
            put_u64(&mut commit, i);
            put_u64(&mut commit, 100 + i);
        }
        let Some(Op::Commit { manifest }) = Mutation::decode(&commit).map(|m| m.op) else {
            panic!("a v1 commit record must decode");
        };
        assert_eq!(manifest.upto, 41);
        assert_eq!(
            manifest.part(Bucket::Froid, IocType::Sha512).generation,
            135
        );
        assert!(manifest.allow.values().all(|p| p.generation == 0));
    }
}
