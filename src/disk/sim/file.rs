//! An open file of the simulated disk: reads, writes and syncs of one node.

use std::io;
use std::path::PathBuf;

use super::*;

/// An open file of the simulated disk.
pub struct SimFile {
    pub(super) disk: SimDisk,
    pub(super) ino: u64,
    pub(super) path: PathBuf,
}

impl std::fmt::Debug for SimFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SimFile({}, ino {})", self.path.display(), self.ino)
    }
}

impl Drop for SimFile {
    fn drop(&mut self) {
        let mut inner = lock(&self.disk.0.inner);
        if let Some(n) = inner.open.get_mut(&self.ino) {
            *n -= 1;
            if *n == 0 {
                inner.open.remove(&self.ino);
                inner.collect();
            }
        }
    }
}

impl FileHandle for SimFile {
    fn path(&self) -> &Path {
        &self.path
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.disk.with_node(self.ino, |node| {
            let start = (offset as usize).min(node.data.len());
            let n = buf.len().min(node.data.len() - start);
            buf[..n].copy_from_slice(&node.data[start..start + n]);
            n
        })
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        self.disk.step(Step::Write, &self.path)?;
        self.disk.with_node(self.ino, |node| {
            let end = offset + buf.len() as u64;
            if end > node.data.len() as u64 {
                node.resize(end);
            }
            node.data[offset as usize..end as usize].copy_from_slice(buf);
            node.touch(offset, end);
            buf.len()
        })
    }

    fn write_zeros(&self, offset: u64, len: u64) -> io::Result<()> {
        self.disk.step(Step::Zeros, &self.path)?;
        self.disk.with_node(self.ino, |node| {
            let end = offset + len;
            if end > node.data.len() as u64 {
                node.resize(end);
            }
            node.data[offset as usize..end as usize].fill(0);
            node.touch(offset, end);
        })
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.disk.step(Step::SetLen, &self.path)?;
        self.disk.with_node(self.ino, |node| node.resize(len))
    }

    fn size(&self) -> io::Result<u64> {
        self.disk.with_node(self.ino, |node| node.data.len() as u64)
    }

    fn sync_all(&self) -> io::Result<()> {
        self.disk.step(Step::SyncAll, &self.path)?;
        self.disk.with_node(self.ino, Node::sync)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.disk.step(Step::SyncData, &self.path)?;
        self.disk.with_node(self.ino, Node::sync)
    }

    /// The simulated disk keeps no times (its `metadata` says 0: "unknown").
    fn set_mtime(&self, _secs: u64) -> io::Result<()> {
        Ok(())
    }

    fn fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }
}
