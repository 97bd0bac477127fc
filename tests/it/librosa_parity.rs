//! Parity with librosa: each case in tests/fixtures/librosa/ (made by
//! scripts/make_librosa_fixtures.py) names a lossless recording of the test corpus (tests/corpus) and a
//! config; klio-edge must reproduce librosa's arrays within the tolerances below.
//!
//! The fixtures are librosa's float64 results (audio loaded as float64) rounded to float32;
//! klio-edge computes in float32 with SIMD kernels. Every case runs twice: with the kernels the
//! CPU selects and with `KLIO_DSP_ISA=scalar`, so both paths are held to the same bounds.
//!
//! Tolerances (`tol` below), with the worst case measured on these recordings in brackets:
//! - `log_mel`: |diff| <= 1e-3 dB for values within 60 dB of the array's maximum (the issue's
//!   bound), <= 1e-2 dB below that, where float32 FFT rounding next to loud bins starts to show;
//!   mean <= 5e-5 dB. Worst measured: printed by the test (about 7e-4 dB on these files).
//! - `whisper_log_mel`: the same bounds in its units (log10 / 4, so 1e-3 dB is 2.5e-5).
//! - `fbank` (natural log energies vs kaldi-native-fbank, float32 on both sides): |diff| <= 2e-3
//!   where the band's energy is within 60 dB of its frame's loudest band; quieter bands are
//!   below what a float32 FFT resolves next to the loud ones, so there the bound is on energy:
//!   |e^got - e^want| <= 1e-8 * (frame's largest energy) [worst measured: see the test output].
//! - `mel`, `power`, `mfcc`, `rms`, `spectral_centroid`, `spectral_bandwidth`,
//!   `spectral_flatness`: |diff| <= 1e-5 * max(|librosa|).
//! - `zero_crossing_rate`: exact (same PCM, same counts).
//! - `spectral_rolloff`: exact, except that a frame whose cumulative energy ties the
//!   threshold within float rounding may land one FFT bin away; at most 2% of frames.

use std::path::Path;

use crate::common::*;

/// Kaldi fbank, shape (bins, frames): see the module doc for the bound.
fn compare_fbank(case: &str, shape: &[usize], want: &[f32], got: &[f32]) {
    let (bins, frames) = (shape[0], shape[1]);
    let (mut worst_log, mut worst_energy) = (0f32, 0f64);
    for t in 0..frames {
        let top = (0..bins)
            .map(|d| want[d * frames + t])
            .fold(f32::MIN, f32::max);
        for d in 0..bins {
            let (w, g) = (want[d * frames + t], got[d * frames + t]);
            if w >= top - 60.0 * std::f32::consts::LN_10 / 10.0 {
                assert!((w - g).abs() <= 2e-3, "{case}/fbank[{d},{t}]: {g} vs {w}");
                worst_log = worst_log.max((w - g).abs());
            } else {
                let rel = ((g as f64).exp() - (w as f64).exp()).abs() / (top as f64).exp();
                assert!(rel <= 1e-8, "{case}/fbank[{d},{t}]: {g} vs {w}, top {top}");
                worst_energy = worst_energy.max(rel);
            }
        }
    }
    eprintln!("{case}/fbank: max |diff| {worst_log:.3e} (loud bands), quiet bands max energy error {worst_energy:.3e} of the frame's top");
}

fn compare(case: &str, feature: &str, want: &[f32], got: &[f32], bin_hz: f32) {
    assert_eq!(want.len(), got.len());
    let max_abs = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let max_signed = want.iter().fold(f32::MIN, |m, &v| m.max(v));
    let mut worst = 0f32;
    let mut worst_loud = 0f32;
    let mut sum = 0f64;
    let mut off_by_a_bin = 0;
    // One dB in the feature's units: Whisper's values are log10(power) / 4.
    let db = if feature == "whisper_log_mel" {
        1.0 / 40.0
    } else {
        1.0
    };
    for (i, (&w, &g)) in want.iter().zip(got).enumerate() {
        let diff = (w - g).abs();
        sum += diff as f64;
        worst = worst.max(diff);
        let loud = w >= max_signed - 60.0 * db;
        if loud {
            worst_loud = worst_loud.max(diff);
        }
        let tol = match feature {
            "log_mel" | "whisper_log_mel" if loud => 1e-3 * db,
            "log_mel" | "whisper_log_mel" => 1e-2 * db,
            "fbank" => 2e-3,
            "zero_crossing_rate" => 0.0,
            "spectral_rolloff" if (diff - bin_hz).abs() <= 1e-3 * bin_hz => {
                off_by_a_bin += 1;
                continue;
            }
            "spectral_rolloff" => 1e-3,
            // The geometric mean weighs the quietest bins, where float32 FFT rounding is
            // largest relative to the value: bound the relative error per frame.
            "spectral_flatness" => 1e-3 * w.abs(),
            _ => 1e-5 * max_abs,
        };
        assert!(
            diff <= tol,
            "{case}/{feature}[{i}]: klio {g} vs librosa {w} (tol {tol})"
        );
    }
    let mean = sum / want.len() as f64;
    if feature == "log_mel" {
        assert!(mean <= 5e-5, "{case}/{feature}: mean |diff| {mean}");
    }
    assert!(
        off_by_a_bin * 50 <= want.len(),
        "{case}/{feature}: {off_by_a_bin} of {} frames off by a bin",
        want.len()
    );
    eprintln!(
        "{case}/{feature}: max |diff| {worst:.3e} ({worst_loud:.3e} within 60 of the max), mean {mean:.3e}, max |librosa| {max_abs:.3e}"
    );
}

/// The fixture cases under `tests/fixtures/<folder>`, sorted; at least `min`.
fn fixture_cases(folder: &str, min: usize) -> Vec<std::path::PathBuf> {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(folder);
    let mut cases: Vec<_> = std::fs::read_dir(&fixtures)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    cases.sort();
    assert!(
        cases.len() >= min,
        "fixtures missing in {}",
        fixtures.display()
    );
    cases
}

/// Runs `process` on a case's source file with its config.toml into `out`; returns the
/// item's folder and its meta.json.
fn run_case(
    dir: &Path,
    case: &Path,
    out: &Path,
    env: &[(&str, &str)],
) -> (std::path::PathBuf, serde_json::Value) {
    let name = case.file_name().unwrap().to_string_lossy().into_owned();
    let source = real(
        std::fs::read_to_string(case.join("source.txt"))
            .unwrap()
            .trim(),
    );
    let (code, s) = process_env(
        dir,
        &[
            source.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--config",
            case.join("config.toml").to_str().unwrap(),
        ],
        env,
    );
    assert_eq!((code, count(&s, "done")), (0, 1), "{name}: {s}");
    let item = item_dirs(out).remove(0);
    let meta = read_json(&item.join("meta.json"));
    (item, meta)
}

#[test]
fn features_match_librosa_fixtures_on_every_kernel_set() {
    let cases = fixture_cases("librosa", 7);
    let dir = tempfile::tempdir().unwrap();
    for isa in ["", "scalar"] {
        for case in &cases {
            let name = case.file_name().unwrap().to_string_lossy().into_owned();
            let out = dir.path().join(format!("{name}-{isa}"));
            let env: &[(&str, &str)] = if isa.is_empty() {
                &[]
            } else {
                &[("KLIO_DSP_ISA", isa)]
            };
            let (item, meta) = run_case(dir.path(), case, &out, env);
            let item = &item;
            let used = meta["dsp_isa"].as_str().unwrap().to_string();
            if !isa.is_empty() {
                assert_eq!(used, isa, "KLIO_DSP_ISA is honoured");
            }
            let sr = meta["sample_rate_hz"].as_f64().unwrap();
            let n_fft = meta["config"]["features"]["n_fft"].as_f64().unwrap();
            let bin_hz = (sr / n_fft) as f32;
            let mut checked = 0;
            for f in std::fs::read_dir(case).unwrap() {
                let f = f.unwrap().path();
                if f.extension().is_some_and(|e| e == "npy") {
                    let feature = f.file_stem().unwrap().to_string_lossy().into_owned();
                    let (want_shape, want) = read_npy(&f);
                    let (got_shape, got) = read_npy(&item.join(f.file_name().unwrap()));
                    assert_eq!(got_shape, want_shape, "{name}/{feature}: shape");
                    let label = format!("{name} ({used})");
                    if feature == "fbank" {
                        compare_fbank(&label, &want_shape, &want, &got);
                    } else {
                        compare(&label, &feature, &want, &got, bin_hz);
                    }
                    checked += 1;
                }
            }
            assert!(checked >= 1, "{name}");
        }
    }
}

/// `log_mel` bound for resampled configs, in dB, for values within 60 dB of the array's
/// maximum in mel bands centred below [`PASSBAND`] of the lower Nyquist frequency: where both
/// resamplers are flat, the difference is the two filters' ripple and rounding.
const RESAMPLED_PASS_DB: f32 = 0.1;
/// The mean |diff| over those values, in dB.
const RESAMPLED_PASS_MEAN_DB: f64 = 0.01;
/// Bands centred above this fraction of the lower Nyquist frequency see the two resamplers'
/// different roll-offs (soxr HQ: -2.9 dB at 0.95, -33 dB at 0.98; klio-edge: flat to 0.98):
/// reported, bounded only loosely.
const PASSBAND: f64 = 0.9;
/// Their bound (dB, loud values).
const RESAMPLED_EDGE_DB: f32 = 40.0;

/// Resampled configs against `librosa.load(sr=...)` (soxr HQ, librosa's default) followed by
/// librosa's features (tests/fixtures/librosa-resampled/): 44.1 -> 22.05, 48 -> 16 and
/// 8 -> 16 kHz. Same shapes; `log_mel` within [`RESAMPLED_PASS_DB`] in the passband bands.
#[test]
fn resampled_features_match_librosa_load_within_the_stated_bounds() {
    let cases = fixture_cases("librosa-resampled", 3);
    let dir = tempfile::tempdir().unwrap();
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let (item, meta) = run_case(dir.path(), case, &dir.path().join(&name), &[]);
        let sr_out = meta["sample_rate_hz"].as_f64().unwrap();
        let sr_in = meta["source_sample_rate_hz"].as_f64().unwrap();
        assert_ne!(sr_in, sr_out, "{name} resamples");
        let (want_shape, want) = read_npy(&case.join("log_mel.npy"));
        let (got_shape, got) = read_npy(&item.join("log_mel.npy"));
        assert_eq!(got_shape, want_shape, "{name}: shape");
        let (bands, frames) = (want_shape[0], want_shape[1]);
        let features = &meta["config"]["features"];
        let fmin = features["fmin_hz"].as_f64().unwrap();
        let fmax = features["fmax_hz"].as_f64().unwrap_or(sr_out / 2.0);
        let scale = klio_dsp::MelScale::Slaney;
        let (m0, m1) = (
            klio_dsp::hz_to_mel(fmin, scale),
            klio_dsp::hz_to_mel(fmax, scale),
        );
        let edge = PASSBAND * sr_in.min(sr_out) / 2.0;
        let top = want.iter().fold(f32::MIN, |m, &v| m.max(v));
        let (mut worst_pass, mut sum, mut n, mut worst_edge) = (0f32, 0f64, 0usize, 0f32);
        let mut edge_bands = 0;
        for b in 0..bands {
            let centre =
                klio_dsp::mel_to_hz(m0 + (m1 - m0) * (b + 1) as f64 / (bands + 1) as f64, scale);
            let passband = centre <= edge;
            edge_bands += usize::from(!passband);
            for t in 0..frames {
                let (w, g) = (want[b * frames + t], got[b * frames + t]);
                if w < top - 60.0 {
                    continue;
                }
                let d = (w - g).abs();
                if passband {
                    worst_pass = worst_pass.max(d);
                    sum += f64::from(d);
                    n += 1;
                } else {
                    worst_edge = worst_edge.max(d);
                }
            }
        }
        let mean = sum / n.max(1) as f64;
        eprintln!(
            "{name} ({sr_in} -> {sr_out} Hz): log_mel max |diff| {worst_pass:.4} dB, mean {mean:.5} dB \
             in the {} bands below {edge:.0} Hz; {worst_edge:.2} dB in the {edge_bands} bands above",
            bands - edge_bands
        );
        assert!(n > 0, "{name}: no loud values in the passband");
        assert!(
            worst_pass <= RESAMPLED_PASS_DB,
            "{name}: {worst_pass} dB in the passband"
        );
        assert!(
            mean <= RESAMPLED_PASS_MEAN_DB,
            "{name}: mean {mean} dB in the passband"
        );
        assert!(
            worst_edge <= RESAMPLED_EDGE_DB,
            "{name}: {worst_edge} dB above the passband"
        );
    }
}
