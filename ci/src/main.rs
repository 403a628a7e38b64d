//! `cargo ci`: what CI checks, runnable locally. `.ci/run` runs it on a fresh machine.
//!
//! In order: the format check, clippy with warnings denied, the docs with warnings denied, then
//! every test (wgpu's too where a Vulkan driver is installed, on Debian's software device where
//! there is no GPU). The tests include the examples (`harness = false` test targets of
//! ember-examples) and every experiment's quick run (`repro all --quick`, xtask's
//! `tests/repro_quick.rs`), which runs the xtask binary of the same debug build: one build of
//! burn for everything, where a release xtask would build it a third time (after clippy's and
//! the tests'), which cost CI 16 to 27 minutes of its 90.
//!
//! Options: `--no-wgpu` skips the wgpu tests even where a driver is installed. With
//! `EMBER_REQUIRE_WGPU` set (as `.ci/run` sets it) a missing driver is an error, not a skip.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};

/// Where Debian's `mesa-vulkan-drivers` (and GPU drivers) register their Vulkan ICDs.
const VULKAN_ICD_DIRS: [&str; 2] = ["/usr/share/vulkan/icd.d", "/etc/vulkan/icd.d"];

/// The features that put wgpu into the test build, so the backend tests run on it too.
const WGPU_FEATURES: &str = "ember-zoo/wgpu,ember-distill/wgpu,ember-prune/wgpu,ember-quant/wgpu";

fn main() -> anyhow::Result<()> {
    let mut no_wgpu = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--no-wgpu" => no_wgpu = true,
            "-h" | "--help" => {
                println!("cargo ci [--no-wgpu]: fmt, clippy, docs and every test, as CI runs them");
                return Ok(());
            }
            other => bail!("unknown argument {other:?} (expected --no-wgpu)"),
        }
    }
    let started = Instant::now();
    cargo(&["fmt", "--all", "--check"], &[])?;
    cargo(
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )?;
    // After clippy, which has checked every dependency already: rustdoc reads the same
    // metadata.
    cargo(
        &["doc", "--workspace", "--no-deps"],
        &[("RUSTDOCFLAGS", "-D warnings")],
    )?;
    let wgpu = !no_wgpu && vulkan_driver_installed();
    if wgpu {
        // One build with every backend: the backend tests then run on flex, ndarray and wgpu.
        cargo(&["test", "--workspace", "--features", WGPU_FEATURES], &[])?;
    } else {
        if std::env::var_os("EMBER_REQUIRE_WGPU").is_some() {
            bail!(
                "EMBER_REQUIRE_WGPU is set but no Vulkan driver is installed (apt-get install mesa-vulkan-drivers)"
            );
        }
        eprintln!("ci: no Vulkan driver found, testing flex and ndarray only");
        cargo(&["test", "--workspace"], &[])?;
    }
    eprintln!(
        "ci: all checks passed{} in {:.0} s",
        if wgpu { " (wgpu included)" } else { "" },
        started.elapsed().as_secs_f64()
    );
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

/// Runs one cargo command, printing it and how long it took.
fn cargo(args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("ci: cargo {}", args.join(" "));
    let started = Instant::now();
    let status = Command::new(&cargo)
        .args(args)
        .envs(env.iter().copied())
        .status()
        .with_context(|| format!("cannot run {cargo}"))?;
    eprintln!(
        "ci: cargo {} took {:.0} s",
        args.first().copied().unwrap_or_default(),
        started.elapsed().as_secs_f64()
    );
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}
