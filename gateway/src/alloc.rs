//! The process allocator, with one defence: `kafka-protocol` 0.18 preallocates arrays from lengths
//! read off the wire (`Vec::with_capacity(n)` for n up to 2^32), so an 8-byte request can ask for
//! hundreds of GiB, which the default allocator refuses by aborting the process.
//!
//! Allocations of at least [`HUGE`] bytes are served by an anonymous `mmap` with
//! `MAP_NORESERVE`: address space only, no commit charge, pages materialise as they are written.
//! Such a preallocated vector is then filled only as far as the request really has elements
//! (each takes at least one byte of a frame that is itself bounded by `max_request_bytes`), the
//! decode fails, and the mapping is returned untouched. Genuine large buffers work as before.
//! Everything else goes to the system allocator.

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations at or above this size are mapped lazily.
pub const HUGE: usize = 1 << 30;
const PAGE: usize = 4096;

pub struct GuardedAlloc;

unsafe fn map(size: usize) -> *mut u8 {
    let p = libc::mmap(
        std::ptr::null_mut(),
        size,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
        -1,
        0,
    );
    if p == libc::MAP_FAILED {
        std::ptr::null_mut()
    } else {
        p as *mut u8
    }
}

unsafe impl GlobalAlloc for GuardedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= HUGE && layout.align() <= PAGE {
            map(layout.size())
        } else {
            System.alloc(layout)
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= HUGE && layout.align() <= PAGE {
            map(layout.size()) // anonymous mappings are zero-filled
        } else {
            System.alloc_zeroed(layout)
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if layout.size() >= HUGE && layout.align() <= PAGE {
            libc::munmap(ptr as *mut libc::c_void, layout.size());
        } else {
            System.dealloc(ptr, layout)
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old_huge = layout.size() >= HUGE && layout.align() <= PAGE;
        let new_huge = new_size >= HUGE && layout.align() <= PAGE;
        if !old_huge && !new_huge {
            return System.realloc(ptr, layout, new_size);
        }
        if old_huge && new_huge {
            // Remap the pages instead of copying them (untouched pages stay uncommitted).
            let p = libc::mremap(ptr as *mut libc::c_void, layout.size(), new_size, libc::MREMAP_MAYMOVE);
            return if p == libc::MAP_FAILED { std::ptr::null_mut() } else { p as *mut u8 };
        }
        let new = self.alloc(Layout::from_size_align_unchecked(new_size, layout.align()));
        if !new.is_null() {
            std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
            self.dealloc(ptr, layout);
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_reservations_cost_nothing_until_written() {
        let a = GuardedAlloc;
        unsafe {
            let layout = Layout::from_size_align(64 << 30, 8).unwrap(); // 64 GiB of address space
            let p = a.alloc(layout);
            assert!(!p.is_null());
            *p = 7;
            *p.add((64 << 30) - 1) = 9;
            assert_eq!(*p, 7);
            let q = a.realloc(p, layout, 8 << 30);
            assert_eq!(*q, 7);
            a.dealloc(q, Layout::from_size_align(8 << 30, 8).unwrap());
            let small = Layout::from_size_align(100, 8).unwrap();
            let s = a.alloc(small);
            let s2 = a.realloc(s, small, HUGE + 10);
            assert!(!s2.is_null());
            a.dealloc(s2, Layout::from_size_align(HUGE + 10, 8).unwrap());
        }
    }
}
