//! The hot loops of klio-dsp, written once per instruction set and chosen once at run time.
//!
//! [`Kernels`] is a small `Copy` handle naming the instruction set in use; each method checks
//! slice lengths (safe API) and calls the matching implementation: [`scalar`] (plain Rust, the
//! reference every SIMD path is tested against), AVX2+FMA and AVX-512F on x86-64, NEON on
//! aarch64. The vector paths share one generic body per kernel ([`vector`]), instantiated for
//! each register type, so the algorithms exist twice (scalar and vector), not once per ISA.
//!
//! The choice is made once per process: the best set the CPU supports, unless `KLIO_DSP_ISA`
//! names another (`scalar`, `avx2`, `avx512`, `neon`); a set the CPU lacks falls back to the
//! best it has. FFTs are not here: realfft/rustfft pick their own SIMD at run time.

use std::sync::OnceLock;

pub use lanes::{LaneFft, LaneScratch};

pub mod lanes;
pub mod scalar;
mod vector;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "aarch64")]
mod neon;

/// Environment variable that overrides the instruction set (`scalar`, `avx2`, `avx512`, `neon`).
pub const ISA_ENV: &str = "KLIO_DSP_ISA";

/// An instruction set the kernels are written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// Plain Rust; the compiler may still auto-vectorise with the baseline target features.
    Scalar,
    /// x86-64 AVX2 with FMA, 8 lanes.
    Avx2,
    /// x86-64 AVX-512F, 16 lanes.
    Avx512,
    /// aarch64 Advanced SIMD, 4 lanes.
    Neon,
}

impl Isa {
    /// The name used by `KLIO_DSP_ISA` and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Neon => "neon",
        }
    }

    /// Parses a name accepted by `KLIO_DSP_ISA`.
    pub fn from_name(name: &str) -> Option<Isa> {
        [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Neon]
            .into_iter()
            .find(|i| i.name() == name.trim().to_ascii_lowercase())
    }

    /// Whether this CPU can run this set.
    pub fn supported(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Every set this CPU supports, scalar first.
    pub fn all_supported() -> Vec<Isa> {
        [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Neon]
            .into_iter()
            .filter(|i| i.supported())
            .collect()
    }

    /// The fastest set this CPU supports.
    pub fn best() -> Isa {
        *Isa::all_supported().last().unwrap_or(&Isa::Scalar)
    }
}

/// One row of a sparse matrix whose rows are contiguous runs (a triangular filter band):
/// `weights[offset..offset + len]` multiply `x[start..start + len]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// First input index.
    pub start: usize,
    /// Number of weights.
    pub len: usize,
    /// Position of the first weight in the shared weight array.
    pub offset: usize,
}

/// Rows of contiguous runs sharing one weight array, checked once at construction so
/// [`Kernels::band_dots`] only has to check the input length.
#[derive(Debug, Clone, PartialEq)]
pub struct SparseRows {
    spans: Vec<Span>,
    weights: Vec<f32>,
    min_input: usize,
}

impl SparseRows {
    /// Rows from spans into `weights`.
    ///
    /// # Panics
    /// If a span reaches past `weights`.
    pub fn new(spans: Vec<Span>, weights: Vec<f32>) -> Self {
        assert!(spans.iter().all(|s| s.offset + s.len <= weights.len()));
        let min_input = spans.iter().map(|s| s.start + s.len).max().unwrap_or(0);
        SparseRows {
            spans,
            weights,
            min_input,
        }
    }

    /// The rows.
    pub fn spans(&self) -> &[Span] {
        &self.spans
    }

    /// The weights of row `r`.
    pub fn row(&self, r: usize) -> &[f32] {
        let s = self.spans[r];
        &self.weights[s.offset..s.offset + s.len]
    }
}

/// A handle on the kernels of one instruction set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kernels {
    isa: Isa,
}

static ACTIVE: OnceLock<Kernels> = OnceLock::new();

/// Runs `$body` with the implementation module for the handle's ISA bound to `$m`; the
/// scalar kernels run `$scalar` (by default `$body` with the scalar module).
macro_rules! dispatch {
    ($self:expr, $m:ident => $body:expr) => {
        dispatch!($self, $m => $body, scalar => {
            use scalar as $m;
            $body
        })
    };
    ($self:expr, $m:ident => $body:expr, scalar => $scalar:expr) => {
        match $self.isa {
            #[cfg(target_arch = "x86_64")]
            // Safety: `Kernels::new` only hands out Avx2 when the CPU has AVX2 and FMA.
            Isa::Avx2 => unsafe {
                use avx2 as $m;
                $body
            },
            #[cfg(target_arch = "x86_64")]
            // Safety: `Kernels::new` only hands out Avx512 when the CPU has AVX-512F.
            Isa::Avx512 => unsafe {
                use avx512 as $m;
                $body
            },
            #[cfg(target_arch = "aarch64")]
            // Safety: `Kernels::new` only hands out Neon when the CPU has NEON.
            Isa::Neon => unsafe {
                use neon as $m;
                $body
            },
            _ => $scalar,
        }
    };
}

impl Kernels {
    /// The kernels for `isa`, or `None` if this CPU cannot run them.
    pub fn new(isa: Isa) -> Option<Kernels> {
        isa.supported().then_some(Kernels { isa })
    }

    /// The plain-Rust kernels.
    pub fn scalar() -> Kernels {
        Kernels { isa: Isa::Scalar }
    }

    /// The process-wide choice: `KLIO_DSP_ISA` if set and supported, else the best set.
    pub fn active() -> Kernels {
        *ACTIVE.get_or_init(|| {
            let wanted = std::env::var(ISA_ENV).ok().and_then(|v| Isa::from_name(&v));
            let isa = match wanted {
                Some(i) if i.supported() => i,
                _ => Isa::best(),
            };
            Kernels { isa }
        })
    }

    /// The instruction set these kernels use.
    pub fn isa(self) -> Isa {
        self.isa
    }

    /// `out[i] = a[i] * b[i]` (windowing).
    ///
    /// # Panics
    /// If the lengths differ.
    pub fn mul(self, a: &[f32], b: &[f32], out: &mut [f32]) {
        assert!(a.len() == b.len() && a.len() == out.len());
        dispatch!(self, m => m::mul(a, b, out))
    }

    /// `out[k] = re^2 + im^2` for interleaved complex input (`c.len() == 2 * out.len()`).
    ///
    /// # Panics
    /// If the lengths do not match.
    pub fn power(self, c: &[f32], out: &mut [f32]) {
        assert_eq!(c.len(), 2 * out.len());
        dispatch!(self, m => m::power(c, out))
    }

    /// `out[k] = sqrt(re^2 + im^2)` for interleaved complex input.
    ///
    /// # Panics
    /// If the lengths do not match.
    pub fn magnitude(self, c: &[f32], out: &mut [f32]) {
        assert_eq!(c.len(), 2 * out.len());
        dispatch!(self, m => m::magnitude(c, out))
    }

    /// `sum(a[i] * b[i])`.
    ///
    /// # Panics
    /// If the lengths differ.
    pub fn dot(self, a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        dispatch!(self, m => m::dot(a, b))
    }

    /// `out[r] = dot(x[span.start..][..span.len], weights[span.offset..][..span.len])` for
    /// every span: a sparse matrix-vector product (mel and Kaldi filter banks).
    ///
    /// # Panics
    /// If `out` does not have one value per row or a row reaches past `x`.
    pub fn band_dots(self, x: &[f32], rows: &SparseRows, out: &mut [f32]) {
        assert_eq!(rows.spans.len(), out.len());
        assert!(rows.min_input <= x.len());
        let (spans, weights) = (&rows.spans[..], &rows.weights[..]);
        dispatch!(self, m => m::band_dots(x, spans, weights, out))
    }

    /// `sum(x[i])`.
    pub fn sum(self, x: &[f32]) -> f32 {
        dispatch!(self, m => m::sum(x))
    }

    /// Transposes `src`, `rows` rows of `cols` values (row-major), into `dst`, `cols` rows
    /// of `rows`: `dst[c * rows + r] = src[r * cols + c]`. How frame-major features become
    /// librosa's `[dim][frames]`.
    ///
    /// # Panics
    /// If `src` or `dst` does not hold `rows * cols` values.
    pub fn transpose(self, src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
        let n = rows.checked_mul(cols).expect("rows * cols overflows");
        assert_eq!(src.len(), n);
        assert_eq!(dst.len(), n);
        dispatch!(self, m => m::transpose(src, rows, cols, dst))
    }

    /// A dense `n_out x n_in` matrix `m` (row-major) times `x`, `n_in` rows of `cols`
    /// (band-major): `out[o * cols + t] = sum_i m[o * n_in + i] * x[i * cols + t]`. How a DCT
    /// runs over a band-major tile of frames.
    ///
    /// # Panics
    /// If `m` is not a whole number of rows of `n_in`, or `x` or `out` is not `n_in * cols`
    /// or `n_out * cols` values.
    pub fn dense_rows(self, m: &[f32], n_in: usize, x: &[f32], cols: usize, out: &mut [f32]) {
        assert!(n_in > 0 && m.len().is_multiple_of(n_in));
        assert_eq!(x.len(), n_in * cols);
        assert_eq!(out.len(), m.len() / n_in * cols);
        dispatch!(self, k => k::dense_rows(m, n_in, x, cols, out))
    }

    /// [`Self::dense_rows`] for one block of frames held as `n_in` rows of `w` (`w` a multiple
    /// of 16, so of every ISA's lanes), into the first `count` columns of a band-major output
    /// whose rows are `out_stride` apart: `out[o * out_stride + t] = sum_i m[o * n_in + i] *
    /// x[i * w + t]` for `t < count`. Nothing else of `out` is written.
    ///
    /// # Panics
    /// If `m` is not a whole number of rows of `n_in`, `x` is not `n_in * w` values, `w` is
    /// not a multiple of 16, `count > w`, `count > out_stride`, or `out` is too short.
    #[allow(clippy::too_many_arguments)]
    pub fn dense_block(
        self,
        m: &[f32],
        n_in: usize,
        x: &[f32],
        w: usize,
        out: &mut [f32],
        out_stride: usize,
        count: usize,
    ) {
        assert!(n_in > 0 && m.len().is_multiple_of(n_in));
        assert!(w.is_multiple_of(16) && count <= w && count <= out_stride);
        assert_eq!(x.len(), n_in * w);
        let n_out = m.len() / n_in;
        if n_out == 0 || count == 0 {
            return;
        }
        assert!(
            out.len() >= (n_out - 1) * out_stride + count,
            "output too short"
        );
        dispatch!(self, k => k::dense_block(m, n_in, x, w, out, out_stride, count))
    }

    /// Whether every value of `x` is finite (no NaN, no infinity).
    pub fn all_finite(self, x: &[f32]) -> bool {
        dispatch!(self, m => m::all_finite(x))
    }

    /// `max(x[i])`, or negative infinity for an empty slice.
    pub fn max(self, x: &[f32]) -> f32 {
        dispatch!(self, m => m::max(x))
    }

    /// `sum(w[i] * (f[i] - c)^2)` (the spectral bandwidth sum).
    ///
    /// # Panics
    /// If the lengths differ.
    pub fn weighted_sq_dev(self, w: &[f32], f: &[f32], c: f32) -> f32 {
        assert_eq!(w.len(), f.len());
        dispatch!(self, m => m::weighted_sq_dev(w, f, c))
    }

    /// In place: `x = scale * ln(max(x, floor)) + offset`; returns the largest result.
    /// `floor` must be a positive normal number.
    ///
    /// # Panics
    /// If `floor` is not a positive normal `f32`.
    pub fn log_scaled(self, x: &mut [f32], floor: f32, scale: f32, offset: f32) -> f32 {
        assert!(floor.is_normal() && floor > 0.0, "log floor {floor}");
        self.log_scaled_clamped(x, floor, scale, offset, f32::NEG_INFINITY)
    }

    /// In place, one pass: `x = max(scale * ln(max(x, floor)) + offset, lo)`; returns the
    /// largest result. The same values as [`Self::log_scaled`] then [`Self::clamp_affine`]
    /// with `lo`.
    ///
    /// # Panics
    /// If `floor` is not a positive normal `f32`.
    pub fn log_scaled_clamped(
        self,
        x: &mut [f32],
        floor: f32,
        scale: f32,
        offset: f32,
        lo: f32,
    ) -> f32 {
        assert!(floor.is_normal() && floor > 0.0, "log floor {floor}");
        dispatch!(self, m => m::log_scaled_clamped(x, floor, scale, offset, lo))
    }

    /// `dst = max(scale * ln(max(src, floor)) + offset, lo)`, one pass from `src` into `dst`;
    /// returns the largest result. The same values as [`Self::log_scaled`] then
    /// [`Self::clamp_affine`] with `lo`.
    ///
    /// # Panics
    /// If `floor` is not a positive normal `f32`, or the lengths differ.
    pub fn log_scaled_into(
        self,
        src: &[f32],
        dst: &mut [f32],
        floor: f32,
        scale: f32,
        offset: f32,
        lo: f32,
    ) -> f32 {
        assert!(floor.is_normal() && floor > 0.0, "log floor {floor}");
        assert_eq!(src.len(), dst.len(), "log_scaled_into lengths");
        dispatch!(self, m => m::log_scaled_into(src, dst, floor, scale, offset, lo))
    }

    /// In place: `x = max(x, floor) * mul + add`.
    pub fn clamp_affine(self, x: &mut [f32], floor: f32, mul: f32, add: f32) {
        dispatch!(self, m => m::clamp_affine(x, floor, mul, add))
    }

    /// Frames per call of the lane kernels (16 for AVX-512, 8 for AVX2, 4 for NEON), or
    /// `None` for the scalar kernels, which compute frame by frame.
    pub fn lanes(self) -> Option<usize> {
        match self.isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => Some(avx2::LANES),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => Some(avx512::LANES),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => Some(neon::LANES),
            _ => None,
        }
    }

    /// A lane FFT plan for `n`-point frames windowed by `window`, or `None` (scalar
    /// kernels, or a size the plan does not cover: see [`lanes`]).
    pub fn lane_fft(self, n: usize, window: &[f32]) -> Option<LaneFft> {
        LaneFft::new(n, window, self.lanes()?)
    }

    /// Power and/or magnitude of [`LaneFft::lanes`] frames at once, `[bin][frame]`: frame
    /// `f` is `frames[f * stride..][..n]`.
    ///
    /// # Panics
    /// If the plan is for other kernels, `s` was made by another plan's
    /// [`LaneFft::make_scratch`], `frames` is too short, or an output does not hold
    /// `n_bins * lanes` values.
    pub fn lane_spectra(
        self,
        plan: &LaneFft,
        frames: &[f32],
        stride: usize,
        s: &mut LaneScratch,
        power: Option<&mut [f32]>,
        magnitude: Option<&mut [f32]>,
    ) {
        let l = plan.lanes();
        assert_eq!(self.lanes(), Some(l), "plan made for other kernels");
        assert!(plan.fits(s), "scratch made by another lane FFT plan");
        assert!(frames.len() >= (l - 1) * stride + plan.n());
        let len = plan.n_bins() * l;
        assert!(power.as_ref().is_none_or(|p| p.len() == len));
        assert!(magnitude.as_ref().is_none_or(|p| p.len() == len));
        dispatch!(self, m => m::lane_spectra(plan, frames, stride, s, power, magnitude),
            scalar => unreachable!("the scalar kernels have no lanes (checked above)"))
    }

    /// A sparse matrix times [`Self::lanes`] columns: `x` is `[input][lane]`, `out` is
    /// `[row][lane]`.
    ///
    /// # Panics
    /// For the scalar kernels, or if `x` or `out` is too short.
    pub fn lane_band_dots(self, x: &[f32], rows: &SparseRows, out: &mut [f32]) {
        let l = self.lanes().expect("lane kernels need a SIMD ISA");
        assert!(rows.min_input * l <= x.len());
        assert_eq!(rows.spans.len() * l, out.len());
        let (spans, weights) = (&rows.spans[..], &rows.weights[..]);
        dispatch!(self, m => m::lane_band_dots(x, spans, weights, out),
            scalar => unreachable!("the scalar kernels have no lanes (checked above)"))
    }
}

#[cfg(test)]
mod tests;
