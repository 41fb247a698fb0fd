//! The one path from images to captions: a model, its vocabulary, how its images are prepared and
//! how it decodes by default, usually read from a checkpoint. `caption caption`, `caption eval`,
//! validation and testing in training, the promotion gate and the server all caption through a
//! [`CaptionPipeline`], so that one checkpoint with one [`DecodingConfig`] writes the same
//! captions everywhere.

use burn::prelude::*;
use caption_data::TextEncoder;
use caption_data::attention_figure::{AttendedWord, attention_figure};
use caption_data::image::{ImageConfig, RgbImage};
use serde::{Deserialize, Serialize};

use crate::captioner::Captioner;
use crate::checkpoint::Checkpoint;
use crate::decoding::{self, Constraints, DecodeError, DecodeStrategy, Hypothesis, TokenProbability};
use crate::decoding_config::DecodingConfig;
use crate::encoder::EncoderOutput;

/// One caption of an image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Caption {
    pub text: String,
    /// exp(mean log-probability of the caption's tokens, `<eos>` included when emitted), in (0, 1].
    pub confidence: f64,
    /// Whether the caption ended with `<eos>` rather than at the maximum length.
    pub finished: bool,
    /// Each scored token (the words, then `<eos>` when emitted) and its probability.
    pub tokens: Vec<TokenProbability>,
    /// With [`DecodingConfig::attention`], for decoders that have it: where each scored token
    /// looked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention: Option<Attention>,
}

impl Caption {
    /// Show, Attend and Tell's figure of this caption over `image` (prepared as `preprocess`
    /// says, as the model saw it), when the caption has attention.
    pub fn attention_figure(&self, image: &RgbImage, preprocess: &ImageConfig) -> Option<RgbImage> {
        let attention = self.attention.as_ref()?;
        let words: Vec<AttendedWord> = self
            .tokens
            .iter()
            .zip(&attention.weights)
            .map(|(token, weights)| AttendedWord { text: &token.text, probability: token.probability, weights })
            .collect();
        Some(attention_figure(image, preprocess, (attention.rows, attention.columns), &words))
    }
}

/// Each scored token's attention over the encoder's grid of `rows x columns` regions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attention {
    pub rows: usize,
    pub columns: usize,
    /// Per scored token (as [`Caption::tokens`]): `rows x columns` weights, row-major, summing
    /// to 1.
    pub weights: Vec<Vec<f32>>,
}

impl Attention {
    /// The grid of `weights` whose rows have `regions` weights: square, as the model's square
    /// inputs give it (a single row otherwise).
    fn new(weights: Vec<Vec<f32>>) -> Option<Attention> {
        let regions = weights.first()?.len();
        let side = (regions as f64).sqrt().round() as usize;
        let (rows, columns) = if side * side == regions { (side, side) } else { (1, regions) };
        Some(Attention { rows, columns, weights })
    }
}

/// A model ready to caption (see the module docs). Decode with an inference model (loaded from a
/// checkpoint, or `model.valid()` in training), so that dropout is off.
#[derive(Debug)]
pub struct CaptionPipeline<B: Backend> {
    pub model: Captioner<B>,
    pub text: TextEncoder,
    /// How images are prepared for the model (as in its training).
    pub preprocess: ImageConfig,
    /// The decoding of calls that change nothing.
    pub decoding: DecodingConfig,
    /// `text`'s ids of the bad endings, for [`DecodingConfig::block_bad_endings`].
    bad_endings: Vec<u32>,
    device: B::Device,
}

impl<B: Backend> CaptionPipeline<B> {
    pub fn new(model: Captioner<B>, text: TextEncoder, preprocess: ImageConfig, decoding: DecodingConfig, device: &B::Device) -> Self {
        let bad_endings = decoding::bad_ending_ids(&text);
        CaptionPipeline { model, text, preprocess, decoding, bad_endings, device: device.clone() }
    }

    /// A checkpoint's pipeline: its recorded preprocessing and decoding, or, for checkpoints
    /// that predate them, training's default preprocessing and beam search of 3.
    pub fn from_checkpoint(checkpoint: Checkpoint<B>, device: &B::Device) -> Self {
        let Checkpoint { model, text, meta } = checkpoint;
        CaptionPipeline::new(model, text, meta.preprocess.unwrap_or_default(), meta.decoding.unwrap_or_default(), device)
    }

    /// The device the model runs on.
    pub fn device(&self) -> &B::Device {
        &self.device
    }

    /// An image file's bytes as the model's input (`name` is for error messages).
    pub fn prepare_image(&self, bytes: &[u8], name: &str) -> Result<Vec<f32>, caption_data::DataError> {
        caption_data::image::prepare_bytes(bytes, name, self.preprocess.max_pixels, &self.preprocess)
    }

    /// Captions prepared images (`n x 3 x size x size`, concatenated), one list per image.
    pub fn caption_images(&self, pixels: Vec<f32>, decoding: &DecodingConfig) -> Result<Vec<Vec<Caption>>, DecodeError> {
        let size = self.preprocess.size as usize;
        let image_len = 3 * size * size;
        if !pixels.len().is_multiple_of(image_len) {
            return Err(DecodeError::Invalid(format!("{} values are not whole 3x{size}x{size} images", pixels.len())));
        }
        let count = pixels.len() / image_len;
        let images = Tensor::<B, 4>::from_data(TensorData::new(pixels, [count, 3, size, size]), &self.device);
        self.caption_features(&self.model.encode(images), decoding)
    }

    /// Captions images from their encoder features (a feature cache's, say).
    pub fn caption_features(&self, features: &EncoderOutput<B>, decoding: &DecodingConfig) -> Result<Vec<Vec<Caption>>, DecodeError> {
        let hypotheses = self.hypotheses(features, decoding)?;
        let sampled = matches!(decoding.strategy, DecodeStrategy::Sample(_));
        Ok(hypotheses
            .into_iter()
            .map(|list| {
                let mut captions: Vec<Caption> = list.iter().map(|h| self.caption(h)).collect();
                // Draws come in drawing order; captions are listed best first.
                if sampled {
                    captions.sort_by(|a, b| b.confidence.total_cmp(&a.confidence));
                }
                captions
            })
            .collect())
    }

    /// The decoder's hypotheses under `decoding`, one list per image.
    pub fn hypotheses(&self, features: &EncoderOutput<B>, decoding: &DecodingConfig) -> Result<Vec<Vec<Hypothesis>>, DecodeError> {
        decoding.validate()?;
        let model_max = self.model.config().max_length;
        let max_length = decoding.max_length.unwrap_or(model_max);
        if max_length > model_max {
            return Err(DecodeError::Invalid(format!("`max_length` is {max_length}; this model writes at most {model_max} words")));
        }
        let no_eos_after: &[u32] = if decoding.block_bad_endings { &self.bad_endings } else { &[] };
        let constraints =
            Constraints::new(self.model.config().tokens, max_length).with_no_eos_after(no_eos_after).with_attention(decoding.attention);
        decoding::decode(&self.model.decoder, features, &constraints, &decoding.strategy)
    }

    fn caption(&self, hypothesis: &Hypothesis) -> Caption {
        Caption {
            text: self.text.decode(&hypothesis.tokens),
            confidence: hypothesis.confidence(),
            finished: hypothesis.finished,
            tokens: hypothesis.token_probabilities(&self.text),
            attention: Attention::new(hypothesis.attention.clone()),
        }
    }
}
