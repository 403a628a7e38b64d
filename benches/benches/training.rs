//! One training step and one forward pass of LeNet-300-100 on MNIST-shaped data, per backend.

use std::time::{Duration, Instant};

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Int, Tensor, TensorData};
use criterion::{Criterion, criterion_main};
use ember_tensor::{BackendKind, Classifier, device::sync};
use ember_zoo::MlpConfig;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SEED: u64 = 1;

fn inputs(batch: usize, device: &Device) -> (Tensor<4>, Tensor<1, Int>) {
    let pixels: Vec<f32> = (0..batch * 784)
        .map(|i| ((i * 37) % 255) as f32 / 255.0)
        .collect();
    let labels: Vec<i64> = (0..batch).map(|i| (i % 10) as i64).collect();
    (
        Tensor::from_data(TensorData::new(pixels, [batch, 1, 28, 28]), device),
        Tensor::from_data(TensorData::new(labels, [batch]), device),
    )
}

fn bench_backend(c: &mut Criterion, backend: BackendKind) {
    let Ok(device) = backend.device() else { return };
    device.seed(SEED);
    let model = MlpConfig::lenet_300_100(784, 10)
        .init(&device)
        .expect("valid config");

    // Forward pass, batch 1000 (evaluation).
    let (images, _) = inputs(1000, &device);
    c.bench_function(&format!("{backend}/mlp_forward/batch1000"), |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                let logits = model.forward(images.clone());
                sync(&device).expect("device sync");
                drop(logits);
            }
            start.elapsed()
        })
    });

    // Training step, batch 128: forward, backward, Adam.
    let autodiff = device.clone().autodiff();
    let (images, labels) = inputs(128, &autodiff);
    let loss_fn = CrossEntropyLossConfig::new().init(&autodiff);
    let mut optimizer = AdamConfig::new().init();
    let mut trained = Some(model.fork(&autodiff).train());
    c.bench_function(&format!("{backend}/mlp_train_step/batch128"), |b| {
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iters {
                let model = trained.take().expect("model is put back after each step");
                let start = Instant::now();
                let loss = loss_fn.forward(model.forward(images.clone()), labels.clone());
                let grads = GradientsParams::from_grads(loss.backward(), &model);
                let model = optimizer.step(1e-3, model, grads);
                sync(&device).expect("device sync");
                elapsed += start.elapsed();
                trained = Some(model);
            }
            elapsed
        })
    });
}

fn training(c: &mut Criterion) {
    for backend in BackendKind::compiled() {
        bench_backend(c, backend);
    }
}

// criterion_group! generates an undocumented public function.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::training);
}
use group::benches;
criterion_main!(benches);
