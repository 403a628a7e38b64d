//! Mixed-precision training: the forward and backward pass in f16 or bf16, the weights and the
//! optimizer in f32, and a dynamic loss scale that keeps small f16 gradients from flushing to
//! zero. burn has neither autocast nor a gradient scaler (upstream issue 5696), so this is
//! ours, in the shape of PyTorch's `autocast` + `GradScaler`:
//!
//! - every step casts the f32 master weights to the compute dtype on the autodiff device, so
//!   the cast is recorded and the gradients flow back to the f32 weights as f32;
//! - parameters matched by [`MixedPrecision::keep_f32`] stay f32 (their layer must cast its
//!   input to match, as Ember's drop-in layers do: burn's own layers need inputs of their
//!   weights' dtype), and the loss is always computed in f32;
//! - the loss is multiplied by the scale before `backward`, the gradients divided by it after;
//!   a step whose gradients hold an Inf or NaN is skipped and the scale halved, and the scale
//!   doubles after [`LossScaleConfig::growth_interval`] clean steps in a row;
//! - a batch norm's running statistics are buffers burn shares between a module and its
//!   clones, so casting the view casts them too (burn's layers need them in their input's
//!   dtype): they are updated in the compute dtype and cast back to f32 after every step
//!   ([`restore_f32`]), so they keep the compute dtype's precision (PyTorch keeps them f32).

use std::collections::HashSet;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::device::{FloatType, require_dtype};
use crate::{Error, Result, Selector, params};

/// How a run trains in mixed precision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MixedPrecision {
    /// The dtype of the forward and backward pass (`F16` or `BF16`).
    pub compute: FloatType,
    /// Loss scaling; `None` computes the gradients unscaled (what bf16, with f32's exponent
    /// range, usually needs; f16's gradients underflow without it).
    #[serde(default = "default_loss_scale")]
    pub loss_scale: Option<LossScaleConfig>,
    /// Patterns of parameter paths that stay f32 (normalization layers, say); see the
    /// [module docs](self) for what their layers must do.
    #[serde(default)]
    pub keep_f32: Vec<String>,
}

fn default_loss_scale() -> Option<LossScaleConfig> {
    Some(LossScaleConfig::default())
}

impl MixedPrecision {
    /// f16 compute with PyTorch's default dynamic loss scale.
    pub fn f16() -> Self {
        Self {
            compute: FloatType::F16,
            loss_scale: default_loss_scale(),
            keep_f32: Vec::new(),
        }
    }

    /// bf16 compute, unscaled.
    pub fn bf16() -> Self {
        Self {
            compute: FloatType::BF16,
            loss_scale: None,
            keep_f32: Vec::new(),
        }
    }

    /// A typed error unless `device` can compute in this dtype and the scale's settings can
    /// work (ndarray has no f16 or bf16).
    pub(crate) fn validate(&self, device: &Device) -> Result<()> {
        if self.compute == FloatType::F32 {
            return Err(Error::InvalidConfig {
                field: "precision.compute",
                value: "F32".into(),
                reason: "mixed precision computes in F16 or BF16; plain f32 is `precision: None`",
            });
        }
        require_dtype(device, self.compute.dtype())?;
        if let Some(scale) = &self.loss_scale {
            scale.validate()?;
        }
        Ok(())
    }
}

/// A dynamic loss scale's settings; the defaults are PyTorch's `GradScaler`'s.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LossScaleConfig {
    /// The scale at the first step.
    pub initial: f32,
    /// What the scale is multiplied by after `growth_interval` clean steps (> 1).
    pub growth_factor: f32,
    /// What the scale is multiplied by after an overflow (in (0, 1)).
    pub backoff_factor: f32,
    /// Clean steps in a row before the scale grows.
    pub growth_interval: usize,
}

impl Default for LossScaleConfig {
    fn default() -> Self {
        Self {
            initial: 65_536.0,
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval: 2_000,
        }
    }
}

impl LossScaleConfig {
    fn validate(&self) -> Result<()> {
        let invalid = |field, value: f64, reason| {
            Err(Error::InvalidConfig {
                field,
                value: value.to_string(),
                reason,
            })
        };
        if !(self.initial.is_finite() && self.initial > 0.0) {
            return invalid(
                "loss_scale.initial",
                self.initial.into(),
                "must be finite and > 0",
            );
        }
        if !(self.growth_factor.is_finite() && self.growth_factor > 1.0) {
            return invalid(
                "loss_scale.growth_factor",
                self.growth_factor.into(),
                "must be finite and > 1",
            );
        }
        if !(self.backoff_factor > 0.0 && self.backoff_factor < 1.0) {
            return invalid(
                "loss_scale.backoff_factor",
                self.backoff_factor.into(),
                "must be in (0, 1)",
            );
        }
        if self.growth_interval == 0 {
            return invalid("loss_scale.growth_interval", 0.0, "must be at least 1 step");
        }
        Ok(())
    }
}

/// What the loss scaler decided for a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaledStep {
    /// The gradients were finite: apply the optimizer step.
    Apply,
    /// A gradient overflowed: skip the step (the scale was lowered).
    Skip,
}

/// A dynamic loss scale: see the [module docs](self).
#[derive(Debug, Clone, PartialEq)]
pub struct LossScaler {
    config: LossScaleConfig,
    scale: f32,
    clean_steps: usize,
    skipped: usize,
}

impl LossScaler {
    /// A scaler at `config.initial`; a typed error for settings that cannot work.
    pub fn new(config: LossScaleConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            config,
            scale: config.initial,
            clean_steps: 0,
            skipped: 0,
        })
    }

    /// The scale the next step's loss is multiplied by.
    pub fn scale(&self) -> f32 {
        self.scale
    }

    /// Steps skipped so far for overflowing gradients.
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// Record whether this step's gradients overflowed and decide the step. A scale driven to
    /// zero (every step overflows: the loss or the weights themselves are not finite) or to
    /// infinity is a typed error, not a run that silently stops learning.
    pub fn update(&mut self, overflowed: bool) -> Result<ScaledStep> {
        if overflowed {
            self.scale *= self.config.backoff_factor;
            self.clean_steps = 0;
            self.skipped += 1;
            if self.scale < f32::MIN_POSITIVE {
                return Err(Error::LossScale {
                    scale: self.scale,
                    reason: "fell to zero: every step overflowed, so the loss or the weights \
                             are not finite",
                });
            }
            return Ok(ScaledStep::Skip);
        }
        self.clean_steps += 1;
        if self.clean_steps == self.config.growth_interval {
            self.clean_steps = 0;
            self.scale *= self.config.growth_factor;
            if !self.scale.is_finite() {
                return Err(Error::LossScale {
                    scale: self.scale,
                    reason: "grew past f32's range: lower `growth_factor` or raise \
                             `growth_interval`",
                });
            }
        }
        Ok(ScaledStep::Apply)
    }
}

/// The model as one mixed-precision step computes with it: every float parameter cast to
/// `precision.compute` except those kept in f32. The casts are recorded on an autodiff device,
/// so gradients reach `model`'s own (f32) parameters, and reparameterized weights (pruning
/// masks) are cast after their mask applies.
pub fn compute_view<M: Module>(model: &M, precision: &MixedPrecision) -> Result<M> {
    Ok(ComputeView::new(model, precision)?.of(model))
}

/// [`compute_view`] with the parameters kept in f32 selected once, for a loop that takes the
/// view at every step (the parameter ids survive forks and optimizer steps).
pub(crate) struct ComputeView {
    /// The compute dtype, which the step's inputs are cast to as well.
    pub(crate) dtype: DType,
    keep: HashSet<ParamId>,
}

impl ComputeView {
    pub(crate) fn new<M: Module>(model: &M, precision: &MixedPrecision) -> Result<Self> {
        let keep = if precision.keep_f32.is_empty() {
            HashSet::new()
        } else {
            let selector = Selector {
                include: precision.keep_f32.clone(),
                ..Selector::default()
            };
            let all = params(model);
            selector.select(&all)?.iter().map(|p| p.id).collect()
        };
        Ok(Self {
            dtype: precision.compute.dtype(),
            keep,
        })
    }

    pub(crate) fn of<M: Module>(&self, model: &M) -> M {
        model.clone().map(&mut CastView {
            dtype: self.dtype,
            keep: &self.keep,
        })
    }
}

struct CastView<'a> {
    dtype: DType,
    keep: &'a HashSet<ParamId>,
}

impl ModuleMapper for CastView<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if self.keep.contains(&param.id) {
            return param;
        }
        let dtype = self.dtype;
        param.map(|t| t.cast(dtype))
    }
}

/// Cast back to f32 every float tensor of `model` that is not f32: the running statistics the
/// compute view cast in place (the f32 weights themselves are never cast).
pub fn restore_f32<M: Module>(model: M) -> M {
    model.map(&mut RestoreF32)
}

struct RestoreF32;

impl ModuleMapper for RestoreF32 {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        // The stored value's dtype: no mask needs applying to read it.
        if param.base().dtype() == DType::F32 {
            return param;
        }
        param.map(|t| t.cast(DType::F32))
    }
}

/// Divide every gradient of `model`'s parameters by `scale` (in f32) and say whether any of
/// them holds an Inf or a NaN. One read from the device per step, where the skip is decided.
pub fn unscale(grads: GradientsParams, model: &impl Module, scale: f32) -> (GradientsParams, bool) {
    let mut visitor = Unscale {
        grads,
        inverse: 1.0 / f64::from(scale),
        bad: None,
    };
    model.visit(&mut visitor);
    let overflowed = visitor
        .bad
        .map(|bad| bad.into_scalar::<i64>() > 0)
        .unwrap_or(false);
    (visitor.grads, overflowed)
}

struct Unscale {
    grads: GradientsParams,
    inverse: f64,
    /// Count of non-finite gradient entries, summed on the device.
    bad: Option<Tensor<1, burn::tensor::Int>>,
}

impl ModuleVisitor for Unscale {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let Some(grad) = self.grads.remove::<D>(param.id) else {
            return;
        };
        let grad = grad.cast(DType::F32).mul_scalar(self.inverse);
        let not_finite = grad
            .clone()
            .is_nan()
            .bool_or(grad.clone().is_inf())
            .int()
            .sum();
        self.bad = Some(match self.bad.take() {
            Some(bad) => bad + not_finite,
            None => not_finite,
        });
        self.grads.register(param.id, grad);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn scaler(growth_interval: usize) -> LossScaler {
        LossScaler::new(LossScaleConfig {
            initial: 8.0,
            growth_interval,
            ..LossScaleConfig::default()
        })
        .unwrap()
    }

    #[test]
    fn an_overflow_skips_the_step_and_halves_the_scale() {
        let mut s = scaler(3);
        assert_eq!(s.update(true).unwrap(), ScaledStep::Skip);
        assert_eq!(s.scale(), 4.0);
        assert_eq!(s.update(true).unwrap(), ScaledStep::Skip);
        assert_eq!(s.scale(), 2.0);
        assert_eq!(s.skipped(), 2);
    }

    #[test]
    fn the_scale_doubles_after_the_interval_of_clean_steps_and_an_overflow_restarts_the_count() {
        let mut s = scaler(3);
        // Two clean steps, an overflow (8 -> 4, count reset), then three clean steps (4 -> 8).
        let overflows = [false, false, true, false, false, false];
        let mut scales = Vec::new();
        for overflowed in overflows {
            let step = s.update(overflowed).unwrap();
            assert_eq!(step == ScaledStep::Skip, overflowed);
            scales.push(s.scale());
        }
        assert_eq!(scales, [8.0, 8.0, 4.0, 4.0, 4.0, 8.0]);
        assert_eq!(s.skipped(), 1);
    }

    #[test]
    fn a_scale_driven_to_zero_or_infinity_is_a_typed_error() {
        let mut s = scaler(1);
        let err = (0..200).find_map(|_| s.update(true).err()).unwrap();
        assert!(matches!(err, Error::LossScale { scale, .. } if scale < f32::MIN_POSITIVE));

        let mut s = LossScaler::new(LossScaleConfig {
            initial: f32::MAX / 2.0,
            growth_factor: 4.0,
            growth_interval: 1,
            ..LossScaleConfig::default()
        })
        .unwrap();
        assert!(
            matches!(s.update(false), Err(Error::LossScale { scale, .. }) if scale.is_infinite())
        );
    }

    #[test]
    fn settings_that_cannot_work_are_refused_by_field() {
        for (config, field) in [
            (
                LossScaleConfig {
                    initial: 0.0,
                    ..LossScaleConfig::default()
                },
                "loss_scale.initial",
            ),
            (
                LossScaleConfig {
                    growth_factor: 1.0,
                    ..LossScaleConfig::default()
                },
                "loss_scale.growth_factor",
            ),
            (
                LossScaleConfig {
                    backoff_factor: 1.0,
                    ..LossScaleConfig::default()
                },
                "loss_scale.backoff_factor",
            ),
            (
                LossScaleConfig {
                    growth_interval: 0,
                    ..LossScaleConfig::default()
                },
                "loss_scale.growth_interval",
            ),
        ] {
            match LossScaler::new(config) {
                Err(Error::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{config:?}: expected an error on {field}, got {other:?}"),
            }
        }
    }
}
