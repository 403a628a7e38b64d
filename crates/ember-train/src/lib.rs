//! Ember's training passes on burn-train: what a burn user already trains with, so a pruned,
//! quantization-aware or distilled model keeps burn-train's metrics, checkpointing, early
//! stopping, dashboard and multi-device strategies.
//!
//! - [`data`]: any [`ember_tensor::LabeledData`] as burn-train's data loaders;
//! - [`Supervised`]: a classifier trained on its labels with cross-entropy. A pruned model's
//!   masks are burn reparameterizations and a QAT model's fake quantizers are part of its
//!   layers, so both train here unchanged and stay exact;
//! - [`Distillation`]: a student trained on a frozen teacher's softened outputs and the labels
//!   (Hinton et al. 2015), the teacher inside the module so that burn-train's multi-device
//!   strategies fork it with the student.
//!
//! Ember's own loop ([`mod@ember_tensor::train`]) stays where burn-train cannot do the job: mixed
//! precision with a loss scale that skips overflowing steps, the optimizer offloaded to a
//! second device and hooks after every optimizer step (gradual pruning, weight rewinding); see
//! ARCHITECTURE.md.
//!
//! ```no_run
//! use std::sync::Arc;
//! use burn::nn::LinearConfig;
//! use burn::optim::AdamConfig;
//! use burn::tensor::Device;
//! use burn::train::{Learner, SupervisedTraining};
//! use ember_tensor::testing::Blobs;
//! use ember_train::{Supervised, data::loaders};
//!
//! # #[derive(burn::module::Module, Debug)]
//! # struct Net { fc: burn::nn::Linear }
//! # impl ember_tensor::Classifier for Net {
//! #     fn forward(&self, x: burn::tensor::Tensor<4>) -> burn::tensor::Tensor<2> {
//! #         self.fc.forward(x.flatten::<2>(1, 3))
//! #     }
//! # }
//! let device = Device::flex();
//! let model = Supervised::new(Net { fc: LinearConfig::new(Blobs::DIM, 4).init(&device) }, &device);
//! let (train, valid) = loaders(Arc::new(Blobs::new(1024, 4, 1)), Arc::new(Blobs::new(256, 4, 2)), 32, 42);
//! let result = SupervisedTraining::new("/tmp/ember-train", train, valid)
//!     .num_epochs(2)
//!     .launch(Learner::new(model, AdamConfig::new().init(), 1e-2));
//! let trained = result.model.into_inner();
//! ```

pub mod data;
mod steps;

pub use steps::{Distillation, Supervised};
