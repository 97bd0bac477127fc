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

/// Values per cache line: the alignment of [`Aligned`].
const LINE: usize = 16;

/// `len` zeros whose first value starts a 64-byte cache line. A large `Vec` from glibc's
/// allocator starts 16 bytes into a page, so every 64-byte SIMD load and store of it would
/// straddle two lines; the SIMD lanes' scratch and tiles are read and written a whole line
/// at a time.
#[derive(Debug)]
pub struct Aligned {
    v: Vec<f32>,
    off: usize,
    len: usize,
}

impl Aligned {
    /// `len` zeros, line-aligned.
    pub fn zeroed(len: usize) -> Aligned {
        let v = vec![0.0f32; len + LINE];
        // The offset of the first 64-byte boundary, in values (at most LINE - 1: a Vec<f32>
        // is 4-byte aligned).
        let off = v.as_ptr().align_offset(4 * LINE).min(LINE);
        Aligned { v, off, len }
    }
}

impl Clone for Aligned {
    fn clone(&self) -> Aligned {
        let mut a = Aligned::zeroed(self.len);
        a.copy_from_slice(self);
        a
    }
}

impl std::ops::Deref for Aligned {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.v[self.off..self.off + self.len]
    }
}

impl std::ops::DerefMut for Aligned {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.v[self.off..self.off + self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_starts_a_cache_line_and_clones_aligned() {
        for len in [0, 1, 17, 1000, 100_000] {
            let mut a = Aligned::zeroed(len);
            assert_eq!(a.len(), len);
            assert_eq!(a.as_ptr() as usize % 64, 0);
            a.iter_mut().enumerate().for_each(|(i, v)| *v = i as f32);
            let b = a.clone();
            assert_eq!(b.as_ptr() as usize % 64, 0);
            assert_eq!(&b[..], &a[..]);
        }
    }
}
