//! Setting a run up: the model (fresh, from encoder weights, or from a checkpoint), the
//! optimizer and its schedule, threads, which splits and inputs are used, and what checkpoints
//! record about the run.

use std::path::Path;

use anyhow::{Context, Result, bail};
use burn::backend::Autodiff;
use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::AdamWConfig;
use burn::prelude::*;
use caption_data::image::{AugmentConfig, ImageConfig};
use caption_data::{CaptionDataset, Sample, Split, TextEncoder};
use caption_model::{Captioner, CheckpointMeta, ImportOptions, load_checkpoint, load_encoder_weights};

use crate::config::{RunConfig, Schedule, TrainConfig};
use crate::run_dir;
use crate::state::TrainState;

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

/// A checkpoint's metadata: where the run is, how its images are prepared and how it decodes.
pub fn checkpoint_meta(config: &RunConfig, state: &TrainState, metrics: &[(String, f64)]) -> CheckpointMeta {
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
pub fn sample_table(samples: &[&Sample], candidates: &[String], examples: usize) -> String {
    let cell = |text: &str| text.replace('|', "\\|").replace('\n', " ");
    let mut table = String::from("| image | model | reference |\n|---|---|---|\n");
    let stride = (samples.len() / examples.clamp(1, samples.len().max(1))).max(1);
    for (sample, candidate) in samples.iter().zip(candidates).step_by(stride).take(examples.max(1)) {
        let reference = sample.captions.first().map(String::as_str).unwrap_or("");
        table += &format!("| {} | {} | {} |\n", cell(&sample.image_id), cell(candidate), cell(reference));
    }
    table
}

pub fn samples_of(dataset: &CaptionDataset, split: Split, limit: usize) -> Vec<&Sample> {
    let samples = dataset.split(split);
    if limit > 0 { samples.take(limit).collect() } else { samples.collect() }
}

/// The vocabulary of the training captions and a freshly initialised captioner (seeded by
/// `config.seed`), its encoder loaded from `model.encoder.weights` when given; or, with
/// `train.init_from`, that checkpoint's vocabulary and weights.
pub fn new_model<B: Backend>(
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
pub fn image_cache_bytes(config: &TrainConfig, use_features: bool) -> u64 {
    if use_features { 0 } else { config.cache_images_mb as u64 * 1024 * 1024 }
}

/// Sizes the CPU thread pool (`train.threads`; 0 leaves rayon's default, one per core).
pub fn set_threads(config: &TrainConfig) {
    if config.threads > 0 {
        // Fails only if the global pool already exists (a second run in one process): keep it.
        let _ = rayon::ThreadPoolBuilder::new().num_threads(config.threads).build_global();
    }
}

pub fn adamw(config: &TrainConfig) -> AdamWConfig {
    AdamWConfig::new()
        .with_beta_1(config.beta1 as f32)
        .with_beta_2(config.beta2 as f32)
        .with_epsilon(config.epsilon as f32)
        .with_weight_decay(config.weight_decay as f32)
}

/// Counts (all, trainable) parameter elements.
pub fn count_parameters<B: Backend, M: Module<B>>(module: &M) -> (usize, usize) {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
