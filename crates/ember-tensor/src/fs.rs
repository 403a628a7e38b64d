//! Writing files for a user: never half-written, never over an input by accident.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

/// Write `bytes` to `path` through a temporary file in the same directory, synced and renamed
/// into place: a crash leaves either the old file or the new one, never half of one. Missing
/// parent directories are created; the file gets ordinary permissions (0644 on Unix).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut temp = tempfile::NamedTempFile::new_in(dir)?;
    temp.write_all(bytes)?;
    temp.as_file().sync_all()?;
    // A temporary file is private (0600); a saved model is an ordinary file.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        temp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    }
    temp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// The bytes of a safetensors file holding `tensors` and `metadata`, the same bytes for the
/// same input on every run. safetensors takes its metadata as a `HashMap`, whose order changes
/// from one map to the next; the header is written again with its keys sorted (same keys, same
/// length), so that saving one model twice gives one file.
pub fn serialize_safetensors<'a>(
    tensors: Vec<(String, safetensors::tensor::TensorView<'a>)>,
    metadata: std::collections::BTreeMap<String, String>,
) -> Result<Vec<u8>, String> {
    let mut bytes = safetensors::serialize(tensors, Some(metadata.into_iter().collect()))
        .map_err(|e| e.to_string())?;
    let sorted = |header: &[u8]| -> serde_json::Result<Vec<u8>> {
        // Nested maps go through BTreeMaps too: serde_json's own map keeps insertion order
        // when another crate in the build turns on its `preserve_order` feature.
        let mut entries: BTreeMap<String, serde_json::Value> = serde_json::from_slice(header)?;
        if let Some(meta) = entries.remove("__metadata__") {
            let meta: BTreeMap<String, String> = serde_json::from_value(meta)?;
            entries.insert("__metadata__".into(), serde_json::to_value(meta)?);
        }
        serde_json::to_vec(&entries)
    };
    let len = bytes
        .get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(|b| u64::from_le_bytes(b) as usize)
        .ok_or("safetensors wrote no header")?;
    let header = bytes
        .get(8..8 + len)
        .ok_or("safetensors wrote a short header")?;
    let rewritten = sorted(header).map_err(|e| e.to_string())?;
    // The header is padded with spaces to a multiple of 8 bytes; the sorted JSON has the same
    // characters, so it fits in the same room.
    if rewritten.len() > len {
        return Err("the sorted header is longer than safetensors' own".into());
    }
    let header = &mut bytes[8..8 + len];
    header.fill(b' ');
    header[..rewritten.len()].copy_from_slice(&rewritten);
    Ok(bytes)
}

/// Why a file in one of Ember's safetensors formats could not be opened.
#[derive(Debug)]
pub enum TaggedFileError {
    /// Reading it failed.
    Io(std::io::Error),
    /// It is not a safetensors file, or its metadata names another format.
    Invalid(String),
}

/// The bytes and header metadata of a safetensors file whose metadata entry `format` is
/// `format`: the opening check Ember's own file formats (`ember-sparse/1`, `ember-quant/1`)
/// share.
pub fn read_tagged_safetensors(
    path: &Path,
    format: &str,
) -> Result<(Vec<u8>, std::collections::HashMap<String, String>), TaggedFileError> {
    let bytes = std::fs::read(path).map_err(TaggedFileError::Io)?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| TaggedFileError::Invalid(format!("corrupt: {e}")))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    if metadata.get("format").map(String::as_str) != Some(format) {
        return Err(TaggedFileError::Invalid(format!("not an {format} file")));
    }
    Ok((bytes, metadata))
}
