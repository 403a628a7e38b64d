//! Batch norm in quantization-aware training, on the small residual network (the zoo's model
//! with batch norms; the one `repro structured` trains, shared through its recipe): W4A4 after
//! training with the batch norms kept beside the integer convolutions or folded into them, and
//! after QAT with the batch norms left to renormalize by each batch's statistics or folded and
//! frozen first (`fold_and_freeze_conv_bn_pairs`, Jacob et al. 2018), each converted and timed.

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use ember_observe::ObserverConfig;
use ember_quant::{
    StaticConfig, conv_bn_pairs, fold_and_freeze_conv_bn_pairs, fold_conv_bn_pairs, prepare_qat,
    quantize_static,
};
use ember_zoo::{Classifier, Dataset, Model, ModelConfig, ResNetConfig, TrainConfig, train};

use super::super::trained::{Recipe, trained};
use super::super::{CommonArgs, Report, forward_medians_us, test_accuracy as accuracy};
use super::cnn_scheme;

/// Each epoch of the residual network costs about four of LeNet-5's; one recovers most of what
/// QAT recovers on LeNet-5.
pub const QAT_EPOCHS: usize = 1;
const BITS: u32 = 4;
const BATCH: usize = 256;
const REPEATS: usize = 21;

pub struct Results {
    pairs: usize,
    float: f64,
    ptq_kept: f64,
    ptq_folded: f64,
    qat_kept: f64,
    qat_frozen: f64,
    kept_us: f64,
    folded_us: f64,
}

pub fn compute(
    common: &CommonArgs,
    training: &TrainConfig,
    qat: &TrainConfig,
    data: &Dataset,
    device: &Device,
) -> anyhow::Result<Results> {
    let config = ModelConfig::ResNet(ResNetConfig::small(
        1,
        [data.train.rows, data.train.cols],
        data.classes,
    ));
    eprintln!("qat: the residual network, {} epochs", training.epochs);
    let recipe = Recipe::new(&config, training, data, common);
    let float: Model = trained(&recipe, data, common, None, device)?.model;
    let float_acc = accuracy(&float, data, device)?;
    let shape = [1, 1, data.train.rows, data.train.cols];
    let pairs = conv_bn_pairs(&float, shape, |m: &Model, x: Tensor<4>| m.forward(x))?;
    let scheme = cnn_scheme(BITS, BITS, common.quick)?;

    // burn shares a batch norm's running statistics between clones, and folding writes them
    // in place: every fold below starts from `valid()`, a copy with statistics of its own, so
    // that folding leaves `float` and the models made from it as they were.
    let ptq_kept = quantize_static(float.clone(), &scheme, &data.train, device)?.model;
    let folded = fold_conv_bn_pairs(float.valid(), &pairs)?;
    let ptq_folded = quantize_static(folded, &scheme, &data.train, device)?.model;

    // As for LeNet-5: ranges observed by moving averages while the weights train.
    let observed = StaticConfig {
        observer: ObserverConfig::moving_average(),
        ..scheme
    };
    eprintln!("qat: the residual network, QAT with its batch norms renormalizing");
    let prepared = prepare_qat(float.clone(), &observed)?;
    let (tuned, _) = train(prepared.model.clone(), &data.train, qat, device)?;
    let qat_kept = prepared.convert(tuned)?.model;
    eprintln!("qat: the residual network, QAT with its batch norms folded and frozen");
    let frozen = fold_and_freeze_conv_bn_pairs(float.valid(), &pairs)?;
    let prepared = prepare_qat(frozen, &observed)?;
    let (tuned, _) = train(prepared.model.clone(), &data.train, qat, device)?;
    let qat_frozen = prepared.convert(tuned)?.model;

    let (kept_us, folded_us) = forward_medians_us(
        &qat_kept,
        &qat_frozen,
        [BATCH, 1, data.train.rows, data.train.cols],
        REPEATS,
        device,
    );
    let results = Results {
        pairs: pairs.len(),
        float: float_acc,
        ptq_kept: accuracy(&ptq_kept, data, device)?,
        ptq_folded: accuracy(&ptq_folded, data, device)?,
        qat_kept: accuracy(&qat_kept, data, device)?,
        qat_frozen: accuracy(&qat_frozen, data, device)?,
        kept_us,
        folded_us,
    };
    eprintln!("qat: {}", results.summary());
    Ok(results)
}

pub fn render(report: &mut Report, common: &CommonArgs, r: &Results, qat: &TrainConfig) {
    let row = |name: &str, acc: f64| {
        vec![
            name.to_string(),
            format!("{acc:.2}"),
            format!("{:+.2}", acc - r.float),
        ]
    };
    report.table(
        &format!(
            "The residual network at W{BITS}A{BITS} ({} conv -> batch-norm pairs; QAT: {} epoch(s) at a constant {}): test accuracy %",
            r.pairs, qat.epochs, qat.learning_rate
        ),
        &["model", "accuracy %", "change pp"],
        &[
            row("float", r.float),
            row("post-training, batch norms kept in float", r.ptq_kept),
            row("post-training, batch norms folded", r.ptq_folded),
            row(
                "QAT, batch norms renormalizing by each batch, kept in float",
                r.qat_kept,
            ),
            row("QAT, batch norms folded and frozen", r.qat_frozen),
        ],
    );
    report.section(
        "The residual network's batch norms: how to read this",
        &format!(
            "Weights are quantized per channel, so folding a batch norm's per-channel scale into \
             them moves no weight to another grid point: what folding changes is, in QAT, \
             whether the batch norms train on each batch's statistics or run as the inference \
             model will. A folded batch norm stays in the model as an identity that adds its \
             shift, so folding saves no time here: the converted models took {:.0} µs per \
             batch of {BATCH} on `{}` with their batch norms kept against {:.0} µs folded \
             ({:.2}x, medians of {REPEATS} passes taking turns). One training seed: \
             differences under 0.2 points are ties.",
            r.kept_us,
            common.backend,
            r.folded_us,
            r.kept_us / r.folded_us
        ),
    );
    report.metric("resnet_float_acc", r.float);
    report.metric("resnet_w4a4_ptq_kept_acc", r.ptq_kept);
    report.metric("resnet_w4a4_ptq_folded_acc", r.ptq_folded);
    report.metric("resnet_w4a4_qat_kept_acc", r.qat_kept);
    report.metric("resnet_w4a4_qat_frozen_acc", r.qat_frozen);
    report.metric("resnet_w4a4_folded_speedup_b256", r.kept_us / r.folded_us);
}

impl Results {
    pub fn summary(&self) -> String {
        format!(
            "residual network W{BITS}A{BITS}: float {:.2} %, post-training {:.2} % kept / {:.2} % folded, QAT {:.2} % renormalizing / {:.2} % folded and frozen, kept over folded time {:.2}x",
            self.float,
            self.ptq_kept,
            self.ptq_folded,
            self.qat_kept,
            self.qat_frozen,
            self.kept_us / self.folded_us
        )
    }
}
