//! Pruned fully connected layers on the sparse kernel: the same outputs as the masked dense
//! path, a threshold deciding by sparsity or timings deciding by speed, training leaving the
//! sparse form behind, and bad weights and choices refused.

#![allow(clippy::unwrap_used)] // a test fails loudly, which is what it is for

use burn::tensor::{Bool, Device, Tensor, TensorData};
use ember_quant::{Error, QuantLayers, SPARSE_CROSSOVER, SparseKernel, use_sparse_kernel};
use ember_tensor::testing::seeded_lock;
use ember_tensor::{Classifier, Masks, stats::read_f32};
use ember_zoo::{Mlp, MlpConfig};

fn mlp(device: &Device) -> (Mlp, MlpConfig) {
    let config = MlpConfig {
        input: 64,
        hidden: vec![48, 24],
        classes: 10,
        dropout: 0.0,
    };
    device.seed(5);
    (config.init(device).unwrap(), config)
}

/// Keep masks removing `sparsity` of each listed weight, by a fixed pseudo-random pattern.
fn masks(model: &Mlp, sparsities: &[(&str, f64)], device: &Device) -> Masks {
    let params = ember_tensor::params(model);
    sparsities
        .iter()
        .map(|&(path, sparsity)| {
            let numel = params.iter().find(|p| p.path == path).unwrap().numel();
            let keep: Vec<bool> = (0..numel)
                .map(|i| ((i * 7919 + 13) % 1000) as f64 / 1000.0 >= sparsity)
                .collect();
            let mask = Tensor::<1, Bool>::from_data(TensorData::new(keep, [numel]), device);
            (path.to_string(), mask)
        })
        .collect()
}

fn inputs(batch: usize, device: &Device) -> Tensor<4> {
    let x: Vec<f32> = (0..batch * 64).map(|i| (i as f32 * 0.61).sin()).collect();
    Tensor::from_data(TensorData::new(x, [batch, 1, 1, 64]), device)
}

fn close(a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= 1e-5 * (1.0 + x.abs()), "{x} vs {y}");
    }
}

/// Forced onto the sparse kernel, a masked MLP gives what burn's dense matmul gives with the
/// masked weights; under `Auto` only the layers past the crossover go sparse, with their
/// sparsity read exactly from the masks.
#[test]
fn the_sparse_path_computes_what_the_masked_dense_path_computes() {
    let _seeded = seeded_lock();
    let device = Device::flex();
    let (model, _) = mlp(&device);
    let masks = masks(
        &model,
        &[("layers.0.weight", 0.9), ("layers.1.weight", 0.5)],
        &device,
    );
    let model = ember_tensor::set_masks(model, &masks).unwrap();
    let want = read_f32(model.forward(inputs(37, &device))).unwrap();

    let mut forced = model.clone();
    let report = use_sparse_kernel(&mut forced, SparseKernel::Always).unwrap();
    assert!(report.iter().all(|l| l.choice.sparse), "{report:?}");
    close(
        &read_f32(forced.forward(inputs(37, &device))).unwrap(),
        &want,
    );

    let mut auto = model.clone();
    let report = use_sparse_kernel(&mut auto, SparseKernel::Threshold(SPARSE_CROSSOVER)).unwrap();
    let expected_zeros = |path: &str| {
        let flags = ember_tensor::mask::read_flags(masks[path].clone()).unwrap();
        flags.iter().filter(|k| !**k).count() as f64 / flags.len() as f64
    };
    assert_eq!(report[0].path, "layers.0");
    assert_eq!(report[0].choice.sparsity, expected_zeros("layers.0.weight"));
    assert!(report[0].choice.sparse, "90 % is past the crossover");
    assert!(!report[1].choice.sparse, "50 % is not");
    assert!(
        !report[2].choice.sparse && report[2].choice.sparsity < 0.1,
        "unmasked"
    );
    assert!(
        report.iter().all(|l| l.choice.times.is_none()),
        "nothing timed"
    );
    for (path, layer) in auto.quant_layers() {
        let wanted = report
            .iter()
            .find(|l| l.path == path)
            .unwrap()
            .choice
            .sparse;
        assert_eq!(layer.sparse().is_some(), wanted, "{path}");
    }
    close(
        &read_f32(auto.forward(inputs(5, &device))).unwrap(),
        &read_f32(model.forward(inputs(5, &device))).unwrap(),
    );

    // Timed: the masked layers keep whichever kernel was faster on them, the unmasked one stays
    // dense untimed, and the model computes the same function either way.
    let mut timed = model.clone();
    let report = use_sparse_kernel(&mut timed, SparseKernel::Timed { batch: 9 }).unwrap();
    for layer in &report[..2] {
        let times = layer
            .choice
            .times
            .expect("a masked layer on the host is timed");
        assert_eq!(times.batch, 9);
        assert!(times.dense_us > 0.0 && times.sparse_us > 0.0, "{times:?}");
        assert_eq!(layer.choice.sparse, times.sparse_us < times.dense_us);
    }
    assert!(report[2].choice.times.is_none() && !report[2].choice.sparse);
    for (path, layer) in timed.quant_layers() {
        let wanted = report
            .iter()
            .find(|l| l.path == path)
            .unwrap()
            .choice
            .sparse;
        assert_eq!(layer.sparse().is_some(), wanted, "{path}");
    }
    close(
        &read_f32(timed.forward(inputs(37, &device))).unwrap(),
        &want,
    );

    let report = use_sparse_kernel(&mut auto, SparseKernel::Never).unwrap();
    assert!(report.iter().all(|l| !l.choice.sparse));
    assert!(
        auto.quant_layers()
            .iter()
            .all(|(_, l)| l.sparse().is_none())
    );
}

/// A layer trained after its sparse form was made computes with its new weights: the sparse
/// form, which holds the old ones, is dropped for good by the copy that trained, and kept by
/// the model that did not.
#[test]
fn training_leaves_the_sparse_form_behind() {
    let _seeded = seeded_lock();
    let device = Device::flex();
    let dim = ember_tensor::testing::Blobs::DIM;
    let config = MlpConfig {
        input: dim,
        hidden: vec![32],
        classes: 4,
        dropout: 0.0,
    };
    device.seed(3);
    let model = config.init(&device).unwrap();
    let masks = masks(&model, &[("layers.0.weight", 0.9)], &device);
    let mut model = ember_tensor::set_masks(model, &masks).unwrap();
    use_sparse_kernel(&mut model, SparseKernel::Always).unwrap();
    let x = Tensor::<4>::from_data(
        TensorData::new(vec![0.3f32; 2 * dim], [2, 1, 1, dim]),
        &device,
    );
    let before = read_f32(model.forward(x.clone())).unwrap();

    let data = ember_tensor::testing::Blobs::new(64, 4, 1);
    let training = ember_tensor::TrainConfig {
        epochs: 1,
        batch_size: 32,
        learning_rate: 1e-2,
        progress: false,
        ..ember_tensor::TrainConfig::default()
    };
    let (trained, _) = ember_tensor::train(model.clone(), &data, &training, &device).unwrap();
    let mut dense = trained.clone();
    use_sparse_kernel(&mut dense, SparseKernel::Never).unwrap();
    let after = read_f32(trained.forward(x.clone())).unwrap();
    assert_eq!(
        after,
        read_f32(dense.forward(x.clone())).unwrap(),
        "new weights"
    );
    assert_ne!(after, before, "training moved the weights");
    // The sparse form is shared by clones, so the model that was cloned into training lost it
    // too: it computes densely, with the weights it still has.
    let mut reference = model.clone();
    use_sparse_kernel(&mut reference, SparseKernel::Never).unwrap();
    close(
        &read_f32(model.forward(x.clone())).unwrap(),
        &read_f32(reference.forward(x)).unwrap(),
    );
}

/// A weight holding NaN: a typed error naming it, not a sparse product of garbage.
#[test]
fn a_non_finite_weight_is_refused() {
    let _seeded = seeded_lock();
    let device = Device::flex();
    let (model, _) = mlp(&device);
    let numel = 64 * 48;
    let mut w = vec![0.0f32; numel];
    w[17] = f32::NAN;
    let mut model =
        ember_tensor::set_param_values(model, &[("layers.0.weight".to_string(), w)].into())
            .unwrap();
    let err = use_sparse_kernel(&mut model, SparseKernel::Auto).unwrap_err();
    assert!(
        matches!(&err, Error::NonFinite { what, count: 1, .. } if what == "layers.0.weight"),
        "{err}"
    );
}

/// A threshold that is no sparsity and a timed batch of no rows: typed errors naming the
/// choice, before any layer changes.
#[test]
fn a_choice_that_cannot_decide_is_refused() {
    let _seeded = seeded_lock();
    let device = Device::flex();
    let (model, _) = mlp(&device);
    for choice in [
        SparseKernel::Threshold(1.5),
        SparseKernel::Threshold(-0.1),
        SparseKernel::Threshold(f64::NAN),
        SparseKernel::Timed { batch: 0 },
    ] {
        let mut model = model.clone();
        let err = use_sparse_kernel(&mut model, choice).unwrap_err();
        assert!(
            matches!(&err, Error::Scheme { what, .. } if what.starts_with("SparseKernel")),
            "{choice:?}: {err}"
        );
        assert!(
            model
                .quant_layers()
                .iter()
                .all(|(_, l)| l.sparse().is_none())
        );
    }
}
