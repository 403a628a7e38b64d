//! `cargo xtask repro lottery`: Frankle & Carbin 2019 on LeNet-300-100. Iterative magnitude
//! pruning, layer by layer (20 % of the remaining hidden weights and 10 % of the output layer's
//! per round), rewinding the survivors to their initial values before each retraining; the
//! control trains the same masks from a fresh random initialization. Then the paper's own
//! measure over seeds: each run's early-stopping epoch on a validation split held out of the
//! training set, and its test accuracy there, for the dense network, the ticket at 21 % of the
//! weights and its reinitialization.

use burn::tensor::Device;
use ember_prune::{PruneConfig, Rounds, Scope, iterative_prune, prune, rewind};
use ember_tensor::{LabeledData, LrSchedule, evaluate, masks, set_masks, train_with_hook};
use ember_zoo::{Dataset, MlpConfig, ModelConfig, Split, TrainConfig, train};
use serde::Serialize;

use super::plot::{Series, line_chart};
use super::trained::{Recipe, trained};
use super::{
    Bound, Claim, CommonArgs, EVAL_BATCH, QUICK_TEST, QUICK_TRAIN, Report, Spread,
    test_accuracy as accuracy, verdict,
};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Seed of the ticket's initialization, dropout and shuffling.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Pruning rounds: 15 reaches 3.6 % of the weights.
    #[arg(long, default_value_t = 15)]
    rounds: usize,
    /// Epochs of each training run (the paper trains 50,000 iterations of batch 60, about 50
    /// epochs, and reports the early-stopping iteration; at 10 the random reinitialization
    /// ties the ticket at one level).
    #[arg(long, default_value_t = 20)]
    epochs: usize,
    /// Seeds of the early-stopping comparison (each its own dense network and ticket).
    #[arg(long, default_value_t = 3)]
    seeds: u64,
    /// Training images held out as the validation split early stopping reads (the paper's
    /// 5,000).
    #[arg(long, default_value_t = 5_000)]
    validation: usize,
}

/// The paper's per-round pruning rates: hidden layers and the output layer.
const HIDDEN_RATE: f64 = 0.2;
const OUTPUT_RATE: f64 = 0.1;
/// Frankle & Carbin's LeNet recipe: Adam at 1.2e-3, batch 60.
const LEARNING_RATE: f64 = 1.2e-3;
const BATCH: usize = 60;
/// The levels the claims are checked at (percent of weights remaining).
const AT_21: f64 = 21.1;
const AT_3_6: f64 = 3.6;
const TARGET_AT_3_6_PP: f64 = 0.5;

#[derive(Serialize)]
struct Resolved<'a> {
    common: &'a CommonArgs,
    data_dir: String,
    model: &'a ModelConfig,
    training: &'a TrainConfig,
    rounds: &'a Rounds,
    output_layer: &'a str,
}

struct Round {
    remaining: f64,
    ticket: f64,
    reinit: Option<f64>,
}

/// One run's early-stopping point: the epoch of its best validation accuracy (the first, on
/// ties) and its test accuracy then.
#[derive(Debug, Clone, Copy)]
struct EarlyStop {
    epoch: usize,
    test: f64,
}

/// One seed's early-stopping accuracies: the dense network, the ticket at 21 % of the
/// weights and its random reinitialization.
struct SeedRun {
    seed: u64,
    dense: EarlyStop,
    ticket: EarlyStop,
    reinit: EarlyStop,
    remaining: f64,
    /// Training images held out for validation.
    validation: usize,
}

/// Everything the experiment measures.
struct Results {
    dense: f64,
    rounds: Vec<Round>,
    early_stopping: Vec<SeedRun>,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let common = &args.common;
    let device = common.backend.device()?;
    let (data, data_dir) = common.load_data()?;
    let out = common.out_dir("lottery");
    std::fs::create_dir_all(&out)?;
    let mlp = MlpConfig::lenet_300_100(data.train.rows * data.train.cols, data.classes);
    let output_layer = format!("Mlp.layers.{}.weight", mlp.hidden.len());
    let config = ModelConfig::Mlp(mlp);
    let (epochs, rounds) = if common.quick {
        (1, args.rounds.min(8))
    } else {
        (args.epochs, args.rounds)
    };
    let training = TrainConfig {
        epochs,
        batch_size: BATCH,
        learning_rate: LEARNING_RATE,
        schedule: LrSchedule::Constant,
        seed: args.seed,
        ..TrainConfig::default()
    };
    let schedule =
        Rounds::geometric(HIDDEN_RATE, rounds)?.with_layer_rate(&output_layer, OUTPUT_RATE)?;
    let mut results = compute(args, &config, &training, &schedule, &data, &device)?;
    results.early_stopping =
        compute_early_stopping(args, &config, &training, &schedule, &data, &device)?;
    let report = render(common, &results, epochs);
    std::fs::write(out.join("lottery.svg"), plot(&results))?;
    report.write_on_data(
        common,
        &out,
        &Resolved {
            common,
            data_dir: data_dir.display().to_string(),
            model: &config,
            training: &training,
            rounds: &schedule,
            output_layer: &output_layer,
        },
    )?;
    println!(
        "dense {:.2} %; {}",
        results.dense,
        results
            .rounds
            .iter()
            .map(|r| format!("{:.1}%: {:.2}", r.remaining, r.ticket))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

fn compute(
    args: &Args,
    config: &ModelConfig,
    training: &TrainConfig,
    schedule: &Rounds,
    data: &Dataset,
    device: &Device,
) -> anyhow::Result<Results> {
    let common = &args.common;
    eprintln!(
        "lottery: dense LeNet-300-100, {} epochs per run, {} rounds",
        training.epochs,
        schedule.len()
    );
    let recipe = Recipe::new(config, training, data, common);
    let dense = trained(&recipe, data, common, Some(0), device)?;
    let init = dense
        .snapshot
        .ok_or_else(|| anyhow::anyhow!("no initial weights"))?;
    let dense_acc = accuracy(&dense.model, data, device)?;
    eprintln!("dense: {dense_acc:.2} %");

    let mut rounds = vec![];
    iterative_prune(
        dense.model,
        &data.train,
        schedule,
        &PruneConfig::global_magnitude(0.0).with_scope(Scope::Layer),
        training,
        Some(&init),
        device,
        |round| {
            let remaining = round.report.remaining() * 100.0;
            let ticket = accuracy(round.model, data, device)?;
            // The control: the same masks on a fresh initialization, at the levels the claims
            // are about.
            let reinit = if remaining <= AT_21 + 0.05 {
                device.seed(args.seed + 1_000 + round.round as u64);
                let fresh = set_masks(config.init(device)?, &masks(round.model))?;
                let (control, _) = train(fresh, &data.train, training, device)?;
                Some(accuracy(&control, data, device)?)
            } else {
                None
            };
            eprintln!(
                "round {}: {remaining:.1} % remaining, ticket {ticket:.2} %{}",
                round.round,
                reinit.map_or(String::new(), |a| format!(", random reinit {a:.2} %"))
            );
            rounds.push(Round {
                remaining,
                ticket,
                reinit,
            });
            Ok::<_, anyhow::Error>(())
        },
    )?;
    Ok(Results {
        dense: dense_acc,
        rounds,
        early_stopping: vec![],
    })
}

/// Train `model` as `training` says on `train`, evaluating on `validation` and `test` after
/// every epoch; the trained model and its early-stopping point.
fn train_early_stopping<M: ember_tensor::Classifier>(
    model: M,
    splits: [&Split; 3],
    training: &TrainConfig,
    device: &Device,
) -> anyhow::Result<(M, EarlyStop)> {
    let [train_split, validation, test] = splits;
    let steps_per_epoch = train_split.len().div_ceil(training.batch_size);
    let mut history: Vec<(f64, f64)> = vec![];
    let (model, _) = train_with_hook(model, train_split, training, device, |step, model: M| {
        if step % steps_per_epoch == 0 {
            let valid = model.valid();
            let v = evaluate(&valid, validation, EVAL_BATCH, device)?.accuracy;
            let t = evaluate(&valid, test, EVAL_BATCH, device)?.accuracy;
            history.push((v, t));
        }
        Ok::<_, anyhow::Error>(model)
    })?;
    // The first epoch of the best validation accuracy.
    let (epoch, &(_, test)) = history
        .iter()
        .enumerate()
        .rev()
        .max_by(|a, b| a.1.0.total_cmp(&b.1.0))
        .ok_or_else(|| anyhow::anyhow!("no epoch trained"))?;
    Ok((
        model,
        EarlyStop {
            epoch: epoch + 1,
            test,
        },
    ))
}

/// Over seeds, with a validation split held out of the training set: the dense network, the
/// rounds of iterative pruning down to 21 % of the weights, and that ticket's random
/// reinitialization, each at its early-stopping epoch.
fn compute_early_stopping(
    args: &Args,
    config: &ModelConfig,
    training: &TrainConfig,
    schedule: &Rounds,
    data: &Dataset,
    device: &Device,
) -> anyhow::Result<Vec<SeedRun>> {
    let held_out = args.validation.min(data.train.len() / 10);
    let (train_split, validation) = data.train.split_at(data.train.len() - held_out);
    let splits = [&train_split, &validation, &data.test];
    let base = PruneConfig::global_magnitude(0.0).with_scope(Scope::Layer);
    let mut runs = vec![];
    for seed in args.seed..args.seed + args.seeds.max(1) {
        let training = TrainConfig {
            seed,
            ..training.clone()
        };
        eprintln!("lottery: early stopping, seed {seed}: dense");
        device.seed(seed);
        let init = config.init(device)?;
        let (dense, dense_es) = train_early_stopping(init.clone(), splits, &training, device)?;
        let mut model = dense;
        let mut ticket = None;
        for round in 0..schedule.len() {
            let (pruned, report) = prune(model, &schedule.config(round, &base))?;
            let remaining = report.remaining() * 100.0;
            let (trained, es) =
                train_early_stopping(rewind(&pruned, init.clone())?, splits, &training, device)?;
            eprintln!(
                "  round {}: {remaining:.1} % remaining, ticket {:.2} % at epoch {}",
                round + 1,
                es.test,
                es.epoch
            );
            if remaining <= AT_21 + 0.05 {
                ticket = Some((es, remaining, masks(&trained)));
                break;
            }
            model = trained;
        }
        let Some((ticket, remaining, ticket_masks)) = ticket else {
            anyhow::bail!("the rounds stop before {AT_21} % of the weights");
        };
        device.seed(seed + 1_000);
        let fresh = set_masks(config.init(device)?, &ticket_masks)?;
        let (_, reinit) = train_early_stopping(fresh, splits, &training, device)?;
        eprintln!(
            "  seed {seed}: dense {:.2} %, ticket {:.2} %, reinit {:.2} % (early stopping)",
            dense_es.test, ticket.test, reinit.test
        );
        runs.push(SeedRun {
            seed,
            dense: dense_es,
            ticket,
            reinit,
            remaining,
            validation: held_out,
        });
    }
    Ok(runs)
}

fn render(common: &CommonArgs, results: &Results, epochs: usize) -> Report {
    let dense_acc = results.dense;
    let es_runs = &results.early_stopping;
    let results = &results.rounds;
    // The round whose remaining weights round to `level` (the paper's levels are rounded to
    // a tenth of a percent); none when the run stopped before it.
    let at = |level: f64| results.iter().find(|r| (r.remaining - level).abs() < 0.05);
    let mut report = Report::new("Lottery tickets: LeNet-300-100 on MNIST (Frankle & Carbin 2019)");
    if common.quick {
        report.section(
            "Quick run",
            &format!(
                "`--quick`: {QUICK_TRAIN} training images, {QUICK_TEST} test images, 1 epoch per run, \
                 at most 8 rounds. A smoke test, not the published figures."
            ),
        );
    }
    let mut rows = vec![vec![
        "0".into(),
        "100.0".into(),
        format!("{dense_acc:.2}"),
        "-".into(),
    ]];
    rows.extend(results.iter().enumerate().map(|(i, r)| {
        vec![
            (i + 1).to_string(),
            format!("{:.1}", r.remaining),
            format!("{:.2}", r.ticket),
            r.reinit.map_or("-".into(), |a| format!("{a:.2}")),
        ]
    }));
    report.table(
        "Winning tickets against random reinitialization",
        &[
            "round",
            "weights remaining %",
            "ticket accuracy %",
            "random reinit accuracy %",
        ],
        &rows,
    );
    let controlled: Vec<&Round> = results.iter().filter(|r| r.reinit.is_some()).collect();
    let tickets_win = controlled
        .iter()
        .all(|r| r.reinit.is_some_and(|a| a < r.ticket));
    let matching = controlled.iter().filter(|r| r.ticket >= dense_acc).count();
    let mut claims = String::new();
    report.metric("dense_acc", dense_acc);
    if let Some(r) = at(AT_21) {
        report.metric("ticket_acc_at_21pct", r.ticket);
        if let Some(a) = r.reinit {
            report.metric("reinit_acc_at_21pct", a);
        }
        claims += &format!(
            "- At {:.1} % of the weights the ticket reaches {:.2} % against the dense {dense_acc:.2} % \
             (match or beat: {}).\n",
            r.remaining,
            r.ticket,
            verdict(common.quick, r.ticket >= dense_acc)
        );
        report.claim(
            Claim::new(
                common.quick,
                format!(
                    "Frankle & Carbin: a ticket at {:.1} % of the weights against the dense network",
                    r.remaining
                ),
                format!("{:.2} % against {dense_acc:.2} %", r.ticket),
                "at least dense",
                r.ticket >= dense_acc,
            )
            .paper("matches or beats dense down to about 3.6 % of the weights"),
        );
    }
    report.claim(
        Claim::new(
            common.quick,
            format!("Frankle & Carbin: random reinitialization below the ticket at every level to {AT_21} %"),
            format!("{} levels, ticket ahead at {}", controlled.len(), controlled.iter().filter(|r| r.reinit.is_some_and(|a| a < r.ticket)).count()),
            "ahead at every level",
            tickets_win && !controlled.is_empty(),
        )
        .paper("reinitialized tickets learn slower and reach lower accuracy"),
    );
    claims += &format!(
        "- Random reinitialization below the ticket at every level at or below {AT_21} %: {} \
         ({} levels); the ticket matches or beats dense at {matching} of them.\n",
        verdict(common.quick, tickets_win && !controlled.is_empty()),
        controlled.len(),
    );
    if let Some(r) = at(AT_3_6) {
        report.metric("ticket_acc_at_3_6pct", r.ticket);
        let gap = r.ticket - dense_acc;
        claims += &format!(
            "- At {:.1} % of the weights the ticket minus dense is {gap:+.2} pp (target: no more \
             than {TARGET_AT_3_6_PP} pp below: {}; the paper: back to the dense network's accuracy \
             there).\n",
            r.remaining,
            verdict(common.quick, gap >= -TARGET_AT_3_6_PP)
        );
    }
    report.section("Claims", &claims);
    render_early_stopping(&mut report, common, es_runs);
    report.section(
        "Recipe",
        &format!(
            "Adam at a constant {LEARNING_RATE}, batch {BATCH}, {epochs} epochs per run, accuracy at the \
             end of training (the paper reports the early-stopping iteration). Each round prunes \
             {:.0} % of the remaining weights of each hidden layer and {:.0} % of the output layer's \
             by magnitude, rewinds the survivors to the initialization and retrains. The control \
             draws a new initialization (another seed) for the same masks. Plot: `lottery.svg`.",
            HIDDEN_RATE * 100.0,
            OUTPUT_RATE * 100.0
        ),
    );
    report
}

/// The early-stopping comparison over seeds, the paper's measure.
fn render_early_stopping(report: &mut Report, common: &CommonArgs, runs: &[SeedRun]) {
    let Some(first) = runs.first() else {
        return;
    };
    let n = runs.len();
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            let show = |es: EarlyStop| format!("{:.2} (epoch {})", es.test, es.epoch);
            vec![
                r.seed.to_string(),
                show(r.dense),
                show(r.ticket),
                show(r.reinit),
            ]
        })
        .collect();
    report.table(
        &format!(
            "Early stopping on a validation split held out of the training set ({n} seeds): test accuracy % at the epoch of the best validation accuracy, the ticket at {:.1} % of the weights",
            first.remaining
        ),
        &["seed", "dense", "ticket", "random reinit"],
        &rows,
    );
    let spread = |f: fn(&SeedRun) -> f64| Spread::of(&runs.iter().map(f).collect::<Vec<_>>());
    let ticket_minus_dense = spread(|r| r.ticket.test - r.dense.test);
    let ticket_minus_reinit = spread(|r| r.ticket.test - r.reinit.test);
    report.claim(
        Claim::over_seeds(
            common.quick,
            format!(
                "Frankle & Carbin: the ticket at {:.1} % of the weights minus dense, at early stopping ({n} seeds)",
                first.remaining
            ),
            ticket_minus_dense,
            " pp",
            Bound::AtLeast(0.0),
        )
        .paper("the ticket at least as accurate as dense, at an earlier early-stopping iteration"),
    );
    report.claim(
        Claim::over_seeds(
            common.quick,
            format!(
                "Frankle & Carbin: the ticket at {:.1} % minus its random reinitialization, at early stopping ({n} seeds)",
                first.remaining
            ),
            ticket_minus_reinit,
            " pp",
            Bound::AtLeast(0.0),
        )
        .paper("reinitialized tickets learn slower and reach lower accuracy"),
    );
    let dense = spread(|r| r.dense.test);
    let ticket = spread(|r| r.ticket.test);
    let reinit = spread(|r| r.reinit.test);
    let dense_epoch = spread(|r| r.dense.epoch as f64);
    let ticket_epoch = spread(|r| r.ticket.epoch as f64);
    report.section(
        "Early stopping: how to read this",
        &format!(
            "The paper's measure: each run's early-stopping iteration on {} training images \
             held out for validation (here the epoch of the best validation accuracy; the paper \
             uses the validation loss), and its test accuracy there. Means over {n} seeds, each \
             its own initialization, dense network and ticket: dense {} % at epoch {}, ticket {} \
             % at epoch {}, random reinitialization {} %.",
            first.validation,
            dense.show(2),
            dense_epoch.show(1),
            ticket.show(2),
            ticket_epoch.show(1),
            reinit.show(2),
        ),
    );
    report.metric("dense_es_acc", dense.mean);
    report.metric("dense_es_acc_std", dense.std);
    report.metric("ticket_es_acc_at_21pct", ticket.mean);
    report.metric("ticket_es_acc_at_21pct_std", ticket.std);
    report.metric("reinit_es_acc_at_21pct", reinit.mean);
    report.metric("ticket_minus_dense_es_pp", ticket_minus_dense.mean);
    report.metric("ticket_minus_dense_es_pp_std", ticket_minus_dense.std);
    report.metric("dense_es_epoch", dense_epoch.mean);
    report.metric("ticket_es_epoch_at_21pct", ticket_epoch.mean);
}

/// Ticket and control accuracy against the weights remaining.
fn plot(results: &Results) -> String {
    let rounds = &results.rounds;
    let xs: Vec<f64> = rounds.iter().map(|r| r.remaining.log10()).collect();
    let ys: Vec<f64> = rounds.iter().map(|r| r.ticket).collect();
    let (cx, cy): (Vec<f64>, Vec<f64>) = rounds
        .iter()
        .filter_map(|r| r.reinit.map(|a| (r.remaining.log10(), a)))
        .unzip();
    line_chart(
        "LeNet-300-100: winning tickets and random reinitialization",
        "log10(weights remaining %)",
        "test accuracy (%)",
        &[
            Series::new("winning ticket", &xs, &ys).with_baseline(results.dense),
            Series::new("random reinit", &cx, &cy),
        ],
    )
}
