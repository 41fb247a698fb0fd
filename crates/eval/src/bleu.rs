//! BLEU-1..4 as pycocoevalcap's `Bleu(4)` computes it (SPEC.md §2; `bleu_scorer.py` by David
//! Chiang and Hao Fang).
//!
//! Clipped n-gram matches against the per-n-gram maximum over the references, the reference
//! length closest to the candidate's (ties go to the shorter reference), and two smoothing
//! constants that keep every ratio finite: a per-image BLEU-4 without any 4-gram match is
//! about 1e-9 rather than 0. The corpus score is not a mean of image scores: the counts and
//! lengths of all images are summed first, then the same formula is applied once.

use serde::Serialize;

use crate::TokenizedImage;
use rayon::prelude::*;

use crate::fast_hash::FastMap;
use crate::ngrams::{MAX_ORDER, NgramCounts, NgramKey, WordIds, Words};
use crate::python_float;

/// Added to every match count, "so that if guess is 0 still return 0" (pycocoevalcap).
const TINY: f64 = 1e-15;
/// Added to every denominator to avoid dividing by zero.
const SMALL: f64 = 1e-9;

/// The counts BLEU is computed from, for one image or summed over the corpus.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct BleuStats {
    /// Candidate length in words.
    pub testlen: usize,
    /// Effective reference length: the reference length closest to `testlen`.
    pub reflen: usize,
    /// Candidate n-grams of each order (`max(0, testlen - n + 1)`).
    pub guess: [usize; MAX_ORDER],
    /// Clipped n-gram matches of each order.
    pub correct: [usize; MAX_ORDER],
}

impl BleuStats {
    /// The counts of one candidate against its references.
    pub fn new<S: AsRef<str>>(candidate: &str, references: &[S]) -> BleuStats {
        let corpus = Words::default();
        let mut words = WordIds::new(&corpus);
        let test = NgramCounts::new(&words.sentence(candidate));
        let mut max_ref_counts: FastMap<NgramKey, u32> = FastMap::default();
        let refs: Vec<NgramCounts> = references.iter().map(|r| NgramCounts::new(&words.sentence(r.as_ref()))).collect();
        for reference in &refs {
            for entry in reference.entries() {
                let max = max_ref_counts.entry(entry.key).or_insert(0);
                *max = (*max).max(entry.count);
            }
        }
        let testlen = test.word_count;
        let mut correct = [0; MAX_ORDER];
        for entry in test.entries() {
            let clip = max_ref_counts.get(&entry.key).copied().unwrap_or(0);
            correct[entry.order] += entry.count.min(clip) as usize;
        }
        let guess = std::array::from_fn(|k| (testlen + 1).saturating_sub(k + 1));
        BleuStats { testlen, reflen: closest_length(testlen, refs.iter().map(|r| r.word_count)), guess, correct }
    }

    /// BLEU-1..4 from these counts, with the brevity penalty.
    pub fn scores(&self) -> [f64; MAX_ORDER] {
        let mut scores = [0.0; MAX_ORDER];
        let mut product = 1.0;
        for (k, score) in scores.iter_mut().enumerate() {
            product *= (self.correct[k] as f64 + TINY) / (self.guess[k] as f64 + SMALL);
            *score = python_float::pow(product, 1.0 / (k + 1) as f64);
        }
        let ratio = (self.testlen as f64 + TINY) / (self.reflen as f64 + SMALL);
        if ratio < 1.0 {
            for score in &mut scores {
                *score *= (1.0 - 1.0 / ratio).exp();
            }
        }
        scores
    }

    fn add(&mut self, other: &BleuStats) {
        self.testlen += other.testlen;
        self.reflen += other.reflen;
        for (total, n) in self.guess.iter_mut().zip(other.guess) {
            *total += n;
        }
        for (total, n) in self.correct.iter_mut().zip(other.correct) {
            *total += n;
        }
    }
}

/// `min((abs(l - testlen), l) for l in reflens)[1]`: the closest length, the shorter on a tie.
fn closest_length(testlen: usize, reference_lengths: impl Iterator<Item = usize>) -> usize {
    reference_lengths.min_by_key(|&l| (l.abs_diff(testlen), l)).expect("BLEU needs at least one reference")
}

/// BLEU scores of a set of images.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BleuScores {
    /// Corpus BLEU-1..4 (pycocoevalcap's `Bleu_1`..`Bleu_4`).
    pub corpus: [f64; MAX_ORDER],
    /// Summed counts the corpus scores come from.
    pub corpus_stats: BleuStats,
    /// BLEU-1..4 of each image, in input order.
    pub per_image: Vec<[f64; MAX_ORDER]>,
    /// Counts of each image, in input order.
    pub per_image_stats: Vec<BleuStats>,
}

/// BLEU-1..4 of each image and of the corpus. Every image needs at least one reference.
pub fn bleu(images: &[TokenizedImage]) -> BleuScores {
    // Images in parallel; the corpus sums in image order, so the result never depends on threads.
    let per_image_stats: Vec<BleuStats> = images.par_iter().map(|image| BleuStats::new(&image.candidate, &image.references)).collect();
    let mut corpus_stats = BleuStats::default();
    for stats in &per_image_stats {
        corpus_stats.add(stats);
    }
    BleuScores {
        corpus: corpus_stats.scores(),
        corpus_stats,
        per_image: per_image_stats.iter().map(BleuStats::scores).collect(),
        per_image_stats,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closest_reference_length_prefers_the_shorter_on_ties() {
        assert_eq!(closest_length(5, [3, 7].into_iter()), 3);
        assert_eq!(closest_length(5, [7, 3].into_iter()), 3);
        assert_eq!(closest_length(5, [6, 2].into_iter()), 6);
        let stats = BleuStats::new("a b c d e", &["a b c", "a b c d e f g"]);
        assert_eq!(stats.reflen, 3);
    }

    #[test]
    fn clipped_counts() {
        let stats = BleuStats::new("the the the the", &["the cat", "the the dog"]);
        assert_eq!(stats.correct, [2, 1, 0, 0]);
        assert_eq!(stats.guess, [4, 3, 2, 1]);
    }

    #[test]
    fn empty_candidate_scores_zero() {
        let stats = BleuStats::new("", &["a dog"]);
        assert_eq!(stats.guess, [0; 4]);
        assert_eq!(stats.scores(), [0.0; 4]);
    }

    #[test]
    fn perfect_match_is_one_up_to_smoothing() {
        let scores = BleuStats::new("a b c d", &["a b c d"]).scores();
        for s in scores {
            assert!((s - 1.0).abs() < 1e-9);
        }
        // No 4-gram match: tiny, not zero.
        let scores = BleuStats::new("a b c d", &["a b c x"]).scores();
        assert!(scores[3] > 0.0 && scores[3] < 1e-3);
    }
}
