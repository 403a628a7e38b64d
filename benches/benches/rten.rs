//! Ember's int8 linear layer against rten-gemm's, the same layer in one run: `u8` activations
//! with a zero point, prepacked symmetric `i8` weights with a scale per column, dequantized to
//! `f32` with the bias. `cargo xtask bench rten` runs it at 1 and 2 threads and prints the
//! ratios with the exactness check (`target/bench/rten.{json,md}`). Ids:
//! - `rten_{k}x{n}_t{T}/host/ember_int8_{kernel}/b{batch}`: Ember's kernel, epilogue fused;
//! - `rten_{k}x{n}_t{T}/host/rten_int8/b{batch}`: rten-gemm's sums, then the same epilogue
//!   in a second pass ([`ember_benches::rten::RtenLinear::forward`]);
//! - `rten_{k}x{n}_t{T}/host/rten_int8_sums/b{batch}`: rten-gemm's sums alone.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_main};
use ember_benches::rten::RtenLinear;
use ember_benches::values;
use ember_kernels::int8::{self, Activations, Epilogue, Int8Kernel, PackedWeights, WeightLayout};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The shapes: BERT-base's feed-forward and its attention projection.
const SHAPES: [(usize, usize); 2] = [(768, 3072), (768, 768)];
const BATCHES: [usize; 3] = [1, 64, 256];
const ZERO_POINT: u8 = 128;

fn layers(c: &mut Criterion) {
    let threads = rayon::current_num_threads();
    let kernel = Int8Kernel::detect();
    for (k, n) in SHAPES {
        let mut group = c.benchmark_group(format!("rten_{k}x{n}_t{threads}"));
        group.sample_size(20);
        let w: Vec<i8> = values(k * n, 1)
            .iter()
            .map(|v| (v * 127.0).round() as i8)
            .collect();
        let scales: Vec<f32> = (0..n).map(|c| 0.01 + (c % 7) as f32 * 1e-3).collect();
        let bias = values(n, 3);
        let ember = PackedWeights::new(&w, k, n, WeightLayout::InputMajor, &scales, &[0])
            .expect("valid weights");
        let rten = RtenLinear::new(&w, k, n, scales.clone(), bias.clone());
        for batch in BATCHES {
            let id = format!("b{batch}");
            let x: Vec<u8> = values(batch * k, 2)
                .iter()
                .map(|v| ((v + 1.0) * 127.5) as u8)
                .collect();
            let zero_points = vec![ZERO_POINT; batch];
            let mut out = vec![0.0f32; batch * n];
            let mut sums = vec![0i32; batch * n];
            let name = format!("host/ember_int8_{}", kernel.name());
            group.bench_function(BenchmarkId::new(name, &id), |b| {
                b.iter(|| {
                    let a = Activations {
                        values: black_box(&x),
                        rows: batch,
                        stride: k,
                        scale: 0.01,
                        zero_point: i32::from(ZERO_POINT),
                    };
                    let epilogue = Epilogue {
                        bias: Some(&bias),
                        relu: false,
                    };
                    int8::linear(kernel, a, &ember, epilogue, &mut out).expect("shapes agree");
                })
            });
            group.bench_function(BenchmarkId::new("host/rten_int8", &id), |b| {
                b.iter(|| {
                    rten.forward(
                        black_box(&x),
                        batch,
                        0.01,
                        &zero_points,
                        &mut sums,
                        &mut out,
                    )
                })
            });
            group.bench_function(BenchmarkId::new("host/rten_int8_sums", &id), |b| {
                b.iter(|| rten.sums(black_box(&x), batch, &zero_points, &mut sums))
            });
        }
        group.finish();
    }
}

// criterion_group! generates an undocumented public function.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::layers);
}
use group::benches;
criterion_main!(benches);
