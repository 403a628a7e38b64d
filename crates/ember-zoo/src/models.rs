//! Reference models: multi-layer perceptrons (LeNet-300-100, Hinton's MNIST nets) and
//! LeNet-5. Input size and class count come from the data, not from constants.

use std::collections::BTreeMap;

use burn::module::Module;
use burn::nn::conv::Conv2dConfig;
use burn::nn::pool::MaxPool2dConfig;
use burn::nn::{Dropout, DropoutConfig, LinearConfig, PaddingConfig2d, Relu};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use ember_quant::nn::{Conv2d, Linear, MaxPool2d, QuantLayer, QuantLayers};
use ember_tensor::{Classifier, UnitActivations, UnitGroup, UnitSlice, init_now};

use crate::{Error, Result};

/// A fully connected network: `input -> hidden... -> classes` with ReLU between layers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MlpConfig {
    /// Number of input features (pixels per image).
    pub input: usize,
    /// Widths of the hidden layers.
    pub hidden: Vec<usize>,
    /// Number of classes.
    pub classes: usize,
    /// Dropout probability after each hidden layer (0 for none).
    #[serde(default)]
    pub dropout: f64,
}

impl MlpConfig {
    /// LeNet-300-100 (LeCun et al. 1998): two hidden layers of 300 and 100 units.
    pub fn lenet_300_100(input: usize, classes: usize) -> Self {
        Self {
            input,
            hidden: vec![300, 100],
            classes,
            dropout: 0.0,
        }
    }

    /// How many parameters the model has (weights and biases), in checked arithmetic: a size
    /// read from a file is checked with it before anything is allocated.
    pub fn parameter_count(&self) -> Result<usize> {
        let widths: Vec<usize> = std::iter::once(self.input)
            .chain(self.hidden.iter().copied())
            .chain(std::iter::once(self.classes))
            .collect();
        widths
            .windows(2)
            .try_fold(0usize, |sum, w| {
                w[0].checked_add(1)?.checked_mul(w[1])?.checked_add(sum)
            })
            .ok_or_else(|| {
                invalid(
                    "hidden",
                    format!("{widths:?}"),
                    "more parameters than fit in memory",
                )
            })
    }

    /// The dependency groups of structured pruning: one per hidden layer, named
    /// `layers.<i>`, its neurons being output columns of `layers.<i>.weight` (burn's
    /// `[in, out]`) and entries of `layers.<i>.bias`, read as input rows of
    /// `layers.<i+1>.weight`. `prefix` is the model's path inside a larger one (`Mlp.` inside
    /// [`crate::Model`], empty for a bare `Mlp`).
    pub fn unit_groups(&self, prefix: &str) -> Vec<UnitGroup> {
        self.hidden
            .iter()
            .enumerate()
            .map(|(i, &units)| {
                neuron_group(
                    prefix,
                    &format!("layers.{i}"),
                    &format!("layers.{}", i + 1),
                    units,
                )
            })
            .collect()
    }

    /// The same network with the hidden widths that structured pruning kept (the number of
    /// units each of [`MlpConfig::unit_groups`] keeps, by group name); a group not in `kept`
    /// keeps its width.
    pub fn with_kept(&self, prefix: &str, kept: &BTreeMap<String, Vec<usize>>) -> Self {
        let hidden = self
            .unit_groups(prefix)
            .iter()
            .map(|g| kept.get(&g.name).map_or(g.units, Vec::len))
            .collect();
        Self {
            hidden,
            ..self.clone()
        }
    }

    /// Multiply-accumulates of one image's forward pass.
    pub fn macs(&self) -> usize {
        let widths: Vec<usize> = std::iter::once(self.input)
            .chain(self.hidden.iter().copied())
            .chain(std::iter::once(self.classes))
            .collect();
        widths.windows(2).map(|w| w[0] * w[1]).sum()
    }

    /// Check the config and build the model on `device`, its parameters drawn from the
    /// device RNG now (seed it first with `device.seed`).
    pub fn init(&self, device: &Device) -> Result<Mlp> {
        positive("input", self.input)?;
        positive("classes", self.classes)?;
        if let Some(&zero) = self.hidden.iter().find(|&&w| w == 0) {
            return Err(invalid(
                "hidden",
                zero,
                "every hidden width must be at least 1",
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(invalid("dropout", self.dropout, "must be in [0, 1)"));
        }
        let widths: Vec<usize> = std::iter::once(self.input)
            .chain(self.hidden.iter().copied())
            .chain(std::iter::once(self.classes))
            .collect();
        Ok(init_now(Mlp {
            layers: widths
                .windows(2)
                .map(|w| Linear::new(&LinearConfig::new(w[0], w[1]), device))
                .collect(),
            dropout: DropoutConfig::new(self.dropout).init(),
            activation: Relu::new(),
        }))
    }
}

/// `Classifier` and `UnitActivations` for a model whose
/// `forward_seen(images, Option<&mut Vec<(name, activations)>>)` computes the logits and, when
/// asked, records its groups' activations: one forward pass serves both.
macro_rules! classifier_seeing_units {
    ($model:ty) => {
        impl Classifier for $model {
            fn forward(&self, images: Tensor<4>) -> Tensor<2> {
                self.forward_seen(images, None)
            }
        }

        impl UnitActivations for $model {
            fn unit_activations(&self, images: Tensor<4>) -> Vec<(String, Tensor<3>)> {
                let mut seen = Vec::new();
                self.forward_seen(images, Some(&mut seen));
                seen
            }
        }
    };
}
pub(crate) use classifier_seeing_units;

/// See [`MlpConfig`]. Parameters are `layers.<i>.weight` / `layers.<i>.bias`. The layers are
/// ember-quant's drop-ins for burn's (same record), so the model can quantize its
/// activations.
#[derive(Module, Debug)]
pub struct Mlp {
    /// The linear layers, input first.
    pub layers: Vec<Linear>,
    dropout: Dropout,
    activation: Relu,
}

impl QuantLayers for Mlp {
    fn quant_layers(&mut self) -> Vec<(String, &mut dyn QuantLayer)> {
        self.layers
            .iter_mut()
            .enumerate()
            .map(|(i, layer)| (format!("layers.{i}"), layer as &mut dyn QuantLayer))
            .collect()
    }
}

impl Mlp {
    /// The logits, and each hidden layer's activations into `seen` when asked.
    fn forward_seen(
        &self,
        images: Tensor<4>,
        mut seen: Option<&mut Vec<(String, Tensor<3>)>>,
    ) -> Tensor<2> {
        let mut x: Tensor<2> = images.flatten(1, 3);
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(x);
            if i < last {
                x = self.activation.forward(x);
                if let Some(seen) = seen.as_deref_mut() {
                    seen.push((format!("layers.{i}"), x.clone().unsqueeze_dim(2)));
                }
                x = self.dropout.forward(x);
            }
        }
        x
    }
}

classifier_seeing_units!(Mlp);

/// LeNet-5 (LeCun et al. 1998) as it is trained today: two 5x5 convolutions with ReLU and 2x2
/// max pooling (6 and 16 channels, the first padded to keep the image size), then fully
/// connected layers of 120 and 84 units.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeNet5Config {
    /// Input channels (1 for grey levels).
    pub channels: usize,
    /// Image height and width.
    pub image: [usize; 2],
    /// Number of classes.
    pub classes: usize,
    /// The hidden widths; LeNet-5's own unless structured pruning narrowed them (configs saved
    /// before the field existed read as LeNet-5's).
    #[serde(default)]
    pub widths: LeNet5Widths,
}

/// The widths of LeNet-5's hidden layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeNet5Widths {
    /// Filters of the first convolution.
    pub conv1: usize,
    /// Filters of the second convolution.
    pub conv2: usize,
    /// Units of the first fully connected layer.
    pub fc1: usize,
    /// Units of the second fully connected layer.
    pub fc2: usize,
}

impl Default for LeNet5Widths {
    /// LeNet-5's 6 and 16 filters, 120 and 84 units.
    fn default() -> Self {
        Self {
            conv1: 6,
            conv2: 16,
            fc1: 120,
            fc2: 84,
        }
    }
}

impl LeNet5Config {
    /// LeNet-5 for images of `image` size with `classes` classes.
    pub fn new(channels: usize, image: [usize; 2], classes: usize) -> Self {
        Self {
            channels,
            image,
            classes,
            widths: LeNet5Widths::default(),
        }
    }

    /// The dependency groups of structured pruning, named after their layers: the filters of
    /// `conv1` (output channels of its weight and bias, input channels of `conv2`), the filters
    /// of `conv2` (read by `fc1` as blocks of `rows * cols` inputs, the flattened feature
    /// map), and the neurons of `fc1` and `fc2`. `prefix` as for [`MlpConfig::unit_groups`].
    pub fn unit_groups(&self, prefix: &str) -> Result<Vec<UnitGroup>> {
        let [h, w] = self.features_size()?;
        let filters = |layer: &str, units: usize, consumer: UnitSlice| UnitGroup {
            name: format!("{prefix}{layer}"),
            units,
            producers: vec![
                UnitSlice::new(format!("{prefix}{layer}.weight"), 0),
                UnitSlice::new(format!("{prefix}{layer}.bias"), 0),
            ],
            consumers: vec![consumer],
        };
        Ok(vec![
            // conv2's weight is `[out, in, kh, kw]`: its inputs run along axis 1.
            filters(
                "conv1",
                self.widths.conv1,
                UnitSlice::new(format!("{prefix}conv2.weight"), 1),
            ),
            // fc1's is burn's `[in, out]`, each filter a block of the flattened feature map.
            filters(
                "conv2",
                self.widths.conv2,
                UnitSlice::new(format!("{prefix}fc1.weight"), 0).with_block(h * w),
            ),
            neuron_group(prefix, "fc1", "fc2", self.widths.fc1),
            neuron_group(prefix, "fc2", "fc3", self.widths.fc2),
        ])
    }

    /// The same network with the widths that structured pruning kept (by the names of
    /// [`LeNet5Config::unit_groups`]); a group not in `kept` keeps its width.
    pub fn with_kept(&self, prefix: &str, kept: &BTreeMap<String, Vec<usize>>) -> Self {
        let width =
            |layer: &str, old: usize| kept.get(&format!("{prefix}{layer}")).map_or(old, Vec::len);
        let w = self.widths;
        Self {
            widths: LeNet5Widths {
                conv1: width("conv1", w.conv1),
                conv2: width("conv2", w.conv2),
                fc1: width("fc1", w.fc1),
                fc2: width("fc2", w.fc2),
            },
            ..self.clone()
        }
    }

    /// Height and width of the feature map that enters the first fully connected layer.
    pub fn features_size(&self) -> Result<[usize; 2]> {
        // conv1 keeps the size (padding 2), pool halves, conv2 (5x5, no padding) takes 4 away,
        // pool halves again.
        let side = |s: usize, field: &'static str| -> Result<usize> {
            match (s / 2).checked_sub(4).map(|s| s / 2) {
                Some(out) if out > 0 => Ok(out),
                _ => Err(invalid(field, s, "LeNet-5 needs images of at least 12x12")),
            }
        };
        Ok([
            side(self.image[0], "image.rows")?,
            side(self.image[1], "image.cols")?,
        ])
    }

    /// How many parameters the model has, in checked arithmetic (see
    /// [`MlpConfig::parameter_count`]).
    pub fn parameter_count(&self) -> Result<usize> {
        let [h, w] = self.features_size()?;
        let too_big = || {
            invalid(
                "image",
                format!("{:?}", self.image),
                "more parameters than fit in memory",
            )
        };
        // (inputs + 1 bias) * outputs per layer; a 5x5 filter reads 25 inputs per channel.
        let layer =
            |inputs: Option<usize>, outputs: usize| inputs?.checked_add(1)?.checked_mul(outputs);
        let ws = self.widths;
        [
            layer(self.channels.checked_mul(25), ws.conv1),
            layer(ws.conv1.checked_mul(25), ws.conv2),
            layer(
                h.checked_mul(w).and_then(|a| a.checked_mul(ws.conv2)),
                ws.fc1,
            ),
            layer(Some(ws.fc1), ws.fc2),
            layer(Some(ws.fc2), self.classes),
        ]
        .into_iter()
        .try_fold(0usize, |sum, n| sum.checked_add(n?))
        .ok_or_else(too_big)
    }

    /// Multiply-accumulates of one image's forward pass: each convolution's output positions
    /// times its 5x5 filters' reads, then the fully connected layers.
    pub fn macs(&self) -> Result<usize> {
        self.parameter_count()?;
        let [h, w] = self.features_size()?;
        let [rows, cols] = self.image;
        let ws = self.widths;
        // conv1 keeps the image size; conv2 sees the pooled map less its 5x5 border.
        let conv2_positions = (rows / 2 - 4) * (cols / 2 - 4);
        Ok(rows * cols * ws.conv1 * self.channels * 25
            + conv2_positions * ws.conv2 * ws.conv1 * 25
            + ws.conv2 * h * w * ws.fc1
            + ws.fc1 * ws.fc2
            + ws.fc2 * self.classes)
    }

    /// Check the config and build the model on `device`, its parameters drawn from the
    /// device RNG now (seed it first with `device.seed`).
    pub fn init(&self, device: &Device) -> Result<LeNet5> {
        positive("channels", self.channels)?;
        positive("classes", self.classes)?;
        let ws = self.widths;
        for (field, width) in [
            ("widths.conv1", ws.conv1),
            ("widths.conv2", ws.conv2),
            ("widths.fc1", ws.fc1),
            ("widths.fc2", ws.fc2),
        ] {
            positive(field, width)?;
        }
        self.parameter_count()?;
        let [h, w] = self.features_size()?;
        Ok(init_now(LeNet5 {
            conv1: Conv2d::new(
                &Conv2dConfig::new([self.channels, ws.conv1], [5, 5])
                    .with_padding(PaddingConfig2d::Explicit(2, 2, 2, 2)),
                device,
            ),
            conv2: Conv2d::new(&Conv2dConfig::new([ws.conv1, ws.conv2], [5, 5]), device),
            fc1: Linear::new(&LinearConfig::new(ws.conv2 * h * w, ws.fc1), device),
            fc2: Linear::new(&LinearConfig::new(ws.fc1, ws.fc2), device),
            fc3: Linear::new(&LinearConfig::new(ws.fc2, self.classes), device),
            pool: MaxPool2d::new(&MaxPool2dConfig::new([2, 2]).with_strides([2, 2])),
            activation: Relu::new(),
        }))
    }
}

/// See [`LeNet5Config`].
#[derive(Module, Debug)]
pub struct LeNet5 {
    /// First convolution.
    pub conv1: Conv2d,
    /// Second convolution.
    pub conv2: Conv2d,
    /// First fully connected layer.
    pub fc1: Linear,
    /// Second fully connected layer.
    pub fc2: Linear,
    /// Output layer.
    pub fc3: Linear,
    pool: MaxPool2d,
    activation: Relu,
}

impl QuantLayers for LeNet5 {
    fn quant_layers(&mut self) -> Vec<(String, &mut dyn QuantLayer)> {
        vec![
            ("conv1".into(), &mut self.conv1),
            ("conv2".into(), &mut self.conv2),
            ("fc1".into(), &mut self.fc1),
            ("fc2".into(), &mut self.fc2),
            ("fc3".into(), &mut self.fc3),
        ]
    }
}

impl LeNet5 {
    /// The logits, and each hidden layer's activations into `seen` when asked.
    fn forward_seen(
        &self,
        images: Tensor<4>,
        mut seen: Option<&mut Vec<(String, Tensor<3>)>>,
    ) -> Tensor<2> {
        let relu = &self.activation;
        // The activations are reshaped only when asked for, off the plain forward pass.
        let mut see = |name: &str, x: &dyn Fn() -> Tensor<3>| {
            if let Some(seen) = seen.as_deref_mut() {
                seen.push((name.to_string(), x()));
            }
        };
        let x = relu.forward(self.conv1.forward(images));
        see("conv1", &|| x.clone().flatten(2, 3));
        let x = relu.forward(self.conv2.forward(self.pool.forward(x)));
        see("conv2", &|| x.clone().flatten(2, 3));
        let x: Tensor<2> = self.pool.forward(x).flatten(1, 3);
        let x = relu.forward(self.fc1.forward(x));
        see("fc1", &|| x.clone().unsqueeze_dim(2));
        let x = relu.forward(self.fc2.forward(x));
        see("fc2", &|| x.clone().unsqueeze_dim(2));
        self.fc3.forward(x)
    }
}

classifier_seeing_units!(LeNet5);

/// The group of a fully connected layer's neurons: output columns of `<layer>.weight` (burn's
/// `[in, out]`) and entries of `<layer>.bias`, input rows of `<next>.weight`.
pub(crate) fn neuron_group(prefix: &str, layer: &str, next: &str, units: usize) -> UnitGroup {
    UnitGroup {
        name: format!("{prefix}{layer}"),
        units,
        producers: vec![
            UnitSlice::new(format!("{prefix}{layer}.weight"), 1),
            UnitSlice::new(format!("{prefix}{layer}.bias"), 0),
        ],
        consumers: vec![UnitSlice::new(format!("{prefix}{next}.weight"), 0)],
    }
}

pub(crate) fn positive(field: &'static str, value: usize) -> Result<()> {
    if value == 0 {
        return Err(invalid(field, value, "must be at least 1"));
    }
    Ok(())
}

pub(crate) fn invalid(field: &'static str, value: impl ToString, reason: &'static str) -> Error {
    Error::InvalidConfig {
        field,
        value: value.to_string(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ember_tensor::params;

    #[test]
    fn lenet_300_100_has_the_published_parameter_count() {
        let mlp = MlpConfig::lenet_300_100(784, 10)
            .init(&Device::flex())
            .unwrap();
        // 784*300+300 + 300*100+100 + 100*10+10, as in LeCun et al. 1998 and Han et al. 2015.
        assert_eq!(mlp.num_params(), 266_610);
        let config = MlpConfig::lenet_300_100(784, 10);
        assert_eq!(config.parameter_count().unwrap(), 266_610);
        let huge = MlpConfig {
            hidden: vec![usize::MAX / 2, 4],
            ..config
        };
        assert!(huge.parameter_count().is_err());
        let paths: Vec<String> = params(&mlp).into_iter().map(|p| p.path).collect();
        assert_eq!(paths[0], "layers.0.weight");
        assert_eq!(paths[5], "layers.2.bias");
    }

    #[test]
    fn lenet5_sizes_follow_the_data() {
        let device = Device::flex();
        let mnist = LeNet5Config::new(1, [28, 28], 10).init(&device).unwrap();
        // conv 6*25+6, conv 16*6*25+16, fc 400*120+120, 120*84+84, 84*10+10.
        assert_eq!(mnist.num_params(), 156 + 2416 + 48_120 + 10_164 + 850);
        let logits = mnist.forward(Tensor::zeros([2, 1, 28, 28], &device));
        assert_eq!(logits.dims(), [2, 10]);

        // 32x36: conv1 keeps 32x36, pool 16x18, conv2 12x14, pool 6x7.
        let other_config = LeNet5Config::new(3, [32, 36], 7);
        let other = other_config.init(&device).unwrap();
        assert_eq!(other.fc1.weight.dims(), [16 * 6 * 7, 120]);
        for (config, model) in [
            (LeNet5Config::new(1, [28, 28], 10), &mnist),
            (other_config, &other),
        ] {
            assert_eq!(config.parameter_count().unwrap(), model.num_params());
        }
        assert!(
            LeNet5Config::new(1, [usize::MAX, 64], 10)
                .parameter_count()
                .is_err()
        );
        // conv1 28*28*6*25, conv2 10*10*16*6*25, fc 400*120 + 120*84 + 84*10: LeNet-5's 0.42 M.
        let lenet5 = LeNet5Config::new(1, [28, 28], 10);
        assert_eq!(
            lenet5.macs().unwrap(),
            117_600 + 240_000 + 48_000 + 10_080 + 840
        );
        assert_eq!(
            MlpConfig::lenet_300_100(784, 10).macs(),
            784 * 300 + 300 * 100 + 100 * 10
        );
        assert_eq!(
            other.forward(Tensor::zeros([1, 3, 32, 36], &device)).dims(),
            [1, 7]
        );
    }

    #[test]
    fn impossible_configs_are_typed_errors() {
        let device = Device::flex();
        assert!(matches!(
            LeNet5Config::new(1, [8, 28], 10).init(&device),
            Err(Error::InvalidConfig {
                field: "image.rows",
                ..
            })
        ));
        assert!(matches!(
            MlpConfig::lenet_300_100(784, 0).init(&device),
            Err(Error::InvalidConfig {
                field: "classes",
                ..
            })
        ));
        let mut bad_dropout = MlpConfig::lenet_300_100(784, 10);
        bad_dropout.dropout = 1.5;
        assert!(matches!(
            bad_dropout.init(&device),
            Err(Error::InvalidConfig {
                field: "dropout",
                ..
            })
        ));
    }
}
