//! Structured pruning on a small network: surgery that changes no output it should not,
//! every criterion against a reference computed another way, local and global ranking by hand,
//! and every refusal typed.

#![allow(clippy::unwrap_used)] // a test fails loudly, which is what it is for

mod common;

use std::collections::BTreeMap;

use burn::tensor::{Device, Tensor, TensorData};
use common::{Net, net, net_of_width};
use ember_prune::{
    Error, Evidence, Ranking, ShapleyConfig, StructuredConfig, UnitCriterion, apoz_scores,
    keep_best, shapley_scores, shrink_optimizer_state, taylor_scores, unit_scores,
};
use ember_tensor::testing::{Blobs, seeded_lock as seeded};
use ember_tensor::{Classifier, LabeledData, UnitActivations, param_values, stats::read_f32};

fn hidden_group(width: usize) -> ember_tensor::UnitGroup {
    use ember_tensor::UnitSlice;
    ember_tensor::UnitGroup {
        name: "hidden".into(),
        units: width,
        producers: vec![
            UnitSlice::new("hidden.weight", 1),
            UnitSlice::new("hidden.bias", 0),
        ],
        consumers: vec![UnitSlice::new("out.weight", 0)],
    }
}

fn logits(model: &Net, device: &Device) -> Vec<f32> {
    let x: Vec<f32> = (0..3 * Blobs::DIM)
        .map(|i| (i as f32 * 0.37).sin())
        .collect();
    read_f32(model.forward(Tensor::<4>::from_data(
        TensorData::new(x, [3, 1, 1, Blobs::DIM]),
        device,
    )))
    .unwrap()
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
    /// Removing neurons that nothing reads (their outgoing weights all zero) leaves every
    /// output as it was: the surgery moves each kept weight to its new place and no other.
    #[test]
    fn removing_units_nothing_reads_changes_no_output(
        width in 2usize..24,
        seed in 0u64..1000,
        dead_bits in proptest::collection::vec(proptest::bool::ANY, 24),
    ) {
        let _seeded = seeded();
        let device = Device::flex();
        device.seed(seed);
        let model = net_of_width(width, &device);
        let dead: Vec<bool> = (0..width).map(|u| dead_bits[u] && u > 0).collect();
        // Zero the outgoing weights (rows of `out.weight`, burn's [in, out]) of the dead units.
        let mut values = BTreeMap::new();
        let out = param_values(&model).into_iter().find(|p| p.info.path == "out.weight").unwrap();
        let mut w = read_f32(out.flat).unwrap();
        for (u, _) in dead.iter().enumerate().filter(|(_, d)| **d) {
            w[u * 4..(u + 1) * 4].fill(0.0);
        }
        values.insert("out.weight".to_string(), w);
        let model = ember_tensor::set_param_values(model, &values).unwrap();
        let keep: Vec<usize> = (0..width).filter(|&u| !dead[u]).collect();
        let kept = [("hidden".to_string(), keep.clone())].into();
        let small = ember_prune::shrink(&model, &[hidden_group(width)], &kept, net_of_width(keep.len(), &device)).unwrap();
        let (a, b) = (logits(&model, &device), logits(&small, &device));
        for (a, b) in a.iter().zip(&b) {
            proptest::prop_assert!((a - b).abs() <= 1e-5 * (1.0 + a.abs()), "{a} vs {b}");
        }
    }
}

/// L1 and L2 scores of neurons by hand, the lowest removed, and every refusal typed.
#[test]
fn structured_scores_by_hand_and_bad_cuts_are_typed_errors() {
    use ember_prune::{StructuredConfig, UnitCriterion, select_units, shrink, weight_scores};
    let _seeded = seeded();
    let device = Device::flex();
    let model = net_of_width(3, &device);
    // hidden.weight is [8, 3]: neuron u is column u. Column u holds (u + 1) * (-1)^i / 10.
    let w: Vec<f32> = (0..Blobs::DIM * 3)
        .map(|i| {
            let (row, u) = (i / 3, i % 3);
            let sign = if row % 2 == 0 { 1.0 } else { -1.0 };
            [0.3, 0.1, 0.2][u] * sign
        })
        .collect();
    let model =
        ember_tensor::set_param_values(model, &[("hidden.weight".to_string(), w)].into()).unwrap();
    let group = hidden_group(3);
    let groups = std::slice::from_ref(&group);
    let l1 = &weight_scores(&model, groups, UnitCriterion::L1).unwrap()["hidden"];
    let l2 = &weight_scores(&model, groups, UnitCriterion::L2).unwrap()["hidden"];
    for (u, m) in [0.3f64, 0.1, 0.2].into_iter().enumerate() {
        assert!((l1[u] - 8.0 * m).abs() < 1e-6, "{l1:?}");
        assert!((l2[u] - (8.0 * m * m).sqrt()).abs() < 1e-6, "{l2:?}");
    }
    let config = StructuredConfig::new(UnitCriterion::L2, 0.34);
    let kept = select_units(&model, std::slice::from_ref(&group), &config).unwrap();
    assert_eq!(kept["hidden"], vec![0, 2], "the weakest neuron, 1, goes");
    let small = shrink(
        &model,
        std::slice::from_ref(&group),
        &kept,
        net_of_width(2, &device),
    )
    .unwrap();
    assert_eq!(small.hidden.weight.dims(), [Blobs::DIM, 2]);
    assert_eq!(small.out.weight.dims(), [2, 4]);

    // A skeleton of another width, a group whose shapes disagree, every unit removed.
    let err = shrink(
        &model,
        std::slice::from_ref(&group),
        &kept,
        net_of_width(3, &device),
    )
    .unwrap_err();
    assert!(
        matches!(&err, Error::Tensor(ember_tensor::Error::ValueShape { path, .. }) if path.starts_with("hidden.")),
        "{err}"
    );
    let wrong = ember_tensor::UnitGroup {
        units: 4,
        ..group.clone()
    };
    assert!(matches!(
        select_units(&model, &[wrong], &config),
        Err(Error::Group { .. })
    ));
    let every = [("hidden".to_string(), vec![])].into();
    assert!(matches!(
        shrink(
            &model,
            std::slice::from_ref(&group),
            &every,
            net_of_width(1, &device)
        ),
        Err(Error::Group { .. })
    ));
    let none_left = StructuredConfig {
        min_keep: 0,
        ..StructuredConfig::new(UnitCriterion::L1, 1.0)
    };
    assert!(matches!(
        select_units(&model, &[group], &none_left),
        Err(Error::Group { .. })
    ));
}

impl UnitActivations for Net {
    fn unit_activations(&self, images: Tensor<4>) -> Vec<(String, Tensor<3>)> {
        vec![(
            "hidden".into(),
            self.hidden_activations(images).unsqueeze_dim(2),
        )]
    }
}

/// The net's parameters and a batch's inputs and labels, on the host in f64.
struct HostNet {
    w1: Vec<f64>,
    b1: Vec<f64>,
    w2: Vec<f64>,
    b2: Vec<f64>,
    width: usize,
}

const CLASSES: usize = 4;

impl HostNet {
    fn of(model: &Net) -> Self {
        let p: BTreeMap<String, Vec<f64>> = param_values(model)
            .into_iter()
            .map(|p| {
                let v = read_f32(p.flat).unwrap();
                (p.info.path, v.into_iter().map(f64::from).collect())
            })
            .collect();
        Self {
            width: p["hidden.bias"].len(),
            w1: p["hidden.weight"].clone(),
            b1: p["hidden.bias"].clone(),
            w2: p["out.weight"].clone(),
            b2: p["out.bias"].clone(),
        }
    }

    /// Pre-activations `z` `[batch, width]` of the hidden layer.
    fn hidden(&self, x: &[f64]) -> Vec<Vec<f64>> {
        x.chunks(Blobs::DIM)
            .map(|row| {
                (0..self.width)
                    .map(|j| {
                        self.b1[j]
                            + (0..Blobs::DIM)
                                .map(|i| row[i] * self.w1[i * self.width + j])
                                .sum::<f64>()
                    })
                    .collect()
            })
            .collect()
    }

    /// Mean cross-entropy with the units in `removed` read as zero by the output layer, and
    /// `dL/da` for every sample and unit.
    fn loss(&self, x: &[f64], labels: &[i64], removed: &[usize]) -> (f64, Vec<Vec<f64>>) {
        let batch = labels.len() as f64;
        let mut total = 0.0;
        let mut da = vec![];
        for (z, &label) in self.hidden(x).iter().zip(labels) {
            let a: Vec<f64> = (0..self.width)
                .map(|j| {
                    if removed.contains(&j) {
                        0.0
                    } else {
                        z[j].max(0.0)
                    }
                })
                .collect();
            let logits: Vec<f64> = (0..CLASSES)
                .map(|k| {
                    self.b2[k]
                        + (0..self.width)
                            .map(|j| a[j] * self.w2[j * CLASSES + k])
                            .sum::<f64>()
                })
                .collect();
            let max = logits.iter().cloned().fold(f64::MIN, f64::max);
            let sum: f64 = logits.iter().map(|l| (l - max).exp()).sum();
            total += sum.ln() + max - logits[label as usize];
            let dlogits: Vec<f64> = (0..CLASSES)
                .map(|k| {
                    let p = (logits[k] - max).exp() / sum;
                    (p - f64::from(u8::from(k == label as usize))) / batch
                })
                .collect();
            da.push(
                (0..self.width)
                    .map(|j| {
                        (0..CLASSES)
                            .map(|k| dlogits[k] * self.w2[j * CLASSES + k])
                            .sum()
                    })
                    .collect(),
            );
        }
        (total / batch, da)
    }
}

fn host_batch(data: &Blobs, indices: &[usize], device: &Device) -> (Vec<f64>, Vec<i64>) {
    let (images, labels) = data.batch(indices, device);
    let x = read_f32(images)
        .unwrap()
        .into_iter()
        .map(f64::from)
        .collect();
    let labels = labels.into_data().iter::<i64>().collect();
    (x, labels)
}

fn close(a: f64, b: f64, tolerance: f64) -> bool {
    (a - b).abs() <= tolerance * (1.0 + a.abs().max(b.abs()))
}

/// Taylor scores are `|sum over the batch of a * dL/da|` summed over batches, and APoZ scores
/// the fraction of non-zero activations: both against a forward and backward pass written out
/// by hand in f64.
#[test]
fn taylor_and_apoz_match_a_hand_written_pass() {
    let _seeded = seeded();
    let device = Device::flex();
    let model = net(7, &device);
    let data = Blobs::new(40, 4, 11);
    let evidence = Evidence {
        data: &data,
        batches: 2,
        batch_size: 16,
        device: &device,
    };
    let group = [hidden_group(32)];
    let taylor = &taylor_scores(&model, &group, &evidence).unwrap()["hidden"];
    let apoz = &apoz_scores(&model, &group, &evidence).unwrap()["hidden"];
    let host = HostNet::of(&model);
    let (mut want_taylor, mut zeros) = (vec![0.0; 32], vec![0usize; 32]);
    for indices in [(0..16).collect::<Vec<_>>(), (16..32).collect()] {
        let (x, labels) = host_batch(&data, &indices, &device);
        let z = host.hidden(&x);
        let (_, da) = host.loss(&x, &labels, &[]);
        for j in 0..32 {
            let sum: f64 = (0..16).map(|b| z[b][j].max(0.0) * da[b][j]).sum();
            want_taylor[j] += sum.abs();
            zeros[j] += (0..16).filter(|&b| z[b][j] <= 0.0).count();
        }
    }
    for j in 0..32 {
        assert!(
            close(taylor[j], want_taylor[j], 1e-4),
            "unit {j}: {} vs {}",
            taylor[j],
            want_taylor[j]
        );
        let want_apoz = 1.0 - zeros[j] as f64 / 32.0;
        assert!((apoz[j] - want_apoz).abs() < 1e-9, "unit {j}");
    }
    assert!(
        want_taylor.iter().any(|&t| t > 1e-4),
        "the reference must not be all zeros"
    );
    // The dispatcher gives the same scores.
    let via = unit_scores(&model, &group, UnitCriterion::Taylor, Some(&evidence)).unwrap();
    assert_eq!(&via["hidden"], taylor);
}

/// Shapley values by permutation sampling: a unit nothing reads is worth exactly zero, every
/// permutation's contributions add up to the loss of removing the whole layer (so their means
/// do), the seed fixes the estimate, and the standard error is that of the samples.
#[test]
fn shapley_values_keep_the_axioms_they_are_defined_by() {
    let _seeded = seeded();
    let device = Device::flex();
    let model = net_of_width_seeded(6, 3, &device);
    // Unit 2's outgoing weights zero: a null player.
    let mut out = HostNet::of(&model).w2;
    out[2 * CLASSES..3 * CLASSES].fill(0.0);
    let model = ember_tensor::set_param_values(
        model,
        &[(
            "out.weight".to_string(),
            out.iter().map(|&v| v as f32).collect(),
        )]
        .into(),
    )
    .unwrap();
    let data = Blobs::new(64, 4, 5);
    let evidence = Evidence {
        data: &data,
        batches: 2,
        batch_size: 32,
        device: &device,
    };
    let config = ShapleyConfig {
        permutations: 8,
        seed: 3,
    };
    let group = [hidden_group(6)];
    let got = shapley_scores(&model, &group, &evidence, config).unwrap();
    let (values, errors) = (&got.scores["hidden"], &got.std_error["hidden"]);
    assert!(
        values[2].abs() < 1e-7 && errors[2].abs() < 1e-7,
        "{values:?}"
    );
    let host = HostNet::of(&model);
    let mean_loss = |removed: &[usize]| {
        [(0..32).collect::<Vec<_>>(), (32..64).collect()]
            .iter()
            .map(|indices| {
                let (x, labels) = host_batch(&data, indices, &device);
                host.loss(&x, &labels, removed).0
            })
            .sum::<f64>()
            / 2.0
    };
    let everything = mean_loss(&[0, 1, 2, 3, 4, 5]) - mean_loss(&[]);
    assert!(
        close(values.iter().sum::<f64>(), everything, 1e-4),
        "efficiency: {} vs {everything}",
        values.iter().sum::<f64>()
    );
    assert!(errors.iter().any(|&e| e > 0.0), "{errors:?}");
    assert_eq!(
        shapley_scores(&model, &group, &evidence, config).unwrap(),
        got,
        "seeded"
    );
}

fn net_of_width_seeded(width: usize, seed: u64, device: &Device) -> Net {
    device.seed(seed);
    net_of_width(width, device)
}

/// Global ranking divides each group's scores by their mean magnitude and removes the lowest
/// across groups, never below `min_keep`; local ranking cuts each group alike.
#[test]
fn global_and_local_ranking_by_hand() {
    let group = |name: &str, units| ember_tensor::UnitGroup {
        name: name.into(),
        units,
        producers: vec![],
        consumers: vec![],
    };
    let groups = [group("a", 4), group("b", 2)];
    // Normalized: a = 0.4, 0.8, 1.2, 1.6 (mean 2.5); b = 0.5, 1.5 (mean 20).
    let scores = [
        ("a".to_string(), vec![1.0, 2.0, 3.0, 4.0]),
        ("b".to_string(), vec![10.0, 30.0]),
    ]
    .into();
    let global = StructuredConfig::new(UnitCriterion::L1, 0.5).global();
    let kept = keep_best(&groups, &scores, &global).unwrap();
    assert_eq!(kept["a"], vec![2, 3]);
    assert_eq!(kept["b"], vec![1]);
    let floor = StructuredConfig {
        min_keep: 2,
        ..global.clone()
    };
    let kept = keep_best(&groups, &scores, &floor).unwrap();
    assert_eq!(
        (kept["a"].clone(), kept["b"].clone()),
        (vec![2, 3], vec![0, 1])
    );
    let rounded = StructuredConfig {
        round_to: 4,
        ..global.clone()
    };
    let kept = keep_best(&groups, &scores, &rounded).unwrap();
    assert_eq!(kept["a"], vec![0, 1, 2, 3], "2 kept rounds up to 4");
    assert_eq!(kept["b"], vec![0, 1], "rounding never exceeds the width");
    let local = StructuredConfig {
        ranking: Ranking::Local,
        ..global.clone()
    };
    let kept = keep_best(&groups, &scores, &local).unwrap();
    assert_eq!(
        (kept["a"].clone(), kept["b"].clone()),
        (vec![2, 3], vec![1])
    );

    let mut bad = scores.clone();
    bad.insert("b".into(), vec![1.0, f64::NAN]);
    assert!(matches!(
        keep_best(&groups, &bad, &global),
        Err(Error::Group { .. })
    ));
    bad.remove("b");
    assert!(matches!(
        keep_best(&groups, &bad, &global),
        Err(Error::Group { .. })
    ));
    let outside = StructuredConfig::new(UnitCriterion::L1, -0.1);
    assert!(matches!(
        keep_best(&groups, &scores, &outside),
        Err(Error::Sparsity { .. })
    ));
}

/// A criterion that watches the model, given nothing to watch it on: a typed error naming it.
#[test]
fn criteria_that_need_data_refuse_to_run_without() {
    let _seeded = seeded();
    let device = Device::flex();
    let model = net(1, &device);
    let group = [hidden_group(32)];
    let err = unit_scores(&model, &group, UnitCriterion::Taylor, None).unwrap_err();
    assert!(
        matches!(
            err,
            Error::NoEvidence {
                criterion: "Taylor",
                ..
            }
        ),
        "{err}"
    );
    let config = StructuredConfig::new(UnitCriterion::Apoz, 0.5);
    assert!(matches!(
        ember_prune::select_units(&model, &group, &config),
        Err(Error::NoEvidence {
            criterion: "APoZ",
            ..
        })
    ));
    let empty = Blobs::new(0, 4, 1);
    let nothing = Evidence {
        data: &empty,
        batches: 4,
        batch_size: 8,
        device: &device,
    };
    assert!(matches!(
        taylor_scores(&model, &group, &nothing),
        Err(Error::NoEvidence { .. })
    ));
    let data = Blobs::new(16, 4, 1);
    let some = Evidence {
        data: &data,
        ..nothing
    };
    let no_budget = ShapleyConfig {
        permutations: 0,
        seed: 0,
    };
    assert!(matches!(
        shapley_scores(&model, &group, &some, no_budget),
        Err(Error::NoEvidence { .. })
    ));
    // A group the model shows no activations for.
    let other = ember_tensor::UnitGroup {
        name: "elsewhere".into(),
        ..hidden_group(32)
    };
    assert!(matches!(
        apoz_scores(&model, &[other], &some),
        Err(Error::Group { .. })
    ));
}

/// Pruning the neurons Taylor ranks lowest costs less than pruning those it ranks highest: the
/// criterion points at what the loss depends on.
#[test]
fn taylor_ranks_what_the_loss_depends_on() {
    let _seeded = seeded();
    let device = Device::flex();
    let data = Blobs::new(512, 4, 21);
    let config = ember_tensor::TrainConfig {
        epochs: 4,
        batch_size: 32,
        learning_rate: 1e-2,
        progress: false,
        ..ember_tensor::TrainConfig::default()
    };
    let (model, _) = ember_tensor::train(net(9, &device), &data, &config, &device).unwrap();
    let evidence = Evidence {
        data: &data,
        batches: 4,
        batch_size: 128,
        device: &device,
    };
    let group = [hidden_group(32)];
    let scores = &taylor_scores(&model, &group, &evidence).unwrap()["hidden"];
    let mut order: Vec<usize> = (0..32).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let host = HostNet::of(&model);
    let (x, labels) = host_batch(&data, &(0..512).collect::<Vec<_>>(), &device);
    let (worst, _) = host.loss(&x, &labels, &order[..8]);
    let (best, _) = host.loss(&x, &labels, &order[24..]);
    assert!(
        worst < best,
        "removing low-Taylor units {worst} vs high {best}"
    );
}

/// One Adam step of cross-entropy on a fixed batch.
fn adam_step(model: Net, optimizer: &mut burn::optim::ModuleOptimizer, device: &Device) -> Net {
    let x: Vec<f32> = (0..8 * Blobs::DIM)
        .map(|i| (i as f32 * 0.61).cos())
        .collect();
    let images = Tensor::<4>::from_data(TensorData::new(x, [8, 1, 1, Blobs::DIM]), device);
    let labels = Tensor::<1, burn::tensor::Int>::from_data(
        TensorData::new((0..8).map(|i| i % 4).collect::<Vec<i64>>(), [8]),
        device,
    );
    let loss = burn::nn::loss::CrossEntropyLossConfig::new()
        .init(device)
        .forward(model.forward(images), labels);
    let grads = burn::optim::GradientsParams::from_grads(loss.backward(), &model);
    optimizer.step(1e-2, model, grads)
}

/// The largest difference between two nets' parameters, path by path.
fn max_param_difference(a: &Net, b: &Net) -> f32 {
    param_values(a)
        .into_iter()
        .zip(param_values(b))
        .map(|(a, b)| {
            assert_eq!(a.info.path, b.info.path);
            let (a, b) = (read_f32(a.flat).unwrap(), read_f32(b.flat).unwrap());
            assert_eq!(a.len(), b.len());
            a.iter()
                .zip(&b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f32::max)
        })
        .fold(0.0, f32::max)
}

/// Adam's state cut by the surgery: in a network whose removed neurons are dead (no weight into
/// them, no bias, no weight out of them, so their gradients and moments stay zero), the pruned
/// network trains on exactly as the dense one does, which holds only if every kept weight's
/// moments and the step count came along; with a fresh optimizer it does not.
#[test]
fn adam_state_follows_the_surgery_and_training_goes_on_as_in_the_dense_network() {
    let _seeded = seeded();
    let device = Device::flex().autodiff();
    device.seed(11);
    let width = 12;
    let dead = [1usize, 4, 5, 9];
    let model = net_of_width(width, &device);
    let mut values = BTreeMap::new();
    for p in param_values(&model) {
        let mut w = read_f32(p.flat).unwrap();
        match p.info.path.as_str() {
            // burn's Linear weight is [in, out]: a neuron's incoming weights are a column.
            "hidden.weight" => w
                .chunks_mut(width)
                .for_each(|row| dead.iter().for_each(|&u| row[u] = 0.0)),
            "hidden.bias" => dead.iter().for_each(|&u| w[u] = 0.0),
            "out.weight" => dead.iter().for_each(|&u| w[u * 4..(u + 1) * 4].fill(0.0)),
            _ => continue,
        }
        values.insert(p.info.path.clone(), w);
    }
    let mut dense = ember_tensor::set_param_values(model, &values).unwrap();
    let mut optimizer = burn::optim::AdamConfig::new().init();
    for _ in 0..3 {
        dense = adam_step(dense, &mut optimizer, &device);
    }

    let groups = [hidden_group(width)];
    let keep: Vec<usize> = (0..width).filter(|u| !dead.contains(u)).collect();
    let kept: BTreeMap<String, Vec<usize>> = [("hidden".to_string(), keep.clone())].into();
    let cut = |model: &Net| {
        ember_prune::shrink(model, &groups, &kept, net_of_width(keep.len(), &device)).unwrap()
    };
    let small = cut(&dense);
    let state =
        shrink_optimizer_state(optimizer.to_record(), &dense, &groups, &kept, &small).unwrap();
    let mut carried = burn::optim::AdamConfig::new().init().load_record(state);
    let mut fresh = burn::optim::AdamConfig::new().init();
    let (mut with_state, mut afresh) = (small.clone(), small);
    for _ in 0..2 {
        dense = adam_step(dense, &mut optimizer, &device);
        afresh = adam_step(afresh, &mut fresh, &device);
        with_state = adam_step(with_state, &mut carried, &device);
    }
    let reference = cut(&dense);
    let carried_gap = max_param_difference(&reference, &with_state);
    let fresh_gap = max_param_difference(&reference, &afresh);
    assert!(carried_gap < 1e-5, "state carried: {carried_gap}");
    assert!(fresh_gap > 1e-3, "a fresh Adam should differ: {fresh_gap}");

    // A record that does not belong to the model is refused, named.
    let again = shrink_optimizer_state(carried.to_record(), &dense, &groups, &kept, &with_state);
    assert!(
        matches!(again, Err(Error::OptimizerState(ref reason)) if reason.contains("does not have")),
        "{again:?}"
    );
}

/// Random scores are seeded per group: the same seed gives the same scores, and two groups of
/// one model (here two names for the same layer) rank their units differently, so a random
/// cut does not keep the same units in every layer.
#[test]
fn random_scores_repeat_by_seed_and_differ_between_groups() {
    use ember_prune::{UnitCriterion, weight_scores};
    let _seeded = seeded();
    let device = Device::flex();
    let model = net_of_width(16, &device);
    let groups = [
        hidden_group(16),
        ember_tensor::UnitGroup {
            name: "hidden again".into(),
            ..hidden_group(16)
        },
    ];
    let random = |seed| weight_scores(&model, &groups, UnitCriterion::Random { seed }).unwrap();
    let (first, again, other) = (random(3), random(3), random(4));
    assert_eq!(first, again);
    assert_ne!(first["hidden"], other["hidden"]);
    assert_ne!(first["hidden"], first["hidden again"]);
}
