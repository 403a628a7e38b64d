//! The quantization passes: weight-only quantization of any burn model, dynamic quantization,
//! static quantization with calibration (prepare, calibrate, convert) and quantization-aware
//! training (`prepare_qat`, train, `Qat::convert`). Every pass that quantizes inputs leaves
//! its layers on the integer kernels where they can run (`Quantized::set_integer_kernel`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use burn::module::Module;
use burn::tensor::Device;
use ember_observe::{CalibrationConfig, ObserverConfig, RangeMethod, calibrate};
use ember_tensor::{Classifier, Input, LabeledData, ParamInfo, Selector, param_values, params};
use serde::{Deserialize, Serialize};

use crate::Int8Kernel;
use crate::nn::{Calibration, InputQuant, QuantLayers, lock};
use crate::qtensor::QTensor;
use crate::scheme::{Mode, QParams, QScheme, QType};
use crate::{Error, Result};

/// A model whose weights (and, for models built from [`crate::nn`] layers, inputs) are
/// quantized. The model computes with the dequantized weights, so it runs on every backend;
/// [`Quantized::weights`] holds the integers that [`crate::save_quantized`] writes.
#[derive(Debug, Clone)]
pub struct Quantized<M> {
    /// The model, its quantized parameters replaced by their dequantized values.
    pub model: M,
    /// The quantized parameters, by path.
    pub weights: BTreeMap<String, QTensor>,
    /// What each layer does to its input, by layer path, as the pass set it.
    pub inputs: BTreeMap<String, InputQuant>,
}

impl<M: QuantLayers> Quantized<M> {
    /// Run every layer whose weight and input are both quantized on the integer kernels with
    /// `kernel`, or put every layer back on its float path (`None`: dequantized weights and
    /// fake-quantized inputs, the same function up to float rounding). The passes call it
    /// with [`Int8Kernel::detect`]. Returns the layers that now run on integers; a scheme the
    /// kernels cannot run (per-group weights, a grouped convolution) keeps its float path.
    pub fn set_integer_kernel(&mut self, kernel: Option<Int8Kernel>) -> Vec<String> {
        let mut on = Vec::new();
        for (name, layer) in self.model.quant_layers() {
            let integer_input = matches!(
                self.inputs.get(&name),
                Some(InputQuant::Dynamic(_) | InputQuant::Static { .. })
            );
            let form = match (kernel, self.weights.get(&format!("{name}.weight"))) {
                (Some(kernel), Some(weight)) if integer_input => Some((weight, kernel)),
                _ => None,
            };
            if layer.set_integer(form) {
                on.push(name);
            }
        }
        on
    }

    /// The layers that run on the integer kernels, with the kernel of each.
    pub fn integer_layers(&mut self) -> Vec<(String, Int8Kernel)> {
        self.model
            .quant_layers()
            .into_iter()
            .filter_map(|(name, layer)| layer.integer().map(|i| (name, i.kernel())))
            .collect()
    }
}

/// How weights are grouped for their scales, resolved per layer kind (burn's linear weight is
/// `[in, out]`, a convolution's `[out, in, h, w]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WeightGranularity {
    /// One scale per weight tensor.
    PerTensor,
    /// One scale per output channel.
    PerOutputChannel,
    /// One scale per run of this many input elements, for each output channel (int4
    /// weight-only quantization uses 32 to 128); a convolution's runs go over each filter's
    /// `in · kh · kw` values ([`crate::Granularity::PerFlatGroup`]).
    PerInputGroup(usize),
}

/// Which parameters to quantize, and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightConfig {
    /// The integer type.
    pub qtype: QType,
    /// Symmetric or affine.
    pub mode: Mode,
    /// Scale granularity.
    pub granularity: WeightGranularity,
    /// One bit less of range.
    pub reduce_range: bool,
    /// A width narrower than `qtype`'s (2-bit weights in an `Int4`, say): see
    /// [`QScheme::bits`].
    #[serde(default)]
    pub bits: Option<u32>,
    /// The parameters to quantize; by default every `weight` of a `Linear`, `Conv2d` or
    /// `Embedding` ([`Selector::quantizable_weights`]). Biases and normalization parameters
    /// stay float; only the drop-in `Linear` and `Conv2d` also quantize their inputs.
    pub layers: Selector,
    /// Also quantize the bias next to each selected weight (per tensor); biases stay float by
    /// default, as in PyTorch.
    pub biases: bool,
}

impl WeightConfig {
    /// int8, symmetric, one scale per tensor: PyTorch's dynamic-quantization default.
    pub fn int8_per_tensor() -> Self {
        Self {
            qtype: QType::Int8,
            mode: Mode::Symmetric,
            granularity: WeightGranularity::PerTensor,
            reduce_range: false,
            bits: None,
            layers: Selector::quantizable_weights(),
            biases: false,
        }
    }

    /// int8, symmetric, one scale per output channel: PyTorch's static-quantization default.
    pub fn int8_per_channel() -> Self {
        Self {
            granularity: WeightGranularity::PerOutputChannel,
            ..Self::int8_per_tensor()
        }
    }

    /// int4, symmetric, one scale per `group` input elements of each output channel.
    pub fn int4_per_group(group: usize) -> Self {
        Self {
            qtype: QType::Int4,
            granularity: WeightGranularity::PerInputGroup(group),
            ..Self::int8_per_tensor()
        }
    }

    /// Weights of `bits` bits (2 to 8), symmetric and per output channel, in the narrowest
    /// type that holds them (see [`QScheme::with_width`]).
    pub fn with_width(bits: u32) -> Result<Self> {
        let scheme = QScheme::with_width(bits, true, Mode::Symmetric)?;
        Ok(Self {
            qtype: scheme.qtype,
            bits: scheme.bits,
            ..Self::int8_per_channel()
        })
    }

    /// The per-tensor scheme of these weights, checked (a bit width out of range is
    /// [`Error::BitWidth`]).
    pub fn check(&self) -> Result<()> {
        QScheme {
            reduce_range: self.reduce_range,
            bits: self.bits,
            ..QScheme::new(self.qtype, self.mode)
        }
        .check("weights")
    }

    /// The same config with another mode.
    pub fn with_mode(self, mode: Mode) -> Self {
        Self { mode, ..self }
    }

    /// The same config with one scale per output channel.
    pub fn with_granularity_per_channel(self) -> Self {
        Self {
            granularity: WeightGranularity::PerOutputChannel,
            ..self
        }
    }

    /// The scheme for one parameter.
    pub fn scheme_for(&self, info: &ParamInfo) -> QScheme {
        let base = QScheme {
            qtype: self.qtype,
            mode: self.mode,
            granularity: crate::Granularity::PerTensor,
            reduce_range: self.reduce_range,
            bits: self.bits,
        };
        let Some(axes) = info.weight_axes() else {
            return base;
        };
        match self.granularity {
            WeightGranularity::PerTensor => base,
            WeightGranularity::PerOutputChannel => base.per_channel(axes.output),
            // A convolution's groups run over each filter's in x kh x kw values, as its GEMM
            // multiplies them; a fully connected layer's along its input axis.
            WeightGranularity::PerInputGroup(size) if info.shape.len() > 2 => {
                base.per_flat_group(axes.input, size)
            }
            WeightGranularity::PerInputGroup(size) => base.per_group(axes.input, size),
        }
    }
}

impl Default for WeightConfig {
    fn default() -> Self {
        Self::int8_per_channel()
    }
}

/// Quantize the parameters `config` selects, on any burn model: each is replaced by its
/// dequantized value and returned in [`Quantized::weights`]. A masked (pruned) weight is
/// quantized as its effective value, and its mask stays attached. NaN or Inf, an all-zero
/// weight, or a pattern that matches nothing is an error and nothing is changed.
pub fn quantize_weights<M: Module>(model: M, config: &WeightConfig) -> Result<Quantized<M>> {
    config.check()?;
    let infos = params(&model);
    let mut chosen: Vec<&ParamInfo> = config.layers.select(&infos)?;
    if config.biases {
        let biases: Vec<&ParamInfo> = chosen
            .iter()
            .filter_map(|w| {
                let bias = format!("{}bias", w.path.strip_suffix("weight")?);
                infos.iter().find(|p| p.path == bias)
            })
            .collect();
        chosen.extend(biases);
    }
    let values = param_values(&model);
    let mut weights = BTreeMap::new();
    let mut dequantized = BTreeMap::new();
    for info in chosen {
        let Some(value) = values.iter().find(|v| v.info.path == info.path) else {
            continue;
        };
        let host = ember_tensor::stats::read_f32(value.flat.clone())?;
        let q = QTensor::quantize(&host, &info.shape, config.scheme_for(info), &info.path)?;
        dequantized.insert(info.path.clone(), q.dequantize());
        weights.insert(info.path.clone(), q);
    }
    let model = ember_tensor::set_param_values(model, &dequantized)?;
    Ok(Quantized {
        model,
        weights,
        inputs: BTreeMap::new(),
    })
}

/// Dynamic quantization: weights quantized ahead, each quantized layer's input quantized per
/// batch from that batch's range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DynamicConfig {
    /// The weights.
    pub weights: WeightConfig,
    /// The inputs' scheme (per tensor).
    pub activations: QScheme,
}

impl Default for DynamicConfig {
    /// int8 symmetric per-tensor weights and uint8 affine activations, PyTorch's
    /// `quantize_dynamic` defaults.
    fn default() -> Self {
        Self {
            weights: WeightConfig::int8_per_tensor(),
            activations: QScheme::new(QType::UInt8, Mode::Affine),
        }
    }
}

/// Quantize `model` dynamically; see [`DynamicConfig`].
///
/// ```
/// use burn::tensor::Device;
/// use ember_quant::{DynamicConfig, quantize_dynamic};
/// use ember_zoo::MlpConfig;
///
/// let device = Device::flex();
/// let config = MlpConfig { input: 8, hidden: vec![16], classes: 3, dropout: 0.0 };
/// let mut q = quantize_dynamic(config.init(&device)?, &DynamicConfig::default())?;
/// // Both weights are int8; both layers quantize their input per batch and, on a host
/// // device, run on the integer kernels.
/// assert_eq!(q.weights.len(), 2);
/// assert_eq!(q.integer_layers().len(), 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn quantize_dynamic<M: Module + QuantLayers>(
    model: M,
    config: &DynamicConfig,
) -> Result<Quantized<M>> {
    per_tensor_activations(&config.activations, None)?;
    config.activations.check("layer inputs")?;
    let mut model = model;
    check_layer_paths(&mut model)?;
    let mut q = quantize_weights(model, &config.weights)?;
    for (name, layer) in q.model.quant_layers() {
        if q.weights.contains_key(&format!("{name}.weight")) {
            let input = InputQuant::Dynamic(config.activations);
            layer.set_input_quant(input.clone());
            q.inputs.insert(name, input);
        }
    }
    q.set_integer_kernel(Some(Int8Kernel::detect()));
    Ok(q)
}

/// Static quantization: weights quantized ahead, inputs quantized with ranges calibrated on
/// sample data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StaticConfig {
    /// The weights.
    pub weights: WeightConfig,
    /// The inputs' scheme (per tensor).
    pub activations: QScheme,
    /// The observer that calibrates each input.
    pub observer: ObserverConfig,
    /// How much data calibration sees.
    pub calibration: CalibrationConfig,
    /// Layers to keep in float (weights and input), by path pattern: `conv1`, `fc3`,
    /// `layers.*`.
    pub keep_float: Vec<String>,
    /// In quantization-aware training, freeze each input's observer after this many training
    /// batches (PyTorch's `disable_observer` after N steps): the ranges stop following the
    /// activations and the weights finish training against fixed grids. `None`: observe
    /// until the end (see also [`Qat::freeze_observers`]).
    #[serde(default)]
    pub freeze_observers_after: Option<usize>,
}

impl Default for StaticConfig {
    /// int8 per-channel weights, uint8 affine inputs calibrated by a histogram with the
    /// least-squared-error range (PyTorch's `HistogramObserver` default), on 2048 images.
    fn default() -> Self {
        Self {
            weights: WeightConfig::int8_per_channel(),
            activations: QScheme::new(QType::UInt8, Mode::Affine),
            observer: ObserverConfig::histogram(RangeMethod::Mse),
            calibration: CalibrationConfig::default(),
            keep_float: Vec::new(),
            freeze_observers_after: None,
        }
    }
}

impl StaticConfig {
    /// PyTorch's default for quantization-aware training (`get_default_qat_qconfig`): the
    /// defaults with a moving-average min/max observer (momentum 0.01) on the inputs. Its range
    /// stays on the device while training ([`crate::fake::DeviceRange`]), where a histogram
    /// observer copies every layer's input to the host and searches its range at each step.
    pub fn qat() -> Self {
        Self {
            observer: ObserverConfig::moving_average(),
            ..Self::default()
        }
    }
}

/// A model whose layers observe their inputs: run calibration data through `model`, then
/// [`Prepared::convert`].
#[derive(Debug)]
pub struct Prepared<M> {
    /// The model, its selected layers observing.
    pub model: M,
    config: StaticConfig,
    observed: BTreeMap<String, Arc<Mutex<Calibration>>>,
}

/// Every layer the model's [`QuantLayers`] lists has a weight at `<name>.weight`: a name that
/// matches no parameter path (a `QuantLayers` impl out of step with the struct) would leave the
/// layer's input unquantized without a word.
fn check_layer_paths<M: Module + QuantLayers>(model: &mut M) -> Result<()> {
    let paths: Vec<String> = params(model).into_iter().map(|p| p.path).collect();
    for (name, _) in model.quant_layers() {
        if !paths.contains(&format!("{name}.weight")) {
            let weights: Vec<&str> = paths
                .iter()
                .filter(|p| p.ends_with("weight"))
                .map(String::as_str)
                .collect();
            return Err(Error::LayerPath {
                layer: name,
                available: weights.join(", "),
            });
        }
    }
    Ok(())
}

/// Insert an observer on the input of every quantizable layer not kept in float.
pub fn prepare<M: Module + QuantLayers>(
    mut model: M,
    config: &StaticConfig,
) -> Result<Prepared<M>> {
    per_tensor_activations(&config.activations, Some(&config.observer))?;
    config.activations.check("layer inputs")?;
    config.weights.check()?;
    check_layer_paths(&mut model)?;
    let kept = kept_float(&mut model, &config.keep_float)?;
    let mut observed = BTreeMap::new();
    for (name, layer) in model.quant_layers() {
        if kept.contains(&name) {
            layer.set_input_quant(InputQuant::Float);
            continue;
        }
        let calibration = Arc::new(Mutex::new(Calibration::new(
            config.observer.build(format!("{name} input"))?,
        )));
        layer.set_input_quant(InputQuant::Observe(calibration.clone()));
        observed.insert(name, calibration);
    }
    Ok(Prepared {
        model,
        config: config.clone(),
        observed,
    })
}

impl<M: Module + QuantLayers> Prepared<M> {
    /// Turn each observer's range into quantization parameters and quantize the weights of
    /// the same layers. An error observing (NaN activations), an observer that saw no batch or
    /// an input that was always zero is a typed error naming the layer.
    pub fn convert(self) -> Result<Quantized<M>> {
        let scheme = self.config.activations;
        let mut inputs: BTreeMap<String, InputQuant> = input_params(&self.observed, &scheme)?
            .into_iter()
            .map(|(name, params)| (name, InputQuant::Static { scheme, params }))
            .collect();
        let mut weights = self.config.weights.clone();
        let mut model = self.model;
        let kept = kept_float(&mut model, &self.config.keep_float)?;
        for name in &kept {
            weights.layers = weights.layers.exclude(format!("{name}.*"));
        }
        let mut q = quantize_weights(model, &weights)?;
        for (name, layer) in q.model.quant_layers() {
            let input = inputs.remove(&name).unwrap_or_default();
            layer.set_input_quant(input.clone());
            if !matches!(input, InputQuant::Float) {
                q.inputs.insert(name, input);
            }
        }
        q.set_integer_kernel(Some(Int8Kernel::detect()));
        Ok(q)
    }
}

/// A model prepared for quantization-aware training: its selected layers fake-quantize their
/// weights (min/max, per tensor or per channel) and their inputs (with the ranges their
/// observers have seen so far), gradients passing straight through. Train it with any loop
/// (`ember_tensor::train`), then [`Qat::convert`] the trained model. Masks compose: a pruned
/// weight is zeroed before it is fake-quantized, and zero is exact.
#[derive(Debug)]
pub struct Qat<M> {
    /// The model to train.
    pub model: M,
    prepared: Prepared<()>,
    /// Whether the layers learn their steps ([`prepare_lsq`]).
    learned: bool,
}

/// Prepare `model` for quantization-aware training with the schemes of `config` (a moving
/// average observer follows the inputs as training changes them, on the device: see
/// [`StaticConfig::qat`]; per-group weights are not supported here).
///
/// ```
/// use burn::tensor::Device;
/// use ember_quant::{StaticConfig, WeightConfig, prepare_qat};
/// use ember_tensor::testing::Blobs;
/// use ember_tensor::{TrainConfig, train};
/// use ember_zoo::MlpConfig;
///
/// let device = Device::flex();
/// let model = MlpConfig { input: Blobs::DIM, hidden: vec![16], classes: 3, dropout: 0.0 }
///     .init(&device)?;
/// // 4-bit weights per output channel, uint8 inputs; the observers stop after 4 batches.
/// let config = StaticConfig {
///     weights: WeightConfig::with_width(4)?,
///     freeze_observers_after: Some(4),
///     ..StaticConfig::qat()
/// };
/// let qat = prepare_qat(model, &config)?;
/// let data = Blobs::new(256, 3, 1);
/// let training = TrainConfig { epochs: 1, ..TrainConfig::default() };
/// let (trained, _) = train(qat.model.clone(), &data, &training, &device)?;
/// let q = qat.convert(trained)?;
/// assert!(q.weights["layers.0.weight"].values().iter().all(|v| (-8..=7).contains(v)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn prepare_qat<M: Module + QuantLayers>(model: M, config: &StaticConfig) -> Result<Qat<M>> {
    refuse_per_group(config, "quantization-aware training")?;
    let Prepared {
        mut model,
        config,
        observed,
    } = prepare(model, config)?;
    let infos = params(&model);
    let selected: Vec<String> = config
        .weights
        .layers
        .select(&infos)?
        .into_iter()
        .map(|p| p.path.clone())
        .collect();
    for (name, layer) in model.quant_layers() {
        let Some(calibration) = observed.get(&name) else {
            continue;
        };
        if let Some(after) = config.freeze_observers_after {
            lock(calibration).freeze_after(after);
        }
        layer.set_input_quant(InputQuant::Train {
            scheme: config.activations,
            calibration: calibration.clone(),
        });
        let weight = format!("{name}.weight");
        if let Some(info) = infos
            .iter()
            .find(|p| p.path == weight && selected.contains(&weight))
        {
            layer.set_weight_quant(Some(config.weights.scheme_for(info)));
        }
    }
    Ok(Qat {
        model,
        prepared: Prepared {
            model: (),
            config,
            observed,
        },
        learned: false,
    })
}

/// Each observed layer's input parameters under `scheme`, from what its observer saw. An
/// error observing (NaN activations), an observer that saw no batch or an input that was
/// always zero is a typed error naming the layer.
fn input_params(
    observed: &BTreeMap<String, Arc<Mutex<Calibration>>>,
    scheme: &QScheme,
) -> Result<BTreeMap<String, QParams>> {
    let mut params = BTreeMap::new();
    for (name, calibration) in observed {
        let mut state = lock(calibration);
        state.finish()?;
        let ranges = state.observer.ranges(scheme.levels())?;
        params.insert(
            name.clone(),
            scheme.qparams(&ranges, &format!("{name} input"))?,
        );
    }
    Ok(params)
}

/// Quantization-aware training fake-quantizes weights per tensor or per output channel.
fn refuse_per_group(config: &StaticConfig, what: &str) -> Result<()> {
    match config.weights.granularity {
        WeightGranularity::PerInputGroup(_) => Err(Error::Scheme {
            what: what.into(),
            reason: "weights are quantized per tensor or per output channel".into(),
        }),
        _ => Ok(()),
    }
}

/// Prepare `model` for quantization-aware training with learned step sizes (LSQ, see
/// [`crate::lsq`]): calibrate on `data` with `config`'s observer and calibration settings to
/// start each input's step and zero point, start each weight's step from its values, and
/// make the steps parameters that training updates with the weights. Train [`Qat::model`],
/// then [`Qat::convert`]: the learned steps become the quantized model's scales. A layer
/// whose calibrated input or weight is all zero has no step to start from
/// ([`Error::ZeroRange`]); per-group weights are refused as in [`prepare_qat`].
///
/// ```
/// use burn::tensor::Device;
/// use ember_quant::{StaticConfig, WeightConfig, prepare_lsq};
/// use ember_tensor::testing::Blobs;
/// use ember_tensor::{TrainConfig, train};
/// use ember_zoo::MlpConfig;
///
/// let device = Device::flex();
/// let model = MlpConfig { input: Blobs::DIM, hidden: vec![16], classes: 3, dropout: 0.0 }
///     .init(&device)?;
/// let data = Blobs::new(256, 3, 1);
/// // W2A8: 2-bit weights (-2..=1), steps learned with the weights.
/// let config = StaticConfig { weights: WeightConfig::with_width(2)?, ..StaticConfig::qat() };
/// let lsq = prepare_lsq(model, &config, &data, &device)?;
/// let training = TrainConfig { epochs: 1, ..TrainConfig::default() };
/// let (trained, _) = train(lsq.model.clone(), &data, &training, &device)?;
/// let q = lsq.convert(trained)?;
/// assert!(q.weights["layers.1.weight"].values().iter().all(|v| (-2..=1).contains(v)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn prepare_lsq<I: Input, M: Classifier<I> + QuantLayers>(
    model: M,
    config: &StaticConfig,
    data: &(impl LabeledData<I> + ?Sized),
    device: &Device,
) -> Result<Qat<M>> {
    refuse_per_group(config, "learned step sizes")?;
    let prepared = prepare(model, config)?;
    calibrate(data, &config.calibration, device, |inputs| {
        let _ = prepared.model.forward(inputs);
    })?;
    let Prepared {
        mut model,
        config,
        observed,
    } = prepared;
    let scheme = config.activations;
    let input_params = input_params(&observed, &scheme)?;
    let values = param_values(&model);
    for (name, layer) in model.quant_layers() {
        layer.set_input_quant(InputQuant::Float);
        let Some(params) = input_params.get(&name) else {
            continue;
        };
        let weight = format!("{name}.weight");
        let value = values
            .iter()
            .find(|v| v.info.path == weight)
            .ok_or_else(|| Error::LayerPath {
                layer: name.clone(),
                available: String::new(),
            })?;
        let host = ember_tensor::stats::read_f32(value.flat.clone())?;
        let steps = crate::lsq::LearnedSteps::new(
            &host,
            &value.info.shape,
            config.weights.scheme_for(&value.info),
            scheme,
            params,
            &weight,
            device,
        )?;
        layer.set_steps(Some(steps));
    }
    Ok(Qat {
        model,
        prepared: Prepared {
            model: (),
            config,
            observed,
        },
        learned: true,
    })
}

impl<M: Module + QuantLayers> Qat<M> {
    /// Quantize `trained` (the model after training, as the training loop returns it) with the
    /// ranges observed during training: weights by min/max as the forward pass saw them,
    /// inputs statically.
    pub fn convert(self, mut trained: M) -> Result<Quantized<M>> {
        if self.learned {
            return convert_learned(trained);
        }
        for (_, layer) in trained.quant_layers() {
            layer.set_weight_quant(None);
        }
        Prepared {
            model: trained,
            config: self.prepared.config,
            observed: self.prepared.observed,
        }
        .convert()
    }
}

impl<M> Qat<M> {
    /// Stop every input observer now (PyTorch's `disable_observer`): the ranges stay what
    /// they are, and [`Qat::convert`] uses them. An observer that has seen no training batch
    /// has no range to keep: [`ember_observe::Error::Empty`] naming its layer.
    pub fn freeze_observers(&self) -> Result<()> {
        for calibration in self.prepared.observed.values() {
            let mut state = lock(calibration);
            if !state.has_seen() {
                return Err(ember_observe::Error::Empty {
                    what: state.observer.what().to_string(),
                }
                .into());
            }
            state.freeze_after(0);
        }
        Ok(())
    }
}

/// [`Qat::convert`] after [`prepare_lsq`]: each layer's weight quantized with its learned
/// steps, its input statically with its learned step and calibrated zero point; the steps
/// leave the model.
fn convert_learned<M: Module + QuantLayers>(mut trained: M) -> Result<Quantized<M>> {
    let mut learned = BTreeMap::new();
    for (name, layer) in trained.quant_layers() {
        if let Some(steps) = layer.steps() {
            let weight = format!("{name}.weight");
            let (weight_params, input_params) = steps.params(&weight)?;
            learned.insert(
                name,
                (
                    steps.weight_scheme,
                    weight_params,
                    steps.input_scheme,
                    input_params,
                ),
            );
        }
        layer.set_steps(None);
    }
    let values = param_values(&trained);
    let mut weights = BTreeMap::new();
    let mut dequantized = BTreeMap::new();
    let mut inputs = BTreeMap::new();
    for (name, (weight_scheme, weight_params, input_scheme, input_params)) in learned {
        let path = format!("{name}.weight");
        let Some(value) = values.iter().find(|v| v.info.path == path) else {
            continue;
        };
        let host = ember_tensor::stats::read_f32(value.flat.clone())?;
        let q = QTensor::with_params(
            &host,
            &value.info.shape,
            weight_scheme,
            weight_params,
            &path,
        )?;
        dequantized.insert(path.clone(), q.dequantize());
        weights.insert(path, q);
        inputs.insert(
            name,
            InputQuant::Static {
                scheme: input_scheme,
                params: input_params,
            },
        );
    }
    let model = ember_tensor::set_param_values(trained, &dequantized)?;
    let mut q = Quantized {
        model,
        weights,
        inputs,
    };
    for (name, layer) in q.model.quant_layers() {
        if let Some(input) = q.inputs.get(&name) {
            layer.set_input_quant(input.clone());
        }
    }
    q.set_integer_kernel(Some(Int8Kernel::detect()));
    Ok(q)
}

/// Prepare, calibrate on `data` and convert.
///
/// ```
/// use burn::tensor::Device;
/// use ember_quant::{InputQuant, StaticConfig, quantize_static};
/// use ember_tensor::testing::Blobs;
/// use ember_zoo::MlpConfig;
///
/// let device = Device::flex();
/// let model = MlpConfig { input: Blobs::DIM, hidden: vec![16], classes: 3, dropout: 0.0 }
///     .init(&device)?;
/// let calibration = Blobs::new(256, 3, 1);
/// let q = quantize_static(model, &StaticConfig::default(), &calibration, &device)?;
/// // Each layer's input has one scale and zero point, calibrated on the data.
/// assert!(matches!(q.inputs["layers.0"], InputQuant::Static { .. }));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn quantize_static<I: Input, M: Classifier<I> + QuantLayers>(
    model: M,
    config: &StaticConfig,
    data: &(impl LabeledData<I> + ?Sized),
    device: &Device,
) -> Result<Quantized<M>> {
    let prepared = prepare(model, config)?;
    calibrate(data, &config.calibration, device, |inputs| {
        let _ = prepared.model.forward(inputs);
    })?;
    prepared.convert()
}

/// Layer inputs are quantized per tensor (their channels change from batch to batch of a
/// convolution's positions): a per-channel scheme or observer would be silently cut down to
/// its first channel, so it is an error.
fn per_tensor_activations(scheme: &QScheme, observer: Option<&ObserverConfig>) -> Result<()> {
    let per_channel_observer = observer.and_then(|o| o.per_channel);
    if scheme.granularity != crate::Granularity::PerTensor || per_channel_observer.is_some() {
        return Err(Error::Scheme {
            what: "layer inputs".into(),
            reason: "activations are quantized per tensor: use a per-tensor scheme and observer \
                     (per-channel and per-group are for weights)"
                .into(),
        });
    }
    Ok(())
}

/// The layers that `patterns` keep in float; a pattern that names no layer is an error.
fn kept_float<M: QuantLayers>(model: &mut M, patterns: &[String]) -> Result<Vec<String>> {
    let names: Vec<String> = model.quant_layers().into_iter().map(|(n, _)| n).collect();
    let mut kept = Vec::new();
    for pattern in patterns {
        let matcher = Selector::all().include(pattern.clone()).compile()?;
        let matched: Vec<&String> = names.iter().filter(|n| matcher.matches(n, "")).collect();
        if matched.is_empty() {
            return Err(Error::UnknownLayer {
                pattern: pattern.clone(),
                available: names.join(", "),
            });
        }
        kept.extend(matched.into_iter().cloned());
    }
    Ok(kept)
}
