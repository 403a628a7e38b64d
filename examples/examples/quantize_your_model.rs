//! Quantize the weights of a burn model of your own to int8 and load the file back into plain
//! burn layers.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Linear, LinearConfig, Relu};
use burn::tensor::{Device, Distribution, Tensor};
use ember_quant::{WeightConfig, load_quantized_weights, quantize_weights, save_quantized};

/// Your model.
#[derive(Module, Debug)]
struct Net {
    conv: Conv2d,
    fc: Linear,
    relu: Relu,
}

impl Net {
    fn new(device: &Device) -> Self {
        Self {
            conv: Conv2dConfig::new([1, 8], [3, 3]).init(device),
            fc: LinearConfig::new(8 * 10 * 10, 10).init(device),
            relu: Relu::new(),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let x = self.relu.forward(self.conv.forward(x));
        self.fc.forward(x.flatten(1, 3))
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let device = Device::flex();
    device.seed(2);
    let model = Net::new(&device);
    let x = Tensor::<4>::random([4, 1, 12, 12], Distribution::Default, &device);
    let float = model.forward(x.clone());
    // int8, one scale per output channel, for every Linear, Conv2d and Embedding weight.
    let quantized = quantize_weights(model, &WeightConfig::int8_per_channel())?;
    let dir = std::env::temp_dir().join("ember-example-quantize");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("net.safetensors");
    let bytes = save_quantized(&quantized, &path)?;
    let loaded = load_quantized_weights(Net::new(&device), &path, &device)?;
    let worst = (loaded.model.forward(x) - float)
        .abs()
        .max()
        .into_scalar::<f32>();
    println!(
        "saved {bytes} bytes ({} weights quantized) to {}; worst logit change {worst:.4}",
        quantized.weights.len(),
        path.display()
    );
    assert!(worst < 0.05, "int8 weights move the logits by little");
    Ok(())
}
