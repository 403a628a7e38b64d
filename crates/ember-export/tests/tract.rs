//! Exported models re-run by tract, an ONNX runtime no one here wrote: the same outputs as
//! Ember's own forward pass, float exactly up to float rounding, quantized within the
//! quantization tolerance; and what cannot export refused by name.

#![allow(clippy::unwrap_used)]

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor, TensorData};
use ember_export::{DequantizeForm, Error, ExportOptions, OnnxModel, quantized_to_onnx, to_onnx};
use ember_quant::{StaticConfig, WeightConfig, quantize_static};
use ember_tensor::{Classifier, LabeledData};
use ember_zoo::models::{LeNet5Config, MlpConfig};
use tract_onnx::prelude::*;

/// Uniform images in `[0, 1)` from a seed, without an RNG shared with anything else.
struct Images {
    values: Vec<f32>,
    shape: [usize; 3],
}

impl Images {
    fn new(n: usize, shape: [usize; 3], seed: u64) -> Self {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let values = (0..n * shape.iter().product::<usize>())
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 40) as f32) / ((1u64 << 24) as f32)
            })
            .collect();
        Self { values, shape }
    }

    fn all(&self, device: &Device) -> Tensor<4> {
        let [c, h, w] = self.shape;
        let n = self.len();
        Tensor::from_data(TensorData::new(self.values.clone(), [n, c, h, w]), device)
    }
}

impl LabeledData for Images {
    fn len(&self) -> usize {
        self.values.len() / self.shape.iter().product::<usize>()
    }

    fn batch(&self, indices: &[usize], device: &Device) -> (Tensor<4>, Tensor<1, Int>) {
        let size: usize = self.shape.iter().product();
        let values: Vec<f32> = indices
            .iter()
            .flat_map(|&i| self.values[i * size..(i + 1) * size].to_vec())
            .collect();
        let [c, h, w] = self.shape;
        let x = Tensor::from_data(TensorData::new(values, [indices.len(), c, h, w]), device);
        (x, Tensor::zeros([indices.len()], device))
    }
}

/// Run `onnx` on tract with `images`: its outputs, row-major.
fn tract_outputs(onnx: &OnnxModel, images: &Images) -> Vec<f32> {
    let bytes = onnx.to_bytes().unwrap();
    let [c, h, w] = images.shape;
    let n = images.len();
    let plan = tract_onnx::onnx()
        .model_for_read(&mut bytes.as_slice())
        .unwrap()
        .with_input_fact(0, f32::fact([n, c, h, w]).into())
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let input: Tensor4 = tract_ndarray::Array4::from_shape_vec((n, c, h, w), images.values.clone())
        .unwrap()
        .into();
    let outputs = plan.run(tvec!(input.into())).unwrap();
    outputs[0]
        .to_array_view::<f32>()
        .unwrap()
        .iter()
        .copied()
        .collect()
}

type Tensor4 = tract_onnx::prelude::Tensor;

fn ember_outputs<M: Classifier>(model: &M, images: &Images, device: &Device) -> Vec<f32> {
    let logits = model.forward(images.all(device));
    logits.into_data().as_slice::<f32>().unwrap().to_vec()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn predictions(logits: &[f32], classes: usize) -> Vec<usize> {
    logits
        .chunks(classes)
        .map(|row| {
            (0..classes)
                .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                .unwrap()
        })
        .collect()
}

fn classify<M: Classifier>(model: &M, x: Tensor<4>) -> Tensor<2> {
    model.forward(x)
}

#[test]
fn float_lenet5_and_mlp_run_on_tract_with_the_same_outputs_at_another_batch_size() {
    let _seeded = ember_tensor::testing::seeded_lock();
    let device = Device::flex();
    device.seed(7);
    let images = Images::new(5, [1, 28, 28], 1);
    let lenet = LeNet5Config::new(1, [28, 28], 10).init(&device).unwrap();
    let onnx = to_onnx(&lenet, [1, 1, 28, 28], classify, &ExportOptions::default()).unwrap();
    assert_eq!(
        onnx.op_types(),
        [
            "Conv", "Relu", "MaxPool", "Conv", "Relu", "MaxPool", "Reshape", "MatMul", "Add",
            "Relu", "MatMul", "Add", "Relu", "MatMul", "Add"
        ]
    );
    // Captured at batch sizes 2 and 3, run at 5: the batch axis is symbolic.
    let diff = max_abs_diff(
        &tract_outputs(&onnx, &images),
        &ember_outputs(&lenet, &images, &device),
    );
    assert!(diff < 1e-4, "LeNet-5: tract differs by {diff}");

    let mlp = MlpConfig::lenet_300_100(784, 10).init(&device).unwrap();
    let onnx = to_onnx(&mlp, [1, 1, 28, 28], classify, &ExportOptions::default()).unwrap();
    let diff = max_abs_diff(
        &tract_outputs(&onnx, &images),
        &ember_outputs(&mlp, &images, &device),
    );
    assert!(diff < 1e-4, "LeNet-300-100: tract differs by {diff}");
}

#[test]
fn static_int8_lenet5_runs_on_tract_in_both_dequantize_forms() {
    let _seeded = ember_tensor::testing::seeded_lock();
    let device = Device::flex();
    device.seed(11);
    let model = LeNet5Config::new(1, [28, 28], 10).init(&device).unwrap();
    let calibration = Images::new(64, [1, 28, 28], 2);
    let test = Images::new(40, [1, 28, 28], 3);
    let float = ember_outputs(&model, &test, &device);

    // Per-tensor weights: standard QDQ, which tract reads.
    let per_tensor = StaticConfig {
        weights: WeightConfig::int8_per_tensor(),
        ..StaticConfig::default()
    };
    let q = quantize_static(model.clone(), &per_tensor, &calibration, &device).unwrap();
    let onnx = quantized_to_onnx(&q, [1, 1, 28, 28], classify, &ExportOptions::default()).unwrap();
    let types = onnx.op_types();
    assert_eq!(types.iter().filter(|t| **t == "QuantizeLinear").count(), 5);
    // Five weights and five inputs dequantized.
    assert_eq!(
        types.iter().filter(|t| **t == "DequantizeLinear").count(),
        10
    );
    let tract = tract_outputs(&onnx, &test);
    agree("per-tensor", &tract, &q, &test, &float);

    // Per-channel weights (the default): tract's DequantizeLinear takes one scale, so the
    // weights go through Cast and Mul.
    let q = quantize_static(model, &StaticConfig::default(), &calibration, &device).unwrap();
    let options = ExportOptions {
        dequantize: DequantizeForm::CastAndScale,
    };
    let onnx = quantized_to_onnx(&q, [1, 1, 28, 28], classify, &options).unwrap();
    let tract = tract_outputs(&onnx, &test);
    agree("per-channel", &tract, &q, &test, &float);
    // The standard form of the same model holds per-axis scales.
    let standard =
        quantized_to_onnx(&q, [1, 1, 28, 28], classify, &ExportOptions::default()).unwrap();
    let axis_nodes = standard
        .proto()
        .graph
        .node
        .iter()
        .filter(|n| n.op_type == "DequantizeLinear" && n.attribute.iter().any(|a| a.name == "axis"))
        .count();
    assert_eq!(axis_nodes, 5);
}

/// tract's outputs against Ember's: those of the quantized model's float path (dequantized
/// weights, fake-quantized inputs: the function the QDQ graph states) up to float rounding,
/// away from the float model's (so the quantizers are in the graph), and with the predictions
/// of Ember's integer kernels.
fn agree<M: Classifier + ember_quant::QuantLayers>(
    what: &str,
    tract: &[f32],
    quantized: &ember_quant::Quantized<M>,
    test: &Images,
    float: &[f32],
) {
    let device = Device::flex();
    let integer = ember_outputs(&quantized.model, test, &device);
    let mut fake = quantized.clone();
    fake.set_integer_kernel(None);
    let fake = ember_outputs(&fake.model, test, &device);
    let to_fake = max_abs_diff(tract, &fake);
    let quantization = max_abs_diff(&fake, float);
    let exact_rows = tract
        .chunks(10)
        .zip(fake.chunks(10))
        .filter(|(a, b)| max_abs_diff(a, b) < 1e-6)
        .count();
    let rows = tract.len() / 10;
    // Summing in another order can move an activation across a rounding boundary: a row
    // may differ by a step, most are identical.
    assert!(
        exact_rows * 10 >= 9 * rows && to_fake <= 0.5 * quantization,
        "{what}: {exact_rows} of {rows} rows as Ember's, off by up to {to_fake} (quantization moves them by {quantization})"
    );
    let to_float = max_abs_diff(tract, float);
    assert!(
        to_float >= 0.5 * quantization,
        "{what}: tract runs the float model ({to_float})"
    );
    let same = predictions(tract, 10)
        .iter()
        .zip(predictions(&integer, 10))
        .filter(|(a, b)| **a == *b)
        .count();
    assert!(
        same * 100 >= 95 * tract.len() / 10,
        "{what}: {same} predictions agree"
    );
}

#[test]
fn a_masked_model_exports_its_zeros_and_a_quantized_file_is_about_4x_smaller() {
    let _seeded = ember_tensor::testing::seeded_lock();
    let device = Device::flex();
    device.seed(5);
    let model = MlpConfig::lenet_300_100(784, 10).init(&device).unwrap();
    let config =
        ember_prune::PruneConfig::global_magnitude(0.9).with_scope(ember_prune::Scope::Layer);
    let (pruned, _) = ember_prune::prune(model.clone(), &config).unwrap();
    let onnx = to_onnx(&pruned, [1, 1, 28, 28], classify, &ExportOptions::default()).unwrap();
    let weight = onnx
        .proto()
        .graph
        .initializer
        .iter()
        .find(|t| t.name == "layers.0.weight")
        .unwrap();
    let zeros = weight
        .raw_data
        .chunks(4)
        .filter(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) == 0.0)
        .count();
    let sparsity = zeros as f64 / (weight.raw_data.len() / 4) as f64;
    assert!((sparsity - 0.9).abs() < 0.01, "sparsity {sparsity}");
    let images = Images::new(4, [1, 28, 28], 9);
    let diff = max_abs_diff(
        &tract_outputs(&onnx, &images),
        &ember_outputs(&pruned, &images, &device),
    );
    assert!(diff < 1e-4, "pruned: {diff}");

    let float_bytes = to_onnx(&model, [1, 1, 28, 28], classify, &ExportOptions::default())
        .unwrap()
        .to_bytes()
        .unwrap()
        .len();
    let calibration = Images::new(32, [1, 28, 28], 4);
    let q = quantize_static(model, &StaticConfig::default(), &calibration, &device).unwrap();
    let quant_bytes = quantized_to_onnx(&q, [1, 1, 28, 28], classify, &ExportOptions::default())
        .unwrap()
        .to_bytes()
        .unwrap()
        .len();
    let ratio = float_bytes as f64 / quant_bytes as f64;
    assert!(
        ratio > 3.8 && ratio <= 4.0,
        "float {float_bytes} B, int8 {quant_bytes} B: {ratio}x"
    );
}

/// A model whose forward pass sorts: no translation, refused with the operation's name.
#[derive(Module, Debug)]
struct Sorts {
    layer: burn::nn::Linear,
}

#[test]
fn an_unsupported_operation_is_refused_by_name_and_a_host_read_is_an_error() {
    let device = Device::flex();
    let model = Sorts {
        layer: burn::nn::LinearConfig::new(4, 3).init(&device),
    };
    let sorting = |m: &Sorts, x: Tensor<2>| m.layer.forward(x).cumsum(1);
    match to_onnx(&model, [1, 4], sorting, &ExportOptions::default()) {
        Err(Error::Unsupported { op, .. }) => assert_eq!(op, "NumericFloat::CumSum"),
        other => panic!("expected Unsupported, got {other:?}"),
    }
    let reading = |m: &Sorts, x: Tensor<2>| {
        let y = m.layer.forward(x);
        let _ = y.clone().into_data();
        y
    };
    assert!(matches!(
        to_onnx(&model, [1, 4], reading, &ExportOptions::default()),
        Err(Error::Capture(_))
    ));
}

#[test]
fn a_residual_network_with_batch_norm_runs_on_tract() {
    let _seeded = ember_tensor::testing::seeded_lock();
    let device = Device::flex();
    device.seed(3);
    let resnet = ember_zoo::resnet::ResNetConfig::small(1, [28, 28], 10)
        .init(&device)
        .unwrap();
    let onnx = to_onnx(&resnet, [1, 1, 28, 28], classify, &ExportOptions::default()).unwrap();
    let types = onnx.op_types();
    assert!(
        types.contains(&"BatchNormalization") || types.contains(&"Sub"),
        "{types:?}"
    );
    let images = Images::new(3, [1, 28, 28], 8);
    let diff = max_abs_diff(
        &tract_outputs(&onnx, &images),
        &ember_outputs(&resnet, &images, &device),
    );
    assert!(diff < 1e-4, "ResNet: tract differs by {diff}");
}

#[test]
fn dynamic_int8_mlp_runs_on_tract_through_dynamic_quantize_linear() {
    let _seeded = ember_tensor::testing::seeded_lock();
    let device = Device::flex();
    device.seed(13);
    let model = MlpConfig::lenet_300_100(784, 10).init(&device).unwrap();
    let test = Images::new(20, [1, 28, 28], 6);
    let float = ember_outputs(&model, &test, &device);
    let q = ember_quant::quantize_dynamic(model, &ember_quant::DynamicConfig::default()).unwrap();
    let standard =
        quantized_to_onnx(&q, [1, 1, 28, 28], classify, &ExportOptions::default()).unwrap();
    let types = standard.op_types();
    assert_eq!(
        types
            .iter()
            .filter(|t| **t == "DynamicQuantizeLinear")
            .count(),
        3
    );
    // tract's DequantizeLinear refuses a computed scale: Cast, Sub and Mul instead.
    let options = ExportOptions {
        dequantize: DequantizeForm::CastAndScale,
    };
    let onnx = quantized_to_onnx(&q, [1, 1, 28, 28], classify, &options).unwrap();
    agree("dynamic", &tract_outputs(&onnx, &test), &q, &test, &float);
}

#[test]
fn a_structurally_pruned_mlp_exports_at_its_new_widths() {
    use ember_prune::{StructuredConfig, UnitCriterion, select_units, shrink};
    let _seeded = ember_tensor::testing::seeded_lock();
    let device = Device::flex();
    device.seed(17);
    let config = MlpConfig::lenet_300_100(784, 10);
    let dense = config.init(&device).unwrap();
    let groups = config.unit_groups("");
    let cut = StructuredConfig::new(UnitCriterion::L2, 0.5);
    let kept = select_units(&dense, &groups, &cut).unwrap();
    let narrow = config.with_kept("", &kept);
    let small = shrink(&dense, &groups, &kept, narrow.init(&device).unwrap()).unwrap();
    let onnx = to_onnx(&small, [1, 1, 28, 28], classify, &ExportOptions::default()).unwrap();
    let dims = |name: &str| {
        let t = onnx
            .proto()
            .graph
            .initializer
            .iter()
            .find(|t| t.name == name);
        t.unwrap().dims.clone()
    };
    assert_eq!(dims("layers.0.weight"), [784, 150]);
    assert_eq!(dims("layers.1.weight"), [150, 50]);
    let images = Images::new(3, [1, 28, 28], 12);
    let diff = max_abs_diff(
        &tract_outputs(&onnx, &images),
        &ember_outputs(&small, &images, &device),
    );
    assert!(diff < 1e-4, "shrunk: tract differs by {diff}");
}
