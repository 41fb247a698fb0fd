//! The soft-attention LSTM decoder of Show, Attend and Tell (Xu et al., 2015).
//!
//! With region features `a_i` (`R` regions of `C` channels) and their mean `ā`, at step `t`
//! (input token `y_{t-1}`, embedding `E y_{t-1}`) the decoder computes, from the previous
//! hidden state `h_{t-1}`:
//!
//! ```text
//! h_0 = tanh(W_h ā + b_h),  c_0 = W_c ā + b_c                  (init_h, init_c)
//! e_ti = w_a · tanh(U_a a_i + W_a h_{t-1} + b_a) + b_w         (additive / Bahdanau attention)
//! α_t = softmax_i(e_t)                                         (attention weights, Σ_i α_ti = 1)
//! β_t = σ(f_β(h_{t-1}))                                        (scalar gate, one per row)
//! ẑ_t = β_t Σ_i α_ti a_i                                        (gated context)
//! h_t, c_t = LSTMCell([E y_{t-1}; ẑ_t], (h_{t-1}, c_{t-1}))     (PyTorch gate order i, f, g, o)
//! logits_t = L_o(dropout(h_t))                                  (plain output)
//! logits_t = L_o(dropout(tanh(E y_{t-1} + L_h h_t + L_z ẑ_t)))  (deep output, `deep_output`)
//! ```
//!
//! The attention weights of every step are returned by teacher forcing
//! ([`DecoderOutput::alphas`]) for the paper's doubly stochastic regulariser,
//! [`doubly_stochastic_penalty`].

use burn::nn::{Dropout, DropoutConfig, Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::{log_softmax, sigmoid, softmax};
use serde::{Deserialize, Serialize};

use super::additive_scores::additive_scores;
use super::lstm_update::lstm_update;
use super::step_linear::{StepTape, step_linear};
use super::{CaptionDecoder, ConfigError, DecoderOutput, DecoderState, DecoderStep, check_dropout, check_positive};
use crate::encoder::EncoderOutput;

const SECTION: &str = "attention LSTM decoder";

/// Hyper-parameters of the attention LSTM (the feature and vocabulary sizes come from the
/// captioner, see [`super::DecoderConfig::init`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AttentionLstmConfig {
    /// Word embedding size.
    pub embedding_size: usize,
    /// LSTM hidden (and cell) size.
    pub hidden_size: usize,
    /// Size of the additive attention's hidden layer.
    pub attention_size: usize,
    /// Dropout before the output layer (and on nothing else).
    pub dropout: f64,
    /// The paper's deep output layer (see the module docs) instead of a linear layer on `h_t`.
    pub deep_output: bool,
}

impl Default for AttentionLstmConfig {
    fn default() -> Self {
        AttentionLstmConfig { embedding_size: 512, hidden_size: 512, attention_size: 512, dropout: 0.5, deep_output: false }
    }
}

impl AttentionLstmConfig {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_embedding_size(self, embedding_size: usize) -> Self {
        AttentionLstmConfig { embedding_size, ..self }
    }

    pub fn with_hidden_size(self, hidden_size: usize) -> Self {
        AttentionLstmConfig { hidden_size, ..self }
    }

    pub fn with_attention_size(self, attention_size: usize) -> Self {
        AttentionLstmConfig { attention_size, ..self }
    }

    pub fn with_dropout(self, dropout: f64) -> Self {
        AttentionLstmConfig { dropout, ..self }
    }

    pub fn with_deep_output(self, deep_output: bool) -> Self {
        AttentionLstmConfig { deep_output, ..self }
    }
}

impl AttentionLstmConfig {
    /// Unlimited: the LSTM takes any number of positions.
    pub fn max_positions(&self) -> Option<usize> {
        None
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        check_positive(SECTION, "embedding_size", self.embedding_size)?;
        check_positive(SECTION, "hidden_size", self.hidden_size)?;
        check_positive(SECTION, "attention_size", self.attention_size)?;
        check_dropout(SECTION, self.dropout)
    }

    /// Builds the decoder (PyTorch's default initialisation: embeddings `N(0, 1)`, linear
    /// layers `U(-1/√fan_in, 1/√fan_in)`). Panics on an invalid config; use
    /// [`super::DecoderConfig::init`] for a checked build.
    pub fn init<B: Backend>(&self, feature_size: usize, vocab_size: usize, device: &B::Device) -> AttentionLstm<B> {
        if let Err(error) = self.validate() {
            panic!("{error}");
        }
        let (e, h, a, c) = (self.embedding_size, self.hidden_size, self.attention_size, feature_size);
        let linear = |inputs: usize, outputs: usize| LinearConfig::new(inputs, outputs).init(device);
        let deep = self.deep_output.then(|| DeepOutput { hidden: linear(h, e), context: linear(c, e) });
        AttentionLstm {
            embedding: EmbeddingConfig::new(vocab_size, e).init(device),
            init_h: linear(c, h),
            init_c: linear(c, h),
            attention: AdditiveAttention { features: linear(c, a), hidden: linear(h, a), score: linear(a, 1) },
            gate: linear(h, 1),
            cell: LstmCell { input: linear(e + c, 4 * h), hidden: linear(h, 4 * h) },
            deep_output: deep,
            dropout: DropoutConfig::new(self.dropout).init(),
            output: linear(if self.deep_output { e } else { h }, vocab_size),
        }
    }
}

/// `e_i = w · tanh(U a_i + W h) + b`.
#[derive(Module, Debug)]
pub struct AdditiveAttention<B: Backend> {
    /// `U`: features to the attention size (applied once per image, see [`AttentionLstmState`]).
    pub features: Linear<B>,
    /// `W`: hidden state to the attention size.
    pub hidden: Linear<B>,
    /// `w`, `b`: attention size to one score.
    pub score: Linear<B>,
}

/// An LSTM cell with PyTorch's `LSTMCell` layout: `input` holds `weight_ih`/`bias_ih`,
/// `hidden` holds `weight_hh`/`bias_hh`, gates in the order input, forget, cell, output.
#[derive(Module, Debug)]
pub struct LstmCell<B: Backend> {
    pub input: Linear<B>,
    pub hidden: Linear<B>,
}

impl<B: Backend> LstmCell<B> {
    /// One step from the gates `x W_ih + b_ih + h W_hh + b_hh` `[N, 4H]` and the cell state:
    /// returns `(h, c)`.
    pub fn forward(&self, gates: Tensor<B, 2>, c: Tensor<B, 2>) -> (Tensor<B, 2>, Tensor<B, 2>) {
        lstm_update(gates, c)
    }
}

/// The deep output layer's projections of `h_t` and `ẑ_t` to the embedding size.
#[derive(Module, Debug)]
pub struct DeepOutput<B: Backend> {
    pub hidden: Linear<B>,
    pub context: Linear<B>,
}

/// The Show, Attend and Tell decoder (see the module docs).
#[derive(Module, Debug)]
pub struct AttentionLstm<B: Backend> {
    pub embedding: Embedding<B>,
    pub init_h: Linear<B>,
    pub init_c: Linear<B>,
    pub attention: AdditiveAttention<B>,
    /// `f_β`: hidden state to the gate's logit.
    pub gate: Linear<B>,
    pub cell: LstmCell<B>,
    pub deep_output: Option<DeepOutput<B>>,
    pub dropout: Dropout,
    /// `L_o`.
    pub output: Linear<B>,
}

/// The attention LSTM's state for `N` rows.
#[derive(Debug, Clone)]
pub struct AttentionLstmState<B: Backend> {
    /// Hidden state `h` `[N, H]`.
    pub hidden: Tensor<B, 2>,
    /// Cell state `c` `[N, H]`.
    pub cell: Tensor<B, 2>,
    /// The region features `[N, R, C]`.
    pub regions: Tensor<B, 3>,
    /// Their projection `U a_i` `[N, R, A]`, computed once.
    pub projected: Tensor<B, 3>,
}

impl<B: Backend> DecoderState<B> for AttentionLstmState<B> {
    fn select(self, indices: Tensor<B, 1, Int>) -> Self {
        AttentionLstmState {
            hidden: self.hidden.select(0, indices.clone()),
            cell: self.cell.select(0, indices.clone()),
            regions: self.regions.select(0, indices.clone()),
            projected: self.projected.select(0, indices),
        }
    }

    fn rows(&self) -> usize {
        self.hidden.dims()[0]
    }
}

/// The tapes of the layers applied at every step of a teacher-forced pass ([`step_linear`]).
#[derive(Default)]
struct StepTapes {
    query: StepTape,
    input: StepTape,
    hidden: StepTape,
}

/// What one recurrent step computes besides the new state.
struct StepOutput<B: Backend> {
    /// The gated context `ẑ_t` `[N, C]`.
    context: Tensor<B, 2>,
    /// `[N, R]`.
    alpha: Tensor<B, 2>,
}

impl<B: Backend> AttentionLstm<B> {
    /// This decoder with its dropout off (see [`super::Decoder::without_dropout`]).
    pub fn without_dropout(&self) -> Self {
        let mut decoder = self.clone();
        decoder.dropout.prob = 0.0;
        decoder
    }

    /// One recurrent step (attention, gated context, LSTM cell) from embedded inputs `[N, E]`;
    /// `tapes` in a teacher-forced pass.
    fn recurrent_step(
        &self,
        embedded: Tensor<B, 2>,
        state: AttentionLstmState<B>,
        tapes: Option<&StepTapes>,
    ) -> (StepOutput<B>, AttentionLstmState<B>) {
        let AttentionLstmState { hidden, cell, regions, projected } = state;
        let [rows, num_regions, channels] = regions.dims();
        let linear = |layer: &Linear<B>, input: Tensor<B, 2>, tape: fn(&StepTapes) -> &StepTape| match tapes {
            Some(tapes) => step_linear(layer, input, tape(tapes)),
            None => layer.forward(input),
        };

        let query = linear(&self.attention.hidden, hidden.clone(), |t| &t.query); // [N, A]
        let scores = additive_scores(projected.clone(), query, &self.attention.score); // [N, R]
        let alpha = softmax(scores, 1); // [N, R]
        let context = alpha.clone().reshape([rows, 1, num_regions]).matmul(regions.clone()).reshape([rows, channels]);
        let beta = sigmoid(self.gate.forward(hidden.clone())); // [N, 1]
        let context = context * beta; // ẑ_t, broadcast over channels

        let input = Tensor::cat(vec![embedded, context.clone()], 1);
        let gates = linear(&self.cell.input, input, |t| &t.input) + linear(&self.cell.hidden, hidden, |t| &t.hidden);
        let (hidden, cell) = self.cell.forward(gates, cell);
        (StepOutput { context, alpha }, AttentionLstmState { hidden, cell, regions, projected })
    }

    /// The logits `[M, V]` of steps' embedded inputs `[M, E]`, new hidden states `[M, H]` and
    /// contexts `[M, C]` (the contexts are read by the deep output only).
    fn output_logits(&self, embedded: Tensor<B, 2>, hidden: Tensor<B, 2>, context: Option<Tensor<B, 2>>) -> Tensor<B, 2> {
        let out = match (&self.deep_output, context) {
            (Some(deep), Some(context)) => (embedded + deep.hidden.forward(hidden) + deep.context.forward(context)).tanh(),
            _ => hidden,
        };
        self.output.forward(self.dropout.forward(out))
    }
}

impl<B: Backend> CaptionDecoder<B> for AttentionLstm<B> {
    type State = AttentionLstmState<B>;

    fn vocab_size(&self) -> usize {
        self.output.weight.dims()[1]
    }

    fn max_positions(&self) -> Option<usize> {
        None
    }

    /// Teacher forcing. The output layer, which does not feed the recurrence, is computed for
    /// all steps at once, time-major (`[T·B, ...]`, so that one dropout mask over all steps draws
    /// what step-by-step masks would).
    fn forward(&self, features: &EncoderOutput<B>, tokens: Tensor<B, 2, Int>) -> DecoderOutput<B> {
        let [batch, length] = tokens.dims();
        assert!(length > 0, "teacher forcing needs at least one input token");
        let embedded = self.embedding.forward(tokens.swap_dims(0, 1)); // [T, B, E]
        let embedding_size = embedded.dims()[2];
        let embedded = embedded.reshape([length * batch, embedding_size]);
        let mut state = self.init_state(features);
        let tapes = StepTapes::default();
        let mut hiddens = Vec::with_capacity(length);
        let mut contexts = Vec::with_capacity(length);
        let mut alphas = Vec::with_capacity(length);
        for words in embedded.clone().split(batch, 0) {
            let (out, next) = self.recurrent_step(words, state, Some(&tapes));
            state = next;
            hiddens.push(state.hidden.clone());
            if self.deep_output.is_some() {
                contexts.push(out.context);
            }
            alphas.push(out.alpha);
        }
        let contexts = (!contexts.is_empty()).then(|| Tensor::cat(contexts, 0));
        let logits = self.output_logits(embedded, Tensor::cat(hiddens, 0), contexts);
        let vocab = logits.dims()[1];
        let logits = logits.reshape([length, batch, vocab]).swap_dims(0, 1);
        DecoderOutput { logits, alphas: Some(Tensor::stack(alphas, 1)) }
    }

    fn init_state(&self, features: &EncoderOutput<B>) -> Self::State {
        let regions = features.regions.clone();
        let mean: Tensor<B, 2> = regions.clone().mean_dim(1).squeeze_dim(1);
        AttentionLstmState {
            hidden: self.init_h.forward(mean.clone()).tanh(),
            cell: self.init_c.forward(mean),
            projected: self.attention.features.forward(regions.clone()),
            regions,
        }
    }

    fn step(&self, state: Self::State, last_tokens: Tensor<B, 1, Int>) -> (DecoderStep<B>, Self::State) {
        let embedded = self.embedding.forward(last_tokens.unsqueeze_dim::<2>(1)).squeeze_dim::<2>(1);
        let (out, state) = self.recurrent_step(embedded.clone(), state, None);
        let context = self.deep_output.is_some().then_some(out.context);
        let logits = self.output_logits(embedded, state.hidden.clone(), context);
        (DecoderStep { log_probs: log_softmax(logits, 1), attention: Some(out.alpha) }, state)
    }
}

/// The doubly stochastic attention regulariser of Show, Attend and Tell,
/// `λ Σ_i (1 - Σ_t α_ti)²`, which pushes the decoder to look at every region about once over
/// the caption.
///
/// `alphas` are [`DecoderOutput::alphas`] `[B, T, R]`; `mask_pad` `[B, T]` marks the steps to
/// leave out (`true` = padding, burn's convention: the steps whose *target* is padding, i.e.
/// `targets.equal_elem(pad_id)`), `None` to count every step. The sum over regions `i` is taken
/// per caption and then averaged over the batch, so `lambda` does not depend on the batch size
/// (the paper's `λ = 1`; sgrvinod's PyTorch port also averages over regions, which equals this
/// with `λ / R`). Returns a one-element tensor to add to the loss.
pub fn doubly_stochastic_penalty<B: Backend>(alphas: Tensor<B, 3>, mask_pad: Option<Tensor<B, 2, Bool>>, lambda: f64) -> Tensor<B, 1> {
    let [batch, length, regions] = alphas.dims();
    let alphas = match mask_pad {
        Some(mask) => {
            let keep = mask.bool_not().float().reshape([batch, length, 1]);
            alphas * keep
        }
        None => alphas,
    };
    let attention_per_region = alphas.sum_dim(1).reshape([batch, regions]); // Σ_t α_ti
    let deficit = attention_per_region.neg().add_scalar(1.0);
    (deficit.clone() * deficit).sum_dim(1).mean().mul_scalar(lambda)
}
