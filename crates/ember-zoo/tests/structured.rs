//! Structured pruning of the zoo's models through the groups they declare: removing units
//! nothing reads changes no output (LeNet-5's flattened feature map, the residual stream and
//! the transformer's attention heads included), and the narrower models train, save and
//! reload through their own configs.

#![allow(clippy::unwrap_used)] // a test fails loudly, which is what it is for

mod common;

use std::collections::BTreeMap;

use burn::module::Module;
use burn::tensor::{Distribution, Tensor};
use common::{flex_device, synthetic_split};
use ember_prune::shrink;
use ember_tensor::UnitGroup;
use ember_tensor::stats::read_f32;
use ember_zoo::{
    Classifier, Error, LabeledData, LeNet5Config, MlpConfig, ModelConfig, ResNetConfig,
    TrainConfig, TransformerConfig, load_model, save_model, train,
};

/// Half of LeNet-300-100's neurons removed by L2 norm: the smaller network keeps the kept
/// neurons' weights, saves and reloads through its own config, and the dense file does not load
/// as the pruned model.
#[test]
fn a_structurally_pruned_mlp_reloads_through_its_config() {
    use ember_prune::{StructuredConfig, UnitCriterion, select_units, shrink};
    let device = flex_device();
    let dir = tempfile::tempdir().unwrap();
    let config = MlpConfig::lenet_300_100(784, 10);
    let dense = config.init(&device).unwrap();
    let groups = config.unit_groups("");
    let kept = select_units(
        &dense,
        &groups,
        &StructuredConfig::new(UnitCriterion::L2, 0.5),
    )
    .unwrap();
    let small_config = config.with_kept("", &kept);
    assert_eq!(small_config.hidden, vec![150, 50]);
    let small = shrink(&dense, &groups, &kept, small_config.init(&device).unwrap()).unwrap();
    // The first layer's columns are the kept neurons' columns of the dense one.
    let values = |m: &ember_zoo::Mlp| -> std::collections::BTreeMap<String, Vec<f32>> {
        ember_tensor::param_values(m)
            .into_iter()
            .map(|p| (p.info.path, ember_tensor::stats::read_f32(p.flat).unwrap()))
            .collect()
    };
    let (dense_values, small_values) = (values(&dense), values(&small));
    let (w_dense, w_small) = (
        &dense_values["layers.0.weight"],
        &small_values["layers.0.weight"],
    );
    for row in [0, 391, 783] {
        for (j, &u) in kept["layers.0"].iter().enumerate() {
            assert_eq!(w_small[row * 150 + j], w_dense[row * 300 + u]);
        }
    }
    let small_config = ModelConfig::Mlp(small_config);
    let path = dir.path().join("small.bpk");
    save_model(small.clone(), &small_config, &path).unwrap();
    let (loaded, loaded_config) = load_model(&path, &device).unwrap();
    assert_eq!(loaded_config, small_config);
    let ember_zoo::Model::Mlp(loaded) = loaded else {
        panic!("not an MLP")
    };
    assert_eq!(values(&loaded), small_values);
    dense_file_under_the_narrow_config_is_refused(dense, &ModelConfig::Mlp(config), &path);
}

/// The dense weights saved with the narrow model's config beside them (the one at
/// `narrow_path`): a typed error, not a model with shifted weights.
fn dense_file_under_the_narrow_config_is_refused(
    dense: impl Into<ember_zoo::Model>,
    config: &ModelConfig,
    narrow_path: &std::path::Path,
) {
    let dir = tempfile::tempdir().unwrap();
    let dense_path = dir.path().join("dense.bpk");
    save_model(dense, config, &dense_path).unwrap();
    std::fs::copy(
        ember_zoo::saved::config_path(narrow_path),
        ember_zoo::saved::config_path(&dense_path),
    )
    .unwrap();
    assert!(matches!(
        load_model(&dense_path, &flex_device()),
        Err(Error::ModelFile { .. })
    ));
}

/// LeNet-5's filters and neurons: removing units nothing reads (a first-layer filter whose
/// input channel the second convolution ignores, a second-layer filter whose whole block of
/// `fc1` inputs is zero, neurons with zero outgoing weights) changes no output, which checks
/// every slice of every group, the flattened feature map's blocks included; the narrower model
/// saves and reloads through its own config.
#[test]
fn lenet5_filters_nothing_reads_are_removed_without_changing_an_output() {
    let device = flex_device();
    let config = LeNet5Config::new(1, [28, 28], 10);
    let model = config.init(&device).unwrap();
    let groups = config.unit_groups("").unwrap();
    // Dead units: conv1 filters 1 and 4, conv2 filters 0 and 9, fc1 unit 7, fc2 unit 83.
    let dead: BTreeMap<&str, Vec<usize>> = [
        ("conv1", vec![1, 4]),
        ("conv2", vec![0, 9]),
        ("fc1", vec![7]),
        ("fc2", vec![83]),
    ]
    .into();
    let (model, kept) = kill(model, &groups, &dead);
    let small_config = config.with_kept("", &kept);
    assert_eq!(
        [
            small_config.widths.conv1,
            small_config.widths.conv2,
            small_config.widths.fc1,
            small_config.widths.fc2
        ],
        [4, 14, 119, 83]
    );
    let small = shrink(&model, &groups, &kept, small_config.init(&device).unwrap()).unwrap();
    assert_eq!(
        burn::module::Module::num_params(&small),
        small_config.parameter_count().unwrap()
    );
    let images = synthetic_split(8, 3)
        .batch(&(0..8).collect::<Vec<_>>(), &device)
        .0;
    let (want, got) = (
        read_f32(model.forward(images.clone())).unwrap(),
        read_f32(small.forward(images.clone())).unwrap(),
    );
    for (w, g) in want.iter().zip(&got) {
        assert!((w - g).abs() <= 1e-5 * (1.0 + w.abs()), "{w} vs {g}");
    }
    // Inside `Model`, the groups and the activations carry the variant's name alike.
    let whole = ember_zoo::Model::LeNet5(model);
    let data = synthetic_split(16, 4);
    let evidence = ember_prune::Evidence {
        data: &data,
        batches: 2,
        batch_size: 8,
        device: &device,
    };
    let model_groups = ModelConfig::LeNet5(config).unit_groups().unwrap();
    let apoz = ember_prune::unit_scores(
        &whole,
        &model_groups,
        ember_prune::UnitCriterion::Apoz,
        Some(&evidence),
    )
    .unwrap();
    assert_eq!(apoz["LeNet5.conv1"].len(), 6);
    assert!(apoz["LeNet5.fc2"].iter().all(|a| (0.0..=1.0).contains(a)));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("small.bpk");
    let small_config = ModelConfig::LeNet5(small_config);
    save_model(small, &small_config, &path).unwrap();
    let (loaded, loaded_config) = load_model(&path, &device).unwrap();
    assert_eq!(loaded_config, small_config);
    assert_eq!(read_f32(loaded.forward(images)).unwrap(), got);
}
/// Zero every consumer slice of the `dead` units of each group (by group name): nothing reads
/// them any more. Returns the model and the units each group keeps.
fn kill<M: Module>(
    model: M,
    groups: &[UnitGroup],
    dead: &BTreeMap<&str, Vec<usize>>,
) -> (M, BTreeMap<String, Vec<usize>>) {
    let mut values: BTreeMap<String, (Vec<usize>, Vec<f32>)> = ember_tensor::param_values(&model)
        .into_iter()
        .map(|p| (p.info.path, (p.info.shape, read_f32(p.flat).unwrap())))
        .collect();
    for group in groups {
        for consumer in &group.consumers {
            let (shape, flat) = values.get_mut(&consumer.path).unwrap();
            let outer: usize = shape[..consumer.axis].iter().product();
            let inner: usize = shape[consumer.axis + 1..].iter().product();
            let dim = shape[consumer.axis];
            for &u in &dead[group.name.as_str()] {
                for o in 0..outer {
                    let first = (o * dim + u * consumer.block) * inner;
                    flat[first..first + consumer.block * inner].fill(0.0);
                }
            }
        }
    }
    let flat_values = values.into_iter().map(|(k, (_, v))| (k, v)).collect();
    let model = ember_tensor::set_param_values(model, &flat_values).unwrap();
    let kept = groups
        .iter()
        .map(|g| {
            let dead = &dead[g.name.as_str()];
            let kept = (0..g.units).filter(|u| !dead.contains(u)).collect();
            (g.name.clone(), kept)
        })
        .collect();
    (model, kept)
}

/// Every parameter of `model` (batch norms' running statistics included) set to distinct
/// pseudo-random values, variances positive, so that a slice copied to the wrong place shows.
fn scramble<M: Module>(model: M, seed: u64) -> M {
    let mut state = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let values = ember_tensor::params(&model)
        .into_iter()
        .map(|p| {
            let v: Vec<f32> = (0..p.numel())
                .map(|_| {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let u = ((state >> 40) as f32) / ((1u64 << 24) as f32);
                    if p.path.ends_with("running_var") {
                        0.5 + u
                    } else {
                        u * 0.6 - 0.3
                    }
                })
                .collect();
            (p.path, v)
        })
        .collect();
    ember_tensor::set_param_values(model, &values).unwrap()
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(8))]
    /// Channels of the residual stream that neither a block nor the head reads, and inner
    /// channels a block's second convolution ignores, are removed with no output changed:
    /// the stream's group cuts the stem, every block's second convolution and batch norm, and
    /// every reader at once.
    #[test]
    fn residual_units_nothing_reads_are_removed_without_changing_an_output(
        seed in 0u64..1000,
        stream_dead in proptest::collection::btree_set(0usize..8, 0..7),
        inner_dead in proptest::collection::btree_set(0usize..6, 0..5),
    ) {
        let device = flex_device();
        let config = ResNetConfig { width: 8, blocks: vec![6, 6], ..ResNetConfig::small(1, [12, 12], 10) };
        let model = scramble(config.init(&device).unwrap(), seed);
        let groups = config.unit_groups("");
        let inner: Vec<usize> = inner_dead.into_iter().collect();
        let dead: BTreeMap<&str, Vec<usize>> = [
            ("stream", stream_dead.into_iter().collect()),
            ("blocks.0", inner.clone()),
            ("blocks.1", inner.iter().map(|u| 5 - u).collect()),
        ].into();
        let (model, kept) = kill(model, &groups, &dead);
        let narrow = config.with_kept("", &kept);
        let small = shrink(&model, &groups, &kept, narrow.init(&device).unwrap()).unwrap();
        proptest::prop_assert_eq!(small.num_params(), narrow.parameter_count().unwrap());
        let images = synthetic_split(4, seed).batch(&[0, 1, 2, 3], &device).0;
        let images = images.slice([0..4, 0..1, 0..12, 0..12]);
        let (want, got) = (
            read_f32(model.forward(images.clone())).unwrap(),
            read_f32(small.forward(images)).unwrap(),
        );
        for (w, g) in want.iter().zip(&got) {
            proptest::prop_assert!((w - g).abs() <= 1e-4 * (1.0 + w.abs()), "{} vs {}", w, g);
        }
    }
}

/// The residual network through the whole path a user takes: trained, scored by first-order
/// Taylor inside `Model` (groups and activations named after the variant), cut by half across
/// groups, rebuilt, fine-tuned (batch norms included), saved and reloaded with the same
/// outputs; the dense file under the narrow config is a typed error.
#[test]
fn a_pruned_residual_network_trains_and_reloads() {
    use ember_prune::{Evidence, StructuredConfig, UnitCriterion, keep_best, unit_scores};
    let _seeded = ember_tensor::testing::seeded_lock();
    let device = flex_device();
    device.seed(11);
    let data = synthetic_split(256, 1);
    let config = ModelConfig::ResNet(ResNetConfig::small(1, [28, 28], 10));
    let training = TrainConfig {
        epochs: 1,
        batch_size: 32,
        progress: false,
        ..TrainConfig::default()
    };
    let (dense, _) = train(config.init(&device).unwrap(), &data, &training, &device).unwrap();
    let groups = config.unit_groups().unwrap();
    let evidence = Evidence {
        data: &data,
        batches: 2,
        batch_size: 64,
        device: &device,
    };
    let scores = unit_scores(&dense, &groups, UnitCriterion::Taylor, Some(&evidence)).unwrap();
    let cut = StructuredConfig::new(UnitCriterion::Taylor, 0.5).global();
    let kept = keep_best(&groups, &scores, &cut).unwrap();
    let total: usize = kept.values().map(Vec::len).sum();
    assert_eq!(total, 24, "half of 16 + 16 + 16 units kept across groups");
    let narrow = config.with_kept(&kept);
    let small = shrink(&dense, &groups, &kept, narrow.init(&device).unwrap()).unwrap();
    let (tuned, report) = train(small, &data, &training, &device).unwrap();
    assert!(report.epochs[0].loss.is_finite());

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("narrow.bpk");
    save_model(tuned.clone(), &narrow, &path).unwrap();
    let (loaded, loaded_config) = load_model(&path, &device).unwrap();
    assert_eq!(loaded_config, narrow);
    let images = data.batch(&(0..8).collect::<Vec<_>>(), &device).0;
    assert_eq!(
        read_f32(loaded.forward(images.clone())).unwrap(),
        read_f32(tuned.forward(images)).unwrap()
    );
    dense_file_under_the_narrow_config_is_refused(dense, &config, &path);
}

/// burn's `MultiHeadAttention` converted to Ember's attention computes the same context (burn's
/// own forward pass is the reference); its quiet softmax, a different function, is refused.
/// Keeping two of four heads gives what the whole layer gives with the other two heads'
/// output rows zeroed, and keeping none is a typed error.
#[test]
fn burn_attention_converts_and_loses_heads_exactly() {
    use burn::nn::attention::{MhaInput, MultiHeadAttentionConfig};
    use ember_zoo::attention::SelfAttention;
    let device = flex_device();
    let mha = scramble(MultiHeadAttentionConfig::new(16, 4).init(&device), 3);
    let x = Tensor::<3>::random([2, 5, 16], Distribution::Normal(0.0, 1.0), &device);
    let want = read_f32(mha.forward(MhaInput::self_attn(x.clone())).context).unwrap();
    let no_bias = Tensor::<4>::zeros([2, 1, 1, 5], &device);
    let ours = SelfAttention::from_burn(mha.clone()).unwrap();
    assert_eq!((ours.heads, ours.head_width), (4, 4));
    let got = read_f32(ours.forward(x.clone(), no_bias.clone())).unwrap();
    for (w, g) in want.iter().zip(&got) {
        assert!((w - g).abs() <= 1e-5 * (1.0 + w.abs()), "{w} vs {g}");
    }
    let quiet = MultiHeadAttentionConfig::new(16, 4)
        .with_quiet_softmax(true)
        .init(&device);
    assert!(matches!(
        SelfAttention::from_burn(quiet),
        Err(Error::InvalidConfig {
            field: "quiet_softmax",
            ..
        })
    ));

    let group = SelfAttention::head_group("", 4, 4);
    let dead: BTreeMap<&str, Vec<usize>> = [("heads", vec![1, 3])].into();
    let (silenced, kept) = kill(ours.clone(), std::slice::from_ref(&group), &dead);
    assert_eq!(kept["heads"], vec![0, 2]);
    let want = read_f32(silenced.forward(x.clone(), no_bias.clone())).unwrap();
    let small = ours.clone().keep_heads(&[0, 2]).unwrap();
    assert_eq!(small.heads, 2);
    assert_eq!(small.query.weight.val().dims(), [16, 8]);
    assert_eq!(small.output.weight.val().dims(), [8, 16]);
    let got = read_f32(small.forward(x, no_bias)).unwrap();
    for (w, g) in want.iter().zip(&got) {
        assert!((w - g).abs() <= 1e-5 * (1.0 + w.abs()), "{w} vs {g}");
    }
    for bad in [vec![], vec![2, 0], vec![4]] {
        assert!(matches!(
            ours.clone().keep_heads(&bad),
            Err(Error::InvalidConfig { field: "heads", .. })
        ));
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(8))]
    /// The transformer's heads whose output rows are zero and feed-forward neurons whose
    /// outgoing weights are zero are removed with no output changed: each head group cuts the
    /// query, key and value columns of the head and the output projection's rows.
    #[test]
    fn transformer_heads_and_neurons_nothing_reads_are_removed_without_changing_an_output(
        seed in 0u64..1000,
        heads_dead in proptest::collection::btree_set(0usize..4, 0..4),
        ffn_dead in proptest::collection::btree_set(0usize..12, 0..11),
    ) {
        let device = flex_device();
        let config = TransformerConfig {
            width: 16,
            head_width: 4,
            heads: vec![4, 4],
            ffn: vec![12, 12],
            ..TransformerConfig::small(1, [6, 6], 10)
        };
        let model = scramble(config.init(&device).unwrap(), seed);
        let groups = config.unit_groups("");
        let heads: Vec<usize> = heads_dead.into_iter().collect();
        let ffn: Vec<usize> = ffn_dead.into_iter().collect();
        let dead: BTreeMap<&str, Vec<usize>> = [
            ("layers.0.attention.heads", heads.clone()),
            ("layers.1.attention.heads", heads.iter().map(|h| 3 - h).collect()),
            ("layers.0.ffn", ffn.clone()),
            ("layers.1.ffn", ffn.iter().map(|u| 11 - u).collect()),
        ].into();
        let (model, kept) = kill(model, &groups, &dead);
        let narrow = config.with_kept("", &kept);
        proptest::prop_assert_eq!(narrow.heads[0], 4 - heads.len());
        let small = shrink(&model, &groups, &kept, narrow.init(&device).unwrap()).unwrap();
        proptest::prop_assert_eq!(small.num_params(), narrow.parameter_count().unwrap());
        let images = synthetic_split(4, seed).batch(&[0, 1, 2, 3], &device).0;
        let images = images.slice([0..4, 0..1, 0..6, 0..6]);
        let (want, got) = (
            read_f32(model.forward(images.clone())).unwrap(),
            read_f32(small.forward(images)).unwrap(),
        );
        for (w, g) in want.iter().zip(&got) {
            proptest::prop_assert!((w - g).abs() <= 1e-4 * (1.0 + w.abs()), "{} vs {}", w, g);
        }
    }
}

/// The transformer through the path a user takes: trained, its heads scored by first-order
/// Taylor inside `Model` (Michel et al.'s head importance), half of every layer's heads
/// removed, rebuilt narrower, fine-tuned, saved and reloaded with the same outputs; removing
/// every head is a typed error.
#[test]
fn a_transformer_loses_half_its_heads_trains_and_reloads() {
    use ember_prune::{Evidence, StructuredConfig, UnitCriterion, keep_best, taylor_scores};
    let _seeded = ember_tensor::testing::seeded_lock();
    let device = flex_device();
    device.seed(5);
    let data = synthetic_split(256, 2);
    let config = ModelConfig::Transformer(TransformerConfig {
        width: 32,
        ffn: vec![64, 64],
        heads: vec![4, 4],
        ..TransformerConfig::small(1, [28, 28], 10)
    });
    let training = TrainConfig {
        epochs: 1,
        batch_size: 32,
        progress: false,
        ..TrainConfig::default()
    };
    let (dense, _) = train(config.init(&device).unwrap(), &data, &training, &device).unwrap();
    let groups: Vec<UnitGroup> = config
        .unit_groups()
        .unwrap()
        .into_iter()
        .filter(|g| g.name.ends_with(".heads"))
        .collect();
    assert_eq!(groups.len(), 2);
    let evidence = Evidence {
        data: &data,
        batches: 2,
        batch_size: 64,
        device: &device,
    };
    let scores = taylor_scores(&dense, &groups, &evidence).unwrap();
    assert!(
        scores
            .values()
            .flatten()
            .all(|s| s.is_finite() && *s >= 0.0)
    );
    let kept = keep_best(
        &groups,
        &scores,
        &StructuredConfig::new(UnitCriterion::Taylor, 0.5),
    )
    .unwrap();
    let narrow = config.with_kept(&kept);
    let ModelConfig::Transformer(narrow_sizes) = &narrow else {
        panic!("not a transformer")
    };
    assert_eq!(narrow_sizes.heads, vec![2, 2]);
    let small = shrink(&dense, &groups, &kept, narrow.init(&device).unwrap()).unwrap();
    assert!(small.num_params() < dense.num_params());
    let (tuned, report) = train(small, &data, &training, &device).unwrap();
    assert!(report.epochs[0].loss.is_finite());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("narrow.bpk");
    save_model(tuned.clone(), &narrow, &path).unwrap();
    let (loaded, loaded_config) = load_model(&path, &device).unwrap();
    assert_eq!(loaded_config, narrow);
    let images = data.batch(&(0..8).collect::<Vec<_>>(), &device).0;
    assert_eq!(
        read_f32(loaded.forward(images.clone())).unwrap(),
        read_f32(tuned.forward(images)).unwrap()
    );
    dense_file_under_the_narrow_config_is_refused(dense.clone(), &config, &path);
    let none: BTreeMap<String, Vec<usize>> =
        groups.iter().map(|g| (g.name.clone(), vec![])).collect();
    assert!(matches!(
        shrink(&dense, &groups, &none, narrow.init(&device).unwrap()),
        Err(ember_prune::Error::Group { .. })
    ));
}
