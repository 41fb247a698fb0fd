//! The captioner: an image encoder and a caption decoder, built from one serialisable
//! [`CaptionerConfig`] (the `config.json` of a checkpoint, see [`crate::checkpoint`]).

use burn::prelude::*;
use caption_data::TextEncoder;
use serde::{Deserialize, Serialize};

use crate::decoder::{CaptionDecoder, ConfigError, Decoder, DecoderConfig, DecoderOutput};
use crate::decoding::Constraints;
use crate::encoder::{Encoder, EncoderConfig, EncoderOutput};

const SECTION: &str = "captioner";

/// The token ids decoding needs. Word vocabularies use `<pad>` 0, `<bos>` 1, `<eos>` 2 (the
/// default); a subword tokenizer may number them otherwise, so they are stored with the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SpecialTokens {
    pub pad: u32,
    pub bos: u32,
    pub eos: u32,
}

impl Default for SpecialTokens {
    fn default() -> Self {
        SpecialTokens { pad: 0, bos: 1, eos: 2 }
    }
}

impl SpecialTokens {
    pub fn of(text: &TextEncoder) -> Self {
        SpecialTokens { pad: text.pad_id(), bos: text.bos_id(), eos: text.eos_id() }
    }
}

/// Everything needed to rebuild a captioner without any training config.
///
/// Serialises to JSON with every field present:
/// `{"encoder": {...}, "decoder": {"kind": "transformer", ...}, "vocab_size": 2004,
/// "max_length": 16, "tokens": {"pad": 0, "bos": 1, "eos": 2}}`.
#[derive(Config, Debug, PartialEq)]
pub struct CaptionerConfig {
    pub encoder: EncoderConfig,
    pub decoder: DecoderConfig,
    /// Size `V` of the vocabulary the decoder predicts over ([`TextEncoder::vocab_size`]).
    pub vocab_size: usize,
    /// Longest caption in words, without `<bos>`/`<eos>` (the vocabulary's `max_length`):
    /// decoding stops a caption there (see [`crate::decoding`]).
    #[config(default = 16)]
    pub max_length: usize,
    #[config(default = "SpecialTokens::default()")]
    pub tokens: SpecialTokens,
}

impl CaptionerConfig {
    /// A config whose vocabulary size, maximum length and special tokens are `text`'s.
    pub fn for_text_encoder(encoder: EncoderConfig, decoder: impl Into<DecoderConfig>, text: &TextEncoder) -> Self {
        CaptionerConfig::new(encoder, decoder.into(), text.vocab_size())
            .with_max_length(text.max_length())
            .with_tokens(SpecialTokens::of(text))
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.encoder.validate()?;
        self.decoder.validate()?;
        if self.max_length == 0 {
            return Err(ConfigError::invalid(SECTION, "max_length", "must be at least 1"));
        }
        let SpecialTokens { pad, bos, eos } = self.tokens;
        let largest = pad.max(bos).max(eos) as usize;
        if self.vocab_size <= largest {
            return Err(ConfigError::invalid(
                SECTION,
                "vocab_size",
                format!("is {}, but the special tokens use id {largest}; it must include them", self.vocab_size),
            ));
        }
        if bos == eos {
            return Err(ConfigError::invalid(SECTION, "tokens", format!("has <bos> and <eos> both {bos}; they must differ")));
        }
        if let Some(positions) = self.decoder.max_positions()
            && positions < self.max_length + 1
        {
            return Err(ConfigError::invalid(
                SECTION,
                "decoder.max_positions",
                format!(
                    "is {positions}; captions of `max_length` = {} words need {} positions (<bos> and the words)",
                    self.max_length,
                    self.max_length + 1
                ),
            ));
        }
        Ok(())
    }

    /// Checks that `text` is the vocabulary this model predicts over.
    pub fn check_text_encoder(&self, text: &TextEncoder) -> Result<(), String> {
        if text.vocab_size() != self.vocab_size {
            return Err(format!("the vocabulary has {} tokens, the model predicts {}", text.vocab_size(), self.vocab_size));
        }
        let tokens = SpecialTokens::of(text);
        if tokens != self.tokens {
            return Err(format!("the vocabulary's special tokens are {tokens:?}, the model's {:?}", self.tokens));
        }
        Ok(())
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a captioner config serialises")
    }

    pub fn from_json(json: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(json)
    }

    /// Builds the captioner with fresh weights (encoder: torchvision's initialisation, to be
    /// replaced by [`crate::weights::load_encoder_weights`] or a checkpoint). The encoder's
    /// frozen stages ([`EncoderConfig::finetune`]) are marked with `no_grad`.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<Captioner<B>, ConfigError> {
        self.validate()?;
        let encoder = self.encoder.init(device)?.apply_finetune(self.encoder.finetune);
        let decoder = self.decoder.init(self.encoder.out_channels(), self.vocab_size, device)?;
        Ok(Captioner { encoder, decoder, config: self.clone() })
    }
}

/// An encoder and a decoder (see the module docs).
#[derive(Module, Debug)]
pub struct Captioner<B: Backend> {
    pub encoder: Encoder<B>,
    pub decoder: Decoder<B>,
    /// What it was built from (not a parameter).
    pub config: CaptionerConfig,
}

impl<B: Backend> Captioner<B> {
    pub fn config(&self) -> &CaptionerConfig {
        &self.config
    }

    /// Encodes ImageNet-normalised images `[B, 3, H, W]`.
    pub fn encode(&self, images: Tensor<B, 4>) -> EncoderOutput<B> {
        self.encoder.forward(images)
    }

    /// Teacher forcing: `tokens` `[B, T]` are `<bos>` and the caption, right-padded; see
    /// [`CaptionDecoder::forward`].
    pub fn forward(&self, images: Tensor<B, 4>, tokens: Tensor<B, 2, Int>) -> DecoderOutput<B> {
        let features = self.encode(images);
        self.decoder.forward(&features, tokens)
    }

    /// What decoding obeys for this model: its special tokens and longest caption.
    pub fn constraints(&self) -> Constraints<'static> {
        Constraints::new(self.config.tokens, self.config.max_length)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decoder::{AttentionLstmConfig, TransformerDecoderConfig};
    use crate::encoder::EncoderKind;

    fn tiny_encoder() -> EncoderConfig {
        EncoderConfig::new(EncoderKind::Resnet18).with_layers(Some([1, 1, 1, 1])).with_width(8)
    }

    #[test]
    fn config_round_trips_through_json() {
        for decoder in [
            DecoderConfig::from(AttentionLstmConfig::new().with_deep_output(true)),
            DecoderConfig::from(TransformerDecoderConfig::new().with_num_layers(2)),
        ] {
            let config = CaptionerConfig::new(tiny_encoder(), decoder, 40).with_max_length(12);
            let json = config.to_json();
            assert!(json.contains("\"kind\""), "{json}");
            assert_eq!(CaptionerConfig::from_json(&json).unwrap(), config);
        }
    }

    #[test]
    fn validation_names_the_setting() {
        let transformer = TransformerDecoderConfig::new().with_max_positions(10);
        let config = CaptionerConfig::new(tiny_encoder(), transformer.into(), 40).with_max_length(16);
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("max_positions") && err.contains("17"), "{err}");

        let config = CaptionerConfig::new(tiny_encoder(), AttentionLstmConfig::new().into(), 2);
        assert!(config.validate().unwrap_err().to_string().contains("vocab_size"));

        let bad = TransformerDecoderConfig::new().with_d_model(30).with_num_heads(4);
        let err = DecoderConfig::from(bad).validate().unwrap_err().to_string();
        assert!(err.contains("num_heads") && err.contains("does not divide"), "{err}");

        let bad = AttentionLstmConfig::new().with_dropout(1.0);
        assert!(DecoderConfig::from(bad).validate().unwrap_err().to_string().contains("dropout"));
    }
}
