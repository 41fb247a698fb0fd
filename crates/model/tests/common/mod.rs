//! Tiny models and toy decoders shared by the decoder, decoding and checkpoint tests.
#![allow(dead_code)]

use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::activation::log_softmax;
use caption_model::decoder::{
    AttentionLstmConfig, CaptionDecoder, DecoderConfig, DecoderOutput, DecoderState, DecoderStep, TransformerDecoderConfig,
};
use caption_model::encoder::{EncoderConfig, EncoderKind, EncoderOutput};
use caption_model::{PositionEncoding, SpecialTokens};

pub type B = caption_model::FlexBackend;

pub const VOCAB: usize = 24;
/// Channels of the tiny encoder's features (ResNet-18 layout, width 8: 8 * 8).
pub const FEATURES: usize = 64;
/// Regions per image (2 x 2 grid, as a 64 x 64 image gives).
pub const REGIONS: usize = 4;
pub const TOKENS: SpecialTokens = SpecialTokens { pad: 0, bos: 1, eos: 2 };

pub fn tiny_encoder() -> EncoderConfig {
    EncoderConfig::new(EncoderKind::Resnet18).with_layers(Some([1, 1, 1, 1])).with_width(8)
}

pub fn tiny_lstm() -> AttentionLstmConfig {
    AttentionLstmConfig::new().with_embedding_size(16).with_hidden_size(32).with_attention_size(16).with_dropout(0.2)
}

pub fn tiny_transformer() -> TransformerDecoderConfig {
    TransformerDecoderConfig::new().with_d_model(16).with_num_heads(2).with_num_layers(2).with_d_ff(32).with_max_positions(16)
}

/// The decoders the tests run on: both kinds, in their variants.
pub fn decoder_configs() -> Vec<(&'static str, DecoderConfig)> {
    vec![
        ("attention LSTM", tiny_lstm().into()),
        ("attention LSTM, deep output", tiny_lstm().with_deep_output(true).into()),
        ("transformer, pre-norm, sinusoidal", tiny_transformer().into()),
        (
            "transformer, post-norm, learned positions",
            tiny_transformer().with_norm_first(false).with_positions(PositionEncoding::Learned).into(),
        ),
    ]
}

/// Random features for `images` images, as an encoder would give them (non-negative).
pub fn features<BB: Backend>(images: usize, device: &BB::Device) -> EncoderOutput<BB> {
    let map = Tensor::<BB, 4>::random([images, FEATURES, 2, 2], Distribution::Uniform(0.0, 2.0), device);
    EncoderOutput::from_feature_map(map)
}

/// Rows `rows` of `features`.
pub fn select_images<BB: Backend>(features: &EncoderOutput<BB>, rows: &[usize]) -> EncoderOutput<BB> {
    let device = features.regions.device();
    let indices =
        Tensor::<BB, 1, Int>::from_data(TensorData::new(rows.iter().map(|&r| r as i64).collect::<Vec<_>>(), [rows.len()]), &device);
    EncoderOutput { regions: features.regions.clone().select(0, indices.clone()), pooled: features.pooled.clone().select(0, indices) }
}

pub fn int_tensor<BB: Backend, const D: usize>(values: Vec<i64>, shape: [usize; D], device: &BB::Device) -> Tensor<BB, D, Int> {
    Tensor::from_data(TensorData::new(values, shape), device)
}

pub fn floats<BB: Backend, const D: usize>(tensor: Tensor<BB, D>) -> Vec<f32> {
    tensor.into_data().convert::<f32>().to_vec::<f32>().unwrap()
}

/// A decoder that can never end a caption: `inner`'s log-probabilities with `<eos>` removed
/// (probability 0) and the rest renormalised.
pub struct NeverEos<D> {
    pub inner: D,
    pub eos: u32,
}

impl<BB: Backend, D: CaptionDecoder<BB>> CaptionDecoder<BB> for NeverEos<D> {
    type State = D::State;

    fn vocab_size(&self) -> usize {
        self.inner.vocab_size()
    }
    fn max_positions(&self) -> Option<usize> {
        self.inner.max_positions()
    }
    fn forward(&self, features: &EncoderOutput<BB>, tokens: Tensor<BB, 2, Int>) -> DecoderOutput<BB> {
        self.inner.forward(features, tokens)
    }
    fn init_state(&self, features: &EncoderOutput<BB>) -> Self::State {
        self.inner.init_state(features)
    }
    fn step(&self, state: Self::State, last_tokens: Tensor<BB, 1, Int>) -> (DecoderStep<BB>, Self::State) {
        let (step, state) = self.inner.step(state, last_tokens);
        let log_probs = step.log_probs;
        let [rows, vocab] = log_probs.dims();
        let mut mask = vec![0f32; rows * vocab];
        for row in 0..rows {
            mask[row * vocab + self.eos as usize] = f32::NEG_INFINITY;
        }
        let mask = Tensor::<BB, 2>::from_data(TensorData::new(mask, [rows, vocab]), &log_probs.device());
        (DecoderStep { log_probs: log_softmax(log_probs + mask, 1), attention: step.attention }, state)
    }
}

/// A first-order Markov "decoder" with a fixed table: the next token's log-probabilities
/// depend only on the last token (`table[last]`), whatever the image. Lets tests build exact
/// situations for beam search.
pub struct Markov<BB: Backend> {
    /// `[V, V]` log-probabilities.
    pub table: Tensor<BB, 2>,
}

#[derive(Debug, Clone)]
pub struct MarkovState<BB: Backend> {
    /// `[N, 1]`, only there to be selected like a real state.
    pub rows: Tensor<BB, 2>,
}

impl<BB: Backend> DecoderState<BB> for MarkovState<BB> {
    fn select(self, indices: Tensor<BB, 1, Int>) -> Self {
        MarkovState { rows: self.rows.select(0, indices) }
    }
    fn rows(&self) -> usize {
        self.rows.dims()[0]
    }
}

impl<BB: Backend> Markov<BB> {
    /// From probabilities `probs[last][next]` (rows are normalised here; zeros are impossible).
    pub fn new(probs: &[Vec<f32>], device: &BB::Device) -> Self {
        let vocab = probs.len();
        let mut values = Vec::with_capacity(vocab * vocab);
        for row in probs {
            assert_eq!(row.len(), vocab);
            let total: f32 = row.iter().sum();
            values.extend(row.iter().map(|p| (p / total).ln()));
        }
        Markov { table: Tensor::from_data(TensorData::new(values, [vocab, vocab]), device) }
    }
}

impl<BB: Backend> CaptionDecoder<BB> for Markov<BB> {
    type State = MarkovState<BB>;

    fn vocab_size(&self) -> usize {
        self.table.dims()[0]
    }
    fn max_positions(&self) -> Option<usize> {
        None
    }
    fn forward(&self, _features: &EncoderOutput<BB>, tokens: Tensor<BB, 2, Int>) -> DecoderOutput<BB> {
        let [batch, length] = tokens.dims();
        let logits = self.table.clone().select(0, tokens.reshape([batch * length])).reshape([batch, length, self.vocab_size()]);
        DecoderOutput { logits, alphas: None }
    }
    fn init_state(&self, features: &EncoderOutput<BB>) -> Self::State {
        MarkovState { rows: features.pooled.clone().narrow(1, 0, 1) }
    }
    fn step(&self, state: Self::State, last_tokens: Tensor<BB, 1, Int>) -> (DecoderStep<BB>, Self::State) {
        (DecoderStep { log_probs: self.table.clone().select(0, last_tokens), attention: None }, state)
    }
}
