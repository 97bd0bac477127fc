//! Whole features over ten seconds of signal, single-threaded, throughput in samples (so
//! `Melem/s * 1e6 / sample_rate` is the realtime factor). Each group has two references run
//! in the same process: the same plan on the scalar kernels, and a straightforward
//! implementation on realfft (window, FFT, power, dense mel matrix, 10 log10, top_db clamp).
//!
//!     cargo bench -p klio-dsp --bench features

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use klio_dsp::{
    window, Collector, Feature, FeatureConfig, FeaturePlan, FeatureStream, Kernels, MelConfig,
    MelPlan, WindowKind,
};
use realfft::RealFftPlanner;

fn signal(n: usize, sr: f64) -> Vec<f32> {
    let mut s = 0x1234_5678u32;
    (0..n)
        .map(|i| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            let t = i as f64 / sr;
            ((2.0 * std::f64::consts::PI * 440.0 * t).sin() * 0.3) as f32
                + ((s >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * 0.05
        })
        .collect()
}

/// The straightforward pipeline: centre-padded frames, window, realfft, power, a dense mel
/// matrix product, 10 log10 and the top_db clamp.
fn reference_log_mel(cfg: &FeatureConfig, dense: &[f32], x: &[f32]) -> Vec<f32> {
    let n_fft = cfg.stft.n_fft;
    let (hop, n_bins, n_mels) = (cfg.stft.hop_length, n_fft / 2 + 1, cfg.n_mels);
    let win = window(WindowKind::Hann, n_fft, n_fft);
    let fft = RealFftPlanner::<f32>::new().plan_fft_forward(n_fft);
    let mut padded = vec![0.0f32; x.len() + n_fft];
    padded[n_fft / 2..n_fft / 2 + x.len()].copy_from_slice(x);
    let frames = 1 + x.len() / hop;
    let (mut buf, mut spec) = (fft.make_input_vec(), fft.make_output_vec());
    let mut power = vec![0.0f32; n_bins];
    let mut out = vec![0.0f32; frames * n_mels];
    for t in 0..frames {
        for i in 0..n_fft {
            buf[i] = padded[t * hop + i] * win[i];
        }
        fft.process(&mut buf, &mut spec).unwrap();
        for (p, c) in power.iter_mut().zip(&spec) {
            *p = c.norm_sqr();
        }
        for m in 0..n_mels {
            let row = &dense[m * n_bins..(m + 1) * n_bins];
            let e: f32 = row.iter().zip(&power).map(|(w, p)| w * p).sum();
            out[t * n_mels + m] = 10.0 * e.max(1e-10).log10();
        }
    }
    let max = out.iter().copied().fold(f32::MIN, f32::max);
    for v in &mut out {
        *v = v.max(max - 80.0);
    }
    out
}

fn run(plan: &Arc<FeaturePlan>, x: &[f32]) -> usize {
    let mut s = FeatureStream::new(Arc::clone(plan), 1);
    let mut sink = Collector::default();
    for block in x.chunks(4096) {
        s.push(&[block], &mut sink).unwrap();
    }
    let fin = s.finish(&mut sink).unwrap();
    sink.into_outputs(&fin).len()
}

fn features(c: &mut Criterion) {
    let cases = [
        (
            "log_mel 16k/400/160/80",
            16000.0,
            400,
            160,
            80,
            Feature::LogMel,
        ),
        (
            "log_mel 44.1k/2048/512/128",
            44100.0,
            2048,
            512,
            128,
            Feature::LogMel,
        ),
        (
            "mfcc 22.05k/2048/512/128/20",
            22050.0,
            2048,
            512,
            128,
            Feature::Mfcc,
        ),
    ];
    for (name, sr, n_fft, hop, n_mels, feature) in cases {
        let mut cfg = FeatureConfig::librosa_defaults(sr);
        cfg.features = vec![feature];
        cfg.stft.n_fft = n_fft;
        cfg.stft.win_length = n_fft;
        cfg.stft.hop_length = hop;
        cfg.n_mels = n_mels;
        let x = signal((sr * 10.0) as usize, sr);
        let mut g = c.benchmark_group(name);
        g.throughput(Throughput::Elements(x.len() as u64));
        g.sample_size(20);
        let active = Arc::new(FeaturePlan::new(&cfg).unwrap());
        let scalar = Arc::new(FeaturePlan::with_kernels(&cfg, Kernels::scalar()).unwrap());
        g.bench_function(
            BenchmarkId::new("klio", active.kernels().isa().name()),
            |b| b.iter(|| run(&active, black_box(&x))),
        );
        g.bench_function(BenchmarkId::new("klio", "scalar"), |b| {
            b.iter(|| run(&scalar, black_box(&x)))
        });
        if feature == Feature::LogMel {
            let dense = MelPlan::new(&MelConfig {
                sample_rate_hz: sr,
                n_fft,
                n_mels,
                fmin_hz: 0.0,
                fmax_hz: None,
                scale: cfg.mel_scale,
                norm: cfg.mel_norm,
            })
            .unwrap()
            .dense();
            g.bench_function(BenchmarkId::new("reference", "realfft+dense mel"), |b| {
                b.iter(|| reference_log_mel(&cfg, &dense, black_box(&x)))
            });
        }
        g.finish();
    }
}

criterion_group!(benches, features);
criterion_main!(benches);
