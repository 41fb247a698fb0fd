//! `np.mean` for a 1-D float64 array, bit for bit.
//!
//! pycocoevalcap averages per-image ROUGE-L and CIDEr-D scores with `np.mean`, which sums with
//! numpy's pairwise summation (not left to right), so a plain loop can differ in the last bits.
//! The algorithm (numpy `pairwise_sum` for float64, used by `np.add.reduce` on a contiguous
//! array): fewer than 8 values are added left to right; up to 128 values are added with 8
//! interleaved accumulators, combined as `((r0+r1)+(r2+r3))+((r4+r5)+(r6+r7))`, then the
//! remainder left to right; longer arrays are split at half the length rounded down to a
//! multiple of 8 and the two halves summed recursively. `np.mean` divides that sum by the count.

/// Block size below which numpy stops splitting (`PW_BLOCKSIZE`).
const BLOCK: usize = 128;
/// Number of interleaved accumulators (numpy's unroll factor).
const UNROLL: usize = 8;

/// `np.mean(values)`; NaN for an empty slice, as numpy (which also warns).
pub fn numpy_mean(values: &[f64]) -> f64 {
    numpy_sum(values) / values.len() as f64
}

/// `np.sum(values)` (float64, contiguous): numpy's pairwise summation.
pub fn numpy_sum(values: &[f64]) -> f64 {
    // The reduction starts from the additive identity, then adds the pairwise sum.
    0.0 + pairwise_sum(values)
}

fn pairwise_sum(a: &[f64]) -> f64 {
    let n = a.len();
    if n < UNROLL {
        // numpy starts from -0.0 so that a sum of negative zeros stays -0.0.
        a.iter().fold(-0.0, |sum, &x| sum + x)
    } else if n <= BLOCK {
        let mut r = [0.0; UNROLL];
        r.copy_from_slice(&a[..UNROLL]);
        let blocked_end = n - n % UNROLL;
        let mut i = UNROLL;
        while i < blocked_end {
            for (acc, &x) in r.iter_mut().zip(&a[i..i + UNROLL]) {
                *acc += x;
            }
            i += UNROLL;
        }
        let mut sum = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for &x in &a[blocked_end..] {
            sum += x;
        }
        sum
    } else {
        let half = n / 2;
        let split = half - half % UNROLL;
        pairwise_sum(&a[..split]) + pairwise_sum(&a[split..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_arrays_sum_left_to_right() {
        assert_eq!(numpy_sum(&[]), 0.0);
        assert_eq!(numpy_mean(&[1.0, 2.0, 4.0]), 7.0 / 3.0);
        assert!(numpy_mean(&[]).is_nan());
        assert_eq!(numpy_sum(&[0.0, 0.0]).to_bits(), 0.0f64.to_bits());
    }

    #[test]
    fn blocks_use_eight_accumulators() {
        // 1e16 + 1 + ... : left to right would lose every 1.0; the accumulators keep them.
        let mut values = vec![1.0; 16];
        values[0] = 1e16;
        let left_to_right = values.iter().fold(0.0, |s, &x| s + x);
        assert_eq!(left_to_right, 1e16);
        // r0 = 1e16 + 1 (lost), r1..r7 = 2, so the sum is 1e16 + 14.
        assert_eq!(numpy_sum(&values), 1e16 + 14.0);
    }

    #[test]
    fn long_arrays_split_at_multiples_of_eight() {
        let values: Vec<f64> = (0..1000).map(|i| 1.0 / (i as f64 + 1.0)).collect();
        let split = 496; // 1000 / 2 = 500, rounded down to a multiple of 8
        assert_eq!(numpy_sum(&values), pairwise_sum(&values[..split]) + pairwise_sum(&values[split..]));
    }
}
