//! Test inputs and comparisons shared by the kernels' tests (each checks a fast path against
//! the composed tensor operations it replaces).

use burn::prelude::*;

/// Deterministic values spread over `[-range/2, range/2]`, different for each `seed`.
pub fn filled<B: Backend, const D: usize>(shape: [usize; D], seed: usize, range: f32) -> Tensor<B, D> {
    let n: usize = shape.iter().product();
    let values: Vec<f32> = (0..n).map(|i| (((i * 7919 + seed * 104_729) % 2003) as f32 / 2003.0 - 0.5) * range).collect();
    Tensor::from_data(TensorData::new(values, shape), &Default::default())
}

/// Asserts `got` and `want` agree element by element within `tolerance · (1 + |want|)`.
pub fn assert_close<B: Backend, const D: usize>(got: Tensor<B, D>, want: Tensor<B, D>, tolerance: f32, what: &str) {
    let (got, want) = (got.into_data().to_vec::<f32>().unwrap(), want.into_data().to_vec::<f32>().unwrap());
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (x, y)) in got.iter().zip(&want).enumerate() {
        assert!((x - y).abs() <= tolerance * (1.0 + y.abs()), "{what} [{i}]: {x} vs {y}");
    }
}
