//! Ember's passes through burn-train's Learner, against Ember's own loop on the same seed: a
//! pruned fine-tune (masks exact), a distillation, and both on two devices with the optimizer
//! state sharded between them.
#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;

use burn::module::Module;
use burn::nn::{Linear, LinearConfig, Relu};
use burn::optim::AdamConfig;
use burn::tensor::{Device, Tensor};
use burn::train::{
    ExecutionStrategy, Learner, LearnerModel, MultiDeviceOptim, SupervisedTraining,
    TrainingStrategy,
};
use ember_distill::TeacherOutputs;
use ember_distill::loss::SoftTargetConfig;
use ember_prune::{PruneConfig, prune};
use ember_tensor::mask::read_flags;
use ember_tensor::testing::{Blobs, seeded_lock};
use ember_tensor::{Classifier, TrainConfig, evaluate, masks, train};
use ember_train::data::loaders;
use ember_train::{Distillation, Supervised};

#[derive(Module, Debug)]
struct Mlp {
    fc1: Linear,
    fc2: Linear,
    relu: Relu,
}

impl Mlp {
    fn new(hidden: usize, device: &Device) -> Self {
        Self {
            fc1: LinearConfig::new(Blobs::DIM, hidden).init(device),
            fc2: LinearConfig::new(hidden, 4).init(device),
            relu: Relu::new(),
        }
    }
}

impl Classifier for Mlp {
    fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        self.fc2.forward(
            self.relu
                .forward(self.fc1.forward(images.flatten::<2>(1, 3))),
        )
    }
}

const EPOCHS: usize = 3;
const BATCH: usize = 32;
const LR: f64 = 1e-2;

fn blobs() -> (Arc<Blobs>, Arc<Blobs>) {
    (
        Arc::new(Blobs::new(2_048, 4, 3)),
        Arc::new(Blobs::new(2_000, 4, 11)),
    )
}

/// Ember's loop at the Learner's settings: Adam at a constant rate.
fn ember_config() -> TrainConfig {
    TrainConfig {
        epochs: EPOCHS,
        batch_size: BATCH,
        learning_rate: LR,
        schedule: ember_tensor::LrSchedule::Constant,
        progress: false,
        ..TrainConfig::default()
    }
}

/// `model` trained by burn-train's Learner for [`EPOCHS`] on `strategy`.
fn through_learner<M>(model: M, strategy: ExecutionStrategy) -> M
where
    M: LearnerModel
        + burn::train::TrainStep<Input = ember_train::data::ClassBatch>
        + burn::train::InferenceStep<Input = ember_train::data::ClassBatch>,
{
    through_learner_at(model, strategy, BATCH)
}

/// [`through_learner`] with `batch` samples per device and step.
fn through_learner_at<M>(model: M, strategy: ExecutionStrategy, batch: usize) -> M
where
    M: LearnerModel
        + burn::train::TrainStep<Input = ember_train::data::ClassBatch>
        + burn::train::InferenceStep<Input = ember_train::data::ClassBatch>,
{
    let (train_data, valid_data) = blobs();
    let (train_loader, valid_loader) = loaders(train_data, valid_data, batch, 42);
    let dir = tempfile::tempdir().unwrap();
    let result = SupervisedTraining::new(dir.path(), train_loader, valid_loader)
        .num_epochs(EPOCHS)
        .with_training_strategy(TrainingStrategy::Default(strategy))
        .launch(Learner::new(model, AdamConfig::new().init(), LR));
    assert!(result.error.is_none(), "{:?}", result.error);
    result.model
}

fn accuracy(model: &impl Classifier, device: &Device) -> f64 {
    evaluate(model, &*blobs().1, 500, device).unwrap().accuracy
}

fn pruned(device: &Device) -> Mlp {
    device.seed(5);
    let model = ember_tensor::init_now(Mlp::new(32, device));
    prune(model, &PruneConfig::global_magnitude(0.5)).unwrap().0
}

/// `model` still carries the masks `pruned` was given, and every masked weight is exactly
/// zero. (The effective weight applies the mask, so the zeros alone would hold even for a
/// model whose masks had changed.)
fn masks_hold(model: &Mlp, pruned: &Mlp) {
    let masks = masks(model);
    let expected = ember_tensor::masks(pruned);
    assert_eq!(masks.len(), 2, "{:?}", masks.keys());
    for (path, mask) in masks {
        let keep = read_flags(mask).unwrap();
        assert_eq!(
            keep,
            read_flags(expected[&path].clone()).unwrap(),
            "{path}: the mask changed"
        );
        let layer = if path.starts_with("fc1") {
            &model.fc1
        } else {
            &model.fc2
        };
        let weights: Vec<f32> = layer
            .weight
            .val()
            .flatten::<1>(0, 1)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let zeros = weights.iter().filter(|w| **w == 0.0).count();
        assert!(
            keep.iter().zip(&weights).all(|(k, w)| *k || *w == 0.0),
            "{path}: a masked weight moved"
        );
        assert!(zeros >= keep.iter().filter(|k| !**k).count());
    }
}

#[test]
fn a_pruned_fine_tune_through_the_learner_keeps_its_masks_and_matches_embers_loop() {
    let _seeded = seeded_lock();
    let device = Device::flex();
    let (ember, _) = train(pruned(&device), &*blobs().0, &ember_config(), &device).unwrap();
    let learner = through_learner(
        Supervised::new(pruned(&device), &device),
        ExecutionStrategy::SingleDevice(device.clone().autodiff()),
    )
    .into_inner()
    .valid();
    masks_hold(&learner, &pruned(&device));
    let (a, b) = (accuracy(&ember, &device), accuracy(&learner, &device));
    assert!(a > 85.0, "Ember's loop reached only {a} %");
    // Two loops, two shuffles of the same data: within a few points of each other.
    assert!(
        (a - b).abs() < 3.0,
        "Ember's loop {a} % against the Learner's {b} %"
    );
}

#[test]
fn distillation_through_the_learner_matches_embers_loop() {
    let _seeded = seeded_lock();
    let device = Device::flex();
    device.seed(1);
    let (teacher, _) = train(
        Mlp::new(64, &device),
        &*blobs().0,
        &TrainConfig {
            epochs: 6,
            ..ember_config()
        },
        &device,
    )
    .unwrap();
    let soft = SoftTargetConfig {
        temperature: 4.0,
        alpha: 0.7,
    };
    let student = |device: &Device| {
        device.seed(2);
        ember_tensor::init_now(Mlp::new(8, device))
    };
    let (ember, _) = ember_distill::distill(
        student(&device),
        &teacher,
        &*blobs().0,
        &ember_config(),
        &soft,
        TeacherOutputs::OnTheFly,
        &device,
    )
    .unwrap();
    let probe = Tensor::<4>::zeros([2, 1, 1, Blobs::DIM], &device);
    let pair = Distillation::new(student(&device), teacher.clone(), soft, probe, &device).unwrap();
    let learner = through_learner(
        pair,
        ExecutionStrategy::SingleDevice(device.clone().autodiff()),
    );
    // The teacher did not move.
    let before = ember_tensor::param_values(&teacher);
    let after = ember_tensor::param_values(&learner.teacher.valid());
    for (x, y) in before.iter().zip(&after) {
        assert_eq!(x.flat.to_data(), y.flat.to_data(), "{}", x.info.path);
    }
    let learner = learner.into_student().valid();
    let (a, b) = (accuracy(&ember, &device), accuracy(&learner, &device));
    assert!(a > 80.0, "Ember's loop reached only {a} %");
    assert!(
        (a - b).abs() < 3.0,
        "Ember's loop {a} % against the Learner's {b} %"
    );
}

#[test]
fn a_distillation_pair_whose_classes_differ_is_a_typed_error() {
    let device = Device::flex();
    let student = Mlp::new(8, &device);
    let mut teacher = Mlp::new(8, &device);
    teacher.fc2 = LinearConfig::new(8, 5).init(&device);
    let probe = Tensor::<4>::zeros([2, 1, 1, Blobs::DIM], &device);
    let soft = SoftTargetConfig {
        temperature: 4.0,
        alpha: 0.7,
    };
    assert!(Distillation::new(student, teacher, soft, probe, &device).is_err());
}

#[test]
fn two_devices_with_sharded_optimizer_state_train_a_pruned_model_as_one_does() {
    let _seeded = seeded_lock();
    let flex = Device::flex();
    #[allow(deprecated)]
    let ndarray = Device::ndarray();
    // Each step of the two devices takes one batch on each and sums their gradients: one
    // device compares at twice the batch, the same samples per step.
    let single = through_learner_at(
        Supervised::new(pruned(&flex), &flex),
        ExecutionStrategy::SingleDevice(flex.clone().autodiff()),
        2 * BATCH,
    )
    .into_inner()
    .valid();
    let sharded = through_learner(
        Supervised::new(pruned(&flex), &flex),
        ExecutionStrategy::MultiDevice(
            vec![flex.clone().autodiff(), ndarray.autodiff()],
            MultiDeviceOptim::OptimSharded,
        ),
    )
    .into_inner()
    .valid()
    .fork(&flex);
    masks_hold(&sharded, &pruned(&flex));
    let (a, b) = (accuracy(&single, &flex), accuracy(&sharded, &flex));
    assert!(a > 85.0, "one device reached only {a} %");
    assert!((a - b).abs() < 3.0, "one device {a} % against two {b} %");
}

#[test]
fn quantization_aware_training_through_the_learner_converts_to_int8_at_the_loops_accuracy() {
    use ember_quant::{StaticConfig, prepare_qat};
    use ember_zoo::MlpConfig;

    let _seeded = seeded_lock();
    let device = Device::flex();
    let prepared = || {
        device.seed(9);
        let model = MlpConfig {
            input: Blobs::DIM,
            hidden: vec![32],
            classes: 4,
            dropout: 0.0,
        }
        .init(&device)
        .unwrap();
        prepare_qat(model, &StaticConfig::qat()).unwrap()
    };
    let qat = prepared();
    let (trained, _) = train(qat.model.clone(), &*blobs().0, &ember_config(), &device).unwrap();
    let ember = qat.convert(trained).unwrap();

    let qat = prepared();
    let trained = through_learner(
        Supervised::new(qat.model.clone(), &device),
        ExecutionStrategy::SingleDevice(device.clone().autodiff()),
    )
    .into_inner()
    .valid();
    let learner = qat.convert(trained).unwrap();
    for (name, weight) in &learner.weights {
        assert!(
            weight.values().iter().all(|v| (-128..=127).contains(v)),
            "{name}"
        );
    }
    let (a, b) = (
        accuracy(&ember.model, &device),
        accuracy(&learner.model, &device),
    );
    assert!(a > 85.0, "Ember's loop reached only {a} %");
    assert!(
        (a - b).abs() < 3.0,
        "Ember's loop {a} % against the Learner's {b} %"
    );
}
