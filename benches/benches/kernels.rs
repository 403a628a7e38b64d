//! The int8 GEMM against f32 matmul, and the machine's peaks.
//!
//! Ids: `flex/f32_matmul/b{batch}_{k}x{n}`, `ndarray/f32_matmul/...`,
//! `host/int8_linear_{kernel}/...` (every kernel this CPU runs: `avx512_vnni`, `avx2`; the
//! portable one only at batch 1, it is the reference, not a contender), and the peaks
//! `host/peak_int8_{kernel}/...`, `host/peak_f32_fma/...`. The thread count is the process's:
//! `cargo xtask bench kernels` runs this once with `RAYON_NUM_THREADS=1` and once with 2.

use std::hint::black_box;

use burn::tensor::{Tensor, TensorData};
use criterion::{BenchmarkId, Criterion, criterion_main};
use ember_kernels::int8::{self, Activations, Epilogue, Int8Kernel, PackedWeights, WeightLayout};
use ember_tensor::{BackendKind, device::sync};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// BERT-base's feed-forward (768 -> 3072) and a square 4096 layer.
const SHAPES: [(usize, usize); 2] = [(768, 3072), (4096, 4096)];
const BATCHES: [usize; 3] = [1, 64, 256];

fn values(n: usize, seed: u64) -> Vec<f32> {
    (0..n as u64)
        .map(|i| {
            let h = (i ^ seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
            h as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        })
        .collect()
}

fn gemm(c: &mut Criterion) {
    let devices: Vec<(&str, burn::tensor::Device)> = [
        ("flex", BackendKind::Flex),
        ("ndarray", BackendKind::NdArray),
    ]
    .into_iter()
    .filter_map(|(name, kind)| kind.device().ok().map(|d| (name, d)))
    .collect();
    for (k, n) in SHAPES {
        let mut group = c.benchmark_group(format!("gemm_{k}x{n}"));
        group.sample_size(20);
        let w = values(k * n, 1);
        let w_i8: Vec<i8> = w.iter().map(|v| (v * 127.0).round() as i8).collect();
        let packed = PackedWeights::new(&w_i8, k, n, WeightLayout::InputMajor, &[0.01], &[0])
            .expect("valid weights");
        let bias = values(n, 3);
        for batch in BATCHES {
            let id = format!("b{batch}_{k}x{n}");
            let x = values(batch * k, 2);
            let x_u8: Vec<u8> = x.iter().map(|v| ((v + 1.0) * 127.5) as u8).collect();
            let mut out = vec![0.0f32; batch * n];
            for kernel in Int8Kernel::available() {
                if kernel == Int8Kernel::Portable && batch > 1 {
                    continue;
                }
                group.bench_function(
                    BenchmarkId::new(format!("host/int8_linear_{}", kernel.name()), &id),
                    |b| {
                        b.iter(|| {
                            let a = Activations {
                                values: black_box(&x_u8),
                                rows: batch,
                                scale: 0.01,
                                zero_point: 128,
                            };
                            let epilogue = Epilogue {
                                bias: Some(&bias),
                                relu: false,
                            };
                            int8::linear(kernel, a, &packed, epilogue, &mut out)
                                .expect("shapes agree");
                        })
                    },
                );
            }
            for (name, device) in &devices {
                let xt = Tensor::<2>::from_data(TensorData::new(x.clone(), [batch, k]), device);
                let wt = Tensor::<2>::from_data(TensorData::new(w.clone(), [k, n]), device);
                let bt = Tensor::<1>::from_data(TensorData::new(bias.clone(), [n]), device);
                group.bench_function(BenchmarkId::new(format!("{name}/f32_matmul"), &id), |b| {
                    b.iter(|| {
                        let y = xt.clone().matmul(wt.clone()) + bt.clone().unsqueeze();
                        sync(device).expect("sync");
                        y
                    })
                });
            }
        }
        group.finish();
    }
}

// criterion_group! generates an undocumented public function.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::gemm);
}
use group::benches;
criterion_main!(benches);
