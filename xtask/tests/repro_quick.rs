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

/// `repro baseline --data` on a user's own dataset of 8x8 images (UCI digits' size; the real
/// set is made by `fixtures/digits/make_idx.py`): the MLP trains and its report and metrics are
/// written, LeNet-5 is skipped with the reason, and no MNIST target is judged against it.
#[test]
fn a_baseline_on_small_images_of_a_users_own_reports_without_mnists_claims() {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("baseline-8x8");
    let data = root.join("data");
    std::fs::create_dir_all(&data).expect("temporary directory");
    let idx = |magic: u32, dims: &[u32], payload: Vec<u8>| {
        let mut bytes = magic.to_be_bytes().to_vec();
        for d in dims {
            bytes.extend(d.to_be_bytes());
        }
        bytes.extend(payload);
        bytes
    };
    for (prefix, n) in [("train", 200u32), ("t10k", 50)] {
        // Class c lights row c of the image: learnable, so the MLP's accuracy means something.
        let labels: Vec<u8> = (0..n).map(|i| (i % 8) as u8).collect();
        let pixels = labels
            .iter()
            .flat_map(|&c| (0..64u8).map(move |p| if p / 8 == c { 255 } else { 0 }))
            .collect();
        let images = idx(0x803, &[n, 8, 8], pixels);
        std::fs::write(data.join(format!("{prefix}-images-idx3-ubyte")), images).expect("write");
        let labels = idx(0x801, &[n], labels);
        std::fs::write(data.join(format!("{prefix}-labels-idx1-ubyte")), labels).expect("write");
    }
    let out = root.join("out");
    let status = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["repro", "baseline", "--retrain", "--data"])
        .arg(&data)
        .arg("--out")
        .arg(&out)
        .status()
        .expect("the xtask binary of this build runs");
    assert!(status.success(), "repro baseline --data failed ({status})");
    let report = std::fs::read_to_string(out.join("baseline/report.md")).expect("report.md");
    assert!(report.contains("LeNet-5 skipped"), "{report}");
    assert!(report.contains("judges no claim"), "{report}");
    let claims = std::fs::read_to_string(out.join("baseline/claims.json")).expect("claims");
    assert_eq!(claims.trim(), "[]");
    let metrics: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("baseline/metrics.json")).expect("metrics"),
    )
    .expect("metrics.json parses");
    let accuracy = metrics["mlp_test_accuracy"]
        .as_f64()
        .expect("the MLP's accuracy");
    assert!(accuracy > 90.0, "an MLP learns 8 lit rows: {accuracy} %");
    assert!(metrics.get("mlp_epoch_ratio_vs_pytorch").is_none());
}
