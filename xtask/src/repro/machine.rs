//! A description of the machine a run happened on, for reports.

use std::process::Command;

pub fn describe() -> String {
    let cpu = first_value("/proc/cpuinfo", "model name").unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = first_value("/proc/meminfo", "MemTotal")
        .and_then(|kb| kb.split_whitespace().next()?.parse::<f64>().ok())
        .map_or("unknown".into(), |kb| {
            format!("{:.1} GiB", kb / 1024.0 / 1024.0)
        });
    let os = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("PRETTY_NAME=")
                    .map(|v| v.trim_matches('"').to_string())
            })
        })
        .unwrap_or_else(|| std::env::consts::OS.into());
    let rustc = Command::new("rustc")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown rustc".into());
    let threads =
        std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| format!("{cores} (default)"));
    format!(
        "- CPU: {cpu}, {cores} cores available, {memory} memory\n- instruction sets: {}\n- OS: {os}\n\
         - {rustc}, release build, mimalloc allocator\n- compute threads (RAYON_NUM_THREADS): \
         {threads}\n- burn 0.22.1",
        instruction_sets()
    )
}

/// The vector extensions the CPU has that Ember's kernels (and flex's) choose between at run
/// time, and the int8 kernel picked: timings depend on them, so every report names them.
pub fn instruction_sets() -> String {
    let mut found: Vec<&str> = vec![];
    #[cfg(target_arch = "x86_64")]
    {
        for (name, has) in [
            ("AVX2", std::arch::is_x86_feature_detected!("avx2")),
            ("FMA", std::arch::is_x86_feature_detected!("fma")),
            ("AVX-512F", std::arch::is_x86_feature_detected!("avx512f")),
            (
                "AVX-512 VNNI",
                std::arch::is_x86_feature_detected!("avx512vnni"),
            ),
            (
                "AVX-512 BF16",
                std::arch::is_x86_feature_detected!("avx512bf16"),
            ),
        ] {
            if has {
                found.push(name);
            }
        }
    }
    let list = if found.is_empty() {
        "none beyond the baseline".to_string()
    } else {
        found.join(", ")
    };
    format!(
        "{list} (int8 kernel: {})",
        ember_kernels::int8::Int8Kernel::detect().name()
    )
}

fn first_value(path: &str, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k.trim() == key).then(|| v.trim().to_string())
    })
}
