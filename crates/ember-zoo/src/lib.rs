//! Reference models and datasets for Ember, used by the reproduction runs, the tests and the
//! benches: an IDX loader (MNIST's format, gzipped or not) with checksum verification, the
//! vendored MNIST, LeNet-300-100 and LeNet-5 sized from the data, a seeded training loop
//! (Adam, cosine schedule, progress bar), evaluation, and saving with the model's config.
//!
//! ```no_run
//! use ember_zoo::{Dataset, MlpConfig, TrainConfig, evaluate, train};
//! use burn::tensor::Device;
//!
//! let data = Dataset::mnist()?;
//! let device = Device::flex();
//! let (rows, cols) = (data.train.rows, data.train.cols);
//! let model = MlpConfig::lenet_300_100(rows * cols, data.classes).init(&device)?;
//! let (model, _) = train(model, &data.train, &TrainConfig::default(), &device)?;
//! println!("{:.2} %", evaluate(&model, &data.test, 1000, &device)?.accuracy);
//! # Ok::<(), ember_zoo::Error>(())
//! ```

pub mod data;
mod error;
pub mod idx;
pub mod models;
pub mod saved;
pub mod train;

pub use data::{Dataset, Split};
pub use error::{Error, Result};
pub use models::{Classifier, LeNet5, LeNet5Config, Mlp, MlpConfig};
pub use saved::{Model, ModelConfig, load_model, save_model};
pub use train::{EvalReport, TrainConfig, TrainReport, evaluate, train};
