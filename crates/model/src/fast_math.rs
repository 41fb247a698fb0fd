//! Elementwise functions written so that the compiler vectorises them: libm's `expf` and
//! `tanhf` are scalar calls, one element at a time. Used by the CPU kernels
//! ([`crate::decoder::additive_scores`]); call them inside a [`pulp::Arch::dispatch`]ed loop
//! to get the CPU's widest vectors.

const LOG2_E: f32 = std::f32::consts::LOG2_E;
/// `ln 2` in two parts, so that `x - n ln 2` stays exact for the `n` that occur here.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// Adding and subtracting `1.5 · 2^23` rounds an `f32` of magnitude below `2^22` to the nearest
/// integer.
const ROUNDER: f32 = 12_582_912.0;

/// `e^x` for `x` in `[-87, 0]` (relative error about 1e-7): Cephes' `expf`, without branches.
#[inline(always)]
pub fn exp_nonpositive(x: f32) -> f32 {
    let n = (x * LOG2_E + ROUNDER) - ROUNDER;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    y * f32::from_bits(((n as i32 + 127) << 23) as u32)
}

/// `tanh(x)` with an absolute error below 3e-7 (`(1 - e) / (1 + e)` with `e = e^{-2|x|}`; past
/// `|x| = 9`, `tanh` is 1 in `f32`). NaN stays NaN.
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    let magnitude = x.abs();
    let magnitude = if magnitude > 9.0 { 9.0 } else { magnitude };
    let e = exp_nonpositive(-2.0 * magnitude);
    ((1.0 - e) / (1.0 + e)).copysign(x)
}

/// `Σ a_i b_i` over equal-length slices, in eight lanes (a vectorisable order).
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let (a_body, a_tail) = a.split_at(a.len() - a.len() % 8);
    let (b_body, b_tail) = b.split_at(a_body.len());
    for (x, y) in a_body.chunks_exact(8).zip(b_body.chunks_exact(8)) {
        for k in 0..8 {
            lanes[k] += x[k] * y[k];
        }
    }
    let tail: f32 = a_tail.iter().zip(b_tail).map(|(x, y)| x * y).sum();
    lanes.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_and_tanh_match_libm() {
        let mut worst_exp: f32 = 0.0;
        let mut worst_tanh: f32 = 0.0;
        for i in 0..=200_000 {
            let x = -87.0 + 87.0 * i as f32 / 200_000.0;
            let (got, want) = (exp_nonpositive(x), x.exp());
            worst_exp = worst_exp.max(((got - want) / want).abs());
        }
        for i in -200_000..=200_000 {
            let x = i as f32 / 10_000.0;
            worst_tanh = worst_tanh.max((tanh(x) - x.tanh()).abs());
        }
        assert!(worst_exp < 3e-7, "exp: worst relative error {worst_exp}");
        assert!(worst_tanh < 3e-7, "tanh: worst absolute error {worst_tanh}");
        assert_eq!((tanh(0.0), tanh(100.0), tanh(-100.0), tanh(-0.0).is_sign_negative()), (0.0, 1.0, -1.0, true));
        assert_eq!((tanh(f32::INFINITY), tanh(f32::NEG_INFINITY)), (1.0, -1.0));
        assert!(tanh(f32::NAN).is_nan(), "a NaN must reach the loss, which reports it");
    }

    #[test]
    fn dot_sums_every_product() {
        let a: Vec<f32> = (0..21).map(|i| i as f32 * 0.5).collect();
        let b: Vec<f32> = (0..21).map(|i| 1.0 - i as f32 * 0.1).collect();
        let want: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - want).abs() < 1e-4);
    }
}
