//! Large output buffers: zeroed lazily by the kernel and backed by transparent huge pages.

/// Asks the kernel to back `v`'s allocation with transparent huge pages: an hour of frames
/// is over 100 MB, and faulting it in 4 KiB pages costs more than writing the frames into it.
/// Advice only: nothing changes where the kernel has huge pages off (or on other systems).
pub fn advise_huge_pages(v: &mut Vec<f32>) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let bytes = v.capacity() * 4;
        if bytes < 2 * HUGE {
            return;
        }
        let start = v.as_mut_ptr() as usize;
        let aligned = start.next_multiple_of(HUGE);
        let len = (start + bytes - aligned) / HUGE * HUGE;
        // Safety: [aligned, aligned + len) lies inside the Vec's allocation (page-aligned, as
        // madvise wants); MADV_HUGEPAGE changes no contents and no mapping.
        unsafe {
            libc::madvise(aligned as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = v;
}

/// `n` zeros in an allocation advised as huge pages before anything touches it (the
/// allocator's zeroed pages: no value is written until the caller writes it).
pub fn zeroed(n: usize) -> Vec<f32> {
    let mut v = vec![0.0f32; n];
    advise_huge_pages(&mut v);
    v
}
