//! Knowledge distillation for burn models.
//!
//! - [`loss`]: response-based (Hinton's soft targets at temperature T, scaled by T^2, mixed
//!   with label cross-entropy), feature-based (FitNets hints through a learned adapter) and
//!   relation-based (RKD distance and angle) losses;
//! - [`modes`]: offline distillation from a frozen teacher (logits on the fly or cached),
//!   online deep mutual learning, self-distillation (born-again networks);
//! - [`pipeline`]: pre-trained distillation as a list of stages.
//!
//! Training runs on ember-tensor's shared loop; any burn model that implements
//! [`ember_tensor::Classifier`] can be teacher or student.
//!
//! ```
//! use burn::tensor::{Device, Tensor};
//! use ember_distill::loss::{SoftTargetConfig, kl_divergence};
//!
//! let device = Device::flex();
//! let student = Tensor::<2>::from_floats([[2.0, 0.5, -1.0]], &device);
//! let teacher = Tensor::<2>::from_floats([[3.0, 0.0, -2.0]], &device);
//! let kl = kl_divergence(student, teacher, 4.0)?;
//! assert!(kl.into_scalar::<f32>() >= 0.0);
//! assert!(SoftTargetConfig { temperature: 0.0, alpha: 0.5 }.init().is_err());
//! # Ok::<(), ember_distill::Error>(())
//! ```

mod error;
pub mod loss;
pub mod modes;
pub mod pipeline;

pub use error::{Error, Result};
pub use modes::{
    DistillReport, TeacherOutputs, born_again, distill, mutual_learning, teacher_logits,
};
pub use pipeline::{Stage, StageReport, run_pipeline};
