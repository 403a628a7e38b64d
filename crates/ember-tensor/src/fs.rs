//! Writing files for a user: never half-written, never over an input by accident; and
//! Ember's safetensors formats, which carry a checksum so that a damaged file is refused
//! rather than loaded as a silently different model.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use sha2::{Digest, Sha256};

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

/// The metadata entry that holds a file's SHA-256, in hex: the digest of the whole file with
/// this entry's value written as zeros.
pub const CHECKSUM_KEY: &str = "sha256";
const DIGEST_HEX: usize = 64;

/// The bytes of a safetensors file holding `tensors` and `metadata`, the same bytes for the
/// same input on every run, checksummed ([`CHECKSUM_KEY`]). safetensors takes its metadata as
/// a `HashMap`, whose order changes from one map to the next; the header is written again with
/// its keys sorted (same keys, same length), so that saving one model twice gives one file.
pub fn serialize_safetensors<'a>(
    tensors: Vec<(String, safetensors::tensor::TensorView<'a>)>,
    mut metadata: std::collections::BTreeMap<String, String>,
) -> Result<Vec<u8>, String> {
    metadata.insert(CHECKSUM_KEY.into(), "0".repeat(DIGEST_HEX));
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
    let at = checksum_position(&bytes).ok_or("the checksum entry went missing")?;
    let digest = hex(&Sha256::digest(&bytes));
    bytes[at..at + DIGEST_HEX].copy_from_slice(digest.as_bytes());
    Ok(bytes)
}

/// Where the checksum's hex digits start in a file's bytes, if its header holds the entry.
fn checksum_position(bytes: &[u8]) -> Option<usize> {
    let len = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let header = bytes.get(8..8usize.checked_add(usize::try_from(len).ok()?)?)?;
    let key = format!("\"{CHECKSUM_KEY}\":\"");
    let start = header
        .windows(key.len())
        .position(|w| w == key.as_bytes())?
        + key.len();
    header.get(start..start + DIGEST_HEX)?;
    Some(8 + start)
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `bytes` (a file [`serialize_safetensors`] wrote) are as they were written: `None`
/// for a file without a checksum (written before files carried one), else whether the
/// digest matches.
pub fn checksum_matches(bytes: &[u8]) -> Option<bool> {
    let at = checksum_position(bytes)?;
    // The digest of the file as it was hashed, its own hex digits zeroed, without a copy.
    let mut hash = Sha256::new();
    hash.update(&bytes[..at]);
    hash.update([b'0'; DIGEST_HEX]);
    hash.update(&bytes[at + DIGEST_HEX..]);
    Some(hex(&hash.finalize()).as_bytes() == &bytes[at..at + DIGEST_HEX])
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
/// `format` (or one of its `legacy` versions), its checksum verified: the opening check
/// Ember's own file formats (`ember-sparse/2`, `ember-quant/2`) share. A file whose bytes do
/// not match its checksum is refused, and so is a file of the current format without one
/// (damage can hit the checksum's own entry); a legacy file, written before files carried a
/// checksum, loads with a warning (`log`).
pub fn read_tagged_safetensors(
    path: &Path,
    format: &str,
    legacy: &[&str],
) -> Result<(Vec<u8>, std::collections::HashMap<String, String>), TaggedFileError> {
    let bytes = std::fs::read(path).map_err(TaggedFileError::Io)?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| TaggedFileError::Invalid(format!("corrupt: {e}")))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let tag = metadata.get("format").map(String::as_str);
    let current = tag == Some(format);
    if !current && !legacy.iter().any(|old| tag == Some(*old)) {
        return Err(TaggedFileError::Invalid(format!("not an {format} file")));
    }
    match checksum_matches(&bytes) {
        Some(true) => {}
        Some(false) => {
            return Err(TaggedFileError::Invalid(
                "damaged: its bytes do not match the checksum it was written with".into(),
            ));
        }
        None if current => {
            return Err(TaggedFileError::Invalid(format!(
                "damaged: an {format} file carries a checksum, and this one has none"
            )));
        }
        None => log::warn!(
            "{}: no checksum (an older {} file): damage to it would go unnoticed",
            path.display(),
            tag.unwrap_or_default()
        ),
    }
    Ok((bytes, metadata))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use safetensors::tensor::{Dtype, TensorView};

    fn file() -> Vec<u8> {
        let data: Vec<u8> = (0u8..32).collect();
        let view = TensorView::new(Dtype::F32, vec![8], &data).unwrap();
        let metadata = BTreeMap::from([("format".to_string(), "test/2".to_string())]);
        serialize_safetensors(vec![("w".into(), view)], metadata).unwrap()
    }

    /// Every single-byte change of a checksummed file is caught, wherever it lands: the length
    /// prefix, the header (the digest itself included) or the tensors.
    #[test]
    fn every_flipped_byte_is_caught() {
        let bytes = file();
        assert_eq!(checksum_matches(&bytes), Some(true));
        assert_eq!(file(), bytes, "the same input gives the same bytes");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.safetensors");
        for i in 0..bytes.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut damaged = bytes.clone();
                damaged[i] ^= flip;
                std::fs::write(&path, &damaged).unwrap();
                assert!(
                    read_tagged_safetensors(&path, "test/2", &["test/1"]).is_err(),
                    "byte {i} ^ {flip:#x} went unnoticed"
                );
            }
        }
        std::fs::write(&path, &bytes).unwrap();
        assert!(read_tagged_safetensors(&path, "test/2", &["test/1"]).is_ok());
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// A save that fails (the target is a directory, or its parent is a file) returns the
    /// error and leaves no temporary file behind and what was there untouched; one that
    /// succeeds replaces the old file whole, with ordinary permissions.
    #[test]
    fn failed_saves_leave_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let taken = dir.path().join("taken");
        std::fs::create_dir(&taken).unwrap();
        std::fs::write(taken.join("inside"), b"old").unwrap();
        assert!(write_atomically(&taken, b"new").is_err());
        assert_eq!(entries(dir.path()), ["taken"], "no temporary file left");
        assert_eq!(std::fs::read(taken.join("inside")).unwrap(), b"old");

        let file = dir.path().join("file");
        std::fs::write(&file, b"old").unwrap();
        assert!(write_atomically(&file.join("below"), b"new").is_err());
        assert_eq!(std::fs::read(&file).unwrap(), b"old");

        write_atomically(&file, b"new contents").unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"new contents");
        assert_eq!(entries(dir.path()), ["file", "taken"]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o644);
        }
    }

    /// A file from before checksums (no entry, the legacy format) still opens; one of the
    /// current format without its checksum does not.
    #[test]
    fn a_file_without_a_checksum_still_opens() {
        let data = [0u8; 4];
        let view = TensorView::new(Dtype::F32, vec![1], &data).unwrap();
        let metadata =
            std::collections::HashMap::from([("format".to_string(), "test/1".to_string())]);
        let bytes = safetensors::serialize(vec![("w", view)], Some(metadata)).unwrap();
        assert_eq!(checksum_matches(&bytes), None);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.safetensors");
        std::fs::write(&path, &bytes).unwrap();
        assert!(read_tagged_safetensors(&path, "test/2", &["test/1"]).is_ok());
        assert!(read_tagged_safetensors(&path, "test/1", &[]).is_err());
    }
}
