//! Learned step size quantization (LSQ, Esser et al. 2020): in quantization-aware training the
//! step (scale) of each weight and of each layer's input is a parameter the optimizer trains,
//! where min/max fake quantization takes it from the values' range.
//!
//! `v̂ = (round(clamp(v / s + z, qmin, qmax)) − z) · s`, rounding passing the gradient straight
//! through and clamping cutting it, so that `∂v̂/∂s` is `round(v/s) − v/s` inside the grid and
//! `qmin − z` or `qmax − z` outside it (the paper's equation 3, with a zero point). The step's
//! gradient is scaled by `1 / sqrt(n · Qp)` (`n` the weight's elements or the input's features,
//! `Qp` the levels above zero), the paper's step-size gradient scale.
//!
//! Weight steps start at `2 · mean|w| / sqrt(Qp)` (the paper's), per output channel or per
//! tensor as the scheme says; an input's step and zero point start from a calibration pass
//! (the range min/max calibration would give: LSQ+, Bhalgat et al. 2020, likewise starts from
//! a range), and the zero point stays fixed while the step learns: 0 for a ReLU's outputs, the
//! paper's unsigned activations.
//!
//! The parameters are the steps' natural logarithms, as TQT (Jain et al. 2019) trains its
//! thresholds in the log domain: Adam's update is about its learning rate whatever the
//! gradient's scale, so a step of 0.004 trained as it is goes negative within a few batches,
//! where its logarithm moves by a fraction of a per cent. (With SGD, the paper's setting, the
//! gradient scale above keeps a raw step's updates in proportion.)

use burn::module::{Module, Param};
use burn::tensor::Tensor;

use crate::scheme::{Granularity, QParams, QScheme};
use crate::{Error, Result};

/// The smallest step a forward pass uses: a step whose logarithm training drove far below
/// zero would underflow to 0 and divide by zero.
const MIN_STEP: f32 = 1e-8;

/// A layer's learned steps: its weight's (one per output channel, or one) and its input's.
#[derive(Module, Debug)]
pub struct LearnedSteps {
    /// The logarithm of the weight's steps, one per parameter set of `weight_scheme`.
    pub log_weight: Param<Tensor<1>>,
    /// The logarithm of the input's step, `[1]`.
    pub log_input: Param<Tensor<1>>,
    /// The weight's scheme (symmetric; per tensor or per channel).
    #[module(skip)]
    pub weight_scheme: QScheme,
    /// The input's scheme (per tensor).
    #[module(skip)]
    pub input_scheme: QScheme,
    /// The input's zero point, fixed at its calibrated value.
    #[module(skip)]
    pub input_zero_point: i32,
}

impl LearnedSteps {
    /// Steps for a weight of `shape` with host `values` (LSQ's `2 · mean|w| / sqrt(Qp)` per
    /// parameter set) and for an input with calibrated `input_params`. A weight whose values
    /// are all zero has no step to start from: [`Error::ZeroRange`]; an all-zero channel among
    /// others (a pruned one) gets step 1, which keeps its zeros exact.
    pub fn new(
        values: &[f32],
        shape: &[usize],
        weight_scheme: QScheme,
        input_scheme: QScheme,
        input_params: &QParams,
        what: &str,
        device: &burn::tensor::Device,
    ) -> Result<Self> {
        weight_scheme.check(what)?;
        crate::qtensor::check_finite(values, what)?;
        input_scheme.check(&format!("{what} input"))?;
        let layout = weight_scheme.layout(shape, what)?;
        let mut sums = vec![0.0f64; layout.count()];
        let mut counts = vec![0usize; layout.count()];
        for (i, v) in values.iter().enumerate() {
            let set = layout.index(i);
            sums[set] += f64::from(v.abs());
            counts[set] += 1;
        }
        if sums.iter().all(|&s| s == 0.0) {
            return Err(Error::ZeroRange {
                what: what.to_string(),
            });
        }
        let qp = f64::from(positive_levels(
            &weight_scheme,
            weight_scheme.symmetric_zero_point(),
        ));
        let steps: Vec<f32> = sums
            .iter()
            .zip(&counts)
            .map(|(&sum, &count)| {
                let mean = sum / count.max(1) as f64;
                if mean == 0.0 {
                    1.0
                } else {
                    (2.0 * mean / qp.sqrt()) as f32
                }
            })
            .collect();
        input_params.check(&input_scheme, 1, &format!("{what} input"))?;
        let log: Vec<f32> = steps.iter().map(|s| s.ln()).collect();
        let weight = Tensor::<1>::from_floats(log.as_slice(), device);
        let input = Tensor::<1>::from_floats([input_params.scale[0].ln()], device);
        Ok(Self {
            log_weight: Param::from_tensor(weight),
            log_input: Param::from_tensor(input),
            weight_scheme,
            input_scheme,
            input_zero_point: input_params.zero_point[0],
        })
    }

    /// The weight fake-quantized with its learned steps.
    pub fn quantize_weight<const D: usize>(&self, weight: Tensor<D>) -> Tensor<D> {
        let zero_point = self.weight_scheme.symmetric_zero_point();
        let count = self.log_weight.dims()[0];
        let mut shape = [1usize; D];
        if let Granularity::PerChannel { axis } = self.weight_scheme.granularity
            && axis < D
        {
            shape[axis] = count;
        }
        let numel = weight.shape().num_elements();
        let gradient_scale = gradient_scale(numel, &self.weight_scheme, zero_point);
        let step = self.weight_steps().reshape(shape);
        fake_quantize_lsq(
            weight,
            step,
            zero_point,
            self.weight_scheme.bounds(),
            gradient_scale,
        )
    }

    /// The input (`[batch, ...]`) fake-quantized with its learned step.
    pub fn quantize_input<const D: usize>(&self, input: Tensor<D>) -> Tensor<D> {
        let dims = input.dims();
        let features = dims[1..].iter().product::<usize>();
        let gradient_scale = gradient_scale(features, &self.input_scheme, self.input_zero_point);
        let step = self.input_step().reshape([1; D]);
        fake_quantize_lsq(
            input,
            step,
            self.input_zero_point,
            self.input_scheme.bounds(),
            gradient_scale,
        )
    }

    /// The weight's steps.
    pub fn weight_steps(&self) -> Tensor<1> {
        self.log_weight.val().exp()
    }

    /// The input's step, `[1]`.
    pub fn input_step(&self) -> Tensor<1> {
        self.log_input.val().exp()
    }

    /// The learned steps as quantization parameters: the weight's and the input's. An input
    /// step that training made zero or non-finite is an [`Error::Scheme`] naming `what`; the
    /// weight's are checked where they quantize it ([`crate::QTensor::with_params`]).
    pub fn params(&self, what: &str) -> Result<(QParams, QParams)> {
        let weight = ember_tensor::stats::read_f32(self.weight_steps())?;
        let input = ember_tensor::stats::read_f32(self.input_step())?;
        let zero_point = self.weight_scheme.symmetric_zero_point();
        let weight = QParams {
            zero_point: vec![zero_point; weight.len()],
            scale: weight,
        };
        let input = QParams {
            scale: input,
            zero_point: vec![self.input_zero_point],
        };
        input.check(
            &self.input_scheme,
            1,
            &format!("{what} input (learned step)"),
        )?;
        Ok((weight, input))
    }
}

/// The levels above the zero point, `Qp` in the paper (at least 1).
fn positive_levels(scheme: &QScheme, zero_point: i32) -> u32 {
    (scheme.bounds().1 - zero_point).max(1) as u32
}

/// LSQ's step-size gradient scale, `1 / sqrt(n · Qp)`.
fn gradient_scale(n: usize, scheme: &QScheme, zero_point: i32) -> f32 {
    let qp = f64::from(positive_levels(scheme, zero_point));
    (1.0 / (n.max(1) as f64 * qp).sqrt()) as f32
}

/// `(round(clamp(x / s + z, qmin, qmax)) − z) · s` with `s` (broadcast against `x`) carrying
/// a gradient scaled by `gradient_scale`, rounding passing the gradient straight through.
pub fn fake_quantize_lsq<const D: usize>(
    x: Tensor<D>,
    step: Tensor<D>,
    zero_point: i32,
    (qmin, qmax): (i32, i32),
    gradient_scale: f32,
) -> Tensor<D> {
    let step = step.clamp_min(MIN_STEP);
    // Forward: the step; backward: its gradient times `gradient_scale`.
    let scaled = step.clone().mul_scalar(gradient_scale);
    let step = scaled.clone() + (step - scaled).detach();
    let v = x.div(step.clone()).add_scalar(zero_point).clamp(qmin, qmax);
    let rounded = v.clone() + (v.clone().round() - v).detach();
    rounded.sub_scalar(zero_point).mul(step)
}
