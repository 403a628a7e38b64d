//! Dependency groups found in the captured forward graph (`ember_prune::find_unit_groups`)
//! against the groups each zoo model's author declares by hand: the same units, producers and
//! consumers, residual stream and flattened feature map included; the classes left whole.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;

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
    let model = config.init(&device).unwrap();
    // Statistics as training leaves them, not the initial identity.
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
    let model = ember_tensor::set_param_values(model, &values).unwrap();
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
