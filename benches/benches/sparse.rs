//! Sparse x dense against dense matmul for a pruned linear layer, across sparsities: the
//! sparsity from which `ember_kernels::Csr::linear` beats dense is where
//! `host/sparse_linear_1thread/...` drops under `host/dense_sgemm/...` (matrixmultiply's
//! SGEMM, single-threaded) and `host/sparse_linear/...` (every core) under
//! `flex/dense_matmul/...` (burn's own, every core).
//!
//! Shapes: LeNet-300-100's first layer (784 -> 300) and a square 1024 layer, batch 256.

use std::hint::black_box;

use burn::tensor::{Tensor, TensorData};
use criterion::{BenchmarkId, Criterion, criterion_main};
use ember_kernels::Csr;
use ember_tensor::{BackendKind, device::sync};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BATCH: usize = 256;
const SPARSITIES: [f64; 7] = [0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98];

/// Deterministic values in [-1, 1) with a `sparsity` fraction of zeros, spread evenly.
fn weights(n: usize, sparsity: f64) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let h = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
            let u = h as f64 / (1u64 << 24) as f64;
            if u < sparsity {
                0.0
            } else {
                (((i * 7919) % 2000) as f32 / 1000.0) - 1.0
            }
        })
        .collect()
}

fn dense_sgemm(x: &[f32], w: &[f32], batch: usize, d_in: usize, d_out: usize) -> Vec<f32> {
    let mut y = vec![0.0f32; batch * d_out];
    #[allow(unsafe_code)]
    // SAFETY: the slices hold batch x d_in, d_in x d_out and batch x d_out row-major elements,
    // exactly what the strides below describe.
    unsafe {
        matrixmultiply::sgemm(
            batch,
            d_in,
            d_out,
            1.0,
            x.as_ptr(),
            d_in as isize,
            1,
            w.as_ptr(),
            d_out as isize,
            1,
            0.0,
            y.as_mut_ptr(),
            d_out as isize,
            1,
        );
    }
    y
}

fn sparse(c: &mut Criterion) {
    let flex = BackendKind::Flex.device().ok();
    let single_thread = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("a one-thread pool");
    for (d_in, d_out) in [(784usize, 300usize), (1024, 1024)] {
        let mut group = c.benchmark_group(format!("linear_{d_in}x{d_out}_batch{BATCH}"));
        let x = weights(BATCH * d_in, 0.0);
        for sparsity in SPARSITIES {
            let w = weights(d_in * d_out, sparsity);
            let id = format!("{:.0}pct", sparsity * 100.0);
            let csr = Csr::from_dense_transposed(d_in, d_out, &w).expect("shapes agree");
            group.bench_with_input(
                BenchmarkId::new("host/sparse_linear", &id),
                &csr,
                |b, csr| b.iter(|| csr.linear(black_box(&x), BATCH).expect("shapes agree")),
            );
            group.bench_with_input(
                BenchmarkId::new("host/sparse_linear_1thread", &id),
                &csr,
                |b, csr| {
                    single_thread.install(|| {
                        b.iter(|| csr.linear(black_box(&x), BATCH).expect("shapes agree"))
                    })
                },
            );
            group.bench_with_input(BenchmarkId::new("host/dense_sgemm", &id), &w, |b, w| {
                b.iter(|| dense_sgemm(black_box(&x), w, BATCH, d_in, d_out))
            });
            if let Some(device) = &flex {
                let xt = Tensor::<2>::from_data(TensorData::new(x.clone(), [BATCH, d_in]), device);
                let wt = Tensor::<2>::from_data(TensorData::new(w.clone(), [d_in, d_out]), device);
                group.bench_with_input(BenchmarkId::new("flex/dense_matmul", &id), &wt, |b, wt| {
                    b.iter(|| {
                        let y = xt.clone().matmul(wt.clone());
                        sync(device).expect("flex sync");
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
    criterion::criterion_group!(benches, super::sparse);
}
use group::benches;
criterion_main!(benches);
