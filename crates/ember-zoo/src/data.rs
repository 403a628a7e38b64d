//! Image-classification datasets in MNIST's IDX layout, from any directory, and the vendored
//! MNIST with its checksums.

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Int, Tensor, TensorData};
use ember_tensor::LabeledData;
use sha2::{Digest, Sha256};

use crate::idx::{IdxArray, find_idx, read_idx};
use crate::{Error, Result};

/// Per-pixel mean and standard deviation of MNIST's training set, the usual normalization.
pub const MNIST_MEAN: f32 = 0.1307;
/// See [`MNIST_MEAN`].
pub const MNIST_STD: f32 = 0.3081;

/// The vendored MNIST, relative to the workspace root.
pub fn vendored_mnist_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/mnist");
    dir.canonicalize().unwrap_or(dir)
}

/// One split of a dataset: grey-level images and their class labels.
#[derive(Debug, Clone)]
pub struct Split {
    /// Pixels, `len * rows * cols` bytes, row-major.
    pub pixels: Vec<u8>,
    /// One class index per image.
    pub labels: Vec<u8>,
    /// Image height.
    pub rows: usize,
    /// Image width.
    pub cols: usize,
}

impl Split {
    /// The first `n` images (all of them if there are fewer).
    pub fn take(&self, n: usize) -> Split {
        let n = n.min(self.len());
        Split {
            pixels: self.pixels[..n * self.rows * self.cols].to_vec(),
            labels: self.labels[..n].to_vec(),
            rows: self.rows,
            cols: self.cols,
        }
    }
}

impl LabeledData for Split {
    fn len(&self) -> usize {
        self.labels.len()
    }

    /// Images `indices` as a normalized `[batch, 1, rows, cols]` tensor and their labels.
    fn batch(&self, indices: &[usize], device: &Device) -> (Tensor<4>, Tensor<1, Int>) {
        let pixels_per_image = self.rows * self.cols;
        let mut images = Vec::with_capacity(indices.len() * pixels_per_image);
        for &i in indices {
            let image = &self.pixels[i * pixels_per_image..(i + 1) * pixels_per_image];
            images.extend(
                image
                    .iter()
                    .map(|&p| (p as f32 / 255.0 - MNIST_MEAN) / MNIST_STD),
            );
        }
        let labels: Vec<i64> = indices.iter().map(|&i| self.labels[i] as i64).collect();
        let shape = [indices.len(), 1, self.rows, self.cols];
        (
            Tensor::from_data(TensorData::new(images, shape), device),
            Tensor::from_data(TensorData::new(labels, [indices.len()]), device),
        )
    }
}

/// A dataset of train and test images.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The training split.
    pub train: Split,
    /// The test split.
    pub test: Split,
    /// Number of classes: one more than the largest label in either split.
    pub classes: usize,
    /// Whether the files were checked against a `SHA256SUMS` list in the directory.
    pub checksums_verified: bool,
}

impl Dataset {
    /// Load `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte`
    /// and `t10k-labels-idx1-ubyte` (each optionally `.gz`) from `dir`. If the directory holds a
    /// `SHA256SUMS` list, every file it names is checked first.
    pub fn load_idx_dir(dir: &Path) -> Result<Dataset> {
        let checksums_verified = verify_checksums(dir)?;
        let train = load_split(dir, "train", "train")?;
        let test = load_split(dir, "t10k", "test")?;
        if (train.rows, train.cols) != (test.rows, test.cols) {
            return Err(Error::Inconsistent {
                reason: format!(
                    "train images are {}x{}, test images {}x{}",
                    train.rows, train.cols, test.rows, test.cols
                ),
            });
        }
        let classes = train
            .labels
            .iter()
            .chain(&test.labels)
            .copied()
            .max()
            .unwrap_or(0) as usize
            + 1;
        Ok(Dataset {
            train,
            test,
            classes,
            checksums_verified,
        })
    }

    /// The MNIST copy vendored in `fixtures/mnist`, checksums verified.
    pub fn mnist() -> Result<Dataset> {
        Self::load_idx_dir(&vendored_mnist_dir())
    }
}

fn load_split(dir: &Path, prefix: &str, split: &'static str) -> Result<Split> {
    let images_path = find_idx(dir, &format!("{prefix}-images-idx3-ubyte"))?;
    let labels_path = find_idx(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
    let IdxArray { dims, data: pixels } = read_idx(&images_path)?;
    let &[images, rows, cols] = dims.as_slice() else {
        return Err(Error::BadDims {
            path: images_path,
            dims,
            expected: "[count, rows, cols]",
        });
    };
    let IdxArray { dims, data: labels } = read_idx(&labels_path)?;
    if dims.len() != 1 {
        return Err(Error::BadDims {
            path: labels_path,
            dims,
            expected: "[count]",
        });
    }
    if images != labels.len() {
        return Err(Error::CountMismatch {
            split,
            images,
            labels: labels.len(),
        });
    }
    if images == 0 || rows == 0 || cols == 0 {
        return Err(Error::Inconsistent {
            reason: format!("{split} split is empty ({images} images of {rows}x{cols})"),
        });
    }
    Ok(Split {
        pixels,
        labels,
        rows,
        cols,
    })
}

/// Check every file named in `dir/SHA256SUMS` (the `sha256sum` format); `Ok(false)` when the
/// directory has no such list.
pub fn verify_checksums(dir: &Path) -> Result<bool> {
    let list_path = dir.join("SHA256SUMS");
    if !list_path.is_file() {
        return Ok(false);
    }
    let list = std::fs::read_to_string(&list_path).map_err(|source| Error::Io {
        path: list_path.clone(),
        source,
    })?;
    for (number, line) in list
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let (expected, name) = line
            .split_once(char::is_whitespace)
            .map(|(hash, name)| {
                (
                    hash.to_ascii_lowercase(),
                    name.trim().trim_start_matches('*'),
                )
            })
            .filter(|(hash, name)| hash.len() == 64 && !name.is_empty())
            .ok_or(Error::BadChecksumList {
                path: list_path.clone(),
                line: number + 1,
            })?;
        let path = dir.join(name);
        let bytes = std::fs::read(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        let got = format!("{:x}", Sha256::digest(&bytes));
        if got != expected {
            return Err(Error::ChecksumMismatch {
                path,
                expected,
                got,
            });
        }
    }
    Ok(true)
}
