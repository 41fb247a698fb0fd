//! A linear layer applied at every step of a recurrence, whose weight gradient is computed once
//! for all the steps on the CPU backend.
//!
//! Through burn's `Linear`, each of the T steps of a teacher-forced pass computes its own weight
//! gradient in the backward pass (a product over only the batch's rows, into a freshly
//! allocated weight-sized tensor) and adds it to the sum: for the attention LSTM's gate layers,
//! T weight-sized allocations, copies and additions per training step, about a sixth of a
//! Flickr8k step on 2 CPU cores (docs/benchmarks.md). Here each step's backward pass computes
//! only its input gradient and keeps its input and output gradient on a [`StepTape`]; the
//! backward pass of the first step (the last to run: every later step depends on it) computes
//! the weight and bias gradients of all steps in one product over all their rows. Other
//! backends (CUDA) and inference use `Linear::forward`.

use std::sync::{Arc, Mutex};

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::{DType, TensorPrimitive};

use crate::device::{FlexBackend, cast, is_flex};

type Ad = Autodiff<FlexBackend>;

/// The steps of one teacher-forced pass through one linear layer: what their backward passes
/// leave for the weight gradient.
#[derive(Debug, Clone, Default)]
pub struct StepTape(Arc<Mutex<TapeSteps>>);

#[derive(Debug, Default)]
struct TapeSteps {
    /// Steps recorded by the forward pass.
    recorded: usize,
    /// Each backward step's input `[N, I]` and output gradient `[N, O]`.
    inputs: Vec<FlexTensor>,
    output_grads: Vec<FlexTensor>,
}

impl StepTape {
    /// A fresh tape for one pass.
    pub fn new() -> Self {
        Self::default()
    }

    /// Numbers a step in forward order.
    fn record(&self) -> usize {
        let mut steps = self.0.lock().expect("tape lock");
        steps.recorded += 1;
        steps.recorded - 1
    }

    fn push(&self, input: FlexTensor, output_grad: FlexTensor) {
        let mut steps = self.0.lock().expect("tape lock");
        steps.inputs.push(input);
        steps.output_grads.push(output_grad);
    }

    fn take(&self) -> (Vec<FlexTensor>, Vec<FlexTensor>) {
        let mut steps = self.0.lock().expect("tape lock");
        (std::mem::take(&mut steps.inputs), std::mem::take(&mut steps.output_grads))
    }
}

/// `linear` applied to one step's input `[N, I]`, the step recorded on `tape` (one tape per
/// layer and pass).
pub fn step_linear<B: Backend>(linear: &Linear<B>, input: Tensor<B, 2>, tape: &StepTape) -> Tensor<B, 2> {
    let Some(bias) = &linear.bias else { return linear.forward(input) };
    if !is_flex::<B>() || input.dtype() != DType::F32 {
        return linear.forward(input);
    }
    match cast::<_, (Tensor<Ad, 2>, Tensor<Ad, 2>, Tensor<Ad, 1>)>((input, linear.weight.val(), bias.val())) {
        Ok(inputs) => cast(with_step_gradient(inputs, tape)).unwrap_or_else(|_| unreachable!("the same backend")),
        Err((input, _, _)) => linear.forward(input),
    }
}

fn flex<const D: usize>(tensor: FlexTensor) -> Tensor<FlexBackend, D> {
    Tensor::from_primitive(TensorPrimitive::Float(tensor))
}

fn primitive<const D: usize>(tensor: Tensor<FlexBackend, D>) -> FlexTensor {
    tensor.into_primitive().tensor()
}

fn with_step_gradient((input, weight, bias): (Tensor<Ad, 2>, Tensor<Ad, 2>, Tensor<Ad, 1>), tape: &StepTape) -> Tensor<Ad, 2> {
    let (input, weight, bias) = (input.into_primitive().tensor(), weight.into_primitive().tensor(), bias.into_primitive().tensor());
    let output = flex::<2>(input.primitive.clone()).matmul(flex(weight.primitive.clone())) + flex::<1>(bias.primitive.clone()).unsqueeze();
    let nodes = [input.node.clone(), weight.node.clone(), bias.node.clone()];
    let output = match StepLinearBackward.prepare::<NoCheckpointing>(nodes).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let state = StepState { input: input.primitive, weight: weight.primitive, tape: tape.clone(), first: tape.record() == 0 };
            prep.finish(state, primitive(output))
        }
        OpsKind::UnTracked(prep) => prep.finish(primitive(output)),
    };
    Tensor::from_primitive(TensorPrimitive::Float(output))
}

#[derive(Debug)]
struct StepLinearBackward;

#[derive(Debug, Clone)]
struct StepState {
    input: FlexTensor,
    weight: FlexTensor,
    tape: StepTape,
    /// The pass's first step: its backward pass runs last and computes the weight gradient.
    first: bool,
}

impl Backward<FlexBackend, 3> for StepLinearBackward {
    type State = StepState;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let StepState { input, weight, tape, first } = ops.state;
        let grad = grads.consume::<FlexBackend>(&ops.node);
        let [input_node, weight_node, bias_node] = ops.parents;
        if let Some(node) = input_node {
            let input_grad = flex::<2>(grad.clone()).matmul(flex::<2>(weight).transpose());
            grads.register::<FlexBackend>(node.id, primitive(input_grad));
        }
        if weight_node.is_none() && bias_node.is_none() {
            return;
        }
        tape.push(input, grad);
        if !first {
            return;
        }
        let (inputs, output_grads) = tape.take();
        let inputs = Tensor::cat(inputs.into_iter().map(flex::<2>).collect(), 0);
        let output_grads = Tensor::cat(output_grads.into_iter().map(flex::<2>).collect(), 0);
        if let Some(node) = bias_node {
            grads.register::<FlexBackend>(node.id, primitive(output_grads.clone().sum_dim(0).squeeze_dim::<1>(0)));
        }
        if let Some(node) = weight_node {
            grads.register::<FlexBackend>(node.id, primitive(inputs.transpose().matmul(output_grads)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::LinearConfig;

    fn filled(shape: [usize; 2], seed: usize) -> Tensor<Ad, 2> {
        crate::test_tensors::filled(shape, seed, 1.0).require_grad()
    }

    fn assert_close<const D: usize>(got: Tensor<FlexBackend, D>, want: Tensor<FlexBackend, D>, what: &str) {
        crate::test_tensors::assert_close(got, want, 1e-5, what);
    }

    /// A recurrence `h_{t+1} = tanh(L(h_t) + x_t)` over four steps, through the taped layer and
    /// through `Linear::forward`: same outputs, same gradients for the layer and the inputs.
    #[test]
    fn a_taped_recurrence_has_the_gradients_of_the_plain_one() {
        let device = Default::default();
        let layer = LinearConfig::new(6, 6).init::<Ad>(&device);
        let start = filled([3, 6], 1);
        let inputs: Vec<Tensor<Ad, 2>> = (0..4).map(|t| filled([3, 6], 2 + t)).collect();
        let run = |taped: bool| {
            let tape = StepTape::new();
            let mut h = start.clone();
            let mut outputs = Vec::new();
            for x in &inputs {
                let projected = if taped { step_linear(&layer, h, &tape) } else { layer.forward(h) };
                h = (projected + x.clone()).tanh();
                outputs.push(h.clone());
            }
            let loss = Tensor::cat(outputs, 0).powf_scalar(2.0).sum();
            (loss.clone().inner(), loss.backward())
        };
        let (taped_loss, taped) = run(true);
        let (plain_loss, plain) = run(false);
        assert_close(taped_loss, plain_loss, "loss");
        let weight = layer.weight.val();
        let bias = layer.bias.as_ref().unwrap().val();
        assert_close(weight.grad(&taped).unwrap(), weight.grad(&plain).unwrap(), "d/d weight");
        assert_close(bias.grad(&taped).unwrap(), bias.grad(&plain).unwrap(), "d/d bias");
        assert_close(start.grad(&taped).unwrap(), start.grad(&plain).unwrap(), "d/d h_0");
        assert_close(inputs[2].grad(&taped).unwrap(), inputs[2].grad(&plain).unwrap(), "d/d x_2");
    }
}
