//! Ways of reading a mounted file: mapped like `look` or ripgrep do, or through a
//! descriptor the kernel serves by passthrough.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
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

/// A read-only descriptor of a live file just written, served by FUSE passthrough: a
/// reader right after a write is served by the daemon and makes the daemon copy the
/// version in the background (docs/internals.md); the next reader pins that copy.
pub fn pinned_reader(d: &super::Daemon, rel: &str) -> File {
    let path = d.path(rel);
    let written = std::fs::metadata(&path).unwrap().ino();
    drop(File::open(&path).unwrap());
    super::poll_until(super::READY_TIMEOUT, || {
        (std::fs::metadata(&path).unwrap().ino() != written).then_some(())
    })
    .unwrap_or_else(|| panic!("no copy of {rel} for readers"));
    File::open(&path).unwrap()
}
