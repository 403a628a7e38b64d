//! Training, evaluation, and saving a trained model with its config.

#![allow(clippy::unwrap_used)] // a test fails loudly, which is what it is for

mod common;

use common::{flex_device, synthetic_split, weights};
use ember_zoo::{
    Classifier, Error, LabeledData, LeNet5Config, MlpConfig, ModelConfig, TrainConfig, evaluate,
    load_model, save_model, train,
};

fn quick(epochs: usize) -> TrainConfig {
    TrainConfig {
        epochs,
        batch_size: 32,
        progress: false,
        ..TrainConfig::default()
    }
}

#[test]
fn an_mlp_learns_a_learnable_task() {
    let device = flex_device();
    let (train_split, test_split) = (synthetic_split(512, 1), synthetic_split(256, 2));
    let model = MlpConfig::lenet_300_100(784, 10).init(&device).unwrap();
    let before = evaluate(&model, &test_split, 100, &device).unwrap();
    let (model, report) = train(model, &train_split, &quick(2), &device).unwrap();
    let after = evaluate(&model, &test_split, 100, &device).unwrap();
    assert!(report.epochs[1].loss < report.epochs[0].loss);
    assert!(
        after.accuracy > 95.0,
        "accuracy {} after training",
        after.accuracy
    );
    assert!(after.loss < before.loss);
    // The error count itself is checked against a count by hand in the next test.
}

#[test]
fn evaluation_counts_errors_against_a_hand_check() {
    let device = flex_device();
    let data = synthetic_split(50, 4);
    let model = MlpConfig::lenet_300_100(784, 10).init(&device).unwrap();
    let report = evaluate(&model, &data, 7, &device).unwrap();
    // The same count by hand: argmax of each row of logits against the label.
    let indices: Vec<usize> = (0..data.len()).collect();
    let (images, _) = data.batch(&indices, &device);
    let logits = model
        .forward(images)
        .into_data()
        .try_into_vec::<f32>()
        .unwrap();
    let errors = logits
        .chunks(10)
        .zip(&data.labels)
        .filter(|&(row, &label)| {
            let best = (0..10).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
            best != label as usize
        })
        .count();
    assert_eq!(report.errors, errors);
    assert_eq!(report.samples, 50);
}

#[test]
fn a_saved_model_reloads_with_identical_outputs() {
    let device = flex_device();
    let dir = tempfile::tempdir().unwrap();
    let data = synthetic_split(64, 5);
    for config in [
        ModelConfig::Mlp(MlpConfig::lenet_300_100(784, 10)),
        ModelConfig::LeNet5(LeNet5Config::new(1, [28, 28], 10)),
    ] {
        let model = config.init(&device).unwrap();
        let (model, _) = train(model, &data, &quick(1), &device).unwrap();
        let path = dir.path().join("model.bpk");
        let size = save_model(model.clone(), &config, &path).unwrap();
        assert_eq!(size, std::fs::metadata(&path).unwrap().len());
        let (loaded, loaded_config) = load_model(&path, &device).unwrap();
        assert_eq!(loaded_config, config);
        assert_eq!(weights(&loaded), weights(&model));
        let (images, _) = data.batch(&[0, 1, 2], &device);
        assert_eq!(
            loaded.forward(images.clone()).into_data(),
            model.forward(images).into_data()
        );
    }
}

#[test]
fn a_masked_model_reloads_with_its_masks() {
    use burn::tensor::{Bool, Tensor, TensorData};
    let device = flex_device();
    let dir = tempfile::tempdir().unwrap();
    let config = ModelConfig::Mlp(MlpConfig {
        hidden: vec![16],
        ..MlpConfig::lenet_300_100(784, 10)
    });
    let model = config.init(&device).unwrap();
    // Keep every third weight of the first layer (the `Model` enum's variant is the first
    // path segment).
    let keep: Vec<bool> = (0..784 * 16).map(|i| i % 3 == 0).collect();
    let masks = ember_tensor::Masks::from([(
        "Mlp.layers.0.weight".to_string(),
        Tensor::<1, Bool>::from_data(TensorData::from(keep.as_slice()), &device),
    )]);
    let model = ember_tensor::set_masks(model, &masks).unwrap();
    let path = dir.path().join("pruned.bpk");
    save_model(model.clone(), &config, &path).unwrap();

    let (loaded, _) = load_model(&path, &device).unwrap();
    let reloaded = ember_tensor::masks(&loaded);
    assert_eq!(
        reloaded.keys().collect::<Vec<_>>(),
        vec!["Mlp.layers.0.weight"]
    );
    let flags = ember_tensor::mask::read_flags(reloaded["Mlp.layers.0.weight"].clone()).unwrap();
    assert_eq!(flags, keep);
    assert_eq!(weights(&loaded), weights(&model));

    // The sidecar names a parameter the model does not have.
    let sidecar = ember_zoo::saved::config_path(&path);
    let text = std::fs::read_to_string(&sidecar).unwrap();
    std::fs::write(
        &sidecar,
        text.replace("Mlp.layers.0.weight", "Mlp.layers.9.weight"),
    )
    .unwrap();
    assert!(load_model(&path, &device).is_err());
}

#[test]
fn a_corrupt_model_file_is_a_typed_error() {
    let device = flex_device();
    let dir = tempfile::tempdir().unwrap();
    let config = ModelConfig::Mlp(MlpConfig::lenet_300_100(784, 10));
    let path = dir.path().join("mlp.bpk");
    save_model(config.init(&device).unwrap(), &config, &path).unwrap();

    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 3]).unwrap();
    assert!(matches!(
        load_model(&path, &device),
        Err(Error::ModelFile { .. })
    ));

    // A model of another kind than its config is refused before anything is written.
    let lenet = ModelConfig::LeNet5(ember_zoo::LeNet5Config::new(1, [28, 28], 10));
    std::fs::remove_file(&path).unwrap();
    assert!(matches!(
        save_model(lenet.init(&device).unwrap(), &config, &path),
        Err(Error::ModelFile { .. })
    ));
    assert!(!path.exists());

    // Weights of another architecture under this config.
    let other = ModelConfig::Mlp(MlpConfig::lenet_300_100(784, 5));
    save_model(other.init(&device).unwrap(), &config, &path).unwrap();
    assert!(matches!(
        load_model(&path, &device),
        Err(Error::ModelFile { .. })
    ));

    // A sidecar that asks for more than the weights hold is refused before the model is
    // built (a terabyte-wide layer would abort on allocation), and so is one whose size
    // overflows.
    let sidecar = ember_zoo::saved::config_path(&path);
    save_model(config.init(&device).unwrap(), &config, &path).unwrap();
    let original: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&sidecar).unwrap()).unwrap();
    for hidden in [vec![1usize << 40, 100], vec![usize::MAX / 2, 100]] {
        let mut crafted = original.clone();
        crafted["config"]["hidden"] = serde_json::json!(hidden);
        std::fs::write(&sidecar, crafted.to_string()).unwrap();
        let result = load_model(&path, &device);
        assert!(
            matches!(
                result,
                Err(Error::ModelFile { .. } | Error::InvalidConfig { .. })
            ),
            "{hidden:?}: {:?}",
            result.map(|_| ())
        );
    }

    std::fs::write(
        ember_zoo::saved::config_path(&path),
        "{\"model\": \"resnet\"}",
    )
    .unwrap();
    assert!(matches!(
        load_model(&path, &device),
        Err(Error::ModelFile { .. })
    ));
}

#[test]
fn bad_training_configs_are_typed_errors() {
    let device = flex_device();
    let data = synthetic_split(8, 6);
    let model = || MlpConfig::lenet_300_100(784, 10).init(&device).unwrap();
    for (config, field) in [
        (
            TrainConfig {
                epochs: 0,
                ..quick(1)
            },
            "epochs",
        ),
        (
            TrainConfig {
                batch_size: 0,
                ..quick(1)
            },
            "batch_size",
        ),
        (
            TrainConfig {
                learning_rate: f64::NAN,
                ..quick(1)
            },
            "learning_rate",
        ),
        (
            TrainConfig {
                learning_rate: -1.0,
                ..quick(1)
            },
            "learning_rate",
        ),
    ] {
        let err = train(model(), &data, &config, &device).unwrap_err();
        assert!(
            matches!(err, ember_tensor::Error::InvalidConfig { field: f, .. } if f == field),
            "{err}"
        );
    }
    let empty = data.take(0);
    assert!(matches!(
        train(model(), &empty, &quick(1), &device),
        Err(ember_tensor::Error::InvalidConfig { .. })
    ));
}

#[test]
fn unknown_backend_name_is_a_typed_error() {
    let err = "tpu".parse::<ember_tensor::BackendKind>().unwrap_err();
    assert!(err.to_string().contains("unknown backend `tpu`"));
}
