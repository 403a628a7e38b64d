//! Offline, online and self-distillation and the stage pipeline, end to end on a small
//! learnable task.

#![allow(clippy::unwrap_used)] // a test fails loudly, which is what it is for

use burn::module::Module;
use burn::nn::{Linear, LinearConfig, Relu};
use burn::tensor::{Device, Int, Tensor};
use ember_distill::loss::SoftTargetConfig;
use ember_distill::{
    Error, Stage, TeacherOutputs, born_again, distill, mutual_learning, run_pipeline,
    teacher_logits,
};
use ember_tensor::testing::{Blobs, seeded_lock as seeded};
use ember_tensor::{Classifier, LabeledData, TrainConfig, evaluate, train};

const DIM: usize = Blobs::DIM;

#[derive(Module, Debug)]
struct Net {
    hidden: Linear,
    out: Linear,
    relu: Relu,
}

fn net(width: usize, classes: usize, seed: u64, device: &Device) -> Net {
    device.seed(seed);
    ember_tensor::init_now(Net {
        hidden: LinearConfig::new(DIM, width).init(device),
        out: LinearConfig::new(width, classes).init(device),
        relu: Relu::new(),
    })
}

impl Classifier for Net {
    fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        self.out.forward(
            self.relu
                .forward(self.hidden.forward(images.flatten::<2>(1, 3))),
        )
    }
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

fn teacher(device: &Device, data: &Blobs) -> Net {
    train(net(64, 4, 1, device), data, &config(8), device)
        .unwrap()
        .0
}

fn agreement(a: &Net, b: &Net, data: &Blobs, device: &Device) -> f64 {
    let indices: Vec<usize> = (0..data.len()).collect();
    let (x, _) = data.batch(&indices, device);
    let same = a
        .forward(x.clone())
        .argmax(1)
        .equal(b.forward(x).argmax(1))
        .int()
        .sum();
    100.0 * same.into_scalar::<i64>() as f64 / data.len() as f64
}

#[test]
fn soft_targets_alone_transfer_the_teachers_function() {
    let _seeded = seeded();
    let device = Device::flex();
    let (data, test) = (Blobs::new(1024, 4, 1), Blobs::new(512, 4, 2));
    let teacher = teacher(&device, &data);
    let teacher_accuracy = evaluate(&teacher, &test, 256, &device).unwrap().accuracy;
    assert!(teacher_accuracy > 90.0, "teacher {teacher_accuracy}");
    // alpha = 1: the student never sees a label, only the teacher's soft targets.
    let soft_only = SoftTargetConfig {
        temperature: 4.0,
        alpha: 1.0,
    };
    let (student, report) = distill(
        net(32, 4, 9, &device),
        &teacher,
        &data,
        &config(8),
        &soft_only,
        TeacherOutputs::Cached,
        &device,
    )
    .unwrap();
    let agree = agreement(&student, &teacher, &test, &device);
    assert!(
        agree > 90.0,
        "student agrees with the teacher on {agree} % of test points"
    );
    assert!(report.mean_soft_loss > 0.0 && report.mean_hard_loss > 0.0);
    let losses: Vec<f32> = report.train.epochs.iter().map(|e| e.loss).collect();
    assert!(losses.last() < losses.first(), "{losses:?}");
}

#[test]
fn cached_teacher_logits_train_like_logits_on_the_fly() {
    let _seeded = seeded();
    let device = Device::flex();
    let data = Blobs::new(256, 4, 3);
    let teacher = teacher(&device, &data);
    let soft = SoftTargetConfig {
        temperature: 2.0,
        alpha: 0.7,
    };
    let run = |outputs| {
        distill(
            net(16, 4, 5, &device),
            &teacher,
            &data,
            &config(2),
            &soft,
            outputs,
            &device,
        )
        .unwrap()
        .0
    };
    let (cached, fly) = (run(TeacherOutputs::Cached), run(TeacherOutputs::OnTheFly));
    let all: Vec<usize> = (0..data.len()).collect();
    let (x, _) = data.batch(&all, &device);
    let (a, b) = (cached.forward(x.clone()), fly.forward(x));
    let diff = (a - b).abs().max().into_scalar::<f32>();
    // Same seed, same batches: only the teacher's batch size differs, so only rounding.
    assert!(diff < 1e-3, "outputs differ by {diff}");
    assert_eq!(teacher_logits(&teacher, &data, &device).dims(), [256, 4]);
}

#[test]
fn mutual_learning_trains_both_peers() {
    let _seeded = seeded();
    let device = Device::flex();
    let (data, test) = (Blobs::new(1024, 4, 4), Blobs::new(512, 4, 5));
    let ((a, b), report) = mutual_learning(
        net(32, 4, 1, &device),
        net(16, 4, 2, &device),
        &data,
        &config(6),
        1.0,
        &device,
    )
    .unwrap();
    for peer in [&a, &b] {
        let accuracy = evaluate(peer, &test, 256, &device).unwrap().accuracy;
        assert!(accuracy > 85.0, "peer accuracy {accuracy}");
    }
    assert!(agreement(&a, &b, &test, &device) > 85.0);
    assert_eq!(report.epochs.len(), 6);
}

#[test]
fn born_again_runs_each_generation_from_the_last() {
    let _seeded = seeded();
    let device = Device::flex();
    let data = Blobs::new(256, 4, 6);
    let soft = SoftTargetConfig {
        temperature: 2.0,
        alpha: 0.5,
    };
    let mut seeds = Vec::new();
    let generations = born_again(
        teacher(&device, &data),
        |generation| {
            seeds.push(generation);
            Ok(net(64, 4, 100 + generation as u64, &device))
        },
        2,
        &data,
        &config(2),
        &soft,
        TeacherOutputs::Cached,
        &device,
    )
    .unwrap();
    assert_eq!(generations.len(), 2);
    assert_eq!(seeds, vec![1, 2]);
    let err = born_again(
        teacher(&device, &data),
        |_| Ok(net(8, 4, 0, &device)),
        0,
        &data,
        &config(1),
        &soft,
        TeacherOutputs::Cached,
        &device,
    )
    .unwrap_err();
    assert!(matches!(
        err,
        Error::InvalidConfig {
            field: "generations",
            ..
        }
    ));
}

#[test]
fn pipeline_runs_its_stages_in_order() {
    let _seeded = seeded();
    let device = Device::flex();
    let (generic, task) = (Blobs::new(256, 4, 7), Blobs::new(256, 4, 8));
    let teacher = teacher(&device, &task);
    let stages = [
        Stage::Train {
            name: "pretrain",
            data: &generic,
            train: config(1),
        },
        Stage::Distill {
            name: "distill",
            teacher: &teacher,
            data: &task,
            train: config(2),
            soft_targets: SoftTargetConfig {
                temperature: 2.0,
                alpha: 0.9,
            },
            teacher_outputs: TeacherOutputs::Cached,
        },
        Stage::Train {
            name: "finetune",
            data: &task,
            train: config(1),
        },
    ];
    let (_, reports) = run_pipeline(net(16, 4, 3, &device), &stages, &device).unwrap();
    let names: Vec<&str> = reports.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["pretrain", "distill", "finetune"]);
    assert_eq!(reports[1].train.epochs.len(), 2);
    // Dropping a stage is dropping a list element.
    let (_, reports) = run_pipeline(net(16, 4, 3, &device), &stages[1..], &device).unwrap();
    assert_eq!(reports.len(), 2);
}

/// Blobs whose points move a little on every draw, as augmented data does.
struct Augmented {
    blobs: Blobs,
    draws: std::sync::atomic::AtomicU32,
}

impl LabeledData for Augmented {
    fn len(&self) -> usize {
        self.blobs.len()
    }

    fn batch(&self, indices: &[usize], device: &Device) -> (Tensor<4>, Tensor<1, Int>) {
        let draw = self
            .draws
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (points, labels) = self.blobs.batch(indices, device);
        (points.add_scalar(0.01 * (draw % 3) as f32), labels)
    }

    fn same_inputs_every_epoch(&self) -> bool {
        false
    }
}

#[test]
fn teacher_logits_are_not_cached_over_augmented_data() {
    let _seeded = seeded();
    let device = Device::flex();
    let data = Augmented {
        blobs: Blobs::new(64, 4, 10),
        draws: 0.into(),
    };
    let soft = SoftTargetConfig {
        temperature: 2.0,
        alpha: 0.5,
    };
    let run = |outputs| {
        distill(
            net(8, 4, 1, &device),
            &net(8, 4, 2, &device),
            &data,
            &config(1),
            &soft,
            outputs,
            &device,
        )
    };
    let err = run(TeacherOutputs::Cached).unwrap_err();
    assert!(matches!(
        err,
        Error::InvalidConfig {
            field: "teacher_outputs",
            ..
        }
    ));
    run(TeacherOutputs::OnTheFly).unwrap();
}

#[test]
fn teacher_and_student_with_different_class_counts_are_a_typed_error() {
    let _seeded = seeded();
    let device = Device::flex();
    let data = Blobs::new(64, 4, 9);
    let soft = SoftTargetConfig {
        temperature: 2.0,
        alpha: 0.5,
    };
    let err = distill(
        net(8, 3, 1, &device),
        &net(8, 4, 2, &device),
        &data,
        &config(1),
        &soft,
        TeacherOutputs::Cached,
        &device,
    )
    .unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
    let bad = SoftTargetConfig {
        temperature: -1.0,
        alpha: 0.5,
    };
    let err = distill(
        net(8, 4, 1, &device),
        &net(8, 4, 2, &device),
        &data,
        &config(1),
        &bad,
        TeacherOutputs::Cached,
        &device,
    )
    .unwrap_err();
    assert!(matches!(
        err,
        Error::InvalidConfig {
            field: "temperature",
            ..
        }
    ));
}
