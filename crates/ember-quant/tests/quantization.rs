//! The quantization passes on real models, each checked against a host-side reference built
//! from the scalar scheme arithmetic.

#![allow(clippy::unwrap_used)] // a test fails loudly, which is what it is for

use std::collections::BTreeMap;

use burn::module::Module;
use burn::nn::conv::Conv2dConfig;
use burn::nn::{BatchNormConfig, LinearConfig};
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use ember_observe::{CalibrationConfig, ObserverConfig, ObserverKind, RangeMethod};
use ember_quant::nn::{Conv2d, InputQuant, Linear, QuantLayers};
use ember_quant::scheme::{dequantize_value, quantize_value};
use ember_quant::{
    DynamicConfig, Error, FloatType, Mode, QScheme, QTensor, QType, StaticConfig, WeightConfig,
    cast, fuse_conv_bn, load_quantized, quantize_dynamic, quantize_static, quantize_weights,
    save_quantized,
};
use ember_tensor::stats::read_f32;
use ember_tensor::testing::{Blobs, seeded_lock};
use ember_tensor::{Classifier, LabeledData, Masks, param_values, set_masks};
use ember_zoo::{LeNet5, LeNet5Config, Mlp, MlpConfig};

/// Random grey images of 12x12 with random labels: enough to calibrate and compare outputs.
struct Noise {
    images: Vec<f32>,
    n: usize,
}

impl Noise {
    const SIDE: usize = 12;

    fn new(n: usize, seed: u64) -> Self {
        let mut state = seed;
        let images = (0..n * Self::SIDE * Self::SIDE)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (state >> 40) as f32 / (1u64 << 24) as f32
            })
            .collect();
        Self { images, n }
    }
}

impl LabeledData for Noise {
    fn len(&self) -> usize {
        self.n
    }

    fn batch(&self, indices: &[usize], device: &Device) -> (Tensor<4>, Tensor<1, Int>) {
        let px = Self::SIDE * Self::SIDE;
        let images: Vec<f32> = indices
            .iter()
            .flat_map(|&i| self.images[i * px..(i + 1) * px].to_vec())
            .collect();
        let labels: Vec<i64> = indices.iter().map(|&i| (i % 3) as i64).collect();
        (
            Tensor::from_data(
                TensorData::new(images, [indices.len(), 1, Self::SIDE, Self::SIDE]),
                device,
            ),
            Tensor::from_data(TensorData::new(labels, [indices.len()]), device),
        )
    }
}

fn mlp(device: &Device, seed: u64) -> Mlp {
    device.seed(seed);
    MlpConfig {
        input: Blobs::DIM,
        hidden: vec![16, 12],
        classes: 3,
        dropout: 0.0,
    }
    .init(device)
    .unwrap()
}

fn lenet(device: &Device, seed: u64) -> LeNet5 {
    device.seed(seed);
    LeNet5Config::new(1, [Noise::SIDE, Noise::SIDE], 3)
        .init(device)
        .unwrap()
}

fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    read_f32(t).unwrap()
}

fn assert_close(actual: &[f32], expected: &[f32], tolerance: f32) {
    assert_eq!(actual.len(), expected.len());
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!(
            (a - e).abs() <= tolerance * (1.0 + e.abs()),
            "element {i}: {a} against {e}"
        );
    }
}

/// Per-tensor fake quantization on the host, from the scalar reference.
fn fake_quantize_host(x: &[f32], scheme: QScheme) -> Vec<f32> {
    let min = x.iter().copied().fold(f32::INFINITY, f32::min);
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let p = scheme
        .qparams(&[ember_observe::Range { min, max }], "x")
        .unwrap();
    x.iter()
        .map(|&v| {
            let q = quantize_value(v, p.scale[0], p.zero_point[0], scheme.bounds());
            dequantize_value(q, p.scale[0], p.zero_point[0])
        })
        .collect()
}

/// `x · w + b` for row-major `x` `[n, k]` and `w` `[k, m]`.
fn matmul_bias(x: &[f32], w: &[f32], b: &[f32], k: usize) -> Vec<f32> {
    let m = b.len();
    let n = x.len() / k;
    let mut y = vec![0.0; n * m];
    for r in 0..n {
        for c in 0..m {
            y[r * m + c] = b[c] + (0..k).map(|i| x[r * k + i] * w[i * m + c]).sum::<f32>();
        }
    }
    y
}

ember_tensor::backend_tests! {
    fn dynamic_quantization_matches_the_scalar_reference(device) {
        let _seeded = seeded_lock();
        let model = mlp(&device, 7);
        let config = DynamicConfig::default();
        let q = quantize_dynamic(model, &config).unwrap();
        assert_eq!(q.weights.len(), 3);
        assert_eq!(q.inputs.len(), 3);

        let data = Blobs::new(20, 3, 1);
        let (images, _) = data.batch(&(0..20).collect::<Vec<_>>(), &device);
        let mut x = host(images.clone());
        let mut k = Blobs::DIM;
        for (i, layer) in q.model.layers.iter().enumerate() {
            let w = q.weights[&format!("layers.{i}.weight")].dequantize();
            let b = host(layer.bias.as_ref().unwrap().val());
            x = matmul_bias(&fake_quantize_host(&x, config.activations), &w, &b, k);
            if i < 2 {
                x.iter_mut().for_each(|v| *v = v.max(0.0));
            }
            k = b.len();
        }
        assert_close(&host(q.model.forward(images)), &x, 1e-4);
    }

    fn a_saved_quantized_model_reloads_with_identical_outputs(device) {
        let _seeded = seeded_lock();
        let data = Noise::new(64, 3);
        let config = StaticConfig {
            weights: WeightConfig::int4_per_group(8).with_mode(Mode::Affine),
            ..StaticConfig::default()
        };
        let q = quantize_static(lenet(&device, 5), &config, &data, &device).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lenet.q");
        let bytes = save_quantized(&q, &path).unwrap();
        assert_eq!(bytes, std::fs::metadata(&path).unwrap().len());

        let loaded = load_quantized(lenet(&device, 99), &path, &device).unwrap();
        assert_eq!(loaded.weights, q.weights);
        let (images, _) = data.batch(&(0..16).collect::<Vec<_>>(), &device);
        assert_eq!(
            host(loaded.model.forward(images.clone())),
            host(q.model.forward(images))
        );
        // The file holds the packed integers, scales, zero points and float biases, plus a
        // header: 4-bit values with a scale and zero point per 8 take 1.5 bytes a weight.
        let quantized: usize = q.weights.values().map(|w| w.storage_bytes()).sum();
        let numel: usize = q.weights.values().map(|w| w.numel()).sum();
        let float_rest = 4 * (q.model.num_params() - numel);
        let payload = (quantized + float_rest) as u64;
        assert!(bytes >= payload && bytes < payload + 8192, "{bytes} against {payload}");
        for w in q.weights.values() {
            let sets = w.params().scale.len();
            assert_eq!(w.storage_bytes(), w.numel().div_ceil(2) + 8 * sets);
        }
        // Groups of 8 along fc1's 16 inputs: 2 per output.
        assert_eq!(q.weights["fc1.weight"].params().scale.len(), 2 * 120);
    }
}

ember_tensor::backend_tests! {
    /// The device-side range of calibration and QAT follows the host observers exactly, batch
    /// by batch, counts a NaN batch without letting it move the range, and fake-quantizes with
    /// the parameters the host computes from the same range.
    fn device_ranges_match_the_host_observers(device) {
        let batches: Vec<Vec<f32>> = vec![
            (0..40).map(|i| i as f32 * 0.1 - 1.0).collect(),
            (0..40).map(|i| if i == 7 { f32::NAN } else { i as f32 * 0.5 - 9.0 }).collect(),
            (0..40).map(|i| (i as f32 * 0.3).sin() * 4.0).collect(),
            (0..40).map(|i| i as f32 * 0.05 + 0.5).collect(),
        ];
        let scheme = QScheme::new(QType::UInt8, Mode::Affine);
        for (config, momentum) in [
            (ObserverConfig::min_max(), None),
            (ObserverConfig::new(ObserverKind::MovingAverage { momentum: 0.25 }), Some(0.25)),
        ] {
            let mut on_device = ember_quant::fake::DeviceRange::new(momentum);
            let mut on_host = config.build("x").unwrap();
            let mut nan_seen = false;
            for batch in &batches {
                on_device.update(&Tensor::<2>::from_data(TensorData::new(batch.clone(), [4, 10]), &device));
                if batch.iter().any(|v| v.is_nan()) {
                    nan_seen = true;
                    continue; // the host observer refuses the batch; the device counts it
                }
                on_host.observe(batch, &[4, 10]).unwrap();
                let seen = on_device.read().unwrap();
                let want = on_host.ranges(scheme.levels()).unwrap()[0];
                assert_eq!(seen.range, Some(want), "{config:?}");
                assert_eq!(seen.non_finite, usize::from(nan_seen));
                let x = batches[2].clone();
                let got = host(on_device.fake_quantize_ste(
                    Tensor::<2>::from_data(TensorData::new(x.clone(), [4, 10]), &device),
                    &scheme,
                ));
                let params = scheme.qparams(&[want], "x").unwrap();
                let expected: Vec<f32> = x
                    .iter()
                    .map(|&v| dequantize_value(quantize_value(v, params.scale[0], params.zero_point[0], scheme.bounds()), params.scale[0], params.zero_point[0]))
                    .collect();
                assert_close(&got, &expected, 1e-5);
            }
            assert!(on_device.read().unwrap().first_bad.is_nan());
        }
        // Before any batch, and while only zeros were seen, the input passes unchanged.
        let mut range = ember_quant::fake::DeviceRange::new(None);
        let x = Tensor::<2>::from_data(TensorData::new(vec![0.3f32, -1.7], [1, 2]), &device);
        assert_eq!(host(range.fake_quantize_ste(x.clone(), &scheme)), vec![0.3, -1.7]);
        range.update(&Tensor::<2>::zeros([2, 2], &device));
        assert_eq!(host(range.fake_quantize_ste(x, &scheme)), vec![0.3, -1.7]);
        assert_eq!(range.read().unwrap().range, Some(ember_observe::Range { min: 0.0, max: 0.0 }));
    }
}

ember_tensor::backend_tests! {
    fn dynamic_fake_quantization_stays_on_the_device_and_matches_the_scalar_reference(device) {
        let x: Vec<f32> = (0..97).map(|i| ((i * 37) % 101) as f32 * 0.07 - 2.5).collect();
        let positive: Vec<f32> = x.iter().map(|v| v.abs() + 0.5).collect();
        for scheme in [QScheme::new(QType::UInt8, Mode::Affine), QScheme::new(QType::Int8, Mode::Symmetric)] {
            for values in [&x, &positive] {
                let t = Tensor::<2>::from_data(TensorData::new(values.clone(), [1, values.len()]), &device);
                let got = host(ember_quant::fake::fake_quantize_dynamic(t, &scheme));
                assert_close(&got, &fake_quantize_host(values, scheme), 1e-6);
            }
            // All zeros stay zeros; a batch with NaN is left as it is.
            let zeros = Tensor::<2>::zeros([2, 3], &device);
            assert_eq!(host(ember_quant::fake::fake_quantize_dynamic(zeros, &scheme)), vec![0.0; 6]);
            let mut with_nan = x.clone();
            with_nan[5] = f32::NAN;
            let t = Tensor::<2>::from_data(TensorData::new(with_nan.clone(), [1, with_nan.len()]), &device);
            let got = host(ember_quant::fake::fake_quantize_dynamic(t, &scheme));
            assert!(got[5].is_nan());
            assert_eq!(&got[..5], &with_nan[..5]);
        }
    }
}

#[test]
fn static_ranges_come_from_the_calibration_data() {
    let _seeded = seeded_lock();
    let device = Device::flex();
    let data = Noise::new(50, 1);
    let config = StaticConfig {
        observer: ObserverConfig::min_max(),
        calibration: CalibrationConfig {
            batch_size: 16,
            max_batches: Some(2),
            progress: false,
        },
        ..StaticConfig::default()
    };
    let mut q = quantize_static(lenet(&device, 2), &config, &data, &device).unwrap();
    // conv1 sees the first 32 images, uint8 affine over [min(min, 0), max].
    let seen = host(data.batch(&(0..32).collect::<Vec<_>>(), &device).0);
    let max = seen.iter().copied().fold(0.0f32, f32::max);
    let layers = q.model.quant_layers();
    let (name, conv1) = &layers[0];
    assert_eq!(name, "conv1");
    let InputQuant::Static { scheme, params } = conv1.input_quant() else {
        panic!("conv1 is {}", conv1.input_quant().name());
    };
    assert_eq!(*scheme, QScheme::new(QType::UInt8, Mode::Affine));
    assert_eq!(params.scale, vec![max / 255.0]);
    assert_eq!(params.zero_point, vec![0]);
    // Every layer quantized, weights per output channel.
    assert_eq!(q.inputs.len(), 5);
    assert_eq!(q.weights["conv2.weight"].params().scale.len(), 16);
    assert_eq!(q.weights["fc1.weight"].params().scale.len(), 120);
}

#[test]
fn layers_kept_in_float_are_untouched() {
    let _seeded = seeded_lock();
    let device = Device::flex();
    let data = Noise::new(32, 1);
    let model = lenet(&device, 4);
    let conv1_before = host(model.conv1.weight.val());
    let config = StaticConfig {
        keep_float: vec!["conv1".into(), "fc3".into()],
        ..StaticConfig::default()
    };
    let mut q = quantize_static(model, &config, &data, &device).unwrap();
    assert_eq!(host(q.model.conv1.weight.val()), conv1_before);
    assert!(!q.weights.contains_key("conv1.weight"));
    assert!(!q.weights.contains_key("fc3.weight"));
    assert!(q.weights.contains_key("fc2.weight"));
    let modes: Vec<&str> = q
        .model
        .quant_layers()
        .iter()
        .map(|(_, l)| l.input_quant().name())
        .collect();
    assert_eq!(modes, ["float", "static", "static", "static", "float"]);

    let unknown = StaticConfig {
        keep_float: vec!["conv9".into()],
        ..StaticConfig::default()
    };
    let err = quantize_static(lenet(&device, 4), &unknown, &data, &device).unwrap_err();
    assert!(
        matches!(&err, Error::UnknownLayer { pattern, available } if pattern == "conv9" && available.contains("fc2")),
        "{err}"
    );
}

#[test]
fn bad_calibration_is_a_typed_error() {
    let _seeded = seeded_lock();
    let device = Device::flex();
    let empty = Noise::new(0, 1);
    let err =
        quantize_static(lenet(&device, 1), &StaticConfig::default(), &empty, &device).unwrap_err();
    assert!(
        matches!(err, Error::Observe(ember_observe::Error::Empty { .. })),
        "{err}"
    );

    // NaN activations: an image with a NaN pixel.
    let mut poisoned = Noise::new(8, 1);
    poisoned.images[5] = f32::NAN;
    let err = quantize_static(
        lenet(&device, 1),
        &StaticConfig::default(),
        &poisoned,
        &device,
    )
    .unwrap_err();
    assert!(
        matches!(&err, Error::Observe(ember_observe::Error::NonFinite { what, .. }) if what == "conv1 input"),
        "{err}"
    );
    // The min/max observers read back only the extremes and a count: the NaN is still caught.
    for observer in [ObserverConfig::min_max(), ObserverConfig::moving_average()] {
        let config = StaticConfig {
            observer,
            ..StaticConfig::default()
        };
        let err = quantize_static(lenet(&device, 1), &config, &poisoned, &device).unwrap_err();
        assert!(
            matches!(&err, Error::Observe(ember_observe::Error::NonFinite { what, count: 1, .. }) if what == "conv1 input"),
            "{err}"
        );
    }

    // Per-channel activations would keep only the first channel's range.
    let per_channel = StaticConfig {
        observer: ObserverConfig::min_max().per_channel(1),
        ..StaticConfig::default()
    };
    let err = quantize_static(lenet(&device, 1), &per_channel, &empty, &device).unwrap_err();
    assert!(
        matches!(&err, Error::Scheme { what, .. } if what == "layer inputs"),
        "{err}"
    );
    let per_group = DynamicConfig {
        activations: QScheme::new(QType::UInt8, Mode::Affine).per_group(1, 4),
        ..DynamicConfig::default()
    };
    let err = quantize_dynamic(lenet(&device, 1), &per_group).unwrap_err();
    assert!(matches!(&err, Error::Scheme { .. }), "{err}");

    // An input that is always zero has no range.
    let black = Noise {
        images: vec![0.0; 8 * 144],
        n: 8,
    };
    let err =
        quantize_static(lenet(&device, 1), &StaticConfig::default(), &black, &device).unwrap_err();
    assert!(
        matches!(&err, Error::ZeroRange { what } if what == "conv1 input"),
        "{err}"
    );
}

#[test]
fn weight_only_works_on_any_burn_model_and_refuses_bad_weights() {
    let device = Device::flex();
    let _seeded = seeded_lock();
    device.seed(3);
    // A plain burn layer, not a drop-in.
    let layer = LinearConfig::new(40, 6).init(&device);
    let original = host(layer.weight.val());
    let config = WeightConfig {
        biases: true,
        ..WeightConfig::int8_per_channel()
    };
    let q = quantize_weights(layer, &config).unwrap();
    let w = &q.weights["weight"];
    assert_eq!(w.params().scale.len(), 6);
    // Each output column's scale is its own max |w| / 127.5, as PyTorch computes it.
    for c in 0..6 {
        let amax = (0..40)
            .map(|r| original[r * 6 + c].abs())
            .fold(0.0f32, f32::max);
        assert_eq!(w.params().scale[c], amax / 127.5);
    }
    assert_eq!(host(q.model.weight.val()), w.dequantize());
    assert!(q.weights.contains_key("bias"));

    // An infinity in a weight (NaN takes the same check): a typed error naming it.
    let mut values = BTreeMap::new();
    let mut broken = original.clone();
    broken[7] = f32::INFINITY;
    values.insert("weight".to_string(), broken);
    let layer =
        ember_tensor::set_param_values(LinearConfig::new(40, 6).init(&device), &values).unwrap();
    let err = quantize_weights(layer, &config).unwrap_err();
    assert!(
        matches!(&err, Error::NonFinite { what, count: 1, .. } if what == "weight"),
        "{err}"
    );

    // A pattern that matches nothing.
    let mut nothing = WeightConfig::int8_per_tensor();
    nothing.layers = ember_tensor::Selector::all().include("decoder.*");
    let err = quantize_weights(LinearConfig::new(4, 2).init(&device), &nothing).unwrap_err();
    assert!(matches!(
        err,
        Error::Tensor(ember_tensor::Error::PatternMatchesNothing { .. })
    ));
}

#[test]
fn weight_axes_follow_one_rule_for_every_layer_kind() {
    #[derive(Module, Debug)]
    struct Mixed {
        fc: burn::nn::Linear,
        conv: burn::nn::conv::Conv2d,
        embed: burn::nn::Embedding,
    }
    let _seeded = seeded_lock();
    let device = Device::flex();
    let model = ember_tensor::init_now(Mixed {
        fc: LinearConfig::new(4, 3).init(&device),
        conv: Conv2dConfig::new([2, 5], [3, 3]).init(&device),
        embed: burn::nn::EmbeddingConfig::new(6, 4).init(&device),
    });
    let infos = ember_tensor::params(&model);
    let channel_axis = |path: &str| {
        let info = infos.iter().find(|p| p.path == path).unwrap();
        WeightConfig::int8_per_channel()
            .scheme_for(info)
            .granularity
    };
    use ember_quant::Granularity::PerChannel;
    // burn's [in, out] Linear has its outputs on axis 1; every other weight on axis 0.
    assert_eq!(channel_axis("fc.weight"), PerChannel { axis: 1 });
    assert_eq!(channel_axis("conv.weight"), PerChannel { axis: 0 });
    assert_eq!(channel_axis("embed.weight"), PerChannel { axis: 0 });
}

#[test]
fn default_weight_quantization_covers_embeddings() {
    #[derive(Module, Debug)]
    struct Text {
        embed: burn::nn::Embedding,
        fc: burn::nn::Linear,
    }
    let _seeded = seeded_lock();
    let device = Device::flex();
    device.seed(3);
    let model = ember_tensor::init_now(Text {
        embed: burn::nn::EmbeddingConfig::new(50, 8).init(&device),
        fc: LinearConfig::new(8, 2).init(&device),
    });
    let table = read_f32(model.embed.weight.val()).unwrap();
    let q = quantize_weights(model, &WeightConfig::default()).unwrap();
    let names: Vec<&str> = q.weights.keys().map(String::as_str).collect();
    assert_eq!(names, ["embed.weight", "fc.weight"]);
    // One scale per token row, and every entry within half a step of its float value (the
    // largest entry of a row clamps at the top integer, exactly half a step away).
    let embed = &q.weights["embed.weight"];
    assert_eq!(embed.params().scale.len(), 50);
    let dequantized = read_f32(q.model.embed.weight.val()).unwrap();
    for (row, (d, t)) in dequantized.chunks(8).zip(table.chunks(8)).enumerate() {
        let step = embed.params().scale[row];
        for (d, t) in d.iter().zip(t) {
            assert!((d - t).abs() <= step * 0.5001, "row {row}: {d} against {t}");
        }
    }
}

#[test]
fn a_pruned_weight_stays_pruned_and_masked_when_quantized() {
    let _seeded = seeded_lock();
    let device = Device::flex();
    let model = mlp(&device, 9);
    let keep: Vec<bool> = (0..Blobs::DIM * 16).map(|i| i % 3 != 0).collect();
    let mut masks = Masks::new();
    masks.insert(
        "layers.0.weight".into(),
        Tensor::from_data(TensorData::new(keep.clone(), [keep.len()]), &device),
    );
    let model = set_masks(model, &masks).unwrap();
    let q = quantize_weights(model, &WeightConfig::int8_per_channel()).unwrap();
    let ints = q.weights["layers.0.weight"].values();
    let effective = host(param_values(&q.model)[0].flat.clone());
    for (i, &kept) in keep.iter().enumerate() {
        if !kept {
            assert_eq!(ints[i], 0, "a pruned weight quantizes to the zero point");
            assert_eq!(effective[i], 0.0);
        }
    }
    // The mask is still attached, so training cannot bring pruned weights back.
    assert_eq!(ember_tensor::masks(&q.model).len(), 1);
}

#[test]
fn drop_in_layers_load_burn_records_and_compute_the_same() {
    let _seeded = seeded_lock();
    let device = Device::flex();
    device.seed(11);
    let burn_linear = LinearConfig::new(5, 3).init(&device);
    let burn_conv = Conv2dConfig::new([2, 4], [3, 3])
        .with_stride([2, 1])
        .with_padding(burn::nn::PaddingConfig2d::Same)
        .init(&device);
    // A record saved from burn's layer loads into the drop-in built from the same config.
    let ours = Linear::new(&LinearConfig::new(5, 3), &device)
        .load_record(burn_linear.clone().into_record());
    let x = Tensor::<2>::random([4, 5], Distribution::Default, &device);
    assert_eq!(host(ours.forward(x.clone())), host(burn_linear.forward(x)));
    let conv: Conv2d = burn_conv.clone().into();
    let img = Tensor::<4>::random([2, 2, 7, 6], Distribution::Default, &device);
    assert_eq!(
        host(conv.forward(img.clone())),
        host(burn_conv.forward(img))
    );
}

#[test]
fn conv_and_batch_norm_fuse_into_one_convolution() {
    let _seeded = seeded_lock();
    let device = Device::flex();
    device.seed(12);
    let conv = Conv2d::new(&Conv2dConfig::new([3, 4], [3, 3]), &device);
    let bn = BatchNormConfig::new(4).init(&device);
    // Give the batch norm non-trivial running statistics and affine parameters.
    let bn = {
        let mut bn = bn;
        for _ in 0..3 {
            let x = Tensor::<4>::random([8, 4, 5, 5], Distribution::Normal(1.5, 2.0), &device);
            let _ = bn.forward(x);
        }
        bn.gamma = bn.gamma.map(|g| g.mul_scalar(1.7));
        bn.beta = bn.beta.map(|b| b.add_scalar(0.3));
        bn
    };
    let img = Tensor::<4>::random([2, 3, 9, 9], Distribution::Default, &device);
    let bn = bn.valid();
    let expected = host(bn.forward(conv.forward(img.clone())));
    let fused = fuse_conv_bn(conv, &bn).unwrap();
    assert_close(&host(fused.forward(img)), &expected, 1e-5);

    let wrong = BatchNormConfig::new(5).init(&device);
    let conv = Conv2d::new(&Conv2dConfig::new([3, 4], [3, 3]), &device);
    assert!(matches!(
        fuse_conv_bn(conv, &wrong),
        Err(Error::Scheme { .. })
    ));
}

#[test]
fn half_precision_casts_where_the_backend_can_hold_it() {
    let _seeded = seeded_lock();
    let device = Device::flex();
    let model = mlp(&device, 5);
    let data = Blobs::new(16, 3, 2);
    let (images, _) = data.batch(&(0..16).collect::<Vec<_>>(), &device);
    let reference = host(model.forward(images.clone()));
    for to in [FloatType::F16, FloatType::BF16] {
        let half = cast(model.clone(), to, &device).unwrap();
        assert_eq!(half.layers[0].weight.val().dtype(), to.dtype());
        // bf16 keeps 8 significant bits, f16 11: logits of magnitude ~1 stay within 2 %.
        assert_close(&host(half.forward(images.clone())), &reference, 0.02);
    }
    let ndarray = ember_tensor::BackendKind::NdArray.device().unwrap();
    let err = cast(mlp(&ndarray, 5), FloatType::F16, &ndarray).unwrap_err();
    assert!(matches!(err, Error::UnsupportedDType { .. }), "{err}");
}

#[test]
fn corrupt_or_mismatched_files_are_typed_errors() {
    let _seeded = seeded_lock();
    let device = Device::flex();
    let q = quantize_dynamic(mlp(&device, 1), &DynamicConfig::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mlp.q");
    save_quantized(&q, &path).unwrap();

    // Another architecture.
    device.seed(1);
    let other = MlpConfig {
        input: Blobs::DIM,
        hidden: vec![10],
        classes: 3,
        dropout: 0.0,
    }
    .init(&device)
    .unwrap();
    assert!(matches!(
        load_quantized(other, &path, &device),
        Err(Error::QuantFile { .. })
    ));
    // Truncated.
    let bytes = std::fs::read(&path).unwrap();
    let cut = dir.path().join("cut.q");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    assert!(matches!(
        load_quantized(mlp(&device, 1), &cut, &device),
        Err(Error::QuantFile { .. })
    ));
    // Not there.
    assert!(matches!(
        load_quantized(mlp(&device, 1), &dir.path().join("none.q"), &device),
        Err(Error::Io { .. })
    ));
    // Any one byte changed, wherever it lands (header, checksum, integers, scales): refused.
    let skeleton = mlp(&device, 1);
    let damaged = dir.path().join("damaged.q");
    for i in 0..bytes.len() {
        let mut flipped = bytes.clone();
        flipped[i] ^= 0xff;
        std::fs::write(&damaged, &flipped).unwrap();
        let result = load_quantized(skeleton.clone(), &damaged, &device);
        assert!(
            matches!(result, Err(Error::QuantFile { .. })),
            "byte {i} of {} flipped: {:?}",
            bytes.len(),
            result.map(|_| ())
        );
    }
    assert!(load_quantized(skeleton, &path, &device).is_ok());
}

#[test]
fn saved_input_parameters_are_checked_on_load() {
    let _seeded = seeded_lock();
    let device = Device::flex();
    let config = StaticConfig {
        observer: ObserverConfig::min_max(),
        ..StaticConfig::default()
    };
    let q = quantize_static(mlp(&device, 2), &config, &Blobs::new(64, 3, 2), &device).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mlp.q");
    save_quantized(&q, &path).unwrap();
    // The same model saves to the same bytes.
    let again = dir.path().join("again.q");
    save_quantized(&q, &again).unwrap();
    assert_eq!(
        std::fs::read(&path).unwrap(),
        std::fs::read(&again).unwrap()
    );

    let bytes = std::fs::read(&path).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let inputs: serde_json::Value =
        serde_json::from_str(&header.metadata().as_ref().unwrap()["inputs"]).unwrap();
    type Edit<'a> = &'a dyn Fn(&mut serde_json::Value);
    let crafted = |edit: Edit| {
        let mut inputs = inputs.clone();
        edit(&mut inputs["layers.0"]["Static"]["params"]);
        let out = dir.path().join("crafted.q");
        ember_tensor::testing::rewrite_metadata(&path, &out, "inputs", &inputs.to_string());
        load_quantized(mlp(&device, 2), &out, &device)
    };
    // The untouched metadata loads: the edits below are what is refused.
    assert!(crafted(&|_| {}).is_ok());
    let edits: [(&str, Edit); 4] = [
        ("zero scale", &|p| p["scale"] = serde_json::json!([0.0])),
        ("no parameters", &|p| {
            p["scale"] = serde_json::json!([]);
            p["zero_point"] = serde_json::json!([]);
        }),
        ("two scales", &|p| {
            p["scale"] = serde_json::json!([0.1, 0.2])
        }),
        ("zero point out of range", &|p| {
            p["zero_point"] = serde_json::json!([300])
        }),
    ];
    for (what, edit) in edits {
        let result = crafted(edit);
        assert!(
            matches!(result, Err(Error::QuantFile { .. })),
            "{what}: {:?}",
            result.map(|_| ())
        );
    }
}

/// The integer kernels and the float path with fake-quantized inputs compute the same function
/// up to float rounding; a rounding that lands a later layer's input on the other side of a
/// quantization step moves that input by one step, so logits agree to a few steps.
const INTEGER_TOLERANCE: f32 = 2e-2;

/// Logits of `q` on `images` with every kernel this CPU runs and on the float path.
fn logits_by_kernel<M: Classifier + QuantLayers + Clone>(
    q: &ember_quant::Quantized<M>,
    images: &Tensor<4>,
) -> (Vec<f32>, Vec<(&'static str, Vec<f32>)>) {
    let mut float = q.clone();
    assert!(float.set_integer_kernel(None).is_empty());
    let reference = host(float.model.forward(images.clone()));
    let runs = ember_quant::Int8Kernel::available()
        .into_iter()
        .map(|kernel| {
            let mut forced = q.clone();
            let on = forced.set_integer_kernel(Some(kernel));
            assert_eq!(on.len(), q.inputs.len(), "{}: {on:?}", kernel.name());
            (kernel.name(), host(forced.model.forward(images.clone())))
        })
        .collect();
    (reference, runs)
}

fn assert_same_function(reference: &[f32], runs: &[(&str, Vec<f32>)], classes: usize) {
    let argmax = |row: &[f32]| {
        (0..row.len())
            .max_by(|&a, &b| row[a].total_cmp(&row[b]))
            .unwrap()
    };
    for (kernel, logits) in runs {
        let scale = reference.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        let diff = reference
            .iter()
            .zip(logits)
            .fold(0.0f32, |m, (r, l)| m.max((r - l).abs()));
        assert!(
            diff <= INTEGER_TOLERANCE * scale,
            "{kernel}: logits differ by {diff} (largest {scale})"
        );
        let rows = reference.len() / classes;
        let same = (0..rows)
            .filter(|&r| {
                let span = r * classes..(r + 1) * classes;
                argmax(&reference[span.clone()]) == argmax(&logits[span])
            })
            .count();
        assert!(
            same * 100 >= rows * 99,
            "{kernel}: {same} of {rows} predictions agree"
        );
    }
}

#[test]
fn integer_kernels_compute_what_the_fake_quantized_model_does() {
    let _seeded = seeded_lock();
    let device = Device::flex();
    // Dynamic int8 MLP (per-tensor weights) and static LeNet-5 (per-channel weights, every
    // observer's uint8 inputs), on data neither saw.
    let mlp_q = quantize_dynamic(mlp(&device, 30), &DynamicConfig::default()).unwrap();
    assert_eq!(
        mlp_q.clone().integer_layers().len(),
        3,
        "every layer of the MLP runs on integers"
    );
    let points = Blobs::new(256, 3, 31);
    let (images, _) = points.batch(&(0..256).collect::<Vec<_>>(), &device);
    let (reference, runs) = logits_by_kernel(&mlp_q, &images);
    assert_same_function(&reference, &runs, 3);

    let calibration = Noise::new(64, 32);
    let lenet_q = quantize_static(
        lenet(&device, 33),
        &StaticConfig::default(),
        &calibration,
        &device,
    )
    .unwrap();
    let (images, _) = Noise::new(128, 34).batch(&(0..128).collect::<Vec<_>>(), &device);
    let (reference, runs) = logits_by_kernel(&lenet_q, &images);
    assert_same_function(&reference, &runs, 3);

    // A batch of one and an empty batch.
    let (one, _) = Noise::new(1, 35).batch(&[0], &device);
    let (reference, runs) = logits_by_kernel(&lenet_q, &one);
    assert_same_function(&reference, &runs, 3);
    let empty = Tensor::<4>::zeros([0, 1, Noise::SIDE, Noise::SIDE], &device);
    assert_eq!(lenet_q.model.forward(empty).dims(), [0, 3]);
}

#[test]
fn the_drop_in_max_pool_finds_burns_maxima() {
    use burn::nn::PaddingConfig2d;
    use burn::nn::pool::MaxPool2dConfig;
    let _seeded = seeded_lock();
    let device = Device::flex();
    device.seed(12);
    let mut img = host(Tensor::<4>::random(
        [3, 2, 9, 8],
        Distribution::Default,
        &device,
    ));
    img[17] = f32::NAN;
    let img = Tensor::<4>::from_data(TensorData::new(img, [3, 2, 9, 8]), &device);
    let configs = [
        MaxPool2dConfig::new([2, 2]),
        MaxPool2dConfig::new([3, 2]).with_strides([1, 3]),
        // Padding, dilation and ceil mode run burn's own layer.
        MaxPool2dConfig::new([3, 3]).with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)),
        MaxPool2dConfig::new([2, 2]).with_dilation([2, 1]),
        MaxPool2dConfig::new([2, 2]).with_ceil_mode(true),
    ];
    for config in configs {
        let ours = ember_quant::MaxPool2d::new(&config).forward(img.clone());
        let burns = config.init().forward(img.clone());
        assert_eq!(ours.dims(), burns.dims(), "{config:?}");
        let (ours, burns) = (host(ours), host(burns));
        assert!(
            ours.iter().any(|v| v.is_nan()),
            "{config:?}: NaN reaches the output"
        );
        let same = ours
            .iter()
            .zip(&burns)
            .all(|(a, b)| a == b || (a.is_nan() && b.is_nan()));
        assert!(same, "{config:?}");
    }
}

#[test]
fn integer_convolutions_follow_every_geometry() {
    use burn::nn::PaddingConfig2d;
    let _seeded = seeded_lock();
    let device = Device::flex();
    let data = Noise::new(8, 40);
    let (images, _) = data.batch(&(0..8).collect::<Vec<_>>(), &device);
    let geometries = [
        Conv2dConfig::new([1, 5], [3, 3]).with_stride([2, 2]),
        Conv2dConfig::new([1, 4], [3, 2])
            .with_dilation([2, 1])
            .with_padding(PaddingConfig2d::Explicit(1, 2, 0, 3)),
        Conv2dConfig::new([1, 3], [4, 4])
            .with_stride([3, 2])
            .with_padding(PaddingConfig2d::Same)
            .with_bias(false),
    ];
    for (i, config) in geometries.iter().enumerate() {
        device.seed(41 + i as u64);
        let conv = ember_tensor::init_now(Conv2d::new(config, &device));
        for qtype in [QType::UInt8, QType::Int8] {
            let config = StaticConfig {
                activations: QScheme::new(qtype, Mode::Affine),
                observer: ObserverConfig::min_max(),
                ..StaticConfig::default()
            };
            let prepared = ember_quant::prepare(Single { conv: conv.clone() }, &config).unwrap();
            let _ = prepared.model.conv.forward(images.clone());
            let q = prepared.convert().unwrap();
            let mut float = q.clone();
            float.set_integer_kernel(None);
            let expected = host(float.model.conv.forward(images.clone()));
            for kernel in ember_quant::Int8Kernel::available() {
                let mut forced = q.clone();
                assert_eq!(forced.set_integer_kernel(Some(kernel)).len(), 1);
                let got = forced.model.conv.forward(images.clone());
                assert_eq!(got.dims(), float.model.conv.forward(images.clone()).dims());
                // One layer, its input quantized identically on both paths: only the float
                // path's summation order differs.
                assert_close(&host(got), &expected, 1e-4);
            }
        }
    }
}

/// One drop-in convolution as a model.
#[derive(Module, Debug)]
struct Single {
    conv: Conv2d,
}

impl QuantLayers for Single {
    fn quant_layers(&mut self) -> Vec<(String, &mut dyn ember_quant::QuantLayer)> {
        vec![("conv".to_string(), &mut self.conv)]
    }
}

#[test]
fn a_layer_trained_after_conversion_leaves_its_packed_weight() {
    let _seeded = seeded_lock();
    let device = Device::flex();
    let q = quantize_dynamic(mlp(&device, 50), &DynamicConfig::default()).unwrap();
    let data = Blobs::new(128, 3, 51);
    let config = ember_tensor::TrainConfig {
        epochs: 1,
        batch_size: 32,
        ..ember_tensor::TrainConfig::default()
    };
    let (trained, _) = ember_tensor::train(q.model.clone(), &data, &config, &device).unwrap();
    let (points, _) = data.batch(&(0..128).collect::<Vec<_>>(), &device);
    // The trained weights, fake-quantized inputs: what the model now is. Its packed weights
    // would be those from before training.
    let mut float = ember_quant::Quantized {
        model: trained.clone(),
        weights: q.weights.clone(),
        inputs: q.inputs.clone(),
    };
    float.set_integer_kernel(None);
    assert_eq!(
        host(trained.forward(points.clone())),
        host(float.model.forward(points))
    );
}

#[test]
fn sensitivity_quantizes_one_layer_at_a_time() {
    let _seeded = seeded_lock();
    let device = Device::flex();
    let model = mlp(&device, 60);
    let (calibration, eval) = (Blobs::new(128, 3, 61), Blobs::new(96, 3, 62));
    let config = StaticConfig {
        observer: ObserverConfig::min_max(),
        ..StaticConfig::default()
    };
    let rows = ember_quant::sensitivity(&model, &config, &calibration, &eval, 32, &device).unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r.layer.as_str()).collect();
    assert_eq!(names, ["layers.0", "layers.1", "layers.2"]);
    let float_acc = ember_tensor::evaluate(&model, &eval, 32, &device)
        .unwrap()
        .accuracy;
    let infos = ember_tensor::params(&model);
    let values = param_values(&model);
    for row in &rows {
        assert_eq!(
            row.accuracy_change_pp,
            row.accuracy - float_acc,
            "{}",
            row.layer
        );
        // The weight's SQNR by hand: the scalar quantizer's round trip of the float weight.
        let path = format!("{}.weight", row.layer);
        let info = infos.iter().find(|p| p.path == path).unwrap();
        let w = host(
            values
                .iter()
                .find(|v| v.info.path == path)
                .unwrap()
                .flat
                .clone(),
        );
        let q = QTensor::quantize(&w, &info.shape, config.weights.scheme_for(info), &path)
            .unwrap()
            .dequantize();
        let power: f64 = w.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
        let noise: f64 = w
            .iter()
            .zip(&q)
            .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
            .sum();
        let expected = 10.0 * (power / noise).log10();
        assert!(
            (row.weight_sqnr_db - expected).abs() < 1e-9,
            "{}: {} against {expected}",
            row.layer,
            row.weight_sqnr_db
        );
        // int8 per channel keeps a weight tens of dB above its noise, and the logits, which
        // only one layer's noise reaches, likewise.
        assert!(expected > 30.0 && row.output_sqnr_db > 20.0, "{row:?}");
    }
}

#[test]
fn the_zoo_model_enum_lists_its_layers_with_the_variant() {
    let _seeded = seeded_lock();
    let device = Device::flex();
    device.seed(2);
    let config = ember_zoo::ModelConfig::Mlp(MlpConfig {
        input: Blobs::DIM,
        hidden: vec![6],
        classes: 3,
        dropout: 0.0,
    });
    let q = quantize_dynamic(config.init(&device).unwrap(), &DynamicConfig::default()).unwrap();
    let layers: Vec<&String> = q.inputs.keys().collect();
    assert_eq!(layers, ["Mlp.layers.0", "Mlp.layers.1"]);
    assert!(q.weights.contains_key("Mlp.layers.1.weight"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.q");
    save_quantized(&q, &path).unwrap();
    let loaded = load_quantized(config.init(&device).unwrap(), &path, &device).unwrap();
    let (images, _) = Blobs::new(8, 3, 1).batch(&(0..8).collect::<Vec<_>>(), &device);
    assert_eq!(
        host(loaded.model.forward(images.clone())),
        host(q.model.forward(images))
    );
}

#[test]
fn straight_through_gradients_pass_the_rounding() {
    let device = Device::flex().autodiff();
    let scheme = QScheme::new(QType::Int4, Mode::Symmetric).per_channel(1);
    let w = Tensor::<2>::from_data(
        TensorData::new(vec![0.3f32, -1.2, 0.05, 0.7, 2.0, -0.4], [3, 2]),
        &device,
    )
    .require_grad();
    let y = ember_quant::fake::fake_quantize_weight_ste(w.clone(), &scheme);
    // Forward: the values QTensor stores for the same weight.
    let stored = QTensor::quantize(&host(w.clone()), &[3, 2], scheme, "w").unwrap();
    assert_close(&host(y.clone()), &stored.dequantize(), 1e-6);
    // Backward: the identity, although rounding alone has a zero gradient.
    let weights = Tensor::<2>::from_data(
        TensorData::new(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], [3, 2]),
        &device,
    );
    let grads = (y * weights).sum().backward();
    let grad = w.grad(&grads).unwrap();
    assert_eq!(host(grad), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
}

fn qat_config() -> StaticConfig {
    StaticConfig {
        weights: WeightConfig::int4_per_group(1).with_granularity_per_channel(),
        observer: ObserverConfig::min_max(),
        ..StaticConfig::default()
    }
}

#[test]
fn quantization_aware_training_learns_and_converts_to_what_it_trained() {
    let _seeded = seeded_lock();
    let device = Device::flex();
    let data = Blobs::new(512, 3, 3);
    let test = Blobs::new(256, 3, 4);
    let config = ember_tensor::TrainConfig {
        epochs: 20,
        batch_size: 32,
        seed: 1,
        ..ember_tensor::TrainConfig::default()
    };
    let (float, _) = ember_tensor::train(mlp(&device, 21), &data, &config, &device).unwrap();
    let float_acc = ember_tensor::evaluate(&float, &test, 256, &device)
        .unwrap()
        .accuracy;
    let qat = ember_quant::prepare_qat(mlp(&device, 21), &qat_config()).unwrap();
    let (trained, _) = ember_tensor::train(qat.model.clone(), &data, &config, &device).unwrap();
    let (images, _) = data.batch(&(0..64).collect::<Vec<_>>(), &device);
    // With min/max observers, a training batch leaves the ranges as they are: the trained
    // model's fake-quantized forward is the converted model's.
    let during = host(trained.forward(images.clone()));
    let q = qat.convert(trained).unwrap();
    assert_close(&host(q.model.forward(images)), &during, 1e-4);
    assert_eq!(q.weights["layers.0.weight"].scheme().qtype, QType::Int4);
    // The straight-through gradients train every layer: int4 from scratch learns the task as
    // the float model does (chance is 33 %).
    let acc = ember_tensor::evaluate(&q.model, &test, 256, &device)
        .unwrap()
        .accuracy;
    assert!(
        acc > 65.0 && acc > float_acc - 10.0,
        "int4 QAT {acc} against float {float_acc}"
    );

    let per_group = StaticConfig {
        weights: WeightConfig::int4_per_group(4),
        ..StaticConfig::default()
    };
    assert!(matches!(
        ember_quant::prepare_qat(mlp(&device, 21), &per_group),
        Err(Error::Scheme { .. })
    ));
}

#[test]
fn evaluating_a_qat_model_before_converting_moves_no_range() {
    let _seeded = seeded_lock();
    let device = Device::flex();
    let data = Blobs::new(256, 3, 6);
    let config = ember_tensor::TrainConfig {
        epochs: 1,
        batch_size: 32,
        ..ember_tensor::TrainConfig::default()
    };
    let qat = ember_quant::prepare_qat(mlp(&device, 23), &qat_config()).unwrap();
    let (trained, _) = ember_tensor::train(qat.model.clone(), &data, &config, &device).unwrap();
    let (points, _) = data.batch(&(0..data.len()).collect::<Vec<_>>(), &device);
    // Evaluation on inputs far outside the training range, as a test set might be.
    let _ = trained.forward(points.clone().mul_scalar(100.0));
    ember_tensor::evaluate(&trained, &data, 64, &device).unwrap();
    let q = qat.convert(trained).unwrap();
    // With a min/max observer, the first layer's input range is that of the training points.
    let points = host(points);
    let range = ember_observe::Range {
        min: points.iter().copied().fold(f32::INFINITY, f32::min),
        max: points.iter().copied().fold(f32::NEG_INFINITY, f32::max),
    };
    let expected = qat_config()
        .activations
        .qparams(&[range], "layers.0")
        .unwrap();
    match &q.inputs["layers.0"] {
        InputQuant::Static { params, .. } => assert_eq!(params, &expected),
        other => panic!("layers.0 converted to {}", other.name()),
    }
}

#[test]
fn quantization_aware_training_keeps_pruned_weights_at_zero() {
    let _seeded = seeded_lock();
    let device = Device::flex();
    let keep: Vec<bool> = (0..Blobs::DIM * 16).map(|i| i % 2 == 0).collect();
    let mut masks = Masks::new();
    masks.insert(
        "layers.0.weight".into(),
        Tensor::from_data(TensorData::new(keep.clone(), [keep.len()]), &device),
    );
    let model = set_masks(mlp(&device, 22), &masks).unwrap();
    let qat = ember_quant::prepare_qat(model, &qat_config()).unwrap();
    let config = ember_tensor::TrainConfig {
        epochs: 2,
        batch_size: 32,
        ..ember_tensor::TrainConfig::default()
    };
    let data = Blobs::new(256, 3, 5);
    let (trained, _) = ember_tensor::train(qat.model.clone(), &data, &config, &device).unwrap();
    let q = qat.convert(trained).unwrap();
    let ints = q.weights["layers.0.weight"].values();
    let effective = host(param_values(&q.model)[0].flat.clone());
    for (i, &kept) in keep.iter().enumerate() {
        if !kept {
            assert_eq!((ints[i], effective[i]), (0, 0.0), "pruned weight {i}");
        }
    }
    assert_eq!(ember_tensor::masks(&q.model).len(), 1);
}

#[test]
fn histogram_observers_calibrate_a_model() {
    let _seeded = seeded_lock();
    let device = Device::flex();
    let data = Noise::new(64, 8);
    for method in [
        RangeMethod::Percentile(99.9),
        RangeMethod::Mse,
        RangeMethod::Entropy,
    ] {
        let config = StaticConfig {
            observer: ObserverConfig::histogram(method),
            ..StaticConfig::default()
        };
        let q = quantize_static(lenet(&device, 3), &config, &data, &device).unwrap();
        assert_eq!(q.inputs.len(), 5, "{method:?}");
        // conv1's input is the images: its parameters are those of one observer of the same
        // method fed every calibration image at once (histograms merge exactly, so batching
        // does not matter).
        let (images, _) = data.batch(&(0..data.len()).collect::<Vec<_>>(), &device);
        let mut observer = config.observer.build("images").unwrap();
        observer
            .observe(&host(images.clone()), &images.dims())
            .unwrap();
        let scheme = config.activations;
        let range = observer.ranges(scheme.levels()).unwrap();
        let expected = scheme.qparams(&range, "conv1").unwrap();
        match &q.inputs["conv1"] {
            InputQuant::Static { params, .. } => assert_eq!(params, &expected, "{method:?}"),
            other => panic!("conv1 quantized as {}", other.name()),
        }
        // Each method picks its own range inside what the images span ([0, 1)).
        assert!(
            range[0].min >= 0.0 && range[0].max <= 1.0,
            "{method:?}: {range:?}"
        );
    }
}

/// A file written before files carried a checksum (`ember-quant/1`) still loads, with the same
/// outputs; the same file claiming the current format without a checksum does not.
#[test]
fn a_file_from_before_checksums_still_loads() {
    let _seeded = seeded_lock();
    let device = Device::flex();
    let q = quantize_dynamic(mlp(&device, 1), &DynamicConfig::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.q");
    save_quantized(&q, &path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let write_as = |format: &str, name: &str| {
        let mut metadata = header.metadata().clone().unwrap();
        metadata.remove(ember_tensor::fs::CHECKSUM_KEY);
        metadata.insert("format".into(), format.into());
        let old = safetensors::serialize(tensors.tensors(), Some(metadata)).unwrap();
        let out = dir.path().join(name);
        std::fs::write(&out, old).unwrap();
        out
    };
    let old = load_quantized(
        mlp(&device, 1),
        &write_as("ember-quant/1", "old.q"),
        &device,
    )
    .unwrap();
    let images = Tensor::<4>::from_data(
        TensorData::new(vec![0.25f32; 2 * Blobs::DIM], [2, 1, 1, Blobs::DIM]),
        &device,
    );
    assert_eq!(
        host(old.model.forward(images.clone())),
        host(q.model.forward(images))
    );
    assert!(matches!(
        load_quantized(
            mlp(&device, 1),
            &write_as("ember-quant/2", "unsigned.q"),
            &device
        ),
        Err(Error::QuantFile { .. })
    ));
}

/// A model whose `QuantLayers` names a layer by a path its parameters do not have: every pass
/// that quantizes inputs refuses it, naming the layer and the weights the model has.
#[test]
fn quant_layer_names_that_match_no_weight_are_refused() {
    #[derive(Module, Debug)]
    struct Misnamed {
        fc: Linear,
    }
    impl QuantLayers for Misnamed {
        fn quant_layers(&mut self) -> Vec<(String, &mut dyn ember_quant::QuantLayer)> {
            vec![("dense".into(), &mut self.fc)]
        }
    }
    let device = Device::flex();
    let model = || Misnamed {
        fc: Linear::new(&LinearConfig::new(4, 3), &device),
    };
    let err = quantize_dynamic(model(), &DynamicConfig::default()).unwrap_err();
    assert!(
        matches!(&err, Error::LayerPath { layer, available } if layer == "dense" && available == "fc.weight"),
        "{err}"
    );
    assert!(matches!(
        ember_quant::prepare(model(), &StaticConfig::default()),
        Err(Error::LayerPath { .. })
    ));
    // An empty selection is refused too, naming the selector.
    let none = DynamicConfig {
        weights: WeightConfig {
            layers: ember_tensor::Selector::linear_and_conv_weights()
                .kind("Conv3d")
                .exclude("*"),
            ..WeightConfig::int8_per_channel()
        },
        ..DynamicConfig::default()
    };
    let mut fine = model();
    fine.fc = Linear::new(&LinearConfig::new(4, 3), &device);
    let err = quantize_weights(fine, &none.weights).unwrap_err();
    assert!(
        matches!(&err, Error::Tensor(ember_tensor::Error::EmptySelection { selector, .. }) if selector.contains("exclude [*]")),
        "{err}"
    );
}

/// A weight-only model of plain burn layers (no `QuantLayers`) saves and loads back with the
/// same dequantized weights; a file that quantizes inputs is refused by the weight-only loader,
/// naming the layers.
#[test]
fn weight_only_files_load_into_plain_burn_layers() {
    let _seeded = seeded_lock();
    let device = Device::flex();
    device.seed(3);
    let layer = LinearConfig::new(16, 8).init(&device);
    let q = quantize_weights(layer, &WeightConfig::int8_per_channel()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plain.q");
    save_quantized(&q, &path).unwrap();
    let fresh = LinearConfig::new(16, 8).init(&device);
    let loaded = ember_quant::load_quantized_weights(fresh, &path, &device).unwrap();
    assert_eq!(
        read_f32(loaded.model.weight.val()).unwrap(),
        read_f32(q.model.weight.val()).unwrap()
    );
    assert_eq!(loaded.weights, q.weights);

    let dynamic = quantize_dynamic(mlp(&device, 1), &DynamicConfig::default()).unwrap();
    let with_inputs = dir.path().join("dynamic.q");
    save_quantized(&dynamic, &with_inputs).unwrap();
    let err =
        ember_quant::load_quantized_weights(mlp(&device, 1), &with_inputs, &device).unwrap_err();
    assert!(
        matches!(&err, Error::QuantFile { reason, .. } if reason.contains("layers.0")),
        "{err}"
    );
}

#[test]
fn int4_groups_of_a_convolution_run_over_each_filter() {
    let _seeded = seeded_lock();
    let device = Device::flex();
    let model = lenet(&device, 5);
    let original = host(model.conv2.weight.val());
    let q = quantize_weights(model, &WeightConfig::int4_per_group(32)).unwrap();
    // conv1 is [6, 1, 5, 5]: one group of 25 per filter, not one scale per weight.
    assert_eq!(q.weights["conv1.weight"].params().scale.len(), 6);
    // conv2 is [16, 6, 5, 5]: each filter's 150 values in groups of 32 (4 of 32 and one of 22).
    let conv2 = &q.weights["conv2.weight"];
    assert_eq!(conv2.params().scale.len(), 16 * 5);
    // By hand: the second group of filter 3 is its values 32..64, symmetric int4: its scale
    // is their max |w| / 7.5.
    let group: Vec<f32> = original[3 * 150 + 32..3 * 150 + 64].to_vec();
    let amax = group.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    assert_eq!(conv2.params().scale[3 * 5 + 1], amax / 7.5);
    // Linear layers keep their groups along the input axis: fc2 is [120, 84], 4 groups of
    // at most 32 inputs for each of its 84 outputs.
    assert_eq!(q.weights["fc2.weight"].params().scale.len(), 4 * 84);
}
