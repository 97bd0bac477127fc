//! Plain-Rust kernels: the reference for the SIMD paths and the path `KLIO_DSP_ISA=scalar`
//! forces. Same names and signatures as the vector entry points; callers check lengths.

/// `out = a * b`.
pub fn mul(a: &[f32], b: &[f32], out: &mut [f32]) {
    for ((o, x), y) in out.iter_mut().zip(a).zip(b) {
        *o = x * y;
    }
}

/// `out = re^2 + im^2`.
pub fn power(c: &[f32], out: &mut [f32]) {
    for (o, p) in out.iter_mut().zip(c.chunks_exact(2)) {
        *o = p[0] * p[0] + p[1] * p[1];
    }
}

/// `out = sqrt(re^2 + im^2)`.
pub fn magnitude(c: &[f32], out: &mut [f32]) {
    for (o, p) in out.iter_mut().zip(c.chunks_exact(2)) {
        *o = (p[0] * p[0] + p[1] * p[1]).sqrt();
    }
}

/// `sum(a * b)`.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Sparse rows: `out[r] = dot(x[span], weights[span])`.
pub fn band_dots(x: &[f32], spans: &[super::Span], weights: &[f32], out: &mut [f32]) {
    for (o, s) in out.iter_mut().zip(spans) {
        *o = dot(
            &x[s.start..s.start + s.len],
            &weights[s.offset..s.offset + s.len],
        );
    }
}

/// `sum(x)`.
pub fn sum(x: &[f32]) -> f32 {
    x.iter().sum()
}

/// `max(x)`.
pub fn max(x: &[f32]) -> f32 {
    x.iter().copied().fold(f32::NEG_INFINITY, f32::max)
}

/// Whether every value is finite (neither NaN nor infinite).
pub fn all_finite(x: &[f32]) -> bool {
    x.iter().all(|v| v.is_finite())
}

/// `sum(w * (f - c)^2)`.
pub fn weighted_sq_dev(w: &[f32], f: &[f32], c: f32) -> f32 {
    w.iter()
        .zip(f)
        .map(|(w, f)| {
            let d = f - c;
            w * d * d
        })
        .sum()
}

/// `x = max(scale * ln(max(x, floor)) + offset, lo)`, returning the largest result.
pub fn log_scaled_clamped(x: &mut [f32], floor: f32, scale: f32, offset: f32, lo: f32) -> f32 {
    let mut m = f32::NEG_INFINITY;
    for v in x.iter_mut() {
        *v = (scale * v.max(floor).ln() + offset).max(lo);
        m = m.max(*v);
    }
    m
}

/// `dst = max(scale * ln(max(src, floor)) + offset, lo)`, returning the largest result.
pub fn log_scaled_into(
    src: &[f32],
    dst: &mut [f32],
    floor: f32,
    scale: f32,
    offset: f32,
    lo: f32,
) -> f32 {
    let mut m = f32::NEG_INFINITY;
    for (d, s) in dst.iter_mut().zip(src) {
        *d = (scale * s.max(floor).ln() + offset).max(lo);
        m = m.max(*d);
    }
    m
}

/// `x = max(x, floor) * mul + add`.
pub fn clamp_affine(x: &mut [f32], floor: f32, mul: f32, add: f32) {
    for v in x.iter_mut() {
        *v = v.max(floor) * mul + add;
    }
}

/// `dst[c * rows + r] = src[r * cols + c]`, in 32 x 32 blocks so both sides stay in cache.
pub fn transpose(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    const B: usize = 32;
    for r0 in (0..rows).step_by(B) {
        for c0 in (0..cols).step_by(B) {
            for r in r0..(r0 + B).min(rows) {
                let row = &src[r * cols..(r + 1) * cols];
                for c in c0..(c0 + B).min(cols) {
                    dst[c * rows + r] = row[c];
                }
            }
        }
    }
}

/// `out[o * out_stride + t] = sum_i m[o * n_in + i] * x[i * w + t]` for `t < count`.
pub fn dense_block(
    m: &[f32],
    n_in: usize,
    x: &[f32],
    w: usize,
    out: &mut [f32],
    out_stride: usize,
    count: usize,
) {
    for (o, row) in m.chunks_exact(n_in).enumerate() {
        let dst = &mut out[o * out_stride..][..count];
        dst.fill(0.0);
        for (i, &wi) in row.iter().enumerate() {
            for (d, v) in dst.iter_mut().zip(&x[i * w..][..count]) {
                *d = wi.mul_add(*v, *d);
            }
        }
    }
}

/// `out[o * cols + t] = sum_i m[o * n_in + i] * x[i * cols + t]`: [`dense_block`] over every
/// column.
pub fn dense_rows(m: &[f32], n_in: usize, x: &[f32], cols: usize, out: &mut [f32]) {
    dense_block(m, n_in, x, cols, out, cols, cols);
}
