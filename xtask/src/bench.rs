//! `cargo xtask bench <name>`: runs a criterion bench of `ember-benches` at each thread count,
//! reads criterion's estimates back and prints the ratios side by side, writing
//! `target/bench/<name>.{json,md}`. Ratios are of times measured in one run on one machine;
//! the report names the machine and the instruction set that ran.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};
use ember_kernels::Int8Kernel;
use serde_json::{Value, json};

use crate::repro::{machine, workspace_root};

/// The benches `cargo xtask bench` runs.
#[derive(clap::Subcommand)]
pub enum Bench {
    /// The int8 GEMM against f32 matmul, the machine's peaks, quantized models against float.
    Kernels(KernelsArgs),
    /// Ember's int8 linear layer against rten-gemm's, and which of them is exact at full range.
    Rten(KernelsArgs),
}

/// Options of `cargo xtask bench kernels`.
#[derive(clap::Args)]
pub struct KernelsArgs {
    /// Shorter measurements (about a minute of timing instead of several).
    #[arg(long)]
    quick: bool,
    /// Run nothing: write the report again from the results the last run left in
    /// `target/criterion`.
    #[arg(long)]
    report_only: bool,
}

const THREADS: [usize; 2] = [1, 2];
const SHAPES: [&str; 2] = ["768x3072", "4096x4096"];
const BATCHES: [usize; 3] = [1, 64, 256];

pub fn run(bench: Bench) -> anyhow::Result<()> {
    match bench {
        Bench::Kernels(args) => {
            let times = run_criterion("kernels", &args)?;
            write_report("kernels", Report::kernels(&times)?)
        }
        Bench::Rten(args) => {
            let times = run_criterion("rten", &args)?;
            write_report("rten", rten_report(&times)?)
        }
    }
}

/// Runs the criterion bench `name` of `ember-benches` once per thread count (unless
/// `--report-only`) and reads back every result criterion holds.
fn run_criterion(name: &str, args: &KernelsArgs) -> anyhow::Result<BTreeMap<String, f64>> {
    let root = workspace_root();
    let timing: &[&str] = if args.quick {
        &["--warm-up-time", "0.5", "--measurement-time", "1"]
    } else {
        &["--warm-up-time", "1", "--measurement-time", "3"]
    };
    for threads in THREADS.into_iter().filter(|_| !args.report_only) {
        eprintln!("xtask bench: {name} on {threads} thread(s)");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(&cargo)
            .current_dir(&root)
            .args(["bench", "-p", "ember-benches", "--bench", name, "--"])
            .args(timing)
            .env("RAYON_NUM_THREADS", threads.to_string())
            .status()
            .with_context(|| format!("cannot run {cargo}"))?;
        if !status.success() {
            bail!("the {name} bench failed ({status})");
        }
    }
    read_criterion(&root.join("target/criterion"))
}

/// Writes `target/bench/<name>.{json,md}` and prints the markdown.
fn write_report(name: &str, report: Report) -> anyhow::Result<()> {
    let dir = workspace_root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join(format!("{name}.json")),
        serde_json::to_string_pretty(&report.metrics)? + "\n",
    )?;
    std::fs::write(dir.join(format!("{name}.md")), &report.markdown)?;
    println!("{}", report.markdown);
    eprintln!("wrote {}/{name}.{{json,md}}", dir.display());
    Ok(())
}

/// Mean time in seconds of every benchmark criterion has results for, by its full id
/// (`gemm_768x3072_t1/host/int8_avx512_vnni/b64`).
fn read_criterion(dir: &Path) -> anyhow::Result<BTreeMap<String, f64>> {
    let mut times = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&path) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n == "benchmark.json")
                && path.parent().is_some_and(|p| p.ends_with("new"))
            {
                let id: Value = serde_json::from_slice(&std::fs::read(&path)?)?;
                let estimates = path.with_file_name("estimates.json");
                let estimates: Value = serde_json::from_slice(&std::fs::read(&estimates)?)?;
                if let (Some(id), Some(ns)) = (
                    id["full_id"].as_str(),
                    estimates["mean"]["point_estimate"].as_f64(),
                ) {
                    times.insert(id.to_string(), ns * 1e-9);
                }
            }
        }
    }
    Ok(times)
}

/// A bench's figures (`<name>.json`) and its markdown table (`<name>.md`).
struct Report {
    metrics: BTreeMap<String, Value>,
    markdown: String,
}

impl Report {
    fn kernels(times: &BTreeMap<String, f64>) -> anyhow::Result<Self> {
        let kernel = Int8Kernel::detect();
        let isa = kernel.name();
        let time = |id: String| lookup(times, &id);
        let mut metrics = BTreeMap::new();
        let mut md = String::from("# Integer kernels against f32\n");
        metrics.insert("isa".into(), json!(isa));
        let features: Vec<&str> = ["avx2", "fma", "avx512f", "avx512bw", "avx512vnni"]
            .into_iter()
            .filter(|f| cpu_has(f))
            .collect();
        metrics.insert("cpu_features".into(), json!(features.join(",")));

        // Peaks, one thread.
        let rounds = 100_000u64;
        let peak_of = |kernel: Int8Kernel| {
            ember_kernels::int8::peak_loop(kernel, 1)
                .map(|(ops, _)| -> anyhow::Result<f64> {
                    let id = format!("peak_t1/host/int8_{}/{rounds}", kernel.name());
                    Ok((ops * rounds) as f64 / time(id)? / 1e9)
                })
                .transpose()
        };
        let int8_peak = peak_of(kernel)?;
        let f32_peak = ember_kernels::simd::fma_peak(1)
            .map(|(name, flops, _)| -> anyhow::Result<(String, f64)> {
                let gflops =
                    (flops * rounds) as f64 / time(format!("peak_t1/host/f32_fma/{rounds}"))? / 1e9;
                Ok((name.to_string(), gflops))
            })
            .transpose()?;
        let _ = writeln!(
            md,
            "\nKernel: `{isa}` (CPU features: {}). One thread: int8 peak {} GOP/s ({}), f32 FMA \
             peak {} GFLOP/s ({}).",
            features.join(", "),
            int8_peak.map_or("-".into(), |p| format!("{p:.0}")),
            isa,
            f32_peak
                .as_ref()
                .map_or("-".into(), |p| format!("{:.0}", p.1)),
            f32_peak.as_ref().map_or("-", |p| p.0.as_str()),
        );
        // The other kernels' peaks on this CPU: what bounds the forced-kernel rows below.
        for other in Int8Kernel::available() {
            if other == kernel {
                continue;
            }
            if let Some(p) = peak_of(other)? {
                let name = other.name();
                let _ = writeln!(
                    md,
                    "\nThe `{name}` kernel's peak: {p:.0} GOP/s, one thread."
                );
                metrics.insert(format!("peak_int8_{name}_gops_t1"), json!(round(p)));
            }
        }
        if let Some(p) = int8_peak {
            metrics.insert("peak_int8_gops_t1".into(), json!(round(p)));
        }
        if let Some((_, p)) = &f32_peak {
            metrics.insert("peak_f32_gflops_t1".into(), json!(round(*p)));
        }

        // GEMM, both thread counts.
        let _ = writeln!(
            md,
            "\n## int8 GEMM against f32 matmul\n\n| shape | batch | threads | int8 ({isa}) GOP/s | \
             flex f32 GFLOP/s | ndarray f32 GFLOP/s | int8 / flex | int8 / ndarray | int8 / \
             peak |\n|---|---|---|---|---|---|---|---|---|"
        );
        for shape in SHAPES {
            let (k, n) = shape
                .split_once('x')
                .and_then(|(k, n)| Some((k.parse::<f64>().ok()?, n.parse::<f64>().ok()?)))
                .context("shape")?;
            for threads in THREADS {
                for batch in BATCHES {
                    let group = format!("gemm_{shape}_t{threads}");
                    let ops = 2.0 * batch as f64 * k * n;
                    let int8 = time(format!("{group}/host/int8_{isa}/b{batch}"))?;
                    let flex = time(format!("{group}/flex/f32_matmul/b{batch}"))?;
                    let ndarray = time(format!("{group}/ndarray/f32_matmul/b{batch}")).ok();
                    let gops = ops / int8 / 1e9;
                    let fraction = int8_peak.map(|p| gops / p / threads as f64);
                    let _ = writeln!(
                        md,
                        "| {shape} | {batch} | {threads} | {gops:.0} | {:.0} | {} | {:.2}x | {} | {} |",
                        ops / flex / 1e9,
                        ndarray.map_or("-".into(), |t| format!("{:.0}", ops / t / 1e9)),
                        flex / int8,
                        ndarray.map_or("-".into(), |t| format!("{:.2}x", t / int8)),
                        fraction.map_or("-".into(), |f| format!("{f:.2}")),
                    );
                    let suffix = if threads == 1 {
                        String::new()
                    } else {
                        format!("_t{threads}")
                    };
                    metrics.insert(
                        format!("int8_over_flex_f32_b{batch}_{shape}{suffix}"),
                        json!(round(flex / int8)),
                    );
                    if let Some(t) = ndarray {
                        metrics.insert(
                            format!("int8_over_ndarray_f32_b{batch}_{shape}{suffix}"),
                            json!(round(t / int8)),
                        );
                    }
                    if threads == 1 && batch == 64 && shape == "768x3072" {
                        metrics.insert("int8_gops_b64_768x3072".into(), json!(round(gops)));
                        if let Some(f) = fraction {
                            metrics.insert(
                                "int8_fraction_of_peak_b64_768x3072".into(),
                                json!(round(f)),
                            );
                        }
                    }
                }
            }
        }
        // The other kernels this CPU runs, forced, one thread: what an older CPU would see of
        // the kernel (the f32 side here still uses this CPU's widest vectors).
        let others: Vec<Int8Kernel> = Int8Kernel::available()
            .into_iter()
            .filter(|k| *k != kernel && *k != Int8Kernel::Portable)
            .collect();
        for other in others {
            let name = other.name();
            for shape in SHAPES {
                for batch in BATCHES {
                    let group = format!("gemm_{shape}_t1");
                    let t = time(format!("{group}/host/int8_{name}/b{batch}"))?;
                    let flex = time(format!("{group}/flex/f32_matmul/b{batch}"))?;
                    metrics.insert(
                        format!("int8_{name}_over_flex_f32_b{batch}_{shape}"),
                        json!(round(flex / t)),
                    );
                }
            }
        }

        // Models.
        let _ = writeln!(
            md,
            "\n## Quantized models against float (flex)\n\n| model | batch | threads | f32 ms | int8 \
             ms | int8 float path ms | speed-up | float path speed-up |\n|---|---|---|---|---|---|---|---|"
        );
        let mut avx2_rows = Vec::new();
        for (model, label) in [
            ("mlp", "LeNet-300-100, dynamic int8"),
            ("cnn", "LeNet-5, static int8"),
        ] {
            for threads in THREADS {
                for batch in [1usize, 256] {
                    let group = format!("models_t{threads}/flex");
                    let f32_t = time(format!("{group}/{model}_f32/b{batch}"))?;
                    let int8 = time(format!("{group}/{model}_int8/b{batch}"))?;
                    let fake = time(format!("{group}/{model}_int8_float_path/b{batch}"))?;
                    let _ = writeln!(
                        md,
                        "| {label} | {batch} | {threads} | {:.3} | {:.3} | {:.3} | {:.2}x | {:.2}x |",
                        f32_t * 1e3,
                        int8 * 1e3,
                        fake * 1e3,
                        f32_t / int8,
                        f32_t / fake
                    );
                    let suffix = if threads == 2 {
                        String::new()
                    } else {
                        format!("_t{threads}")
                    };
                    metrics.insert(
                        format!("{model}_int8_speedup_b{batch}{suffix}"),
                        json!(round(f32_t / int8)),
                    );
                    metrics.insert(
                        format!("{model}_int8_float_path_speedup_b{batch}{suffix}"),
                        json!(round(f32_t / fake)),
                    );
                    if let Ok(avx2) = time(format!("{group}/{model}_int8_avx2/b{batch}")) {
                        avx2_rows.push(format!(
                            "| {label} | {batch} | {threads} | {:.3} | {:.3} | {:.2}x |",
                            f32_t * 1e3,
                            avx2 * 1e3,
                            f32_t / avx2
                        ));
                        metrics.insert(
                            format!("{model}_int8_avx2_speedup_b{batch}{suffix}"),
                            json!(round(f32_t / avx2)),
                        );
                    }
                }
            }
        }
        if !avx2_rows.is_empty() {
            let _ = writeln!(
                md,
                "\nThe same models on the AVX2 kernel, forced (what a CPU without AVX-512 VNNI \
                 runs; flex's f32 still uses this CPU's vectors):\n\n| model | batch | threads | \
                 f32 ms | int8 (avx2) ms | speed-up |\n|---|---|---|---|---|---|\n{}",
                avx2_rows.join("\n")
            );
        }
        // Pooling, the float layer between LeNet-5's quantized convolutions.
        let _ = writeln!(
            md,
            "\n## Max pooling, 2x2 on 256x6x28x28 (flex)\n\n| threads | burn ms | ember ms | \
             speed-up |\n|---|---|---|---|"
        );
        for threads in THREADS {
            let group = format!("pool_t{threads}/flex");
            let burn = time(format!("{group}/burn_max_pool2d/256x6x28x28"))?;
            let ember = time(format!("{group}/ember_max_pool2d/256x6x28x28"))?;
            let _ = writeln!(
                md,
                "| {threads} | {:.3} | {:.3} | {:.2}x |",
                burn * 1e3,
                ember * 1e3,
                burn / ember
            );
            metrics.insert(
                format!("max_pool_speedup_t{threads}"),
                json!(round(burn / ember)),
            );
        }
        let _ = write!(md, "\n## Machine\n\n{}\n", machine::describe());
        Ok(Self {
            metrics,
            markdown: md,
        })
    }
}

/// The shapes and batches of the rten bench (`benches/benches/rten.rs`).
const RTEN_SHAPES: [&str; 2] = ["768x3072", "768x768"];

/// Ember's int8 layer against rten-gemm's at each shape, batch and thread count, and the
/// full-range exactness of both on this CPU. #10's rule: rten-gemm is used if it is within
/// 10 % of the best and exact.
fn rten_report(times: &BTreeMap<String, f64>) -> anyhow::Result<Report> {
    let kernel = Int8Kernel::detect();
    let isa = kernel.name();
    let time = |id: String| lookup(times, &id);
    let exact = ember_benches::rten::exactness(64, 768, 256);
    let mut metrics = BTreeMap::new();
    metrics.insert("isa".into(), json!(isa));
    metrics.insert("rten_kernel".into(), json!(exact.rten_kernel));
    let mut md = format!(
        "# Ember's int8 layer against rten-gemm 0.27\n\nThe same layer in one run: `u8` inputs \
         (zero point 128), prepacked symmetric `i8` weights with a scale per column, `f32` out \
         with the bias. Ember: `{isa}`, epilogue fused; rten-gemm: `{}`, its `i32` sums then \
         the same epilogue in a second pass.\n\n| shape | batch | threads | Ember ms | rten ms \
         | rten sums only ms | Ember GOP/s | rten / Ember time |\n|---|---|---|---|---|---|---|---|\n",
        exact.rten_kernel
    );
    let mut worst: Option<f64> = None;
    for shape in RTEN_SHAPES {
        let (k, n) = shape
            .split_once('x')
            .and_then(|(k, n)| Some((k.parse::<f64>().ok()?, n.parse::<f64>().ok()?)))
            .context("shape is KxN")?;
        for threads in THREADS {
            for batch in BATCHES {
                let group = format!("rten_{shape}_t{threads}/host");
                let ember = time(format!("{group}/ember_int8_{isa}/b{batch}"))?;
                let rten = time(format!("{group}/rten_int8/b{batch}"))?;
                let sums = time(format!("{group}/rten_int8_sums/b{batch}"))?;
                let ratio = rten / ember;
                worst = Some(worst.map_or(ratio, |w: f64| w.min(ratio)));
                let _ = writeln!(
                    md,
                    "| {shape} | {batch} | {threads} | {:.3} | {:.3} | {:.3} | {:.0} | {ratio:.2}x |",
                    ember * 1e3,
                    rten * 1e3,
                    sums * 1e3,
                    2.0 * batch as f64 * k * n / ember / 1e9,
                );
                metrics.insert(
                    format!("rten_over_ember_time_b{batch}_{shape}_t{threads}"),
                    json!(round(ratio)),
                );
            }
        }
    }
    if let Some(worst) = worst {
        metrics.insert("rten_over_ember_time_min".into(), json!(round(worst)));
    }
    let ember_errors: Vec<String> = exact
        .ember_max_error
        .iter()
        .map(|(name, e)| format!("`{name}` {e}"))
        .collect();
    let [rows, k, n] = exact.shape;
    let _ = write!(
        md,
        "\n## Exact at full range?\n\nLargest error against the plain triple loop on a \
         `[{rows}, {k}] x [{k}, {n}]` product with activations over `0..=255` (a quarter of them \
         255) and weights over `-127..=127`:\n\n- rten-gemm (`{}`, `may_saturate() = {}`): {} \
         with zero points 0, {} with the activation's zero point 128, {} with a weight zero \
         point of 3 passed at call time to prepacked weights;\n- Ember: {}.\n",
        exact.rten_kernel,
        exact.rten_may_saturate,
        exact.rten_max_error,
        exact.rten_zero_point_max_error,
        exact.rten_weight_zero_point_max_error,
        ember_errors.join(", "),
    );
    metrics.insert("rten_may_saturate".into(), json!(exact.rten_may_saturate));
    metrics.insert("rten_max_error".into(), json!(exact.rten_max_error));
    metrics.insert(
        "rten_zero_point_max_error".into(),
        json!(exact.rten_zero_point_max_error),
    );
    metrics.insert(
        "rten_weight_zero_point_max_error".into(),
        json!(exact.rten_weight_zero_point_max_error),
    );
    let ember_exact = exact.ember_max_error.iter().all(|(_, e)| *e == 0);
    metrics.insert("ember_exact".into(), json!(ember_exact));
    let _ = write!(md, "\n## Machine\n\n{}\n", machine::describe());
    Ok(Report {
        metrics,
        markdown: md,
    })
}

/// The mean time of bench `id`, or an error naming it.
fn lookup(times: &BTreeMap<String, f64>, id: &str) -> anyhow::Result<f64> {
    times
        .get(id)
        .copied()
        .with_context(|| format!("no result for {id}: did the bench run?"))
}

fn round(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn cpu_has(feature: &str) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        match feature {
            "avx2" => std::arch::is_x86_feature_detected!("avx2"),
            "fma" => std::arch::is_x86_feature_detected!("fma"),
            "avx512f" => std::arch::is_x86_feature_detected!("avx512f"),
            "avx512bw" => std::arch::is_x86_feature_detected!("avx512bw"),
            "avx512vnni" => std::arch::is_x86_feature_detected!("avx512vnni"),
            _ => false,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = feature;
        false
    }
}
