//! Writing files for a user: never half-written, never over an input by accident.

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
