//! Pruning of any burn model: unstructured masks and structured surgery.
//!
//! - [`prune`](mod@prune): score weights by magnitude or at random, per layer or globally, or
//!   keep N of every M ([`PruneConfig`]); the masks are attached as burn reparameterizations
//!   ([`ember_tensor::mask`]), so they survive training and saving;
//! - [`schedule`]: iterative levels, the lottery-ticket sequence and Zhu & Gupta's gradual
//!   cubic schedule;
//! - [`retrain`]: gradual pruning during training, iterative prune-and-retrain, weight
//!   rewinding and lottery tickets;
//! - [`report`]: the sparsity each layer has;
//! - [`export`]: a sparse file whose size falls with sparsity, and loading it back;
//! - [`save_masked`] / [`load_masked`]: any pruned burn module saved with its masks, to go on
//!   training it after a restart (burn's own `load_file` into a fresh module fails on the
//!   masks, which it does not have yet; `load_masked` attaches them first);
//! - [`structured`]: whole neurons or filters scored (L1 / L2 / Taylor / APoZ / Shapley /
//!   random, per layer or across layers) and removed, the model rebuilt smaller, and the
//!   optimizer's state cut to fit it.
//!
//! ```
//! use burn::nn::LinearConfig;
//! use burn::tensor::Device;
//! use ember_prune::{PruneConfig, prune};
//!
//! let layer = LinearConfig::new(8, 4).init(&Device::flex());
//! let (layer, report) = prune(layer, &PruneConfig::global_magnitude(0.75))?;
//! assert_eq!(report.zeros, 24);
//! // The pruned weights read as zeros through the mask.
//! let zeros = layer.weight.val().equal_elem(0.0).int().sum().into_scalar::<i64>();
//! assert_eq!(zeros, 24);
//! # Ok::<(), ember_prune::Error>(())
//! ```

mod error;
pub mod export;
pub mod prune;
pub mod report;
pub mod retrain;
pub mod schedule;
pub mod structured;

pub use ember_tensor::{load_masked, save_masked};
pub use error::{Error, Result};
pub use export::{export_sparse, load_sparse};
pub use prune::{Criterion, NmPattern, PruneConfig, Scope, compute_masks, prune};
pub use report::{LayerSparsity, PruneReport, sparsity_report};
pub use retrain::{Round, iterative_prune, rewind, train_gradual};
pub use schedule::{Gradual, Rounds, geometric_levels, iterative_levels};
pub use structured::{
    Evidence, FoundGroups, Kept, Ranking, ShapleyConfig, ShapleyScores, StructuredConfig,
    UnitCriterion, UnitScores, apoz_scores, find_unit_groups, keep_best, select_units,
    shapley_scores, shrink, shrink_optimizer_state, taylor_scores, unit_scores, weight_scores,
};
