//! The training loop every pass shares (plain training, fine-tuning after pruning,
//! distillation, quantization-aware training): Adam with a cosine learning-rate schedule,
//! seeded shuffling, a progress bar, and a pluggable loss; and evaluation of a [`Classifier`].
//!
//! Every run can also train in mixed precision ([`precision`]), keep the optimizer and the
//! master weights on a second device (ZeRO-Offload's split: [`TrainConfig::offload`]) and
//! recompute memory-bound activations in the backward pass (burn's gradient checkpointing,
//! [`TrainConfig::checkpointing`]), so every pass built on this loop gets them.

pub mod precision;

use std::time::Instant;

use burn::lr_scheduler::cosine::CosineAnnealingLrSchedulerConfig;
use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamConfig, GradientsParams, decay::WeightDecayConfig};
use burn::tensor::{Bool, DType, Device, Int, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::device::BackendKind;
use crate::{Error, Result};
use precision::{ComputeView, LossScaler, MixedPrecision, ScaledStep, restore_f32, unscale};

/// One batch of what a model reads: float images `[batch, channels, rows, cols]`, token ids
/// `[batch, tokens]` as an `Int` tensor, or several tensors at once (token ids with their
/// attention mask) as a tuple.
pub trait Input: Clone + Send + Sync + std::fmt::Debug + 'static {
    /// This input for a model that computes in `dtype` (mixed precision): float values cast to
    /// it, integer ones (token ids, masks) left as they are.
    #[must_use]
    fn for_compute(self, dtype: DType) -> Self;

    /// This input off the autodiff graph, for a model that only infers from it (a frozen
    /// teacher).
    #[must_use]
    fn without_autodiff(self) -> Self;
}

impl<const D: usize> Input for Tensor<D> {
    fn for_compute(self, dtype: DType) -> Self {
        self.cast(dtype)
    }

    fn without_autodiff(self) -> Self {
        Tensor::without_autodiff(self)
    }
}

impl<const D: usize> Input for Tensor<D, Int> {
    fn for_compute(self, _dtype: DType) -> Self {
        self
    }

    fn without_autodiff(self) -> Self {
        Tensor::without_autodiff(self)
    }
}

impl<const D: usize> Input for Tensor<D, Bool> {
    fn for_compute(self, _dtype: DType) -> Self {
        self
    }

    fn without_autodiff(self) -> Self {
        Tensor::without_autodiff(self)
    }
}

impl<A: Input, B: Input> Input for (A, B) {
    fn for_compute(self, dtype: DType) -> Self {
        (self.0.for_compute(dtype), self.1.for_compute(dtype))
    }

    fn without_autodiff(self) -> Self {
        (self.0.without_autodiff(), self.1.without_autodiff())
    }
}

/// A model that maps a batch of inputs (images `[batch, channels, rows, cols]` unless it says
/// otherwise: token ids, sequences, any [`Input`]) to class logits `[batch, classes]`. A pass
/// whose loss needs another output (a sentence embedding, per-token logits) trains through
/// [`fit`], whose loss calls whatever the model has.
pub trait Classifier<I: Input = Tensor<4>>: Module {
    /// Class logits for a batch of inputs.
    fn forward(&self, input: I) -> Tensor<2>;
}

/// A labelled dataset that can hand out batches by index, as images (`I`'s default) or any
/// other [`Input`].
pub trait LabeledData<I: Input = Tensor<4>> {
    /// Number of samples.
    fn len(&self) -> usize;

    /// Whether there are no samples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Samples `indices` as an input on `device` and their class labels.
    fn batch(&self, indices: &[usize], device: &Device) -> (I, Tensor<1, Int>);

    /// Whether [`LabeledData::batch`] gives the same inputs for the same indices every time it
    /// is asked. Data augmented per draw (random shifts, say) does not, and then anything
    /// computed once per sample (a teacher's cached logits) goes stale after the first epoch.
    fn same_inputs_every_epoch(&self) -> bool {
        true
    }
}

/// One training step's inputs, on the autodiff device.
#[derive(Debug, Clone)]
pub struct Batch<I: Input = Tensor<4>> {
    /// The inputs.
    pub inputs: I,
    /// Their labels.
    pub labels: Tensor<1, Int>,
    /// Their indices in the dataset (to look up cached per-sample values such as teacher
    /// logits).
    pub indices: Vec<usize>,
}

/// "No step yet" in the device-side record of the first diverging step: above any step index
/// an epoch has (exact in f32 up to 2^24).
const NO_STEP: f32 = 16_777_216.0;

/// Batches of `0..len` in order, the last one possibly short.
pub fn ordered_batches(len: usize, batch_size: usize) -> Vec<Vec<usize>> {
    (0..len)
        .collect::<Vec<_>>()
        .chunks(batch_size.max(1))
        .map(<[usize]>::to_vec)
        .collect()
}

/// Batches of a shuffled `0..len`, reproducible from `seed`.
pub fn shuffled_batches(len: usize, batch_size: usize, seed: u64) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..len).collect();
    order.shuffle(&mut StdRng::seed_from_u64(seed));
    order
        .chunks(batch_size.max(1))
        .map(<[usize]>::to_vec)
        .collect()
}

/// How to train: Adam, learning rate annealed to zero along a cosine over all steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Passes over the training split.
    pub epochs: usize,
    /// Images per step.
    pub batch_size: usize,
    /// Adam's learning rate at the first step.
    pub learning_rate: f64,
    /// L2 weight decay added to the gradients (0 for none).
    #[serde(default)]
    pub weight_decay: f64,
    /// How the learning rate moves over the run.
    #[serde(default)]
    pub schedule: LrSchedule,
    /// Seed of the device RNG (dropout) and of the shuffling.
    pub seed: u64,
    /// Show a progress bar on the terminal.
    #[serde(default)]
    pub progress: bool,
    /// Train in mixed precision (`None`: f32 throughout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<MixedPrecision>,
    /// Keep the f32 weights, the optimizer's state and its update step on this backend's
    /// device while the forward and backward pass run on the training device: the gradients go
    /// there after each backward pass and the updated weights come back before the next one
    /// (ZeRO-Offload, Ren et al. 2021). `None` keeps everything on the training device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offload: Option<BackendKind>,
    /// Recompute memory-bound activations during the backward pass instead of keeping them
    /// (burn's balanced gradient checkpointing): less memory, more compute.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub checkpointing: bool,
}

/// How the learning rate moves over a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LrSchedule {
    /// Cosine annealing from `learning_rate` to zero over the whole run.
    #[default]
    Cosine,
    /// `learning_rate` at every step: plain fine-tuning at a small rate.
    Constant,
    /// The last `epochs` epochs of a cosine schedule from `learning_rate` over `of_epochs`
    /// epochs: learning-rate rewinding (Renda et al. 2020) replays the tail of the original
    /// training schedule when retraining a pruned network.
    CosineTail {
        /// Epochs of the original schedule this run replays the end of.
        of_epochs: usize,
    },
}

impl LrSchedule {
    /// The rate at `step` (0-based) of a run of `total_steps` steps over `epochs` epochs,
    /// for the schedules burn has no scheduler for.
    fn tail_rate(of_epochs: usize, epochs: usize, lr: f64, step: usize, total_steps: usize) -> f64 {
        let steps_per_epoch = total_steps / epochs.max(1);
        let full = (of_epochs * steps_per_epoch).max(1);
        let offset = of_epochs.saturating_sub(epochs) * steps_per_epoch;
        let t = (offset + step) as f64 / full as f64;
        0.5 * lr * (1.0 + (std::f64::consts::PI * t.min(1.0)).cos())
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 10,
            batch_size: 128,
            learning_rate: 1e-3,
            weight_decay: 0.0,
            schedule: LrSchedule::Cosine,
            seed: 42,
            progress: true,
            precision: None,
            offload: None,
            checkpointing: false,
        }
    }
}

impl TrainConfig {
    fn validate(&self, samples: usize, device: &Device) -> Result<()> {
        if let Some(precision) = &self.precision {
            precision.validate(device)?;
        }
        let invalid = |field, value: String, reason| Error::InvalidConfig {
            field,
            value,
            reason,
        };
        if self.epochs == 0 {
            return Err(invalid("epochs", "0".into(), "must be at least 1"));
        }
        if let LrSchedule::CosineTail { of_epochs } = self.schedule
            && of_epochs < self.epochs
        {
            return Err(invalid(
                "schedule.of_epochs",
                of_epochs.to_string(),
                "the replayed schedule must be at least as long as the run",
            ));
        }
        if self.batch_size == 0 {
            return Err(invalid("batch_size", "0".into(), "must be at least 1"));
        }
        if !(self.learning_rate > 0.0 && self.learning_rate <= 1.0) {
            return Err(invalid(
                "learning_rate",
                self.learning_rate.to_string(),
                "must be in (0, 1]",
            ));
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return Err(invalid(
                "weight_decay",
                self.weight_decay.to_string(),
                "must be finite and >= 0",
            ));
        }
        if samples == 0 {
            return Err(invalid(
                "data",
                "0 samples".into(),
                "the training split is empty",
            ));
        }
        Ok(())
    }
}

/// What happened in one epoch.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EpochReport {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Mean training loss over the epoch's steps.
    pub loss: f32,
    /// Wall-clock seconds of the epoch's training steps.
    pub seconds: f64,
}

/// What happened in a training run.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct TrainReport {
    /// One entry per epoch.
    pub epochs: Vec<EpochReport>,
    /// Optimizer steps skipped because a loss-scaled gradient overflowed (mixed precision).
    pub skipped_steps: usize,
    /// The loss scale at the end of the run (mixed precision with loss scaling).
    pub final_loss_scale: Option<f32>,
    /// Bytes of the optimizer's state at the end of the run (its burnpack record), and the
    /// device that holds it: the offload device when offloading, the training device
    /// otherwise (burn's optimizer keeps each state beside the parameter it updates).
    pub optimizer_state_bytes: usize,
    /// The backend whose device held the optimizer's state.
    pub optimizer_device: String,
}

impl TrainReport {
    /// Mean seconds per epoch.
    pub fn mean_epoch_seconds(&self) -> f64 {
        self.epochs.iter().map(|e| e.seconds).sum::<f64>() / self.epochs.len().max(1) as f64
    }
}

/// Train `model` on `data` with cross-entropy on the labels, on `device` (autodiff is enabled
/// here); returns the trained model on the plain device.
pub fn train<I: Input, M: Classifier<I>>(
    model: M,
    data: &(impl LabeledData<I> + ?Sized),
    config: &TrainConfig,
    device: &Device,
) -> Result<(M, TrainReport)> {
    train_with_hook(model, data, config, device, |_, model| Ok(model))
}

/// [`train`] with [`fit_with_hook`]'s hook after every optimizer step.
pub fn train_with_hook<I: Input, M: Classifier<I>, E: From<Error>>(
    model: M,
    data: &(impl LabeledData<I> + ?Sized),
    config: &TrainConfig,
    device: &Device,
    after_step: impl FnMut(usize, M) -> Result<M, E>,
) -> Result<(M, TrainReport), E> {
    let cross_entropy = CrossEntropyLossConfig::new().init(&device.clone().autodiff());
    let loss = |model: &M, batch: Batch<I>| {
        Ok::<_, E>(cross_entropy.forward(model.forward(batch.inputs), batch.labels))
    };
    fit_with_hook(model, data, config, device, loss, after_step)
}

/// Train `model` on `data` minimizing `loss(model, batch)`, a scalar (`[1]`) tensor on the
/// autodiff device; returns the trained model on the plain device. An error from `loss` stops
/// training and is returned; the loop's own errors convert into the caller's error type `E`.
pub fn fit<I: Input, M: Module, E: From<Error>>(
    model: M,
    data: &(impl LabeledData<I> + ?Sized),
    config: &TrainConfig,
    device: &Device,
    loss: impl FnMut(&M, Batch<I>) -> Result<Tensor<1>, E>,
) -> Result<(M, TrainReport), E> {
    fit_with_hook(model, data, config, device, loss, |_, model| Ok(model))
}

/// [`fit`] with a hook called after every optimizer step with the 1-based step count and the
/// model (on the autodiff device); the model it returns trains on. Gradual pruning updates its
/// masks there, weight rewinding takes its snapshot there.
pub fn fit_with_hook<I: Input, M: Module, E: From<Error>>(
    model: M,
    data: &(impl LabeledData<I> + ?Sized),
    config: &TrainConfig,
    device: &Device,
    mut loss: impl FnMut(&M, Batch<I>) -> Result<Tensor<1>, E>,
    mut after_step: impl FnMut(usize, M) -> Result<M, E>,
) -> Result<(M, TrainReport), E> {
    config.validate(data.len(), device)?;
    device.seed(config.seed);
    let autodiff = if config.checkpointing {
        device.clone().autodiff().gradient_checkpointing()
    } else {
        device.clone().autodiff()
    };
    // A lazily initialized parameter draws its values where it is first read: here, from the
    // training device's seeded RNG, even when the weights then live on the offload device.
    let model = crate::init_now(model);
    // Where the f32 weights and the optimizer live: the training device, or the offload one.
    let home = match config.offload {
        Some(backend) => Some(offload_device(backend, &model)?),
        None => None,
    };
    let home_autodiff = home
        .as_ref()
        .map_or(autodiff.clone(), |d| d.clone().autodiff());
    let model = model.fork(&home_autodiff).train();
    let mut model = under_strategy_of(model, &home_autodiff);
    let half_view = match &config.precision {
        Some(precision) => Some(ComputeView::new(&model, precision)?),
        None => None,
    };
    let mut scaler = match config.precision.as_ref().and_then(|p| p.loss_scale) {
        Some(scale) => Some(LossScaler::new(scale)?),
        None => None,
    };

    let steps_per_epoch = data.len().div_ceil(config.batch_size);
    let total_steps = config.epochs * steps_per_epoch;
    let mut adam = AdamConfig::new();
    if config.weight_decay > 0.0 {
        adam = adam.with_weight_decay(Some(WeightDecayConfig::new(config.weight_decay as f32)));
    }
    let mut optimizer = adam.init();
    let mut cosine = CosineAnnealingLrSchedulerConfig::new(config.learning_rate, total_steps)
        .init()
        .map_err(|reason| Error::InvalidConfig {
            field: "learning_rate",
            value: format!("{} ({reason})", config.learning_rate),
            reason: "rejected by the cosine schedule",
        })?;
    let mut step = 0;

    let bar = progress_bar(config.progress, total_steps as u64);
    let mut report = TrainReport::default();
    for epoch in 1..=config.epochs {
        let started = Instant::now();
        // Reading the loss back every step would stall a GPU queue: sum it on the device, and
        // keep there the first step whose loss was not finite (NO_STEP while none).
        let mut loss_sum = Tensor::<1>::zeros([1], device);
        let mut first_bad = Tensor::<1>::full([1], NO_STEP, device);
        let mut counted = 0;
        let batches = shuffled_batches(
            data.len(),
            config.batch_size,
            shuffle_seed(config.seed, epoch),
        );
        for (i, indices) in batches.iter().enumerate() {
            let (inputs, labels) = data.batch(indices, &autodiff);
            // Offloading: the updated weights come to the training device. Not `train()` again:
            // it would give the batch norms' running statistics a new home, and their updates
            // would not reach the weights that stay home.
            let offloaded = home
                .as_ref()
                .map(|_| under_strategy_of(model.clone().fork(&autodiff), &autodiff));
            let on_device = offloaded.as_ref().unwrap_or(&model);
            let (inputs, half) = match &half_view {
                Some(view) => (inputs.for_compute(view.dtype), Some(view.of(on_device))),
                None => (inputs, None),
            };
            let view = half.as_ref().unwrap_or(on_device);
            let batch = Batch {
                inputs,
                labels,
                indices: indices.clone(),
            };
            // The loss is always reduced in f32.
            let loss = loss(view, batch)?.cast(burn::tensor::DType::F32);
            let value = loss.clone().detach().without_autodiff();
            let scale = scaler.as_ref().map_or(1.0, LossScaler::scale);
            let loss = if scale == 1.0 {
                loss
            } else {
                loss.mul_scalar(scale)
            };
            let mut grads = GradientsParams::from_grads(loss.backward(), on_device);
            let apply = match scaler.as_mut() {
                Some(scaler) => {
                    let (unscaled, overflowed) = unscale(grads, on_device, scale);
                    grads = unscaled;
                    scaler.update(overflowed)? == ScaledStep::Apply
                }
                None => true,
            };
            let lr = match config.schedule {
                LrSchedule::Cosine => cosine.step(),
                LrSchedule::Constant => config.learning_rate.into(),
                LrSchedule::CosineTail { of_epochs } => LrSchedule::tail_rate(
                    of_epochs,
                    config.epochs,
                    config.learning_rate,
                    step,
                    total_steps,
                )
                .into(),
            };
            if apply {
                let bad = value.clone().is_nan().bool_or(value.clone().is_inf());
                first_bad = first_bad
                    .clone()
                    .mask_fill(bad, i as f32)
                    .min_pair(first_bad);
                loss_sum = loss_sum + value;
                counted += 1;
                if let Some(home) = &home {
                    // The gradients go to the optimizer's device.
                    grads = grads.to_device(home, on_device);
                }
                model = optimizer.step(lr, model, grads);
            }
            if config.precision.is_some() {
                // `train()` first folds the step's pending running-statistics updates in.
                model = restore_f32(model.train());
            }
            step += 1;
            model = after_step(step, model)?;
            bar.inc(1);
        }
        let loss = loss_sum.into_scalar::<f32>() / counted.max(1) as f32;
        crate::device::sync(device)?;
        let seconds = started.elapsed().as_secs_f64();
        if !loss.is_finite() {
            bar.abandon();
            let first = first_bad.into_scalar::<f32>();
            return Err(Error::Diverged {
                loss,
                epoch,
                step: if first < NO_STEP {
                    first as usize + 1
                } else {
                    batches.len()
                },
            }
            .into());
        }
        bar.set_message(format!("epoch {epoch}/{} loss {loss:.4}", config.epochs));
        report.epochs.push(EpochReport {
            epoch,
            loss,
            seconds,
        });
    }
    bar.finish_and_clear();
    report.skipped_steps = scaler.as_ref().map_or(0, LossScaler::skipped);
    report.final_loss_scale = scaler.as_ref().map(LossScaler::scale);
    report.optimizer_state_bytes = optimizer
        .to_record()
        .into_bytes()
        .map_or(0, |bytes| bytes.len());
    report.optimizer_device = match config.offload.or(crate::device::backend_of(device)) {
        Some(backend) => backend.name().to_string(),
        None => format!("{device:?}"),
    };
    Ok((model.valid().fork(device), report))
}

/// The device of `backend`, checked to hold every parameter of `model` in its dtype: a half
/// precision model offloaded to ndarray is a typed error before training, not a panic at the
/// first copy.
fn offload_device<M: Module>(backend: BackendKind, model: &M) -> Result<Device> {
    let device = backend.device()?;
    for value in crate::param_values(model) {
        crate::device::require_dtype(&device, value.flat.dtype())?;
    }
    Ok(device)
}

/// `model`, just forked to the autodiff `device` in training mode, with its parameters under
/// the device's gradient-checkpointing strategy: burn's `fork` gives them the default one, and
/// parameters and inputs of two strategies cannot meet in one operation.
fn under_strategy_of<M: Module>(model: M, device: &Device) -> M {
    match device.gradient_checkpointing_strategy() {
        Some(strategy) if strategy != burn::tensor::GradientCheckpointingStrategy::Disabled => {
            model.map(&mut CheckpointingStrategy(strategy))
        }
        _ => model,
    }
}

struct CheckpointingStrategy(burn::tensor::GradientCheckpointingStrategy);

impl burn::module::ModuleMapper for CheckpointingStrategy {
    fn map_float<const D: usize>(
        &mut self,
        param: burn::module::Param<Tensor<D>>,
    ) -> burn::module::Param<Tensor<D>> {
        param.map(|t| t.with_gradient_checkpointing_strategy(self.0))
    }
}

/// Each epoch shuffles differently, every run the same way.
fn shuffle_seed(seed: u64, epoch: usize) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(epoch as u64)
}

fn progress_bar(show: bool, steps: u64) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(steps);
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40} {pos}/{len} {elapsed_precise} eta {eta} {msg}")
    {
        bar.set_style(style);
    }
    bar
}

/// Accuracy and loss of a model on a split.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct EvalReport {
    /// Images evaluated.
    pub samples: usize,
    /// Misclassified images.
    pub errors: usize,
    /// Correct predictions in percent.
    pub accuracy: f64,
    /// Mean cross-entropy.
    pub loss: f64,
}

/// Evaluate `model` (on a plain device, as [`train`] returns it) on `data`.
pub fn evaluate<I: Input, M: Classifier<I>>(
    model: &M,
    data: &(impl LabeledData<I> + ?Sized),
    batch_size: usize,
    device: &Device,
) -> Result<EvalReport> {
    if data.is_empty() {
        return Err(Error::InvalidConfig {
            field: "data",
            value: "0 samples".into(),
            reason: "nothing to evaluate",
        });
    }
    let loss_fn = CrossEntropyLossConfig::new().init(device);
    let mut correct = Tensor::<1>::zeros([1], device);
    let mut loss_sum = Tensor::<1>::zeros([1], device);
    for indices in ordered_batches(data.len(), batch_size) {
        let (inputs, labels) = data.batch(&indices, device);
        // A half-precision model gives half-precision logits; the sums stay f32.
        let logits = model.forward(inputs).cast(burn::tensor::DType::F32);
        let loss = loss_fn.forward(logits.clone(), labels.clone());
        loss_sum = loss_sum + loss.mul_scalar(indices.len() as f64);
        let predicted = logits.argmax(1).squeeze_dim::<1>(1);
        correct = correct + predicted.equal(labels).int().sum().float();
    }
    let correct = correct.into_scalar::<f32>() as usize;
    let samples = data.len();
    Ok(EvalReport {
        samples,
        errors: samples - correct,
        accuracy: 100.0 * correct as f64 / samples as f64,
        loss: loss_sum.into_scalar::<f32>() as f64 / samples as f64,
    })
}

#[cfg(test)]
mod schedule_tests {
    use super::LrSchedule;

    #[test]
    fn a_cosine_tail_replays_the_end_of_the_full_schedule() {
        // 10 steps per epoch; the last 3 of 10 epochs start where the full schedule is at 70 %.
        let start = LrSchedule::tail_rate(10, 3, 1.0, 0, 30);
        let expected = 0.5 * (1.0 + (0.7 * std::f64::consts::PI).cos());
        assert!((start - expected).abs() < 1e-12);
        let last = LrSchedule::tail_rate(10, 3, 1.0, 29, 30);
        assert!(last > 0.0 && last < 1e-2);
        // Replaying all of it is the full schedule.
        assert_eq!(LrSchedule::tail_rate(10, 10, 1.0, 0, 100), 1.0);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use burn::nn::{Linear, LinearConfig};

    use crate::testing::Blobs;

    #[test]
    fn a_diverging_loss_names_its_epoch_and_first_step() {
        let _seeded = crate::testing::seeded_lock();
        let device = Device::flex();
        let model: Linear = LinearConfig::new(Blobs::DIM, 3).init(&device);
        let data = Blobs::new(64, 3, 1);
        let config = TrainConfig {
            epochs: 2,
            batch_size: 8,
            progress: false,
            ..TrainConfig::default()
        };
        let mut calls = 0;
        let result = fit(
            model,
            &data,
            &config,
            &device,
            |model: &Linear, batch: Batch| {
                calls += 1;
                let out = model.forward(batch.inputs.flatten::<2>(1, 3)).mean();
                // Finite for two steps, then NaN: the third of the epoch's eight steps diverges.
                Ok::<_, Error>(if calls >= 3 {
                    out.mul_scalar(f32::NAN)
                } else {
                    out
                })
            },
        );
        match result {
            Err(Error::Diverged {
                epoch: 1, step: 3, ..
            }) => {}
            other => panic!(
                "expected divergence at epoch 1 step 3, got {:?}",
                other.err()
            ),
        }
    }
}
