//! Static int8 for a model of your own: build it from Ember's drop-in `Linear` / `Conv2d`
//! (burn's fields and records, plus an input quantizer), list them through `QuantLayers`,
//! fold the batch norm into its convolution, calibrate on a few batches and convert. On a CPU
//! device the converted layers run on the integer kernels.

use burn::module::Module;
use burn::nn::conv::Conv2dConfig;
use burn::nn::{BatchNorm, BatchNormConfig, LinearConfig, Relu};
use burn::tensor::{Device, Distribution, Int, Tensor};
use ember_quant::nn::{Conv2d, Linear, MaxPool2d, QuantLayer, QuantLayers};
use ember_quant::{StaticConfig, fuse_conv_bn, quantize_static};
use ember_tensor::{Classifier, LabeledData};

/// Your model, with Ember's drop-in layers where quantization needs them.
#[derive(Module, Debug)]
struct Net {
    conv: Conv2d,
    bn: Option<BatchNorm>,
    pool: MaxPool2d,
    fc: Linear,
    relu: Relu,
}

impl Net {
    fn new(device: &Device) -> Self {
        let pool = burn::nn::pool::MaxPool2dConfig::new([2, 2]);
        Self {
            conv: Conv2d::new(&Conv2dConfig::new([1, 8], [3, 3]), device),
            bn: Some(BatchNormConfig::new(8).init(device)),
            pool: MaxPool2d::new(&pool),
            fc: Linear::new(&LinearConfig::new(8 * 5 * 5, 10), device),
            relu: Relu::new(),
        }
    }

    /// The convolution with the batch norm folded into it: one layer to quantize.
    fn fused(mut self) -> Result<Self, ember_quant::Error> {
        if let Some(bn) = self.bn.take() {
            self.conv = fuse_conv_bn(self.conv, &bn)?;
        }
        Ok(self)
    }
}

impl Classifier for Net {
    fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let mut x = self.conv.forward(x);
        if let Some(bn) = &self.bn {
            x = bn.forward(x);
        }
        let x = self.pool.forward(self.relu.forward(x));
        self.fc.forward(x.flatten(1, 3))
    }
}

/// The layers the passes quantize, by the paths of their parameters.
impl QuantLayers for Net {
    fn quant_layers(&mut self) -> Vec<(String, &mut dyn QuantLayer)> {
        vec![("conv".into(), &mut self.conv), ("fc".into(), &mut self.fc)]
    }
}

/// Calibration data: your own dataset behind `LabeledData`.
struct Images {
    x: Tensor<4>,
}

impl LabeledData for Images {
    fn len(&self) -> usize {
        self.x.dims()[0]
    }

    fn batch(&self, indices: &[usize], device: &Device) -> (Tensor<4>, Tensor<1, Int>) {
        let rows: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
        let index = Tensor::<1, Int>::from_ints(rows.as_slice(), device);
        let x = self.x.clone().select(0, index);
        (x, Tensor::zeros([indices.len()], device))
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let device = Device::flex();
    device.seed(3);
    let model = Net::new(&device).fused()?;
    let data = Images {
        x: Tensor::random([256, 1, 12, 12], Distribution::Default, &device),
    };
    let mut q = quantize_static(model.clone(), &StaticConfig::default(), &data, &device)?;
    let (x, _) = data.batch(&(0..256).collect::<Vec<_>>(), &device);
    let float = model.forward(x.clone()).argmax(1);
    let int8 = q.model.forward(x).argmax(1);
    let same: i64 = float.equal(int8).int().sum().into_scalar();
    let kernels: Vec<&str> = q.integer_layers().iter().map(|(_, k)| k.name()).collect();
    println!("static int8: {same} of 256 predictions as float; integer kernels {kernels:?}");
    assert!(same >= 240, "int8 keeps the float model's predictions");
    Ok(())
}
