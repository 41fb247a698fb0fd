//! How captions are decoded: a strategy and the rules every strategy follows, recorded in a
//! checkpoint as its defaults ([`crate::CheckpointMeta::decoding`]) and changed per call with
//! [`DecodingOverrides`].

use serde::{Deserialize, Serialize};

use crate::decoding::{BeamSearchConfig, DecodeError, DecodeStrategy, LengthPenalty, SamplingConfig};

/// Decoding settings. In JSON: `{"strategy": {"method": "beam", "beam_size": 3, ...},
/// "block_bad_endings": true}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecodingConfig {
    /// Greedy decoding, beam search or sampling, with its settings.
    pub strategy: DecodeStrategy,
    /// No caption ends with one of ImageCaptioning.pytorch's bad endings
    /// ([`crate::decoding::BAD_ENDINGS`]: `a`, `the`, `with`, ...).
    #[serde(default)]
    pub block_bad_endings: bool,
    /// Most words per caption; `None`: the model's `max_length`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<usize>,
    /// Also give each token's attention over the encoder grid (decoders that have it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub attention: bool,
}

impl DecodingConfig {
    pub fn new(strategy: DecodeStrategy) -> Self {
        DecodingConfig { strategy, block_bad_endings: false, max_length: None, attention: false }
    }

    pub fn with_block_bad_endings(self, block_bad_endings: bool) -> Self {
        DecodingConfig { block_bad_endings, ..self }
    }

    /// Beams per image: the beam search's, 1 for greedy decoding and sampling.
    pub fn beam_size(&self) -> usize {
        match &self.strategy {
            DecodeStrategy::Beam(beam) => beam.beam_size,
            DecodeStrategy::Greedy | DecodeStrategy::Sample(_) => 1,
        }
    }

    pub fn validate(&self) -> Result<(), DecodeError> {
        if self.max_length == Some(0) {
            return Err(DecodeError::Invalid("`max_length` must be at least 1".into()));
        }
        match &self.strategy {
            DecodeStrategy::Greedy => Ok(()),
            DecodeStrategy::Beam(beam) => beam.validate(),
            DecodeStrategy::Sample(sample) => sample.validate(),
        }
    }

    /// The decoding in words, as reports show it (`beam 3 (length penalty none), no bad endings`).
    pub fn describe(&self) -> String {
        let strategy = match &self.strategy {
            DecodeStrategy::Greedy => "greedy".to_string(),
            DecodeStrategy::Beam(beam) => format!("beam {} (length penalty {})", beam.beam_size, beam.length_penalty),
            DecodeStrategy::Sample(sample) => format!("sampling (temperature {})", sample.temperature),
        };
        if self.block_bad_endings { format!("{strategy}, no bad endings") } else { strategy }
    }
}

/// Changes to a [`DecodingConfig`] for one call; `None` keeps the default's setting.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DecodingOverrides {
    /// 1: greedy decoding; more: beam search, keeping the default's beam settings when it is one.
    pub beam_size: Option<usize>,
    /// Captions per image: the beam search's `n_best`, or the draws when sampling.
    pub num_captions: Option<usize>,
    /// Beam search only.
    pub length_penalty: Option<LengthPenalty>,
    /// Beam search only.
    pub block_repeated_trigrams: Option<bool>,
    pub block_bad_endings: Option<bool>,
    pub max_length: Option<usize>,
    /// Draw captions instead of searching (its `num_samples` unless `num_captions` is set).
    pub sampling: Option<SamplingConfig>,
    pub attention: Option<bool>,
}

fn invalid(message: impl Into<String>) -> DecodeError {
    DecodeError::Invalid(message.into())
}

impl DecodingOverrides {
    /// `defaults` with these changes, checked.
    pub fn apply(&self, defaults: &DecodingConfig) -> Result<DecodingConfig, DecodeError> {
        let mut strategy = self.strategy(&defaults.strategy)?;
        if let DecodeStrategy::Beam(beam) = &mut strategy {
            if let Some(length_penalty) = self.length_penalty {
                beam.length_penalty = length_penalty;
            }
            if let Some(block) = self.block_repeated_trigrams {
                beam.block_repeated_trigrams = block;
            }
        } else if self.length_penalty.is_some() || self.block_repeated_trigrams == Some(true) {
            return Err(invalid("the length penalty and trigram blocking apply to beam search: give a beam size above 1"));
        }
        let decoding = DecodingConfig {
            strategy,
            block_bad_endings: self.block_bad_endings.unwrap_or(defaults.block_bad_endings),
            max_length: self.max_length.or(defaults.max_length),
            attention: self.attention.unwrap_or(defaults.attention),
        };
        decoding.validate()?;
        Ok(decoding)
    }

    fn strategy(&self, default: &DecodeStrategy) -> Result<DecodeStrategy, DecodeError> {
        if let Some(sampling) = &self.sampling {
            if self.beam_size.is_some_and(|b| b != 1) {
                return Err(invalid("sampling draws captions instead of a beam search: leave out the beam size"));
            }
            let num_samples = self.num_captions.unwrap_or(sampling.num_samples);
            return Ok(DecodeStrategy::Sample(SamplingConfig { num_samples, ..sampling.clone() }));
        }
        let strategy = match (self.beam_size, default) {
            (Some(0), _) => return Err(invalid("the beam size must be at least 1 (1 is greedy decoding)")),
            (Some(1), _) => DecodeStrategy::Greedy,
            (Some(beam_size), DecodeStrategy::Beam(beam)) => {
                DecodeStrategy::Beam(BeamSearchConfig { beam_size, n_best: beam.n_best.min(beam_size), ..beam.clone() })
            }
            (Some(beam_size), _) => DecodeStrategy::Beam(BeamSearchConfig::new(beam_size)),
            (None, default) => default.clone(),
        };
        Ok(match (self.num_captions, strategy) {
            (None, strategy) => strategy,
            (Some(n), DecodeStrategy::Beam(beam)) => {
                if n == 0 || n > beam.beam_size {
                    return Err(invalid(format!("{n} captions per image: use 1..={} (at most the beam size)", beam.beam_size)));
                }
                DecodeStrategy::Beam(BeamSearchConfig { n_best: n, ..beam })
            }
            (Some(n), DecodeStrategy::Sample(sample)) => DecodeStrategy::Sample(SamplingConfig { num_samples: n, ..sample }),
            (Some(1), DecodeStrategy::Greedy) => DecodeStrategy::Greedy,
            (Some(n), DecodeStrategy::Greedy) => {
                return Err(invalid(format!("greedy decoding writes one caption per image, not {n}: give a beam size of at least {n}")));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beam_default() -> DecodingConfig {
        DecodingConfig::new(DecodeStrategy::Beam(
            BeamSearchConfig::new(3).with_length_penalty(LengthPenalty::Average).with_block_repeated_trigrams(true),
        ))
        .with_block_bad_endings(true)
    }

    #[test]
    fn nothing_overridden_is_the_default() {
        assert_eq!(DecodingOverrides::default().apply(&beam_default()).unwrap(), beam_default());
    }

    #[test]
    fn a_new_beam_size_keeps_the_default_beam_settings() {
        let overrides = DecodingOverrides { beam_size: Some(5), num_captions: Some(2), ..Default::default() };
        let decoding = overrides.apply(&beam_default()).unwrap();
        let expected =
            BeamSearchConfig::new(5).with_n_best(2).with_length_penalty(LengthPenalty::Average).with_block_repeated_trigrams(true);
        assert_eq!(decoding.strategy, DecodeStrategy::Beam(expected));
        assert!(decoding.block_bad_endings);

        let greedy = DecodingOverrides { beam_size: Some(1), block_bad_endings: Some(false), ..Default::default() };
        assert_eq!(greedy.apply(&beam_default()).unwrap(), DecodingConfig::new(DecodeStrategy::Greedy));
    }

    #[test]
    fn contradictions_are_refused_with_the_reason() {
        let greedy = DecodingConfig::new(DecodeStrategy::Greedy);
        let err = DecodingOverrides { num_captions: Some(2), ..Default::default() }.apply(&greedy).unwrap_err().to_string();
        assert!(err.contains("beam size of at least 2"), "{err}");
        let err = DecodingOverrides { length_penalty: Some(LengthPenalty::Average), ..Default::default() }
            .apply(&greedy)
            .unwrap_err()
            .to_string();
        assert!(err.contains("beam search"), "{err}");
        let err = DecodingOverrides { beam_size: Some(2), num_captions: Some(3), ..Default::default() }
            .apply(&beam_default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("1..=2"), "{err}");
        let sampling = DecodingOverrides { beam_size: Some(3), sampling: Some(SamplingConfig::new(1)), ..Default::default() };
        assert!(sampling.apply(&greedy).is_err());
        assert!(DecodingOverrides { beam_size: Some(0), ..Default::default() }.apply(&greedy).is_err());
        assert!(DecodingOverrides { max_length: Some(0), ..Default::default() }.apply(&greedy).is_err());
    }

    #[test]
    fn round_trips_through_json() {
        let json = serde_json::to_string(&beam_default()).unwrap();
        assert!(json.contains("\"block_bad_endings\":true") && json.contains("\"method\":\"beam\""), "{json}");
        assert_eq!(serde_json::from_str::<DecodingConfig>(&json).unwrap(), beam_default());
        let greedy: DecodingConfig = serde_json::from_str(r#"{"strategy": {"method": "greedy"}}"#).unwrap();
        assert_eq!(greedy, DecodingConfig::new(DecodeStrategy::Greedy));
    }
}
