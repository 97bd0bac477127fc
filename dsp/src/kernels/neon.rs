//! aarch64 Advanced SIMD (NEON): four f32 lanes in a `float32x4_t`.

#![allow(unsafe_op_in_unsafe_fn)] // thin wrappers over intrinsics; callers check the CPU

use std::arch::aarch64::*;

use super::vector::{entry_points, Simd};

#[derive(Clone, Copy)]
pub(crate) struct V(float32x4_t);

impl Simd for V {
    const LANES: usize = 4;
    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        V(vdupq_n_f32(v))
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        V(vld1q_f32(p))
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        vst1q_f32(p, self.0)
    }
    #[inline(always)]
    unsafe fn add(self, o: Self) -> Self {
        V(vaddq_f32(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn sub(self, o: Self) -> Self {
        V(vsubq_f32(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn mul(self, o: Self) -> Self {
        V(vmulq_f32(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn mul_add(self, b: Self, c: Self) -> Self {
        V(vfmaq_f32(c.0, self.0, b.0))
    }
    #[inline(always)]
    unsafe fn max(self, o: Self) -> Self {
        V(vmaxq_f32(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn sqrt(self) -> Self {
        V(vsqrtq_f32(self.0))
    }
    #[inline(always)]
    unsafe fn load_deinterleave(p: *const f32) -> (Self, Self) {
        let v = vld2q_f32(p);
        (V(v.0), V(v.1))
    }
    #[inline(always)]
    unsafe fn frexp(self) -> (Self, Self) {
        let bits = vreinterpretq_u32_f32(self.0);
        let e = vsubq_s32(
            vreinterpretq_s32_u32(vshrq_n_u32::<23>(bits)),
            vdupq_n_s32(126),
        );
        let m = vorrq_u32(
            vandq_u32(bits, vdupq_n_u32(0x007f_ffff)),
            vdupq_n_u32(0x3f00_0000),
        );
        (V(vreinterpretq_f32_u32(m)), V(vcvtq_f32_s32(e)))
    }
    #[inline(always)]
    unsafe fn select_lt(a: Self, b: Self, t: Self, f: Self) -> Self {
        V(vbslq_f32(vcltq_f32(a.0, b.0), t.0, f.0))
    }
    #[inline(always)]
    unsafe fn transpose_pairs(a: Self, b: Self, h: usize) -> (Self, Self) {
        if h == 2 {
            (
                V(vcombine_f32(vget_low_f32(a.0), vget_low_f32(b.0))),
                V(vcombine_f32(vget_high_f32(a.0), vget_high_f32(b.0))),
            )
        } else {
            (V(vtrn1q_f32(a.0, b.0)), V(vtrn2q_f32(a.0, b.0)))
        }
    }
    #[inline(always)]
    unsafe fn hsum(self) -> f32 {
        vaddvq_f32(self.0)
    }
    #[inline(always)]
    unsafe fn hmax(self) -> f32 {
        vmaxvq_f32(self.0)
    }
}

entry_points!("neon");
