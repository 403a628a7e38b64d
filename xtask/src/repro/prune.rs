//! `cargo xtask repro prune`: global magnitude pruning of LeNet-300-100 and LeNet-5 at 50 to
//! 95 % with and without fine-tuning (against PyTorch's figures for the same recipe), Han et
//! al.'s iterative prune-retrain to 12x fewer weights, fine-tuning against learning-rate and
//! weight rewinding (Renda et al. 2020), ablations (layer scope, random criterion, 2:4, gradual
//! pruning), the sparse file sizes and the sparse kernel against dense.

use std::path::Path;
use std::time::Instant;

use burn::tensor::{Device, Tensor, TensorData};
use ember_kernels::Csr;
use ember_prune::{
    Criterion, Gradual, NmPattern, PruneConfig, Rounds, Scope, export_sparse, iterative_prune,
    prune, rewind, train_gradual,
};
use ember_tensor::{LrSchedule, param_values, stats::read_f32};
use ember_zoo::{
    Dataset, LabeledData, LeNet5Config, MlpConfig, Model, ModelConfig, TrainConfig, evaluate, train,
};
use serde::Serialize;

use super::plot::{Series, line_chart};
use super::trained::{Recipe, trained};
use super::{
    CommonArgs, EVAL_BATCH, QUICK_TEST, QUICK_TRAIN, Report, Spread, median_us, round_pp,
    test_accuracy as accuracy, verdict,
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
    han_rounds: &'a Rounds,
    gradual: &'a Gradual,
    prune: &'a PruneConfig,
}

/// The experiment's recipes, resolved from the arguments.
struct Setup {
    mlp: ModelConfig,
    cnn: ModelConfig,
    dense_training: TrainConfig,
    finetune: TrainConfig,
    /// Renda et al.'s learning-rate rewinding: retrain with the last epochs of the original
    /// schedule.
    lr_rewind: TrainConfig,
    /// The step whose weights weight rewinding goes back to: `finetune`'s epochs before the
    /// end of dense training.
    rewind_step: usize,
    han_rounds: Rounds,
    gradual: Gradual,
    global: PruneConfig,
}

impl Setup {
    fn new(args: &Args, data: &Dataset) -> anyhow::Result<Self> {
        let (rows, cols) = (data.train.rows, data.train.cols);
        let (epochs, ft_epochs) = if args.common.quick {
            (1, 1)
        } else {
            (args.epochs, args.finetune_epochs)
        };
        let dense_training = TrainConfig {
            epochs,
            seed: args.seed,
            ..TrainConfig::default()
        };
        let steps_per_epoch = data.train.len().div_ceil(dense_training.batch_size);
        let total_steps = epochs * steps_per_epoch;
        Ok(Self {
            mlp: ModelConfig::Mlp(MlpConfig::lenet_300_100(rows * cols, data.classes)),
            cnn: ModelConfig::LeNet5(LeNet5Config::new(1, [rows, cols], data.classes)),
            finetune: TrainConfig {
                epochs: ft_epochs,
                learning_rate: args.finetune_lr,
                schedule: LrSchedule::Constant,
                ..dense_training.clone()
            },
            lr_rewind: TrainConfig {
                epochs: ft_epochs,
                schedule: LrSchedule::CosineTail { of_epochs: epochs },
                ..dense_training.clone()
            },
            rewind_step: (epochs - ft_epochs.min(epochs)) * steps_per_epoch,
            han_rounds: Rounds::to_target(HAN_SPARSITY, HAN_ROUNDS)?,
            gradual: Gradual {
                initial: 0.0,
                target: REWIND_SPARSITY,
                start_step: steps_per_epoch.min(total_steps / 10).max(1),
                end_step: (total_steps * 7 / 10).max(2),
                every: (steps_per_epoch / 5).max(1),
            },
            global: PruneConfig::global_magnitude(0.0),
            dense_training,
        })
    }

    fn at(&self, sparsity: f64) -> PruneConfig {
        PruneConfig {
            sparsity,
            ..self.global.clone()
        }
    }
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

/// Han et al.'s iterative pruning: (sparsity, accuracy) after each round, and the end.
struct Han {
    rounds: Vec<(f64, f64)>,
    accuracy: f64,
    sparsity: f64,
}

/// Accuracies of the three recoveries at `REWIND_SPARSITY`, one per seed.
struct Recovery {
    finetune: Vec<f64>,
    lr_rewind: Vec<f64>,
    weight_rewind: Vec<f64>,
}

impl Recovery {
    /// Learning-rate rewinding minus fine-tuning, per seed.
    fn lr_minus_finetune(&self) -> Vec<f64> {
        self.lr_rewind
            .iter()
            .zip(&self.finetune)
            .map(|(lr, ft)| lr - ft)
            .collect()
    }

    /// Its mean over seeds, to one test image.
    fn lr_minus_finetune_pp(&self) -> f64 {
        round_pp(Spread::of(&self.lr_minus_finetune()).mean)
    }
}

struct Ablation {
    name: &'static str,
    key: &'static str,
    sparsity: f64,
    before: f64,
    after: f64,
}

/// Everything the experiment measures.
struct Results {
    mlp: Sweep,
    cnn: Sweep,
    han: Han,
    recovery: Recovery,
    ablations: Vec<Ablation>,
    gradual_accuracy: f64,
    kernel: Vec<KernelTiming>,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let common = &args.common;
    let device = common.backend.device()?;
    let (data, data_dir) = common.load_data()?;
    let out = common.out_dir("prune");
    std::fs::create_dir_all(&out)?;
    let setup = Setup::new(args, &data)?;
    let results = compute(args, &setup, &data, &device, &out)?;
    let report = render(args, &setup, &results);
    for (file, svg) in plots(&results) {
        std::fs::write(out.join(file), svg)?;
    }
    let resolved = Resolved {
        common,
        data_dir: data_dir.display().to_string(),
        mlp: &setup.mlp,
        cnn: &setup.cnn,
        dense_training: &setup.dense_training,
        finetune: &setup.finetune,
        lr_rewind: &setup.lr_rewind,
        levels: &LEVELS,
        han_rounds: &setup.han_rounds,
        gradual: &setup.gradual,
        prune: &setup.global,
    };
    report.write(&out, &resolved)?;
    let recovery = Spread::of(&results.recovery.finetune);
    println!(
        "MLP dense {:.2} %, 90 % fine-tuned {:.2} %; Han {:.1} % sparse {:.2} % ({:+.2} pp); \
         LR rewinding - fine-tuning {:+.2} pp; CNN dense {:.2} %",
        results.mlp.dense,
        recovery.mean,
        results.han.sparsity * 100.0,
        results.han.accuracy,
        round_pp(results.mlp.dense - results.han.accuracy),
        results.recovery.lr_minus_finetune_pp(),
        results.cnn.dense
    );
    Ok(())
}

fn compute(
    args: &Args,
    setup: &Setup,
    data: &Dataset,
    device: &Device,
    out: &Path,
) -> anyhow::Result<Results> {
    let common = &args.common;
    let mlp_recipe = Recipe::new(&setup.mlp, &setup.dense_training, data, common);
    eprintln!(
        "prune: dense LeNet-300-100, {} epochs",
        setup.dense_training.epochs
    );
    // The baseline's LeNet-300-100, with its weights at `rewind_step` for weight rewinding.
    let dense = trained(&mlp_recipe, data, common, Some(setup.rewind_step), device)?;
    let snapshot = dense
        .snapshot
        .clone()
        .ok_or_else(|| anyhow::anyhow!("no snapshot at step {}", setup.rewind_step))?;
    let mlp = dense.model;
    let mlp_sweep = sweep(
        "LeNet-300-100",
        &mlp,
        data,
        &setup.finetune,
        device,
        out,
        "mlp",
    )?;

    eprintln!("prune: Han et al., iterative to {HAN_SPARSITY} in {HAN_ROUNDS} rounds");
    let mut han_rounds = vec![];
    let han = iterative_prune(
        mlp.clone(),
        &data.train,
        &setup.han_rounds,
        &setup.global,
        &setup.finetune,
        None,
        device,
        |round| {
            let acc = evaluate(round.model, &data.test, EVAL_BATCH, device)?.accuracy;
            eprintln!(
                "  round {}: {:.1} % -> {acc:.2} %",
                round.round,
                round.sparsity * 100.0
            );
            han_rounds.push((round.sparsity, acc));
            Ok::<_, anyhow::Error>(())
        },
    )?;
    let han = Han {
        rounds: han_rounds,
        accuracy: accuracy(&han, data, device)?,
        sparsity: ember_prune::sparsity_report(&han, &setup.global.layers)?.sparsity(),
    };

    eprintln!("prune: fine-tuning against rewinding at {REWIND_SPARSITY}");
    let (pruned90, _) = prune(mlp.clone(), &setup.at(REWIND_SPARSITY))?;
    // One run each is within a test image or two of the others: compare over seeds.
    let mut recovery = Recovery {
        finetune: vec![],
        lr_rewind: vec![],
        weight_rewind: vec![],
    };
    for seed in args.seed..args.seed + REWIND_SEEDS {
        let finetune = TrainConfig {
            seed,
            ..setup.finetune.clone()
        };
        let lr_rewind = TrainConfig {
            seed,
            ..setup.lr_rewind.clone()
        };
        for (results, config, start) in [
            (&mut recovery.finetune, &finetune, pruned90.clone()),
            (&mut recovery.lr_rewind, &lr_rewind, pruned90.clone()),
            (
                &mut recovery.weight_rewind,
                &lr_rewind,
                rewind(&pruned90, snapshot.clone())?,
            ),
        ] {
            let (tuned, _) = train(start, &data.train, config, device)?;
            results.push(accuracy(&tuned, data, device)?);
        }
    }

    eprintln!("prune: ablations at {REWIND_SPARSITY} (fine-tuned)");
    let mut ablations = vec![];
    for (name, key, config) in [
        (
            "global magnitude (reference)",
            "global_magnitude",
            setup.at(REWIND_SPARSITY),
        ),
        (
            "per-layer magnitude",
            "layer_magnitude",
            setup.at(REWIND_SPARSITY).with_scope(Scope::Layer),
        ),
        (
            "global random",
            "global_random",
            PruneConfig {
                seed: args.seed,
                ..setup.at(REWIND_SPARSITY)
            }
            .with_criterion(Criterion::Random),
        ),
        (
            "2:4 (50 %)",
            "nm_2_4",
            PruneConfig {
                nm: Some(NmPattern { n: 2, m: 4 }),
                ..setup.global.clone()
            },
        ),
    ] {
        let (pruned, report) = prune(mlp.clone(), &config)?;
        let before = accuracy(&pruned, data, device)?;
        let (tuned, _) = train(pruned, &data.train, &setup.finetune, device)?;
        ablations.push(Ablation {
            name,
            key,
            sparsity: report.sparsity(),
            before,
            after: accuracy(&tuned, data, device)?,
        });
    }

    eprintln!("prune: gradual to {REWIND_SPARSITY} while training from scratch");
    device.seed(setup.dense_training.seed);
    let (gradual_model, _) = train_gradual(
        setup.mlp.init(device)?,
        &data.train,
        &setup.dense_training,
        &setup.global,
        &setup.gradual,
        device,
    )?;
    let gradual_accuracy = accuracy(&gradual_model, data, device)?;

    eprintln!(
        "prune: dense LeNet-5, {} epochs",
        setup.dense_training.epochs
    );
    let cnn_recipe = Recipe::new(&setup.cnn, &setup.dense_training, data, common);
    let cnn = trained(&cnn_recipe, data, common, None, device)?.model;
    let cnn_sweep = sweep("LeNet-5", &cnn, data, &setup.finetune, device, out, "cnn")?;

    eprintln!("prune: sparse kernel against dense on LeNet-300-100's first layer");
    let kernel = kernel_timings(&mlp, device)?;
    Ok(Results {
        mlp: mlp_sweep,
        cnn: cnn_sweep,
        han,
        recovery,
        ablations,
        gradual_accuracy,
        kernel,
    })
}

fn render(args: &Args, setup: &Setup, results: &Results) -> Report {
    let common = &args.common;
    let epochs = setup.dense_training.epochs;
    let ft_epochs = setup.finetune.epochs;
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
            &results.mlp,
            PYTORCH_MLP,
            PYTORCH_MLP_DENSE,
            "mlp",
        ),
        (
            "LeNet-5",
            &results.cnn,
            PYTORCH_CNN,
            PYTORCH_CNN_DENSE,
            "cnn",
        ),
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
            let size_ratio = sweep.dense_file_bytes as f64 / level.file_bytes as f64;
            rows.push(vec![
                format!("{:.0}", level.sparsity * 100.0),
                format!("{:.2}", level.no_finetune),
                format!("{:.2}", level.finetune),
                format!("{pytorch:.2}"),
                format!("{:.0}", level.file_bytes as f64 / 1024.0),
                format!("{size_ratio:.2}"),
            ]);
            let pct = (level.sparsity * 100.0).round();
            report.metric(&format!("{prefix}_global_{pct}_acc"), level.no_finetune);
            report.metric(&format!("{prefix}_global_{pct}_ft_acc"), level.finetune);
            report.metric(&format!("{prefix}_global_{pct}_size_ratio"), size_ratio);
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
             the `ember-sparse/2` safetensors file (a bit per weight plus the kept values; biases \
             dense); the dense row is the same format with nothing pruned. Plots: \
             `mlp_accuracy.svg`, `cnn_accuracy.svg`.",
            args.finetune_lr
        ),
    );
    render_han(&mut report, args, setup, results);
    render_recovery(&mut report, args, setup, results);
    render_ablations(&mut report, setup, results);
    render_kernel(&mut report, args, results);
    report
}

/// Han et al.'s rounds against the paper.
fn render_han(report: &mut Report, args: &Args, setup: &Setup, results: &Results) {
    let ft_epochs = setup.finetune.epochs;
    let dense_acc = results.mlp.dense;
    let han = &results.han;
    let han_drop = round_pp(dense_acc - han.accuracy);
    let han_rows: Vec<Vec<String>> = han
        .rounds
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
            1.0 / (1.0 - han.sparsity)
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
            100.0 - han.accuracy,
            han.sparsity * 100.0,
            han_drop,
            verdict(args.common.quick, han_drop <= TARGET_HAN_DROP_PP),
            PAPER_HAN_ERRORS.0,
            PAPER_HAN_ERRORS.1,
        ),
    );
    report.metric("han_sparsity", han.sparsity);
    report.metric("han_acc", han.accuracy);
    report.metric("han_acc_drop_pp", han_drop);
}

/// Fine-tuning against learning-rate and weight rewinding, over seeds.
fn render_recovery(report: &mut Report, args: &Args, setup: &Setup, results: &Results) {
    let common = &args.common;
    let epochs = setup.dense_training.epochs;
    let ft_epochs = setup.finetune.epochs;
    let recovery = &results.recovery;
    let [ft90, lr_rewound, weight_rewound] = [
        &recovery.finetune,
        &recovery.lr_rewind,
        &recovery.weight_rewind,
    ]
    .map(|r| Spread::of(r));
    let lr_minus_ft = recovery.lr_minus_finetune_pp();
    let per_seed = |r: &[f64]| {
        r.iter()
            .map(|a| format!("{a:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let differences = recovery.lr_minus_finetune();
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
                per_seed(&recovery.finetune),
            ],
            vec![
                "learning-rate rewinding (last epochs of the original cosine)".into(),
                lr_rewound.show(2),
                per_seed(&recovery.lr_rewind),
            ],
            vec![
                format!("weight rewinding to epoch {} + the same rates", epochs - ft_epochs.min(epochs)),
                weight_rewound.show(2),
                per_seed(&recovery.weight_rewind),
            ],
        ],
    );
    report.section(
        "Rewinding against fine-tuning",
        &format!(
            "Learning-rate rewinding minus fine-tuning, mean over seeds, to a hundredth of a \
             point (one test image): {:+.2} pp (per seed: {}; target >= 0: {}). The \
             seed changes the order of the batches; the pruned network is the same.",
            lr_minus_ft,
            per_seed(&differences),
            verdict(common.quick, lr_minus_ft >= 0.0)
        ),
    );
    report.metric("finetune_acc_at_90", ft90.mean);
    report.metric("lr_rewind_acc_at_90", lr_rewound.mean);
    report.metric("weight_rewind_acc_at_90", weight_rewound.mean);
    report.metric("lr_rewind_minus_finetune_pp", lr_minus_ft);
}

/// The ablations at the rewinding sparsity.
fn render_ablations(report: &mut Report, setup: &Setup, results: &Results) {
    let gradual = &setup.gradual;
    let mut ablation_rows: Vec<Vec<String>> = results
        .ablations
        .iter()
        .map(|a| {
            vec![
                a.name.to_string(),
                format!("{:.1}", a.sparsity * 100.0),
                format!("{:.2}", a.before),
                format!("{:.2}", a.after),
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
        format!("{:.2}", results.gradual_accuracy),
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
    for a in &results.ablations {
        report.metric(&format!("ablation_{}_ft_acc", a.key), a.after);
    }
    report.metric("gradual_acc_at_90", results.gradual_accuracy);
}

/// The CSR kernel against the backend's dense matmul.
fn render_kernel(report: &mut Report, args: &Args, results: &Results) {
    let common = &args.common;
    let kernel = &results.kernel;
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
}

/// The accuracy-against-sparsity plots: file name and SVG.
fn plots(results: &Results) -> Vec<(&'static str, String)> {
    [
        (
            "mlp_accuracy.svg",
            "LeNet-300-100: global magnitude pruning",
            &results.mlp,
            PYTORCH_MLP,
        ),
        (
            "cnn_accuracy.svg",
            "LeNet-5: global magnitude pruning",
            &results.cnn,
            PYTORCH_CNN,
        ),
    ]
    .into_iter()
    .map(|(file, title, sweep, pytorch)| {
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
        (file, svg)
    })
    .collect()
}

/// One-shot global magnitude pruning of `dense` at every level, with and without fine-tuning.
fn sweep(
    name: &str,
    dense: &Model,
    data: &Dataset,
    finetune: &TrainConfig,
    device: &Device,
    out: &Path,
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
        let sparse_us = median_us(KERNEL_REPEATS, || {
            std::hint::black_box(csr.linear(&x, KERNEL_BATCH).ok());
        });
        let xt = Tensor::<2>::from_data(TensorData::new(x.clone(), [KERNEL_BATCH, d_in]), device);
        let wt = Tensor::<2>::from_data(TensorData::new(w, [d_in, d_out]), device);
        let dense_us = median_us(KERNEL_REPEATS, || {
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
