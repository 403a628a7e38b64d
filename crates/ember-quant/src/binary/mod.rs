//! Binary layers: weights and inputs binarized to ±1 with a scale, as XNOR-Net (Rastegari et
//! al. 2016) computes them, the weight's scale analytic (`mean |w|` per output, XNOR-Net) or
//! learned (XNOR-Net++, Bulat & Tzimiropoulos 2019), trained through a clipped straight-through
//! estimator, and run on ember-kernels' XNOR-popcount product once packed.
//!
//! [`BinaryConv2d`] does the same for convolutions, with one input scale per image (XNOR-Net's
//! `K` map averaged over the image; XNOR-Net++ folds it into the learned scale), the padding
//! binarized as the sign of 0.0, +1, on the float path and the kernel alike.
//!
//! `BinaryLinear::forward` computes `β_i · α_j · (sign(x_i) · sign(w_j)) + b_j` with
//! `β_i = mean |x_i|` per sample. `sign` maps values `>= 0` to +1 and the rest to -1 (zero has
//! no sign; burn's `sign` would give it 0, a third value). In training, its gradient passes
//! where `|v| <= 1` and stops elsewhere (the papers' clipped estimator). After [`BinaryLinear::pack`]
//! the layer holds its signs one bit each and, for a plain f32 input on a host device, runs on
//! the kernel: the same function up to float rounding of the sums.

mod save;

use std::sync::Arc;

use burn::module::{Module, Param};
use burn::nn::PaddingConfig2d;
use burn::tensor::module::conv2d;
use burn::tensor::ops::{ConvOptions, PadMode};
use burn::tensor::{DType, Tensor};
use ember_kernels::int8::ConvShape;
use ember_kernels::{BinaryKernel, PackedSigns, binary_conv2d, binary_linear};
use serde::{Deserialize, Serialize};

use crate::nn::{Conv2d, Linear, Path};
use crate::{Error, Result};

use crate::qtensor::check_finite;
pub use save::{BINARY_FORMAT, load_binary, save_binary};

/// Where a binary weight's scale comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BinaryScale {
    /// `mean |w|` over each output's weights, recomputed in every forward pass (XNOR-Net).
    Analytic,
    /// A parameter per output, initialized to `mean |w|` and trained (XNOR-Net++).
    Learned,
}

/// The packed form a binary layer runs `input` on: only a plain f32 input on a host device.
fn on_host_packed<'a, const D: usize>(
    packed: Option<&'a PackedBinary>,
    input: &Tensor<D>,
) -> Option<&'a PackedBinary> {
    packed.filter(|_| input.dtype() == DType::F32 && ember_tensor::device::is_host(&input.device()))
}

impl BinaryScale {
    /// The scale a layer uses, from its learned scale parameter if it has one.
    fn of(learned: Option<&Param<Tensor<1>>>) -> Self {
        match learned {
            Some(_) => Self::Learned,
            None => Self::Analytic,
        }
    }
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
    /// `rows x len` weight values (one row per output) packed as signs, with each output's
    /// scale and the bias read to the host; NaN or infinite weights or scales are an error.
    fn new(
        kernel: BinaryKernel,
        [rows, len]: [usize; 2],
        weights: Tensor<1>,
        alpha: Tensor<1>,
        bias: Option<&Param<Tensor<1>>>,
    ) -> Result<Arc<Self>> {
        let alpha = ember_tensor::stats::read_f32(alpha)?;
        check_finite(&alpha, "binary scale")?;
        let weights = ember_tensor::stats::read_f32(weights)?;
        check_finite(&weights, "binary weight")?;
        let signs = PackedSigns::from_values(rows, len, &weights)?;
        let bias = match bias {
            Some(b) => Some(ember_tensor::stats::read_f32(b.val())?),
            None => None,
        };
        Ok(Arc::new(Self {
            signs,
            alpha,
            bias,
            kernel,
        }))
    }

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
        BinaryScale::of(self.scale.as_ref())
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
    /// back.
    fn on_kernel(&self, input: Tensor<2>) -> Path<2> {
        let Some(packed) = on_host_packed(self.packed.as_deref(), &input) else {
            return Path::Float(input);
        };
        let [batch, _] = input.dims();
        Path::on_host(input, |x| {
            let out = binary_linear(
                packed.kernel,
                x,
                batch,
                &packed.signs,
                &packed.alpha,
                packed.bias.as_deref(),
            )
            .ok()?;
            Some((out, [batch, packed.alpha.len()]))
        })
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
        let alpha = self.alpha(&weight);
        // One row of signs per output: the transpose of burn's layout.
        let rows = weight.transpose().flatten::<1>(0, 1);
        self.packed = Some(PackedBinary::new(
            kernel,
            [outputs, inputs],
            rows,
            alpha.flatten::<1>(0, 1),
            self.bias.as_ref(),
        )?);
        Ok(())
    }

    /// The packed form, if [`BinaryLinear::pack`] made one.
    pub fn packed(&self) -> Option<&PackedBinary> {
        self.packed.as_deref()
    }
}

/// A 2-D convolution with binary weights and inputs. The weight is burn's `[out, in, kh, kw]`,
/// kept in float for training (the latent weights the signs come from); groups are 1.
#[derive(Module, Debug)]
pub struct BinaryConv2d {
    /// Latent weights, `[out, in, kh, kw]`.
    pub weight: Param<Tensor<4>>,
    /// `[out]`.
    pub bias: Option<Param<Tensor<1>>>,
    /// The learned scale per output channel ([`BinaryScale::Learned`]); `None` for the
    /// analytic one.
    pub scale: Option<Param<Tensor<1>>>,
    /// Stride.
    pub stride: [usize; 2],
    /// Dilation.
    pub dilation: [usize; 2],
    /// Padding: `Valid` or `Explicit`.
    #[module(skip)]
    pub padding: PaddingConfig2d,
    /// The signs packed for the kernel, with the scales, after [`BinaryConv2d::pack`].
    #[module(skip)]
    pub packed: Option<Arc<PackedBinary>>,
}

impl BinaryConv2d {
    /// The binary form of a float convolution, its weights as latent weights. A grouped
    /// convolution, or `Same` padding (whose amount depends on the input), is an
    /// [`Error::Scheme`].
    pub fn from_conv(layer: &Conv2d, scale: BinaryScale) -> Result<Self> {
        let refuse = |reason: &str| Error::Scheme {
            what: "binary convolution".into(),
            reason: reason.into(),
        };
        if layer.groups != 1 {
            return Err(refuse("grouped convolutions are not binarized"));
        }
        if matches!(layer.padding, PaddingConfig2d::Same) {
            return Err(refuse("`Same` padding: give it explicitly"));
        }
        let weight = layer.weight.val();
        let scale = match scale {
            BinaryScale::Analytic => None,
            BinaryScale::Learned => Some(Param::from_tensor(
                weight
                    .clone()
                    .abs()
                    .flatten::<2>(1, 3)
                    .mean_dim(1)
                    .squeeze_dim(1),
            )),
        };
        Ok(Self {
            weight: Param::from_tensor(weight),
            bias: layer.bias.as_ref().map(|b| Param::from_tensor(b.val())),
            scale,
            stride: layer.stride,
            dilation: layer.dilation,
            padding: layer.padding.clone(),
            packed: None,
        })
    }

    /// Which scale the layer uses.
    pub fn scale_kind(&self) -> BinaryScale {
        BinaryScale::of(self.scale.as_ref())
    }

    /// The weight's scale per output channel, `[out, 1, 1, 1]`.
    fn alpha(&self, weight: &Tensor<4>) -> Tensor<4> {
        match &self.scale {
            Some(scale) => scale.val().reshape([-1, 1, 1, 1]),
            None => weight
                .clone()
                .abs()
                .flatten::<2>(1, 3)
                .mean_dim(1)
                .reshape([-1, 1, 1, 1]),
        }
    }

    /// `(top, bottom)` and `(left, right)`.
    fn padding(&self) -> [(usize, usize); 2] {
        match self.padding {
            PaddingConfig2d::Explicit(top, left, bottom, right) => [(top, bottom), (left, right)],
            _ => [(0, 0), (0, 0)],
        }
    }

    /// `β · conv(sign(pad(x)), α · sign(W)) + b` for images `[batch, in, h, w]`, `β = mean |x|`
    /// per image.
    pub fn forward(&self, input: Tensor<4>) -> Tensor<4> {
        let input = match self.on_kernel(input) {
            Path::Kernel(out) => return out,
            Path::Float(input) => input,
        };
        let weight = self.weight.val();
        let [batch, ..] = input.dims();
        let beta = input
            .clone()
            .abs()
            .flatten::<2>(1, 3)
            .mean_dim(1)
            .reshape([batch, 1, 1, 1]);
        // Padded after binarizing, with the sign of 0.0, as the kernel pads.
        let x = sign_ste(input).pad(self.padding(), PadMode::Constant(1.0)) * beta;
        let w = sign_ste(weight.clone()) * self.alpha(&weight);
        let options = ConvOptions::new(self.stride, [0, 0], self.dilation, 1);
        conv2d(x, w, self.bias.as_ref().map(Param::val), options)
    }

    /// The output from the packed signs for a plain f32 input on a host device, else the input
    /// back.
    fn on_kernel(&self, input: Tensor<4>) -> Path<4> {
        let Some(packed) = on_host_packed(self.packed.as_deref(), &input) else {
            return Path::Float(input);
        };
        let [batch, channels, height, width] = input.dims();
        let [_, _, kh, kw] = self.weight.dims();
        let shape = ConvShape {
            channels,
            height,
            width,
            kernel: [kh, kw],
            stride: self.stride,
            dilation: self.dilation,
            padding: self.padding(),
        };
        let Ok([oh, ow]) = shape.output() else {
            return Path::Float(input);
        };
        Path::on_host(input, |x| {
            let out = binary_conv2d(
                packed.kernel,
                x,
                batch,
                &shape,
                &packed.signs,
                &packed.alpha,
                packed.bias.as_deref(),
            )
            .ok()?;
            Some((out, [batch, packed.alpha.len(), oh, ow]))
        })
    }

    /// Pack the weight's signs for the XNOR-popcount kernel (`kernel`), with the scales as they
    /// are now; `None` drops the packed form. As [`BinaryLinear::pack`]: a layer that trains
    /// afterwards must be packed again; NaN or infinite weights or scales are an error.
    pub fn pack(&mut self, kernel: Option<BinaryKernel>) -> Result<()> {
        self.packed = None;
        let Some(kernel) = kernel else {
            return Ok(());
        };
        let weight = self.weight.val();
        let [outputs, channels, kh, kw] = weight.dims();
        let alpha = self.alpha(&weight);
        // burn's [out, in, kh, kw] is already one row of `in · kh · kw` per output.
        self.packed = Some(PackedBinary::new(
            kernel,
            [outputs, channels * kh * kw],
            weight.flatten::<1>(0, 3),
            alpha.flatten::<1>(0, 3),
            self.bias.as_ref(),
        )?);
        Ok(())
    }

    /// The packed form, if [`BinaryConv2d::pack`] made one.
    pub fn packed(&self) -> Option<&PackedBinary> {
        self.packed.as_deref()
    }
}
