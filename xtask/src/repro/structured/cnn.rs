//! LeNet-5's filters: a fraction of each convolution's filters removed by every criterion
//! (L1, L2, first-order Taylor, APoZ, Shapley, and random over several seeds as the control),
//! the network rebuilt narrower and fine-tuned; the accuracy after the surgery over the
//! fraction removed, before any fine-tuning, is the plot.

use std::time::Instant;

use burn::module::Module;
use burn::tensor::Device;
use ember_prune::{
    Evidence, ShapleyConfig, StructuredConfig, UnitCriterion, keep_best, shapley_scores, shrink,
    unit_scores,
};
use ember_tensor::UnitGroup;
use ember_zoo::{Dataset, LeNet5, LeNet5Config, ModelConfig, TrainConfig, train};
use serde::Serialize;

use super::super::plot::{Series, line_chart};
use super::super::trained::{Recipe, trained};
use super::super::{CommonArgs, Report, Spread, round_pp, test_accuracy as accuracy};

/// How much of the training set the criteria that watch the model look at.
#[derive(Serialize, Clone, Copy)]
pub struct EvidenceSizes {
    /// Batches of Taylor and APoZ.
    pub batches: usize,
    pub batch_size: usize,
    /// Batches whose mean loss Shapley values are computed for.
    pub shapley_batches: usize,
    pub shapley_batch_size: usize,
    /// Permutations sampled per convolution.
    pub shapley_permutations: usize,
}

pub const EVIDENCE: EvidenceSizes = EvidenceSizes {
    batches: 8,
    batch_size: 128,
    shapley_batches: 2,
    shapley_batch_size: 256,
    shapley_permutations: 20,
};

/// Fractions of filters removed for the curve (0 is the dense model).
const CURVE: [f64; 4] = [0.0, 0.25, 0.5, 0.75];
/// Seeds of the random control.
const RANDOM_SEEDS: u64 = 3;

pub struct Setup {
    pub config: LeNet5Config,
    pub training: TrainConfig,
    pub finetune: TrainConfig,
    /// Fraction of each convolution's filters removed for the fine-tuned rows.
    pub fraction: f64,
    pub seed: u64,
}

/// One criterion's run.
struct Row {
    name: String,
    key: String,
    random: bool,
    score_seconds: f64,
    /// Accuracy after the surgery, before fine-tuning, at each fraction of [`CURVE`].
    curve: Vec<f64>,
    pruned: f64,
    finetuned: f64,
    /// One pass over the test set, fine-tuned model.
    eval_seconds: f64,
    /// Shapley only: mean standard error of the values, and their mean magnitude.
    shapley_error: Option<(f64, f64)>,
}

pub struct Results {
    dense: f64,
    dense_eval_seconds: f64,
    dense_params: usize,
    dense_macs: usize,
    pruned_params: usize,
    pruned_macs: usize,
    pub pruned_config: LeNet5Config,
    rows: Vec<Row>,
}

pub fn compute(
    common: &CommonArgs,
    setup: &Setup,
    data: &Dataset,
    device: &Device,
) -> anyhow::Result<Results> {
    let config = &setup.config;
    let recipe = Recipe::new(
        &ModelConfig::LeNet5(config.clone()),
        &setup.training,
        data,
        common,
    );
    eprintln!(
        "structured: dense LeNet-5, {} epochs",
        setup.training.epochs
    );
    let dense = trained(&recipe, data, common, None, device)?.lenet5()?;
    let (dense_acc, dense_eval_seconds) = timed_accuracy(&dense, data, device)?;
    let groups: Vec<UnitGroup> = config
        .unit_groups("")?
        .into_iter()
        .filter(|g| g.name.starts_with("conv"))
        .collect();
    let evidence = Evidence {
        data: &data.train,
        batches: EVIDENCE.batches,
        batch_size: EVIDENCE.batch_size,
        device,
    };
    let shapley_evidence = Evidence {
        batches: EVIDENCE.shapley_batches,
        batch_size: EVIDENCE.shapley_batch_size,
        ..evidence
    };
    let mut criteria = vec![
        ("L1 norm".to_string(), "l1".to_string(), UnitCriterion::L1),
        ("L2 norm".into(), "l2".into(), UnitCriterion::L2),
        (
            "first-order Taylor".into(),
            "taylor".into(),
            UnitCriterion::Taylor,
        ),
        ("APoZ".into(), "apoz".into(), UnitCriterion::Apoz),
        (
            "Shapley".into(),
            "shapley".into(),
            UnitCriterion::Shapley(ShapleyConfig {
                permutations: EVIDENCE.shapley_permutations,
                seed: setup.seed,
            }),
        ),
    ];
    for i in 0..RANDOM_SEEDS {
        let seed = setup.seed + i;
        criteria.push((
            format!("random (seed {seed})"),
            format!("random{i}"),
            UnitCriterion::Random { seed },
        ));
    }
    let cut = |criterion,
               scores: &ember_prune::UnitScores,
               fraction|
     -> anyhow::Result<(LeNet5, LeNet5Config)> {
        let kept = keep_best(&groups, scores, &StructuredConfig::new(criterion, fraction))?;
        let narrow = config.with_kept("", &kept);
        let model = shrink(&dense, &groups, &kept, narrow.init(device)?)?;
        Ok((model, narrow))
    };
    let mut rows = vec![];
    let mut pruned_config = config.clone();
    for (name, key, criterion) in criteria {
        let started = Instant::now();
        let (scores, shapley_error) = match criterion {
            UnitCriterion::Shapley(budget) => {
                let values = shapley_scores(&dense, &groups, &shapley_evidence, budget)?;
                let all = |m: &ember_prune::UnitScores| -> Vec<f64> {
                    m.values().flatten().copied().collect()
                };
                let mean_abs =
                    |v: Vec<f64>| v.iter().map(|x| x.abs()).sum::<f64>() / v.len() as f64;
                let error = (
                    mean_abs(all(&values.std_error)),
                    mean_abs(all(&values.scores)),
                );
                (values.scores, Some(error))
            }
            _ => (
                unit_scores(&dense, &groups, criterion, Some(&evidence))?,
                None,
            ),
        };
        let score_seconds = started.elapsed().as_secs_f64();
        let mut curve = vec![];
        for &fraction in &CURVE {
            curve.push(accuracy(
                &cut(criterion, &scores, fraction)?.0,
                data,
                device,
            )?);
        }
        let (pruned, narrow) = cut(criterion, &scores, setup.fraction)?;
        let pruned_acc = accuracy(&pruned, data, device)?;
        let (tuned, _) = train(pruned, &data.train, &setup.finetune, device)?;
        let (tuned_acc, eval_seconds) = timed_accuracy(&tuned, data, device)?;
        eprintln!(
            "structured: LeNet-5 {name}: filters {} and {}, {pruned_acc:.2} % -> fine-tuned {tuned_acc:.2} %",
            narrow.widths.conv1, narrow.widths.conv2
        );
        pruned_config = narrow;
        rows.push(Row {
            random: matches!(criterion, UnitCriterion::Random { .. }),
            name,
            key,
            score_seconds,
            curve,
            pruned: pruned_acc,
            finetuned: tuned_acc,
            eval_seconds,
            shapley_error,
        });
    }
    Ok(Results {
        dense: dense_acc,
        dense_eval_seconds,
        dense_params: dense.num_params(),
        dense_macs: config.macs()?,
        pruned_params: pruned_config.parameter_count()?,
        pruned_macs: pruned_config.macs()?,
        pruned_config,
        rows,
    })
}

fn timed_accuracy(model: &LeNet5, data: &Dataset, device: &Device) -> anyhow::Result<(f64, f64)> {
    let started = Instant::now();
    let acc = accuracy(model, data, device)?;
    Ok((acc, started.elapsed().as_secs_f64()))
}

impl Results {
    fn random(&self, pick: impl Fn(&Row) -> f64) -> Spread {
        let values: Vec<f64> = self.rows.iter().filter(|r| r.random).map(pick).collect();
        Spread::of(&values)
    }

    /// The criterion that is best by `pick`, not counting the random control.
    fn best(&self, pick: impl Fn(&Row) -> f64) -> &Row {
        self.rows
            .iter()
            .filter(|r| !r.random)
            .max_by(|a, b| pick(a).total_cmp(&pick(b)))
            .expect("the criteria are listed in compute")
    }

    pub fn summary(&self) -> String {
        let best = self.best(|r| r.finetuned);
        format!(
            "LeNet-5: dense {:.2} %, half the filters removed and fine-tuned: best {} {:.2} %, random {}",
            self.dense,
            best.name,
            best.finetuned,
            self.random(|r| r.finetuned).show(2)
        )
    }
}

/// How a criterion compares with the random control: beyond twice the control's spread over
/// seeds, or a tie.
pub(super) fn against_random(value: f64, random: Spread) -> String {
    let margin = round_pp(value - random.mean);
    let beyond = margin.abs() > 2.0 * random.std;
    format!(
        "{margin:+.2} pp over random ({}: {})",
        random.show(2),
        if beyond {
            "beyond twice its spread over seeds"
        } else {
            "within twice its spread, a tie"
        }
    )
}

pub fn render(report: &mut Report, common: &CommonArgs, setup: &Setup, results: &Results) {
    let narrow = &results.pruned_config.widths;
    let dense = &setup.config.widths;
    let mut rows = vec![vec![
        format!("dense ({} and {} filters)", dense.conv1, dense.conv2),
        format!("{:.2}", results.dense),
        "-".into(),
        "-".into(),
        "-".into(),
        format!("{:.2}", results.dense_eval_seconds),
    ]];
    rows.extend(results.rows.iter().map(|r| {
        vec![
            r.name.clone(),
            format!("{:.2}", r.pruned),
            format!("{:.2}", r.finetuned),
            format!("{:+.2}", round_pp(r.finetuned - results.dense)),
            format!("{:.2}", r.score_seconds),
            format!("{:.2}", r.eval_seconds),
        ]
    }));
    report.table(
        &format!(
            "LeNet-5: {:.0} % of each convolution's filters removed ({} -> {}, {} -> {}), {} epochs of fine-tuning at a constant {}",
            setup.fraction * 100.0,
            dense.conv1,
            narrow.conv1,
            dense.conv2,
            narrow.conv2,
            setup.finetune.epochs,
            setup.finetune.learning_rate
        ),
        &[
            "criterion",
            "after surgery %",
            "fine-tuned %",
            "change pp",
            "scoring s",
            "test pass s",
        ],
        &rows,
    );
    let curve_header: Vec<String> = CURVE
        .iter()
        .map(|f| format!("{:.0} % removed", f * 100.0))
        .collect();
    let mut header = vec!["criterion"];
    header.extend(curve_header.iter().map(String::as_str));
    let curve_rows: Vec<Vec<String>> = results
        .rows
        .iter()
        .map(|r| {
            std::iter::once(r.name.clone())
                .chain(r.curve.iter().map(|a| format!("{a:.2}")))
                .collect()
        })
        .collect();
    report.table(
        "LeNet-5: accuracy % right after the surgery, before fine-tuning (plot: `lenet5_filters.svg`)",
        &header,
        &curve_rows,
    );
    let best_tuned = results.best(|r| r.finetuned);
    let best_cut = results.best(|r| r.pruned);
    let shapley = results.rows.iter().find_map(|r| r.shapley_error).map_or(
        String::new(),
        |(error, magnitude)| {
            format!(
                " Shapley values come from {} sampled permutations per convolution on {} x {} \
                 training images: their standard error is {error:.4} on average, against a mean \
                 magnitude of {magnitude:.4}.",
                EVIDENCE.shapley_permutations,
                EVIDENCE.shapley_batches,
                EVIDENCE.shapley_batch_size
            )
        },
    );
    report.section(
        "LeNet-5: which criterion wins",
        &format!(
            "At the same budget ({} of {} parameters left, {:.0} % of the multiply-accumulates: \
             {} against {} per image), the best criterion after fine-tuning is {} at {:.2} %, \
             {}. Right after the surgery, before any fine-tuning, the best is {} at {:.2} %, {}. \
             Taylor and APoZ look at {} batches of {} training images.{shapley} One pass over \
             the test set takes {:.2} s dense on `{}`, measured once per model in the same run.{}",
            results.pruned_params,
            results.dense_params,
            100.0 * results.pruned_macs as f64 / results.dense_macs as f64,
            results.pruned_macs,
            results.dense_macs,
            best_tuned.name,
            best_tuned.finetuned,
            against_random(best_tuned.finetuned, results.random(|r| r.finetuned)),
            best_cut.name,
            best_cut.pruned,
            against_random(best_cut.pruned, results.random(|r| r.pruned)),
            EVIDENCE.batches,
            EVIDENCE.batch_size,
            results.dense_eval_seconds,
            common.backend,
            if common.quick {
                " On a quick run the model barely trained: the ranking means little."
            } else {
                ""
            }
        ),
    );
    report.metric("lenet5_dense_acc", results.dense);
    for r in &results.rows {
        report.metric(&format!("lenet5_filters_{}_acc", r.key), r.finetuned);
        report.metric(
            &format!("lenet5_filters_{}_before_finetune_acc", r.key),
            r.pruned,
        );
    }
    let random = results.random(|r| r.finetuned);
    report.metric("lenet5_filters_random_mean_acc", random.mean);
    report.metric("lenet5_filters_random_std_pp", random.std);
    report.metric(
        "lenet5_filters_best_over_random_pp",
        round_pp(best_tuned.finetuned - random.mean),
    );
    report.metric("lenet5_filters_params", results.pruned_params as f64);
    report.metric(
        "lenet5_filters_macs_ratio",
        results.pruned_macs as f64 / results.dense_macs as f64,
    );
}

pub fn plot(results: &Results) -> String {
    let xs: Vec<f64> = CURVE.iter().map(|f| f * 100.0).collect();
    let mut series: Vec<Series> = results
        .rows
        .iter()
        .filter(|r| !r.random)
        .map(|r| Series::new(&r.name, &xs, &r.curve))
        .collect();
    let random: Vec<f64> = (0..CURVE.len())
        .map(|i| results.random(|r| r.curve[i]).mean)
        .collect();
    series.push(Series::new("random (mean of seeds)", &xs, &random));
    line_chart(
        "LeNet-5: filters removed from both convolutions, before fine-tuning",
        "filters removed (%)",
        "test accuracy (%)",
        &series,
    )
}
