//! Binary networks (XNOR-Net's recipe on MNIST): the first and last layers in float, as the
//! papers keep them, the ones between binary (`ember_quant::BinaryLinear`,
//! `ember_quant::BinaryConv2d`), each binarized input normalized by a batch norm first, so
//! that its signs split around its mean. [`BinaryMlp`] is a multi-layer perceptron,
//! [`BinaryCnn`] a LeNet-5-shaped convolutional network.

use burn::module::Module;
use burn::nn::conv::Conv2dConfig;
use burn::nn::pool::MaxPool2dConfig;
use burn::nn::{BatchNorm, BatchNormConfig, LinearConfig, PaddingConfig2d};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use ember_kernels::BinaryKernel;
use ember_quant::nn::{Conv2d, Linear, MaxPool2d};
use ember_quant::{BinaryConv2d, BinaryLinear, BinaryScale};
use ember_tensor::{Classifier, init_now};

use crate::Result;
use crate::models::{LeNet5Config, invalid, positive};

/// `input -> hidden[0]` in float, then `hidden[i] -> hidden[i + 1]` binary, each after a batch
/// norm, then `hidden[last] -> classes` in float after a last batch norm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BinaryMlpConfig {
    /// Input features.
    pub input: usize,
    /// Hidden widths; at least two, so that one layer is binary.
    pub hidden: Vec<usize>,
    /// Classes.
    pub classes: usize,
    /// The binary weights' scale.
    pub scale: BinaryScale,
}

impl BinaryMlpConfig {
    /// Check the config and build the model on `device` from the device RNG.
    pub fn init(&self, device: &Device) -> Result<BinaryMlp> {
        positive("input", self.input)?;
        positive("classes", self.classes)?;
        if self.hidden.len() < 2 || self.hidden.contains(&0) {
            return Err(invalid(
                "hidden",
                format!("{:?}", self.hidden),
                "needs two or more widths of at least 1 (the layers between them are binary)",
            ));
        }
        let last = *self.hidden.last().expect("checked above");
        Ok(init_now(BinaryMlp {
            first: Linear::new(&LinearConfig::new(self.input, self.hidden[0]), device),
            norms: self
                .hidden
                .iter()
                .map(|&w| BatchNormConfig::new(w).init(device))
                .collect(),
            binary: self
                .hidden
                .windows(2)
                .map(|w| {
                    let latent = Linear::new(&LinearConfig::new(w[0], w[1]), device);
                    BinaryLinear::from_linear(&latent, self.scale)
                })
                .collect(),
            last: Linear::new(&LinearConfig::new(last, self.classes), device),
        }))
    }
}

/// See [`BinaryMlpConfig`].
#[derive(Module, Debug)]
pub struct BinaryMlp {
    /// The float input layer.
    pub first: Linear,
    /// A batch norm before each binary layer and before the output layer.
    pub norms: Vec<BatchNorm>,
    /// The binary hidden layers.
    pub binary: Vec<BinaryLinear>,
    /// The float output layer.
    pub last: Linear,
}

impl BinaryMlp {
    /// Pack every binary layer for `kernel` (or drop the packed forms with `None`).
    pub fn pack(&mut self, kernel: Option<BinaryKernel>) -> ember_quant::Result<()> {
        for layer in &mut self.binary {
            layer.pack(kernel)?;
        }
        Ok(())
    }
}

impl Classifier for BinaryMlp {
    fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let mut x = self.first.forward(images.flatten(1, 3));
        for (norm, layer) in self.norms.iter().zip(&self.binary) {
            x = layer.forward(norm.forward(x));
        }
        let last_norm = &self.norms[self.norms.len() - 1];
        self.last.forward(last_norm.forward(x))
    }
}

/// LeNet-5's shape with binary middle layers: a float 5x5 convolution (padding 2), max pooling
/// and a batch norm; a binary 5x5 convolution, pooling and a batch norm; a binary fully
/// connected layer and a batch norm; a float output layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BinaryCnnConfig {
    /// Input channels.
    pub channels: usize,
    /// Image rows and columns (at least 12x12, as LeNet-5).
    pub image: [usize; 2],
    /// Classes.
    pub classes: usize,
    /// Filters of the float and the binary convolution, and the binary hidden layer's width.
    pub widths: [usize; 3],
    /// The binary weights' scale.
    pub scale: BinaryScale,
}

impl BinaryCnnConfig {
    /// Check the config and build the model on `device` from the device RNG.
    pub fn init(&self, device: &Device) -> Result<BinaryCnn> {
        positive("channels", self.channels)?;
        positive("classes", self.classes)?;
        for (field, width) in ["widths[0]", "widths[1]", "widths[2]"]
            .into_iter()
            .zip(self.widths)
        {
            positive(field, width)?;
        }
        // The same feature map as LeNet-5's: the rule lives there.
        let [h, w] = LeNet5Config::new(self.channels, self.image, self.classes).features_size()?;
        let [c1, c2, hidden] = self.widths;
        let features = c2
            .checked_mul(h * w)
            .ok_or_else(|| invalid("widths[1]", c2, "too many features"))?;
        let latent_conv = Conv2d::new(&Conv2dConfig::new([c1, c2], [5, 5]), device);
        let latent_fc = Linear::new(&LinearConfig::new(features, hidden), device);
        Ok(init_now(BinaryCnn {
            first: Conv2d::new(
                &Conv2dConfig::new([self.channels, c1], [5, 5])
                    .with_padding(PaddingConfig2d::Explicit(2, 2, 2, 2)),
                device,
            ),
            conv_norms: vec![
                BatchNormConfig::new(c1).init(device),
                BatchNormConfig::new(c2).init(device),
            ],
            // A plain 5x5 convolution without groups or `Same` padding always converts.
            conv: BinaryConv2d::from_conv(&latent_conv, self.scale).map_err(|_| {
                invalid(
                    "widths",
                    format!("{:?}", self.widths),
                    "the binary convolution cannot be built",
                )
            })?,
            fc: BinaryLinear::from_linear(&latent_fc, self.scale),
            fc_norm: BatchNormConfig::new(hidden).init(device),
            last: Linear::new(&LinearConfig::new(hidden, self.classes), device),
            pool: MaxPool2d::new(&MaxPool2dConfig::new([2, 2]).with_strides([2, 2])),
        }))
    }
}

/// See [`BinaryCnnConfig`].
#[derive(Module, Debug)]
pub struct BinaryCnn {
    /// The float input convolution.
    pub first: Conv2d,
    /// The batch norms after each convolution's pooling.
    pub conv_norms: Vec<BatchNorm>,
    /// The binary convolution.
    pub conv: BinaryConv2d,
    /// The binary fully connected layer.
    pub fc: BinaryLinear,
    /// Its batch norm.
    pub fc_norm: BatchNorm,
    /// The float output layer.
    pub last: Linear,
    pool: MaxPool2d,
}

impl BinaryCnn {
    /// Pack both binary layers for `kernel` (or drop the packed forms with `None`).
    pub fn pack(&mut self, kernel: Option<BinaryKernel>) -> ember_quant::Result<()> {
        self.conv.pack(kernel)?;
        self.fc.pack(kernel)
    }
}

impl Classifier for BinaryCnn {
    fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let x = self.conv_norms[0].forward(self.pool.forward(self.first.forward(images)));
        let x = self.conv_norms[1].forward(self.pool.forward(self.conv.forward(x)));
        let x = self.fc_norm.forward(self.fc.forward(x.flatten(1, 3)));
        self.last.forward(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_binary_cnn_packs_to_the_same_function() {
        let device = Device::flex();
        device.seed(4);
        let config = BinaryCnnConfig {
            channels: 1,
            image: [28, 28],
            classes: 10,
            widths: [8, 16, 32],
            scale: BinaryScale::Analytic,
        };
        let mut model = config.init(&device).unwrap();
        let x = Tensor::<4>::random(
            [3, 1, 28, 28],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &device,
        );
        let float = ember_tensor::stats::read_f32(model.forward(x.clone())).unwrap();
        assert_eq!(float.len(), 3 * 10);
        model.pack(Some(BinaryKernel::detect())).unwrap();
        assert!(model.conv.packed().is_some());
        let packed = ember_tensor::stats::read_f32(model.forward(x)).unwrap();
        for (a, b) in float.iter().zip(&packed) {
            assert!((a - b).abs() <= 1e-3 * (1.0 + a.abs()), "{a} vs {b}");
        }
        let small = BinaryCnnConfig {
            image: [8, 8],
            ..config.clone()
        };
        assert!(small.init(&device).is_err());
        let empty = BinaryCnnConfig {
            widths: [8, 0, 32],
            ..config
        };
        assert!(matches!(
            empty.init(&device),
            Err(crate::Error::InvalidConfig { .. })
        ));
    }

    #[test]
    fn shapes_and_bad_configs() {
        let device = Device::flex();
        let config = BinaryMlpConfig {
            input: 784,
            hidden: vec![64, 32, 32],
            classes: 10,
            scale: BinaryScale::Learned,
        };
        let mut model = config.init(&device).unwrap();
        assert_eq!(model.binary.len(), 2);
        let x = Tensor::<4>::ones([3, 1, 28, 28], &device);
        let float = model.forward(x.clone());
        assert_eq!(float.dims(), [3, 10]);
        model.pack(Some(BinaryKernel::detect())).unwrap();
        let packed = model.forward(x);
        let (a, b) = (
            ember_tensor::stats::read_f32(float).unwrap(),
            ember_tensor::stats::read_f32(packed).unwrap(),
        );
        for (a, b) in a.iter().zip(&b) {
            assert!((a - b).abs() <= 1e-3 * (1.0 + a.abs()), "{a} vs {b}");
        }
        let one = BinaryMlpConfig {
            hidden: vec![64],
            ..config
        };
        assert!(matches!(
            one.init(&device),
            Err(crate::Error::InvalidConfig {
                field: "hidden",
                ..
            })
        ));
    }
}
