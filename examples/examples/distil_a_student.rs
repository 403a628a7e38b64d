//! Distil a large teacher of your own into a small student with Hinton's soft targets: both
//! are plain burn models that implement `Classifier`.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig, Relu};
use burn::tensor::{Device, Tensor};
use ember_distill::loss::SoftTargetConfig;
use ember_distill::{TeacherOutputs, distill};
use ember_tensor::testing::Blobs;
use ember_tensor::{Classifier, TrainConfig, evaluate, train};

/// Your model: one hidden layer of `width` units.
#[derive(Module, Debug)]
struct Net {
    hidden: Linear,
    out: Linear,
    relu: Relu,
}

impl Net {
    fn new(width: usize, classes: usize, device: &Device) -> Self {
        Self {
            hidden: LinearConfig::new(Blobs::DIM, width).init(device),
            out: LinearConfig::new(width, classes).init(device),
            relu: Relu::new(),
        }
    }
}

impl Classifier for Net {
    fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let x = self.relu.forward(self.hidden.forward(x.flatten(1, 3)));
        self.out.forward(x)
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let device = Device::flex();
    device.seed(4);
    let (train_set, test_set) = (Blobs::new(512, 4, 1), Blobs::new(256, 4, 2));
    let config = TrainConfig {
        epochs: 20,
        batch_size: 32,
        learning_rate: 1e-2,
        progress: false,
        ..TrainConfig::default()
    };
    let (teacher, _) = train(Net::new(64, 4, &device), &train_set, &config, &device)?;
    let soft = SoftTargetConfig {
        temperature: 4.0,
        alpha: 0.7,
    };
    let student = Net::new(4, 4, &device);
    let (student, report) = distill(
        student,
        &teacher,
        &train_set,
        &config,
        &soft,
        TeacherOutputs::Cached,
        &device,
    )?;
    let teacher_acc = evaluate(&teacher, &test_set, 256, &device)?.accuracy;
    let student_acc = evaluate(&student, &test_set, 256, &device)?.accuracy;
    println!(
        "teacher {teacher_acc:.1} %, distilled student (4 hidden units) {student_acc:.1} %, \
         mean soft-target loss {:.3}",
        report.mean_soft_loss
    );
    assert!(student_acc > 50.0, "the student learned from the teacher");
    Ok(())
}
