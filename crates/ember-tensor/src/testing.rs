//! One test body, run on every backend the calling crate enables.
//!
//! ```ignore
//! ember_tensor::backend_tests! {
//!     fn forward_is_finite(device) {
//!         let x = burn::tensor::Tensor::<1>::ones([3], &device);
//!         assert_eq!(x.sum().into_scalar(), 3.0);
//!     }
//! }
//! ```
//! expands to a module `forward_is_finite` with the tests `flex`, `ndarray` and `wgpu`, each
//! compiled only where the calling crate has the cargo feature of that name, so
//! `cargo test -- forward_is_finite` runs the body on each backend and a failure names the
//! backend.

/// See the [module docs](crate::testing).
#[macro_export]
macro_rules! backend_tests {
    ($( $(#[$meta:meta])* fn $name:ident($device:ident) $body:block )*) => {
        $(
            $(#[$meta])*
            mod $name {
                #[allow(unused_imports)]
                use super::*;

                #[allow(dead_code)]
                fn body($device: burn::tensor::Device) $body

                #[cfg(feature = "flex")]
                #[test]
                fn flex() {
                    body($crate::BackendKind::Flex.device().expect("flex is compiled in"))
                }

                #[cfg(feature = "ndarray")]
                #[test]
                fn ndarray() {
                    body($crate::BackendKind::NdArray.device().expect("ndarray is compiled in"))
                }

                #[cfg(feature = "wgpu")]
                #[test]
                fn wgpu() {
                    body($crate::BackendKind::Wgpu.device().expect("wgpu is compiled in"))
                }
            }
        )*
    };
}

/// Hold this while seeding a device and drawing from it in a test. burn's RNG is one per device
/// and process, and the test harness runs tests on parallel threads: without the lock, another
/// test can draw from the stream between a seed and its use, and a seeded result changes.
pub fn seeded_lock() -> std::sync::MutexGuard<'static, ()> {
    static SEEDED: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SEEDED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A small learnable task for tests of training passes: points in [`Blobs::DIM`] dimensions,
/// uniform in `[-1, 1]`, whose class is the index of their largest coordinate among the first
/// `classes`. It is not linearly trivial for a tiny hidden layer, and it is generated from a
/// seed with no RNG shared with anything else.
pub struct Blobs {
    points: Vec<f32>,
    labels: Vec<i64>,
}

impl Blobs {
    /// Dimensions of a point.
    pub const DIM: usize = 8;

    /// `n` points of `classes` classes (at most [`Blobs::DIM`]).
    pub fn new(n: usize, classes: usize, seed: u64) -> Self {
        let mut state = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut uniform = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32) / ((1u64 << 24) as f32) * 2.0 - 1.0
        };
        let points: Vec<f32> = (0..n * Self::DIM).map(|_| uniform()).collect();
        let labels = points
            .chunks(Self::DIM)
            .map(|p| {
                (0..classes.min(Self::DIM))
                    .max_by(|&a, &b| p[a].total_cmp(&p[b]))
                    .unwrap_or(0) as i64
            })
            .collect();
        Self { points, labels }
    }
}

impl crate::LabeledData for Blobs {
    fn len(&self) -> usize {
        self.labels.len()
    }

    fn batch(
        &self,
        indices: &[usize],
        device: &burn::tensor::Device,
    ) -> (
        burn::tensor::Tensor<4>,
        burn::tensor::Tensor<1, burn::tensor::Int>,
    ) {
        use burn::tensor::{Tensor, TensorData};
        let dim = Self::DIM;
        (
            Tensor::from_data(
                TensorData::new(
                    rows_of(&self.points, dim, indices),
                    [indices.len(), 1, 1, dim],
                ),
                device,
            ),
            Tensor::from_data(
                TensorData::new(rows_of(&self.labels, 1, indices), [indices.len()]),
                device,
            ),
        )
    }
}

/// A small learnable text task for tests of passes over token ids: sequences of
/// [`Tokens::LEN`] token ids out of [`Tokens::VOCAB`], whose class is the one whose keywords
/// (the ids `t` with `t % classes == class`) occur most often, ties drawn again. A mean of
/// token embeddings and a linear layer can learn it; its inputs are `Int` tensors
/// `[batch, LEN]`, so nothing about it fits an image model.
pub struct Tokens {
    ids: Vec<i64>,
    labels: Vec<i64>,
}

impl Tokens {
    /// Distinct token ids.
    pub const VOCAB: usize = 24;
    /// Tokens per sequence.
    pub const LEN: usize = 9;

    /// `n` sequences of `classes` classes (2 to 6), drawn from `seed`.
    pub fn new(n: usize, classes: usize, seed: u64) -> Self {
        let classes = classes.clamp(2, 6);
        let mut state = seed.wrapping_add(0x2545_F491_4F6C_DD1D);
        let mut draw = move |below: usize| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) as usize) % below
        };
        let (mut ids, mut labels) = (Vec::with_capacity(n * Self::LEN), Vec::with_capacity(n));
        while labels.len() < n {
            let sequence: Vec<usize> = (0..Self::LEN).map(|_| draw(Self::VOCAB)).collect();
            let mut counts = vec![0; classes];
            sequence.iter().for_each(|t| counts[t % classes] += 1);
            let most = counts.iter().copied().max().unwrap_or(0);
            let mut winners = (0..classes).filter(|&c| counts[c] == most);
            if let (Some(class), None) = (winners.next(), winners.next()) {
                ids.extend(sequence.iter().map(|&t| t as i64));
                labels.push(class as i64);
            }
        }
        Self { ids, labels }
    }
}

impl crate::LabeledData<burn::tensor::Tensor<2, burn::tensor::Int>> for Tokens {
    fn len(&self) -> usize {
        self.labels.len()
    }

    fn batch(
        &self,
        indices: &[usize],
        device: &burn::tensor::Device,
    ) -> (
        burn::tensor::Tensor<2, burn::tensor::Int>,
        burn::tensor::Tensor<1, burn::tensor::Int>,
    ) {
        use burn::tensor::{Tensor, TensorData};
        let len = Self::LEN;
        (
            Tensor::from_data(
                TensorData::new(rows_of(&self.ids, len, indices), [indices.len(), len]),
                device,
            ),
            Tensor::from_data(
                TensorData::new(rows_of(&self.labels, 1, indices), [indices.len()]),
                device,
            ),
        )
    }
}

/// The rows `indices` of `flat`, a table of rows `width` long, one after another.
fn rows_of<T: Copy>(flat: &[T], width: usize, indices: &[usize]) -> Vec<T> {
    indices
        .iter()
        .flat_map(|&i| flat[i * width..(i + 1) * width].iter().copied())
        .collect()
}

/// Copy the safetensors file at `from` to `to` with its metadata entry `key` set to `value`:
/// the crafted files with which loaders' tests check that nothing in a header is trusted.
///
/// # Panics
/// If `from` is not a readable safetensors file or `to` cannot be written (a test's setup).
#[allow(clippy::unwrap_used, clippy::missing_panics_doc)]
pub fn rewrite_metadata(from: &std::path::Path, to: &std::path::Path, key: &str, value: &str) {
    let bytes = std::fs::read(from).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let mut metadata: std::collections::BTreeMap<String, String> = header
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    metadata.insert(key.to_string(), value.to_string());
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let out = crate::fs::serialize_safetensors(tensors.tensors(), metadata).unwrap();
    std::fs::write(to, out).unwrap();
}
