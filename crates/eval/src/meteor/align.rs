//! METEOR 1.5's aligner (`Aligner`, `Stage`, the four matchers and the beam search), quirks
//! included:
//!
//! * words are compared by Java `String.hashCode()` (exact matches, "words differ" tests,
//!   stems and the identical-sentences shortcut);
//! * the beam search ranks partial alignments by `matches1 + matches2`, each match adding
//!   `(int)(old + length * weight)` with weights 1.0 (exact) and 0.5 (others), so a one-word
//!   stem, synonym or paraphrase match adds nothing; then by fewer chunks, then by smaller
//!   distance;
//! * a new branch adds its distance to its *parent* path (and so to the later siblings,
//!   which copy the parent), never to itself.

use std::rc::Rc;

use super::Meteor;
use super::paraphrase::{occurs_at, phrase_len};
use super::stats::MeteorStats;
use super::stem::stem_utf16;
use super::synonym::intersect;
use crate::fast_hash::{FastMap, hash_bytes};

const EXACT: usize = 0;
const STEM: usize = 1;
const SYNONYM: usize = 2;
const PARAPHRASE: usize = 3;
pub(crate) const MODULES: usize = 4;

/// Alignment weights used while searching (`MeteorScorer` sets 1.0, 0.5, 0.5, 0.5).
const SEARCH_WEIGHTS: [f64; MODULES] = [1.0, 0.5, 0.5, 0.5];
const BEAM_SIZE: usize = 40;

/// One sentence prepared for alignment: its words and what the matchers compare.
#[derive(Debug, Clone)]
pub(crate) struct Sentence<'m> {
    hashes: Vec<i32>,
    stem_hashes: Vec<i32>,
    synsets: Vec<Rc<[i32]>>,
    words: Vec<String>,
    function_word: Vec<bool>,
    /// The paraphrase table's phrases found in the sentence, as `(start, length in words,
    /// paraphrase, [`word_key`] of its first word)`, by start, then length, then file order:
    /// looked up once per sentence, not once per sentence it is aligned with.
    paraphrases: Vec<(usize, usize, &'m [u8], u64)>,
    /// Where each synset and each word (by [`word_key`]) occurs, as bit masks of positions:
    /// the matchers then test only the positions that can match, in the same order. `None`
    /// for sentences longer than 128 words, which test every position.
    positions: Option<Positions>,
}

#[derive(Debug, Clone, Default)]
struct Positions {
    synsets: FastMap<i32, u128>,
    words: FastMap<u64, u128>,
}

/// A word's bytes, hashed: where a phrase's first word may occur.
fn word_key(word: &[u8]) -> u64 {
    hash_bytes(word)
}

/// The positions below `n` in `mask` (all of them without a mask), ascending.
fn positions(mask: Option<u128>, n: usize) -> impl Iterator<Item = usize> {
    (0..n).filter(move |&at| mask.is_none_or(|mask| mask >> at & 1 == 1))
}

/// What the matchers compare of one word.
#[derive(Debug, Clone)]
pub(crate) struct WordFacts {
    hash: i32,
    stem_hash: i32,
    synsets: Rc<[i32]>,
    function_word: bool,
}

/// The facts of the words seen so far, so that each word's stem and synsets are worked out
/// once per scoring thread rather than once per sentence.
#[derive(Debug, Default)]
pub(crate) struct WordMemo {
    facts: FastMap<String, WordFacts>,
}

impl WordMemo {
    fn facts(&mut self, word: &str, meteor: &Meteor) -> WordFacts {
        if let Some(facts) = self.facts.get(word) {
            return facts.clone();
        }
        let utf16: Vec<u16> = word.encode_utf16().collect();
        let facts = WordFacts {
            hash: java_hash(&utf16),
            stem_hash: java_hash(&stem_utf16(&utf16)),
            synsets: meteor.synonyms.all_synsets(word).into(),
            function_word: meteor.function_words.contains(&word.to_lowercase()),
        };
        self.facts.insert(word.to_string(), facts.clone());
        facts
    }
}

impl<'m> Sentence<'m> {
    pub(crate) fn new(words: &[&str], meteor: &'m Meteor, memo: &mut WordMemo) -> Sentence<'m> {
        let mut paraphrases = Vec::new();
        for start in 0..words.len() {
            meteor.paraphrases.paths(words, start, |length, paraphrase| {
                let first = paraphrase.split(|&b| b == b' ').next().unwrap_or(paraphrase);
                paraphrases.push((start, length, paraphrase, word_key(first)));
            });
        }
        let facts: Vec<WordFacts> = words.iter().map(|w| memo.facts(w, meteor)).collect();
        let positions = (words.len() <= 128).then(|| {
            let mut positions = Positions::default();
            for (at, (word, facts)) in words.iter().zip(&facts).enumerate() {
                for &synset in facts.synsets.iter() {
                    *positions.synsets.entry(synset).or_insert(0) |= 1 << at;
                }
                *positions.words.entry(word_key(word.as_bytes())).or_insert(0) |= 1 << at;
            }
            positions
        });
        Sentence {
            positions,
            hashes: facts.iter().map(|f| f.hash).collect(),
            stem_hashes: facts.iter().map(|f| f.stem_hash).collect(),
            function_word: facts.iter().map(|f| f.function_word).collect(),
            synsets: facts.into_iter().map(|f| f.synsets).collect(),
            words: words.iter().map(|w| w.to_string()).collect(),
            paraphrases,
        }
    }

    fn len(&self) -> usize {
        self.hashes.len()
    }

    /// The positions of the word whose [`word_key`] is `first` (`None`: unknown, test them
    /// all).
    fn starts_of(&self, first: u64) -> Option<u128> {
        self.positions.as_ref().map(|p| p.words.get(&first).copied().unwrap_or(0))
    }
}

/// Java's `String.hashCode()` over UTF-16 code units.
pub(crate) fn java_hash(units: &[u16]) -> i32 {
    units.iter().fold(0i32, |h, &u| h.wrapping_mul(31).wrapping_add(i32::from(u)))
}

/// A candidate match: reference words `start..start + length` with hypothesis words
/// `match_start..match_start + match_length`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Match {
    pub start: usize,
    pub length: usize,
    pub match_start: usize,
    pub match_length: usize,
    pub module: usize,
}

/// The matches of all modules, per reference position, and how often each word is covered.
struct Stage {
    matches: Vec<Vec<Match>>,
    hyp_coverage: Vec<u32>,
    ref_coverage: Vec<u32>,
}

impl Stage {
    fn add(&mut self, m: Match) {
        for k in 0..m.match_length {
            self.hyp_coverage[m.match_start + k] += 1;
        }
        for k in 0..m.length {
            self.ref_coverage[m.start + k] += 1;
        }
        self.matches[m.start].push(m);
    }

    fn single_word(&mut self, module: usize, r: usize, h: usize) {
        self.add(Match { start: r, length: 1, match_start: h, match_length: 1, module });
    }
}

#[derive(Debug, Clone)]
struct Partial {
    /// The matches the search chose, latest first, shared with the paths it branched from
    /// (so that branching copies no list); the fixed one-to-one matches are not in it.
    chosen: Option<Rc<Chosen>>,
    matches1: i32,
    matches2: i32,
    chunks: i32,
    idx: usize,
    last_match_end: Option<usize>,
    distance: i32,
    hyp_used: Used,
    ref_used: Used,
}

/// A match the search chose, and the ones chosen before it.
#[derive(Debug)]
struct Chosen {
    at: usize,
    m: Match,
    before: Option<Rc<Chosen>>,
}

/// Which words a partial alignment has used: bits kept inline for sentences of up to 128
/// words, so that branching a path (the beam search's inner loop) copies no heap memory for
/// them.
#[derive(Debug, Clone)]
enum Used {
    Inline(u128),
    Heap(Vec<bool>),
}

impl Used {
    fn new(words: usize) -> Used {
        if words <= 128 { Used::Inline(0) } else { Used::Heap(vec![false; words]) }
    }

    fn get(&self, word: usize) -> bool {
        match self {
            Used::Inline(bits) => bits >> word & 1 == 1,
            Used::Heap(flags) => flags[word],
        }
    }

    fn set(&mut self, word: usize) {
        match self {
            Used::Inline(bits) => *bits |= 1 << word,
            Used::Heap(flags) => flags[word] = true,
        }
    }
}

impl Partial {
    fn is_used(&self, m: &Match) -> bool {
        (0..m.length).any(|k| self.ref_used.get(m.start + k)) || (0..m.match_length).any(|k| self.hyp_used.get(m.match_start + k))
    }

    fn set_used(&mut self, m: &Match) {
        for k in 0..m.length {
            self.ref_used.set(m.start + k);
        }
        for k in 0..m.match_length {
            self.hyp_used.set(m.match_start + k);
        }
    }

    /// Adds a match's weighted sizes the way Java's `int += int * double` does.
    fn count(&mut self, m: &Match) {
        let w = SEARCH_WEIGHTS[m.module];
        self.matches1 = (f64::from(self.matches1) + m.match_length as f64 * w) as i32;
        self.matches2 = (f64::from(self.matches2) + m.length as f64 * w) as i32;
        if self.last_match_end.is_some_and(|end| m.match_start != end) {
            self.chunks += 1;
        }
        self.idx = m.start + m.length;
        self.last_match_end = Some(m.match_start + m.match_length);
    }
}

/// `Constants.PARTIAL_COMPARE_TOTAL`.
fn compare(x: &Partial, y: &Partial) -> std::cmp::Ordering {
    (y.matches1 + y.matches2).cmp(&(x.matches1 + x.matches2)).then(x.chunks.cmp(&y.chunks)).then(x.distance.cmp(&y.distance))
}

fn distance(m: &Match) -> i32 {
    (m.start as i32 - m.match_start as i32).abs()
}

/// Aligns hypothesis `hyp` (line 1) with reference `reference` (line 2) and returns the
/// sufficient statistics of `MeteorScorer.getMeteorStats(Alignment)`.
pub(crate) fn align(hyp: &Sentence, reference: &Sentence) -> MeteorStats {
    statistics(hyp, reference, &best_alignment(hyp, reference))
}

/// The chosen match at each reference position (`None` inside multi-word matches too).
fn best_alignment(hyp: &Sentence, reference: &Sentence) -> Vec<Option<Match>> {
    let (n1, n2) = (hyp.len(), reference.len());
    let mut stage = Stage { matches: vec![Vec::new(); n2], hyp_coverage: vec![0; n1], ref_coverage: vec![0; n2] };
    // Identical sentences (by hash) only get exact matches.
    let identical = hyp.hashes == reference.hashes;

    // Exact
    for r in 0..n2 {
        for h in 0..n1 {
            if hyp.hashes[h] == reference.hashes[r] {
                stage.single_word(EXACT, r, h);
            }
        }
    }
    if !identical {
        // Stem
        for r in 0..n2 {
            for h in 0..n1 {
                if hyp.stem_hashes[h] == reference.stem_hashes[r] && hyp.hashes[h] != reference.hashes[r] {
                    stage.single_word(STEM, r, h);
                }
            }
        }
        // Synonym
        for r in 0..n2 {
            let sharing = hyp
                .positions
                .as_ref()
                .map(|p| reference.synsets[r].iter().fold(0, |mask, s| mask | p.synsets.get(s).copied().unwrap_or(0)));
            for h in positions(sharing, n1) {
                if intersect(&hyp.synsets[h], &reference.synsets[r]) && hyp.hashes[h] != reference.hashes[r] {
                    stage.single_word(SYNONYM, r, h);
                }
            }
        }
        // Paraphrase: reference phrases in the reference, then in the hypothesis.
        for &(r, len, paraphrase, first) in &reference.paraphrases {
            for h in positions(hyp.starts_of(first), n1) {
                if occurs_at(&hyp.words, h, paraphrase) {
                    stage.add(Match { start: r, length: len, match_start: h, match_length: phrase_len(paraphrase), module: PARAPHRASE });
                }
            }
        }
        for &(h, len, paraphrase, first) in &hyp.paraphrases {
            for r in positions(reference.starts_of(first), n2) {
                if occurs_at(&reference.words, r, paraphrase) {
                    stage.add(Match { start: r, length: phrase_len(paraphrase), match_start: h, match_length: len, module: PARAPHRASE });
                }
            }
        }
    }

    // One-to-one matches over words nothing else covers are fixed.
    let mut fixed = vec![None; n2];
    let mut initial = Partial {
        chosen: None,
        matches1: 0,
        matches2: 0,
        chunks: 0,
        idx: 0,
        last_match_end: None,
        distance: 0,
        hyp_used: Used::new(n1),
        ref_used: Used::new(n2),
    };
    for (i, candidates) in stage.matches.iter().enumerate() {
        if let [m] = candidates.as_slice() {
            let overlap = (0..m.length).any(|k| stage.ref_coverage[i + k] != 1)
                || (0..m.match_length).any(|k| stage.hyp_coverage[m.match_start + k] != 1);
            if !overlap {
                fixed[i] = Some(*m);
                initial.set_used(m);
            }
        }
    }

    let mut matches = fixed.clone();
    let mut chosen = resolve(&stage, &fixed, initial).chosen;
    while let Some(node) = chosen {
        matches[node.at] = Some(node.m);
        chosen = node.before.clone();
    }
    matches
}

/// The left-to-right beam search (`Aligner.resolve`).
fn resolve(stage: &Stage, fixed: &[Option<Match>], start: Partial) -> Partial {
    let n2 = stage.matches.len();
    let mut next = vec![start];
    for current in 0..=n2 {
        let mut paths = std::mem::take(&mut next);
        paths.sort_by(compare);
        // Java falls back on the best path if every path died (never seen in practice; a
        // path only dies unchanged, so the first one dropped is that path).
        let mut first_dropped = None;
        for (rank, mut path) in paths.into_iter().take(BEAM_SIZE).enumerate() {
            if current == n2 {
                if path.last_match_end.is_some() {
                    path.chunks += 1;
                }
                next.push(path);
                continue;
            }
            if path.ref_used.get(current) {
                if current < path.idx {
                    next.push(path);
                } else if let Some(m) = fixed[path.idx] {
                    // A fixed match
                    path.count(&m);
                    path.distance += distance(&m);
                    next.push(path);
                } else if rank == 0 {
                    first_dropped = Some(path);
                }
                continue;
            }
            for m in &stage.matches[current] {
                if path.is_used(m) {
                    continue;
                }
                let mut branch = path.clone();
                branch.set_used(m);
                branch.chosen = Some(Rc::new(Chosen { at: current, m: *m, before: branch.chosen.take() }));
                branch.count(m);
                // Java adds the distance to the parent, not to the branch.
                path.distance += distance(m);
                next.push(branch);
            }
            // Skip this position
            if path.last_match_end.is_some() {
                path.chunks += 1;
                path.last_match_end = None;
            }
            path.idx += 1;
            next.push(path);
        }
        if next.is_empty() {
            next.extend(first_dropped);
        }
    }
    next.sort_by(compare);
    next.swap_remove(0)
}

/// Counts of the chosen alignment (`Aligner.align` after the search, then
/// `MeteorScorer.getMeteorStats(Alignment)` for word-level scoring).
fn statistics(hyp: &Sentence, reference: &Sentence, matches: &[Option<Match>]) -> MeteorStats {
    let mut stats = MeteorStats {
        test_length: hyp.len() as u64,
        reference_length: reference.len() as u64,
        test_function_words: hyp.function_word.iter().filter(|&&f| f).count() as u64,
        reference_function_words: reference.function_word.iter().filter(|&&f| f).count() as u64,
        ..MeteorStats::default()
    };
    for m in matches.iter().flatten() {
        let module = &mut stats.module_matches[m.module];
        for k in 0..m.match_length {
            if hyp.function_word[m.match_start + k] {
                module[2] += 1;
            } else {
                module[0] += 1;
            }
        }
        for k in 0..m.length {
            if reference.function_word[m.start + k] {
                module[3] += 1;
            } else {
                module[1] += 1;
            }
        }
    }
    // Chunks, recounted along the reference.
    let mut chunks = 0;
    let mut idx = 0;
    let mut last_match_end: Option<usize> = None;
    while idx < matches.len() {
        match matches[idx] {
            None => {
                if last_match_end.take().is_some() {
                    chunks += 1;
                }
                idx += 1;
            }
            Some(m) => {
                if last_match_end.is_some_and(|end| m.match_start != end) {
                    chunks += 1;
                }
                idx = m.start + m.length;
                last_match_end = Some(m.match_start + m.match_length);
            }
        }
    }
    if last_match_end.is_some() {
        chunks += 1;
    }
    stats.chunks = chunks;
    for module in &stats.module_matches {
        stats.test_word_matches += module[0] + module[2];
        stats.reference_word_matches += module[1] + module[3];
    }
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sentence<'m>(text: &str, meteor: &'m Meteor) -> Sentence<'m> {
        let words: Vec<&str> = text.split(' ').collect();
        Sentence::new(&words, meteor, &mut WordMemo::default())
    }

    fn matched(alignment: &[Option<Match>]) -> Vec<(usize, usize, usize)> {
        alignment.iter().flatten().map(|m| (m.start, m.match_start, m.module)).collect()
    }

    /// Java's `int += int * double`: a one-word non-exact match adds nothing to the search
    /// score, a two-word paraphrase adds one per side.
    #[test]
    fn search_weights_truncate_to_int() {
        let mut path = Partial {
            chosen: None,
            matches1: 0,
            matches2: 0,
            chunks: 0,
            idx: 0,
            last_match_end: None,
            distance: 0,
            hyp_used: Used::new(4),
            ref_used: Used::new(4),
        };
        let stem = Match { start: 0, length: 1, match_start: 0, match_length: 1, module: STEM };
        path.count(&stem);
        assert_eq!((path.matches1, path.matches2), (0, 0));
        let paraphrase = Match { start: 1, length: 3, match_start: 1, match_length: 2, module: PARAPHRASE };
        path.count(&paraphrase);
        assert_eq!((path.matches1, path.matches2), (1, 1));
        let exact = Match { start: 3, length: 1, match_start: 3, match_length: 1, module: EXACT };
        path.count(&exact);
        assert_eq!((path.matches1, path.matches2), (2, 2));
    }

    /// A branch adds its distance to its parent (and so to its later siblings), not to
    /// itself: for reference `x a` and hypothesis `a a y`, the jar aligns the reference's `a`
    /// with the hypothesis' first `a` (distance 1) rather than the second (distance 0).
    #[test]
    fn branch_distance_goes_to_the_parent() {
        let meteor = Meteor::for_tests(&[], "", "", "");
        let hyp = sentence("a a y", &meteor);
        let reference = sentence("x a", &meteor);
        assert_eq!(matched(&best_alignment(&hyp, &reference)), [(1, 0, EXACT)]);
    }

    /// Stem matches need different words; one-to-one matches nothing else covers are fixed
    /// before the search.
    #[test]
    fn exact_and_stem_matches() {
        let meteor = Meteor::for_tests(&["the"], "", "", "");
        let hyp = sentence("the dogs were running", &meteor);
        let reference = sentence("the dog runs", &meteor);
        assert_eq!(matched(&best_alignment(&hyp, &reference)), [(0, 0, EXACT), (1, 1, STEM), (2, 3, STEM)]);
        let stats = align(&hyp, &reference);
        assert_eq!(
            stats.to_jar_line(),
            "4.0 3.0 1.0 1.0 0.0 0.0 1.0 1.0 2.0 2.0 0.0 0.0 0.0 0.0 0.0 0.0 0.0 0.0 0.0 0.0 2.0 \
             3.0 3.0"
        );
    }

    #[test]
    fn synonyms_and_paraphrases() {
        let meteor = Meteor::for_tests(&[], "", "couch\n7\nsofa\n7\n", "0.5\nlying on\nresting on\n");
        let hyp = sentence("a cat resting on a sofa", &meteor);
        let reference = sentence("a cat lying on a couch", &meteor);
        let modules: Vec<usize> = matched(&best_alignment(&hyp, &reference)).iter().map(|m| m.2).collect();
        assert_eq!(modules, [EXACT, EXACT, PARAPHRASE, EXACT, SYNONYM]);
    }
}
