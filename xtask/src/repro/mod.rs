//! `cargo xtask repro <experiment>`: each experiment writes `target/repro/<name>/report.md`
//! (tables, the machine, the resolved config) and `metrics.json` (a flat object of named
//! figures: accuracies in percent, drops in percentage points `_pp`, times in seconds, ratios
//! as plain numbers).

pub mod all;
mod baseline;
mod distill;
mod export;
mod learner;
mod lottery;
pub mod machine;
mod memory;
pub mod minilm;
mod plot;
mod prune;
mod qat;
mod quant;
mod structured;
mod trained;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use ember_tensor::BackendKind;
use ember_zoo::Dataset;

/// The experiments.
#[derive(Subcommand)]
pub enum Experiment {
    /// Train LeNet-300-100 and LeNet-5 on MNIST: the dense baselines every other run compares to.
    Baseline(baseline::Args),
    /// Hinton's distillation on MNIST and the capacity gap, over several seeds.
    Distill(distill::Args),
    /// Magnitude pruning of LeNet-300-100 and LeNet-5, Han et al.'s iterative pruning,
    /// rewinding, ablations, sparse sizes and the sparse kernel.
    Prune(prune::Args),
    /// Structured pruning of LeNet-300-100: half its neurons removed, the model rebuilt smaller
    /// and fine-tuned, and its speed.
    Structured(structured::Args),
    /// Frankle & Carbin's lottery tickets on LeNet-300-100, with the random-reinit control.
    Lottery(lottery::Args),
    /// Quantization-aware training of LeNet-5 at W8A8, W4A4 and W2A8 (observed ranges and
    /// LSQ) against post-training quantization, accuracy against bits, and binary networks
    /// (XNOR-Net and XNOR-Net++ scales) against float, their size and the XNOR-popcount
    /// kernel's speed.
    Qat(qat::Args),
    /// Post-training quantization of LeNet-300-100 and LeNet-5: dynamic and static int8, int4,
    /// fp16 / bf16, every observer, per-layer sensitivity and sizes on disk.
    Quant(quant::Args),
    /// LeNet-300-100 and LeNet-5 in float, static int8 and pruned form exported to ONNX and
    /// re-run by tract and ONNX Runtime: their agreement with Ember, sizes and times.
    Export(export::Args),
    /// Ember's passes on burn-train's Learner against Ember's own loop, over seeds: a pruned
    /// fine-tune (masks exact), a distillation, and the fine-tune on two devices with sharded
    /// optimizer state.
    Learner(learner::Args),
    /// Peak training memory and step time of LeNet-5 and the residual network in f32, bf16
    /// and f16 mixed precision, with gradient checkpointing and with the optimizer offloaded,
    /// and LeNet-5's accuracy trained in bf16 mixed precision.
    Memory(memory::Args),
    /// sentence-transformers' all-MiniLM-L6-v2: its embeddings against an independent
    /// implementation, then dynamic int8 and int4 against f32 (fidelity, latency, size).
    Minilm(minilm::Args),
    /// Every experiment above in turn, then one report of all their claims
    /// (`target/repro/report.md`).
    All(all::Args),
}

pub fn run(experiment: Experiment) -> anyhow::Result<()> {
    match experiment {
        Experiment::Baseline(args) => baseline::run(&args),
        Experiment::Distill(args) => distill::run(&args),
        Experiment::Prune(args) => prune::run(&args),
        Experiment::Lottery(args) => lottery::run(&args),
        Experiment::Structured(args) => structured::run(&args),
        Experiment::Qat(args) => qat::run(&args),
        Experiment::Quant(args) => quant::run(&args),
        Experiment::Export(args) => export::run(&args),
        Experiment::Memory(args) => memory::run(&args),
        Experiment::Learner(args) => learner::run(&args),
        Experiment::Minilm(args) => minilm::run(&args),
        Experiment::All(args) => all::run(&args),
    }
}

/// Options every experiment takes.
#[derive(clap::Args, Debug, Clone, serde::Serialize)]
pub struct CommonArgs {
    /// Backend to run on: flex, ndarray or wgpu.
    #[arg(long, default_value = "flex", value_parser = parse_backend)]
    pub backend: BackendKind,
    /// Directory with the dataset in IDX layout (default: the vendored MNIST).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// A short run on a subset, for CI and smoke tests: its figures are not the published ones.
    #[arg(long)]
    pub quick: bool,
    /// Where reports go (default: target/repro).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Train every model, even where an earlier run saved one trained the same way.
    #[arg(long)]
    pub retrain: bool,
}

/// A second host backend beside `backend`, for runs that need two devices (the optimizer's in
/// `repro memory`'s offload row, the second data-parallel device of `repro learner`).
pub fn second_backend(backend: BackendKind) -> BackendKind {
    match backend {
        BackendKind::Flex => BackendKind::NdArray,
        _ => BackendKind::Flex,
    }
}

fn parse_backend(name: &str) -> Result<BackendKind, String> {
    name.parse().map_err(|e: ember_tensor::Error| e.to_string())
}

/// Images per evaluation batch.
pub const EVAL_BATCH: usize = 1_000;

/// Test accuracy (percent) of a model on the dataset's test split.
pub fn test_accuracy(
    model: &impl ember_tensor::Classifier,
    data: &Dataset,
    device: &burn::tensor::Device,
) -> anyhow::Result<f64> {
    Ok(ember_tensor::evaluate(model, &data.test, EVAL_BATCH, device)?.accuracy)
}

/// How a report marks a target: met or not, or not judged on a quick run.
pub fn verdict(quick: bool, ok: bool) -> &'static str {
    match (quick, ok) {
        (true, _) => "n/a (quick)",
        (false, true) => "yes",
        (false, false) => "NO",
    }
}

/// A difference of accuracies in percentage points, rounded to hundredths (one test image in
/// 10,000), so that a difference of ten images reads 0.10, not 0.1000000000000085, and never
/// `-0.00`.
pub fn round_pp(difference: f64) -> f64 {
    // `+ 0.0` turns a rounded -0.0 into 0.0.
    (difference * 100.0).round() / 100.0 + 0.0
}

pub use ember_tensor::timing::{interleaved_median_us, median_us};

/// The median forward-pass time in µs of two models (dense and pruned, or two conversions),
/// taking turns on one fixed batch of `shape` (pixel-like values in [0, 1)), in the same run.
pub fn forward_medians_us<M: ember_zoo::Classifier>(
    dense: &M,
    pruned: &M,
    shape: [usize; 4],
    repeats: usize,
    device: &burn::tensor::Device,
) -> (f64, f64) {
    let x: Vec<f32> = (0..shape.iter().product::<usize>())
        .map(|i| ((i * 37) % 255) as f32 / 255.0)
        .collect();
    let images =
        burn::tensor::Tensor::<4>::from_data(burn::tensor::TensorData::new(x, shape), device);
    let run = |model: &M| {
        let logits = model.forward(images.clone());
        let _ = ember_tensor::device::sync(device);
        drop(logits);
    };
    let times = interleaved_median_us(repeats, &mut [&mut || run(dense), &mut || run(pruned)]);
    (times[0], times[1])
}

/// Mean and sample standard deviation.
#[derive(Debug, Clone, Copy)]
pub struct Spread {
    pub mean: f64,
    pub std: f64,
}

impl Spread {
    pub fn of(values: &[f64]) -> Spread {
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let var = if values.len() > 1 {
            values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)
        } else {
            0.0
        };
        Spread {
            mean,
            std: var.sqrt(),
        }
    }

    pub fn show(self, decimals: usize) -> String {
        format!("{:.*} ± {:.*}", decimals, self.mean, decimals, self.std)
    }
}

/// Subset sizes of `--quick`.
pub const QUICK_TRAIN: usize = 6_000;
pub const QUICK_TEST: usize = 2_000;

impl CommonArgs {
    /// The dataset (`--data`, or the vendored MNIST), cut to the quick subset with `--quick`,
    /// and the directory it came from.
    pub fn load_data(&self) -> anyhow::Result<(Dataset, PathBuf)> {
        let dir = self.data_dir();
        let mut data =
            Dataset::load_idx_dir(&dir).with_context(|| format!("loading {}", dir.display()))?;
        if self.quick {
            data.train = data.train.take(QUICK_TRAIN);
            data.test = data.test.take(QUICK_TEST);
        }
        Ok((data, dir))
    }

    /// Whether the run is on the vendored MNIST, the dataset every published figure and target
    /// is for: on a user's `--data`, experiments report their figures but judge no claim
    /// ([`Report::write_on_data`]).
    pub fn on_mnist(&self) -> bool {
        self.data.is_none()
    }

    /// `--data`, or the vendored MNIST.
    pub fn data_dir(&self) -> PathBuf {
        self.data
            .clone()
            .unwrap_or_else(ember_zoo::data::vendored_mnist_dir)
    }

    /// Where trained models shared between experiments are kept ([`trained`]).
    pub fn models_dir(&self) -> PathBuf {
        self.out_dir("models")
    }

    pub fn out_dir(&self, experiment: &str) -> PathBuf {
        self.out
            .clone()
            .unwrap_or_else(|| workspace_root().join("target/repro"))
            .join(experiment)
    }
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// A report under construction: markdown sections, flat metrics and the claims it judged.
pub struct Report {
    title: String,
    markdown: String,
    metrics: BTreeMap<String, f64>,
    claims: Vec<Claim>,
}

/// A claim an experiment checks: a published figure or a target, ours beside it, and whether
/// ours meets it (`None` on a quick run, whose figures are not the published ones). Every
/// experiment writes its claims to `claims.json`; `repro all` gathers them into one table.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Claim {
    /// What is claimed.
    pub what: String,
    /// Our figure.
    pub ours: String,
    /// The target ours is judged by.
    pub target: String,
    /// Met, not met, or not judged (quick).
    pub met: Option<bool>,
    /// Judged over seeds, the mean meets the target but not by more than one standard
    /// deviation: a tie, not a success (`met` is then `Some(false)`).
    #[serde(default)]
    pub tie: bool,
    /// The paper's figure, where there is one.
    pub paper: Option<String>,
    /// PyTorch's, where one was measured (the issues' figures).
    pub pytorch: Option<String>,
}

/// Which side of a target a figure must be on.
#[derive(Debug, Clone, Copy)]
pub enum Bound {
    /// At most this.
    AtMost(f64),
    /// At least this.
    AtLeast(f64),
}

impl Claim {
    /// `what`, judged by `target`: `ok` says whether `ours` meets it, not judged on a quick run.
    pub fn new(
        quick: bool,
        what: impl Into<String>,
        ours: impl Into<String>,
        target: impl Into<String>,
        ok: bool,
    ) -> Self {
        Self {
            what: what.into(),
            ours: ours.into(),
            target: target.into(),
            met: (!quick).then_some(ok),
            tie: false,
            paper: None,
            pytorch: None,
        }
    }

    /// `what`, judged over seeds: met when `spread`'s mean is on the right side of `bound` by
    /// more than one standard deviation, a tie when only the mean is.
    pub fn over_seeds(
        quick: bool,
        what: impl Into<String>,
        spread: Spread,
        unit: &str,
        bound: Bound,
    ) -> Self {
        let (beyond, mean_meets, target) = match bound {
            Bound::AtMost(t) => (
                spread.mean + spread.std <= t,
                spread.mean <= t,
                format!("<= {t}{unit}, beyond the seed spread"),
            ),
            Bound::AtLeast(t) => (
                spread.mean - spread.std >= t,
                spread.mean >= t,
                format!(">= {t}{unit}, beyond the seed spread"),
            ),
        };
        let mut claim = Self::new(
            quick,
            what,
            format!("{}{unit}", spread.show(2)),
            target,
            beyond,
        );
        claim.tie = !quick && !beyond && mean_meets;
        claim
    }

    /// The paper's figure.
    pub fn paper(mut self, figure: impl Into<String>) -> Self {
        self.paper = Some(figure.into());
        self
    }

    /// PyTorch's figure.
    pub fn pytorch(mut self, figure: impl Into<String>) -> Self {
        self.pytorch = Some(figure.into());
        self
    }

    /// The verdict as reports write it: `yes`, `NO`, `n/a (quick)`.
    pub fn verdict(&self) -> &'static str {
        match self.met {
            None => "n/a (quick)",
            Some(true) => "yes",
            Some(false) if self.tie => "tie (within the seed spread)",
            Some(false) => "NO",
        }
    }
}

impl Report {
    pub fn new(title: &str) -> Self {
        Self {
            title: title.to_string(),
            markdown: String::new(),
            metrics: BTreeMap::new(),
            claims: Vec::new(),
        }
    }

    /// Record a claim for `claims.json` (and `repro all`), without a table of its own.
    pub fn claim(&mut self, claim: Claim) {
        self.claims.push(claim);
    }

    /// A table of claims (what, ours, the paper's and PyTorch's figures where any claim has
    /// one, the target, met), each recorded as [`Report::claim`] records it.
    pub fn claims_table(&mut self, heading: &str, claims: Vec<Claim>) {
        let paper = claims.iter().any(|c| c.paper.is_some());
        let pytorch = claims.iter().any(|c| c.pytorch.is_some());
        let mut header = vec!["what", "ours"];
        header.extend(paper.then_some("paper"));
        header.extend(pytorch.then_some("PyTorch"));
        header.extend(["target", "met"]);
        let rows: Vec<Vec<String>> = claims
            .iter()
            .map(|c| {
                let mut row = vec![c.what.clone(), c.ours.clone()];
                let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
                if paper {
                    row.push(or_dash(&c.paper));
                }
                if pytorch {
                    row.push(or_dash(&c.pytorch));
                }
                row.extend([c.target.clone(), c.verdict().to_string()]);
                row
            })
            .collect();
        self.table(heading, &header, &rows);
        self.claims.extend(claims);
    }

    pub fn metric(&mut self, key: &str, value: f64) {
        self.metrics.insert(key.to_string(), value);
    }

    pub fn section(&mut self, heading: &str, body: &str) {
        let _ = write!(self.markdown, "\n## {heading}\n\n{}\n", body.trim_end());
    }

    /// A markdown table.
    pub fn table(&mut self, heading: &str, header: &[&str], rows: &[Vec<String>]) {
        let mut body = format!(
            "| {} |\n|{}|\n",
            header.join(" | "),
            vec!["---"; header.len()].join("|")
        );
        for row in rows {
            let _ = writeln!(body, "| {} |", row.join(" | "));
        }
        self.section(heading, &body);
    }

    /// [`Report::write`] for an experiment on the dataset `common` names, whose claims (the
    /// targets, the papers' and PyTorch's figures) are MNIST's: on a user's `--data` the report
    /// keeps its figures, `claims.json` holds no claim, and the report says why.
    pub fn write_on_data(
        mut self,
        common: &CommonArgs,
        dir: &Path,
        config: &impl serde::Serialize,
    ) -> anyhow::Result<()> {
        if !common.on_mnist() {
            self.claims.clear();
            self.section(
                "Claims not judged",
                &format!(
                    "`--data {}` is not the vendored MNIST. The published figures and targets \
                     are MNIST's, so this run judges no claim; a verdict in a table above \
                     compares this dataset's figure with MNIST's target.",
                    common.data_dir().display()
                ),
            );
        }
        self.write(dir, config)
    }

    /// Write `report.md` and `metrics.json` into `dir`, with the machine and the resolved
    /// config appended to the report.
    pub fn write(mut self, dir: &Path, config: &impl serde::Serialize) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        self.section("Machine", &machine::describe());
        let config = serde_json::to_string_pretty(config)?;
        self.section("Resolved config", &format!("```json\n{config}\n```"));
        let report = format!("# {}\n{}", self.title, self.markdown);
        std::fs::write(dir.join("report.md"), report)?;
        std::fs::write(
            dir.join("metrics.json"),
            serde_json::to_string_pretty(&self.metrics)? + "\n",
        )?;
        std::fs::write(
            dir.join("claims.json"),
            serde_json::to_string_pretty(&self.claims)? + "\n",
        )?;
        eprintln!("wrote {}/report.md and metrics.json", dir.display());
        Ok(())
    }
}
