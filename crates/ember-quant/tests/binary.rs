//! Binary layers: the sign and its clipped straight-through gradient by hand, the layer's
//! function by hand, the XNOR-popcount path against the float path, a binary network that
//! learns with either scale, the packed size, and bad weights refused.

#![allow(clippy::unwrap_used)] // a test fails loudly, which is what it is for

use burn::module::Module;
use burn::nn::{LinearConfig, Relu};
use burn::tensor::{Device, Tensor, TensorData};
use ember_kernels::BinaryKernel;
use ember_quant::nn::Linear;
use ember_quant::{BinaryLinear, BinaryScale, Error, sign_ste};
use ember_tensor::testing::{Blobs, seeded_lock};
use ember_tensor::{Classifier, TrainConfig, evaluate, stats::read_f32, train};

fn tensor2(values: Vec<f32>, shape: [usize; 2], device: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(values, shape), device)
}

#[test]
fn sign_and_its_straight_through_gradient_by_hand() {
    let device = Device::flex().autodiff();
    let x = Tensor::<1>::from_data(
        TensorData::new(vec![-2.0f32, -0.5, 0.0, 0.5, 2.0], [5]),
        &device,
    )
    .require_grad();
    let y = sign_ste(x.clone());
    assert_eq!(
        read_f32(y.clone().detach().without_autodiff()).unwrap(),
        vec![-1.0, -1.0, 1.0, 1.0, 1.0],
        "zero binarizes to +1"
    );
    let grads = (y * Tensor::from_data(
        TensorData::new(vec![1.0f32, 2.0, 3.0, 4.0, 5.0], [5]),
        &device,
    ))
    .sum()
    .backward();
    let g = read_f32(x.grad(&grads).unwrap()).unwrap();
    assert_eq!(
        g,
        vec![0.0, 2.0, 3.0, 4.0, 0.0],
        "passes where |x| <= 1 only"
    );
}

/// By hand: x = (2, -1, 0.5, -0.5), so β = 1 and signs (+ - + -). Output 0 has weights
/// (0.5, -0.5, -1, 1): α = 0.75, signs (+ - - +), dot 0, so only its bias 0.25 is left. Output 1
/// has (1, -3, 2, -2): α = 2, signs (+ - + -), dot 4: 1 · 2 · 4 - 1 = 7. Every kernel agrees.
#[test]
fn the_layer_by_hand_and_on_the_kernel() {
    let device = Device::flex();
    let mut float = Linear::new(&LinearConfig::new(4, 2), &device);
    float.weight = burn::module::Param::from_tensor(tensor2(
        vec![0.5, 1.0, -0.5, -3.0, -1.0, 2.0, 1.0, -2.0],
        [4, 2],
        &device,
    ));
    float.bias = Some(burn::module::Param::from_tensor(Tensor::from_data(
        TensorData::new(vec![0.25f32, -1.0], [2]),
        &device,
    )));
    let mut layer = BinaryLinear::from_linear(&float, BinaryScale::Analytic);
    let x = tensor2(vec![2.0, -1.0, 0.5, -0.5], [1, 4], &device);
    let want = vec![0.25, 1.0 * 2.0 * 4.0 - 1.0];
    assert_eq!(read_f32(layer.forward(x.clone())).unwrap(), want);
    for kernel in BinaryKernel::available() {
        layer.pack(Some(kernel)).unwrap();
        assert_eq!(
            read_f32(layer.forward(x.clone())).unwrap(),
            want,
            "{}",
            kernel.name()
        );
    }
}

/// A wide layer on the XNOR-popcount kernel gives the float path's outputs up to float
/// rounding of the sums, and its packed weight is about 32x smaller than f32.
#[test]
fn the_kernel_path_computes_the_float_path() {
    let _seeded = seeded_lock();
    let device = Device::flex();
    device.seed(4);
    let float = Linear::new(&LinearConfig::new(300, 100), &device);
    for scale in [BinaryScale::Analytic, BinaryScale::Learned] {
        let mut layer = BinaryLinear::from_linear(&float, scale);
        let x: Vec<f32> = (0..17 * 300).map(|i| (i as f32 * 0.37).sin()).collect();
        let x = tensor2(x, [17, 300], &device);
        let want = read_f32(layer.forward(x.clone())).unwrap();
        layer.pack(Some(BinaryKernel::detect())).unwrap();
        let got = read_f32(layer.forward(x)).unwrap();
        for (w, g) in want.iter().zip(&got) {
            assert!((w - g).abs() <= 1e-4 * (1.0 + w.abs()), "{w} vs {g}");
        }
        let bytes = layer.packed().unwrap().bytes();
        // 100 rows of 300 signs in 5 words each, and 100 scales.
        assert_eq!(bytes, 100 * 5 * 8 + 4 * 100);
        assert!(300 * 100 * 4 / bytes >= 27, "{bytes}");
    }
}

#[derive(Module, Debug)]
struct Net {
    first: Linear,
    hidden: BinaryLinear,
    last: Linear,
    relu: Relu,
}

impl Classifier for Net {
    fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        // No ReLU before the binary layer: the signs of ReLU outputs are all +1.
        let x = self
            .hidden
            .forward(self.first.forward(images.flatten(1, 3)));
        self.last.forward(self.relu.forward(x))
    }
}

/// A network whose hidden layer is binary (first and last in float, as the papers keep them)
/// learns the blobs with either scale, and the learned scale moves while it trains.
#[test]
fn a_binary_hidden_layer_learns_with_either_scale() {
    let _seeded = seeded_lock();
    let device = Device::flex();
    let data = Blobs::new(1024, 4, 3);
    let test = Blobs::new(512, 4, 4);
    for scale in [BinaryScale::Analytic, BinaryScale::Learned] {
        device.seed(8);
        let hidden = Linear::new(&LinearConfig::new(64, 64), &device);
        let net = Net {
            first: Linear::new(&LinearConfig::new(Blobs::DIM, 64), &device),
            hidden: BinaryLinear::from_linear(&hidden, scale),
            last: Linear::new(&LinearConfig::new(64, 4), &device),
            relu: Relu::new(),
        };
        let before = net
            .hidden
            .scale
            .as_ref()
            .map(|s| read_f32(s.val()).unwrap());
        let config = TrainConfig {
            epochs: 6,
            batch_size: 32,
            learning_rate: 3e-3,
            progress: false,
            ..TrainConfig::default()
        };
        let (mut trained, _) = train(net, &data, &config, &device).unwrap();
        let accuracy = evaluate(&trained, &test, 256, &device).unwrap().accuracy;
        assert!(accuracy > 80.0, "{scale:?}: {accuracy} %");
        if let Some(before) = before {
            let after = read_f32(trained.hidden.scale.as_ref().unwrap().val()).unwrap();
            assert_ne!(after, before, "the learned scale trains");
        }
        // Packed, it predicts as the float path does.
        let float_accuracy = accuracy;
        trained.hidden.pack(Some(BinaryKernel::detect())).unwrap();
        let packed = evaluate(&trained, &test, 256, &device).unwrap().accuracy;
        assert!(
            (packed - float_accuracy).abs() <= 0.5,
            "{packed} vs {float_accuracy}"
        );
    }
}

#[test]
fn non_finite_weights_are_refused_when_packing() {
    let device = Device::flex();
    let mut float = Linear::new(&LinearConfig::new(3, 2), &device);
    float.weight = burn::module::Param::from_tensor(tensor2(
        vec![1.0, f32::NAN, 0.5, -0.5, 2.0, 1.0],
        [3, 2],
        &device,
    ));
    let mut layer = BinaryLinear::from_linear(&float, BinaryScale::Analytic);
    assert!(matches!(
        layer.pack(Some(BinaryKernel::Portable)),
        Err(Error::NonFinite { .. })
    ));
    assert!(layer.packed().is_none());
}
