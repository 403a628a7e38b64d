//! Post-training quantization for burn models.
//!
//! - [`scheme`]: int8, uint8, int4 and uint4 (packed two per byte); symmetric or affine; per
//!   tensor, per channel on any axis of any size, or per group; `reduce_range`. Plain scalar
//!   arithmetic, the reference the rest is tested against. [`QTensor`] stores the integers.
//! - [`quantize_weights`]: weight-only quantization of any burn model, parameters chosen by
//!   path pattern ([`WeightConfig`]).
//! - [`quantize_dynamic`] and [`quantize_static`] (or [`prepare`], calibrate,
//!   [`Prepared::convert`]): activations quantized per batch or with calibrated ranges, for
//!   models built from the drop-in layers of [`nn`]; per-layer overrides keep chosen layers in
//!   float; [`fuse_conv_bn`] folds batch normalization first.
//! - [`prepare_qat`] / [`Qat::convert`]: quantization-aware training, weights and inputs
//!   fake-quantized with a straight-through estimator, composing with pruning masks.
//! - [`cast()`]: fp16 / bf16 models.
//! - [`sensitivity()`]: quantize one layer at a time and see what it costs.
//! - [`save_quantized`] / [`load_quantized`]: the model on disk at its quantized size.
//! - [`binary`]: binary fully connected and convolution layers (XNOR-Net / XNOR-Net++ scales,
//!   clipped straight-through training) on ember-kernels' XNOR-popcount kernels once packed.
//! - [`use_sparse_kernel`]: pruned fully connected layers on the sparse kernel (see
//!   [`sparse`]), so that unstructured pruning makes a model faster.
//!
//! A quantized layer whose weight and input are both quantized runs on ember-kernels' integer
//! GEMM when its input is on a host device (flex, ndarray; see [`integer`]); everywhere else
//! (wgpu, training) it computes with its dequantized weight and fake-quantized input, the
//! values the integer kernel sees, so every model runs on every backend. Observers come from
//! `ember-observe`.
//!
//! ```
//! use burn::nn::LinearConfig;
//! use burn::tensor::Device;
//! use ember_quant::{WeightConfig, quantize_weights};
//!
//! let device = Device::flex();
//! let layer = LinearConfig::new(64, 8).init(&device);
//! let q = quantize_weights(layer, &WeightConfig::int4_per_group(32))?;
//! let weight = &q.weights["weight"];
//! assert_eq!(weight.data().len(), 64 * 8 / 2); // two 4-bit values per byte
//! assert_eq!(weight.params().scale.len(), 2 * 8); // 2 groups of 32 inputs per output
//! # Ok::<(), ember_quant::Error>(())
//! ```

pub mod binary;
pub mod cast;
mod error;
pub mod fake;
pub mod fuse;
pub mod integer;
pub mod lsq;
pub mod nn;
pub mod qtensor;
pub mod quantize;
pub mod save;
pub mod scheme;
pub mod sensitivity;
pub mod sparse;

pub use binary::{BinaryConv2d, BinaryLinear, BinaryScale, load_binary, save_binary, sign_ste};
pub use cast::{FloatType, cast};
pub use ember_kernels::int8::Int8Kernel;
pub use error::{Error, Result};
pub use fuse::{
    ConvBnPair, conv_bn_pairs, fold_and_freeze_conv_bn_pairs, fold_conv_bn_pairs, fuse_conv_bn,
};
pub use lsq::LearnedSteps;
pub use nn::{InputQuant, MaxPool2d, QuantLayer, QuantLayers};
pub use qtensor::QTensor;
pub use quantize::{
    DynamicConfig, Prepared, Qat, Quantized, StaticConfig, WeightConfig, WeightGranularity,
    prepare, prepare_lsq, prepare_qat, quantize_dynamic, quantize_static, quantize_weights,
};
pub use save::{load_quantized, load_quantized_weights, save_quantized};
pub use scheme::{Granularity, Mode, QParams, QScheme, QType};
pub use sensitivity::{LayerSensitivity, sensitivity};
pub use sparse::{
    AUTO_BATCH, KernelTimes, SPARSE_CROSSOVER, SparseChoice, SparseKernel, SparseLayer,
    use_sparse_kernel,
};
