//! `cargo xtask repro prune`: global magnitude pruning of LeNet-300-100 and LeNet-5 at 50 to
//! 95 % with and without fine-tuning (against PyTorch's figures for the same recipe), Han et
//! al.'s iterative prune-retrain to 12x fewer weights, fine-tuning against learning-rate and
//! weight rewinding (Renda et al. 2020), ablations (layer scope, random criterion, 2:4, gradual
//! pruning), the sparse file sizes and the sparse kernel against dense.

use std::time::Instant;

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use ember_kernels::Csr;
use ember_prune::{
    Criterion, Gradual, NmPattern, PruneConfig, Scope, export_sparse, iterative_levels,
    iterative_prune, prune, rewind, train_gradual,
};
use ember_tensor::{LrSchedule, param_values, stats::read_f32, train_with_hook};
use ember_zoo::{
    Dataset, LabeledData, LeNet5Config, MlpConfig, Model, ModelConfig, TrainConfig, evaluate, train,
};
use serde::Serialize;

use super::plot::{Series, line_chart};
use super::{
    CommonArgs, EVAL_BATCH, QUICK_TEST, QUICK_TRAIN, Report, Spread, test_accuracy as accuracy,
    verdict,
};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Seed of initialization, dropout and shuffling.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Epochs of dense training.
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    /// Epochs of every recovery run (fine-tuning, rewinding, each Han round).
    #[arg(long, default_value_t = 3)]
    finetune_epochs: usize,
    /// Adam's constant learning rate when fine-tuning.
    #[arg(long, default_value_t = 1e-4)]
    finetune_lr: f64,
}

const LEVELS: [f64; 4] = [0.5, 0.8, 0.9, 0.95];
/// PyTorch's global L1 pruning with 3 epochs of fine-tuning, on this machine (the issue's
/// figures), at `LEVELS`, and the dense accuracies.
const PYTORCH_MLP: [f64; 4] = [98.32, 98.42, 98.38, 97.28];
const PYTORCH_MLP_DENSE: f64 = 98.29;
const PYTORCH_CNN: [f64; 4] = [99.17, 99.07, 98.63, 96.95];
const PYTORCH_CNN_DENSE: f64 = 99.19;
/// Han et al. 2015, LeNet-300-100: 12x fewer weights, error 1.64 % -> 1.59 %.
const HAN_SPARSITY: f64 = 0.92;
const HAN_ROUNDS: usize = 4;
const PAPER_HAN_ERRORS: (f64, f64) = (1.64, 1.59);
const TARGET_HAN_DROP_PP: f64 = 0.1;
const REWIND_SPARSITY: f64 = 0.9;
/// Seeds of the rewinding comparison.
const REWIND_SEEDS: u64 = 3;
/// Kernel timing: the batch a forward pass of the test set uses, and repetitions (median).
const KERNEL_BATCH: usize = 1_000;
const KERNEL_REPEATS: usize = 15;

#[derive(Serialize)]
struct Resolved<'a> {
    common: &'a CommonArgs,
    data_dir: String,
    mlp: &'a ModelConfig,
    cnn: &'a ModelConfig,
    dense_training: &'a TrainConfig,
    finetune: &'a TrainConfig,
    lr_rewind: &'a TrainConfig,
    levels: &'a [f64],
    han_levels: &'a [f64],
    gradual: &'a Gradual,
    prune: &'a PruneConfig,
}

/// One sparsity level of the one-shot sweep.
struct Level {
    sparsity: f64,
    no_finetune: f64,
    finetune: f64,
    file_bytes: u64,
}

struct Sweep {
    dense: f64,
    dense_file_bytes: u64,
    levels: Vec<Level>,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let common = &args.common;
    let device = common.backend.device()?;
    let (data, data_dir) = common.load_data()?;
    let out = common.out_dir("prune");
    let (rows, cols) = (data.train.rows, data.train.cols);
    let mlp_config = ModelConfig::Mlp(MlpConfig::lenet_300_100(rows * cols, data.classes));
    let cnn_config = ModelConfig::LeNet5(LeNet5Config::new(1, [rows, cols], data.classes));
    let (epochs, ft_epochs) = if common.quick {
        (1, 1)
    } else {
        (args.epochs, args.finetune_epochs)
    };
    let dense_training = TrainConfig {
        epochs,
        seed: args.seed,
        ..TrainConfig::default()
    };
    let finetune = TrainConfig {
        epochs: ft_epochs,
        learning_rate: args.finetune_lr,
        schedule: LrSchedule::Constant,
        ..dense_training.clone()
    };
    // Renda et al.'s learning-rate rewinding: retrain with the last `ft_epochs` epochs of the
    // original schedule.
    let lr_rewind = TrainConfig {
        epochs: ft_epochs,
        schedule: LrSchedule::CosineTail { of_epochs: epochs },
        ..dense_training.clone()
    };
    let global = PruneConfig::global_magnitude(0.0);
    std::fs::create_dir_all(&out)?;

    // Dense LeNet-300-100, with a snapshot of its weights `ft_epochs` before the end for
    // weight rewinding.
    eprintln!("prune: dense LeNet-300-100, {epochs} epochs");
    device.seed(args.seed);
    let init = mlp_config.init(&device)?;
    let steps_per_epoch = data.train.len().div_ceil(dense_training.batch_size);
    let rewind_step = (epochs - ft_epochs.min(epochs)) * steps_per_epoch;
    let mut snapshot = (rewind_step == 0).then(|| init.clone());
    let (mlp, _) = train_with_hook(
        init.clone(),
        &data.train,
        &dense_training,
        &device,
        |step, model: Model| {
            if step == rewind_step {
                snapshot = Some(model.valid());
            }
            Ok::<_, ember_tensor::Error>(model)
        },
    )?;
    let snapshot = snapshot.unwrap_or_else(|| init.clone());
    let mlp_sweep = sweep(
        "LeNet-300-100",
        &mlp,
        &data,
        &finetune,
        &device,
        &out,
        "mlp",
    )?;

    eprintln!("prune: Han et al., iterative to {HAN_SPARSITY} in {HAN_ROUNDS} rounds");
    let han_levels = iterative_levels(HAN_SPARSITY, HAN_ROUNDS)?;
    let mut han_rounds = vec![];
    let han = iterative_prune(
        mlp.clone(),
        &data.train,
        &han_levels,
        &global,
        &finetune,
        None,
        &device,
        |round| {
            let acc = evaluate(round.model, &data.test, EVAL_BATCH, &device)?.accuracy;
            eprintln!(
                "  round {}: {:.1} % -> {acc:.2} %",
                round.round,
                round.sparsity * 100.0
            );
            han_rounds.push((round.sparsity, acc));
            Ok(())
        },
    )?;
    let han_acc = accuracy(&han, &data, &device)?;
    let han_sparsity = ember_prune::sparsity_report(&han, &global.layers)?.sparsity();

    eprintln!("prune: fine-tuning against rewinding at {REWIND_SPARSITY}");
    let (pruned90, _) = prune(
        mlp.clone(),
        &PruneConfig {
            sparsity: REWIND_SPARSITY,
            ..global.clone()
        },
    )?;
    // One run each is within a test image or two of the others: compare over seeds.
    let mut recovery: [Vec<f64>; 3] = Default::default();
    for seed in args.seed..args.seed + REWIND_SEEDS {
        let finetune = TrainConfig {
            seed,
            ..finetune.clone()
        };
        let lr_rewind = TrainConfig {
            seed,
            ..lr_rewind.clone()
        };
        let starts = [
            (&finetune, pruned90.clone()),
            (&lr_rewind, pruned90.clone()),
            (&lr_rewind, rewind(&pruned90, snapshot.clone())?),
        ];
        for (results, (config, start)) in recovery.iter_mut().zip(starts) {
            let (tuned, _) = train(start, &data.train, config, &device)?;
            results.push(accuracy(&tuned, &data, &device)?);
        }
    }
    let [ft90, lr_rewound, weight_rewound] = recovery.each_ref().map(|r| Spread::of(r));
    let differences: Vec<f64> = recovery[1]
        .iter()
        .zip(&recovery[0])
        .map(|(lr, ft)| lr - ft)
        .collect();

    eprintln!("prune: ablations at {REWIND_SPARSITY} (fine-tuned)");
    let mut ablations = vec![];
    for (name, key, config) in [
        (
            "global magnitude (reference)",
            "global_magnitude",
            PruneConfig {
                sparsity: REWIND_SPARSITY,
                ..global.clone()
            },
        ),
        (
            "per-layer magnitude",
            "layer_magnitude",
            PruneConfig {
                sparsity: REWIND_SPARSITY,
                ..global.clone()
            }
            .with_scope(Scope::Layer),
        ),
        (
            "global random",
            "global_random",
            PruneConfig {
                sparsity: REWIND_SPARSITY,
                seed: args.seed,
                ..global.clone()
            }
            .with_criterion(Criterion::Random),
        ),
        (
            "2:4 (50 %)",
            "nm_2_4",
            PruneConfig {
                nm: Some(NmPattern { n: 2, m: 4 }),
                ..global.clone()
            },
        ),
    ] {
        let (pruned, report) = prune(mlp.clone(), &config)?;
        let before = accuracy(&pruned, &data, &device)?;
        let after = accuracy(
            &train(pruned, &data.train, &finetune, &device)?.0,
            &data,
            &device,
        )?;
        ablations.push((name, key, report.sparsity(), before, after));
    }

    let total_steps = epochs * steps_per_epoch;
    let gradual = Gradual {
        initial: 0.0,
        target: REWIND_SPARSITY,
        start_step: steps_per_epoch.min(total_steps / 10).max(1),
        end_step: (total_steps * 7 / 10).max(2),
        every: (steps_per_epoch / 5).max(1),
    };
    eprintln!("prune: gradual to {REWIND_SPARSITY} while training from scratch");
    let (gradual_model, _) = train_gradual(
        init,
        &data.train,
        &dense_training,
        &global,
        &gradual,
        &device,
    )?;
    let gradual_acc = accuracy(&gradual_model, &data, &device)?;

    eprintln!("prune: dense LeNet-5, {epochs} epochs");
    device.seed(args.seed);
    let (cnn, _) = train(
        cnn_config.init(&device)?,
        &data.train,
        &dense_training,
        &device,
    )?;
    let cnn_sweep = sweep("LeNet-5", &cnn, &data, &finetune, &device, &out, "cnn")?;

    eprintln!("prune: sparse kernel against dense on LeNet-300-100's first layer");
    let kernel = kernel_timings(&mlp, &device)?;

    // The report.
    let mut report = Report::new("Pruning: magnitude, iterative, rewinding on MNIST");
    if common.quick {
        report.section(
            "Quick run",
            &format!(
                "`--quick`: {QUICK_TRAIN} training images, {QUICK_TEST} test images, 1 epoch of \
                 training and of each recovery. A smoke test, not the published figures."
            ),
        );
    }
    for (name, sweep, pytorch, pytorch_dense, prefix) in [
        (
            "LeNet-300-100",
            &mlp_sweep,
            PYTORCH_MLP,
            PYTORCH_MLP_DENSE,
            "mlp",
        ),
        ("LeNet-5", &cnn_sweep, PYTORCH_CNN, PYTORCH_CNN_DENSE, "cnn"),
    ] {
        let mut rows = vec![vec![
            "0 (dense)".into(),
            format!("{:.2}", sweep.dense),
            format!("{:.2}", sweep.dense),
            format!("{pytorch_dense:.2}"),
            format!("{:.0}", sweep.dense_file_bytes as f64 / 1024.0),
            "1.00".into(),
        ]];
        for (level, pytorch) in sweep.levels.iter().zip(pytorch) {
            rows.push(vec![
                format!("{:.0}", level.sparsity * 100.0),
                format!("{:.2}", level.no_finetune),
                format!("{:.2}", level.finetune),
                format!("{pytorch:.2}"),
                format!("{:.0}", level.file_bytes as f64 / 1024.0),
                format!(
                    "{:.2}",
                    sweep.dense_file_bytes as f64 / level.file_bytes as f64
                ),
            ]);
            let pct = (level.sparsity * 100.0).round();
            report.metric(&format!("{prefix}_global_{pct}_acc"), level.no_finetune);
            report.metric(&format!("{prefix}_global_{pct}_ft_acc"), level.finetune);
            report.metric(
                &format!("{prefix}_global_{pct}_size_ratio"),
                sweep.dense_file_bytes as f64 / level.file_bytes as f64,
            );
        }
        report.metric(&format!("{prefix}_dense_acc"), sweep.dense);
        report.table(
            &format!("{name}: global magnitude pruning, one shot"),
            &[
                "sparsity %",
                "accuracy %, no fine-tuning",
                &format!("accuracy %, {ft_epochs} epochs fine-tuning"),
                "PyTorch %, fine-tuned",
                "sparse file KiB",
                "size ratio",
            ],
            &rows,
        );
    }
    report.section(
        "Recipe",
        &format!(
            "Dense training: {epochs} epochs of Adam (lr 1e-3, cosine), batch 128. Pruning: global L1 \
             magnitude over every linear and convolution weight (biases kept). Fine-tuning: \
             {ft_epochs} epochs of Adam at a constant {} with the masks held. The size is that of \
             the `ember-sparse/1` safetensors file (a bit per weight plus the kept values; biases \
             dense); the dense row is the same format with nothing pruned. Plots: \
             `mlp_accuracy.svg`, `cnn_accuracy.svg`.",
            args.finetune_lr
        ),
    );

    let dense_acc = mlp_sweep.dense;
    // Accuracies are whole test images (hundredths of a percent): round the differences to
    // that, so that a difference of ten images reads 0.10, not 0.1000000000000085.
    let han_drop = pp(dense_acc - han_acc);
    let han_rows: Vec<Vec<String>> = han_rounds
        .iter()
        .enumerate()
        .map(|(i, (s, acc))| {
            vec![
                (i + 1).to_string(),
                format!("{:.1}", s * 100.0),
                format!("{acc:.2}"),
                format!("{:.2}", 100.0 - acc),
            ]
        })
        .collect();
    report.table(
        &format!(
            "Han et al. 2015: iterative prune-retrain of LeNet-300-100 to {:.1}x fewer weights",
            1.0 / (1.0 - han_sparsity)
        ),
        &["round", "sparsity %", "accuracy %", "error %"],
        &han_rows,
    );
    report.section(
        "Han et al. against the paper",
        &format!(
            "Dense error {:.2} %, pruned error {:.2} % at {:.1} % sparsity: {:+.2} pp (target: at most \
             {TARGET_HAN_DROP_PP} pp more error: {}). Paper: {:.2} % -> {:.2} %. Each round prunes \
             the same fraction of the remaining weights globally and retrains {ft_epochs} epochs \
             as fine-tuning does.",
            100.0 - dense_acc,
            100.0 - han_acc,
            han_sparsity * 100.0,
            han_drop,
            verdict(common.quick, han_drop <= TARGET_HAN_DROP_PP),
            PAPER_HAN_ERRORS.0,
            PAPER_HAN_ERRORS.1,
        ),
    );
    report.metric("han_sparsity", han_sparsity);
    report.metric("han_acc", han_acc);
    report.metric("han_acc_drop_pp", han_drop);

    let lr_minus_ft = pp(Spread::of(&differences).mean);
    let per_seed = |r: &[f64]| {
        r.iter()
            .map(|a| format!("{a:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    report.table(
        &format!(
            "Recovery at {:.0} % sparsity, LeNet-300-100 ({ft_epochs} epochs each, {REWIND_SEEDS} seeds)",
            REWIND_SPARSITY * 100.0
        ),
        &["recovery", "accuracy %, mean ± std", "per seed"],
        &[
            vec![
                format!("fine-tuning (constant lr {})", args.finetune_lr),
                ft90.show(2),
                per_seed(&recovery[0]),
            ],
            vec![
                "learning-rate rewinding (last epochs of the original cosine)".into(),
                lr_rewound.show(2),
                per_seed(&recovery[1]),
            ],
            vec![
                format!(
                    "weight rewinding to epoch {} + the same rates",
                    epochs - ft_epochs.min(epochs)
                ),
                weight_rewound.show(2),
                per_seed(&recovery[2]),
            ],
        ],
    );
    report.section(
        "Rewinding against fine-tuning",
        &format!(
            "Learning-rate rewinding minus fine-tuning, mean over seeds, to a hundredth of a \
             point (one test image): {lr_minus_ft:+.2} pp (per seed: {}; target >= 0: {}). The \
             seed changes the order of the batches; the pruned network is the same.",
            per_seed(&differences),
            verdict(common.quick, lr_minus_ft >= 0.0)
        ),
    );
    report.metric("finetune_acc_at_90", ft90.mean);
    report.metric("lr_rewind_acc_at_90", lr_rewound.mean);
    report.metric("weight_rewind_acc_at_90", weight_rewound.mean);
    report.metric("lr_rewind_minus_finetune_pp", lr_minus_ft);

    let mut ablation_rows: Vec<Vec<String>> = ablations
        .iter()
        .map(|(name, _, s, before, after)| {
            vec![
                name.to_string(),
                format!("{:.1}", s * 100.0),
                format!("{before:.2}"),
                format!("{after:.2}"),
            ]
        })
        .collect();
    ablation_rows.push(vec![
        format!(
            "gradual (Zhu & Gupta, steps {}..{} every {}), while training",
            gradual.start_step, gradual.end_step, gradual.every
        ),
        format!("{:.1}", REWIND_SPARSITY * 100.0),
        "-".into(),
        format!("{gradual_acc:.2}"),
    ]);
    report.table(
        "Ablations, LeNet-300-100",
        &[
            "method",
            "sparsity %",
            "accuracy %, pruned",
            "accuracy %, recovered",
        ],
        &ablation_rows,
    );
    for (_, key, _, _, after) in &ablations {
        report.metric(&format!("ablation_{key}_ft_acc"), *after);
    }
    report.metric("gradual_acc_at_90", gradual_acc);

    let crossover = kernel
        .iter()
        .find(|k| k.sparse_us < k.dense_us)
        .map(|k| k.sparsity);
    let kernel_rows: Vec<Vec<String>> = kernel
        .iter()
        .map(|k| {
            vec![
                format!("{:.0}", k.sparsity * 100.0),
                format!("{:.0}", k.sparse_us),
                format!("{:.0}", k.dense_us),
                format!("{:.2}", k.dense_us / k.sparse_us),
            ]
        })
        .collect();
    report.table(
        &format!("Sparse kernel: LeNet-300-100's first layer (784 x 300), batch {KERNEL_BATCH}"),
        &[
            "sparsity %",
            "ember_kernels::Csr::linear µs",
            &format!("{} dense matmul µs", common.backend),
            "speed-up",
        ],
        &kernel_rows,
    );
    report.section(
        "Sparse kernel",
        &format!(
            "Median of {KERNEL_REPEATS} runs each, the CSR kernel (AVX2/FMA where the CPU has them, \
             rows split across threads above 8M multiply-adds, input and output transposed around \
             it) against the backend's dense matmul on all cores. Sparse is faster from {} on. `cargo bench -p ember-benches --bench \
             sparse` times the same against a single-threaded dense SGEMM with criterion.",
            crossover.map_or("no level measured".to_string(), |s| format!("{:.0} % sparsity", s * 100.0))
        ),
    );
    if let Some(s) = crossover {
        report.metric("sparse_kernel_crossover_sparsity", s);
    }

    for (file, title, sweep, pytorch) in [
        (
            "mlp_accuracy.svg",
            "LeNet-300-100: global magnitude pruning",
            &mlp_sweep,
            PYTORCH_MLP,
        ),
        (
            "cnn_accuracy.svg",
            "LeNet-5: global magnitude pruning",
            &cnn_sweep,
            PYTORCH_CNN,
        ),
    ] {
        let remaining: Vec<f64> = sweep
            .levels
            .iter()
            .map(|l| (1.0 - l.sparsity) * 100.0)
            .collect();
        let no_ft: Vec<f64> = sweep.levels.iter().map(|l| l.no_finetune).collect();
        let ft: Vec<f64> = sweep.levels.iter().map(|l| l.finetune).collect();
        let svg = line_chart(
            title,
            "weights remaining (%)",
            "test accuracy (%)",
            &[
                Series::new("fine-tuned", &remaining, &ft).with_baseline(sweep.dense),
                Series::new("no fine-tuning", &remaining, &no_ft),
                Series::new("PyTorch, fine-tuned", &remaining, &pytorch),
            ],
        );
        std::fs::write(out.join(file), svg)?;
    }

    let resolved = Resolved {
        common,
        data_dir: data_dir.display().to_string(),
        mlp: &mlp_config,
        cnn: &cnn_config,
        dense_training: &dense_training,
        finetune: &finetune,
        lr_rewind: &lr_rewind,
        levels: &LEVELS,
        han_levels: &han_levels,
        gradual: &gradual,
        prune: &global,
    };
    report.write(&out, &resolved)?;
    println!(
        "MLP dense {:.2} %, 90 % fine-tuned {:.2} %; Han {:.1} % sparse {han_acc:.2} % ({han_drop:+.2} pp); \
         LR rewinding - fine-tuning {lr_minus_ft:+.2} pp; CNN dense {:.2} %",
        mlp_sweep.dense,
        ft90.mean,
        han_sparsity * 100.0,
        cnn_sweep.dense
    );
    Ok(())
}

/// A difference of accuracies in percentage points, rounded to hundredths (one test image in
/// 10,000).
fn pp(difference: f64) -> f64 {
    // `+ 0.0` turns a rounded -0.0 into 0.0.
    (difference * 100.0).round() / 100.0 + 0.0
}

/// One-shot global magnitude pruning of `dense` at every level, with and without fine-tuning.
fn sweep(
    name: &str,
    dense: &Model,
    data: &Dataset,
    finetune: &TrainConfig,
    device: &Device,
    out: &std::path::Path,
    prefix: &str,
) -> anyhow::Result<Sweep> {
    let dense_acc = accuracy(dense, data, device)?;
    let dense_file_bytes = export_sparse(dense, &out.join(format!("{prefix}_dense.safetensors")))?;
    eprintln!("{name}: dense {dense_acc:.2} %");
    let mut levels = vec![];
    for sparsity in LEVELS {
        let started = Instant::now();
        let (pruned, _) = prune(dense.clone(), &PruneConfig::global_magnitude(sparsity))?;
        let no_finetune = accuracy(&pruned, data, device)?;
        let (tuned, _) = train(pruned, &data.train, finetune, device)?;
        let finetune_acc = accuracy(&tuned, data, device)?;
        let path = out.join(format!("{prefix}_{:.0}.safetensors", sparsity * 100.0));
        let file_bytes = export_sparse(&tuned, &path)?;
        eprintln!(
            "{name}: {:.0} % -> {no_finetune:.2} %, fine-tuned {finetune_acc:.2} % ({:.0} s)",
            sparsity * 100.0,
            started.elapsed().as_secs_f64()
        );
        levels.push(Level {
            sparsity,
            no_finetune,
            finetune: finetune_acc,
            file_bytes,
        });
    }
    Ok(Sweep {
        dense: dense_acc,
        dense_file_bytes,
        levels,
    })
}

struct KernelTiming {
    sparsity: f64,
    sparse_us: f64,
    dense_us: f64,
}

/// Median microseconds of `f` over `KERNEL_REPEATS` runs after one warm-up.
fn median_us(mut f: impl FnMut()) -> f64 {
    f();
    let mut times: Vec<f64> = (0..KERNEL_REPEATS)
        .map(|_| {
            let started = Instant::now();
            f();
            started.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// The first layer of the trained MLP pruned to each level: CSR against the backend's dense
/// matmul on a batch of inputs.
fn kernel_timings(mlp: &Model, device: &Device) -> anyhow::Result<Vec<KernelTiming>> {
    let mut timings = vec![];
    for sparsity in [0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98] {
        let (pruned, _) = prune(
            mlp.clone(),
            &PruneConfig::global_magnitude(sparsity).with_scope(Scope::Layer),
        )?;
        let first = param_values(&pruned)
            .into_iter()
            .next()
            .ok_or_else(|| anyhow::anyhow!("the MLP has no parameters"))?;
        let [d_in, d_out] = [first.info.shape[0], first.info.shape[1]];
        let w = read_f32(first.flat)?;
        let x: Vec<f32> = (0..KERNEL_BATCH * d_in)
            .map(|i| ((i * 37) % 255) as f32 / 255.0)
            .collect();
        let csr = Csr::from_dense_transposed(d_in, d_out, &w)?;
        let sparse_us = median_us(|| {
            std::hint::black_box(csr.linear(&x, KERNEL_BATCH).ok());
        });
        let xt = Tensor::<2>::from_data(TensorData::new(x.clone(), [KERNEL_BATCH, d_in]), device);
        let wt = Tensor::<2>::from_data(TensorData::new(w, [d_in, d_out]), device);
        let dense_us = median_us(|| {
            let y = xt.clone().matmul(wt.clone());
            let _ = ember_tensor::device::sync(device);
            drop(y);
        });
        timings.push(KernelTiming {
            sparsity,
            sparse_us,
            dense_us,
        });
    }
    Ok(timings)
}
