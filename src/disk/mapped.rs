//! A WAL segment mapped read-only for the recovery scan (the real file system's `map`).
//!
//! Reading a log of tens of MiB into a `Vec` copies it out of the page cache into fresh
//! anonymous memory, a page fault and a zeroed page per 4 KiB; that was a tenth of a replay.
//! A private read-only mapping reads the page cache in place.
//!
//! The mapping lives only while recovery runs, before anything writes to the log. A
//! torn tail is truncated while mapped, but nothing past the valid end is read again.
//! The data directory is locked, so no other iocfs truncates a segment meanwhile (another
//! program doing so would make a read past the new end fault with SIGBUS).

#![allow(unsafe_code)] // mmap/munmap of a segment, each block documented

use std::fs::File;
use std::num::NonZeroUsize;
use std::ops::Deref;
use std::path::Path;
use std::ptr::NonNull;

use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};

pub struct Mapped {
    /// None for an empty file (a zero-length mapping is not allowed).
    map: Option<(NonNull<u8>, NonZeroUsize)>,
}

// SAFETY: the mapping is read-only and owned by this value; sharing `&[u8]` views of it
// between threads is as safe as sharing a `Vec<u8>`.
unsafe impl Send for Mapped {}
// SAFETY: as for Send: the mapping is never written, so shared reads cannot race.
unsafe impl Sync for Mapped {}

impl Mapped {
    pub fn open(path: &Path) -> std::io::Result<Mapped> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        let len = usize::try_from(len).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "file larger than memory")
        })?;
        let Some(len) = NonZeroUsize::new(len) else {
            return Ok(Mapped { map: None });
        };
        // SAFETY: a new private read-only mapping of a file we opened; it aliases no Rust
        // object, and it is unmapped only by Drop.
        let ptr = unsafe {
            mmap(
                None,
                len,
                ProtFlags::PROT_READ,
                MapFlags::MAP_PRIVATE | MapFlags::MAP_POPULATE,
                &file,
                0,
            )
        }
        .map_err(std::io::Error::from)?;
        Ok(Mapped {
            map: Some((ptr.cast(), len)),
        })
    }
}

impl Deref for Mapped {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self.map {
            // SAFETY: the mapping is `len` readable bytes and lives as long as `self`.
            Some((ptr, len)) => unsafe { std::slice::from_raw_parts(ptr.as_ptr(), len.get()) },
            None => &[],
        }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        if let Some((ptr, len)) = self.map {
            // SAFETY: the mapping made in `open`; no slice of it outlives `self`.
            if let Err(e) = unsafe { munmap(ptr.cast(), len.get()) } {
                log::warn!("munmap of a WAL segment failed: {e}");
            }
        }
    }
}

impl std::fmt::Debug for Mapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mapped({} bytes)", self.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_the_bytes_of_a_file_and_of_an_empty_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg");
        let bytes: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(&*Mapped::open(&path).unwrap(), &bytes[..]);
        std::fs::write(&path, b"").unwrap();
        assert!(Mapped::open(&path).unwrap().is_empty());
        assert!(Mapped::open(&dir.path().join("missing")).is_err());
    }
}
