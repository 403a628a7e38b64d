//! Loading datasets in IDX layout: the vendored MNIST with its checksums, and every way a
//! dataset directory can be broken, each a typed error.

#![allow(clippy::unwrap_used)] // a test fails loudly, which is what it is for

use std::io::Write;
use std::path::Path;

use ember_zoo::idx::{IdxArray, encode_idx};
use ember_zoo::{Dataset, Error, LabeledData};
use flate2::Compression;
use flate2::write::GzEncoder;

#[test]
fn vendored_mnist_loads_with_verified_checksums() {
    let data = Dataset::mnist().expect("vendored MNIST");
    assert!(data.checksums_verified);
    assert_eq!((data.train.len(), data.test.len()), (60_000, 10_000));
    assert_eq!(
        (data.train.rows, data.train.cols, data.classes),
        (28, 28, 10)
    );
    // The first training label of MNIST is a 5, the first test label a 7.
    assert_eq!((data.train.labels[0], data.test.labels[0]), (5, 7));
}

/// A small dataset of `n` 4x5 images in `dir`, gzipped or not.
fn write_dataset(dir: &Path, train: usize, train_labels: usize, gzip: bool) {
    let write = |name: &str, array: IdxArray| {
        let bytes = encode_idx(&array);
        if gzip {
            let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
            encoder.write_all(&bytes).unwrap();
            std::fs::write(dir.join(format!("{name}.gz")), encoder.finish().unwrap()).unwrap();
        } else {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    };
    let images = |n: usize| IdxArray {
        dims: vec![n, 4, 5],
        data: (0..n * 20).map(|i| i as u8).collect(),
    };
    let labels = |n: usize| IdxArray {
        dims: vec![n],
        data: (0..n).map(|i| (i % 3) as u8).collect(),
    };
    write("train-images-idx3-ubyte", images(train));
    write("train-labels-idx1-ubyte", labels(train_labels));
    write("t10k-images-idx3-ubyte", images(2));
    write("t10k-labels-idx1-ubyte", labels(2));
}

#[test]
fn any_idx_directory_loads_gzipped_or_not() {
    for gzip in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        write_dataset(dir.path(), 6, 6, gzip);
        let data = Dataset::load_idx_dir(dir.path()).unwrap();
        assert!(!data.checksums_verified);
        assert_eq!(
            (data.train.len(), data.train.rows, data.train.cols),
            (6, 4, 5)
        );
        assert_eq!(data.classes, 3, "class count comes from the labels");
        assert_eq!(&data.train.pixels[..3], &[0, 1, 2]);
    }
}

#[test]
fn images_and_labels_of_different_counts() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), 6, 5, false);
    assert!(matches!(
        Dataset::load_idx_dir(dir.path()),
        Err(Error::CountMismatch {
            split: "train",
            images: 6,
            labels: 5
        })
    ));
}

#[test]
fn missing_file() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), 6, 6, false);
    std::fs::remove_file(dir.path().join("t10k-labels-idx1-ubyte")).unwrap();
    let err = Dataset::load_idx_dir(dir.path()).unwrap_err();
    assert!(matches!(err, Error::MissingFile { ref stem, .. } if stem == "t10k-labels-idx1-ubyte"));
}

#[test]
fn truncated_file() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), 6, 6, false);
    let path = dir.path().join("train-images-idx3-ubyte");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 7]).unwrap();
    assert!(matches!(
        Dataset::load_idx_dir(dir.path()),
        Err(Error::Truncated {
            expected: 120,
            got: 113,
            ..
        })
    ));
}

#[test]
fn corrupt_gzip_stream() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), 6, 6, true);
    let path = dir.path().join("train-images-idx3-ubyte.gz");
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes.truncate(middle);
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(
        Dataset::load_idx_dir(dir.path()),
        Err(Error::Gzip { .. })
    ));
}

#[test]
fn not_an_idx_file() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), 6, 6, false);
    std::fs::write(dir.path().join("train-labels-idx1-ubyte"), b"hello, world").unwrap();
    assert!(matches!(
        Dataset::load_idx_dir(dir.path()),
        Err(Error::BadHeader { .. })
    ));
}

#[test]
fn checksum_mismatch_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let source = ember_zoo::data::vendored_mnist_dir();
    for entry in std::fs::read_dir(&source).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    // Flip one byte of the smallest file: the gzip stream may still decode, the checksum not.
    let path = dir.path().join("t10k-labels-idx1-ubyte.gz");
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let err = Dataset::load_idx_dir(dir.path()).unwrap_err();
    assert!(
        matches!(err, Error::ChecksumMismatch { ref path, .. } if path.ends_with("t10k-labels-idx1-ubyte.gz"))
    );

    std::fs::write(dir.path().join("SHA256SUMS"), "not a checksum line\n").unwrap();
    assert!(matches!(
        Dataset::load_idx_dir(dir.path()),
        Err(Error::BadChecksumList { line: 1, .. })
    ));
}

#[test]
fn train_and_test_of_different_image_sizes() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), 6, 6, false);
    let odd = IdxArray {
        dims: vec![2, 5, 4],
        data: vec![0; 40],
    };
    std::fs::write(dir.path().join("t10k-images-idx3-ubyte"), encode_idx(&odd)).unwrap();
    assert!(matches!(
        Dataset::load_idx_dir(dir.path()),
        Err(Error::Inconsistent { .. })
    ));
}

/// A test label the training split never has (a class no model trained on it can predict) is
/// an error naming the label, not a model sized for classes it never saw.
#[test]
fn test_labels_past_the_training_classes() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), 6, 6, false);
    let labels = IdxArray {
        dims: vec![2],
        data: vec![1, 200],
    };
    std::fs::write(
        dir.path().join("t10k-labels-idx1-ubyte"),
        encode_idx(&labels),
    )
    .unwrap();
    let err = Dataset::load_idx_dir(dir.path()).unwrap_err();
    assert!(
        matches!(&err, Error::Inconsistent { reason } if reason.contains("label 200") && reason.contains("stop at 2")),
        "{err}"
    );
}

/// The pixel values an image of `split` becomes in a batch (MNIST's normalization).
fn normalized(split: &ember_zoo::Split, i: usize) -> Vec<f32> {
    let n = split.rows * split.cols;
    split.pixels[i * n..(i + 1) * n]
        .iter()
        .map(|&p| (p as f32 / 255.0 - ember_zoo::data::MNIST_MEAN) / ember_zoo::data::MNIST_STD)
        .collect()
}

/// `image` (row-major, `rows x cols`) moved `dy` rows down and `dx` columns right, the border
/// it leaves filled with `background`: the scalar reference for the jitter.
fn shifted(image: &[f32], rows: usize, cols: usize, dy: i64, dx: i64, background: f32) -> Vec<f32> {
    let mut out = vec![background; rows * cols];
    for r in 0..rows as i64 {
        for c in 0..cols as i64 {
            let (sr, sc) = (r - dy, c - dx);
            if (0..rows as i64).contains(&sr) && (0..cols as i64).contains(&sc) {
                out[(r * cols as i64 + c) as usize] = image[(sr * cols as i64 + sc) as usize];
            }
        }
    }
    out
}

#[test]
fn jitter_moves_every_image_by_at_most_its_shift_and_repeats_with_its_seed() {
    use ember_zoo::Jittered;
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), 40, 40, false);
    let data = Dataset::load_idx_dir(dir.path()).unwrap();
    let split = &data.train;
    let device = burn::tensor::Device::flex();
    let indices: Vec<usize> = (0..split.len()).collect();
    let values = |jittered: &Jittered, indices: &[usize]| {
        let (images, labels) = jittered.batch(indices, &device);
        let labels = labels.into_data().iter::<i64>().collect::<Vec<_>>();
        (images.into_data().try_to_vec::<f32>().unwrap(), labels)
    };
    let background = (0.0 - ember_zoo::data::MNIST_MEAN) / ember_zoo::data::MNIST_STD;
    let (rows, cols) = (split.rows, split.cols);

    // No shift: the plain batch.
    let (plain, plain_labels) = split.batch(&indices, &device);
    let (same, same_labels) = values(&Jittered::new(split, 0, 7), &indices);
    assert_eq!(same, plain.into_data().try_to_vec::<f32>().unwrap());
    assert_eq!(
        same_labels,
        plain_labels.into_data().iter::<i64>().collect::<Vec<_>>()
    );

    // Up to one pixel: each image is one of the nine shifted copies of itself, the labels stay,
    // and over 40 images more than one shift occurs.
    let (jittered, labels) = values(&Jittered::new(split, 1, 7), &indices);
    assert_eq!(labels, same_labels);
    let mut shifts_seen = std::collections::BTreeSet::new();
    for (i, image) in jittered.chunks(rows * cols).enumerate() {
        let original = normalized(split, i);
        let shift = (-1..=1)
            .flat_map(|dy| (-1..=1).map(move |dx| (dy, dx)))
            .find(|&(dy, dx)| shifted(&original, rows, cols, dy, dx, background) == image);
        let shift = shift.unwrap_or_else(|| panic!("image {i} is not a shift of at most 1 pixel"));
        shifts_seen.insert(shift);
    }
    assert!(shifts_seen.len() > 1, "{shifts_seen:?}");

    // The same seed draws the same shifts; another seed draws others.
    assert_eq!(values(&Jittered::new(split, 1, 7), &indices).0, jittered);
    assert_ne!(values(&Jittered::new(split, 1, 8), &indices).0, jittered);
    // Shifted data is not the same from one epoch to the next, so nothing caches over it.
    assert!(!Jittered::new(split, 1, 7).same_inputs_every_epoch());
    assert!(Jittered::new(split, 0, 7).same_inputs_every_epoch());
    assert!(split.same_inputs_every_epoch());
}
