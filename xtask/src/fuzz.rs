//! `cargo xtask fuzz <target> [--seconds N]`: one of `ember-fuzz`'s harnesses under libFuzzer
//! (cargo-fuzz, nightly), its corpus seeded with files the crates write themselves, with a
//! memory bound. Prints and writes `target/fuzz/<target>.json`: runs, seconds, peak memory, and
//! whether anything crashed (libFuzzer keeps the input under `fuzz/artifacts/<target>/`).

use std::process::Command;

use anyhow::{Context, bail};
use ember_fuzz::Target;

use crate::repro::workspace_root;

/// libFuzzer's memory bound for one target: past it, the run stops as a failure (an input that
/// makes a loader allocate what its size does not justify).
const RSS_LIMIT_MB: u64 = 2048;
/// Seconds one input may take before libFuzzer reports a hang.
const TIMEOUT_SECONDS: u64 = 10;

/// What `cargo xtask fuzz` takes.
#[derive(clap::Args)]
pub struct FuzzArgs {
    /// The harness: idx, model, quantized, sparse, binary, masked or configs.
    target: String,
    /// How long to fuzz.
    #[arg(long, default_value_t = 600)]
    seconds: u64,
}

pub fn run(args: &FuzzArgs) -> anyhow::Result<()> {
    let names: Vec<&str> = Target::ALL.iter().map(|t| t.name()).collect();
    let target = Target::from_name(&args.target).with_context(|| {
        format!(
            "no fuzz target `{}`: the targets are {}",
            args.target,
            names.join(", ")
        )
    })?;
    let root = workspace_root();
    let fuzz_dir = root.join("fuzz");
    let installed = Command::new("cargo")
        .args(["+nightly", "fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !installed {
        bail!(
            "cargo-fuzz on nightly is needed: `cargo install cargo-fuzz` (and a nightly toolchain)"
        );
    }
    let corpus = root.join("target/fuzz-corpus").join(target.name());
    std::fs::create_dir_all(&corpus)?;
    for (i, seed) in target.seeds().iter().enumerate() {
        std::fs::write(corpus.join(format!("seed-{i}")), seed)?;
    }
    eprintln!(
        "xtask fuzz: {} for {} s, corpus {}",
        target.name(),
        args.seconds,
        corpus.display()
    );
    let output = Command::new("cargo")
        .current_dir(&fuzz_dir)
        .args(["+nightly", "fuzz", "run", target.name()])
        .arg(&corpus)
        .arg("--")
        .arg(format!("-max_total_time={}", args.seconds))
        .arg(format!("-rss_limit_mb={RSS_LIMIT_MB}"))
        .arg(format!("-timeout={TIMEOUT_SECONDS}"))
        .arg("-print_final_stats=1")
        .output()
        .context("cannot run cargo fuzz")?;
    let log = String::from_utf8_lossy(&output.stderr);
    let results = root.join("target/fuzz");
    std::fs::create_dir_all(&results)?;
    let log_path = results.join(format!("{}.log", target.name()));
    std::fs::write(&log_path, log.as_bytes())?;
    let stat = |name: &str| -> Option<u64> {
        log.lines()
            .find_map(|l| l.strip_prefix(&format!("stat::{name}:")))
            .and_then(|v| v.trim().parse().ok())
    };
    let report = serde_json::json!({
        "target": target.name(),
        "seconds": args.seconds,
        "runs": stat("number_of_executed_units"),
        "peak_rss_mb": stat("peak_rss_mb"),
        "rss_limit_mb": RSS_LIMIT_MB,
        "timeout_seconds": TIMEOUT_SECONDS,
        "passed": output.status.success(),
    });
    let json = serde_json::to_string_pretty(&report)? + "\n";
    std::fs::write(results.join(format!("{}.json", target.name())), &json)?;
    println!("{json}");
    if !output.status.success() {
        bail!(
            "fuzzing {} failed: see {} and fuzz/artifacts/{}/",
            target.name(),
            log_path.display(),
            target.name()
        );
    }
    Ok(())
}
