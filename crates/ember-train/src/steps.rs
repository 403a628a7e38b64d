//! The modules burn-train's Learner trains: each implements `TrainStep` and `InferenceStep`
//! over [`ClassBatch`] with burn-train's `ClassificationOutput`, so its accuracy and loss
//! metrics apply.

use burn::module::{Module, ModuleDisplay};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::tensor::Device;
use burn::train::{ClassificationOutput, InferenceStep, TrainOutput, TrainStep};
use ember_distill::loss::{SoftTargetConfig, SoftTargetLoss};
use ember_tensor::Classifier;

use crate::data::ClassBatch;

/// `model` trained on the labels with cross-entropy.
#[derive(Module, Debug)]
pub struct Supervised<M> {
    /// The model being trained.
    pub model: M,
}

impl<M: Classifier> Supervised<M> {
    /// Wrap `model` for the Learner, on `device` with autodiff and in training mode, as
    /// burn-train expects the model it is given (a model on a plain device has nothing to take
    /// gradients of).
    pub fn new(model: M, device: &Device) -> Self {
        Self {
            model: model.fork(&device.clone().autodiff()).train(),
        }
    }

    /// The trained model.
    pub fn into_inner(self) -> M {
        self.model
    }

    fn classify(&self, batch: ClassBatch) -> ClassificationOutput {
        classification(self.model.forward(batch.images), batch.labels)
    }
}

/// Cross-entropy of `logits` on `labels`, with both, for burn-train's metrics.
fn classification(
    logits: burn::tensor::Tensor<2>,
    labels: burn::tensor::Tensor<1, burn::tensor::Int>,
) -> ClassificationOutput {
    let loss = CrossEntropyLossConfig::new()
        .init(&logits.device())
        .forward(logits.clone(), labels.clone());
    ClassificationOutput::new(loss, logits, labels)
}

impl<M: Classifier + ModuleDisplay + 'static> TrainStep for Supervised<M> {
    type Input = ClassBatch;
    type Output = ClassificationOutput;

    fn step(&self, batch: ClassBatch) -> TrainOutput<ClassificationOutput> {
        let output = self.classify(batch);
        TrainOutput::new(self, output.loss.backward(), output)
    }
}

impl<M: Classifier + ModuleDisplay + 'static> InferenceStep for Supervised<M> {
    type Input = ClassBatch;
    type Output = ClassificationOutput;

    fn step(&self, batch: ClassBatch) -> ClassificationOutput {
        self.classify(batch)
    }
}

/// A student trained on `alpha * T^2 * KL(teacher^T || student^T) + (1 - alpha) * CE(labels)`
/// with a frozen teacher. The teacher's parameters never require a gradient (so the optimizer
/// never sees them) and its logits are detached; it is a field of the module, not a skipped
/// one, so that burn-train's multi-device strategies fork it to every device with the student.
#[derive(Module, Debug)]
pub struct Distillation<S, T> {
    /// The model being trained.
    pub student: S,
    /// The frozen teacher.
    pub teacher: T,
    /// The checked loss: settings, not state, so out of records and forks.
    #[module(skip)]
    loss: SoftTargetLoss,
}

impl<S: Classifier, T: Classifier> Distillation<S, T> {
    /// Pair `student` with a frozen `teacher`, both moved to `probe`'s device with autodiff
    /// and in training mode (the teacher's parameters stay without gradients). `probe` is one
    /// batch of inputs on which the two models must give logits of one shape (the same
    /// classes); a typed error for that, and for a temperature or weight that cannot work,
    /// rather than a failure at the first step.
    pub fn new(
        student: S,
        teacher: T,
        soft_targets: SoftTargetConfig,
        probe: burn::tensor::Tensor<4>,
    ) -> ember_distill::Result<Self> {
        let loss = soft_targets.init()?;
        let [batch, ..] = probe.dims();
        let labels = burn::tensor::Tensor::zeros([batch], &probe.device());
        loss.forward(
            student.forward(probe.clone()),
            teacher.forward(probe.clone()),
            labels,
        )?;
        let device = probe.device().autodiff();
        Ok(Self {
            student: student.fork(&device).train(),
            teacher: teacher.no_grad().fork(&device).train(),
            loss,
        })
    }

    /// The trained student.
    pub fn into_student(self) -> S {
        self.student
    }
}

impl<S: Classifier + ModuleDisplay + 'static, T: Classifier + ModuleDisplay + 'static> TrainStep
    for Distillation<S, T>
{
    type Input = ClassBatch;
    type Output = ClassificationOutput;

    fn step(&self, batch: ClassBatch) -> TrainOutput<ClassificationOutput> {
        let teacher = self.teacher.forward(batch.images.clone()).detach();
        let student = self.student.forward(batch.images);
        let loss = match self
            .loss
            .forward(student.clone(), teacher, batch.labels.clone())
        {
            Ok(parts) => parts.total,
            // The only error is logits of two shapes, which `new` checked on the probe.
            Err(e) => unreachable!("checked in Distillation::new: {e}"),
        };
        let output = ClassificationOutput::new(loss, student, batch.labels);
        TrainOutput::new(self, output.loss.backward(), output)
    }
}

impl<S: Classifier + ModuleDisplay + 'static, T: Classifier + ModuleDisplay + 'static> InferenceStep
    for Distillation<S, T>
{
    type Input = ClassBatch;
    type Output = ClassificationOutput;

    /// The student's predictions: what validation measures.
    fn step(&self, batch: ClassBatch) -> ClassificationOutput {
        classification(self.student.forward(batch.images), batch.labels)
    }
}
