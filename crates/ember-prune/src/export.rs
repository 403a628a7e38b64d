//! A pruned model on disk in a form whose size falls with its sparsity.
//!
//! The file is a safetensors file: a parameter stored sparse is two tensors, `<path>.bits`
//! (one bit per element, [`ember_kernels::Bitmap`]) and `<path>.values` (the kept values); a
//! parameter for which that is not smaller (a bias, a dense layer) is stored as `<path>` as
//! is. The header's metadata names the format and every parameter's shape.

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::Module;
use ember_kernels::Bitmap;
use ember_tensor::fs::{TaggedFileError, read_tagged_safetensors};
use ember_tensor::{param_values, stats::read_f32};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::{Error, Result};

/// The `format` the file's metadata carries.
pub const FORMAT: &str = "ember-sparse/2";

/// Older versions it still reads: `ember-sparse/1` is `/2` without the checksum.
pub const LEGACY_FORMATS: [&str; 1] = ["ember-sparse/1"];

/// Write every float parameter of `model` (masks folded in) to `path`, sparse where that is
/// smaller; returns the file's size in bytes. The file is written to a temporary file and
/// renamed into place, so it is never half-written.
///
/// ```
/// use burn::nn::LinearConfig;
/// use burn::tensor::Device;
/// use ember_prune::{PruneConfig, export_sparse, load_sparse, prune};
///
/// let device = Device::flex();
/// let (layer, _) = prune(LinearConfig::new(64, 64).init(&device), &PruneConfig::global_magnitude(0.9))?;
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("sparse.safetensors");
/// let bytes = export_sparse(&layer, &path)?;
/// // A bit per weight and the 10 % kept values: well under the 16 KiB of f32 weights.
/// assert!(bytes < 4 * 64 * 64 / 4);
/// let loaded = load_sparse(LinearConfig::new(64, 64).init(&device), &path)?;
/// let same = loaded.weight.val().equal(layer.weight.val()).all().into_scalar::<bool>();
/// assert!(same);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn export_sparse<M: Module>(model: &M, path: &Path) -> Result<u64> {
    let file_error = |reason: String| Error::SparseFile {
        path: path.to_path_buf(),
        reason,
    };
    let mut buffers: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = vec![];
    let mut shapes = BTreeMap::new();
    for value in param_values(model) {
        let flat = read_f32(value.flat)?;
        let sparse = Bitmap::from_dense(&flat);
        let path = value.info.path;
        shapes.insert(path.clone(), value.info.shape.clone());
        if sparse.storage_bytes() < 4 * flat.len() {
            buffers.push((
                format!("{path}.bits"),
                Dtype::U8,
                vec![sparse.bits().len()],
                sparse.bits().to_vec(),
            ));
            buffers.push((
                format!("{path}.values"),
                Dtype::F32,
                vec![sparse.nnz()],
                le_bytes(sparse.values()),
            ));
        } else {
            buffers.push((path, Dtype::F32, vec![flat.len()], le_bytes(&flat)));
        }
    }
    let views = buffers
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            TensorView::new(*dtype, shape.clone(), bytes)
                .map(|view| (name.clone(), view))
                .map_err(|e| file_error(e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    let metadata = BTreeMap::from([
        ("format".to_string(), FORMAT.to_string()),
        (
            "shapes".to_string(),
            serde_json::to_string(&shapes).map_err(|e| file_error(e.to_string()))?,
        ),
    ]);
    let bytes = ember_tensor::fs::serialize_safetensors(views, metadata).map_err(file_error)?;
    write_atomically(path, &bytes)?;
    Ok(bytes.len() as u64)
}

/// Load the parameters of a file written by [`export_sparse`] into `model`, which must have
/// the same parameters with the same shapes (build it from the same config); every mismatch is
/// an error naming the parameter.
pub fn load_sparse<M: Module>(model: M, path: &Path) -> Result<M> {
    let file_error = |reason: String| Error::SparseFile {
        path: path.to_path_buf(),
        reason,
    };
    let (bytes, metadata) =
        read_tagged_safetensors(path, FORMAT, &LEGACY_FORMATS).map_err(|e| match e {
            TaggedFileError::Io(source) => Error::Io {
                path: path.to_path_buf(),
                source,
            },
            TaggedFileError::Invalid(reason) => file_error(reason),
        })?;
    let shapes: BTreeMap<String, Vec<usize>> =
        serde_json::from_str(metadata.get("shapes").map(String::as_str).unwrap_or(""))
            .map_err(|e| file_error(format!("bad shapes: {e}")))?;
    let tensors =
        SafeTensors::deserialize(&bytes).map_err(|e| file_error(format!("corrupt: {e}")))?;
    let f32s = |name: &str| -> Result<Vec<f32>> {
        let view = tensors
            .tensor(name)
            .map_err(|e| file_error(format!("`{name}`: {e}")))?;
        if view.dtype() != Dtype::F32 {
            return Err(file_error(format!(
                "`{name}` is {:?}, not F32",
                view.dtype()
            )));
        }
        Ok(view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    };

    // The file's shapes are checked against the model before anything is sized from them: a
    // header can promise any number of elements.
    let expected: BTreeMap<String, Vec<usize>> = ember_tensor::params(&model)
        .into_iter()
        .map(|p| (p.path, p.shape))
        .collect();
    for (name, shape) in &expected {
        match shapes.get(name) {
            None => return Err(file_error(format!("no values for parameter `{name}`"))),
            Some(stored) if stored != shape => {
                return Err(file_error(format!(
                    "`{name}` is stored as {stored:?}, the model has {shape:?}"
                )));
            }
            Some(_) => {}
        }
    }
    if let Some(extra) = shapes.keys().find(|k| !expected.contains_key(*k)) {
        return Err(file_error(format!(
            "`{extra}` is not a parameter of the model"
        )));
    }

    let mut values = BTreeMap::new();
    for (name, shape) in &shapes {
        let numel = shape.iter().product();
        let flat = match tensors.tensor(&format!("{name}.bits")) {
            Ok(bits) => Bitmap::from_parts(
                numel,
                bits.data().to_vec(),
                f32s(&format!("{name}.values"))?,
            )
            .map_err(|e| file_error(format!("`{name}`: {e}")))?
            .to_dense(),
            Err(_) => f32s(name)?,
        };
        if flat.len() != numel {
            return Err(file_error(format!(
                "`{name}` has {} values for shape {shape:?}",
                flat.len()
            )));
        }
        let non_finite = flat.iter().filter(|v| !v.is_finite()).count();
        if non_finite > 0 {
            return Err(file_error(format!(
                "`{name}` holds {non_finite} NaN or infinite values"
            )));
        }
        values.insert(name.clone(), flat);
    }

    Ok(ember_tensor::set_param_values(model, &values)?)
}

fn le_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    ember_tensor::fs::write_atomically(path, bytes).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}
