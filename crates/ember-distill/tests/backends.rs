//! The losses give the same values on every enabled backend (flex, ndarray, and wgpu with
//! `--features wgpu`).

#![allow(clippy::unwrap_used)] // a test fails loudly, which is what it is for

use burn::tensor::{Device, Int, Tensor, TensorData};
use ember_distill::loss::{SoftTargetConfig, rkd_angle_loss, rkd_distance_loss};

/// f32 reductions on different backends differ by rounding only.
const TOLERANCE: f32 = 1e-4;

fn values(device: &Device) -> (Tensor<2>, Tensor<2>, Tensor<1, Int>) {
    let student: Vec<f32> = (0..24).map(|i| ((i * 7 % 11) as f32 - 5.0) / 3.0).collect();
    let teacher: Vec<f32> = (0..24).map(|i| ((i * 5 % 13) as f32 - 6.0) / 2.0).collect();
    (
        Tensor::from_data(TensorData::new(student, [4, 6]), device),
        Tensor::from_data(TensorData::new(teacher, [4, 6]), device),
        Tensor::from_data(TensorData::from([0i64, 3, 5, 1]), device),
    )
}

fn losses(device: &Device) -> [f32; 3] {
    let (student, teacher, labels) = values(device);
    let soft = SoftTargetConfig {
        temperature: 4.0,
        alpha: 0.7,
    }
    .init()
    .unwrap();
    [
        soft.forward(student.clone(), teacher.clone(), labels)
            .unwrap()
            .total
            .into_scalar::<f32>(),
        rkd_distance_loss(student.clone(), teacher.clone())
            .unwrap()
            .into_scalar::<f32>(),
        rkd_angle_loss(student, teacher)
            .unwrap()
            .into_scalar::<f32>(),
    ]
}

ember_tensor::backend_tests! {
    fn losses_match_flex(device) {
        let (expected, got) = (losses(&Device::flex()), losses(&device));
        for (e, g) in expected.iter().zip(&got) {
            assert!((e - g).abs() <= TOLERANCE * e.abs().max(1.0), "{expected:?} vs {got:?}");
        }
    }
}
