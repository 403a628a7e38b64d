//! The modules burn-train's Learner trains: each implements `TrainStep` and `InferenceStep`
//! over [`ClassBatch`] with burn-train's `ClassificationOutput`, so its accuracy and loss
//! metrics apply.

use burn::module::{Module, ModuleDisplay};
use burn::nn::loss::CrossEntropyLossConfig;
use std::marker::PhantomData;

use burn::tensor::{Device, Int, Tensor};
use burn::train::{ClassificationOutput, InferenceStep, TrainOutput, TrainStep};
use ember_distill::loss::{SoftTargetConfig, SoftTargetLoss};
use ember_tensor::{Classifier, Input};

use crate::data::ClassBatch;

/// `model` trained on the labels with cross-entropy.
#[derive(Module, Debug)]
pub struct Supervised<M, I: Input = Tensor<4>> {
    /// The model being trained.
    pub model: M,
    /// What the model reads: the Learner's batches are `ClassBatch<I>`.
    #[module(skip)]
    input: PhantomData<I>,
}

impl<I: Input, M: Classifier<I>> Supervised<M, I> {
    /// Wrap `model` for the Learner, on `device` with autodiff and in training mode, as
    /// burn-train expects the model it is given (a model on a plain device has nothing to take
    /// gradients of).
    pub fn new(model: M, device: &Device) -> Self {
        Self {
            model: model.fork(&device.clone().autodiff()).train(),
            input: PhantomData,
        }
    }

    /// The trained model.
    pub fn into_inner(self) -> M {
        self.model
    }

    fn classify(&self, batch: ClassBatch<I>) -> ClassificationOutput {
        classification(self.model.forward(batch.inputs), batch.labels)
    }
}

/// Cross-entropy of `logits` on `labels`, with both, for burn-train's metrics.
fn classification(logits: Tensor<2>, labels: Tensor<1, Int>) -> ClassificationOutput {
    let loss = CrossEntropyLossConfig::new()
        .init(&logits.device())
        .forward(logits.clone(), labels.clone());
    ClassificationOutput::new(loss, logits, labels)
}

impl<I: Input, M: Classifier<I> + ModuleDisplay + 'static> TrainStep for Supervised<M, I> {
    type Input = ClassBatch<I>;
    type Output = ClassificationOutput;

    fn step(&self, batch: ClassBatch<I>) -> TrainOutput<ClassificationOutput> {
        let output = self.classify(batch);
        TrainOutput::new(self, output.loss.backward(), output)
    }
}

impl<I: Input, M: Classifier<I> + ModuleDisplay + 'static> InferenceStep for Supervised<M, I> {
    type Input = ClassBatch<I>;
    type Output = ClassificationOutput;

    fn step(&self, batch: ClassBatch<I>) -> ClassificationOutput {
        self.classify(batch)
    }
}

/// A student trained on `alpha * T^2 * KL(teacher^T || student^T) + (1 - alpha) * CE(labels)`
/// with a frozen teacher. The teacher's parameters never require a gradient (so the optimizer
/// never sees them) and its logits are detached; it is a field of the module, not a skipped
/// one, so that burn-train's multi-device strategies fork it to every device with the student.
#[derive(Module, Debug)]
pub struct Distillation<S, T, I: Input = Tensor<4>> {
    /// The model being trained.
    pub student: S,
    /// The frozen teacher.
    pub teacher: T,
    /// The checked loss: settings, not state, so out of records and forks.
    #[module(skip)]
    loss: SoftTargetLoss,
    /// What the models read: the Learner's batches are `ClassBatch<I>`.
    #[module(skip)]
    input: PhantomData<I>,
}

impl<I: Input, S: Classifier<I>, T: Classifier<I>> Distillation<S, T, I> {
    /// Pair `student` with a frozen `teacher`, both moved to `device` with autodiff and in
    /// training mode (the teacher's parameters stay without gradients). `probe` is one batch of
    /// inputs on `device` on which the two models must give logits of one shape (the same
    /// classes); a typed error for that, and for a temperature or weight that cannot work,
    /// rather than a failure at the first step.
    pub fn new(
        student: S,
        teacher: T,
        soft_targets: SoftTargetConfig,
        probe: I,
        device: &Device,
    ) -> ember_distill::Result<Self> {
        let loss = soft_targets.init()?;
        let student_logits = student.forward(probe.clone());
        let labels = Tensor::zeros([student_logits.dims()[0]], device);
        loss.forward(student_logits, teacher.forward(probe), labels)?;
        let device = device.clone().autodiff();
        Ok(Self {
            student: student.fork(&device).train(),
            teacher: teacher.no_grad().fork(&device).train(),
            loss,
            input: PhantomData,
        })
    }

    /// The trained student.
    pub fn into_student(self) -> S {
        self.student
    }
}

impl<I, S, T> TrainStep for Distillation<S, T, I>
where
    I: Input,
    S: Classifier<I> + ModuleDisplay + 'static,
    T: Classifier<I> + ModuleDisplay + 'static,
{
    type Input = ClassBatch<I>;
    type Output = ClassificationOutput;

    fn step(&self, batch: ClassBatch<I>) -> TrainOutput<ClassificationOutput> {
        let teacher = self.teacher.forward(batch.inputs.clone()).detach();
        let student = self.student.forward(batch.inputs);
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

impl<I, S, T> InferenceStep for Distillation<S, T, I>
where
    I: Input,
    S: Classifier<I> + ModuleDisplay + 'static,
    T: Classifier<I> + ModuleDisplay + 'static,
{
    type Input = ClassBatch<I>;
    type Output = ClassificationOutput;

    /// The student's predictions: what validation measures.
    fn step(&self, batch: ClassBatch<I>) -> ClassificationOutput {
        classification(self.student.forward(batch.inputs), batch.labels)
    }
}
