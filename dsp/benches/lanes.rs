//! The lane STFT (klio-dsp's own mixed-radix FFT over a register of frames, with the window,
//! the real-FFT split and the power fused) against realfft/rustfft frame by frame (window
//! multiply, real FFT, power), for every FFT size the example configs use and a few more.
//! Both sides compute the power spectra of the same `lanes` overlapping frames; throughput is
//! in frames, so read the two lines of a group as a ratio.
//!
//!     cargo bench -p klio-dsp --bench lanes

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use klio_dsp::{window, Isa, Kernels, WindowKind};
use realfft::RealFftPlanner;

fn signal(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
        .collect()
}

fn lanes(c: &mut Criterion) {
    let isas: Vec<Kernels> = Isa::all_supported()
        .into_iter()
        .filter_map(Kernels::new)
        .filter(|k| k.lanes().is_some())
        .collect();
    // 400: 16 kHz speech (25 ms); 512: Kaldi fbank's padded 400; 1024, 2048: music; 480 and
    // 960: sizes with radix 3 and 5.
    for n in [400usize, 480, 512, 960, 1024, 2048] {
        let hop = n / 4;
        let win = window(WindowKind::Hann, n, n);
        let mut planner = RealFftPlanner::<f32>::new();
        let r2c = planner.plan_fft_forward(n);
        for &k in &isas {
            let plan = k
                .lane_fft(n, &win)
                .expect("a lane plan for every size here");
            let l = plan.lanes();
            let frames = signal((l - 1) * hop + n);
            let mut g = c.benchmark_group(format!("stft_power/{n}/{}", k.isa().name()));
            g.throughput(Throughput::Elements(l as u64));
            let mut scratch = plan.make_scratch();
            let mut power = vec![0.0f32; plan.n_bins() * l];
            g.bench_function(BenchmarkId::from_parameter("lanes"), |b| {
                b.iter(|| {
                    k.lane_spectra(
                        &plan,
                        black_box(&frames),
                        hop,
                        &mut scratch,
                        Some(&mut power),
                        None,
                    )
                })
            });
            let mut input = r2c.make_input_vec();
            let mut spectrum = r2c.make_output_vec();
            let mut fft_scratch = r2c.make_scratch_vec();
            let mut frame_power = vec![0.0f32; n / 2 + 1];
            g.bench_function(BenchmarkId::from_parameter("realfft_per_frame"), |b| {
                b.iter(|| {
                    for f in 0..l {
                        let x = &black_box(&frames)[f * hop..f * hop + n];
                        k.mul(x, &win, &mut input);
                        r2c.process_with_scratch(&mut input, &mut spectrum, &mut fft_scratch)
                            .expect("sizes agree");
                        for (p, s) in frame_power.iter_mut().zip(&spectrum) {
                            *p = s.norm_sqr();
                        }
                        black_box(&frame_power);
                    }
                })
            });
            g.finish();
        }
    }
}

criterion_group!(benches, lanes);
criterion_main!(benches);
