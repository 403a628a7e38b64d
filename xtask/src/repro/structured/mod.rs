//! `cargo xtask repro structured`: structured pruning that makes models smaller and faster.
//! LeNet-300-100 loses half its neurons ([`mlp`]); LeNet-5 loses half its filters by every
//! criterion, with the accuracy curve over the fraction removed ([`cnn`]); a residual network
//! loses half its channels across groups ([`residual`]); a small transformer loses half its
//! attention heads by every criterion ([`heads`]); and unstructured pruning runs on the sparse
//! kernel ([`sparse`]).

mod cnn;
mod heads;
mod mlp;
mod residual;
mod sparse;

use ember_prune::{StructuredConfig, UnitCriterion};
use ember_tensor::LrSchedule;
use ember_zoo::{
    LeNet5Config, MlpConfig, ModelConfig, ResNetConfig, TrainConfig, TransformerConfig,
};
use serde::Serialize;

use super::{CommonArgs, QUICK_TEST, QUICK_TRAIN, Report, forward_medians_us};

/// Epochs of the residual network's dense training: each costs about four of LeNet-5's (`repro
/// qat` trains it with the same recipe, so the model is trained once for both).
pub const RESIDUAL_EPOCHS: usize = 3;
/// Epochs of the transformer's dense training, and of fine-tuning each of its six cuts.
const TRANSFORMER_EPOCHS: usize = 3;
const TRANSFORMER_FINETUNE_EPOCHS: usize = 1;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Seed of initialization and shuffling.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Epochs of dense training (the baseline's 10).
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    /// Epochs of fine-tuning after the surgery.
    #[arg(long, default_value_t = 3)]
    finetune_epochs: usize,
    /// Fraction of each hidden layer's neurons removed from LeNet-300-100.
    #[arg(long, default_value_t = 0.5)]
    fraction: f64,
    /// Fraction of each convolution's filters removed from LeNet-5.
    #[arg(long, default_value_t = 0.5)]
    filter_fraction: f64,
}

#[derive(Serialize)]
struct Resolved<'a> {
    common: &'a CommonArgs,
    data_dir: String,
    mlp: &'a ModelConfig,
    mlp_pruned: &'a MlpConfig,
    mlp_cut: &'a StructuredConfig,
    lenet5: &'a ModelConfig,
    lenet5_pruned: &'a LeNet5Config,
    lenet5_evidence: cnn::EvidenceSizes,
    resnet: &'a ModelConfig,
    resnet_pruned: &'a ResNetConfig,
    resnet_training: &'a TrainConfig,
    resnet_finetune: &'a TrainConfig,
    transformer: &'a ModelConfig,
    transformer_pruned: &'a TransformerConfig,
    transformer_training: &'a TrainConfig,
    transformer_finetune: &'a TrainConfig,
    training: &'a TrainConfig,
    finetune: &'a TrainConfig,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let common = &args.common;
    let device = common.backend.device()?;
    let (data, data_dir) = common.load_data()?;
    let out = common.out_dir("structured");
    std::fs::create_dir_all(&out)?;
    let training = TrainConfig {
        epochs: if common.quick { 1 } else { args.epochs },
        seed: args.seed,
        ..TrainConfig::default()
    };
    let finetune = TrainConfig {
        epochs: if common.quick {
            1
        } else {
            args.finetune_epochs
        },
        learning_rate: 1e-4,
        schedule: LrSchedule::Constant,
        ..training.clone()
    };
    let mlp_config = MlpConfig::lenet_300_100(data.train.rows * data.train.cols, data.classes);
    let mlp_cut = StructuredConfig::new(UnitCriterion::L2, args.fraction);
    let (mlp_results, mlp_pruned) = mlp::compute(
        common,
        &mlp_config,
        &training,
        &finetune,
        &mlp_cut,
        &data,
        &device,
    )?;
    let sparse_results = sparse::compute(common, &mlp_config, &training, &data, &device)?;
    let cnn_config = LeNet5Config::new(1, [data.train.rows, data.train.cols], data.classes);
    let cnn_setup = cnn::Setup {
        config: cnn_config.clone(),
        training: training.clone(),
        finetune: finetune.clone(),
        fraction: args.filter_fraction,
        seed: args.seed,
    };
    let cnn_results = cnn::compute(common, &cnn_setup, &data, &device)?;
    let residual_training = TrainConfig {
        epochs: if common.quick { 1 } else { RESIDUAL_EPOCHS },
        ..training.clone()
    };
    // The residual network loses more to its cut than the others (batch norms see new
    // statistics): it fine-tunes with its training recipe's rate and schedule.
    let residual_finetune = TrainConfig {
        epochs: finetune.epochs,
        ..training.clone()
    };
    let residual_results = residual::compute(
        common,
        &residual_training,
        &residual_finetune,
        &data,
        &out,
        &device,
    )?;
    let transformer_training = TrainConfig {
        epochs: if common.quick { 1 } else { TRANSFORMER_EPOCHS },
        ..training.clone()
    };
    let transformer_finetune = TrainConfig {
        epochs: TRANSFORMER_FINETUNE_EPOCHS,
        ..finetune.clone()
    };
    let head_results = heads::compute(
        common,
        &transformer_training,
        &transformer_finetune,
        &data,
        &out,
        &device,
    )?;

    let mut report = Report::new(
        "Structured pruning on MNIST: LeNet-300-100 neurons, LeNet-5 filters, residual channels, transformer heads",
    );
    if common.quick {
        report.section(
            "Quick run",
            &format!(
                "`--quick`: {QUICK_TRAIN} training images, {QUICK_TEST} test images, 1 epoch of \
                 training and of fine-tuning. A smoke test, not the published figures."
            ),
        );
    }
    mlp::render(&mut report, common, &mlp_results, &finetune);
    sparse::render(&mut report, common, &sparse_results);
    cnn::render(&mut report, common, &cnn_setup, &cnn_results);
    residual::render(&mut report, common, &residual_finetune, &residual_results);
    heads::render(&mut report, common, &transformer_finetune, &head_results);
    std::fs::write(out.join("lenet5_filters.svg"), cnn::plot(&cnn_results))?;
    report.write_on_data(
        common,
        &out,
        &Resolved {
            common,
            data_dir: data_dir.display().to_string(),
            mlp: &ModelConfig::Mlp(mlp_config),
            mlp_pruned: &mlp_pruned,
            mlp_cut: &mlp_cut,
            lenet5: &ModelConfig::LeNet5(cnn_config),
            lenet5_pruned: &cnn_results.pruned_config,
            lenet5_evidence: cnn::EVIDENCE,
            resnet: &ModelConfig::ResNet(residual_results.dense_config.clone()),
            resnet_pruned: &residual_results.pruned_config,
            resnet_training: &residual_training,
            resnet_finetune: &residual_finetune,
            transformer: &ModelConfig::Transformer(head_results.dense_config.clone()),
            transformer_pruned: &head_results.pruned_config,
            transformer_training: &transformer_training,
            transformer_finetune: &transformer_finetune,
            training: &training,
            finetune: &finetune,
        },
    )?;
    println!("{}", mlp_results.summary());
    println!("{}", sparse_results.summary());
    println!("{}", cnn_results.summary());
    println!("{}", residual_results.summary());
    println!("{}", head_results.summary());
    Ok(())
}

/// The test accuracy of `model` after saving it with its `config` to `path` and loading it back.
fn reloaded_accuracy(
    model: ember_zoo::Model,
    config: &ModelConfig,
    path: &std::path::Path,
    data: &ember_zoo::Dataset,
    device: &burn::tensor::Device,
) -> anyhow::Result<f64> {
    ember_zoo::save_model(model, config, path)?;
    let (reloaded, _) = ember_zoo::load_model(path, device)?;
    super::test_accuracy(&reloaded, data, device)
}
