//! A BERT encoder (Devlin et al. 2019) for sentence embeddings, as sentence-transformers'
//! all-MiniLM-L6-v2 computes them: word-piece tokens through the encoder, the last hidden
//! states averaged over the real tokens, the mean scaled to unit length.
//!
//! The model loads from a folder in Hugging Face's layout: `config.json` (the sizes),
//! `model.safetensors` (PyTorch's parameter names and `[out, in]` linear weights, mapped onto
//! this module's paths by burn-store) and `tokenizer.json` (read by the `tokenizers` crate);
//! `sentence_bert_config.json`, when present, gives the maximum length. Its fully connected
//! layers are Ember's drop-ins, so every quantization pass applies ([`QuantLayers`]).
//!
//! ```
//! use burn::tensor::Device;
//! use ember_zoo::bert::SentenceEncoder;
//!
//! let device = Device::flex();
//! let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/bert/tiny");
//! let encoder = SentenceEncoder::load(dir.as_ref(), &device)?;
//! let embeddings = encoder.embed(&["The cat sat.", "A kitten was resting."], &device)?;
//! assert_eq!(embeddings.dims(), [2, encoder.model.config.hidden_size]);
//! # Ok::<(), ember_zoo::Error>(())
//! ```

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, Gelu, LayerNorm, LayerNormConfig, LinearConfig};
use burn::store::{ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore};
use burn::tensor::{Bool, DType, Device, Int, Tensor, TensorData};
use ember_kernels::activation;
use ember_quant::nn::Linear;
use ember_quant::{QuantLayer, QuantLayers};
use ember_tensor::{Input, LabeledData};
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use crate::attention::{PADDING_BIAS, SelfAttention, on_host};
use crate::{Error, Result};

/// The sizes of a BERT encoder, as `config.json` gives them (other keys are ignored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    /// Word pieces in the vocabulary.
    pub vocab_size: usize,
    /// Width of every hidden state.
    pub hidden_size: usize,
    /// Encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer (`hidden_size` must be a multiple).
    pub num_attention_heads: usize,
    /// Width of each layer's feed-forward block.
    pub intermediate_size: usize,
    /// Positions the position embeddings cover: the longest input.
    pub max_position_embeddings: usize,
    /// Segment types (2 in BERT; sentence embeddings use type 0 only).
    #[serde(default = "two")]
    pub type_vocab_size: usize,
    /// LayerNorm's epsilon.
    #[serde(default = "bert_epsilon")]
    pub layer_norm_eps: f64,
    /// The feed-forward activation: only `gelu` (the exact, erf form) is supported.
    #[serde(default = "gelu_name")]
    pub hidden_act: String,
    /// Only `absolute` position embeddings are supported.
    #[serde(default = "absolute")]
    pub position_embedding_type: String,
}

fn two() -> usize {
    2
}

fn bert_epsilon() -> f64 {
    1e-12
}

fn gelu_name() -> String {
    "gelu".into()
}

fn absolute() -> String {
    "absolute".into()
}

impl BertConfig {
    /// Refuse sizes no encoder can have and variants this one does not implement.
    pub fn check(&self) -> Result<()> {
        let bad = |field: &'static str, reason: String| Err(Error::BertConfig { field, reason });
        for (field, value) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("type_vocab_size", self.type_vocab_size),
        ] {
            if value == 0 {
                return bad(field, "must be at least 1".into());
            }
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return bad(
                "num_attention_heads",
                format!(
                    "{} heads do not divide a hidden size of {}",
                    self.num_attention_heads, self.hidden_size
                ),
            );
        }
        if self.hidden_act != "gelu" {
            return bad(
                "hidden_act",
                format!("`{}`: only `gelu` is supported", self.hidden_act),
            );
        }
        if self.position_embedding_type != "absolute" {
            return bad(
                "position_embedding_type",
                format!(
                    "`{}`: only `absolute` is supported",
                    self.position_embedding_type
                ),
            );
        }
        if !(self.layer_norm_eps > 0.0 && self.layer_norm_eps.is_finite()) {
            return bad("layer_norm_eps", format!("{}", self.layer_norm_eps));
        }
        Ok(())
    }

    /// A randomly initialized encoder of these sizes (burn's initializers), on `device`.
    pub fn init(&self, device: &Device) -> Result<Bert> {
        self.check()?;
        let (h, eps) = (self.hidden_size, self.layer_norm_eps);
        let norm = || LayerNormConfig::new(h).with_epsilon(eps).init(device);
        let dense = |from, to| Linear::new(&LinearConfig::new(from, to), device);
        let layers = (0..self.num_hidden_layers)
            .map(|_| BertLayer {
                attention: SelfAttention {
                    query: dense(h, h),
                    key: dense(h, h),
                    value: dense(h, h),
                    output: dense(h, h),
                    heads: self.num_attention_heads,
                    head_width: h / self.num_attention_heads,
                },
                attention_norm: norm(),
                intermediate: dense(h, self.intermediate_size),
                output: dense(self.intermediate_size, h),
                output_norm: norm(),
                gelu: Gelu::new(),
            })
            .collect();
        Ok(ember_tensor::init_now(Bert {
            embeddings: Embeddings {
                word_embeddings: EmbeddingConfig::new(self.vocab_size, h).init(device),
                position_embeddings: EmbeddingConfig::new(self.max_position_embeddings, h)
                    .init(device),
                token_type_embeddings: EmbeddingConfig::new(self.type_vocab_size, h).init(device),
                layer_norm: norm(),
            },
            layers,
            config: self.clone(),
        }))
    }
}

/// A batch of tokenized sentences: word-piece ids `[batch, tokens]`, padded with id 0, and
/// which positions hold a real token (`true`) rather than padding.
#[derive(Debug, Clone)]
pub struct TokenBatch {
    /// Word-piece ids.
    pub ids: Tensor<2, Int>,
    /// `true` at real tokens, `false` at padding.
    pub real: Tensor<2, Bool>,
}

impl Input for TokenBatch {
    fn for_compute(self, _dtype: DType) -> Self {
        self
    }

    fn without_autodiff(self) -> Self {
        Self {
            ids: self.ids.without_autodiff(),
            real: self.real.without_autodiff(),
        }
    }
}

/// Word, position and segment embeddings, summed and normalized.
#[derive(Module, Debug)]
pub struct Embeddings {
    /// One row per word piece.
    pub word_embeddings: Embedding,
    /// One row per position.
    pub position_embeddings: Embedding,
    /// One row per segment type.
    pub token_type_embeddings: Embedding,
    /// The normalization of the sum.
    pub layer_norm: LayerNorm,
}

/// One encoder layer: attention and a feed-forward block, each added to its input and
/// normalized (post-norm, as BERT).
#[derive(Module, Debug)]
pub struct BertLayer {
    /// Self-attention.
    pub attention: SelfAttention,
    /// The normalization after attention.
    pub attention_norm: LayerNorm,
    /// The feed-forward block's widening layer.
    pub intermediate: Linear,
    /// Its narrowing layer.
    pub output: Linear,
    /// The normalization after the feed-forward block.
    pub output_norm: LayerNorm,
    /// The feed-forward activation.
    pub gelu: Gelu,
}

impl BertLayer {
    fn forward(&self, x: Tensor<3>, key_bias: Tensor<4>) -> Tensor<3> {
        let x = self
            .attention_norm
            .forward(x.clone() + self.attention.forward(x, key_bias));
        let inner = on_host(
            self.intermediate.forward(x.clone()),
            |t| self.gelu.forward(t),
            |values, _| {
                activation::gelu(values);
                true
            },
        );
        self.output_norm.forward(x + self.output.forward(inner))
    }
}

/// A BERT encoder.
#[derive(Module, Debug)]
pub struct Bert {
    /// The input embeddings.
    pub embeddings: Embeddings,
    /// The encoder layers, in order.
    pub layers: Vec<BertLayer>,
    /// The sizes it was built with.
    #[module(skip)]
    pub config: BertConfig,
}

impl Bert {
    /// The last layer's hidden states, `[batch, tokens, hidden]`.
    pub fn hidden_states(&self, tokens: &TokenBatch) -> Tensor<3> {
        let [batch, length] = tokens.ids.dims();
        let device = tokens.ids.device();
        let positions = Tensor::<1, Int>::arange(0..length as i64, &device).reshape([1, length]);
        let segments = Tensor::<2, Int>::zeros([batch, length], &device);
        let e = &self.embeddings;
        let x = e.word_embeddings.forward(tokens.ids.clone())
            + e.position_embeddings.forward(positions)
            + e.token_type_embeddings.forward(segments);
        let mut x = e.layer_norm.forward(x);
        let padding = tokens.real.clone().bool_not().float();
        let key_bias = padding
            .mul_scalar(PADDING_BIAS)
            .reshape([batch, 1, 1, length])
            .cast(x.dtype());
        for layer in &self.layers {
            x = layer.forward(x, key_bias.clone());
        }
        x
    }

    /// Sentence embeddings `[batch, hidden]`: the hidden states averaged over each sentence's
    /// real tokens, then scaled to unit length.
    pub fn embed(&self, tokens: &TokenBatch) -> Tensor<2> {
        let hidden = self.hidden_states(tokens);
        let [batch, length, width] = hidden.dims();
        let real = tokens
            .real
            .clone()
            .float()
            .cast(hidden.dtype())
            .reshape([batch, length, 1]);
        let count = real.clone().sum_dim(1).clamp_min(1.0);
        let mean = (hidden * real)
            .sum_dim(1)
            .div(count)
            .reshape([batch, width]);
        let norm = mean
            .clone()
            .powi_scalar(2)
            .sum_dim(1)
            .sqrt()
            .clamp_min(1e-12);
        mean.div(norm)
    }

    /// Load the encoder of a Hugging Face folder: `config.json` and `model.safetensors`.
    /// Every parameter must be in the file with the shape the config gives it (the file's
    /// pooler and position ids, which sentence embeddings do not use, are skipped) and finite.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let config: BertConfig = read_json(&dir.join("config.json"))?;
        let mut model = config.init(device)?;
        let weights = existing(dir.join("model.safetensors"))?;
        let mut store = SafetensorsStore::from_file(&weights)
            .with_from_adapter(PyTorchToBurnAdapter)
            .with_key_remapping(r"^encoder\.layer\.", "layers.")
            .with_key_remapping(r"\.attention\.self\.", ".attention.")
            .with_key_remapping(r"\.attention\.output\.dense\.", ".attention.output.")
            .with_key_remapping(r"\.attention\.output\.LayerNorm\.", ".attention_norm.")
            .with_key_remapping(r"\.intermediate\.dense\.", ".intermediate.")
            .with_key_remapping(r"\.output\.dense\.", ".output.")
            .with_key_remapping(r"\.output\.LayerNorm\.", ".output_norm.")
            .with_key_remapping(r"^embeddings\.LayerNorm\.", "embeddings.layer_norm.")
            .allow_partial(false)
            .validate(true);
        model.load_from(&mut store).map_err(|e| Error::ModelFile {
            path: weights.clone(),
            reason: e.to_string(),
        })?;
        for value in ember_tensor::param_values(&model) {
            let values = ember_tensor::stats::read_f32(value.flat)?;
            if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
                return Err(Error::ModelFile {
                    path: weights,
                    reason: format!("`{}` holds {bad}", value.info.path),
                });
            }
        }
        Ok(model)
    }
}

impl Bert {
    /// Each layer's attention heads, as they stand.
    pub fn heads(&self) -> Vec<usize> {
        self.layers.iter().map(|l| l.attention.heads).collect()
    }

    /// A smaller encoder made of this one's embeddings and its layers `layers` (in that
    /// order): a student initialized from its teacher, as DistilBERT and Turc et al.'s
    /// pre-trained compact models are.
    pub fn with_layers(&self, layers: &[usize]) -> Result<Self> {
        let mut kept = Vec::with_capacity(layers.len());
        for &i in layers {
            let layer = self.layers.get(i).ok_or_else(|| Error::InvalidConfig {
                field: "layers",
                value: format!("{layers:?} of {}", self.layers.len()),
                reason: "every layer index must exist",
            })?;
            kept.push(layer.clone());
        }
        if kept.is_empty() {
            return Err(Error::InvalidConfig {
                field: "layers",
                value: "[]".into(),
                reason: "keep at least one layer",
            });
        }
        Ok(Self {
            embeddings: self.embeddings.clone(),
            layers: kept,
            config: BertConfig {
                num_hidden_layers: layers.len(),
                ..self.config.clone()
            },
        })
    }

    /// The encoder with only the heads `keep[layer]` in each layer (indices into the layer's
    /// current heads, ascending), the attention projections physically shrunk: fewer weights
    /// and less compute, the same function as zeroing the other heads' outputs.
    pub fn keep_heads(self, keep: &[Vec<usize>]) -> Result<Self> {
        if keep.len() != self.layers.len() {
            return Err(Error::InvalidConfig {
                field: "heads",
                value: format!("{} lists for {} layers", keep.len(), self.layers.len()),
                reason: "give one list of heads per layer",
            });
        }
        let mut layers = Vec::with_capacity(self.layers.len());
        for (layer, keep) in self.layers.into_iter().zip(keep) {
            layers.push(BertLayer {
                attention: layer.attention.keep_heads(keep)?,
                ..layer
            });
        }
        Ok(Self { layers, ..self })
    }
}

impl QuantLayers for Bert {
    fn quant_layers(&mut self) -> Vec<(String, &mut dyn QuantLayer)> {
        let mut out: Vec<(String, &mut dyn QuantLayer)> = Vec::new();
        for (i, layer) in self.layers.iter_mut().enumerate() {
            let a = &mut layer.attention;
            out.push((format!("layers.{i}.attention.query"), &mut a.query));
            out.push((format!("layers.{i}.attention.key"), &mut a.key));
            out.push((format!("layers.{i}.attention.value"), &mut a.value));
            out.push((format!("layers.{i}.attention.output"), &mut a.output));
            out.push((format!("layers.{i}.intermediate"), &mut layer.intermediate));
            out.push((format!("layers.{i}.output"), &mut layer.output));
        }
        out
    }
}

/// An encoder with its tokenizer: sentences in, embeddings out.
#[derive(Debug, Clone)]
pub struct SentenceEncoder {
    /// The encoder.
    pub model: Bert,
    /// The word-piece tokenizer.
    pub tokenizer: Tokenizer,
    /// Word pieces per sentence, `[CLS]` and `[SEP]` included; longer sentences are cut to
    /// this length (sentence-transformers' `max_seq_length`, at most the positions the model
    /// has).
    pub max_len: usize,
}

/// sentence-transformers' settings file: only the maximum length is read.
#[derive(Deserialize)]
struct SentenceBertConfig {
    max_seq_length: usize,
}

impl SentenceEncoder {
    /// Load the encoder, the tokenizer and the maximum length of a Hugging Face folder.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let model = Bert::load(dir, device)?;
        let path = existing(dir.join("tokenizer.json"))?;
        let tokenizer_error = |e: tokenizers::Error| Error::Tokenizer {
            path: path.clone(),
            reason: e.to_string(),
        };
        let mut tokenizer = Tokenizer::from_file(&path).map_err(tokenizer_error)?;
        // A file's own padding (all-MiniLM-L6-v2's pads every sentence to 128 pieces) would
        // make pad ids look like words, and its own truncation (128 there) would override
        // sentence-transformers' maximum: batches are padded here, sentences cut at `max_len`.
        tokenizer.with_padding(None);
        tokenizer.with_truncation(None).map_err(tokenizer_error)?;
        let positions = model.config.max_position_embeddings;
        let settings = dir.join("sentence_bert_config.json");
        let max_len = if settings.exists() {
            let s: SentenceBertConfig = read_json(&settings)?;
            s.max_seq_length.min(positions)
        } else {
            positions
        };
        if max_len < 3 {
            return Err(Error::BertConfig {
                field: "max_seq_length",
                reason: format!("{max_len}: a sentence needs room for [CLS], a token and [SEP]"),
            });
        }
        Ok(Self {
            model,
            tokenizer,
            max_len,
        })
    }

    /// Tokenize `sentences` into one padded batch on `device`. A sentence longer than
    /// [`SentenceEncoder::max_len`] word pieces is cut to it (its last piece stays `[SEP]`),
    /// as sentence-transformers does; an empty sentence is an error.
    pub fn tokenize(&self, sentences: &[&str], device: &Device) -> Result<TokenBatch> {
        let rows = self.dataset(sentences)?.rows;
        if rows.is_empty() {
            return Err(Error::EmptySentence { index: 0 });
        }
        let rows: Vec<&[u32]> = rows.iter().map(Vec::as_slice).collect();
        Ok(padded(&rows, device))
    }

    /// `sentences` tokenized once, as a dataset whose batches are [`TokenBatch`]es (for
    /// training on text: distilling a student, say). Its labels are all 0. An empty sentence
    /// is an error.
    pub fn dataset(&self, sentences: &[&str]) -> Result<Sentences> {
        let mut rows = Vec::with_capacity(sentences.len());
        for (index, sentence) in sentences.iter().enumerate() {
            if sentence.trim().is_empty() {
                return Err(Error::EmptySentence { index });
            }
            rows.push(self.token_ids(sentence)?);
        }
        Ok(Sentences { rows })
    }

    /// One sentence's word-piece ids, `[CLS]` and `[SEP]` included, cut to the maximum length.
    pub fn token_ids(&self, sentence: &str) -> Result<Vec<u32>> {
        let encoding = self
            .tokenizer
            .encode(sentence, true)
            .map_err(|e| Error::Tokenizer {
                path: PathBuf::from("tokenizer.json"),
                reason: e.to_string(),
            })?;
        let mut ids = encoding.get_ids().to_vec();
        if ids.len() > self.max_len {
            // Keep the final `[SEP]` the post-processor added, as truncating before it does.
            let last = ids[ids.len() - 1];
            ids.truncate(self.max_len - 1);
            ids.push(last);
        }
        Ok(ids)
    }

    /// The sentence embeddings of `sentences`, `[sentences, hidden]`, unit length each.
    pub fn embed(&self, sentences: &[&str], device: &Device) -> Result<Tensor<2>> {
        Ok(self.model.embed(&self.tokenize(sentences, device)?))
    }
}

/// Token ids of sentences, padded with id 0 to the longest.
fn padded(rows: &[&[u32]], device: &Device) -> TokenBatch {
    let length = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(rows.len() * length);
    let mut real = Vec::with_capacity(rows.len() * length);
    for row in rows {
        ids.extend(row.iter().map(|&id| i64::from(id)));
        ids.extend(std::iter::repeat_n(0, length - row.len()));
        real.extend(std::iter::repeat_n(true, row.len()));
        real.extend(std::iter::repeat_n(false, length - row.len()));
    }
    let shape = [rows.len(), length];
    TokenBatch {
        ids: Tensor::from_data(TensorData::new(ids, shape), device),
        real: Tensor::from_data(TensorData::new(real, shape), device),
    }
}

/// Tokenized sentences as a labelled dataset of [`TokenBatch`]es (every label 0): text for
/// Ember's training loop ([`SentenceEncoder::dataset`]).
#[derive(Debug, Clone)]
pub struct Sentences {
    rows: Vec<Vec<u32>>,
}

impl LabeledData<TokenBatch> for Sentences {
    fn len(&self) -> usize {
        self.rows.len()
    }

    fn batch(&self, indices: &[usize], device: &Device) -> (TokenBatch, Tensor<1, Int>) {
        let rows: Vec<&[u32]> = indices.iter().map(|&i| self.rows[i].as_slice()).collect();
        (
            padded(&rows, device),
            Tensor::zeros([indices.len()], device),
        )
    }
}

fn existing(path: PathBuf) -> Result<PathBuf> {
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::MissingModelFile { path })
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let path = existing(path.to_path_buf())?;
    let text = std::fs::read_to_string(&path).map_err(|source| Error::Io {
        path: path.clone(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| Error::ModelFile {
        path,
        reason: e.to_string(),
    })
}
