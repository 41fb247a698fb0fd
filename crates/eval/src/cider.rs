//! CIDEr-D as pycocoevalcap's `Cider()` computes it (SPEC.md §5; n = 4, σ = 6), plus the same
//! score with document frequencies fixed from a separate corpus (self-critical training).
//!
//! Each sentence becomes one tf-idf vector per n-gram order, with raw counts as tf and
//! `ln(N) - ln(max(1, df))` as idf, where `df` counts the images whose reference set contains
//! the n-gram and `N` is the number of those images. A candidate's score against one reference
//! is, per order, the clipped dot product `Σ min(w_cand, w_ref) · w_ref` divided by both norms,
//! times a Gaussian penalty on the length difference. Quirks kept on purpose:
//!
//! * the "length" used by the penalty is the number of bigram occurrences (`max(0, words - 1)`),
//!   because pycocoevalcap tests `n == 1` on a 0-based order index;
//! * n-grams are visited in Python's dict order, which fixes the floating-point summation order;
//! * with a single image every idf is `ln 1 - ln 1 = 0`, so every score is 0.
//!
//! The image score is the mean over orders (`np.mean`), divided by the number of references,
//! times 10; the corpus score is `np.mean` of the image scores.

use serde::Serialize;

use rayon::prelude::*;

use crate::TokenizedImage;
use crate::fast_hash::{FastMap, FastSet};
use crate::ngrams::{MAX_ORDER, NgramCounts, NgramKey, WordIds, Words};
use crate::numpy_mean::numpy_mean;
use crate::python_float;

/// Width of the Gaussian length penalty.
const SIGMA: f64 = 6.0;

/// Document frequencies of n-grams over a corpus of reference sets, and `ln` of the corpus size.
#[derive(Debug, Clone, Default)]
pub struct DocumentFrequencies {
    /// The references' words, numbered.
    words: Words,
    counts: FastMap<NgramKey, u32>,
    num_documents: usize,
}

impl DocumentFrequencies {
    /// Counts, for every n-gram of order 1 to 4, how many reference sets contain it (a set
    /// counts once however many of its references contain the n-gram). References are
    /// tokenized strings, split on whitespace.
    pub fn from_reference_sets<R, S>(reference_sets: impl IntoIterator<Item = R>) -> DocumentFrequencies
    where
        R: AsRef<[S]> + Sync,
        S: AsRef<str>,
    {
        // Each set's distinct n-grams in parallel; the counts are integers, summed in any order.
        let sets: Vec<R> = reference_sets.into_iter().collect();
        let words = Words::of_sentences(sets.iter().flat_map(|set| set.as_ref().iter().map(AsRef::as_ref)));
        let distinct: Vec<Vec<NgramKey>> = sets
            .par_iter()
            .map(|set| {
                let mut ids = WordIds::new(&words);
                let mut seen: FastSet<NgramKey> = FastSet::default();
                for reference in set.as_ref() {
                    seen.extend(NgramCounts::new(&ids.sentence(reference.as_ref())).entries().iter().map(|e| e.key));
                }
                seen.into_iter().collect()
            })
            .collect();
        let mut counts: FastMap<NgramKey, u32> = FastMap::default();
        for key in distinct.into_iter().flatten() {
            *counts.entry(key).or_insert(0) += 1;
        }
        DocumentFrequencies { words, counts, num_documents: sets.len() }
    }

    /// Number of reference sets counted.
    pub fn num_documents(&self) -> usize {
        self.num_documents
    }

    /// Number of reference sets containing `ngram` (words joined by single spaces).
    pub fn document_frequency(&self, ngram: &str) -> u32 {
        self.words.key(ngram).map_or(0, |key| self.frequency(key))
    }

    fn frequency(&self, key: NgramKey) -> u32 {
        self.counts.get(&key).copied().unwrap_or(0)
    }

    /// `ref_len` in pycocoevalcap: `ln(number of reference sets)`.
    pub fn log_num_documents(&self) -> f64 {
        (self.num_documents as f64).ln()
    }
}

/// The CIDEr-D scorer with fixed document frequencies.
///
/// [`cider_d`] reproduces pycocoevalcap, where the frequencies come from the references of
/// exactly the images being scored. For self-critical training rewards, build the scorer once
/// from the training references with [`CiderD::with_corpus_df`] and score any candidate
/// against any references with those frequencies and that corpus size.
#[derive(Debug, Clone)]
pub struct CiderD {
    frequencies: DocumentFrequencies,
    log_num_documents: f64,
}

/// CIDEr-D of one candidate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CiderImageScore {
    /// The image score (pycocoevalcap's per-image `CIDEr`).
    pub score: f64,
    /// Per n-gram order, the similarity summed over references, divided by their number and
    /// multiplied by 10 (the score is the mean of these four terms).
    pub per_order: [f64; MAX_ORDER],
    /// Candidate length as the length penalty sees it: bigram occurrences.
    pub candidate_length: usize,
}

/// CIDEr-D scores of a set of images.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CiderScores {
    /// `np.mean` of the image scores (pycocoevalcap's `CIDEr`).
    pub corpus: f64,
    /// Each image's score, in input order.
    pub per_image: Vec<CiderImageScore>,
}

/// A sentence as CIDEr-D sees it: one tf-idf vector per order, its norms, its bigram count.
struct TfIdf {
    /// The n-grams, in Python dict order.
    counts: NgramCounts,
    /// The weight of each entry of `counts`.
    weights: Vec<f64>,
    norms: [f64; MAX_ORDER],
    length: usize,
}

impl CiderD {
    /// Document frequencies from a training corpus: one item per image, holding that image's
    /// tokenized references.
    pub fn with_corpus_df<R, S>(reference_sets: impl IntoIterator<Item = R>) -> CiderD
    where
        R: AsRef<[S]> + Sync,
        S: AsRef<str>,
    {
        CiderD::with_document_frequencies(DocumentFrequencies::from_reference_sets(reference_sets))
    }

    /// A scorer using already counted document frequencies.
    pub fn with_document_frequencies(frequencies: DocumentFrequencies) -> CiderD {
        let log_num_documents = frequencies.log_num_documents();
        CiderD { frequencies, log_num_documents }
    }

    /// The document frequencies in use.
    pub fn document_frequencies(&self) -> &DocumentFrequencies {
        &self.frequencies
    }

    /// CIDEr-D of one candidate against its references (tokenized strings).
    pub fn score_candidate<S: AsRef<str>>(&self, candidate: &str, references: &[S]) -> CiderImageScore {
        assert!(!references.is_empty(), "CIDEr-D needs at least one reference");
        let mut words = WordIds::new(&self.frequencies.words);
        let hypothesis = self.tf_idf(&words.sentence(candidate));
        let mut summed = [0.0; MAX_ORDER];
        for reference in references {
            let similarity = self.similarity(&hypothesis, &self.tf_idf(&words.sentence(reference.as_ref())));
            for (total, term) in summed.iter_mut().zip(similarity) {
                *total += term;
            }
        }
        let num_references = references.len() as f64;
        // pycocoevalcap: `score_avg = np.mean(score); score_avg /= len(refs); score_avg *= 10.0`.
        let score = numpy_mean(&summed) / num_references * 10.0;
        CiderImageScore { score, per_order: summed.map(|s| s / num_references * 10.0), candidate_length: hypothesis.length }
    }

    /// CIDEr-D of every image and their mean.
    pub fn score(&self, images: &[TokenizedImage]) -> CiderScores {
        // Images in parallel; the mean is taken in image order.
        let per_image: Vec<CiderImageScore> =
            images.par_iter().map(|image| self.score_candidate(&image.candidate, &image.references)).collect();
        let scores: Vec<f64> = per_image.iter().map(|s| s.score).collect();
        CiderScores { corpus: numpy_mean(&scores), per_image }
    }

    /// pycocoevalcap's `counts2vec`.
    fn tf_idf(&self, words: &[u32]) -> TfIdf {
        let counts = NgramCounts::new(words);
        let mut weights = Vec::with_capacity(counts.entries().len());
        let mut norms = [0.0; MAX_ORDER];
        for entry in counts.entries() {
            let df = f64::from(self.frequencies.frequency(entry.key)).max(1.0);
            let weight = f64::from(entry.count) * (self.log_num_documents - df.ln());
            norms[entry.order] += weight * weight;
            weights.push(weight);
        }
        // The `n == 1` bug: bigram occurrences.
        let length = counts.word_count.saturating_sub(1);
        TfIdf { counts, weights, norms: norms.map(f64::sqrt), length }
    }

    /// pycocoevalcap's `sim`: per order, clipped cosine similarity times the length penalty.
    fn similarity(&self, hypothesis: &TfIdf, reference: &TfIdf) -> [f64; MAX_ORDER] {
        let delta = hypothesis.length as f64 - reference.length as f64;
        // `np.e ** (-(delta ** 2) / (2 * sigma ** 2))`: Python's float power, C `pow`.
        let length_penalty = python_float::pow(std::f64::consts::E, -(delta * delta) / (2.0 * SIGMA * SIGMA));
        let mut values = [0.0; MAX_ORDER];
        // Entries of one order are contiguous and in dict order, so each order sums in that order.
        for (entry, &hyp_weight) in hypothesis.counts.entries().iter().zip(&hypothesis.weights) {
            let ref_weight = reference.counts.position(entry.key).map_or(0.0, |at| reference.weights[at]);
            values[entry.order] += hyp_weight.min(ref_weight) * ref_weight;
        }
        std::array::from_fn(|order| {
            let mut value = values[order];
            if hypothesis.norms[order] != 0.0 && reference.norms[order] != 0.0 {
                value /= hypothesis.norms[order] * reference.norms[order];
            }
            value * length_penalty
        })
    }
}

/// CIDEr-D exactly as pycocoevalcap computes it: document frequencies and `ln N` from the
/// references of the images being scored. Every image needs at least one reference.
pub fn cider_d(images: &[TokenizedImage]) -> CiderScores {
    CiderD::with_corpus_df(images.iter().map(|image| image.references.as_slice())).score(images)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(candidate: &str, references: &[&str]) -> TokenizedImage {
        TokenizedImage { candidate: candidate.into(), references: references.iter().map(|r| r.to_string()).collect() }
    }

    #[test]
    fn a_single_image_scores_zero() {
        let scores = cider_d(&[image("a dog runs", &["a dog runs", "a dog is running"])]);
        assert_eq!(scores.corpus, 0.0);
        assert_eq!(scores.per_image[0].per_order, [0.0; 4]);
    }

    #[test]
    fn empty_candidate_scores_zero() {
        let scores = cider_d(&[image("", &["a dog runs"]), image("a cat", &["a cat sleeps"])]);
        assert_eq!(scores.per_image[0].score, 0.0);
        assert_eq!(scores.per_image[0].candidate_length, 0);
        assert!(scores.per_image[1].score > 0.0);
    }

    #[test]
    fn document_frequency_counts_each_reference_set_once() {
        let df = DocumentFrequencies::from_reference_sets([vec!["a dog", "a dog runs"], vec!["a cat"]]);
        assert_eq!(df.num_documents(), 2);
        assert_eq!(df.document_frequency("a"), 2);
        assert_eq!(df.document_frequency("dog"), 1);
        assert_eq!(df.document_frequency("a dog"), 1);
        assert_eq!(df.document_frequency("cat dog"), 0);
    }

    #[test]
    fn corpus_frequencies_score_any_pair() {
        let scorer = CiderD::with_corpus_df([vec!["a dog runs on the grass"], vec!["a cat sleeps on a sofa"], vec!["two men ride horses"]]);
        let same = scorer.score_candidate("a dog runs on the grass", &["a dog runs on the grass"]);
        let different = scorer.score_candidate("two men ride horses", &["a dog runs on the grass"]);
        assert!(same.score > 1.0);
        assert_eq!(different.score, 0.0);
        // Length penalty: identical vectors, different bigram counts.
        assert_eq!(same.candidate_length, 5);
    }
}
