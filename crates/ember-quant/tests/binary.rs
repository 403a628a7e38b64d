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

/// By hand: a 1-channel 2x2 image (1, -2, 3, -4): β = 2.5, signs (+ -; + -). One 2x2 filter
/// (1, 1, -1, 1), α = 1, signs (+ +; - +), padding 1 on every side: the padding binarizes as
/// the sign of 0.0, +1. The output's top-left window is (pad, pad; pad, +1): signs
/// (+ +; + +) against (+ +; - +) gives 1 + 1 - 1 + 1 = 2; the centre window is the image:
/// 1 - 1 - 1 - 1 = -2. Outputs are β · α · dot + bias (0.5). Every kernel agrees.
#[test]
fn the_binary_convolution_by_hand_and_on_the_kernel() {
    use burn::nn::PaddingConfig2d;
    use burn::nn::conv::Conv2dConfig;
    use ember_quant::BinaryConv2d;
    use ember_quant::nn::Conv2d;

    let device = Device::flex();
    let config =
        Conv2dConfig::new([1, 1], [2, 2]).with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1));
    let mut float = Conv2d::new(&config, &device);
    float.weight = burn::module::Param::from_tensor(Tensor::from_data(
        TensorData::new(vec![1.0f32, 1.0, -1.0, 1.0], [1, 1, 2, 2]),
        &device,
    ));
    float.bias = Some(burn::module::Param::from_tensor(Tensor::from_data(
        TensorData::new(vec![0.5f32], [1]),
        &device,
    )));
    let mut layer = BinaryConv2d::from_conv(&float, BinaryScale::Analytic).unwrap();
    let x = Tensor::<4>::from_data(
        TensorData::new(vec![1.0f32, -2.0, 3.0, -4.0], [1, 1, 2, 2]),
        &device,
    );
    let out = read_f32(layer.forward(x.clone())).unwrap();
    assert_eq!(out.len(), 9, "3x3 outputs");
    assert_eq!(out[0], 2.5 * 2.0 + 0.5);
    assert_eq!(out[4], 2.5 * -2.0 + 0.5);
    for kernel in BinaryKernel::available() {
        layer.pack(Some(kernel)).unwrap();
        assert_eq!(
            read_f32(layer.forward(x.clone())).unwrap(),
            out,
            "{}",
            kernel.name()
        );
    }
    // Grouped convolutions and `Same` padding are refused.
    let grouped = Conv2d::new(&Conv2dConfig::new([2, 2], [2, 2]).with_groups(2), &device);
    assert!(matches!(
        BinaryConv2d::from_conv(&grouped, BinaryScale::Learned),
        Err(Error::Scheme { .. })
    ));
    let same = Conv2d::new(
        &Conv2dConfig::new([1, 1], [3, 3]).with_padding(PaddingConfig2d::Same),
        &device,
    );
    assert!(BinaryConv2d::from_conv(&same, BinaryScale::Analytic).is_err());
}

/// A binary model saved at one bit per binary weight loads into a fresh model of the same
/// architecture and computes what the saved one did, on the float path and on the kernel,
/// with either scale; the file is the size its parts say; bad files are typed errors.
#[test]
fn binary_models_save_at_a_bit_per_weight_and_load_back() {
    use ember_quant::{load_binary, save_binary};
    use ember_zoo::{BinaryCnnConfig, BinaryMlpConfig};

    let _seeded = seeded_lock();
    let device = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    let x = Tensor::<4>::random(
        [4, 1, 28, 28],
        burn::tensor::Distribution::Normal(0.0, 1.0),
        &device,
    );
    let close = |a: &[f32], b: &[f32]| {
        assert_eq!(a.len(), b.len());
        for (a, b) in a.iter().zip(b) {
            assert!((a - b).abs() <= 1e-4 * (1.0 + a.abs()), "{a} vs {b}");
        }
    };
    for scale in [BinaryScale::Analytic, BinaryScale::Learned] {
        let config = BinaryCnnConfig {
            channels: 1,
            image: [28, 28],
            classes: 10,
            widths: [8, 16, 64],
            scale,
        };
        device.seed(1);
        let mut model = config.init(&device).unwrap();
        let path = dir.path().join(format!("{scale:?}.bin"));
        let bytes = save_binary(&model, &path).unwrap();
        assert_eq!(bytes, std::fs::metadata(&path).unwrap().len());
        device.seed(2);
        let mut loaded = load_binary(config.init(&device).unwrap(), &path).unwrap();
        close(
            &read_f32(loaded.forward(x.clone())).unwrap(),
            &read_f32(model.forward(x.clone())).unwrap(),
        );
        model.pack(Some(BinaryKernel::detect())).unwrap();
        loaded.pack(Some(BinaryKernel::detect())).unwrap();
        close(
            &read_f32(loaded.forward(x.clone())).unwrap(),
            &read_f32(model.forward(x.clone())).unwrap(),
        );
    }

    // A wide binary MLP: its two binary 512 x 512 layers take 8 words a row instead of 512
    // floats; the float first and last layers and the rest stay f32.
    let config = BinaryMlpConfig {
        input: 784,
        hidden: vec![512, 512, 512],
        classes: 10,
        scale: BinaryScale::Analytic,
    };
    device.seed(3);
    let mlp = config.init(&device).unwrap();
    let path = dir.path().join("mlp.bin");
    let bytes = save_binary(&mlp, &path).unwrap() as usize;
    let binary_params = 2 * 512 * 512;
    let float_params = mlp.num_params() - binary_params;
    let parts = 4 * float_params + 2 * (512 * 8 * 8 + 4 * 512);
    assert!(
        bytes >= parts && bytes < parts + 8192,
        "{bytes} bytes for {parts} bytes of tensors"
    );

    // Damage, another architecture, another format: typed errors naming the problem.
    let mut damaged = std::fs::read(&path).unwrap();
    let last = damaged.len() - 3;
    damaged[last] ^= 0x10;
    let broken = dir.path().join("broken.bin");
    std::fs::write(&broken, &damaged).unwrap();
    let err = load_binary(config.init(&device).unwrap(), &broken).unwrap_err();
    assert!(
        matches!(&err, Error::QuantFile { reason, .. } if reason.contains("damaged")),
        "{err}"
    );
    let narrower = BinaryMlpConfig {
        hidden: vec![512, 256, 512],
        ..config.clone()
    };
    let err = load_binary(narrower.init(&device).unwrap(), &path).unwrap_err();
    assert!(
        matches!(&err, Error::QuantFile { reason, .. } if reason.contains("stored as [512], the model has [256]")),
        "{err}"
    );
    let float = dir.path().join("float.q");
    let q = ember_quant::quantize_weights(
        Linear::new(&LinearConfig::new(4, 2), &device),
        &ember_quant::WeightConfig::default(),
    )
    .unwrap();
    ember_quant::save_quantized(&q, &float).unwrap();
    let err = load_binary(config.init(&device).unwrap(), &float).unwrap_err();
    assert!(
        matches!(&err, Error::QuantFile { reason, .. } if reason.contains("ember-binary/1")),
        "{err}"
    );
}
