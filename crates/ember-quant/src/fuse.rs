//! Folding batch normalization into the convolution before it, so that the pair quantizes as
//! one layer (PyTorch's `fuse_modules` for conv+bn; the ReLU after it needs no folding, see
//! [`crate::nn`]).

use burn::module::Param;
use burn::nn::BatchNorm;
use burn::tensor::Tensor;

use crate::nn::Conv2d;
use crate::{Error, Result};

/// The convolution that computes `bn(conv(x))` with batch normalization in inference mode:
/// `w' = w · γ / sqrt(σ² + ε)` per output channel and `b' = (b − μ) · γ / sqrt(σ² + ε) + β`.
pub fn fuse_conv_bn(conv: Conv2d, bn: &BatchNorm) -> Result<Conv2d> {
    let [out, ..] = conv.weight.dims();
    let [channels] = bn.gamma.dims();
    if channels != out {
        return Err(Error::Scheme {
            what: "conv + batch norm".into(),
            reason: format!("{out} output channels, the batch norm has {channels}"),
        });
    }
    let mean: Tensor<1> = bn.running_mean.value();
    let var: Tensor<1> = bn.running_var.value();
    let factor = bn.gamma.val() / var.add_scalar(bn.epsilon).sqrt();
    let weight = conv.weight.val();
    let device = weight.device();
    let bias = match &conv.bias {
        Some(b) => b.val(),
        None => Tensor::zeros([out], &device),
    };
    let fused_bias = (bias - mean) * factor.clone() + bn.beta.val();
    let fused_weight = weight * factor.reshape([out as i64, 1, 1, 1]);
    Ok(Conv2d {
        weight: Param::initialized(conv.weight.id, fused_weight),
        bias: Some(Param::from_tensor(fused_bias)),
        ..conv
    })
}
