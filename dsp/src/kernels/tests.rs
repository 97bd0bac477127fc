//! Every kernel of every ISA this CPU supports against a naive f64 reference, on seeded random
//! input, with output buffers dirtied first and lengths that exercise every tail.

use super::{Isa, Kernels};

/// xorshift64*: deterministic input without a dependency.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    /// Uniform in [-1, 1).
    pub(crate) fn uniform(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40;
        (x as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    pub(crate) fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.uniform()).collect()
    }
    /// Positive values spread over many decades, like power spectra.
    pub(crate) fn powers(&mut self, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| 10f32.powf(self.uniform() * 12.0 - 2.0))
            .collect()
    }
}

const LENGTHS: [usize; 12] = [0, 1, 3, 7, 8, 15, 16, 17, 33, 64, 201, 1025];

fn all() -> Vec<Kernels> {
    let isas = Isa::all_supported();
    assert!(isas.contains(&Isa::Scalar));
    isas.into_iter().map(|i| Kernels::new(i).unwrap()).collect()
}

fn close(got: f32, want: f64, abs: f64, rel: f64) -> bool {
    (got as f64 - want).abs() <= abs + rel * want.abs()
}

#[test]
fn elementwise_kernels_match_f64() {
    let mut rng = Rng::new(1);
    for k in all() {
        for n in LENGTHS {
            let (a, b) = (rng.vec(n), rng.vec(n));
            let c = rng.vec(2 * n);
            let mut out = vec![f32::NAN; n];
            k.mul(&a, &b, &mut out);
            for i in 0..n {
                assert_eq!(out[i], ((a[i] as f64) * (b[i] as f64)) as f32, "{k:?} mul");
            }
            out.fill(f32::NAN);
            k.power(&c, &mut out);
            for i in 0..n {
                let want = (c[2 * i] as f64).powi(2) + (c[2 * i + 1] as f64).powi(2);
                assert!(close(out[i], want, 1e-30, 4e-7), "{k:?} power n={n} i={i}");
            }
            out.fill(f32::NAN);
            k.magnitude(&c, &mut out);
            for i in 0..n {
                let want = ((c[2 * i] as f64).powi(2) + (c[2 * i + 1] as f64).powi(2)).sqrt();
                assert!(close(out[i], want, 1e-30, 4e-7), "{k:?} magnitude n={n}");
            }
            let mut x = a.clone();
            k.clamp_affine(&mut x, -0.25, 0.25, 1.0);
            for i in 0..n {
                let want = (a[i] as f64).max(-0.25) * 0.25 + 1.0;
                assert!(close(x[i], want, 1e-7, 2e-7), "{k:?} clamp_affine");
            }
        }
    }
}

#[test]
fn reductions_match_f64() {
    let mut rng = Rng::new(2);
    for k in all() {
        for n in LENGTHS {
            let (a, b) = (rng.vec(n), rng.vec(n));
            let scale: f64 = a.iter().zip(&b).map(|(x, y)| (x * y).abs() as f64).sum();
            let want: f64 = a.iter().zip(&b).map(|(&x, &y)| x as f64 * y as f64).sum();
            assert!(
                close(k.dot(&a, &b), want, 1e-6 * scale + 1e-30, 0.0),
                "{k:?} dot n={n}"
            );
            let want: f64 = a.iter().map(|&x| x as f64).sum();
            let scale: f64 = a.iter().map(|&x| x.abs() as f64).sum();
            assert!(
                close(k.sum(&a), want, 1e-6 * scale + 1e-30, 0.0),
                "{k:?} sum n={n}"
            );
            let want = a.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(k.max(&a), want, "{k:?} max n={n}");
            let w: Vec<f32> = b.iter().map(|v| v.abs()).collect();
            let want: f64 = w
                .iter()
                .zip(&a)
                .map(|(&w, &f)| w as f64 * (f as f64 - 0.3).powi(2))
                .sum();
            let got = k.weighted_sq_dev(&w, &a, 0.3);
            assert!(close(got, want, 1e-30, 1e-5), "{k:?} weighted_sq_dev n={n}");
        }
    }
}

#[test]
fn band_dots_match_f64() {
    use super::Span;
    let mut rng = Rng::new(4);
    let x = rng.vec(1025);
    // Bands of every length from 0 to 70, overlapping like mel triangles.
    let mut spans = Vec::new();
    let mut offset = 0;
    for len in 0..70 {
        spans.push(Span {
            start: (len * 13) % 900,
            len,
            offset,
        });
        offset += len;
    }
    let w = rng.vec(offset);
    let rows = super::SparseRows::new(spans.clone(), w.clone());
    for k in all() {
        let mut out = vec![f32::NAN; spans.len()];
        k.band_dots(&x, &rows, &mut out);
        for (o, s) in out.iter().zip(&spans) {
            let terms = (0..s.len).map(|i| x[s.start + i] as f64 * w[s.offset + i] as f64);
            let scale: f64 = terms.clone().map(f64::abs).sum();
            assert!(
                close(*o, terms.sum(), 1e-6 * scale + 1e-30, 0.0),
                "{k:?} {s:?}"
            );
        }
    }
}

#[test]
fn log_matches_f64_over_many_decades() {
    let mut rng = Rng::new(3);
    let to_db = 10.0 / std::f64::consts::LN_10;
    for k in all() {
        for n in LENGTHS {
            let x = rng.powers(n);
            let mut y = x.clone();
            let max = k.log_scaled(&mut y, 1e-10, to_db as f32, -3.0);
            let mut want_max = f64::NEG_INFINITY;
            for i in 0..n {
                let want = to_db * (x[i] as f64).max(1e-10).ln() - 3.0;
                want_max = want_max.max(want);
                // 2 ulp of the log plus the rounding of the scale: about 1e-5 dB at 100 dB.
                assert!(
                    close(y[i], want, 2e-6, 2e-7),
                    "{k:?} log {} -> {} vs {want}",
                    x[i],
                    y[i]
                );
            }
            if n > 0 {
                assert!(close(max, want_max, 2e-6, 2e-7));
            }
        }
        // Edge values: the floor, exact powers of two, the edges of the mantissa split.
        let mut edge = vec![
            0.0,
            1e-12,
            1.0,
            2.0,
            0.5,
            std::f32::consts::FRAC_1_SQRT_2,
            f32::from_bits(std::f32::consts::FRAC_1_SQRT_2.to_bits() + 1),
            std::f32::consts::SQRT_2,
            3.4e38,
            1.2e-38,
        ];
        let src = edge.clone();
        k.log_scaled(&mut edge, 1e-10, 1.0, 0.0);
        for (s, g) in src.iter().zip(&edge) {
            let want = (s.max(1e-10) as f64).ln();
            assert!(
                close(*g, want, 1e-6, 2e-7),
                "{k:?} ln({s}) = {g}, want {want}"
            );
        }
    }
}

#[test]
fn clamped_logs_match_the_log_then_the_clamp() {
    let mut rng = Rng::new(11);
    for k in all() {
        for n in LENGTHS {
            let x = rng.powers(n);
            let mut want = x.clone();
            k.log_scaled(&mut want, 1e-10, 4.3, -3.0);
            // A level inside the values' range, so the clamp bites on some tails and not others.
            let lo = 4.3 * 1e-2f32.ln();
            let clamp = |v: f32| v.max(lo);
            let want: Vec<f32> = want.into_iter().map(clamp).collect();
            let want_max = want.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut in_place = x.clone();
            let max = k.log_scaled_clamped(&mut in_place, 1e-10, 4.3, -3.0, lo);
            assert_eq!(in_place, want, "{k:?} in place, n = {n}");
            let mut into = vec![f32::NAN; n];
            let max_into = k.log_scaled_into(&x, &mut into, 1e-10, 4.3, -3.0, lo);
            assert_eq!(into, want, "{k:?} into, n = {n}");
            if n > 0 {
                assert_eq!((max, max_into), (want_max, want_max), "{k:?} max, n = {n}");
            }
        }
    }
}

#[test]
fn a_scratch_from_another_lane_plan_is_refused() {
    for k in all() {
        if k.lanes().is_none() {
            continue;
        }
        let small = k.lane_fft(16, &[1.0; 16]).expect("a plan");
        let big = k.lane_fft(2048, &[1.0; 2048]).expect("a plan");
        let l = big.lanes();
        let x = vec![0.0; l * 2048];
        let mut power = vec![0.0; 1025 * l];
        let mut wrong = small.make_scratch();
        let refused = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            k.lane_spectra(&big, &x, 2048, &mut wrong, Some(&mut power), None)
        }));
        assert!(
            refused.is_err(),
            "{k:?}: a 16-point scratch reached the 2048-point FFT"
        );
        let mut right = big.make_scratch();
        k.lane_spectra(&big, &x, 2048, &mut right, Some(&mut power), None);
    }
}

#[test]
fn isa_names_round_trip() {
    for i in [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Neon] {
        assert_eq!(Isa::from_name(i.name()), Some(i));
    }
    assert_eq!(Isa::from_name(" AVX2 "), Some(Isa::Avx2));
    assert_eq!(Isa::from_name("sse"), None);
    assert!(Isa::best().supported());
    // Under qemu-aarch64 (scripts/check-aarch64.sh) the NEON path must be the one tested.
    #[cfg(target_arch = "aarch64")]
    assert_eq!(Isa::best(), Isa::Neon);
}

/// The lane FFT of every size the example configs use (400, 512, 1024, 2048; Kaldi's
/// 25 ms frame at 16 kHz pads to 512) and of small sizes that take every radix (2, 3, 4, 5)
/// in several orders, on every SIMD ISA, against a naive f64 DFT of each windowed frame:
/// power within 2e-6 of the frame's energy, magnitude likewise.
#[test]
fn lane_fft_matches_f64_dft_for_every_size() {
    let mut rng = Rng::new(7);
    let sizes = [
        4, 6, 8, 10, 12, 16, 18, 30, 50, 60, 90, 120, 250, 400, 480, 512, 1000, 1024, 2048,
        // Depth-first passes at every lane count (4, 8, 16), odd and even numbers of them,
        // mixed radices: 1500 = 4*3*5^3, 2048 = 4^5*2, 3000 = 4*2*3*5^3.
        3000, 4096, 6000,
    ];
    let mut ran = 0;
    for k in all() {
        let Some(l) = k.lanes() else {
            assert!(k.lane_fft(512, &[1.0; 512]).is_none());
            continue;
        };
        for n in sizes {
            let window: Vec<f32> = (0..n)
                .map(|i| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / n as f64).cos())
                .map(|w| w as f32)
                .collect();
            let plan = k.lane_fft(n, &window).expect("a plan");
            let stride = n / 3 + 1; // overlapping frames, like a hop
            let x = rng.vec((l - 1) * stride + n);
            let bins = n / 2 + 1;
            let mut power = vec![f32::NAN; bins * l];
            let mut magnitude = vec![f32::NAN; bins * l];
            let mut s = plan.make_scratch();
            k.lane_spectra(
                &plan,
                &x,
                stride,
                &mut s,
                Some(&mut power),
                Some(&mut magnitude),
            );
            for f in 0..l {
                let frame: Vec<f64> = (0..n)
                    .map(|i| x[f * stride + i] as f64 * window[i] as f64)
                    .collect();
                let energy: f64 = frame.iter().map(|v| v * v).sum::<f64>() * n as f64;
                for b in 0..bins {
                    let (mut re, mut im) = (0.0f64, 0.0f64);
                    for (i, v) in frame.iter().enumerate() {
                        let a = -2.0 * std::f64::consts::PI * (b * i % n) as f64 / n as f64;
                        re += v * a.cos();
                        im += v * a.sin();
                    }
                    let want = re * re + im * im;
                    let got = power[b * l + f] as f64;
                    assert!(
                        (got - want).abs() <= 2e-6 * energy,
                        "{k:?} n={n} frame {f} bin {b}: power {got} vs {want}"
                    );
                    let got = magnitude[b * l + f] as f64;
                    assert!(
                        (got - want.sqrt()).abs() <= 2e-6 * energy.sqrt() * 4.0,
                        "{k:?} n={n} frame {f} bin {b}: magnitude {got} vs {}",
                        want.sqrt()
                    );
                }
            }
            ran += 1;
        }
    }
    if cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) && Isa::all_supported().len() > 1
    {
        assert!(ran >= sizes.len(), "no SIMD ISA ran the lane FFT");
    }
}

/// Broadcast-weight band sums over lanes equal the per-frame sparse product.
#[test]
fn lane_band_dots_match_per_frame_band_dots() {
    let mut rng = Rng::new(8);
    let n_in = 201;
    let mut spans = Vec::new();
    let mut offset = 0;
    for (start, len) in [
        (0, 1),
        (1, 2),
        (2, 3),
        (5, 8),
        (10, 17),
        (30, 33),
        (60, 141),
        (200, 1),
    ] {
        spans.push(super::Span { start, len, offset });
        offset += len;
    }
    let rows = super::SparseRows::new(spans, rng.vec(offset));
    for k in all() {
        let Some(l) = k.lanes() else { continue };
        let x = rng.powers(n_in * l);
        let mut out = vec![f32::NAN; rows.spans().len() * l];
        k.lane_band_dots(&x, &rows, &mut out);
        for f in 0..l {
            let column: Vec<f32> = (0..n_in).map(|i| x[i * l + f]).collect();
            let mut want = vec![0.0; rows.spans().len()];
            Kernels::scalar().band_dots(&column, &rows, &mut want);
            for (r, w) in want.iter().enumerate() {
                let got = out[r * l + f];
                let scale: f32 = rows
                    .row(r)
                    .iter()
                    .zip(&column[rows.spans()[r].start..])
                    .map(|(a, b)| (a * b).abs())
                    .sum();
                assert!(
                    (got - w).abs() <= 1e-5 * scale,
                    "{k:?} row {r} lane {f}: {got} vs {w}"
                );
            }
        }
    }
}

#[test]
fn transpose_moves_every_value_for_every_shape() {
    let mut rng = Rng::new(9);
    for k in all() {
        for rows in [0, 1, 3, 8, 15, 16, 17, 33, 100] {
            for cols in [1, 2, 7, 16, 20, 31, 80, 129] {
                let src = rng.vec(rows * cols);
                let mut dst = vec![f32::NAN; rows * cols];
                k.transpose(&src, rows, cols, &mut dst);
                for r in 0..rows {
                    for c in 0..cols {
                        assert_eq!(
                            dst[c * rows + r].to_bits(),
                            src[r * cols + c].to_bits(),
                            "{k:?} {rows}x{cols} at ({r}, {c})"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn all_finite_finds_every_nan_and_infinity() {
    let mut rng = Rng::new(11);
    for k in all() {
        for n in LENGTHS {
            let x = rng.vec(n);
            assert!(k.all_finite(&x), "{k:?} n={n}");
            for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                for at in [0, n / 2, n.saturating_sub(1)] {
                    if n == 0 {
                        continue;
                    }
                    let mut y = x.clone();
                    y[at] = bad;
                    assert!(!k.all_finite(&y), "{k:?} n={n} {bad} at {at}");
                }
            }
        }
    }
}

#[test]
fn dense_rows_match_f64() {
    let mut rng = Rng::new(13);
    for k in all() {
        for (n_in, n_out) in [(1, 1), (40, 13), (80, 20), (128, 40)] {
            for cols in [1, 3, 4, 8, 16, 17, 64, 100, 333] {
                let m = rng.vec(n_in * n_out);
                let x = rng.vec(n_in * cols);
                let mut out = vec![f32::NAN; n_out * cols];
                k.dense_rows(&m, n_in, &x, cols, &mut out);
                for o in 0..n_out {
                    for t in 0..cols {
                        let want: f64 = (0..n_in)
                            .map(|i| m[o * n_in + i] as f64 * x[i * cols + t] as f64)
                            .sum();
                        assert!(
                            close(out[o * cols + t], want, 1e-5, 1e-5),
                            "{k:?} {n_out}x{n_in} cols {cols} at ({o}, {t})"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn dense_blocks_match_f64_and_write_only_their_columns() {
    let mut rng = Rng::new(17);
    for k in all() {
        for (n_in, n_out) in [(1, 1), (40, 13), (128, 20), (80, 40)] {
            for w in [16, 32] {
                for count in [1, 5, 8, 15, 16, w] {
                    let m = rng.vec(n_in * n_out);
                    let x = rng.vec(n_in * w);
                    // The block lands at column 3 of rows 37 apart.
                    let (stride, at) = (37, 3);
                    let mut out = vec![f32::NAN; n_out * stride];
                    k.dense_block(&m, n_in, &x, w, &mut out[at..], stride, count);
                    for o in 0..n_out {
                        for c in 0..stride {
                            let got = out[o * stride + c];
                            if c < at || c >= at + count {
                                assert!(got.is_nan(), "{k:?} wrote ({o}, {c}) outside its block");
                                continue;
                            }
                            let t = c - at;
                            let want: f64 = (0..n_in)
                                .map(|i| m[o * n_in + i] as f64 * x[i * w + t] as f64)
                                .sum();
                            assert!(
                                close(got, want, 1e-5, 1e-5),
                                "{k:?} {n_out}x{n_in} w {w} count {count} at ({o}, {t})"
                            );
                        }
                    }
                }
            }
        }
    }
}
