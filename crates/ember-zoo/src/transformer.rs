//! A small transformer encoder classifier: the reference model whose structured pruning
//! removes attention heads. Each image row is a token (its pixels, every channel, projected
//! to the model's width, plus a learned position), pre-norm encoder layers of multi-head
//! self-attention ([`SelfAttention`], whose heads can be removed) and a ReLU feed-forward
//! block (as Vaswani et al. 2017, so that APoZ applies to its neurons), a final layer norm, the
//! mean over tokens and a linear head.

use std::collections::BTreeMap;

use burn::module::{Module, Param};
use burn::nn::{LayerNorm, LayerNormConfig, LinearConfig, Relu};
use burn::tensor::{Device, Distribution, Tensor};
use serde::{Deserialize, Serialize};

use ember_quant::nn::Linear;
use ember_quant::{QuantLayer, QuantLayers};
use ember_tensor::{Classifier, UnitActivations, UnitGroup, UnitSlice, init_now};

use crate::Result;
use crate::attention::SelfAttention;
use crate::models::{classifier_seeing_units, invalid, positive};

/// The sizes of a [`Transformer`]: one entry of `heads` and `ffn` per encoder layer, so that
/// structured pruning can narrow each layer on its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformerConfig {
    /// Input channels.
    pub channels: usize,
    /// Image height (the tokens) and width.
    pub image: [usize; 2],
    /// Number of classes.
    pub classes: usize,
    /// The model's width (every token's values between layers).
    pub width: usize,
    /// Each head's width.
    pub head_width: usize,
    /// Attention heads of each layer.
    pub heads: Vec<usize>,
    /// Feed-forward width of each layer.
    pub ffn: Vec<usize>,
}

/// Parameters of a linear layer with bias.
fn linear_params(inputs: usize, outputs: usize) -> Option<usize> {
    inputs.checked_add(1)?.checked_mul(outputs)
}

impl TransformerConfig {
    /// The transformer of the reproduction runs: width 64, two layers of 8 heads of 8 and a
    /// feed-forward width of 128.
    pub fn small(channels: usize, image: [usize; 2], classes: usize) -> Self {
        Self {
            channels,
            image,
            classes,
            width: 64,
            head_width: 8,
            heads: vec![8, 8],
            ffn: vec![128, 128],
        }
    }

    /// How many parameters the model has, in checked arithmetic.
    pub fn parameter_count(&self) -> Result<usize> {
        let [rows, cols] = self.image;
        let w = self.width;
        let norm = w.checked_mul(2);
        let mut parts = vec![
            self.channels
                .checked_mul(cols)
                .and_then(|i| linear_params(i, w)),
            rows.checked_mul(w),
            norm,
            linear_params(w, self.classes),
        ];
        for (&heads, &ffn) in self.heads.iter().zip(&self.ffn) {
            let inner = heads.checked_mul(self.head_width);
            parts.extend([
                norm,
                inner.and_then(|i| linear_params(w, i)?.checked_mul(3)),
                inner.and_then(|i| linear_params(i, w)),
                norm,
                linear_params(w, ffn),
                linear_params(ffn, w),
            ]);
        }
        parts
            .into_iter()
            .try_fold(0usize, |sum, n| sum.checked_add(n?))
            .ok_or_else(|| invalid("width", self.width, "more parameters than fit in memory"))
    }

    /// Multiply-accumulates of one image's forward pass (the projections, the attention
    /// scores and their weighted sums, the feed-forward blocks and the head).
    pub fn macs(&self) -> Result<usize> {
        self.parameter_count()?;
        let [tokens, cols] = self.image;
        let w = self.width;
        let layers: usize = self
            .heads
            .iter()
            .zip(&self.ffn)
            .map(|(&heads, &ffn)| {
                let inner = heads * self.head_width;
                tokens * (4 * w * inner + 2 * w * ffn) + 2 * tokens * tokens * inner
            })
            .sum();
        Ok(tokens * self.channels * cols * w + layers + w * self.classes)
    }

    /// The dependency groups: `layers.<i>.attention.heads` (one unit per head, see
    /// [`SelfAttention::head_group`]) and `layers.<i>.ffn` (the feed-forward block's neurons,
    /// produced by `ffn_in`, read by `ffn_out`). Every layer adds its output to the token
    /// stream, whose width is not pruned.
    pub fn unit_groups(&self, prefix: &str) -> Vec<UnitGroup> {
        let mut groups = Vec::new();
        for (i, (&heads, &ffn)) in self.heads.iter().zip(&self.ffn).enumerate() {
            let layer = format!("{prefix}layers.{i}");
            groups.push(SelfAttention::head_group(
                &format!("{layer}.attention"),
                heads,
                self.head_width,
            ));
            let slice = |path: &str, axis| UnitSlice::new(format!("{layer}.{path}"), axis);
            groups.push(UnitGroup {
                name: format!("{layer}.ffn"),
                units: ffn,
                producers: vec![slice("ffn_in.weight", 1), slice("ffn_in.bias", 0)],
                consumers: vec![slice("ffn_out.weight", 0)],
            });
        }
        groups
    }

    /// The same network with the heads and neurons structured pruning kept (by the names of
    /// [`TransformerConfig::unit_groups`]); a group not in `kept` keeps its width.
    pub fn with_kept(&self, prefix: &str, kept: &BTreeMap<String, Vec<usize>>) -> Self {
        let width = |name: String, old: usize| kept.get(&name).map_or(old, Vec::len);
        let per_layer = |sizes: &[usize], group: &str| -> Vec<usize> {
            sizes
                .iter()
                .enumerate()
                .map(|(i, &n)| width(format!("{prefix}layers.{i}.{group}"), n))
                .collect()
        };
        Self {
            heads: per_layer(&self.heads, "attention.heads"),
            ffn: per_layer(&self.ffn, "ffn"),
            ..self.clone()
        }
    }

    /// Check the config and build the model on `device`, its parameters drawn from the device
    /// RNG now.
    pub fn init(&self, device: &Device) -> Result<Transformer> {
        positive("channels", self.channels)?;
        positive("classes", self.classes)?;
        positive("width", self.width)?;
        positive("head_width", self.head_width)?;
        positive("image", self.image[0].min(self.image[1]))?;
        if self.heads.is_empty() || self.heads.len() != self.ffn.len() {
            return Err(invalid(
                "heads",
                format!("{:?} with ffn {:?}", self.heads, self.ffn),
                "give one head count and one feed-forward width per layer, at least one layer",
            ));
        }
        if let Some(zero) = self.heads.iter().chain(&self.ffn).find(|&&n| n == 0) {
            return Err(invalid(
                "heads",
                zero,
                "every layer needs at least one head and one feed-forward neuron",
            ));
        }
        self.parameter_count()?;
        let [rows, cols] = self.image;
        let w = self.width;
        let dense = |from, to| Linear::new(&LinearConfig::new(from, to), device);
        let norm = || LayerNormConfig::new(w).init(device);
        let mut layers = Vec::with_capacity(self.heads.len());
        for (&heads, &ffn) in self.heads.iter().zip(&self.ffn) {
            layers.push(EncoderLayer {
                attention_norm: norm(),
                attention: SelfAttention::new(w, heads, self.head_width, device)?,
                ffn_norm: norm(),
                ffn_in: dense(w, ffn),
                ffn_out: dense(ffn, w),
            });
        }
        let positions = Tensor::random([rows, w], Distribution::Normal(0.0, 0.02), device);
        Ok(init_now(Transformer {
            embed: dense(self.channels * cols, w),
            positions: Param::from_tensor(positions),
            layers,
            norm: norm(),
            head: dense(w, self.classes),
            activation: Relu::new(),
        }))
    }
}

/// See [`TransformerConfig`].
#[derive(Module, Debug)]
pub struct Transformer {
    /// Each row's pixels (every channel) to the model's width.
    pub embed: Linear,
    /// A learned position per row, `[rows, width]`.
    pub positions: Param<Tensor<2>>,
    /// The encoder layers, in order.
    pub layers: Vec<EncoderLayer>,
    /// The normalization before pooling.
    pub norm: LayerNorm,
    /// The classifier on the mean token.
    pub head: Linear,
    activation: Relu,
}

/// `x + attention(norm(x))`, then `x + ffn_out(relu(ffn_in(norm(x))))`.
#[derive(Module, Debug)]
pub struct EncoderLayer {
    /// The normalization before attention.
    pub attention_norm: LayerNorm,
    /// Self-attention.
    pub attention: SelfAttention,
    /// The normalization before the feed-forward block.
    pub ffn_norm: LayerNorm,
    /// The feed-forward block's widening layer.
    pub ffn_in: Linear,
    /// Its narrowing layer.
    pub ffn_out: Linear,
}

impl Transformer {
    fn forward_seen(
        &self,
        images: Tensor<4>,
        mut seen: Option<&mut Vec<(String, Tensor<3>)>>,
    ) -> Tensor<2> {
        let [batch, channels, rows, cols] = images.dims();
        let tokens = images
            .swap_dims(1, 2)
            .reshape([batch, rows, channels * cols]);
        let width = self.positions.dims()[1];
        let mut x = self.embed.forward(tokens) + self.positions.val().reshape([1, rows, width]);
        // No token is padding: a zero bias at every key.
        let key_bias = Tensor::<4>::zeros([batch, 1, 1, rows], &x.device()).cast(x.dtype());
        for (i, layer) in self.layers.iter().enumerate() {
            x = x.clone()
                + layer
                    .attention
                    .forward(layer.attention_norm.forward(x), key_bias.clone());
            let inner = self
                .activation
                .forward(layer.ffn_in.forward(layer.ffn_norm.forward(x.clone())));
            if let Some(seen) = seen.as_deref_mut() {
                // `[batch, neurons, tokens]`, as `UnitActivations` asks.
                seen.push((format!("layers.{i}.ffn"), inner.clone().swap_dims(1, 2)));
            }
            x = x + layer.ffn_out.forward(inner);
        }
        let pooled = self.norm.forward(x).mean_dim(1).reshape([batch, width]);
        self.head.forward(pooled)
    }
}

classifier_seeing_units!(Transformer);

impl QuantLayers for Transformer {
    fn quant_layers(&mut self) -> Vec<(String, &mut dyn QuantLayer)> {
        let mut out: Vec<(String, &mut dyn QuantLayer)> = vec![("embed".into(), &mut self.embed)];
        for (i, layer) in self.layers.iter_mut().enumerate() {
            let a = &mut layer.attention;
            out.push((format!("layers.{i}.attention.query"), &mut a.query));
            out.push((format!("layers.{i}.attention.key"), &mut a.key));
            out.push((format!("layers.{i}.attention.value"), &mut a.value));
            out.push((format!("layers.{i}.attention.output"), &mut a.output));
            out.push((format!("layers.{i}.ffn_in"), &mut layer.ffn_in));
            out.push((format!("layers.{i}.ffn_out"), &mut layer.ffn_out));
        }
        out.push(("head".into(), &mut self.head));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_the_config() {
        let device = Device::flex();
        let config = TransformerConfig::small(1, [28, 28], 10);
        let model = config.init(&device).unwrap();
        assert_eq!(model.num_params(), config.parameter_count().unwrap());
        // embed 29*64, positions 28*64, final norm 128, head 65*10; per layer two norms of
        // 128, q/k/v 3*65*64, output 65*64, ffn 65*128 + 129*64.
        let layer = 256 + 4 * 65 * 64 + 65 * 128 + 129 * 64;
        assert_eq!(
            model.num_params(),
            29 * 64 + 28 * 64 + 128 + 650 + 2 * layer
        );
        assert_eq!(
            model.forward(Tensor::zeros([2, 1, 28, 28], &device)).dims(),
            [2, 10]
        );
        // Per layer: 28 tokens * (4*64*64 + 2*64*128) + 2*28*28*64; embed 28*28*64; head 640.
        let per_layer = 28 * (4 * 64 * 64 + 2 * 64 * 128) + 2 * 28 * 28 * 64;
        assert_eq!(config.macs().unwrap(), 28 * 28 * 64 + 2 * per_layer + 640);
        for bad in [
            TransformerConfig {
                heads: vec![8, 0],
                ..config.clone()
            },
            TransformerConfig {
                ffn: vec![128],
                ..config.clone()
            },
        ] {
            assert!(matches!(
                bad.init(&device),
                Err(crate::Error::InvalidConfig { field: "heads", .. })
            ));
        }
    }
}
