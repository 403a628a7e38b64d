//! Criterion benches of Ember (`cargo bench -p ember-benches`); each bench id names its
//! backend first, `{backend}/{op}/{params}`, so the backends line up side by side. Build with
//! `--features wgpu` to add the GPU backend.

pub mod rten;
