//! Feature-based distillation (FitNets, Romero et al. 2015): an intermediate activation of the
//! student, mapped by a learned adapter to the teacher's width, regresses onto the teacher's
//! activation at the matching point.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::same_shape;
use crate::{Error, Result};

/// The adapter (the "regressor" of FitNets) from the student's feature width to the teacher's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HintAdapterConfig {
    /// Width (features, or channels of a feature map) of the student's hint layer.
    pub student_width: usize,
    /// Width of the teacher's guided layer.
    pub teacher_width: usize,
}

impl HintAdapterConfig {
    /// Build the adapter on `device`; train it together with the student.
    pub fn init(&self, device: &Device) -> Result<HintAdapter> {
        for (field, value) in [
            ("student_width", self.student_width),
            ("teacher_width", self.teacher_width),
        ] {
            if value == 0 {
                return Err(Error::InvalidConfig {
                    field,
                    value: "0".into(),
                    reason: "must be at least 1",
                });
            }
        }
        Ok(HintAdapter {
            projection: LinearConfig::new(self.student_width, self.teacher_width).init(device),
        })
    }
}

/// A linear map over the feature (or channel) axis: on feature maps it is a 1x1 convolution.
#[derive(Module, Debug)]
pub struct HintAdapter {
    /// `[student_width, teacher_width]` weight and bias.
    pub projection: Linear,
}

impl HintAdapter {
    /// Map features `[batch, width]` or feature maps `[batch, width, ...]` (any rank >= 2) to
    /// the teacher's width along axis 1.
    pub fn forward<const D: usize>(&self, features: Tensor<D>) -> Tensor<D> {
        // Move the width axis last, project, move it back.
        let moved = features.swap_dims(1, D - 1);
        self.projection.forward(moved).swap_dims(1, D - 1)
    }
}

/// Mean squared error between the adapted student features and the teacher's, averaged over
/// every element.
pub fn hint_loss<const D: usize>(
    adapter: &HintAdapter,
    student_features: Tensor<D>,
    teacher_features: Tensor<D>,
) -> Result<Tensor<1>> {
    let adapted = adapter.forward(student_features);
    same_shape(
        "hint features (after the adapter)",
        &adapted,
        &teacher_features,
    )?;
    Ok((adapted - teacher_features.detach()).square().mean())
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Param;
    use burn::tensor::TensorData;

    fn adapter(weight: [[f32; 3]; 2], bias: [f32; 3], device: &Device) -> HintAdapter {
        let mut adapter = HintAdapterConfig {
            student_width: 2,
            teacher_width: 3,
        }
        .init(device)
        .unwrap();
        adapter.projection.weight =
            Param::from_tensor(Tensor::from_data(TensorData::from(weight), device));
        adapter.projection.bias = Some(Param::from_tensor(Tensor::from_data(
            TensorData::from(bias),
            device,
        )));
        adapter
    }

    #[test]
    fn hand_computed_hint_loss() {
        let device = Device::flex();
        let a = adapter(
            [[1.0, 0.0, 2.0], [0.0, 1.0, -1.0]],
            [0.0, 0.5, 0.0],
            &device,
        );
        // Student [1, 2] -> [1, 2.5, 0]; teacher [1, 2, 1]: squared errors 0, 0.25, 1.
        let student = Tensor::<2>::from_floats([[1.0, 2.0]], &device);
        let teacher = Tensor::<2>::from_floats([[1.0, 2.0, 1.0]], &device);
        let loss = hint_loss(&a, student, teacher)
            .unwrap()
            .into_scalar::<f32>();
        assert!((loss - 1.25 / 3.0).abs() < 1e-6, "{loss}");
    }

    #[test]
    fn on_feature_maps_the_adapter_is_a_1x1_convolution() {
        let device = Device::flex();
        let a = adapter(
            [[1.0, 0.0, 2.0], [0.0, 1.0, -1.0]],
            [0.0, 0.5, 0.0],
            &device,
        );
        // One image, 2 channels, 1x2 pixels: each pixel maps like a feature vector.
        let maps = Tensor::<4>::from_floats([[[[1.0, 3.0]], [[2.0, -1.0]]]], &device);
        let out = a.forward(maps).into_data().try_to_vec::<f32>().unwrap();
        // Pixel 0: [1, 2] -> [1, 2.5, 0]; pixel 1: [3, -1] -> [3, -0.5, 7]; layout [c][w].
        assert_eq!(out, vec![1.0, 3.0, 2.5, -0.5, 0.0, 7.0]);
    }

    #[test]
    fn mismatched_widths_are_typed_errors() {
        let device = Device::flex();
        let a = adapter([[1.0, 0.0, 2.0], [0.0, 1.0, -1.0]], [0.0; 3], &device);
        let err = hint_loss(
            &a,
            Tensor::<2>::zeros([4, 2], &device),
            Tensor::zeros([4, 5], &device),
        )
        .unwrap_err();
        assert!(matches!(err, Error::ShapeMismatch { .. }));
        let zero = HintAdapterConfig {
            student_width: 0,
            teacher_width: 3,
        };
        assert!(matches!(
            zero.init(&device),
            Err(Error::InvalidConfig {
                field: "student_width",
                ..
            })
        ));
    }
}
