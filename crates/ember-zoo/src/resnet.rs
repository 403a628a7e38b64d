//! A small residual network with batch normalization: the reference model whose structured
//! pruning needs dependency groups beyond one layer and the next. The channels of the residual
//! stream are produced by the stem and by the last convolution of every block (the sums must
//! line up) and read by every block and by the head: removing one removes it everywhere at
//! once.

use std::collections::BTreeMap;

use burn::module::Module;
use burn::nn::conv::Conv2dConfig;
use burn::nn::pool::MaxPool2dConfig;
use burn::nn::{BatchNorm, BatchNormConfig, LinearConfig, PaddingConfig2d, Relu};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use ember_quant::nn::{Conv2d, Linear, MaxPool2d, QuantLayer, QuantLayers};
use ember_tensor::{Classifier, UnitActivations, UnitGroup, UnitSlice, init_now};

use crate::Result;
use crate::models::{classifier_seeing_units, invalid, positive};

/// A 3x3 convolution of the stem (`channels -> width`, batch norm, ReLU, 2x2 max pooling),
/// residual blocks (`width -> inner -> width`, each 3x3 convolution followed by batch norm,
/// the block's input added before the last ReLU), global average pooling and a linear head.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResNetConfig {
    /// Input channels.
    pub channels: usize,
    /// Image height and width (at least 2x2).
    pub image: [usize; 2],
    /// Number of classes.
    pub classes: usize,
    /// Channels of the residual stream.
    pub width: usize,
    /// The inner width of each residual block.
    pub blocks: Vec<usize>,
}

/// Parameters of a batch norm over `n` channels, as burn counts them: scale, shift, running
/// mean and running variance.
fn norm_params(n: usize) -> Option<usize> {
    n.checked_mul(4)
}

/// Parameters of a bias-free 3x3 convolution.
fn conv_params(inputs: usize, outputs: usize) -> Option<usize> {
    inputs.checked_mul(9)?.checked_mul(outputs)
}

impl ResNetConfig {
    /// The small residual network of the reproduction runs: a 16-channel stream and two blocks
    /// of 16 inner channels.
    pub fn small(channels: usize, image: [usize; 2], classes: usize) -> Self {
        Self {
            channels,
            image,
            classes,
            width: 16,
            blocks: vec![16, 16],
        }
    }

    /// How many parameters the model has (batch norms' running statistics included, as burn
    /// counts them), in checked arithmetic.
    pub fn parameter_count(&self) -> Result<usize> {
        let c = self.width;
        let mut parts = vec![
            conv_params(self.channels, c),
            norm_params(c),
            c.checked_add(1).and_then(|i| i.checked_mul(self.classes)),
        ];
        for &m in &self.blocks {
            parts.extend([
                conv_params(c, m),
                norm_params(m),
                conv_params(m, c),
                norm_params(c),
            ]);
        }
        parts
            .into_iter()
            .try_fold(0usize, |sum, n| sum.checked_add(n?))
            .ok_or_else(|| invalid("width", self.width, "more parameters than fit in memory"))
    }

    /// Multiply-accumulates of one image's forward pass.
    pub fn macs(&self) -> Result<usize> {
        self.parameter_count()?;
        let [rows, cols] = self.image;
        let pooled = (rows / 2) * (cols / 2);
        let c = self.width;
        let blocks: usize = self.blocks.iter().map(|&m| 2 * pooled * 9 * c * m).sum();
        Ok(rows * cols * 9 * self.channels * c + blocks + c * self.classes)
    }

    /// The dependency groups: `stream` (the residual stream's channels, produced by the stem
    /// and by every block's second convolution and batch norm, read by every block's first
    /// convolution and by the head) and `blocks.<i>` (a block's inner channels, produced by its
    /// first convolution and batch norm, read by its second). A batch norm's scale, shift and
    /// running statistics are all producers: they index the same channels.
    pub fn unit_groups(&self, prefix: &str) -> Vec<UnitGroup> {
        let slice = |path: String, axis| UnitSlice::new(format!("{prefix}{path}"), axis);
        let conv_and_norm = |conv: &str, norm: &str| {
            let mut slices = vec![slice(format!("{conv}.weight"), 0)];
            for stat in ["gamma", "beta", "running_mean", "running_var"] {
                slices.push(slice(format!("{norm}.{stat}"), 0));
            }
            slices
        };
        let mut stream = UnitGroup {
            name: format!("{prefix}stream"),
            units: self.width,
            producers: conv_and_norm("stem", "stem_norm"),
            // The head's weight is burn's `[in, out]`: its inputs run along axis 0.
            consumers: vec![slice("head.weight".into(), 0)],
        };
        let mut groups = vec![];
        for (i, &inner) in self.blocks.iter().enumerate() {
            let block = format!("blocks.{i}");
            stream.producers.extend(conv_and_norm(
                &format!("{block}.conv2"),
                &format!("{block}.norm2"),
            ));
            stream
                .consumers
                .push(slice(format!("{block}.conv1.weight"), 1));
            groups.push(UnitGroup {
                name: format!("{prefix}{block}"),
                units: inner,
                producers: conv_and_norm(&format!("{block}.conv1"), &format!("{block}.norm1")),
                consumers: vec![slice(format!("{block}.conv2.weight"), 1)],
            });
        }
        groups.insert(0, stream);
        groups
    }

    /// The same network with the widths structured pruning kept (by the names of
    /// [`ResNetConfig::unit_groups`]); a group not in `kept` keeps its width.
    pub fn with_kept(&self, prefix: &str, kept: &BTreeMap<String, Vec<usize>>) -> Self {
        let width = |name: String, old: usize| kept.get(&name).map_or(old, Vec::len);
        Self {
            width: width(format!("{prefix}stream"), self.width),
            blocks: self
                .blocks
                .iter()
                .enumerate()
                .map(|(i, &m)| width(format!("{prefix}blocks.{i}"), m))
                .collect(),
            ..self.clone()
        }
    }

    /// Check the config and build the model on `device`, its parameters drawn from the device
    /// RNG now.
    pub fn init(&self, device: &Device) -> Result<ResNet> {
        positive("channels", self.channels)?;
        positive("classes", self.classes)?;
        positive("width", self.width)?;
        if let Some(&zero) = self.blocks.iter().find(|&&m| m == 0) {
            return Err(invalid(
                "blocks",
                zero,
                "every inner width must be at least 1",
            ));
        }
        if self.image.iter().any(|&s| s < 2) {
            return Err(invalid(
                "image",
                format!("{:?}", self.image),
                "the stem's pooling needs at least 2x2",
            ));
        }
        self.parameter_count()?;
        let conv = |inputs: usize, outputs: usize| {
            Conv2d::new(
                &Conv2dConfig::new([inputs, outputs], [3, 3])
                    .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                    .with_bias(false),
                device,
            )
        };
        let norm = |n: usize| BatchNormConfig::new(n).init(device);
        let c = self.width;
        Ok(init_now(ResNet {
            stem: conv(self.channels, c),
            stem_norm: norm(c),
            blocks: self
                .blocks
                .iter()
                .map(|&m| ResidualBlock {
                    conv1: conv(c, m),
                    norm1: norm(m),
                    conv2: conv(m, c),
                    norm2: norm(c),
                })
                .collect(),
            head: Linear::new(&LinearConfig::new(c, self.classes), device),
            pool: MaxPool2d::new(&MaxPool2dConfig::new([2, 2]).with_strides([2, 2])),
            activation: Relu::new(),
        }))
    }
}

/// See [`ResNetConfig`].
#[derive(Module, Debug)]
pub struct ResNet {
    /// The stem's convolution.
    pub stem: Conv2d,
    /// The stem's batch norm.
    pub stem_norm: BatchNorm,
    /// The residual blocks.
    pub blocks: Vec<ResidualBlock>,
    /// The classifier on the pooled stream.
    pub head: Linear,
    pool: MaxPool2d,
    activation: Relu,
}

/// `relu(x + norm2(conv2(relu(norm1(conv1(x))))))`.
#[derive(Module, Debug)]
pub struct ResidualBlock {
    /// `width -> inner`.
    pub conv1: Conv2d,
    /// Over the inner channels.
    pub norm1: BatchNorm,
    /// `inner -> width`.
    pub conv2: Conv2d,
    /// Over the stream's channels.
    pub norm2: BatchNorm,
}

impl ResNet {
    fn forward_seen(
        &self,
        images: Tensor<4>,
        mut seen: Option<&mut Vec<(String, Tensor<3>)>>,
    ) -> Tensor<2> {
        let relu = &self.activation;
        let mut see = |name: String, x: &Tensor<4>| {
            if let Some(seen) = seen.as_deref_mut() {
                seen.push((name, x.clone().flatten(2, 3)));
            }
        };
        let x = relu.forward(self.stem_norm.forward(self.stem.forward(images)));
        let mut x = self.pool.forward(x);
        for (i, block) in self.blocks.iter().enumerate() {
            let inner = relu.forward(block.norm1.forward(block.conv1.forward(x.clone())));
            see(format!("blocks.{i}"), &inner);
            x = relu.forward(x + block.norm2.forward(block.conv2.forward(inner)));
        }
        // The stream as the head reads it, after the last block.
        see("stream".into(), &x);
        let pooled: Tensor<2> = x.mean_dim(3).mean_dim(2).flatten(1, 3);
        self.head.forward(pooled)
    }
}

classifier_seeing_units!(ResNet);

impl QuantLayers for ResNet {
    fn quant_layers(&mut self) -> Vec<(String, &mut dyn QuantLayer)> {
        let mut layers: Vec<(String, &mut dyn QuantLayer)> = vec![("stem".into(), &mut self.stem)];
        for (i, block) in self.blocks.iter_mut().enumerate() {
            layers.push((format!("blocks.{i}.conv1"), &mut block.conv1));
            layers.push((format!("blocks.{i}.conv2"), &mut block.conv2));
        }
        layers.push(("head".into(), &mut self.head));
        layers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_the_config() {
        let device = Device::flex();
        let config = ResNetConfig::small(1, [28, 28], 10);
        let model = config.init(&device).unwrap();
        assert_eq!(model.num_params(), config.parameter_count().unwrap());
        // stem 1*9*16 + 4*16, two blocks of 2 * (16*9*16 + 4*16), head 17*10.
        assert_eq!(model.num_params(), 144 + 64 + 2 * 2 * (2304 + 64) + 170);
        assert_eq!(
            model.forward(Tensor::zeros([2, 1, 28, 28], &device)).dims(),
            [2, 10]
        );
        // 28*28*9*16 for the stem, 2 blocks * 2 convs * 14*14*9*16*16, the head 16*10.
        assert_eq!(config.macs().unwrap(), 112_896 + 4 * 451_584 + 160);
        assert!(matches!(
            ResNetConfig {
                blocks: vec![0],
                ..config.clone()
            }
            .init(&device),
            Err(crate::Error::InvalidConfig {
                field: "blocks",
                ..
            })
        ));
    }
}
