//! How structured pruning scores units. The weight criteria read the unit's weights; the
//! others watch the model at work on [`Evidence`]: first-order Taylor through its gradients,
//! APoZ through its activations, Shapley values through losses with units removed.

use std::collections::BTreeMap;

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor};
use ember_tensor::stats::read_f32;
use ember_tensor::train::ordered_batches;
use ember_tensor::{
    Classifier, Input, LabeledData, ParamInfo, UnitActivations, UnitGroup, UnitSlice, params,
    set_param_values,
};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::{Values, check_group, group_error, split, values_by_path};
use crate::prune::check_finite;
use crate::{Error, Result};

/// How a unit is scored; the lowest scores are removed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum UnitCriterion {
    /// Sum of the absolute values of the unit's weights (Li et al. 2017).
    L1,
    /// Euclidean norm of the unit's weights.
    L2,
    /// Uniform random scores: the control every criterion must beat.
    Random {
        /// Seed of the scores.
        seed: u64,
    },
    /// First-order Taylor expansion of the loss (Molchanov et al. 2017): `|a * dL/da|` summed
    /// over the unit's outputs in a batch, summed over batches. Needs [`Evidence`].
    Taylor,
    /// One minus the average percentage of zeros in the unit's output after ReLU (Hu et al.
    /// 2016): a unit that is seldom active is removed first. Needs [`Evidence`] and a model
    /// that shows its activations ([`UnitActivations`]).
    Apoz,
    /// The unit's Shapley value for the loss, estimated by Monte-Carlo sampling of
    /// permutations (as TorchPruner does). Needs [`Evidence`].
    Shapley(ShapleyConfig),
}

impl UnitCriterion {
    /// Its name in reports and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Self::L1 => "L1",
            Self::L2 => "L2",
            Self::Random { .. } => "random",
            Self::Taylor => "Taylor",
            Self::Apoz => "APoZ",
            Self::Shapley(_) => "Shapley",
        }
    }

    /// Whether it watches the model on data rather than reading its weights.
    pub fn needs_evidence(&self) -> bool {
        matches!(self, Self::Taylor | Self::Apoz | Self::Shapley(_))
    }
}

/// The sampling budget of Shapley values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShapleyConfig {
    /// Permutations sampled per group; each costs one loss evaluation per unit.
    pub permutations: usize,
    /// Seed of the permutations.
    pub seed: u64,
}

/// The data the criteria that watch the model score it on: the first `batches` batches of
/// `batch_size` samples of `data`, in order, on `device`.
#[derive(Clone, Copy)]
pub struct Evidence<'a, I: Input = Tensor<4>> {
    /// Labelled samples (a part of the training set, typically).
    pub data: &'a dyn LabeledData<I>,
    /// How many batches to look at.
    pub batches: usize,
    /// Samples per batch.
    pub batch_size: usize,
    /// Where the model runs.
    pub device: &'a Device,
}

impl<I: Input> Evidence<'_, I> {
    /// The batches' indices; an error naming `criterion` when there is nothing to look at.
    fn batches(&self, criterion: UnitCriterion) -> Result<Vec<Vec<usize>>> {
        let reason = if self.data.is_empty() {
            Some("the data holds no samples")
        } else if self.batches == 0 || self.batch_size == 0 {
            Some("zero batches or an empty batch size")
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(no_evidence(criterion, reason));
        }
        let mut all = ordered_batches(self.data.len(), self.batch_size);
        all.truncate(self.batches);
        Ok(all)
    }
}

fn no_evidence(criterion: UnitCriterion, reason: &str) -> Error {
    Error::NoEvidence {
        criterion: criterion.name(),
        reason: reason.to_string(),
    }
}

/// Every unit's score, by group name.
pub type UnitScores = BTreeMap<String, Vec<f64>>;

/// Score every unit of `groups` by `criterion`; the criteria that watch the model need
/// `evidence`, and without it are a typed error. For a model that does not implement
/// [`UnitActivations`], call [`weight_scores`], [`taylor_scores`] or [`shapley_scores`].
pub fn unit_scores<I: Input, M: UnitActivations<I>>(
    model: &M,
    groups: &[UnitGroup],
    criterion: UnitCriterion,
    evidence: Option<&Evidence<'_, I>>,
) -> Result<UnitScores> {
    if !criterion.needs_evidence() {
        return weight_scores(model, groups, criterion);
    }
    let evidence = evidence.ok_or_else(|| no_evidence(criterion, "no data given"))?;
    match criterion {
        UnitCriterion::Taylor => taylor_scores(model, groups, evidence),
        UnitCriterion::Apoz => apoz_scores(model, groups, evidence),
        UnitCriterion::Shapley(config) => {
            Ok(shapley_scores(model, groups, evidence, config)?.scores)
        }
        _ => unreachable!("weight criteria return above"),
    }
}

/// Scores from the weights alone (L1, L2, random), from each group's first producer's slices;
/// a criterion that watches the model is a typed error here.
pub fn weight_scores<M: Module>(
    model: &M,
    groups: &[UnitGroup],
    criterion: UnitCriterion,
) -> Result<UnitScores> {
    if criterion.needs_evidence() {
        return Err(no_evidence(
            criterion,
            "it watches the model on data: give it evidence",
        ));
    }
    let values = values_by_path(model)?;
    groups
        .iter()
        .map(|group| {
            check_group(group, &values)?;
            Ok((group.name.clone(), weight_score(group, &values, criterion)?))
        })
        .collect()
}

fn weight_score(group: &UnitGroup, values: &Values, criterion: UnitCriterion) -> Result<Vec<f64>> {
    let scored = group
        .producers
        .first()
        .ok_or_else(|| group_error(&group.name, "no producer to score"))?;
    let (shape, flat) = &values[&scored.path];
    check_finite(&scored.path, flat)?;
    if let UnitCriterion::Random { seed } = criterion {
        // Each group draws its own sequence: with the seed alone, every group of a model
        // would rank its units in the same order (the same heads kept in every layer).
        let mut rng = StdRng::seed_from_u64(seed ^ name_hash(&group.name));
        return Ok((0..group.units).map(|_| rng.random::<f64>()).collect());
    }
    let mut sums = vec![0.0f64; group.units];
    for_each_unit_value(shape, flat, scored, |unit, v| {
        sums[unit] += match criterion {
            UnitCriterion::L1 => f64::from(v.abs()),
            _ => f64::from(v) * f64::from(v),
        };
    });
    if criterion == UnitCriterion::L2 {
        sums.iter_mut().for_each(|s| *s = s.sqrt());
    }
    Ok(sums)
}

/// FNV-1a of `name`: a hash that is the same in every build, so that seeded scores are.
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Calls `f(unit, value)` for every element of `flat` (row-major `shape`) that `slice` assigns
/// to a unit.
fn for_each_unit_value(
    shape: &[usize],
    flat: &[f32],
    slice: &UnitSlice,
    mut f: impl FnMut(usize, f32),
) {
    let (outer, dim, inner) = split(shape, slice.axis);
    for o in 0..outer {
        for d in 0..dim {
            let unit = d / slice.block;
            for &v in &flat[(o * dim + d) * inner..(o * dim + d + 1) * inner] {
                f(unit, v);
            }
        }
    }
}

/// The producer slices of the layer that computes the group's units: those of the first
/// producer's module (`fc1.weight` and `fc1.bias`, not a batch norm that follows).
fn own_layer(group: &UnitGroup) -> Vec<&UnitSlice> {
    let module = |path: &str| path.rsplit_once('.').map_or("", |(m, _)| m).to_string();
    let first = group.producers.first().map(|p| module(&p.path));
    group
        .producers
        .iter()
        .filter(|p| Some(module(&p.path)) == first)
        .collect()
}

/// First-order Taylor scores. For a unit computing `z = w . x + b`, the sum of `w * dL/dw`
/// over its weights and bias equals the sum of `z * dL/dz` over its outputs in the batch, and
/// `z * dL/dz` equals `a * dL/da` after a ReLU (both vanish where `z <= 0`): Molchanov's
/// activation-times-gradient, read from parameter gradients, with no hook on the forward pass.
/// Each batch adds `|sum|` per unit (the batch's mean cross-entropy is differentiated).
pub fn taylor_scores<I: Input, M: Classifier<I>>(
    model: &M,
    groups: &[UnitGroup],
    evidence: &Evidence<'_, I>,
) -> Result<UnitScores> {
    let batches = evidence.batches(UnitCriterion::Taylor)?;
    let values = values_by_path(model)?;
    for group in groups {
        check_group(group, &values)?;
    }
    let autodiff = evidence.device.clone().autodiff();
    let watched = model.clone().fork(&autodiff).train();
    let infos: BTreeMap<String, ParamInfo> = params(&watched)
        .into_iter()
        .map(|p| (p.path.clone(), p))
        .collect();
    let loss_fn = CrossEntropyLossConfig::new().init(&autodiff);
    let mut scores: UnitScores = groups
        .iter()
        .map(|g| (g.name.clone(), vec![0.0; g.units]))
        .collect();
    for indices in &batches {
        let (inputs, labels) = evidence.data.batch(indices, &autodiff);
        let loss = loss_fn.forward(watched.forward(inputs), labels);
        let grads = GradientsParams::from_grads(loss.backward(), &watched);
        for group in groups {
            let mut sums = vec![0.0f64; group.units];
            for slice in own_layer(group) {
                let (shape, flat) = &values[&slice.path];
                let grad = infos
                    .get(&slice.path)
                    .and_then(|info| flat_grad(&grads, info))
                    .ok_or_else(|| {
                        group_error(&group.name, format!("`{}` got no gradient", slice.path))
                    })?;
                let grad = read_f32(grad)?;
                check_finite(&format!("the gradient of {}", slice.path), &grad)?;
                let mut at = 0;
                for_each_unit_value(shape, flat, slice, |unit, v| {
                    // `for_each_unit_value` walks `flat` in order, so `at` follows it.
                    sums[unit] += f64::from(v) * f64::from(grad[at]);
                    at += 1;
                });
            }
            let total = scores.get_mut(&group.name).expect("made above");
            total.iter_mut().zip(sums).for_each(|(t, s)| *t += s.abs());
        }
    }
    Ok(scores)
}

/// A parameter's gradient, flattened.
fn flat_grad(grads: &GradientsParams, info: &ParamInfo) -> Option<Tensor<1>> {
    match info.shape.len() {
        1 => grads.get::<1>(info.id),
        2 => grads.get::<2>(info.id).map(|g| g.flatten(0, 1)),
        3 => grads.get::<3>(info.id).map(|g| g.flatten(0, 2)),
        4 => grads.get::<4>(info.id).map(|g| g.flatten(0, 3)),
        _ => None,
    }
}

/// APoZ scores: the fraction of a unit's outputs (over samples and positions) that are not
/// zero, from the activations the model hands out.
pub fn apoz_scores<I: Input, M: UnitActivations<I>>(
    model: &M,
    groups: &[UnitGroup],
    evidence: &Evidence<'_, I>,
) -> Result<UnitScores> {
    let batches = evidence.batches(UnitCriterion::Apoz)?;
    let mut zeros: BTreeMap<String, Tensor<1>> = BTreeMap::new();
    let mut outputs_per_unit: BTreeMap<String, usize> = BTreeMap::new();
    for indices in &batches {
        let (inputs, _) = evidence.data.batch(indices, evidence.device);
        for (name, activations) in model.unit_activations(inputs) {
            let [batch, units, positions] = activations.dims();
            let counted: Tensor<1> = activations
                .equal_elem(0.0)
                .float()
                .sum_dim(2)
                .sum_dim(0)
                .reshape([units]);
            let entry = zeros
                .entry(name.clone())
                .or_insert_with(|| Tensor::zeros([units], evidence.device));
            if entry.dims() != [units] {
                return Err(group_error(&name, "its activations changed width"));
            }
            *entry = entry.clone() + counted;
            *outputs_per_unit.entry(name).or_default() += batch * positions;
        }
    }
    groups
        .iter()
        .map(|group| {
            let counted = zeros
                .remove(&group.name)
                .ok_or_else(|| group_error(&group.name, "the model shows no activations for it"))?;
            let counted = read_f32(counted)?;
            if counted.len() != group.units {
                return Err(group_error(
                    &group.name,
                    format!(
                        "the model shows {} activations for {} units",
                        counted.len(),
                        group.units
                    ),
                ));
            }
            let outputs = outputs_per_unit[&group.name].max(1) as f64;
            let active = counted.iter().map(|&z| 1.0 - f64::from(z) / outputs);
            Ok((group.name.clone(), active.collect()))
        })
        .collect()
}

/// Shapley values with their Monte-Carlo standard errors.
#[derive(Debug, Clone, PartialEq)]
pub struct ShapleyScores {
    /// Each unit's mean marginal contribution: how much the loss rises when it is removed.
    pub scores: UnitScores,
    /// The standard error of each mean over the sampled permutations (0 with one sample).
    pub std_error: UnitScores,
}

/// Shapley values of each group's units for the evidence's mean cross-entropy, one group at a
/// time, the rest of the model whole. Each sampled permutation removes the group's units one
/// after another, from the whole layer to none, by zeroing what its consumers read of them
/// (exactly what removing the unit does); a unit's marginal contribution is the loss's rise at
/// its removal. `permutations * units + 1` loss evaluations per group.
pub fn shapley_scores<I: Input, M: Classifier<I>>(
    model: &M,
    groups: &[UnitGroup],
    evidence: &Evidence<'_, I>,
    config: ShapleyConfig,
) -> Result<ShapleyScores> {
    let criterion = UnitCriterion::Shapley(config);
    let batches = evidence.batches(criterion)?;
    if config.permutations == 0 {
        return Err(no_evidence(criterion, "a budget of zero permutations"));
    }
    let values = values_by_path(model)?;
    let data: Vec<_> = batches
        .iter()
        .map(|indices| evidence.data.batch(indices, evidence.device))
        .collect();
    let loss_fn = CrossEntropyLossConfig::new().init(evidence.device);
    let loss_of = |m: &M| -> Result<f64> {
        let mut sum = Tensor::<1>::zeros([1], evidence.device);
        for (inputs, labels) in &data {
            sum = sum + loss_fn.forward(m.forward(inputs.clone()), labels.clone());
        }
        Ok(f64::from(read_f32(sum)?[0]) / data.len() as f64)
    };
    let full = loss_of(model)?;
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut result = ShapleyScores {
        scores: BTreeMap::new(),
        std_error: BTreeMap::new(),
    };
    for group in groups {
        check_group(group, &values)?;
        let mut order: Vec<usize> = (0..group.units).collect();
        let (mut sum, mut sum_sq) = (vec![0.0f64; group.units], vec![0.0f64; group.units]);
        for _ in 0..config.permutations {
            order.shuffle(&mut rng);
            let mut consumers: BTreeMap<String, Vec<f32>> = group
                .consumers
                .iter()
                .map(|c| (c.path.clone(), values[&c.path].1.clone()))
                .collect();
            let mut before = full;
            for &unit in &order {
                for slice in &group.consumers {
                    let shape = &values[&slice.path].0;
                    let flat = consumers.get_mut(&slice.path).expect("made above");
                    zero_unit(shape, flat, slice, unit);
                }
                let after = loss_of(&set_param_values(model.clone(), &consumers)?)?;
                let contribution = after - before;
                sum[unit] += contribution;
                sum_sq[unit] += contribution * contribution;
                before = after;
            }
        }
        let n = config.permutations as f64;
        let means: Vec<f64> = sum.iter().map(|s| s / n).collect();
        let errors = means
            .iter()
            .zip(&sum_sq)
            .map(|(mean, sq)| {
                if config.permutations < 2 {
                    return 0.0;
                }
                let variance = ((sq - n * mean * mean) / (n - 1.0)).max(0.0);
                (variance / n).sqrt()
            })
            .collect();
        result.scores.insert(group.name.clone(), means);
        result.std_error.insert(group.name.clone(), errors);
    }
    Ok(result)
}

/// Zero unit `unit`'s elements of `flat` (row-major `shape`) along `slice.axis`.
fn zero_unit(shape: &[usize], flat: &mut [f32], slice: &UnitSlice, unit: usize) {
    let (outer, dim, inner) = split(shape, slice.axis);
    for o in 0..outer {
        let first = (o * dim + unit * slice.block) * inner;
        flat[first..first + slice.block * inner].fill(0.0);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn zero_unit_clears_one_block_along_an_axis() {
        // [2, 4], axis 1, blocks of 2: unit 1 is columns 2-3 of both rows.
        let mut flat: Vec<f32> = (1..=8).map(|v| v as f32).collect();
        zero_unit(&[2, 4], &mut flat, &UnitSlice::new("w", 1).with_block(2), 1);
        assert_eq!(flat, vec![1.0, 2.0, 0.0, 0.0, 5.0, 6.0, 0.0, 0.0]);
    }

    #[test]
    fn the_scored_layer_is_the_first_producers_module() {
        let group = UnitGroup {
            name: "conv".into(),
            units: 2,
            producers: vec![
                UnitSlice::new("conv.weight", 0),
                UnitSlice::new("conv.bias", 0),
                UnitSlice::new("bn.gamma", 0),
            ],
            consumers: vec![],
        };
        let paths: Vec<&str> = own_layer(&group).iter().map(|s| s.path.as_str()).collect();
        assert_eq!(paths, ["conv.weight", "conv.bias"]);
    }
}
