//! Prune a burn model of your own: plain `burn::nn` layers, no Ember types in the model.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Linear, LinearConfig, Relu};
use burn::tensor::{Device, Distribution, Tensor};
use ember_prune::{PruneConfig, export_sparse, load_sparse, prune};

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
    device.seed(1);
    let model = Net::new(&device);
    // Half of every Linear and Conv2d weight, ranked by magnitude across the whole model.
    let (pruned, report) = prune(model, &PruneConfig::global_magnitude(0.5))?;
    println!("pruned to {:.1} % sparsity", 100.0 * report.sparsity());
    for layer in &report.layers {
        println!("  {}: {:.1} %", layer.path, 100.0 * layer.sparsity());
    }
    // The masks stay attached: fine-tune with your own loop and the zeros stay zero. Save the
    // zeros as a sparse file and load it into a fresh model of the same shape.
    let dir = std::env::temp_dir().join("ember-example-prune");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("net.safetensors");
    let bytes = export_sparse(&pruned, &path)?;
    let loaded = load_sparse(Net::new(&device), &path)?;
    let x = Tensor::<4>::random([4, 1, 12, 12], Distribution::Default, &device);
    let before = pruned.forward(x.clone()).into_data();
    let after = loaded.forward(x).into_data();
    assert_eq!(before, after, "the reloaded model computes the same logits");
    println!(
        "saved {bytes} bytes to {}, reloaded with identical logits",
        path.display()
    );
    Ok(())
}
