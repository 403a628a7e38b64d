//! `cargo xtask repro export`: LeNet-300-100 and LeNet-5, in float, static int8 and 90 %
//! pruned form, exported to ONNX by `ember-export` and re-run on the MNIST test set by
//! runtimes no one here wrote: tract (always; it is a dependency) and ONNX Runtime (when the
//! `onnxruntime` Python package is installed). It reports the share of test images each
//! runtime classifies as Ember does, the files' sizes, and the time each takes for the test
//! set beside Ember's.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use burn::tensor::{Device, Tensor};
use ember_export::{DequantizeForm, ExportOptions, OnnxModel, quantized_to_onnx, to_onnx};
use ember_observe::CalibrationConfig;
use ember_prune::{PruneConfig, prune};
use ember_quant::{QuantLayers, StaticConfig, quantize_static};
use ember_tensor::LrSchedule;
use ember_zoo::{
    Classifier, Dataset, LabeledData, LeNet5Config, MlpConfig, ModelConfig, TrainConfig, train,
};
use serde::Serialize;
use tract_onnx::prelude::{DatumExt, Framework, InferenceModelExt, IntoTensor, tvec};

use super::trained::{Recipe, trained};
use super::{Claim, CommonArgs, EVAL_BATCH, Report};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    common: CommonArgs,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Training epochs of the float models (the baseline's 10).
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    /// Calibration batches of 64 training images for static int8.
    #[arg(long, default_value_t = 32)]
    calibration_batches: usize,
    /// Sparsity of the pruned models (global magnitude, masks kept through fine-tuning).
    #[arg(long, default_value_t = 0.9)]
    sparsity: f64,
    /// Fine-tuning epochs after pruning (Adam at a constant 1e-4).
    #[arg(long, default_value_t = 1)]
    finetune_epochs: usize,
    /// The Python interpreter that may have `onnxruntime`.
    #[arg(long, default_value = "python3")]
    python: String,
}

/// The share of test images an exported model must classify as Ember does.
const TARGET_AGREEMENT_PCT: f64 = 99.9;
/// An int8 file against the float one: the weights take a quarter, the biases, scales and the
/// graph itself stay (LeNet-5's 236 biases and channel scales weigh against its 61k
/// weights), as in the `ember-quant/2` files (3.7-4x).
const TARGET_SIZE_RATIO: f64 = 3.7;

#[derive(Serialize)]
struct Setup {
    training: TrainConfig,
    static_int8: StaticConfig,
    prune: PruneConfig,
    finetune: TrainConfig,
}

/// One exported model: a row of the results table.
struct Row {
    model: &'static str,
    form: &'static str,
    ember_accuracy: f64,
    ember_seconds: f64,
    tract: RuntimeRun,
    onnx_runtime: Option<RuntimeRun>,
    /// Bytes of the deployable file (QDQ with per-axis scales for the quantized models).
    bytes: u64,
    nodes: usize,
}

struct RuntimeRun {
    accuracy: f64,
    /// Share of test images classified as Ember does, in %.
    agreement: f64,
    seconds: f64,
}

impl Row {
    fn key(&self) -> String {
        format!("{}_{}", self.model, self.form)
    }
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let common = &args.common;
    let device = common.backend.device()?;
    let (data, data_dir) = common.load_data()?;
    let out = common.out_dir("export");
    let files = out.join("models");
    std::fs::create_dir_all(&files)?;
    let setup = setup(args);
    let onnx_runtime = OnnxRuntime::detect(&args.python, &files, &data)?;
    let (rows, cols) = (data.train.rows, data.train.cols);
    let mut bench = Bench {
        data: &data,
        device: &device,
        dir: &files,
        onnx_runtime: onnx_runtime.as_ref(),
        shape: [1, 1, rows, cols],
    };

    let dense = |config: ModelConfig| {
        let recipe = Recipe::new(&config, &setup.training, &data, common);
        trained(&recipe, &data, common, None, &device)
    };
    eprintln!("export: LeNet-300-100");
    let mlp = dense(ModelConfig::Mlp(MlpConfig::lenet_300_100(
        rows * cols,
        data.classes,
    )))?
    .mlp()?;
    let mut results = bench.variants("lenet_300_100", mlp, &setup)?;
    eprintln!("export: LeNet-5");
    let cnn = dense(ModelConfig::LeNet5(LeNet5Config::new(
        1,
        [rows, cols],
        data.classes,
    )))?
    .lenet5()?;
    results.extend(bench.variants("lenet5", cnn, &setup)?);

    #[derive(Serialize)]
    struct Resolved<'a> {
        common: &'a CommonArgs,
        data_dir: String,
        onnx_runtime: Option<String>,
        #[serde(flatten)]
        setup: &'a Setup,
    }
    render(args, &results, onnx_runtime.as_ref()).write_on_data(
        common,
        &out,
        &Resolved {
            common,
            data_dir: data_dir.display().to_string(),
            onnx_runtime: onnx_runtime.as_ref().map(|o| o.version.clone()),
            setup: &setup,
        },
    )
}

fn setup(args: &Args) -> Setup {
    let quick = args.common.quick;
    let training = TrainConfig {
        epochs: if quick { 1 } else { args.epochs },
        seed: args.seed,
        ..TrainConfig::default()
    };
    let static_int8 = StaticConfig {
        calibration: CalibrationConfig {
            batch_size: 64,
            max_batches: Some(if quick { 4 } else { args.calibration_batches }),
            progress: false,
        },
        ..StaticConfig::default()
    };
    Setup {
        finetune: TrainConfig {
            epochs: args.finetune_epochs,
            learning_rate: 1e-4,
            schedule: LrSchedule::Constant,
            ..training.clone()
        },
        training,
        static_int8,
        prune: PruneConfig::global_magnitude(args.sparsity),
    }
}

struct Bench<'a> {
    data: &'a Dataset,
    device: &'a Device,
    dir: &'a Path,
    onnx_runtime: Option<&'a OnnxRuntime>,
    shape: [usize; 4],
}

fn classify<M: Classifier>(model: &M, images: Tensor<4>) -> Tensor<2> {
    model.forward(images)
}

impl Bench<'_> {
    /// The float model, its static int8 and its pruned form, each exported and re-run.
    fn variants<M: Classifier + QuantLayers>(
        &mut self,
        name: &'static str,
        model: M,
        setup: &Setup,
    ) -> anyhow::Result<Vec<Row>> {
        let float = ExportOptions::default();
        let mut rows = Vec::new();
        let onnx = to_onnx(&model, self.shape, classify, &float)?;
        rows.push(self.row(name, "float", &model, &onnx, &onnx)?);

        let q = quantize_static(
            model.clone(),
            &setup.static_int8,
            &self.data.train,
            self.device,
        )?;
        // The deployable file has per-axis scales; tract's DequantizeLinear reads one scale,
        // so it runs the same integers through Cast and Mul.
        let deployable = quantized_to_onnx(&q, self.shape, classify, &float)?;
        let for_tract = ExportOptions {
            dequantize: DequantizeForm::CastAndScale,
        };
        let tract_form = quantized_to_onnx(&q, self.shape, classify, &for_tract)?;
        rows.push(self.row(name, "static_int8", &q.model, &tract_form, &deployable)?);

        let (pruned, _) = prune(model, &setup.prune)?;
        let (pruned, _) = train(pruned, &self.data.train, &setup.finetune, self.device)?;
        let onnx = to_onnx(&pruned, self.shape, classify, &float)?;
        rows.push(self.row(name, "pruned", &pruned, &onnx, &onnx)?);
        Ok(rows)
    }

    /// Ember's predictions and time on the test set, then tract's on `for_tract` and ONNX
    /// Runtime's on `deployable` (written to a file).
    fn row<M: Classifier>(
        &mut self,
        model_name: &'static str,
        form: &'static str,
        model: &M,
        for_tract: &OnnxModel,
        deployable: &OnnxModel,
    ) -> anyhow::Result<Row> {
        eprintln!("export: {model_name} {form}");
        let labels = &self.data.test.labels;
        let (ember, ember_seconds) = self.ember_predictions(model)?;
        let path = self.dir.join(format!("{model_name}_{form}.onnx"));
        let bytes = deployable.save(&path)?;
        let (tract, tract_seconds) = self.tract_predictions(for_tract)?;
        let tract = RuntimeRun {
            accuracy: accuracy(&tract, labels),
            agreement: agreement(&tract, &ember),
            seconds: tract_seconds,
        };
        let onnx_runtime = match self.onnx_runtime {
            None => None,
            Some(ort) => {
                let (predictions, seconds) = ort.predictions(&path, self.data)?;
                Some(RuntimeRun {
                    accuracy: accuracy(&predictions, labels),
                    agreement: agreement(&predictions, &ember),
                    seconds,
                })
            }
        };
        Ok(Row {
            model: model_name,
            form,
            ember_accuracy: accuracy(&ember, labels),
            ember_seconds,
            tract,
            onnx_runtime,
            bytes,
            nodes: deployable.op_types().len(),
        })
    }

    fn ember_predictions<M: Classifier>(&self, model: &M) -> anyhow::Result<(Vec<u8>, f64)> {
        let test = &self.data.test;
        let batches = ember_tensor::train::ordered_batches(test.len(), EVAL_BATCH);
        // One batch to warm up, as the runtimes get.
        let (images, _) = test.batch(&batches[0], self.device);
        let _ = model.forward(images).argmax(1).into_data();
        let started = Instant::now();
        let mut predictions = Vec::with_capacity(test.len());
        for batch in &batches {
            let (images, _) = test.batch(batch, self.device);
            let classes = model.forward(images).argmax(1).into_data();
            predictions.extend(classes.iter::<i64>().map(|c| c as u8));
        }
        Ok((predictions, started.elapsed().as_secs_f64()))
    }

    /// tract's predictions on the test set in batches of [`EVAL_BATCH`], one optimized plan
    /// per batch size, and the seconds the batches took (plans built and warmed up before).
    fn tract_predictions(&self, onnx: &OnnxModel) -> anyhow::Result<(Vec<u8>, f64)> {
        let bytes = onnx.to_bytes()?;
        let test = &self.data.test;
        let [_, c, h, w] = self.shape;
        let batches = ember_tensor::train::ordered_batches(test.len(), EVAL_BATCH);
        let mut plans = HashMap::new();
        for batch in &batches {
            let n = batch.len();
            if plans.contains_key(&n) {
                continue;
            }
            let plan = tract_onnx::onnx()
                .model_for_read(&mut bytes.as_slice())?
                .with_input_fact(0, f32::fact([n, c, h, w]).into())?
                .into_optimized()?
                .into_runnable()?;
            plans.insert(n, plan);
        }
        let inputs: Vec<tract_onnx::prelude::Tensor> = batches
            .iter()
            .map(|batch| {
                let (images, _) = test.batch(batch, &Device::flex());
                let values = images.into_data().as_slice::<f32>().map(<[f32]>::to_vec);
                let values = values.map_err(|e| anyhow::anyhow!("{e:?}"))?;
                let array = tract_onnx::prelude::tract_ndarray::Array4::from_shape_vec(
                    (batch.len(), c, h, w),
                    values,
                )?;
                Ok(array.into_tensor())
            })
            .collect::<anyhow::Result<_>>()?;
        let run = |input: &tract_onnx::prelude::Tensor| -> anyhow::Result<Vec<u8>> {
            let plan = &plans[&input.shape()[0]];
            let outputs = plan.run(tvec!(input.clone().into()))?;
            let logits = outputs[0].to_array_view::<f32>()?;
            Ok(logits
                .rows()
                .into_iter()
                .map(|row| argmax(row.iter().copied()))
                .collect())
        };
        run(&inputs[0])?;
        let started = Instant::now();
        let mut predictions = Vec::with_capacity(test.len());
        for input in &inputs {
            predictions.extend(run(input)?);
        }
        Ok((predictions, started.elapsed().as_secs_f64()))
    }
}

fn argmax(values: impl Iterator<Item = f32>) -> u8 {
    let mut best = (0, f32::NEG_INFINITY);
    for (i, v) in values.enumerate() {
        if v > best.1 {
            best = (i, v);
        }
    }
    best.0 as u8
}

fn accuracy(predictions: &[u8], labels: &[u8]) -> f64 {
    agreement(predictions, labels)
}

/// The share, in %, of positions where `a` and `b` hold the same class.
fn agreement(a: &[u8], b: &[u8]) -> f64 {
    let same = a.iter().zip(b).filter(|(x, y)| x == y).count();
    100.0 * same as f64 / a.len().max(1) as f64
}

/// ONNX Runtime through its Python package: the test images written once as raw f32, each
/// model run by a small script that writes its predictions back.
struct OnnxRuntime {
    python: String,
    version: String,
    script: PathBuf,
    images: PathBuf,
}

const ORT_SCRIPT: &str = r#"
# Run an ONNX model on ONNX Runtime's CPU provider over raw f32 images in batches; write the
# predicted classes (one byte each) and print the seconds the batches took, after one warm-up.
import json, sys, time
import numpy as np
import onnxruntime as ort

model, images, n, c, h, w, batch, out = sys.argv[1:9]
n, c, h, w, batch = int(n), int(c), int(h), int(w), int(batch)
x = np.fromfile(images, dtype=np.float32).reshape(n, c, h, w)
session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
session.run(None, {"input": x[:batch]})
started = time.perf_counter()
predictions = [session.run(None, {"input": x[i:i + batch]})[0].argmax(1) for i in range(0, n, batch)]
seconds = time.perf_counter() - started
np.concatenate(predictions).astype(np.uint8).tofile(out)
print(json.dumps({"seconds": seconds}))
"#;

impl OnnxRuntime {
    /// ONNX Runtime if `python` imports it, with the test images written under `dir`.
    fn detect(python: &str, dir: &Path, data: &Dataset) -> anyhow::Result<Option<Self>> {
        let probe = Command::new(python)
            .args([
                "-c",
                "import onnxruntime, numpy; print(onnxruntime.__version__)",
            ])
            .output();
        let version = match probe {
            Ok(out) if out.status.success() => {
                String::from_utf8_lossy(&out.stdout).trim().to_string()
            }
            _ => {
                eprintln!(
                    "export: ONNX Runtime not found ({python} -c 'import onnxruntime' failed; \
                     pip install onnxruntime numpy): tract only"
                );
                return Ok(None);
            }
        };
        let script = dir.join("run_onnxruntime.py");
        std::fs::write(&script, ORT_SCRIPT)?;
        let images = dir.join("test_images.f32");
        let test = &data.test;
        let all: Vec<usize> = (0..test.len()).collect();
        let (x, _) = test.batch(&all, &Device::flex());
        let values = x.into_data();
        let values = values
            .as_slice::<f32>()
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(&images, raw)?;
        Ok(Some(Self {
            python: python.into(),
            version,
            script,
            images,
        }))
    }

    fn predictions(&self, model: &Path, data: &Dataset) -> anyhow::Result<(Vec<u8>, f64)> {
        let out = model.with_extension("ort-predictions");
        let test = &data.test;
        let output = Command::new(&self.python)
            .arg(&self.script)
            .arg(model)
            .arg(&self.images)
            .args([test.len(), 1, test.rows, test.cols, EVAL_BATCH].map(|v| v.to_string()))
            .arg(&out)
            .output()
            .with_context(|| format!("cannot run {}", self.python))?;
        if !output.status.success() {
            bail!(
                "ONNX Runtime failed on {}: {}",
                model.display(),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        #[derive(serde::Deserialize)]
        struct Timing {
            seconds: f64,
        }
        let timing: Timing = serde_json::from_slice(&output.stdout)?;
        let predictions = std::fs::read(&out)?;
        if predictions.len() != test.len() {
            bail!("ONNX Runtime wrote {} predictions", predictions.len());
        }
        Ok((predictions, timing.seconds))
    }
}

fn render(args: &Args, rows: &[Row], onnx_runtime: Option<&OnnxRuntime>) -> Report {
    let quick = args.common.quick;
    let mut report = Report::new("Export to ONNX, re-run by tract and ONNX Runtime");
    report.section(
        "What this runs",
        &format!(
            "LeNet-300-100 and LeNet-5 trained on MNIST, each in float, static int8 (per-channel \
             weights, histogram-MSE uint8 inputs) and {:.0} % pruned (global magnitude, {} \
             epoch(s) of fine-tuning with the masks kept), exported by `ember-export` from \
             burn's captured graph (ONNX opset {}). tract {} re-runs every file; quantized \
             models run in tract as the same integers through Cast and Mul, since tract's \
             DequantizeLinear takes one scale. ONNX Runtime{} runs the deployable files \
             (QDQ with per-axis weight scales). Times are for the whole test set in batches \
             of {EVAL_BATCH} on the same CPU, after one warm-up batch each.{}",
            args.sparsity * 100.0,
            args.finetune_epochs,
            ember_export::OPSET,
            "0.22.5",
            onnx_runtime
                .map(|o| format!(" {}", o.version))
                .unwrap_or_else(|| " (not installed here: `pip install onnxruntime numpy`)".into()),
            if quick {
                " Quick run: a subset, one training epoch; not the published figures."
            } else {
                ""
            }
        ),
    );
    let header = [
        "model",
        "form",
        "nodes",
        "file bytes",
        "Ember acc %",
        "tract acc %",
        "tract agrees %",
        "ONNX Runtime agrees %",
        "Ember s",
        "tract s",
        "ONNX Runtime s",
    ];
    let dash = || "-".to_string();
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.model.to_string(),
                r.form.to_string(),
                r.nodes.to_string(),
                r.bytes.to_string(),
                format!("{:.2}", r.ember_accuracy),
                format!("{:.2}", r.tract.accuracy),
                format!("{:.2}", r.tract.agreement),
                r.onnx_runtime
                    .as_ref()
                    .map_or_else(dash, |o| format!("{:.2}", o.agreement)),
                format!("{:.3}", r.ember_seconds),
                format!("{:.3}", r.tract.seconds),
                r.onnx_runtime
                    .as_ref()
                    .map_or_else(dash, |o| format!("{:.3}", o.seconds)),
            ]
        })
        .collect();
    report.table("Exported models on the MNIST test set", &header, &table);

    let mut claims = Vec::new();
    let mut worst = f64::INFINITY;
    for r in rows {
        let key = r.key();
        report.metric(&format!("{key}_tract_agreement_pct"), r.tract.agreement);
        report.metric(&format!("{key}_ember_accuracy"), r.ember_accuracy);
        report.metric(&format!("{key}_onnx_bytes"), r.bytes as f64);
        report.metric(&format!("{key}_ember_seconds"), r.ember_seconds);
        report.metric(&format!("{key}_tract_seconds"), r.tract.seconds);
        worst = worst.min(r.tract.agreement);
        claims.push(Claim::new(
            quick,
            format!("{} {}: tract predicts as Ember", r.model, r.form),
            format!("{:.2} %", r.tract.agreement),
            format!(">= {TARGET_AGREEMENT_PCT} % of test images"),
            r.tract.agreement >= TARGET_AGREEMENT_PCT,
        ));
        if let Some(o) = &r.onnx_runtime {
            report.metric(&format!("{key}_ort_agreement_pct"), o.agreement);
            report.metric(&format!("{key}_ort_seconds"), o.seconds);
            worst = worst.min(o.agreement);
            claims.push(Claim::new(
                quick,
                format!("{} {}: ONNX Runtime predicts as Ember", r.model, r.form),
                format!("{:.2} %", o.agreement),
                format!(">= {TARGET_AGREEMENT_PCT} % of test images"),
                o.agreement >= TARGET_AGREEMENT_PCT,
            ));
        }
    }
    report.metric("export_prediction_agreement", worst);
    for model in ["lenet_300_100", "lenet5"] {
        let bytes = |form: &str| {
            rows.iter()
                .find(|r| r.model == model && r.form == form)
                .map(|r| r.bytes as f64)
        };
        if let (Some(float), Some(int8)) = (bytes("float"), bytes("static_int8")) {
            let ratio = float / int8;
            report.metric(&format!("{model}_onnx_int8_size_ratio"), ratio);
            claims.push(Claim::new(
                quick,
                format!("{model}: float ONNX file over the static int8 one"),
                format!("{ratio:.2}x"),
                format!("about 4x (>= {TARGET_SIZE_RATIO}x)"),
                ratio >= TARGET_SIZE_RATIO,
            ));
        }
    }
    report.claims_table("Claims", claims);
    report.section(
        "Not shown here",
        "An operation with no ONNX translation is refused with its name (`ember-export`'s tests: \
         a cumulative sum is `NumericFloat::CumSum`), and a forward pass that reads tensor \
         values on the host is a capture error, not a panic.",
    );
    report
}
