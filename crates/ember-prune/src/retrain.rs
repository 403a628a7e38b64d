//! Pruning interleaved with training: gradual pruning, iterative prune-and-retrain, weight
//! rewinding and lottery tickets.
//!
//! Recovery after pruning is a [`TrainConfig`]: plain fine-tuning is a few epochs at a small
//! constant rate ([`LrSchedule::Constant`](ember_tensor::LrSchedule)), learning-rate rewinding
//! (Renda et al. 2020) retrains with the original schedule's rates, and weight rewinding also
//! resets the surviving weights to their values at an earlier step ([`rewind`]) before that.

use burn::module::Module;
use burn::tensor::Device;
use ember_tensor::{
    Classifier, Input, LabeledData, TrainConfig, TrainReport, masks, set_masks, strip,
    train_with_hook,
};

use crate::prune::{PruneConfig, prune};
use crate::report::PruneReport;
use crate::schedule::{Gradual, Rounds};
use crate::{Error, Result};

/// `pruned`'s masks on `snapshot`'s weights: the surviving weights go back to their values at
/// the snapshot (the initialization for a lottery ticket, step k for weight rewinding), the
/// pruned ones stay pruned.
pub fn rewind<M: Module>(pruned: &M, snapshot: M) -> Result<M> {
    Ok(set_masks(strip(snapshot), &masks(pruned))?)
}

/// Train with pruning on Zhu & Gupta's cubic schedule: every `schedule.every` steps the masks
/// are tightened to `schedule.sparsity_at(step)` with `prune`'s criterion, scope and layers
/// (its own `sparsity` is ignored).
///
/// ```
/// use burn::tensor::Device;
/// use ember_prune::{Gradual, PruneConfig, sparsity_report, train_gradual};
/// use ember_tensor::testing::Blobs;
/// use ember_tensor::TrainConfig;
/// use ember_zoo::MlpConfig;
///
/// let device = Device::flex();
/// let model = MlpConfig { input: Blobs::DIM, hidden: vec![32], classes: 3, dropout: 0.0 }
///     .init(&device)?;
/// let data = Blobs::new(256, 3, 1);
/// let training = TrainConfig { epochs: 2, batch_size: 32, ..TrainConfig::default() };
/// // 16 steps: from 0 % at step 2 to 75 % at step 10, every 2 steps.
/// let schedule = Gradual { initial: 0.0, target: 0.75, start_step: 2, end_step: 10, every: 2 };
/// let config = PruneConfig::global_magnitude(0.0);
/// let (model, _) = train_gradual(model, &data, &training, &config, &schedule, &device)?;
/// let sparsity = sparsity_report(&model, &config.layers)?.sparsity();
/// assert!((sparsity - 0.75).abs() < 0.01);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn train_gradual<I: Input, M: Classifier<I>>(
    model: M,
    data: &(impl LabeledData<I> + ?Sized),
    training: &TrainConfig,
    prune_config: &PruneConfig,
    schedule: &Gradual,
    device: &Device,
) -> Result<(M, TrainReport)> {
    schedule.validate()?;
    prune_config.validate()?;
    train_with_hook(model, data, training, device, |step, model| {
        if !schedule.prunes_at(step) {
            return Ok::<_, Error>(model);
        }
        let config = PruneConfig {
            sparsity: schedule.sparsity_at(step),
            ..prune_config.clone()
        };
        Ok(prune(model, &config)?.0)
    })
}

/// One round of [`iterative_prune`], as its callback sees it.
pub struct Round<'a, M> {
    /// 1-based round.
    pub round: usize,
    /// The overall sparsity this round pruned to.
    pub sparsity: f64,
    /// What the round's pruning left, layer by layer (before retraining, which keeps it).
    pub report: &'a PruneReport,
    /// The model after the round's retraining.
    pub model: &'a M,
}

/// Iterative pruning: for each of `rounds`, prune the model to that round's targets, rewind
/// the surviving weights to `rewind_to` if given, and retrain with `retrain`; `after_round`
/// sees each retrained model (to evaluate or save it) and may fail with the caller's own
/// error type.
///
/// Without rewinding this is Han et al.'s prune-retrain loop; rewinding to the initial weights
/// with `model` trained dense is Frankle & Carbin's iterative magnitude pruning.
///
/// ```
/// use burn::tensor::Device;
/// use ember_prune::{PruneConfig, Rounds, iterative_prune};
/// use ember_tensor::testing::Blobs;
/// use ember_tensor::TrainConfig;
/// use ember_zoo::MlpConfig;
///
/// let device = Device::flex();
/// let model = MlpConfig { input: Blobs::DIM, hidden: vec![32], classes: 3, dropout: 0.0 }
///     .init(&device)?;
/// let data = Blobs::new(256, 3, 1);
/// let retrain = TrainConfig { epochs: 1, ..TrainConfig::default() };
/// // Three rounds to 80 %, each pruning the same fraction of what is left, then retraining.
/// let mut sparsities = vec![];
/// let pruned = iterative_prune(
///     model,
///     &data,
///     &Rounds::to_target(0.8, 3)?,
///     &PruneConfig::global_magnitude(0.0),
///     &retrain,
///     None,
///     &device,
///     |round| {
///         sparsities.push(round.sparsity);
///         Ok::<_, ember_prune::Error>(())
///     },
/// )?;
/// assert_eq!(sparsities.len(), 3);
/// assert!((sparsities[2] - 0.8).abs() < 0.01);
/// assert_eq!(ember_tensor::masks(&pruned).len(), 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[allow(clippy::too_many_arguments)]
pub fn iterative_prune<I: Input, M: Classifier<I>, E: From<Error>>(
    model: M,
    data: &(impl LabeledData<I> + ?Sized),
    rounds: &Rounds,
    prune_config: &PruneConfig,
    retrain: &TrainConfig,
    rewind_to: Option<&M>,
    device: &Device,
    mut after_round: impl FnMut(Round<'_, M>) -> std::result::Result<(), E>,
) -> std::result::Result<M, E> {
    prune_config.validate()?;
    rounds.validate()?;
    let mut model = model;
    for i in 0..rounds.len() {
        let config = rounds.config(i, prune_config);
        let (pruned, report) = prune(model, &config)?;
        let start = match rewind_to {
            Some(snapshot) => rewind(&pruned, snapshot.clone())?,
            None => pruned,
        };
        let (trained, _) = train_with_hook(start, data, retrain, device, |_, m| Ok::<_, Error>(m))?;
        after_round(Round {
            round: i + 1,
            sparsity: config.sparsity,
            report: &report,
            model: &trained,
        })?;
        model = trained;
    }
    Ok(model)
}
