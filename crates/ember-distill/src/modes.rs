//! How teacher and student meet: offline (a frozen teacher, its logits optionally computed
//! once and cached), online (two students teaching each other, deep mutual learning) and
//! self-distillation (a trained model distilled into a fresh copy of itself, born-again
//! networks). All of them run on ember-tensor's shared training loop.

use burn::tensor::{Device, Int, Tensor, TensorData};
use ember_tensor::train::ordered_batches;
use ember_tensor::{Batch, Classifier, Input, LabeledData, TrainConfig, TrainReport, fit};
use serde::{Deserialize, Serialize};

use crate::loss::SoftTargetConfig;
use crate::{Error, Result};

/// Where the teacher's logits come from during offline distillation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TeacherOutputs {
    /// Run the teacher on every batch.
    #[default]
    OnTheFly,
    /// Run the teacher once over the whole dataset and keep its logits on the device: one
    /// teacher pass instead of one per epoch. Valid only while the inputs do not change between
    /// epochs: over augmented data
    /// ([`LabeledData::same_inputs_every_epoch`] false) it is an error.
    Cached,
}

/// Batch size of the teacher's pass when caching its logits.
const CACHE_BATCH: usize = 1_000;

/// What a distillation run did.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DistillReport {
    /// The training loop's report (per-epoch total loss and time).
    pub train: TrainReport,
    /// Mean over all steps of the soft-target term (`T^2 * KL`, before weighting).
    pub mean_soft_loss: f32,
    /// Mean over all steps of the label cross-entropy (before weighting).
    pub mean_hard_loss: f32,
}

/// Distil a frozen `teacher` into `student` on `data` with Hinton's soft-target loss.
/// The teacher runs on `device` without autodiff; the student trains on its autodiff twin.
///
/// ```
/// use burn::tensor::Device;
/// use ember_distill::loss::SoftTargetConfig;
/// use ember_distill::{TeacherOutputs, distill};
/// use ember_tensor::testing::Blobs;
/// use ember_tensor::{TrainConfig, train};
/// use ember_zoo::MlpConfig;
///
/// let device = Device::flex();
/// let data = Blobs::new(256, 3, 1);
/// let training = TrainConfig { epochs: 1, ..TrainConfig::default() };
/// let mlp = |hidden| MlpConfig { input: Blobs::DIM, hidden, classes: 3, dropout: 0.0 };
/// let (teacher, _) = train(mlp(vec![64, 64]).init(&device)?, &data, &training, &device)?;
/// let soft = SoftTargetConfig { temperature: 4.0, alpha: 0.9 };
/// let (student, report) = distill(
///     mlp(vec![8]).init(&device)?,
///     &teacher,
///     &data,
///     &training,
///     &soft,
///     TeacherOutputs::Cached,
///     &device,
/// )?;
/// assert!(report.mean_soft_loss.is_finite());
/// # let _ = student;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn distill<I: Input, S: Classifier<I>, T: Classifier<I>>(
    student: S,
    teacher: &T,
    data: &(impl LabeledData<I> + ?Sized),
    train: &TrainConfig,
    soft_targets: &SoftTargetConfig,
    teacher_outputs: TeacherOutputs,
    device: &Device,
) -> Result<(S, DistillReport)> {
    let loss = soft_targets.init()?;
    let teacher = teacher.valid();
    check_class_counts(&student, &teacher, data, device)?;
    if teacher_outputs == TeacherOutputs::Cached && !data.same_inputs_every_epoch() {
        return Err(Error::InvalidConfig {
            field: "teacher_outputs",
            value: "cached".into(),
            reason: "the inputs change from epoch to epoch (augmented data): cached teacher \
                     logits would be those of other inputs; run the teacher on the fly",
        });
    }
    let cache = match teacher_outputs {
        TeacherOutputs::Cached => Some(teacher_logits(&teacher, data, device)),
        TeacherOutputs::OnTheFly => None,
    };
    let mut terms = TermSums::new(device);
    let (student, report) = fit(
        student,
        data,
        train,
        device,
        |student: &S, batch: Batch<I>| {
            let teacher_logits = match &cache {
                Some(all) => all
                    .clone()
                    .select(0, indices_tensor(&batch.indices, device)),
                None => teacher.forward(batch.inputs.clone().without_autodiff()),
            };
            let parts = loss.forward(
                student.forward(batch.inputs),
                teacher_logits.autodiff(),
                batch.labels,
            )?;
            terms.add(&parts.soft, &parts.hard);
            Ok::<_, Error>(parts.total)
        },
    )?;
    let (mean_soft_loss, mean_hard_loss) = terms.means();
    Ok((
        student,
        DistillReport {
            train: report,
            mean_soft_loss,
            mean_hard_loss,
        },
    ))
}

/// Deep mutual learning (Zhang et al. 2018): two students trained together, each on the labels
/// and on the other's current predictions, `CE(a) + KL(p_b || p_a) + CE(b) + KL(p_a || p_b)` at
/// `temperature`. The other's predictions are constants in each term, so one optimizer over both
/// models takes the same steps as two.
pub fn mutual_learning<I: Input, A: Classifier<I>, B: Classifier<I>>(
    a: A,
    b: B,
    data: &(impl LabeledData<I> + ?Sized),
    train: &TrainConfig,
    temperature: f64,
    device: &Device,
) -> Result<((A, B), TrainReport)> {
    let peer = SoftTargetConfig {
        temperature,
        alpha: 0.5,
    }
    .init()?;
    check_class_counts(&a, &b, data, device)?;
    let ((a, b), report) = fit(
        (a, b),
        data,
        train,
        device,
        |(a, b): &(A, B), batch: Batch<I>| {
            let (logits_a, logits_b) = (a.forward(batch.inputs.clone()), b.forward(batch.inputs));
            // alpha 0.5 weighs CE and KL equally; the factor 2 restores DML's unit weights.
            let loss_a = peer.forward(logits_a.clone(), logits_b.clone(), batch.labels.clone())?;
            let loss_b = peer.forward(logits_b, logits_a, batch.labels)?;
            Ok::<_, Error>((loss_a.total + loss_b.total).mul_scalar(2.0))
        },
    )?;
    Ok(((a, b), report))
}

/// Born-again networks (Furlanello et al. 2018): `generations` rounds in which the last model
/// teaches a fresh one of the same architecture made by `fresh(generation)`. Returns every
/// generation's student and report, the last one last.
// `distill`'s arguments plus the generations: a config struct for one call site would only
// rename them.
#[allow(clippy::too_many_arguments)]
pub fn born_again<I: Input, M: Classifier<I>>(
    trained: M,
    mut fresh: impl FnMut(usize) -> Result<M>,
    generations: usize,
    data: &(impl LabeledData<I> + ?Sized),
    train: &TrainConfig,
    soft_targets: &SoftTargetConfig,
    teacher_outputs: TeacherOutputs,
    device: &Device,
) -> Result<Vec<(M, DistillReport)>> {
    if generations == 0 {
        return Err(Error::InvalidConfig {
            field: "generations",
            value: "0".into(),
            reason: "must be at least 1",
        });
    }
    let mut teacher = trained;
    let mut out = Vec::with_capacity(generations);
    for generation in 1..=generations {
        let (student, report) = distill(
            fresh(generation)?,
            &teacher,
            data,
            train,
            soft_targets,
            teacher_outputs,
            device,
        )?;
        teacher = student.clone();
        out.push((student, report));
    }
    Ok(out)
}

/// The teacher's logits for every sample of `data`, in order, on `device`.
pub fn teacher_logits<I: Input, T: Classifier<I>>(
    teacher: &T,
    data: &(impl LabeledData<I> + ?Sized),
    device: &Device,
) -> Tensor<2> {
    let batches: Vec<Tensor<2>> = ordered_batches(data.len(), CACHE_BATCH)
        .iter()
        .map(|indices| teacher.forward(data.batch(indices, device).0))
        .collect();
    Tensor::cat(batches, 0)
}

/// Teacher and student must predict the same classes: checked on one sample before training.
fn check_class_counts<I: Input, S: Classifier<I>, T: Classifier<I>>(
    student: &S,
    teacher: &T,
    data: &(impl LabeledData<I> + ?Sized),
    device: &Device,
) -> Result<()> {
    if data.is_empty() {
        return Err(ember_tensor::Error::InvalidConfig {
            field: "data",
            value: "0 samples".into(),
            reason: "nothing to distil on",
        }
        .into());
    }
    let (inputs, _) = data.batch(&[0], device);
    let (s, t) = (
        student.valid().forward(inputs.clone()),
        teacher.forward(inputs),
    );
    if s.dims() != t.dims() {
        return Err(Error::ShapeMismatch {
            what: "class logits (teacher and student must predict the same classes)",
            student: s.dims().to_vec(),
            teacher: t.dims().to_vec(),
        });
    }
    Ok(())
}

fn indices_tensor(indices: &[usize], device: &Device) -> Tensor<1, Int> {
    let indices: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
    let len = indices.len();
    Tensor::from_data(TensorData::new(indices, [len]), device)
}

/// Sums of the loss terms, kept on the device so that logging does not stall it.
struct TermSums {
    soft: Tensor<1>,
    hard: Tensor<1>,
    steps: usize,
}

impl TermSums {
    fn new(device: &Device) -> Self {
        Self {
            soft: Tensor::zeros([1], device),
            hard: Tensor::zeros([1], device),
            steps: 0,
        }
    }

    fn add(&mut self, soft: &Tensor<1>, hard: &Tensor<1>) {
        self.soft = self.soft.clone() + soft.clone().detach().without_autodiff();
        self.hard = self.hard.clone() + hard.clone().detach().without_autodiff();
        self.steps += 1;
    }

    fn means(self) -> (f32, f32) {
        let steps = self.steps.max(1) as f32;
        (
            self.soft.into_scalar::<f32>() / steps,
            self.hard.into_scalar::<f32>() / steps,
        )
    }
}
