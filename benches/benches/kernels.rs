//! Integer kernels against f32: the int8 GEMM against flex's and ndarray's f32 matmul, the
//! machine's peak rates, and quantized models against their float versions.
//!
//! Every group name ends in the thread count (`_t1`, `_t2`), which is the process's: `cargo
//! xtask bench kernels` runs this bench once with `RAYON_NUM_THREADS=1` and once with 2 and
//! prints the ratios side by side (`target/bench/kernels.json`). Ids:
//! - `gemm_{k}x{n}_t{T}/{flex,ndarray}/f32_matmul/b{batch}`: `x · W + b` in f32;
//! - `gemm_{k}x{n}_t{T}/host/int8_{kernel}/b{batch}`: the same layer in `u8` x `i8` with the
//!   dequantizing epilogue, for every kernel this CPU runs (the portable one at batch 1 only:
//!   it is the reference, not a contender);
//! - `peak_t{T}/host/{int8_vnni,int8_avx2,f32_fma}/{n}`: a loop of the instruction sequence
//!   the kernels spend their time in, `n` rounds on 12 independent registers;
//! - `models_t{T}/flex/{mlp,cnn}_{f32,int8,int8_float_path,int8_avx2}/b{batch}`: LeNet-300-100
//!   (dynamic int8) and LeNet-5 (static int8), float, on the integer kernels, on the float
//!   path with fake-quantized inputs that quantized models took before, and on the AVX2 kernel
//!   forced (only where the CPU has a better one);
//! - `pool_t{T}/flex/{burn,ember}_max_pool2d/256x6x28x28`: burn's 2x2 max pooling against the
//!   drop-in `ember_quant::MaxPool2d`'s host kernel, on LeNet-5's first pooling input.

use std::hint::black_box;

use burn::tensor::{Device, Tensor, TensorData};
use criterion::{BenchmarkId, Criterion, criterion_main};
use ember_benches::values;
use ember_kernels::int8::{self, Activations, Epilogue, Int8Kernel, PackedWeights, WeightLayout};
use ember_quant::{DynamicConfig, StaticConfig, quantize_dynamic, quantize_static};
use ember_tensor::{BackendKind, Classifier, device::sync};
use ember_zoo::{LeNet5Config, MlpConfig, Split};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// BERT-base's feed-forward (768 -> 3072) and a square 4096 layer.
const SHAPES: [(usize, usize); 2] = [(768, 3072), (4096, 4096)];
const BATCHES: [usize; 3] = [1, 64, 256];
/// Rounds of the peak loops: long enough that the call costs nothing.
const PEAK_ROUNDS: usize = 100_000;

fn threads() -> usize {
    rayon::current_num_threads()
}

fn host_devices() -> Vec<(&'static str, Device)> {
    [
        ("flex", BackendKind::Flex),
        ("ndarray", BackendKind::NdArray),
    ]
    .into_iter()
    .filter_map(|(name, kind)| kind.device().ok().map(|d| (name, d)))
    .collect()
}

fn gemm(c: &mut Criterion) {
    for (k, n) in SHAPES {
        let mut group = c.benchmark_group(format!("gemm_{k}x{n}_t{}", threads()));
        group.sample_size(20);
        let w = values(k * n, 1);
        let w_i8: Vec<i8> = w.iter().map(|v| (v * 127.0).round() as i8).collect();
        let packed = PackedWeights::new(&w_i8, k, n, WeightLayout::InputMajor, &[0.01], &[0])
            .expect("valid weights");
        let bias = values(n, 3);
        for batch in BATCHES {
            let id = format!("b{batch}");
            let x = values(batch * k, 2);
            let x_u8: Vec<u8> = x.iter().map(|v| ((v + 1.0) * 127.5) as u8).collect();
            let mut out = vec![0.0f32; batch * n];
            for kernel in Int8Kernel::available() {
                if kernel == Int8Kernel::Portable && batch > 1 {
                    continue;
                }
                let name = format!("host/int8_{}", kernel.name());
                group.bench_function(BenchmarkId::new(name, &id), |b| {
                    b.iter(|| {
                        let a = Activations {
                            values: black_box(&x_u8),
                            rows: batch,
                            stride: k,
                            scale: 0.01,
                            zero_point: 128,
                        };
                        let epilogue = Epilogue {
                            bias: Some(&bias),
                            relu: false,
                        };
                        int8::linear(kernel, a, &packed, epilogue, &mut out).expect("shapes agree");
                    })
                });
            }
            for (name, device) in host_devices() {
                let xt = Tensor::<2>::from_data(TensorData::new(x.clone(), [batch, k]), &device);
                let wt = Tensor::<2>::from_data(TensorData::new(w.clone(), [k, n]), &device);
                let bt = Tensor::<1>::from_data(TensorData::new(bias.clone(), [n]), &device);
                group.bench_function(BenchmarkId::new(format!("{name}/f32_matmul"), &id), |b| {
                    b.iter(|| {
                        let y = xt.clone().matmul(wt.clone()) + bt.clone().unsqueeze();
                        sync(&device).expect("sync");
                        y
                    })
                });
            }
        }
        group.finish();
    }
}

fn peak(c: &mut Criterion) {
    let mut group = c.benchmark_group(format!("peak_t{}", threads()));
    group.sample_size(20);
    let id = PEAK_ROUNDS.to_string();
    for kernel in Int8Kernel::available() {
        if int8::peak_loop(kernel, 1).is_none() {
            continue;
        }
        let name = format!("host/int8_{}", kernel.name());
        group.bench_function(BenchmarkId::new(name, &id), |b| {
            b.iter(|| int8::peak_loop(kernel, black_box(PEAK_ROUNDS)))
        });
    }
    if ember_kernels::simd::fma_peak(1).is_some() {
        group.bench_function(BenchmarkId::new("host/f32_fma", &id), |b| {
            b.iter(|| ember_kernels::simd::fma_peak(black_box(PEAK_ROUNDS)))
        });
    }
    group.finish();
}

/// `n` random 28x28 images with labels, as MNIST's split would give them.
fn images(n: usize, seed: u64) -> Split {
    let pixels = values(n * 784, seed)
        .into_iter()
        .map(|v| ((v + 1.0) * 127.5) as u8)
        .collect();
    Split {
        pixels,
        labels: (0..n).map(|i| (i % 10) as u8).collect(),
        rows: 28,
        cols: 28,
    }
}

fn models(c: &mut Criterion) {
    use ember_tensor::LabeledData;
    let device = Device::flex();
    let mut group = c.benchmark_group(format!("models_t{}", threads()));
    group.sample_size(20);
    device.seed(1);
    let mlp = MlpConfig::lenet_300_100(784, 10)
        .init(&device)
        .expect("valid config");
    let cnn = LeNet5Config::new(1, [28, 28], 10)
        .init(&device)
        .expect("valid config");
    let calibration = images(512, 5);
    let mlp_q = quantize_dynamic(mlp.clone(), &DynamicConfig::default()).expect("quantizes");
    let cnn_q = quantize_static(cnn.clone(), &StaticConfig::default(), &calibration, &device)
        .expect("quantizes");
    let (mut mlp_float_path, mut cnn_float_path) = (mlp_q.clone(), cnn_q.clone());
    mlp_float_path.set_integer_kernel(None);
    cnn_float_path.set_integer_kernel(None);
    // The AVX2 kernel forced where the CPU has a better one: what an AVX2-only CPU runs.
    let avx2 = Int8Kernel::avx2().filter(|&k| k != Int8Kernel::detect());
    let (mut mlp_avx2, mut cnn_avx2) = (mlp_q.clone(), cnn_q.clone());
    mlp_avx2.set_integer_kernel(avx2);
    cnn_avx2.set_integer_kernel(avx2);
    let data = images(256, 6);
    for batch in [1usize, 256] {
        let (x, _) = data.batch(&(0..batch).collect::<Vec<_>>(), &device);
        let id = format!("b{batch}");
        let mut time = |name: &str, model: &dyn Fn(Tensor<4>) -> Tensor<2>| {
            group.bench_function(BenchmarkId::new(format!("flex/{name}"), &id), |b| {
                b.iter(|| {
                    let y = model(x.clone());
                    sync(&device).expect("sync");
                    y
                })
            });
        };
        time("mlp_f32", &|x| mlp.forward(x));
        time("mlp_int8", &|x| mlp_q.model.forward(x));
        time("mlp_int8_float_path", &|x| mlp_float_path.model.forward(x));
        time("cnn_f32", &|x| cnn.forward(x));
        time("cnn_int8", &|x| cnn_q.model.forward(x));
        time("cnn_int8_float_path", &|x| cnn_float_path.model.forward(x));
        if avx2.is_some() {
            time("mlp_int8_avx2", &|x| mlp_avx2.model.forward(x));
            time("cnn_int8_avx2", &|x| cnn_avx2.model.forward(x));
        }
    }
    group.finish();
}

/// burn's max pooling against the drop-in's host kernel on LeNet-5's first pooling input.
fn pool(c: &mut Criterion) {
    use burn::nn::pool::MaxPool2dConfig;
    let device = Device::flex();
    let mut group = c.benchmark_group(format!("pool_t{}", threads()));
    group.sample_size(20);
    let config = MaxPool2dConfig::new([2, 2]).with_strides([2, 2]);
    let (burns, ours) = (config.init(), ember_quant::MaxPool2d::new(&config));
    let x = Tensor::<4>::from_data(
        TensorData::new(values(256 * 6 * 28 * 28, 9), [256, 6, 28, 28]),
        &device,
    );
    let id = "256x6x28x28";
    group.bench_function(BenchmarkId::new("flex/burn_max_pool2d", id), |b| {
        b.iter(|| {
            let y = burns.forward(x.clone());
            sync(&device).expect("sync");
            y
        })
    });
    group.bench_function(BenchmarkId::new("flex/ember_max_pool2d", id), |b| {
        b.iter(|| {
            let y = ours.forward(x.clone());
            sync(&device).expect("sync");
            y
        })
    });
    group.finish();
}

// criterion_group! generates an undocumented public function.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(
        benches,
        super::peak,
        super::gemm,
        super::pool,
        super::models
    );
}
use group::benches;
criterion_main!(benches);
