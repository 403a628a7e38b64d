//! Folding batch normalization into the convolution before it, so that the pair quantizes as
//! one layer (PyTorch's `fuse_modules` for conv+bn; the ReLU after it needs no folding, see
//! [`crate::nn`]).

use burn::module::{Module, Param, ParamGroup};
use burn::nn::BatchNorm;
use burn::tensor::Tensor;

use crate::nn::Conv2d;
use crate::{Error, Result};

/// The convolution that computes `bn(conv(x))` with batch normalization in inference mode:
/// `w' = w · γ / sqrt(σ² + ε)` per output channel and `b' = (b − μ) · γ / sqrt(σ² + ε) + β`.
pub fn fuse_conv_bn(conv: Conv2d, bn: &BatchNorm) -> Result<Conv2d> {
    let [out, ..] = conv.weight.dims();
    let [channels] = bn.gamma.dims();
    if channels != out {
        return Err(Error::Scheme {
            what: "conv + batch norm".into(),
            reason: format!("{out} output channels, the batch norm has {channels}"),
        });
    }
    let mean: Tensor<1> = bn.running_mean.value();
    let var: Tensor<1> = bn.running_var.value();
    let factor = bn.gamma.val() / var.add_scalar(bn.epsilon).sqrt();
    let weight = conv.weight.val();
    let device = weight.device();
    let bias = match &conv.bias {
        Some(b) => b.val(),
        None => Tensor::zeros([out], &device),
    };
    let fused_bias = (bias - mean) * factor.clone() + bn.beta.val();
    let fused_weight = weight * factor.reshape([out as i64, 1, 1, 1]);
    Ok(Conv2d {
        weight: Param::initialized(conv.weight.id, fused_weight),
        bias: Some(Param::from_tensor(fused_bias)),
        ..conv
    })
}

/// A convolution whose output only a batch norm reads, found in a model's captured forward
/// graph ([`conv_bn_pairs`]), by the paths of their parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvBnPair {
    /// The convolution's path (`blocks.0.conv1`).
    pub conv: String,
    /// The batch norm's path (`blocks.0.norm1`).
    pub norm: String,
    conv_weight: String,
    conv_bias: Option<String>,
    /// γ, β, the running mean and the running variance.
    stats: [String; 4],
    epsilon: f32,
}

/// Every convolution of `model` whose output goes to a batch norm and nowhere else, in the
/// order they run, found in its forward pass as burn's capture backend records it (`shape`:
/// one input batch, the first axis the batch): the pairs that static quantization folds
/// without a hand-written list ([`fold_conv_bn_pairs`]).
pub fn conv_bn_pairs<M, F, const D: usize, const E: usize>(
    model: &M,
    shape: [usize; D],
    forward: F,
) -> Result<Vec<ConvBnPair>>
where
    M: Module,
    F: Fn(&M, Tensor<D>) -> Tensor<E>,
{
    use ember_tensor::graph::burn_ir::{ModuleOperationIr, OperationIr};
    let captures = ember_tensor::graph::Captures::new(model, shape, forward)?;
    let graph = &captures.main;
    let name = |id| graph.names.get(id).cloned();
    let mut readers = std::collections::HashMap::new();
    let mut norms = std::collections::HashMap::new();
    for op in &graph.ops {
        for t in op.inputs() {
            *readers.entry(t.id).or_insert(0usize) += 1;
        }
        if let OperationIr::Module(ModuleOperationIr::BatchNorm(n)) = op {
            norms.insert(n.x.id, n);
        }
    }
    let mut pairs = Vec::new();
    for op in &graph.ops {
        let OperationIr::Module(ModuleOperationIr::Conv2d(conv)) = op else {
            continue;
        };
        if readers.get(&conv.out.id) != Some(&1) || conv.out.id == graph.output.id {
            continue;
        }
        let (Some(norm), Some(weight)) = (norms.get(&conv.out.id), name(&conv.weight.id)) else {
            continue;
        };
        let stats = [&norm.gamma, &norm.beta, &norm.mean, &norm.variance].map(|t| name(&t.id));
        let [Some(gamma), Some(beta), Some(mean), Some(var)] = stats else {
            continue;
        };
        let prefix = |path: &str, leaf: &str| {
            path.strip_suffix(leaf)
                .unwrap_or(path)
                .trim_end_matches('.')
                .to_string()
        };
        pairs.push(ConvBnPair {
            conv: prefix(&weight, "weight"),
            norm: prefix(&gamma, "gamma"),
            conv_bias: conv.bias.as_ref().and_then(|b| name(&b.id)),
            conv_weight: weight,
            stats: [gamma, beta, mean, var],
            epsilon: match norm.epsilon {
                ember_tensor::graph::burn_ir::ScalarIr::Float(e) => e as f32,
                _ => 1e-5,
            },
        });
    }
    Ok(pairs)
}

/// Fold each pair's batch norm into its convolution, in any module: the convolution's weight
/// becomes `w · γ / sqrt(σ² + ε)` per output channel and its bias
/// `(b − μ) · γ / sqrt(σ² + ε) + β`, and the batch norm an identity (γ = 1, μ = 0, σ² = 1 − ε) that only adds that bias
/// where the convolution has none. The model computes the same function, its convolutions'
/// weights now the ones to quantize.
///
/// burn shares a batch norm's running statistics between every clone of a module (its
/// `RunningState`), so clones of `model` see the folded statistics too: fold the model you
/// quantize, not a copy of one you keep in float.
pub fn fold_conv_bn_pairs<M: Module>(model: M, pairs: &[ConvBnPair]) -> Result<M> {
    let values: std::collections::HashMap<String, Vec<f32>> = ember_tensor::param_values(&model)
        .into_iter()
        .map(|p| Ok((p.info.path, ember_tensor::stats::read_f32(p.flat)?)))
        .collect::<Result<_>>()?;
    let get = |path: &str| {
        values.get(path).cloned().ok_or_else(|| Error::Scheme {
            what: "conv + batch norm".into(),
            reason: format!("the model has no parameter `{path}`"),
        })
    };
    let mut updates = std::collections::BTreeMap::new();
    for pair in pairs {
        let weight = get(&pair.conv_weight)?;
        let [gamma, beta, mean, var] = [0, 1, 2, 3].map(|i| get(&pair.stats[i]));
        let (gamma, beta, mean, var) = (gamma?, beta?, mean?, var?);
        let out = gamma.len();
        if out == 0
            || weight.len() % out != 0
            || [&beta, &mean, &var].iter().any(|v| v.len() != out)
        {
            return Err(Error::Scheme {
                what: format!("{} + {}", pair.conv, pair.norm),
                reason: format!("{} weights over {out} batch-norm channels", weight.len()),
            });
        }
        let factor: Vec<f32> = (0..out)
            .map(|c| gamma[c] / (var[c] + pair.epsilon).sqrt())
            .collect();
        let per_filter = weight.len() / out;
        let folded: Vec<f32> = weight
            .iter()
            .enumerate()
            .map(|(i, w)| w * factor[i / per_filter])
            .collect();
        let bias = match &pair.conv_bias {
            Some(path) => get(path)?,
            None => vec![0.0; out],
        };
        let shift: Vec<f32> = (0..out)
            .map(|c| (bias[c] - mean[c]) * factor[c] + beta[c])
            .collect();
        updates.insert(pair.conv_weight.clone(), folded);
        let [g, b, m, v] = pair.stats.clone();
        updates.insert(g, vec![1.0; out]);
        updates.insert(m, vec![0.0; out]);
        updates.insert(v, vec![1.0 - pair.epsilon; out]);
        match &pair.conv_bias {
            Some(path) => {
                updates.insert(path.clone(), shift);
                updates.insert(b, vec![0.0; out]);
            }
            None => {
                updates.insert(b, shift);
            }
        }
    }
    Ok(ember_tensor::set_param_values(model, &updates)?)
}

/// [`fold_conv_bn_pairs`], then each pair's batch norm frozen for quantization-aware training
/// (Jacob et al. 2018's folded batch norm, with the statistics frozen from the start, as
/// PyTorch's `freeze_bn_stats` does late in training): on a training device it runs on the
/// statistics it was folded with, which make it an added shift, not on a batch's, and those
/// statistics no longer move; its scale stays 1, so the weights [`prepare_qat`] fake-quantizes
/// are the ones the converted model computes with. Its shift still trains, as a bias would.
///
/// Without this a batch norm that follows a fake-quantized convolution renormalizes with each
/// batch's statistics during QAT, and the convolution's weights change again when it is folded
/// for conversion: per-tensor weights then land on other grid points than the ones trained.
///
/// [`prepare_qat`]: crate::prepare_qat
pub fn fold_and_freeze_conv_bn_pairs<M: Module>(model: M, pairs: &[ConvBnPair]) -> Result<M> {
    let model = fold_conv_bn_pairs(model, pairs)?;
    // burn's BatchNorm keeps its training switch as a parameter of its own (`training`), so a
    // group freezes the switch and the scale and leaves the shift trainable.
    let frozen: Vec<String> = pairs
        .iter()
        .flat_map(|p| [format!("{}.training", p.norm), p.stats[0].clone()])
        .collect();
    Ok(model.freeze_group(ParamGroup::from_paths(frozen)))
}
