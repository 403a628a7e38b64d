//! `cargo xtask repro distill`: Hinton et al. 2015 on MNIST (a big regularized teacher, a
//! smaller unregularized student trained alone and with soft targets at T = 20), and the
//! capacity gap of Cho & Hariharan 2019 (a tiny student gains little), every row as mean and
//! standard deviation over seeds.

use ember_distill::loss::SoftTargetConfig;
use ember_distill::{TeacherOutputs, distill};
use ember_zoo::{EvalReport, LabeledData, MlpConfig, TrainConfig, evaluate, train};
use serde::Serialize;

use super::{CommonArgs, EVAL_BATCH, QUICK_TEST, QUICK_TRAIN, Report, Spread};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Number of seeds per row (at least 3 for the published table).
    #[arg(long, default_value_t = 3)]
    seeds: u64,
    /// Epochs of every student run.
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    /// Epochs of the teacher (a dropout-regularized teacher keeps improving long after the
    /// students stop).
    #[arg(long, default_value_t = 10)]
    teacher_epochs: usize,
}

/// Hinton et al. 2015, section 3 (test errors on MNIST's 10,000 test images).
const PAPER_TEACHER_ERRORS: f64 = 67.0;
const PAPER_STUDENT_ALONE_ERRORS: f64 = 146.0;
const PAPER_STUDENT_KD_ERRORS: f64 = 74.0;
/// PyTorch on this machine, 784-30-10 (the figures).
const PYTORCH_TINY_ALONE: f64 = 96.84;
const PYTORCH_TINY_BEST_KD: f64 = 96.93;
const HINTON_TEMPERATURE: f64 = 20.0;
/// Weight of the soft term: Hinton et al. found a considerably lower weight on the hard
/// targets best.
const ALPHA: f64 = 0.9;

#[derive(Serialize)]
struct Resolved<'a> {
    common: &'a CommonArgs,
    data_dir: String,
    seeds: u64,
    teacher: &'a MlpConfig,
    student: &'a MlpConfig,
    tiny: &'a MlpConfig,
    training: &'a TrainConfig,
    teacher_training: &'a TrainConfig,
    alpha: f64,
    big_student_temperatures: &'a [f64],
    tiny_student_temperatures: &'a [f64],
    teacher_outputs: TeacherOutputs,
}

/// One row: the test evaluations of every seed.
struct Row {
    evals: Vec<EvalReport>,
}

impl Row {
    fn errors(&self) -> Spread {
        Spread::of(
            &self
                .evals
                .iter()
                .map(|e| e.errors as f64)
                .collect::<Vec<_>>(),
        )
    }
    fn accuracy(&self) -> Spread {
        Spread::of(&self.evals.iter().map(|e| e.accuracy).collect::<Vec<_>>())
    }
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let common = &args.common;
    anyhow::ensure!(args.seeds >= 1, "--seeds must be at least 1");
    let device = common.backend.device()?;
    let (data, data_dir) = common.load_data()?;
    let input = data.train.rows * data.train.cols;
    let mlp = |hidden: Vec<usize>, dropout: f64| MlpConfig {
        input,
        hidden,
        classes: data.classes,
        dropout,
    };
    let teacher_config = mlp(vec![1200, 1200], 0.3);
    let student_config = mlp(vec![800, 800], 0.0);
    let tiny_config = mlp(vec![30], 0.0);
    anyhow::ensure!(
        args.epochs >= 1 && args.teacher_epochs >= 1,
        "--epochs and --teacher-epochs must be at least 1"
    );
    let training = TrainConfig {
        epochs: if common.quick { 1 } else { args.epochs },
        ..TrainConfig::default()
    };
    let teacher_training = TrainConfig {
        epochs: if common.quick { 1 } else { args.teacher_epochs },
        ..training.clone()
    };
    let big_temperatures: &[f64] = if common.quick {
        &[HINTON_TEMPERATURE]
    } else {
        &[2.0, 8.0, HINTON_TEMPERATURE]
    };
    let tiny_temperatures: &[f64] = if common.quick {
        &[2.0]
    } else {
        &[1.0, 2.0, 4.0, 8.0, 20.0]
    };
    let seeds: Vec<u64> = (1..=args.seeds).collect();

    let mut teachers = Vec::new();
    let mut student_alone = Row { evals: vec![] };
    let mut tiny_alone = Row { evals: vec![] };
    let mut big_kd: Vec<Row> = big_temperatures
        .iter()
        .map(|_| Row { evals: vec![] })
        .collect();
    let mut tiny_kd: Vec<Row> = tiny_temperatures
        .iter()
        .map(|_| Row { evals: vec![] })
        .collect();
    let eval = |model: &ember_zoo::Mlp| evaluate(model, &data.test, EVAL_BATCH, &device);
    for &seed in &seeds {
        let training = TrainConfig {
            seed,
            ..training.clone()
        };
        let fresh = |config: &MlpConfig| -> anyhow::Result<ember_zoo::Mlp> {
            device.seed(seed);
            Ok(config.init(&device)?)
        };
        eprintln!(
            "seed {seed}: teacher 784-1200-1200-10 (dropout {})",
            teacher_config.dropout
        );
        let teacher_training = TrainConfig {
            seed,
            ..teacher_training.clone()
        };
        let (teacher, _) = train(
            fresh(&teacher_config)?,
            &data.train,
            &teacher_training,
            &device,
        )?;
        teachers.push(eval(&teacher)?);
        eprintln!("seed {seed}: students alone");
        student_alone.evals.push(eval(
            &train(fresh(&student_config)?, &data.train, &training, &device)?.0,
        )?);
        tiny_alone.evals.push(eval(
            &train(fresh(&tiny_config)?, &data.train, &training, &device)?.0,
        )?);
        for (config, temperatures, rows) in [
            (&student_config, big_temperatures, &mut big_kd),
            (&tiny_config, tiny_temperatures, &mut tiny_kd),
        ] {
            for (&temperature, row) in temperatures.iter().zip(rows.iter_mut()) {
                eprintln!(
                    "seed {seed}: {:?} distilled at T = {temperature}",
                    config.hidden
                );
                let soft = SoftTargetConfig {
                    temperature,
                    alpha: ALPHA,
                };
                let (student, _) = distill(
                    fresh(config)?,
                    &teacher,
                    &data.train,
                    &training,
                    &soft,
                    TeacherOutputs::Cached,
                    &device,
                )?;
                row.evals.push(eval(&student)?);
            }
        }
    }
    let teacher_row = Row { evals: teachers };
    let hinton_index = big_temperatures
        .iter()
        .position(|&t| t == HINTON_TEMPERATURE)
        .unwrap_or(0);
    let kd_row = &big_kd[hinton_index];

    let mut report = Report::new("Distillation: Hinton et al. 2015 and the capacity gap on MNIST");
    if common.quick {
        report.section(
            "Quick run",
            &format!("`--quick`: {QUICK_TRAIN} training and {QUICK_TEST} test images, 1 epoch: a smoke test."),
        );
    }
    let n = seeds.len();
    report.table(
        &format!(
            "Hinton's setting (test errors of {} images, mean ± std over {n} seeds)",
            data.test.len()
        ),
        &["model", "errors", "accuracy %", "paper errors"],
        &[
            vec![
                "teacher 784-1200-1200-10, dropout".into(),
                teacher_row.errors().show(1),
                teacher_row.accuracy().show(2),
                format!("{PAPER_TEACHER_ERRORS}"),
            ],
            vec![
                "student 784-800-800-10 alone".into(),
                student_alone.errors().show(1),
                student_alone.accuracy().show(2),
                format!("{PAPER_STUDENT_ALONE_ERRORS}"),
            ],
            vec![
                format!(
                    "student 784-800-800-10, soft targets T = {HINTON_TEMPERATURE}, alpha {ALPHA}"
                ),
                kd_row.errors().show(1),
                kd_row.accuracy().show(2),
                format!("{PAPER_STUDENT_KD_ERRORS}"),
            ],
        ],
    );
    let gain = student_alone.errors().mean - kd_row.errors().mean;
    let spread = student_alone.errors().std + kd_row.errors().std;
    report.section(
        "Verdict",
        &format!(
            "Distillation removes {gain:.1} errors on average; the two rows' standard deviations add \
             up to {spread:.1}: {}.",
            if gain > spread { "the gain is beyond the seed-to-seed spread" } else { "the gain is NOT beyond the spread" }
        ),
    );
    let sweep = |name: &str, alone: &Row, temperatures: &[f64], rows: &[Row]| -> Vec<Vec<String>> {
        std::iter::once(vec![
            name.to_string(),
            "alone".into(),
            alone.accuracy().show(2),
            alone.errors().show(1),
        ])
        .chain(temperatures.iter().zip(rows).map(|(t, row)| {
            vec![
                name.to_string(),
                format!("T = {t}"),
                row.accuracy().show(2),
                row.errors().show(1),
            ]
        }))
        .collect()
    };
    let mut rows = sweep("784-800-800-10", &student_alone, big_temperatures, &big_kd);
    rows.extend(sweep("784-30-10", &tiny_alone, tiny_temperatures, &tiny_kd));
    report.table(
        &format!("Temperature sweep (alpha {ALPHA}, mean ± std over {n} seeds)"),
        &["student", "training", "accuracy %", "errors"],
        &rows,
    );
    let best_tiny = tiny_kd
        .iter()
        .map(|r| r.accuracy().mean)
        .fold(f64::MIN, f64::max);
    report.section(
        "Capacity gap",
        &format!(
            "The tiny student 784-30-10 reaches {:.2} % alone and {best_tiny:.2} % at best with soft \
             targets (PyTorch on this machine: {PYTORCH_TINY_ALONE} % alone, {PYTORCH_TINY_BEST_KD} % at \
             best with T = 2); the 784-800-800-10 student gains {:.2} points at T = {HINTON_TEMPERATURE}.",
            tiny_alone.accuracy().mean,
            kd_row.accuracy().mean - student_alone.accuracy().mean,
        ),
    );
    let plot = super::plot::line_chart(
        "Accuracy against temperature (mean over seeds); dashed: trained alone",
        "temperature T",
        "test accuracy %",
        &[
            super::plot::Series::new(
                "784-800-800-10",
                big_temperatures,
                &big_kd.iter().map(|r| r.accuracy().mean).collect::<Vec<_>>(),
            )
            .with_baseline(student_alone.accuracy().mean),
            super::plot::Series::new(
                "784-30-10",
                tiny_temperatures,
                &tiny_kd
                    .iter()
                    .map(|r| r.accuracy().mean)
                    .collect::<Vec<_>>(),
            )
            .with_baseline(tiny_alone.accuracy().mean),
        ],
    );
    let out = common.out_dir("distill");
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("temperature.svg"), plot)?;
    report.section("Plot", "![accuracy against temperature](temperature.svg)");

    report.metric("teacher_errors", teacher_row.errors().mean);
    report.metric("teacher_errors_std", teacher_row.errors().std);
    report.metric("student_alone_errors", student_alone.errors().mean);
    report.metric("student_alone_errors_std", student_alone.errors().std);
    report.metric("student_kd_errors", kd_row.errors().mean);
    report.metric("student_kd_errors_std", kd_row.errors().std);
    report.metric("tiny_alone_accuracy", tiny_alone.accuracy().mean);
    report.metric("tiny_best_kd_accuracy", best_tiny);
    for (t, row) in tiny_temperatures.iter().zip(&tiny_kd) {
        report.metric(&format!("tiny_kd_accuracy_t{t}"), row.accuracy().mean);
    }
    for (t, row) in big_temperatures.iter().zip(&big_kd) {
        report.metric(&format!("student_kd_accuracy_t{t}"), row.accuracy().mean);
    }
    report.metric("seeds", n as f64);

    let resolved = Resolved {
        common,
        data_dir: data_dir.display().to_string(),
        seeds: args.seeds,
        teacher: &teacher_config,
        student: &student_config,
        tiny: &tiny_config,
        training: &training,
        teacher_training: &teacher_training,
        alpha: ALPHA,
        big_student_temperatures: big_temperatures,
        tiny_student_temperatures: tiny_temperatures,
        teacher_outputs: TeacherOutputs::Cached,
    };
    report.write(&out, &resolved)?;
    println!(
        "teacher {} errors, student alone {}, student KD {}",
        teacher_row.errors().show(1),
        student_alone.errors().show(1),
        kd_row.errors().show(1)
    );
    Ok(())
}
