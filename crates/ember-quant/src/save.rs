//! A quantized model on disk, at its quantized size.
//!
//! The file is a safetensors file (format `ember-quant/2` in its metadata). A quantized
//! parameter is `<path>` holding the packed integers (I8, or U8 for unsigned and 4-bit
//! types), `<path>:scale` (F32) and, in affine schemes, `<path>:zero_point` (I32); every other
//! parameter is `<path>` in its float type. The metadata holds each parameter's shape and
//! scheme, the float type, and what each layer does to its input, so that loading gives back
//! a model with identical outputs.

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::Module;
use burn::tensor::{DType, Device};
use ember_tensor::fs::{TaggedFileError, read_tagged_safetensors};
use ember_tensor::param_values;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};

use crate::cast::{FloatType, cast};
use crate::nn::{InputQuant, QuantLayers};
use crate::qtensor::{QTensor, check_finite};
use crate::quantize::Quantized;
use crate::scheme::{Mode, QParams, QScheme};
use crate::{Error, Result};

/// The `format` in the file's metadata.
pub const FORMAT: &str = "ember-quant/2";

/// Older versions it still reads: `ember-quant/2` is `/2` without the checksum.
pub const LEGACY_FORMATS: [&str; 1] = ["ember-quant/1"];

/// What a layer does to its input, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum SavedInput {
    Dynamic(QScheme),
    Static { scheme: QScheme, params: QParams },
}

/// Write `quantized` to `path` (atomically: a failed write leaves any file there as it was)
/// and return the file's size in bytes.
///
/// ```
/// use burn::tensor::{Device, Tensor};
/// use ember_quant::{DynamicConfig, load_quantized, quantize_dynamic, save_quantized};
/// use ember_tensor::{Classifier, stats::read_f32};
/// use ember_zoo::MlpConfig;
///
/// let device = Device::flex();
/// let config = MlpConfig { input: 8, hidden: vec![16], classes: 3, dropout: 0.0 };
/// let q = quantize_dynamic(config.init(&device)?, &DynamicConfig::default())?;
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("model.safetensors");
/// save_quantized(&q, &path)?;
/// // Into a model of the same architecture (its own initial weights are replaced).
/// let loaded = load_quantized(config.init(&device)?, &path, &device)?;
/// let x = Tensor::<4>::ones([2, 1, 1, 8], &device);
/// assert_eq!(read_f32(loaded.model.forward(x.clone()))?, read_f32(q.model.forward(x))?);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn save_quantized<M: Module>(quantized: &Quantized<M>, path: &Path) -> Result<u64> {
    let file_error = |reason: String| Error::QuantFile {
        path: path.to_path_buf(),
        reason,
    };
    let mut buffers: Vec<Buffer> = Vec::new();
    let mut shapes = BTreeMap::new();
    let mut schemes = BTreeMap::new();
    let mut float = FloatType::F32;
    for value in param_values(&quantized.model) {
        let path = value.info.path;
        shapes.insert(path.clone(), value.info.shape.clone());
        match quantized.weights.get(&path) {
            Some(q) => {
                let scheme = *q.scheme();
                schemes.insert(path.clone(), scheme);
                let dtype = if scheme.qtype.signed() && scheme.qtype.bits() == 8 {
                    Dtype::I8
                } else {
                    Dtype::U8
                };
                buffers.push((path.clone(), dtype, vec![q.data().len()], q.data().to_vec()));
                let scales = q.params().scale.iter().flat_map(|s| s.to_le_bytes());
                let sets = q.params().scale.len();
                buffers.push((
                    format!("{path}:scale"),
                    Dtype::F32,
                    vec![sets],
                    scales.collect(),
                ));
                if scheme.mode == Mode::Affine {
                    let zps = q.params().zero_point.iter().flat_map(|z| z.to_le_bytes());
                    buffers.push((
                        format!("{path}:zero_point"),
                        Dtype::I32,
                        vec![sets],
                        zps.collect(),
                    ));
                }
            }
            None => {
                let data = value.flat.into_data();
                let (dtype, kind) = match data.dtype() {
                    DType::F16 => (Dtype::F16, FloatType::F16),
                    DType::BF16 => (Dtype::BF16, FloatType::BF16),
                    DType::F32 => (Dtype::F32, FloatType::F32),
                    other => {
                        return Err(file_error(format!("`{path}` has dtype {other:?}")));
                    }
                };
                float = kind;
                let numel = data.num_elements();
                buffers.push((path, dtype, vec![numel], data.as_bytes().to_vec()));
            }
        }
    }
    let inputs: BTreeMap<&String, SavedInput> = quantized
        .inputs
        .iter()
        .filter_map(|(name, input)| match input {
            InputQuant::Dynamic(scheme) => Some((name, SavedInput::Dynamic(*scheme))),
            InputQuant::Static { scheme, params } => Some((
                name,
                SavedInput::Static {
                    scheme: *scheme,
                    params: params.clone(),
                },
            )),
            InputQuant::Float | InputQuant::Observe(_) | InputQuant::Train { .. } => None,
        })
        .collect();
    let json = |v: &dyn erased::Json| v.to_json().map_err(|e| file_error(e.to_string()));
    let metadata = BTreeMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("shapes".to_string(), json(&shapes)?),
        ("schemes".to_string(), json(&schemes)?),
        ("inputs".to_string(), json(&inputs)?),
        ("float".to_string(), json(&float)?),
    ]);
    write_file(path, &buffers, metadata)
}

/// A tensor to write: its name, dtype, shape and bytes.
pub(crate) type Buffer = (String, Dtype, Vec<usize>, Vec<u8>);

/// Write `buffers` and `metadata` to `path` as a checksummed safetensors file, atomically;
/// returns its size in bytes. The one writer of Ember's quantized formats.
pub(crate) fn write_file(
    path: &Path,
    buffers: &[Buffer],
    metadata: BTreeMap<String, String>,
) -> Result<u64> {
    let file_error = |reason: String| Error::QuantFile {
        path: path.to_path_buf(),
        reason,
    };
    let views = buffers
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            TensorView::new(*dtype, shape.clone(), bytes)
                .map(|view| (name.clone(), view))
                .map_err(|e| file_error(e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    let bytes = ember_tensor::fs::serialize_safetensors(views, metadata).map_err(file_error)?;
    ember_tensor::fs::write_atomically(path, &bytes).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(bytes.len() as u64)
}

/// The bytes and metadata of the file at `path` in `format` (or a `legacy` one), its
/// checksum verified; errors as [`Error::Io`] or [`Error::QuantFile`].
pub(crate) fn open_file(
    path: &Path,
    format: &str,
    legacy: &[&str],
) -> Result<(Vec<u8>, std::collections::HashMap<String, String>)> {
    read_tagged_safetensors(path, format, legacy).map_err(|e| match e {
        TaggedFileError::Io(source) => Error::Io {
            path: path.to_path_buf(),
            source,
        },
        TaggedFileError::Invalid(reason) => Error::QuantFile {
            path: path.to_path_buf(),
            reason,
        },
    })
}

/// Load a file written by [`save_quantized`] into `skeleton` (the same architecture, built on
/// `device`). Every mismatch (another format, a missing or extra parameter, a shape, a
/// scheme that does not fit its data, NaN) is a typed error naming it.
pub fn load_quantized<M: Module + QuantLayers>(
    skeleton: M,
    path: &Path,
    device: &Device,
) -> Result<Quantized<M>> {
    let (model, weights, inputs) = read_quantized(skeleton, path, device)?;
    let mut model = model;
    let file_error = |reason: String| Error::QuantFile {
        path: path.to_path_buf(),
        reason,
    };
    let mut restored = BTreeMap::new();
    for (name, layer) in model.quant_layers() {
        let input = match inputs.get(&name) {
            Some(SavedInput::Dynamic(scheme)) => {
                check_per_tensor(scheme, &name).map_err(|e| file_error(e.to_string()))?;
                InputQuant::Dynamic(*scheme)
            }
            Some(SavedInput::Static { scheme, params }) => {
                check_per_tensor(scheme, &name)
                    .and_then(|()| params.check(scheme, 1, &format!("{name} input")))
                    .map_err(|e| file_error(e.to_string()))?;
                InputQuant::Static {
                    scheme: *scheme,
                    params: params.clone(),
                }
            }
            None => InputQuant::Float,
        };
        layer.set_input_quant(input.clone());
        if !matches!(input, InputQuant::Float) {
            restored.insert(name, input);
        }
    }
    if let Some(unknown) = inputs.keys().find(|k| !restored.contains_key(*k)) {
        return Err(file_error(format!(
            "`{unknown}` is not a quantizable layer of the model"
        )));
    }
    let mut quantized = Quantized {
        model,
        weights,
        inputs: restored,
    };
    quantized.set_integer_kernel(Some(crate::Int8Kernel::detect()));
    Ok(quantized)
}

/// Load a weight-only file (from [`crate::quantize_weights`], saved by [`save_quantized`]) into
/// any burn module, plain burn layers included: no [`QuantLayers`] is needed, since no layer's
/// input is quantized. A file that quantizes inputs needs [`load_quantized`] and is an error
/// here, naming the layers.
pub fn load_quantized_weights<M: Module>(
    skeleton: M,
    path: &Path,
    device: &Device,
) -> Result<Quantized<M>> {
    let (model, weights, inputs) = read_quantized(skeleton, path, device)?;
    if !inputs.is_empty() {
        let layers: Vec<&str> = inputs.keys().map(String::as_str).collect();
        return Err(Error::QuantFile {
            path: path.to_path_buf(),
            reason: format!(
                "it quantizes the inputs of {}: load it with `load_quantized` into a model \
                 with `QuantLayers`",
                layers.join(", ")
            ),
        });
    }
    Ok(Quantized {
        model,
        weights,
        inputs: BTreeMap::new(),
    })
}

/// The parameters of a saved file set into `skeleton` (cast to the file's float type), the
/// quantized weights, and the saved input schemes by layer.
type Read<M> = (M, BTreeMap<String, QTensor>, BTreeMap<String, SavedInput>);

fn read_quantized<M: Module>(skeleton: M, path: &Path, device: &Device) -> Result<Read<M>> {
    let file_error = |reason: String| Error::QuantFile {
        path: path.to_path_buf(),
        reason,
    };
    let (bytes, metadata) = open_file(path, FORMAT, &LEGACY_FORMATS)?;
    let field = |name: &str| metadata.get(name).map(String::as_str).unwrap_or("");
    let parse_error = |name: &str, e: serde_json::Error| file_error(format!("bad {name}: {e}"));
    let shapes: BTreeMap<String, Vec<usize>> =
        serde_json::from_str(field("shapes")).map_err(|e| parse_error("shapes", e))?;
    let schemes: BTreeMap<String, QScheme> =
        serde_json::from_str(field("schemes")).map_err(|e| parse_error("schemes", e))?;
    let inputs: BTreeMap<String, SavedInput> =
        serde_json::from_str(field("inputs")).map_err(|e| parse_error("inputs", e))?;
    let float: FloatType =
        serde_json::from_str(field("float")).map_err(|e| parse_error("float", e))?;
    let tensors =
        SafeTensors::deserialize(&bytes).map_err(|e| file_error(format!("corrupt: {e}")))?;
    let raw = |name: &str, dtypes: &[Dtype]| -> Result<Vec<u8>> {
        let view = tensors
            .tensor(name)
            .map_err(|e| file_error(format!("`{name}`: {e}")))?;
        if !dtypes.contains(&view.dtype()) {
            return Err(file_error(format!("`{name}` is {:?}", view.dtype())));
        }
        Ok(view.data().to_vec())
    };

    let expected: BTreeMap<String, Vec<usize>> = ember_tensor::params(&skeleton)
        .into_iter()
        .map(|p| (p.path, p.shape))
        .collect();
    if expected != shapes {
        let missing = expected.keys().find(|k| !shapes.contains_key(*k));
        let extra = shapes.keys().find(|k| !expected.contains_key(*k));
        let reason = match (missing, extra) {
            (Some(m), _) => format!("no values for parameter `{m}`"),
            (_, Some(e)) => format!("`{e}` is not a parameter of the model"),
            _ => {
                let (name, shape) = expected
                    .iter()
                    .find(|(k, v)| shapes.get(*k) != Some(v))
                    .map_or((String::new(), vec![]), |(k, v)| (k.clone(), v.clone()));
                format!(
                    "`{name}` is stored as {:?}, the model has {shape:?}",
                    shapes.get(&name)
                )
            }
        };
        return Err(file_error(reason));
    }

    let mut weights = BTreeMap::new();
    let mut values = BTreeMap::new();
    for (name, shape) in &shapes {
        let flat = match schemes.get(name) {
            Some(scheme) => {
                let data = raw(name, &[Dtype::I8, Dtype::U8])?;
                let scale = f32s(&raw(&format!("{name}:scale"), &[Dtype::F32])?);
                let zero_point = match scheme.mode {
                    Mode::Affine => i32s(&raw(&format!("{name}:zero_point"), &[Dtype::I32])?),
                    Mode::Symmetric => vec![scheme.symmetric_zero_point(); scale.len()],
                };
                let params = QParams { scale, zero_point };
                let q = QTensor::from_parts(*scheme, shape.clone(), params, data, name)
                    .map_err(|e| file_error(e.to_string()))?;
                let flat = q.dequantize();
                weights.insert(name.clone(), q);
                flat
            }
            None => {
                let bytes = raw(name, &[Dtype::F32, Dtype::F16, Dtype::BF16])?;
                let view = tensors
                    .tensor(name)
                    .map_err(|e| file_error(format!("`{name}`: {e}")))?;
                let flat = match view.dtype() {
                    Dtype::F16 => bytes
                        .chunks_exact(2)
                        .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                        .collect(),
                    Dtype::BF16 => bytes
                        .chunks_exact(2)
                        .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                        .collect(),
                    _ => f32s(&bytes),
                };
                check_finite(&flat, name).map_err(|e| file_error(e.to_string()))?;
                flat
            }
        };
        if flat.len() != shape.iter().product::<usize>() {
            return Err(file_error(format!(
                "`{name}` has {} values for shape {shape:?}",
                flat.len()
            )));
        }
        values.insert(name.clone(), flat);
    }
    let model = ember_tensor::set_param_values(skeleton, &values)?;
    let model = match float {
        FloatType::F32 => model,
        half => cast(model, half, device)?,
    };
    Ok((model, weights, inputs))
}

/// A layer's input is quantized with one scale and zero point (see `quantize.rs`).
fn check_per_tensor(scheme: &QScheme, layer: &str) -> Result<()> {
    scheme.check(&format!("{layer} input"))?;
    if scheme.granularity == crate::Granularity::PerTensor {
        Ok(())
    } else {
        Err(Error::Scheme {
            what: format!("{layer} input"),
            reason: format!(
                "{:?}: layer inputs are quantized per tensor",
                scheme.granularity
            ),
        })
    }
}

pub(crate) fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn i32s(bytes: &[u8]) -> Vec<i32> {
    bytes
        .chunks_exact(4)
        .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// `serde_json::to_string` behind a trait object, so one closure serializes every field.
pub(crate) mod erased {
    pub trait Json {
        fn to_json(&self) -> serde_json::Result<String>;
    }

    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> serde_json::Result<String> {
            serde_json::to_string(self)
        }
    }
}
