//! Memory per put stays within the upload window plus 64 MiB whatever the upload holds (issue
//! 10, item 6; TARGETS.md "memory and chunks for any upload, however crafted"), measured
//! deterministically: a counting global allocator records the peak of the bytes allocated, by
//! every thread, while each crafted upload of `tests/common/hostile.rs` is put. A test binary of
//! its own, so no other test's allocations are counted.

mod common;
#[path = "common/hostile.rs"]
mod hostile_cases;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use lockerstore::{LicenseMode, Options};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to `System` unchanged; only counters are updated beside it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            // Both blocks may exist during the move: count the new one before freeing the old.
            let now = CURRENT.fetch_add(new_size, Ordering::Relaxed) + new_size;
            PEAK.fetch_max(now, Ordering::Relaxed);
            CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

#[test]
fn a_crafted_put_allocates_at_most_the_window_plus_64_mib() {
    let options = Options::default();
    let limit = options.get_segment_window() + (64 << 20);
    for case in hostile_cases::cases() {
        let bytes = (case.build)();
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), LicenseMode::PerUserCopy);
        store.put(&user("u"), &key("seed"), &b"seed"[..]).unwrap();

        let base = CURRENT.load(Ordering::Relaxed);
        PEAK.store(base, Ordering::Relaxed);
        store.put(&user("u"), &key("crafted"), &bytes[..]).unwrap();
        let peak = PEAK.load(Ordering::Relaxed) - base;
        eprintln!("{}: peak {} KiB during the put", case.name, peak >> 10);
        assert!(
            peak <= limit,
            "{}: {peak} bytes allocated at the peak of the put, limit {limit}",
            case.name
        );
    }
}
