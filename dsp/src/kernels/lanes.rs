//! Frames in SIMD lanes: `LANES` frames at once, laid out `[index][frame]`, so every step of
//! the STFT is the same instruction on every lane with a broadcast constant and no shuffle:
//!
//! - the frames are transposed into lanes in register blocks ([`Simd::transpose_pairs`]) and
//!   windowed by a broadcast multiply, even samples as the real and odd samples as the
//!   imaginary part of an `n/2`-point complex signal;
//! - the complex FFT is a mixed-radix (4, 2, 3, 5) Stockham autosort over split real and
//!   imaginary arrays, each butterfly on `LANES` frames with broadcast twiddles;
//! - the real-FFT post-processing (splitting the `n/2`-point result into the `n/2 + 1` bins
//!   of the real signal) is fused with power and magnitude;
//! - sparse filter banks (mel) are broadcast-weight FMAs over the lanes ([`band_dots`]),
//!   whose `[band][frame]` result the vector log ([`super::Kernels::log_scaled`]) reads as it
//!   is.
//!
//! [`LaneFft`] holds the plan (the factors and every twiddle, computed in f64);
//! [`super::Kernels::lane_spectra`] runs it. Sizes whose half has a prime factor other than
//! 2, 3 and 5 have no plan: the per-frame path (realfft) computes them.

#![allow(unsafe_op_in_unsafe_fn)] // every fn here is unsafe only for its target features

use super::vector::Simd;
use super::Span;
use crate::memory::Aligned;

/// One pass of the Stockham FFT: `radix`-point butterflies over a sub-length `n_cur`.
#[derive(Debug, Clone)]
struct Stage {
    radix: usize,
    /// `n_cur / radix`: butterflies per sub-sequence.
    m: usize,
    /// Distance between elements of one sub-sequence (product of earlier radices).
    s: usize,
    /// For each `p < m` and `j` in `1..radix`: `exp(-2 pi i p j / n_cur)` as (re, im).
    twiddles: Vec<f32>,
}

/// A split complex array of lanes: element `e`'s real part at `re + e * step`, its imaginary
/// part at `im + e * step` (`step` is the lane count for a contiguous array, a multiple of it
/// for one sub-FFT's elements within the big array).
#[derive(Clone, Copy)]
struct Arr {
    re: *mut f32,
    im: *mut f32,
    step: usize,
}

impl Arr {
    /// Two contiguous arrays of `len` elements of `lanes` values (ping and pong, each real
    /// then imaginary) laid out from `base`, [`SKEW`] values apart.
    ///
    /// # Safety
    /// `base` holds `4 * (len * lanes + SKEW)` values.
    #[inline(always)]
    unsafe fn ping_pong(base: *mut f32, len: usize, lanes: usize) -> [Arr; 2] {
        let at = |i: usize| base.add(i * (len * lanes + SKEW));
        [0, 2].map(|i| Arr {
            re: at(i),
            im: at(i + 1),
            step: lanes,
        })
    }

    /// Elements `start, start + every, ...` of this array.
    #[inline(always)]
    unsafe fn every(self, start: usize, every: usize) -> Arr {
        Arr {
            re: self.re.add(start * self.step),
            im: self.im.add(start * self.step),
            step: self.step * every,
        }
    }
}

/// Bytes of scratch (both ping-pong buffers, real and imaginary parts) one sub-FFT may use to
/// run its remaining passes in L1 (half of a 32 KiB L1D, leaving room for twiddles). A plan
/// whose whole scratch fits runs every pass over the whole array; a larger one goes
/// depth-first as soon as its sub-FFTs fit (400 points at 16 lanes, 51 KiB: 8% faster than
/// breadth-first throughout; 512 points 20%, 2048 points 2x, on an AVX-512 Xeon).
const L1_BUDGET: usize = 16 << 10;

/// Values between the starts of consecutive small buffers beyond their length: a kilobyte
/// and a cache line, so that element `e` of one buffer and element `e` of the next differ in
/// their low 12 address bits (a store to one and a load from the other would otherwise look
/// like the same 4 KiB page offset to the CPU's memory disambiguation: "4K aliasing").
const SKEW: usize = 272;

/// A real FFT of `n` points over lanes (see the module documentation).
#[derive(Debug, Clone)]
pub struct LaneFft {
    n: usize,
    stages: Vec<Stage>,
    /// Passes run over the whole array before the rest runs depth-first, one independent
    /// sub-FFT at a time (see [`spectra`]).
    breadth: usize,
    /// Values of the small buffers the depth-first passes work in (two ping-pong split
    /// complex arrays of one sub-FFT); 0 when every pass is breadth-first.
    local: usize,
    /// For `k < n / 2`: `exp(-2 pi i k / n)` as (re, im), for the real-FFT split.
    post: Vec<f32>,
    window: Vec<f32>,
    lanes: usize,
}

/// Buffers for [`LaneFft`]: two split complex arrays (ping and pong) of `n / 2` elements of
/// `lanes` values.
#[derive(Debug, Clone)]
pub struct LaneScratch {
    /// The big arrays (ping re, ping im, pong re, pong im), [`SKEW`] values apart.
    big: Aligned,
    /// The depth-first passes' buffers ([`LaneFft::local`] values).
    local: Aligned,
}

/// Radices for `m` points, 4 first, or `None` when another prime divides it.
fn factor(mut m: usize) -> Option<Vec<usize>> {
    let mut out = Vec::new();
    for r in [4, 2, 3, 5] {
        while m.is_multiple_of(r) && m > 1 {
            out.push(r);
            m /= r;
        }
    }
    (m == 1).then_some(out)
}

impl LaneFft {
    /// A plan for `n`-point frames (even `n`, half of it a product of 2, 3 and 5) over
    /// `lanes` lanes, windowed by `window` (`n` values); `None` for other sizes.
    pub fn new(n: usize, window: &[f32], lanes: usize) -> Option<LaneFft> {
        if n < 4 || !n.is_multiple_of(2) || window.len() != n || lanes == 0 {
            return None;
        }
        let m = n / 2;
        let radices = factor(m)?;
        let mut stages = Vec::with_capacity(radices.len());
        let (mut n_cur, mut s) = (m, 1);
        for &radix in &radices {
            let sub = n_cur / radix;
            let mut twiddles = Vec::with_capacity(sub * (radix - 1) * 2);
            for p in 0..sub {
                for j in 1..radix {
                    let a = -2.0 * std::f64::consts::PI * (p * j) as f64 / n_cur as f64;
                    twiddles.push(a.cos() as f32);
                    twiddles.push(a.sin() as f32);
                }
            }
            stages.push(Stage {
                radix,
                m: sub,
                s,
                twiddles,
            });
            n_cur = sub;
            s *= radix;
        }
        // After pass k the array holds `s_k` (the product of the first k radices) independent
        // sub-FFTs of `m / s_k` points, interleaved; the first k with a sub-FFT that fits the
        // L1 budget is where the passes go depth-first.
        let bytes = |k: usize| {
            let s_k: usize = radices[..k].iter().product();
            m / s_k * lanes * 4 * 4
        };
        let passes = radices.len();
        let breadth = if bytes(0) <= L1_BUDGET {
            passes
        } else {
            match (0..passes).find(|&k| bytes(k) <= L1_BUDGET) {
                // A sub-FFT's first and last remaining passes are its way in and out of the
                // small buffers: one pass alone stays over the whole array.
                Some(k) if k + 1 == passes => passes.saturating_sub(2),
                Some(k) => k,
                None => passes,
            }
        };
        let subs: usize = radices[..breadth].iter().product();
        let local = if breadth < passes {
            4 * (m / subs * lanes + SKEW)
        } else {
            0
        };
        let post = (0..m)
            .flat_map(|k| {
                let a = -2.0 * std::f64::consts::PI * k as f64 / n as f64;
                [a.cos() as f32, a.sin() as f32]
            })
            .collect();
        Some(LaneFft {
            n,
            stages,
            breadth,
            local,
            post,
            window: window.to_vec(),
            lanes,
        })
    }

    /// Frame length.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Frames per call.
    pub fn lanes(&self) -> usize {
        self.lanes
    }

    /// Bins per frame, `n / 2 + 1`.
    pub fn n_bins(&self) -> usize {
        self.n / 2 + 1
    }

    /// Buffers for this plan.
    pub fn make_scratch(&self) -> LaneScratch {
        let (big, local) = self.scratch_sizes();
        LaneScratch {
            big: Aligned::zeroed(big),
            local: Aligned::zeroed(local),
        }
    }

    /// The values of a scratch's big arrays and local buffers for this plan.
    fn scratch_sizes(&self) -> (usize, usize) {
        (4 * (self.n / 2 * self.lanes + SKEW), self.local)
    }

    /// Whether `s` has this plan's sizes (the FFT writes through raw pointers sized by the
    /// plan: a scratch made by a smaller plan must not reach it).
    pub fn fits(&self, s: &LaneScratch) -> bool {
        self.scratch_sizes() == (s.big.len(), s.local.len())
    }
}

/// A complex value per lane.
#[derive(Clone, Copy)]
struct C<V> {
    re: V,
    im: V,
}

impl<V: Simd> C<V> {
    #[inline(always)]
    unsafe fn load(re: *const f32, im: *const f32, at: usize) -> Self {
        C {
            re: V::load(re.add(at)),
            im: V::load(im.add(at)),
        }
    }
    #[inline(always)]
    unsafe fn store(self, re: *mut f32, im: *mut f32, at: usize) {
        self.re.store(re.add(at));
        self.im.store(im.add(at));
    }
    #[inline(always)]
    unsafe fn add(self, o: Self) -> Self {
        C {
            re: self.re.add(o.re),
            im: self.im.add(o.im),
        }
    }
    #[inline(always)]
    unsafe fn sub(self, o: Self) -> Self {
        C {
            re: self.re.sub(o.re),
            im: self.im.sub(o.im),
        }
    }
    /// `self * (wr + i wi)` for a broadcast twiddle.
    #[inline(always)]
    unsafe fn twiddle(self, wr: V, wi: V) -> Self {
        C {
            re: self.re.mul(wr).sub(self.im.mul(wi)),
            im: self.re.mul_add(wi, self.im.mul(wr)),
        }
    }
    /// `self * -i`.
    #[inline(always)]
    unsafe fn neg_i(self) -> Self {
        C {
            re: self.im,
            im: V::splat(0.0).sub(self.re),
        }
    }
    /// `self * s` for a broadcast real `s`.
    #[inline(always)]
    unsafe fn scale(self, s: V) -> Self {
        C {
            re: self.re.mul(s),
            im: self.im.mul(s),
        }
    }
    /// `self + o * s` for a broadcast real `s`.
    #[inline(always)]
    unsafe fn add_scaled(self, o: Self, s: V) -> Self {
        C {
            re: o.re.mul_add(s, self.re),
            im: o.im.mul_add(s, self.im),
        }
    }
}

/// The `r`-point DFT of `a` (forward, `exp(-2 pi i jk / r)`), in place, for r in 2..=5.
#[inline(always)]
unsafe fn dft<V: Simd>(a: &mut [C<V>; 5], r: usize) {
    match r {
        2 => {
            let (x, y) = (a[0], a[1]);
            a[0] = x.add(y);
            a[1] = x.sub(y);
        }
        3 => {
            let s = V::splat(0.866_025_4); // sin(2 pi / 3)
            let b = a[1].add(a[2]);
            let t = a[0].add_scaled(b, V::splat(-0.5));
            let u = a[1].sub(a[2]).neg_i().scale(s);
            a[0] = a[0].add(b);
            a[1] = t.add(u);
            a[2] = t.sub(u);
        }
        4 => {
            let t0 = a[0].add(a[2]);
            let t1 = a[0].sub(a[2]);
            let t2 = a[1].add(a[3]);
            let t3 = a[1].sub(a[3]).neg_i();
            a[0] = t0.add(t2);
            a[1] = t1.add(t3);
            a[2] = t0.sub(t2);
            a[3] = t1.sub(t3);
        }
        5 => {
            let (c1, c2) = (V::splat(0.309_017), V::splat(-0.809_017));
            let (s1, s2) = (V::splat(0.951_056_5), V::splat(0.587_785_24));
            let b1 = a[1].add(a[4]);
            let b2 = a[2].add(a[3]);
            let d1 = a[1].sub(a[4]).neg_i();
            let d2 = a[2].sub(a[3]).neg_i();
            let t1 = a[0].add_scaled(b1, c1).add_scaled(b2, c2);
            let t2 = a[0].add_scaled(b1, c2).add_scaled(b2, c1);
            let u1 = d1.scale(s1).add_scaled(d2, s2);
            let u2 = d1.scale(s2).add_scaled(d2, V::splat(0.0).sub(s1));
            a[0] = a[0].add(b1).add(b2);
            a[1] = t1.add(u1);
            a[4] = t1.sub(u1);
            a[2] = t2.add(u2);
            a[3] = t2.sub(u2);
        }
        _ => unreachable!("radix {r}"),
    }
}

/// One Stockham pass, specialised for its radix, over sub-sequence stride `s` (`st.s` for a
/// pass over the whole array; `st.s` divided by the number of sub-FFTs for a pass within one
/// of them), from `x` into `y`.
#[inline(always)]
unsafe fn stage<V: Simd>(st: &Stage, s: usize, x: Arr, y: Arr) {
    match st.radix {
        2 => stage_r::<V, 2>(st, s, x, y),
        3 => stage_r::<V, 3>(st, s, x, y),
        4 => stage_r::<V, 4>(st, s, x, y),
        _ => stage_r::<V, 5>(st, s, x, y),
    }
}

/// One Stockham pass: `y[q + s (r p + j)] = w^(p j) * DFT_r(x[q + s (p + k m)])_j`. It reads
/// and writes only positions congruent to `q` modulo `s`, so for a later pass (whose `s` is a
/// multiple of an earlier pass's) the `q` of one residue class are an independent sub-FFT.
/// Offsets are computed once per butterfly group `p` and stepped along `q`: no multiply in
/// the inner loop.
#[inline(always)]
unsafe fn stage_r<V: Simd, const R: usize>(st: &Stage, s: usize, x: Arr, y: Arr) {
    let m = st.m;
    let zero = C {
        re: V::splat(0.0),
        im: V::splat(0.0),
    };
    let mut a = [zero; 5];
    let (mut xo, mut yo) = ([0usize; 5], [0usize; 5]);
    for p in 0..m {
        let w = twiddles::<V, R>(st, p);
        for k in 0..R {
            xo[k] = s * (p + k * m) * x.step;
            yo[k] = s * (R * p + k) * y.step;
        }
        for q in 0..s {
            let (xq, yq) = (q * x.step, q * y.step);
            for (k, ak) in a.iter_mut().enumerate().take(R) {
                *ak = C::load(x.re, x.im, xo[k] + xq);
            }
            butterfly::<V, R>(&mut a, &w, p == 0, |j, v| v.store(y.re, y.im, yo[j] + yq));
        }
    }
}

/// The broadcast twiddles of butterfly `p` of a pass (`w[j]` for `j` in `1..R`).
#[inline(always)]
unsafe fn twiddles<V: Simd, const R: usize>(st: &Stage, p: usize) -> [(V, V); 5] {
    let tw = st.twiddles.as_ptr().add(p * (R - 1) * 2);
    let mut w = [(V::splat(1.0), V::splat(0.0)); 5];
    for (j, wj) in w.iter_mut().enumerate().take(R).skip(1) {
        *wj = (
            V::splat(*tw.add(2 * (j - 1))),
            V::splat(*tw.add(2 * (j - 1) + 1)),
        );
    }
    w
}

/// The `R`-point DFT of `a`, output `j` times `w[j]` (not for the first butterfly, `first`,
/// whose twiddles are 1), each handed to `out(j, value)`.
#[inline(always)]
unsafe fn butterfly<V: Simd, const R: usize>(
    a: &mut [C<V>; 5],
    w: &[(V, V); 5],
    first: bool,
    mut out: impl FnMut(usize, C<V>),
) {
    dft(a, R);
    out(0, a[0]);
    for j in 1..R {
        out(
            j,
            if first {
                a[j]
            } else {
                a[j].twiddle(w[j].0, w[j].1)
            },
        );
    }
}

/// The first Stockham pass fused with the transposition into lanes and the window: for each
/// run of `LANES / 2` butterflies, the `R` blocks of `LANES` samples they read (a `LANES x
/// LANES` register transpose each) go to a small staging area in L1, not through the big
/// array (which, at 2048 points and 16 lanes, is 64 KiB a part, served from L2).
///
/// # Safety
/// As [`spectra`]; `st` is the plan's first pass (`s` = 1), its `m` a multiple of
/// `LANES / 2`; `y` holds `n / 2` elements.
#[inline(always)]
unsafe fn first_pass<V: Simd, const R: usize>(
    plan: &LaneFft,
    st: &Stage,
    frames: &[f32],
    stride: usize,
    y: Arr,
) {
    let l = V::LANES;
    let half = l / 2;
    let (src, win) = (frames.as_ptr(), plan.window.as_ptr());
    // `R` blocks of `half` complex elements, split real and imaginary.
    let mut stage_re = [0.0f32; 5 * 8 * 16];
    let mut stage_im = [0.0f32; 5 * 8 * 16];
    let (sr, si) = (stage_re.as_mut_ptr(), stage_im.as_mut_ptr());
    let mut rows = [V::splat(0.0); 16];
    let zero = C {
        re: V::splat(0.0),
        im: V::splat(0.0),
    };
    let mut a = [zero; 5];
    let m = st.m;
    for p0 in (0..m).step_by(half) {
        for k in 0..R {
            let j0 = 2 * (p0 + k * m);
            for (f, row) in rows.iter_mut().enumerate().take(l) {
                *row = V::load(src.add(f * stride + j0));
            }
            super::vector::transpose_regs::<V>(&mut rows);
            for (t, row) in rows.iter().enumerate().take(l) {
                let v = row.mul(V::splat(*win.add(j0 + t)));
                let dst = if t % 2 == 0 { sr } else { si };
                v.store(dst.add((k * half + t / 2) * l));
            }
        }
        for i in 0..half {
            let p = p0 + i;
            let w = twiddles::<V, R>(st, p);
            for (k, ak) in a.iter_mut().enumerate().take(R) {
                *ak = C::load(sr, si, (k * half + i) * l);
            }
            let at = R * p * y.step;
            butterfly::<V, R>(&mut a, &w, p == 0, |j, v| {
                v.store(y.re, y.im, at + j * y.step)
            });
        }
    }
}

/// Power and/or magnitude of `LANES` windowed frames: frame `f` is
/// `frames[f * stride..][..n]`; `power` and `magnitude` (when given) get `n / 2 + 1` rows of
/// `LANES` values, `[bin][frame]`.
///
/// # Safety
/// The ISA's target features; `frames` holds `(LANES - 1) * stride + n` values; the plan was
/// made for `LANES` lanes; the outputs hold `(n / 2 + 1) * LANES` values.
#[inline(always)]
pub(crate) unsafe fn spectra<V: Simd>(
    plan: &LaneFft,
    frames: &[f32],
    stride: usize,
    s: &mut LaneScratch,
    power: Option<&mut [f32]>,
    magnitude: Option<&mut [f32]>,
) {
    let l = V::LANES;
    debug_assert_eq!(plan.lanes, l);
    let m = plan.n / 2;
    let mut bufs = Arr::ping_pong(s.big.as_mut_ptr(), m, l);
    let mut passes = &plan.stages[..];
    match passes.first() {
        Some(first) if plan.breadth > 0 && l >= 2 && first.m.is_multiple_of(l / 2) => {
            let y = bufs[0];
            match first.radix {
                2 => first_pass::<V, 2>(plan, first, frames, stride, y),
                3 => first_pass::<V, 3>(plan, first, frames, stride, y),
                4 => first_pass::<V, 4>(plan, first, frames, stride, y),
                _ => first_pass::<V, 5>(plan, first, frames, stride, y),
            }
            passes = &passes[1..];
        }
        _ => transpose_in::<V>(plan, frames, stride, bufs[0]),
    }
    // The FFT, ping-ponging between the two buffers: the first passes over the whole array
    // (from L2 at large sizes), then each independent sub-FFT through the remaining passes in
    // small contiguous buffers that stay in L1 (2048 points: 2 passes over 256 KiB instead
    // of 5). A sub-FFT's elements lie `subs` elements apart in the big array: a power-of-two
    // stride of a kilobyte or more, which maps them all to a few L1 sets, so they are not
    // worked on in place: the first remaining pass reads them from there, the last writes them
    // back (to the buffer they came from: no other sub-FFT touches their positions).
    let (whole, rest) = passes.split_at(plan.breadth - (plan.stages.len() - passes.len()));
    for st in whole {
        stage::<V>(st, st.s, bufs[0], bufs[1]);
        bufs.swap(0, 1);
    }
    if let [first, middle @ .., last] = rest {
        let subs = first.s;
        let mut locs = Arr::ping_pong(s.local.as_mut_ptr(), m / subs, l);
        for q0 in 0..subs {
            let far = bufs[0].every(q0, subs);
            stage::<V>(first, first.s / subs, far, locs[0]);
            for st in middle {
                stage::<V>(st, st.s / subs, locs[0], locs[1]);
                locs.swap(0, 1);
            }
            stage::<V>(last, last.s / subs, locs[0], far);
        }
    }
    let (zr, zi) = (bufs[0].re as *const f32, bufs[0].im as *const f32);
    // Split into the real signal's bins, fused with power and magnitude.
    let pw = power.map(|p| p.as_mut_ptr());
    let mg = magnitude.map(|p| p.as_mut_ptr());
    let emit = |k: usize, xr: V, xi: V| {
        let p = xr.mul_add(xr, xi.mul(xi));
        if let Some(pw) = pw {
            p.store(pw.add(k * l));
        }
        if let Some(mg) = mg {
            p.sqrt().store(mg.add(k * l));
        }
    };
    let z0 = C::<V>::load(zr, zi, 0);
    emit(0, z0.re.add(z0.im), V::splat(0.0));
    emit(m, z0.re.sub(z0.im), V::splat(0.0));
    let half = V::splat(0.5);
    for k in 1..m {
        let a = C::<V>::load(zr, zi, k * l);
        let c = C::<V>::load(zr, zi, (m - k) * l);
        let (er, ei) = (a.re.add(c.re).mul(half), a.im.sub(c.im).mul(half));
        let (or, oi) = (a.im.add(c.im).mul(half), c.re.sub(a.re).mul(half));
        let (wr, wi) = (
            V::splat(*plan.post.get_unchecked(2 * k)),
            V::splat(*plan.post.get_unchecked(2 * k + 1)),
        );
        let xr = or.mul_add(wr, er).sub(oi.mul(wi));
        let xi = oi.mul_add(wr, or.mul_add(wi, ei));
        emit(k, xr, xi);
    }
}

/// The frames transposed into lanes (`[sample][frame]`, even samples as the real and odd
/// samples as the imaginary part), windowed, into `y`: `LANES x LANES` register blocks, the
/// tail scalar.
#[inline(always)]
unsafe fn transpose_in<V: Simd>(plan: &LaneFft, frames: &[f32], stride: usize, y: Arr) {
    let (l, n) = (V::LANES, plan.n);
    let (src, win) = (frames.as_ptr(), plan.window.as_ptr());
    let mut rows = [V::splat(0.0); 16];
    let mut j0 = 0;
    while j0 + l <= n {
        for (f, row) in rows.iter_mut().enumerate().take(l) {
            *row = V::load(src.add(f * stride + j0));
        }
        super::vector::transpose_regs::<V>(&mut rows);
        for (t, row) in rows.iter().enumerate().take(l) {
            let j = j0 + t;
            let v = row.mul(V::splat(*win.add(j)));
            let dst = if j % 2 == 0 { y.re } else { y.im };
            v.store(dst.add(j / 2 * y.step));
        }
        j0 += l;
    }
    for j in j0..n {
        let dst = if j % 2 == 0 { y.re } else { y.im };
        for f in 0..l {
            *dst.add(j / 2 * y.step + f) = *src.add(f * stride + j) * *win.add(j);
        }
    }
}

/// `out[band][frame] = sum_i w_i * x[start + i][frame]`: each weight broadcast over the
/// lanes, one FMA per weight for `LANES` frames.
///
/// # Safety
/// The ISA's target features; spans lie within `x` (rows of `LANES`) and `weights`; `out`
/// holds `spans.len() * LANES` values.
#[inline(always)]
pub(crate) unsafe fn band_dots<V: Simd>(
    x: &[f32],
    spans: &[Span],
    weights: &[f32],
    out: &mut [f32],
) {
    let l = V::LANES;
    let (px, pw, po) = (x.as_ptr(), weights.as_ptr(), out.as_mut_ptr());
    for (b, s) in spans.iter().enumerate() {
        let (mut a0, mut a1) = (V::splat(0.0), V::splat(0.0));
        let mut i = 0;
        while i + 2 <= s.len {
            a0 = V::splat(*pw.add(s.offset + i)).mul_add(V::load(px.add((s.start + i) * l)), a0);
            a1 = V::splat(*pw.add(s.offset + i + 1))
                .mul_add(V::load(px.add((s.start + i + 1) * l)), a1);
            i += 2;
        }
        if i < s.len {
            a0 = V::splat(*pw.add(s.offset + i)).mul_add(V::load(px.add((s.start + i) * l)), a0);
        }
        a0.add(a1).store(po.add(b * l));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factors() {
        assert_eq!(factor(200), Some(vec![4, 2, 5, 5]));
        assert_eq!(factor(256), Some(vec![4, 4, 4, 4]));
        assert_eq!(factor(1024), Some(vec![4, 4, 4, 4, 4]));
        assert_eq!(factor(3 * 5 * 8), Some(vec![4, 2, 3, 5]));
        assert_eq!(factor(7 * 4), None);
        assert!(LaneFft::new(400, &[1.0; 400], 16).is_some());
        assert!(LaneFft::new(2 * 7, &[1.0; 14], 16).is_none());
        assert!(LaneFft::new(401, &[1.0; 401], 16).is_none());
    }
}
