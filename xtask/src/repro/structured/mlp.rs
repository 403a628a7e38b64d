//! LeNet-300-100's neurons: half of each hidden layer removed by L2 norm, L1 norm or at random,
//! the network rebuilt smaller (784-150-50-10) and fine-tuned, against the dense baseline, the
//! same small architecture trained from scratch, and the speed of a batch of 256 before and
//! after the surgery.

use burn::tensor::Device;
use ember_prune::{StructuredConfig, UnitCriterion, select_units, shrink};
use ember_zoo::{Dataset, Mlp, MlpConfig, ModelConfig, TrainConfig, train};

use super::super::trained::{Recipe, trained};
use super::super::{Claim, CommonArgs, Report, round_pp, test_accuracy as accuracy};
use super::forward_medians_us;

/// PyTorch on this kind of machine (the figures): dense 98.29 %, half the neurons
/// removed by L2 norm and fine-tuned 98.20 %, the small architecture from scratch 97.98 %,
/// 1.8x faster at batch 256.
const PYTORCH_PRUNED: f64 = 98.20;
const PYTORCH_SCRATCH: f64 = 97.98;
const PYTORCH_SPEEDUP: f64 = 1.8;
const TARGET_DROP_PP: f64 = 0.2;
const TARGET_SPEEDUP: f64 = 1.8;
const SPEED_BATCH: usize = 256;
const SPEED_REPEATS: usize = 51;

/// One criterion's row.
struct Row {
    criterion: &'static str,
    key: &'static str,
    pruned: f64,
    finetuned: f64,
}

/// Everything the MLP part measures.
pub struct Results {
    dense: f64,
    rows: Vec<Row>,
    scratch: f64,
    dense_us: f64,
    pruned_us: f64,
    dense_params: usize,
    pruned_params: usize,
}

pub fn compute(
    common: &CommonArgs,
    config: &MlpConfig,
    training: &TrainConfig,
    finetune: &TrainConfig,
    structured: &StructuredConfig,
    data: &Dataset,
    device: &Device,
) -> anyhow::Result<(Results, MlpConfig)> {
    let recipe = Recipe::new(&ModelConfig::Mlp(config.clone()), training, data, common);
    eprintln!(
        "structured: dense LeNet-300-100, {} epochs",
        training.epochs
    );
    let dense = trained(&recipe, data, common, None, device)?.mlp()?;
    let dense_acc = accuracy(&dense, data, device)?;
    let groups = config.unit_groups("");
    let mut rows = vec![];
    // The L2-pruned, fine-tuned model (the first row) and its config: the one timed.
    let mut first_pruned = None;
    for (criterion, name, key) in [
        (UnitCriterion::L2, "L2 norm", "l2"),
        (UnitCriterion::L1, "L1 norm", "l1"),
        (
            UnitCriterion::Random {
                seed: training.seed,
            },
            "random",
            "random",
        ),
    ] {
        let cut = StructuredConfig {
            criterion,
            ..structured.clone()
        };
        let kept = select_units(&dense, &groups, &cut)?;
        let pruned_config = config.with_kept("", &kept);
        let pruned: Mlp = shrink(&dense, &groups, &kept, pruned_config.init(device)?)?;
        let pruned_acc = accuracy(&pruned, data, device)?;
        let (tuned, _) = train(pruned, &data.train, finetune, device)?;
        let tuned_acc = accuracy(&tuned, data, device)?;
        eprintln!(
            "structured: {name}: widths {:?}, {pruned_acc:.2} % -> fine-tuned {tuned_acc:.2} %",
            pruned_config.hidden
        );
        first_pruned.get_or_insert((tuned, pruned_config));
        rows.push(Row {
            criterion: name,
            key,
            pruned: pruned_acc,
            finetuned: tuned_acc,
        });
    }
    let (pruned, pruned_config) =
        first_pruned.ok_or_else(|| anyhow::anyhow!("no criterion ran"))?;

    eprintln!("structured: the small architecture from scratch");
    let scratch_recipe = Recipe::new(
        &ModelConfig::Mlp(pruned_config.clone()),
        training,
        data,
        common,
    );
    let scratch = trained(&scratch_recipe, data, common, None, device)?.mlp()?;
    let scratch_acc = accuracy(&scratch, data, device)?;

    let (dense_us, pruned_us) = forward_medians_us(
        &dense,
        &pruned,
        [SPEED_BATCH, 1, 1, config.input],
        SPEED_REPEATS,
        device,
    );
    Ok((
        Results {
            dense: dense_acc,
            rows,
            scratch: scratch_acc,
            dense_us,
            pruned_us,
            dense_params: burn::module::Module::num_params(&dense),
            pruned_params: burn::module::Module::num_params(&pruned),
        },
        pruned_config,
    ))
}

pub fn render(report: &mut Report, common: &CommonArgs, results: &Results, finetune: &TrainConfig) {
    let l2 = &results.rows[0];
    let drop = round_pp(results.dense - l2.finetuned);
    let speedup = results.dense_us / results.pruned_us;
    let mut rows = vec![vec![
        "dense 784-300-100-10".into(),
        format!("{:.2}", results.dense),
        "-".into(),
        "-".into(),
    ]];
    rows.extend(results.rows.iter().map(|r| {
        vec![
            format!("half the neurons removed, {}", r.criterion),
            format!("{:.2}", r.pruned),
            format!("{:.2}", r.finetuned),
            format!("{:+.2}", round_pp(r.finetuned - results.dense)),
        ]
    }));
    rows.push(vec![
        "the small architecture from scratch".into(),
        "-".into(),
        format!("{:.2}", results.scratch),
        format!("{:+.2}", round_pp(results.scratch - results.dense)),
    ]);
    report.table(
        &format!(
            "LeNet-300-100: accuracy % ({} epochs of fine-tuning at a constant {})",
            finetune.epochs, finetune.learning_rate
        ),
        &["model", "after surgery", "fine-tuned", "change pp"],
        &rows,
    );
    report.claims_table(
        "LeNet-300-100: targets",
        vec![
            Claim::new(
                common.quick,
                "LeNet-300-100, half its neurons removed (L2), fine-tuned: accuracy drop",
                format!("{drop:.2} pp"),
                format!("<= {TARGET_DROP_PP} pp"),
                drop <= TARGET_DROP_PP,
            )
            .pytorch(format!(
                "{:.2} pp (scratch {PYTORCH_SCRATCH})",
                98.29 - PYTORCH_PRUNED
            )),
            Claim::new(
                common.quick,
                format!("LeNet-300-100, half its neurons removed: speed-up at batch {SPEED_BATCH}"),
                format!("{speedup:.2}x"),
                format!(">= {TARGET_SPEEDUP}x"),
                speedup >= TARGET_SPEEDUP,
            )
            .pytorch(format!("{PYTORCH_SPEEDUP}x")),
        ],
    );
    report.section(
        "LeNet-300-100: how to read this",
        &format!(
            "The surgery builds a new, smaller model ({} parameters against {}): its matrices \
             are smaller, so it is faster on every backend, unlike masks. The speed-up is the \
             median of {SPEED_REPEATS} forward passes (the two models taking turns) of one batch of {SPEED_BATCH} on `{}`, \
             dense over pruned ({:.0} µs against {:.0} µs), measured in the same run.",
            results.pruned_params,
            results.dense_params,
            common.backend,
            results.dense_us,
            results.pruned_us
        ),
    );
    report.metric("mlp_dense_acc", results.dense);
    for r in &results.rows {
        report.metric(&format!("mlp_half_{}_acc", r.key), r.finetuned);
        report.metric(&format!("mlp_half_{}_before_finetune_acc", r.key), r.pruned);
    }
    report.metric("mlp_half_acc_drop_pp", drop);
    report.metric("mlp_half_scratch_acc", results.scratch);
    report.metric("mlp_half_speedup_b256", speedup);
    report.metric("mlp_half_params", results.pruned_params as f64);
}

impl Results {
    /// The L2 row's fine-tuned accuracy and the speed-up, for the summary line.
    pub fn summary(&self) -> String {
        format!(
            "LeNet-300-100: dense {:.2} %, half the neurons removed by L2 and fine-tuned {:.2} %, {:.2}x faster at batch {SPEED_BATCH}",
            self.dense,
            self.rows[0].finetuned,
            self.dense_us / self.pruned_us
        )
    }
}
