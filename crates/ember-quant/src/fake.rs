//! Quantize-dequantize of activations on the device, per tensor: the float model computes with
//! exactly the values an integer kernel would see.

use burn::tensor::Tensor;
use ember_observe::Range;

use crate::scheme::{QParams, QScheme};

/// `(clamp(round_half_even(x / scale) + zp, qmin, qmax) − zp) · scale`, elementwise, with the
/// first (per-tensor) scale and zero point of `params`.
pub fn fake_quantize<const D: usize>(
    x: Tensor<D>,
    scheme: &QScheme,
    params: &QParams,
) -> Tensor<D> {
    let (Some(&scale), Some(&zp)) = (params.scale.first(), params.zero_point.first()) else {
        return x;
    };
    let (qmin, qmax) = scheme.bounds();
    x.div_scalar(scale)
        .round()
        .add_scalar(zp)
        .clamp(qmin, qmax)
        .sub_scalar(zp)
        .mul_scalar(scale)
}

/// Per-tensor parameters from one batch's min and max, or `None` for a batch with NaN or Inf
/// (left as it is, so that it shows in the output) or with every value zero (exact as it is).
pub fn dynamic_params<const D: usize>(x: &Tensor<D>, scheme: &QScheme) -> Option<QParams> {
    let min: f32 = x.clone().min().into_scalar();
    let max: f32 = x.clone().max().into_scalar();
    if !(min.is_finite() && max.is_finite()) {
        return None;
    }
    scheme.qparams(&[Range { min, max }], "input").ok()
}

/// Dynamic quantization of one batch on the device: the per-tensor parameters that
/// [`dynamic_params`] computes on the host, computed with the same f32 operations as tensors,
/// so that the batch never waits for a read-back (each one stalls a GPU queue). A batch with
/// NaN or an infinity is returned as it is, as [`dynamic_params`] leaves it; an all-zero batch
/// quantizes to itself.
pub fn fake_quantize_dynamic<const D: usize>(x: Tensor<D>, scheme: &QScheme) -> Tensor<D> {
    let min = x.clone().min();
    let max = x.clone().max();
    let bad = min
        .clone()
        .is_nan()
        .bool_or(min.clone().is_inf())
        .bool_or(max.clone().is_nan())
        .bool_or(max.clone().is_inf());
    let one = [1; D];
    let (scale, zero_point) = device_qparams(min.reshape(one), max.reshape(one), scheme);
    let quantized = quantize_dequantize(x.clone(), scale, zero_point, scheme);
    let shape = x.shape();
    quantized.mask_where(bad.reshape(one).expand(shape), x)
}

/// [`fake_quantize`] with a straight-through estimator: the forward pass sees the quantized
/// values, the backward pass the identity (rounding has no useful gradient), as in
/// quantization-aware training (Jacob et al. 2018).
pub fn fake_quantize_ste<const D: usize>(
    x: Tensor<D>,
    scheme: &QScheme,
    params: &QParams,
) -> Tensor<D> {
    let quantized = fake_quantize(x.clone().detach(), scheme, params);
    x.clone() + (quantized - x).detach()
}

/// A weight fake-quantized with min/max ranges of its current values, per tensor or per
/// channel, with a straight-through estimator. On the CPU the values equal what
/// [`crate::QTensor::quantize`] stores for the same weight. A per-group scheme is refused
/// earlier, by [`crate::prepare_qat`].
pub fn fake_quantize_weight_ste<const D: usize>(w: Tensor<D>, scheme: &QScheme) -> Tensor<D> {
    let values = w.clone().detach();
    let reduce: Vec<usize> = match scheme.granularity {
        crate::Granularity::PerChannel { axis } => (0..D).filter(|&d| d != axis).collect(),
        _ => (0..D).collect(),
    };
    let min = values.clone().min_dims(&reduce);
    let max = values.clone().max_dims(&reduce);
    let (scale, zero_point) = device_qparams(min, max, scheme);
    let quantized = quantize_dequantize(values, scale, zero_point, scheme);
    w.clone() + (quantized - w).detach()
}

/// Scales and zero points from min and max tensors (one value, or one per channel), on the
/// device, with the same f32 arithmetic as [`QScheme::qparams`]: the range widened to contain
/// zero, the scale at least `f32::EPSILON`.
fn device_qparams<const D: usize>(
    min: Tensor<D>,
    max: Tensor<D>,
    scheme: &QScheme,
) -> (Tensor<D>, Tensor<D>) {
    let (qmin, qmax) = scheme.bounds();
    let (lo, hi) = (min.clamp_max(0.0), max.clamp_min(0.0));
    match scheme.mode {
        crate::Mode::Symmetric => {
            let scale = lo
                .neg()
                .max_pair(hi)
                .div_scalar((qmax - qmin) as f32 / 2.0)
                .clamp_min(f32::EPSILON);
            let zero_point = scale.zeros_like().add_scalar(scheme.symmetric_zero_point());
            (scale, zero_point)
        }
        crate::Mode::Affine => {
            let scale = (hi - lo.clone())
                .div_scalar((qmax - qmin) as f32)
                .clamp_min(f32::EPSILON);
            let zero_point = lo
                .div(scale.clone())
                .round()
                .neg()
                .add_scalar(qmin)
                .clamp(qmin, qmax);
            (scale, zero_point)
        }
    }
}

/// `(clamp(round(x / scale) + zp, qmin, qmax) − zp) · scale` with scales and zero points held
/// as tensors that broadcast against `x`.
fn quantize_dequantize<const D: usize>(
    x: Tensor<D>,
    scale: Tensor<D>,
    zero_point: Tensor<D>,
    scheme: &QScheme,
) -> Tensor<D> {
    let (qmin, qmax) = scheme.bounds();
    x.div(scale.clone())
        .round()
        .add(zero_point.clone())
        .clamp(qmin, qmax)
        .sub(zero_point)
        .mul(scale)
}

/// A per-tensor range kept on the device as a layer's inputs go by: the min and max of
/// everything seen, or their moving average (`m ← m + momentum · (batch − m)`, the first batch
/// setting it), as `ember_observe`'s min/max observers keep them on the host. Updating it reads
/// nothing back; [`DeviceRange::read`] reads the range and the count of non-finite values once,
/// when calibration or quantization-aware training ends. A batch with NaN or an infinity is
/// counted and leaves the range as it was.
#[derive(Debug, Clone)]
pub struct DeviceRange {
    momentum: Option<f32>,
    state: Option<RangeState>,
}

#[derive(Debug, Clone)]
struct RangeState {
    /// `[min, max]`; `[+inf, -inf]` before the first finite batch.
    range: Tensor<1>,
    /// `[1]` once a finite batch was seen, else `[0]`.
    seen: Tensor<1>,
    /// Non-finite values seen.
    non_finite: Tensor<1>,
    /// The first bad batch's offending value (an infinite extreme, or NaN), for the error
    /// message.
    first_bad: Tensor<1>,
}

/// What a [`DeviceRange`] saw, read back.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SeenRange {
    /// The range of the finite batches, `None` if there was none.
    pub range: Option<Range>,
    /// How many values were NaN or infinite.
    pub non_finite: usize,
    /// The first of them (an extreme of the first batch that had one).
    pub first_bad: f32,
}

impl DeviceRange {
    /// A min/max range (`momentum` `None`) or a moving average of batch ranges.
    pub fn new(momentum: Option<f32>) -> Self {
        Self {
            momentum,
            state: None,
        }
    }

    /// Whether a batch was taken in (finite or not).
    pub fn has_seen(&self) -> bool {
        self.state.is_some()
    }

    /// Take in one batch (detached from any autodiff graph: ranges have no gradient).
    pub fn update<const D: usize>(&mut self, x: &Tensor<D>) {
        if x.shape().num_elements() == 0 {
            return;
        }
        let flat = x.clone().detach().without_autodiff().flatten::<1>(0, D - 1);
        let count = flat
            .clone()
            .is_nan()
            .bool_or(flat.clone().is_inf())
            .float()
            .sum();
        let (min, max) = (flat.clone().min(), flat.max());
        let device = min.device();
        let state = self.state.get_or_insert_with(|| RangeState {
            range: Tensor::from_floats([f32::INFINITY, f32::NEG_INFINITY], &device),
            seen: Tensor::zeros([1], &device),
            non_finite: Tensor::zeros([1], &device),
            first_bad: Tensor::zeros([1], &device),
        });
        let bad = count.clone().greater_elem(0.0);
        let min_bad = min.clone().is_nan().bool_or(min.clone().is_inf());
        let max_bad = max.clone().is_nan().bool_or(max.clone().is_inf());
        let seen = state.seen.clone().greater_elem(0.5);
        let prev = state.range.clone();
        let batch = Tensor::cat(vec![min.clone(), max.clone()], 0);
        let merged = match self.momentum {
            None => Tensor::cat(
                vec![
                    prev.clone().slice(0..1).min_pair(min.clone()),
                    prev.clone().slice(1..2).max_pair(max.clone()),
                ],
                0,
            ),
            Some(momentum) => {
                let average = (batch.clone() - prev.clone()).mul_scalar(momentum) + prev.clone();
                batch.mask_where(seen.expand([2]), average)
            }
        };
        let first = state
            .non_finite
            .clone()
            .equal_elem(0.0)
            .bool_and(bad.clone());
        // An infinite extreme if there is one; else the batch's bad values are NaN (which a
        // backend's min and max may skip).
        let offender = Tensor::<1>::full([1], f32::NAN, &device)
            .mask_where(max_bad, max)
            .mask_where(min_bad, min);
        state.first_bad = state.first_bad.clone().mask_where(first, offender);
        state.range = merged.mask_where(bad.clone().expand([2]), prev);
        state.seen = state
            .seen
            .clone()
            .mask_where(bad.bool_not(), Tensor::ones([1], &device));
        state.non_finite = state.non_finite.clone() + count;
    }

    /// [`fake_quantize_ste`] with the range seen so far, on the device; the input as it is
    /// before any finite batch, or while the range is only zero (exact as it is).
    pub fn fake_quantize_ste<const D: usize>(&self, x: Tensor<D>, scheme: &QScheme) -> Tensor<D> {
        let Some(state) = &self.state else {
            return x;
        };
        let one = [1; D];
        let min = state.range.clone().slice(0..1);
        let max = state.range.clone().slice(1..2);
        let zero_range = min
            .clone()
            .clamp_max(0.0)
            .equal_elem(0.0)
            .bool_and(max.clone().clamp_min(0.0).equal_elem(0.0));
        let unusable = state.seen.clone().lower_elem(0.5).bool_or(zero_range);
        let (scale, zero_point) = device_qparams(min.reshape(one), max.reshape(one), scheme);
        let values = x.clone().detach();
        let quantized = quantize_dequantize(values, scale, zero_point, scheme);
        let shape = x.shape();
        let through = x.clone() + (quantized - x.clone()).detach();
        through.mask_where(unusable.reshape(one).expand(shape), x)
    }

    /// Read back what was seen: one transfer.
    pub fn read(&self) -> ember_tensor::Result<SeenRange> {
        let Some(state) = &self.state else {
            return Ok(SeenRange {
                range: None,
                non_finite: 0,
                first_bad: 0.0,
            });
        };
        let all = Tensor::cat(
            vec![
                state.range.clone(),
                state.seen.clone(),
                state.non_finite.clone(),
                state.first_bad.clone(),
            ],
            0,
        );
        let v = ember_tensor::stats::read_f32(all)?;
        Ok(SeenRange {
            range: (v[2] > 0.5).then_some(Range {
                min: v[0],
                max: v[1],
            }),
            non_finite: v[3] as usize,
            first_bad: v[4],
        })
    }
}
