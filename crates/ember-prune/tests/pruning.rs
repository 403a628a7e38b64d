//! Pruning end to end on a small learnable task: masks through training, saving and export,
//! rewinding, gradual and iterative schedules, and the same masks on every backend.

#![allow(clippy::unwrap_used)] // a test fails loudly, which is what it is for

use std::collections::BTreeMap;

use burn::module::{Module, Param, ParamId, Reparameterizer};
use burn::nn::{Linear, LinearConfig, Relu};
use burn::store::ModuleRecord;
use burn::tensor::{Bool, Device, Tensor, TensorData};
use ember_prune::{
    Criterion, Error, Gradual, NmPattern, PruneConfig, Rounds, Scope, export_sparse,
    iterative_prune, load_sparse, prune, rewind, sparsity_report, train_gradual,
};
use ember_tensor::testing::{Blobs, seeded_lock as seeded};
use ember_tensor::{
    Classifier, LrSchedule, Masks, Selector, TrainConfig, WeightReparam, check_masks, masks,
    param_values, set_masks, stats::read_f32, strip, train,
};

mod common;
use common::{Net, net};

fn training(epochs: usize) -> TrainConfig {
    TrainConfig {
        epochs,
        batch_size: 32,
        learning_rate: 1e-2,
        progress: false,
        ..TrainConfig::default()
    }
}

fn flags(mask: &Tensor<1, Bool>) -> Vec<bool> {
    ember_tensor::mask::read_flags(mask.clone()).unwrap()
}

fn values(model: &Net) -> Vec<Vec<f32>> {
    param_values(model)
        .into_iter()
        .map(|p| read_f32(p.flat).unwrap())
        .collect()
}

fn weights() -> Selector {
    Selector::all().include("*weight")
}

#[test]
fn masks_survive_adam_training_exactly() {
    let _seeded = seeded();
    let device = Device::flex();
    let data = Blobs::new(512, 4, 1);
    let (model, report) = prune(net(1, &device), &PruneConfig::global_magnitude(0.5)).unwrap();
    assert_eq!(report.zeros, report.numel / 2);
    let before = masks(&model);

    let (trained, _) = train(model, &data, &training(3), &device).unwrap();

    let after = masks(&trained);
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>()
    );
    for (path, mask) in &before {
        assert_eq!(flags(mask), flags(&after[path]), "{path}");
    }
    // Every masked weight is still exactly zero, and only those: training moved the others.
    let report = sparsity_report(&trained, &weights()).unwrap();
    assert_eq!(report.zeros, report.numel / 2);
}

#[test]
fn layer_scope_prunes_each_layer_to_its_own_target() {
    let _seeded = seeded();
    let device = Device::flex();
    let config = PruneConfig {
        layer_sparsity: [("out.weight".to_string(), 0.25)].into(),
        ..PruneConfig::global_magnitude(0.75).with_scope(Scope::Layer)
    };
    let (_, report) = prune(net(2, &device), &config).unwrap();
    let by_path: Vec<(String, usize)> = report
        .layers
        .iter()
        .map(|l| (l.path.clone(), l.zeros))
        .collect();
    // hidden: 8 x 32 = 256 weights, 75 % pruned; out: 32 x 4 = 128, 25 %.
    assert_eq!(
        by_path,
        vec![("hidden.weight".into(), 192), ("out.weight".into(), 32)]
    );
}

#[test]
fn magnitude_prunes_the_smallest_weights_and_random_does_not() {
    let _seeded = seeded();
    let device = Device::flex();
    let model = net(3, &device);
    let weights_before = values(&model);
    let (pruned, _) = prune(model.clone(), &PruneConfig::global_magnitude(0.6)).unwrap();
    // Reference: the 60 % smallest magnitudes over both weight matrices, by a plain sort.
    let mut all: Vec<f32> = [&weights_before[0], &weights_before[2]]
        .iter()
        .flat_map(|w| w.iter().map(|v| v.abs()))
        .collect();
    all.sort_by(f32::total_cmp);
    let threshold = all[(0.6 * all.len() as f64).round() as usize - 1];
    for (before, after) in values(&model).iter().zip(values(&pruned)).step_by(2) {
        for (b, a) in before.iter().zip(&after) {
            if b.abs() <= threshold {
                assert_eq!(*a, 0.0);
            } else {
                assert_eq!(a, b);
            }
        }
    }

    let random = PruneConfig {
        seed: 7,
        ..PruneConfig::global_magnitude(0.6).with_criterion(Criterion::Random)
    };
    let (a, report) = prune(model.clone(), &random).unwrap();
    let (b, _) = prune(model, &random).unwrap();
    assert_eq!(report.zeros, (0.6 * report.numel as f64).round() as usize);
    // Seeded: the same masks twice; random: some large weight is pruned.
    assert_eq!(values(&a), values(&b));
    let large_pruned = values(&pruned)
        .iter()
        .zip(values(&a))
        .flat_map(|(m, r)| m.iter().zip(r).map(|(m, r)| (*m, r)).collect::<Vec<_>>())
        .any(|(m, r)| m != 0.0 && r == 0.0);
    assert!(large_pruned);
}

#[test]
fn tightening_keeps_what_was_pruned() {
    let _seeded = seeded();
    let device = Device::flex();
    let (half, _) = prune(net(4, &device), &PruneConfig::global_magnitude(0.5)).unwrap();
    let (random, _) = prune(
        half.clone(),
        &PruneConfig::global_magnitude(0.8).with_criterion(Criterion::Random),
    )
    .unwrap();
    let (old, new) = (masks(&half), masks(&random));
    for (path, mask) in &old {
        for (o, n) in flags(mask).iter().zip(flags(&new[path])) {
            assert!(*o || !n, "{path}: a pruned weight came back");
        }
    }
    let report = sparsity_report(&random, &weights()).unwrap();
    assert_eq!(report.zeros, (0.8 * report.numel as f64).round() as usize);
}

#[test]
fn a_lower_target_brings_no_pruned_weight_back() {
    let _seeded = seeded();
    let device = Device::flex();
    let (pruned, _) = prune(net(4, &device), &PruneConfig::global_magnitude(0.8)).unwrap();
    for scope in [Scope::Global, Scope::Layer] {
        let (lower, report) = prune(
            pruned.clone(),
            &PruneConfig::global_magnitude(0.3).with_scope(scope),
        )
        .unwrap();
        let (old, new) = (masks(&pruned), masks(&lower));
        for (path, mask) in &old {
            for (o, n) in flags(mask).iter().zip(flags(&new[path])) {
                assert!(*o || !n, "{scope:?} {path}: a pruned weight came back");
            }
        }
        // Globally, 30 % is below what the model has: nothing changes.
        if scope == Scope::Global {
            assert_eq!(report.zeros, (0.8 * report.numel as f64).round() as usize);
        }
        let values = param_values(&lower);
        for (path, mask) in &new {
            let value = values.iter().find(|v| &v.info.path == path).unwrap();
            let value = read_f32(value.flat.clone()).unwrap();
            for (v, k) in value.iter().zip(flags(mask)) {
                assert!(
                    k || *v == 0.0,
                    "{scope:?} {path}: a pruned weight reads {v}"
                );
            }
        }
    }
}

#[derive(Module, Debug)]
struct Embedded {
    embed: burn::nn::Embedding,
}

#[test]
fn two_of_four_groups_an_embedding_along_its_rows() {
    // burn's Embedding weight is [tokens, dim], outputs first like every weight but Linear's:
    // its input axis is dim, the rule quantization's per-group scales follow too.
    let _seeded = seeded();
    let device = Device::flex();
    device.seed(9);
    let model = ember_tensor::init_now(Embedded {
        embed: burn::nn::EmbeddingConfig::new(3, 8).init(&device),
    });
    let config = PruneConfig {
        nm: Some(NmPattern { n: 2, m: 4 }),
        ..PruneConfig::global_magnitude(0.0).with_layers(Selector::all().include("embed.weight"))
    };
    let (model, report) = prune(model, &config).unwrap();
    assert_eq!(report.zeros, 12);
    let w = read_f32(model.embed.weight.val()).unwrap();
    for row in 0..3 {
        for group in 0..2 {
            let kept = (0..4).filter(|i| w[row * 8 + group * 4 + i] != 0.0).count();
            assert_eq!(kept, 2, "row {row}, group {group}");
        }
    }
}

#[test]
fn two_of_four_keeps_two_per_group() {
    let _seeded = seeded();
    let device = Device::flex();
    let config = PruneConfig {
        nm: Some(NmPattern { n: 2, m: 4 }),
        ..PruneConfig::global_magnitude(0.0).with_layers(Selector::all().include("hidden.weight"))
    };
    let (model, report) = prune(net(5, &device), &config).unwrap();
    assert_eq!(report.zeros, report.numel / 2);
    // hidden.weight is [8 inputs, 32 outputs]: groups of 4 run down each column.
    let w = read_f32(model.hidden.weight.val()).unwrap();
    for col in 0..32 {
        for group in 0..2 {
            let kept = (0..4)
                .filter(|r| w[(group * 4 + r) * 32 + col] != 0.0)
                .count();
            assert_eq!(kept, 2, "column {col}, group {group}");
        }
    }
}

#[test]
fn bad_input_is_a_typed_error() {
    let _seeded = seeded();
    let device = Device::flex();
    let model = net(6, &device);
    assert!(matches!(
        prune(model.clone(), &PruneConfig::global_magnitude(1.5)),
        Err(Error::Sparsity { .. })
    ));
    let nowhere = PruneConfig::global_magnitude(0.5).with_layers(Selector::all().include("fc9.*"));
    assert!(matches!(
        prune(model.clone(), &nowhere),
        Err(Error::Tensor(
            ember_tensor::Error::PatternMatchesNothing { .. }
        ))
    ));
    let typo = PruneConfig {
        layer_sparsity: [("hiden.weight".to_string(), 0.5)].into(),
        ..PruneConfig::global_magnitude(0.5).with_scope(Scope::Layer)
    };
    assert!(matches!(
        prune(model.clone(), &typo),
        Err(Error::Tensor(ember_tensor::Error::InvalidConfig { .. }))
    ));
    let three_of_two = PruneConfig {
        nm: Some(NmPattern { n: 3, m: 2 }),
        ..PruneConfig::global_magnitude(0.0)
    };
    assert!(matches!(
        prune(model.clone(), &three_of_two),
        Err(Error::NmPattern { n: 3, m: 2 })
    ));
    let nan = Net {
        hidden: Linear {
            weight: model
                .hidden
                .weight
                .clone()
                .map(|w| w.slice_fill([0..1, 0..1], f32::NAN)),
            ..model.hidden.clone()
        },
        ..model
    };
    assert!(matches!(
        prune(nan, &PruneConfig::global_magnitude(0.5)),
        Err(Error::NonFinite { count: 1, .. })
    ));
}

#[test]
fn masks_save_and_reload_with_the_record() {
    let _seeded = seeded();
    let device = Device::flex();
    let (model, _) = prune(net(7, &device), &PruneConfig::global_magnitude(0.7)).unwrap();
    let bytes = model.clone().into_record().into_bytes().unwrap();

    // A fresh model carries all-keep placeholder masks of the right shapes, then loads the
    // record: the masks it ends with can only have come from the record.
    let fresh = net(8, &device);
    let placeholders: Masks = masks(&model)
        .iter()
        .map(|(path, m)| (path.clone(), m.clone().equal(m.clone())))
        .collect();
    for mask in placeholders.values() {
        assert!(flags(mask).iter().all(|&k| k));
    }
    let fresh = set_masks(fresh, &placeholders).unwrap();
    let loaded = fresh.load_record(ModuleRecord::from_bytes(bytes).unwrap());
    check_masks(&loaded).unwrap();
    assert_eq!(values(&loaded), values(&model));
    for (path, mask) in masks(&model) {
        assert_eq!(flags(&mask), flags(&masks(&loaded)[&path]));
    }
}

/// Attaches a keep mask of the wrong length, as a record made for another shape would.
struct WrongLength;

impl Reparameterizer for WrongLength {
    type Reparam = WeightReparam;

    fn reparameterize<const D: usize>(
        &mut self,
        path: &str,
        param: Param<Tensor<D>>,
    ) -> (Param<Tensor<D>>, Option<WeightReparam>) {
        if path != "out.weight" {
            return (param, None);
        }
        let keep = Tensor::<1, Bool>::from_data(TensorData::from([true; 5]), &param.lazy_device());
        let keep = Some(Param::initialized(ParamId::new(), keep));
        (param, Some(WeightReparam { keep }))
    }
}

#[test]
fn a_mask_of_the_wrong_shape_is_caught_on_load() {
    let _seeded = seeded();
    let device = Device::flex();
    let broken = net(9, &device).apply_reparameterization(WrongLength);
    assert!(matches!(
        check_masks(&broken),
        Err(ember_tensor::Error::MaskShape { actual: 5, .. })
    ));
}

#[test]
fn strip_folds_masks_into_plain_weights() {
    let _seeded = seeded();
    let device = Device::flex();
    let (model, _) = prune(net(10, &device), &PruneConfig::global_magnitude(0.5)).unwrap();
    let x = Tensor::<4>::random(
        [3, 1, 1, Blobs::DIM],
        burn::tensor::Distribution::Default,
        &device,
    );
    let masked = read_f32(model.forward(x.clone())).unwrap();
    let stripped = strip(model);
    assert!(masks(&stripped).is_empty());
    assert_eq!(read_f32(stripped.forward(x)).unwrap(), masked);
    let report = sparsity_report(&stripped, &weights()).unwrap();
    assert_eq!(report.zeros, report.numel / 2);
}

#[test]
fn sparse_export_shrinks_with_sparsity_and_loads_back() {
    let _seeded = seeded();
    let device = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    let mut sizes = vec![];
    for sparsity in [0.0, 0.5, 0.9] {
        let (model, _) = prune(net(11, &device), &PruneConfig::global_magnitude(sparsity)).unwrap();
        let path = dir.path().join(format!("s{sparsity}.safetensors"));
        let size = export_sparse(&model, &path).unwrap();
        assert_eq!(size, std::fs::metadata(&path).unwrap().len());
        sizes.push(size);
        let loaded = load_sparse(net(12, &device), &path).unwrap();
        assert_eq!(values(&loaded), values(&model));
    }
    assert!(sizes[0] > sizes[1] && sizes[1] > sizes[2], "{sizes:?}");

    // The wrong model, a corrupt file, and a file that is not there.
    let path = dir.path().join("s0.9.safetensors");
    let other = Net {
        hidden: LinearConfig::new(Blobs::DIM, 16).init(&device),
        out: LinearConfig::new(16, 4).init(&device),
        relu: Relu::new(),
    };
    assert!(matches!(
        load_sparse(other, &path),
        Err(Error::SparseFile { .. })
    ));
    let corrupt = dir.path().join("corrupt.safetensors");
    std::fs::write(&corrupt, b"not a safetensors file").unwrap();
    assert!(matches!(
        load_sparse(net(13, &device), &corrupt),
        Err(Error::SparseFile { .. })
    ));
    assert!(matches!(
        load_sparse(net(13, &device), &dir.path().join("missing")),
        Err(Error::Io { .. })
    ));

    // A header that promises more elements than a usize holds is refused, not multiplied out.
    let huge = dir.path().join("huge.safetensors");
    let shapes = format!(
        r#"{{"hidden.weight":[{big},{big},{big}],"hidden.bias":[32],"out.weight":[32,4],"out.bias":[4]}}"#,
        big = u32::MAX
    );
    ember_tensor::testing::rewrite_metadata(&path, &huge, "shapes", &shapes);
    assert!(matches!(
        load_sparse(net(13, &device), &huge),
        Err(Error::SparseFile { .. })
    ));
    // Any one byte changed, wherever it lands (header, checksum, bits, values): refused.
    let bytes = std::fs::read(&path).unwrap();
    let damaged = dir.path().join("damaged.safetensors");
    let skeleton = net(13, &device);
    for i in 0..bytes.len() {
        let mut flipped = bytes.clone();
        flipped[i] ^= 0xff;
        std::fs::write(&damaged, &flipped).unwrap();
        assert!(
            matches!(
                load_sparse(skeleton.clone(), &damaged),
                Err(Error::SparseFile { .. })
            ),
            "byte {i} of {} flipped",
            bytes.len()
        );
    }
    // The same model exports to the same bytes.
    let model = load_sparse(net(13, &device), &path).unwrap();
    let again = dir.path().join("again.safetensors");
    export_sparse(&model, &again).unwrap();
    assert_eq!(
        std::fs::read(&again).unwrap(),
        std::fs::read(&path).unwrap()
    );
}

#[test]
fn rewinding_restores_survivors_and_keeps_the_pruned_at_zero() {
    let _seeded = seeded();
    let device = Device::flex();
    let data = Blobs::new(256, 4, 2);
    let init = net(14, &device);
    let (trained, _) = train(init.clone(), &data, &training(1), &device).unwrap();
    let (pruned, _) = prune(trained, &PruneConfig::global_magnitude(0.8)).unwrap();
    let rewound = rewind(&pruned, init.clone()).unwrap();
    let keep = masks(&pruned);
    for (value, init_value) in param_values(&rewound).iter().zip(values(&init)) {
        let got = read_f32(value.flat.clone()).unwrap();
        match keep.get(&value.info.path) {
            Some(mask) => {
                for ((g, i), k) in got.iter().zip(&init_value).zip(flags(mask)) {
                    assert_eq!(*g, if k { *i } else { 0.0 });
                }
            }
            None => assert_eq!(got, init_value, "{}", value.info.path),
        }
    }
}

#[test]
fn gradual_pruning_reaches_its_target_while_training() {
    let _seeded = seeded();
    let device = Device::flex();
    let data = Blobs::new(512, 4, 3);
    // 16 steps per epoch, 3 epochs: prune every 4 steps from step 4 to 32.
    let schedule = Gradual {
        initial: 0.0,
        target: 0.75,
        start_step: 4,
        end_step: 32,
        every: 4,
    };
    let (model, _) = train_gradual(
        net(15, &device),
        &data,
        &training(3),
        &PruneConfig::global_magnitude(0.0),
        &schedule,
        &device,
    )
    .unwrap();
    let report = sparsity_report(&model, &weights()).unwrap();
    assert_eq!(report.zeros, (0.75 * report.numel as f64).round() as usize);
}

#[test]
fn iterative_pruning_follows_its_levels_and_still_learns() {
    let _seeded = seeded();
    let device = Device::flex();
    let data = Blobs::new(1024, 4, 4);
    let test = Blobs::new(512, 4, 5);
    let (dense, _) = train(net(16, &device), &data, &training(4), &device).unwrap();
    let dense_acc = ember_tensor::evaluate(&dense, &test, 256, &device)
        .unwrap()
        .accuracy;
    let retrain = TrainConfig {
        learning_rate: 1e-3,
        schedule: LrSchedule::Constant,
        ..training(2)
    };
    let mut seen = vec![];
    let rounds = Rounds {
        levels: vec![0.5, 0.75],
        layer_levels: BTreeMap::new(),
    };
    let model = iterative_prune(
        dense,
        &data,
        &rounds,
        &PruneConfig::global_magnitude(0.0),
        &retrain,
        None,
        &device,
        |round| {
            let report = sparsity_report(round.model, &weights())?;
            assert_eq!(
                report.zeros, round.report.zeros,
                "retraining kept the masks"
            );
            seen.push((round.round, report.sparsity()));
            Ok::<_, Error>(())
        },
    )
    .unwrap();
    assert_eq!(seen.len(), 2);
    assert!((seen[0].1 - 0.5).abs() < 1e-2 && (seen[1].1 - 0.75).abs() < 1e-2);
    let acc = ember_tensor::evaluate(&model, &test, 256, &device)
        .unwrap()
        .accuracy;
    // A quarter of the weights still solve the task nearly as well as all of them.
    assert!(acc > dense_acc - 5.0, "pruned {acc} vs dense {dense_acc}");
}

/// Frankle & Carbin's schedule: layer scope, the output layer pruned at its own slower rate,
/// survivors rewound to the initialization every round. Counts by hand: `hidden` has 8 x 32 =
/// 256 weights, `out` 32 x 4 = 128.
#[test]
fn iterative_pruning_with_a_slower_layer_and_rewinding() {
    let _seeded = seeded();
    let device = Device::flex();
    let data = Blobs::new(256, 4, 6);
    let init = net(19, &device);
    let (dense, _) = train(init.clone(), &data, &training(1), &device).unwrap();
    let rounds = Rounds::geometric(0.5, 2)
        .unwrap()
        .with_layer_rate("out.weight", 0.25)
        .unwrap();
    let config = PruneConfig::global_magnitude(0.0).with_scope(Scope::Layer);
    // Retraining at a rate too small to move a weight: each round's model is then its
    // rewound start, which must be the initialization wherever a weight survives.
    let still = TrainConfig {
        learning_rate: 1e-12,
        schedule: LrSchedule::Constant,
        ..training(1)
    };
    let init_values = values(&init);
    let mut seen = vec![];
    iterative_prune(
        dense,
        &data,
        &rounds,
        &config,
        &still,
        Some(&init),
        &device,
        |round| {
            let zeros: Vec<usize> = round.report.layers.iter().map(|l| l.zeros).collect();
            seen.push(zeros);
            for (got, want) in values(round.model).iter().zip(&init_values) {
                for (g, w) in got.iter().zip(want) {
                    assert!(
                        *g == 0.0 || (g - w).abs() < 1e-6,
                        "{g} is not rewound to {w}"
                    );
                }
            }
            Ok::<_, Error>(())
        },
    )
    .unwrap();
    // Round 1: half of `hidden`, a quarter of `out`; round 2: 75 % and 1 - 0.75^2 = 43.75 %.
    assert_eq!(seen, vec![vec![128, 32], vec![192, 56]]);
}

ember_tensor::backend_tests! {
    /// Magnitude masks are the same on every backend, and the masked forward agrees with flex.
    fn same_masks_on_every_backend(device) {
            let _seeded = seeded();
        let flex = Device::flex();
        let reference = net(17, &flex);
        let record = reference.clone().into_record().into_bytes().unwrap();
        let model = net(18, &device).load_record(ModuleRecord::from_bytes(record).unwrap());
        let config = PruneConfig::global_magnitude(0.6);
        let (want, _) = prune(reference, &config).unwrap();
        let (got, _) = prune(model, &config).unwrap();
        for (path, mask) in masks(&want) {
            assert_eq!(flags(&mask), flags(&masks(&got)[&path]), "{path}");
        }
        let x: Vec<f32> = (0..2 * Blobs::DIM).map(|i| i as f32 / 10.0 - 0.7).collect();
        let input = |d: &Device| Tensor::<4>::from_data(TensorData::new(x.clone(), [2, 1, 1, Blobs::DIM]), d);
        let a = read_f32(want.forward(input(&flex))).unwrap();
        let b = read_f32(got.forward(input(&device))).unwrap();
        for (a, b) in a.iter().zip(&b) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
    }
}
