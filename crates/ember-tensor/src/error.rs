use burn::tensor::DType;

/// Everything that can go wrong in ember-tensor, each variant naming what was wrong.
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// burn's capture backend could not record the forward pass.
    #[error("capturing the forward pass failed: {0}")]
    Capture(String),
    /// The forward pass captured at two batch sizes differs in more than its batch axis: it
    /// depends on its input's values or on the batch size itself.
    #[error("the forward pass is not the same at batch sizes {batches:?}: {what}")]
    BatchDependent {
        /// The two batch sizes.
        batches: [usize; 2],
        /// What differs.
        what: String,
    },
    /// A backend name that Ember does not know.
    #[error("unknown backend `{name}`: expected one of {expected}")]
    UnknownBackend {
        /// The name as given.
        name: String,
        /// The names Ember knows, comma separated.
        expected: String,
    },
    /// A backend Ember knows, left out of this build.
    #[error("backend `{name}` is not compiled in: rebuild with the cargo feature `{name}`")]
    BackendNotCompiled {
        /// The backend's name.
        name: &'static str,
    },
    /// The device cannot hold a tensor of this dtype (ndarray and f16, say).
    #[error("device {device} cannot hold dtype {dtype:?}")]
    UnsupportedDType {
        /// The device, as its debug name.
        device: String,
        /// The dtype asked for.
        dtype: DType,
    },
    /// A device failed to finish its queued work.
    #[error("device {device} failed to synchronize: {reason}")]
    Sync {
        /// The device, as its debug name.
        device: String,
        /// What the backend said.
        reason: String,
    },
    /// A selector pattern that is not a valid glob.
    #[error("invalid layer pattern `{pattern}`: {reason}")]
    InvalidPattern {
        /// The pattern as given.
        pattern: String,
        /// Why it does not parse.
        reason: String,
    },
    /// An include pattern that matches no parameter of the model.
    #[error("layer pattern `{pattern}` matches no parameter (the model has: {available})")]
    PatternMatchesNothing {
        /// The pattern as given.
        pattern: String,
        /// A few parameter paths of the model, to show what it could have matched.
        available: String,
    },
    /// A selector that, all patterns and kinds applied, takes no parameter: the pass would do
    /// nothing and look as if it had worked.
    #[error("the selection {selector} takes no parameter of the model (it has: {available})")]
    EmptySelection {
        /// The selector, as its patterns and kinds read.
        selector: String,
        /// A few parameter paths of the model, with their layer kinds.
        available: String,
    },
    /// An axis outside the tensor's rank.
    #[error("axis {axis} is out of range for a tensor of rank {rank}")]
    AxisOutOfRange {
        /// The axis asked for.
        axis: usize,
        /// The tensor's rank.
        rank: usize,
    },
    /// A k-th value with k outside 1..=len.
    #[error("k = {k} is out of range for {len} values (k counts from 1)")]
    KOutOfRange {
        /// The k asked for.
        k: usize,
        /// How many values there are.
        len: usize,
    },
    /// Statistics of a tensor with no elements.
    #[error("tensor `{what}` is empty")]
    Empty {
        /// What was empty.
        what: String,
    },
    /// A config value that cannot work.
    #[error("invalid config: `{field}` = {value}: {reason}")]
    InvalidConfig {
        /// The field.
        field: &'static str,
        /// Its value.
        value: String,
        /// Why it cannot be used.
        reason: &'static str,
    },
    /// A keep mask whose length does not match its parameter.
    #[error("mask for `{path}` has {actual} elements, the parameter has shape {expected:?}")]
    MaskShape {
        /// The parameter's path.
        path: String,
        /// The parameter's shape.
        expected: Vec<usize>,
        /// Elements in the mask.
        actual: usize,
    },
    /// New values for a parameter that do not fill its shape.
    #[error("{actual} values for `{path}`, whose shape {expected:?} needs {}", expected.iter().product::<usize>())]
    ValueShape {
        /// The parameter's path.
        path: String,
        /// The parameter's shape.
        expected: Vec<usize>,
        /// Values given.
        actual: usize,
    },
    /// Mixed precision's dynamic loss scale left f32's range.
    #[error("the loss scale {scale} {reason}")]
    LossScale {
        /// The scale it reached.
        scale: f32,
        /// What happened and what to change.
        reason: &'static str,
    },
    /// Training produced a non-finite loss.
    #[error("training diverged: loss is {loss} at epoch {epoch}, step {step}")]
    Diverged {
        /// The loss.
        loss: f32,
        /// The 1-based epoch.
        epoch: usize,
        /// The step within the epoch.
        step: usize,
    },
    /// A tensor whose data could not be read back as f32.
    #[error("cannot read tensor data: {reason}")]
    Data {
        /// What burn said.
        reason: String,
    },
    /// A saved module's file that cannot be written or read back.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// Result with ember-tensor's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
