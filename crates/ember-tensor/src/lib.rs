//! Ember's shared tensor layer over burn, which every compression crate stands on.
//!
//! - [`walk`]: every float parameter of any burn module, with its dotted path (`fc1.weight`),
//!   the kind of layer that holds it and its value;
//! - [`mask`]: keep masks attached as burn reparameterizations, which survive training and
//!   saving, and `strip` to fold them into plain weights;
//! - [`select`]: include / exclude patterns over those paths;
//! - [`stats`]: per-tensor and per-axis min, max, abs-max, L1 / L2 norms and k-th values;
//! - [`device`]: backends by name, device sync and dtype support;
//! - [`mod@train`]: the training loop every pass shares (Adam, cosine schedule, seeded shuffling,
//!   pluggable loss, mixed precision, optimizer offload, gradient checkpointing) and evaluation
//!   of a [`Classifier`].
//!
//! ```
//! use burn::nn::LinearConfig;
//! use burn::tensor::Device;
//! use ember_tensor::{Selector, params, stats::tensor_stats};
//!
//! let linear = LinearConfig::new(4, 3).init(&Device::flex());
//! let all = params(&linear);
//! let weights = Selector::all().include("*weight").select(&all)?;
//! assert_eq!(weights[0].path, "weight");
//! assert_eq!(tensor_stats(&linear.weight.val())?.numel, 12);
//! # Ok::<(), ember_tensor::Error>(())
//! ```

pub mod device;
mod error;
pub mod fs;
pub mod graph;
pub mod mask;
pub mod record;
pub mod select;
pub mod stats;
pub mod testing;
pub mod timing;
pub mod train;
pub mod units;
pub mod walk;

pub use device::{BackendKind, FloatType};
pub use error::{Error, Result};
pub use mask::{Masks, WeightReparam, check_masks, masks, set_masks, strip};
pub use record::{load_masked, save_masked};
pub use select::{Matcher, Selector};
pub use train::precision::{LossScaleConfig, LossScaler, MixedPrecision, ScaledStep};
pub use train::{
    Batch, Classifier, EvalReport, Input, LabeledData, LrSchedule, TrainConfig, TrainReport,
    evaluate, fit, fit_with_hook, train, train_with_hook,
};
pub use units::{UnitActivations, UnitGroup, UnitSlice};
pub use walk::{
    ParamInfo, ParamValue, WeightAxes, init_now, param_values, params, set_param_values,
};
