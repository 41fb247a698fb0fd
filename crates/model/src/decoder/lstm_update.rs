//! The LSTM cell's element-wise update, `c' = σ(f) c + σ(i) tanh(g)`, `h' = σ(o) tanh(c')`, from
//! the gate pre-activations `[N, 4H]` (order i, f, g, o) and the cell state `[N, H]`.
//!
//! Composed of tensor operations it is four slices, five activations, four products and a sum
//! forward, and about twice as many operations backward: on a GPU, that many kernel launches per
//! time step for `N × H` elements each. On CubeCL backends (CUDA; wgpu, where the tests run it)
//! and with `CAPTION_FUSED_KERNELS=1`, it is one kernel forward and one backward ([`cube`]);
//! otherwise, and on CUDA with burn's `fusion` feature, it is composed ([`composed_update`]). The
//! fused kernels stay opt-in until a GPU benchmark shows them faster (docs/benchmarks.md).

use burn::prelude::*;
use burn::tensor::activation::sigmoid;

/// The environment variable that turns the fused GPU kernels on (`1`).
pub const FUSED_KERNELS_VARIABLE: &str = "CAPTION_FUSED_KERNELS";

/// `(h', c')` from the gates `[N, 4H]` and the cell state `[N, H]`.
pub fn lstm_update<B: Backend>(gates: Tensor<B, 2>, cell: Tensor<B, 2>) -> (Tensor<B, 2>, Tensor<B, 2>) {
    #[cfg(any(feature = "cuda", feature = "wgpu"))]
    let (gates, cell) = match fused_kernels_on() {
        true => match cube::fused(gates, cell) {
            Ok(next) => return next,
            Err(inputs) => inputs,
        },
        false => (gates, cell),
    };
    composed_update(gates, cell)
}

/// The same update from burn's tensor operations (any backend).
pub fn composed_update<B: Backend>(gates: Tensor<B, 2>, cell: Tensor<B, 2>) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let mut chunks = gates.chunk(4, 1).into_iter();
    let mut next = || chunks.next().expect("four gates");
    let (i, f, g, o) = (sigmoid(next()), sigmoid(next()), next().tanh(), sigmoid(next()));
    let cell = f * cell + i * g;
    let hidden = o * cell.clone().tanh();
    (hidden, cell)
}

/// Whether the fused kernels are on (`CAPTION_FUSED_KERNELS=1`).
#[cfg(any(feature = "cuda", feature = "wgpu"))]
fn fused_kernels_on() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var(FUSED_KERNELS_VARIABLE).is_ok_and(|value| value.trim() == "1"))
}

#[cfg(any(feature = "cuda", feature = "wgpu"))]
mod cube;
#[cfg(any(feature = "cuda", feature = "wgpu"))]
mod kernels;

#[cfg(test)]
mod tests {
    /// Runs the kernels on burn's wgpu backend: any Vulkan driver, Mesa's lavapipe (CPU) included.
    #[cfg(feature = "wgpu")]
    mod on_wgpu {
        use super::super::*;
        use burn::backend::{Autodiff, Wgpu};

        type AD = Autodiff<Wgpu>;

        /// Values over the range LSTM gates see, saturated ones included.
        fn filled<B: Backend, const D: usize>(shape: [usize; D], seed: usize) -> Tensor<B, D> {
            crate::test_tensors::filled(shape, seed, 12.0)
        }

        fn assert_close<B: Backend, const D: usize>(got: Tensor<B, D>, want: Tensor<B, D>, what: &str) {
            crate::test_tensors::assert_close(got, want, 1e-5, what);
        }

        #[test]
        fn the_fused_kernels_match_the_composed_update_and_its_gradients() {
            // A state size that is not a multiple of any block size.
            let [rows, size] = [5, 37];
            let gates = filled::<AD, 2>([rows, 4 * size], 1).require_grad();
            let cell = filled::<AD, 2>([rows, size], 2).require_grad();
            let (hidden, next_cell) =
                cube::fused(gates.clone(), cell.clone()).unwrap_or_else(|_| panic!("wgpu's autodiff backend takes the fused path"));
            let (want_hidden, want_cell) = composed_update(gates.clone(), cell.clone());
            assert_close(hidden.clone().inner(), want_hidden.clone().inner(), "h'");
            assert_close(next_cell.clone().inner(), want_cell.clone().inner(), "c'");

            // Weight both outputs so that every element gets its own gradient.
            let (weight_h, weight_c) = (filled::<AD, 2>([rows, size], 3), filled::<AD, 2>([rows, size], 4));
            let grads = (hidden * weight_h.clone() + next_cell * weight_c.clone()).sum().backward();
            let want = (want_hidden * weight_h + want_cell * weight_c).sum().backward();
            assert_close(gates.grad(&grads).unwrap(), gates.grad(&want).unwrap(), "d/d gates");
            assert_close(cell.grad(&grads).unwrap(), cell.grad(&want).unwrap(), "d/d cell");
        }

        #[test]
        fn inference_takes_the_fused_forward_kernel() {
            let gates = filled::<Wgpu, 2>([3, 4 * 8], 5);
            let cell = filled::<Wgpu, 2>([3, 8], 6);
            let (hidden, next_cell) = cube::fused(gates.clone(), cell.clone()).unwrap_or_else(|_| panic!("wgpu takes the fused path"));
            let (want_hidden, want_cell) = composed_update(gates, cell);
            assert_close(hidden, want_hidden, "h'");
            assert_close(next_cell, want_cell, "c'");
        }
    }

    /// The fused path is chosen by type; this is the type burn's CUDA backend has in this build.
    #[cfg(all(feature = "cuda", not(feature = "fusion")))]
    #[test]
    fn the_cuda_backend_is_the_cubecl_backend_the_kernels_are_written_for() {
        use std::any::TypeId;
        type Expected = burn_cubecl::CubeBackend<cubecl::cuda::CudaRuntime, f32, i32, u8>;
        assert_eq!(TypeId::of::<burn::backend::Cuda>(), TypeId::of::<Expected>());
    }
}
