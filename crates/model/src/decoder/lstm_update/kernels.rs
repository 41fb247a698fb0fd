//! The CubeCL kernels of the fused LSTM update: one thread per element of the `[N, H]` state.

use cubecl::prelude::*;

#[cube]
fn sigmoid<F: Float>(x: F) -> F {
    F::new(1.0) / (F::new(1.0) + F::exp(F::new(0.0) - x))
}

/// The gates' activations `(σ(i), σ(f), tanh(g), σ(o))` of the state element whose input gate
/// is at `gate` (the four gates are blocks of `size` in a row).
#[cube]
fn activations<F: Float>(gates: &Tensor<F>, gate: usize, size: usize) -> (F, F, F, F) {
    (sigmoid::<F>(gates[gate]), sigmoid::<F>(gates[gate + size]), F::tanh(gates[gate + 2 * size]), sigmoid::<F>(gates[gate + 3 * size]))
}

/// `output [N, 2H] = [h' | c']` from `gates [N, 4H]` and `cell [N, H]`, all contiguous.
#[cube(launch)]
pub fn lstm_update_forward<F: Float>(gates: &Tensor<F>, cell: &Tensor<F>, output: &mut Tensor<F>, #[define(F)] _dtype: StorageType) {
    let position = ABSOLUTE_POS;
    if position >= cell.len() {
        terminate!();
    }
    let size = cell.shape(1);
    let (row, column) = (position / size, position % size);
    let (input, forget, candidate, out) = activations::<F>(gates, row * 4 * size + column, size);
    let next_cell = forget * cell[position] + input * candidate;
    output[row * 2 * size + column] = out * F::tanh(next_cell);
    output[row * 2 * size + size + column] = next_cell;
}

/// The gradients of `gates` `[N, 4H]` and `cell` `[N, H]` from the output's `grad` `[N, 2H]`,
/// the activations recomputed from `gates` and `next_cell` (the forward pass's `c'`).
#[cube(launch)]
pub fn lstm_update_backward<F: Float>(
    gates: &Tensor<F>,
    cell: &Tensor<F>,
    output: &Tensor<F>,
    grad: &Tensor<F>,
    gates_grad: &mut Tensor<F>,
    cell_grad: &mut Tensor<F>,
    #[define(F)] _dtype: StorageType,
) {
    let position = ABSOLUTE_POS;
    if position >= cell.len() {
        terminate!();
    }
    let size = cell.shape(1);
    let (row, column) = (position / size, position % size);
    let gate = row * 4 * size + column;
    let one = F::new(1.0);
    let (input, forget, candidate, out) = activations::<F>(gates, gate, size);
    let tanh_cell = F::tanh(output[row * 2 * size + size + column]);
    let hidden_grad = grad[row * 2 * size + column];
    let next_cell_grad = grad[row * 2 * size + size + column] + hidden_grad * out * (one - tanh_cell * tanh_cell);
    gates_grad[gate] = next_cell_grad * candidate * input * (one - input);
    gates_grad[gate + size] = next_cell_grad * cell[position] * forget * (one - forget);
    gates_grad[gate + 2 * size] = next_cell_grad * input * (one - candidate * candidate);
    gates_grad[gate + 3 * size] = hidden_grad * tanh_cell * out * (one - out);
    cell_grad[position] = next_cell_grad * forget;
}
