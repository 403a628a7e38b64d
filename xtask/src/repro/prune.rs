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
    Bound, Claim, CommonArgs, EVAL_BATCH, QUICK_TEST, QUICK_TRAIN, Report, Spread, median_us,
    round_pp, test_accuracy as accuracy,
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
    /// Han et al.'s retraining: Adam's constant rate in every round (the paper retrains at
    /// its training rate, not a fine-tuning one).
    #[arg(long, default_value_t = 1e-3)]
    han_lr: f64,
    /// Han et al.'s retraining: L2 regularization (Adam's coupled weight decay), as the paper
    /// retrains with L2.
    #[arg(long, default_value_t = 1e-5)]
    han_weight_decay: f64,
    /// Seeds of Han et al.'s rounds and of the rewinding comparison (initialization and
    /// batch order: each seed trains its own dense network).
    #[arg(long, default_value_t = 3)]
    seeds: u64,
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
/// Retraining budgets of the rewinding comparison, in epochs (at most the dense training's):
/// learning-rate rewinding replays the schedule from `epochs - budget`.
const REWIND_BUDGETS: [usize; 4] = [1, 3, 5, 10];
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
    han_retrain: &'a TrainConfig,
    rewind_budgets: &'a [usize],
    seeds: Vec<u64>,
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
    /// Han et al.'s retraining in every round.
    han_retrain: TrainConfig,
    /// The retraining budgets (epochs) of the rewinding curve.
    rewind_budgets: Vec<usize>,
    /// Seeds of Han et al. and of rewinding.
    seeds: Vec<u64>,
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
            han_retrain: TrainConfig {
                epochs: ft_epochs,
                learning_rate: args.han_lr,
                weight_decay: args.han_weight_decay,
                schedule: LrSchedule::Constant,
                ..dense_training.clone()
            },
            rewind_budgets: {
                let mut budgets: Vec<usize> =
                    REWIND_BUDGETS.iter().map(|&b| b.min(epochs)).collect();
                budgets.dedup();
                budgets
            },
            seeds: (args.seed..args.seed + args.seeds.max(1)).collect(),
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

/// Han et al.'s iterative pruning of one seed's dense network: (sparsity, accuracy) after
/// each round, and the end.
struct Han {
    dense: f64,
    rounds: Vec<(f64, f64)>,
    accuracy: f64,
    sparsity: f64,
}

impl Han {
    /// Error added by pruning, in points.
    fn drop_pp(&self) -> f64 {
        self.dense - self.accuracy
    }
}

/// Fine-tuning and learning-rate rewinding at `REWIND_SPARSITY` for one retraining budget,
/// one accuracy per seed.
struct Budget {
    epochs: usize,
    finetune: Vec<f64>,
    lr_rewind: Vec<f64>,
}

impl Budget {
    /// Learning-rate rewinding minus fine-tuning, per seed (the seeds pair the two runs: the
    /// same pruned network and batches).
    fn lr_minus_finetune(&self) -> Vec<f64> {
        self.lr_rewind
            .iter()
            .zip(&self.finetune)
            .map(|(lr, ft)| lr - ft)
            .collect()
    }
}

/// The recoveries at `REWIND_SPARSITY`: the curve over budgets, and weight rewinding at the
/// fine-tuning budget, one accuracy per seed.
struct Recovery {
    budgets: Vec<Budget>,
    weight_rewind: Vec<f64>,
}

impl Recovery {
    /// The largest budget: the paper's best rewinds a large part of training.
    fn headline(&self) -> &Budget {
        self.budgets.last().expect("at least one budget")
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
    /// One per seed.
    han: Vec<Han>,
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
    std::fs::write(out.join("rewinding.svg"), plot_rewinding(&results))?;
    let resolved = Resolved {
        common,
        data_dir: data_dir.display().to_string(),
        mlp: &setup.mlp,
        cnn: &setup.cnn,
        dense_training: &setup.dense_training,
        finetune: &setup.finetune,
        lr_rewind: &setup.lr_rewind,
        han_retrain: &setup.han_retrain,
        rewind_budgets: &setup.rewind_budgets,
        seeds: setup.seeds.clone(),
        levels: &LEVELS,
        han_rounds: &setup.han_rounds,
        gradual: &setup.gradual,
        prune: &setup.global,
    };
    report.write_on_data(common, &out, &resolved)?;
    let headline = results.recovery.headline();
    let han_drop = Spread::of(&results.han.iter().map(Han::drop_pp).collect::<Vec<_>>());
    println!(
        "MLP dense {:.2} %; Han {:.1} % sparse: {} pp over {} seeds; LR rewinding - \
         fine-tuning over {} epochs: {} pp; CNN dense {:.2} %",
        results.mlp.dense,
        results.han[0].sparsity * 100.0,
        han_drop.show(2),
        results.han.len(),
        headline.epochs,
        Spread::of(&headline.lr_minus_finetune()).show(2),
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
    // The baseline's LeNet-300-100 (with its weights at `rewind_step`, the same recipe as the
    // first seed's below, so that it is trained once).
    let mlp = trained(&mlp_recipe, data, common, Some(setup.rewind_step), device)?.model;
    let mlp_sweep = sweep(
        "LeNet-300-100",
        &mlp,
        data,
        &setup.finetune,
        device,
        out,
        "mlp",
    )?;

    // Han et al. and the rewinding comparison over seeds, each seed's own dense network
    // (initialization and batch order), the first one the network above.
    let mut han = vec![];
    let mut budgets: Vec<Budget> = setup
        .rewind_budgets
        .iter()
        .map(|&epochs| Budget {
            epochs,
            finetune: vec![],
            lr_rewind: vec![],
        })
        .collect();
    let mut weight_rewind = vec![];
    for &seed in &setup.seeds {
        let dense_training = TrainConfig {
            seed,
            ..setup.dense_training.clone()
        };
        let recipe = Recipe::new(&setup.mlp, &dense_training, data, common);
        let dense = trained(&recipe, data, common, Some(setup.rewind_step), device)?;
        let snapshot = dense
            .snapshot
            .clone()
            .ok_or_else(|| anyhow::anyhow!("no snapshot at step {}", setup.rewind_step))?;
        let dense_model = dense.model;
        let dense_acc = accuracy(&dense_model, data, device)?;

        eprintln!(
            "prune: seed {seed}: Han et al., iterative to {HAN_SPARSITY} in {HAN_ROUNDS} rounds"
        );
        let mut rounds = vec![];
        let retrain = TrainConfig {
            seed,
            ..setup.han_retrain.clone()
        };
        let pruned = iterative_prune(
            dense_model.clone(),
            &data.train,
            &setup.han_rounds,
            &setup.global,
            &retrain,
            None,
            device,
            |round| {
                let acc = evaluate(round.model, &data.test, EVAL_BATCH, device)?.accuracy;
                eprintln!(
                    "  round {}: {:.1} % -> {acc:.2} %",
                    round.round,
                    round.sparsity * 100.0
                );
                rounds.push((round.sparsity, acc));
                Ok::<_, anyhow::Error>(())
            },
        )?;
        han.push(Han {
            dense: dense_acc,
            rounds,
            accuracy: accuracy(&pruned, data, device)?,
            sparsity: ember_prune::sparsity_report(&pruned, &setup.global.layers)?.sparsity(),
        });

        eprintln!("prune: seed {seed}: fine-tuning against rewinding at {REWIND_SPARSITY}");
        let (pruned90, _) = prune(dense_model, &setup.at(REWIND_SPARSITY))?;
        for budget in &mut budgets {
            let finetune = TrainConfig {
                seed,
                epochs: budget.epochs,
                ..setup.finetune.clone()
            };
            let lr_rewind = TrainConfig {
                seed,
                epochs: budget.epochs,
                ..setup.lr_rewind.clone()
            };
            let (tuned, _) = train(pruned90.clone(), &data.train, &finetune, device)?;
            budget.finetune.push(accuracy(&tuned, data, device)?);
            let (rewound, _) = train(pruned90.clone(), &data.train, &lr_rewind, device)?;
            budget.lr_rewind.push(accuracy(&rewound, data, device)?);
        }
        let lr_rewind = TrainConfig {
            seed,
            ..setup.lr_rewind.clone()
        };
        let (tuned, _) = train(
            rewind(&pruned90, snapshot)?,
            &data.train,
            &lr_rewind,
            device,
        )?;
        weight_rewind.push(accuracy(&tuned, data, device)?);
    }
    let recovery = Recovery {
        budgets,
        weight_rewind,
    };

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

/// Han et al.'s rounds against the paper, over seeds.
fn render_han(report: &mut Report, args: &Args, setup: &Setup, results: &Results) {
    let retrain = &setup.han_retrain;
    let runs = &results.han;
    let n = runs.len();
    let han_rows: Vec<Vec<String>> = (0..setup.han_rounds.len())
        .map(|i| {
            let at = |f: fn(&(f64, f64)) -> f64| {
                Spread::of(
                    &runs
                        .iter()
                        .filter_map(|r| r.rounds.get(i).map(f))
                        .collect::<Vec<_>>(),
                )
            };
            vec![
                (i + 1).to_string(),
                format!("{:.1}", at(|r| r.0).mean * 100.0),
                at(|r| r.1).show(2),
            ]
        })
        .collect();
    let sparsity = runs.first().map_or(0.0, |r| r.sparsity);
    report.table(
        &format!(
            "Han et al. 2015: iterative prune-retrain of LeNet-300-100 to {:.1}x fewer weights ({n} seeds, mean ± std)",
            1.0 / (1.0 - sparsity)
        ),
        &["round", "sparsity %", "accuracy %"],
        &han_rows,
    );
    let drops: Vec<f64> = runs.iter().map(Han::drop_pp).collect();
    let drop = Spread::of(&drops);
    let dense = Spread::of(&runs.iter().map(|r| r.dense).collect::<Vec<_>>());
    let pruned = Spread::of(&runs.iter().map(|r| r.accuracy).collect::<Vec<_>>());
    report.section(
        "Han et al. against the paper",
        &format!(
            "Dense error {:.2} %, pruned error {:.2} % at {:.1} % sparsity, means over {n} seeds \
             (each its own dense network); pruning adds {} pp of error (per seed: {}). Paper: \
             {:.2} % -> {:.2} %. Each round prunes the same fraction of the remaining weights \
             globally and retrains {} epochs with Adam at a constant {} (the paper retrains at \
             its training rate) with L2 regularization {} (the paper's retraining keeps L2).",
            100.0 - dense.mean,
            100.0 - pruned.mean,
            sparsity * 100.0,
            drop.show(2),
            drops
                .iter()
                .map(|d| format!("{d:+.2}"))
                .collect::<Vec<_>>()
                .join(", "),
            PAPER_HAN_ERRORS.0,
            PAPER_HAN_ERRORS.1,
            retrain.epochs,
            retrain.learning_rate,
            retrain.weight_decay,
        ),
    );
    report.claim(
        Claim::over_seeds(
            args.common.quick,
            format!(
                "Han et al.: LeNet-300-100 pruned to {:.1} % sparsity, error above dense ({n} seeds)",
                sparsity * 100.0
            ),
            drop,
            " pp",
            Bound::AtMost(TARGET_HAN_DROP_PP),
        )
        .paper(format!(
            "{:.2} % -> {:.2} % error ({:+.2} pp)",
            PAPER_HAN_ERRORS.0,
            PAPER_HAN_ERRORS.1,
            PAPER_HAN_ERRORS.1 - PAPER_HAN_ERRORS.0
        )),
    );
    report.metric("han_sparsity", sparsity);
    report.metric("han_acc", pruned.mean);
    report.metric("han_acc_drop_pp", round_pp(drop.mean));
    report.metric("han_acc_drop_pp_std", drop.std);
}

/// Fine-tuning against learning-rate rewinding over retraining budgets, and weight
/// rewinding, over seeds.
fn render_recovery(report: &mut Report, args: &Args, setup: &Setup, results: &Results) {
    let common = &args.common;
    let epochs = setup.dense_training.epochs;
    let ft_epochs = setup.finetune.epochs;
    let recovery = &results.recovery;
    let n = recovery.weight_rewind.len();
    let per_seed = |r: &[f64]| {
        r.iter()
            .map(|a| format!("{a:+.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let rows: Vec<Vec<String>> = recovery
        .budgets
        .iter()
        .map(|b| {
            let differences = b.lr_minus_finetune();
            vec![
                format!("{} (from epoch {})", b.epochs, epochs - b.epochs),
                Spread::of(&b.finetune).show(2),
                Spread::of(&b.lr_rewind).show(2),
                Spread::of(&differences).show(2),
                per_seed(&differences),
            ]
        })
        .collect();
    report.table(
        &format!(
            "Recovery at {:.0} % sparsity, LeNet-300-100 ({n} seeds, mean ± std): fine-tuning at a constant {} against learning-rate rewinding (the original cosine replayed from an earlier epoch), for the same budget",
            REWIND_SPARSITY * 100.0,
            args.finetune_lr
        ),
        &[
            "retraining epochs",
            "fine-tuning %",
            "LR rewinding %",
            "rewinding minus fine-tuning pp",
            "per seed",
        ],
        &rows,
    );
    let weight_rewound = Spread::of(&recovery.weight_rewind);
    let headline = recovery.headline();
    let differences = Spread::of(&headline.lr_minus_finetune());
    report.section(
        "Rewinding against fine-tuning",
        &format!(
            "Renda et al. retrain for a real fraction of the original training and find \
             learning-rate rewinding at least as good as fine-tuning for the same budget, best \
             when it rewinds a large part (the plot, `rewinding.svg`, shows the curve over the \
             budget). Each seed trains its own dense network and prunes it; within a seed both \
             recoveries start from the same pruned network and see the same batches, so the \
             paired difference is the one to judge by. Weight rewinding to epoch {} with the \
             same {ft_epochs} epochs of rates: {} %.",
            epochs - ft_epochs.min(epochs),
            weight_rewound.show(2),
        ),
    );
    report.claim(
        Claim::over_seeds(
            common.quick,
            format!(
                "Renda et al.: learning-rate rewinding minus fine-tuning at {:.0} % sparsity, {} epochs of retraining ({n} seeds)",
                REWIND_SPARSITY * 100.0,
                headline.epochs
            ),
            differences,
            " pp",
            Bound::AtLeast(0.0),
        )
        .paper("rewinding at least as good as fine-tuning"),
    );
    let at = |budget: &Budget, f: fn(&Budget) -> &Vec<f64>| Spread::of(f(budget)).mean;
    report.metric("finetune_acc_at_90", at(headline, |b| &b.finetune));
    report.metric("lr_rewind_acc_at_90", at(headline, |b| &b.lr_rewind));
    report.metric("weight_rewind_acc_at_90", weight_rewound.mean);
    report.metric("lr_rewind_minus_finetune_pp", round_pp(differences.mean));
    report.metric("lr_rewind_minus_finetune_pp_std", differences.std);
    report.metric("lr_rewind_budget_epochs", headline.epochs as f64);
}

/// Accuracy against the retraining budget, both recoveries (means over seeds).
fn plot_rewinding(results: &Results) -> String {
    let budgets = &results.recovery.budgets;
    let xs: Vec<f64> = budgets.iter().map(|b| b.epochs as f64).collect();
    let mean = |f: fn(&Budget) -> &Vec<f64>| -> Vec<f64> {
        budgets.iter().map(|b| Spread::of(f(b)).mean).collect()
    };
    line_chart(
        "LeNet-300-100 at 90 % sparsity: recovery against its budget (mean over seeds)",
        "retraining epochs",
        "test accuracy %",
        &[
            Series::new("learning-rate rewinding", &xs, &mean(|b| &b.lr_rewind)),
            Series::new("fine-tuning", &xs, &mean(|b| &b.finetune)),
        ],
    )
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
