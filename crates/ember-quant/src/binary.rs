//! Binary layers: weights and inputs binarized to ±1 with a scale, as XNOR-Net (Rastegari et
//! al. 2016) computes them, the weight's scale analytic (`mean |w|` per output, XNOR-Net) or
//! learned (XNOR-Net++, Bulat & Tzimiropoulos 2019), trained through a clipped straight-through
//! estimator, and run on ember-kernels' XNOR-popcount product once packed.
//!
//! `BinaryLinear::forward` computes `β_i · α_j · (sign(x_i) · sign(w_j)) + b_j` with
//! `β_i = mean |x_i|` per sample. `sign` maps values `>= 0` to +1 and the rest to -1 (zero has
//! no sign; burn's `sign` would give it 0, a third value). In training, its gradient passes
//! where `|v| <= 1` and stops elsewhere (the papers' clipped estimator). After [`BinaryLinear::pack`]
//! the layer holds its signs one bit each and, for a plain f32 input on a host device, runs on
//! the kernel: the same function up to float rounding of the sums.

use std::sync::Arc;

use burn::module::{Module, Param};
use burn::tensor::{DType, Tensor, TensorData};
use ember_kernels::{BinaryKernel, PackedSigns, binary_linear};
use serde::{Deserialize, Serialize};

use crate::Result;
use crate::nn::{Linear, Path};
use crate::qtensor::check_finite;

/// Where a binary weight's scale comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BinaryScale {
    /// `mean |w|` over each output's weights, recomputed in every forward pass (XNOR-Net).
    Analytic,
    /// A parameter per output, initialized to `mean |w|` and trained (XNOR-Net++).
    Learned,
}

/// A fully connected layer with binary weights and inputs. The weight is burn's
/// `[d_input, d_output]`, kept in float for training (the latent weights the signs come from).
#[derive(Module, Debug)]
pub struct BinaryLinear {
    /// Latent weights, `[d_input, d_output]`.
    pub weight: Param<Tensor<2>>,
    /// `[d_output]`.
    pub bias: Option<Param<Tensor<1>>>,
    /// The learned scale per output ([`BinaryScale::Learned`]); `None` for the analytic one.
    pub scale: Option<Param<Tensor<1>>>,
    /// The signs packed for the kernel, with the scales, after [`BinaryLinear::pack`].
    #[module(skip)]
    pub packed: Option<Arc<PackedBinary>>,
}

/// A binary layer's weight signs, one bit each, its scales and bias on the host.
#[derive(Debug)]
pub struct PackedBinary {
    signs: PackedSigns,
    alpha: Vec<f32>,
    bias: Option<Vec<f32>>,
    kernel: BinaryKernel,
}

impl PackedBinary {
    /// Bytes of the packed signs and the scales: what the layer's weight costs on disk.
    pub fn bytes(&self) -> usize {
        self.signs.bytes() + 4 * self.alpha.len()
    }

    /// The kernel it runs on.
    pub fn kernel(&self) -> BinaryKernel {
        self.kernel
    }
}

/// `+1` where `x >= 0`, `-1` elsewhere, with the clipped straight-through gradient: the
/// gradient of `clamp(x, -1, 1)`.
pub fn sign_ste<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let sign = x.clone().greater_equal_elem(0.0).float() * 2.0 - 1.0;
    let clipped = x.clamp(-1.0, 1.0);
    clipped.clone() + (sign - clipped).detach()
}

impl BinaryLinear {
    /// The binary form of a float layer, its weights as latent weights.
    pub fn from_linear(layer: &Linear, scale: BinaryScale) -> Self {
        let weight = layer.weight.val();
        let scale = match scale {
            BinaryScale::Analytic => None,
            BinaryScale::Learned => Some(Param::from_tensor(
                weight.clone().abs().mean_dim(0).squeeze_dim(0),
            )),
        };
        Self {
            weight: Param::from_tensor(weight),
            bias: layer.bias.as_ref().map(|b| Param::from_tensor(b.val())),
            scale,
            packed: None,
        }
    }

    /// Which scale the layer uses.
    pub fn scale_kind(&self) -> BinaryScale {
        if self.scale.is_some() {
            BinaryScale::Learned
        } else {
            BinaryScale::Analytic
        }
    }

    /// The weight's scale per output, `[1, d_output]`.
    fn alpha(&self, weight: &Tensor<2>) -> Tensor<2> {
        match &self.scale {
            Some(scale) => scale.val().unsqueeze_dim(0),
            None => weight.clone().abs().mean_dim(0),
        }
    }

    /// `β · sign(x) · α · sign(W) + b` for a batch `[batch, d_input]`.
    pub fn forward(&self, input: Tensor<2>) -> Tensor<2> {
        let input = match self.on_kernel(input) {
            Path::Kernel(out) => return out,
            Path::Float(input) => input,
        };
        let weight = self.weight.val();
        let beta = input.clone().abs().mean_dim(1);
        let x = sign_ste(input) * beta;
        let w = sign_ste(weight.clone()) * self.alpha(&weight);
        let out = x.matmul(w);
        match &self.bias {
            Some(bias) => out + bias.val().unsqueeze_dim(0),
            None => out,
        }
    }

    /// The output from the packed signs for a plain f32 input on a host device, else the input
    /// back. Taken by value, so that flex hands its buffer over without a copy.
    fn on_kernel(&self, input: Tensor<2>) -> Path<2> {
        let Some(packed) = &self.packed else {
            return Path::Float(input);
        };
        let device = input.device();
        if !ember_tensor::device::is_host(&device) || input.dtype() != DType::F32 {
            return Path::Float(input);
        }
        let [batch, _] = input.dims();
        let data = input.into_data();
        let out = data.as_slice::<f32>().ok().and_then(|x| {
            binary_linear(
                packed.kernel,
                x,
                batch,
                &packed.signs,
                &packed.alpha,
                packed.bias.as_deref(),
            )
            .ok()
        });
        match out {
            Some(out) => {
                let n = packed.alpha.len();
                Path::Kernel(Tensor::from_data(TensorData::new(out, [batch, n]), &device))
            }
            None => Path::Float(Tensor::from_data(data, &device)),
        }
    }

    /// Pack the weight's signs for the XNOR-popcount kernel (`kernel`), with the scales as they
    /// are now; `None` drops the packed form. A layer that trains afterwards must be packed
    /// again: the packed signs are those of the weights at this call. NaN or infinite weights
    /// or scales are an error.
    pub fn pack(&mut self, kernel: Option<BinaryKernel>) -> Result<()> {
        self.packed = None;
        let Some(kernel) = kernel else {
            return Ok(());
        };
        let weight = self.weight.val();
        let [inputs, outputs] = weight.dims();
        let alpha = ember_tensor::stats::read_f32(self.alpha(&weight))?;
        check_finite(&alpha, "binary scale")?;
        // One row of signs per output: the transpose of burn's layout.
        let rows = ember_tensor::stats::read_f32(weight.transpose())?;
        check_finite(&rows, "binary weight")?;
        let signs = PackedSigns::from_values(outputs, inputs, &rows)?;
        let bias = match &self.bias {
            Some(b) => Some(ember_tensor::stats::read_f32(b.val())?),
            None => None,
        };
        self.packed = Some(Arc::new(PackedBinary {
            signs,
            alpha,
            bias,
            kernel,
        }));
        Ok(())
    }

    /// The packed form, if [`BinaryLinear::pack`] made one.
    pub fn packed(&self) -> Option<&PackedBinary> {
        self.packed.as_deref()
    }
}
