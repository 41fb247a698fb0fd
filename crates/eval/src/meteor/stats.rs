//! METEOR's sufficient statistics (`MeteorStats`) and score (`MeteorScorer.computeMetrics`).

use serde::Serialize;

use super::align::MODULES;

/// English "rank" task parameters: α, β, γ, δ.
const ALPHA: f64 = 0.85;
const BETA: f64 = 0.2;
const GAMMA: f64 = 0.6;
const DELTA: f64 = 0.75;
/// English module weights: exact, stem, synonym, paraphrase.
const MODULE_WEIGHTS: [f64; MODULES] = [1.0, 0.6, 0.8, 0.6];

/// The 23 numbers the jar prints for a segment (`SCORE`), summed for a corpus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct MeteorStats {
    /// Words in the hypothesis (candidate).
    pub test_length: u64,
    /// Words in the chosen reference.
    pub reference_length: u64,
    pub test_function_words: u64,
    pub reference_function_words: u64,
    /// Per module (exact, stem, synonym, paraphrase): matched hypothesis content words,
    /// reference content words, hypothesis function words, reference function words.
    pub module_matches: [[u64; 4]; MODULES],
    pub chunks: u64,
    pub test_word_matches: u64,
    pub reference_word_matches: u64,
}

impl MeteorStats {
    fn test_total_matches(&self) -> u64 {
        self.module_matches.iter().map(|m| m[0] + m[2]).sum()
    }

    fn reference_total_matches(&self) -> u64 {
        self.module_matches.iter().map(|m| m[1] + m[3]).sum()
    }

    /// Whether the segment matched completely in one chunk (its fragmentation is 0, and its
    /// chunk is left out of corpus totals).
    fn is_perfect(&self) -> bool {
        self.test_total_matches() == self.test_length && self.reference_total_matches() == self.reference_length && self.chunks == 1
    }

    /// Adds a segment as `MeteorStats.addStats` does: the chunk of a perfect segment is not
    /// counted.
    pub fn add(&mut self, segment: &MeteorStats) {
        self.test_length += segment.test_length;
        self.reference_length += segment.reference_length;
        self.test_function_words += segment.test_function_words;
        self.reference_function_words += segment.reference_function_words;
        for (total, m) in self.module_matches.iter_mut().zip(&segment.module_matches) {
            for (t, v) in total.iter_mut().zip(m) {
                *t += v;
            }
        }
        if !segment.is_perfect() {
            self.chunks += segment.chunks;
        }
        self.test_word_matches += segment.test_word_matches;
        self.reference_word_matches += segment.reference_word_matches;
    }

    /// The METEOR score of these statistics (`MeteorScorer.computeMetrics`, English ranking
    /// parameters), with Java's order of floating-point operations.
    pub fn score(&self) -> f64 {
        let f = |v: u64| v as f64;
        let test_weighted_length = DELTA * f(self.test_length - self.test_function_words) + (1.0 - DELTA) * f(self.test_function_words);
        let reference_weighted_length =
            DELTA * f(self.reference_length - self.reference_function_words) + (1.0 - DELTA) * f(self.reference_function_words);
        let mut test_weighted = 0.0;
        let mut reference_weighted = 0.0;
        for (m, w) in self.module_matches.iter().zip(MODULE_WEIGHTS) {
            test_weighted += f(m[0]) * w * DELTA;
        }
        for (m, w) in self.module_matches.iter().zip(MODULE_WEIGHTS) {
            reference_weighted += f(m[1]) * w * DELTA;
        }
        for (m, w) in self.module_matches.iter().zip(MODULE_WEIGHTS) {
            test_weighted += f(m[2]) * w * (1.0 - DELTA);
        }
        for (m, w) in self.module_matches.iter().zip(MODULE_WEIGHTS) {
            reference_weighted += f(m[3]) * w * (1.0 - DELTA);
        }
        let precision = test_weighted / test_weighted_length;
        let recall = reference_weighted / reference_weighted_length;
        let f_mean = 1.0 / (((1.0 - ALPHA) / precision) + (ALPHA / recall));
        let frag = if self.is_perfect() { 0.0 } else { f(self.chunks) / (f(self.test_word_matches + self.reference_word_matches) / 2.0) };
        let penalty = GAMMA * frag.powf(BETA);
        let score = f_mean * (1.0 - penalty);
        if score.is_nan() { 0.0 } else { score.max(0.0) }
    }

    /// The statistics line the jar prints (`14.0 11.0 ...`, 23 numbers).
    pub fn to_jar_line(&self) -> String {
        let mut values = vec![self.test_length, self.reference_length, self.test_function_words, self.reference_function_words];
        for m in &self.module_matches {
            values.extend_from_slice(m);
        }
        values.extend([self.chunks, self.test_word_matches, self.reference_word_matches]);
        values.iter().map(|v| format!("{v}.0")).collect::<Vec<_>>().join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stats line format, and the corpus rule: a perfect segment's chunk is not summed.
    #[test]
    fn corpus_statistics_skip_chunks_of_perfect_segments() {
        let perfect = MeteorStats {
            test_length: 3,
            reference_length: 3,
            module_matches: [[3, 3, 0, 0], [0; 4], [0; 4], [0; 4]],
            chunks: 1,
            test_word_matches: 3,
            reference_word_matches: 3,
            ..MeteorStats::default()
        };
        assert_eq!(perfect.score(), 1.0);
        let mut total = MeteorStats::default();
        total.add(&perfect);
        total.add(&perfect);
        assert_eq!(total.chunks, 0);
        assert_eq!(total.score(), 1.0);
        assert_eq!(
            perfect.to_jar_line(),
            "3.0 3.0 0.0 0.0 3.0 3.0 0.0 0.0 0.0 0.0 0.0 0.0 0.0 0.0 0.0 0.0 0.0 0.0 0.0 0.0 1.0 \
             3.0 3.0"
        );
        // Nothing to match: 0, not NaN.
        assert_eq!(MeteorStats::default().score(), 0.0);
    }

    /// Fragmentation: two chunks over four matched words.
    #[test]
    fn fragmentation_penalty() {
        let stats = MeteorStats {
            test_length: 4,
            reference_length: 4,
            module_matches: [[4, 4, 0, 0], [0; 4], [0; 4], [0; 4]],
            chunks: 2,
            test_word_matches: 4,
            reference_word_matches: 4,
            ..MeteorStats::default()
        };
        let want = 1.0 - 0.6 * (2.0f64 / 4.0).powf(0.2);
        assert!((stats.score() - want).abs() < 1e-15);
    }
}
