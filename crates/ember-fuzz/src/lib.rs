//! The fuzz targets' harnesses. Each [`Target`] feeds arbitrary bytes to one parser of outside
//! input, through the same public function a user calls, and returns whatever that function
//! returns: an error is a correct answer to a bad file, a panic, a hang or an allocation past
//! the stated bound is a defect. cargo-fuzz runs them under libFuzzer (`fuzz/`, `cargo xtask
//! fuzz <target> --seconds N`, nightly); the ordinary tests run them over their seed corpus
//! and its truncations and flipped bytes, on stable.
//!
//! The loaders read paths, so each input is written to a file in a directory of its own (one
//! per process and target) first.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use ember_quant::{DynamicConfig, StaticConfig, load_quantized, quantize_dynamic, save_quantized};
use ember_zoo::{MlpConfig, ModelConfig, TrainConfig, load_model, save_model};

/// The largest model the `configs` target builds: a fuzzed config may ask for any size, and
/// building it is not what is under test (the parameter count is, in checked arithmetic).
pub const MAX_FUZZED_PARAMETERS: usize = 1 << 20;

/// One parser of outside input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// An IDX file, raw or gzipped (`ember_zoo::idx::decode_idx`).
    Idx,
    /// A saved model: its JSON sidecar and its burnpack (`ember_zoo::load_model`). The input
    /// is a little-endian `u32` length, the sidecar, then the burnpack.
    Model,
    /// An `ember-quant` file (`ember_quant::load_quantized`) into a small MLP.
    Quantized,
    /// An `ember-sparse` file (`ember_prune::load_sparse`) into a small MLP.
    Sparse,
    /// An `ember-binary` file (`ember_quant::load_binary`) into a small binary MLP.
    Binary,
    /// An `ember-masked` file (`ember_prune::load_masked`: a pruned module's record with its
    /// masks) into a small MLP.
    Masked,
    /// JSON a user hands in: a model config (counted, and built when small), a pruning config
    /// (validated), a training config, dynamic and static quantization configs (a small MLP
    /// quantized with the dynamic one).
    Configs,
}

impl Target {
    /// Every target.
    pub const ALL: [Target; 7] = [
        Target::Idx,
        Target::Model,
        Target::Quantized,
        Target::Sparse,
        Target::Binary,
        Target::Masked,
        Target::Configs,
    ];

    /// Its name, as `cargo xtask fuzz` and `fuzz/fuzz_targets/` spell it.
    pub fn name(self) -> &'static str {
        match self {
            Target::Idx => "idx",
            Target::Model => "model",
            Target::Quantized => "quantized",
            Target::Sparse => "sparse",
            Target::Binary => "binary",
            Target::Masked => "masked",
            Target::Configs => "configs",
        }
    }

    /// The target named `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Feed `data` to the parser; `true` if it accepted the input.
    pub fn run(self, data: &[u8]) -> bool {
        match self {
            Target::Idx => ember_zoo::idx::decode_idx(data, Path::new("fuzz.idx")).is_ok(),
            Target::Model => run_model(self, data),
            Target::Quantized => {
                let path = scratch(self).join("model.safetensors");
                write(&path, data);
                load_quantized(small_mlp(), &path, &device()).is_ok()
            }
            Target::Sparse => {
                let path = scratch(self).join("model.safetensors");
                write(&path, data);
                ember_prune::load_sparse(small_mlp(), &path).is_ok()
            }
            Target::Binary => {
                let path = scratch(self).join("model.safetensors");
                write(&path, data);
                ember_quant::load_binary(small_binary_mlp(), &path).is_ok()
            }
            Target::Masked => {
                let path = scratch(self).join("model.masked");
                write(&path, data);
                ember_prune::load_masked(small_mlp(), &path, &device()).is_ok()
            }
            Target::Configs => run_configs(data),
        }
    }

    /// Valid inputs the corpus starts from: files the crates write themselves.
    pub fn seeds(self) -> Vec<Vec<u8>> {
        match self {
            Target::Idx => {
                let array = ember_zoo::idx::IdxArray {
                    dims: vec![3, 2, 2],
                    data: (0..12).collect(),
                };
                let raw = ember_zoo::idx::encode_idx(&array);
                vec![gzip(&raw), raw]
            }
            Target::Model => {
                let dir = scratch(self).join("seed");
                let path = dir.join("model.bpk");
                let config = ModelConfig::Mlp(small_config());
                save_model(small_mlp(), &config, &path).expect("the seed model saves");
                let sidecar = std::fs::read(ember_zoo::saved::config_path(&path))
                    .expect("the sidecar was written");
                let burnpack = std::fs::read(&path).expect("the model was written");
                vec![model_input(&sidecar, &burnpack)]
            }
            Target::Quantized => {
                let path = scratch(self).join("seed.safetensors");
                let q = quantize_dynamic(small_mlp(), &DynamicConfig::default())
                    .expect("the seed model quantizes");
                save_quantized(&q, &path).expect("the seed file saves");
                vec![std::fs::read(&path).expect("the seed file was written")]
            }
            Target::Sparse => {
                let path = scratch(self).join("seed.safetensors");
                let config = ember_prune::PruneConfig::global_magnitude(0.5);
                let (model, _) =
                    ember_prune::prune(small_mlp(), &config).expect("the seed model prunes");
                ember_prune::export_sparse(&model, &path).expect("the seed file saves");
                vec![std::fs::read(&path).expect("the seed file was written")]
            }
            Target::Binary => {
                let path = scratch(self).join("seed.safetensors");
                ember_quant::save_binary(&small_binary_mlp(), &path).expect("the seed file saves");
                vec![std::fs::read(&path).expect("the seed file was written")]
            }
            Target::Masked => {
                let path = scratch(self).join("seed.masked");
                let config = ember_prune::PruneConfig::global_magnitude(0.5);
                let (model, _) =
                    ember_prune::prune(small_mlp(), &config).expect("the seed model prunes");
                ember_prune::save_masked(model, &path).expect("the seed file saves");
                vec![std::fs::read(&path).expect("the seed file was written")]
            }
            Target::Configs => [
                serde_json::to_vec(&ModelConfig::Mlp(small_config())),
                serde_json::to_vec(&ember_prune::PruneConfig::global_magnitude(0.9)),
                serde_json::to_vec(&TrainConfig::default()),
                serde_json::to_vec(&DynamicConfig::default()),
                serde_json::to_vec(&StaticConfig::default()),
            ]
            .into_iter()
            .map(|json| json.expect("configs serialize"))
            .collect(),
        }
    }
}

/// The [`Target::Model`] input holding `sidecar` and `burnpack`.
pub fn model_input(sidecar: &[u8], burnpack: &[u8]) -> Vec<u8> {
    let mut input = (sidecar.len() as u32).to_le_bytes().to_vec();
    input.extend_from_slice(sidecar);
    input.extend_from_slice(burnpack);
    input
}

fn run_model(target: Target, data: &[u8]) -> bool {
    let Some((len, rest)) = data.split_first_chunk::<4>() else {
        return false;
    };
    let len = (u32::from_le_bytes(*len) as usize).min(rest.len());
    let (sidecar, burnpack) = rest.split_at(len);
    let path = scratch(target).join("model.bpk");
    write(&path, burnpack);
    write(&ember_zoo::saved::config_path(&path), sidecar);
    load_model(&path, &device()).is_ok()
}

fn run_configs(data: &[u8]) -> bool {
    let mut accepted = false;
    if let Ok(config) = serde_json::from_slice::<ModelConfig>(data) {
        let small = config
            .parameter_count()
            .is_ok_and(|n| n <= MAX_FUZZED_PARAMETERS);
        accepted |= small && config.init(&device()).is_ok();
    }
    if let Ok(config) = serde_json::from_slice::<ember_prune::PruneConfig>(data) {
        accepted |= config.validate().is_ok();
    }
    accepted |= serde_json::from_slice::<TrainConfig>(data).is_ok();
    if let Ok(config) = serde_json::from_slice::<DynamicConfig>(data) {
        accepted |= quantize_dynamic(small_mlp(), &config).is_ok();
    }
    accepted |= serde_json::from_slice::<StaticConfig>(data).is_ok();
    accepted
}

/// A 6-5-4-3 MLP on flex, the same weights every time (a fixed seed).
fn small_mlp() -> ember_zoo::Mlp {
    let device = device();
    device.seed(7);
    small_config().init(&device).expect("a valid config")
}

/// A binary MLP 6-[70, 70]-3 (one binary layer, rows longer than one 64-bit word) on flex,
/// the same weights every time.
fn small_binary_mlp() -> ember_zoo::BinaryMlp {
    let device = device();
    device.seed(7);
    ember_zoo::BinaryMlpConfig {
        input: 6,
        hidden: vec![70, 70],
        classes: 3,
        scale: ember_quant::BinaryScale::Analytic,
    }
    .init(&device)
    .expect("a valid config")
}

fn small_config() -> MlpConfig {
    MlpConfig {
        input: 6,
        hidden: vec![5, 4],
        classes: 3,
        dropout: 0.0,
    }
}

fn device() -> Device {
    Device::flex()
}

/// This process's directory for `target`'s files.
fn scratch(target: Target) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "ember-fuzz-{}-{}-{:?}",
        std::process::id(),
        target.name(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&dir).expect("the temporary directory is writable");
    dir
}

fn write(path: &Path, data: &[u8]) {
    std::fs::write(path, data).expect("the temporary directory is writable");
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).expect("writing to memory");
    encoder.finish().expect("writing to memory")
}
