/// Everything that can go wrong in ember-distill, each variant naming what was wrong.
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// A distillation setting outside its range (temperature <= 0, alpha outside [0, 1]).
    #[error("invalid distillation config: `{field}` = {value}: {reason}")]
    InvalidConfig {
        /// The field.
        field: &'static str,
        /// Its value.
        value: String,
        /// The range it must be in.
        reason: &'static str,
    },
    /// Teacher and student outputs (or features) whose shapes do not pair up.
    #[error("{what}: student has shape {student:?}, teacher {teacher:?}")]
    ShapeMismatch {
        /// Which outputs.
        what: &'static str,
        /// The student's shape.
        student: Vec<usize>,
        /// The teacher's shape.
        teacher: Vec<usize>,
    },
    /// A relation loss over a batch too small to have pairs (or triplets).
    #[error("{what} needs a batch of at least {needed} samples, got {got}")]
    BatchTooSmall {
        /// Which loss.
        what: &'static str,
        /// The smallest batch it works on.
        needed: usize,
        /// The batch it got.
        got: usize,
    },
    /// An error from the shared layer (training, data, devices).
    #[error(transparent)]
    Tensor(#[from] ember_tensor::Error),
}

/// Result with ember-distill's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
