//! Quantized layers on integer kernels: after a pass has quantized a layer's weight and input,
//! the drop-in [`crate::nn::Linear`] and [`crate::nn::Conv2d`] hold their weight packed for
//! ember-kernels' `u8` x `i8` GEMM and run on it whenever their input is on a host device
//! (flex, ndarray) without autodiff: the input is quantized exactly as fake quantization does,
//! multiplied in integers, and dequantized with the bias in the kernel's epilogue.
//!
//! Elsewhere (wgpu, training, a half-precision model, a batch that dynamic quantization leaves
//! in float) the layer keeps its float path with dequantized weights, which computes the same
//! function up to float rounding. A layer that trains after conversion stops using its packed
//! weight for good (`stale`): the packed integers would no longer be its weight.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use burn::tensor::{DType, Tensor};
use ember_kernels::int8::{
    self, Activations, ConvShape, Epilogue, Int8Kernel, PackedWeights, WeightLayout,
};
use ember_observe::Range;

use crate::Granularity;
use crate::nn::{InputQuant, Path};
use crate::qtensor::QTensor;

/// A layer's weight packed for the integer kernels, its bias on the host, and the kernel.
#[derive(Debug, Clone)]
pub struct IntegerWeights {
    packed: Arc<PackedWeights>,
    bias: Option<Arc<Vec<f32>>>,
    kernel: Int8Kernel,
    /// Set once the layer has trained since it was packed; shared by every clone of the layer
    /// (burn clones skipped fields through `fork` / `valid`), so a trained copy never runs the
    /// weight it had before.
    stale: Arc<AtomicBool>,
}

impl IntegerWeights {
    /// The integer form of `weight` (`[k, n]` in `layout`, outputs along `output_axis`), or
    /// `None` where the kernels cannot run it: per-group scales or per-channel scales along
    /// another axis.
    pub(crate) fn new(
        weight: &QTensor,
        layout: WeightLayout,
        output_axis: usize,
        (k, n): (usize, usize),
        bias: Option<Vec<f32>>,
        kernel: Int8Kernel,
    ) -> Option<Self> {
        let scheme = weight.scheme();
        match scheme.granularity {
            Granularity::PerTensor => {}
            Granularity::PerChannel { axis } if axis == output_axis => {}
            _ => return None,
        }
        // Every scheme of Ember has at most 8 bits: an unsigned 8-bit one is shifted into i8.
        let shift = if !scheme.qtype.signed() && scheme.qtype.bits() == 8 {
            128
        } else {
            0
        };
        let values: Vec<i8> = weight
            .values()
            .into_iter()
            .map(|q| i8::try_from(q - shift))
            .collect::<Result<_, _>>()
            .ok()?;
        let params = weight.params();
        let zero_points: Vec<i32> = params.zero_point.iter().map(|z| z - shift).collect();
        let packed = PackedWeights::new(&values, k, n, layout, &params.scale, &zero_points).ok()?;
        if bias.as_ref().is_some_and(|b| b.len() != n) {
            return None;
        }
        Some(Self {
            packed: Arc::new(packed),
            bias: bias.map(Arc::new),
            kernel,
            stale: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The kernel this layer runs on.
    pub fn kernel(&self) -> Int8Kernel {
        self.kernel
    }

    /// Bytes its packed weight holds.
    pub fn bytes(&self) -> usize {
        self.packed.bytes()
    }

    /// Mark the layer as trained since packing: it keeps its float path from now on.
    pub(crate) fn mark_trained(&self) {
        self.stale.store(true, Ordering::Relaxed);
    }

    /// Whether this input can run on the kernels: a plain host tensor of f32 whose last axis
    /// is the packed depth, in a layer that has not trained since.
    fn accepts<const D: usize>(&self, input: &Tensor<D>, depth: usize) -> bool {
        !self.stale.load(Ordering::Relaxed)
            && input.dtype() == DType::F32
            && depth == self.packed.depth()
            && ember_tensor::device::is_host(&input.device())
    }
}

/// An input quantized to `u8` for the kernels, with its scale and zero point.
struct QuantizedInput {
    values: Vec<u8>,
    /// Elements from one row to the next.
    stride: usize,
    scale: f32,
    zero_point: i32,
}

/// Quantize `x` as `quant` says, in `u8` (a signed scheme's integers shifted by 128): the same
/// integers fake quantization computes. `None` sends the input to the float path: where fake
/// quantization leaves it in float (a dynamic batch of zeros), where NaN or an infinity must
/// reach the output as it does there, or where the layer has no integer input.
fn quantize_input(quant: &InputQuant, x: &[f32]) -> Option<QuantizedInput> {
    let (min, max) = int8::finite_range(x)?;
    let (scheme, params) = match quant {
        InputQuant::Dynamic(scheme) => (
            *scheme,
            scheme.qparams(&[Range { min, max }], "input").ok()?,
        ),
        InputQuant::Static { scheme, params } => (*scheme, params.clone()),
        _ => return None,
    };
    let shift = if scheme.qtype.signed() { 128 } else { 0 };
    let (lo, hi) = scheme.bounds();
    let bounds = (
        u8::try_from(lo + shift).ok()?,
        u8::try_from(hi + shift).ok()?,
    );
    let scale = *params.scale.first()?;
    let zero_point = params.zero_point.first()? + shift;
    let mut values = Vec::with_capacity(x.len());
    int8::quantize_u8(x, scale, zero_point, bounds, &mut values);
    Some(QuantizedInput {
        values,
        stride: x.len(),
        scale,
        zero_point,
    })
}

/// `input · W + b` on the integer kernels, or the input back for the float path. The tensor is
/// taken by value so that flex hands its buffer over without a copy when nothing else holds
/// it; where it had to be read before the float path is chosen, it is rebuilt from its data.
pub(crate) fn linear<const D: usize>(
    weights: &IntegerWeights,
    quant: &InputQuant,
    input: Tensor<D>,
) -> Path<D> {
    let mut shape = input.dims();
    let depth = shape[D - 1];
    if !weights.accepts(&input, depth) {
        return Path::Float(input);
    }
    shape[D - 1] = weights.packed.width();
    Path::on_host(input, |x| {
        let q = QuantizedInput {
            stride: depth,
            ..quantize_input(quant, x)?
        };
        let rows = x.len() / depth.max(1);
        let mut out = vec![0.0f32; rows * weights.packed.width()];
        run(weights, &q, rows, &mut out)?;
        Some((out, shape))
    })
}

fn run(weights: &IntegerWeights, q: &QuantizedInput, rows: usize, out: &mut [f32]) -> Option<()> {
    let activations = Activations {
        values: &q.values,
        rows,
        stride: q.stride,
        scale: q.scale,
        zero_point: q.zero_point,
    };
    let epilogue = Epilogue {
        bias: weights.bias.as_deref().map(Vec::as_slice),
        relu: false,
    };
    int8::linear(weights.kernel, activations, &weights.packed, epilogue, out).ok()
}

/// A convolution (one group) of `shape`, its padding resolved for this input, on the integer
/// kernels: the input quantized once, then each image unfolded, multiplied and finished into
/// `[out, h, w]` by `int8::conv2d`.
pub(crate) fn conv2d(
    weights: &IntegerWeights,
    quant: &InputQuant,
    input: Tensor<4>,
    shape: &ConvShape,
) -> Path<4> {
    let batch = input.dims()[0];
    if !weights.accepts(&input, shape.depth()) {
        return Path::Float(input);
    }
    Path::on_host(input, |x| conv2d_on_host(weights, quant, x, batch, shape))
}

/// [`conv2d`] on the input's host values: the output and its shape, or `None` for the float
/// path.
fn conv2d_on_host(
    weights: &IntegerWeights,
    quant: &InputQuant,
    x: &[f32],
    batch: usize,
    shape: &ConvShape,
) -> Option<(Vec<f32>, [usize; 4])> {
    let [oh, ow] = shape.output().ok()?;
    let q = quantize_input(quant, x)?;
    let n = weights.packed.width();
    let mut out = vec![0.0f32; batch * n * oh * ow];
    let images = Activations {
        values: &q.values,
        rows: batch,
        stride: shape.channels * shape.height * shape.width,
        scale: q.scale,
        zero_point: q.zero_point,
    };
    let epilogue = Epilogue {
        bias: weights.bias.as_deref().map(Vec::as_slice),
        relu: false,
    };
    int8::conv2d(
        weights.kernel,
        images,
        shape,
        &weights.packed,
        epilogue,
        &mut out,
    )
    .ok()?;
    Some((out, [batch, n, oh, ow]))
}
