/// Everything that can go wrong while exporting, each variant naming what was wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// burn's capture backend refused the forward pass.
    #[error("capturing the forward pass failed: {0}")]
    Capture(String),
    /// An operation of the captured graph that the exporter cannot express in ONNX.
    #[error("the operation `{op}` cannot be exported to ONNX ({reason})")]
    Unsupported {
        /// burn's name of the operation (`BaseFloat::Slice`, `Module::Conv3d`).
        op: String,
        /// Why, or what would be needed.
        reason: String,
    },
    /// The two captures (at two batch sizes) differ in more than their batch axis: the
    /// forward pass depends on its input's values or on the batch size itself.
    #[error("the forward pass is not the same at batch sizes {0} and {1}: {2}")]
    BatchDependent(usize, usize, String),
    /// A quantized tensor whose scheme the ONNX form cannot hold.
    #[error("`{what}` cannot be exported quantized: {reason}")]
    Quantization {
        /// The parameter or layer input.
        what: String,
        /// Why not.
        reason: String,
    },
    /// A constant whose element type ONNX export does not handle.
    #[error("constant `{what}` has dtype {dtype}, which the exporter does not write")]
    Dtype {
        /// The tensor.
        what: String,
        /// Its dtype.
        dtype: String,
    },
    /// Another error of the tensor layer.
    #[error(transparent)]
    Tensor(ember_tensor::Error),
    /// The quantization pass's own error (reading the model's layers).
    #[error(transparent)]
    Quant(#[from] ember_quant::Error),
    /// Writing the file.
    #[error("cannot write `{path}`: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Encoding the protobuf message.
    #[error("cannot encode the ONNX model: {0}")]
    Encode(String),
}

impl From<ember_tensor::Error> for Error {
    fn from(error: ember_tensor::Error) -> Self {
        match error {
            ember_tensor::Error::Capture(reason) => Self::Capture(reason),
            ember_tensor::Error::BatchDependent { batches, what } => {
                Self::BatchDependent(batches[0], batches[1], what)
            }
            other => Self::Tensor(other),
        }
    }
}

/// The result of every fallible operation of this crate.
pub type Result<T> = std::result::Result<T, Error>;
