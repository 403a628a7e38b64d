//! Distillation losses, each a function of student and teacher outputs (tensors on any
//! device). Teacher inputs are treated as constants: gradients flow into the student only.

mod feature;
mod relation;
mod response;

pub use feature::{HintAdapter, HintAdapterConfig, hint_loss};
pub use relation::{rkd_angle_loss, rkd_distance_loss};
pub use response::{SoftTargetConfig, SoftTargetLoss, SoftTargetParts, kl_divergence};

use burn::tensor::Tensor;

use crate::{Error, Result};

fn same_shape<const D: usize>(
    what: &'static str,
    student: &Tensor<D>,
    teacher: &Tensor<D>,
) -> Result<()> {
    if student.dims() != teacher.dims() {
        return Err(Error::ShapeMismatch {
            what,
            student: student.dims().to_vec(),
            teacher: teacher.dims().to_vec(),
        });
    }
    Ok(())
}

/// Smooth L1 (Huber with beta 1), averaged over every element: PyTorch's `smooth_l1_loss`.
fn smooth_l1<const D: usize>(input: Tensor<D>, target: Tensor<D>) -> Tensor<1> {
    let diff = (input - target).abs();
    let small = diff.clone().lower_elem(1.0);
    let quadratic = diff.clone().square().mul_scalar(0.5);
    let linear = diff.sub_scalar(0.5);
    linear.mask_where(small, quadratic).mean()
}
