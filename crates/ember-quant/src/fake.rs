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
