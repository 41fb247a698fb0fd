//! Word n-grams counted as pycocoevalcap's `precook` does (BLEU and CIDEr-D share it).

use std::collections::HashMap;

use crate::tokenizer::split_python_whitespace;

/// Highest n-gram order of pycocoevalcap's `Bleu(4)` and `Cider()`.
pub const MAX_ORDER: usize = 4;

/// The n-grams (orders 1 to [`MAX_ORDER`]) of one sentence with their counts.
///
/// Entries keep Python's dict order (all unigrams by first occurrence, then bigrams, ...):
/// CIDEr-D sums floating-point terms in that order, and the order changes the last bits.
#[derive(Debug, Clone)]
pub struct NgramCounts {
    /// Number of words (`len(s.split())`).
    pub word_count: usize,
    entries: Vec<NgramEntry>,
    index: HashMap<String, usize>,
}

/// One distinct n-gram: its words joined by single spaces (words never contain spaces), its
/// order index (0 for unigrams) and how often it occurs.
#[derive(Debug, Clone)]
pub struct NgramEntry {
    pub ngram: String,
    pub order: usize,
    pub count: u32,
}

impl NgramCounts {
    /// Counts the n-grams of `sentence`, split on whitespace like Python's `str.split()`.
    pub fn new(sentence: &str) -> NgramCounts {
        let words: Vec<&str> = split_python_whitespace(sentence).collect();
        let mut counts = NgramCounts { word_count: words.len(), entries: Vec::new(), index: HashMap::new() };
        for order in 0..MAX_ORDER {
            for window in words.windows(order + 1) {
                let ngram = window.join(" ");
                match counts.index.get(&ngram) {
                    Some(&at) => counts.entries[at].count += 1,
                    None => {
                        counts.index.insert(ngram.clone(), counts.entries.len());
                        counts.entries.push(NgramEntry { ngram, order, count: 1 });
                    }
                }
            }
        }
        counts
    }

    /// Distinct n-grams in first-occurrence order, unigrams first.
    pub fn entries(&self) -> &[NgramEntry] {
        &self.entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_in_first_occurrence_order() {
        let counts = NgramCounts::new("a b a b");
        let listed: Vec<(&str, u32)> = counts.entries().iter().map(|e| (e.ngram.as_str(), e.count)).collect();
        assert_eq!(listed, [("a", 2), ("b", 2), ("a b", 2), ("b a", 1), ("a b a", 1), ("b a b", 1), ("a b a b", 1)]);
        assert_eq!(counts.word_count, 4);
    }

    #[test]
    fn splits_like_python() {
        assert_eq!(NgramCounts::new("  22\u{a0}3/4  x ").word_count, 3);
        assert_eq!(NgramCounts::new("").word_count, 0);
    }
}
