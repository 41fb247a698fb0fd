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

use super::{CaptionDecoder, ConfigError, DecoderOutput, DecoderState, DecoderStep, check_dropout, check_positive};
use crate::device::is_flex;
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
    /// One step: returns `(h, c)`.
    pub fn forward(&self, x: Tensor<B, 2>, h: Tensor<B, 2>, c: Tensor<B, 2>) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let gates = self.input.forward(x) + self.hidden.forward(h);
        let mut chunks = gates.chunk(4, 1).into_iter();
        let mut next = || chunks.next().expect("four gates");
        let (i, f, g, o) = (sigmoid(next()), sigmoid(next()), next().tanh(), sigmoid(next()));
        let c = f * c + i * g;
        let h = o * c.clone().tanh();
        (h, c)
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

/// What one step computes besides the new state.
struct StepOutput<B: Backend> {
    logits: Tensor<B, 2>,
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

    /// One step from embedded inputs `[N, E]`.
    fn step_embedded(&self, embedded: Tensor<B, 2>, state: AttentionLstmState<B>) -> (StepOutput<B>, AttentionLstmState<B>) {
        let AttentionLstmState { hidden, cell, regions, projected } = state;
        let [rows, num_regions, channels] = regions.dims();

        let query: Tensor<B, 3> = self.attention.hidden.forward(hidden.clone()).unsqueeze_dim(1); // [N, 1, A]
        let scores = self.attention.score.forward(attention_hidden(projected.clone(), query)); // [N, R, 1]
        let alpha = softmax(scores.reshape([rows, num_regions]), 1); // [N, R]
        let context = alpha.clone().reshape([rows, 1, num_regions]).matmul(regions.clone()).reshape([rows, channels]);
        let beta = sigmoid(self.gate.forward(hidden.clone())); // [N, 1]
        let context = context * beta; // ẑ_t, broadcast over channels

        let input = Tensor::cat(vec![embedded.clone(), context.clone()], 1);
        let (hidden, cell) = self.cell.forward(input, hidden, cell);

        let out = match &self.deep_output {
            Some(deep) => (embedded + deep.hidden.forward(hidden.clone()) + deep.context.forward(context)).tanh(),
            None => hidden.clone(),
        };
        let logits = self.output.forward(self.dropout.forward(out));
        (StepOutput { logits, alpha }, AttentionLstmState { hidden, cell, regions, projected })
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

    fn forward(&self, features: &EncoderOutput<B>, tokens: Tensor<B, 2, Int>) -> DecoderOutput<B> {
        let [batch, length] = tokens.dims();
        assert!(length > 0, "teacher forcing needs at least one input token");
        let embedded = self.embedding.forward(tokens); // [B, T, E]
        let mut state = self.init_state(features);
        let mut logits = Vec::with_capacity(length);
        let mut alphas = Vec::with_capacity(length);
        for t in 0..length {
            let input = embedded.clone().narrow(1, t, 1).squeeze_dim::<2>(1);
            let (out, next) = self.step_embedded(input, state);
            state = next;
            logits.push(out.logits.unsqueeze_dim::<3>(1));
            alphas.push(out.alpha.unsqueeze_dim::<3>(1));
        }
        let logits = Tensor::cat(logits, 1);
        let alphas = Tensor::cat(alphas, 1);
        debug_assert_eq!(logits.dims()[..2], [batch, length]);
        DecoderOutput { logits, alphas: Some(alphas) }
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
        let (out, state) = self.step_embedded(embedded, state);
        (DecoderStep { log_probs: log_softmax(out.logits, 1), attention: Some(out.alpha) }, state)
    }
}

/// The attention's hidden layer `tanh(U a_i + W h)` `[N, R, A]` from the projected regions
/// `[N, R, A]` and the projected hidden state `[N, 1, A]`: the largest activation of a step
/// (R = 49 regions: 49 times the LSTM's). Profiled on the CPU backend (perf, docs/benchmarks.md),
/// two burn-flex paths took 40% of a Flickr8k training step: `tanh` is libm's scalar `tanhf` on
/// one thread (30%), and a broadcast over the middle dimension falls back to a per-element
/// strided iterator (8%). So on the CPU backend the hidden state is repeated over the regions
/// first (a block copy; then the sum is a plain contiguous add) and `tanh(x) = 2 σ(2x) - 1`
/// (burn-flex's `sigmoid` is one `expf` and a division; absolute error below 2.5e-7, gradient
/// through `sigmoid`'s). Other backends (CUDA: fewer kernel launches) keep the direct form.
fn attention_hidden<B: Backend>(projected: Tensor<B, 3>, query: Tensor<B, 3>) -> Tensor<B, 3> {
    if is_flex::<B>() {
        let regions = projected.dims()[1];
        let x = projected + query.repeat_dim(1, regions);
        sigmoid(x.mul_scalar(2.0)).mul_scalar(2.0).sub_scalar(1.0)
    } else {
        (projected + query).tanh()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FlexBackend;
    use burn::backend::Autodiff;

    #[test]
    fn the_cpu_attention_hidden_layer_is_tanh_of_the_sum_with_its_gradients() {
        type AD = Autodiff<FlexBackend>;
        assert!(is_flex::<FlexBackend>() && is_flex::<AD>());
        let device = Default::default();
        // Zero, tiny, ordinary, saturated and extreme pre-activations (no NaN at ±100), over
        // two rows of three regions and three attention units.
        let regions: Vec<f32> =
            vec![0.0, 1e-6, -3e-4, 0.1, -0.5, 0.9, 1.7, -2.3, 4.0, -9.0, 20.0, -100.0, 100.0, 0.03, -0.07, 3.3, -1.1, 0.6];
        let hidden: Vec<f32> = vec![0.0, -0.2, 0.05, 1.5, 0.0, -40.0];
        let leaves = || {
            (
                Tensor::<AD, 3>::from_data(TensorData::new(regions.clone(), [2, 3, 3]), &device).require_grad(),
                Tensor::<AD, 3>::from_data(TensorData::new(hidden.clone(), [2, 1, 3]), &device).require_grad(),
            )
        };
        let (projected, query) = leaves();
        let (reference_projected, reference_query) = leaves();
        let got = attention_hidden(projected.clone(), query.clone());
        let want = (reference_projected.clone() + reference_query.clone()).tanh();
        let close = |a: &Tensor<AD, 3>, b: &Tensor<AD, 3>, tolerance: f32, what: &str| {
            let (a, b) = (a.to_data().to_vec::<f32>().unwrap(), b.to_data().to_vec::<f32>().unwrap());
            assert_eq!(a.len(), b.len());
            for (i, (x, y)) in a.iter().zip(&b).enumerate() {
                assert!((x - y).abs() <= tolerance, "{what} [{i}]: {x} vs {y}");
            }
        };
        close(&got, &want, 2.5e-7, "tanh");
        // The same weighted sum through both: the gradients reach both inputs (the hidden
        // state's summed over the regions) as tanh's do.
        let weights =
            Tensor::<AD, 3>::from_data(TensorData::new((0..18).map(|i| i as f32 / 7.0 - 1.0).collect::<Vec<_>>(), [2, 3, 3]), &device);
        let grads = (got * weights.clone()).sum().backward();
        let reference_grads = (want * weights).sum().backward();
        let grad = |t: &Tensor<AD, 3>, g: &<AD as burn::tensor::backend::AutodiffBackend>::Gradients| {
            Tensor::<AD, 3>::from_inner(t.grad(g).unwrap())
        };
        close(&grad(&projected, &grads), &grad(&reference_projected, &reference_grads), 1e-6, "d/d projected");
        close(&grad(&query, &grads), &grad(&reference_query, &reference_grads), 1e-6, "d/d query");
    }
}
