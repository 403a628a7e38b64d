//! Dependency groups found in the captured forward graph (`ember_prune::find_unit_groups`)
//! against the groups each zoo model's author declares by hand: the same units, producers and
//! consumers, residual stream and flattened feature map included; the classes left whole.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;

use burn::module::Module;
use burn::tensor::Tensor;
use common::flex_device;
use ember_prune::{StructuredConfig, UnitCriterion, find_unit_groups, select_units, shrink};
use ember_tensor::{UnitGroup, UnitSlice};
use ember_zoo::{Classifier, LeNet5Config, MlpConfig, ResNetConfig};

/// A group as a comparable value: its units and its slices, order aside.
type Slices = Vec<(String, usize, usize)>;
fn canonical(groups: &[UnitGroup]) -> BTreeSet<(usize, Slices, Slices)> {
    let sorted = |slices: &[UnitSlice]| {
        let mut v: Slices = slices
            .iter()
            .map(|s| (s.path.clone(), s.axis, s.block))
            .collect();
        v.sort();
        v
    };
    groups
        .iter()
        .map(|g| (g.units, sorted(&g.producers), sorted(&g.consumers)))
        .collect()
}

fn classify<M: Classifier>(model: &M, x: Tensor<4>) -> Tensor<2> {
    model.forward(x)
}

#[test]
fn the_mlp_s_found_groups_are_its_declared_ones() {
    let device = flex_device();
    let config = MlpConfig::lenet_300_100(784, 10);
    let model = config.init(&device).unwrap();
    let found = find_unit_groups(&model, [1, 1, 28, 28], classify).unwrap();
    // The same in order, names and which producer is scored first.
    assert_eq!(found.groups, config.unit_groups(""));
    assert_eq!(found.skipped.len(), 1);
    assert_eq!(found.skipped[0].0, "layers.2");
    assert!(found.skipped[0].1.contains("output"), "{:?}", found.skipped);
}

#[test]
fn lenet5_s_found_groups_include_the_flattened_feature_map() {
    let device = flex_device();
    let config = LeNet5Config::new(1, [28, 28], 10);
    let model = config.init(&device).unwrap();
    let found = find_unit_groups(&model, [1, 1, 28, 28], classify).unwrap();
    let declared = config.unit_groups("").unwrap();
    assert_eq!(canonical(&found.groups), canonical(&declared));
    // conv2's filters are read by fc1 as blocks of the 5x5 feature map.
    let conv2 = found.groups.iter().find(|g| g.name == "conv2").unwrap();
    assert_eq!(
        conv2.consumers,
        [UnitSlice::new("fc1.weight", 0).with_block(25)]
    );
}

#[test]
fn the_residual_network_s_stream_is_one_group_with_its_batch_norms() {
    let device = flex_device();
    let config = ResNetConfig::small(1, [28, 28], 10);
    let model = config.init(&device).unwrap();
    let found = find_unit_groups(&model, [1, 1, 28, 28], classify).unwrap();
    assert_eq!(canonical(&found.groups), canonical(&config.unit_groups("")));
    // The stream is named after the first layer that produces it.
    assert_eq!(found.groups[0].name, "stem");
    assert_eq!(
        found.groups[0].producers[0],
        UnitSlice::new("stem.weight", 0)
    );
}

/// The found groups drive the surgery as the declared ones do: the same smaller model.
#[test]
fn found_groups_shrink_lenet5_as_the_declared_ones_do() {
    let device = flex_device();
    let config = LeNet5Config::new(1, [28, 28], 10);
    let model = config.init(&device).unwrap();
    let found = find_unit_groups(&model, [1, 1, 28, 28], classify)
        .unwrap()
        .groups;
    let cut = StructuredConfig::new(UnitCriterion::L1, 0.5);
    let kept = select_units(&model, &found, &cut).unwrap();
    let declared = config.unit_groups("").unwrap();
    assert_eq!(kept, select_units(&model, &declared, &cut).unwrap());
    let narrow = config.with_kept("", &kept);
    let a = shrink(&model, &found, &kept, narrow.init(&device).unwrap()).unwrap();
    let b = shrink(&model, &declared, &kept, narrow.init(&device).unwrap()).unwrap();
    let x = Tensor::<4>::ones([2, 1, 28, 28], &device);
    let (ya, yb) = (a.forward(x.clone()), b.forward(x));
    assert_eq!(
        ember_tensor::stats::read_f32(ya).unwrap(),
        ember_tensor::stats::read_f32(yb).unwrap()
    );
}

/// Every conv -> batch-norm pair of the residual network found in its graph and folded: the
/// same outputs, with batch norms that no longer scale.
#[test]
fn every_conv_batch_norm_pair_is_found_and_folded() {
    use ember_quant::{conv_bn_pairs, fold_conv_bn_pairs};
    let device = flex_device();
    let config = ResNetConfig::small(1, [28, 28], 10);
    let model = trained_looking_resnet(&config, &device);
    let pairs = conv_bn_pairs(&model, [1, 1, 28, 28], classify).unwrap();
    let names: Vec<(String, String)> = pairs
        .iter()
        .map(|p| (p.conv.clone(), p.norm.clone()))
        .collect();
    let mut expected = vec![("stem".to_string(), "stem_norm".to_string())];
    for i in 0..config.blocks.len() {
        for j in [1, 2] {
            expected.push((format!("blocks.{i}.conv{j}"), format!("blocks.{i}.norm{j}")));
        }
    }
    assert_eq!(names, expected);
    let x = Tensor::<4>::ones([2, 1, 28, 28], &device).mul_scalar(0.5);
    let before = ember_tensor::stats::read_f32(model.forward(x.clone())).unwrap();
    let folded = fold_conv_bn_pairs(model, &pairs).unwrap();
    let after = ember_tensor::stats::read_f32(folded.forward(x)).unwrap();
    let diff = before
        .iter()
        .zip(&after)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(diff < 1e-4, "folding moved the logits by {diff}");
    let gamma = ember_tensor::stats::read_f32(folded.stem_norm.gamma.val()).unwrap();
    assert!(gamma.iter().all(|&g| g == 1.0));
}

/// The residual network with its batch norms' scales, shifts and running statistics away from
/// the initial identity, as training leaves them.
fn trained_looking_resnet(
    config: &ResNetConfig,
    device: &burn::tensor::Device,
) -> ember_zoo::ResNet {
    let model = config.init(device).unwrap();
    let mut values = std::collections::BTreeMap::new();
    for p in ember_tensor::param_values(&model) {
        let n = p.info.numel();
        let wave = |k: f32| (0..n).map(move |i| 1.0 + 0.3 * ((i as f32 + k) * 0.7).sin());
        let value: Vec<f32> = match p.info.path.rsplit('.').next().unwrap() {
            "gamma" | "running_var" => wave(1.0).collect(),
            "beta" | "running_mean" => wave(2.0).map(|v| v - 1.0).collect(),
            _ => continue,
        };
        values.insert(p.info.path, value);
    }
    ember_tensor::set_param_values(model, &values).unwrap()
}

/// Folded and frozen for quantization-aware training: on the training device every batch norm
/// runs on the statistics it was folded with, so the training-mode forward pass is the
/// inference one (a folded batch norm left to itself renormalizes by the batch's statistics
/// instead), and QAT moves the convolutions and the shifts, never the scales or the statistics;
/// the trained model converts.
#[test]
fn batch_norms_folded_and_frozen_for_qat_stay_folded_through_training() {
    use ember_quant::{
        StaticConfig, conv_bn_pairs, fold_and_freeze_conv_bn_pairs, fold_conv_bn_pairs, prepare_qat,
    };
    let device = flex_device();
    let autodiff = device.clone().autodiff();
    let config = ResNetConfig::small(1, [28, 28], 10);
    let pixels = burn::tensor::TensorData::new(
        (0..4 * 28 * 28)
            .map(|i| ((i * 37) % 101) as f32 / 101.0)
            .collect(),
        [4, 1, 28, 28],
    );
    let x = Tensor::<4>::from_data(pixels.clone(), &device);
    let x_training = Tensor::<4>::from_data(pixels, &autodiff);
    let logits = |model: &ember_zoo::ResNet, x: Tensor<4>| {
        ember_tensor::stats::read_f32(model.forward(x)).unwrap()
    };
    let gap = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max)
    };

    let model = trained_looking_resnet(&config, &device);
    let pairs = conv_bn_pairs(&model, [1, 1, 28, 28], classify).unwrap();
    let frozen = fold_and_freeze_conv_bn_pairs(model, &pairs).unwrap();
    let inference = logits(&frozen, x);
    let training = logits(&frozen.clone().fork(&autodiff), x_training.clone());
    assert!(
        gap(&inference, &training) < 1e-4,
        "{}",
        gap(&inference, &training)
    );
    let loose = fold_conv_bn_pairs(trained_looking_resnet(&config, &device), &pairs).unwrap();
    let renormalized = logits(&loose.fork(&autodiff), x_training);
    assert!(
        gap(&inference, &renormalized) > 1e-2,
        "without the freeze a batch norm uses the batch's statistics"
    );

    let before = ember_tensor::param_values(&frozen);
    let qat = prepare_qat(frozen, &StaticConfig::qat()).unwrap();
    let data = common::synthetic_split(64, 7);
    let training = ember_zoo::TrainConfig {
        epochs: 1,
        batch_size: 16,
        ..ember_zoo::TrainConfig::default()
    };
    let (trained, _) = ember_zoo::train(qat.model.clone(), &data, &training, &device).unwrap();
    let after = ember_tensor::param_values(&trained);
    let mut moved = BTreeSet::new();
    for (b, a) in before.into_iter().zip(after) {
        assert_eq!(b.info.path, a.info.path);
        let (b_flat, a_flat) = (
            ember_tensor::stats::read_f32(b.flat).unwrap(),
            ember_tensor::stats::read_f32(a.flat).unwrap(),
        );
        let leaf = b.info.path.rsplit('.').next().unwrap().to_string();
        let is_norm = pairs
            .iter()
            .any(|p| b.info.path.starts_with(&format!("{}.", p.norm)));
        if is_norm && ["gamma", "running_mean", "running_var"].contains(&leaf.as_str()) {
            assert_eq!(b_flat, a_flat, "{} moved", b.info.path);
        }
        if b_flat != a_flat {
            moved.insert(if is_norm {
                format!("norm {leaf}")
            } else {
                leaf
            });
        }
    }
    assert!(moved.contains("norm beta"), "{moved:?}");
    assert!(moved.contains("weight"), "{moved:?}");
    let quantized = qat.convert(trained).unwrap();
    assert!(!quantized.weights.is_empty());
}
