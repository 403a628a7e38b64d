//! What a pruning pass refuses, each case named.

use std::path::PathBuf;

/// Errors of ember-prune.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// From the shared tensor layer: a pattern that matches nothing, a mask of the wrong shape,
    /// a bad training config.
    #[error(transparent)]
    Tensor(#[from] ember_tensor::Error),
    /// From the sparse kernels.
    #[error(transparent)]
    Kernel(#[from] ember_kernels::KernelError),
    /// A sparsity outside `[0, 1]` (or not a number).
    #[error("sparsity {value} for {what} is outside [0, 1]")]
    Sparsity {
        /// What the sparsity was for: `overall`, a layer's path, a schedule's end.
        what: String,
        /// The value given.
        value: f64,
    },
    /// An N:M pattern with N = 0, M = 0 or N > M.
    #[error("N:M pattern {n}:{m} needs 0 < N <= M")]
    NmPattern {
        /// Kept per group.
        n: usize,
        /// Group size.
        m: usize,
    },
    /// A parameter whose input axis does not split into groups of M.
    #[error("`{path}` has {len} elements along its input axis, not a multiple of M = {m}")]
    NmShape {
        /// The parameter.
        path: String,
        /// Its length along the grouped axis.
        len: usize,
        /// The group size.
        m: usize,
    },
    /// A weight holding NaN or infinity: no ranking of it means anything.
    #[error("`{path}` holds {count} NaN or infinite values")]
    NonFinite {
        /// The parameter.
        path: String,
        /// How many values are not finite.
        count: usize,
    },
    /// A dependency group that does not fit the model, or a cut that cannot be made: a slice
    /// whose shape disagrees with the group, every unit of a layer removed, a skeleton of
    /// other widths.
    #[error("structured pruning of `{group}`: {reason}")]
    Group {
        /// The group (or parameter) concerned.
        group: String,
        /// What is wrong.
        reason: String,
    },
    /// A criterion that watches the model (Taylor, APoZ, Shapley) with nothing to watch it
    /// on: no data given, an empty dataset, zero batches or permutations.
    #[error("the {criterion} criterion needs data to score units: {reason}")]
    NoEvidence {
        /// The criterion.
        criterion: &'static str,
        /// What was missing.
        reason: String,
    },
    /// An optimizer record that cannot follow the model through surgery: state for a
    /// parameter the model does not have, or a state tensor not shaped like its parameter.
    #[error("optimizer state: {0}")]
    OptimizerState(String),
    /// A schedule that cannot work.
    #[error("invalid schedule: {0}")]
    Schedule(String),
    /// A sparse model file that cannot be read or does not fit the model.
    #[error("sparse model file {path}: {reason}")]
    SparseFile {
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
}

/// Result of ember-prune.
pub type Result<T> = std::result::Result<T, Error>;
