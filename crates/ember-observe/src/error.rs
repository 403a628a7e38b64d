/// Everything that can go wrong while observing, each variant naming what was wrong.
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// A NaN or infinite value reached an observer: calibrating on it would give a scale that
    /// quantizes every value wrong.
    #[error("{count} non-finite value(s) (NaN or Inf) observed in `{what}`, first {first}")]
    NonFinite {
        /// What was observed (a layer's input, a parameter).
        what: String,
        /// How many values were not finite.
        count: usize,
        /// The first of them.
        first: f32,
    },
    /// A range was asked of an observer that has seen no value.
    #[error("observer for `{what}` has seen no data: calibrate with at least one batch")]
    Empty {
        /// What the observer watches.
        what: String,
    },
    /// Values whose shape does not fit the observer.
    #[error("observer for `{what}`: {reason}")]
    Shape {
        /// What the observer watches.
        what: String,
        /// What does not fit.
        reason: String,
    },
    /// Two observers that cannot be merged.
    #[error("cannot merge observers: {reason}")]
    Merge {
        /// Why not.
        reason: String,
    },
    /// A config value that cannot work.
    #[error("invalid observer config: `{field}` = {value}: {reason}")]
    InvalidConfig {
        /// The field.
        field: &'static str,
        /// Its value.
        value: String,
        /// Why it cannot be used.
        reason: &'static str,
    },
    /// An error from the tensor layer (reading a tensor back).
    #[error(transparent)]
    Tensor(#[from] ember_tensor::Error),
}

/// Result with ember-observe's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
