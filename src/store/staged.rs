//! Building a replace that may be larger than one WAL record: what a replace handle (`cp`,
//! `>`) and a scratch file renamed onto a type file feed their lines into.
//!
//! Lines are gathered up to [`Store::replace_part_size`]; a replace that stays under it is one
//! `Replace` record at the end, as before. A larger one journals each full piece as a
//! `ReplacePart` as it arrives (so the handle holds at most one piece in memory), and ends
//! with a `ReplaceEnd`; one that is given up (an invalid line, a failed write) ends with a
//! `ReplaceAbort`. Until the end record is durable no reader sees any of it, and a crash
//! leaves the old set.

use crate::error::Result;
use crate::ioc::IocType;
use crate::store::model::Target;
use crate::store::mutation::Op;
use crate::store::Store;

#[derive(Debug)]
pub struct StagedReplace {
    target: Target,
    ty: IocType,
    /// The stage's name once its first part is journaled.
    stage: Option<u64>,
    /// Lines not journaled yet.
    pending: Vec<u8>,
}

impl StagedReplace {
    pub fn new(target: Target, ty: IocType) -> StagedReplace {
        StagedReplace {
            target,
            ty,
            stage: None,
            pending: Vec::new(),
        }
    }

    /// Add whole normalized lines; journals every full piece.
    pub fn push(&mut self, store: &Store, values: &[u8]) -> Result<()> {
        self.pending.extend_from_slice(values);
        let part = store.replace_part_size();
        while self.pending.len() >= part {
            // Pieces end on a line boundary (lines are far shorter than a piece).
            let cut = memchr::memrchr(b'\n', &self.pending[..part])
                .or_else(|| memchr::memchr(b'\n', &self.pending))
                .map_or(self.pending.len(), |nl| nl + 1);
            let piece: Vec<u8> = self.pending.drain(..cut).collect();
            let seq = store.submit(Op::ReplacePart {
                target: self.target,
                ty: self.ty,
                stage: self.stage.unwrap_or(0),
                values: piece,
            })?;
            self.stage.get_or_insert(seq);
        }
        Ok(())
    }

    /// Apply: the lines pushed become the whole live set.
    pub fn finish(&mut self, store: &Store) -> Result<u64> {
        let values = std::mem::take(&mut self.pending);
        match self.stage.take() {
            None => store.replace_to(self.target, self.ty, values),
            Some(stage) => store.submit(Op::ReplaceEnd {
                target: self.target,
                ty: self.ty,
                stage,
                values,
            }),
        }
    }

    /// Give up: nothing pushed is applied, and the journaled pieces are dropped.
    pub fn abort(&mut self, store: &Store) {
        self.pending = Vec::new();
        if let Some(stage) = self.stage.take() {
            if let Err(e) = store.submit(Op::ReplaceAbort { stage }) {
                // The stage stays open until a restart drops it (it is never applied).
                crate::lograte::warn(|| {
                    format!(
                        "{}/{}: journaling the abort of a staged replace: {e}",
                        self.target.dir(),
                        self.ty.file_name()
                    )
                });
            }
        }
    }

    /// Bytes pushed and not journaled yet.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }
}
