//! `cargo xtask repro learner`: Ember's passes run by burn-train's Learner against Ember's own
//! loop on MNIST, over seeds: LeNet-300-100 pruned to 90 % and fine-tuned (its masks checked
//! exact afterwards), a small student distilled from the baseline LeNet-300-100, and the pruned
//! fine-tune again on two devices (flex and ndarray) with the optimizer's state sharded between
//! them (burn-train's `OptimSharded`, ZeRO stage 1).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use burn::module::Module;
use burn::optim::AdamConfig;
use burn::tensor::Device;
use burn::train::{
    ExecutionStrategy, InferenceStep, Learner, LearnerModel, MultiDeviceOptim, SupervisedTraining,
    TrainStep, TrainingStrategy,
};
use ember_distill::TeacherOutputs;
use ember_distill::loss::SoftTargetConfig;
use ember_prune::{PruneConfig, prune};
use ember_tensor::{LrSchedule, mask::read_flags, masks, param_values};
use ember_train::data::{ClassBatch, loaders};
use ember_train::{Distillation, Supervised};
use ember_zoo::{Dataset, LabeledData, Mlp, MlpConfig, ModelConfig, TrainConfig, train};
use serde::Serialize;

use super::trained::{Recipe, trained};
use super::{Claim, CommonArgs, Report, Spread, round_pp, test_accuracy};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    common: CommonArgs,
    #[arg(long, default_value_t = 3)]
    seeds: u64,
    /// Epochs of every fine-tune and distillation.
    #[arg(long, default_value_t = 2)]
    epochs: usize,
    #[arg(long, default_value_t = 0.9)]
    sparsity: f64,
}

#[derive(Serialize)]
struct Setup {
    baseline: TrainConfig,
    finetune: TrainConfig,
    prune: PruneConfig,
    student: MlpConfig,
    soft_targets: SoftTargetConfig,
    seeds: Vec<u64>,
}

/// Accuracy and seconds of one run.
#[derive(Clone, Copy)]
struct Run {
    accuracy: f64,
    seconds: f64,
}

/// One comparison: the same pass by two trainers over the seeds.
struct Pair {
    key: &'static str,
    what: &'static str,
    ember_label: &'static str,
    ember: Vec<Run>,
    learner_label: &'static str,
    learner: Vec<Run>,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let common = &args.common;
    let device = common.backend.device()?;
    let second = super::second_backend(common.backend).device()?;
    let (data, data_dir) = common.load_data()?;
    let out = common.out_dir("learner");
    let epochs = if common.quick { 1 } else { args.epochs };
    let seeds: Vec<u64> = (0..if common.quick { 1 } else { args.seeds.max(1) }).collect();
    let setup = Setup {
        baseline: TrainConfig {
            epochs: if common.quick { 1 } else { 10 },
            seed: 42,
            ..TrainConfig::default()
        },
        finetune: TrainConfig {
            epochs,
            learning_rate: 1e-3,
            schedule: LrSchedule::Constant,
            progress: false,
            ..TrainConfig::default()
        },
        prune: PruneConfig::global_magnitude(args.sparsity),
        student: MlpConfig {
            input: data.train.rows * data.train.cols,
            hidden: vec![30],
            classes: data.classes,
            dropout: 0.0,
        },
        soft_targets: SoftTargetConfig {
            temperature: 4.0,
            alpha: 0.7,
        },
        seeds: seeds.clone(),
    };
    let mlp_config = ModelConfig::Mlp(MlpConfig::lenet_300_100(
        data.train.rows * data.train.cols,
        data.classes,
    ));
    eprintln!("learner: the baseline LeNet-300-100");
    let dense = trained(
        &Recipe::new(&mlp_config, &setup.baseline, &data, common),
        &data,
        common,
        None,
        &device,
    )?
    .mlp()?;
    let pruned = prune(dense.clone(), &setup.prune)?.0;
    let pruned_masks = mask_flags(&pruned)?;
    let train_data = Arc::new(data.train.clone());
    let test_data = Arc::new(data.test.clone());
    let bench = Bench {
        data: &data,
        train: train_data,
        test: test_data,
        device: &device,
        dir: out.join("artifacts"),
        batch: setup.finetune.batch_size,
        lr: setup.finetune.learning_rate,
        epochs,
    };

    let mut pairs = Vec::new();
    let mut masks_exact = true;
    let (mut ember, mut learner, mut sharded, mut single_at_double) =
        (vec![], vec![], vec![], vec![]);
    for &seed in &seeds {
        eprintln!("learner: pruned fine-tune, seed {seed}");
        let config = TrainConfig {
            seed,
            ..setup.finetune.clone()
        };
        let started = Instant::now();
        let (model, _) = train(pruned.clone(), &data.train, &config, &device)?;
        ember.push(bench.run_of(&model, started)?);

        let started = Instant::now();
        let model = bench
            .launch(
                Supervised::new(pruned.clone(), &device),
                ExecutionStrategy::SingleDevice(device.clone().autodiff()),
                bench.batch,
                seed,
            )?
            .into_inner()
            .valid();
        masks_exact &= masks_hold(&model, &pruned_masks)?;
        learner.push(bench.run_of(&model, started)?);

        // Two devices each take a batch per step: one device compares at twice the batch.
        let started = Instant::now();
        let model = bench
            .launch(
                Supervised::new(pruned.clone(), &device),
                ExecutionStrategy::SingleDevice(device.clone().autodiff()),
                2 * bench.batch,
                seed,
            )?
            .into_inner()
            .valid();
        single_at_double.push(bench.run_of(&model, started)?);
        let started = Instant::now();
        let model = bench
            .launch(
                Supervised::new(pruned.clone(), &device),
                ExecutionStrategy::MultiDevice(
                    vec![device.clone().autodiff(), second.clone().autodiff()],
                    MultiDeviceOptim::OptimSharded,
                ),
                bench.batch,
                seed,
            )?
            .into_inner()
            .valid()
            .fork(&device);
        masks_exact &= masks_hold(&model, &pruned_masks)?;
        sharded.push(bench.run_of(&model, started)?);
    }
    pairs.push(Pair {
        key: "finetune",
        what: "LeNet-300-100 pruned to 90 %, fine-tuned",
        ember_label: "Ember's loop",
        ember,
        learner_label: "burn-train's Learner",
        learner,
    });
    pairs.push(Pair {
        key: "sharded",
        what: "the same fine-tune on two devices, optimizer state sharded",
        ember_label: "Learner, one device, twice the batch",
        ember: single_at_double,
        learner_label: "Learner, two devices (OptimSharded)",
        learner: sharded,
    });

    let (mut ember, mut learner) = (vec![], vec![]);
    let teacher = dense.valid();
    for &seed in &seeds {
        eprintln!("learner: distillation, seed {seed}");
        let student = || -> anyhow::Result<Mlp> {
            device.seed(seed);
            Ok(ember_tensor::init_now(setup.student.init(&device)?))
        };
        let config = TrainConfig {
            seed,
            ..setup.finetune.clone()
        };
        let started = Instant::now();
        let (model, _) = ember_distill::distill(
            student()?,
            &teacher,
            &data.train,
            &config,
            &setup.soft_targets,
            TeacherOutputs::OnTheFly,
            &device,
        )?;
        ember.push(bench.run_of(&model, started)?);
        let started = Instant::now();
        let probe = data.test.batch(&[0, 1], &device).0;
        let pair = Distillation::new(
            student()?,
            teacher.clone(),
            setup.soft_targets,
            probe,
            &device,
        )?;
        let model = bench
            .launch(
                pair,
                ExecutionStrategy::SingleDevice(device.clone().autodiff()),
                bench.batch,
                seed,
            )?
            .into_student()
            .valid();
        learner.push(bench.run_of(&model, started)?);
    }
    pairs.push(Pair {
        key: "distill",
        what: "a 784-30-10 student distilled from LeNet-300-100 (T = 4, alpha = 0.7)",
        ember_label: "Ember's loop",
        ember,
        learner_label: "burn-train's Learner",
        learner,
    });

    #[derive(Serialize)]
    struct Resolved<'a> {
        common: &'a CommonArgs,
        data_dir: String,
        #[serde(flatten)]
        setup: &'a Setup,
    }
    render(common.quick, &pairs, masks_exact, epochs).write_on_data(
        common,
        &out,
        &Resolved {
            common,
            data_dir: data_dir.display().to_string(),
            setup: &setup,
        },
    )
}

struct Bench<'a> {
    data: &'a Dataset,
    train: Arc<ember_zoo::Split>,
    test: Arc<ember_zoo::Split>,
    device: &'a Device,
    dir: std::path::PathBuf,
    batch: usize,
    lr: f64,
    epochs: usize,
}

impl Bench<'_> {
    /// `model` trained by burn-train's Learner on `strategy`, the training data shuffled from
    /// `seed`, validated on the test split each epoch.
    fn launch<M>(
        &self,
        model: M,
        strategy: ExecutionStrategy,
        batch: usize,
        seed: u64,
    ) -> anyhow::Result<M>
    where
        M: LearnerModel + TrainStep<Input = ClassBatch> + InferenceStep<Input = ClassBatch>,
    {
        self.device.seed(seed);
        let (train_loader, valid_loader) =
            loaders(self.train.clone(), self.test.clone(), batch, seed);
        let result = SupervisedTraining::new(&self.dir, train_loader, valid_loader)
            .num_epochs(self.epochs)
            .with_training_strategy(TrainingStrategy::Default(strategy))
            .launch(Learner::new(model, AdamConfig::new().init(), self.lr));
        if let Some(error) = result.error {
            anyhow::bail!("burn-train stopped: {error:?}");
        }
        Ok(result.model)
    }

    fn run_of(&self, model: &impl ember_zoo::Classifier, started: Instant) -> anyhow::Result<Run> {
        let seconds = started.elapsed().as_secs_f64();
        Ok(Run {
            accuracy: test_accuracy(model, self.data, self.device)?,
            seconds,
        })
    }
}

/// The keep flags of every mask `model` carries, by parameter path.
fn mask_flags<M: Module>(model: &M) -> anyhow::Result<BTreeMap<String, Vec<bool>>> {
    masks(model)
        .into_iter()
        .map(|(path, mask)| Ok((path, read_flags(mask)?)))
        .collect()
}

/// Whether `model` carries exactly the masks `expected` lists and every weight they remove is
/// exactly zero. (The effective weight applies the mask, so the zeros alone would hold even
/// for a model whose masks had been lost.)
fn masks_hold<M: Module>(
    model: &M,
    expected: &BTreeMap<String, Vec<bool>>,
) -> anyhow::Result<bool> {
    let flags = mask_flags(model)?;
    if flags != *expected {
        return Ok(false);
    }
    let values = param_values(model);
    for (path, keep) in &flags {
        let Some(value) = values.iter().find(|v| &v.info.path == path) else {
            return Ok(false);
        };
        let weights: Vec<f32> = value.flat.to_data().convert::<f32>().try_to_vec::<f32>()?;
        if keep.iter().zip(&weights).any(|(k, w)| !*k && *w != 0.0) {
            return Ok(false);
        }
    }
    Ok(true)
}

fn render(quick: bool, pairs: &[Pair], masks_exact: bool, epochs: usize) -> Report {
    let mut report = Report::new("Ember's passes on burn-train's Learner");
    if quick {
        report.section(
            "Quick run",
            "`--quick`: one seed, one epoch on a subset. A smoke test, not the figures.",
        );
    }
    report.section(
        "What runs",
        &format!(
            "Each pass runs {epochs} epochs with Adam at a constant rate, once on Ember's loop \
             (`ember_tensor::train`) and once on burn-train's Learner (`ember_train::Supervised`, \
             `ember_train::Distillation`), on the same model and data; the seeds change the \
             shuffling. The test split is burn-train's validation split. The two-device row \
             compares burn-train on one device at twice the batch (each two-device step takes \
             one batch on each device and sums their gradients)."
        ),
    );
    let mut rows = Vec::new();
    let mut claims = Vec::new();
    for pair in pairs {
        let accuracy =
            |runs: &[Run]| Spread::of(&runs.iter().map(|r| r.accuracy).collect::<Vec<_>>());
        let seconds =
            |runs: &[Run]| runs.iter().map(|r| r.seconds).sum::<f64>() / runs.len().max(1) as f64;
        let (a, b) = (accuracy(&pair.ember), accuracy(&pair.learner));
        let differences: Vec<f64> = pair
            .learner
            .iter()
            .zip(&pair.ember)
            .map(|(l, e)| l.accuracy - e.accuracy)
            .collect();
        let difference = Spread::of(&differences);
        for (label, runs, spread) in [
            (pair.ember_label, &pair.ember, a),
            (pair.learner_label, &pair.learner, b),
        ] {
            rows.push(vec![
                pair.what.to_string(),
                label.to_string(),
                format!("{} %", spread.show(2)),
                format!("{:.1}", seconds(runs)),
            ]);
        }
        report.metric(&format!("{}_ember_accuracy", pair.key), a.mean);
        report.metric(&format!("{}_learner_accuracy", pair.key), b.mean);
        report.metric(
            &format!("{}_difference_pp", pair.key),
            round_pp(difference.mean),
        );
        // Seed noise: the larger of the two runs' spreads over seeds.
        let noise = a.std.max(b.std);
        claims.push(Claim::new(
            quick,
            format!(
                "{}: {} matches {}",
                pair.what, pair.learner_label, pair.ember_label
            ),
            format!("difference {} pp", difference.show(2)),
            format!("|mean| <= the seed spread ({noise:.2} pp)"),
            difference.mean.abs() <= noise,
        ));
    }
    report.table(
        "Test accuracy over seeds",
        &["pass", "trainer", "test accuracy", "seconds a run"],
        &rows,
    );
    claims.push(Claim::new(
        quick,
        "every pruned weight is still exactly zero after the Learner's fine-tunes",
        if masks_exact {
            "all zero"
        } else {
            "a masked weight moved"
        }
        .to_string(),
        "all zero".to_string(),
        masks_exact,
    ));
    report.metric("learner_masks_exact", f64::from(u8::from(masks_exact)));
    report.claims_table("Claims", claims);
    report
}
