//! Export burn models, float, pruned or quantized, to ONNX.
//!
//! The graph comes from burn's capture backend (burn feature `capture`): the model's forward
//! pass is recorded, not run, so any burn model made of the operations this crate translates
//! exports, not only the zoo's. Quantized weights become integer initializers behind
//! `DequantizeLinear` and quantized inputs `QuantizeLinear` / `DequantizeLinear` pairs (the
//! QDQ form of ONNX Runtime, TensorRT and OpenVINO), per tensor or per channel. Pruned models
//! export as they are: structurally shrunk ones at their new widths, masked ones with their
//! zeros stored.
//!
//! ```
//! use burn::nn::LinearConfig;
//! use burn::tensor::{Device, Tensor};
//! use ember_export::{ExportOptions, to_onnx};
//!
//! let device = Device::flex();
//! let layer = LinearConfig::new(4, 3).init(&device);
//! let onnx = to_onnx(&layer, [1, 4], |m, x: Tensor<2>| m.forward(x), &ExportOptions::default())
//!     .expect("a linear layer exports");
//! assert_eq!(onnx.op_types(), ["MatMul", "Add"]);
//! ```

mod error;
pub mod onnx;

use std::collections::HashMap;

use burn::module::Module;
use burn::tensor::Tensor;
use ember_quant::{InputQuant, QuantLayers, Quantized, SparseKernel};

pub use ember_tensor::graph::BATCH_SIZES;
pub use error::{Error, Result};
pub use onnx::{DequantizeForm, ExportOptions, OPSET, OnnxModel};

use crate::onnx::QuantPlan;
use ember_tensor::graph::Captures;

/// Export a float model (masks folded in: a pruned weight's zeros are stored). `input` is the
/// shape of one input batch; its first axis is the batch, exported as a symbolic `batch`
/// dimension whatever its value here. `forward` is the model's forward pass.
pub fn to_onnx<M, F, const D: usize, const E: usize>(
    model: &M,
    input: [usize; D],
    forward: F,
    options: &ExportOptions,
) -> Result<OnnxModel>
where
    M: Module,
    F: Fn(&M, Tensor<D>) -> Tensor<E>,
{
    let model = ember_tensor::mask::strip(model.clone());
    export(&model, &QuantPlan::default(), input, forward, options)
}

/// Export a model quantized by `ember_quant` (static, dynamic or weight-only): quantized
/// weights as integers behind `DequantizeLinear`, each converted layer's input quantized and
/// dequantized again in front of it (`QuantizeLinear` with the calibrated scale, or
/// `DynamicQuantizeLinear`).
pub fn quantized_to_onnx<M, F, const D: usize, const E: usize>(
    quantized: &Quantized<M>,
    input: [usize; D],
    forward: F,
    options: &ExportOptions,
) -> Result<OnnxModel>
where
    M: Module + QuantLayers,
    F: Fn(&M, Tensor<D>) -> Tensor<E>,
{
    let mut model = ember_tensor::mask::strip(quantized.model.clone());
    let mut inputs = HashMap::new();
    // The captured layers compute in float with the dequantized weights; the exporter writes
    // the quantizers itself, from the pass's parameters.
    for (name, layer) in model.quant_layers() {
        if let Some(quant) = quantized.inputs.get(&name) {
            inputs.insert(format!("{name}.weight"), quant.clone());
        }
        layer.set_input_quant(InputQuant::Float);
        layer.set_integer(None);
        layer.set_sparse(SparseKernel::Never)?;
    }
    let plan = QuantPlan {
        weights: quantized.weights.clone().into_iter().collect(),
        inputs,
    };
    export(&model, &plan, input, forward, options)
}

/// Export a model whose weights only are quantized (`ember_quant::quantize_weights` on any
/// module): its weights as integers behind `DequantizeLinear`, inputs in float.
pub fn weight_quantized_to_onnx<M, F, const D: usize, const E: usize>(
    quantized: &Quantized<M>,
    input: [usize; D],
    forward: F,
    options: &ExportOptions,
) -> Result<OnnxModel>
where
    M: Module,
    F: Fn(&M, Tensor<D>) -> Tensor<E>,
{
    let model = ember_tensor::mask::strip(quantized.model.clone());
    let plan = QuantPlan {
        weights: quantized.weights.clone().into_iter().collect(),
        inputs: HashMap::new(),
    };
    export(&model, &plan, input, forward, options)
}

/// Capture `model`'s forward pass (masks already folded) and write it with `plan`'s
/// quantizers.
fn export<M, F, const D: usize, const E: usize>(
    model: &M,
    plan: &QuantPlan,
    input: [usize; D],
    forward: F,
    options: &ExportOptions,
) -> Result<OnnxModel>
where
    M: Module,
    F: Fn(&M, Tensor<D>) -> Tensor<E>,
{
    let captures = Captures::new(model, input, forward)?;
    onnx::build(&captures, plan, options, "ember")
}
