//! Structured pruning: remove whole units (neurons, filters) and build a smaller model.
//!
//! A model declares its dependency groups ([`UnitGroup`]: the parameters that index a layer's
//! units as outputs and as inputs); [`select_units`] scores each group's units by a
//! [`UnitCriterion`] and keeps the best, and [`shrink`] copies the kept slices of every
//! parameter into a smaller model of the same type (a skeleton the caller builds with the new
//! widths), checking every shape on the way. Unlike masks, the pruned model computes with
//! smaller matrices: it is faster and smaller in memory, not only on disk.

use std::collections::BTreeMap;

use burn::module::Module;
use ember_tensor::stats::read_f32;
use ember_tensor::{UnitGroup, UnitSlice, param_values, set_param_values};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::prune::{check_finite, check_sparsity};
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
        }
    }

    /// How many of `units` units a group keeps.
    pub fn kept(&self, group: &str, units: usize) -> Result<usize> {
        check_sparsity(group, self.fraction)?;
        if self.round_to == 0 {
            return Err(group_error(group, "round_to must be at least 1"));
        }
        let removed = (self.fraction * units as f64).round() as usize;
        let kept = (units - removed.min(units))
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

fn group_error(group: &str, reason: impl Into<String>) -> Error {
    Error::Group {
        group: group.to_string(),
        reason: reason.into(),
    }
}

/// Each parameter's shape and row-major values, by path.
type Values = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// The values and shapes of `model`'s parameters, by path.
fn values_by_path<M: Module>(model: &M) -> Result<Values> {
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

/// The score of every unit of `group`, from its first producer's slices.
pub fn unit_scores<M: Module>(
    model: &M,
    group: &UnitGroup,
    criterion: UnitCriterion,
) -> Result<Vec<f64>> {
    let values = values_by_path(model)?;
    check_group(group, &values)?;
    scores(group, &values, criterion)
}

fn scores(group: &UnitGroup, values: &Values, criterion: UnitCriterion) -> Result<Vec<f64>> {
    let scored = group
        .producers
        .first()
        .ok_or_else(|| group_error(&group.name, "no producer to score"))?;
    let (shape, flat) = &values[&scored.path];
    check_finite(&scored.path, flat)?;
    if let UnitCriterion::Random { seed } = criterion {
        let mut rng = StdRng::seed_from_u64(seed);
        return Ok((0..group.units).map(|_| rng.random::<f64>()).collect());
    }
    let mut sums = vec![0.0f64; group.units];
    let (outer, dim, inner) = split(shape, scored.axis);
    for o in 0..outer {
        for d in 0..dim {
            let unit = d / scored.block;
            for &v in &flat[(o * dim + d) * inner..(o * dim + d + 1) * inner] {
                sums[unit] += match criterion {
                    UnitCriterion::L1 => f64::from(v.abs()),
                    _ => f64::from(v) * f64::from(v),
                };
            }
        }
    }
    if criterion == UnitCriterion::L2 {
        sums.iter_mut().for_each(|s| *s = s.sqrt());
    }
    Ok(sums)
}

/// `(outer, dim, inner)` of a row-major shape around `axis`.
fn split(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (
        shape[..axis].iter().product(),
        shape[axis],
        shape[axis + 1..].iter().product(),
    )
}

/// Every slice of the group exists and indexes `units * block` elements.
fn check_group(group: &UnitGroup, values: &Values) -> Result<()> {
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

/// The units each group keeps (ascending indices), the best-scored by `config.criterion`,
/// each group ranked on its own.
pub fn select_units<M: Module>(
    model: &M,
    groups: &[UnitGroup],
    config: &StructuredConfig,
) -> Result<BTreeMap<String, Vec<usize>>> {
    let values = values_by_path(model)?;
    let mut kept = BTreeMap::new();
    for group in groups {
        check_group(group, &values)?;
        let scores = scores(group, &values, config.criterion)?;
        let keep = config.kept(&group.name, group.units)?;
        let mut order: Vec<usize> = (0..group.units).collect();
        // Highest score first; ties by index, so that the choice is deterministic.
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
        let mut units = order[..keep].to_vec();
        units.sort_unstable();
        kept.insert(group.name.clone(), units);
    }
    Ok(kept)
}

/// Copy `model`'s parameters into `skeleton`, a model of the same structure with each group's
/// width cut to its kept units, keeping only those units' slices (`keep` from
/// [`select_units`], or any list of ascending unit indices per group). Every parameter of the
/// skeleton must come out of the cut with exactly its shape: a skeleton built with other widths
/// is an error naming the parameter, not a model with shifted weights. Masks are not carried
/// over: the skeleton gets the masked (effective) values.
pub fn shrink<M: Module, S: Module>(
    model: &M,
    groups: &[UnitGroup],
    keep: &BTreeMap<String, Vec<usize>>,
    skeleton: S,
) -> Result<S> {
    let mut values = values_by_path(model)?;
    for group in groups {
        check_group(group, &values)?;
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

/// The kept units' elements of `flat` (row-major `shape`) along `slice.axis`.
fn gather(shape: &[usize], flat: &[f32], slice: &UnitSlice, units: &[usize]) -> Vec<f32> {
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
