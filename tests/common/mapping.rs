//! Reading a file the way `mmap` users do (`look`, ripgrep, Python's mmap).

use std::fs::File;
use std::io;
use std::path::Path;

use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};

/// The whole file's bytes through a new read-only mapping, shared (`MAP_SHARED`, what
/// Python's mmap and `look` ask for) or private.
#[allow(unsafe_code)] // one mmap/munmap pair, documented below
pub fn mapped(path: &Path, shared: bool) -> io::Result<Vec<u8>> {
    let f = File::open(path)?;
    let Some(len) = std::num::NonZeroUsize::new(f.metadata()?.len() as usize) else {
        return Ok(Vec::new());
    };
    let flags = if shared {
        MapFlags::MAP_SHARED
    } else {
        MapFlags::MAP_PRIVATE
    };
    // SAFETY: a new read-only mapping of an open file, copied out and unmapped here before
    // the file is closed; iocfs never truncates a version, so no page goes away under it.
    unsafe {
        let ptr = mmap(None, len, ProtFlags::PROT_READ, flags, &f, 0)?;
        let bytes = std::slice::from_raw_parts(ptr.as_ptr().cast::<u8>(), len.get()).to_vec();
        munmap(ptr, len.get())?;
        Ok(bytes)
    }
}
