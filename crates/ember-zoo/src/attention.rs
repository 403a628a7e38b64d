//! Multi-head self-attention whose heads can be removed: the building block of the zoo's
//! transformers (the BERT encoder, the MNIST transformer classifier).
//!
//! burn's `MultiHeadAttention` cannot lose a head: its forward pass reshapes the heads'
//! concatenated outputs to the input's width, so its projections must stay
//! `d_model x d_model`. [`SelfAttention`] keeps the number of heads and their width apart
//! from the model's width, so removing heads shrinks its query, key, value and output
//! projections for real; [`SelfAttention::from_burn`] converts a trained burn layer, and
//! [`SelfAttention::head_group`] declares its heads to structured pruning (`ember-prune`'s
//! criteria and surgery), one unit per head.

use burn::module::{Module, Param};
use burn::nn::LinearConfig;
use burn::nn::attention::MultiHeadAttention;
use burn::tensor::activation::softmax;
use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use ember_kernels::activation;
use ember_quant::nn::Linear;
use ember_tensor::{UnitGroup, UnitSlice};

use crate::{Error, Result};

/// Multi-head self-attention with its output projection: `heads` heads of `head_width`
/// each over inputs of any width; the query, key and value projections map the input to
/// `heads * head_width` values, the output projection maps them back.
#[derive(Module, Debug)]
pub struct SelfAttention {
    /// Queries, `[width, heads * head_width]` (burn's `[in, out]`).
    pub query: Linear,
    /// Keys.
    pub key: Linear,
    /// Values.
    pub value: Linear,
    /// The projection of the heads' concatenated outputs, `[heads * head_width, width]`.
    pub output: Linear,
    /// Heads.
    #[module(skip)]
    pub heads: usize,
    /// Each head's width; removing heads keeps it.
    #[module(skip)]
    pub head_width: usize,
}

/// Additive attention bias at padded keys: their weights underflow to exactly zero after the
/// softmax, and the value stays finite in f16.
pub const PADDING_BIAS: f64 = -1.0e4;

impl SelfAttention {
    /// Attention over inputs of `width` values with `heads` heads of `head_width` each, its
    /// parameters drawn by burn's default initializer.
    pub fn new(width: usize, heads: usize, head_width: usize, device: &Device) -> Result<Self> {
        for (field, value) in [
            ("width", width),
            ("heads", heads),
            ("head_width", head_width),
        ] {
            if value == 0 {
                return Err(Error::InvalidConfig {
                    field,
                    value: "0".into(),
                    reason: "attention needs at least one head of at least one value",
                });
            }
        }
        let inner = heads * head_width;
        let dense = |from, to| Linear::new(&LinearConfig::new(from, to), device);
        Ok(Self {
            query: dense(width, inner),
            key: dense(width, inner),
            value: dense(width, inner),
            output: dense(inner, width),
            heads,
            head_width,
        })
    }

    /// burn's layer as an Ember attention computing the same function (its attention dropout
    /// is not carried over: the converted layer never drops weights). burn's quiet softmax
    /// (one more implicit zero logit) is a different function, refused with a typed error.
    pub fn from_burn(mha: MultiHeadAttention) -> Result<Self> {
        if mha.quiet_softmax {
            return Err(Error::InvalidConfig {
                field: "quiet_softmax",
                value: "true".into(),
                reason: "only the ordinary softmax is supported",
            });
        }
        Ok(Self {
            query: mha.query.into(),
            key: mha.key.into(),
            value: mha.value.into(),
            output: mha.output.into(),
            heads: mha.n_heads,
            head_width: mha.d_k,
        })
    }

    /// `x` `[batch, tokens, width]` attended over itself; `key_bias` `[batch, 1, 1, tokens]`
    /// is added to every head's scores at each key (0 at real keys, [`PADDING_BIAS`] at
    /// padding).
    pub fn forward(&self, x: Tensor<3>, key_bias: Tensor<4>) -> Tensor<3> {
        let [batch, tokens, _] = x.dims();
        let width = self.head_width;
        let split = |t: Tensor<3>| {
            t.reshape([batch, tokens, self.heads, width])
                .swap_dims(1, 2)
        };
        let q = split(self.query.forward(x.clone()));
        let k = split(self.key.forward(x.clone()));
        let v = split(self.value.forward(x));
        let divisor = (width as f64).sqrt();
        let bias = key_bias.clone();
        // On the host the scaling, the mask and the softmax are one pass over the scores
        // (`ember_kernels::activation::attention_softmax`, the same values bit for bit).
        let weights = on_host(
            q.matmul(k.swap_dims(2, 3)),
            |t| softmax(t.div_scalar(divisor) + key_bias, 3),
            |values, keys| {
                let Ok(bias) = bias.into_data().try_to_vec::<f32>() else {
                    return false;
                };
                let scores = activation::ScoreBias {
                    divisor: divisor as f32,
                    bias: &bias,
                    rows_per_bias: self.heads * tokens,
                };
                activation::attention_softmax(values, keys, scores).is_ok()
            },
        );
        let context =
            weights
                .matmul(v)
                .swap_dims(1, 2)
                .reshape([batch, tokens, self.heads * width]);
        self.output.forward(context)
    }

    /// The dependency group of the heads of the attention at `path` (`layers.0.attention`,
    /// say), one unit per head: the query, key and value projections produce a head's
    /// `head_width` columns (the value projection first, so that a first-order Taylor score,
    /// read from its weights and bias, is the sum of `output · dL/doutput` over the head's
    /// outputs: Michel et al. 2019's head importance), the output projection reads them as
    /// rows.
    /// An empty `path` names the attention itself (`value.weight`, group `heads`).
    pub fn head_group(path: &str, heads: usize, head_width: usize) -> UnitGroup {
        let at = |name: &str| {
            if path.is_empty() {
                name.to_string()
            } else {
                format!("{path}.{name}")
            }
        };
        let slice = |layer: &str, param: &str, axis: usize| {
            UnitSlice::new(at(&format!("{layer}.{param}")), axis).with_block(head_width)
        };
        let mut producers = Vec::new();
        for layer in ["value", "query", "key"] {
            // burn's linear weight is `[in, out]`: the heads' columns run along axis 1.
            producers.push(slice(layer, "weight", 1));
            producers.push(slice(layer, "bias", 0));
        }
        UnitGroup {
            name: at("heads"),
            units: heads,
            producers,
            consumers: vec![slice("output", "weight", 0)],
        }
    }

    /// This attention with only the heads `keep` (ascending, each below [`Self::heads`]): the
    /// query, key and value projections lose the output columns of the others, the output
    /// projection the matching input rows. What is left computes exactly what the whole layer
    /// computed with the other heads' outputs zeroed.
    pub fn keep_heads(self, keep: &[usize]) -> Result<Self> {
        let ascending = keep.windows(2).all(|w| w[0] < w[1]);
        if keep.is_empty() || !ascending || keep.iter().any(|&h| h >= self.heads) {
            return Err(Error::InvalidConfig {
                field: "heads",
                value: format!("{keep:?} of {}", self.heads),
                reason: "keep at least one head, each once, in ascending order",
            });
        }
        let device = self.query.weight.val().device();
        let columns: Vec<i64> = keep
            .iter()
            .flat_map(|&h| (h * self.head_width..(h + 1) * self.head_width).map(|c| c as i64))
            .collect();
        let count = columns.len();
        let index = Tensor::<1, Int>::from_data(TensorData::new(columns, [count]), &device);
        let outputs = |layer: Linear| -> Linear {
            burn::nn::Linear {
                weight: Param::from_tensor(layer.weight.val().select(1, index.clone())),
                bias: layer
                    .bias
                    .map(|b| Param::from_tensor(b.val().select(0, index.clone()))),
            }
            .into()
        };
        let output = burn::nn::Linear {
            weight: Param::from_tensor(self.output.weight.val().select(0, index.clone())),
            bias: self.output.bias.clone(),
        };
        Ok(Self {
            query: outputs(self.query),
            key: outputs(self.key),
            value: outputs(self.value),
            output: output.into(),
            heads: keep.len(),
            head_width: self.head_width,
        })
    }
}

/// `kernel` over `x`'s values (and its last axis's width) where it can run: a plain f32 tensor
/// on a host device (flex, ndarray; never under autodiff, which must see burn's operations).
/// Elsewhere, or where the kernel declines (`false`, its input untouched), burn's `float`.
/// burn's CPU backends evaluate GELU's `erf` and softmax's `exp` one element at a time
/// through `libm`: with those, they took a third of the int8 encoder's time (see
/// `ember_kernels::activation`).
pub(crate) fn on_host<const D: usize>(
    x: Tensor<D>,
    float: impl FnOnce(Tensor<D>) -> Tensor<D>,
    kernel: impl FnOnce(&mut [f32], usize) -> bool,
) -> Tensor<D> {
    let device = x.device();
    if x.dtype() != DType::F32 || !ember_tensor::device::is_host(&device) {
        return float(x);
    }
    let width = x.dims()[D - 1];
    let mut data = x.into_data();
    let done = data
        .as_mut_slice::<f32>()
        .is_ok_and(|values| kernel(values, width));
    let x = Tensor::from_data(data, &device);
    if done { x } else { float(x) }
}
