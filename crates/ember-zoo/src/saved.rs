//! Saving a trained model with its config, and loading it back on any device.
//!
//! A model is two files: `<name>.bpk` (burnpack weights) and `<name>.json` (the config that
//! rebuilds the architecture). Both are written to a temporary file and renamed into place, so
//! a crash never leaves a half-written model behind.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::store::ModuleRecord;
use burn::tensor::{Bytes, Device, Tensor};
use serde::{Deserialize, Serialize};

use ember_quant::{QuantLayer, QuantLayers};
use ember_tensor::{Classifier, UnitActivations, UnitGroup};

use crate::models::{LeNet5, LeNet5Config, Mlp, MlpConfig};
use crate::resnet::{ResNet, ResNetConfig};
use crate::transformer::{Transformer, TransformerConfig};
use crate::{Error, Result};

/// The architecture of any reference model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "model", rename_all = "snake_case", deny_unknown_fields)]
pub enum ModelConfig {
    /// A multi-layer perceptron.
    Mlp(MlpConfig),
    /// LeNet-5.
    #[serde(rename = "lenet5")]
    LeNet5(LeNet5Config),
    /// A small residual network with batch norm.
    #[serde(rename = "resnet")]
    ResNet(ResNetConfig),
    /// A small transformer encoder classifier.
    Transformer(TransformerConfig),
}

impl ModelConfig {
    /// How many parameters the model has, in checked arithmetic.
    pub fn parameter_count(&self) -> Result<usize> {
        match self {
            ModelConfig::Mlp(c) => c.parameter_count(),
            ModelConfig::LeNet5(c) => c.parameter_count(),
            ModelConfig::ResNet(c) => c.parameter_count(),
            ModelConfig::Transformer(c) => c.parameter_count(),
        }
    }

    /// The dependency groups of structured pruning of a [`Model`] built from this config (the
    /// variant's name is the first segment of every path).
    pub fn unit_groups(&self) -> Result<Vec<UnitGroup>> {
        match self {
            ModelConfig::Mlp(c) => Ok(c.unit_groups("Mlp.")),
            ModelConfig::LeNet5(c) => c.unit_groups("LeNet5."),
            ModelConfig::ResNet(c) => Ok(c.unit_groups("ResNet.")),
            ModelConfig::Transformer(c) => Ok(c.unit_groups("Transformer.")),
        }
    }

    /// The same architecture with the widths structured pruning kept (see
    /// [`ModelConfig::unit_groups`]).
    pub fn with_kept(&self, kept: &std::collections::BTreeMap<String, Vec<usize>>) -> Self {
        match self {
            ModelConfig::Mlp(c) => ModelConfig::Mlp(c.with_kept("Mlp.", kept)),
            ModelConfig::LeNet5(c) => ModelConfig::LeNet5(c.with_kept("LeNet5.", kept)),
            ModelConfig::ResNet(c) => ModelConfig::ResNet(c.with_kept("ResNet.", kept)),
            ModelConfig::Transformer(c) => {
                ModelConfig::Transformer(c.with_kept("Transformer.", kept))
            }
        }
    }

    /// Check the config and build the model on `device`.
    pub fn init(&self, device: &Device) -> Result<Model> {
        Ok(match self {
            ModelConfig::Mlp(c) => Model::Mlp(c.init(device)?),
            ModelConfig::LeNet5(c) => Model::LeNet5(c.init(device)?),
            ModelConfig::ResNet(c) => Model::ResNet(c.init(device)?),
            ModelConfig::Transformer(c) => Model::Transformer(c.init(device)?),
        })
    }
}

/// Any reference model, as [`ModelConfig::init`] builds it.
// A model is built once and moved rarely: the size of the enum does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Model {
    /// A multi-layer perceptron.
    Mlp(Mlp),
    /// LeNet-5.
    LeNet5(LeNet5),
    /// A small residual network.
    ResNet(ResNet),
    /// A small transformer encoder classifier.
    Transformer(Transformer),
}

impl QuantLayers for Model {
    fn quant_layers(&mut self) -> Vec<(String, &mut dyn QuantLayer)> {
        let (prefix, layers) = match self {
            Model::Mlp(m) => ("Mlp", m.quant_layers()),
            Model::LeNet5(m) => ("LeNet5", m.quant_layers()),
            Model::ResNet(m) => ("ResNet", m.quant_layers()),
            Model::Transformer(m) => ("Transformer", m.quant_layers()),
        };
        layers
            .into_iter()
            .map(|(name, layer)| (format!("{prefix}.{name}"), layer))
            .collect()
    }
}

impl From<Mlp> for Model {
    fn from(model: Mlp) -> Self {
        Model::Mlp(model)
    }
}

impl From<LeNet5> for Model {
    fn from(model: LeNet5) -> Self {
        Model::LeNet5(model)
    }
}

impl From<ResNet> for Model {
    fn from(model: ResNet) -> Self {
        Model::ResNet(model)
    }
}

impl From<Transformer> for Model {
    fn from(model: Transformer) -> Self {
        Model::Transformer(model)
    }
}

impl Classifier for Model {
    fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        match self {
            Model::Mlp(m) => m.forward(images),
            Model::LeNet5(m) => m.forward(images),
            Model::ResNet(m) => m.forward(images),
            Model::Transformer(m) => m.forward(images),
        }
    }
}

impl UnitActivations for Model {
    /// Named as [`ModelConfig::unit_groups`] names the groups: after the variant.
    fn unit_activations(&self, images: Tensor<4>) -> Vec<(String, Tensor<3>)> {
        let (prefix, seen) = match self {
            Model::Mlp(m) => ("Mlp.", m.unit_activations(images)),
            Model::LeNet5(m) => ("LeNet5.", m.unit_activations(images)),
            Model::ResNet(m) => ("ResNet.", m.unit_activations(images)),
            Model::Transformer(m) => ("Transformer.", m.unit_activations(images)),
        };
        seen.into_iter()
            .map(|(name, x)| (format!("{prefix}{name}"), x))
            .collect()
    }
}

/// The `.json` sidecar of a saved model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Sidecar {
    format: u32,
    config: ModelConfig,
    /// Parameters that carry a keep mask (`ember_tensor::mask`): the model is rebuilt with
    /// placeholder masks there before its record, masks included, is loaded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    masked: Vec<String>,
}

const FORMAT: u32 = 1;

/// Where the config of the model saved at `weights` goes.
pub fn config_path(weights: &Path) -> PathBuf {
    weights.with_extension("json")
}

/// Save `model` (built from `config`) to `path` (the weights, conventionally `.bpk`) and its
/// config beside it. Returns the size of the weights file in bytes. A model of another kind
/// than `config` is an error: its file could not be loaded back.
pub fn save_model(model: impl Into<Model>, config: &ModelConfig, path: &Path) -> Result<u64> {
    let file_error = |reason: String| Error::ModelFile {
        path: path.to_path_buf(),
        reason,
    };
    let model = model.into();
    match (&model, config) {
        (Model::Mlp(_), ModelConfig::Mlp(_))
        | (Model::LeNet5(_), ModelConfig::LeNet5(_))
        | (Model::ResNet(_), ModelConfig::ResNet(_))
        | (Model::Transformer(_), ModelConfig::Transformer(_)) => {}
        _ => {
            return Err(file_error(format!(
                "the model and its config are of different kinds: {config:?}"
            )));
        }
    }
    let masked = ember_tensor::masks(&model).into_keys().collect();
    let bytes = model
        .into_record()
        .into_bytes()
        .map_err(|e| file_error(format!("cannot encode weights: {e:?}")))?;
    let sidecar = serde_json::to_vec_pretty(&Sidecar {
        format: FORMAT,
        config: config.clone(),
        masked,
    })
    .map_err(|e| file_error(e.to_string()))?;
    write_atomically(path, &bytes)?;
    write_atomically(&config_path(path), &sidecar)?;
    Ok(bytes.len() as u64)
}

/// Load a model saved by [`save_model`] onto `device`.
pub fn load_model(path: &Path, device: &Device) -> Result<(Model, ModelConfig)> {
    let file_error = |p: &Path, reason: String| Error::ModelFile {
        path: p.to_path_buf(),
        reason,
    };
    let sidecar_path = config_path(path);
    let sidecar =
        std::fs::read(&sidecar_path).map_err(|e| file_error(&sidecar_path, e.to_string()))?;
    let sidecar: Sidecar = serde_json::from_slice(&sidecar)
        .map_err(|e| file_error(&sidecar_path, format!("bad config: {e}")))?;
    if sidecar.format != FORMAT {
        return Err(file_error(
            &sidecar_path,
            format!("format {} is not {FORMAT}", sidecar.format),
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| file_error(path, e.to_string()))?;
    // The sidecar's sizes are checked against the weights file before the model is built from
    // them: a crafted `hidden` would otherwise ask for any amount of memory. No dtype burn
    // stores takes less than half a byte per parameter (packed int4).
    let count = sidecar.config.parameter_count()?;
    if count.div_ceil(2) > bytes.len() {
        return Err(file_error(
            &sidecar_path,
            format!(
                "the config describes {count} parameters, but the weights file holds only {} bytes",
                bytes.len()
            ),
        ));
    }
    let model = ember_tensor::record::with_placeholder_masks(
        sidecar.config.init(device)?,
        &sidecar.masked,
        device,
    )?;
    let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes))
        .map_err(|e| file_error(path, format!("corrupt weights: {e:?}")))?;
    let model = model
        .try_load_record(record)
        .map_err(|e| file_error(path, format!("weights do not fit the config: {e:?}")))?;
    ember_tensor::check_masks(&model)
        .map_err(|e| file_error(path, format!("masks do not fit the config: {e}")))?;
    Ok((model, sidecar.config))
}

/// Write to a temporary file in the same directory, then rename over `path`.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    ember_tensor::fs::write_atomically(path, bytes).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}
