//! The SIMD kernels, written once against [`Simd`] (one register of `LANES` f32 values) and
//! instantiated per instruction set by [`entry_points!`]. Every body is `#[inline(always)]`
//! so it is compiled inside the `#[target_feature]` entry point of its ISA; tails shorter
//! than a register go to the scalar kernels.

#![allow(unsafe_op_in_unsafe_fn)] // every fn here is unsafe only for its target features

use super::scalar;

/// One SIMD register of f32 lanes. All methods require the ISA's target features.
pub(crate) trait Simd: Copy {
    const LANES: usize;
    unsafe fn splat(v: f32) -> Self;
    unsafe fn load(p: *const f32) -> Self;
    unsafe fn store(self, p: *mut f32);
    unsafe fn add(self, o: Self) -> Self;
    unsafe fn sub(self, o: Self) -> Self;
    unsafe fn mul(self, o: Self) -> Self;
    /// `self * b + c`, fused.
    unsafe fn mul_add(self, b: Self, c: Self) -> Self;
    unsafe fn max(self, o: Self) -> Self;
    unsafe fn sqrt(self) -> Self;
    /// Loads `2 * LANES` interleaved values and splits them into (even, odd) lanes.
    unsafe fn load_deinterleave(p: *const f32) -> (Self, Self);
    /// For positive normal lanes: (mantissa in [0.5, 1), exponent as f32), as C's `frexpf`.
    unsafe fn frexp(self) -> (Self, Self);
    /// `a < b ? t : f` per lane.
    unsafe fn select_lt(a: Self, b: Self, t: Self, f: Self) -> Self;
    /// One level of a register-block transpose: for lanes `c` with bit `h` clear, the first
    /// result takes `a[c]` and then `b[c]` at `c + h`; the second takes `a[c + h]` and then
    /// `b[c + h]`. Applied to rows `i` and `i + h` for every `i` with bit `h` clear, for `h`
    /// = `LANES / 2` down to 1, it transposes `LANES` rows of `LANES` lanes.
    unsafe fn transpose_pairs(a: Self, b: Self, h: usize) -> (Self, Self);

    #[inline(always)]
    unsafe fn hsum(self) -> f32 {
        let mut buf = [0.0f32; 16];
        self.store(buf.as_mut_ptr());
        buf[..Self::LANES].iter().sum()
    }

    #[inline(always)]
    unsafe fn hmax(self) -> f32 {
        let mut buf = [0.0f32; 16];
        self.store(buf.as_mut_ptr());
        scalar::max(&buf[..Self::LANES])
    }
}

#[inline(always)]
pub(crate) unsafe fn mul<V: Simd>(a: &[f32], b: &[f32], out: &mut [f32]) {
    let (n, l) = (out.len(), V::LANES);
    let mut i = 0;
    while i + l <= n {
        V::load(a.as_ptr().add(i))
            .mul(V::load(b.as_ptr().add(i)))
            .store(out.as_mut_ptr().add(i));
        i += l;
    }
    scalar::mul(&a[i..], &b[i..], &mut out[i..]);
}

#[inline(always)]
pub(crate) unsafe fn power<V: Simd>(c: &[f32], out: &mut [f32]) {
    let (n, l) = (out.len(), V::LANES);
    let mut i = 0;
    while i + l <= n {
        let (re, im) = V::load_deinterleave(c.as_ptr().add(2 * i));
        re.mul_add(re, im.mul(im)).store(out.as_mut_ptr().add(i));
        i += l;
    }
    scalar::power(&c[2 * i..], &mut out[i..]);
}

#[inline(always)]
pub(crate) unsafe fn magnitude<V: Simd>(c: &[f32], out: &mut [f32]) {
    let (n, l) = (out.len(), V::LANES);
    let mut i = 0;
    while i + l <= n {
        let (re, im) = V::load_deinterleave(c.as_ptr().add(2 * i));
        re.mul_add(re, im.mul(im))
            .sqrt()
            .store(out.as_mut_ptr().add(i));
        i += l;
    }
    scalar::magnitude(&c[2 * i..], &mut out[i..]);
}

/// Four independent accumulators hide the FMA latency on long inputs.
#[inline(always)]
pub(crate) unsafe fn dot<V: Simd>(a: &[f32], b: &[f32]) -> f32 {
    let (n, l) = (a.len(), V::LANES);
    if n < l {
        return scalar::dot(a, b);
    }
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let zero = V::splat(0.0);
    let (mut s0, mut s1, mut s2, mut s3) = (zero, zero, zero, zero);
    let mut i = 0;
    while i + 4 * l <= n {
        s0 = V::load(pa.add(i)).mul_add(V::load(pb.add(i)), s0);
        s1 = V::load(pa.add(i + l)).mul_add(V::load(pb.add(i + l)), s1);
        s2 = V::load(pa.add(i + 2 * l)).mul_add(V::load(pb.add(i + 2 * l)), s2);
        s3 = V::load(pa.add(i + 3 * l)).mul_add(V::load(pb.add(i + 3 * l)), s3);
        i += 4 * l;
    }
    while i + l <= n {
        s0 = V::load(pa.add(i)).mul_add(V::load(pb.add(i)), s0);
        i += l;
    }
    s0.add(s1).add(s2.add(s3)).hsum() + scalar::dot(&a[i..], &b[i..])
}

/// All bands in one call: short bands (most mel bands at low frequencies) take a scalar FMA
/// loop, long ones the vector dot.
#[inline(always)]
pub(crate) unsafe fn band_dots<V: Simd>(
    x: &[f32],
    spans: &[super::Span],
    weights: &[f32],
    out: &mut [f32],
) {
    for (o, s) in out.iter_mut().zip(spans) {
        let a = x.get_unchecked(s.start..s.start + s.len);
        let w = weights.get_unchecked(s.offset..s.offset + s.len);
        *o = if s.len < 2 * V::LANES {
            let mut acc = 0.0f32;
            for i in 0..s.len {
                acc = a.get_unchecked(i).mul_add(*w.get_unchecked(i), acc);
            }
            acc
        } else {
            dot::<V>(a, w)
        };
    }
}

#[inline(always)]
pub(crate) unsafe fn sum<V: Simd>(x: &[f32]) -> f32 {
    let (n, l) = (x.len(), V::LANES);
    let p = x.as_ptr();
    let zero = V::splat(0.0);
    let (mut s0, mut s1) = (zero, zero);
    let mut i = 0;
    while i + 2 * l <= n {
        s0 = s0.add(V::load(p.add(i)));
        s1 = s1.add(V::load(p.add(i + l)));
        i += 2 * l;
    }
    while i + l <= n {
        s0 = s0.add(V::load(p.add(i)));
        i += l;
    }
    s0.add(s1).hsum() + scalar::sum(&x[i..])
}

#[inline(always)]
pub(crate) unsafe fn max<V: Simd>(x: &[f32]) -> f32 {
    let (n, l) = (x.len(), V::LANES);
    let mut m = V::splat(f32::NEG_INFINITY);
    let mut i = 0;
    while i + l <= n {
        m = m.max(V::load(x.as_ptr().add(i)));
        i += l;
    }
    m.hmax().max(scalar::max(&x[i..]))
}

/// `out[o * cols + t] = sum_i m[o * n_in + i] * x[i * cols + t]`: a small dense matrix
/// times band-major columns (the DCT of a mel chunk), a vector of columns at a time through
/// [`dense_block`].
#[inline(always)]
pub(crate) unsafe fn dense_rows<V: Simd>(
    m: &[f32],
    n_in: usize,
    x: &[f32],
    cols: usize,
    out: &mut [f32],
) {
    // Whole vectors of columns as blocks whose row stride is `cols`; the rest scalar.
    let full = cols / V::LANES * V::LANES;
    dense_block::<V>(m, n_in, x, cols, out, cols, full);
    if full < cols {
        scalar::dense_block(
            m,
            n_in,
            &x[full..],
            cols,
            &mut out[full..],
            cols,
            cols - full,
        );
    }
}

/// `out[o * out_stride + t] = sum_i m[o * n_in + i] * x[i * w + t]` for `t < count`: one
/// block of `w` frames stored as `n_in` rows of `w` (in L1), into `count` columns of a
/// band-major output. Outputs in groups of 8 (eight independent FMA chains sharing each load
/// of `x`), then 4, then 1.
///
/// # Safety
/// Whole vectors are loaded: `count` rounded up to `LANES` must not exceed `w` (the public
/// wrapper asks for `w` a multiple of 16; [`dense_rows`] passes whole vectors only), `x`
/// holds `n_in` rows `w` apart, and `out` holds `(n_out - 1) * out_stride + count` values.
#[inline(always)]
pub(crate) unsafe fn dense_block<V: Simd>(
    m: &[f32],
    n_in: usize,
    x: &[f32],
    w: usize,
    out: &mut [f32],
    out_stride: usize,
    count: usize,
) {
    let l = V::LANES;
    const { assert!(V::LANES <= 16, "dense_group's staging holds 16 lanes") };
    debug_assert!(count.next_multiple_of(l) <= w && x.len() >= n_in * w);
    let n_out = m.len() / n_in.max(1);
    let (mp, xp, op) = (m.as_ptr(), x.as_ptr(), out.as_mut_ptr());
    let mut c = 0;
    while c < count {
        let n = (count - c).min(l);
        let block = (mp, n_in, xp.add(c), w, op.add(c), out_stride, n);
        let mut o = 0;
        while o + 8 <= n_out {
            dense_group::<V, 8>(block, o);
            o += 8;
        }
        if o + 4 <= n_out {
            dense_group::<V, 4>(block, o);
            o += 4;
        }
        while o < n_out {
            dense_group::<V, 1>(block, o);
            o += 1;
        }
        c += l;
    }
}

/// Outputs `o..o + G` of one vector column of [`dense_block`]: `(m, n_in, x, w, out,
/// out_stride, n)` with `x` and `out` at the column, `n` of its lanes stored.
#[inline(always)]
unsafe fn dense_group<V: Simd, const G: usize>(
    (mp, n_in, xp, w, op, out_stride, n): (
        *const f32,
        usize,
        *const f32,
        usize,
        *mut f32,
        usize,
        usize,
    ),
    o: usize,
) {
    let mut acc = [V::splat(0.0); G];
    for i in 0..n_in {
        let xv = V::load(xp.add(i * w));
        for (g, a) in acc.iter_mut().enumerate() {
            *a = V::splat(*mp.add((o + g) * n_in + i)).mul_add(xv, *a);
        }
    }
    for (g, a) in acc.iter().enumerate() {
        let dst = op.add((o + g) * out_stride);
        if n == V::LANES {
            a.store(dst);
        } else {
            let mut tmp = [0.0f32; 16];
            a.store(tmp.as_mut_ptr());
            std::ptr::copy_nonoverlapping(tmp.as_ptr(), dst, n);
        }
    }
}

/// `x - x` is 0 for finite lanes and NaN otherwise; NaN survives every sum (four
/// accumulators, so the adds overlap).
#[inline(always)]
pub(crate) unsafe fn all_finite<V: Simd>(x: &[f32]) -> bool {
    let (n, l) = (x.len(), V::LANES);
    let p = x.as_ptr();
    let mut acc = [V::splat(0.0); 4];
    let mut i = 0;
    while i + 4 * l <= n {
        for (k, a) in acc.iter_mut().enumerate() {
            let v = V::load(p.add(i + k * l));
            *a = a.add(v.sub(v));
        }
        i += 4 * l;
    }
    let s = acc[0].add(acc[1]).add(acc[2].add(acc[3]));
    s.hsum() == 0.0 && scalar::all_finite(&x[i..])
}

#[inline(always)]
pub(crate) unsafe fn weighted_sq_dev<V: Simd>(w: &[f32], f: &[f32], c: f32) -> f32 {
    let (n, l) = (w.len(), V::LANES);
    let cv = V::splat(c);
    let mut s = V::splat(0.0);
    let mut i = 0;
    while i + l <= n {
        let d = V::load(f.as_ptr().add(i)).sub(cv);
        s = V::load(w.as_ptr().add(i)).mul(d).mul_add(d, s);
        i += l;
    }
    s.hsum() + scalar::weighted_sq_dev(&w[i..], &f[i..], c)
}

/// Natural log of positive normal lanes: Cephes `logf` (frexp, then a degree-9 polynomial on
/// the mantissa around 1), within about 2 ulp of `f32::ln` on normal inputs.
#[inline(always)]
pub(crate) unsafe fn ln<V: Simd>(x: V) -> V {
    let one = V::splat(1.0);
    let (m, e) = x.frexp();
    let small = V::splat(std::f32::consts::FRAC_1_SQRT_2);
    // m < 1/sqrt(2): use 2m - 1 and e - 1, so the polynomial sees [-0.29, 0.41].
    let e = V::select_lt(m, small, e.sub(one), e);
    let x = V::select_lt(m, small, m.add(m).sub(one), m.sub(one));
    let z = x.mul(x);
    let mut y = V::splat(7.037_683_6e-2);
    for c in [
        -1.151_461e-1,
        1.167_699_9e-1,
        -1.242_014_1e-1,
        1.424_932_3e-1,
        -1.666_805_8e-1,
        2.000_071_4e-1,
        -2.499_999_4e-1,
        3.333_333e-1,
    ] {
        y = y.mul_add(x, V::splat(c));
    }
    y = y.mul(x).mul(z);
    y = e.mul_add(V::splat(-2.121_944_4e-4), y);
    y = z.mul_add(V::splat(-0.5), y);
    let r = x.add(y);
    e.mul_add(V::splat(0.693_359_4), r)
}

#[inline(always)]
pub(crate) unsafe fn log_scaled_clamped<V: Simd>(
    x: &mut [f32],
    floor: f32,
    scale: f32,
    offset: f32,
    lo: f32,
) -> f32 {
    let p = x.as_mut_ptr();
    log_scaled_raw::<V>(p, p, x.len(), floor, scale, offset, lo)
}

#[inline(always)]
pub(crate) unsafe fn log_scaled_into<V: Simd>(
    src: &[f32],
    dst: &mut [f32],
    floor: f32,
    scale: f32,
    offset: f32,
    lo: f32,
) -> f32 {
    log_scaled_raw::<V>(
        src.as_ptr(),
        dst.as_mut_ptr(),
        src.len(),
        floor,
        scale,
        offset,
        lo,
    )
}

/// `dst[i] = max(scale * ln(max(src[i], floor)) + offset, lo)` for `i < n` (`src` may be
/// `dst`); returns the largest result.
#[inline(always)]
unsafe fn log_scaled_raw<V: Simd>(
    src: *const f32,
    dst: *mut f32,
    n: usize,
    floor: f32,
    scale: f32,
    offset: f32,
    lo: f32,
) -> f32 {
    let l = V::LANES;
    let (fl, sc, off, lov) = (
        V::splat(floor),
        V::splat(scale),
        V::splat(offset),
        V::splat(lo),
    );
    let mut m = V::splat(f32::NEG_INFINITY);
    let mut i = 0;
    while i + l <= n {
        let v = ln(V::load(src.add(i)).max(fl)).mul_add(sc, off).max(lov);
        v.store(dst.add(i));
        m = m.max(v);
        i += l;
    }
    // The tail goes through the same vector code (padded), so every value is bit-identical
    // wherever it falls in a slice: tiled and whole-array results agree on every ISA.
    let tail = n - i;
    if tail > 0 {
        let mut buf = [1.0f32; 64];
        std::ptr::copy_nonoverlapping(src.add(i), buf.as_mut_ptr(), tail);
        ln(V::load(buf.as_ptr()).max(fl))
            .mul_add(sc, off)
            .max(lov)
            .store(buf.as_mut_ptr());
        std::ptr::copy_nonoverlapping(buf.as_ptr(), dst.add(i), tail);
        m = m.max(V::splat(scalar::max(&buf[..tail])));
    }
    m.hmax()
}

#[inline(always)]
pub(crate) unsafe fn clamp_affine<V: Simd>(x: &mut [f32], floor: f32, mul: f32, add: f32) {
    let (n, l) = (x.len(), V::LANES);
    let (fl, mv, av) = (V::splat(floor), V::splat(mul), V::splat(add));
    let p = x.as_mut_ptr();
    let mut i = 0;
    while i + l <= n {
        V::load(p.add(i)).max(fl).mul_add(mv, av).store(p.add(i));
        i += l;
    }
    let tail = n - i;
    if tail > 0 {
        let mut buf = [0.0f32; 64];
        buf[..tail].copy_from_slice(&x[i..]);
        V::load(buf.as_ptr())
            .max(fl)
            .mul_add(mv, av)
            .store(buf.as_mut_ptr());
        x[i..].copy_from_slice(&buf[..tail]);
    }
}

/// Defines the public entry points of one ISA module: each is a `#[target_feature]` function
/// that instantiates the generic body for that module's register type `V`.
/// Transposes `LANES` rows of `LANES` lanes in registers ([`Simd::transpose_pairs`], log2
/// levels): row `r`, lane `c` becomes row `c`, lane `r`.
#[inline(always)]
pub(crate) unsafe fn transpose_regs<V: Simd>(rows: &mut [V; 16]) {
    let l = V::LANES;
    let mut h = l / 2;
    while h >= 1 {
        for i in 0..l {
            if i & h == 0 {
                let (a, b) = V::transpose_pairs(rows[i], rows[i + h], h);
                rows[i] = a;
                rows[i + h] = b;
            }
        }
        h /= 2;
    }
}

/// `dst[c * rows + r] = src[r * cols + c]`: `LANES x LANES` blocks in registers, the edges
/// scalar.
#[inline(always)]
pub(crate) unsafe fn transpose<V: Simd>(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    let l = V::LANES;
    let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
    let (r_full, c_full) = (rows / l * l, cols / l * l);
    let mut reg = [V::splat(0.0); 16];
    let mut r0 = 0;
    while r0 < r_full {
        let mut c0 = 0;
        while c0 < c_full {
            for (i, v) in reg.iter_mut().enumerate().take(l) {
                *v = V::load(s.add((r0 + i) * cols + c0));
            }
            transpose_regs::<V>(&mut reg);
            for (i, v) in reg.iter().enumerate().take(l) {
                v.store(d.add((c0 + i) * rows + r0));
            }
            c0 += l;
        }
        for r in r0..r0 + l {
            for c in c_full..cols {
                *d.add(c * rows + r) = *s.add(r * cols + c);
            }
        }
        r0 += l;
    }
    for r in r_full..rows {
        for c in 0..cols {
            *d.add(c * rows + r) = *s.add(r * cols + c);
        }
    }
}

macro_rules! entry_points {
    ($features:literal) => {
        use super::vector;

        /// # Safety
        /// The CPU must support the module's target features.
        #[target_feature(enable = $features)]
        pub unsafe fn mul(a: &[f32], b: &[f32], out: &mut [f32]) {
            vector::mul::<V>(a, b, out)
        }
        /// # Safety
        /// The CPU must support the module's target features.
        #[target_feature(enable = $features)]
        pub unsafe fn power(c: &[f32], out: &mut [f32]) {
            vector::power::<V>(c, out)
        }
        /// # Safety
        /// The CPU must support the module's target features.
        #[target_feature(enable = $features)]
        pub unsafe fn magnitude(c: &[f32], out: &mut [f32]) {
            vector::magnitude::<V>(c, out)
        }
        /// # Safety
        /// The CPU must support the module's target features.
        #[target_feature(enable = $features)]
        pub unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
            vector::dot::<V>(a, b)
        }
        /// # Safety
        /// The CPU must support the module's target features; spans must lie within `x`
        /// and `weights`.
        #[target_feature(enable = $features)]
        pub unsafe fn band_dots(
            x: &[f32],
            spans: &[super::Span],
            weights: &[f32],
            out: &mut [f32],
        ) {
            vector::band_dots::<V>(x, spans, weights, out)
        }
        /// # Safety
        /// The CPU must support the module's target features.
        #[target_feature(enable = $features)]
        pub unsafe fn sum(x: &[f32]) -> f32 {
            vector::sum::<V>(x)
        }
        /// # Safety
        /// The CPU must support the module's target features.
        #[target_feature(enable = $features)]
        pub unsafe fn max(x: &[f32]) -> f32 {
            vector::max::<V>(x)
        }
        /// # Safety
        /// The CPU must support the module's target features.
        #[target_feature(enable = $features)]
        pub unsafe fn weighted_sq_dev(w: &[f32], f: &[f32], c: f32) -> f32 {
            vector::weighted_sq_dev::<V>(w, f, c)
        }
        /// # Safety
        /// The CPU must support the module's target features.
        #[target_feature(enable = $features)]
        pub unsafe fn log_scaled_clamped(
            x: &mut [f32],
            floor: f32,
            scale: f32,
            offset: f32,
            lo: f32,
        ) -> f32 {
            vector::log_scaled_clamped::<V>(x, floor, scale, offset, lo)
        }
        /// # Safety
        /// The CPU must support the module's target features; `dst` is as long as `src`.
        #[target_feature(enable = $features)]
        pub unsafe fn log_scaled_into(
            src: &[f32],
            dst: &mut [f32],
            floor: f32,
            scale: f32,
            offset: f32,
            lo: f32,
        ) -> f32 {
            vector::log_scaled_into::<V>(src, dst, floor, scale, offset, lo)
        }
        /// # Safety
        /// The CPU must support the module's target features.
        #[target_feature(enable = $features)]
        pub unsafe fn clamp_affine(x: &mut [f32], floor: f32, mul: f32, add: f32) {
            vector::clamp_affine::<V>(x, floor, mul, add)
        }
        /// # Safety
        /// The CPU must support the module's target features; sizes as
        /// [`super::lanes::spectra`] states.
        #[target_feature(enable = $features)]
        pub unsafe fn lane_spectra(
            plan: &super::lanes::LaneFft,
            frames: &[f32],
            stride: usize,
            s: &mut super::lanes::LaneScratch,
            power: Option<&mut [f32]>,
            magnitude: Option<&mut [f32]>,
        ) {
            super::lanes::spectra::<V>(plan, frames, stride, s, power, magnitude)
        }
        /// # Safety
        /// The CPU must support the module's target features; sizes as
        /// [`super::lanes::band_dots`] states.
        #[target_feature(enable = $features)]
        pub unsafe fn lane_band_dots(
            x: &[f32],
            spans: &[super::Span],
            weights: &[f32],
            out: &mut [f32],
        ) {
            super::lanes::band_dots::<V>(x, spans, weights, out)
        }
        /// # Safety
        /// The CPU must support the module's target features; `src` and `dst` hold
        /// `rows * cols` values.
        #[target_feature(enable = $features)]
        pub unsafe fn transpose(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
            vector::transpose::<V>(src, rows, cols, dst)
        }
        /// # Safety
        /// The CPU must support the module's target features.
        #[target_feature(enable = $features)]
        pub unsafe fn all_finite(x: &[f32]) -> bool {
            vector::all_finite::<V>(x)
        }
        /// # Safety
        /// The CPU must support the module's target features; sizes as
        /// [`super::Kernels::dense_rows`] checks.
        #[target_feature(enable = $features)]
        pub unsafe fn dense_rows(m: &[f32], n_in: usize, x: &[f32], cols: usize, out: &mut [f32]) {
            vector::dense_rows::<V>(m, n_in, x, cols, out)
        }
        /// # Safety
        /// The CPU must support the module's target features; sizes as
        /// [`super::Kernels::dense_block`] checks.
        #[target_feature(enable = $features)]
        pub unsafe fn dense_block(
            m: &[f32],
            n_in: usize,
            x: &[f32],
            w: usize,
            out: &mut [f32],
            out_stride: usize,
            count: usize,
        ) {
            vector::dense_block::<V>(m, n_in, x, w, out, out_stride, count)
        }
        /// Lanes of this ISA's register.
        pub const LANES: usize = <V as vector::Simd>::LANES;
    };
}
pub(crate) use entry_points;
