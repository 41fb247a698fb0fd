//! A transformer decoder (Vaswani et al., 2017) over the encoder's region grid.
//!
//! - **Memory**: the region features `[B, R, C]` projected to the model size,
//!   `memory = LayerNorm(Linear(regions))` (the layer norm puts CNN features of any scale on
//!   the scale of the residual stream), followed by dropout.
//! - **Input**: token embeddings plus position encodings: learned (an embedding table of
//!   `max_positions` rows) or sinusoidal (Vaswani's fixed sines and cosines, timescale 10 000).
//!   Embeddings are initialised `N(0, 1)` and not scaled by `√d_model`.
//! - **Layers** (`num_layers`), each: causal multi-head self-attention, multi-head
//!   cross-attention to the memory, and a GELU feed-forward network, each wrapped in dropout and
//!   a residual connection. With `norm_first` (the default, **pre-norm**):
//!   `x = x + sublayer(LayerNorm(x))` and a final LayerNorm before the output layer, which
//!   trains stably without warm-up tricks; without it (**post-norm**, the original
//!   transformer): `x = LayerNorm(x + sublayer(x))`. Attention weights get dropout after the
//!   softmax (as PyTorch's `nn.MultiheadAttention`).
//! - **Output**: a linear layer to the vocabulary.
//!
//! **Incremental decoding caches keys and values**: [`TransformerState`] keeps, per layer, the
//! self-attention keys/values of every position fed so far and the cross-attention keys/values
//! of the memory (computed once in `init_state`), so each step costs one position, not the
//! whole prefix. Both paths share one attention function; a step gives the same
//! log-probabilities as teacher forcing on the same prefix, up to float rounding.

use burn::nn::attention::{MultiHeadAttention, MultiHeadAttentionConfig};
use burn::nn::transformer::{PositionWiseFeedForward, PositionWiseFeedForwardConfig};
use burn::nn::{Dropout, DropoutConfig, Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::{log_softmax, softmax};
use serde::{Deserialize, Serialize};

use super::{CaptionDecoder, ConfigError, DecoderOutput, DecoderState, DecoderStep, check_dropout, check_positive};
use crate::encoder::EncoderOutput;

const SECTION: &str = "transformer decoder";

/// The sinusoids' longest timescale (Vaswani et al.).
const MAX_TIMESCALE: usize = 10_000;

/// Score given to masked (future) positions before the softmax.
const MASKED_SCORE: f32 = -1.0e9;

/// How positions are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PositionEncoding {
    /// A trained embedding per position.
    Learned,
    /// Fixed sines and cosines (no parameters).
    #[default]
    Sinusoidal,
}

/// Hyper-parameters of the transformer decoder (the feature and vocabulary sizes come from the
/// captioner, see [`super::DecoderConfig::init`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransformerDecoderConfig {
    /// Model size: embeddings, attention and residual stream.
    pub d_model: usize,
    /// Attention heads; must divide `d_model`.
    pub num_heads: usize,
    /// Decoder layers.
    pub num_layers: usize,
    /// Hidden size of each feed-forward network.
    pub d_ff: usize,
    /// Dropout on the input, the memory, attention weights, feed-forward activations and every
    /// sublayer output.
    pub dropout: f64,
    /// Most input positions (`<bos>` plus caption tokens); at least the captioner's
    /// `max_length + 1`.
    pub max_positions: usize,
    /// How positions are encoded.
    pub positions: PositionEncoding,
    /// Pre-norm (`true`) or post-norm (`false`); see the module docs.
    pub norm_first: bool,
}

impl Default for TransformerDecoderConfig {
    fn default() -> Self {
        TransformerDecoderConfig {
            d_model: 512,
            num_heads: 8,
            num_layers: 3,
            d_ff: 2048,
            dropout: 0.1,
            max_positions: 64,
            positions: PositionEncoding::Sinusoidal,
            norm_first: true,
        }
    }
}

impl TransformerDecoderConfig {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_d_model(self, d_model: usize) -> Self {
        TransformerDecoderConfig { d_model, ..self }
    }

    pub fn with_num_heads(self, num_heads: usize) -> Self {
        TransformerDecoderConfig { num_heads, ..self }
    }

    pub fn with_num_layers(self, num_layers: usize) -> Self {
        TransformerDecoderConfig { num_layers, ..self }
    }

    pub fn with_d_ff(self, d_ff: usize) -> Self {
        TransformerDecoderConfig { d_ff, ..self }
    }

    pub fn with_dropout(self, dropout: f64) -> Self {
        TransformerDecoderConfig { dropout, ..self }
    }

    pub fn with_max_positions(self, max_positions: usize) -> Self {
        TransformerDecoderConfig { max_positions, ..self }
    }

    pub fn with_positions(self, positions: PositionEncoding) -> Self {
        TransformerDecoderConfig { positions, ..self }
    }

    pub fn with_norm_first(self, norm_first: bool) -> Self {
        TransformerDecoderConfig { norm_first, ..self }
    }
}

impl TransformerDecoderConfig {
    /// The `max_positions` setting.
    pub fn max_positions(&self) -> Option<usize> {
        Some(self.max_positions)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        check_positive(SECTION, "d_model", self.d_model)?;
        check_positive(SECTION, "num_heads", self.num_heads)?;
        check_positive(SECTION, "num_layers", self.num_layers)?;
        check_positive(SECTION, "d_ff", self.d_ff)?;
        check_positive(SECTION, "max_positions", self.max_positions)?;
        check_dropout(SECTION, self.dropout)?;
        if !self.d_model.is_multiple_of(self.num_heads) {
            return Err(ConfigError::invalid(
                SECTION,
                "num_heads",
                format!("is {}, which does not divide `d_model` = {}", self.num_heads, self.d_model),
            ));
        }
        if self.positions == PositionEncoding::Sinusoidal {
            if !self.d_model.is_multiple_of(2) {
                return Err(ConfigError::invalid(
                    SECTION,
                    "d_model",
                    format!("is {}; sinusoidal positions need an even size", self.d_model),
                ));
            }
            if self.max_positions > MAX_TIMESCALE {
                return Err(ConfigError::invalid(
                    SECTION,
                    "max_positions",
                    format!("is {}; sinusoidal positions go up to {MAX_TIMESCALE}", self.max_positions),
                ));
            }
        }
        Ok(())
    }

    /// Builds the decoder. Panics on an invalid config; use [`super::DecoderConfig::init`] for a
    /// checked build.
    pub fn init<B: Backend>(&self, feature_size: usize, vocab_size: usize, device: &B::Device) -> TransformerDecoder<B> {
        if let Err(error) = self.validate() {
            panic!("{error}");
        }
        let d = self.d_model;
        let norm = || LayerNormConfig::new(d).init(device);
        let attention = || MultiHeadAttentionConfig::new(d, self.num_heads).with_dropout(self.dropout).init(device);
        let layers = (0..self.num_layers)
            .map(|_| DecoderLayer {
                self_attention: attention(),
                cross_attention: attention(),
                feed_forward: PositionWiseFeedForwardConfig::new(d, self.d_ff).with_dropout(self.dropout).init(device),
                norm_self: norm(),
                norm_cross: norm(),
                norm_ff: norm(),
                dropout: DropoutConfig::new(self.dropout).init(),
                norm_first: self.norm_first,
            })
            .collect();
        TransformerDecoder {
            embedding: EmbeddingConfig::new(vocab_size, d).init(device),
            position_embedding: (self.positions == PositionEncoding::Learned)
                .then(|| EmbeddingConfig::new(self.max_positions, d).init(device)),
            feature_projection: LinearConfig::new(feature_size, d).init(device),
            feature_norm: norm(),
            layers,
            final_norm: self.norm_first.then(norm),
            dropout: DropoutConfig::new(self.dropout).init(),
            output: LinearConfig::new(d, vocab_size).init(device),
            max_positions: self.max_positions,
        }
    }
}

/// One decoder layer (see the module docs).
#[derive(Module, Debug)]
pub struct DecoderLayer<B: Backend> {
    /// Only its `query`/`key`/`value`/`output` projections, head count and dropout are used: the
    /// attention itself is computed here, so that it can run on cached keys and values.
    pub self_attention: MultiHeadAttention<B>,
    pub cross_attention: MultiHeadAttention<B>,
    pub feed_forward: PositionWiseFeedForward<B>,
    pub norm_self: LayerNorm<B>,
    pub norm_cross: LayerNorm<B>,
    pub norm_ff: LayerNorm<B>,
    pub dropout: Dropout,
    pub norm_first: bool,
}

/// The transformer decoder (see the module docs).
#[derive(Module, Debug)]
pub struct TransformerDecoder<B: Backend> {
    pub embedding: Embedding<B>,
    /// Learned positions; `None` for sinusoidal ones.
    pub position_embedding: Option<Embedding<B>>,
    pub feature_projection: Linear<B>,
    pub feature_norm: LayerNorm<B>,
    pub layers: Vec<DecoderLayer<B>>,
    /// Pre-norm only.
    pub final_norm: Option<LayerNorm<B>>,
    pub dropout: Dropout,
    pub output: Linear<B>,
    pub max_positions: usize,
}

/// Keys and values `[N, heads, length, d_head]` of one attention.
#[derive(Debug, Clone)]
pub struct KeyValues<B: Backend> {
    pub keys: Tensor<B, 4>,
    pub values: Tensor<B, 4>,
}

impl<B: Backend> KeyValues<B> {
    fn select(self, indices: Tensor<B, 1, Int>) -> Self {
        KeyValues { keys: self.keys.select(0, indices.clone()), values: self.values.select(0, indices) }
    }

    fn append(self, other: KeyValues<B>) -> Self {
        KeyValues { keys: Tensor::cat(vec![self.keys, other.keys], 2), values: Tensor::cat(vec![self.values, other.values], 2) }
    }
}

/// The transformer's incremental state for `N` rows: cached keys and values.
#[derive(Debug, Clone)]
pub struct TransformerState<B: Backend> {
    /// Tokens fed so far (the position of the next one).
    pub position: usize,
    /// Per layer: self-attention keys/values of positions `0..position` (`None` before the
    /// first step).
    pub self_cache: Vec<Option<KeyValues<B>>>,
    /// Per layer: cross-attention keys/values of the memory.
    pub cross_cache: Vec<KeyValues<B>>,
}

impl<B: Backend> DecoderState<B> for TransformerState<B> {
    fn select(self, indices: Tensor<B, 1, Int>) -> Self {
        TransformerState {
            position: self.position,
            self_cache: self.self_cache.into_iter().map(|kv| kv.map(|kv| kv.select(indices.clone()))).collect(),
            cross_cache: self.cross_cache.into_iter().map(|kv| kv.select(indices.clone())).collect(),
        }
    }

    fn rows(&self) -> usize {
        self.cross_cache.first().map(|kv| kv.keys.dims()[0]).unwrap_or(0)
    }
}

/// `[N, T, d]` -> `[N, heads, T, d / heads]`.
fn split_heads<B: Backend>(x: Tensor<B, 3>, heads: usize) -> Tensor<B, 4> {
    let [n, t, d] = x.dims();
    x.reshape([n, t, heads, d / heads]).swap_dims(1, 2)
}

fn project_keys_values<B: Backend>(attention: &MultiHeadAttention<B>, source: Tensor<B, 3>) -> KeyValues<B> {
    KeyValues {
        keys: split_heads(attention.key.forward(source.clone()), attention.n_heads),
        values: split_heads(attention.value.forward(source), attention.n_heads),
    }
}

/// Scaled dot-product attention of `query` `[N, Tq, d]` over `kv`, with an additive `bias`
/// `[1, 1, Tq, Tk]` (0 or [`MASKED_SCORE`]), through `attention`'s projections.
fn attend<B: Backend>(
    attention: &MultiHeadAttention<B>,
    query: Tensor<B, 3>,
    kv: &KeyValues<B>,
    bias: Option<Tensor<B, 4>>,
) -> (Tensor<B, 3>, Tensor<B, 4>) {
    let [n, tq, d] = query.dims();
    let q = split_heads(attention.query.forward(query), attention.n_heads);
    let scores = q.matmul(kv.keys.clone().swap_dims(2, 3)).div_scalar((attention.d_k as f32).sqrt());
    let scores = match bias {
        Some(bias) => scores + bias,
        None => scores,
    };
    let weights = softmax(scores, 3);
    let context = attention.dropout.forward(weights.clone()).matmul(kv.values.clone()).swap_dims(1, 2).reshape([n, tq, d]);
    (attention.output.forward(context), weights)
}

impl<B: Backend> DecoderLayer<B> {
    /// Runs the layer on `x` `[N, T, d]` given the self-attention keys/values of `x`'s positions
    /// (and earlier ones) computed by `self_kv` from the layer's self-attention input.
    fn forward(
        &self,
        x: Tensor<B, 3>,
        self_cache: Option<KeyValues<B>>,
        cross: &KeyValues<B>,
        causal_bias: Option<Tensor<B, 4>>,
    ) -> (Tensor<B, 3>, KeyValues<B>, Tensor<B, 4>) {
        let residual = |x: Tensor<B, 3>, sublayer_out: Tensor<B, 3>, norm: &LayerNorm<B>| {
            let sum = x + self.dropout.forward(sublayer_out);
            if self.norm_first { sum } else { norm.forward(sum) }
        };
        let pre = |x: &Tensor<B, 3>, norm: &LayerNorm<B>| if self.norm_first { norm.forward(x.clone()) } else { x.clone() };

        // Causal self-attention; keys and values of the new positions join the cache.
        let input = pre(&x, &self.norm_self);
        let new_kv = project_keys_values(&self.self_attention, input.clone());
        let kv = match self_cache {
            Some(cache) => cache.append(new_kv),
            None => new_kv,
        };
        let (out, _) = attend(&self.self_attention, input, &kv, causal_bias);
        let x = residual(x, out, &self.norm_self);

        let input = pre(&x, &self.norm_cross);
        let (out, cross_weights) = attend(&self.cross_attention, input, cross, None);
        let x = residual(x, out, &self.norm_cross);

        let input = pre(&x, &self.norm_ff);
        let out = self.feed_forward.forward(input);
        (residual(x, out, &self.norm_ff), kv, cross_weights)
    }
}

impl<B: Backend> TransformerDecoder<B> {
    /// This decoder with every dropout off: input, memory, attention weights, feed-forward and
    /// residual (see [`super::Decoder::without_dropout`]).
    pub fn without_dropout(&self) -> Self {
        let mut decoder = self.clone();
        decoder.dropout.prob = 0.0;
        for layer in &mut decoder.layers {
            layer.dropout.prob = 0.0;
            layer.self_attention.dropout.prob = 0.0;
            layer.cross_attention.dropout.prob = 0.0;
            layer.feed_forward.dropout.prob = 0.0;
        }
        decoder
    }

    /// Embedded input tokens `[N, T]` at positions `start..start + T`.
    fn embed(&self, tokens: Tensor<B, 2, Int>, start: usize) -> Tensor<B, 3> {
        let t = tokens.dims()[1];
        assert!(
            start + t <= self.max_positions,
            "the transformer decoder takes at most {} positions (`max_positions`); got {}",
            self.max_positions,
            start + t
        );
        let device = tokens.device();
        let x = self.embedding.forward(tokens);
        let positions: Tensor<B, 3> = match &self.position_embedding {
            Some(table) => {
                let ids = Tensor::<B, 1, Int>::arange(start as i64..(start + t) as i64, &device).reshape([1, t]);
                table.forward(ids)
            }
            None => sinusoids::<B>(start + t, self.d_model(), &device).narrow(0, start, t).unsqueeze_dim(0),
        };
        self.dropout.forward(x + positions)
    }

    fn d_model(&self) -> usize {
        self.output.weight.dims()[0]
    }

    fn memory(&self, features: &EncoderOutput<B>) -> Tensor<B, 3> {
        self.dropout.forward(self.feature_norm.forward(self.feature_projection.forward(features.regions.clone())))
    }

    fn logits(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let x = match &self.final_norm {
            Some(norm) => norm.forward(x),
            None => x,
        };
        self.output.forward(x)
    }
}

/// Vaswani's sinusoids `[length, d]`: `sin(p / 10000^(2k/d))` at `2k`, `cos` at `2k + 1`.
fn sinusoids<B: Backend>(length: usize, d: usize, device: &B::Device) -> Tensor<B, 2> {
    burn::nn::generate_sinusoids(length, d, MAX_TIMESCALE, device)
}

impl<B: Backend> CaptionDecoder<B> for TransformerDecoder<B> {
    type State = TransformerState<B>;

    fn vocab_size(&self) -> usize {
        self.output.weight.dims()[1]
    }

    fn max_positions(&self) -> Option<usize> {
        Some(self.max_positions)
    }

    fn forward(&self, features: &EncoderOutput<B>, tokens: Tensor<B, 2, Int>) -> DecoderOutput<B> {
        let [_, length] = tokens.dims();
        let device = tokens.device();
        let memory = self.memory(features);
        // 0 on and below the diagonal, MASKED_SCORE above it (the future). burn's `tril_mask`
        // is true outside the lower triangle.
        let causal =
            Tensor::<B, 2, Bool>::tril_mask([length, length], 0, &device).float().mul_scalar(MASKED_SCORE).reshape([1, 1, length, length]);
        let mut x = self.embed(tokens, 0);
        for layer in &self.layers {
            let cross = project_keys_values(&layer.cross_attention, memory.clone());
            x = layer.forward(x, None, &cross, Some(causal.clone())).0;
        }
        DecoderOutput { logits: self.logits(x), alphas: None }
    }

    fn init_state(&self, features: &EncoderOutput<B>) -> Self::State {
        let memory = self.memory(features);
        TransformerState {
            position: 0,
            self_cache: vec![None; self.layers.len()],
            cross_cache: self.layers.iter().map(|layer| project_keys_values(&layer.cross_attention, memory.clone())).collect(),
        }
    }

    fn step(&self, state: Self::State, last_tokens: Tensor<B, 1, Int>) -> (DecoderStep<B>, Self::State) {
        let TransformerState { position, self_cache, cross_cache } = state;
        let mut x = self.embed(last_tokens.unsqueeze_dim(1), position);
        let mut next_cache = Vec::with_capacity(self.layers.len());
        let mut last_cross = None;
        for ((layer, cache), cross) in self.layers.iter().zip(self_cache).zip(&cross_cache) {
            let (out, kv, cross_weights) = layer.forward(x, cache, cross, None);
            x = out;
            next_cache.push(Some(kv));
            last_cross = Some(cross_weights);
        }
        let logits = self.logits(x).squeeze_dim::<2>(1);
        // The last layer's cross-attention `[N, heads, 1, R]`, averaged over heads.
        let attention = last_cross.map(|weights| {
            let [rows, _, _, regions] = weights.dims();
            weights.mean_dim(1).reshape([rows, regions])
        });
        let step = DecoderStep { log_probs: log_softmax(logits, 1), attention };
        (step, TransformerState { position: position + 1, self_cache: next_cache, cross_cache })
    }
}
