//! The small network the pruning tests share.

#![allow(dead_code)] // each test file uses its own part

use burn::module::Module;
use burn::nn::{Linear, LinearConfig, Relu};
use burn::tensor::{Device, Tensor};
use ember_tensor::Classifier;
use ember_tensor::testing::Blobs;

/// `Blobs::DIM` inputs, a hidden layer with ReLU, 4 classes.
#[derive(Module, Debug)]
pub struct Net {
    pub hidden: Linear,
    pub out: Linear,
    pub relu: Relu,
}

/// A seeded net. Every test that builds one holds `seeded()`: the tests share one flex RNG per
/// process, and a test that seeded without the lock could land between another's seed and draw.
pub fn net(seed: u64, device: &Device) -> Net {
    device.seed(seed);
    net_of_width(32, device)
}

/// `Net` with `width` hidden neurons, drawn from the device RNG as it is.
pub fn net_of_width(width: usize, device: &Device) -> Net {
    ember_tensor::init_now(Net {
        hidden: LinearConfig::new(Blobs::DIM, width).init(device),
        out: LinearConfig::new(width, 4).init(device),
        relu: Relu::new(),
    })
}

impl Net {
    /// The hidden layer's activations after ReLU, `[batch, width]`.
    pub fn hidden_activations(&self, images: Tensor<4>) -> Tensor<2> {
        self.relu.forward(self.hidden.forward(images.flatten(1, 3)))
    }
}

impl Classifier for Net {
    fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        self.out.forward(self.hidden_activations(images))
    }
}
