//! Helpers shared by the integration tests (each test file includes this module).

#![allow(dead_code)]

use burn::tensor::{Device, TensorData};
use ember_zoo::Split;

/// A synthetic split of `n` 28x28 images whose pixel values follow their label, so a model can
/// learn it; reproducible from `seed`.
pub fn synthetic_split(n: usize, seed: u64) -> Split {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as u32
    };
    let (rows, cols) = (28, 28);
    let mut pixels = Vec::with_capacity(n * rows * cols);
    let mut labels = Vec::with_capacity(n);
    for _ in 0..n {
        let label = (next() % 10) as u8;
        labels.push(label);
        for p in 0..rows * cols {
            // Each class lights up its own band of rows, plus noise.
            let band = p / cols / 3 == label as usize;
            let noise = (next() % 64) as u8;
            pixels.push(if band { 190 + noise } else { noise });
        }
    }
    Split {
        pixels,
        labels,
        rows,
        cols,
    }
}

/// Every parameter's value, in walk order, as host data.
pub fn weights<M: burn::module::Module>(model: &M) -> Vec<(String, TensorData)> {
    ember_tensor::param_values(model)
        .into_iter()
        .map(|p| (p.info.path, p.flat.into_data()))
        .collect()
}

/// Largest absolute difference between two tensors of the same shape.
pub fn max_abs_diff(a: &TensorData, b: &TensorData) -> f32 {
    let a = a
        .clone()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 data");
    let b = b
        .clone()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 data");
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The reference backend of the parity tests.
pub fn flex_device() -> Device {
    Device::flex()
}
