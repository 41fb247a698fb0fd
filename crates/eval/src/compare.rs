//! Paired comparison of two systems scored on the same images: for each metric the difference
//! of means with a paired-bootstrap confidence interval and an approximate-randomisation
//! p-value, as in Koehn (2004) and Riezler & Maxwell (2005), plus per-image win/tie/loss.
//!
//! Both tests work on per-image scores, so the statistic is the mean per-image score: exactly
//! the corpus score for ROUGE-L and CIDEr-D, and the mean of per-image BLEU for BLEU (corpus
//! BLEU pools n-gram counts, which per-image scores do not carry).
//!
//! Randomness comes from the caller (`next_u64`), so a seeded generator makes every interval
//! and p-value reproducible.

use serde::Serialize;

/// Differences smaller than this count as ties (scores are equal up to float noise).
pub const TIE_TOLERANCE: f64 = 1e-12;

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CompareOptions {
    /// Bootstrap resamples (at least 10,000 for a stable 95% interval).
    pub bootstrap_resamples: usize,
    /// Approximate-randomisation permutations.
    pub permutations: usize,
    /// Two-sided level: the interval is (1 - alpha) and B is "significantly better" when the
    /// interval's lower bound is above 0 and p < alpha.
    pub alpha: f64,
}

impl Default for CompareOptions {
    fn default() -> Self {
        CompareOptions { bootstrap_resamples: 10_000, permutations: 10_000, alpha: 0.05 }
    }
}

/// One metric's comparison, B minus A.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricComparison {
    pub metric: String,
    pub mean_a: f64,
    pub mean_b: f64,
    /// mean_b - mean_a.
    pub difference: f64,
    /// Paired-bootstrap percentile interval of the difference.
    pub interval: (f64, f64),
    /// Two-sided approximate-randomisation p-value, (hits + 1) / (permutations + 1).
    pub p_value: f64,
    /// Images where B scores higher / the same / lower.
    pub wins: usize,
    pub ties: usize,
    pub losses: usize,
    /// B is better and the difference is significant at `alpha`.
    pub b_significantly_better: bool,
    /// B is worse and the difference is significant at `alpha`.
    pub b_significantly_worse: bool,
}

/// Compares per-image scores `a[i]` and `b[i]` of the same images.
///
/// Panics if the slices differ in length or are empty: callers align images first.
pub fn compare_metric(
    metric: &str,
    a: &[f64],
    b: &[f64],
    options: &CompareOptions,
    next_u64: &mut impl FnMut() -> u64,
) -> MetricComparison {
    assert_eq!(a.len(), b.len(), "per-image scores must be aligned");
    assert!(!a.is_empty(), "no images to compare");
    let n = a.len();
    let deltas: Vec<f64> = b.iter().zip(a).map(|(b, a)| b - a).collect();
    let mean = |values: &[f64]| values.iter().sum::<f64>() / values.len() as f64;
    let difference = mean(&deltas);

    let mut below = |bound: usize| -> usize {
        // Uniform in 0..bound by rejection, so that no index is favoured.
        let bound = bound as u64;
        let zone = u64::MAX - u64::MAX % bound;
        loop {
            let x = next_u64();
            if x < zone {
                return (x % bound) as usize;
            }
        }
    };
    let mut resampled: Vec<f64> =
        (0..options.bootstrap_resamples).map(|_| (0..n).map(|_| deltas[below(n)]).sum::<f64>() / n as f64).collect();
    resampled.sort_by(f64::total_cmp);
    let interval = (percentile(&resampled, options.alpha / 2.0), percentile(&resampled, 1.0 - options.alpha / 2.0));

    // Swapping A and B on an image flips the sign of its delta.
    let observed = difference.abs();
    let mut hits = 0usize;
    for _ in 0..options.permutations {
        let mut sum = 0.0;
        let mut bits = 0u64;
        for (i, d) in deltas.iter().enumerate() {
            if i % 64 == 0 {
                bits = next_u64();
            }
            sum += if bits & 1 == 1 { -d } else { *d };
            bits >>= 1;
        }
        if (sum / n as f64).abs() >= observed - TIE_TOLERANCE {
            hits += 1;
        }
    }
    let p_value = (hits + 1) as f64 / (options.permutations + 1) as f64;

    let wins = deltas.iter().filter(|d| **d > TIE_TOLERANCE).count();
    let losses = deltas.iter().filter(|d| **d < -TIE_TOLERANCE).count();
    let significant = p_value < options.alpha;
    MetricComparison {
        metric: metric.to_string(),
        mean_a: mean(a),
        mean_b: mean(b),
        difference,
        interval,
        p_value,
        wins,
        ties: n - wins - losses,
        losses,
        b_significantly_better: significant && interval.0 > 0.0,
        b_significantly_worse: significant && interval.1 < 0.0,
    }
}

/// Linear-interpolation percentile (numpy's default) of sorted values, q in [0, 1].
fn percentile(sorted: &[f64], q: f64) -> f64 {
    let position = q * (sorted.len() - 1) as f64;
    let low = position.floor() as usize;
    let high = position.ceil() as usize;
    sorted[low] + (sorted[high] - sorted[low]) * (position - low as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64*, a reproducible stream for tests (the CLI passes the data crate's SplitMix64).
    fn generator(seed: u64) -> impl FnMut() -> u64 {
        let mut state = seed.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1;
        move || {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
    }

    fn noisy(n: usize, seed: u64, shift: f64) -> Vec<f64> {
        let mut next = generator(seed);
        (0..n).map(|_| (next() >> 11) as f64 / (1u64 << 53) as f64 + shift).collect()
    }

    #[test]
    fn a_clear_improvement_is_significant() {
        let a = noisy(300, 1, 0.0);
        let b: Vec<f64> = a.iter().zip(noisy(300, 2, 0.0)).map(|(a, noise)| a + 0.1 + 0.05 * (noise - 0.5)).collect();
        let result = compare_metric("CIDEr", &a, &b, &CompareOptions::default(), &mut generator(7));
        assert!((result.difference - 0.1).abs() < 0.01, "{result:?}");
        assert!(result.interval.0 > 0.09 && result.interval.1 < 0.11, "{result:?}");
        assert!(result.p_value < 0.001 && result.b_significantly_better && !result.b_significantly_worse);
        assert_eq!(result.wins, 300);
    }

    #[test]
    fn identical_systems_are_not_significant() {
        let a = noisy(200, 3, 0.0);
        let result = compare_metric("CIDEr", &a, &a, &CompareOptions::default(), &mut generator(7));
        assert_eq!((result.wins, result.ties, result.losses), (0, 200, 0));
        assert_eq!(result.p_value, 1.0);
        assert!(!result.b_significantly_better && !result.b_significantly_worse);
    }

    #[test]
    fn independent_noise_is_rarely_significant_and_seeds_reproduce() {
        let a = noisy(200, 4, 0.0);
        let b = noisy(200, 5, 0.0);
        let options = CompareOptions { bootstrap_resamples: 2000, permutations: 2000, alpha: 0.05 };
        let first = compare_metric("BLEU", &a, &b, &options, &mut generator(9));
        let again = compare_metric("BLEU", &a, &b, &options, &mut generator(9));
        assert_eq!(first, again);
        assert!(first.interval.0 < first.difference && first.difference < first.interval.1);
        // The interval contains 0 exactly when the test does not reject (up to resampling noise).
        assert_eq!(first.interval.0 > 0.0 || first.interval.1 < 0.0, first.p_value < 0.05, "{first:?}");
    }

    #[test]
    fn percentile_matches_numpy_linear() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 0.5), 2.5);
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&v, 1.0), 4.0);
        assert!((percentile(&v, 0.025) - 1.075).abs() < 1e-12);
    }
}
