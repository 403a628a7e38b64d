//! `cargo xtask repro quant`: post-training quantization of LeNet-300-100 and LeNet-5 on MNIST
//! against PyTorch's `torch.ao.quantization` figures measured on this machine: dynamic int8 for
//! the MLP, static int8 for the CNN, int4 weight-only and fp16 / bf16 for both, every observer
//! as an ablation, per-layer sensitivity, and sizes on disk.

use std::path::Path;
use std::time::Instant;

use burn::tensor::Device;
use ember_observe::{CalibrationConfig, ObserverConfig, ObserverKind, RangeMethod};
use ember_quant::{
    DynamicConfig, FloatType, QType, QuantLayers, Quantized, StaticConfig, WeightConfig, cast,
    load_quantized, prepare_qat, quantize_dynamic, quantize_static, quantize_weights,
    save_quantized, sensitivity,
};
use ember_tensor::LrSchedule;
use ember_tensor::stats::read_f32;
use ember_zoo::{Classifier, Dataset, LabeledData, LeNet5Config, MlpConfig, TrainConfig, train};
use serde::Serialize;

use super::{CommonArgs, EVAL_BATCH, Report, test_accuracy as accuracy, verdict};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    common: CommonArgs,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Training epochs of the float models (the baseline's 10).
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    /// Calibration batches of 64 training images (PyTorch's tutorials use about 2000 images).
    #[arg(long, default_value_t = 32)]
    calibration_batches: usize,
    /// Group size of the int4 weight-only rows.
    #[arg(long, default_value_t = 32)]
    int4_group: usize,
    /// Epochs of quantization-aware fine-tuning (Adam at a constant 1e-4) in the QAT row.
    #[arg(long, default_value_t = 2)]
    qat_epochs: usize,
}

const PYTORCH_MLP: (f64, f64) = (98.29, 98.29);
const PYTORCH_MLP_RATIO: f64 = 3.92;
const PYTORCH_CNN: (f64, f64) = (99.19, 99.22);
const PYTORCH_CNN_MINMAX: f64 = 99.20;
const TARGET_DROP_PP: f64 = 0.1;
const TARGET_MLP_RATIO: f64 = 3.9;

#[derive(Serialize)]
struct Resolved<'a> {
    common: &'a CommonArgs,
    data_dir: String,
    training: &'a TrainConfig,
    dynamic: &'a DynamicConfig,
    static_int8: &'a StaticConfig,
    int4: &'a WeightConfig,
    int4_channel: &'a StaticConfig,
    qat_training: &'a TrainConfig,
}

/// One row of a results table.
struct Row {
    method: String,
    accuracy: Option<f64>,
    /// Seconds to evaluate the test set.
    seconds: Option<f64>,
    /// For a model on the integer kernels: the same evaluation on the float path (dequantized
    /// weights, fake-quantized inputs) and the share of test images both predict alike, in %.
    float_path: Option<(f64, f64)>,
    bytes: Option<u64>,
    note: String,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let common = &args.common;
    let device = common.backend.device()?;
    let (data, data_dir) = common.load_data()?;
    let out = common.out_dir("quant");
    std::fs::create_dir_all(&out)?;
    let (rows, cols) = (data.train.rows, data.train.cols);
    let training = TrainConfig {
        epochs: if common.quick { 1 } else { args.epochs },
        seed: args.seed,
        ..TrainConfig::default()
    };
    let calibration = CalibrationConfig {
        batch_size: 64,
        max_batches: Some(if common.quick {
            4
        } else {
            args.calibration_batches
        }),
        progress: false,
    };
    let dynamic = DynamicConfig::default();
    let static_int8 = StaticConfig {
        calibration,
        ..StaticConfig::default()
    };
    let int4 = WeightConfig::int4_per_group(args.int4_group);
    let int4_channel = StaticConfig {
        weights: WeightConfig {
            qtype: QType::Int4,
            ..WeightConfig::int8_per_channel()
        },
        observer: ObserverConfig::moving_average(),
        ..static_int8.clone()
    };
    let qat_training = TrainConfig {
        epochs: if common.quick { 1 } else { args.qat_epochs },
        learning_rate: 1e-4,
        schedule: LrSchedule::Constant,
        ..training.clone()
    };

    eprintln!("quant: training LeNet-300-100, {} epochs", training.epochs);
    device.seed(args.seed);
    let mlp = MlpConfig::lenet_300_100(rows * cols, data.classes).init(&device)?;
    let (mlp, _) = train(mlp, &data.train, &training, &device)?;
    eprintln!("quant: training LeNet-5, {} epochs", training.epochs);
    device.seed(args.seed);
    let cnn = LeNet5Config::new(1, [rows, cols], data.classes).init(&device)?;
    let (cnn, _) = train(cnn, &data.train, &training, &device)?;

    let mut report = Report::new("Post-training quantization on MNIST");
    let files = out.join("models");
    std::fs::create_dir_all(&files)?;
    let skeleton_mlp = || MlpConfig::lenet_300_100(rows * cols, data.classes).init(&device);
    let skeleton_cnn = || LeNet5Config::new(1, [rows, cols], data.classes).init(&device);

    // LeNet-300-100.
    let mut bench = Bench {
        data: &data,
        device: &device,
        dir: &files,
    };
    let mlp_float = bench.float_row("mlp", &mlp, &skeleton_mlp()?)?;
    let mut mlp_rows = vec![mlp_float.row];
    eprintln!("quant: LeNet-300-100 dynamic int8");
    let q = quantize_dynamic(mlp.clone(), &dynamic)?;
    let mlp_dynamic = bench.quantized_row(
        "mlp_dynamic_int8",
        "dynamic int8 (per-tensor weights, uint8 activations per batch)",
        &q,
        skeleton_mlp()?,
    )?;
    mlp_rows.push(mlp_dynamic);
    let q = quantize_static(mlp.clone(), &static_int8, &data.train, &device)?;
    mlp_rows.push(bench.quantized_row(
        "mlp_static_int8",
        "static int8 (per-channel weights, histogram MSE activations)",
        &q,
        skeleton_mlp()?,
    )?);
    let q = quantize_weights(mlp.clone(), &int4)?;
    mlp_rows.push(bench.quantized_row(
        "mlp_int4_weights",
        &format!("int4 weight-only, groups of {}", args.int4_group),
        &q,
        skeleton_mlp()?,
    )?);
    for to in [FloatType::F16, FloatType::BF16] {
        mlp_rows.push(bench.cast_row("mlp", &mlp, to, skeleton_mlp()?)?);
    }
    // int4 per output channel, without groups: post-training against quantization-aware
    // fine-tuning of the same scheme from the trained model.
    eprintln!("quant: LeNet-300-100 int4 per channel, post-training and QAT");
    let q = quantize_static(mlp.clone(), &int4_channel, &data.train, &device)?;
    let mlp_int4_ptq = bench.quantized_row(
        "mlp_int4_channel_ptq",
        "static, int4 per-channel weights, post-training",
        &q,
        skeleton_mlp()?,
    )?;
    let qat = prepare_qat(mlp.clone(), &int4_channel)?;
    let (trained, _) = train(qat.model.clone(), &data.train, &qat_training, &device)?;
    let q = qat.convert(trained)?;
    let mlp_int4_qat = bench.quantized_row(
        "mlp_int4_channel_qat",
        &format!(
            "static, int4 per-channel weights, {} epoch(s) of quantization-aware training",
            qat_training.epochs
        ),
        &q,
        skeleton_mlp()?,
    )?;
    report.metric(
        "mlp_int4_channel_ptq_acc",
        mlp_int4_ptq.accuracy.unwrap_or(f64::NAN),
    );
    report.metric(
        "mlp_int4_channel_qat_acc",
        mlp_int4_qat.accuracy.unwrap_or(f64::NAN),
    );
    mlp_rows.push(mlp_int4_ptq);
    mlp_rows.push(mlp_int4_qat);

    // LeNet-5.
    let cnn_float = bench.float_row("cnn", &cnn, &skeleton_cnn()?)?;
    let mut cnn_rows = vec![cnn_float.row];
    eprintln!("quant: LeNet-5 static int8");
    let q = quantize_static(cnn.clone(), &static_int8, &data.train, &device)?;
    let cnn_static = bench.quantized_row(
        "cnn_static_int8",
        "static int8 (per-channel weights, histogram MSE activations)",
        &q,
        skeleton_cnn()?,
    )?;
    cnn_rows.push(cnn_static);
    let minmax = StaticConfig {
        weights: WeightConfig::int8_per_tensor(),
        observer: ObserverConfig::min_max(),
        ..static_int8.clone()
    };
    let q = quantize_static(cnn.clone(), &minmax, &data.train, &device)?;
    cnn_rows.push(bench.quantized_row(
        "cnn_static_int8_minmax",
        "static int8, per-tensor weights, min/max activations (ablation)",
        &q,
        skeleton_cnn()?,
    )?);
    let q = quantize_dynamic(cnn.clone(), &dynamic)?;
    cnn_rows.push(bench.quantized_row("cnn_dynamic_int8", "dynamic int8", &q, skeleton_cnn()?)?);
    let q = quantize_weights(cnn.clone(), &int4)?;
    cnn_rows.push(bench.quantized_row(
        "cnn_int4_weights",
        &format!("int4 weight-only, groups of {}", args.int4_group),
        &q,
        skeleton_cnn()?,
    )?);
    for to in [FloatType::F16, FloatType::BF16] {
        cnn_rows.push(bench.cast_row("cnn", &cnn, to, skeleton_cnn()?)?);
    }

    // Every observer on the CNN's activations, weights per channel.
    eprintln!("quant: LeNet-5 observers");
    let observers = [
        ("min/max", ObserverConfig::min_max()),
        (
            "moving-average min/max (momentum 0.01)",
            ObserverConfig::moving_average(),
        ),
        (
            "histogram, percentile 99.99",
            ObserverConfig::histogram(RangeMethod::Percentile(99.99)),
        ),
        (
            "histogram, least MSE",
            ObserverConfig::histogram(RangeMethod::Mse),
        ),
        (
            "histogram, entropy (KL)",
            ObserverConfig::histogram(RangeMethod::Entropy),
        ),
    ];
    let mut observer_rows = Vec::new();
    for (name, observer) in observers {
        let config = StaticConfig {
            observer,
            ..static_int8.clone()
        };
        let q = quantize_static(cnn.clone(), &config, &data.train, &device)?;
        let acc = accuracy(&q.model, &data, &device)?;
        observer_rows.push((name, observer.kind, acc));
    }

    eprintln!("quant: LeNet-5 sensitivity");
    let layers = sensitivity(
        &cnn,
        &static_int8,
        &data.train,
        &data.test,
        EVAL_BATCH,
        &device,
    )?;

    // Metrics and report.
    let mlp_drop = mlp_float.accuracy - mlp_rows[1].accuracy.unwrap_or(f64::NAN);
    let mlp_ratio = ratio(mlp_float.bytes, mlp_rows[1].bytes);
    let cnn_drop = cnn_float.accuracy - cnn_rows[1].accuracy.unwrap_or(f64::NAN);
    let cnn_ratio = ratio(cnn_float.bytes, cnn_rows[1].bytes);
    report.metric("mlp_float_acc", mlp_float.accuracy);
    report.metric(
        "mlp_int8_dynamic_acc",
        mlp_rows[1].accuracy.unwrap_or(f64::NAN),
    );
    report.metric("mlp_int8_dynamic_acc_drop_pp", round2(mlp_drop));
    report.metric("mlp_int8_size_ratio", round2(mlp_ratio));
    report.metric("cnn_float_acc", cnn_float.accuracy);
    report.metric(
        "cnn_int8_static_acc",
        cnn_rows[1].accuracy.unwrap_or(f64::NAN),
    );
    report.metric("cnn_int8_static_acc_drop_pp", round2(cnn_drop));
    report.metric("cnn_int8_size_ratio", round2(cnn_ratio));
    report.metric(
        "cnn_int8_minmax_acc",
        cnn_rows[2].accuracy.unwrap_or(f64::NAN),
    );
    report.metric("mlp_int4_acc", mlp_rows[3].accuracy.unwrap_or(f64::NAN));
    for (key, row) in [
        ("mlp_float", &mlp_rows[0]),
        ("mlp_int8_dynamic", &mlp_rows[1]),
        ("cnn_float", &cnn_rows[0]),
        ("cnn_int8_static", &cnn_rows[1]),
    ] {
        report.metric(&format!("{key}_seconds"), row.seconds.unwrap_or(f64::NAN));
        if let Some((seconds, same)) = row.float_path {
            report.metric(&format!("{key}_float_path_seconds"), seconds);
            report.metric(&format!("{key}_same_predictions_pct"), same);
        }
    }
    report.metric("cnn_int4_acc", cnn_rows[4].accuracy.unwrap_or(f64::NAN));

    let quick = common.quick;
    report.table(
        "Targets",
        &["what", "ours", "PyTorch", "target", "met"],
        &[
            vec![
                "LeNet-300-100, dynamic int8: accuracy drop".into(),
                format!("{:.2} pp", round2(mlp_drop)),
                format!("{:.2} pp", PYTORCH_MLP.0 - PYTORCH_MLP.1),
                format!("<= {TARGET_DROP_PP} pp"),
                verdict(quick, round2(mlp_drop) <= TARGET_DROP_PP).into(),
            ],
            vec![
                "LeNet-300-100, dynamic int8: size ratio".into(),
                format!("{mlp_ratio:.2}x"),
                format!("{PYTORCH_MLP_RATIO}x"),
                format!(">= {TARGET_MLP_RATIO}x"),
                verdict(quick, mlp_ratio >= TARGET_MLP_RATIO).into(),
            ],
            vec![
                "LeNet-5, static int8: accuracy drop".into(),
                format!("{:.2} pp", round2(cnn_drop)),
                format!("{:.2} pp", PYTORCH_CNN.0 - PYTORCH_CNN.1),
                format!("<= {TARGET_DROP_PP} pp"),
                verdict(quick, round2(cnn_drop) <= TARGET_DROP_PP).into(),
            ],
        ],
    );
    report.section(
        "PyTorch reference",
        &format!(
            "torch.ao.quantization on this machine: LeNet-300-100 {} -> {} % dynamic int8 \
             ({PYTORCH_MLP_RATIO}x smaller); LeNet-5 {} -> {} % static int8 with per-channel \
             weights and histogram activations, {PYTORCH_CNN_MINMAX} % with per-tensor \
             min/max.",
            PYTORCH_MLP.0, PYTORCH_MLP.1, PYTORCH_CNN.0, PYTORCH_CNN.1
        ),
    );
    let header = [
        "method",
        "test accuracy %",
        "change pp",
        "file bytes",
        "size ratio",
        "test-set seconds",
        "float-path seconds",
        "same predictions as float path %",
        "reload",
    ];
    report.table(
        "LeNet-300-100",
        &header,
        &table(&mlp_rows, mlp_float.accuracy, mlp_float.bytes),
    );
    report.table(
        "LeNet-5",
        &header,
        &table(&cnn_rows, cnn_float.accuracy, cnn_float.bytes),
    );
    let rows: Vec<Vec<String>> = observer_rows
        .iter()
        .map(|(name, kind, acc)| {
            vec![
                name.to_string(),
                format!("{kind:?}"),
                format!("{acc:.2}"),
                format!("{:+.2}", acc - cnn_float.accuracy),
            ]
        })
        .collect();
    report.table(
        "LeNet-5 static int8: activation observers (weights per channel)",
        &["observer", "config", "test accuracy %", "change pp"],
        &rows,
    );
    for (_, kind, acc) in &observer_rows {
        let key = match kind {
            ObserverKind::MinMax => "minmax".to_string(),
            ObserverKind::MovingAverage { .. } => "moving_average".into(),
            ObserverKind::Histogram { method } => match method {
                RangeMethod::Percentile(_) => "percentile".into(),
                RangeMethod::Mse => "mse".into(),
                RangeMethod::Entropy => "entropy".into(),
            },
        };
        report.metric(&format!("cnn_observer_{key}_acc"), *acc);
    }
    let rows: Vec<Vec<String>> = layers
        .iter()
        .map(|l| {
            vec![
                l.layer.clone(),
                format!("{:.2}", l.accuracy),
                format!("{:+.2}", l.accuracy_change_pp),
                format!("{:.1}", l.weight_sqnr_db),
                format!("{:.1}", l.output_sqnr_db),
            ]
        })
        .collect();
    report.table(
        "LeNet-5 sensitivity: one layer quantized at a time (static int8)",
        &[
            "layer",
            "test accuracy %",
            "change pp",
            "weight SQNR dB",
            "logit SQNR dB",
        ],
        &rows,
    );
    report.section(
        "How to read this",
        &format!(
            "Sizes are the files `ember_quant::save_quantized` writes (safetensors, format \
             `ember-quant/1`), against the float model in the same format. A layer whose weight \
             and input are both quantized runs on the integer kernels on a host backend (here: \
             `{}` on {}): \"test-set seconds\" is that model, \"float-path seconds\" the same \
             model computing in float with dequantized weights and fake-quantized inputs (what \
             quantized models did before the kernels, and still do on wgpu), and the next column \
             how many test images both paths classify alike. Weight-only and cast models have no \
             integer input and stay float. \"reload\" says whether the model loaded back from \
             its file gives bit-identical logits on the first test batch.",
            ember_quant::Int8Kernel::detect().name(),
            common.backend
        ),
    );
    report.write(
        &out,
        &Resolved {
            common,
            data_dir: data_dir.display().to_string(),
            training: &training,
            dynamic: &dynamic,
            static_int8: &static_int8,
            int4: &int4,
            int4_channel: &int4_channel,
            qat_training: &qat_training,
        },
    )
}

struct FloatRow {
    row: Row,
    accuracy: f64,
    bytes: u64,
}

/// Evaluation, saving and reloading of each variant.
struct Bench<'a> {
    data: &'a Dataset,
    device: &'a Device,
    dir: &'a Path,
}

impl Bench<'_> {
    fn float_row<M: Classifier + QuantLayers>(
        &mut self,
        name: &str,
        model: &M,
        skeleton: &M,
    ) -> anyhow::Result<FloatRow> {
        let (acc, seconds) = self.timed_accuracy(model)?;
        let float = Quantized {
            model: model.clone(),
            weights: Default::default(),
            inputs: Default::default(),
        };
        let path = self.dir.join(format!("{name}_float.safetensors"));
        let bytes = save_quantized(&float, &path)?;
        let reload = self.reloads_identically(&float.model, skeleton.clone(), &path)?;
        Ok(FloatRow {
            row: Row {
                method: "float32".into(),
                accuracy: Some(acc),
                seconds: Some(seconds),
                float_path: None,
                bytes: Some(bytes),
                note: reload,
            },
            accuracy: acc,
            bytes,
        })
    }

    fn quantized_row<M: Classifier + QuantLayers>(
        &mut self,
        name: &str,
        method: &str,
        q: &Quantized<M>,
        skeleton: M,
    ) -> anyhow::Result<Row> {
        let (acc, seconds) = self.timed_accuracy(&q.model)?;
        let float_path = if q.clone().integer_layers().is_empty() {
            None
        } else {
            let mut float = q.clone();
            float.set_integer_kernel(None);
            let (_, seconds) = self.timed_accuracy(&float.model)?;
            Some((seconds, self.agreement(&q.model, &float.model)?))
        };
        let path = self.dir.join(format!("{name}.safetensors"));
        let bytes = save_quantized(q, &path)?;
        let reload = self.reloads_identically(&q.model, skeleton, &path)?;
        Ok(Row {
            method: method.into(),
            accuracy: Some(acc),
            seconds: Some(seconds),
            float_path,
            bytes: Some(bytes),
            note: reload,
        })
    }

    /// The share of test images, in %, on which `a` and `b` predict the same class.
    fn agreement<M: Classifier>(&self, a: &M, b: &M) -> anyhow::Result<f64> {
        let test = &self.data.test;
        let mut same = 0usize;
        for batch in ember_tensor::train::ordered_batches(test.len(), EVAL_BATCH) {
            let (images, _) = test.batch(&batch, self.device);
            let pa = a.forward(images.clone()).argmax(1);
            let pb = b.forward(images).argmax(1);
            same += pa.equal(pb).int().sum().into_scalar::<i64>() as usize;
        }
        Ok(100.0 * same as f64 / test.len().max(1) as f64)
    }

    fn cast_row<M: Classifier + QuantLayers>(
        &mut self,
        name: &str,
        model: &M,
        to: FloatType,
        skeleton: M,
    ) -> anyhow::Result<Row> {
        let method = format!("{to:?} cast").to_lowercase();
        match cast(model.clone(), to, self.device) {
            Ok(half) => {
                let q = Quantized {
                    model: half,
                    weights: Default::default(),
                    inputs: Default::default(),
                };
                let file = format!("{name}_{}", format!("{to:?}").to_lowercase());
                self.quantized_row(&file, &method, &q, skeleton)
            }
            Err(e) => Ok(Row {
                method,
                accuracy: None,
                seconds: None,
                float_path: None,
                bytes: None,
                note: format!("not on this backend: {e}"),
            }),
        }
    }

    /// Test accuracy and the seconds the evaluation took (device synchronized).
    fn timed_accuracy<M: Classifier>(&self, model: &M) -> anyhow::Result<(f64, f64)> {
        ember_tensor::device::sync(self.device)?;
        let start = Instant::now();
        let acc = accuracy(model, self.data, self.device)?;
        ember_tensor::device::sync(self.device)?;
        Ok((acc, start.elapsed().as_secs_f64()))
    }

    fn reloads_identically<M: Classifier + QuantLayers>(
        &self,
        model: &M,
        skeleton: M,
        path: &Path,
    ) -> anyhow::Result<String> {
        let loaded = load_quantized(skeleton, path, self.device)?;
        let batch: Vec<usize> = (0..self.data.test.len().min(EVAL_BATCH)).collect();
        let (images, _) = self.data.test.batch(&batch, self.device);
        let same =
            read_f32(model.forward(images.clone()))? == read_f32(loaded.model.forward(images))?;
        Ok(if same { "identical" } else { "DIFFERS" }.into())
    }
}

fn table(rows: &[Row], float_acc: f64, float_bytes: u64) -> Vec<Vec<String>> {
    rows.iter()
        .map(|r| {
            vec![
                r.method.clone(),
                r.accuracy.map_or("-".into(), |a| format!("{a:.2}")),
                r.accuracy
                    .map_or("-".into(), |a| format!("{:+.2}", a - float_acc)),
                r.bytes.map_or("-".into(), |b| b.to_string()),
                r.bytes.map_or("-".into(), |b| {
                    format!("{:.2}x", float_bytes as f64 / b as f64)
                }),
                r.seconds.map_or("-".into(), |s| format!("{s:.2}")),
                r.float_path.map_or("-".into(), |(s, _)| format!("{s:.2}")),
                r.float_path
                    .map_or("-".into(), |(_, same)| format!("{same:.2}")),
                r.note.clone(),
            ]
        })
        .collect()
}

fn ratio(float_bytes: u64, bytes: Option<u64>) -> f64 {
    bytes.map_or(f64::NAN, |b| float_bytes as f64 / b as f64)
}

/// Percentage points at the resolution of one test image in 10 000, without `-0.00`.
fn round2(pp: f64) -> f64 {
    let r = (pp * 100.0).round() / 100.0;
    if r == 0.0 { 0.0 } else { r }
}
