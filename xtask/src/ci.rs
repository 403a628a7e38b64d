//! `cargo xtask ci`: what CI checks, runnable locally.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

/// Options of `cargo xtask ci`.
#[derive(clap::Args)]
pub struct CiArgs {
    /// Skip the wgpu tests even when a Vulkan driver is installed.
    #[arg(long)]
    no_wgpu: bool,
}

/// Where Debian's `mesa-vulkan-drivers` (and GPU drivers) register their Vulkan ICDs.
const VULKAN_ICD_DIRS: [&str; 2] = ["/usr/share/vulkan/icd.d", "/etc/vulkan/icd.d"];

pub fn run(args: &CiArgs) -> anyhow::Result<()> {
    cargo(&["fmt", "--all", "--check"])?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    let wgpu = !args.no_wgpu && vulkan_driver_installed();
    if wgpu {
        // One build with every backend: the backend tests then run on flex, ndarray and wgpu.
        cargo(&[
            "test",
            "--workspace",
            "--features",
            "ember-zoo/wgpu,ember-distill/wgpu,ember-prune/wgpu,ember-quant/wgpu",
        ])?;
    } else {
        if std::env::var_os("EMBER_REQUIRE_WGPU").is_some() {
            bail!(
                "EMBER_REQUIRE_WGPU is set but no Vulkan driver is installed (apt-get install mesa-vulkan-drivers)"
            );
        }
        eprintln!("xtask ci: no Vulkan driver found, testing flex and ndarray only");
        cargo(&["test", "--workspace"])?;
    }
    // The bring-your-own-model programs a user copies ran in the test step above: each is a
    // `harness = false` test target of ember-examples.
    cargo_env(
        &["doc", "--workspace", "--no-deps"],
        &[("RUSTDOCFLAGS", "-D warnings")],
    )?;
    repro_smoke_runs()?;
    eprintln!(
        "xtask ci: all checks passed{}",
        if wgpu { " (wgpu included)" } else { "" }
    );
    Ok(())
}

/// `cargo xtask repro all --quick`: every experiment's quick run (seconds each, on a subset),
/// so that a change that breaks one fails CI rather than the next person who reproduces a
/// figure, and the combined report of their claims. It runs this very binary, already built
/// in release, and writes under `target/ci-repro`.
fn repro_smoke_runs() -> anyhow::Result<()> {
    let xtask = std::env::current_exe().context("cannot find the xtask binary")?;
    let out = crate::repro::workspace_root().join("target/ci-repro");
    eprintln!("xtask ci: repro all --quick");
    let status = Command::new(&xtask)
        .args(["repro", "all", "--quick", "--out"])
        .arg(&out)
        .status()
        .with_context(|| format!("cannot run {}", xtask.display()))?;
    if !status.success() {
        bail!("repro all --quick failed ({status})");
    }
    Ok(())
}

fn vulkan_driver_installed() -> bool {
    VULKAN_ICD_DIRS.iter().any(|dir| {
        std::fs::read_dir(Path::new(dir))
            .map(|entries| {
                entries
                    .flatten()
                    .any(|e| e.path().extension().is_some_and(|x| x == "json"))
            })
            .unwrap_or(false)
    })
}

fn cargo(args: &[&str]) -> anyhow::Result<()> {
    cargo_env(args, &[])
}

fn cargo_env(args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("xtask ci: cargo {}", args.join(" "));
    let status = Command::new(&cargo)
        .args(args)
        .envs(env.iter().copied())
        .status()
        .with_context(|| format!("cannot run {cargo}"))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}
