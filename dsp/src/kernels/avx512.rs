//! AVX-512F: sixteen f32 lanes in a `__m512`.

#![allow(unsafe_op_in_unsafe_fn)] // thin wrappers over intrinsics; callers check the CPU

use std::arch::x86_64::*;

use super::vector::{entry_points, Simd};

#[derive(Clone, Copy)]
pub(crate) struct V(__m512);

impl Simd for V {
    const LANES: usize = 16;
    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        V(_mm512_set1_ps(v))
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        V(_mm512_loadu_ps(p))
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        _mm512_storeu_ps(p, self.0)
    }
    #[inline(always)]
    unsafe fn add(self, o: Self) -> Self {
        V(_mm512_add_ps(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn sub(self, o: Self) -> Self {
        V(_mm512_sub_ps(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn mul(self, o: Self) -> Self {
        V(_mm512_mul_ps(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn mul_add(self, b: Self, c: Self) -> Self {
        V(_mm512_fmadd_ps(self.0, b.0, c.0))
    }
    #[inline(always)]
    unsafe fn max(self, o: Self) -> Self {
        V(_mm512_max_ps(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn sqrt(self) -> Self {
        V(_mm512_sqrt_ps(self.0))
    }
    #[inline(always)]
    unsafe fn load_deinterleave(p: *const f32) -> (Self, Self) {
        let a = _mm512_loadu_ps(p);
        let b = _mm512_loadu_ps(p.add(16));
        let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
        (
            V(_mm512_permutex2var_ps(a, even, b)),
            V(_mm512_permutex2var_ps(a, odd, b)),
        )
    }
    #[inline(always)]
    unsafe fn frexp(self) -> (Self, Self) {
        let bits = _mm512_castps_si512(self.0);
        let e = _mm512_sub_epi32(_mm512_srli_epi32::<23>(bits), _mm512_set1_epi32(126));
        let m = _mm512_or_si512(
            _mm512_and_si512(bits, _mm512_set1_epi32(0x007f_ffff)),
            _mm512_set1_epi32(0x3f00_0000),
        );
        (V(_mm512_castsi512_ps(m)), V(_mm512_cvtepi32_ps(e)))
    }
    #[inline(always)]
    unsafe fn select_lt(a: Self, b: Self, t: Self, f: Self) -> Self {
        V(_mm512_mask_blend_ps(
            _mm512_cmp_ps_mask::<_CMP_LT_OQ>(a.0, b.0),
            f.0,
            t.0,
        ))
    }
    #[inline(always)]
    unsafe fn transpose_pairs(a: Self, b: Self, h: usize) -> (Self, Self) {
        let (lo, hi) = match h {
            8 => (
                _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23),
                _mm512_setr_epi32(8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31),
            ),
            4 => (
                _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27),
                _mm512_setr_epi32(4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31),
            ),
            2 => (
                _mm512_setr_epi32(0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29),
                _mm512_setr_epi32(2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31),
            ),
            _ => (
                _mm512_setr_epi32(0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30),
                _mm512_setr_epi32(1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31),
            ),
        };
        (
            V(_mm512_permutex2var_ps(a.0, lo, b.0)),
            V(_mm512_permutex2var_ps(a.0, hi, b.0)),
        )
    }
    #[inline(always)]
    unsafe fn hsum(self) -> f32 {
        _mm512_reduce_add_ps(self.0)
    }
    #[inline(always)]
    unsafe fn hmax(self) -> f32 {
        _mm512_reduce_max_ps(self.0)
    }
}

entry_points!("avx512f");
