//! METEOR 1.5's WordNet synonym dictionary (`SynonymDictionary`): synsets of each word, of
//! its irregular base forms (`english.exceptions`) and of its regular base form (WordNet's
//! `morph` suffix rules).

use crate::fast_hash::FastMap;

use super::normalize::{java_lines, string_tokens};

#[derive(Debug, Clone, Default)]
pub struct SynonymDictionary {
    /// Irregular form → its base forms, in file order.
    word_to_bases: FastMap<String, Vec<String>>,
    /// Word → WordNet synset offsets.
    word_to_synsets: FastMap<String, Vec<i32>>,
}

impl SynonymDictionary {
    /// Parses `english.exceptions` (base line, then a line of its forms) and `english.synsets`
    /// (word line, then a line of synset offsets).
    pub fn parse(exceptions: &str, synsets: &str) -> Result<SynonymDictionary, String> {
        let mut word_to_bases: FastMap<String, Vec<String>> = FastMap::default();
        let mut lines = java_lines(exceptions);
        while let Some(base) = lines.next() {
            let forms = lines.next().unwrap_or("");
            for form in string_tokens(forms) {
                word_to_bases.entry(form.to_string()).or_default().push(base.to_string());
            }
        }
        let mut word_to_synsets = FastMap::default();
        let mut lines = java_lines(synsets);
        while let Some(word) = lines.next() {
            let offsets = lines.next().unwrap_or("");
            let mut set = Vec::new();
            for token in string_tokens(offsets) {
                let offset: i32 = token.parse().map_err(|_| format!("bad synset offset {token:?} for {word:?}"))?;
                set.push(offset);
            }
            set.sort_unstable();
            set.dedup();
            word_to_synsets.insert(word.to_string(), set);
        }
        Ok(SynonymDictionary { word_to_bases, word_to_synsets })
    }

    /// Whether WordNet (as METEOR ships it) has `word`.
    pub fn contains(&self, word: &str) -> bool {
        self.word_to_synsets.contains_key(word)
    }

    /// The base forms `english.exceptions` lists for the irregular form `word` (WordNet's
    /// exception lists of all parts of speech together), in file order.
    pub fn exception_bases(&self, word: &str) -> &[String] {
        self.word_to_bases.get(word).map_or(&[], Vec::as_slice)
    }

    fn synsets(&self, word: &str) -> &[i32] {
        self.word_to_synsets.get(word).map_or(&[], Vec::as_slice)
    }

    /// The synsets the synonym matcher compares for `word`: its own, plus those of its base
    /// forms (irregular forms from the exceptions list, otherwise WordNet's suffix rules).
    /// Sorted, without duplicates.
    pub fn all_synsets(&self, word: &str) -> Vec<i32> {
        let mut set = self.synsets(word).to_vec();
        match self.word_to_bases.get(word) {
            Some(bases) => {
                for base in bases {
                    set.extend_from_slice(self.synsets(base));
                }
            }
            None => set.extend_from_slice(self.synsets(&self.morph(word))),
        }
        set.sort_unstable();
        set.dedup();
        set
    }

    /// `SynonymDictionary.morph`: the first WordNet detachment rule whose result is a known
    /// word, or the empty string. (Words ending in `ss` or of at most 2 code units are returned
    /// unchanged.)
    fn morph(&self, word: &str) -> String {
        const SUFFIXES: [(&str, &str); 20] = [
            ("s", ""),
            ("ses", "s"),
            ("xes", "x"),
            ("zes", "z"),
            ("ches", "ch"),
            ("shes", "sh"),
            ("men", "man"),
            ("ies", "y"),
            ("s", ""),
            ("ies", "y"),
            ("es", "e"),
            ("es", ""),
            ("ed", "e"),
            ("ed", ""),
            ("ing", "e"),
            ("ing", ""),
            ("er", ""),
            ("est", ""),
            ("er", "e"),
            ("est", "e"),
        ];
        let ending = if word.ends_with("ful") { "ful" } else { "" };
        if word.ends_with("ss") || word.encode_utf16().count() <= 2 {
            return word.to_string();
        }
        for (suffix, addition) in SUFFIXES {
            if let Some(stem) = word.strip_suffix(suffix) {
                let candidate = format!("{stem}{addition}");
                if self.word_to_synsets.contains_key(&candidate) {
                    return candidate + ending;
                }
            }
        }
        String::new()
    }
}

/// Whether two sorted synset lists share an element.
pub fn intersect(a: &[i32], b: &[i32]) -> bool {
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => return true,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bases_and_morphology() {
        let dict =
            SynonymDictionary::parse("man\nmen\ngo\nwent gone\n", "man\n1 2\nmen\n9\ngo\n3\nwent\n8\ndog\n4\nbox\n5\nhurry\n6\n").unwrap();
        // Irregular forms: the exceptions list wins over the suffix rules.
        assert_eq!(dict.all_synsets("men"), [1, 2, 9]);
        assert_eq!(dict.all_synsets("went"), [3, 8]);
        // Regular forms.
        assert_eq!(dict.all_synsets("dogs"), [4]);
        assert_eq!(dict.all_synsets("boxes"), [5]);
        assert_eq!(dict.all_synsets("hurries"), [6]);
        // `ss` words are their own base; unknown words have no synsets.
        assert_eq!(dict.all_synsets("glass"), Vec::<i32>::new());
        assert!(intersect(&[1, 5, 9], &[2, 9]));
        assert!(!intersect(&[1, 5], &[2, 9]));
    }
}
