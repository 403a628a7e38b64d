//! Unstructured pruning made faster: LeNet-300-100 at 90 % global magnitude sparsity, each
//! masked layer on the kernel it timed faster (the default) or past a fixed sparsity, timed at
//! batch 256 against the dense model and the masked model on the dense path, with its
//! predictions compared over the test set.

use burn::tensor::{Device, Tensor, TensorData};
use ember_prune::{PruneConfig, prune};
use ember_quant::{AUTO_BATCH, SPARSE_CROSSOVER, SparseKernel, SparseLayer, use_sparse_kernel};
use ember_tensor::train::ordered_batches;
use ember_zoo::{Classifier, Dataset, LabeledData, Mlp, MlpConfig, ModelConfig, TrainConfig};

use super::super::trained::{Recipe, trained};
use super::super::{Claim, CommonArgs, EVAL_BATCH, Report, interleaved_median_us};

pub const SPARSITY: f64 = 0.9;
const BATCH: usize = 256;
const REPEATS: usize = 51;
const TARGET_SPEEDUP: f64 = 2.0;

pub struct Results {
    layers: Vec<SparseLayer>,
    dense_us: f64,
    masked_us: f64,
    sparse_us: f64,
    threshold_us: f64,
    all_sparse_us: f64,
    agreement: f64,
    test_images: usize,
}

pub fn compute(
    common: &CommonArgs,
    config: &MlpConfig,
    training: &TrainConfig,
    data: &Dataset,
    device: &Device,
) -> anyhow::Result<Results> {
    let recipe = Recipe::new(&ModelConfig::Mlp(config.clone()), training, data, common);
    let dense = trained(&recipe, data, common, None, device)?.mlp()?;
    eprintln!(
        "structured: LeNet-300-100 at {:.0} % magnitude sparsity on the sparse kernel",
        SPARSITY * 100.0
    );
    let (masked, _) = prune(dense.clone(), &PruneConfig::global_magnitude(SPARSITY))?;
    let mut sparse = masked.clone();
    let layers = use_sparse_kernel(&mut sparse, SparseKernel::Auto)?;
    let mut threshold = masked.clone();
    use_sparse_kernel(&mut threshold, SparseKernel::Threshold(SPARSE_CROSSOVER))?;
    let mut all_sparse = masked.clone();
    use_sparse_kernel(&mut all_sparse, SparseKernel::Always)?;

    let x: Vec<f32> = (0..BATCH * config.input)
        .map(|i| ((i * 37) % 255) as f32 / 255.0)
        .collect();
    let images = Tensor::<4>::from_data(TensorData::new(x, [BATCH, 1, 1, config.input]), device);
    let run = |model: &Mlp| {
        let logits = model.forward(images.clone());
        let _ = ember_tensor::device::sync(device);
        drop(logits);
    };
    let times = interleaved_median_us(
        REPEATS,
        &mut [
            &mut || run(&dense),
            &mut || run(&masked),
            &mut || run(&sparse),
            &mut || run(&threshold),
            &mut || run(&all_sparse),
        ],
    );
    let [dense_us, masked_us, sparse_us, threshold_us, all_sparse_us] = times[..] else {
        unreachable!("five runs timed")
    };

    let mut same = 0;
    for indices in ordered_batches(data.test.len(), EVAL_BATCH) {
        let (images, _) = data.test.batch(&indices, device);
        let a = masked.forward(images.clone()).argmax(1);
        let b = sparse.forward(images).argmax(1);
        same += a.equal(b).int().sum().into_scalar::<i64>() as usize;
    }
    Ok(Results {
        layers,
        dense_us,
        masked_us,
        sparse_us,
        threshold_us,
        all_sparse_us,
        agreement: same as f64 / data.test.len() as f64,
        test_images: data.test.len(),
    })
}

pub fn render(report: &mut Report, common: &CommonArgs, results: &Results) {
    let speedup = results.dense_us / results.sparse_us;
    let rows: Vec<Vec<String>> = results
        .layers
        .iter()
        .map(|l| {
            let (dense, sparse) = match l.choice.times {
                Some(t) => (format!("{:.0}", t.dense_us), format!("{:.0}", t.sparse_us)),
                None => ("-".into(), "-".into()),
            };
            vec![
                l.path.clone(),
                format!("{:.1}", l.choice.sparsity * 100.0),
                dense,
                sparse,
                if l.choice.sparse { "sparse" } else { "dense" }.into(),
                if l.choice.sparsity >= SPARSE_CROSSOVER {
                    "sparse"
                } else {
                    "dense"
                }
                .into(),
            ]
        })
        .collect();
    report.table(
        &format!(
            "LeNet-300-100 at {:.0} % global magnitude sparsity: the kernel each layer runs on, timed on its own weight at batch {AUTO_BATCH} (the default) and by a fixed {:.0} % threshold",
            SPARSITY * 100.0,
            SPARSE_CROSSOVER * 100.0
        ),
        &[
            "layer",
            "zeros %",
            "dense µs",
            "sparse µs",
            "kernel (timed)",
            "kernel (threshold)",
        ],
        &rows,
    );
    let claim = Claim::new(
        common.quick,
        format!(
            "LeNet-300-100 at {:.0} % sparsity on the sparse kernel: speed-up over dense, batch {BATCH}",
            SPARSITY * 100.0
        ),
        format!("{speedup:.2}x"),
        format!(">= {TARGET_SPEEDUP}x"),
        speedup >= TARGET_SPEEDUP,
    );
    report.table(
        &format!(
            "LeNet-300-100 at {:.0} % sparsity: one batch of {BATCH} on `{}`",
            SPARSITY * 100.0,
            common.backend
        ),
        &[
            "model",
            "µs (median of 51, interleaved)",
            "speed-up over dense",
            "target",
            "met",
        ],
        &[
            vec![
                "dense".into(),
                format!("{:.0}", results.dense_us),
                "1.00x".into(),
                "-".into(),
                "-".into(),
            ],
            vec![
                "masked, dense path".into(),
                format!("{:.0}", results.masked_us),
                format!("{:.2}x", results.dense_us / results.masked_us),
                "-".into(),
                "-".into(),
            ],
            vec![
                "masked, every layer on the sparse kernel".into(),
                format!("{:.0}", results.all_sparse_us),
                format!("{:.2}x", results.dense_us / results.all_sparse_us),
                "-".into(),
                "-".into(),
            ],
            vec![
                format!(
                    "masked, sparse kernel from {:.0} % zeros (`Threshold`)",
                    SPARSE_CROSSOVER * 100.0
                ),
                format!("{:.0}", results.threshold_us),
                format!("{:.2}x", results.dense_us / results.threshold_us),
                "-".into(),
                "-".into(),
            ],
            vec![
                "masked, each layer on the kernel it timed faster (`Auto`, the default)".into(),
                format!("{:.0}", results.sparse_us),
                format!("{speedup:.2}x"),
                claim.target.clone(),
                claim.verdict().into(),
            ],
        ],
    );
    report.claim(claim);
    report.section(
        "LeNet-300-100 at 90 % sparsity: how to read this",
        &format!(
            "The pruned model is not fine-tuned: the point is its speed. The sparse kernel \
             computes the same function as the masked dense path, up to float rounding: their \
             predictions agree on {:.2} % of the {} test images. All the timings come from \
             the same run.",
            results.agreement * 100.0,
            results.test_images
        ),
    );
    report.metric("mlp_sparse90_speedup_b256", speedup);
    report.metric(
        "mlp_sparse90_vs_masked_speedup_b256",
        results.masked_us / results.sparse_us,
    );
    report.metric(
        "mlp_sparse90_threshold_speedup_b256",
        results.dense_us / results.threshold_us,
    );
    report.metric("mlp_sparse90_prediction_agreement", results.agreement);
}

impl Results {
    pub fn summary(&self) -> String {
        format!(
            "LeNet-300-100 at {:.0} % sparsity: {:.2}x faster than dense at batch {BATCH} on the sparse kernel, predictions agreeing on {:.2} %",
            SPARSITY * 100.0,
            self.dense_us / self.sparse_us,
            self.agreement * 100.0
        )
    }
}
