//! A binary model on disk at one bit per binary weight.
//!
//! The file is a safetensors file (format `ember-binary/1` in its metadata, with the checksum
//! every Ember format carries). The weight of each [`BinaryLinear`](super::BinaryLinear) and
//! [`BinaryConv2d`](super::BinaryConv2d) is `<path>` (U8): its signs, one row per output
//! (channel), each row packed into 64-bit little-endian words (bit `c % 64` of word `c / 64`
//! is 1 for +1), and `<path>:alpha` (F32): each output's `mean |w|`. Every other parameter
//! (the float layers, batch norms, learned scales) is `<path>` in F32. The metadata holds each
//! parameter's shape and, for binary weights, the axis of their outputs.
//!
//! A binary layer's function depends on its latent weights only through their signs and, with
//! the analytic scale, each output's `mean |w|`; loading sets each latent weight to
//! `sign · mean |w|`, which keeps both, so the loaded model computes what the saved one did.
//! (Training it further starts from those latent weights, not the saved ones.)

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::Module;
use ember_kernels::PackedSigns;
use ember_tensor::param_values;
use safetensors::tensor::{Dtype, SafeTensors};

use crate::qtensor::check_finite;
use crate::save::{Buffer, erased, f32s, open_file, write_file};
use crate::{Error, Result};

/// The `format` in the file's metadata.
pub const BINARY_FORMAT: &str = "ember-binary/1";

/// The layer kinds whose `weight` is stored as signs, and the axis of its outputs: burn's
/// `[in, out]` for the fully connected layer, `[out, in, kh, kw]` for the convolution.
fn binary_output_axis(layer_kind: &str, path: &str) -> Option<usize> {
    if !path.ends_with("weight") {
        return None;
    }
    match layer_kind {
        "BinaryLinear" => Some(1),
        "BinaryConv2d" => Some(0),
        _ => None,
    }
}

/// Rows of a row-major `shape` viewed with `axis` first: `(rows, len, index)`, `index(r, c)`
/// the flat index of element `c` of row `r`.
fn rows_along(shape: &[usize], axis: usize) -> (usize, usize, impl Fn(usize, usize) -> usize) {
    let rows = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product();
    let len = shape.iter().product::<usize>() / rows.max(1);
    let index = move |r: usize, c: usize| {
        // `c` runs over the other axes in order: the outer ones (before `axis`), then the inner.
        let (outer, within) = (c / inner.max(1), c % inner.max(1));
        (outer * rows + r) * inner + within
    };
    (rows, len, index)
}

/// Write `model` to `path` (atomically: a failed write leaves any file there as it was), its
/// binary layers' weights one bit each, and return the file's size in bytes. NaN or infinite
/// parameters are an error.
///
/// ```
/// use burn::tensor::{Device, Tensor};
/// use ember_kernels::BinaryKernel;
/// use ember_quant::{BinaryScale, load_binary, save_binary};
/// use ember_tensor::{Classifier, stats::read_f32};
/// use ember_zoo::BinaryMlpConfig;
///
/// let device = Device::flex();
/// let config = BinaryMlpConfig {
///     input: 8,
///     hidden: vec![128, 128],
///     classes: 3,
///     scale: BinaryScale::Analytic,
/// };
/// let model = config.init(&device)?;
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("binary.safetensors");
/// save_binary(&model, &path)?;
/// let mut loaded = load_binary(config.init(&device)?, &path)?;
/// loaded.pack(Some(BinaryKernel::detect()))?;
/// let x = Tensor::<4>::ones([2, 1, 1, 8], &device);
/// let (a, b) = (read_f32(loaded.forward(x.clone()))?, read_f32(model.forward(x))?);
/// assert!(a.iter().zip(&b).all(|(a, b)| (a - b).abs() <= 1e-4 * (1.0 + b.abs())));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn save_binary<M: Module>(model: &M, path: &Path) -> Result<u64> {
    let file_error = |reason: String| Error::QuantFile {
        path: path.to_path_buf(),
        reason,
    };
    let mut buffers: Vec<Buffer> = Vec::new();
    let mut shapes = BTreeMap::new();
    let mut axes = BTreeMap::new();
    for value in param_values(model) {
        let info = value.info;
        let values = ember_tensor::stats::read_f32(value.flat)?;
        check_finite(&values, &info.path)?;
        shapes.insert(info.path.clone(), info.shape.clone());
        match binary_output_axis(&info.layer_kind, &info.path) {
            Some(axis) => {
                let (rows, len, index) = rows_along(&info.shape, axis);
                let ordered: Vec<f32> = (0..rows)
                    .flat_map(|r| (0..len).map(move |c| (r, c)))
                    .map(|(r, c)| values[index(r, c)])
                    .collect();
                let signs = PackedSigns::from_values(rows, len, &ordered)?;
                let alpha: Vec<f32> = ordered
                    .chunks(len.max(1))
                    .map(|row| row.iter().map(|v| v.abs()).sum::<f32>() / len.max(1) as f32)
                    .collect();
                let words: Vec<u8> = signs.words().iter().flat_map(|w| w.to_le_bytes()).collect();
                buffers.push((info.path.clone(), Dtype::U8, vec![words.len()], words));
                buffers.push((
                    format!("{}:alpha", info.path),
                    Dtype::F32,
                    vec![rows],
                    alpha.iter().flat_map(|a| a.to_le_bytes()).collect(),
                ));
                axes.insert(info.path, axis);
            }
            None => {
                let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
                buffers.push((info.path, Dtype::F32, vec![values.len()], bytes));
            }
        }
    }
    let json = |v: &dyn erased::Json| v.to_json().map_err(|e| file_error(e.to_string()));
    let metadata = BTreeMap::from([
        ("format".to_string(), BINARY_FORMAT.to_string()),
        ("shapes".to_string(), json(&shapes)?),
        ("binary_output_axes".to_string(), json(&axes)?),
    ]);
    write_file(path, &buffers, metadata)
}

/// Load a file written by [`save_binary`] into `skeleton` (the same architecture). Every
/// mismatch (another format, a damaged file, a missing or extra parameter, a shape, a binary
/// weight whose words or scales do not fit it, NaN) is a typed error naming it. Pack the
/// binary layers afterwards to run them on the XNOR-popcount kernels.
pub fn load_binary<M: Module>(skeleton: M, path: &Path) -> Result<M> {
    let file_error = |reason: String| Error::QuantFile {
        path: path.to_path_buf(),
        reason,
    };
    let (bytes, metadata) = open_file(path, BINARY_FORMAT, &[])?;
    let field = |name: &str| metadata.get(name).map(String::as_str).unwrap_or("");
    let parse_error = |name: &str, e: serde_json::Error| file_error(format!("bad {name}: {e}"));
    let shapes: BTreeMap<String, Vec<usize>> =
        serde_json::from_str(field("shapes")).map_err(|e| parse_error("shapes", e))?;
    let axes: BTreeMap<String, usize> = serde_json::from_str(field("binary_output_axes"))
        .map_err(|e| parse_error("binary_output_axes", e))?;
    let tensors =
        SafeTensors::deserialize(&bytes).map_err(|e| file_error(format!("corrupt: {e}")))?;
    let raw = |name: &str, dtype: Dtype| -> Result<Vec<u8>> {
        let view = tensors
            .tensor(name)
            .map_err(|e| file_error(format!("`{name}`: {e}")))?;
        if view.dtype() != dtype {
            return Err(file_error(format!("`{name}` is {:?}", view.dtype())));
        }
        Ok(view.data().to_vec())
    };

    let infos = ember_tensor::params(&skeleton);
    for info in &infos {
        match shapes.get(&info.path) {
            None => {
                return Err(file_error(format!(
                    "no values for parameter `{}`",
                    info.path
                )));
            }
            Some(shape) if shape != &info.shape => {
                return Err(file_error(format!(
                    "`{}` is stored as {shape:?}, the model has {:?}",
                    info.path, info.shape
                )));
            }
            Some(_) => {}
        }
        let expected = binary_output_axis(&info.layer_kind, &info.path);
        if axes.get(&info.path).copied() != expected {
            return Err(file_error(format!(
                "`{}` is {} in the file and {} in the model",
                info.path,
                if axes.contains_key(&info.path) {
                    "binary"
                } else {
                    "float"
                },
                if expected.is_some() {
                    "binary"
                } else {
                    "float"
                },
            )));
        }
    }
    if let Some(extra) = shapes.keys().find(|k| !infos.iter().any(|i| &i.path == *k)) {
        return Err(file_error(format!(
            "`{extra}` is not a parameter of the model"
        )));
    }

    let mut values = BTreeMap::new();
    for info in &infos {
        let name = &info.path;
        let flat = match axes.get(name) {
            Some(&axis) => {
                let (rows, len, index) = rows_along(&info.shape, axis);
                let words: Vec<u64> = raw(name, Dtype::U8)?
                    .chunks(8)
                    .map(|b| {
                        let mut word = [0u8; 8];
                        word[..b.len()].copy_from_slice(b);
                        u64::from_le_bytes(word)
                    })
                    .collect();
                let signs = PackedSigns::from_words(rows, len, words)
                    .map_err(|e| file_error(format!("`{name}`: {e}")))?;
                let alpha = f32s(&raw(&format!("{name}:alpha"), Dtype::F32)?);
                if alpha.len() != rows {
                    return Err(file_error(format!(
                        "`{name}:alpha` has {} scales for {rows} outputs",
                        alpha.len()
                    )));
                }
                if let Some(bad) = alpha.iter().find(|a| !(a.is_finite() && **a >= 0.0)) {
                    return Err(file_error(format!("`{name}:alpha` holds {bad}")));
                }
                let mut flat = vec![0.0f32; rows * len];
                for r in 0..rows {
                    for c in 0..len {
                        flat[index(r, c)] = signs.sign(r, c) as f32 * alpha[r];
                    }
                }
                flat
            }
            None => f32s(&raw(name, Dtype::F32)?),
        };
        if flat.len() != info.numel() {
            return Err(file_error(format!(
                "`{name}` has {} values for shape {:?}",
                flat.len(),
                info.shape
            )));
        }
        check_finite(&flat, name).map_err(|e| file_error(e.to_string()))?;
        values.insert(name.clone(), flat);
    }
    Ok(ember_tensor::set_param_values(skeleton, &values)?)
}
