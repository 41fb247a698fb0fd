//! One optimiser step: teacher-forced cross-entropy (label smoothing, the attention
//! regulariser) or self-critical sequence training, then global gradient-norm clipping and
//! AdamW. A cross-entropy step never waits for the device: its loss terms and gradient norm stay
//! there ([`StepStats`]) until the loop logs them, and the clipping scale is computed there.

use anyhow::{Context, Result};
use burn::backend::Autodiff;
use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::optim::{GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::AutodiffBackend;
use caption_data::TextEncoder;
use caption_model::{CaptionDecoder, Captioner, DecoderOutput, EncoderOutput, doubly_stochastic_penalty};

use crate::config::TrainConfig;
use crate::data::HostBatch;
use crate::scst::{self, ScstConfig};

/// What a step reports, left on the device: reading it waits for the step to finish.
pub struct StepStats<B: Backend> {
    /// `[loss, cross-entropy, attention regulariser, gradient norm before clipping]` (the
    /// cross-entropy and regulariser are 0 in SCST steps), read with [`StepValues::read`].
    pub values: Tensor<B, 1>,
    /// SCST steps: mean reward and mean baseline of the samples (scored on the host).
    pub reward: Option<(f64, f64)>,
}

/// [`StepStats::values`] (or their sum over several steps) read back.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct StepValues {
    pub loss: f64,
    pub cross_entropy: f64,
    pub attention: f64,
    pub grad_norm: f64,
}

impl StepValues {
    /// Reads `values` (waits for the device).
    pub fn read<B: Backend>(values: Tensor<B, 1>) -> Self {
        let read = values.into_data().convert::<f32>().to_vec::<f32>().unwrap_or_default();
        let value = |i: usize| read.get(i).map(|&v| f64::from(v)).unwrap_or(f64::NAN);
        StepValues { loss: value(0), cross_entropy: value(1), attention: value(2), grad_norm: value(3) }
    }

    pub fn is_finite(&self) -> bool {
        [self.loss, self.cross_entropy, self.attention, self.grad_norm].iter().all(|v| v.is_finite())
    }

    /// Each value divided by `steps`.
    pub fn mean(self, steps: usize) -> Self {
        let n = steps.max(1) as f64;
        StepValues {
            loss: self.loss / n,
            cross_entropy: self.cross_entropy / n,
            attention: self.attention / n,
            grad_norm: self.grad_norm / n,
        }
    }
}

/// Square of the global gradient norm, over the parameters that have gradients.
struct GradNorm<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    squares: Vec<Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for GradNorm<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(grad) = self.grads.get::<B::InnerBackend, D>(param.id) {
            self.squares.push((grad.clone() * grad).sum());
        }
    }
}

/// Multiplies every gradient by the one-element `factor`.
struct ScaleGrads<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    factor: Tensor<B::InnerBackend, 1>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for ScaleGrads<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(grad) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            let factor = self.factor.clone().reshape([1; D]);
            self.grads.register::<B::InnerBackend, D>(param.id, grad.mul(factor));
        }
    }
}

/// Folds the latest BatchNorm running statistics into the values a checkpoint writes. burn
/// keeps a training forward pass's update aside until the next update or until the inference
/// model is taken; saving reads the folded value, which would be one step old without this
/// (and a run resumed from it would not continue exactly).
pub fn sync_running_statistics<B: AutodiffBackend>(model: &Captioner<B>) {
    let _ = model.valid();
}

/// Moves the gradients of a module's parameters (the encoder's) out of `from` into `into`.
struct TakeGrads<'a> {
    from: &'a mut GradientsParams,
    into: GradientsParams,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for TakeGrads<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(grad) = self.from.remove::<B::InnerBackend, D>(param.id) {
            self.into.register::<B::InnerBackend, D>(param.id, grad);
        }
    }
}

/// Cross-entropy with label smoothing `epsilon`, averaged over the `tokens` non-padding
/// targets: `(1 - ε) · -log p(y) + ε · mean_v(-log p(v))` per token.
fn smoothed_cross_entropy<B: Backend>(
    logits: Tensor<B, 3>,
    targets: Tensor<B, 2, Int>,
    pad: u32,
    epsilon: f64,
    tokens: usize,
) -> Tensor<B, 1> {
    let [rows, length, vocab] = logits.dims();
    let n = rows * length;
    let log_probs = log_softmax(logits.reshape([n, vocab]), 1);
    let targets = targets.reshape([n, 1]);
    let keep = targets.clone().not_equal_elem(pad as i64).float().reshape([n]);
    let nll = log_probs.clone().gather(1, targets).reshape([n]).neg();
    let per_token = if epsilon > 0.0 {
        let uniform = log_probs.mean_dim(1).reshape([n]).neg();
        nll.mul_scalar(1.0 - epsilon) + uniform.mul_scalar(epsilon)
    } else {
        nll
    };
    (per_token * keep).sum().div_scalar(tokens.max(1) as f64)
}

/// The batch's encoder features `[images, ...]`, with gradients where the encoder is trained:
/// cached features as they are; otherwise the frozen stages on the inner backend (BatchNorm on
/// running statistics, no graph) and the trained ones with autodiff.
fn encode_batch<B: Backend>(
    model: &Captioner<Autodiff<B>>,
    batch: &mut HostBatch,
    first_trained_stage: usize,
    device: &B::Device,
) -> EncoderOutput<Autodiff<B>> {
    type A<B> = Autodiff<B>;
    let stages = model.encoder.num_stages();
    let pixels = std::mem::take(&mut batch.pixels);
    let map = if let Some([c, h, w]) = batch.feature_shape {
        Tensor::<A<B>, 4>::from_data(TensorData::new(pixels, [batch.images, c, h, w]), device)
    } else {
        let size = (pixels.len() / (3 * batch.images)).isqrt();
        let images = Tensor::<A<B>, 4>::from_data(TensorData::new(pixels, [batch.images, 3, size, size]), device);
        if first_trained_stage == 0 {
            model.encoder.forward_stages(images, 0..stages)
        } else {
            let frozen = model.encoder.valid().forward_stages(images.inner(), 0..first_trained_stage.min(stages));
            if first_trained_stage >= stages {
                Tensor::from_inner(frozen)
            } else {
                model.encoder.forward_stages(Tensor::from_inner(frozen), first_trained_stage..stages)
            }
        }
    };
    EncoderOutput::from_feature_map(map)
}

/// Each row's copy of its image's features.
fn select_rows<B: Backend>(features: EncoderOutput<B>, row_image: Vec<i64>) -> EncoderOutput<B> {
    let rows = row_image.len();
    let index = Tensor::<B, 1, Int>::from_data(TensorData::new(row_image, [rows]), &features.regions.device());
    EncoderOutput { regions: features.regions.select(0, index.clone()), pooled: features.pooled.select(0, index) }
}

/// Backpropagates `loss`; returns the gradients and their global norm (on the device).
fn backward<B: Backend>(model: &Captioner<Autodiff<B>>, loss: Tensor<Autodiff<B>, 1>) -> (GradientsParams, Tensor<B, 1>) {
    type A<B> = Autodiff<B>;
    let device = loss.device();
    let grads = GradientsParams::from_grads(loss.backward(), model);
    let mut norm = GradNorm::<A<B>> { grads: &grads, squares: Vec::new() };
    model.visit(&mut norm);
    let norm = if norm.squares.is_empty() { Tensor::zeros([1], &device) } else { Tensor::cat(norm.squares, 0).sum().sqrt() };
    (grads, norm)
}

/// Clips the global gradient norm (`grad_norm`, from [`backward`]) as PyTorch's
/// `clip_grad_norm_` does, scaling by `min(1, max_norm / (norm + 1e-6))` on the device, and steps
/// the optimizer (the encoder's parameters at `lr · encoder_lr / train.lr` when
/// `train.encoder_lr` is set); returns the updated model.
fn apply_gradients<B: Backend, O: Optimizer<Captioner<Autodiff<B>>, Autodiff<B>>>(
    model: Captioner<Autodiff<B>>,
    optimizer: &mut O,
    mut grads: GradientsParams,
    grad_norm: Tensor<B, 1>,
    lr: f64,
    config: &TrainConfig,
) -> Captioner<Autodiff<B>> {
    type A<B> = Autodiff<B>;
    if config.clip_grad_norm > 0.0 {
        let factor = grad_norm.add_scalar(1e-6).recip().mul_scalar(config.clip_grad_norm).clamp_max(1.0);
        let mut scale = ScaleGrads::<A<B>> { grads: &mut grads, factor };
        Module::<A<B>>::visit(&model, &mut scale);
    }
    match config.encoder_lr {
        Some(encoder_lr) if encoder_lr != config.lr => {
            // Two steps of the one optimizer, each over its own parameters: a parameter without a
            // gradient is left alone, and every parameter keeps its own AdamW state.
            let mut take = TakeGrads { from: &mut grads, into: GradientsParams::new() };
            Module::<A<B>>::visit(&model.encoder, &mut take);
            let encoder_grads = take.into;
            let model = optimizer.step(lr * encoder_lr / config.lr, model, encoder_grads);
            optimizer.step(lr, model, grads)
        }
        _ => optimizer.step(lr, model, grads),
    }
}

/// One teacher-forced cross-entropy step on `batch`.
#[allow(clippy::too_many_arguments)]
pub fn train_step<B: Backend, O: Optimizer<Captioner<Autodiff<B>>, Autodiff<B>>>(
    model: Captioner<Autodiff<B>>,
    optimizer: &mut O,
    mut batch: HostBatch,
    lr: f64,
    config: &TrainConfig,
    first_trained_stage: usize,
    device: &B::Device,
) -> Result<(Captioner<Autodiff<B>>, StepStats<B>)> {
    type A<B> = Autodiff<B>;
    let features = encode_batch(&model, &mut batch, first_trained_stage, device);
    let rows = batch.rows();
    let features = select_rows(features, std::mem::take(&mut batch.row_image));
    let inputs = Tensor::<A<B>, 2, Int>::from_data(TensorData::new(std::mem::take(&mut batch.inputs), [rows, batch.length]), device);
    let targets = Tensor::<A<B>, 2, Int>::from_data(TensorData::new(std::mem::take(&mut batch.targets), [rows, batch.length]), device);

    let DecoderOutput { logits, alphas } = model.decoder.forward(&features, inputs);
    let pad = model.config().tokens.pad;
    let cross_entropy = smoothed_cross_entropy(logits, targets.clone(), pad, config.label_smoothing, batch.tokens);
    let attention = match alphas {
        Some(alphas) if config.attention_regularizer > 0.0 => {
            doubly_stochastic_penalty(alphas, Some(targets.equal_elem(pad as i64)), config.attention_regularizer)
        }
        _ => Tensor::zeros([1], device),
    };
    let loss = cross_entropy.clone() + attention.clone();
    let (grads, grad_norm) = backward(&model, loss.clone());
    let values = Tensor::cat(vec![loss.inner(), cross_entropy.inner(), attention.inner(), grad_norm.clone()], 0);
    let model = apply_gradients(model, optimizer, grads, grad_norm, lr, config);
    Ok((model, StepStats { values, reward: None }))
}

/// One self-critical step on `batch` (see [`crate::scst`]).
#[allow(clippy::too_many_arguments)]
pub fn scst_step<B: Backend, O: Optimizer<Captioner<Autodiff<B>>, Autodiff<B>>>(
    model: Captioner<Autodiff<B>>,
    optimizer: &mut O,
    mut batch: HostBatch,
    lr: f64,
    config: &TrainConfig,
    scst_config: &ScstConfig,
    reward: &scst::Reward,
    text: &TextEncoder,
    sample_seed: u64,
    first_trained_stage: usize,
    device: &B::Device,
) -> Result<(Captioner<Autodiff<B>>, StepStats<B>)> {
    type A<B> = Autodiff<B>;
    let features = encode_batch(&model, &mut batch, first_trained_stage, device);
    // Captions are drawn without a graph (and without dropout), then scored on the host.
    let inference = EncoderOutput { regions: features.regions.clone().inner(), pooled: features.pooled.clone().inner() };
    let decoder = model.decoder.valid();
    let tokens = model.config().tokens;
    let no_eos_after = if config.block_bad_endings { caption_model::decoding::bad_ending_ids(text) } else { Vec::new() };
    let constraints = model.constraints().with_no_eos_after(&no_eos_after);
    let sampling = scst::sampling(scst_config, sample_seed);
    let samples = caption_model::decoding::sample(&decoder, &inference, &constraints, &sampling).context("drawing SCST samples")?;
    let greedy = match scst_config.baseline {
        scst::Baseline::Greedy => {
            Some(caption_model::decoding::greedy(&decoder, &inference, &constraints).context("greedy SCST baseline")?)
        }
        scst::Baseline::Mean => None,
    };
    let rollout = scst::rollout(scst_config, reward, text, tokens, &batch.image_indices, &samples, greedy.as_deref());
    let rows = rollout.row_image.len();
    let features = select_rows(features, rollout.row_image.clone());
    let inputs = Tensor::<A<B>, 2, Int>::from_data(TensorData::new(rollout.inputs.clone(), [rows, rollout.length]), device);
    // The samples were drawn with dropout off: score them under that same policy, so the
    // gradient is that of their probability and not of a dropout-perturbed one.
    let DecoderOutput { logits, .. } = model.decoder.without_dropout().forward(&features, inputs);
    let loss = scst::policy_loss(logits, &rollout, tokens.pad);
    let (grads, grad_norm) = backward(&model, loss.clone());
    let zeros = Tensor::zeros([2], device);
    let values = Tensor::cat(vec![loss.inner(), zeros, grad_norm.clone()], 0);
    let model = apply_gradients(model, optimizer, grads, grad_norm, lr, config);
    Ok((model, StepStats { values, reward: Some((rollout.mean_reward, rollout.mean_baseline)) }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::ElementConversion;

    #[test]
    fn smoothed_cross_entropy_ignores_padding() {
        type B = caption_model::FlexBackend;
        let device = Default::default();
        // Two rows, two steps, vocabulary 3; the second row's second target is padding (0).
        let logits = Tensor::<B, 3>::from_floats([[[0.0, 2.0, 0.0], [1.0, 0.0, 0.0]], [[0.0, 0.0, 3.0], [5.0, -5.0, 9.0]]], &device);
        let targets = Tensor::<B, 2, Int>::from_ints([[1, 0], [2, 0]], &device);
        let plain = smoothed_cross_entropy(logits.clone(), targets.clone(), 0, 0.0, 2).into_scalar().elem::<f32>() as f64;
        let nll = |row: [f64; 3], t: usize| -(row[t] - row.iter().map(|x| x.exp()).sum::<f64>().ln());
        let expected = (nll([0.0, 2.0, 0.0], 1) + nll([0.0, 0.0, 3.0], 2)) / 2.0;
        assert!((plain - expected).abs() < 1e-5, "{plain} vs {expected}");
        let smoothed = smoothed_cross_entropy(logits, targets, 0, 0.1, 2).into_scalar().elem::<f32>() as f64;
        assert!(smoothed > plain);
    }
}
