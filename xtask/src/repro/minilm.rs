//! `cargo xtask repro minilm`: sentence-transformers' all-MiniLM-L6-v2 in Ember. Its
//! embeddings are checked against an independent NumPy implementation
//! (`fixtures/bert/reference.py`), then it is quantized (dynamic int8 on the integer kernels,
//! the embedding tables int8 weight-only; int4 per group weight-only) and each variant is
//! measured against the f32 model's own embeddings on 1,230 sentences of CPython's docstrings
//! (`fixtures/text/eval.txt`): cosine, the ranking of pairwise similarities, encoder latency
//! and size on disk. `--quick` runs the tiny random model of the same architecture in
//! `fixtures/bert/tiny` on a few sentences.

use std::path::{Path, PathBuf};

use anyhow::Context;
use burn::tensor::{Device, Int, Tensor, TensorData};
use ember_quant::{
    DynamicConfig, Int8Kernel, Mode, QScheme, QType, Quantized, WeightConfig, quantize_dynamic,
    quantize_weights, save_quantized,
};
use ember_tensor::{Batch, TrainConfig, fit};
use ember_zoo::bert::{Bert, BertConfig, SentenceEncoder, Sentences, TokenBatch};
use serde::Serialize;

use super::{Claim, CommonArgs, Report, interleaved_median_us};
use crate::models::{fetch_minilm, minilm_dir};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// A model folder in Hugging Face's layout (default: all-MiniLM-L6-v2, fetched into
    /// `target/models/` if it is not there yet).
    #[arg(long)]
    model: Option<PathBuf>,
    /// The int8 kernel to run (`avx512_vnni`, `avx2`, `portable`; default: the best this CPU
    /// has), so that one machine can time the others' paths.
    #[arg(long)]
    int8_kernel: Option<String>,
    /// Only time f32 against dynamic int8 (32 sentences of 128 tokens, interleaved, the median
    /// of `N` runs each), print the ratio and write nothing: the speed-up alone, in a minute.
    #[arg(long, value_name = "N")]
    latency_only: Option<usize>,
}

/// Sentences in the batch every variant is timed on.
const LATENCY_BATCH: usize = 32;

/// Word pieces in each of them: 128, or 16 for the tiny model of `--quick`.
fn latency_tokens(quick: bool) -> usize {
    if quick { 16 } else { 128 }
}

/// The kernel `name` names, if this CPU runs it.
fn int8_kernel(name: Option<&str>) -> anyhow::Result<Int8Kernel> {
    let Some(name) = name else {
        return Ok(Int8Kernel::detect());
    };
    let available = Int8Kernel::available();
    available
        .iter()
        .copied()
        .find(|k| k.name() == name)
        .with_context(|| {
            let names: Vec<&str> = available.iter().map(|k| k.name()).collect();
            format!(
                "no int8 kernel {name:?} on this CPU (it runs {})",
                names.join(", ")
            )
        })
}

/// The sentences every variant is measured on (none is in the distillation corpus,
/// `fixtures/text/train.txt`).
fn eval_sentences() -> anyhow::Result<Vec<String>> {
    read_lines(&super::workspace_root().join("fixtures/text/eval.txt"))
}

fn read_lines(path: &Path) -> anyhow::Result<Vec<String>> {
    Ok(std::fs::read_to_string(path)
        .with_context(|| format!("reading {}", path.display()))?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect())
}

#[derive(Serialize)]
struct Setup {
    model: PathBuf,
    reference: Option<PathBuf>,
    eval_sentences: usize,
    similarity_pairs_among: usize,
    latency_batch: usize,
    latency_tokens: usize,
    int8: DynamicConfig,
    /// The integer kernel the int8 model runs on.
    int8_kernel: &'static str,
    int4: WeightConfig,
    /// Sentences of the distillation corpus the head scores are measured on.
    head_probe_sentences: usize,
    distillation: TrainConfig,
    distillation_sentences: usize,
    /// The teacher's layers the pre-trained student starts from.
    student_layers: Vec<usize>,
}

/// Dynamic int8 as `embed --variant int8` and this experiment run it: every linear layer's
/// weight symmetric per output channel, its input affine `u8` per batch, on the integer
/// kernels; the embedding tables int8 weight-only, one scale per row.
pub fn int8_config() -> DynamicConfig {
    DynamicConfig {
        weights: WeightConfig::int8_per_channel(),
        activations: QScheme::new(QType::UInt8, Mode::Affine),
    }
}

/// int4 weight-only, as `embed --variant int4` and this experiment run it: symmetric, one
/// scale per 32 inputs of each output, the embedding tables included.
pub fn int4_config() -> WeightConfig {
    WeightConfig::int4_per_group(32)
}

/// How many sentences of the distillation corpus (`fixtures/text/train.txt`) score the heads.
pub const HEAD_PROBE_SENTENCES: usize = 64;

/// The teacher's layers the pre-trained student starts from: every other one (0, 2 and 4 of
/// MiniLM's six; 0 of the tiny model's two).
pub fn student_layers(teacher: &Bert) -> Vec<usize> {
    (0..teacher.layers.len()).step_by(2).collect()
}

/// Where a full run saves its distilled pre-trained student, which `embed --variant student`
/// loads.
pub fn student_file() -> PathBuf {
    super::workspace_root().join("target/repro/minilm/artifacts/student.safetensors")
}

/// The first `count` sentences of the distillation corpus (`fixtures/text/train.txt`).
pub fn corpus_head(count: usize) -> anyhow::Result<Vec<String>> {
    let mut lines = read_lines(&super::workspace_root().join("fixtures/text/train.txt"))?;
    lines.truncate(count);
    Ok(lines)
}

/// The encoder with the less important half of every layer's heads removed, scored on
/// `probe` (see [`HeadSensitivity`]), and the table that chose them.
pub fn prune_half_heads(
    encoder: &SentenceEncoder,
    probe: &[&str],
    device: &Device,
) -> anyhow::Result<(Bert, HeadSensitivity)> {
    let probe = encoder.tokenize(probe, device)?;
    let heads = HeadSensitivity::measure(&encoder.model, &probe)?;
    let pruned = encoder.model.clone().keep_heads(&heads.keep_half())?;
    Ok((pruned, heads))
}

/// One compressed variant measured against the f32 model.
struct Variant {
    key: &'static str,
    what: String,
    cosine_mean: f64,
    cosine_min: f64,
    spearman: f64,
    latency_ms: f64,
    speedup: f64,
    bytes: u64,
    size_ratio: f64,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let common = &args.common;
    let quick = common.quick;
    let device = Device::flex();
    let kernel = int8_kernel(args.int8_kernel.as_deref())?;
    let root = super::workspace_root();
    let model_dir = match (&args.model, quick) {
        (Some(dir), _) => dir.clone(),
        (None, true) => root.join("fixtures/bert/tiny"),
        (None, false) => fetch_minilm()?,
    };
    let reference = [
        model_dir.join("reference.json"),
        root.join("fixtures/bert/minilm-reference.json"),
    ]
    .into_iter()
    .find(|p| p.is_file() && (p.starts_with(&model_dir) || model_dir == minilm_dir()));
    let mut sentences = eval_sentences()?;
    let train_sentences = corpus_head(if quick { 64 } else { usize::MAX })?;
    if quick {
        sentences.truncate(48);
    }
    eprintln!("minilm: loading {}", model_dir.display());
    let encoder = SentenceEncoder::load(&model_dir, &device)?;
    if let Some(repeats) = args.latency_only {
        return latency_only(&encoder, &sentences, kernel, repeats, quick, &device);
    }
    let setup = Setup {
        model: model_dir.clone(),
        reference: reference.clone(),
        eval_sentences: sentences.len(),
        similarity_pairs_among: sentences.len().min(300),
        latency_batch: LATENCY_BATCH,
        latency_tokens: latency_tokens(quick),
        int8: int8_config(),
        int8_kernel: kernel.name(),
        int4: int4_config(),
        head_probe_sentences: if quick { 16 } else { HEAD_PROBE_SENTENCES },
        distillation: TrainConfig {
            epochs: if quick { 1 } else { 3 },
            batch_size: 32,
            learning_rate: 2e-4,
            seed: 42,
            progress: false,
            ..TrainConfig::default()
        },
        distillation_sentences: train_sentences.len(),
        student_layers: student_layers(&encoder.model),
    };
    let out = common.out_dir("minilm");
    let artifacts = out.join("artifacts");
    std::fs::create_dir_all(&artifacts)?;

    let reference_cosines = match &reference {
        Some(path) => Some(check_reference(&encoder, path, &device)?),
        None => None,
    };
    let refs: Vec<&str> = sentences.iter().map(String::as_str).collect();
    let float = embed_all(&encoder, &refs, &device)?;
    let pairs = setup.similarity_pairs_among;
    let float_similarities = similarities(&float[..pairs]);
    let latency_batch = latency_batch(
        &encoder,
        &refs,
        setup.latency_batch,
        setup.latency_tokens,
        &device,
    )?;
    let float_bytes = f32_bytes(&encoder.model, &artifacts.join("f32.safetensors"))?;

    eprintln!("minilm: dynamic int8");
    let mut int8 = quantize_dynamic(encoder.model.clone(), &setup.int8)?;
    int8.set_integer_kernel(Some(kernel));
    let int8_bytes = save_quantized(&int8, &artifacts.join("int8.safetensors"))?;
    let integer_layers = int8.integer_layers().len();
    eprintln!("minilm: int4 weight-only");
    let int4 = quantize_weights(encoder.model.clone(), &setup.int4)?;
    let int4_bytes = save_quantized(&int4, &artifacts.join("int4.safetensors"))?;

    eprintln!("minilm: scoring every attention head");
    let train_refs: Vec<&str> = train_sentences.iter().map(String::as_str).collect();
    let (pruned, heads) = prune_half_heads(
        &encoder,
        &train_refs[..setup.head_probe_sentences.min(train_refs.len())],
        &device,
    )?;
    let pruned_bytes = f32_bytes(&pruned, &artifacts.join("heads-pruned.safetensors"))?;

    eprintln!("minilm: distilling students of every other layer");
    let corpus = encoder.dataset(&train_refs)?;
    let teacher = embed_tensor(&encoder, &train_refs, &device)?;
    let pretrained = distil(
        encoder.model.with_layers(&setup.student_layers)?,
        &teacher,
        &corpus,
        &setup.distillation,
        &device,
    )?;
    device.seed(setup.distillation.seed);
    let random_student = BertConfig {
        num_hidden_layers: setup.student_layers.len(),
        ..encoder.model.config.clone()
    }
    .init(&device)?;
    let random = distil(
        random_student,
        &teacher,
        &corpus,
        &setup.distillation,
        &device,
    )?;
    let student_bytes = f32_bytes(&pretrained, &artifacts.join("student.safetensors"))?;

    let models = [
        &encoder.model,
        &int8.model,
        &int4.model,
        &pruned,
        &pretrained,
        &random,
    ];
    let repeats = if quick { 2 } else { 7 };
    let mut runs: Vec<Box<dyn FnMut()>> = models
        .iter()
        .map(|m| {
            let batch = latency_batch.clone();
            let m = (*m).clone();
            Box::new(move || {
                let _ = m.hidden_states(&batch).into_data();
            }) as Box<dyn FnMut()>
        })
        .collect();
    let mut refs_mut: Vec<&mut dyn FnMut()> = runs
        .iter_mut()
        .map(|f| &mut **f as &mut dyn FnMut())
        .collect();
    let times = interleaved_median_us(repeats, &mut refs_mut);
    let float_ms = times[0] / 1e3;

    let mut variants = Vec::new();
    for (key, what, model, bytes, time) in [
        (
            "int8",
            format!(
                "dynamic int8: linear weights per channel, inputs per batch, {integer_layers} layers on the \
                 {} integer kernel; embeddings int8 weight-only",
                kernel.name()
            ),
            &int8.model,
            int8_bytes,
            times[1],
        ),
        (
            "int4",
            "int4 weight-only, one scale per 32 inputs (float compute)".to_string(),
            &int4.model,
            int4_bytes,
            times[2],
        ),
        (
            "heads_pruned",
            "half the attention heads of every layer removed (the least important by the \
             sensitivity table), no retraining"
                .to_string(),
            &pruned,
            pruned_bytes,
            times[3],
        ),
        (
            "student_pretrained",
            format!(
                "{}-layer student from the teacher's layers {:?}, distilled",
                setup.student_layers.len(),
                setup.student_layers
            ),
            &pretrained,
            student_bytes,
            times[4],
        ),
        (
            "student_random",
            format!(
                "{}-layer student from random weights, distilled the same way",
                setup.student_layers.len()
            ),
            &random,
            student_bytes,
            times[5],
        ),
    ] {
        eprintln!("minilm: {key} embeddings");
        let variant_encoder = SentenceEncoder {
            model: model.clone(),
            ..encoder.clone()
        };
        let ours = embed_all(&variant_encoder, &refs, &device)?;
        let cosines: Vec<f64> = float.iter().zip(&ours).map(|(a, b)| cosine(a, b)).collect();
        variants.push(Variant {
            key,
            what,
            cosine_mean: cosines.iter().sum::<f64>() / cosines.len() as f64,
            cosine_min: cosines.iter().copied().fold(f64::INFINITY, f64::min),
            spearman: spearman(&float_similarities, &similarities(&ours[..pairs])),
            latency_ms: time / 1e3,
            speedup: times[0] / time,
            bytes,
            size_ratio: float_bytes as f64 / bytes as f64,
        });
    }
    let report = render(
        quick,
        &setup,
        reference_cosines.as_deref(),
        float_ms,
        float_bytes,
        &variants,
        &heads,
    );
    report.write(&out, &setup)
}

/// The f32 size on disk of `model`: the same container as the quantized files, every
/// parameter float.
fn f32_bytes(model: &Bert, path: &Path) -> anyhow::Result<u64> {
    Ok(save_quantized(
        &Quantized {
            model: model.clone(),
            weights: Default::default(),
            inputs: Default::default(),
        },
        path,
    )?)
}

/// How much the embeddings of a probe batch move when one head is removed: per layer, per
/// head, `1 - mean cosine` to the whole model's; then the table of each layer with its less
/// important half removed alone.
pub struct HeadSensitivity {
    /// `drop[layer][head]`.
    drop: Vec<Vec<f64>>,
    /// Per layer: `1 - mean cosine` with that layer's less important half removed.
    half_removed: Vec<f64>,
}

impl HeadSensitivity {
    fn measure(model: &Bert, probe: &TokenBatch) -> anyhow::Result<Self> {
        let base = rows(model.embed(probe))?;
        let drop_of = |m: Bert| -> anyhow::Result<f64> {
            let ours = rows(m.embed(probe))?;
            let mean = base
                .iter()
                .zip(&ours)
                .map(|(a, b)| cosine(a, b))
                .sum::<f64>()
                / base.len() as f64;
            Ok(1.0 - mean)
        };
        let heads = model.heads();
        let all: Vec<Vec<usize>> = heads.iter().map(|&h| (0..h).collect()).collect();
        let mut drop = Vec::with_capacity(heads.len());
        for (layer, &count) in heads.iter().enumerate() {
            let mut row = Vec::with_capacity(count);
            for head in 0..count {
                let mut keep = all.clone();
                keep[layer].retain(|&h| h != head);
                row.push(drop_of(model.clone().keep_heads(&keep)?)?);
            }
            drop.push(row);
        }
        let mut this = Self {
            drop,
            half_removed: Vec::new(),
        };
        let half = this.keep_half();
        for layer in 0..heads.len() {
            let mut keep = all.clone();
            keep[layer] = half[layer].clone();
            this.half_removed
                .push(drop_of(model.clone().keep_heads(&keep)?)?);
        }
        Ok(this)
    }

    /// Per layer, the more important half of the heads (ascending).
    fn keep_half(&self) -> Vec<Vec<usize>> {
        self.drop
            .iter()
            .map(|row| {
                let mut order: Vec<usize> = (0..row.len()).collect();
                order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
                let mut keep: Vec<usize> = order[..row.len().div_ceil(2)].to_vec();
                keep.sort_unstable();
                keep
            })
            .collect()
    }
}

/// A student trained so that its sentence embeddings point where the teacher's do: one minus
/// their cosine (both are unit length), on Ember's loop with the corpus as token batches.
fn distil(
    student: Bert,
    teacher: &Tensor<2>,
    corpus: &Sentences,
    config: &TrainConfig,
    device: &Device,
) -> anyhow::Result<Bert> {
    let (student, _) = fit(
        student,
        corpus,
        config,
        device,
        |s: &Bert, batch: Batch<TokenBatch>| {
            let index: Vec<i64> = batch.indices.iter().map(|&i| i as i64).collect();
            let index =
                Tensor::<1, Int>::from_data(TensorData::new(index, [batch.indices.len()]), device);
            let target = teacher.clone().select(0, index).autodiff();
            let ours = s.embed(&batch.inputs);
            Ok::<_, ember_tensor::Error>((ours * target).sum_dim(1).mean().neg().add_scalar(1.0))
        },
    )?;
    Ok(student)
}

fn rows(t: Tensor<2>) -> anyhow::Result<Vec<Vec<f64>>> {
    let [_, width] = t.dims();
    let flat = t
        .into_data()
        .try_to_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(flat
        .chunks(width)
        .map(|r| r.iter().map(|&v| f64::from(v)).collect())
        .collect())
}

/// Embeddings of `sentences` as one tensor on `device`, 32 at a time.
fn embed_tensor(
    encoder: &SentenceEncoder,
    sentences: &[&str],
    device: &Device,
) -> anyhow::Result<Tensor<2>> {
    let parts = sentences
        .chunks(32)
        .map(|chunk| encoder.embed(chunk, device))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Tensor::cat(parts, 0))
}

/// Cosine of each reference sentence's embedding with the NumPy implementation's; the token
/// ids must be the same.
fn check_reference(
    encoder: &SentenceEncoder,
    path: &Path,
    device: &Device,
) -> anyhow::Result<Vec<f64>> {
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    let rows = json["rows"].as_array().context("reference without rows")?;
    let mut cosines = Vec::new();
    for row in rows {
        let sentence = row["sentence"].as_str().context("row without a sentence")?;
        let ids: Vec<u32> = serde_json::from_value(row["ids"].clone())?;
        let expected: Vec<f64> = serde_json::from_value(row["embedding"].clone())?;
        let ours = encoder.token_ids(sentence)?;
        anyhow::ensure!(
            ours == ids,
            "the tokenizer gives other ids than the reference's for {sentence:?}: {ours:?}, not {ids:?}"
        );
        let ours = embed_all(encoder, &[sentence], device)?;
        cosines.push(cosine(&ours[0], &expected));
    }
    Ok(cosines)
}

/// Embeddings of `sentences`, 32 at a time.
fn embed_all(
    encoder: &SentenceEncoder,
    sentences: &[&str],
    device: &Device,
) -> anyhow::Result<Vec<Vec<f64>>> {
    rows(embed_tensor(encoder, sentences, device)?)
}

/// `--latency-only`: the f32 encoder against its dynamic int8 form on the latency batch.
fn latency_only(
    encoder: &SentenceEncoder,
    sentences: &[String],
    kernel: Int8Kernel,
    repeats: usize,
    quick: bool,
    device: &Device,
) -> anyhow::Result<()> {
    let refs: Vec<&str> = sentences.iter().map(String::as_str).collect();
    let tokens = latency_tokens(quick);
    let batch = latency_batch(encoder, &refs, LATENCY_BATCH, tokens, device)?;
    let mut int8 = quantize_dynamic(encoder.model.clone(), &int8_config())?;
    int8.set_integer_kernel(Some(kernel));
    let (float, int8) = (encoder.model.clone(), int8.model);
    let (b1, b2) = (batch.clone(), batch);
    let mut run_float = move || {
        let _ = float.hidden_states(&b1).into_data();
    };
    let mut run_int8 = move || {
        let _ = int8.hidden_states(&b2).into_data();
    };
    let times = interleaved_median_us(repeats, &mut [&mut run_float, &mut run_int8]);
    println!(
        "{LATENCY_BATCH} x {tokens} tokens, median of {repeats}: f32 {:.1} ms, int8 ({}) {:.1} ms: {:.2}x",
        times[0] / 1e3,
        kernel.name(),
        times[1] / 1e3,
        times[0] / times[1]
    );
    Ok(())
}

/// `batch` rows of exactly `tokens` word pieces: `[CLS]`, the eval sentences' pieces run
/// together, `[SEP]`; no padding, so every variant times the same full-length work.
fn latency_batch(
    encoder: &SentenceEncoder,
    sentences: &[&str],
    batch: usize,
    tokens: usize,
    device: &Device,
) -> anyhow::Result<TokenBatch> {
    let (mut pieces, mut cls, mut sep) = (Vec::new(), 0, 0);
    for sentence in sentences {
        let ids = encoder.token_ids(sentence)?;
        cls = ids[0];
        sep = ids[ids.len() - 1];
        pieces.extend_from_slice(&ids[1..ids.len() - 1]);
        if pieces.len() >= batch * tokens {
            break;
        }
    }
    anyhow::ensure!(
        pieces.len() >= batch * (tokens - 2),
        "too few sentences to time with"
    );
    let mut ids = Vec::with_capacity(batch * tokens);
    for row in pieces.chunks(tokens - 2).take(batch) {
        ids.push(i64::from(cls));
        ids.extend(row.iter().map(|&p| i64::from(p)));
        ids.push(i64::from(sep));
    }
    Ok(TokenBatch {
        ids: Tensor::<2, Int>::from_data(TensorData::new(ids, [batch, tokens]), device),
        real: Tensor::from_data(
            TensorData::new(vec![true; batch * tokens], [batch, tokens]),
            device,
        ),
    })
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b)).max(f64::MIN_POSITIVE)
}

/// The cosine similarity of every pair `i < j`.
fn similarities(embeddings: &[Vec<f64>]) -> Vec<f64> {
    let mut out = Vec::new();
    for i in 0..embeddings.len() {
        for j in i + 1..embeddings.len() {
            out.push(cosine(&embeddings[i], &embeddings[j]));
        }
    }
    out
}

/// Spearman's rank correlation: Pearson's of the ranks, ties given their mean rank.
fn spearman(a: &[f64], b: &[f64]) -> f64 {
    pearson(&ranks(a), &ranks(b))
}

fn ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&i, &j| values[i].total_cmp(&values[j]));
    let mut ranks = vec![0.0; values.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && values[order[end]] == values[order[start]] {
            end += 1;
        }
        let mean = (start + end - 1) as f64 / 2.0;
        for &i in &order[start..end] {
            ranks[i] = mean;
        }
        start = end;
    }
    ranks
}

fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let var = |v: &[f64], m: f64| v.iter().map(|x| (x - m).powi(2)).sum::<f64>();
    cov / (var(a, ma) * var(b, mb)).sqrt().max(f64::MIN_POSITIVE)
}

fn render(
    quick: bool,
    setup: &Setup,
    reference: Option<&[f64]>,
    float_ms: f64,
    float_bytes: u64,
    variants: &[Variant],
    heads: &HeadSensitivity,
) -> Report {
    let mut report = Report::new("all-MiniLM-L6-v2 in Ember: correctness and compression");
    if quick {
        report.section(
            "Quick run",
            "`--quick`: the tiny random model of `fixtures/bert/tiny` on 48 sentences and a \
             batch of 16 tokens. A smoke test, not the figures.",
        );
    }
    let mut claims = Vec::new();
    match reference {
        Some(cosines) => {
            let min = cosines.iter().copied().fold(f64::INFINITY, f64::min);
            report.metric("reference_cosine_min", min);
            report.section(
                "Against an independent implementation",
                &format!(
                    "{} sentences (`fixtures/bert/sentences.txt`, one longer than the maximum \
                     length, cut) embedded by Ember and by `fixtures/bert/reference.py` (NumPy, \
                     float64, from the same weights): the same token ids, lowest cosine \
                     {min:.6}.",
                    cosines.len()
                ),
            );
            claims.push(Claim::new(
                quick,
                "Ember's embeddings match an independent implementation's",
                format!("lowest cosine {min:.6}"),
                "at least 0.9999 each".to_string(),
                min >= 0.9999,
            ));
        }
        None => report.section(
            "Against an independent implementation",
            "No reference for this model folder (`reference.json` beside it): not checked.",
        ),
    }
    let mut rows = vec![vec![
        "f32".to_string(),
        "1".into(),
        "1".into(),
        "1".into(),
        format!("{float_ms:.1}"),
        "1.00".into(),
        format!("{:.1}", float_bytes as f64 / 1e6),
        "1.00".into(),
    ]];
    for v in variants {
        rows.push(vec![
            v.what.clone(),
            format!("{:.4}", v.cosine_mean),
            format!("{:.4}", v.cosine_min),
            format!("{:.4}", v.spearman),
            format!("{:.1}", v.latency_ms),
            format!("{:.2}", v.speedup),
            format!("{:.1}", v.bytes as f64 / 1e6),
            format!("{:.2}", v.size_ratio),
        ]);
        report.metric(&format!("{}_cosine_mean", v.key), v.cosine_mean);
        report.metric(&format!("{}_cosine_min", v.key), v.cosine_min);
        report.metric(&format!("{}_spearman", v.key), v.spearman);
        report.metric(&format!("{}_speedup_b32", v.key), v.speedup);
        report.metric(&format!("{}_size_ratio", v.key), v.size_ratio);
    }
    report.metric("f32_latency_b32_seconds", float_ms / 1e3);
    report.table(
        &format!(
            "Fidelity to the f32 model on {} sentences (pairwise similarities among the first {}), \
             encoder latency for {} sentences of {} tokens, size on disk",
            setup.eval_sentences,
            setup.similarity_pairs_among,
            setup.latency_batch,
            setup.latency_tokens
        ),
        &[
            "variant",
            "cosine to f32, mean",
            "lowest",
            "Spearman of similarities",
            "ms a batch",
            "speed-up",
            "MB",
            "smaller by",
        ],
        &rows,
    );
    let head_rows: Vec<Vec<String>> = heads
        .drop
        .iter()
        .zip(&heads.half_removed)
        .enumerate()
        .map(|(layer, (row, half))| {
            let (low, high) = row
                .iter()
                .fold((f64::INFINITY, 0.0f64), |(l, h), &d| (l.min(d), h.max(d)));
            vec![
                layer.to_string(),
                format!("{low:.5}"),
                format!("{high:.5}"),
                format!("{half:.5}"),
            ]
        })
        .collect();
    report.table(
        &format!(
            "Attention-head sensitivity: 1 - mean cosine to the whole model's embeddings of {} \
             corpus sentences",
            setup.head_probe_sentences
        ),
        &[
            "layer",
            "one head removed: least",
            "most",
            "its less important half removed",
        ],
        &head_rows,
    );
    let find = |key: &str| variants.iter().find(|v| v.key == key);
    if let (Some(pretrained), Some(random)) = (find("student_pretrained"), find("student_random")) {
        report.metric("student_pretrained_cosine", pretrained.cosine_mean);
        report.metric("student_random_cosine", random.cosine_mean);
        claims.push(Claim::new(
            quick,
            "a student started from the teacher's layers beats one started from random weights",
            format!(
                "mean cosine {:.4} against {:.4}",
                pretrained.cosine_mean, random.cosine_mean
            ),
            "higher".to_string(),
            pretrained.cosine_mean > random.cosine_mean,
        ));
    }
    if let Some(int8) = variants.iter().find(|v| v.key == "int8") {
        claims.push(
            Claim::new(
                quick,
                "dynamic int8 keeps the embeddings",
                format!(
                    "mean cosine {:.4}, lowest {:.4}",
                    int8.cosine_mean, int8.cosine_min
                ),
                "mean at least 0.99".to_string(),
                int8.cosine_mean >= 0.99,
            )
            .pytorch("0.94 mean, 0.82 lowest (quantize_dynamic, per-tensor)"),
        );
        claims.push(Claim::new(
            quick,
            "dynamic int8 keeps the ranking of pairwise similarities",
            format!("Spearman {:.4}", int8.spearman),
            "at least 0.99".to_string(),
            int8.spearman >= 0.99,
        ));
        claims.push(
            Claim::new(
                quick,
                format!(
                    "dynamic int8 encodes {} sentences of {} tokens faster than f32 on flex",
                    setup.latency_batch, setup.latency_tokens
                ),
                format!("{:.2}x", int8.speedup),
                "at least 1.8x".to_string(),
                int8.speedup >= 1.8,
            )
            .pytorch("about 1.5x (quantize_dynamic, Zen 3, 2 threads)"),
        );
        claims.push(Claim::new(
            quick,
            "dynamic int8 is smaller on disk",
            format!("{:.2}x", int8.size_ratio),
            "at least 3.5x".to_string(),
            int8.size_ratio >= 3.5,
        ));
    }
    report.claims_table("Claims", claims);
    report
}
