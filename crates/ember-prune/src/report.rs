//! How sparse a model is, layer by layer.

use burn::module::Module;
use ember_tensor::{Selector, param_values, stats::read_f32};
use serde::Serialize;

use crate::Result;

/// The sparsity of each selected layer and of all of them together.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PruneReport {
    /// One row per selected parameter, in model order.
    pub layers: Vec<LayerSparsity>,
    /// Elements of all selected parameters.
    pub numel: usize,
    /// Zeros among them.
    pub zeros: usize,
}

impl PruneReport {
    /// Fraction of the selected weights that are zero.
    pub fn sparsity(&self) -> f64 {
        fraction(self.zeros, self.numel)
    }

    /// Fraction of the selected weights that remain (`1 - sparsity`), the x axis of pruning
    /// plots.
    pub fn remaining(&self) -> f64 {
        1.0 - self.sparsity()
    }
}

/// One parameter's sparsity.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerSparsity {
    /// Its path.
    pub path: String,
    /// Its elements.
    pub numel: usize,
    /// Its zeros (pruned, or zero by chance).
    pub zeros: usize,
}

impl LayerSparsity {
    /// Fraction of its elements that are zero.
    pub fn sparsity(&self) -> f64 {
        fraction(self.zeros, self.numel)
    }
}

fn fraction(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// Count the zeros of the effective (masked) values of the parameters `layers` selects.
pub fn sparsity_report<M: Module>(model: &M, layers: &Selector) -> Result<PruneReport> {
    let values = param_values(model);
    let matcher = layers.compile()?;
    let mut report = PruneReport {
        layers: vec![],
        numel: 0,
        zeros: 0,
    };
    for value in values {
        if !matcher.matches(&value.info.path, &value.info.layer_kind) {
            continue;
        }
        let flat = read_f32(value.flat)?;
        let zeros = flat.iter().filter(|&&w| w == 0.0).count();
        report.numel += flat.len();
        report.zeros += zeros;
        report.layers.push(LayerSparsity {
            path: value.info.path,
            numel: flat.len(),
            zeros,
        });
    }
    Ok(report)
}
