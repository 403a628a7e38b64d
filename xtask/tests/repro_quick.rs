//! Every experiment's quick run (`repro all --quick`: seconds each, on a subset), so that a
//! change that breaks one fails the tests rather than the next person who reproduces a figure.
//! It runs the xtask binary of this very build (debug, with the test build's features), not a
//! release one: CI builds burn once. Its figures are smoke tests, not judged.

use std::path::Path;
use std::process::Command;

#[test]
fn every_experiments_quick_run_completes_and_reports_its_claims() {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("repro-quick");
    let status = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["repro", "all", "--quick", "--out"])
        .arg(&out)
        .status()
        .expect("the xtask binary of this build runs");
    assert!(status.success(), "repro all --quick failed ({status})");
    // `repro all` refuses an experiment that judged no claim; the combined report must exist
    // and link each experiment's own.
    let report = std::fs::read_to_string(out.join("report.md")).expect("repro all wrote report.md");
    for experiment in [
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
    ] {
        assert!(
            report.contains(&format!("({experiment}/report.md)")),
            "report.md has no row of {experiment}"
        );
    }
}
