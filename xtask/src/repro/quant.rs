//! `cargo xtask repro quant`: post-training quantization of LeNet-300-100 and LeNet-5 on MNIST
//! against PyTorch's `torch.ao.quantization` figures measured on this machine: dynamic int8 for
//! the MLP, static int8 for the CNN, int4 weight-only and fp16 / bf16 for both, every observer
//! as an ablation, per-layer sensitivity, and sizes on disk.

use std::path::Path;
use std::time::Instant;

use burn::tensor::Device;
use ember_observe::{CalibrationConfig, ObserverConfig, ObserverKind, RangeMethod};
use ember_quant::{
    DynamicConfig, FloatType, LayerSensitivity, QType, QuantLayers, Quantized, StaticConfig,
    WeightConfig, cast, load_quantized, prepare_qat, quantize_dynamic, quantize_static,
    quantize_weights, save_quantized, sensitivity,
};
use ember_tensor::LrSchedule;
use ember_tensor::stats::read_f32;
use ember_zoo::{
    Classifier, Dataset, LabeledData, LeNet5Config, MlpConfig, ModelConfig, TrainConfig, train,
};
use serde::Serialize;

use super::trained::{Recipe, trained};
use super::{Claim, CommonArgs, EVAL_BATCH, Report, round_pp, test_accuracy as accuracy};

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
    #[serde(flatten)]
    setup: &'a Setup,
}

/// One quantized (or float) model: a row of a results table.
struct Variant {
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

impl Variant {
    fn accuracy(&self) -> f64 {
        self.accuracy.unwrap_or(f64::NAN)
    }

    /// How many times smaller its file is than `float`'s.
    fn size_ratio(&self, float: &Variant) -> f64 {
        match (float.bytes, self.bytes) {
            (Some(f), Some(b)) => f as f64 / b as f64,
            _ => f64::NAN,
        }
    }

    /// Its accuracy minus `float`'s, to one test image.
    fn drop_pp(&self, float: &Variant) -> f64 {
        round_pp(float.accuracy() - self.accuracy())
    }
}

/// The LeNet-300-100 rows.
struct MlpResults {
    float: Variant,
    dynamic: Variant,
    static_int8: Variant,
    int4_weights: Variant,
    casts: Vec<Variant>,
    int4_channel_ptq: Variant,
    int4_channel_qat: Variant,
}

impl MlpResults {
    fn rows(&self) -> Vec<&Variant> {
        let mut rows = vec![
            &self.float,
            &self.dynamic,
            &self.static_int8,
            &self.int4_weights,
        ];
        rows.extend(&self.casts);
        rows.extend([&self.int4_channel_ptq, &self.int4_channel_qat]);
        rows
    }
}

/// The LeNet-5 rows.
struct CnnResults {
    float: Variant,
    static_int8: Variant,
    static_minmax: Variant,
    dynamic: Variant,
    int4_weights: Variant,
    casts: Vec<Variant>,
}

impl CnnResults {
    fn rows(&self) -> Vec<&Variant> {
        let mut rows = vec![
            &self.float,
            &self.static_int8,
            &self.static_minmax,
            &self.dynamic,
            &self.int4_weights,
        ];
        rows.extend(&self.casts);
        rows
    }
}

/// Everything the experiment measures.
struct Results {
    mlp: MlpResults,
    cnn: CnnResults,
    /// Static int8 LeNet-5 with each activation observer: name, config and accuracy.
    observers: Vec<(&'static str, ObserverKind, f64)>,
    sensitivity: Vec<LayerSensitivity>,
}

/// The experiment's recipes, resolved from the arguments.
#[derive(Serialize)]
struct Setup {
    training: TrainConfig,
    dynamic: DynamicConfig,
    static_int8: StaticConfig,
    int4: WeightConfig,
    int4_channel: StaticConfig,
    qat_training: TrainConfig,
}

impl Setup {
    fn new(args: &Args) -> Self {
        let quick = args.common.quick;
        let training = TrainConfig {
            epochs: if quick { 1 } else { args.epochs },
            seed: args.seed,
            ..TrainConfig::default()
        };
        let calibration = CalibrationConfig {
            batch_size: 64,
            max_batches: Some(if quick { 4 } else { args.calibration_batches }),
            progress: false,
        };
        let static_int8 = StaticConfig {
            calibration,
            ..StaticConfig::default()
        };
        Self {
            dynamic: DynamicConfig::default(),
            int4: WeightConfig::int4_per_group(args.int4_group),
            int4_channel: StaticConfig {
                weights: WeightConfig {
                    qtype: QType::Int4,
                    ..WeightConfig::int8_per_channel()
                },
                observer: ObserverConfig::moving_average(),
                ..static_int8.clone()
            },
            qat_training: TrainConfig {
                epochs: if quick { 1 } else { args.qat_epochs },
                learning_rate: 1e-4,
                schedule: LrSchedule::Constant,
                ..training.clone()
            },
            static_int8,
            training,
        }
    }
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let common = &args.common;
    let device = common.backend.device()?;
    let (data, data_dir) = common.load_data()?;
    let out = common.out_dir("quant");
    let files = out.join("models");
    std::fs::create_dir_all(&files)?;
    let setup = Setup::new(args);
    let results = compute(args, &setup, &data, &device, &files)?;
    render(args, &results).write_on_data(
        common,
        &out,
        &Resolved {
            common,
            data_dir: data_dir.display().to_string(),
            setup: &setup,
        },
    )
}

fn compute(
    args: &Args,
    setup: &Setup,
    data: &Dataset,
    device: &Device,
    files: &Path,
) -> anyhow::Result<Results> {
    let common = &args.common;
    let (rows, cols) = (data.train.rows, data.train.cols);
    let mlp_config = MlpConfig::lenet_300_100(rows * cols, data.classes);
    let cnn_config = LeNet5Config::new(1, [rows, cols], data.classes);
    let dense = |config: ModelConfig| {
        let recipe = Recipe::new(&config, &setup.training, data, common);
        trained(&recipe, data, common, None, device)
    };
    eprintln!("quant: LeNet-300-100, {} epochs", setup.training.epochs);
    let mlp = dense(ModelConfig::Mlp(mlp_config.clone()))?.mlp()?;
    eprintln!("quant: LeNet-5, {} epochs", setup.training.epochs);
    let cnn = dense(ModelConfig::LeNet5(cnn_config.clone()))?.lenet5()?;
    let skeleton_mlp = || mlp_config.init(device);
    let skeleton_cnn = || cnn_config.init(device);
    let mut bench = Bench {
        data,
        device,
        dir: files,
    };
    let (static_int8, int4_channel) = (&setup.static_int8, &setup.int4_channel);
    let int4_method = format!("int4 weight-only, groups of {}", args.int4_group);

    eprintln!("quant: LeNet-300-100 dynamic and static int8, int4, casts");
    let mlp_results = MlpResults {
        float: bench.float_row("mlp", &mlp, &skeleton_mlp()?)?,
        dynamic: bench.quantized_row(
            "mlp_dynamic_int8",
            "dynamic int8 (per-tensor weights, uint8 activations per batch)",
            &quantize_dynamic(mlp.clone(), &setup.dynamic)?,
            skeleton_mlp()?,
        )?,
        static_int8: bench.quantized_row(
            "mlp_static_int8",
            "static int8 (per-channel weights, histogram MSE activations)",
            &quantize_static(mlp.clone(), static_int8, &data.train, device)?,
            skeleton_mlp()?,
        )?,
        int4_weights: bench.quantized_row(
            "mlp_int4_weights",
            &int4_method,
            &quantize_weights(mlp.clone(), &setup.int4)?,
            skeleton_mlp()?,
        )?,
        casts: [FloatType::F16, FloatType::BF16]
            .into_iter()
            .map(|to| bench.cast_row("mlp", &mlp, to, skeleton_mlp()?))
            .collect::<anyhow::Result<_>>()?,
        // int4 per output channel, without groups: post-training against quantization-aware
        // fine-tuning of the same scheme from the trained model.
        int4_channel_ptq: bench.quantized_row(
            "mlp_int4_channel_ptq",
            "static, int4 per-channel weights, post-training",
            &quantize_static(mlp.clone(), int4_channel, &data.train, device)?,
            skeleton_mlp()?,
        )?,
        int4_channel_qat: {
            eprintln!("quant: LeNet-300-100 int4 per channel by QAT");
            let qat = prepare_qat(mlp.clone(), int4_channel)?;
            let (tuned, _) = train(qat.model.clone(), &data.train, &setup.qat_training, device)?;
            bench.quantized_row(
                "mlp_int4_channel_qat",
                &format!(
                    "static, int4 per-channel weights, {} epoch(s) of quantization-aware training",
                    setup.qat_training.epochs
                ),
                &qat.convert(tuned)?,
                skeleton_mlp()?,
            )?
        },
    };

    eprintln!("quant: LeNet-5 static and dynamic int8, int4, casts");
    let minmax = StaticConfig {
        weights: WeightConfig::int8_per_tensor(),
        observer: ObserverConfig::min_max(),
        ..static_int8.clone()
    };
    let cnn_results = CnnResults {
        float: bench.float_row("cnn", &cnn, &skeleton_cnn()?)?,
        static_int8: bench.quantized_row(
            "cnn_static_int8",
            "static int8 (per-channel weights, histogram MSE activations)",
            &quantize_static(cnn.clone(), static_int8, &data.train, device)?,
            skeleton_cnn()?,
        )?,
        static_minmax: bench.quantized_row(
            "cnn_static_int8_minmax",
            "static int8, per-tensor weights, min/max activations (ablation)",
            &quantize_static(cnn.clone(), &minmax, &data.train, device)?,
            skeleton_cnn()?,
        )?,
        dynamic: bench.quantized_row(
            "cnn_dynamic_int8",
            "dynamic int8",
            &quantize_dynamic(cnn.clone(), &setup.dynamic)?,
            skeleton_cnn()?,
        )?,
        int4_weights: bench.quantized_row(
            "cnn_int4_weights",
            &int4_method,
            &quantize_weights(cnn.clone(), &setup.int4)?,
            skeleton_cnn()?,
        )?,
        casts: [FloatType::F16, FloatType::BF16]
            .into_iter()
            .map(|to| bench.cast_row("cnn", &cnn, to, skeleton_cnn()?))
            .collect::<anyhow::Result<_>>()?,
    };

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
    ]
    .into_iter()
    .map(|(name, observer)| {
        let config = StaticConfig {
            observer,
            ..static_int8.clone()
        };
        let q = quantize_static(cnn.clone(), &config, &data.train, device)?;
        Ok((name, observer.kind, accuracy(&q.model, data, device)?))
    })
    .collect::<anyhow::Result<_>>()?;

    eprintln!("quant: LeNet-5 sensitivity");
    let sensitivity = sensitivity(
        &cnn,
        static_int8,
        &data.train,
        &data.test,
        EVAL_BATCH,
        device,
    )?;
    Ok(Results {
        mlp: mlp_results,
        cnn: cnn_results,
        observers,
        sensitivity,
    })
}

fn render(args: &Args, results: &Results) -> Report {
    let common = &args.common;
    let (mlp, cnn) = (&results.mlp, &results.cnn);
    let mut report = Report::new("Post-training quantization on MNIST");
    let mlp_drop = mlp.dynamic.drop_pp(&mlp.float);
    let mlp_ratio = mlp.dynamic.size_ratio(&mlp.float);
    let cnn_drop = cnn.static_int8.drop_pp(&cnn.float);
    let cnn_ratio = cnn.static_int8.size_ratio(&cnn.float);
    report.metric("mlp_float_acc", mlp.float.accuracy());
    report.metric("mlp_int8_dynamic_acc", mlp.dynamic.accuracy());
    report.metric("mlp_int8_dynamic_acc_drop_pp", mlp_drop);
    report.metric("mlp_int8_size_ratio", round_pp(mlp_ratio));
    report.metric("cnn_float_acc", cnn.float.accuracy());
    report.metric("cnn_int8_static_acc", cnn.static_int8.accuracy());
    report.metric("cnn_int8_static_acc_drop_pp", cnn_drop);
    report.metric("cnn_int8_size_ratio", round_pp(cnn_ratio));
    report.metric("cnn_int8_minmax_acc", cnn.static_minmax.accuracy());
    report.metric("mlp_int4_acc", mlp.int4_weights.accuracy());
    report.metric("cnn_int4_acc", cnn.int4_weights.accuracy());
    report.metric("mlp_int4_channel_ptq_acc", mlp.int4_channel_ptq.accuracy());
    report.metric("mlp_int4_channel_qat_acc", mlp.int4_channel_qat.accuracy());
    for (key, row) in [
        ("mlp_float", &mlp.float),
        ("mlp_int8_dynamic", &mlp.dynamic),
        ("cnn_float", &cnn.float),
        ("cnn_int8_static", &cnn.static_int8),
    ] {
        report.metric(&format!("{key}_seconds"), row.seconds.unwrap_or(f64::NAN));
        if let Some((seconds, same)) = row.float_path {
            report.metric(&format!("{key}_float_path_seconds"), seconds);
            report.metric(&format!("{key}_same_predictions_pct"), same);
        }
    }

    let quick = common.quick;
    report.claims_table(
        "Targets",
        vec![
            Claim::new(
                quick,
                "LeNet-300-100, dynamic int8: accuracy drop",
                format!("{mlp_drop:.2} pp"),
                format!("<= {TARGET_DROP_PP} pp"),
                mlp_drop <= TARGET_DROP_PP,
            )
            .pytorch(format!("{:.2} pp", PYTORCH_MLP.0 - PYTORCH_MLP.1)),
            Claim::new(
                quick,
                "LeNet-300-100, dynamic int8: size ratio",
                format!("{mlp_ratio:.2}x"),
                format!(">= {TARGET_MLP_RATIO}x"),
                mlp_ratio >= TARGET_MLP_RATIO,
            )
            .pytorch(format!("{PYTORCH_MLP_RATIO}x")),
            Claim::new(
                quick,
                "LeNet-5, static int8: accuracy drop",
                format!("{cnn_drop:.2} pp"),
                format!("<= {TARGET_DROP_PP} pp"),
                cnn_drop <= TARGET_DROP_PP,
            )
            .pytorch(format!("{:.2} pp", PYTORCH_CNN.0 - PYTORCH_CNN.1)),
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
    report.table("LeNet-300-100", &header, &table(&mlp.rows(), &mlp.float));
    report.table("LeNet-5", &header, &table(&cnn.rows(), &cnn.float));
    let rows: Vec<Vec<String>> = results
        .observers
        .iter()
        .map(|(name, kind, acc)| {
            vec![
                name.to_string(),
                format!("{kind:?}"),
                format!("{acc:.2}"),
                format!("{:+.2}", acc - cnn.float.accuracy()),
            ]
        })
        .collect();
    report.table(
        "LeNet-5 static int8: activation observers (weights per channel)",
        &["observer", "config", "test accuracy %", "change pp"],
        &rows,
    );
    for (_, kind, acc) in &results.observers {
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
    let rows: Vec<Vec<String>> = results
        .sensitivity
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
             `ember-quant/2`), against the float model in the same format. A layer whose weight \
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
    report
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
    ) -> anyhow::Result<Variant> {
        let (acc, seconds) = self.timed_accuracy(model)?;
        let float = Quantized {
            model: model.clone(),
            weights: Default::default(),
            inputs: Default::default(),
        };
        let path = self.dir.join(format!("{name}_float.safetensors"));
        let bytes = save_quantized(&float, &path)?;
        let reload = self.reloads_identically(&float.model, skeleton.clone(), &path)?;
        Ok(Variant {
            method: "float32".into(),
            accuracy: Some(acc),
            seconds: Some(seconds),
            float_path: None,
            bytes: Some(bytes),
            note: reload,
        })
    }

    fn quantized_row<M: Classifier + QuantLayers>(
        &mut self,
        name: &str,
        method: &str,
        q: &Quantized<M>,
        skeleton: M,
    ) -> anyhow::Result<Variant> {
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
        Ok(Variant {
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
    ) -> anyhow::Result<Variant> {
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
            Err(e) => Ok(Variant {
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

fn table(rows: &[&Variant], float: &Variant) -> Vec<Vec<String>> {
    rows.iter()
        .map(|r| {
            vec![
                r.method.clone(),
                r.accuracy.map_or("-".into(), |a| format!("{a:.2}")),
                r.accuracy
                    .map_or("-".into(), |a| format!("{:+.2}", a - float.accuracy())),
                r.bytes.map_or("-".into(), |b| b.to_string()),
                r.bytes
                    .map_or("-".into(), |_| format!("{:.2}x", r.size_ratio(float))),
                r.seconds.map_or("-".into(), |s| format!("{s:.2}")),
                r.float_path.map_or("-".into(), |(s, _)| format!("{s:.2}")),
                r.float_path
                    .map_or("-".into(), |(_, same)| format!("{same:.2}")),
                r.note.clone(),
            ]
        })
        .collect()
}
