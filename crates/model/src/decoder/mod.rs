//! Caption decoders: given an image's encoder features, predict the caption one token at a time.
//!
//! Every decoder implements [`CaptionDecoder`], the interface the trainer and the server use:
//!
//! - **teacher forcing** ([`CaptionDecoder::forward`]): the whole input sequence at once
//!   (`<bos> w1 .. wn`, padded at the end), giving logits `[B, T, V]` where position `t`
//!   predicts token `t + 1` (`w1 .. wn <eos>`), plus auxiliary outputs ([`DecoderOutput`]);
//! - **incremental decoding** ([`CaptionDecoder::init_state`], [`CaptionDecoder::step`]): one
//!   token per row and step, giving log-probabilities `[N, V]` and the next state. States can be
//!   reordered or repeated row-wise ([`DecoderState::select`]), which is how beam search keeps
//!   every image's beams in one batch.
//!
//! Padding must be at the end of a sequence (right padding): every decoder here is causal, so a
//! position never sees the positions after it and trailing padding cannot change the logits of
//! the tokens before it; the logits *at* padded positions are meaningless and must be masked out
//! of the loss (and, for the attention LSTM, out of [`doubly_stochastic_penalty`]).
//!
//! Decoders: [`attention_lstm`] (Show, Attend and Tell) and [`transformer`]. [`Decoder`] is the
//! enum over both that a [`crate::Captioner`] holds; [`DecoderConfig`] is its serialisable
//! description. Decoders are built from their config plus two sizes that belong to the whole
//! captioner: the feature channels `C` of the encoder and the vocabulary size `V`.

// The decoders differ in size; `Decoder` and its record hold one, boxing would buy nothing.
#![allow(clippy::large_enum_variant)]

pub mod additive_scores;
pub mod attention_lstm;
pub mod lstm_update;
pub mod step_linear;
pub mod transformer;

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::encoder::{EncoderError, EncoderOutput};

pub use attention_lstm::{AttentionLstm, AttentionLstmConfig, AttentionLstmState, doubly_stochastic_penalty};
pub use transformer::{PositionEncoding, TransformerDecoder, TransformerDecoderConfig, TransformerState};

/// An invalid model configuration: which setting, and what is wrong with it.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("invalid {section} config: `{field}` {message}")]
    Invalid { section: &'static str, field: &'static str, message: String },
    #[error(transparent)]
    Encoder(#[from] EncoderError),
}

impl ConfigError {
    pub(crate) fn invalid(section: &'static str, field: &'static str, message: impl Into<String>) -> Self {
        ConfigError::Invalid { section, field, message: message.into() }
    }
}

/// Checks that a dropout probability lies in `[0, 1)`.
pub(crate) fn check_dropout(section: &'static str, value: f64) -> Result<(), ConfigError> {
    if (0.0..1.0).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::invalid(section, "dropout", format!("is {value}; it must be in [0, 1)")))
    }
}

/// Checks that a size is positive.
pub(crate) fn check_positive(section: &'static str, field: &'static str, value: usize) -> Result<(), ConfigError> {
    if value > 0 { Ok(()) } else { Err(ConfigError::invalid(section, field, "must be positive")) }
}

/// What teacher forcing gives the trainer.
#[derive(Debug, Clone)]
pub struct DecoderOutput<B: Backend> {
    /// Unnormalised scores `[B, T, V]`; position `t` predicts input token `t + 1`.
    pub logits: Tensor<B, 3>,
    /// Attention LSTM only: the soft-attention weights `alpha` `[B, T, R]` over the `R` image
    /// regions at each step (each row sums to 1), for [`doubly_stochastic_penalty`] and for
    /// visualisation. `None` for the transformer, whose multi-head cross-attention is not the
    /// quantity that regulariser is defined on.
    pub alphas: Option<Tensor<B, 3>>,
}

/// A decoder's incremental state for `N` rows (sequences being decoded).
pub trait DecoderState<B: Backend>: Clone + Sized {
    /// The state whose row `i` is this state's row `indices[i]` (indices may repeat and skip
    /// rows): repeats each image's state for its beams, reorders beams after a step, and drops
    /// finished rows.
    fn select(self, indices: Tensor<B, 1, Int>) -> Self;

    /// Number of rows `N`.
    fn rows(&self) -> usize;
}

/// The interface of a caption decoder (see the module docs).
pub trait CaptionDecoder<B: Backend> {
    type State: DecoderState<B>;

    /// Size `V` of the output vocabulary.
    fn vocab_size(&self) -> usize;

    /// Most input positions (tokens fed, `<bos>` included) one sequence can have, if limited.
    /// Decoding `n` tokens feeds `n` inputs; teacher forcing a caption of `n` words feeds
    /// `n + 1` (`<bos>` and the words).
    fn max_positions(&self) -> Option<usize>;

    /// Teacher forcing: `tokens` `[B, T]` are the inputs (`<bos>` first, right-padded).
    fn forward(&self, features: &EncoderOutput<B>, tokens: Tensor<B, 2, Int>) -> DecoderOutput<B>;

    /// The state before the first step, one row per image of `features`.
    fn init_state(&self, features: &EncoderOutput<B>) -> Self::State;

    /// Feeds one token per row (`<bos>` at the first step) and returns the log-probabilities
    /// of the next token (a `log_softmax` of the logits `forward` computes for the same prefix)
    /// with the step's attention, and the state after it.
    fn step(&self, state: Self::State, last_tokens: Tensor<B, 1, Int>) -> (DecoderStep<B>, Self::State);
}

/// What one incremental step gives for `N` rows.
#[derive(Debug, Clone)]
pub struct DecoderStep<B: Backend> {
    /// `[N, V]`: log-probabilities of the next token.
    pub log_probs: Tensor<B, 2>,
    /// `[N, R]`: where the step looked, over the encoder's `R` regions (each row sums to 1): the
    /// attention LSTM's weights α; the transformer's last-layer cross-attention averaged over
    /// heads. `None` for decoders without attention over regions.
    pub attention: Option<Tensor<B, 2>>,
}

/// The decoders, each registered once: its variant, its `kind` in configs, and its module's
/// config, decoder and state types. From the list come [`DecoderConfig`], [`Decoder`] and
/// [`AnyDecoderState`] with their dispatch. A decoder's config provides `validate`,
/// `max_positions` and `init`; its decoder implements [`CaptionDecoder`] and `without_dropout`.
macro_rules! decoders {
    ($($variant:ident($kind:literal): $config:ident => $decoder:ident, $state:ident;)+) => {
        /// Which decoder a captioner has, with its hyper-parameters. Serialised with a `kind`
        /// tag: `{"kind": "attention_lstm", "embedding_size": 512, ...}`; in YAML the same, any
        /// field left out taking its default.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "kind")]
        pub enum DecoderConfig {
            $(#[serde(rename = $kind)] $variant($config),)+
        }

        impl DecoderConfig {
            pub fn validate(&self) -> Result<(), ConfigError> {
                match self { $(DecoderConfig::$variant(config) => config.validate(),)+ }
            }

            /// The kind's name as written in configs (`attention_lstm`, `transformer`).
            pub fn kind_name(&self) -> &'static str {
                match self { $(DecoderConfig::$variant(_) => $kind,)+ }
            }

            /// See [`CaptionDecoder::max_positions`].
            pub fn max_positions(&self) -> Option<usize> {
                match self { $(DecoderConfig::$variant(config) => config.max_positions(),)+ }
            }

            /// Builds the decoder for encoder features of `feature_size` channels and a
            /// vocabulary of `vocab_size` tokens, after validating the config.
            pub fn init<B: Backend>(&self, feature_size: usize, vocab_size: usize, device: &B::Device) -> Result<Decoder<B>, ConfigError> {
                self.validate()?;
                check_positive("decoder", "feature_size", feature_size)?;
                check_positive("decoder", "vocab_size", vocab_size)?;
                Ok(match self { $(DecoderConfig::$variant(config) => Decoder::$variant(config.init(feature_size, vocab_size, device)),)+ })
            }
        }

        $(impl From<$config> for DecoderConfig {
            fn from(config: $config) -> Self {
                DecoderConfig::$variant(config)
            }
        })+

        /// One of the decoders, built by [`DecoderConfig::init`].
        #[derive(Module, Debug)]
        pub enum Decoder<B: Backend> {
            $($variant($decoder<B>),)+
        }

        /// The incremental state of a [`Decoder`].
        #[derive(Debug, Clone)]
        pub enum AnyDecoderState<B: Backend> {
            $($variant($state<B>),)+
        }

        impl<B: Backend> DecoderState<B> for AnyDecoderState<B> {
            fn select(self, indices: Tensor<B, 1, Int>) -> Self {
                match self { $(AnyDecoderState::$variant(state) => AnyDecoderState::$variant(state.select(indices)),)+ }
            }

            fn rows(&self) -> usize {
                match self { $(AnyDecoderState::$variant(state) => state.rows(),)+ }
            }
        }

        impl<B: Backend> Decoder<B> {
            /// The same decoder, sharing its parameters (gradients still reach them), with every
            /// dropout off. Under autodiff burn always applies dropout; a pass that must score
            /// exactly the policy that drew a sample (the self-critical loss) runs on this copy.
            pub fn without_dropout(&self) -> Self {
                match self { $(Decoder::$variant(decoder) => Decoder::$variant(decoder.without_dropout()),)+ }
            }
        }

        impl<B: Backend> CaptionDecoder<B> for Decoder<B> {
            type State = AnyDecoderState<B>;

            fn vocab_size(&self) -> usize {
                match self { $(Decoder::$variant(decoder) => decoder.vocab_size(),)+ }
            }

            fn max_positions(&self) -> Option<usize> {
                match self { $(Decoder::$variant(decoder) => decoder.max_positions(),)+ }
            }

            fn forward(&self, features: &EncoderOutput<B>, tokens: Tensor<B, 2, Int>) -> DecoderOutput<B> {
                match self { $(Decoder::$variant(decoder) => decoder.forward(features, tokens),)+ }
            }

            fn init_state(&self, features: &EncoderOutput<B>) -> Self::State {
                match self { $(Decoder::$variant(decoder) => AnyDecoderState::$variant(decoder.init_state(features)),)+ }
            }

            fn step(&self, state: Self::State, last_tokens: Tensor<B, 1, Int>) -> (DecoderStep<B>, Self::State) {
                match (self, state) {
                    $((Decoder::$variant(decoder), AnyDecoderState::$variant(state)) => {
                        let (step, state) = decoder.step(state, last_tokens);
                        (step, AnyDecoderState::$variant(state))
                    })+
                    #[allow(unreachable_patterns)]
                    _ => panic!("a decoder was given the state of another kind of decoder"),
                }
            }
        }
    };
}

decoders! {
    AttentionLstm("attention_lstm"): AttentionLstmConfig => AttentionLstm, AttentionLstmState;
    Transformer("transformer"): TransformerDecoderConfig => TransformerDecoder, TransformerState;
}

impl Default for DecoderConfig {
    /// The attention LSTM with its defaults.
    fn default() -> Self {
        AttentionLstmConfig::default().into()
    }
}
