//! Word n-grams counted as pycocoevalcap's `precook` does (BLEU and CIDEr-D share it).
//!
//! Words are numbered ([`Words`], [`WordIds`]) and an n-gram is the fixed-size key of its
//! words' numbers ([`NgramKey`]): two n-grams have the same key exactly when they have the same
//! words, and counting them allocates nothing per n-gram.

use crate::fast_hash::FastMap;
use crate::tokenizer::split_python_whitespace;

/// Highest n-gram order of pycocoevalcap's `Bleu(4)` and `Cider()`.
pub const MAX_ORDER: usize = 4;

/// An n-gram of order 1 to [`MAX_ORDER`]: its words' numbers plus one, 32 bits each, the first
/// word in the lowest bits; the unused high lanes are 0, so the order is part of the key.
pub type NgramKey = u128;

fn key(window: &[u32]) -> NgramKey {
    window.iter().enumerate().fold(0, |key, (k, &id)| key | (u128::from(id) + 1) << (32 * k))
}

/// Numbers for the words of a corpus.
#[derive(Debug, Clone, Default)]
pub struct Words {
    ids: FastMap<String, u32>,
}

impl Words {
    /// Numbers every word of `sentences` (split like Python's `str.split()`), in order of
    /// first occurrence.
    pub fn of_sentences<'s>(sentences: impl IntoIterator<Item = &'s str>) -> Words {
        let mut words = Words::default();
        for sentence in sentences {
            for word in split_python_whitespace(sentence) {
                if !words.ids.contains_key(word) {
                    let id = words.ids.len() as u32;
                    words.ids.insert(word.to_string(), id);
                }
            }
        }
        words
    }

    /// The number of `word`, if the corpus has it.
    pub fn id(&self, word: &str) -> Option<u32> {
        self.ids.get(word).copied()
    }

    /// The key of an n-gram (words joined by whitespace) whose words the corpus all has.
    pub fn key(&self, ngram: &str) -> Option<NgramKey> {
        let ids: Option<Vec<u32>> = split_python_whitespace(ngram).map(|word| self.id(word)).collect();
        ids.filter(|ids| (1..=MAX_ORDER).contains(&ids.len())).map(|ids| key(&ids))
    }
}

/// Word numbers for sentences compared with each other (a candidate and its references): a
/// corpus's numbers, and new ones, beyond the corpus's, for its other words.
pub struct WordIds<'w, 's> {
    words: &'w Words,
    others: FastMap<&'s str, u32>,
}

impl<'w, 's> WordIds<'w, 's> {
    pub fn new(words: &'w Words) -> Self {
        WordIds { words, others: FastMap::default() }
    }

    /// The numbers of `sentence`'s words (split like Python's `str.split()`).
    pub fn sentence(&mut self, sentence: &'s str) -> Vec<u32> {
        split_python_whitespace(sentence)
            .map(|word| match self.words.id(word) {
                Some(id) => id,
                None => {
                    let next = (self.words.ids.len() + self.others.len()) as u32;
                    *self.others.entry(word).or_insert(next)
                }
            })
            .collect()
    }
}

/// The n-grams (orders 1 to [`MAX_ORDER`]) of one sentence with their counts.
///
/// Entries keep Python's dict order (all unigrams by first occurrence, then bigrams, ...):
/// CIDEr-D sums floating-point terms in that order, and the order changes the last bits.
#[derive(Debug, Clone)]
pub struct NgramCounts {
    /// Number of words (`len(s.split())`).
    pub word_count: usize,
    entries: Vec<NgramEntry>,
    index: FastMap<NgramKey, usize>,
}

/// One distinct n-gram: its key, its order index (0 for unigrams) and how often it occurs.
#[derive(Debug, Clone, Copy)]
pub struct NgramEntry {
    pub key: NgramKey,
    pub order: usize,
    pub count: u32,
}

impl NgramCounts {
    /// Counts the n-grams of a sentence given as word numbers.
    pub fn new(words: &[u32]) -> NgramCounts {
        let capacity = words.len() * MAX_ORDER;
        let mut counts = NgramCounts { word_count: words.len(), entries: Vec::with_capacity(capacity), index: FastMap::default() };
        counts.index.reserve(capacity);
        for order in 0..MAX_ORDER {
            for window in words.windows(order + 1) {
                let key = key(window);
                match counts.index.get(&key) {
                    Some(&at) => counts.entries[at].count += 1,
                    None => {
                        counts.index.insert(key, counts.entries.len());
                        counts.entries.push(NgramEntry { key, order, count: 1 });
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

    /// The position of the n-gram `key` in [`NgramCounts::entries`].
    pub fn position(&self, key: NgramKey) -> Option<usize> {
        self.index.get(&key).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(sentence: &str) -> (Words, NgramCounts) {
        let words = Words::of_sentences([sentence]);
        let ids = WordIds::new(&words).sentence(sentence);
        let counts = NgramCounts::new(&ids);
        (words, counts)
    }

    #[test]
    fn counts_in_first_occurrence_order() {
        let (words, counts) = counts("a b a b");
        let key = |ngram: &str| words.key(ngram).unwrap();
        let listed: Vec<(NgramKey, u32)> = counts.entries().iter().map(|e| (e.key, e.count)).collect();
        let expected = [("a", 2), ("b", 2), ("a b", 2), ("b a", 1), ("a b a", 1), ("b a b", 1), ("a b a b", 1)];
        assert_eq!(listed, expected.map(|(ngram, count)| (key(ngram), count)));
        assert_eq!(counts.word_count, 4);
        assert_ne!(key("a"), key("a a"), "orders must differ in the key");
    }

    #[test]
    fn splits_like_python() {
        assert_eq!(counts("  22\u{a0}3/4  x ").1.word_count, 3);
        assert_eq!(counts("").1.word_count, 0);
    }

    #[test]
    fn words_outside_the_corpus_are_numbered_apart_and_consistently() {
        let words = Words::of_sentences(["a dog"]);
        let mut ids = WordIds::new(&words);
        let first = ids.sentence("a cat and a bird");
        let second = ids.sentence("bird cat");
        assert_eq!(first, [0, 2, 3, 0, 4]);
        assert_eq!(second, [4, 2]);
        assert_eq!(words.key("dog a"), Some(key(&[1, 0])));
        assert_eq!(words.key("cat"), None);
    }
}
