//! The training loop: teacher-forced cross-entropy (label smoothing, padding masked out) plus
//! the attention regulariser, AdamW with warm-up and a cosine or step schedule, global
//! gradient-norm clipping; validation every `val_every` epochs with the best checkpoint kept and
//! early stopping; `checkpoints/last` after every epoch (and every `checkpoint_every` steps);
//! and, at the end, the test evaluation of the best checkpoint.
//!
//! Determinism: initialisation is seeded by `seed`, the data order and caption choice by
//! `(seed, epoch)`, dropout by `(seed, step)` (the backend is reseeded before every step). A
//! resumed run therefore continues exactly where the interrupted one was.

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use anyhow::{Context, Result, bail};
use burn::backend::Autodiff;
use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::AutodiffBackend;
use caption_data::image::{AugmentConfig, ImageConfig};
use caption_data::rng::SplitMix64;
use caption_data::{CaptionDataset, Sample, Split, TextEncoder};
use caption_model::{
    CaptionDecoder, CaptionPipeline, Captioner, CheckpointMeta, DecoderOutput, DeviceSpec, EncoderOutput, ImportOptions,
    doubly_stochastic_penalty, load_checkpoint, load_encoder_weights, save_checkpoint,
};
use serde::Serialize;

use crate::config::{RunConfig, Schedule, TrainConfig};
use crate::data::{HostBatch, ImageSource, TrainSet};
use crate::evaluate::{EvalInputs, ReportLabel, SplitRun, TestReport, decode_images, evaluate_split, format_report, score, texts};
use crate::features;
use crate::progress::EpochProgress;
use crate::run_dir::{
    self, BEST, CHECKPOINTS_DIR, CONFIG_FILE, Manifest, MetricsLog, ResumeRecord, TENSORBOARD_DIR, annotation_files, create_run_dir,
    fingerprint, git_commit,
};
use crate::scst::{self, ScstConfig};
use crate::state::{Best, TrainState, load_optimizer, param_ids, recover_last, remap_record, save_last};
use crate::tensorboard::EventWriter;

const DROPOUT_STREAM: u64 = 0x4452_4F50_0000_0004;
const SCST_STREAM: u64 = 0x5343_5354_0000_0005;

/// What to run.
#[derive(Debug, Clone)]
pub struct TrainJob {
    pub config: RunConfig,
    /// The text of `config.yaml` (the resolved experiment config); the run config serialised
    /// when `None`.
    pub config_yaml: Option<String>,
    /// Overrides `train.device`.
    pub device: Option<DeviceSpec>,
    /// Continue the run in this directory from its `checkpoints/last`.
    pub resume: Option<PathBuf>,
    /// Recorded in the manifest.
    pub command_line: Vec<String>,
    /// Stop (as a kill would) right after `checkpoints/last` is written at this step or later:
    /// lets tests interrupt a run at a known point.
    pub interrupt_after_step: Option<u64>,
}

impl TrainJob {
    pub fn new(config: RunConfig) -> Self {
        TrainJob { config, config_yaml: None, device: None, resume: None, command_line: Vec::new(), interrupt_after_step: None }
    }
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    pub run_dir: PathBuf,
    pub epochs_completed: usize,
    pub steps: u64,
    pub best: Option<Best>,
    pub stopped_early: bool,
    /// `true` when the run stopped at [`TrainJob::interrupt_after_step`].
    pub interrupted: bool,
    pub test: Option<TestReport>,
    /// Training time over all sessions (validation included, test evaluation excluded).
    pub train_seconds: f64,
}

/// Runs (or resumes) a training job on the device it names.
pub fn train(job: TrainJob) -> Result<TrainSummary> {
    job.config.validate()?;
    let device = job.device.unwrap_or(job.config.train.device);
    device.check_available()?;
    set_threads(&job.config.train);
    match device {
        DeviceSpec::Cpu => run::<caption_model::FlexBackend>(job, device, Default::default()),
        #[cfg(feature = "cuda")]
        DeviceSpec::Cuda(_) => run::<caption_model::device::CudaBackend>(job, device, device.cuda_device().expect("a CUDA device")),
        #[cfg(not(feature = "cuda"))]
        DeviceSpec::Cuda(_) => unreachable!("checked by check_available"),
    }
}

/// The learning rate at step `step` (0-based) of `total` steps.
pub fn learning_rate(config: &TrainConfig, step: u64, steps_per_epoch: usize, total: u64) -> f64 {
    let warmup = config.warmup_steps as u64;
    if step < warmup {
        return config.lr * (step + 1) as f64 / warmup as f64;
    }
    match config.schedule {
        Schedule::Constant => config.lr,
        Schedule::Cosine => {
            let span = total.saturating_sub(warmup).max(1) as f64;
            let progress = ((step - warmup) as f64 / span).min(1.0);
            let floor = config.lr * config.min_lr_ratio;
            floor + (config.lr - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
        }
        Schedule::Step => {
            let epoch = step / steps_per_epoch.max(1) as u64;
            config.lr * config.step_gamma.powi((epoch / config.step_epochs as u64) as i32)
        }
    }
}

/// How images are prepared for the model at evaluation and serving time (the training config
/// without augmentation): stored in every checkpoint's `meta.json` as `preprocess`.
pub fn preprocess_config(image: &ImageConfig) -> ImageConfig {
    ImageConfig { augment: AugmentConfig::default(), ..image.clone() }
}

struct StepStats {
    loss: f64,
    /// NaN in SCST steps.
    cross_entropy: f64,
    attention: f64,
    grad_norm: f64,
    /// SCST steps: mean reward and mean baseline of the samples.
    reward: Option<(f64, f64)>,
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

/// Multiplies every gradient by `factor`.
struct ScaleGrads<'a> {
    grads: &'a mut GradientsParams,
    factor: f64,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for ScaleGrads<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(grad) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            self.grads.register::<B::InnerBackend, D>(param.id, grad.mul_scalar(self.factor));
        }
    }
}

/// Folds the latest BatchNorm running statistics into the values a checkpoint writes. burn
/// keeps a training forward pass's update aside until the next update or until the inference
/// model is taken; saving reads the folded value, which would be one step old without this
/// (and a run resumed from it would not continue exactly).
fn sync_running_statistics<B: AutodiffBackend>(model: &Captioner<B>) {
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

/// Counts (all, trainable) parameter elements.
fn count_parameters<B: Backend, M: Module<B>>(module: &M) -> (usize, usize) {
    struct Count(usize, usize);
    impl<B: Backend> ModuleVisitor<B> for Count {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let value = param.val();
            let n = value.shape().num_elements();
            self.0 += n;
            if value.is_require_grad() {
                self.1 += n;
            }
        }
    }
    let mut count = Count(0, 0);
    module.visit(&mut count);
    (count.0, count.1)
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

/// Backpropagates `loss`, then reads back in one transfer the `watched` values (the loss terms)
/// and the global gradient norm: the step's only wait for the device, after the forward and
/// backward passes are queued (reading the loss before backward stalled the device between them).
fn backward<B: Backend>(
    model: &Captioner<Autodiff<B>>,
    loss: Tensor<Autodiff<B>, 1>,
    watched: Vec<Tensor<B, 1>>,
) -> (GradientsParams, Vec<f64>, f64) {
    type A<B> = Autodiff<B>;
    let grads = GradientsParams::from_grads(loss.backward(), model);
    let mut norm = GradNorm::<A<B>> { grads: &grads, squares: Vec::new() };
    model.visit(&mut norm);
    let device = watched.first().map(Tensor::device).unwrap_or_default();
    let norm = if norm.squares.is_empty() { Tensor::zeros([1], &device) } else { Tensor::cat(norm.squares, 0).sum().sqrt() };
    let read = watched.len();
    let values = Tensor::cat([watched, vec![norm]].concat(), 0).into_data().convert::<f32>().to_vec::<f32>().unwrap_or_default();
    let values: Vec<f64> = values.into_iter().map(f64::from).collect();
    let grad_norm = values.get(read).copied().unwrap_or(f64::NAN);
    (grads, values.into_iter().take(read).collect(), grad_norm)
}

/// Clips the global gradient norm (`grad_norm`, from [`backward`]) and steps the optimizer (the
/// encoder's parameters at `lr · encoder_lr / train.lr` when `train.encoder_lr` is set); returns
/// the updated model.
fn apply_gradients<B: Backend, O: Optimizer<Captioner<Autodiff<B>>, Autodiff<B>>>(
    model: Captioner<Autodiff<B>>,
    optimizer: &mut O,
    mut grads: GradientsParams,
    grad_norm: f64,
    lr: f64,
    config: &TrainConfig,
) -> Captioner<Autodiff<B>> {
    type A<B> = Autodiff<B>;
    if config.clip_grad_norm > 0.0 && grad_norm > config.clip_grad_norm {
        let mut scale = ScaleGrads { grads: &mut grads, factor: config.clip_grad_norm / (grad_norm + 1e-6) };
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
fn train_step<B: Backend, O: Optimizer<Captioner<Autodiff<B>>, Autodiff<B>>>(
    model: Captioner<Autodiff<B>>,
    optimizer: &mut O,
    mut batch: HostBatch,
    lr: f64,
    config: &TrainConfig,
    first_trained_stage: usize,
    device: &B::Device,
) -> Result<(Captioner<Autodiff<B>>, StepStats)> {
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
    let (grads, values, grad_norm) = backward(&model, loss, vec![cross_entropy.inner(), attention.inner()]);
    let (ce, att) = (values.first().copied().unwrap_or(f64::NAN), values.get(1).copied().unwrap_or(0.0));
    if !(ce.is_finite() && att.is_finite()) {
        bail!("the loss is not finite (cross-entropy {ce}, attention {att}); lower `train.lr` or check the data");
    }
    let model = apply_gradients(model, optimizer, grads, grad_norm, lr, config);
    Ok((model, StepStats { loss: ce + att, cross_entropy: ce, attention: att, grad_norm, reward: None }))
}

/// One self-critical step on `batch` (see [`crate::scst`]).
#[allow(clippy::too_many_arguments)]
fn scst_step<B: Backend, O: Optimizer<Captioner<Autodiff<B>>, Autodiff<B>>>(
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
) -> Result<(Captioner<Autodiff<B>>, StepStats)> {
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
    let watched = vec![loss.clone().inner()];
    let (grads, values, grad_norm) = backward(&model, loss, watched);
    let value = values.first().copied().unwrap_or(f64::NAN);
    if !value.is_finite() {
        bail!("the SCST loss is not finite; lower `scst.lr`");
    }
    let model = apply_gradients(model, optimizer, grads, grad_norm, lr, config);
    Ok((
        model,
        StepStats {
            loss: value,
            cross_entropy: f64::NAN,
            attention: 0.0,
            grad_norm,
            reward: Some((rollout.mean_reward, rollout.mean_baseline)),
        },
    ))
}

/// A checkpoint's metadata: where the run is, how its images are prepared and how it decodes.
fn checkpoint_meta(config: &RunConfig, state: &TrainState, metrics: &[(String, f64)]) -> CheckpointMeta {
    let mut meta = CheckpointMeta::new(&config.name, state.step)
        .with_epoch(state.epoch as u64)
        .with_preprocess(preprocess_config(&config.data.image))
        .with_decoding(config.train.test_decoding());
    for (name, value) in metrics {
        meta = meta.with_metric(format!("val/{name}"), *value);
    }
    meta
}

/// A Markdown table of a few validation captions and a reference of each, for TensorBoard's
/// text dashboard.
fn sample_table(samples: &[&Sample], candidates: &[String], examples: usize) -> String {
    let cell = |text: &str| text.replace('|', "\\|").replace('\n', " ");
    let mut table = String::from("| image | model | reference |\n|---|---|---|\n");
    let stride = (samples.len() / examples.clamp(1, samples.len().max(1))).max(1);
    for (sample, candidate) in samples.iter().zip(candidates).step_by(stride).take(examples.max(1)) {
        let reference = sample.captions.first().map(String::as_str).unwrap_or("");
        table += &format!("| {} | {} | {} |\n", cell(&sample.image_id), cell(candidate), cell(reference));
    }
    table
}

fn samples_of(dataset: &CaptionDataset, split: Split, limit: usize) -> Vec<&Sample> {
    let samples = dataset.split(split);
    if limit > 0 { samples.take(limit).collect() } else { samples.collect() }
}

/// The vocabulary of the training captions and a freshly initialised captioner (seeded by
/// `config.seed`), its encoder loaded from `model.encoder.weights` when given; or, with
/// `train.init_from`, that checkpoint's vocabulary and weights.
fn new_model<B: Backend>(
    config: &RunConfig,
    train_samples: &[&Sample],
    device: &B::Device,
) -> Result<(TextEncoder, Captioner<Autodiff<B>>)> {
    if let Some(path) = &config.train.init_from {
        return initial_checkpoint::<B>(config, path, device);
    }
    let captions: Vec<&str> = train_samples.iter().flat_map(|s| s.captions.iter().map(String::as_str)).collect();
    let text = TextEncoder::build(&config.data.vocab, &captions).context("building the vocabulary")?;
    B::seed(device, config.seed);
    let captioner = config.model.captioner_config(&text);
    let mut model = captioner.init::<Autodiff<B>>(device).context("building the model")?;
    if let Some(weights) = &config.model.encoder.weights {
        let (encoder, report) = load_encoder_weights(model.encoder, weights, &ImportOptions::default())
            .with_context(|| format!("loading encoder weights {}", weights.display()))?;
        println!("encoder weights: {report}");
        model.encoder = encoder.apply_finetune(config.model.encoder.finetune);
    }
    Ok((text, model))
}

/// `train.init_from`: the checkpoint at `path` (a checkpoint directory, or a run directory whose
/// `checkpoints/best` is taken), checked against the `model:` section.
fn initial_checkpoint<B: Backend>(config: &RunConfig, path: &Path, device: &B::Device) -> Result<(TextEncoder, Captioner<Autodiff<B>>)> {
    let dir = run_dir::resolve_checkpoint(path);
    let checkpoint =
        load_checkpoint::<Autodiff<B>>(&dir, device).with_context(|| format!("`train.init_from`: cannot start from {}", dir.display()))?;
    let expected = config.model.captioner_config(&checkpoint.text);
    if checkpoint.model.config() != &expected {
        bail!(
            "`train.init_from`: the checkpoint {} is a different model from the `model:` section of the config \
             (checkpoint: {:?}; config: {:?}); make the `model:` section describe the checkpoint",
            dir.display(),
            checkpoint.model.config(),
            expected
        );
    }
    println!("model: starting from {} ({} words in its vocabulary)", dir.display(), checkpoint.text.vocab_size());
    let mut model = checkpoint.model;
    model.encoder = model.encoder.apply_finetune(config.model.encoder.finetune);
    Ok((checkpoint.text, model))
}

/// Whether training reads cached encoder features rather than images: the whole encoder is
/// frozen (so its features never change) and augmentation is off (so every epoch sees the same
/// pixels). `caption eval` decodes such a model from the same cache.
pub fn trains_from_features(config: &RunConfig, encoder_stages: usize) -> bool {
    let first_trained = config.model.encoder.finetune.first_trainable_stage(encoder_stages);
    config.train.feature_cache && first_trained >= encoder_stages && !config.data.image.augment.is_random()
}

/// The memory training images may take when kept in memory: none when features are used.
fn image_cache_bytes(config: &TrainConfig, use_features: bool) -> u64 {
    if use_features { 0 } else { config.cache_images_mb as u64 * 1024 * 1024 }
}

/// Sizes the CPU thread pool (`train.threads`; 0 leaves rayon's default, one per core).
fn set_threads(config: &TrainConfig) {
    if config.threads > 0 {
        // Fails only if the global pool already exists (a second run in one process): keep it.
        let _ = rayon::ThreadPoolBuilder::new().num_threads(config.threads).build_global();
    }
}

fn adamw(config: &TrainConfig) -> AdamWConfig {
    AdamWConfig::new()
        .with_beta_1(config.beta1 as f32)
        .with_beta_2(config.beta2 as f32)
        .with_epsilon(config.epsilon as f32)
        .with_weight_decay(config.weight_decay as f32)
}

/// Training throughput of a config on a device (`caption train --benchmark N`).
#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    pub device: String,
    pub threads: usize,
    /// Timed optimiser steps (after one untimed warm-up step).
    pub steps: usize,
    pub images_per_s: f64,
    pub caption_pairs_per_s: f64,
    /// Whether the steps ran on cached encoder features.
    pub from_features: bool,
    pub vocab_size: usize,
    /// Mean padded caption length of the timed batches (tokens per row, `<bos>` included).
    pub mean_row_length: f64,
    /// Seconds spent preparing the timed batches (loading images or gathering features), not
    /// included in the rates.
    pub batch_preparation_s: f64,
}

/// Measures `steps` cross-entropy training steps of `job`'s config (nothing is written but the
/// feature cache, which a frozen encoder fills as a run would).
pub fn benchmark(job: TrainJob, steps: usize) -> Result<Throughput> {
    job.config.validate()?;
    if steps == 0 {
        bail!("--benchmark needs at least 1 step");
    }
    let device = job.device.unwrap_or(job.config.train.device);
    device.check_available()?;
    set_threads(&job.config.train);
    match device {
        DeviceSpec::Cpu => bench::<caption_model::FlexBackend>(&job.config, steps, device, Default::default()),
        #[cfg(feature = "cuda")]
        DeviceSpec::Cuda(_) => {
            bench::<caption_model::device::CudaBackend>(&job.config, steps, device, device.cuda_device().expect("a CUDA device"))
        }
        #[cfg(not(feature = "cuda"))]
        DeviceSpec::Cuda(_) => unreachable!("checked by check_available"),
    }
}

fn bench<B: Backend>(config: &RunConfig, steps: usize, device_spec: DeviceSpec, device: B::Device) -> Result<Throughput> {
    let train_config = &config.train;
    let dataset = CaptionDataset::load(&config.data).context("loading the dataset")?;
    let train_samples = samples_of(&dataset, Split::Train, 0);
    if train_samples.is_empty() {
        bail!("the dataset has no training images");
    }
    let (text, mut model) = new_model::<B>(config, &train_samples, &device)?;
    let mut optimizer = adamw(train_config).init::<Autodiff<B>, Captioner<Autodiff<B>>>();
    let first_trained = config.model.encoder.finetune.first_trainable_stage(model.encoder.num_stages());
    let use_features = trains_from_features(config, model.encoder.num_stages());
    let cache_bytes = image_cache_bytes(train_config, use_features);
    let mut train_set = TrainSet::new(ImageSource::new(train_samples, &config.data.image, cache_bytes)?, &text);
    if use_features {
        let encoder = model.encoder.valid();
        let eval_image = preprocess_config(&config.data.image);
        let key = features::cache_key(&config.model.encoder_config(), &encoder, &eval_image)?;
        let set = features::load_or_compute(
            &train_config.feature_cache_dir,
            &key,
            "train",
            &encoder,
            &train_set.images,
            train_config.eval_batch_size,
            &device,
        )?;
        train_set.features = Some(set);
    }
    let order = train_set.epoch_order(config.seed, 0);
    let batches = train_set.batches_per_epoch(train_config.batch_size);
    let (mut seconds, mut preparing, mut images, mut pairs, mut lengths) = (0.0, 0.0, 0usize, 0usize, 0usize);
    for step in 0..=steps {
        let prepare_start = Instant::now();
        let batch = train_set.batch(config.seed, 0, &order, train_config.batch_size, train_config.captions_per_image, step % batches)?;
        let (batch_images, batch_pairs, batch_length) = (batch.images, batch.rows(), batch.length);
        let step_start = Instant::now();
        let (next, _) = train_step::<B, _>(model, &mut optimizer, batch, train_config.lr, train_config, first_trained, &device)?;
        model = next;
        // The first step (kernel selection, allocations) is not timed.
        if step > 0 {
            seconds += step_start.elapsed().as_secs_f64();
            preparing += (step_start - prepare_start).as_secs_f64();
            images += batch_images;
            pairs += batch_pairs;
            lengths += batch_length;
        }
    }
    let seconds = seconds.max(1e-9);
    Ok(Throughput {
        device: device_spec.to_string(),
        threads: rayon::current_num_threads(),
        steps,
        images_per_s: images as f64 / seconds,
        caption_pairs_per_s: pairs as f64 / seconds,
        from_features: use_features,
        vocab_size: text.vocab_size(),
        mean_row_length: lengths as f64 / steps as f64,
        batch_preparation_s: preparing,
    })
}

fn run<B: Backend>(job: TrainJob, device_spec: DeviceSpec, device: B::Device) -> Result<TrainSummary> {
    type A<B> = Autodiff<B>;
    let session_start = Instant::now();
    let config = &job.config;
    let train_config = &config.train;

    // Data.
    let load_start = Instant::now();
    let dataset = CaptionDataset::load(&config.data).context("loading the dataset")?;
    if !dataset.report.is_clean() {
        println!("data: {}", dataset.report);
    }
    let train_samples = samples_of(&dataset, Split::Train, 0);
    if train_samples.is_empty() {
        bail!("the dataset has no training images");
    }
    let val_samples = samples_of(&dataset, Split::Val, train_config.max_val_images);
    let test_samples = samples_of(&dataset, Split::Test, 0);

    // The run directory, vocabulary, model and optimizer: new, or from `checkpoints/last`.
    let resumed = job.resume.is_some();
    let (run_dir, text, mut model, mut state, last_dir) = match &job.resume {
        None => {
            let (text, model) = new_model::<B>(config, &train_samples, &device)?;
            let run_dir = create_run_dir(&train_config.output_dir, &config.name)?;
            (run_dir, text, model, TrainState::new(), None)
        }
        Some(dir) => {
            let last = recover_last(&dir.join(CHECKPOINTS_DIR))?;
            let state = TrainState::read(&last)?;
            let checkpoint = load_checkpoint::<A<B>>(&last, &device).with_context(|| format!("loading {}", last.display()))?;
            if checkpoint.model.config() != &config.model.captioner_config(&checkpoint.text) {
                bail!("{}: the checkpoint's model differs from the `model:` section of the run's config.yaml", last.display());
            }
            (dir.clone(), checkpoint.text, checkpoint.model, state, Some(last))
        }
    };
    let checkpoints = run_dir.join(CHECKPOINTS_DIR);
    std::fs::create_dir_all(&checkpoints).with_context(|| format!("cannot create {}", checkpoints.display()))?;

    let mut optimizer = adamw(train_config).init::<A<B>, Captioner<A<B>>>();
    if let Some(last) = &last_dir {
        let record = load_optimizer::<A<B>, _>(last, &device)?;
        let ids = param_ids::<A<B>, _>(&model);
        optimizer = optimizer.load_record(remap_record(record, &state.param_ids, &ids)?);
    }

    // Inputs: with a frozen encoder and no augmentation, cached encoder features (computed
    // once per encoder); otherwise images, the training ones in memory when they fit.
    // Validation and test images are never augmented.
    let first_trained = config.model.encoder.finetune.first_trainable_stage(model.encoder.num_stages());
    let use_features = trains_from_features(config, model.encoder.num_stages());
    if train_config.feature_cache && first_trained >= model.encoder.num_stages() && !use_features {
        println!("features: not cached, because augmentation is on (data.image.augment)");
    }
    let cache_bytes = image_cache_bytes(train_config, use_features);
    let eval_image = preprocess_config(&config.data.image);
    let mut train_set = TrainSet::new(ImageSource::new(train_samples.clone(), &config.data.image, cache_bytes)?, &text);
    let val_source = ImageSource::new(val_samples.clone(), &eval_image, cache_bytes)?;
    let test_source = ImageSource::new(test_samples.clone(), &eval_image, 0)?;
    let (mut val_features, mut test_features) = (None, None);
    if use_features {
        let encoder = model.encoder.valid();
        let key = features::cache_key(&config.model.encoder_config(), &encoder, &eval_image)?;
        let dir = &train_config.feature_cache_dir;
        let batch = train_config.eval_batch_size;
        train_set.features = Some(features::load_or_compute(dir, &key, "train", &encoder, &train_set.images, batch, &device)?);
        if !val_source.is_empty() {
            val_features = Some(features::load_or_compute(dir, &key, "val", &encoder, &val_source, batch, &device)?);
        }
        if train_config.test && !test_source.is_empty() {
            test_features = Some(features::load_or_compute(dir, &key, "test", &encoder, &test_source, batch, &device)?);
        }
    }
    let val_inputs = match &val_features {
        Some(set) => EvalInputs::Features(set),
        None => EvalInputs::Images(&val_source),
    };

    // Provenance.
    let git = git_commit(Path::new("."));
    let threads = rayon::current_num_threads();
    if !resumed {
        let yaml = match &job.config_yaml {
            Some(yaml) => yaml.clone(),
            None => config.to_yaml()?,
        };
        caption_data::fsutil::write_atomic(&run_dir.join(CONFIG_FILE), yaml.as_bytes())?;
        let (parameters, trainable_parameters) = count_parameters::<A<B>, _>(&model);
        let manifest = Manifest {
            run_name: config.name.clone(),
            run_dir: run_dir.clone(),
            created: run_dir::rfc3339(SystemTime::now()),
            command_line: job.command_line.clone(),
            git_commit: git.clone(),
            seed: config.seed,
            caption_version: env!("CARGO_PKG_VERSION").to_string(),
            burn_version: run_dir::BURN_VERSION.to_string(),
            backend: device_spec.backend_name().to_string(),
            device: device_spec.to_string(),
            threads,
            dataset: fingerprint(&dataset, &annotation_files(&config.data), text.vocab_size())?,
            parameters,
            trainable_parameters,
            resumes: Vec::new(),
        };
        manifest.write(&run_dir)?;
    } else {
        let mut manifest = Manifest::read(&run_dir)?;
        let current = fingerprint(&dataset, &annotation_files(&config.data), text.vocab_size())?;
        if current.sha256 != manifest.dataset.sha256 {
            println!(
                "warning: the dataset differs from the one this run started on (fingerprint {} now, {} then)",
                current.sha256, manifest.dataset.sha256
            );
        }
        manifest.resumes.push(ResumeRecord {
            time: run_dir::rfc3339(SystemTime::now()),
            from_epoch: state.epoch,
            from_step: state.step,
            command_line: job.command_line.clone(),
            git_commit: git.clone(),
            device: device_spec.to_string(),
        });
        manifest.write(&run_dir)?;
    }
    let mut log = MetricsLog::open(&run_dir, resumed.then_some(state.step))?;
    let board_dir = run_dir.join(TENSORBOARD_DIR);
    let board_error = |e: std::io::Error| anyhow::anyhow!("cannot write TensorBoard events in {}: {e}", board_dir.display());
    let mut board = EventWriter::create(&board_dir).map_err(board_error)?;
    if resumed {
        // Steps after the checkpoint are trained again: TensorBoard drops their first logging.
        board.add_session_start(state.step + 1).map_err(board_error)?;
    }

    let steps_per_epoch = train_set.batches_per_epoch(train_config.batch_size);
    let total_steps = (steps_per_epoch * train_config.epochs) as u64;
    let (parameters, trainable) = count_parameters::<A<B>, _>(&model);
    println!(
        "{} run {} on {} ({} threads): {} train / {} val / {} test images, vocabulary {}, {} parameters ({} trained), {} steps per epoch{}; data ready in {:.1}s",
        if resumed { "resuming" } else { "starting" },
        run_dir.display(),
        device_spec,
        threads,
        train_set.len(),
        val_samples.len(),
        test_samples.len(),
        text.vocab_size(),
        parameters,
        trainable,
        steps_per_epoch,
        if train_set.features.is_some() {
            ", from cached encoder features"
        } else if train_set.images.is_cached() {
            ", images cached in memory"
        } else {
            ""
        },
        load_start.elapsed().as_secs_f64()
    );
    if resumed {
        println!("resuming after epoch {} batch {} (step {})", state.epoch, state.batch_in_epoch, state.step);
    }
    // SCST rewards: CIDEr-D with the training split's document frequencies.
    let reward = config.scst.enabled.then(|| scst::Reward::new(train_set.images.samples.iter().map(|s| s.captions.as_slice())));
    let mut last_val: Vec<(String, f64)> = Vec::new();
    let mut interrupted = false;
    let seconds_before = state.train_seconds;
    let train_start = Instant::now();

    'epochs: while !state.finished && state.epoch < train_config.epochs {
        let epoch = state.epoch;
        // Before `finetune_after_epoch`, the whole encoder is frozen.
        let first_trained = if epoch < train_config.finetune_after_epoch { model.encoder.num_stages() } else { first_trained };
        let order = train_set.epoch_order(config.seed, epoch);
        let first_batch = state.batch_in_epoch;
        let epoch_start = Instant::now();
        let (mut window_loss, mut window_steps, mut window_images, mut window_start) = (0.0, 0usize, 0usize, Instant::now());
        let (mut epoch_loss, mut epoch_steps) = (0.0, 0usize);

        let progress = EpochProgress::start(epoch + 1, train_config.epochs, steps_per_epoch, first_batch);
        let stop_mid_epoch = std::thread::scope(|scope| -> Result<bool> {
            let (sender, receiver) = std::sync::mpsc::sync_channel::<Result<HostBatch>>(2);
            let train_set = &train_set;
            let order = &order;
            scope.spawn(move || {
                for index in first_batch..steps_per_epoch {
                    let batch = train_set.batch(config.seed, epoch, order, train_config.batch_size, train_config.captions_per_image, index);
                    if sender.send(batch).is_err() {
                        break;
                    }
                }
            });
            for index in first_batch..steps_per_epoch {
                let batch = receiver.recv().context("the batch loader stopped")??;
                let images = batch.images;
                B::seed(&device, SplitMix64::for_item(config.seed ^ DROPOUT_STREAM, state.step).next_u64());
                let (lr, (next, stats)) = match &reward {
                    Some(reward) if config.scst.active(epoch) => {
                        let seed = SplitMix64::for_item(config.seed ^ SCST_STREAM, state.step).next_u64();
                        let lr = config.scst.lr;
                        (
                            lr,
                            scst_step::<B, _>(
                                model.clone(),
                                &mut optimizer,
                                batch,
                                lr,
                                train_config,
                                &config.scst,
                                reward,
                                &text,
                                seed,
                                first_trained,
                                &device,
                            )?,
                        )
                    }
                    _ => {
                        let lr = learning_rate(train_config, state.step, steps_per_epoch, total_steps);
                        (lr, train_step::<B, _>(model.clone(), &mut optimizer, batch, lr, train_config, first_trained, &device)?)
                    }
                };
                model = next;
                state.step += 1;
                state.batch_in_epoch = index + 1;
                window_loss += stats.loss;
                window_steps += 1;
                window_images += images;
                epoch_loss += stats.loss;
                epoch_steps += 1;
                progress.step(|| format!("loss {:.4}", stats.loss));
                if state.step % train_config.log_every as u64 == 0 || index + 1 == steps_per_epoch {
                    let seconds = window_start.elapsed().as_secs_f64().max(1e-9);
                    let images_per_s = window_images as f64 / seconds;
                    let mean_loss = window_loss / window_steps.max(1) as f64;
                    let detail = match stats.reward {
                        Some((reward, baseline)) => format!("scst reward {reward:.4} baseline {baseline:.4}"),
                        None => format!("ce {:.4} att {:.4}", stats.cross_entropy, stats.attention),
                    };
                    progress.println(&format!(
                        "epoch {}/{} step {}/{} loss {:.4} ({detail}) lr {:.2e} grad-norm {:.3} {:.0} img/s",
                        epoch + 1,
                        train_config.epochs,
                        state.step,
                        total_steps,
                        mean_loss,
                        lr,
                        stats.grad_norm,
                        images_per_s
                    ));
                    let mut line = serde_json::json!({
                        "kind": "train", "epoch": epoch + 1, "step": state.step, "loss": mean_loss, "lr": lr,
                        "grad_norm": stats.grad_norm, "images_per_s": images_per_s,
                        "elapsed_s": seconds_before + train_start.elapsed().as_secs_f64(),
                    });
                    let mut scalars = vec![
                        ("train/loss", mean_loss),
                        ("train/lr", lr),
                        ("train/grad_norm", stats.grad_norm),
                        ("train/images_per_s", images_per_s),
                    ];
                    match stats.reward {
                        Some((reward, baseline)) => {
                            line["scst_reward"] = serde_json::json!(reward);
                            line["scst_baseline"] = serde_json::json!(baseline);
                            scalars.extend([("train/scst_reward", reward), ("train/scst_baseline", baseline)]);
                        }
                        None => {
                            line["cross_entropy"] = serde_json::json!(stats.cross_entropy);
                            line["attention_reg"] = serde_json::json!(stats.attention);
                            scalars.extend([("train/cross_entropy", stats.cross_entropy), ("train/attention_reg", stats.attention)]);
                        }
                    }
                    log.write(&line)?;
                    for (tag, value) in scalars {
                        board.add_scalar(tag, value, state.step).map_err(board_error)?;
                    }
                    (window_loss, window_steps, window_images, window_start) = (0.0, 0, 0, Instant::now());
                }
                if train_config.checkpoint_every > 0
                    && state.step % train_config.checkpoint_every as u64 == 0
                    && index + 1 < steps_per_epoch
                {
                    board.flush().map_err(board_error)?;
                    state.train_seconds = seconds_before + train_start.elapsed().as_secs_f64();
                    state.param_ids = param_ids::<A<B>, _>(&model).iter().map(|id| id.val()).collect();
                    sync_running_statistics(&model);
                    let meta = checkpoint_meta(config, &state, &last_val);
                    save_last(&checkpoints, &model, &text, &meta, optimizer.to_record(), &state)?;
                    if job.interrupt_after_step.is_some_and(|s| state.step >= s) {
                        return Ok(true);
                    }
                }
            }
            Ok(false)
        });
        progress.finish();
        let stop_mid_epoch = stop_mid_epoch?;
        if stop_mid_epoch {
            interrupted = true;
            break 'epochs;
        }

        state.epoch = epoch + 1;
        state.batch_in_epoch = 0;
        let train_seconds = epoch_start.elapsed().as_secs_f64();
        println!("epoch {} done: mean loss {:.4}, {:.1}s", epoch + 1, epoch_loss / epoch_steps.max(1) as f64, train_seconds);

        // Validation, best checkpoint, early stopping.
        let validate = !val_samples.is_empty() && (state.epoch % train_config.val_every == 0 || state.epoch == train_config.epochs);
        let mut stop = false;
        if validate {
            let val_start = Instant::now();
            let pipeline = CaptionPipeline::new(model.valid(), text.clone(), eval_image.clone(), train_config.test_decoding(), &device);
            let validation_decoding = train_config.validation_decoding();
            let candidates = texts(&decode_images(&pipeline, val_inputs, &validation_decoding, train_config.eval_batch_size)?);
            let evaluation = score(&val_samples, &candidates)?;
            last_val = evaluation.corpus.iter().map(|(n, v)| (n.to_string(), v)).collect();
            let value = evaluation.corpus.get(&train_config.best_metric).unwrap_or(f64::NAN);
            let improved = state.best.as_ref().is_none_or(|b| value > b.value);
            if improved {
                state.best = Some(Best { metric: train_config.best_metric.clone(), value, epoch: state.epoch, step: state.step });
                state.bad_validations = 0;
                let meta = checkpoint_meta(config, &state, &last_val);
                save_checkpoint(&checkpoints.join(BEST), &pipeline.model, &text, &meta).context("writing checkpoints/best")?;
            } else {
                state.bad_validations += 1;
                stop = train_config.patience > 0 && state.bad_validations >= train_config.patience;
            }
            let seconds = val_start.elapsed().as_secs_f64();
            let shown: Vec<String> = last_val.iter().map(|(n, v)| format!("{n} {v:.4}")).collect();
            println!(
                "validation after epoch {} ({} images, {}, {:.1}s): {}{}",
                state.epoch,
                val_samples.len(),
                validation_decoding.describe(),
                seconds,
                shown.join(", "),
                if improved {
                    "  (best so far)".to_string()
                } else {
                    format!(
                        "  (best {:.4} at epoch {})",
                        state.best.as_ref().map(|b| b.value).unwrap_or(f64::NAN),
                        state.best.as_ref().map(|b| b.epoch).unwrap_or(0)
                    )
                }
            );
            if let Some(example) = candidates.first() {
                println!("  e.g. image {}: {example}", val_samples[0].image_id);
            }
            let mut line = serde_json::json!({
                "kind": "val", "epoch": state.epoch, "step": state.step, "images": val_samples.len(),
                "best": improved, "seconds": seconds, "elapsed_s": seconds_before + train_start.elapsed().as_secs_f64(),
            });
            for (name, value) in &last_val {
                line[name.as_str()] = serde_json::json!(value);
            }
            log.write(&line)?;
            for (name, value) in &last_val {
                board.add_scalar(&format!("val/{name}"), *value, state.step).map_err(board_error)?;
            }
            board
                .add_text("val/samples", &sample_table(&val_samples, &candidates, train_config.num_examples), state.step)
                .map_err(board_error)?;
            if stop {
                println!("early stopping: no improvement of {} in {} validations", train_config.best_metric, state.bad_validations);
            }
        }
        if stop || state.epoch == train_config.epochs {
            state.finished = true;
            state.stopped_early = stop;
        }
        state.train_seconds = seconds_before + train_start.elapsed().as_secs_f64();
        state.param_ids = param_ids::<A<B>, _>(&model).iter().map(|id| id.val()).collect();
        board.flush().map_err(board_error)?;
        sync_running_statistics(&model);
        let meta = checkpoint_meta(config, &state, &last_val);
        save_last(&checkpoints, &model, &text, &meta, optimizer.to_record(), &state)?;
        if job.interrupt_after_step.is_some_and(|s| state.step >= s) && !state.finished {
            interrupted = true;
            break 'epochs;
        }
    }
    let train_seconds = if resumed || state.step > 0 { state.train_seconds } else { 0.0 };

    let mut test = None;
    if !interrupted {
        println!(
            "training done: {} epochs, {} steps, {:.1}s of training{}",
            state.epoch,
            state.step,
            train_seconds,
            if state.stopped_early { " (stopped early)" } else { "" }
        );
        if train_config.test && !test_samples.is_empty() {
            let best_dir = checkpoints.join(BEST);
            let (dir, label) =
                if best_dir.is_dir() { (best_dir, "checkpoints/best") } else { (checkpoints.join(run_dir::LAST), "checkpoints/last") };
            let test_start = Instant::now();
            let checkpoint = load_checkpoint::<B>(&dir, &device).with_context(|| format!("loading {}", dir.display()))?;
            // The encoder is frozen when features are cached, so the best checkpoint's encoder
            // is the one that computed them.
            let inputs = match &test_features {
                Some(set) => EvalInputs::Features(set),
                None => EvalInputs::Images(&test_source),
            };
            let label = ReportLabel {
                title: config.name.clone(),
                split: "test".into(),
                checkpoint: label.into(),
                epoch: checkpoint.meta.epoch,
                step: checkpoint.meta.step,
            };
            let pipeline = CaptionPipeline::from_checkpoint(checkpoint, &device);
            let decoding = train_config.test_decoding();
            let run =
                SplitRun { inputs, samples: &test_samples, decoding: &decoding, batch_size: train_config.eval_batch_size, meteor: None };
            let (report, captions) = evaluate_split(&pipeline, run, label, test_start, &run_dir.join("eval").join("test"))?;
            print!("{}", format_report(&report, &test_samples, &texts(&captions), train_config.num_examples));
            println!("wrote {}", run_dir.join("eval").join("test").display());
            test = Some(report);
        }
    } else {
        println!("interrupted after step {} (checkpoints/last written)", state.step);
    }
    println!("run directory: {} (session {:.1}s)", run_dir.display(), session_start.elapsed().as_secs_f64());
    Ok(TrainSummary {
        run_dir,
        epochs_completed: state.epoch,
        steps: state.step,
        best: state.best.clone(),
        stopped_early: state.stopped_early,
        interrupted,
        test,
        train_seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::ElementConversion;

    #[test]
    fn schedule_warms_up_then_decays() {
        let config = TrainConfig { lr: 1.0, warmup_steps: 10, min_lr_ratio: 0.0, ..Default::default() };
        assert!((learning_rate(&config, 0, 10, 110) - 0.1).abs() < 1e-12);
        assert!((learning_rate(&config, 9, 10, 110) - 1.0).abs() < 1e-12);
        assert!((learning_rate(&config, 10, 10, 110) - 1.0).abs() < 1e-12);
        assert!((learning_rate(&config, 60, 10, 110) - 0.5).abs() < 1e-12);
        assert!(learning_rate(&config, 109, 10, 110) < 1e-3);
        let step = TrainConfig { schedule: Schedule::Step, step_epochs: 2, step_gamma: 0.5, ..config };
        assert_eq!(learning_rate(&step, 45, 10, 110), 0.25);
    }

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
