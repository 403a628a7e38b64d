//! Backend parity: the same seeded MLP gives the same forward pass and the same weights after
//! one training step on every enabled backend (flex, ndarray, and wgpu with `--features wgpu`),
//! and seeded training is bit-for-bit reproducible on the CPU backends.

#![allow(clippy::unwrap_used)] // a test fails loudly, which is what it is for

mod common;

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::tensor::{Device, Int, Tensor};
use common::{flex_device, max_abs_diff, synthetic_split, weights};
use ember_tensor::testing::seeded_lock as seeded;
use ember_zoo::{Classifier, LabeledData, Mlp, MlpConfig, TrainConfig, train};

/// Logits of a 3-layer MLP computed by different kernels differ by float rounding only.
const FORWARD_TOLERANCE: f32 = 1e-4;
/// One Adam step moves a weight by at most the learning rate (1e-3); the backends' updates may
/// differ by rounding of the gradient only.
const STEP_TOLERANCE: f32 = 2e-5;
/// Adam's first step is about `lr * sign(g)`, so it compares little more than gradient signs:
/// the gradients themselves are compared too, relative to the largest of each tensor.
const GRADIENT_TOLERANCE: f32 = 1e-4;
const BATCH: usize = 64;
const SEED: u64 = 7;

fn seeded_mlp(device: &Device) -> Mlp {
    device.seed(SEED);
    MlpConfig {
        input: 784,
        hidden: vec![64, 32],
        classes: 10,
        dropout: 0.0,
    }
    .init(device)
    .expect("valid config")
}

fn one_step() -> TrainConfig {
    TrainConfig {
        epochs: 1,
        batch_size: BATCH,
        progress: false,
        seed: SEED,
        ..TrainConfig::default()
    }
}

ember_tensor::backend_tests! {
    fn forward_and_one_training_step_match_flex(device) {
        let _seeded = seeded();
        let data = synthetic_split(BATCH, 1);
        let indices: Vec<usize> = (0..BATCH).collect();
        let reference = seeded_mlp(&flex_device());
        let model = reference.clone().to_device(&device);

        let (images, _) = data.batch(&indices, &flex_device());
        let expected = reference.forward(images.clone()).into_data();
        let got = model.forward(images.clone().to_device(&device)).into_data();
        let diff = max_abs_diff(&expected, &got);
        assert!(diff <= FORWARD_TOLERANCE, "forward differs from flex by {diff}");

        let (images, labels) = data.batch(&indices, &flex_device());
        let expected = gradients(&reference, images.clone(), labels.clone(), &flex_device());
        let got = gradients(&model, images, labels, &device);
        for ((layer, expected), got) in expected.iter().enumerate().zip(&got) {
            let scale = expected.iter().fold(0.0f32, |m, g| m.max(g.abs()));
            assert!(scale > 0.0, "layer {layer} has no gradient");
            let diff = expected.iter().zip(got).fold(0.0f32, |m, (e, g)| m.max((e - g).abs()));
            assert!(
                diff <= GRADIENT_TOLERANCE * scale,
                "layer {layer}'s weight gradient differs from flex by {diff} (largest {scale})"
            );
        }

        let (reference, _) = train(reference, &data, &one_step(), &flex_device()).expect("flex step");
        let (model, _) = train(model, &data, &one_step(), &device).expect("step");
        for ((path, expected), (_, got)) in weights(&reference).iter().zip(weights(&model).iter()) {
            let diff = max_abs_diff(expected, got);
            assert!(diff <= STEP_TOLERANCE, "{path} differs from flex by {diff} after one step");
        }
    }

    fn model_moves_between_devices_unchanged(device) {
        let _seeded = seeded();
        let model = seeded_mlp(&flex_device());
        let back = model.clone().to_device(&device).to_device(&flex_device());
        assert_eq!(weights(&model), weights(&back));
    }
}

/// The cross-entropy gradient of every layer's weight, on `device`, as host values.
fn gradients(
    model: &Mlp,
    images: Tensor<4>,
    labels: Tensor<1, Int>,
    device: &Device,
) -> Vec<Vec<f32>> {
    let autodiff = device.clone().autodiff();
    let model = model.clone().fork(&autodiff).train();
    let logits = model.forward(images.to_device(&autodiff));
    let loss = CrossEntropyLossConfig::new()
        .init(&autodiff)
        .forward(logits, labels.to_device(&autodiff));
    let grads = loss.backward();
    model
        .layers
        .iter()
        .map(|layer| {
            let grad = layer
                .weight
                .val()
                .grad(&grads)
                .expect("a trained weight has a gradient");
            grad.into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .expect("f32 data")
        })
        .collect()
}

/// Seeded runs are bit-for-bit reproducible on the CPU backends.
fn assert_reproducible(device: Device) {
    let _seeded = seeded();
    let data = synthetic_split(256, 3);
    let config = TrainConfig {
        epochs: 2,
        batch_size: 32,
        progress: false,
        seed: SEED,
        ..TrainConfig::default()
    };
    let run = |seed: u64| {
        let (model, report) = train(
            seeded_mlp_with(&device, seed),
            &data,
            &TrainConfig {
                seed,
                ..config.clone()
            },
            &device,
        )
        .expect("training");
        (
            weights(&model),
            report.epochs.iter().map(|e| e.loss).collect::<Vec<_>>(),
        )
    };
    let (first, first_losses) = run(SEED);
    let (second, second_losses) = run(SEED);
    assert_eq!(first, second, "same seed, different weights");
    assert_eq!(first_losses, second_losses);
    let (other, _) = run(SEED + 1);
    assert_ne!(first, other, "a different seed must give different weights");
}

fn seeded_mlp_with(device: &Device, seed: u64) -> Mlp {
    device.seed(seed);
    MlpConfig {
        input: 784,
        hidden: vec![32],
        classes: 10,
        dropout: 0.2,
    }
    .init(device)
    .expect("valid config")
}

#[test]
fn seeded_training_is_bit_identical_on_flex() {
    assert_reproducible(flex_device());
}

#[test]
#[allow(deprecated)]
fn seeded_training_is_bit_identical_on_ndarray() {
    assert_reproducible(Device::ndarray());
}

#[test]
fn forward_shape_is_batch_by_classes() {
    let _seeded = seeded();
    let model = seeded_mlp(&flex_device());
    assert_eq!(
        model
            .forward(Tensor::zeros([3, 1, 28, 28], &flex_device()))
            .dims(),
        [3, 10]
    );
    assert_eq!(
        model.num_params(),
        784 * 64 + 64 + 64 * 32 + 32 + 32 * 10 + 10
    );
}
