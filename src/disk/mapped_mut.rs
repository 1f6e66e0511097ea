//! A file filled in place through a shared writable mapping, by several threads at once.
//!
//! Writing a large file with `pwrite` from several threads serializes them on the inode's
//! lock and copies every byte once more; through a mapping, each thread writes its own
//! part of the page cache directly (an inflate writes its output there).
//!
//! The file's blocks are reserved first (`fallocate`): a write fault that finds no space
//! would kill the process with SIGBUS instead of failing with ENOSPC. Only for files no one
//! else can reach (unnamed files): another program truncating it would do the same.

#![allow(unsafe_code)] // mmap/munmap of a file being filled, each block documented

use std::num::NonZeroUsize;
use std::os::fd::BorrowedFd;
use std::ptr::NonNull;

use nix::fcntl::{fallocate, FallocateFlags};
use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};

pub struct MappedMut {
    ptr: NonNull<u8>,
    len: NonZeroUsize,
}

// SAFETY: the mapping is owned by this value; it is written only through `&mut self`
// (`bytes_mut`), so Rust's borrow rules keep writes from racing.
unsafe impl Send for MappedMut {}
// SAFETY: as for Send: `&self` gives no access to the bytes.
unsafe impl Sync for MappedMut {}

impl MappedMut {
    /// The first `len` bytes of the file `fd` (empty, unnamed), its blocks reserved.
    pub fn reserve(fd: BorrowedFd<'_>, len: u64) -> std::io::Result<MappedMut> {
        let too_large = || std::io::Error::new(std::io::ErrorKind::InvalidInput, "too large");
        let size = libc::off_t::try_from(len).map_err(|_| too_large())?;
        let len = usize::try_from(len)
            .ok()
            .and_then(NonZeroUsize::new)
            .ok_or_else(too_large)?;
        fallocate(fd, FallocateFlags::empty(), 0, size)?;
        // SAFETY: a new shared mapping of a file we own, `len` bytes all backed by
        // reserved blocks; it aliases no Rust object and is unmapped only by Drop.
        let ptr = unsafe {
            mmap(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                fd,
                0,
            )
        }?;
        Ok(MappedMut {
            ptr: ptr.cast(),
            len,
        })
    }

    /// The mapped bytes (zeros until written), to split between threads.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: the mapping is `len` writable bytes, lives as long as `self`, and the
        // unique borrow of `self` makes this the only slice of it.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len.get()) }
    }
}

impl Drop for MappedMut {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `reserve`; no slice of it outlives `self`.
        if let Err(e) = unsafe { munmap(self.ptr.cast(), self.len.get()) } {
            log::warn!("munmap of a filled file failed: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::fs::FileExt;

    #[test]
    fn bytes_written_to_the_mapping_are_the_files() {
        let file = tempfile::tempfile().unwrap();
        let mut map = MappedMut::reserve(file.as_fd(), 10_000).unwrap();
        let (a, b) = map.bytes_mut().split_at_mut(4_000);
        std::thread::scope(|s| {
            s.spawn(|| a.fill(b'a'));
            s.spawn(|| b.fill(b'b'));
        });
        drop(map);
        let mut back = vec![0; 10_000];
        file.read_exact_at(&mut back, 0).unwrap();
        assert!(back[..4_000].iter().all(|&c| c == b'a'));
        assert!(back[4_000..].iter().all(|&c| c == b'b'));
        assert_eq!(file.metadata().unwrap().len(), 10_000);
        assert!(MappedMut::reserve(file.as_fd(), 0).is_err());
    }
}
