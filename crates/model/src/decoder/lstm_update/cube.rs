//! The fused LSTM update on CubeCL backends, with its backward pass for burn's autodiff.
//!
//! The forward kernel writes `[h' | c']` `[N, 2H]` (an autodiff operation has one output; `h'`
//! and `c'` are slices of it); the backward kernel recomputes the activations from the gates
//! and reads `c'` from that output, so the operation keeps no `[N, 4H]` intermediate.

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Shape, Tensor, TensorMetadata, TensorPrimitive};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
use cubecl::{CubeDim, calculate_cube_count_elemwise};

use super::kernels;
use crate::device::cast;

/// `(gates, cell)` going in, `(h', c')` coming out.
type Pair<B> = (Tensor<B, 2>, Tensor<B, 2>);

/// The update through the fused kernels when `B` is a CubeCL backend this build has (with or
/// without autodiff) and the tensors are `f32`; the inputs back otherwise.
pub(crate) fn fused<B: Backend>(gates: Tensor<B, 2>, cell: Tensor<B, 2>) -> Result<Pair<B>, Pair<B>> {
    if gates.dtype() != DType::F32 {
        return Err((gates, cell));
    }
    let inputs = (gates, cell);
    #[cfg(feature = "cuda")]
    let inputs = match on::<B, cubecl::cuda::CudaRuntime, f32, i32, u8>(inputs) {
        Ok(next) => return Ok(next),
        Err(inputs) => inputs,
    };
    #[cfg(feature = "wgpu")]
    let inputs = match on::<B, cubecl::wgpu::WgpuRuntime, f32, i32, u32>(inputs) {
        Ok(next) => return Ok(next),
        Err(inputs) => inputs,
    };
    Err(inputs)
}

/// The update when `B` is `CubeBackend<R, F, I, BT>` or its autodiff backend.
fn on<B: Backend, R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(inputs: Pair<B>) -> Result<Pair<B>, Pair<B>> {
    type Plain<R, F, I, BT> = CubeBackend<R, F, I, BT>;
    let inputs = match cast::<Pair<B>, Pair<Autodiff<Plain<R, F, I, BT>>>>(inputs) {
        Ok((gates, cell)) => return Ok(cast(with_gradient(gates, cell)).unwrap_or_else(|_| unreachable!("the same backend"))),
        Err(inputs) => inputs,
    };
    match cast::<Pair<B>, Pair<Plain<R, F, I, BT>>>(inputs) {
        Ok((gates, cell)) => {
            let output = forward(primitive(gates), primitive(cell));
            let next = split(Tensor::<Plain<R, F, I, BT>, 2>::from_primitive(TensorPrimitive::Float(output)));
            Ok(cast(next).unwrap_or_else(|_| unreachable!("the same backend")))
        }
        Err(inputs) => Err(inputs),
    }
}

fn primitive<B: Backend>(tensor: Tensor<B, 2>) -> B::FloatTensorPrimitive {
    tensor.into_primitive().tensor()
}

/// `(h', c')` from `[h' | c']`.
fn split<B: Backend>(output: Tensor<B, 2>) -> Pair<B> {
    let [rows, width] = output.dims();
    let size = width / 2;
    (output.clone().slice([0..rows, 0..size]), output.slice([0..rows, size..width]))
}

/// The update on an autodiff CubeCL backend, recording [`UpdateBackward`].
fn with_gradient<B: Backend<FloatTensorPrimitive = CubeTensor<R>>, R: CubeRuntime>(
    gates: Tensor<Autodiff<B>, 2>,
    cell: Tensor<Autodiff<B>, 2>,
) -> Pair<Autodiff<B>> {
    let (gates, cell) = (primitive(gates), primitive(cell));
    let output = forward(gates.primitive.clone(), cell.primitive.clone());
    let output = match UpdateBackward.prepare::<NoCheckpointing>([gates.node.clone(), cell.node.clone()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish((gates.primitive, cell.primitive, output.clone()), output),
        OpsKind::UnTracked(prep) => prep.finish(output),
    };
    split(Tensor::from_primitive(TensorPrimitive::Float(output)))
}

#[derive(Debug)]
struct UpdateBackward;

impl<B: Backend<FloatTensorPrimitive = CubeTensor<R>>, R: CubeRuntime> Backward<B, 2> for UpdateBackward {
    /// The gates, the cell state and the forward pass's `[h' | c']`.
    type State = (CubeTensor<R>, CubeTensor<R>, CubeTensor<R>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let (gates, cell, output) = ops.state;
        let grad = grads.consume::<B>(&ops.node);
        let (gates_grad, cell_grad) = backward(gates, cell, output, grad);
        let [gates_node, cell_node] = ops.parents;
        if let Some(node) = gates_node {
            grads.register::<B>(node.id, gates_grad);
        }
        if let Some(node) = cell_node {
            grads.register::<B>(node.id, cell_grad);
        }
    }
}

/// Threads and blocks for one thread per element of an `elements`-sized state.
fn launch_size<R: CubeRuntime>(tensor: &CubeTensor<R>, elements: usize) -> (cubecl::CubeCount, CubeDim) {
    let cube_dim = CubeDim::new(&tensor.client, elements);
    (calculate_cube_count_elemwise(&tensor.client, elements, cube_dim), cube_dim)
}

/// `[h' | c']` `[N, 2H]` from `gates` `[N, 4H]` and `cell` `[N, H]`.
fn forward<R: CubeRuntime>(gates: CubeTensor<R>, cell: CubeTensor<R>) -> CubeTensor<R> {
    let (gates, cell) = (into_contiguous(gates), into_contiguous(cell));
    let [rows, size] = cell.shape().dims::<2>();
    let output = empty_device_dtype::<R>(cell.client.clone(), cell.device.clone(), Shape::new([rows, 2 * size]), cell.dtype);
    let (cube_count, cube_dim) = launch_size(&cell, rows * size);
    let dtype = cell.dtype;
    kernels::lstm_update_forward::launch::<R>(
        &cell.client.clone(),
        cube_count,
        cube_dim,
        gates.into_tensor_arg(),
        cell.into_tensor_arg(),
        output.clone().into_tensor_arg(),
        dtype.into(),
    );
    output
}

/// The gradients of the gates and of the cell state from the output's gradient.
fn backward<R: CubeRuntime>(
    gates: CubeTensor<R>,
    cell: CubeTensor<R>,
    output: CubeTensor<R>,
    grad: CubeTensor<R>,
) -> (CubeTensor<R>, CubeTensor<R>) {
    let (gates, cell, output, grad) = (into_contiguous(gates), into_contiguous(cell), into_contiguous(output), into_contiguous(grad));
    let [rows, size] = cell.shape().dims::<2>();
    let new = |shape: [usize; 2]| empty_device_dtype::<R>(cell.client.clone(), cell.device.clone(), Shape::new(shape), cell.dtype);
    let (gates_grad, cell_grad) = (new([rows, 4 * size]), new([rows, size]));
    let (cube_count, cube_dim) = launch_size(&cell, rows * size);
    let dtype = cell.dtype;
    kernels::lstm_update_backward::launch::<R>(
        &cell.client.clone(),
        cube_count,
        cube_dim,
        gates.into_tensor_arg(),
        cell.into_tensor_arg(),
        output.into_tensor_arg(),
        grad.into_tensor_arg(),
        gates_grad.clone().into_tensor_arg(),
        cell_grad.clone().into_tensor_arg(),
        dtype.into(),
    );
    (gates_grad, cell_grad)
}
