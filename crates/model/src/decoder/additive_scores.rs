//! The additive attention's scores, `s_nr = w · tanh(P_nr + q_n) + b`, as one operation on the
//! CPU backend.
//!
//! Composed of burn's tensor operations, the attention's hidden layer `tanh(P + q)` `[N, R, A]`
//! (R = 49 regions: 49 times the size of the LSTM's state) went through a broadcast, a `tanh`
//! evaluated by libm one element at a time, and the score layer, and back through as many
//! passes again in the backward pass: on 2 CPU cores, about a third of a Flickr8k training step
//! (docs/benchmarks.md). Here the forward pass is one vectorised pass that keeps `tanh(P + q)`,
//! and the backward pass one more. Other backends (CUDA) compose the same function from tensor
//! operations, as [`composed_scores`] does.

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::{DType, TensorPrimitive};
use rayon::prelude::*;

use crate::device::{FlexBackend, cast, is_flex};
use crate::fast_math::{dot, tanh};

/// The scores `[N, R]` of projected regions `[N, R, A]` against projected queries `[N, A]`
/// through the score layer `Linear(A, 1)`.
pub fn additive_scores<B: Backend>(projected: Tensor<B, 3>, query: Tensor<B, 2>, score: &Linear<B>) -> Tensor<B, 2> {
    if !is_flex::<B>() || projected.dtype() != DType::F32 {
        return composed_scores(projected, query, score);
    }
    let [rows, regions, size] = projected.dims();
    let weight = score.weight.val().reshape([size]);
    let bias = match &score.bias {
        Some(bias) => bias.val(),
        None => Tensor::zeros([1], &projected.device()),
    };
    let inputs = Inputs { projected, query, weight, bias };
    let inputs = match cast::<_, Inputs<Autodiff<FlexBackend>>>(inputs) {
        Ok(inputs) => return cast(scores_with_gradient(inputs)).unwrap_or_else(|_| unreachable!("the same backend")),
        Err(inputs) => inputs,
    };
    match cast::<_, Inputs<FlexBackend>>(inputs) {
        Ok(inputs) => {
            let (scores, _) = forward(&inputs.primitives(), [rows, regions, size]);
            cast(Tensor::<FlexBackend, 2>::from_primitive(TensorPrimitive::Float(scores))).unwrap_or_else(|_| unreachable!())
        }
        Err(inputs) => composed_scores(inputs.projected, inputs.query, score),
    }
}

/// The same scores from burn's tensor operations (any backend).
pub fn composed_scores<B: Backend>(projected: Tensor<B, 3>, query: Tensor<B, 2>, score: &Linear<B>) -> Tensor<B, 2> {
    let [rows, regions, _] = projected.dims();
    score.forward((projected + query.unsqueeze_dim(1)).tanh()).reshape([rows, regions])
}

/// The operation's inputs: `P` `[N, R, A]`, `q` `[N, A]`, `w` `[A]`, `b` `[1]`.
struct Inputs<B: Backend> {
    projected: Tensor<B, 3>,
    query: Tensor<B, 2>,
    weight: Tensor<B, 1>,
    bias: Tensor<B, 1>,
}

impl Inputs<FlexBackend> {
    fn primitives(self) -> [FlexTensor; 4] {
        let float = |primitive: TensorPrimitive<FlexBackend>| primitive.tensor();
        [
            float(self.projected.into_primitive()),
            float(self.query.into_primitive()),
            float(self.weight.into_primitive()),
            float(self.bias.into_primitive()),
        ]
    }
}

/// The scores on the autodiff CPU backend, recording [`ScoresBackward`].
fn scores_with_gradient(inputs: Inputs<Autodiff<FlexBackend>>) -> Tensor<Autodiff<FlexBackend>, 2> {
    let dims = inputs.projected.dims();
    let float = |primitive: TensorPrimitive<Autodiff<FlexBackend>>| primitive.tensor();
    let projected = float(inputs.projected.into_primitive());
    let query = float(inputs.query.into_primitive());
    let weight = float(inputs.weight.into_primitive());
    let bias = float(inputs.bias.into_primitive());
    let primitives = [projected.primitive.clone(), query.primitive.clone(), weight.primitive.clone(), bias.primitive.clone()];
    let (scores, hidden) = forward(&primitives, dims);
    let nodes = [projected.node.clone(), query.node.clone(), weight.node.clone(), bias.node.clone()];
    let output = match ScoresBackward.prepare::<NoCheckpointing>(nodes).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish(ScoresState { hidden, weight: weight.primitive.clone(), dims }, scores),
        OpsKind::UnTracked(prep) => prep.finish(scores),
    };
    Tensor::from_primitive(TensorPrimitive::Float(output))
}

#[derive(Debug)]
struct ScoresBackward;

/// What the backward pass reads: `tanh(P + q)`, `w` and the sizes `[N, R, A]`.
#[derive(Debug, Clone)]
struct ScoresState {
    hidden: FlexTensor,
    weight: FlexTensor,
    dims: [usize; 3],
}

impl Backward<FlexBackend, 4> for ScoresBackward {
    type State = ScoresState;

    fn backward(self, ops: Ops<Self::State, 4>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let ScoresState { hidden, weight, dims } = ops.state;
        let [rows, regions, size] = dims;
        let grad = contiguous(&grads.consume::<FlexBackend>(&ops.node));
        let (hidden, weight) = (contiguous(&hidden), contiguous(&weight));
        let (projected, query, weight_grad, bias) = backward(values(&hidden), values(&weight), values(&grad), dims);
        let [projected_node, query_node, weight_node, bias_node] = ops.parents;
        let outputs = [(projected_node, projected, vec![rows, regions, size]), (query_node, query, vec![rows, size])];
        let outputs = outputs.into_iter().chain([(weight_node, weight_grad, vec![size]), (bias_node, vec![bias], vec![1])]);
        for (node, values, shape) in outputs {
            if let Some(node) = node {
                grads.register::<FlexBackend>(node.id, FlexTensor::from_data(TensorData::new(values, shape)));
            }
        }
    }
}

/// `tensor` contiguous from its first element (a copy only when it is not).
pub(crate) fn contiguous(tensor: &FlexTensor) -> FlexTensor {
    if tensor.as_slice::<f32>().is_some() { tensor.clone() } else { tensor.to_contiguous() }
}

/// The elements of a tensor from [`contiguous`].
pub(crate) fn values(tensor: &FlexTensor) -> &[f32] {
    tensor.as_slice::<f32>().expect("a contiguous f32 tensor")
}

/// The scores `[N, R]` and `tanh(P + q)` `[N, R, A]`, one image (`n`) per task.
fn forward(inputs: &[FlexTensor; 4], [rows, regions, size]: [usize; 3]) -> (FlexTensor, FlexTensor) {
    let [projected, query, weight, bias] = inputs.each_ref().map(contiguous);
    let (projected, query, weight, bias) = (values(&projected), values(&query), values(&weight), values(&bias)[0]);
    let mut hidden = vec![0.0f32; rows * regions * size];
    let mut scores = vec![0.0f32; rows * regions];
    hidden.par_chunks_mut(regions * size).zip(scores.par_chunks_mut(regions)).enumerate().for_each(|(n, (hidden, scores))| {
        let projected = &projected[n * regions * size..(n + 1) * regions * size];
        let query = &query[n * size..(n + 1) * size];
        pulp::Arch::new().dispatch(|| {
            for ((p, h), s) in projected.chunks_exact(size).zip(hidden.chunks_exact_mut(size)).zip(scores.iter_mut()) {
                for ((h, &p), &q) in h.iter_mut().zip(p).zip(query) {
                    *h = tanh(p + q);
                }
                *s = dot(h, weight) + bias;
            }
        })
    });
    let tensor = |values: Vec<f32>, shape: Vec<usize>| FlexTensor::from_data(TensorData::new(values, shape));
    (tensor(scores, vec![rows, regions]), tensor(hidden, vec![rows, regions, size]))
}

/// The gradients of `P`, `q`, `w` and `b` from the scores' gradient `g` `[N, R]`:
/// `dP_nr = g_nr w ⊙ (1 - h_nr²)`, `dq_n = Σ_r dP_nr`, `dw = Σ_nr g_nr h_nr`, `db = Σ g`.
fn backward(hidden: &[f32], weight: &[f32], grad: &[f32], [rows, regions, size]: [usize; 3]) -> (Vec<f32>, Vec<f32>, Vec<f32>, f32) {
    let mut projected = vec![0.0f32; rows * regions * size];
    let mut query = vec![0.0f32; rows * size];
    let mut weight_parts = vec![0.0f32; rows * size];
    projected.par_chunks_mut(regions * size).zip(query.par_chunks_mut(size)).zip(weight_parts.par_chunks_mut(size)).enumerate().for_each(
        |(n, ((projected, query), weight_part))| {
            let hidden = &hidden[n * regions * size..(n + 1) * regions * size];
            let grad = &grad[n * regions..(n + 1) * regions];
            pulp::Arch::new().dispatch(|| {
                for ((h, dp), &g) in hidden.chunks_exact(size).zip(projected.chunks_exact_mut(size)).zip(grad) {
                    let lanes = h.iter().zip(weight).zip(dp.iter_mut()).zip(query.iter_mut()).zip(weight_part.iter_mut());
                    for ((((&h, &w), dp), dq), dw) in lanes {
                        let d = g * w * (1.0 - h * h);
                        *dp = d;
                        *dq += d;
                        *dw += g * h;
                    }
                }
            })
        },
    );
    let mut weight_grad = vec![0.0f32; size];
    for part in weight_parts.chunks_exact(size) {
        weight_grad.iter_mut().zip(part).for_each(|(sum, &x)| *sum += x);
    }
    (projected, query, weight_grad, grad.iter().sum())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_tensors::assert_close;
    use burn::nn::LinearConfig;
    use burn::tensor::backend::AutodiffBackend;

    type AD = Autodiff<FlexBackend>;

    /// Values over the range an attention layer sees, saturated ones included.
    fn filled<const D: usize>(shape: [usize; D], seed: usize) -> Tensor<AD, D> {
        crate::test_tensors::filled(shape, seed, 6.0).require_grad()
    }

    #[test]
    fn the_cpu_kernel_matches_the_composed_scores_and_their_gradients() {
        let device = Default::default();
        // Sizes that are not multiples of the vector width.
        let [rows, regions, size] = [3, 5, 19];
        let score = LinearConfig::new(size, 1).init::<AD>(&device);
        let projected = filled([rows, regions, size], 1);
        let query = filled([rows, size], 2);
        // A weighting of the scores, so that every score gets its own gradient.
        let weighting = filled([rows, regions], 3).detach();

        let fused = additive_scores(projected.clone(), query.clone(), &score);
        let reference = composed_scores(projected.clone(), query.clone(), &score);
        assert_close(fused.clone().inner(), reference.clone().inner(), 1e-6, "scores");

        let grads = (fused * weighting.clone()).sum().backward();
        let reference_grads = (reference * weighting).sum().backward();
        let grad = |t: &Tensor<AD, 3>, g: &<AD as AutodiffBackend>::Gradients| t.grad(g).unwrap();
        assert_close(grad(&projected, &grads), grad(&projected, &reference_grads), 1e-5, "d/d projected");
        assert_close(query.grad(&grads).unwrap(), query.grad(&reference_grads).unwrap(), 1e-5, "d/d query");
        let weight = score.weight.val();
        assert_close(weight.grad(&grads).unwrap(), weight.grad(&reference_grads).unwrap(), 1e-5, "d/d score weight");
        let bias = score.bias.as_ref().unwrap().val();
        assert_close(bias.grad(&grads).unwrap(), bias.grad(&reference_grads).unwrap(), 1e-5, "d/d score bias");
    }

    #[test]
    fn inference_on_the_cpu_uses_the_kernel_too() {
        let device = Default::default();
        let score = LinearConfig::new(9, 1).init::<FlexBackend>(&device);
        let projected = filled([2, 4, 9], 4).inner();
        let query = filled([2, 9], 5).inner();
        let fused = additive_scores(projected.clone(), query.clone(), &score);
        assert_close(fused, composed_scores(projected, query, &score), 1e-6, "scores");
    }
}
