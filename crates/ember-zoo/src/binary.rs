//! A binary multi-layer perceptron (XNOR-Net's recipe on MNIST): the first and last layers in
//! float, as the papers keep them, the hidden ones binary (`ember_quant::BinaryLinear`), each
//! binarized input normalized by a batch norm first, so that its signs split around its mean.

use burn::module::Module;
use burn::nn::{BatchNorm, BatchNormConfig, LinearConfig};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use ember_kernels::BinaryKernel;
use ember_quant::nn::Linear;
use ember_quant::{BinaryLinear, BinaryScale};
use ember_tensor::{Classifier, init_now};

use crate::Result;
use crate::models::{invalid, positive};

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

#[cfg(test)]
mod tests {
    use super::*;

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
