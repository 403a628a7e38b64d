//! Bring-your-own-model examples, each a program to copy (`cargo run -p ember-examples
//! --example <name>`; `cargo ci` runs every one):
//!
//! - `prune_your_model`: magnitude pruning of a plain burn CNN, its sparse file saved and
//!   loaded back into a fresh model;
//! - `quantize_your_model`: int8 weight-only quantization of the same plain burn model, its
//!   file four times smaller, loaded back into plain burn layers;
//! - `static_int8_drop_ins`: the model rebuilt from Ember's drop-in layers with a batch norm
//!   folded into its convolution, listed through `QuantLayers`, calibrated and converted to
//!   static int8, running on the integer kernels;
//! - `distil_a_student`: a small student taught by a larger teacher with soft targets.
//!
//! Depending on the crates from outside this repository: they are not published, so name them
//! by path or git (`ember-quant = { path = "../ember/crates/ember-quant", default-features =
//! false }`), with burn 0.22.1 and the backends you build (`ember-tensor` features `flex`,
//! `ndarray`, `wgpu`; `default-features = false` skips them). Set mimalloc as the binary's
//! allocator, as `xtask` does: glibc returns large freed buffers to the OS and faults them in
//! again on every step, about 40 % of a CPU training epoch.
