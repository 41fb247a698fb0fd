//! Greedy decoding, batched beam search and sampling on tiny random decoders (both kinds) and
//! on exact toy decoders.

mod common;

use burn::tensor::activation::log_softmax;
use caption_model::decoder::{CaptionDecoder, Decoder};
use caption_model::decoding::{self, BeamSearchConfig, Constraints, DecodeStrategy, Hypothesis, LengthPenalty, SamplingConfig};
use common::*;

const MAX_LENGTH: usize = 8;

fn decoders() -> Vec<(&'static str, Decoder<B>)> {
    let device = Default::default();
    decoder_configs().into_iter().map(|(name, config)| (name, config.init(FEATURES, VOCAB, &device).unwrap())).collect()
}

fn assert_same(name: &str, a: &Hypothesis, b: &Hypothesis) {
    assert_eq!(a.tokens, b.tokens, "{name}");
    assert_eq!(a.finished, b.finished, "{name}");
    assert!((a.log_prob - b.log_prob).abs() < 1e-5, "{name}: log_prob {} vs {}", a.log_prob, b.log_prob);
    assert!((a.score - b.score).abs() < 1e-5, "{name}: score {} vs {}", a.score, b.score);
}

/// The documented invariants of one hypothesis.
fn check_hypothesis(name: &str, h: &Hypothesis, penalty: LengthPenalty) {
    assert!(h.tokens.len() <= MAX_LENGTH, "{name}: {h:?}");
    assert!(!h.tokens.contains(&TOKENS.eos) && !h.tokens.contains(&TOKENS.bos), "{name}: {h:?}");
    assert_eq!(h.token_log_probs.len(), h.tokens.len() + h.finished as usize, "{name}: {h:?}");
    assert!(h.finished || h.tokens.len() == MAX_LENGTH, "{name}: unfinished before max length: {h:?}");
    let sum: f64 = h.token_log_probs.iter().map(|&lp| lp as f64).sum();
    assert!((h.log_prob - sum).abs() < 1e-9, "{name}: {h:?}");
    assert!((h.score - penalty.score(h.log_prob, h.scored_length())).abs() < 1e-9, "{name}: {h:?}");
    let confidence = (sum / h.scored_length() as f64).exp();
    assert!((h.confidence() - confidence).abs() < 1e-12 && h.confidence() > 0.0 && h.confidence() <= 1.0, "{name}: {h:?}");
}

#[test]
fn beam_size_one_equals_greedy() {
    let device = Default::default();
    for (name, decoder) in decoders() {
        let features = features::<B>(3, &device);
        let greedy = decoding::greedy(&decoder, &features, &Constraints::new(TOKENS, MAX_LENGTH)).unwrap();
        let beam = decoding::beam_search(&decoder, &features, &Constraints::new(TOKENS, MAX_LENGTH), &BeamSearchConfig::new(1)).unwrap();
        assert_eq!(greedy.len(), 3);
        for (g, b) in greedy.iter().zip(&beam) {
            assert_eq!(b.len(), 1, "{name}");
            check_hypothesis(name, g, LengthPenalty::None);
            assert_same(name, g, &b[0]);
        }
    }
}

#[test]
fn decoded_log_probs_are_the_teacher_forced_ones() {
    let device = Default::default();
    for (name, decoder) in decoders() {
        let features = features::<B>(2, &device);
        let greedy = decoding::greedy(&decoder, &features, &Constraints::new(TOKENS, MAX_LENGTH)).unwrap();
        for (image, h) in greedy.iter().enumerate() {
            // Inputs <bos> w1 .. wn; targets w1 .. wn (<eos>).
            let mut inputs = vec![TOKENS.bos as i64];
            inputs.extend(h.tokens.iter().map(|&t| t as i64));
            let mut targets: Vec<u32> = h.tokens.clone();
            if h.finished {
                targets.push(TOKENS.eos);
            } else {
                inputs.pop();
            }
            let length = inputs.len();
            let one = select_images(&features, &[image]);
            let logits = decoder.forward(&one, int_tensor(inputs, [1, length], &device)).logits;
            let lps = floats(log_softmax(logits, 2));
            for (t, &target) in targets.iter().enumerate() {
                let expected = lps[t * VOCAB + target as usize];
                assert!((expected - h.token_log_probs[t]).abs() < 1e-4, "{name}: step {t}: {expected} vs {}", h.token_log_probs[t]);
            }
        }
    }
}

#[test]
fn n_best_lists_are_sorted_by_the_documented_score() {
    let device = Default::default();
    for penalty in [LengthPenalty::None, LengthPenalty::Gnmt { alpha: 0.7 }, LengthPenalty::Average] {
        for (name, decoder) in decoders() {
            let features = features::<B>(2, &device);
            let config = BeamSearchConfig::new(4).with_n_best(4).with_length_penalty(penalty);
            let results = decoding::beam_search(&decoder, &features, &Constraints::new(TOKENS, MAX_LENGTH), &config).unwrap();
            for n_best in &results {
                assert!(!n_best.is_empty() && n_best.len() <= 4, "{name}");
                for h in n_best {
                    check_hypothesis(name, h, penalty);
                }
                assert!(n_best.windows(2).all(|w| w[0].score >= w[1].score), "{name} {penalty}: {n_best:?}");
                let distinct: std::collections::HashSet<&Vec<u32>> = n_best.iter().map(|h| &h.tokens).collect();
                assert_eq!(distinct.len(), n_best.len(), "{name}: duplicate hypotheses {n_best:?}");
            }
        }
    }
}

#[test]
fn a_model_that_never_ends_gives_max_length_captions() {
    let device = Default::default();
    for (name, decoder) in decoders() {
        let never = NeverEos { inner: decoder, eos: TOKENS.eos };
        let features = features::<B>(2, &device);
        let strategies = [
            DecodeStrategy::Greedy,
            DecodeStrategy::Beam(BeamSearchConfig::new(3).with_n_best(3).with_length_penalty(LengthPenalty::Gnmt { alpha: 0.6 })),
            DecodeStrategy::Beam(BeamSearchConfig::new(2).with_block_repeated_trigrams(true)),
            DecodeStrategy::Sample(SamplingConfig::new(7).with_num_samples(2).with_top_k(5)),
        ];
        for strategy in &strategies {
            let results = decoding::decode(&never, &features, &Constraints::new(TOKENS, MAX_LENGTH), strategy).unwrap();
            assert_eq!(results.len(), 2);
            for h in results.iter().flatten() {
                assert_eq!(h.tokens.len(), MAX_LENGTH, "{name} {strategy:?}: {h:?}");
                assert!(!h.finished && h.log_prob.is_finite() && h.score.is_finite(), "{name} {strategy:?}: {h:?}");
            }
            if let DecodeStrategy::Beam(config) = strategy {
                assert!(results.iter().all(|n_best| n_best.len() == config.n_best), "{name}: {results:?}");
            }
        }
    }
}

#[test]
fn a_batch_decodes_like_its_images_one_at_a_time() {
    let device = Default::default();
    let config = BeamSearchConfig::new(3).with_n_best(3).with_length_penalty(LengthPenalty::Gnmt { alpha: 0.6 });
    for (name, decoder) in decoders() {
        let features = features::<B>(4, &device);
        let together = decoding::beam_search(&decoder, &features, &Constraints::new(TOKENS, MAX_LENGTH), &config).unwrap();
        let greedy_together = decoding::greedy(&decoder, &features, &Constraints::new(TOKENS, MAX_LENGTH)).unwrap();
        for image in 0..4 {
            let one = select_images(&features, &[image]);
            let alone = decoding::beam_search(&decoder, &one, &Constraints::new(TOKENS, MAX_LENGTH), &config).unwrap();
            assert_eq!(alone[0].len(), together[image].len(), "{name}");
            for (a, b) in alone[0].iter().zip(&together[image]) {
                assert_same(name, a, b);
            }
            let greedy_alone = decoding::greedy(&decoder, &one, &Constraints::new(TOKENS, MAX_LENGTH)).unwrap();
            assert_same(name, &greedy_alone[0], &greedy_together[image]);
        }
    }
}

#[test]
fn sampling_is_reproducible_given_a_seed() {
    let device = Default::default();
    for (name, decoder) in decoders() {
        let features = features::<B>(2, &device);
        let config = SamplingConfig::new(42).with_temperature(1.5).with_top_p(0.95).with_num_samples(3);
        let first = decoding::sample(&decoder, &features, &Constraints::new(TOKENS, MAX_LENGTH), &config).unwrap();
        let again = decoding::sample(&decoder, &features, &Constraints::new(TOKENS, MAX_LENGTH), &config).unwrap();
        assert_eq!(first, again, "{name}");
        assert!(first.iter().all(|samples| samples.len() == 3));
        for h in first.iter().flatten() {
            check_hypothesis(name, h, LengthPenalty::None);
        }
        let other =
            decoding::sample(&decoder, &features, &Constraints::new(TOKENS, MAX_LENGTH), &SamplingConfig { seed: 43, ..config }).unwrap();
        assert_ne!(first, other, "{name}: seeds 42 and 43 drew the same captions");
    }
}

/// Probabilities for a toy vocabulary of 7: 0 pad, 1 bos, 2 eos, 3..6 words.
fn markov(rows: [[f32; 7]; 7]) -> Markov<B> {
    Markov::new(&rows.iter().map(|r| r.to_vec()).collect::<Vec<_>>(), &Default::default())
}

#[test]
fn beam_search_finds_what_greedy_misses_and_ranks_by_the_penalty() {
    // From <bos>: word 3 (0.5) leads to a flat continuation; word 4 (0.4) to a sure <eos>.
    // Greedy takes 3; the best caption is "4" (0.4 * 1.0) over "3 x" (0.5 * 0.25 * ...).
    let z = 0.0;
    let table = markov([
        [1.0, z, z, z, z, z, z],
        [z, z, 0.1, 0.5, 0.4, z, z],      // after <bos>
        [z, z, 1.0, z, z, z, z],          // after <eos> (never used)
        [z, z, 0.25, z, z, 0.375, 0.375], // after 3
        [z, z, 1.0, z, z, z, z],          // after 4: end
        [z, z, 0.5, z, z, 0.5, z],        // after 5
        [z, z, 0.5, z, z, z, 0.5],        // after 6
    ]);
    let device = Default::default();
    let features = features::<B>(1, &device);
    let greedy = decoding::greedy(&table, &features, &Constraints::new(TOKENS, 4)).unwrap();
    assert_eq!(greedy[0].tokens[0], 3);
    let config = BeamSearchConfig::new(3).with_n_best(3);
    let beam = decoding::beam_search(&table, &features, &Constraints::new(TOKENS, 4), &config).unwrap();
    assert_eq!(beam[0][0].tokens, vec![4]);
    assert!((beam[0][0].confidence() - 0.4f64.sqrt()).abs() < 1e-6, "{:?}", beam[0][0]);
    // Step 1's candidates are "4 <eos>" (0.4), "3 5" and "3 6" (0.1875 each), then "3 <eos>"
    // (0.125): ranked fourth, below the beam size, it is dropped (Hugging Face's rule). The
    // empty caption (0.1) ended at step 0; a "3 5 <eos>" or "3 6 <eos>" (0.09375) ends third.
    let tokens: Vec<Vec<u32>> = beam[0].iter().map(|h| h.tokens.clone()).collect();
    assert_eq!(&tokens[..2], &[vec![4], vec![]]);
    assert!(tokens[2] == [3, 5] || tokens[2] == [3, 6], "{tokens:?}");
    assert!((beam[0][2].log_prob - 0.09375f64.ln()).abs() < 1e-5);
    // Averaging per token favours longer captions: "3 5" and "3 6" (ln(0.09375)/3 = -0.79 each)
    // now rank above the empty caption (ln(0.1) = -2.30), but "4" still leads (ln(0.4)/2 = -0.46).
    let average =
        decoding::beam_search(&table, &features, &Constraints::new(TOKENS, 4), &config.clone().with_length_penalty(LengthPenalty::Average))
            .unwrap();
    assert!(average[0].windows(2).all(|w| w[0].score >= w[1].score));
    assert_eq!(average[0][0].tokens, vec![4]);
    assert!(average[0][1..].iter().all(|h| h.tokens.len() == 2 && h.tokens[0] == 3), "{average:?}");
}

#[test]
fn bad_endings_are_not_ended_on() {
    // From <bos>: 3 (likely), then 4 (a "bad ending" word) which mostly ends the caption;
    // after 4, 5 is the only other way on, and 5 ends.
    let z = 0.0;
    let table = markov([
        [1.0, z, z, z, z, z, z],
        [z, z, z, 1.0, z, z, z],
        [z, z, 1.0, z, z, z, z],
        [z, z, 0.1, z, 0.9, z, z],
        [z, z, 0.8, z, z, 0.2, z],
        [z, z, 1.0, z, z, z, z],
        [z, z, 1.0, z, z, z, z],
    ]);
    let device = Default::default();
    let features = features::<B>(2, &device);
    let strategies = [
        DecodeStrategy::Greedy,
        DecodeStrategy::Beam(BeamSearchConfig::new(2)),
        DecodeStrategy::Sample(SamplingConfig::new(7).with_num_samples(4)),
    ];
    for strategy in &strategies {
        let plain = decoding::decode(&table, &features, &Constraints::new(TOKENS, 6), strategy).unwrap();
        assert!(plain.iter().flatten().any(|h| h.tokens.last() == Some(&4)), "{strategy:?}: {plain:?}");
        let blocked = decoding::decode(&table, &features, &Constraints::new(TOKENS, 6).with_no_eos_after(&[4]), strategy).unwrap();
        for h in blocked.iter().flatten() {
            check_hypothesis(&format!("{strategy:?}"), h, LengthPenalty::None);
            assert!(h.finished && h.tokens.last() != Some(&4), "{strategy:?}: {h:?}");
            // The scores stay the model's own: "3 4 5 <eos>" = 0.9 * 0.2 * 1.0 after 3.
            if h.tokens == [3, 4, 5] {
                assert!((h.log_prob - 0.18f64.ln()).abs() < 1e-5, "{h:?}");
            }
        }
        assert!(blocked.iter().flatten().any(|h| h.tokens == [3, 4, 5]), "{strategy:?}: {blocked:?}");
    }
}

#[test]
fn trigram_blocking_prevents_loops() {
    // 3 -> 4 -> 5 -> 3 is a likely loop; 6 is a rare way out.
    let z = 0.0;
    let table = markov([
        [1.0, z, z, z, z, z, z],
        [z, z, z, 1.0, z, z, z],
        [z, z, 1.0, z, z, z, z],
        [z, z, 0.01, z, 0.9, z, 0.09],
        [z, z, 0.01, z, z, 0.9, 0.09],
        [z, z, 0.01, 0.9, z, z, 0.09],
        [z, z, 0.2, 0.2, 0.2, 0.2, 0.2],
    ]);
    let device = Default::default();
    let features = features::<B>(1, &device);
    let plain = decoding::beam_search(&table, &features, &Constraints::new(TOKENS, 8), &BeamSearchConfig::new(2)).unwrap();
    assert_eq!(&plain[0][0].tokens[..6], &[3, 4, 5, 3, 4, 5]);
    let blocked = decoding::beam_search(
        &table,
        &features,
        &Constraints::new(TOKENS, 8),
        &BeamSearchConfig::new(2).with_block_repeated_trigrams(true),
    )
    .unwrap();
    for h in &blocked[0] {
        let trigrams: Vec<&[u32]> = h.tokens.windows(3).collect();
        let distinct: std::collections::HashSet<&[u32]> = trigrams.iter().copied().collect();
        assert_eq!(distinct.len(), trigrams.len(), "repeated trigram in {:?}", h.tokens);
    }
}

#[test]
fn invalid_settings_are_errors() {
    let device = Default::default();
    let (_, decoder) = decoders().remove(2); // transformer, max_positions 16
    let features = features::<B>(1, &device);
    let too_long = decoding::greedy(&decoder, &features, &Constraints::new(TOKENS, 17)).unwrap_err().to_string();
    assert!(too_long.contains("max_length") && too_long.contains("16"), "{too_long}");
    let err =
        decoding::beam_search(&decoder, &features, &Constraints::new(TOKENS, 8), &BeamSearchConfig::new(2).with_n_best(3)).unwrap_err();
    assert!(err.to_string().contains("n_best"), "{err}");
    assert!(decoding::greedy(&decoder, &features, &Constraints::new(TOKENS, 0)).is_err());
    assert_eq!(decoder.max_positions(), Some(16));
    // An empty batch decodes to nothing.
    let none = select_images(&features, &[]);
    assert!(decoding::beam_search(&decoder, &none, &Constraints::new(TOKENS, 8), &BeamSearchConfig::new(2)).unwrap().is_empty());
    assert!(decoding::greedy(&decoder, &none, &Constraints::new(TOKENS, 8)).unwrap().is_empty());
}
