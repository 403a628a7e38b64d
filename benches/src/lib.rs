//! Criterion benches of Ember (`cargo bench -p ember-benches`); each bench id names its
//! backend first, `{backend}/{op}/{params}`, so the backends line up side by side. Build with
//! `--features wgpu` to add the GPU backend.

pub mod rten;

/// `n` deterministic values spread over `[-1, 1)`, scrambled by `seed`: the benches' weights
/// and inputs, the same on every run.
pub fn values(n: usize, seed: u64) -> Vec<f32> {
    (0..n as u64)
        .map(|i| {
            let h = (i ^ (seed << 32)).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
            h as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        })
        .collect()
}
