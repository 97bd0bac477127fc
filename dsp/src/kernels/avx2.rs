//! AVX2 + FMA: eight f32 lanes in a `__m256`.

#![allow(unsafe_op_in_unsafe_fn)] // thin wrappers over intrinsics; callers check the CPU

use std::arch::x86_64::*;

use super::vector::{entry_points, Simd};

#[derive(Clone, Copy)]
pub(crate) struct V(__m256);

impl Simd for V {
    const LANES: usize = 8;
    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        V(_mm256_set1_ps(v))
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        V(_mm256_loadu_ps(p))
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        _mm256_storeu_ps(p, self.0)
    }
    #[inline(always)]
    unsafe fn add(self, o: Self) -> Self {
        V(_mm256_add_ps(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn sub(self, o: Self) -> Self {
        V(_mm256_sub_ps(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn mul(self, o: Self) -> Self {
        V(_mm256_mul_ps(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn mul_add(self, b: Self, c: Self) -> Self {
        V(_mm256_fmadd_ps(self.0, b.0, c.0))
    }
    #[inline(always)]
    unsafe fn max(self, o: Self) -> Self {
        V(_mm256_max_ps(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn sqrt(self) -> Self {
        V(_mm256_sqrt_ps(self.0))
    }
    #[inline(always)]
    unsafe fn load_deinterleave(p: *const f32) -> (Self, Self) {
        let a = _mm256_loadu_ps(p);
        let b = _mm256_loadu_ps(p.add(8));
        // Per 128-bit half: [a0 a2 b0 b2] and [a1 a3 b1 b3]; then put the 64-bit pairs in order.
        let even = _mm256_shuffle_ps::<0b10_00_10_00>(a, b);
        let odd = _mm256_shuffle_ps::<0b11_01_11_01>(a, b);
        let fix = |v: __m256| {
            _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(v)))
        };
        (V(fix(even)), V(fix(odd)))
    }
    #[inline(always)]
    unsafe fn frexp(self) -> (Self, Self) {
        let bits = _mm256_castps_si256(self.0);
        let e = _mm256_sub_epi32(_mm256_srli_epi32::<23>(bits), _mm256_set1_epi32(126));
        let m = _mm256_or_si256(
            _mm256_and_si256(bits, _mm256_set1_epi32(0x007f_ffff)),
            _mm256_set1_epi32(0x3f00_0000),
        );
        (V(_mm256_castsi256_ps(m)), V(_mm256_cvtepi32_ps(e)))
    }
    #[inline(always)]
    unsafe fn select_lt(a: Self, b: Self, t: Self, f: Self) -> Self {
        V(_mm256_blendv_ps(
            f.0,
            t.0,
            _mm256_cmp_ps::<_CMP_LT_OQ>(a.0, b.0),
        ))
    }
    #[inline(always)]
    unsafe fn transpose_pairs(a: Self, b: Self, h: usize) -> (Self, Self) {
        match h {
            4 => (
                V(_mm256_permute2f128_ps::<0x20>(a.0, b.0)),
                V(_mm256_permute2f128_ps::<0x31>(a.0, b.0)),
            ),
            2 => (
                V(_mm256_shuffle_ps::<0x44>(a.0, b.0)),
                V(_mm256_shuffle_ps::<0xEE>(a.0, b.0)),
            ),
            _ => (
                V(_mm256_blend_ps::<0xAA>(a.0, _mm256_permute_ps::<0xA0>(b.0))),
                V(_mm256_blend_ps::<0xAA>(_mm256_permute_ps::<0xF5>(a.0), b.0)),
            ),
        }
    }
}

entry_points!("avx2,fma");
