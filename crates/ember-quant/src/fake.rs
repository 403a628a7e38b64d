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
