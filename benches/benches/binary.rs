//! The XNOR-popcount layer (`ember_kernels::binary_linear`: inputs binarized and scaled, the
//! ±1 product, weight scales and bias) against the f32 layer of the same shape: burn's flex
//! matmul on every core and matrixmultiply's SGEMM on one, at batch 64. One id per kernel the
//! CPU runs: `host/binary_linear/{portable,popcnt,avx512_vpopcntdq}/...`.

use std::hint::black_box;

use burn::tensor::{Tensor, TensorData};
use criterion::{BenchmarkId, Criterion, criterion_main};
use ember_kernels::{BinaryKernel, PackedSigns, binary_linear};
use ember_tensor::{BackendKind, device::sync};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BATCH: usize = 64;

fn values(n: usize, seed: u64) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let h = (i as u64 ^ seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
            h as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        })
        .collect()
}

fn binary(c: &mut Criterion) {
    let flex = BackendKind::Flex.device().ok();
    for (d_in, d_out) in [(784usize, 300usize), (1024, 1024), (4096, 4096)] {
        let mut group = c.benchmark_group(format!("linear_{d_in}x{d_out}_batch{BATCH}"));
        let x = values(BATCH * d_in, 1);
        // burn's `[d_input, d_output]` for the float layer; one row of signs per output for
        // the binary one.
        let w = values(d_in * d_out, 2);
        let mut rows = vec![0.0f32; d_in * d_out];
        for i in 0..d_in {
            for j in 0..d_out {
                rows[j * d_in + i] = w[i * d_out + j];
            }
        }
        let signs = PackedSigns::from_values(d_out, d_in, &rows).expect("finite values");
        let alpha = vec![0.5f32; d_out];
        for kernel in BinaryKernel::available() {
            group.bench_function(
                BenchmarkId::new(format!("host/binary_linear/{}", kernel.name()), d_in),
                |b| {
                    b.iter(|| {
                        binary_linear(kernel, black_box(&x), BATCH, &signs, &alpha, None)
                            .expect("shapes agree")
                    })
                },
            );
        }
        if let Some(device) = &flex {
            let xt = Tensor::<2>::from_data(TensorData::new(x.clone(), [BATCH, d_in]), device);
            let wt = Tensor::<2>::from_data(TensorData::new(w.clone(), [d_in, d_out]), device);
            group.bench_function(BenchmarkId::new("flex/dense_matmul", d_in), |b| {
                b.iter(|| {
                    let y = xt.clone().matmul(wt.clone());
                    sync(device).expect("flex sync");
                    y
                })
            });
        }
        group.finish();
    }
}

// criterion_group! generates an undocumented public function.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::binary);
}
use group::benches;
criterion_main!(benches);
