//! ROUGE-L as pycocoevalcap's `Rouge()` computes it (SPEC.md §4), β = 1.2.
//!
//! Quirks kept on purpose: sentences are split on single spaces (`s.split(" ")`), so an empty
//! candidate is one empty word and matches an empty reference; and the precision and the
//! recall are maximised over the references independently, so they may come from different
//! references. The corpus score is `np.mean` of the image scores.

use rayon::prelude::*;
use serde::Serialize;

use crate::TokenizedImage;
use crate::numpy_mean::numpy_mean;

/// Recall weight of pycocoevalcap's F-measure.
const BETA: f64 = 1.2;

/// ROUGE-L scores of a set of images.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RougeScores {
    /// `np.mean` of the image scores (pycocoevalcap's `ROUGE_L`).
    pub corpus: f64,
    /// Score of each image, in input order.
    pub per_image: Vec<f64>,
}

/// ROUGE-L of each image and their mean. Every image needs at least one reference.
pub fn rouge_l(images: &[TokenizedImage]) -> RougeScores {
    let per_image: Vec<f64> = images.par_iter().map(|image| rouge_l_image(&image.candidate, &image.references)).collect();
    RougeScores { corpus: numpy_mean(&per_image), per_image }
}

/// ROUGE-L of one candidate against its references.
pub fn rouge_l_image<S: AsRef<str>>(candidate: &str, references: &[S]) -> f64 {
    assert!(!references.is_empty(), "ROUGE-L needs at least one reference");
    let candidate_words: Vec<&str> = candidate.split(' ').collect();
    let mut best_precision = f64::NEG_INFINITY;
    let mut best_recall = f64::NEG_INFINITY;
    for reference in references {
        let reference_words: Vec<&str> = reference.as_ref().split(' ').collect();
        let lcs = longest_common_subsequence(&reference_words, &candidate_words) as f64;
        best_precision = best_precision.max(lcs / candidate_words.len() as f64);
        best_recall = best_recall.max(lcs / reference_words.len() as f64);
    }
    if best_precision != 0.0 && best_recall != 0.0 {
        let beta2 = BETA * BETA;
        ((1.0 + beta2) * best_precision * best_recall) / (best_recall + beta2 * best_precision)
    } else {
        0.0
    }
}

/// Length of the longest common subsequence of two word sequences (one DP row at a time).
fn longest_common_subsequence(a: &[&str], b: &[&str]) -> usize {
    let mut previous = vec![0usize; b.len() + 1];
    let mut current = vec![0usize; b.len() + 1];
    for word_a in a {
        for (j, word_b) in b.iter().enumerate() {
            current[j + 1] = if word_a == word_b { previous[j] + 1 } else { previous[j + 1].max(current[j]) };
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lcs_lengths() {
        assert_eq!(longest_common_subsequence(&["a", "b", "c", "d"], &["a", "c", "d", "b"]), 3);
        assert_eq!(longest_common_subsequence(&[], &["a"]), 0);
    }

    #[test]
    fn precision_and_recall_come_from_different_references() {
        // Precision 1 from the long reference, recall 1 from the short one.
        let score = rouge_l_image("a b", &["a b c d", "a"]);
        assert_eq!(score, 1.0);
    }

    #[test]
    fn empty_candidate() {
        assert_eq!(rouge_l_image("", &["a dog"]), 0.0);
        // `"".split(" ")` is `[""]`, which matches an empty reference.
        assert_eq!(rouge_l_image("", &[""]), 1.0);
    }
}
