use std::path::PathBuf;

use burn::tensor::DType;

/// Everything that can go wrong while quantizing, each variant naming what was wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// NaN or Inf in a tensor to quantize: no scale represents it, and quantizing around it
    /// would give a silently wrong model.
    #[error("`{what}` holds {count} non-finite value(s) (NaN or Inf), first {first}")]
    NonFinite {
        /// The parameter or activation.
        what: String,
        /// How many values were not finite.
        count: usize,
        /// The first of them.
        first: f32,
    },
    /// A tensor whose values are all zero: its range is empty and there is no scale to
    /// choose. (A constant other than zero is fine: every range contains zero.)
    #[error("`{what}` has a zero range (every value is 0): nothing to quantize")]
    ZeroRange {
        /// The parameter or activation.
        what: String,
    },
    /// A scheme that cannot apply to a tensor.
    #[error("scheme does not fit `{what}`: {reason}")]
    Scheme {
        /// The tensor.
        what: String,
        /// Why not.
        reason: String,
    },
    /// A bit width an integer scheme cannot have: outside 2..=8 (one bit is binary), wider
    /// than its storage type, or under 2 bits after `reduce_range`.
    #[error(
        "`{what}`: {bits}-bit {qtype:?}{} is not a usable width (integer schemes have 2 to {} bits; 1 bit is binary, see ember_quant::binary)",
        if *reduce_range { " with reduce_range" } else { "" },
        qtype.bits()
    )]
    BitWidth {
        /// The tensor or config.
        what: String,
        /// The width asked for.
        bits: u32,
        /// Whether one more bit was to be taken off.
        reduce_range: bool,
        /// The storage type.
        qtype: crate::QType,
    },
    /// A layer name or pattern that names no quantizable layer.
    #[error("`{pattern}` names no quantizable layer (the model has: {available})")]
    UnknownLayer {
        /// The name or pattern as given.
        pattern: String,
        /// The model's quantizable layers.
        available: String,
    },
    /// A `QuantLayers` name whose `<name>.weight` is no parameter of the model: that layer's
    /// input would never be quantized, and nothing would say so.
    #[error(
        "quantizable layer `{layer}` has no parameter `{layer}.weight`; the model's weights are: {available}"
    )]
    LayerPath {
        /// The name the model's `QuantLayers` gave.
        layer: String,
        /// The model's weight paths.
        available: String,
    },
    /// A device that cannot hold the dtype asked for.
    #[error("cannot cast to {dtype:?}: device {device} cannot hold it (use flex or wgpu)")]
    UnsupportedDType {
        /// The device.
        device: String,
        /// The dtype.
        dtype: DType,
    },
    /// A quantized model file that cannot be read back.
    #[error("quantized model file {path}: {reason}")]
    QuantFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// An observer's error (no calibration data, NaN activations, ...).
    #[error(transparent)]
    Observe(#[from] ember_observe::Error),
    /// An error from the tensor layer (patterns, reading tensors, training).
    #[error(transparent)]
    Tensor(#[from] ember_tensor::Error),
    /// From the host kernels (a matrix too large for their indices).
    #[error(transparent)]
    Kernel(#[from] ember_kernels::KernelError),
}

/// Result with ember-quant's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
