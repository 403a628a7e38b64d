//! Quantization-aware training beyond min/max fake quantization: learned step sizes (LSQ),
//! bit widths from 2 to 8, observers frozen after N batches, and the typed errors of each.

#![allow(clippy::unwrap_used)] // a test fails loudly, which is what it is for

use burn::tensor::{Device, Tensor, TensorData};
use ember_observe::ObserverConfig;
use ember_quant::lsq::fake_quantize_lsq;
use ember_quant::nn::{InputQuant, QuantLayers};
use ember_quant::{
    Error, Mode, QScheme, QType, StaticConfig, WeightConfig, prepare_lsq, prepare_qat,
    quantize_weights,
};
use ember_tensor::stats::read_f32;
use ember_tensor::testing::{Blobs, seeded_lock};
use ember_tensor::{Classifier, LabeledData, TrainConfig, evaluate, train};
use ember_zoo::{Mlp, MlpConfig};

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

fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    read_f32(t).unwrap()
}

fn training(epochs: usize) -> TrainConfig {
    TrainConfig {
        epochs,
        batch_size: 32,
        seed: 1,
        ..TrainConfig::default()
    }
}

/// W2A8: 2-bit weights per channel (the integers -2..=1 in an Int4), uint8 inputs.
fn w2a8() -> StaticConfig {
    StaticConfig {
        weights: WeightConfig::with_width(2).unwrap(),
        observer: ObserverConfig::min_max(),
        ..StaticConfig::default()
    }
}

#[test]
fn lsq_gradients_are_the_papers() {
    let device = Device::flex().autodiff();
    // Step 0.5, zero point 1, bounds 0..=3 (2 bits unsigned): x / s + z = [1.6, 0.2, 5, -3].
    let x = Tensor::<1>::from_floats([0.3f32, -0.4, 2.0, -2.0], &device).require_grad();
    let step = Tensor::<1>::from_floats([0.5f32], &device).require_grad();
    let g = 0.25;
    let y = fake_quantize_lsq(x.clone(), step.clone(), 1, (0, 3), g);
    // Forward: (round(clamp(x/s + z)) - z) * s = [(2-1), (0-1), (3-1), (0-1)] * 0.5.
    assert_eq!(host(y.clone()), vec![0.5, -0.5, 1.0, -0.5]);
    let grads = y.sum().backward();
    // ∂/∂x: 1 inside the grid, 0 where clamped.
    assert_eq!(host(x.grad(&grads).unwrap()), vec![1.0, 1.0, 0.0, 0.0]);
    // ∂/∂s, by hand (Esser et al. 2020, eq. 3, shifted by the zero point), times g:
    // inside: round(x/s + z) - z - x/s = (2 - 1 - 0.6) + (0 - 1 + 0.8); clamped: (3 - 1) +
    // (0 - 1).
    let expected = g * ((2.0 - 1.0 - 0.6) + (0.0 - 1.0 + 0.8) + 2.0 - 1.0);
    let got = host(step.grad(&grads).unwrap())[0];
    assert!((got - expected).abs() < 1e-6, "{got} against {expected}");
}

#[test]
fn learned_steps_train_and_convert_to_what_they_trained() {
    let _seeded = seeded_lock();
    let device = Device::flex();
    let data = Blobs::new(512, 3, 3);
    let test = Blobs::new(256, 3, 4);
    let qat = prepare_lsq(mlp(&device, 21), &w2a8(), &data, &device).unwrap();
    let mut model = qat.model.clone();
    let before: Vec<Vec<f32>> = model
        .quant_layers()
        .into_iter()
        .map(|(_, l)| host(l.steps().unwrap().weight_steps()))
        .collect();
    // The weight steps start at 2 mean|w| / sqrt(Qp), Qp = 1 for 2-bit signed weights.
    let weight = host(model.layers[0].weight.val());
    let column: Vec<f32> = (0..Blobs::DIM).map(|r| weight[r * 16].abs()).collect();
    let mean = column.iter().sum::<f32>() / column.len() as f32;
    assert!((before[0][0] - 2.0 * mean).abs() < 1e-5);

    let (mut trained, _) = train(model.clone(), &data, &training(20), &device).unwrap();
    let after: Vec<Vec<f32>> = trained
        .quant_layers()
        .into_iter()
        .map(|(_, l)| host(l.steps().unwrap().weight_steps()))
        .collect();
    assert_ne!(before, after, "the optimizer trains the steps");
    let (images, _) = data.batch(&(0..64).collect::<Vec<_>>(), &device);
    let during = host(trained.forward(images.clone()));
    let q = qat.convert(trained).unwrap();
    // The converted model is the function training saw: the learned steps are its scales.
    let converted = host(q.model.forward(images));
    for (a, e) in converted.iter().zip(&during) {
        assert!((a - e).abs() <= 1e-4 * (1.0 + e.abs()), "{a} against {e}");
    }
    let w = &q.weights["layers.0.weight"];
    assert_eq!(w.params().scale, after[0]);
    assert!(w.values().iter().all(|v| (-2..=1).contains(v)));
    assert!(matches!(q.inputs["layers.0"], InputQuant::Static { .. }));
    // Steps leave the model with the conversion: its record is burn's again.
    let mut model = q.model;
    assert!(
        model
            .quant_layers()
            .iter()
            .all(|(_, l)| l.steps().is_none())
    );
    let acc = evaluate(&model, &test, 256, &device).unwrap().accuracy;
    assert!(acc > 65.0, "W2A8 LSQ {acc} % (chance 33 %)");
}

#[test]
fn two_bit_weights_quantize_to_four_levels_and_train() {
    let _seeded = seeded_lock();
    let device = Device::flex();
    let data = Blobs::new(512, 3, 3);
    let q = quantize_weights(mlp(&device, 21), &w2a8().weights).unwrap();
    let w = &q.weights["layers.0.weight"];
    assert_eq!(w.scheme().qtype, QType::Int4);
    let mut levels: Vec<i32> = w.values();
    levels.sort_unstable();
    levels.dedup();
    assert!(levels.len() <= 4 && levels.iter().all(|v| (-2..=1).contains(v)));

    let qat = prepare_qat(mlp(&device, 21), &w2a8()).unwrap();
    let (trained, _) = train(qat.model.clone(), &data, &training(10), &device).unwrap();
    let q = qat.convert(trained).unwrap();
    assert!(
        q.weights["layers.1.weight"]
            .values()
            .iter()
            .all(|v| (-2..=1).contains(v))
    );
}

#[test]
fn frozen_observers_stop_moving_their_ranges() {
    let _seeded = seeded_lock();
    let device = Device::flex();
    let data = Blobs::new(256, 3, 6);
    let moving = StaticConfig {
        observer: ObserverConfig::moving_average(),
        freeze_observers_after: Some(1),
        ..w2a8()
    };
    // One batch an epoch, so that a step is an epoch. Frozen after the first step, three
    // steps leave every input's range where one step without freezing leaves it; without
    // freezing, the moving average follows the hidden activations as they train.
    let full = |epochs| TrainConfig {
        batch_size: data.len(),
        ..training(epochs)
    };
    let input_params = |config: &StaticConfig, epochs| {
        let qat = prepare_qat(mlp(&device, 23), config).unwrap();
        let (trained, _) = train(qat.model.clone(), &data, &full(epochs), &device).unwrap();
        let q = qat.convert(trained).unwrap();
        q.inputs
            .values()
            .map(|input| match input {
                InputQuant::Static { params, .. } => params.clone(),
                other => panic!("converted to {}", other.name()),
            })
            .collect::<Vec<_>>()
    };
    let unfrozen = StaticConfig {
        freeze_observers_after: None,
        ..moving.clone()
    };
    let frozen_after_three = input_params(&moving, 3);
    assert_eq!(frozen_after_three, input_params(&unfrozen, 1));
    assert_ne!(frozen_after_three, input_params(&unfrozen, 3));

    // Frozen by hand before any batch: no range to keep.
    let qat = prepare_qat(mlp(&device, 23), &moving).unwrap();
    assert!(matches!(
        qat.freeze_observers(),
        Err(Error::Observe(ember_observe::Error::Empty { what })) if what.contains("layers.0")
    ));
}

#[test]
fn bad_widths_and_zero_steps_are_typed_errors() {
    let _seeded = seeded_lock();
    let device = Device::flex();
    let data = Blobs::new(64, 3, 6);
    for bits in [0, 1, 9] {
        let weights = StaticConfig {
            weights: WeightConfig {
                bits: Some(bits),
                ..WeightConfig::int8_per_channel()
            },
            ..w2a8()
        };
        assert!(matches!(
            prepare_qat(mlp(&device, 1), &weights),
            Err(Error::BitWidth { bits: b, .. }) if b == bits
        ));
        assert!(matches!(
            prepare_lsq(mlp(&device, 1), &weights, &data, &device),
            Err(Error::BitWidth { .. })
        ));
        assert!(matches!(
            quantize_weights(mlp(&device, 1), &weights.weights),
            Err(Error::BitWidth { .. })
        ));
        let inputs = StaticConfig {
            activations: QScheme::new(QType::UInt8, Mode::Affine).with_bits(bits),
            ..w2a8()
        };
        assert!(matches!(
            prepare_qat(mlp(&device, 1), &inputs),
            Err(Error::BitWidth { .. })
        ));
    }
    // An all-zero weight has no step to start from.
    let mut zero = mlp(&device, 1);
    zero.layers[1].weight = zero.layers[1].weight.clone().map(|w| w.zeros_like());
    assert!(matches!(
        prepare_lsq(zero, &w2a8(), &data, &device),
        Err(Error::ZeroRange { what }) if what == "layers.1.weight"
    ));
    // So has an input that was always zero.
    let zeros = Zeros(64);
    assert!(matches!(
        prepare_lsq(mlp(&device, 1), &w2a8(), &zeros, &device),
        Err(Error::ZeroRange { what }) if what == "layers.0 input"
    ));
}

/// Images that are all zero.
struct Zeros(usize);

impl LabeledData for Zeros {
    fn len(&self) -> usize {
        self.0
    }
    fn batch(
        &self,
        indices: &[usize],
        device: &Device,
    ) -> (Tensor<4>, Tensor<1, burn::tensor::Int>) {
        let images = Tensor::zeros([indices.len(), 1, 1, Blobs::DIM], device);
        let labels = Tensor::from_data(
            TensorData::new(vec![0i64; indices.len()], [indices.len()]),
            device,
        );
        (images, labels)
    }
}
