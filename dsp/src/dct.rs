//! The orthonormal DCT-II that turns log-mel frames into MFCCs (scipy `dct(type=2,
//! norm='ortho')`), as a precomputed `n_mfcc x n_mels` matrix, with optional liftering.

use crate::error::{invalid, DspError};
use crate::kernels::Kernels;

/// A precomputed truncated DCT-II matrix.
#[derive(Debug, Clone)]
pub struct DctPlan {
    n_in: usize,
    n_out: usize,
    matrix: Vec<f32>,
    k: Kernels,
}

impl DctPlan {
    /// Plans the first `n_out` orthonormal DCT-II coefficients of `n_in` inputs, multiplied by
    /// librosa's lifter `1 + (lifter / 2) sin(pi (k + 1) / lifter)` when `lifter > 0`.
    ///
    /// # Errors
    /// [`DspError::InvalidConfig`] if `n_out` is 0 or above `n_in`, or `lifter` is negative.
    pub fn new(n_in: usize, n_out: usize, lifter: f64) -> Result<Self, DspError> {
        if n_out == 0 || n_out > n_in {
            return Err(invalid(
                "n_mfcc",
                format!("{n_out} is not in 1..=n_mels ({n_in})"),
            ));
        }
        if !(lifter >= 0.0 && lifter.is_finite()) {
            return Err(invalid("lifter", format!("{lifter} must be >= 0")));
        }
        let n = n_in as f64;
        let mut matrix = Vec::with_capacity(n_in * n_out);
        for k in 0..n_out {
            let scale = if k == 0 {
                (1.0 / n).sqrt()
            } else {
                (2.0 / n).sqrt()
            };
            let lift = if lifter > 0.0 {
                1.0 + (lifter / 2.0) * (std::f64::consts::PI * (k + 1) as f64 / lifter).sin()
            } else {
                1.0
            };
            for i in 0..n_in {
                let c = (std::f64::consts::PI * k as f64 * (2 * i + 1) as f64 / (2.0 * n)).cos();
                matrix.push((scale * c * lift) as f32);
            }
        }
        Ok(DctPlan {
            n_in,
            n_out,
            matrix,
            k: Kernels::active(),
        })
    }

    /// The same plan computing with the given kernels.
    pub fn with_kernels(mut self, k: Kernels) -> Self {
        self.k = k;
        self
    }

    /// Number of coefficients produced per frame.
    pub fn n_out(&self) -> usize {
        self.n_out
    }

    /// Transforms `cols` frames laid out band-major (`input` is `n_in` rows of `cols`, as
    /// SIMD tiles and the sink's chunks are) into `n_out` rows of `cols`.
    ///
    /// # Panics
    /// If the slice lengths do not match the plan.
    pub fn process_band_major(&self, input: &[f32], cols: usize, out: &mut [f32]) {
        self.k.dense_rows(&self.matrix, self.n_in, input, cols, out);
    }

    /// Transforms one block of `w` frames held as `n_in` rows of `w` into the first `count`
    /// columns of a band-major output whose rows are `out_stride` apart (see
    /// [`Kernels::dense_block`]).
    ///
    /// # Panics
    /// As [`Kernels::dense_block`].
    pub fn process_block(
        &self,
        input: &[f32],
        w: usize,
        out: &mut [f32],
        out_stride: usize,
        count: usize,
    ) {
        self.k
            .dense_block(&self.matrix, self.n_in, input, w, out, out_stride, count);
    }

    /// Transforms one frame.
    ///
    /// # Panics
    /// If the slice lengths do not match the plan.
    pub fn process(&self, input: &[f32], out: &mut [f32]) {
        assert_eq!(input.len(), self.n_in);
        assert_eq!(out.len(), self.n_out);
        for (o, row) in out.iter_mut().zip(self.matrix.chunks_exact(self.n_in)) {
            *o = self.k.dot(row, input);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orthonormal_dct_matches_direct_sum_and_preserves_energy() {
        let n = 32;
        let x: Vec<f32> = (0..n).map(|i| ((i * 13) % 7) as f32 - 3.0).collect();
        let plan = DctPlan::new(n, n, 0.0).unwrap();
        let mut y = vec![f32::NAN; n];
        plan.process(&x, &mut y);
        for (k, &yk) in y.iter().enumerate() {
            let f = if k == 0 {
                (1.0 / (4.0 * n as f64)).sqrt()
            } else {
                (1.0 / (2.0 * n as f64)).sqrt()
            };
            let want: f64 = 2.0
                * f
                * (0..n)
                    .map(|i| {
                        x[i] as f64
                            * (std::f64::consts::PI * k as f64 * (2 * i + 1) as f64
                                / (2.0 * n as f64))
                                .cos()
                    })
                    .sum::<f64>();
            assert!((yk as f64 - want).abs() < 1e-4, "k {k}: {yk} vs {want}");
        }
        let ex: f32 = x.iter().map(|v| v * v).sum();
        let ey: f32 = y.iter().map(|v| v * v).sum();
        assert!((ex - ey).abs() < 1e-3 * ex);
    }

    #[test]
    fn too_many_coefficients_is_an_error() {
        assert!(DctPlan::new(40, 41, 0.0).is_err());
    }
}
