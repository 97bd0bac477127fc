//! A long signal through one feature plan, single-threaded, for `perf record`: prints the
//! realtime factor. `cargo run --release -p klio-dsp --example profile_features -- [SECONDS]
//! [SR N_FFT HOP N_MELS]` (default: 600 s of 16 kHz, 400/160/80, log_mel).

use std::sync::Arc;
use std::time::Instant;

use klio_dsp::{Feature, FeatureConfig, FeaturePlan, FeatureStream, FrameSink, Slot, Tile};

/// Counts values instead of storing them (the sink's cost is not the DSP's).
#[derive(Default)]
struct Count(u64, f32);

impl FrameSink for Count {
    fn frame(&mut self, _: Slot, _: usize, values: &[f32]) {
        self.0 += values.len() as u64;
        self.1 += values[0];
    }

    fn tile(&mut self, _: Slot, _: usize, tile: Tile<'_>) {
        self.0 += (tile.dim * tile.count) as u64;
        self.1 += tile.values[0];
    }
}

fn main() {
    let args: Vec<f64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().unwrap())
        .collect();
    let seconds = args.first().copied().unwrap_or(600.0);
    let (sr, n_fft, hop, n_mels) = match args.get(1..5) {
        Some(a) => (a[0], a[1] as usize, a[2] as usize, a[3] as usize),
        None => (16000.0, 400, 160, 80),
    };
    let mut cfg = FeatureConfig::librosa_defaults(sr);
    cfg.features = vec![Feature::LogMel];
    cfg.stft.n_fft = n_fft;
    cfg.stft.win_length = n_fft;
    cfg.stft.hop_length = hop;
    cfg.n_mels = n_mels;
    let plan = Arc::new(FeaturePlan::new(&cfg).unwrap());
    let n = (seconds * sr) as usize;
    let mut s = 0x1234_5678u32;
    let x: Vec<f32> = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        })
        .collect();
    let mut best = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        let mut stream = FeatureStream::new(Arc::clone(&plan), 1);
        let mut sink = Count::default();
        for b in x.chunks(1 << 16) {
            stream.push(&[b], &mut sink).unwrap();
        }
        stream.finish(&mut sink).unwrap();
        std::hint::black_box(sink.1);
        best = best.min(t.elapsed().as_secs_f64());
    }
    let frames = 1 + n / hop;
    println!(
        "{seconds} s at {sr} Hz, n_fft {n_fft} hop {hop} mels {n_mels}: {:.1} ms, {:.0}x realtime, {:.3} us/frame ({})",
        best * 1e3,
        seconds / best,
        best * 1e6 / frames as f64,
        plan.kernels().isa().name()
    );
}
