//! Reference models: multi-layer perceptrons (LeNet-300-100, Hinton's MNIST nets) and
//! LeNet-5. Input size and class count come from the data, not from constants.

use std::collections::BTreeMap;

use burn::module::Module;
use burn::nn::conv::Conv2dConfig;
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Dropout, DropoutConfig, LinearConfig, PaddingConfig2d, Relu};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use ember_quant::nn::{Conv2d, Linear, QuantLayer, QuantLayers};
use ember_tensor::{Classifier, UnitGroup, UnitSlice, init_now};

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

    /// The dependency groups of structured pruning: one per hidden layer, its neurons being
    /// output columns of `layers.<i>.weight` (burn's `[in, out]`) and entries of
    /// `layers.<i>.bias`, read as input rows of `layers.<i+1>.weight`. `prefix` is the model's
    /// path inside a larger one (`Mlp.` inside [`crate::Model`], empty for a bare `Mlp`).
    pub fn neuron_groups(&self, prefix: &str) -> Vec<UnitGroup> {
        self.hidden
            .iter()
            .enumerate()
            .map(|(i, &units)| UnitGroup {
                name: format!("{prefix}layers.{i}"),
                units,
                producers: vec![
                    UnitSlice::new(format!("{prefix}layers.{i}.weight"), 1),
                    UnitSlice::new(format!("{prefix}layers.{i}.bias"), 0),
                ],
                consumers: vec![UnitSlice::new(
                    format!("{prefix}layers.{}.weight", i + 1),
                    0,
                )],
            })
            .collect()
    }

    /// The same network with the hidden widths that structured pruning kept (the number of
    /// units each of [`MlpConfig::neuron_groups`] keeps, by group name).
    pub fn with_kept(&self, prefix: &str, kept: &BTreeMap<String, Vec<usize>>) -> Result<Self> {
        let hidden = self
            .neuron_groups(prefix)
            .iter()
            .map(|g| {
                kept.get(&g.name).map(Vec::len).ok_or_else(|| {
                    invalid("hidden", &g.name, "structured pruning kept no list for it")
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            hidden,
            ..self.clone()
        })
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

impl Classifier for Mlp {
    fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let mut x: Tensor<2> = images.flatten(1, 3);
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(x);
            if i < last {
                x = self.dropout.forward(self.activation.forward(x));
            }
        }
        x
    }
}

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
}

impl LeNet5Config {
    /// LeNet-5 for images of `image` size with `classes` classes.
    pub fn new(channels: usize, image: [usize; 2], classes: usize) -> Self {
        Self {
            channels,
            image,
            classes,
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
        let conv1 = self
            .channels
            .checked_mul(25)
            .and_then(|k| k.checked_add(1))
            .and_then(|k| k.checked_mul(6))
            .ok_or_else(too_big)?;
        let fc1 = h
            .checked_mul(w)
            .and_then(|a| a.checked_mul(16))
            .and_then(|a| a.checked_add(1))
            .and_then(|a| a.checked_mul(120))
            .ok_or_else(too_big)?;
        let fc3 = self.classes.checked_mul(85).ok_or_else(too_big)?;
        // conv2 (6 -> 16, 5x5) and fc2 (120 -> 84) have fixed sizes.
        [conv1, fc1, fc3, 16 * (6 * 25 + 1), 84 * 121]
            .into_iter()
            .try_fold(0usize, usize::checked_add)
            .ok_or_else(too_big)
    }

    /// Check the config and build the model on `device`, its parameters drawn from the
    /// device RNG now (seed it first with `device.seed`).
    pub fn init(&self, device: &Device) -> Result<LeNet5> {
        positive("channels", self.channels)?;
        positive("classes", self.classes)?;
        let [h, w] = self.features_size()?;
        Ok(init_now(LeNet5 {
            conv1: Conv2d::new(
                &Conv2dConfig::new([self.channels, 6], [5, 5])
                    .with_padding(PaddingConfig2d::Explicit(2, 2, 2, 2)),
                device,
            ),
            conv2: Conv2d::new(&Conv2dConfig::new([6, 16], [5, 5]), device),
            fc1: Linear::new(&LinearConfig::new(16 * h * w, 120), device),
            fc2: Linear::new(&LinearConfig::new(120, 84), device),
            fc3: Linear::new(&LinearConfig::new(84, self.classes), device),
            pool: MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
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

impl Classifier for LeNet5 {
    fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let relu = &self.activation;
        let x = self.pool.forward(relu.forward(self.conv1.forward(images)));
        let x = self.pool.forward(relu.forward(self.conv2.forward(x)));
        let x: Tensor<2> = x.flatten(1, 3);
        let x = relu.forward(self.fc1.forward(x));
        let x = relu.forward(self.fc2.forward(x));
        self.fc3.forward(x)
    }
}

fn positive(field: &'static str, value: usize) -> Result<()> {
    if value == 0 {
        return Err(invalid(field, value, "must be at least 1"));
    }
    Ok(())
}

fn invalid(field: &'static str, value: impl ToString, reason: &'static str) -> Error {
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
