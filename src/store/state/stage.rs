//! Staged replaces: the pieces of a replace too large for one WAL record, kept aside until
//! the record that ends it (see `store::mutation`, "A replace larger than…").
//!
//! Each stage's parts go to an unnamed file (O_TMPFILE on the data directory's filesystem
//! when it can, else a memfd), not to memory: a 2 GiB `cp` costs page cache, not 2 GiB of
//! heap on top of the set it becomes. The files are rebuilt from the log at recovery, so
//! nothing here needs to be durable. A stage holds back WAL retirement (`open_stage_floor`):
//! its parts must still be in the log when a restart replays its end record.

use super::State;
use crate::disk::Handle;
use crate::error::{Error, IoContext, Result};
use crate::ioc::IocType;
use crate::store::live::Storage;
use crate::store::model::Target;

/// The parts of one replace received so far.
#[derive(Debug)]
pub struct Stage {
    /// Where the replace goes, and of which type.
    pub to: (Target, IocType),
    file: Handle,
    /// Bytes staged (whole lines).
    pub len: u64,
    /// Lines staged.
    pub lines: u64,
}

/// Staged bytes are read back in pieces of about this size.
const READ_CHUNK: usize = 4 << 20;

impl Stage {
    /// Call `f` with the staged bytes in order, in pieces of whole lines.
    pub fn for_each_chunk(&self, mut f: impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
        let mut at = 0u64;
        let mut buf: Vec<u8> = Vec::new();
        while at < self.len {
            let keep = buf.len();
            let want = READ_CHUNK.min((self.len - at) as usize);
            buf.resize(keep + want, 0);
            self.file.read_exact_at(&mut buf[keep..], at).ctx(|| {
                format!(
                    "read staged replace of {}/{} at {at}",
                    self.to.0.dir(),
                    self.to.1.file_name()
                )
            })?;
            at += want as u64;
            // Parts end on line boundaries, so only the last piece of a read is carried.
            let cut = if at == self.len {
                buf.len()
            } else {
                memchr::memrchr(b'\n', &buf).map_or(0, |nl| nl + 1)
            };
            f(&buf[..cut])?;
            buf.drain(..cut);
        }
        Ok(())
    }
}

impl State {
    /// Where staged parts are kept (the default, memory, suits tests and `iocfs check`).
    pub fn set_staging(&mut self, storage: Storage) {
        self.staging = storage;
    }

    /// Keep one part of a staged replace. `stage` 0 opens a new stage named `seq`.
    pub fn stage_part(
        &mut self,
        seq: u64,
        to: (Target, IocType),
        stage: u64,
        values: &[u8],
    ) -> Result<()> {
        let ty = to.1;
        let id = if stage == 0 { seq } else { stage };
        if stage == 0 {
            let file =
                self.staging
                    .create(&format!("a replace of {}/{}", to.0.dir(), ty.file_name()))?;
            self.stages.insert(
                id,
                Stage {
                    to,
                    file,
                    len: 0,
                    lines: 0,
                },
            );
        }
        let st = self
            .stages
            .get_mut(&id)
            .filter(|st| st.to == to)
            .ok_or_else(|| missing(id, to))?;
        st.file
            .write_all_at(values, st.len)
            .ctx(|| format!("stage a replace of live/{}", ty.file_name()))?;
        st.len += values.len() as u64;
        st.lines += memchr::memchr_iter(b'\n', values).count() as u64;
        Ok(())
    }

    /// Lines staged so far by stage `id` (0 if there is none).
    pub fn stage_lines(&self, id: u64) -> u64 {
        self.stages.get(&id).map_or(0, |st| st.lines)
    }

    /// Lines the live set of `ty` can still take.
    pub fn live_room(&self, ty: IocType) -> usize {
        self.live[ty].room()
    }

    /// Test builds (`live-slot-limit` in ctl): fewer lines per live set, to reach the bound.
    pub fn set_live_slot_limit(&mut self, limit: usize) {
        for set in self.live.values_mut() {
            set.set_slot_limit(limit);
        }
    }

    pub fn has_stage(&self, id: u64) -> bool {
        self.stages.contains_key(&id)
    }

    /// The parts of stage `id`, which ends now.
    pub fn take_stage(&mut self, id: u64, to: (Target, IocType)) -> Result<Stage> {
        match self.stages.remove(&id) {
            Some(st) if st.to == to => Ok(st),
            _ => Err(missing(id, to)),
        }
    }

    /// Drop stage `id` (aborted, or ended before the last commit).
    pub fn drop_stage(&mut self, id: u64) {
        self.stages.remove(&id);
    }

    /// The oldest open stage: WAL records from it on are kept until it ends.
    pub fn open_stage_floor(&self) -> Option<u64> {
        self.stages.keys().next().copied()
    }

    /// End of recovery: stages whose writer went away with the daemon are dropped unapplied.
    /// Returns (stage, where it went, bytes) of each.
    pub fn abandon_stages(&mut self) -> Vec<(u64, (Target, IocType), u64)> {
        std::mem::take(&mut self.stages)
            .into_iter()
            .map(|(id, st)| (id, st.to, st.len))
            .collect()
    }
}

fn missing(id: u64, (target, ty): (Target, IocType)) -> Error {
    Error::Invalid(format!(
        "internal: no staged replace {id} of {}/{} (its first parts are missing from the log)",
        target.dir(),
        ty.file_name()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;

    #[test]
    fn parts_are_kept_in_order_and_read_back_in_whole_lines() {
        let mut st =
            State::new(1, Arc::new(AtomicU64::new(1 << 32)), 4096, &Storage::Memfd).unwrap();
        let dir = tempfile::tempdir().unwrap();
        st.set_staging(Storage::Tmpfile(
            crate::disk::Disk::real(),
            dir.path().to_path_buf(),
        ));
        let mut want = Vec::new();
        for (i, seq) in (10..40u64).enumerate() {
            let part = format!("{}{i}\n", "0".repeat(200_000 + i)).into_bytes();
            let stage = if i == 0 { 0 } else { 10 };
            st.stage_part(seq, (Target::Live, IocType::Md5), stage, &part)
                .unwrap();
            want.extend_from_slice(&part);
        }
        assert_eq!(st.open_stage_floor(), Some(10));
        assert!(st
            .stage_part(50, (Target::Live, IocType::Md5), 11, b"x\n")
            .is_err());
        assert!(st
            .stage_part(50, (Target::Live, IocType::Sha1), 10, b"x\n")
            .is_err());
        assert!(st
            .stage_part(50, (Target::Allow, IocType::Md5), 10, b"x\n")
            .is_err());
        let stage = st.take_stage(10, (Target::Live, IocType::Md5)).unwrap();
        assert_eq!(st.open_stage_floor(), None);
        let mut got = Vec::new();
        stage
            .for_each_chunk(|c| {
                assert!(c.ends_with(b"\n"));
                got.extend_from_slice(c);
                Ok(())
            })
            .unwrap();
        assert_eq!(got, want);
        st.stage_part(60, (Target::Allow, IocType::Url), 0, b"u\n")
            .unwrap();
        assert_eq!(
            st.abandon_stages(),
            vec![(60, (Target::Allow, IocType::Url), 2)]
        );
    }
}
