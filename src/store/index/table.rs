//! The index's slot array: an anonymous memory mapping that grows in place.
//!
//! Why not a `Vec`: growing a `Vec` allocates a second, larger array, faults in every page
//! of it and frees the first, so a table grown from empty to N slots has faulted in ~3× its
//! final size (growth by half), and each growth held the old table beside the new one
//! (1.67× the new one). Growing a mapping with `mremap`
//! keeps the pages already touched (the kernel moves page tables, never bytes) and adds
//! zero-filled ones, so every page is faulted in once; the index then rehashes in place
//! (`Index::grow`). First touches are what a bulk ingest into a fresh daemon spends most on
//! (3M-line ipv4 feed: ~0.5 s of ~1.2 s was growing the table), so the new pages are also
//! faulted in with one `MADV_POPULATE_WRITE` call instead of one page fault each.
//!
//! No transparent huge pages: on the VMs this runs on, a huge page's first touch costs 3–7×
//! more per byte than a small page's (the host backs it afresh), and growing the table is
//! mostly first touches (3M lines into a fresh daemon: 20% faster on small pages), while the
//! TLB misses huge pages would save are hidden by the prefetching (re-sighting 3M lines: no
//! difference).

#![allow(unsafe_code)] // mmap/mremap/munmap of a mapping this type alone owns

use std::alloc::Layout;
use std::ffi::c_void;
use std::num::NonZeroUsize;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

use nix::sys::mman::{self, MRemapFlags, MapFlags, MmapAdvise, ProtFlags};
use nix::unistd::{sysconf, SysconfVar};

use super::Slot;

/// `cap` slots in a private anonymous mapping (none for 0 slots).
pub(super) struct SlotTable {
    ptr: NonNull<Slot>,
    cap: usize,
}

// SAFETY: the table owns its mapping exclusively, as a `Vec<Slot>` owns its buffer, and
// `Slot` is plain integers: moving or sharing it between threads is as safe as a `Vec`'s.
unsafe impl Send for SlotTable {}
// SAFETY: as for Send: shared access only reads, through `&[Slot]`.
unsafe impl Sync for SlotTable {}

impl SlotTable {
    /// A table of `cap` empty slots: all-zero bytes, which is `EMPTY` (the test
    /// `an_empty_slot_is_all_zero_bytes` checks), as fresh anonymous pages are.
    pub(super) fn zeroed(cap: usize) -> SlotTable {
        let Some(bytes) = NonZeroUsize::new(Self::bytes(cap)) else {
            return SlotTable {
                ptr: NonNull::dangling(),
                cap,
            };
        };
        // SAFETY: a new private anonymous mapping; nothing else refers to its range.
        let p = unsafe {
            mman::mmap_anonymous(
                None,
                bytes,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_PRIVATE,
            )
        };
        let ptr = Self::mapped(p, cap);
        populate(ptr.cast(), bytes.get());
        SlotTable { ptr, cap }
    }

    /// Grow to `cap` slots (more than now), keeping the slots held; the new ones are empty.
    /// The address may change.
    pub(super) fn grow(&mut self, cap: usize) {
        debug_assert!(cap > self.cap);
        let old = Self::bytes(self.cap);
        if old == 0 {
            *self = SlotTable::zeroed(cap);
            return;
        }
        let bytes = Self::bytes(cap);
        // SAFETY: [ptr, ptr + old) is this table's whole mapping; MREMAP_MAYMOVE may move it,
        // and nothing refers into it across this call (`&mut self`). The kernel zero-fills
        // the added range of a private anonymous mapping.
        let p = unsafe {
            mman::mremap(
                self.ptr.cast(),
                old,
                bytes,
                MRemapFlags::MREMAP_MAYMOVE,
                None,
            )
        };
        self.ptr = Self::mapped(p, cap);
        self.cap = cap;
        // The kept pages (`old` is whole pages) were faulted in when mapped; only the added
        // ones need it.
        if old < bytes {
            // SAFETY: old < bytes, so the pointer stays inside the mapping.
            populate(unsafe { self.ptr.cast::<u8>().add(old) }, bytes - old);
        }
    }

    /// Bytes mapped for `cap` slots, whole pages (0 for 0 slots). Out of memory if that does
    /// not fit the address space, as for any allocation.
    fn bytes(cap: usize) -> usize {
        let layout = Layout::array::<Slot>(cap).unwrap_or_else(|_| capacity_overflow());
        if layout.size() == 0 {
            return 0;
        }
        layout
            .size()
            .checked_next_multiple_of(page_size())
            .unwrap_or_else(|| capacity_overflow())
    }

    /// The mapping mmap/mremap returned; out of memory if it failed.
    fn mapped(p: nix::Result<NonNull<c_void>>, cap: usize) -> NonNull<Slot> {
        match p {
            Ok(ptr) => ptr.cast(),
            Err(_) => std::alloc::handle_alloc_error(
                Layout::array::<Slot>(cap).unwrap_or_else(|_| capacity_overflow()),
            ),
        }
    }
}

impl Deref for SlotTable {
    type Target = [Slot];
    fn deref(&self) -> &[Slot] {
        // SAFETY: `ptr` is valid for `cap` initialized slots (mapped, zero-filled or written
        // through `deref_mut`), or dangling with cap 0.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.cap) }
    }
}

impl DerefMut for SlotTable {
    fn deref_mut(&mut self) -> &mut [Slot] {
        // SAFETY: as in `deref`, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.cap) }
    }
}

impl Drop for SlotTable {
    fn drop(&mut self) {
        let bytes = Self::bytes(self.cap);
        if bytes != 0 {
            // SAFETY: the whole mapping, which nothing refers into any more. munmap of a valid
            // mapping only fails for lack of memory to split a region, which can't happen
            // for a whole one.
            let _ = unsafe { mman::munmap(self.ptr.cast(), bytes) };
        }
    }
}

fn page_size() -> usize {
    match sysconf(SysconfVar::PAGE_SIZE) {
        Ok(Some(n)) if n > 0 => n as usize,
        _ => 4096,
    }
}

/// Fault in [start, start + len) (page aligned) in one call; kernels before 5.14 refuse
/// the advice, and the pages then fault in one by one when first written, as before.
fn populate(start: NonNull<u8>, len: usize) {
    // SAFETY: the range lies inside a mapping of this table; MADV_POPULATE_WRITE only
    // allocates its pages (zero-filled, contents unchanged).
    let _ = unsafe { mman::madvise(start.cast(), len, MmapAdvise::MADV_POPULATE_WRITE) };
}

fn capacity_overflow() -> ! {
    panic!("index table size overflows the address space")
}
