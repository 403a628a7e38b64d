//! Reference models and datasets for Ember, used by the reproduction runs, the tests and the
//! benches: an IDX loader (MNIST's format, gzipped or not) with checksum verification, the
//! vendored MNIST, LeNet-300-100, LeNet-5, a small residual network and a small transformer
//! encoder (its attention heads removable, [`attention`]) sized from the data, each declaring
//! its structured-pruning groups, and saving with the model's config; a BERT encoder for
//! sentence embeddings ([`bert`]). The training loop and evaluation are ember-tensor's, re-exported here.
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
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod attention;
pub mod bert;
pub mod binary;
pub mod data;
mod error;
pub mod idx;
pub mod models;
pub mod resnet;
pub mod saved;
pub mod transformer;

pub use binary::{BinaryCnn, BinaryCnnConfig, BinaryMlp, BinaryMlpConfig};
pub use data::{Dataset, Jittered, Split};
pub use ember_tensor::train::{
    Classifier, EvalReport, LabeledData, TrainConfig, TrainReport, evaluate, train,
};
pub use error::{Error, Result};
pub use models::{LeNet5, LeNet5Config, LeNet5Widths, Mlp, MlpConfig};
pub use resnet::{ResNet, ResNetConfig};
pub use saved::{Model, ModelConfig, load_model, save_model};
pub use transformer::{Transformer, TransformerConfig};
