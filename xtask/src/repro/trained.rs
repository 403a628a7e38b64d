//! Trained models shared between experiments. Several experiments start from the same dense
//! network (the baseline's LeNet-300-100 and LeNet-5, distillation's teachers): the first run
//! that trains one saves it under `<out>/models/`, beside the recipe it was trained by, and any
//! later run whose recipe serializes the same loads it instead of training it again. Training
//! is reproducible bit for bit on one machine, so a loaded model is the one training would
//! give.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::Device;
use ember_tensor::{BackendKind, TrainReport, train_with_hook};
use ember_zoo::{
    Dataset, Jittered, LabeledData, LeNet5, Mlp, Model, ModelConfig, TrainConfig, load_model,
};
use serde::Serialize;

use super::CommonArgs;

/// Everything a trained model's weights depend on.
#[derive(Serialize, Debug, Clone)]
pub struct Recipe {
    pub model: ModelConfig,
    pub training: TrainConfig,
    /// Largest random shift of the training images, in pixels (0: the images as they are).
    pub jitter_pixels: usize,
    pub data_dir: String,
    pub train_samples: usize,
    pub backend: BackendKind,
    /// The commit of the code that trains (a change to training changes the weights).
    pub commit: String,
}

impl Recipe {
    /// `model` trained with `training` on `data`'s training split as it is.
    pub fn new(
        model: &ModelConfig,
        training: &TrainConfig,
        data: &Dataset,
        common: &CommonArgs,
    ) -> Self {
        Self {
            model: model.clone(),
            training: training.clone(),
            jitter_pixels: 0,
            data_dir: common.data_dir().display().to_string(),
            train_samples: data.train.len(),
            backend: common.backend,
            commit: commit(),
        }
    }

    /// The same recipe on training images shifted by up to `pixels`.
    pub fn jittered(self, pixels: usize) -> Self {
        Self {
            jitter_pixels: pixels,
            ..self
        }
    }
}

/// A model from [`trained`].
pub struct Trained {
    pub model: Model,
    /// The weights at the requested step (for weight rewinding).
    pub snapshot: Option<Model>,
    /// The training run, when this call trained (`None` when it loaded a saved model).
    pub report: Option<TrainReport>,
    /// The file the model is saved in.
    pub path: PathBuf,
}

impl Trained {
    pub fn mlp(self) -> anyhow::Result<Mlp> {
        match self.model {
            Model::Mlp(m) => Ok(m),
            _ => anyhow::bail!("{} is not an MLP", self.path.display()),
        }
    }

    pub fn lenet5(self) -> anyhow::Result<LeNet5> {
        match self.model {
            Model::LeNet5(m) => Ok(m),
            _ => anyhow::bail!("{} is not a LeNet-5", self.path.display()),
        }
    }
}

/// The model `recipe` trains, with the weights after `snapshot_step` steps if asked: loaded from
/// `common.models_dir()` if an earlier run saved it there with the same recipe (and that
/// snapshot) and `--retrain` is not set, else trained from `Device::seed(recipe.training.seed)`
/// and saved there.
pub fn trained(
    recipe: &Recipe,
    data: &Dataset,
    common: &CommonArgs,
    snapshot_step: Option<usize>,
    device: &Device,
) -> anyhow::Result<Trained> {
    let dir = common.models_dir();
    let dir = dir.as_path();
    let recipe_json = serde_json::to_string_pretty(recipe)?;
    let stem = format!(
        "{}-{:016x}",
        name(&recipe.model),
        fnv1a(recipe_json.as_bytes())
    );
    let path = dir.join(format!("{stem}.bpk"));
    let recipe_path = dir.join(format!("{stem}.recipe.json"));
    let snapshot_path = snapshot_step.map(|step| dir.join(format!("{stem}.step-{step}.bpk")));
    let init = || -> anyhow::Result<Model> {
        device.seed(recipe.training.seed);
        Ok(recipe.model.init(device)?)
    };

    let saved = std::fs::read_to_string(&recipe_path).ok();
    if !common.retrain && saved.as_deref() == Some(recipe_json.as_str()) {
        let load = |p: &Path| load_model(p, device).map(|(m, _)| m);
        let snapshot = match (&snapshot_path, snapshot_step) {
            (_, Some(0)) => Some(Ok(init()?)),
            (Some(p), _) => Some(load(p)),
            _ => None,
        };
        match (load(&path), snapshot.transpose()) {
            (Ok(model), Ok(snapshot)) => {
                eprintln!("  {} loaded from {}", name(&recipe.model), path.display());
                return Ok(Trained {
                    model,
                    snapshot,
                    report: None,
                    path,
                });
            }
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("  cannot reuse {} ({e}): training again", path.display())
            }
        }
    }

    let start = init()?;
    let mut snapshot = (snapshot_step == Some(0)).then(|| start.clone());
    let hook = |step: usize, model: Model| {
        if Some(step) == snapshot_step {
            snapshot = Some(model.valid());
        }
        Ok::<_, ember_tensor::Error>(model)
    };
    let (model, report) = if recipe.jitter_pixels == 0 {
        train_with_hook(start, &data.train, &recipe.training, device, hook)?
    } else {
        let jittered = Jittered::new(&data.train, recipe.jitter_pixels, recipe.training.seed);
        train_with_hook(start, &jittered, &recipe.training, device, hook)?
    };
    if snapshot_step.is_some() && snapshot.is_none() {
        anyhow::bail!("training stopped before step {snapshot_step:?}");
    }
    std::fs::create_dir_all(dir)?;
    ember_zoo::save_model(model.clone(), &recipe.model, &path)?;
    // Step 0 is the initialization, made again from the seed rather than saved.
    if let (Some(p), Some(s), false) = (&snapshot_path, &snapshot, snapshot_step == Some(0)) {
        ember_zoo::save_model(s.clone(), &recipe.model, p)?;
    }
    // Written last: a run cut off before this point leaves no recipe to match.
    ember_tensor::fs::write_atomically(&recipe_path, recipe_json.as_bytes())?;
    Ok(Trained {
        model,
        snapshot,
        report: Some(report),
        path,
    })
}

/// A file-name stem for a model: `mlp-300-100`, `lenet5`.
fn name(config: &ModelConfig) -> String {
    match config {
        ModelConfig::Mlp(c) => std::iter::once("mlp".to_string())
            .chain(c.hidden.iter().map(usize::to_string))
            .collect::<Vec<_>>()
            .join("-"),
        ModelConfig::LeNet5(_) => "lenet5".into(),
        ModelConfig::ResNet(c) => format!("resnet-{}", c.width),
        ModelConfig::Transformer(c) => format!("transformer-{}", c.width),
    }
}

/// The checked-out commit, with a hash of any uncommitted change to it ("unknown" outside a
/// git checkout); asked of git once per run.
fn commit() -> String {
    static COMMIT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    COMMIT.get_or_init(ask_git).clone()
}

fn ask_git() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(super::workspace_root())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| o.stdout)
    };
    let Some(head) = git(&["rev-parse", "HEAD"]) else {
        return "unknown".into();
    };
    let head = String::from_utf8_lossy(&head).trim().to_string();
    match git(&["diff", "HEAD"]) {
        Some(diff) if !diff.is_empty() => format!("{head}+{:016x}", fnv1a(&diff)),
        _ => head,
    }
}

/// FNV-1a: a hash that stays the same across Rust releases (std's `DefaultHasher` may not), so
/// that file names stay stable; the recipe file beside the model is what is compared.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
