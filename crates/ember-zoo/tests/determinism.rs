//! Every seeded pass, run twice, gives the same weights bit for bit on each CPU backend:
//! training, gradual pruning, static quantization (calibration), distillation and structured
//! pruning with fine-tuning. Hashes of the weights are compared, so a single flipped bit fails.

#![allow(clippy::unwrap_used)] // a test fails loudly, which is what it is for

mod common;

use burn::module::Module;
use burn::tensor::Device;
use common::synthetic_split;
use ember_tensor::testing::seeded_lock;
use ember_tensor::{BackendKind, param_values, stats::read_f32};
use ember_zoo::{Mlp, MlpConfig, Split, TrainConfig, train};
use sha2::{Digest, Sha256};

/// SHA-256 of every parameter's values, in declaration order.
fn fingerprint<M: Module>(model: &M) -> String {
    let mut hash = Sha256::new();
    for p in param_values(model) {
        hash.update(p.info.path.as_bytes());
        for v in read_f32(p.flat).unwrap() {
            hash.update(v.to_le_bytes());
        }
    }
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn config() -> MlpConfig {
    MlpConfig {
        input: 784,
        hidden: vec![32, 16],
        classes: 10,
        dropout: 0.1,
    }
}

fn mlp(device: &Device) -> Mlp {
    device.seed(3);
    config().init(device).unwrap()
}

fn training() -> TrainConfig {
    TrainConfig {
        epochs: 1,
        batch_size: 32,
        progress: false,
        seed: 5,
        ..TrainConfig::default()
    }
}

/// The passes, each from a freshly seeded model; returns one fingerprint per pass.
fn passes(data: &Split, device: &Device) -> Vec<(&'static str, String)> {
    let trained = train(mlp(device), data, &training(), device).unwrap().0;
    let gradual = ember_prune::train_gradual(
        mlp(device),
        data,
        &training(),
        &ember_prune::PruneConfig::global_magnitude(0.5),
        &ember_prune::Gradual {
            initial: 0.0,
            target: 0.5,
            start_step: 0,
            end_step: 4,
            every: 2,
        },
        device,
    )
    .unwrap()
    .0;
    let quantized = ember_quant::quantize_static(
        trained.clone(),
        &ember_quant::StaticConfig::default(),
        data,
        device,
    )
    .unwrap();
    let distilled = ember_distill::distill(
        mlp(device),
        &trained,
        data,
        &training(),
        &ember_distill::loss::SoftTargetConfig {
            temperature: 4.0,
            alpha: 0.7,
        },
        ember_distill::TeacherOutputs::OnTheFly,
        device,
    )
    .unwrap()
    .0;
    let config = config();
    let groups = config.unit_groups("");
    let cut =
        ember_prune::StructuredConfig::new(ember_prune::UnitCriterion::Random { seed: 9 }, 0.5);
    let kept = ember_prune::select_units(&trained, &groups, &cut).unwrap();
    let narrow = config.with_kept("", &kept);
    let small =
        ember_prune::shrink(&trained, &groups, &kept, narrow.init(device).unwrap()).unwrap();
    let small = train(small, data, &training(), device).unwrap().0;
    vec![
        ("training", fingerprint(&trained)),
        ("gradual pruning", fingerprint(&gradual)),
        ("static quantization", fingerprint(&quantized.model)),
        ("distillation", fingerprint(&distilled)),
        ("structured pruning and fine-tuning", fingerprint(&small)),
    ]
}

#[test]
fn seeded_passes_repeat_bit_for_bit_on_each_cpu_backend() {
    let _seeded = seeded_lock();
    let data = synthetic_split(256, 1);
    for kind in [BackendKind::Flex, BackendKind::NdArray] {
        let device = kind.device().unwrap();
        let first = passes(&data, &device);
        let second = passes(&data, &device);
        for ((pass, a), (_, b)) in first.iter().zip(&second) {
            assert_eq!(a, b, "{pass} on {}", kind.name());
        }
    }
}
