//! Mixed precision, optimizer offload and gradient checkpointing in the shared training loop,
//! each against the plain f32, single-device run of the same seed.
#![allow(clippy::unwrap_used, missing_docs)]

use burn::module::Module;
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, Relu};
use burn::tensor::{DType, Device, Tensor};
use ember_tensor::testing::{Blobs, seeded_lock};
use ember_tensor::{
    Batch, Classifier, Error, FloatType, LossScaleConfig, MixedPrecision, TrainConfig, evaluate,
    fit_with_hook, param_values, train,
};

#[derive(Module, Debug)]
struct Mlp {
    fc1: Linear,
    norm: BatchNorm,
    fc2: Linear,
    relu: Relu,
}

impl Mlp {
    fn new(device: &Device) -> Self {
        Self {
            fc1: LinearConfig::new(Blobs::DIM, 32).init(device),
            norm: BatchNormConfig::new(32).init(device),
            fc2: LinearConfig::new(32, 4).init(device),
            relu: Relu::new(),
        }
    }
}

impl Classifier for Mlp {
    fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let hidden = self
            .norm
            .forward(self.fc1.forward(images.flatten::<2>(1, 3)));
        self.fc2.forward(self.relu.forward(hidden))
    }
}

fn config() -> TrainConfig {
    TrainConfig {
        epochs: 3,
        batch_size: 32,
        learning_rate: 1e-2,
        progress: false,
        ..TrainConfig::default()
    }
}

/// Train a fresh seeded MLP on the blobs with `config`.
fn trained(config: &TrainConfig, device: &Device) -> (Mlp, ember_tensor::TrainReport) {
    device.seed(7);
    let model = Mlp::new(device);
    train(model, &Blobs::new(1_024, 4, 3), config, device).unwrap()
}

fn accuracy(model: &Mlp, device: &Device) -> f64 {
    evaluate(model, &Blobs::new(2_000, 4, 11), 500, device)
        .unwrap()
        .accuracy
}

/// Largest absolute difference between the two models' parameters.
fn max_abs_diff(a: &Mlp, b: &Mlp) -> f32 {
    param_values(a)
        .iter()
        .zip(param_values(b))
        .map(|(x, y)| {
            let x: Vec<f32> = x
                .flat
                .to_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .unwrap();
            let y: Vec<f32> = y
                .flat
                .to_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .unwrap();
            x.iter()
                .zip(&y)
                .map(|(p, q)| (p - q).abs())
                .fold(0.0, f32::max)
        })
        .fold(0.0, f32::max)
}

/// Train in f32 and in `precision` on `device`: the mixed run keeps f32 weights and running
/// statistics, computed in half precision (its weights differ), and lands within a point of
/// the f32 accuracy. Returns the mixed run's report.
fn mixed_matches_f32(precision: MixedPrecision, device: &Device) -> ember_tensor::TrainReport {
    let (f32_model, _) = trained(&config(), device);
    let mixed_config = TrainConfig {
        precision: Some(precision),
        ..config()
    };
    let (mixed, report) = trained(&mixed_config, device);
    assert_eq!(mixed.fc1.weight.val().dtype(), DType::F32);
    assert_eq!(mixed.norm.running_var.value().dtype(), DType::F32);
    assert!(max_abs_diff(&f32_model, &mixed) > 1e-4);
    let (a, b) = (accuracy(&f32_model, device), accuracy(&mixed, device));
    assert!(a > 80.0, "f32 run reached only {a} %");
    assert!((a - b).abs() < 1.0, "f32 {a} % against mixed {b} %");
    report
}

/// Train on `device` with Adam there and with Adam offloaded to `offload`: the weights agree
/// within `tolerance`, the offloaded state sits on `offload`, and the model comes back to
/// `device`. Returns both reports.
#[cfg(any(
    all(feature = "flex", feature = "ndarray"),
    all(feature = "flex", feature = "wgpu")
))]
fn offload_matches(
    device: &Device,
    offload: ember_tensor::BackendKind,
    tolerance: f32,
) -> (ember_tensor::TrainReport, ember_tensor::TrainReport) {
    let (on_device, on_device_report) = trained(&config(), device);
    let offloaded_config = TrainConfig {
        offload: Some(offload),
        ..config()
    };
    let (offloaded, report) = trained(&offloaded_config, device);
    let diff = max_abs_diff(&on_device, &offloaded);
    assert!(diff <= tolerance, "offloaded weights differ by {diff}");
    assert_eq!(report.optimizer_device, offload.name());
    assert_eq!(offloaded.fc1.weight.val().device(), *device);
    (on_device_report, report)
}

#[test]
fn bf16_mixed_precision_keeps_f32_weights_and_the_f32_accuracy() {
    let _seeded = seeded_lock();
    let report = mixed_matches_f32(MixedPrecision::bf16(), &Device::flex());
    assert_eq!(report.skipped_steps, 0);
    assert_eq!(report.final_loss_scale, None);
}

#[test]
fn the_compute_view_casts_all_but_the_kept_parameters_and_its_gradients_reach_the_f32_weights() {
    let device = Device::flex().autodiff();
    let model = Mlp::new(&device).train();
    let precision = MixedPrecision {
        keep_f32: vec!["fc2.*".into()],
        ..MixedPrecision::bf16()
    };
    let view = ember_tensor::train::precision::compute_view(&model, &precision).unwrap();
    assert_eq!(view.fc1.weight.val().dtype(), DType::BF16);
    assert_eq!(view.fc2.weight.val().dtype(), DType::F32);
    let x = Tensor::<2>::ones([2, Blobs::DIM], &device).cast(DType::BF16);
    let out = view.fc1.forward(x).cast(DType::F32).sum();
    let grads = burn::optim::GradientsParams::from_grads(out.backward(), &model);
    let grad = grads.get::<2>(model.fc1.weight.id).unwrap();
    assert_eq!(grad.dtype(), DType::F32);
    // d(sum(x W + b)) / dW = column sums of x: every entry 2.
    let values: Vec<f32> = grad.to_data().try_to_vec::<f32>().unwrap();
    assert!(values.iter().all(|&g| g == 2.0), "{values:?}");
}

#[test]
fn an_overflowing_f16_step_is_skipped_and_leaves_the_weights_untouched() {
    let _seeded = seeded_lock();
    let device = Device::flex();
    device.seed(7);
    let model = Mlp::new(&device);
    let f16_config = TrainConfig {
        epochs: 1,
        precision: Some(MixedPrecision {
            loss_scale: Some(LossScaleConfig {
                initial: 1024.0,
                growth_interval: 1_000,
                ..LossScaleConfig::default()
            }),
            ..MixedPrecision::f16()
        }),
        ..config()
    };
    let cross_entropy =
        burn::nn::loss::CrossEntropyLossConfig::new().init(&device.clone().autodiff());
    let mut calls = 0;
    let mut snapshots = Vec::new();
    let (_, report) = fit_with_hook(
        model,
        &Blobs::new(256, 4, 3),
        &f16_config,
        &device,
        |model: &Mlp, batch: Batch| {
            calls += 1;
            let logits = model.forward(batch.inputs);
            // The third step's logits overflow f16 (65504) once scaled: its gradients are Inf.
            let logits = if calls == 3 {
                logits.mul_scalar(1e4)
            } else {
                logits
            };
            Ok::<_, Error>(cross_entropy.forward(logits.cast(DType::F32), batch.labels))
        },
        |_, model: Mlp| {
            snapshots.push(model.fc1.weight.val().into_data());
            Ok::<_, Error>(model)
        },
    )
    .unwrap();
    assert_eq!(report.skipped_steps, 1);
    assert_eq!(report.final_loss_scale, Some(512.0));
    // Steps 2 and 3 end with the same weights: step 3 was skipped.
    assert_eq!(snapshots[1], snapshots[2]);
    assert_ne!(snapshots[2], snapshots[3]);
}

#[test]
fn mixed_precision_on_a_backend_without_half_floats_is_a_typed_error() {
    #[allow(deprecated)]
    let device = Device::ndarray();
    let f16 = TrainConfig {
        precision: Some(MixedPrecision::f16()),
        ..config()
    };
    let err = train(Mlp::new(&device), &Blobs::new(64, 4, 3), &f16, &device).unwrap_err();
    assert!(
        matches!(
            err,
            Error::UnsupportedDType {
                dtype: DType::F16,
                ..
            }
        ),
        "{err}"
    );
    let f32_compute = TrainConfig {
        precision: Some(MixedPrecision {
            compute: FloatType::F32,
            ..MixedPrecision::bf16()
        }),
        ..config()
    };
    let err = train(
        Mlp::new(&device),
        &Blobs::new(64, 4, 3),
        &f32_compute,
        &device,
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidConfig {
                field: "precision.compute",
                ..
            }
        ),
        "{err}"
    );
}

#[cfg(all(feature = "flex", feature = "ndarray"))]
#[test]
fn an_offload_device_that_cannot_hold_the_weights_is_a_typed_error() {
    // A model kept in f16 offloaded to ndarray, which has no f16.
    let device = Device::flex();
    let half = Mlp::new(&device).map(&mut ToF16);
    let config = TrainConfig {
        offload: Some(ember_tensor::BackendKind::NdArray),
        ..config()
    };
    let err = train(half, &Blobs::new(64, 4, 3), &config, &device).unwrap_err();
    assert!(
        matches!(
            err,
            Error::UnsupportedDType {
                dtype: DType::F16,
                ..
            }
        ),
        "{err}"
    );
}

#[cfg(all(feature = "flex", feature = "ndarray"))]
struct ToF16;

#[cfg(all(feature = "flex", feature = "ndarray"))]
impl burn::module::ModuleMapper for ToF16 {
    fn map_float<const D: usize>(
        &mut self,
        param: burn::module::Param<Tensor<D>>,
    ) -> burn::module::Param<Tensor<D>> {
        param.map(|t| t.cast(DType::F16))
    }
}

// The offload device is named by backend, which needs this crate's backend features (on in
// the workspace's test build, which unifies them).
#[cfg(all(feature = "flex", feature = "ndarray"))]
#[test]
fn offloaded_adam_gives_the_on_device_weights_and_keeps_its_state_off_the_training_device() {
    let _seeded = seeded_lock();
    #[allow(deprecated)]
    let device = Device::ndarray();
    // Two backends' float kernels, equal up to rounding after 96 Adam steps (bit-identical on
    // the machines tried).
    let (on_device_report, report) =
        offload_matches(&device, ember_tensor::BackendKind::Flex, 1e-6);
    assert_eq!(on_device_report.optimizer_device, "ndarray");
    // Adam keeps two moments per weight: at least 8 bytes a parameter.
    let weights = (Blobs::DIM * 32 + 32 + 32 * 4 + 4) * 8;
    assert!(report.optimizer_state_bytes >= weights, "{report:?}");
}

#[test]
fn gradient_checkpointing_trains_to_the_same_weights() {
    let _seeded = seeded_lock();
    let device = Device::flex();
    let (plain, _) = trained(&config(), &device);
    let checkpointed_config = TrainConfig {
        checkpointing: true,
        ..config()
    };
    let (checkpointed, _) = trained(&checkpointed_config, &device);
    let diff = max_abs_diff(&plain, &checkpointed);
    // Recomputing an activation runs the same kernel on the same inputs.
    assert_eq!(diff, 0.0, "checkpointed weights differ by {diff}");
}

// On the GPU backend (Mesa's software Vulkan device in CI): mixed precision and the optimizer
// offloaded to the CPU, the split ZeRO-Offload makes. bf16 is not offered there; f16 is.
#[cfg(all(feature = "wgpu", feature = "flex"))]
mod on_wgpu {
    use super::*;

    fn wgpu() -> Device {
        ember_tensor::BackendKind::Wgpu.device().unwrap()
    }

    #[test]
    fn f16_mixed_precision_trains_to_the_f32_accuracy_with_f32_weights() {
        let _seeded = seeded_lock();
        mixed_matches_f32(MixedPrecision::f16(), &wgpu());
    }

    #[test]
    fn adam_offloaded_to_the_cpu_gives_the_on_gpu_weights() {
        let _seeded = seeded_lock();
        // The forward and backward passes run on the GPU in both runs; only Adam's update
        // moves to the CPU, whose float rounding differs from the GPU's in the last bits.
        offload_matches(&wgpu(), ember_tensor::BackendKind::Flex, 1e-4);
    }
}
