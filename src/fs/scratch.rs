//! Scratch files: a file created in live/ under any name but the nine is a daemon-held
//! buffer, renamed onto a type file to replace that set (how `sed -i` and editors save).
//! Lost at restart.
//!
//! They live in memory, so all of them together are bounded ([`ScratchPool`]). Each one
//! counts the memory it holds itself, under its own lock, and gives it back when it is
//! dropped: a rename keeps the count with the file (renaming can't launder bytes out of
//! the bound), and a file unlinked while a descriptor is open keeps counting until that
//! descriptor closes, then frees its bytes at once (nobody can open it again).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use fuser::{Errno, INodeNo};

/// Default bound on the memory of all scratch files.
pub const MAX_SCRATCH_BYTES: u64 = 1 << 30;

/// The memory scratch files hold, against one bound.
#[derive(Debug)]
pub struct ScratchPool {
    bytes: AtomicU64,
    limit: AtomicU64,
}

impl Default for ScratchPool {
    fn default() -> Self {
        ScratchPool {
            bytes: AtomicU64::new(0),
            limit: AtomicU64::new(MAX_SCRATCH_BYTES),
        }
    }
}

impl ScratchPool {
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Acquire)
    }

    /// Test builds (`scratch-limit` in ctl): a smaller bound.
    pub fn set_limit(&self, bytes: u64) {
        self.limit.store(bytes, Ordering::Relaxed);
    }

    fn reserve(&self, more: u64) -> bool {
        let limit = self.limit.load(Ordering::Relaxed);
        self.bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                n.checked_add(more).filter(|&t| t <= limit)
            })
            .is_ok()
    }

    fn release(&self, less: u64) {
        let _ = self
            .bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_sub(less))
            });
    }
}

#[derive(Debug)]
pub struct Scratch {
    pub ino: INodeNo,
    data: Vec<u8>,
    /// Bytes of `pool` this file holds: its buffer's capacity.
    counted: u64,
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u64,
    /// Still has a name in live/.
    linked: bool,
    /// Open handles on it.
    open: usize,
    pool: Arc<ScratchPool>,
}

pub type ScratchRef = Arc<Mutex<Scratch>>;

impl Scratch {
    pub fn new(ino: INodeNo, owner: (u32, u32, u16), mtime: u64, pool: Arc<ScratchPool>) -> Self {
        Scratch {
            ino,
            data: Vec::new(),
            counted: 0,
            uid: owner.0,
            gid: owner.1,
            mode: owner.2,
            mtime,
            linked: true,
            open: 0,
            pool,
        }
    }

    pub fn data(&self) -> &[u8] {
        &self.data
    }

    pub fn is_linked(&self) -> bool {
        self.linked
    }

    /// Resize to `len` bytes, within the pool's bound (ENOSPC past it).
    pub fn resize(&mut self, len: usize) -> Result<(), Errno> {
        if len == 0 {
            self.free();
            return Ok(());
        }
        if len > self.data.capacity() {
            // Grow geometrically (appending writes would copy quadratically otherwise), or
            // just enough when the bound leaves no room for more.
            let want = len.max(self.data.capacity().saturating_mul(2));
            let cap = [want, len]
                .into_iter()
                .find(|&c| self.pool.reserve(c as u64 - self.counted))
                .ok_or(Errno::ENOSPC)?;
            self.data.reserve_exact(cap - self.data.len());
            // The allocator may round up: count what it gave.
            let got = self.data.capacity() as u64;
            if got > cap as u64 && !self.pool.reserve(got - cap as u64) {
                self.pool.release(cap as u64 - self.counted);
                self.data.shrink_to(self.counted as usize);
                return Err(Errno::ENOSPC);
            }
            self.counted = got;
        }
        self.data.resize(len, 0);
        Ok(())
    }

    /// Write `bytes` at `offset`, growing the file as needed.
    pub fn write_at(&mut self, offset: u64, bytes: &[u8]) -> Result<(), Errno> {
        let end = usize::try_from(offset)
            .ok()
            .and_then(|o| o.checked_add(bytes.len()))
            .ok_or(Errno::EFBIG)?;
        if end > self.data.len() {
            self.resize(end)?;
        }
        let start = end - bytes.len();
        self.data[start..end].copy_from_slice(bytes);
        Ok(())
    }

    pub fn opened(&mut self) {
        self.open += 1;
    }

    /// A handle closed: an unlinked file nobody has open is freed now.
    pub fn closed(&mut self) {
        self.open = self.open.saturating_sub(1);
        if self.open == 0 && !self.linked {
            self.free();
        }
    }

    /// Its name is gone (unlinked, or renamed onto a type file).
    pub fn unlinked(&mut self) {
        self.linked = false;
        if self.open == 0 {
            self.free();
        }
    }

    fn free(&mut self) {
        self.data = Vec::new();
        self.pool.release(self.counted);
        self.counted = 0;
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        self.pool.release(self.counted);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_follow_the_file_not_its_name_and_return_when_it_goes() {
        let pool = Arc::new(ScratchPool::default());
        pool.set_limit(1000);
        let mut a = Scratch::new(INodeNo(1), (0, 0, 0o644), 0, pool.clone());
        a.write_at(0, &[1; 600]).unwrap();
        assert!(pool.bytes() >= 600);
        let mut b = Scratch::new(INodeNo(2), (0, 0, 0o644), 0, pool.clone());
        assert_eq!(b.write_at(0, &[2; 600]), Err(Errno::ENOSPC));
        a.opened();
        a.unlinked();
        assert!(
            pool.bytes() >= 600,
            "an open unlinked file still holds its bytes"
        );
        a.closed();
        assert_eq!(pool.bytes(), b.counted);
        b.write_at(0, &[2; 600]).unwrap();
        drop(b);
        assert_eq!(pool.bytes(), 0);
        assert_eq!(
            a.write_at(u64::MAX - 1, b"xy"),
            Err(Errno::EFBIG),
            "no overflow"
        );
    }
}
