//! Image-classification datasets in MNIST's IDX layout, from any directory, and the vendored
//! MNIST with its checksums.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use burn::tensor::{Device, Int, Tensor, TensorData};
use ember_tensor::LabeledData;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
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

impl Split {
    /// The first `n` images and the rest (a validation split held out of a training one).
    pub fn split_at(&self, n: usize) -> (Split, Split) {
        let n = n.min(self.len());
        let at = n * self.rows * self.cols;
        let part = |pixels: &[u8], labels: &[u8]| Split {
            pixels: pixels.to_vec(),
            labels: labels.to_vec(),
            rows: self.rows,
            cols: self.cols,
        };
        (
            part(&self.pixels[..at], &self.labels[..n]),
            part(&self.pixels[at..], &self.labels[n..]),
        )
    }
}

impl LabeledData for Split {
    fn len(&self) -> usize {
        self.labels.len()
    }

    /// Images `indices` as a normalized `[batch, 1, rows, cols]` tensor and their labels.
    fn batch(&self, indices: &[usize], device: &Device) -> (Tensor<4>, Tensor<1, Int>) {
        self.batch_with(indices, device, |image, out| {
            out.extend(image.iter().map(|&p| normalize(p)))
        })
    }
}

impl Split {
    fn image(&self, i: usize) -> &[u8] {
        let pixels_per_image = self.rows * self.cols;
        &self.pixels[i * pixels_per_image..(i + 1) * pixels_per_image]
    }

    /// A batch of `indices`, each image's normalized pixels appended to the buffer by `pixels`.
    fn batch_with(
        &self,
        indices: &[usize],
        device: &Device,
        mut pixels: impl FnMut(&[u8], &mut Vec<f32>),
    ) -> (Tensor<4>, Tensor<1, Int>) {
        let mut images = Vec::with_capacity(indices.len() * self.rows * self.cols);
        for &i in indices {
            pixels(self.image(i), &mut images);
        }
        let labels: Vec<i64> = indices.iter().map(|&i| self.labels[i] as i64).collect();
        let shape = [indices.len(), 1, self.rows, self.cols];
        (
            Tensor::from_data(TensorData::new(images, shape), device),
            Tensor::from_data(TensorData::new(labels, [indices.len()]), device),
        )
    }
}

fn normalize(pixel: u8) -> f32 {
    (pixel as f32 / 255.0 - MNIST_MEAN) / MNIST_STD
}

/// A training split whose every batch shifts each image by a random whole number of pixels,
/// up to `max_shift` in each direction, the vacated border filled with background: the
/// "jitter" Hinton et al. 2015 regularized their MNIST teacher with. The shifts are drawn
/// from a generator seeded at construction, one draw per image per batch, so a training run
/// that asks for the same batches in the same order sees the same shifts.
#[derive(Debug)]
pub struct Jittered<'a> {
    split: &'a Split,
    max_shift: usize,
    rng: Mutex<StdRng>,
}

impl<'a> Jittered<'a> {
    /// Jitter `split` by up to `max_shift` pixels, drawing the shifts from `seed`.
    pub fn new(split: &'a Split, max_shift: usize, seed: u64) -> Self {
        Jittered {
            split,
            max_shift,
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
        }
    }
}

impl LabeledData for Jittered<'_> {
    fn len(&self) -> usize {
        self.split.len()
    }

    fn batch(&self, indices: &[usize], device: &Device) -> (Tensor<4>, Tensor<1, Int>) {
        let (rows, cols) = (self.split.rows, self.split.cols);
        let shift = self.max_shift as i64;
        // A poisoned lock only means another batch panicked; the generator is still valid.
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        self.split.batch_with(indices, device, |image, out| {
            let dy = rng.random_range(-shift..=shift) as isize;
            let dx = rng.random_range(-shift..=shift) as isize;
            for r in 0..rows as isize {
                for c in 0..cols as isize {
                    let (sr, sc) = (r - dy, c - dx);
                    let inside =
                        (0..rows as isize).contains(&sr) && (0..cols as isize).contains(&sc);
                    let pixel = if inside {
                        image[sr as usize * cols + sc as usize]
                    } else {
                        0
                    };
                    out.push(normalize(pixel));
                }
            }
        })
    }

    fn same_inputs_every_epoch(&self) -> bool {
        self.max_shift == 0
    }
}

/// A dataset of train and test images.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The training split.
    pub train: Split,
    /// The test split.
    pub test: Split,
    /// Number of classes: one more than the training split's largest label (every test label
    /// is below it).
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
        // The classes are the training split's: a test label past them is a class no model
        // trained on this data can predict (and would size the output layer for classes it
        // never saw).
        let classes = train.labels.iter().copied().max().unwrap_or(0) as usize + 1;
        if let Some(&label) = test.labels.iter().find(|&&l| usize::from(l) >= classes) {
            return Err(Error::Inconsistent {
                reason: format!(
                    "the test split has label {label}, but the training split's labels stop at {}",
                    classes - 1
                ),
            });
        }
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
