//! One catalogue of the bad inputs a user can hand Ember: each class is fed through the public
//! function a user calls, and must come back as the exact error variant with a message that
//! names the offending file, path, field or value. None may panic.

#![allow(clippy::unwrap_used)] // a test fails loudly, which is what it is for

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use burn::tensor::{Device, Int, Tensor, TensorData};
use ember_distill::loss::SoftTargetConfig;
use ember_distill::{TeacherOutputs, distill};
use ember_prune::{NmPattern, PruneConfig, export_sparse, load_sparse};
use ember_quant::{
    DynamicConfig, FloatType, StaticConfig, WeightConfig, cast, load_quantized, quantize_dynamic,
    quantize_static, quantize_weights, save_quantized,
};
use ember_tensor::testing::{Blobs, seeded_lock};
use ember_tensor::{BackendKind, LabeledData, Selector, TrainConfig};
use ember_zoo::idx::{IdxArray, decode_idx, encode_idx, parse_idx};
use ember_zoo::{Dataset, LeNet5Config, Mlp, MlpConfig, ModelConfig, load_model, save_model};

/// What a case gave: whether the error was the expected variant, and its message.
type Outcome = (bool, String);

/// The error of `$result`, checked against `$pattern`; an accepted input is a failure.
macro_rules! refused {
    ($result:expr, $pattern:pat) => {
        match $result {
            Ok(_) => (false, "accepted".to_string()),
            Err(err) => (matches!(&err, $pattern), err.to_string()),
        }
    };
}

/// One class of bad input: what it is, what its message must name, and the call.
struct Case {
    class: &'static str,
    names: &'static str,
    run: Box<dyn Fn(&Path) -> Outcome>,
}

fn case(
    class: &'static str,
    names: &'static str,
    run: impl Fn(&Path) -> Outcome + 'static,
) -> Case {
    Case {
        class,
        names,
        run: Box::new(run),
    }
}

fn device() -> Device {
    Device::flex()
}

fn mlp(hidden: usize) -> Mlp {
    let device = device();
    device.seed(5);
    mlp_config(hidden).init(&device).unwrap()
}

fn mlp_config(hidden: usize) -> MlpConfig {
    MlpConfig {
        input: Blobs::DIM,
        hidden: vec![hidden],
        classes: 3,
        dropout: 0.0,
    }
}

/// The MLP with its first weight's entry 0 set to `value`.
fn mlp_with(value: f32) -> Mlp {
    let mut model = mlp(4);
    let weight = model.layers[0].weight.val();
    let mut values = ember_tensor::stats::read_f32(weight.clone()).unwrap();
    values[0] = value;
    let tensor = Tensor::from_data(TensorData::new(values, weight.dims()), &weight.device());
    model.layers[0].weight = model.layers[0].weight.clone().map(|_| tensor);
    model
}

fn flip_middle(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let i = bytes.len() / 2;
    bytes[i] ^= 0x40;
    std::fs::write(path, bytes).unwrap();
}

fn write_dataset(dir: &Path, test_labels: &[u8]) {
    let images = |n: usize| IdxArray {
        dims: vec![n, 6, 6],
        data: vec![7; n * 36],
    };
    let labels = |data: &[u8]| IdxArray {
        dims: vec![data.len()],
        data: data.to_vec(),
    };
    let files = [
        ("train-images-idx3-ubyte", images(4)),
        ("train-labels-idx1-ubyte", labels(&[0, 1, 0, 1])),
        ("t10k-images-idx3-ubyte", images(test_labels.len())),
        ("t10k-labels-idx1-ubyte", labels(test_labels)),
    ];
    for (name, array) in files {
        std::fs::write(dir.join(name), encode_idx(&array)).unwrap();
    }
}

fn catalogue() -> Vec<Case> {
    use ember_quant::Error as Q;
    use ember_tensor::Error as T;
    use ember_zoo::Error as Z;
    vec![
        case("truncated IDX file", "images.idx", |_| {
            let bytes = [0, 0, 8, 1, 0, 0, 0, 5, 1, 2];
            refused!(
                parse_idx(&bytes, Path::new("images.idx")),
                Z::Truncated { .. }
            )
        }),
        case("IDX file with the wrong magic", "0x01", |_| {
            let bytes = [1, 0, 8, 1, 0, 0, 0, 1, 9];
            refused!(parse_idx(&bytes, Path::new("x.idx")), Z::BadHeader { .. })
        }),
        case("IDX header promising a terabyte", "1024 MiB", |_| {
            let mut bytes = vec![0, 0, 8, 2];
            bytes.extend_from_slice(&(1u32 << 20).to_be_bytes());
            bytes.extend_from_slice(&(1u32 << 20).to_be_bytes());
            refused!(parse_idx(&bytes, Path::new("x.idx")), Z::BadHeader { .. })
        }),
        case("corrupt gzip stream", "labels.gz", |_| {
            let bytes = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 0xff, 0xff];
            refused!(decode_idx(&bytes, Path::new("labels.gz")), Z::Gzip { .. })
        }),
        case("test labels the training split lacks", "label 200", |dir| {
            write_dataset(dir, &[1, 200]);
            refused!(Dataset::load_idx_dir(dir), Z::Inconsistent { .. })
        }),
        case("images too small for LeNet-5", "image", |_| {
            refused!(
                LeNet5Config::new(1, [8, 8], 10).init(&device()),
                Z::InvalidConfig { .. }
            )
        }),
        case("corrupt saved model", "model.bpk", |dir| {
            let path = dir.join("model.bpk");
            save_model(mlp(4), &ModelConfig::Mlp(mlp_config(4)), &path).unwrap();
            std::fs::write(&path, &std::fs::read(&path).unwrap()[..40]).unwrap();
            refused!(load_model(&path, &device()), Z::ModelFile { .. })
        }),
        case("unknown backend name", "tpu", |_| {
            refused!("tpu".parse::<BackendKind>(), T::UnknownBackend { .. })
        }),
        case("NaN weight", "layers.0.weight", |_| {
            refused!(
                quantize_weights(mlp_with(f32::NAN), &WeightConfig::default()),
                Q::NonFinite { .. }
            )
        }),
        case("infinite weight", "layers.0.weight", |_| {
            refused!(
                ember_prune::prune(mlp_with(f32::INFINITY), &PruneConfig::global_magnitude(0.5)),
                ember_prune::Error::NonFinite { .. }
            )
        }),
        case("all-zero weight (zero range)", "layers.0.weight", |_| {
            let mut model = mlp(4);
            model.layers[0].weight = model.layers[0].weight.clone().map(|w| w.zeros_like());
            refused!(
                quantize_weights(model, &WeightConfig::default()),
                Q::ZeroRange { .. }
            )
        }),
        case("empty calibration set", "calibration", |_| {
            let empty = Blobs::new(0, 3, 1);
            refused!(
                quantize_static(mlp(4), &StaticConfig::default(), &empty, &device()),
                Q::Observe(ember_observe::Error::Empty { .. })
            )
        }),
        case("NaN activations in calibration", "layers.0 input", |_| {
            let data = Poisoned(Blobs::new(16, 3, 1));
            refused!(
                quantize_static(mlp(4), &StaticConfig::default(), &data, &device()),
                Q::Observe(ember_observe::Error::NonFinite { .. })
            )
        }),
        case("corrupt quantized file", "q.safetensors", |dir| {
            let path = dir.join("q.safetensors");
            let q = quantize_dynamic(mlp(4), &DynamicConfig::default()).unwrap();
            save_quantized(&q, &path).unwrap();
            flip_middle(&path);
            refused!(
                load_quantized(mlp(4), &path, &device()),
                Q::QuantFile { .. }
            )
        }),
        case("half precision on a backend without it", "F16", |_| {
            let ndarray = BackendKind::NdArray.device().unwrap();
            ndarray.seed(5);
            let model = mlp_config(4).init(&ndarray).unwrap();
            refused!(
                cast(model, FloatType::F16, &ndarray),
                Q::UnsupportedDType { .. }
            )
        }),
        case("sparsity above 1", "1.5", |_| {
            refused!(
                PruneConfig::global_magnitude(1.5).validate(),
                ember_prune::Error::Sparsity { .. }
            )
        }),
        case("NaN sparsity", "NaN", |_| {
            refused!(
                PruneConfig::global_magnitude(f64::NAN).validate(),
                ember_prune::Error::Sparsity { .. }
            )
        }),
        case("invalid N:M pattern", "5:4", |_| {
            let config = PruneConfig {
                nm: Some(NmPattern { n: 5, m: 4 }),
                ..PruneConfig::global_magnitude(0.5)
            };
            refused!(config.validate(), ember_prune::Error::NmPattern { .. })
        }),
        case("layer pattern that matches nothing", "nope.*", |_| {
            let config =
                PruneConfig::global_magnitude(0.5).with_layers(Selector::all().include("nope.*"));
            refused!(
                ember_prune::prune(mlp(4), &config),
                ember_prune::Error::Tensor(T::PatternMatchesNothing { .. })
            )
        }),
        case("selection left empty", "Conv3d", |_| {
            let config =
                PruneConfig::global_magnitude(0.5).with_layers(Selector::all().kind("Conv3d"));
            refused!(
                ember_prune::prune(mlp(4), &config),
                ember_prune::Error::Tensor(T::EmptySelection { .. })
            )
        }),
        case(
            "pruned file into a model of another shape",
            "the model has [4]",
            |dir| {
                let path = dir.join("pruned.safetensors");
                export_sparse(&mlp(6), &path).unwrap();
                refused!(
                    load_sparse(mlp(4), &path),
                    ember_prune::Error::SparseFile { .. }
                )
            },
        ),
        case("corrupt sparse file", "s.safetensors", |dir| {
            let path = dir.join("s.safetensors");
            export_sparse(&mlp(4), &path).unwrap();
            flip_middle(&path);
            refused!(
                load_sparse(mlp(4), &path),
                ember_prune::Error::SparseFile { .. }
            )
        }),
        case(
            "teacher and student with different classes",
            "classes",
            |_| {
                let data = Blobs::new(32, 3, 2);
                let device = device();
                device.seed(9);
                let teacher = MlpConfig {
                    classes: 4,
                    ..mlp_config(4)
                }
                .init(&device)
                .unwrap();
                let soft = SoftTargetConfig {
                    temperature: 2.0,
                    alpha: 0.5,
                };
                refused!(
                    distill(
                        mlp(4),
                        &teacher,
                        &data,
                        &quick(),
                        &soft,
                        TeacherOutputs::Cached,
                        &device
                    ),
                    ember_distill::Error::ShapeMismatch { .. }
                )
            },
        ),
        case("temperature at or below zero", "temperature", |_| {
            let data = Blobs::new(32, 3, 2);
            let soft = SoftTargetConfig {
                temperature: 0.0,
                alpha: 0.5,
            };
            refused!(
                distill(
                    mlp(4),
                    &mlp(4),
                    &data,
                    &quick(),
                    &soft,
                    TeacherOutputs::Cached,
                    &device()
                ),
                ember_distill::Error::InvalidConfig { .. }
            )
        }),
    ]
}

/// [`Blobs`] with a NaN in every batch's first input.
struct Poisoned(Blobs);

impl LabeledData for Poisoned {
    fn len(&self) -> usize {
        self.0.len()
    }

    fn batch(&self, indices: &[usize], device: &Device) -> (Tensor<4>, Tensor<1, Int>) {
        let (x, y) = self.0.batch(indices, device);
        let dims = x.dims();
        let mut values = ember_tensor::stats::read_f32(x).unwrap();
        values[0] = f32::NAN;
        (Tensor::from_data(TensorData::new(values, dims), device), y)
    }
}

fn quick() -> TrainConfig {
    TrainConfig {
        epochs: 1,
        batch_size: 16,
        progress: false,
        ..TrainConfig::default()
    }
}

#[test]
fn every_class_of_bad_input_is_a_typed_error_that_names_it() {
    let _seeded = seeded_lock();
    let cases = catalogue();
    let mut failures = Vec::new();
    for case in &cases {
        let dir = tempfile::tempdir().unwrap();
        match catch_unwind(AssertUnwindSafe(|| (case.run)(dir.path()))) {
            Err(_) => failures.push(format!("{}: panicked", case.class)),
            Ok((false, message)) => {
                failures.push(format!("{}: wrong error: {message}", case.class))
            }
            Ok((true, message)) if !message.contains(case.names) => failures.push(format!(
                "{}: the message does not name `{}`: {message}",
                case.class, case.names
            )),
            Ok(_) => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(cases.len() >= 20, "{} classes", cases.len());
    eprintln!("bad-input catalogue: {} classes, no panic", cases.len());
}
