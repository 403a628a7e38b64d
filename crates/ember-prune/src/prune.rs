//! One pruning step: score the selected weights, choose which to drop, attach the masks.

use std::collections::BTreeMap;

use burn::module::Module;
use burn::tensor::{Bool, Tensor, TensorData};
use ember_tensor::mask::read_flags;
use ember_tensor::{Masks, Selector, masks, param_values, set_masks, stats::read_f32};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::report::{PruneReport, sparsity_report};
use crate::{Error, Result};

/// How weights are ranked: the lowest scores are pruned first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Criterion {
    /// Absolute value (L1 magnitude), as Han et al. 2015.
    #[default]
    Magnitude,
    /// Uniform random scores from the config's seed: the control every criterion must beat.
    Random,
}

/// Where the target sparsity applies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Every selected layer is pruned to the sparsity on its own.
    Layer,
    /// One ranking across all selected layers: layers with small weights lose more.
    #[default]
    Global,
}

/// Keep `n` of every `m` consecutive weights along a layer's input axis (2:4 for sparse tensor
/// cores); overrides the sparsity and scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NmPattern {
    /// Kept per group.
    pub n: usize,
    /// Group size.
    pub m: usize,
}

/// What to prune and how much.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruneConfig {
    /// How weights are ranked.
    #[serde(default)]
    pub criterion: Criterion,
    /// Per layer or global.
    #[serde(default)]
    pub scope: Scope,
    /// Fraction of the selected weights that end up pruned, counting those already pruned.
    pub sparsity: f64,
    /// Per-layer sparsities by exact parameter path, overriding `sparsity` for those layers
    /// (layer scope only: a global ranking has one target).
    #[serde(default)]
    pub layer_sparsity: BTreeMap<String, f64>,
    /// Which parameters are pruned; weights of linear and convolution layers by default.
    #[serde(default = "default_layers")]
    pub layers: Selector,
    /// An N:M pattern instead of a sparsity.
    #[serde(default)]
    pub nm: Option<NmPattern>,
    /// Seed of the random criterion.
    #[serde(default)]
    pub seed: u64,
}

fn default_layers() -> Selector {
    Selector::linear_and_conv_weights()
}

impl PruneConfig {
    /// Global magnitude pruning of every linear and convolution weight to `sparsity`.
    pub fn global_magnitude(sparsity: f64) -> Self {
        Self {
            criterion: Criterion::Magnitude,
            scope: Scope::Global,
            sparsity,
            layer_sparsity: BTreeMap::new(),
            layers: default_layers(),
            nm: None,
            seed: 0,
        }
    }

    /// The same config with another scope.
    pub fn with_scope(self, scope: Scope) -> Self {
        Self { scope, ..self }
    }

    /// The same config with another criterion.
    pub fn with_criterion(self, criterion: Criterion) -> Self {
        Self { criterion, ..self }
    }

    /// The same config selecting other parameters.
    pub fn with_layers(self, layers: Selector) -> Self {
        Self { layers, ..self }
    }

    /// Checks every number: sparsities in `[0, 1]`, a sensible N:M pattern.
    pub fn validate(&self) -> Result<()> {
        check_sparsity("overall", self.sparsity)?;
        for (path, &s) in &self.layer_sparsity {
            check_sparsity(path, s)?;
        }
        if let Some(NmPattern { n, m }) = self.nm
            && (n == 0 || m == 0 || n > m)
        {
            return Err(Error::NmPattern { n, m });
        }
        if self.scope == Scope::Global && !self.layer_sparsity.is_empty() {
            return Err(ember_tensor::Error::InvalidConfig {
                field: "layer_sparsity",
                value: format!("{:?}", self.layer_sparsity.keys().collect::<Vec<_>>()),
                reason: "a global ranking has one target: per-layer sparsities need scope = layer",
            }
            .into());
        }
        Ok(())
    }
}

/// A typed error if `values` of `path` hold NaN or infinity: no ranking of them means anything.
pub(crate) fn check_finite(path: &str, values: &[f32]) -> Result<()> {
    match values.iter().filter(|v| !v.is_finite()).count() {
        0 => Ok(()),
        count => Err(Error::NonFinite {
            path: path.to_string(),
            count,
        }),
    }
}

pub(crate) fn check_sparsity(what: &str, value: f64) -> Result<()> {
    if (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(Error::Sparsity {
            what: what.to_string(),
            value,
        })
    }
}

/// Prune `model` as `config` says: masks are attached (or tightened, where the model already
/// carries masks: pruned weights stay pruned) and the model is returned with a report of the
/// sparsity each selected layer now has.
pub fn prune<M: Module>(model: M, config: &PruneConfig) -> Result<(M, PruneReport)> {
    let new_masks = compute_masks(&model, config)?;
    let model = set_masks(model, &new_masks)?;
    let report = sparsity_report(&model, &config.layers)?;
    Ok((model, report))
}

/// The keep masks `config` asks for, without attaching them.
pub fn compute_masks<M: Module>(model: &M, config: &PruneConfig) -> Result<Masks> {
    config.validate()?;
    let values = param_values(model);
    let infos: Vec<_> = values.iter().map(|v| v.info.clone()).collect();
    let selected = config.layers.select(&infos)?;
    if let Some(path) = config
        .layer_sparsity
        .keys()
        .find(|path| !selected.iter().any(|p| &p.path == *path))
    {
        return Err(ember_tensor::Error::InvalidConfig {
            field: "layer_sparsity",
            value: path.clone(),
            reason: "names no selected parameter",
        }
        .into());
    }
    let current = masks(model);
    let mut rng = StdRng::seed_from_u64(config.seed);

    let mut layers = Vec::with_capacity(selected.len());
    for info in &selected {
        let Some(value) = values.iter().find(|v| v.info.path == info.path) else {
            continue;
        };
        let weights = read_f32(value.flat.clone())?;
        check_finite(&info.path, &weights)?;
        let kept = match current.get(&info.path) {
            Some(mask) => Some(read_flags(mask.clone())?),
            None => None,
        };
        let mut scores: Vec<f32> = match config.criterion {
            Criterion::Magnitude => weights.iter().map(|w| w.abs()).collect(),
            Criterion::Random => (0..weights.len()).map(|_| rng.random::<f32>()).collect(),
        };
        // Pruned weights rank below everything, so that they are the first to go; a target
        // below the current sparsity would still keep some of them, which `keep_at_most`
        // refuses afterwards.
        if let Some(kept) = &kept {
            for (score, &k) in scores.iter_mut().zip(kept) {
                if !k {
                    *score = f32::NEG_INFINITY;
                }
            }
        }
        layers.push(Layer {
            path: info.path.clone(),
            shape: info.shape.clone(),
            // An N:M group runs along the input axis, which a matmul reduces over (a bias's
            // only axis).
            input_axis: info.weight_axes().map_or(0, |axes| axes.input),
            device: value.flat.device(),
            scores,
            kept,
        });
    }

    let keep: Vec<Vec<bool>> = match (config.nm, config.scope) {
        (Some(pattern), _) => layers
            .iter()
            .map(|l| keep_n_of_m(l, pattern))
            .collect::<Result<_>>()?,
        (None, Scope::Layer) => layers
            .iter()
            .map(|l| {
                let s = config
                    .layer_sparsity
                    .get(&l.path)
                    .copied()
                    .unwrap_or(config.sparsity);
                keep_top(&[&l.scores], s).pop().unwrap_or_default()
            })
            .collect(),
        (None, Scope::Global) => {
            let scores: Vec<&[f32]> = layers.iter().map(|l| l.scores.as_slice()).collect();
            keep_top(&scores, config.sparsity)
        }
    };

    Ok(layers
        .into_iter()
        .zip(keep)
        .map(|(layer, keep)| {
            let keep = keep_at_most(keep, layer.kept.as_deref());
            let mask =
                Tensor::<1, Bool>::from_data(TensorData::from(keep.as_slice()), &layer.device);
            (layer.path, mask)
        })
        .collect())
}

struct Layer {
    path: String,
    shape: Vec<usize>,
    input_axis: usize,
    device: burn::tensor::Device,
    scores: Vec<f32>,
    /// The mask the layer already has, if any.
    kept: Option<Vec<bool>>,
}

/// Masks only tighten: a weight already pruned stays pruned even where the new ranking would
/// keep it (a target below the current sparsity), since bringing it back would restore a stale
/// value the training since has never seen.
fn keep_at_most(mut keep: Vec<bool>, kept: Option<&[bool]>) -> Vec<bool> {
    if let Some(kept) = kept {
        for (k, &was) in keep.iter_mut().zip(kept) {
            *k &= was;
        }
    }
    keep
}

/// Keep flags for one ranking over all of `groups`: exactly `round(sparsity · total)` of the
/// lowest scores are dropped, ties broken by position so that the result is deterministic.
fn keep_top(groups: &[&[f32]], sparsity: f64) -> Vec<Vec<bool>> {
    let total: usize = groups.iter().map(|g| g.len()).sum();
    let drop = ((sparsity * total as f64).round() as usize).min(total);
    let mut order: Vec<(f32, u32, u32)> = groups
        .iter()
        .enumerate()
        .flat_map(|(g, scores)| {
            scores
                .iter()
                .enumerate()
                .map(move |(i, &s)| (s, g as u32, i as u32))
        })
        .collect();
    let mut keep: Vec<Vec<bool>> = groups.iter().map(|g| vec![true; g.len()]).collect();
    if drop == 0 {
        return keep;
    }
    let by_score = |a: &(f32, u32, u32), b: &(f32, u32, u32)| {
        a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2))
    };
    order.select_nth_unstable_by(drop - 1, by_score);
    for &(_, g, i) in &order[..drop] {
        keep[g as usize][i as usize] = false;
    }
    keep
}

/// Keep the `n` highest scores of every `m` consecutive elements along the input axis.
fn keep_n_of_m(layer: &Layer, NmPattern { n, m }: NmPattern) -> Result<Vec<bool>> {
    let axis = layer.input_axis;
    let len = layer.shape.get(axis).copied().unwrap_or(1);
    if !len.is_multiple_of(m) {
        return Err(Error::NmShape {
            path: layer.path.clone(),
            len,
            m,
        });
    }
    // Row-major: elements one step apart on `axis` are `stride` apart in the flat buffer.
    let stride: usize = layer.shape[axis + 1..].iter().product();
    let outer: usize = layer.shape[..axis].iter().product();
    let mut keep = vec![false; layer.scores.len()];
    let mut group: Vec<(f32, usize)> = Vec::with_capacity(m);
    for o in 0..outer {
        for inner in 0..stride {
            for start in (0..len).step_by(m) {
                group.clear();
                for a in start..start + m {
                    let flat = (o * len + a) * stride + inner;
                    group.push((layer.scores[flat], flat));
                }
                // Highest score first; on ties the earlier element is kept.
                group.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
                for &(score, flat) in &group[..n] {
                    keep[flat] = score != f32::NEG_INFINITY;
                }
            }
        }
    }
    Ok(keep)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn global_ranking_prunes_across_layers() {
        let a = [0.5f32, -3.0, 0.1];
        let b = [2.0f32, -0.2];
        // 2 of 5 dropped: 0.1 (a[2]) and -0.2 (b[1]).
        let keep = keep_top(&[&a.map(f32::abs), &b.map(f32::abs)], 0.4);
        assert_eq!(keep, vec![vec![true, true, false], vec![true, false]]);
    }

    #[test]
    fn two_of_four_along_the_input_axis() {
        // A linear weight [d_input = 4, d_output = 2]: groups run down each column.
        let scores = vec![1.0, 8.0, 4.0, 7.0, 3.0, 6.0, 2.0, 5.0];
        let layer = Layer {
            path: "w".into(),
            shape: vec![4, 2],
            input_axis: 0,
            device: burn::tensor::Device::flex(),
            scores,
            kept: None,
        };
        let keep = keep_n_of_m(&layer, NmPattern { n: 2, m: 4 }).unwrap();
        // Column 0: 1, 4, 3, 2 -> keep 4 and 3; column 1: 8, 7, 6, 5 -> keep 8 and 7.
        assert_eq!(
            keep,
            vec![false, true, true, true, true, false, false, false]
        );
        let odd = Layer {
            shape: vec![2, 4],
            ..layer
        };
        assert!(matches!(
            keep_n_of_m(&odd, NmPattern { n: 2, m: 4 }),
            Err(Error::NmShape { len: 2, m: 4, .. })
        ));
    }

    #[test]
    fn bad_configs_are_typed_errors() {
        for s in [-0.1, 1.5, f64::NAN] {
            assert!(matches!(
                PruneConfig::global_magnitude(s).validate(),
                Err(Error::Sparsity { .. })
            ));
        }
        let nm = PruneConfig {
            nm: Some(NmPattern { n: 3, m: 2 }),
            ..PruneConfig::global_magnitude(0.0)
        };
        assert!(matches!(
            nm.validate(),
            Err(Error::NmPattern { n: 3, m: 2 })
        ));
        let global_with_layers = PruneConfig {
            layer_sparsity: [("fc.weight".to_string(), 0.5)].into(),
            ..PruneConfig::global_magnitude(0.5)
        };
        assert!(matches!(
            global_with_layers.validate(),
            Err(Error::Tensor(ember_tensor::Error::InvalidConfig { .. }))
        ));
    }

    proptest! {
        /// The achieved sparsity is the target to within one element, and what is dropped
        /// never outranks what is kept.
        #[test]
        fn exact_count_and_order(scores in prop::collection::vec(-10.0f32..10.0, 0..200),
                                 sparsity in 0.0f64..=1.0) {
            let keep = keep_top(&[&scores], sparsity).pop().unwrap();
            let dropped = keep.iter().filter(|k| !**k).count();
            let target = sparsity * scores.len() as f64;
            prop_assert!((dropped as f64 - target).abs() <= 0.5 + 1e-9);
            let max_dropped = scores.iter().zip(&keep).filter(|(_, k)| !**k)
                .map(|(s, _)| *s).fold(f32::NEG_INFINITY, f32::max);
            let min_kept = scores.iter().zip(&keep).filter(|(_, k)| **k)
                .map(|(s, _)| *s).fold(f32::INFINITY, f32::min);
            prop_assert!(max_dropped <= min_kept);
        }
    }
}
