//! Each kernel on every instruction set this CPU supports, scalar included, on preallocated
//! buffers of typical spectrum sizes (201 bins: n_fft 400; 1025 bins: n_fft 2048). The scalar
//! line of each group is the reference: read the others as ratios against it.
//!
//!     cargo bench -p klio-dsp --bench kernels

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use klio_dsp::{Isa, Kernels};

fn data(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 8) as f32 / (1u32 << 24) as f32 + 1e-6
        })
        .collect()
}

fn kernels(c: &mut Criterion) {
    let isas: Vec<Kernels> = Isa::all_supported()
        .into_iter()
        .filter_map(Kernels::new)
        .collect();
    for n in [201usize, 1025] {
        let (a, b) = (data(n, 1), data(n, 2));
        let cplx = data(2 * n, 3);
        let mut out = vec![0.0f32; n];
        macro_rules! group {
            ($name:expr, |$k:ident| $body:expr) => {{
                let mut g = c.benchmark_group(format!("{}/{}", $name, n));
                g.throughput(Throughput::Elements(n as u64));
                for &$k in &isas {
                    g.bench_function(BenchmarkId::from_parameter($k.isa().name()), |bch| {
                        bch.iter(|| $body)
                    });
                }
                g.finish();
            }};
        }
        group!("window_mul", |k| k.mul(
            black_box(&a),
            black_box(&b),
            &mut out
        ));
        group!("power", |k| k.power(black_box(&cplx), &mut out));
        group!("magnitude", |k| k.magnitude(black_box(&cplx), &mut out));
        group!("dot", |k| k.dot(black_box(&a), black_box(&b)));
        group!("sum", |k| k.sum(black_box(&a)));
        group!("max", |k| k.max(black_box(&a)));
        group!("weighted_sq_dev", |k| k.weighted_sq_dev(
            black_box(&a),
            black_box(&b),
            0.5
        ));
        for (name, scale) in [("log_db", 4.342_945f32), ("clamp_affine", 0.0)] {
            let mut g = c.benchmark_group(format!("{name}/{n}"));
            g.throughput(Throughput::Elements(n as u64));
            for &k in &isas {
                g.bench_function(BenchmarkId::from_parameter(k.isa().name()), |bch| {
                    bch.iter_batched_ref(
                        || a.clone(),
                        |v| {
                            if scale != 0.0 {
                                k.log_scaled(v, 1e-10, scale, 0.0);
                            } else {
                                k.clamp_affine(v, 0.25, 0.25, 1.0);
                            }
                        },
                        BatchSize::SmallInput,
                    )
                });
            }
            g.finish();
        }
    }
}

criterion_group!(benches, kernels);
criterion_main!(benches);
