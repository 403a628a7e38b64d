//! Any burn module saved with its keep masks, in one file, and loaded back into a module of the
//! same structure: pruning that survives a restart for models Ember does not know.
//!
//! burn's record holds a masked parameter's mask (it lives in the parameter's
//! reparameterization, see [`crate::mask`]), but loading a record needs a module that already
//! has a mask at each masked parameter. The file says which parameters those are: it is the
//! line `ember-masked/1`, a little-endian `u64` length, a JSON header (the masked parameters'
//! paths and the SHA-256 of the record), then burn's record bytes. A damaged file is refused
//! by its checksum before anything is built from it.

use std::path::Path;

use burn::module::Module;
use burn::store::ModuleRecord;
use burn::tensor::{Bool, Bytes, Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// The file's first line.
pub const MASKED_FORMAT: &str = "ember-masked/1";

#[derive(Serialize, Deserialize)]
struct Header {
    masked: Vec<String>,
    sha256: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Write `module` and its masks to `path` (atomically: a failed write leaves any file there as
/// it was); returns the file's size in bytes.
pub fn save_masked<M: Module>(module: M, path: &Path) -> Result<u64> {
    let file_error = |reason: String| Error::File {
        path: path.to_path_buf(),
        reason,
    };
    let masked: Vec<String> = crate::masks(&module).into_keys().collect();
    let record = module
        .into_record()
        .into_bytes()
        .map_err(|e| file_error(format!("cannot encode the record: {e:?}")))?;
    let record: &[u8] = &record;
    let header = serde_json::to_vec(&Header {
        masked,
        sha256: hex(&Sha256::digest(record)),
    })
    .map_err(|e| file_error(e.to_string()))?;
    let mut bytes = Vec::with_capacity(MASKED_FORMAT.len() + 9 + header.len() + record.len());
    bytes.extend_from_slice(MASKED_FORMAT.as_bytes());
    bytes.push(b'\n');
    bytes.extend_from_slice(&(header.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&header);
    bytes.extend_from_slice(record);
    crate::fs::write_atomically(path, &bytes).map_err(|e| file_error(e.to_string()))?;
    Ok(bytes.len() as u64)
}

/// Load a file written by [`save_masked`] into `skeleton` (a module of the same structure, on
/// `device`): its parameters and masks. Another format, a damaged file, a record that does not
/// fit the skeleton or a mask of the wrong size is an [`Error::File`] naming the file.
pub fn load_masked<M: Module>(skeleton: M, path: &Path, device: &Device) -> Result<M> {
    let file_error = |reason: String| Error::File {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| file_error(e.to_string()))?;
    let magic = MASKED_FORMAT.len() + 1;
    if bytes.len() < magic + 8 || &bytes[..magic - 1] != MASKED_FORMAT.as_bytes() {
        return Err(file_error(format!("not an {MASKED_FORMAT} file")));
    }
    let mut length = [0u8; 8];
    length.copy_from_slice(&bytes[magic..magic + 8]);
    let header_end = usize::try_from(u64::from_le_bytes(length))
        .ok()
        .and_then(|n| (magic + 8).checked_add(n))
        .filter(|&end| end <= bytes.len())
        .ok_or_else(|| file_error("truncated: the header runs past the end".into()))?;
    let header: Header = serde_json::from_slice(&bytes[magic + 8..header_end])
        .map_err(|e| file_error(format!("bad header: {e}")))?;
    let record = &bytes[header_end..];
    if hex(&Sha256::digest(record)) != header.sha256 {
        return Err(file_error(
            "damaged: its bytes do not match the checksum it was written with".into(),
        ));
    }
    let module = with_placeholder_masks(skeleton, &header.masked, device)?;
    let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(record.to_vec()))
        .map_err(|e| file_error(format!("corrupt record: {e:?}")))?;
    let module = module
        .try_load_record(record)
        .map_err(|e| file_error(format!("the record does not fit the module: {e:?}")))?;
    crate::check_masks(&module).map_err(|e| file_error(format!("masks do not fit: {e}")))?;
    Ok(module)
}

/// `module` with an all-keep mask on each parameter in `masked`, for a record with masks to
/// load into. A path that names no parameter is an error.
pub fn with_placeholder_masks<M: Module>(
    module: M,
    masked: &[String],
    device: &Device,
) -> Result<M> {
    if masked.is_empty() {
        return Ok(module);
    }
    let infos = crate::params(&module);
    let mut masks = crate::Masks::new();
    for path in masked {
        let numel = infos
            .iter()
            .find(|p| &p.path == path)
            .map(|p| p.numel())
            .ok_or_else(|| Error::PatternMatchesNothing {
                pattern: path.clone(),
                available: infos
                    .iter()
                    .map(|p| p.path.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        masks.insert(
            path.clone(),
            Tensor::<1, Bool>::from_data(TensorData::from(vec![true; numel].as_slice()), device),
        );
    }
    crate::set_masks(module, &masks)
}
