//! The IDX format (MNIST's): a big-endian header `0x00 0x00 <type> <rank>`, one big-endian
//! `u32` per dimension, then the raw values. Only unsigned bytes (type `0x08`) are read, gzipped
//! or not.

use std::io::Read;
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;

use crate::{Error, Result};

/// An IDX array of unsigned bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    /// Dimensions from the header, outermost first.
    pub dims: Vec<usize>,
    /// The values, row-major.
    pub data: Vec<u8>,
}

const UNSIGNED_BYTE: u8 = 0x08;
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// The most data an IDX file may hold: 1 GiB, twenty times MNIST's training images. A header
/// that promises more is refused before anything is allocated or decompressed.
pub const MAX_IDX_BYTES: usize = 1 << 30;

/// Read an IDX file; a gzip stream (by its magic bytes, whatever the name) is decompressed.
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    let raw = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    decode_idx(&raw, path)
}

/// Parse a file's bytes, raw or gzipped; `path` only names the source in errors. A gzip
/// stream is decompressed no further than the header's promise (plus one byte, to tell a
/// longer stream), and never past [`MAX_IDX_BYTES`].
pub fn decode_idx(raw: &[u8], path: &Path) -> Result<IdxArray> {
    if !raw.starts_with(&GZIP_MAGIC) {
        return parse_idx(raw, path);
    }
    let gzip_error = |e: std::io::Error| Error::Gzip {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let mut decoder = GzDecoder::new(raw);
    // The magic and the rank, then the dimensions, read through a bounded `take` so that a
    // short stream reaches `parse_idx` to be named as truncated.
    let mut header = Vec::new();
    (&mut decoder)
        .take(4)
        .read_to_end(&mut header)
        .map_err(gzip_error)?;
    let rank = header.get(3).copied().unwrap_or(0) as u64;
    (&mut decoder)
        .take(4 * rank)
        .read_to_end(&mut header)
        .map_err(gzip_error)?;
    let promised = promised_len(&header, path)?;
    let mut bytes = header;
    (&mut decoder)
        .take(promised as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(gzip_error)?;
    parse_idx(&bytes, path)
}

/// The data length a complete header promises, checked against [`MAX_IDX_BYTES`]; for an
/// incomplete header, 0 (`parse_idx` names what is missing).
fn promised_len(header: &[u8], path: &Path) -> Result<usize> {
    let Some(dims) = header.get(4..).filter(|d| d.len() >= 4 && d.len() % 4 == 0) else {
        return Ok(0);
    };
    data_len(&header_dims(dims)).ok_or_else(|| Error::BadHeader {
        path: path.to_path_buf(),
        reason: format!(
            "its dimensions promise more than the {} MiB of data Ember reads",
            MAX_IDX_BYTES >> 20
        ),
    })
}

/// Parse IDX bytes; `path` only names the source in errors.
pub fn parse_idx(bytes: &[u8], path: &Path) -> Result<IdxArray> {
    let bad = |reason: String| Error::BadHeader {
        path: path.to_path_buf(),
        reason,
    };
    let [zero0, zero1, kind, rank] = *bytes.first_chunk::<4>().ok_or_else(|| {
        bad(format!(
            "{} bytes, shorter than the 4-byte magic",
            bytes.len()
        ))
    })?;
    if (zero0, zero1) != (0, 0) {
        return Err(bad(format!(
            "magic starts with {zero0:#04x} {zero1:#04x}, not 0x00 0x00"
        )));
    }
    if kind != UNSIGNED_BYTE {
        return Err(bad(format!(
            "element type {kind:#04x}, only 0x08 (u8) is supported"
        )));
    }
    if rank == 0 {
        return Err(bad("rank 0".into()));
    }
    let header_len = 4 + 4 * rank as usize;
    let dims_bytes = bytes.get(4..header_len).ok_or_else(|| Error::Truncated {
        path: path.to_path_buf(),
        expected: header_len,
        got: bytes.len(),
    })?;
    let dims = header_dims(dims_bytes);
    let expected = data_len(&dims).ok_or_else(|| {
        bad(format!(
            "dimensions {dims:?} promise more than the {} MiB of data Ember reads",
            MAX_IDX_BYTES >> 20
        ))
    })?;
    let data = &bytes[header_len..];
    if data.len() < expected {
        return Err(Error::Truncated {
            path: path.to_path_buf(),
            expected,
            got: data.len(),
        });
    }
    if data.len() > expected {
        return Err(bad(format!(
            "{} bytes of data after the {expected} the header promises",
            data.len() - expected
        )));
    }
    Ok(IdxArray {
        dims,
        data: data.to_vec(),
    })
}

/// The dimensions of a header's big-endian `u32`s.
fn header_dims(bytes: &[u8]) -> Vec<usize> {
    bytes
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect()
}

/// The data length `dims` promise, or `None` past `usize` or [`MAX_IDX_BYTES`].
fn data_len(dims: &[usize]) -> Option<usize> {
    dims.iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= MAX_IDX_BYTES)
}

/// Encode an array as IDX bytes (uncompressed): the inverse of [`parse_idx`], for tests and
/// for users who write their own datasets.
pub fn encode_idx(array: &IdxArray) -> Vec<u8> {
    let mut out = vec![0, 0, UNSIGNED_BYTE, array.dims.len() as u8];
    for &d in &array.dims {
        out.extend_from_slice(&(d as u32).to_be_bytes());
    }
    out.extend_from_slice(&array.data);
    out
}

/// The path of `stem` in `dir`, gzipped (`stem.gz`) or not.
pub fn find_idx(dir: &Path, stem: &str) -> Result<PathBuf> {
    [dir.join(format!("{stem}.gz")), dir.join(stem)]
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| Error::MissingFile {
            path: dir.join(stem),
            stem: stem.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn here() -> &'static Path {
        Path::new("test.idx")
    }

    #[test]
    fn hand_written_file_parses() {
        let bytes = [0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3, 1, 2, 3, 4, 5, 6];
        let array = parse_idx(&bytes, here()).unwrap();
        assert_eq!(array.dims, vec![2, 3]);
        assert_eq!(array.data, vec![1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn truncated_data_is_a_typed_error() {
        let bytes = [0, 0, 8, 1, 0, 0, 0, 5, 1, 2];
        assert!(matches!(
            parse_idx(&bytes, here()),
            Err(Error::Truncated {
                expected: 5,
                got: 2,
                ..
            })
        ));
        // Cut inside the dimension list.
        assert!(matches!(
            parse_idx(&[0, 0, 8, 3, 0, 0], here()),
            Err(Error::Truncated { .. })
        ));
    }

    #[test]
    fn wrong_magic_or_type_is_a_typed_error() {
        for bytes in [
            &[1u8, 0, 8, 1, 0, 0, 0, 0][..],
            &[0, 0, 0x0d, 1, 0, 0, 0, 0],
            &[0, 0],
        ] {
            assert!(matches!(
                parse_idx(bytes, here()),
                Err(Error::BadHeader { .. })
            ));
        }
    }

    #[test]
    fn trailing_garbage_is_rejected() {
        let bytes = [0, 0, 8, 1, 0, 0, 0, 1, 7, 7];
        assert!(matches!(
            parse_idx(&bytes, here()),
            Err(Error::BadHeader { .. })
        ));
    }

    proptest! {
        #[test]
        fn encode_then_parse_is_identity(dims in prop::collection::vec(1usize..6, 1..4), seed in any::<u8>()) {
            let len: usize = dims.iter().product();
            let data = (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
            let array = IdxArray { dims, data };
            prop_assert_eq!(parse_idx(&encode_idx(&array), here()).unwrap(), array);
        }
    }
}
