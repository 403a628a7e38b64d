//! Drop-in layers that can quantize their input: [`Linear`] and [`Conv2d`] have burn's fields
//! and record layout (trained burn weights load unchanged) plus an [`InputQuant`] that is not
//! part of the record.
//!
//! burn has no forward hooks, so activation quantization needs layers that do it themselves.
//! A model built from these layers lists them through [`QuantLayers`] (a few lines, as the
//! zoo's models show), and the passes of this crate set each layer's [`InputQuant`]: observe
//! during calibration, quantize per batch (dynamic) or with calibrated parameters (static).
//!
//! Quantizing each layer's *input* covers PyTorch's linear+ReLU and conv+ReLU fusion: the
//! ReLU's output is what the next layer quantizes, so no level is spent on negative values.

use std::sync::{Arc, Mutex};

use burn::module::{Module, Param};
use burn::nn::PaddingConfig2d;
use burn::tensor::module::{conv2d, linear};
use burn::tensor::ops::ConvOptions;
use burn::tensor::{DType, Device, Tensor};
use ember_observe::{Observer, ObserverKind};

use ember_kernels::int8::{ConvShape, Int8Kernel, WeightLayout};

use crate::Result;
use crate::fake::{
    DeviceRange, fake_quantize, fake_quantize_dynamic, fake_quantize_ste, fake_quantize_weight_ste,
};
use crate::integer::IntegerWeights;
use crate::lsq::LearnedSteps;
use crate::qtensor::{QTensor, check_finite};
use crate::scheme::{QParams, QScheme};
use crate::sparse::{SparseChoice, SparseKernel, SparseWeights};

/// Where a drop-in layer's forward pass went: a host kernel (integer, sparse, binary) computed
/// the output, or declined and gave the input back to the float path.
pub(crate) enum Path<const D: usize> {
    /// A host kernel computed the output.
    Kernel(Tensor<D>),
    /// The float path computes it from this input.
    Float(Tensor<D>),
}

impl<const D: usize> Path<D> {
    /// Run `kernel` on `input`'s f32 values on the host: its output values and shape, or the
    /// input back where it declines (`None`). The input is taken by value, so that flex hands
    /// its buffer over without a copy.
    pub(crate) fn on_host(
        input: Tensor<D>,
        kernel: impl FnOnce(&[f32]) -> Option<(Vec<f32>, [usize; D])>,
    ) -> Self {
        let device = input.device();
        let data = input.into_data();
        match data.as_slice::<f32>().ok().and_then(kernel) {
            Some((out, shape)) => Self::Kernel(Tensor::from_data(
                burn::tensor::TensorData::new(out, shape),
                &device,
            )),
            None => Self::Float(Tensor::from_data(data, &device)),
        }
    }
}

/// The calibration's state; a poisoned lock still holds it (a panicking forward pass leaves
/// the observer as it was).
pub(crate) fn lock(calibration: &Mutex<Calibration>) -> std::sync::MutexGuard<'_, Calibration> {
    calibration
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What a layer does to its input before its own computation.
#[derive(Debug, Clone, Default)]
pub enum InputQuant {
    /// Nothing: the input stays float.
    #[default]
    Float,
    /// Record the input's statistics (calibration); the input stays float.
    Observe(Arc<Mutex<Calibration>>),
    /// Quantize each batch with parameters from that batch's own min and max (dynamic
    /// quantization), per tensor.
    Dynamic(QScheme),
    /// Quantization-aware training: fake-quantize the input with the range observed so far,
    /// gradients passing straight through, and record its statistics while the layer trains
    /// (its weight tracked by autodiff). Evaluating the model (`valid()`) records nothing, so
    /// test data never moves the ranges [`crate::Qat::convert`] reads.
    Train {
        /// The scheme.
        scheme: QScheme,
        /// The observer, shared with [`crate::Qat`].
        calibration: Arc<Mutex<Calibration>>,
    },
    /// Quantize with calibrated per-tensor parameters (static quantization).
    Static {
        /// The scheme.
        scheme: QScheme,
        /// Its scale and zero point (one of each).
        params: QParams,
    },
}

/// An observer shared between a layer (which feeds it in `forward`) and the pass that reads it
/// after calibration. `forward` cannot return an error, so the first one is kept here.
///
/// A min/max or moving-average observer keeps its range on the device while batches go by
/// ([`DeviceRange`]: nothing read back per layer per batch, which would stall a GPU queue) and
/// hands it to `observer` at [`Calibration::finish`]. A histogram observer needs every value,
/// so it copies each batch to the host.
#[derive(Debug)]
pub struct Calibration {
    /// The observer.
    pub observer: Observer,
    /// The first error observing raised (NaN activations, say).
    pub error: Option<ember_observe::Error>,
    /// The range of a min/max observer, on the device until `finish`.
    device: Option<DeviceRange>,
    /// Training batches observed in quantization-aware training.
    trained_batches: usize,
    /// In quantization-aware training, stop observing after this many training batches
    /// (`Some(0)`: frozen now).
    freeze_after: Option<usize>,
}

impl Calibration {
    /// A calibration that feeds `observer`.
    pub fn new(observer: Observer) -> Self {
        let device = match observer.config().kind {
            ObserverKind::MinMax => Some(DeviceRange::new(None)),
            ObserverKind::MovingAverage { momentum } => Some(DeviceRange::new(Some(momentum))),
            ObserverKind::Histogram { .. } => None,
        };
        Self {
            observer,
            error: None,
            device,
            trained_batches: 0,
            freeze_after: None,
        }
    }

    /// Whether any batch was observed.
    pub fn has_seen(&self) -> bool {
        match &self.device {
            Some(device) => device.has_seen(),
            None => self.observer.batches() > 0,
        }
    }

    /// In quantization-aware training, stop observing after `batches` training batches in all
    /// (`0`: now); the range stays what it is then, as PyTorch's `disable_observer`.
    pub fn freeze_after(&mut self, batches: usize) {
        self.freeze_after = Some(batches);
    }

    /// Whether quantization-aware training still observes.
    pub fn is_frozen(&self) -> bool {
        self.freeze_after
            .is_some_and(|after| self.trained_batches >= after)
    }

    /// Count one training batch of quantization-aware training; whether to observe it (not
    /// once the observer is frozen).
    fn observes_training_batch(&mut self) -> bool {
        if self.is_frozen() {
            return false;
        }
        self.trained_batches += 1;
        true
    }

    /// Hand what the device saw to the observer (one read-back) and return the first error
    /// observing raised.
    pub fn finish(&mut self) -> Result<(), ember_observe::Error> {
        if let Some(device) = &self.device {
            let seen = device.read()?;
            if seen.non_finite > 0 {
                self.error.get_or_insert(ember_observe::Error::NonFinite {
                    what: self.observer.what().to_string(),
                    count: seen.non_finite,
                    first: seen.first_bad,
                });
            } else if let Some(range) = seen.range {
                // One observation of [min, max] leaves a fresh min/max or moving-average
                // observer at exactly that range; fresh, so that finishing twice changes
                // nothing.
                let mut observer = self.observer.config().build(self.observer.what())?;
                observer.observe(&[range.min, range.max], &[2])?;
                self.observer = observer;
            }
        }
        match self.error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl InputQuant {
    /// Apply to a layer's input; `training` says whether the layer is training (quantization-
    /// aware training records statistics only then).
    pub fn apply<const D: usize>(&self, input: Tensor<D>, training: bool) -> Tensor<D> {
        match self {
            Self::Float => input,
            Self::Observe(calibration) => {
                observe(calibration, &input);
                input
            }
            // On the device: no read-back per layer per batch. NaN or Inf stays visible in the
            // output; an all-zero input is exact as it is.
            Self::Dynamic(scheme) => fake_quantize_dynamic(input, scheme),
            Self::Train {
                scheme,
                calibration,
            } => {
                if training && lock(calibration).observes_training_batch() {
                    observe(calibration, &input);
                }
                let state = lock(calibration);
                if let Some(range) = &state.device {
                    return range.fake_quantize_ste(input, scheme);
                }
                let params = state
                    .observer
                    .ranges(scheme.levels())
                    .ok()
                    .and_then(|ranges| scheme.qparams(&ranges, "input").ok());
                match params {
                    Some(params) => fake_quantize_ste(input, scheme, &params),
                    // Nothing usable observed yet (an all-zero first batch): exact as it is.
                    None => input,
                }
            }
            Self::Static { scheme, params } => fake_quantize(input, scheme, params),
        }
    }

    /// A short name for reports: `float`, `observe`, `dynamic`, `train`, `static`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Float => "float",
            Self::Observe(_) => "observe",
            Self::Dynamic(_) => "dynamic",
            Self::Train { .. } => "train",
            Self::Static { .. } => "static",
        }
    }
}

fn observe<const D: usize>(calibration: &Mutex<Calibration>, input: &Tensor<D>) {
    let mut state = lock(calibration);
    if let Some(range) = &mut state.device {
        range.update(input);
        return;
    }
    let shape = input.shape().to_vec();
    let result = ember_tensor::stats::read_f32(input.clone())
        .map_err(ember_observe::Error::from)
        .and_then(|values| state.observer.observe(&values, &shape));
    if let Err(e) = result {
        state.error.get_or_insert(e);
    }
}

/// A layer whose input can be quantized.
pub trait QuantLayer {
    /// What it does to its input now.
    fn input_quant(&self) -> &InputQuant;
    /// Change what it does to its input.
    fn set_input_quant(&mut self, quant: InputQuant);
    /// Fake-quantize the weight in every forward pass (quantization-aware training), or stop.
    fn set_weight_quant(&mut self, scheme: Option<QScheme>);
    /// Train learned steps (LSQ) for the weight and the input, or stop (`None`).
    fn set_steps(&mut self, steps: Option<LearnedSteps>);
    /// The learned steps, during quantization-aware training with LSQ.
    fn steps(&self) -> Option<&LearnedSteps>;
    /// Run on the integer kernels with `weight` (this layer's quantized weight) packed for
    /// `kernel`, or stop (`None`). Returns whether the layer now has an integer form: not for
    /// a scheme the kernels cannot run (per-group scales, grouped convolutions).
    fn set_integer(&mut self, integer: Option<(&QTensor, Int8Kernel)>) -> bool;
    /// The layer's integer form, if it has one.
    fn integer(&self) -> Option<&IntegerWeights>;
    /// Run on the sparse kernel as `choice` says (see [`crate::sparse`]), from the weight as it
    /// is now. Returns its sparsity and what it decided for a layer that has a sparse path (a
    /// fully connected f32 layer whose input stays float), `None` for the others.
    fn set_sparse(&mut self, choice: SparseKernel) -> Result<Option<SparseChoice>>;
    /// The layer's sparse form, if it has one.
    fn sparse(&self) -> Option<&SparseWeights>;
}

/// The drop-ins keep their quantizers in the same two fields.
macro_rules! quant_layer {
    ($layer:ty) => {
        impl QuantLayer for $layer {
            fn input_quant(&self) -> &InputQuant {
                &self.input
            }
            fn set_input_quant(&mut self, quant: InputQuant) {
                self.input = quant;
            }
            fn set_weight_quant(&mut self, scheme: Option<QScheme>) {
                self.weight_quant = scheme;
            }
            fn set_steps(&mut self, steps: Option<LearnedSteps>) {
                self.steps = steps;
            }
            fn steps(&self) -> Option<&LearnedSteps> {
                self.steps.as_ref()
            }
            fn set_integer(&mut self, integer: Option<(&QTensor, Int8Kernel)>) -> bool {
                self.integer = integer.and_then(|(weight, kernel)| self.pack(weight, kernel));
                self.integer.is_some()
            }
            fn integer(&self) -> Option<&IntegerWeights> {
                self.integer.as_ref()
            }
            fn set_sparse(&mut self, choice: SparseKernel) -> Result<Option<SparseChoice>> {
                self.attach_sparse(choice)
            }
            fn sparse(&self) -> Option<&SparseWeights> {
                self.sparse_form()
            }
        }

        impl $layer {
            /// The weight and input the float path computes with: fake-quantized by learned
            /// steps, or as `weight_quant` and `input` say; the input first cast to the
            /// weight's dtype (a half-precision model takes float inputs).
            fn quantized_operands<const W: usize, const D: usize>(
                &self,
                weight: Tensor<W>,
                input: Tensor<D>,
                training: bool,
            ) -> (Tensor<W>, Tensor<D>) {
                if let Some(steps) = &self.steps {
                    let input = input.cast(weight.dtype());
                    return (steps.quantize_weight(weight), steps.quantize_input(input));
                }
                let weight = effective_weight(weight, self.weight_quant.as_ref());
                let input = self.input.apply(input.cast(weight.dtype()), training);
                (weight, input)
            }
        }
    };
}

/// A model that lists its quantizable layers, by the path of the module (`fc1`,
/// `layers.0`), whose weight is then `<path>.weight`.
pub trait QuantLayers {
    /// The quantizable layers, in forward order.
    fn quant_layers(&mut self) -> Vec<(String, &mut dyn QuantLayer)>;
}

/// A fully connected layer: burn's `Linear` with an input quantizer. The weight is
/// `[d_input, d_output]`, as in burn.
#[derive(Module, Debug)]
pub struct Linear {
    /// `[d_input, d_output]`.
    pub weight: Param<Tensor<2>>,
    /// `[d_output]`.
    pub bias: Option<Param<Tensor<1>>>,
    /// What happens to the input; not saved with the record.
    #[module(skip)]
    pub input: InputQuant,
    /// During quantization-aware training, the weight's fake-quantization scheme.
    #[module(skip)]
    pub weight_quant: Option<QScheme>,
    /// During quantization-aware training with learned steps (LSQ), the weight's and the
    /// input's steps: parameters the optimizer trains, in place of `weight_quant` and `input`.
    pub steps: Option<LearnedSteps>,
    /// After quantization, the weight packed for the integer kernels.
    #[module(skip)]
    pub integer: Option<IntegerWeights>,
    /// After pruning, the weight as compressed sparse rows for the sparse kernel.
    #[module(skip)]
    pub sparse: Option<SparseWeights>,
}

impl Linear {
    /// Build from burn's config.
    pub fn new(config: &burn::nn::LinearConfig, device: &Device) -> Self {
        config.init(device).into()
    }

    /// `input · weight + bias`, the input first cast to the weight's dtype (a half-precision
    /// model takes float inputs) and quantized as [`Linear::input`] says.
    /// On a host device, a layer with an integer form runs on the integer kernels instead
    /// (see [`crate::integer`]).
    pub fn forward<const D: usize>(&self, input: Tensor<D>) -> Tensor<D> {
        let mut input = input;
        // Before the weight is read: a masked weight's value costs a multiply.
        if let Some(sparse) = &self.sparse {
            match sparse.linear(input) {
                Path::Kernel(out) => return out,
                Path::Float(back) => input = back,
            }
        }
        let weight = self.weight.val();
        let training = weight.is_tracked();
        if let Some(integer) = runnable(self.integer.as_ref(), &weight, training) {
            match crate::integer::linear(integer, &self.input, input) {
                Path::Kernel(out) => return out,
                Path::Float(back) => input = back,
            }
        }
        let (weight, input) = self.quantized_operands(weight, input, training);
        linear(input, weight, self.bias.as_ref().map(Param::val))
    }

    /// Attach or drop the sparse form (see [`QuantLayer::set_sparse`]).
    fn attach_sparse(&mut self, choice: SparseKernel) -> Result<Option<SparseChoice>> {
        self.sparse = None;
        let weight = self.weight.val();
        let float_layer = matches!(self.input, InputQuant::Float)
            && self.weight_quant.is_none()
            && self.integer.is_none()
            && weight.dtype() == DType::F32;
        if !float_layer {
            return Ok(None);
        }
        let dims = weight.dims();
        let values = ember_tensor::stats::read_f32(weight.clone())?;
        check_finite(&values, "weight")?;
        let sparsity =
            values.iter().filter(|&&v| v == 0.0).count() as f64 / values.len().max(1) as f64;
        if choice == SparseKernel::Never {
            return Ok(Some(SparseChoice {
                sparsity,
                sparse: false,
                times: None,
            }));
        }
        let bias = self.bias.as_ref().map(Param::val);
        let host_bias = match &bias {
            Some(bias) => Some(ember_tensor::stats::read_f32(bias.clone())?),
            None => None,
        };
        let sparse = SparseWeights::new(&values, dims, host_bias)?;
        let decided = crate::sparse::choose(choice, sparsity, &sparse, &weight, bias.as_ref())?;
        if decided.sparse {
            self.sparse = Some(sparse);
        }
        Ok(Some(decided))
    }

    fn sparse_form(&self) -> Option<&SparseWeights> {
        self.sparse.as_ref()
    }

    /// The integer form of this layer with `weight` (burn's `[d_input, d_output]`).
    fn pack(&self, weight: &QTensor, kernel: Int8Kernel) -> Option<IntegerWeights> {
        if self.weight.val().dtype() != DType::F32 {
            return None;
        }
        let [k, n] = self.weight.dims();
        IntegerWeights::new(
            weight,
            WeightLayout::InputMajor,
            1,
            (k, n),
            host_bias(self.bias.as_ref())?,
            kernel,
        )
    }
}

/// The bias as host values (`Some(None)` for a layer without one), `None` if it cannot be read.
fn host_bias(bias: Option<&Param<Tensor<1>>>) -> Option<Option<Vec<f32>>> {
    match bias {
        None => Some(None),
        Some(bias) => ember_tensor::stats::read_f32(bias.val()).ok().map(Some),
    }
}

impl From<burn::nn::Linear> for Linear {
    fn from(layer: burn::nn::Linear) -> Self {
        Self {
            weight: layer.weight,
            bias: layer.bias,
            input: InputQuant::Float,
            weight_quant: None,
            steps: None,
            integer: None,
            sparse: None,
        }
    }
}

quant_layer!(Linear);

/// A 2-D convolution: burn's `Conv2d` with an input quantizer.
#[derive(Module, Debug)]
pub struct Conv2d {
    /// `[channels_out, channels_in / groups, kernel_h, kernel_w]`.
    pub weight: Param<Tensor<4>>,
    /// `[channels_out]`.
    pub bias: Option<Param<Tensor<1>>>,
    /// Stride.
    pub stride: [usize; 2],
    /// Kernel size.
    pub kernel_size: [usize; 2],
    /// Dilation.
    pub dilation: [usize; 2],
    /// Groups.
    pub groups: usize,
    /// Padding.
    #[module(skip)]
    pub padding: PaddingConfig2d,
    /// What happens to the input; not saved with the record.
    #[module(skip)]
    pub input: InputQuant,
    /// During quantization-aware training, the weight's fake-quantization scheme.
    #[module(skip)]
    pub weight_quant: Option<QScheme>,
    /// During quantization-aware training with learned steps (LSQ), the weight's and the
    /// input's steps: parameters the optimizer trains, in place of `weight_quant` and `input`.
    pub steps: Option<LearnedSteps>,
    /// After quantization, the weight packed for the integer kernels.
    #[module(skip)]
    pub integer: Option<IntegerWeights>,
}

impl Conv2d {
    /// Build from burn's config.
    pub fn new(config: &burn::nn::conv::Conv2dConfig, device: &Device) -> Self {
        config.init(device).into()
    }

    /// The convolution, the input first cast to the weight's dtype and quantized as
    /// [`Conv2d::input`] says.
    /// On a host device, a layer with an integer form runs on the integer kernels instead
    /// (see [`crate::integer`]).
    pub fn forward(&self, input: Tensor<4>) -> Tensor<4> {
        let weight = self.weight.val();
        let training = weight.is_tracked();
        let mut input = input;
        let [_, channels, height, width] = input.dims();
        let (rows, cols) = self.resolved_padding(height, width);
        if let Some(integer) = runnable(self.integer.as_ref(), &weight, training) {
            let shape = ConvShape {
                channels,
                height,
                width,
                kernel: self.kernel_size,
                stride: self.stride,
                dilation: self.dilation,
                padding: [rows, cols],
            };
            match crate::integer::conv2d(integer, &self.input, input, &shape) {
                Path::Kernel(out) => return out,
                Path::Float(back) => input = back,
            }
        }
        let (weight, input) = self.quantized_operands(weight, input, training);
        let options =
            ConvOptions::new_with_padding(self.stride, [rows, cols], self.dilation, self.groups);
        conv2d(input, weight, self.bias.as_ref().map(Param::val), options)
    }

    /// Padding `(before, after)` of rows and columns for an input of this size.
    pub(crate) fn resolved_padding(
        &self,
        height: usize,
        width: usize,
    ) -> ((usize, usize), (usize, usize)) {
        match self.padding {
            PaddingConfig2d::Valid => ((0, 0), (0, 0)),
            PaddingConfig2d::Explicit(top, left, bottom, right) => ((top, bottom), (left, right)),
            PaddingConfig2d::Same => (
                same_padding(
                    self.kernel_size[0],
                    self.stride[0],
                    self.dilation[0],
                    height,
                ),
                same_padding(self.kernel_size[1], self.stride[1], self.dilation[1], width),
            ),
        }
    }

    /// The integer form of this layer with `weight` (`[out, in, kh, kw]`); grouped
    /// convolutions keep their float path.
    fn pack(&self, weight: &QTensor, kernel: Int8Kernel) -> Option<IntegerWeights> {
        if self.groups != 1 || self.weight.val().dtype() != DType::F32 {
            return None;
        }
        let [out, channels, kh, kw] = self.weight.dims();
        IntegerWeights::new(
            weight,
            WeightLayout::OutputMajor,
            0,
            (channels * kh * kw, out),
            host_bias(self.bias.as_ref())?,
            kernel,
        )
    }
}

/// The integer form a forward pass may run on. None while the layer trains (which marks the
/// packed weight stale for good), or for a model cast to half precision after conversion,
/// which computes in its own dtype.
fn runnable<'a, const D: usize>(
    integer: Option<&'a IntegerWeights>,
    weight: &Tensor<D>,
    training: bool,
) -> Option<&'a IntegerWeights> {
    let integer = integer.filter(|_| weight.dtype() == DType::F32)?;
    if training {
        integer.mark_trained();
        return None;
    }
    Some(integer)
}

/// The weight a layer computes with: fake-quantized during quantization-aware training (after
/// any mask, which the parameter's reparameterization applies), else as it is.
fn effective_weight<const D: usize>(weight: Tensor<D>, quant: Option<&QScheme>) -> Tensor<D> {
    match quant {
        Some(scheme) => fake_quantize_weight_ste(weight, scheme),
        None => weight,
    }
}

/// Padding before and after that keeps `ceil(size / stride)` outputs, as burn computes it.
fn same_padding(kernel: usize, stride: usize, dilation: usize, size: usize) -> (usize, usize) {
    let out = size.div_ceil(stride);
    let span = (kernel - 1) * dilation + 1;
    let total = if out > 0 {
        ((out - 1) * stride + span).saturating_sub(size)
    } else {
        0
    };
    (total / 2, total - total / 2)
}

impl From<burn::nn::conv::Conv2d> for Conv2d {
    fn from(layer: burn::nn::conv::Conv2d) -> Self {
        Self {
            weight: layer.weight,
            bias: layer.bias,
            stride: layer.stride,
            kernel_size: layer.kernel_size,
            dilation: layer.dilation,
            groups: layer.groups,
            padding: layer.padding,
            input: InputQuant::Float,
            weight_quant: None,
            steps: None,
            integer: None,
        }
    }
}

impl Conv2d {
    /// Convolutions have no sparse path yet: they keep their dense one.
    fn attach_sparse(&mut self, _choice: SparseKernel) -> Result<Option<SparseChoice>> {
        Ok(None)
    }

    fn sparse_form(&self) -> Option<&SparseWeights> {
        None
    }
}

quant_layer!(Conv2d);

/// burn's `MaxPool2d` with a host kernel for inference: on a host device (flex, ndarray), in
/// f32 and outside autodiff, windows that lie inside the image (no padding, no ceil mode, unit
/// dilation) are pooled by ember-kernels' [`ember_kernels::pool::max_pool2d`], several times
/// faster than burn's CPU pooling, which also records every maximum's index. It computes the
/// same maxima (NaN wins, as in burn). Anything else runs burn's layer.
#[derive(Module, Debug)]
pub struct MaxPool2d {
    /// burn's layer, which holds the configuration and runs every other case.
    pub pool: burn::nn::pool::MaxPool2d,
}

impl From<burn::nn::pool::MaxPool2d> for MaxPool2d {
    fn from(pool: burn::nn::pool::MaxPool2d) -> Self {
        Self { pool }
    }
}

impl MaxPool2d {
    /// Build from burn's config.
    pub fn new(config: &burn::nn::pool::MaxPool2dConfig) -> Self {
        config.init().into()
    }

    /// The maximum of each window, `[batch, channels, oh, ow]`.
    pub fn forward(&self, input: Tensor<4>) -> Tensor<4> {
        let pool = &self.pool;
        let plain = matches!(pool.padding, PaddingConfig2d::Valid)
            && pool.dilation == [1, 1]
            && !pool.ceil_mode;
        if plain
            && input.dtype() == DType::F32
            && !input.is_tracked()
            && ember_tensor::device::is_host(&input.device())
        {
            let [batch, channels, height, width] = input.dims();
            let shape = ember_kernels::pool::PoolShape {
                kernel: pool.kernel_size,
                stride: pool.stride,
            };
            if let Ok([oh, ow]) = shape.output([height, width]) {
                let device = input.device();
                let data = input.into_data();
                let pooled = data.as_slice::<f32>().ok().and_then(|x| {
                    let mut out = vec![0.0f32; batch * channels * oh * ow];
                    let planes = batch * channels;
                    ember_kernels::pool::max_pool2d(x, planes, [height, width], &shape, &mut out)
                        .ok()?;
                    Some(out)
                });
                return match pooled {
                    Some(out) => Tensor::from_data(
                        burn::tensor::TensorData::new(out, [batch, channels, oh, ow]),
                        &device,
                    ),
                    None => pool.forward(Tensor::from_data(data, &device)),
                };
            }
        }
        pool.forward(input)
    }
}
