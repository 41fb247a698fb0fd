//! Each decoded token's attention over the encoder grid: a distribution (sums to 1), kept per
//! hypothesis through beam search, and the decoder's own (teacher forcing the caption gives the
//! same weights).

mod common;

use burn::prelude::*;
use caption_model::decoder::{CaptionDecoder, Decoder};
use caption_model::decoding::{self, BeamSearchConfig, Constraints, DecodeStrategy, Hypothesis, SamplingConfig};
use common::*;

const MAX_LENGTH: usize = 8;

fn strategies() -> [DecodeStrategy; 3] {
    [
        DecodeStrategy::Greedy,
        DecodeStrategy::Beam(BeamSearchConfig::new(3).with_n_best(3)),
        DecodeStrategy::Sample(SamplingConfig::new(5).with_num_samples(2)),
    ]
}

fn check_distributions(name: &str, h: &Hypothesis) {
    assert_eq!(h.attention.len(), h.scored_length(), "{name}: one attention row per scored token");
    for row in &h.attention {
        assert_eq!(row.len(), REGIONS, "{name}");
        let sum: f32 = row.iter().sum();
        assert!((sum - 1.0).abs() < 1e-5 && row.iter().all(|&w| w >= 0.0), "{name}: {row:?}");
    }
}

/// `<bos>` and the caption's words: the inputs whose steps chose the scored tokens.
fn teacher_inputs(h: &Hypothesis) -> Tensor<B, 2, Int> {
    let mut inputs = vec![TOKENS.bos as i64];
    inputs.extend(h.tokens.iter().map(|&t| t as i64));
    inputs.truncate(h.scored_length());
    let len = inputs.len();
    Tensor::from_data(TensorData::new(inputs, [1, len]), &Default::default())
}

#[test]
fn attention_lstm_tokens_attend_as_the_decoder_does() {
    let device = Default::default();
    let decoder = decoder(tiny_lstm().with_dropout(0.0));
    let features = features::<B>(3, &device);
    let constraints = Constraints::new(TOKENS, MAX_LENGTH).with_attention(true);
    for strategy in strategies() {
        let name = format!("{strategy:?}");
        let results = decoding::decode(&decoder, &features, &constraints, &strategy).unwrap();
        for (image, list) in results.iter().enumerate() {
            for h in list {
                check_distributions(&name, h);
                let alphas = decoder.forward(&select_images(&features, &[image]), teacher_inputs(h)).alphas.expect("attention LSTM");
                let alphas = floats(alphas);
                for (t, row) in h.attention.iter().enumerate() {
                    for (r, &w) in row.iter().enumerate() {
                        let want = alphas[t * REGIONS + r];
                        assert!((w - want).abs() < 1e-5, "{name}: image {image} token {t} region {r}: {w} vs teacher forcing {want}");
                    }
                }
            }
        }
        // Without asking, nothing is kept.
        let plain = decoding::decode(&decoder, &features, &Constraints::new(TOKENS, MAX_LENGTH), &strategy).unwrap();
        assert!(plain.iter().flatten().all(|h| h.attention.is_empty()), "{name}");
    }
}

#[test]
fn transformer_tokens_attend_with_the_last_layers_cross_attention() {
    let device = Default::default();
    let decoder = decoder(tiny_transformer().with_dropout(0.0));
    let features = features::<B>(3, &device);
    let constraints = Constraints::new(TOKENS, MAX_LENGTH).with_attention(true);
    let mut by_strategy = Vec::new();
    for strategy in strategies() {
        let name = format!("{strategy:?}");
        let results = decoding::decode(&decoder, &features, &constraints, &strategy).unwrap();
        results.iter().flatten().for_each(|h| check_distributions(&name, h));
        by_strategy.push(results);
    }
    // A beam of one is greedy decoding (same tokens): it must carry the same weights, each
    // hypothesis its own through the beam bookkeeping.
    let greedy = &by_strategy[0];
    let beam_of_one = decoding::decode(&decoder, &features, &constraints, &DecodeStrategy::Beam(BeamSearchConfig::new(1))).unwrap();
    for (g, b) in greedy.iter().zip(&beam_of_one) {
        assert_eq!(g[0].tokens, b[0].tokens);
        assert_eq!(g[0].attention.len(), b[0].attention.len());
        for (x, y) in g[0].attention.iter().flatten().zip(b[0].attention.iter().flatten()) {
            assert!((x - y).abs() < 1e-5, "greedy {x} vs beam of one {y}");
        }
    }
}

fn decoder(config: impl Into<caption_model::DecoderConfig>) -> Decoder<B> {
    config.into().init(FEATURES, VOCAB, &Default::default()).unwrap()
}
