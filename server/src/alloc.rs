//! The global allocator: mimalloc, except that very large allocations are lazily committed
//! anonymous mappings.
//!
//! Why mimalloc: the producer allocates a small object per record on the caller's thread (the
//! record's callback) that the sender's thread frees once the batch is acknowledged. glibc's
//! allocator serialises such cross-thread frees on arena locks; in `surety perf produce` they
//! cost a quarter of the CPU, and mimalloc's thread-local free lists took the client from
//! 2.5 M to 3.6 M records/s in the same run (`docs/performance.md`).
//!
//! Why: the `kafka-protocol` decoder reserves an array's capacity from the length a request
//! claims before reading any element, so a 10-byte request claiming 2^31 topics asks for about
//! 100 GB at once. The system allocator refuses, and Rust aborts the whole process on a failed
//! allocation; no `catch_unwind` can stop an abort, so one hostile client could take the broker
//! down. Served from a `MAP_NORESERVE` mapping instead, such a reservation costs address space
//! only: no page is touched before the decoder runs out of bytes and returns an error, and the
//! mapping is released with the vector. Legitimate allocations of this size do not occur in the
//! broker (requests are bounded by `socket.request.max.bytes`, segments are mapped separately).
//! Under `vm.overcommit_memory=2` the kernel refuses such mappings too; run with the default
//! heuristic overcommit.

use std::alloc::{GlobalAlloc, Layout};

/// Turns transparent huge pages off for this process and the processes it starts; the
/// producing commands (`surety produce`, `surety perf produce`) call it first in `main`.
///
/// Why: mimalloc asks for huge pages on its arenas, and the kernel then zero-fills 2 MiB at the
/// first touch of any byte of one. The producer's memory is spread thin (batches in flight,
/// a small object per record, each freed on another thread), so most of each zeroed huge page
/// is never used: in `surety perf produce` against three brokers with `acks=all`, zeroing
/// pages took a quarter of the client's CPU, and with 4 KiB pages its system time fell from
/// 0.2–0.4 to 0.1–0.2 CPU-seconds per million records (`docs/performance.md`). The brokers'
/// CPU in the same runs did not change, so they keep the kernel's setting. Failing (an old
/// kernel) changes nothing else.
pub fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl(2) with PR_SET_THP_DISABLE takes integer arguments only and touches no
    // memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

/// Allocations at least this large are mapped lazily.
const LAZY_THRESHOLD: usize = 1 << 30;
/// Mappings are page-aligned; larger alignments go to the system allocator.
const PAGE: usize = 4096;

/// The allocator; registered as `#[global_allocator]` in this crate's root.
pub struct LazyHugeAllocator;

fn is_lazy(size: usize, align: usize) -> bool {
    size >= LAZY_THRESHOLD && align <= PAGE
}

// SAFETY: every pointer handed out comes either from mimalloc (and goes back to it) or from
// `mmap` of exactly `layout.size()` bytes (and goes back to `munmap` with that size); which one
// is decided by the layout alone, which callers must pass back unchanged.
unsafe impl GlobalAlloc for LazyHugeAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_lazy(layout.size(), layout.align()) {
            map(layout.size())
        } else {
            // SAFETY: forwarded with the caller's guarantees.
            unsafe { mimalloc::MiMalloc.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_lazy(layout.size(), layout.align()) {
            // Anonymous mappings are zero-filled.
            map(layout.size())
        } else {
            // SAFETY: forwarded with the caller's guarantees.
            unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_lazy(layout.size(), layout.align()) {
            // SAFETY: `ptr` came from `map(layout.size())`.
            unsafe { libc::munmap(ptr.cast(), layout.size()) };
        } else {
            // SAFETY: `ptr` came from mimalloc with this layout.
            unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let align = layout.align();
        if !is_lazy(layout.size(), align) && !is_lazy(new_size, align) {
            // SAFETY: forwarded with the caller's guarantees.
            return unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) };
        }
        // SAFETY: the caller guarantees `new_size` is valid for `align`.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, align) };
        // SAFETY: a fresh allocation; on success both blocks are valid for the copied length.
        unsafe {
            let new = self.alloc(new_layout);
            if !new.is_null() {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}

fn map(size: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping at an address of the kernel's choosing touches no
    // existing memory.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        std::ptr::null_mut()
    } else {
        ptr.cast()
    }
}

/// Returns what this thread freed to the OS, at most once a second per thread; the runtime
/// calls it each time a worker thread goes idle.
///
/// Why: mimalloc frees a block from another thread onto its page's list for the owning thread,
/// which takes it back (and returns idle pages to the OS) only when it next allocates. A
/// broker's worker that goes idle after a burst would keep the burst's memory for as long as it
/// stays idle; collecting when it parks hands it back within a second.
pub fn collect_when_idle() {
    use std::cell::Cell;
    use std::time::{Duration, Instant};
    thread_local! {
        static LAST: Cell<Option<Instant>> = const { Cell::new(None) };
    }
    let now = Instant::now();
    let due = LAST.with(|last| {
        let due = last
            .get()
            .is_none_or(|at| now.duration_since(at) >= Duration::from_secs(1));
        if due {
            last.set(Some(now));
        }
        due
    });
    if due {
        // SAFETY: mi_collect takes no pointers and only walks the calling thread's own heap.
        unsafe { mi_collect(false) };
    }
}

unsafe extern "C" {
    /// mimalloc's own: frees pending cross-thread frees and purges unused pages.
    fn mi_collect(force: bool);
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use kafka_protocol::messages::{ApiKey, RequestKind};

    #[test]
    fn a_request_claiming_billions_of_array_elements_is_an_error_not_an_abort() {
        // Metadata v4: topics array of i32::MAX elements, then nothing.
        let mut body = Bytes::from_static(&[0x7f, 0xff, 0xff, 0xff, 1, 2]);
        assert!(RequestKind::decode(ApiKey::Metadata, &mut body, 4).is_err());
        // Metadata v9 (flexible): compact array of u32::MAX - 1 elements.
        let mut body = Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0x0f, 0]);
        assert!(RequestKind::decode(ApiKey::Metadata, &mut body, 9).is_err());
    }

    #[test]
    fn huge_allocations_are_usable_and_resizable() {
        let mut v: Vec<u8> = Vec::with_capacity(super::LAZY_THRESHOLD);
        v.extend_from_slice(b"lazy");
        v.shrink_to_fit();
        assert_eq!(v, b"lazy");
        let mut w = vec![0u8; 16];
        w.reserve_exact(super::LAZY_THRESHOLD);
        w[0] = 1;
        assert_eq!(w.len(), 16);
        assert_eq!(w[0], 1);
    }
}
