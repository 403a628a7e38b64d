//! `cargo xtask repro all [--quick]`: every experiment in turn (each in its own process, as a
//! user would run it), then `report.md` beside their reports: every claim they judged, the
//! paper's figure, PyTorch's where one was measured, ours and the verdict, side by side; the
//! plots; and the machine. `--quick` runs each experiment's quick version (CI runs it).

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

use super::{Claim, CommonArgs, machine, workspace_root};

/// Every experiment `repro all` runs, in the order it runs them (the baseline first: later
/// experiments start from its trained models).
pub const EXPERIMENTS: [&str; 11] = [
    "baseline",
    "quant",
    "export",
    "memory",
    "learner",
    "prune",
    "structured",
    "qat",
    "lottery",
    "distill",
    "minilm",
];

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    common: CommonArgs,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let common = &args.common;
    let root = common
        .out
        .clone()
        .unwrap_or_else(|| workspace_root().join("target/repro"));
    let xtask = std::env::current_exe().context("cannot find the xtask binary")?;
    for experiment in EXPERIMENTS {
        eprintln!(
            "repro all: {experiment}{}",
            if common.quick { " --quick" } else { "" }
        );
        let mut command = Command::new(&xtask);
        command
            .args([
                "repro",
                experiment,
                "--backend",
                &common.backend.to_string(),
            ])
            .arg("--out")
            .arg(&root);
        if let Some(data) = &common.data {
            command.arg("--data").arg(data);
        }
        if common.quick {
            command.arg("--quick");
        }
        if common.retrain {
            command.arg("--retrain");
        }
        let status = command
            .status()
            .with_context(|| format!("cannot run {}", xtask.display()))?;
        if !status.success() {
            bail!("repro {experiment} failed ({status})");
        }
    }
    let report = render(common, &root)?;
    let path = root.join("report.md");
    std::fs::write(&path, report).with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

/// The combined report from each experiment's `claims.json` and plots under `root`. An
/// experiment that judged no claim on MNIST is an error: its row would be empty.
fn render(common: &CommonArgs, root: &Path) -> anyhow::Result<String> {
    let mut rows = String::new();
    let mut plots = String::new();
    let (mut met, mut judged, mut total) = (0, 0, 0);
    for experiment in EXPERIMENTS {
        let dir = root.join(experiment);
        let path = dir.join("claims.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let claims: Vec<Claim> = serde_json::from_str(&text)
            .with_context(|| format!("cannot parse {}", path.display()))?;
        if claims.is_empty() && common.on_mnist() {
            bail!("repro {experiment} judged no claim ({})", path.display());
        }
        for claim in &claims {
            let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
            rows += &format!(
                "| [{experiment}]({experiment}/report.md) | {} | {} | {} | {} | {} | {} |\n",
                claim.what,
                dash(&claim.paper),
                dash(&claim.pytorch),
                claim.ours,
                claim.target,
                claim.verdict()
            );
            total += 1;
            if let Some(ok) = claim.met {
                judged += 1;
                met += usize::from(ok);
            }
        }
        let mut svgs: Vec<String> = std::fs::read_dir(&dir)
            .with_context(|| format!("cannot list {}", dir.display()))?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".svg"))
            .collect();
        svgs.sort();
        for svg in svgs {
            plots += &format!("![{experiment}: {svg}]({experiment}/{svg})\n\n");
        }
    }
    let summary = if common.quick {
        format!(
            "`--quick`: every experiment on a subset, for a few epochs: a smoke test whose {total} \
             claims are not judged."
        )
    } else {
        format!("{met} of {judged} claims met.")
    };
    Ok(format!(
        "# Every experiment's claims\n\n`cargo xtask repro all{}` on `{}`. {summary} Each row \
         links the experiment's own report, which says how it was measured.\n\n\
         | experiment | claim | paper | PyTorch | ours | target | met |\n|---|---|---|---|---|---|---|\n\
         {rows}\n## Plots\n\n{plots}## Machine\n\n{}\n",
        if common.quick { " --quick" } else { "" },
        common.backend,
        machine::describe()
    ))
}
