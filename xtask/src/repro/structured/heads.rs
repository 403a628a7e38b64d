//! The transformer's attention heads: half of every layer's heads removed by the L2 norm of
//! their weights, by first-order Taylor (Michel et al. 2019's head importance), by Shapley
//! values, and at random over several seeds as the control; each network rebuilt with fewer
//! heads, fine-tuned, the first-order Taylor one saved, reloaded and timed at batch 256.

use burn::module::Module;
use burn::tensor::Device;
use ember_prune::{
    Evidence, ShapleyConfig, StructuredConfig, UnitCriterion, keep_best, shapley_scores, shrink,
    unit_scores,
};
use ember_tensor::UnitGroup;
use ember_zoo::{Dataset, Model, ModelConfig, TrainConfig, TransformerConfig, train};
use std::path::Path;

use super::super::trained::{Recipe, trained};
use super::super::{CommonArgs, Report, Spread, round_pp, test_accuracy as accuracy};
use super::cnn::against_random;
use super::{forward_medians_us, reloaded_accuracy};

/// Half of every layer's heads.
const FRACTION: f64 = 0.5;
/// Seeds of the random control.
const RANDOM_SEEDS: u64 = 3;
/// Shapley's budget: permutations per layer, on two batches of 256 training images.
const SHAPLEY_PERMUTATIONS: usize = 10;
const BATCH: usize = 256;
const REPEATS: usize = 21;

struct Row {
    name: String,
    key: String,
    random: bool,
    /// Each layer's kept heads.
    kept: Vec<Vec<usize>>,
    pruned: f64,
    finetuned: f64,
}

pub struct Results {
    pub dense_config: TransformerConfig,
    pub pruned_config: TransformerConfig,
    dense: f64,
    rows: Vec<Row>,
    reloaded: f64,
    dense_params: usize,
    pruned_params: usize,
    dense_macs: usize,
    pruned_macs: usize,
    dense_us: f64,
    pruned_us: f64,
}

pub fn compute(
    common: &CommonArgs,
    training: &TrainConfig,
    finetune: &TrainConfig,
    data: &Dataset,
    out: &Path,
    device: &Device,
) -> anyhow::Result<Results> {
    let dense_config =
        TransformerConfig::small(1, [data.train.rows, data.train.cols], data.classes);
    let config = ModelConfig::Transformer(dense_config.clone());
    eprintln!("structured: dense transformer, {} epochs", training.epochs);
    let recipe = Recipe::new(&config, training, data, common);
    let dense = trained(&recipe, data, common, None, device)?.model;
    let dense_acc = accuracy(&dense, data, device)?;
    let groups: Vec<UnitGroup> = config
        .unit_groups()?
        .into_iter()
        .filter(|g| g.name.ends_with(".heads"))
        .collect();
    let evidence = Evidence {
        data: &data.train,
        batches: 8,
        batch_size: 128,
        device,
    };
    let seed = training.seed;
    let mut criteria = vec![
        ("L2 norm".to_string(), "l2".to_string(), UnitCriterion::L2),
        (
            "first-order Taylor (head importance)".into(),
            "taylor".into(),
            UnitCriterion::Taylor,
        ),
        (
            format!("Shapley ({SHAPLEY_PERMUTATIONS} permutations)"),
            "shapley".into(),
            UnitCriterion::Shapley(ShapleyConfig {
                permutations: SHAPLEY_PERMUTATIONS,
                seed,
            }),
        ),
    ];
    for i in 0..RANDOM_SEEDS {
        criteria.push((
            format!("random (seed {})", seed + i),
            format!("random{i}"),
            UnitCriterion::Random { seed: seed + i },
        ));
    }
    let mut rows = vec![];
    let mut taylor = None;
    for (name, key, criterion) in criteria {
        let scores = match criterion {
            UnitCriterion::Shapley(budget) => {
                let shapley = Evidence {
                    batches: 2,
                    batch_size: 256,
                    ..evidence
                };
                shapley_scores(&dense, &groups, &shapley, budget)?.scores
            }
            _ => unit_scores(&dense, &groups, criterion, Some(&evidence))?,
        };
        let kept = keep_best(
            &groups,
            &scores,
            &StructuredConfig::new(criterion, FRACTION),
        )?;
        let narrow = config.with_kept(&kept);
        let small: Model = shrink(&dense, &groups, &kept, narrow.init(device)?)?;
        let pruned_acc = accuracy(&small, data, device)?;
        let (tuned, _) = train(small, &data.train, finetune, device)?;
        let tuned_acc = accuracy(&tuned, data, device)?;
        eprintln!(
            "structured: transformer {name}: {pruned_acc:.2} % -> fine-tuned {tuned_acc:.2} %"
        );
        if criterion == UnitCriterion::Taylor {
            taylor = Some((tuned, narrow));
        }
        rows.push(Row {
            random: matches!(criterion, UnitCriterion::Random { .. }),
            name,
            key,
            kept: groups.iter().map(|g| kept[&g.name].clone()).collect(),
            pruned: pruned_acc,
            finetuned: tuned_acc,
        });
    }
    let (tuned, narrow) = taylor.ok_or_else(|| anyhow::anyhow!("Taylor is a criterion"))?;
    let ModelConfig::Transformer(pruned_config) = narrow.clone() else {
        anyhow::bail!("with_kept changed the kind of model")
    };
    let path = out.join("transformer-half-heads.bpk");
    let reloaded_acc = reloaded_accuracy(tuned.clone(), &narrow, &path, data, device)?;
    let (dense_us, pruned_us) = forward_medians_us(
        &dense,
        &tuned,
        [BATCH, 1, data.train.rows, data.train.cols],
        REPEATS,
        device,
    );
    Ok(Results {
        dense: dense_acc,
        rows,
        reloaded: reloaded_acc,
        dense_params: dense.num_params(),
        pruned_params: tuned.num_params(),
        dense_macs: dense_config.macs()?,
        pruned_macs: pruned_config.macs()?,
        dense_config,
        pruned_config,
        dense_us,
        pruned_us,
    })
}

impl Results {
    fn random(&self, pick: impl Fn(&Row) -> f64) -> Spread {
        let values: Vec<f64> = self.rows.iter().filter(|r| r.random).map(pick).collect();
        Spread::of(&values)
    }

    fn row(&self, key: &str) -> &Row {
        self.rows
            .iter()
            .find(|r| r.key == key)
            .expect("the criteria are listed in compute")
    }

    pub fn summary(&self) -> String {
        let taylor = self.row("taylor");
        format!(
            "transformer: dense {:.2} %, half the heads removed by Taylor {:.2} % -> fine-tuned {:.2} % (random {}), {:.2}x faster at batch {BATCH}",
            self.dense,
            taylor.pruned,
            taylor.finetuned,
            self.random(|r| r.finetuned).show(2),
            self.dense_us / self.pruned_us
        )
    }
}

pub fn render(report: &mut Report, common: &CommonArgs, finetune: &TrainConfig, r: &Results) {
    let d = &r.dense_config;
    let mut rows = vec![vec![
        format!("dense ({:?} heads)", d.heads),
        "-".into(),
        format!("{:.2}", r.dense),
        "-".into(),
        "-".into(),
    ]];
    rows.extend(r.rows.iter().map(|row| {
        vec![
            row.name.clone(),
            format!("{:?}", row.kept),
            format!("{:.2}", row.pruned),
            format!("{:.2}", row.finetuned),
            format!("{:+.2}", round_pp(row.finetuned - r.dense)),
        ]
    }));
    report.table(
        &format!(
            "Transformer: half of each layer's {} heads removed ({} layers, width {}, heads of {}), {} epoch(s) of fine-tuning at a constant {}",
            d.heads[0],
            d.heads.len(),
            d.width,
            d.head_width,
            finetune.epochs,
            finetune.learning_rate
        ),
        &[
            "criterion",
            "heads kept per layer",
            "after surgery %",
            "fine-tuned %",
            "change pp",
        ],
        &rows,
    );
    let random_pruned = r.random(|row| row.pruned);
    let random_tuned = r.random(|row| row.finetuned);
    let taylor = r.row("taylor");
    let speedup = r.dense_us / r.pruned_us;
    report.section(
        "Transformer: how to read this",
        &format!(
            "Each MNIST row is a token (28 tokens of 28 pixels); two pre-norm encoder layers of \
             Ember's `SelfAttention` (burn's `MultiHeadAttention` cannot hold fewer heads than \
             its width allows; `SelfAttention::from_burn` converts one) and a ReLU feed-forward \
             block. A head is a unit of its layer's dependency group: its query, key and value \
             columns and the output projection's rows go together. First-order Taylor on the \
             value projection is Michel et al.'s head importance. Right after the surgery, \
             Taylor keeps {:.2} %, {}; after fine-tuning {:.2} %, {}. The Taylor-pruned model \
             has {} parameters against {} and {:.0} % of the multiply-accumulates ({} against \
             {} per image); saved and reloaded it gives {:.2} %; a batch of {BATCH} runs \
             {speedup:.2}x faster on `{}` ({:.0} µs against {:.0} µs, medians of {REPEATS}, the \
             two models taking turns). One training seed.",
            taylor.pruned,
            against_random(taylor.pruned, random_pruned),
            taylor.finetuned,
            against_random(taylor.finetuned, random_tuned),
            r.pruned_params,
            r.dense_params,
            100.0 * r.pruned_macs as f64 / r.dense_macs as f64,
            r.pruned_macs,
            r.dense_macs,
            r.reloaded,
            common.backend,
            r.dense_us,
            r.pruned_us
        ),
    );
    report.metric("transformer_dense_acc", r.dense);
    for row in &r.rows {
        report.metric(
            &format!("transformer_half_heads_{}_before_finetune_acc", row.key),
            row.pruned,
        );
        report.metric(
            &format!("transformer_half_heads_{}_acc", row.key),
            row.finetuned,
        );
    }
    report.metric(
        "transformer_half_heads_taylor_acc_change_pp",
        round_pp(taylor.finetuned - r.dense),
    );
    report.metric("transformer_half_heads_reloaded_acc", r.reloaded);
    report.metric("transformer_half_heads_params", r.pruned_params as f64);
    report.metric(
        "transformer_half_heads_macs_ratio",
        r.pruned_macs as f64 / r.dense_macs as f64,
    );
    report.metric("transformer_half_heads_speedup_b256", speedup);
}
