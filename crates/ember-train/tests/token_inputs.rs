//! Every training-side pass over a model that reads token ids (`Tensor<2, Int>`), not images:
//! training and evaluation, mixed precision, distillation, calibration with static
//! quantization, sensitivity, quantization-aware training, gradual pruning, and burn-train's
//! Learner. Before `Input`, such a model had to take its ids as floats in an image tensor.
#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, LinearConfig, Relu};
use burn::optim::AdamConfig;
use burn::tensor::{Device, Int, Tensor};
use burn::train::{ExecutionStrategy, Learner, SupervisedTraining, TrainingStrategy};
use ember_distill::loss::SoftTargetConfig;
use ember_distill::{TeacherOutputs, distill, teacher_logits};
use ember_observe::{CalibrationConfig, ObserverConfig};
use ember_prune::{Gradual, PruneConfig, sparsity_report, train_gradual};
use ember_quant::nn::Linear;
use ember_quant::{
    InputQuant, QuantLayer, QuantLayers, StaticConfig, prepare_qat, quantize_static, sensitivity,
};
use ember_tensor::testing::{Tokens, seeded_lock};
use ember_tensor::{Classifier, LabeledData, MixedPrecision, TrainConfig, evaluate, masks, train};
use ember_train::Supervised;
use ember_train::data::loaders;

type Ids = Tensor<2, Int>;

const CLASSES: usize = 3;

/// Token embeddings averaged over the sequence, then two fully connected layers (Ember's
/// drop-ins, so that their inputs can be quantized).
#[derive(Module, Debug)]
struct BagOfTokens {
    embedding: Embedding,
    hidden: Linear,
    out: Linear,
    relu: Relu,
}

impl BagOfTokens {
    fn new(width: usize, seed: u64, device: &Device) -> Self {
        device.seed(seed);
        ember_tensor::init_now(Self {
            embedding: EmbeddingConfig::new(Tokens::VOCAB, width).init(device),
            hidden: Linear::new(&LinearConfig::new(width, 32), device),
            out: Linear::new(&LinearConfig::new(32, CLASSES), device),
            relu: Relu::new(),
        })
    }

    /// What `hidden` reads: the mean of the sequence's embeddings, `[batch, width]`.
    fn pooled(&self, ids: Ids) -> Tensor<2> {
        self.embedding.forward(ids).mean_dim(1).squeeze_dim::<2>(1)
    }
}

impl Classifier<Ids> for BagOfTokens {
    fn forward(&self, ids: Ids) -> Tensor<2> {
        let hidden = self.relu.forward(self.hidden.forward(self.pooled(ids)));
        self.out.forward(hidden)
    }
}

impl QuantLayers for BagOfTokens {
    fn quant_layers(&mut self) -> Vec<(String, &mut dyn QuantLayer)> {
        vec![
            ("hidden".into(), &mut self.hidden),
            ("out".into(), &mut self.out),
        ]
    }
}

fn splits() -> (Tokens, Tokens) {
    (
        Tokens::new(2_048, CLASSES, 1),
        Tokens::new(1_000, CLASSES, 2),
    )
}

fn config(epochs: usize) -> TrainConfig {
    TrainConfig {
        epochs,
        batch_size: 32,
        learning_rate: 1e-2,
        progress: false,
        ..TrainConfig::default()
    }
}

fn accuracy(model: &BagOfTokens, data: &Tokens, device: &Device) -> f64 {
    evaluate(model, data, 250, device).unwrap().accuracy
}

/// A model trained on the token task, and its accuracy on the test split.
fn trained(width: usize, device: &Device) -> (BagOfTokens, f64) {
    let (train_split, test) = splits();
    let (model, _) = train(
        BagOfTokens::new(width, 7, device),
        &train_split,
        &config(4),
        device,
    )
    .unwrap();
    let acc = accuracy(&model, &test, device);
    (model, acc)
}

#[test]
fn a_token_model_trains_from_chance_on_its_ids() {
    let _lock = seeded_lock();
    let device = Device::flex();
    let untrained = accuracy(&BagOfTokens::new(16, 7, &device), &splits().1, &device);
    let (_, acc) = trained(16, &device);
    assert!(untrained < 60.0, "untrained already at {untrained} %");
    assert!(acc > 90.0, "trained to only {acc} %");
}

#[test]
fn token_ids_stay_integers_under_mixed_precision() {
    let _lock = seeded_lock();
    let device = Device::flex();
    let (train_split, test) = splits();
    let (_, f32_acc) = trained(16, &device);
    let bf16 = TrainConfig {
        precision: Some(MixedPrecision::bf16()),
        ..config(4)
    };
    // The embedding table trains in bf16; the ids it is indexed by are never cast.
    let (model, report) = train(
        BagOfTokens::new(16, 7, &device),
        &train_split,
        &bf16,
        &device,
    )
    .unwrap();
    assert_eq!(report.skipped_steps, 0);
    let weights = ember_tensor::param_values(&model);
    assert!(
        weights
            .iter()
            .all(|w| w.flat.dtype() == burn::tensor::DType::F32)
    );
    let acc = accuracy(&model, &test, &device);
    assert!(
        (f32_acc - acc).abs() < 3.0,
        "bf16 {acc} % against f32 {f32_acc} %"
    );
}

#[test]
fn a_student_learns_a_teachers_token_logits() {
    let _lock = seeded_lock();
    let device = Device::flex();
    let (train_split, test) = splits();
    let (teacher, teacher_acc) = trained(32, &device);
    // The cached logits are the teacher's on each sample's ids, in order.
    let cached = teacher_logits(&teacher, &train_split, &device);
    let (first, _) = train_split.batch(&[0, 1, 2], &device);
    let direct = teacher.forward(first);
    cached
        .slice(0..3)
        .to_data()
        .assert_approx_eq::<f32>(&direct.to_data(), Default::default());
    let soft = SoftTargetConfig {
        temperature: 4.0,
        alpha: 0.7,
    };
    for outputs in [TeacherOutputs::Cached, TeacherOutputs::OnTheFly] {
        let (student, report) = distill(
            BagOfTokens::new(8, 9, &device),
            &teacher,
            &train_split,
            &config(4),
            &soft,
            outputs,
            &device,
        )
        .unwrap();
        assert!(report.mean_soft_loss.is_finite());
        let acc = accuracy(&student, &test, &device);
        assert!(
            acc > teacher_acc - 5.0,
            "{outputs:?}: student {acc} % against teacher {teacher_acc} %"
        );
    }
}

#[test]
fn calibration_runs_on_token_ids_and_sees_every_batch() {
    let _lock = seeded_lock();
    let device = Device::flex();
    let (train_split, test) = splits();
    let (model, float_acc) = trained(16, &device);
    let config = StaticConfig {
        observer: ObserverConfig::min_max(),
        calibration: CalibrationConfig {
            batch_size: 64,
            max_batches: Some(4),
            progress: false,
        },
        ..StaticConfig::default()
    };
    let q = quantize_static(model.clone(), &config, &train_split, &device).unwrap();
    // The reference: `hidden`'s input over the same 256 samples, by hand.
    let (ids, _) = train_split.batch(&(0..256).collect::<Vec<_>>(), &device);
    let pooled = model.pooled(ids).into_data().try_to_vec::<f32>().unwrap();
    let range = ember_observe::Range {
        min: pooled.iter().copied().fold(f32::INFINITY, f32::min),
        max: pooled.iter().copied().fold(f32::NEG_INFINITY, f32::max),
    };
    let expected = config.activations.qparams(&[range], "hidden").unwrap();
    let Some(InputQuant::Static { params, .. }) = q.inputs.get("hidden") else {
        panic!("hidden's input is not static: {:?}", q.inputs.get("hidden"));
    };
    assert_eq!(params, &expected);
    let acc = accuracy(&q.model, &test, &device);
    assert!(
        (float_acc - acc).abs() < 1.5,
        "int8 {acc} % against float {float_acc} %"
    );
}

#[test]
fn sensitivity_ranks_the_layers_of_a_token_model() {
    let _lock = seeded_lock();
    let device = Device::flex();
    let (train_split, test) = splits();
    let (model, _) = trained(16, &device);
    let config = StaticConfig {
        calibration: CalibrationConfig {
            batch_size: 64,
            max_batches: Some(4),
            progress: false,
        },
        ..StaticConfig::default()
    };
    let rows = sensitivity(&model, &config, &train_split, &test, 250, &device).unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r.layer.as_str()).collect();
    assert_eq!(names, ["hidden", "out"]);
    for row in &rows {
        assert!(row.accuracy_change_pp.abs() < 2.0, "{row:?}");
        // int8 per channel: roughly 8 bits x 6 dB of signal over noise in the weights.
        assert!(row.weight_sqnr_db > 30.0, "{row:?}");
    }
}

#[test]
fn quantization_aware_training_over_token_ids() {
    let _lock = seeded_lock();
    let device = Device::flex();
    let (train_split, test) = splits();
    let qat = prepare_qat(BagOfTokens::new(16, 7, &device), &StaticConfig::qat()).unwrap();
    let (trained, _) = train(qat.model.clone(), &train_split, &config(4), &device).unwrap();
    let fake_acc = accuracy(&trained, &test, &device);
    let q = qat.convert(trained).unwrap();
    assert!(matches!(
        q.inputs.get("hidden"),
        Some(InputQuant::Static { .. })
    ));
    let acc = accuracy(&q.model, &test, &device);
    assert!(acc > 88.0, "QAT int8 reached only {acc} %");
    assert!(
        (fake_acc - acc).abs() < 1.5,
        "converted {acc} % against trained {fake_acc} %"
    );
}

#[test]
fn gradual_pruning_over_token_ids_keeps_its_masks() {
    let _lock = seeded_lock();
    let device = Device::flex();
    let (train_split, test) = splits();
    let prune = PruneConfig::global_magnitude(0.0);
    let schedule = Gradual {
        initial: 0.0,
        target: 0.6,
        start_step: 8,
        end_step: 128,
        every: 8,
    };
    let (model, _) = train_gradual(
        BagOfTokens::new(16, 7, &device),
        &train_split,
        &config(4),
        &prune,
        &schedule,
        &device,
    )
    .unwrap();
    let sparsity = sparsity_report(&model, &prune.layers).unwrap().sparsity();
    assert!((sparsity - 0.6).abs() < 0.01, "sparsity {sparsity}");
    assert_eq!(masks(&model).len(), 2);
    let acc = accuracy(&model, &test, &device);
    assert!(acc > 85.0, "pruned to 60 % and reached only {acc} %");
}

#[test]
fn burn_trains_learner_trains_a_token_model() {
    let _lock = seeded_lock();
    let device = Device::flex();
    let (train_split, test) = splits();
    let model = BagOfTokens::new(16, 7, &device);
    let (train_loader, valid_loader) = loaders(
        Arc::new(train_split),
        Arc::new(Tokens::new(500, CLASSES, 3)),
        32,
        42,
    );
    let dir = tempfile::tempdir().unwrap();
    let result = SupervisedTraining::new(dir.path(), train_loader, valid_loader)
        .num_epochs(4)
        .with_training_strategy(TrainingStrategy::Default(ExecutionStrategy::SingleDevice(
            device.clone().autodiff(),
        )))
        .launch(Learner::new(
            Supervised::<_, Ids>::new(model, &device),
            AdamConfig::new().init(),
            1e-2,
        ));
    assert!(result.error.is_none(), "{:?}", result.error);
    let acc = accuracy(&result.model.into_inner().valid(), &test, &device);
    assert!(acc > 90.0, "the Learner reached only {acc} %");
}
