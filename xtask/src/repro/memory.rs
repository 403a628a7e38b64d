//! `cargo xtask repro memory`: what each training-at-scale technique saves, measured on the same
//! model, data and seed. Each configuration trains a fresh LeNet-5 and the zoo's residual
//! network for a fixed number of steps while the binary's counting allocator
//! ([`crate::ALLOCATOR`]) records the peak of the bytes allocated above the level before the
//! run (every buffer flex or ndarray holds is allocated through it); the step time is printed
//! beside it. Then LeNet-5 trains its full recipe in bf16 mixed precision, against the f32
//! baseline's accuracy.

use burn::tensor::Device;
use ember_tensor::{BackendKind, MixedPrecision, TrainReport, param_values, params};
use ember_zoo::{LabeledData, LeNet5Config, Model, ModelConfig, ResNetConfig, TrainConfig, train};
use peakmem_alloc::PeakMemAllocTrait;
use serde::Serialize;

use super::trained::{Recipe, trained};
use super::{Bound, Claim, CommonArgs, Report, Spread, round_pp, test_accuracy};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    common: CommonArgs,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Epochs of the mixed-precision LeNet-5 run (the baseline's recipe).
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    /// Seeds of the mixed-precision accuracy comparison (from `--seed` on).
    #[arg(long, default_value_t = 3)]
    seeds: u64,
    /// Training steps each memory configuration runs.
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// Images per step of the memory runs.
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    /// Backend whose device holds the optimizer in the offload row (default: ndarray when
    /// training on flex, flex otherwise).
    #[arg(long, value_parser = super::parse_backend)]
    offload_to: Option<BackendKind>,
}

/// Mixed precision must land within this many points of f32 (the target).
const TARGET_AMP_DROP_PP: f64 = 0.1;
/// Offloaded Adam must give the on-device weights within this (f32 rounding of two backends).
const TARGET_OFFLOAD_DIFF: f64 = 1e-5;

/// One row of the memory table: a technique, as [`TrainConfig`] options.
struct Technique {
    key: &'static str,
    what: &'static str,
    precision: Option<MixedPrecision>,
    checkpointing: bool,
    offload: bool,
}

fn techniques() -> Vec<Technique> {
    let plain = |key, what| Technique {
        key,
        what,
        precision: None,
        checkpointing: false,
        offload: false,
    };
    vec![
        plain("f32", "f32 (reference)"),
        Technique {
            precision: Some(MixedPrecision::bf16()),
            ..plain("bf16", "bf16 mixed precision")
        },
        Technique {
            precision: Some(MixedPrecision::f16()),
            ..plain("f16", "f16 mixed precision, dynamic loss scale")
        },
        Technique {
            checkpointing: true,
            ..plain("checkpointing", "gradient checkpointing (f32)")
        },
        Technique {
            precision: Some(MixedPrecision::bf16()),
            checkpointing: true,
            ..plain("bf16_checkpointing", "bf16 + checkpointing")
        },
        Technique {
            offload: true,
            ..plain("offload", "optimizer offloaded (f32)")
        },
    ]
}

struct Measured {
    model: &'static str,
    technique: &'static str,
    what: &'static str,
    peak_bytes: usize,
    step_seconds: f64,
    parameter_bytes: usize,
    report: TrainReport,
    trained: Model,
}

#[derive(Serialize)]
struct Setup {
    steps: usize,
    batch_size: usize,
    offload_to: BackendKind,
    amp: TrainConfig,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let common = &args.common;
    let device = common.backend.device()?;
    let (data, data_dir) = common.load_data()?;
    let out = common.out_dir("memory");
    let offload_to = args
        .offload_to
        .unwrap_or(super::second_backend(common.backend));
    let (rows, cols) = (data.train.rows, data.train.cols);
    let models = [
        (
            "lenet5",
            ModelConfig::LeNet5(LeNet5Config::new(1, [rows, cols], data.classes)),
        ),
        (
            "resnet",
            ModelConfig::ResNet(ResNetConfig::small(1, [rows, cols], data.classes)),
        ),
    ];
    let steps = if common.quick { 3 } else { args.steps };
    let subset = data.train.take(steps * args.batch_size);
    let mut measured = Vec::new();
    for (model, config) in &models {
        // One unmeasured run first, so that no row pays for the allocator's and kernels'
        // first use.
        measure(
            model,
            config,
            &techniques()[0],
            args,
            &subset,
            &device,
            offload_to,
        )?;
        for technique in techniques() {
            eprintln!("memory: {model}, {}", technique.what);
            measured.push(measure(
                model, config, &technique, args, &subset, &device, offload_to,
            )?);
        }
    }

    // Mixed precision's accuracy: LeNet-5's baseline recipe in f32 and in bf16, over seeds.
    let epochs = if common.quick { 1 } else { args.epochs };
    let seeds = if common.quick { 1 } else { args.seeds.max(1) };
    let cnn = &models[0].1;
    let mut accuracy = Vec::new();
    let mut amp = TrainConfig::default();
    for seed in args.seed..args.seed + seeds {
        let f32_training = TrainConfig {
            epochs,
            seed,
            ..TrainConfig::default()
        };
        amp = TrainConfig {
            precision: Some(MixedPrecision::bf16()),
            ..f32_training.clone()
        };
        let run = |training: &TrainConfig, what: &str| -> anyhow::Result<(f64, Option<f64>)> {
            eprintln!("memory: LeNet-5 in {what}, seed {seed}, {epochs} epochs");
            let run = trained(
                &Recipe::new(cnn, training, &data, common),
                &data,
                common,
                None,
                &device,
            )?;
            Ok((
                test_accuracy(&run.model, &data, &device)?,
                run.report.as_ref().map(TrainReport::mean_epoch_seconds),
            ))
        };
        let (f32_accuracy, f32_seconds) = run(&f32_training, "f32")?;
        let (bf16_accuracy, bf16_seconds) = run(&amp, "bf16 mixed precision")?;
        accuracy.push(Accuracy {
            seed,
            f32: f32_accuracy,
            bf16: bf16_accuracy,
            f32_seconds,
            bf16_seconds,
        });
    }

    #[derive(Serialize)]
    struct Resolved<'a> {
        common: &'a CommonArgs,
        data_dir: String,
        #[serde(flatten)]
        setup: Setup,
    }
    render(
        common.quick,
        &measured,
        &accuracy,
        subset.len(),
        steps,
        offload_to,
    )
    .write_on_data(
        common,
        &out,
        &Resolved {
            common,
            data_dir: data_dir.display().to_string(),
            setup: Setup {
                steps,
                batch_size: args.batch_size,
                offload_to,
                amp,
            },
        },
    )
}

/// LeNet-5's accuracy trained in f32 and in bf16 from one seed.
struct Accuracy {
    seed: u64,
    f32: f64,
    bf16: f64,
    f32_seconds: Option<f64>,
    bf16_seconds: Option<f64>,
}

fn measure(
    model: &'static str,
    config: &ModelConfig,
    technique: &Technique,
    args: &Args,
    data: &impl LabeledData,
    device: &Device,
    offload_to: BackendKind,
) -> anyhow::Result<Measured> {
    let training = TrainConfig {
        epochs: 1,
        batch_size: args.batch_size,
        seed: args.seed,
        progress: false,
        precision: technique.precision.clone(),
        checkpointing: technique.checkpointing,
        offload: technique.offload.then_some(offload_to),
        ..TrainConfig::default()
    };
    device.seed(args.seed);
    let start = ember_tensor::init_now(config.init(device)?);
    let parameter_bytes = params(&start).iter().map(|p| p.numel() * 4).sum();
    crate::ALLOCATOR.reset_peak_memory();
    let (trained, report) = train(start, data, &training, device)?;
    let peak_bytes = crate::ALLOCATOR.get_peak_memory();
    let steps = data.len().div_ceil(args.batch_size);
    Ok(Measured {
        model,
        technique: technique.key,
        what: technique.what,
        peak_bytes,
        step_seconds: report.mean_epoch_seconds() / steps as f64,
        parameter_bytes,
        report,
        trained,
    })
}

/// Largest absolute difference between two models' parameters.
fn max_abs_diff(a: &Model, b: &Model) -> anyhow::Result<f64> {
    let mut worst = 0.0f64;
    for (x, y) in param_values(a).iter().zip(param_values(b)) {
        let x: Vec<f32> = x.flat.to_data().convert::<f32>().try_to_vec::<f32>()?;
        let y: Vec<f32> = y.flat.to_data().convert::<f32>().try_to_vec::<f32>()?;
        for (p, q) in x.iter().zip(&y) {
            worst = worst.max(f64::from((p - q).abs()));
        }
    }
    Ok(worst)
}

fn mib(bytes: usize) -> String {
    format!("{:.2}", bytes as f64 / (1024.0 * 1024.0))
}

fn render(
    quick: bool,
    measured: &[Measured],
    accuracy: &[Accuracy],
    images: usize,
    steps: usize,
    offload_to: BackendKind,
) -> Report {
    let mut report = Report::new("Training memory: mixed precision, checkpointing, offload");
    if quick {
        report.section(
            "Quick run",
            "`--quick`: 3 steps per configuration and one epoch of LeNet-5 on a subset. A smoke \
             test, not the figures.",
        );
    }
    report.section(
        "How it is measured",
        &format!(
            "Each row trains a fresh model from the same seed on the same {} images with Adam. \
             *Peak* is the most bytes the process held allocated during the run above what it \
             held before it (a counting wrapper around the binary's allocator: every buffer \
             the CPU backends hold goes through it), so it counts the training device and the \
             offload device together, since both are host memory here. *Optimizer state* is \
             the size of the optimizer's record at the end, on the device named beside it; \
             the offload row keeps it on {offload_to}.",
            images
        ),
    );
    let mut rows = Vec::new();
    for m in measured {
        let reference = measured
            .iter()
            .find(|r| r.model == m.model && r.technique == "f32")
            .map_or(m.peak_bytes, |r| r.peak_bytes);
        rows.push(vec![
            m.model.to_string(),
            m.what.to_string(),
            mib(m.peak_bytes),
            format!("{:.2}", m.peak_bytes as f64 / reference.max(1) as f64),
            format!("{:.1}", m.step_seconds * 1e3),
            mib(m.parameter_bytes),
            format!(
                "{} on {}",
                mib(m.report.optimizer_state_bytes),
                m.report.optimizer_device
            ),
            m.report.skipped_steps.to_string(),
        ]);
        report.metric(
            &format!("{}_{}_peak_bytes", m.model, m.technique),
            m.peak_bytes as f64,
        );
        report.metric(
            &format!("{}_{}_step_seconds", m.model, m.technique),
            m.step_seconds,
        );
    }
    report.table(
        "Peak memory and step time",
        &[
            "model",
            "technique",
            "peak MiB",
            "peak / f32",
            "ms / step",
            "f32 weights MiB",
            "optimizer state MiB",
            "skipped steps",
        ],
        &rows,
    );

    let mut claims = Vec::new();
    for model in ["lenet5", "resnet"] {
        let row = |t: &str| {
            measured
                .iter()
                .find(|m| m.model == model && m.technique == t)
        };
        let (Some(f32_row), Some(offload), Some(checkpointing)) =
            (row("f32"), row("offload"), row("checkpointing"))
        else {
            continue;
        };
        let diff = max_abs_diff(&f32_row.trained, &offload.trained).unwrap_or(f64::INFINITY);
        let on_training_device =
            if offload.report.optimizer_device == f32_row.report.optimizer_device {
                offload.report.optimizer_state_bytes
            } else {
                0
            };
        if model == "lenet5" {
            report.metric("offload_weight_max_abs_diff", diff);
            report.metric(
                "offload_train_device_optimizer_bytes",
                on_training_device as f64,
            );
        }
        report.metric(&format!("{model}_offload_weight_max_abs_diff"), diff);
        claims.push(Claim::new(
            quick,
            format!("{model}: offloaded Adam gives the on-device weights after {steps} steps"),
            format!("max |difference| {diff:.1e}"),
            format!("<= {TARGET_OFFLOAD_DIFF:.0e}"),
            diff <= TARGET_OFFLOAD_DIFF,
        ));
        claims.push(Claim::new(
            quick,
            format!("{model}: the training device holds no optimizer state when offloading"),
            format!("{on_training_device} bytes"),
            "0 bytes".to_string(),
            on_training_device == 0,
        ));
        let checkpoint_diff =
            max_abs_diff(&f32_row.trained, &checkpointing.trained).unwrap_or(f64::INFINITY);
        report.metric(
            &format!("{model}_checkpointing_weight_max_abs_diff"),
            checkpoint_diff,
        );
        for technique in ["bf16", "f16", "checkpointing", "bf16_checkpointing"] {
            if let Some(m) = row(technique) {
                let ratio = m.peak_bytes as f64 / f32_row.peak_bytes.max(1) as f64;
                claims.push(Claim::new(
                    quick,
                    format!("{model}: {} lowers peak training memory", m.what),
                    format!("{ratio:.2}x the f32 peak"),
                    "< 1.00x".to_string(),
                    ratio < 1.0,
                ));
            }
        }
    }

    let drops: Vec<f64> = accuracy.iter().map(|a| a.f32 - a.bf16).collect();
    let drop = Spread::of(&drops);
    let mean = |f: fn(&Accuracy) -> f64| {
        accuracy.iter().map(f).sum::<f64>() / accuracy.len().max(1) as f64
    };
    report.metric("amp_f32_accuracy", mean(|a| a.f32));
    report.metric("amp_bf16_accuracy", mean(|a| a.bf16));
    report.metric("amp_acc_drop_pp", round_pp(drop.mean));
    let time = |s: Option<f64>| s.map_or("loaded".to_string(), |s| format!("{s:.1} s"));
    let rows: Vec<Vec<String>> = accuracy
        .iter()
        .map(|a| {
            vec![
                a.seed.to_string(),
                format!("{:.2} %", a.f32),
                format!("{:.2} %", a.bf16),
                format!("{:.2}", round_pp(a.f32 - a.bf16)),
                time(a.f32_seconds),
                time(a.bf16_seconds),
            ]
        })
        .collect();
    report.table(
        "LeNet-5's full recipe in bf16 mixed precision",
        &[
            "seed",
            "f32",
            "bf16 mixed precision",
            "f32 minus bf16, points",
            "f32 s / epoch",
            "bf16 s / epoch",
        ],
        &rows,
    );
    claims.push(Claim::over_seeds(
        quick,
        "LeNet-5: bf16 mixed-precision training reaches the f32 accuracy (f32 minus bf16)",
        drop,
        " points",
        Bound::AtMost(TARGET_AMP_DROP_PP),
    ));
    report.claims_table("Claims", claims);
    report
}
