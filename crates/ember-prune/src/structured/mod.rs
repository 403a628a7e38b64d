//! Structured pruning: remove whole units (neurons, filters) and build a smaller model.
//!
//! A model declares its dependency groups ([`UnitGroup`]: the parameters that index a layer's
//! units as outputs and as inputs); [`unit_scores`] scores each group's units by a
//! [`UnitCriterion`] (from the weights, or watching the model on [`Evidence`]), [`keep_best`]
//! keeps the best per group or across groups ([`Ranking`]), and [`shrink`] copies the kept
//! slices of every parameter into a smaller model of the same type (a skeleton the caller
//! builds with the new widths), checking every shape on the way. Unlike masks, the pruned
//! model computes with smaller matrices: it is faster and smaller in memory, not only on disk.

mod criteria;
mod discover;
mod optimizer;

use std::collections::BTreeMap;

use burn::module::Module;
use ember_tensor::stats::read_f32;
use ember_tensor::{UnitGroup, UnitSlice, param_values, set_param_values};
use serde::{Deserialize, Serialize};

pub use criteria::{
    Evidence, ShapleyConfig, ShapleyScores, UnitCriterion, UnitScores, apoz_scores, shapley_scores,
    taylor_scores, unit_scores, weight_scores,
};
pub use discover::{FoundGroups, find_unit_groups};
pub use optimizer::shrink_optimizer_state;

use crate::prune::check_sparsity;
use crate::{Error, Result};

/// The units each group keeps, ascending indices by group name.
pub type Kept = BTreeMap<String, Vec<usize>>;

/// How the units to remove are chosen across groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Ranking {
    /// Each group loses `fraction` of its units, ranked among themselves.
    #[default]
    Local,
    /// `fraction` of all units are removed, ranked together: each group's scores divided by
    /// their mean magnitude first (as Torch-Pruning normalizes), so that layers of different
    /// scales compare. Layers then lose different fractions.
    Global,
}

/// What structured pruning removes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StructuredConfig {
    /// The score.
    pub criterion: UnitCriterion,
    /// Fraction of each group's units to remove, in `[0, 1]`.
    pub fraction: f64,
    /// Keep a multiple of this many units (8, say, for hardware-friendly widths), rounding
    /// the kept count up; 1 for no rounding.
    pub round_to: usize,
    /// Keep at least this many units per group.
    pub min_keep: usize,
    /// Per group or across groups.
    #[serde(default)]
    pub ranking: Ranking,
}

impl StructuredConfig {
    /// Remove `fraction` of every group's units by `criterion`, no rounding, at least one
    /// unit kept.
    pub fn new(criterion: UnitCriterion, fraction: f64) -> Self {
        Self {
            criterion,
            fraction,
            round_to: 1,
            min_keep: 1,
            ranking: Ranking::Local,
        }
    }

    /// The same cut ranked across groups.
    pub fn global(self) -> Self {
        Self {
            ranking: Ranking::Global,
            ..self
        }
    }

    /// How many of `units` units a group keeps.
    pub fn kept(&self, group: &str, units: usize) -> Result<usize> {
        self.check(group)?;
        let removed = (self.fraction * units as f64).round() as usize;
        self.rounded(group, units - removed.min(units), units)
    }

    fn check(&self, what: &str) -> Result<()> {
        check_sparsity(what, self.fraction)?;
        if self.round_to == 0 {
            return Err(group_error(what, "round_to must be at least 1"));
        }
        Ok(())
    }

    /// `kept` of `units` rounded up to `round_to`, at least `min_keep`, never zero.
    fn rounded(&self, group: &str, kept: usize, units: usize) -> Result<usize> {
        let kept = kept
            .div_ceil(self.round_to)
            .saturating_mul(self.round_to)
            .max(self.min_keep)
            .min(units);
        if kept == 0 {
            return Err(group_error(group, "pruning would remove every unit"));
        }
        Ok(kept)
    }
}

pub(crate) fn group_error(group: &str, reason: impl Into<String>) -> Error {
    Error::Group {
        group: group.to_string(),
        reason: reason.into(),
    }
}

/// Each parameter's shape and row-major values, by path.
pub(crate) type Values = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// The values and shapes of `model`'s parameters, by path.
pub(crate) fn values_by_path<M: Module>(model: &M) -> Result<Values> {
    param_values(model)
        .into_iter()
        .map(|p| {
            Ok((
                p.info.path.clone(),
                (p.info.shape.clone(), read_f32(p.flat)?),
            ))
        })
        .collect()
}

/// `(outer, dim, inner)` of a row-major shape around `axis`.
pub(crate) fn split(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (
        shape[..axis].iter().product(),
        shape[axis],
        shape[axis + 1..].iter().product(),
    )
}

/// Every slice of the group exists and indexes `units * block` elements.
pub(crate) fn check_group(group: &UnitGroup, values: &Values) -> Result<()> {
    for slice in group.slices() {
        let (shape, _) = values.get(&slice.path).ok_or_else(|| {
            group_error(
                &group.name,
                format!("the model has no parameter `{}`", slice.path),
            )
        })?;
        let expected = group.units.checked_mul(slice.block);
        if slice.block == 0 || shape.get(slice.axis).copied() != expected {
            return Err(group_error(
                &group.name,
                format!(
                    "`{}` has shape {shape:?}: axis {} should hold {} units of {}",
                    slice.path, slice.axis, group.units, slice.block
                ),
            ));
        }
    }
    Ok(())
}

/// The units each group keeps (ascending indices), the best-scored by `config.criterion`
/// read from the weights ([`weight_scores`]); for the criteria that watch the model, score
/// with [`unit_scores`] and choose with [`keep_best`].
pub fn select_units<M: Module>(
    model: &M,
    groups: &[UnitGroup],
    config: &StructuredConfig,
) -> Result<Kept> {
    keep_best(
        groups,
        &weight_scores(model, groups, config.criterion)?,
        config,
    )
}

/// The units each group keeps (ascending indices): the highest `scores`, `config.fraction`
/// removed per group or across groups ([`Ranking`]), each group's count rounded up to
/// `round_to` and at least `min_keep`. Ties go to the lower index, so the choice is
/// deterministic.
pub fn keep_best(
    groups: &[UnitGroup],
    scores: &UnitScores,
    config: &StructuredConfig,
) -> Result<Kept> {
    config.check("structured pruning")?;
    let mut ranked = BTreeMap::new();
    for group in groups {
        let s = scores
            .get(&group.name)
            .ok_or_else(|| group_error(&group.name, "no scores given"))?;
        if s.len() != group.units {
            return Err(group_error(
                &group.name,
                format!("{} scores for {} units", s.len(), group.units),
            ));
        }
        if s.iter().any(|v| !v.is_finite()) {
            return Err(group_error(&group.name, "a score is NaN or infinite"));
        }
        let mut order: Vec<usize> = (0..group.units).collect();
        // Highest score first.
        order.sort_by(|&a, &b| s[b].total_cmp(&s[a]).then(a.cmp(&b)));
        ranked.insert(group.name.as_str(), order);
    }
    let counts = match config.ranking {
        Ranking::Local => groups
            .iter()
            .map(|g| config.kept(&g.name, g.units))
            .collect::<Result<Vec<_>>>()?,
        Ranking::Global => global_counts(groups, scores, &ranked, config)?,
    };
    Ok(groups
        .iter()
        .zip(counts)
        .map(|(group, count)| {
            let mut units = ranked[group.name.as_str()][..count].to_vec();
            units.sort_unstable();
            (group.name.clone(), units)
        })
        .collect())
}

/// How many units each group keeps when `fraction` of all units go, lowest normalized score
/// first, no group dropping below `max(min_keep, 1)`; then each count rounded up.
fn global_counts(
    groups: &[UnitGroup],
    scores: &UnitScores,
    ranked: &BTreeMap<&str, Vec<usize>>,
    config: &StructuredConfig,
) -> Result<Vec<usize>> {
    let total: usize = groups.iter().map(|g| g.units).sum();
    let target = (config.fraction * total as f64).round() as usize;
    // (normalized score, group), each group's units pushed from its worst: the stable sort keeps
    // that order among equal scores, so a group's removed units are always its lowest-ranked.
    let mut candidates = Vec::with_capacity(total);
    for (g, group) in groups.iter().enumerate() {
        let s = &scores[&group.name];
        let scale = s.iter().map(|v| v.abs()).sum::<f64>() / s.len().max(1) as f64;
        let scale = if scale > 0.0 { scale } else { 1.0 };
        for &unit in ranked[group.name.as_str()].iter().rev() {
            candidates.push((s[unit] / scale, g));
        }
    }
    candidates.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut kept: Vec<usize> = groups.iter().map(|g| g.units).collect();
    let floors: Vec<usize> = groups
        .iter()
        .map(|g| config.min_keep.max(1).min(g.units))
        .collect();
    let mut removed = 0;
    for (_, g) in candidates {
        if removed == target {
            break;
        }
        if kept[g] > floors[g] {
            kept[g] -= 1;
            removed += 1;
        }
    }
    groups
        .iter()
        .zip(kept)
        .map(|(group, k)| config.rounded(&group.name, k, group.units))
        .collect()
}

/// Copy `model`'s parameters into `skeleton`, a model of the same structure with each group's
/// width cut to its kept units, keeping only those units' slices (`keep` from
/// [`select_units`], or any list of ascending unit indices per group). Every parameter of the
/// skeleton must come out of the cut with exactly its shape: a skeleton built with other widths
/// is an error naming the parameter, not a model with shifted weights. Masks are not carried
/// over: the skeleton gets the masked (effective) values.
///
/// ```
/// use burn::module::Module;
/// use burn::tensor::Device;
/// use ember_prune::{StructuredConfig, UnitCriterion, select_units, shrink};
/// use ember_zoo::MlpConfig;
///
/// let device = Device::flex();
/// let config = MlpConfig::lenet_300_100(784, 10);
/// let dense = config.init(&device)?;
/// // The model declares which slices each neuron owns; keep the half with the largest L2.
/// let groups = config.unit_groups("");
/// let kept = select_units(&dense, &groups, &StructuredConfig::new(UnitCriterion::L2, 0.5))?;
/// let small_config = config.with_kept("", &kept);
/// assert_eq!(small_config.hidden, vec![150, 50]);
/// let small = shrink(&dense, &groups, &kept, small_config.init(&device)?)?;
/// assert!(small.num_params() < dense.num_params() / 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn shrink<M: Module, S: Module>(
    model: &M,
    groups: &[UnitGroup],
    keep: &Kept,
    skeleton: S,
) -> Result<S> {
    let mut values = values_by_path(model)?;
    for group in groups {
        check_group(group, &values)?;
        let units = kept_units(group, keep)?;
        for slice in group.slices() {
            if let Some((shape, flat)) = values.get_mut(&slice.path) {
                *flat = gather(shape, flat, slice, units);
                shape[slice.axis] = units.len() * slice.block;
            }
        }
    }
    let wanted = values_by_path(&skeleton)?;
    let mut flat_values = BTreeMap::new();
    for (path, (shape, _)) in &wanted {
        let (got, flat) = values
            .remove(path)
            .ok_or_else(|| group_error(path, "the skeleton has a parameter the model does not"))?;
        if &got != shape {
            return Err(Error::Tensor(ember_tensor::Error::ValueShape {
                path: path.clone(),
                expected: shape.clone(),
                actual: flat.len(),
            }));
        }
        flat_values.insert(path.clone(), flat);
    }
    Ok(set_param_values(skeleton, &flat_values)?)
}

/// The units `keep` gives `group`: ascending, in range, and not none.
fn kept_units<'a>(group: &UnitGroup, keep: &'a Kept) -> Result<&'a [usize]> {
    let units = keep
        .get(&group.name)
        .ok_or_else(|| group_error(&group.name, "no kept units given"))?;
    if units.is_empty() {
        return Err(group_error(&group.name, "pruning would remove every unit"));
    }
    if units.windows(2).any(|w| w[0] >= w[1]) || units.iter().any(|&u| u >= group.units) {
        return Err(group_error(
            &group.name,
            format!("kept units must be ascending indices below {}", group.units),
        ));
    }
    Ok(units)
}

/// The kept units' elements of `flat` (row-major `shape`) along `slice.axis`.
fn gather<T: Copy>(shape: &[usize], flat: &[T], slice: &UnitSlice, units: &[usize]) -> Vec<T> {
    let (outer, dim, inner) = split(shape, slice.axis);
    let mut out = Vec::with_capacity(outer * units.len() * slice.block * inner);
    for o in 0..outer {
        for &u in units {
            let first = o * dim + u * slice.block;
            out.extend_from_slice(&flat[first * inner..(first + slice.block) * inner]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn kept_counts_round_up_and_never_reach_zero() {
        let c = StructuredConfig::new(UnitCriterion::L1, 0.5);
        assert_eq!(c.kept("g", 300).unwrap(), 150);
        let c8 = StructuredConfig {
            round_to: 8,
            ..c.clone()
        };
        // 300 - 150 = 150 kept, up to 152.
        assert_eq!(c8.kept("g", 300).unwrap(), 152);
        let all = StructuredConfig::new(UnitCriterion::L1, 1.0);
        assert_eq!(all.kept("g", 10).unwrap(), 1, "min_keep 1");
        let none = StructuredConfig { min_keep: 0, ..all };
        assert!(matches!(none.kept("g", 10), Err(Error::Group { .. })));
        assert!(
            StructuredConfig::new(UnitCriterion::L2, 1.5)
                .kept("g", 4)
                .is_err()
        );
    }

    #[test]
    fn gather_takes_blocks_along_an_axis() {
        // [2, 4] row-major, axis 1, blocks of 2: units 0 = cols 0-1, 1 = cols 2-3.
        let flat: Vec<f32> = (0..8).map(|v| v as f32).collect();
        let slice = UnitSlice::new("w", 1).with_block(2);
        assert_eq!(
            gather(&[2, 4], &flat, &slice, &[1]),
            vec![2.0, 3.0, 6.0, 7.0]
        );
        let rows = UnitSlice::new("w", 0);
        assert_eq!(
            gather(&[2, 4], &flat, &rows, &[1]),
            vec![4.0, 5.0, 6.0, 7.0]
        );
    }
}
