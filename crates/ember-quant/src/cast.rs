//! Half-precision models: every float parameter cast to fp16 or bf16.

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{DType, Device, Tensor};

pub use ember_tensor::device::FloatType;

use crate::{Error, Result};

/// Cast every float parameter of `model` to `to`. A device that cannot hold the dtype
/// (ndarray has no f16 or bf16) is a typed error, not the backend's panic. Layers from
/// [`crate::nn`] cast their float inputs to match; other layers need inputs of the same dtype.
///
/// ```
/// use burn::nn::LinearConfig;
/// use burn::tensor::{DType, Device};
/// use ember_quant::{FloatType, cast};
///
/// let device = Device::flex();
/// let layer = cast(LinearConfig::new(8, 4).init(&device), FloatType::BF16, &device)?;
/// assert_eq!(layer.weight.val().dtype(), DType::BF16);
/// # Ok::<(), ember_quant::Error>(())
/// ```
pub fn cast<M: Module>(model: M, to: FloatType, device: &Device) -> Result<M> {
    let dtype = to.dtype();
    if !ember_tensor::device::supports_dtype(device, dtype) {
        return Err(Error::UnsupportedDType {
            device: format!("{device:?}"),
            dtype,
        });
    }
    Ok(model.map(&mut Cast { dtype }))
}

struct Cast {
    dtype: DType,
}

impl ModuleMapper for Cast {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        param.map(|t| t.cast(self.dtype))
    }
}
