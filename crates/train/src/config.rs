//! The `model:` and `train:` sections of an experiment config, strictly typed (unknown keys are
//! errors), every default in a `Default` impl, and the run config that bundles them with the
//! data section.

use std::path::PathBuf;

use anyhow::{Result, bail};
use caption_data::DataConfig;
use caption_data::TextEncoder;
use caption_model::{
    BeamSearchConfig, CaptionerConfig, DecodeStrategy, DecoderConfig, DecodingConfig, DeviceSpec, EncoderConfig, EncoderKind, Finetune,
};

use crate::scst::ScstConfig;
use serde::{Deserialize, Serialize};

/// Score names `train.best_metric` may name (pycocoevalcap's spelling): those validation
/// computes.
pub fn selectable_metrics() -> Vec<&'static str> {
    caption_eval::Metric::ALL.iter().flat_map(|metric| metric.score_names().iter().copied()).collect()
}

/// Everything a training run is configured by (the experiment config minus sections that do
/// not concern training).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// Names the run directory `<train.output_dir>/<name>-<YYYYmmdd-HHMMSS>/`.
    pub name: String,
    /// Seeds everything random: initialisation, data order, caption choice, dropout.
    pub seed: u64,
    pub data: DataConfig,
    pub model: ModelConfig,
    pub train: TrainConfig,
    /// Self-critical sequence training after the cross-entropy epochs (off by default).
    pub scst: ScstConfig,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            name: "experiment".into(),
            seed: 42,
            data: DataConfig::default(),
            model: ModelConfig::default(),
            train: TrainConfig::default(),
            scst: ScstConfig::default(),
        }
    }
}

impl RunConfig {
    pub fn validate(&self) -> Result<()> {
        if self.name.is_empty() || self.name.contains(['/', '\\']) {
            bail!("`name` must be a non-empty name without slashes (it names the run directory)");
        }
        self.data.validate()?;
        self.model.validate()?;
        self.train.validate()?;
        self.scst.validate(self.train.epochs)?;
        Ok(())
    }

    pub fn to_yaml(&self) -> Result<String> {
        Ok(serde_norway::to_string(self)?)
    }
}

/// `model:` the captioner to train.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    pub encoder: EncoderSection,
    /// `kind: attention_lstm` (default) or `kind: transformer`, with that decoder's options
    /// (`caption_model::DecoderConfig`; any left out take their defaults).
    pub decoder: DecoderConfig,
}

impl ModelConfig {
    pub fn validate(&self) -> Result<()> {
        self.encoder_config().validate().map_err(|e| anyhow::anyhow!("model.encoder: {e}"))?;
        self.decoder_config().validate().map_err(|e| anyhow::anyhow!("model.decoder: {e}"))?;
        if let Some(weights) = &self.encoder.weights
            && weights.as_os_str().is_empty()
        {
            bail!("model.encoder.weights: an empty path; leave the key out to train from scratch");
        }
        Ok(())
    }

    pub fn encoder_config(&self) -> EncoderConfig {
        let e = &self.encoder;
        EncoderConfig::new(e.network).with_layers(e.layers).with_width(e.width).with_width_mult(e.width_mult).with_finetune(e.finetune)
    }

    pub fn decoder_config(&self) -> DecoderConfig {
        self.decoder.clone()
    }

    /// The captioner config for a vocabulary.
    pub fn captioner_config(&self, text: &TextEncoder) -> CaptionerConfig {
        CaptionerConfig::for_text_encoder(self.encoder_config(), self.decoder_config(), text)
    }
}

/// `model.encoder:` the CNN (see `caption_model::EncoderConfig`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EncoderSection {
    /// resnet18, resnet34, resnet50, resnet101 or mobilenet_v2.
    pub network: EncoderKind,
    /// ResNet only: blocks per stage (default: the network's).
    pub layers: Option<[usize; 4]>,
    /// ResNet only: channels of the stem and first stage (torchvision: 64).
    pub width: usize,
    /// MobileNetV2 only: channel multiplier.
    pub width_mult: f64,
    /// frozen, all, or last:N (stages).
    pub finetune: Finetune,
    /// torchvision weights (`.pth` or `.safetensors`) to start from; none = random init.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weights: Option<PathBuf>,
}

impl Default for EncoderSection {
    fn default() -> Self {
        EncoderSection {
            network: EncoderKind::Resnet18,
            layers: None,
            width: 64,
            width_mult: 1.0,
            finetune: Finetune::Frozen,
            weights: None,
        }
    }
}

/// The learning-rate schedule after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    /// Cosine decay from `lr` to `lr * min_lr_ratio` over the remaining steps.
    #[default]
    Cosine,
    /// `lr * step_gamma^(epoch / step_epochs)`.
    Step,
    /// `lr` throughout.
    Constant,
}

/// Whether every training batch has the same tensor shapes (see
/// [`crate::data::TrainSet::batch`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum FixedShapes {
    /// On CUDA, whose kernels are compiled and tuned per shape; off on the CPU, where padding
    /// to the longest possible caption is only extra work.
    #[default]
    Auto,
    On,
    Off,
}

impl FixedShapes {
    /// Whether a run on `device` uses fixed shapes.
    pub fn on(self, device: DeviceSpec) -> bool {
        match self {
            FixedShapes::Auto => !matches!(device, DeviceSpec::Cpu),
            FixedShapes::On => true,
            FixedShapes::Off => false,
        }
    }
}

/// `train:` the optimisation, validation and reporting settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// cpu, cuda or cuda:N (`--device` overrides it).
    pub device: DeviceSpec,
    /// Where run directories are created.
    pub output_dir: PathBuf,
    /// Start from this checkpoint's weights and vocabulary instead of a fresh model (a checkpoint
    /// directory, or a run directory: its `checkpoints/best`), as ImageCaptioning.pytorch's
    /// `--start_from`; the optimizer, schedule and epochs start anew. The `model:` section must
    /// describe the checkpoint's architecture. Typical use: self-critical training of a
    /// cross-entropy model (`scst.after_epoch: 0`).
    pub init_from: Option<PathBuf>,
    pub epochs: usize,
    /// Images per optimiser step; each brings `captions_per_image` captions.
    pub batch_size: usize,
    /// Captions per image and step, drawn at random from the image's references each epoch
    /// (0: all of them). The image is encoded once for all its captions.
    pub captions_per_image: usize,
    /// Every batch `batch_size` images with the same number of captions, padded to
    /// `data.vocab.max_length + 1` tokens: `auto` (on CUDA only), `on` or `off`.
    pub fixed_shapes: FixedShapes,
    /// Peak learning rate (AdamW).
    pub lr: f64,
    /// Peak learning rate of the encoder stages being fine-tuned (none: `lr`). It follows the
    /// same warm-up and schedule, scaled by `encoder_lr / lr`.
    pub encoder_lr: Option<f64>,
    /// Fine-tune the encoder stages that `model.encoder.finetune` names only from this epoch on
    /// (0-based; 0: from the start); the encoder stays frozen before it.
    pub finetune_after_epoch: usize,
    /// AdamW's decoupled weight decay.
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub epsilon: f64,
    /// Linear warm-up from 0 to `lr` over this many steps.
    pub warmup_steps: usize,
    pub schedule: Schedule,
    /// Cosine: the final learning rate as a fraction of `lr`.
    pub min_lr_ratio: f64,
    /// Step schedule: epochs between decays, and the decay factor.
    pub step_epochs: usize,
    pub step_gamma: f64,
    /// Clip the global gradient norm to this value (0: no clipping).
    pub clip_grad_norm: f64,
    /// Label smoothing of the cross-entropy (0: none).
    pub label_smoothing: f64,
    /// λ of the doubly stochastic attention regulariser (attention LSTM only; 0: off).
    pub attention_regularizer: f64,
    /// Decoding for validation (`{method: greedy}` or `{method: beam, beam_size: 3}`).
    pub decode: DecodeStrategy,
    /// Decoding for the final test evaluation; recorded in checkpoints as their default
    /// decoding (`caption caption`, `caption eval` and the server use it).
    pub test_decode: DecodeStrategy,
    /// No caption ends with `a`, `the`, `with`, ... (ImageCaptioning.pytorch's
    /// `remove_bad_endings`, its word list): applies to validation, test, `caption eval` and
    /// SCST's samples and greedy baseline.
    pub block_bad_endings: bool,
    /// Validation score that selects the best checkpoint and drives early stopping.
    pub best_metric: String,
    /// Stop after this many validations without improvement (0: never stop early).
    pub patience: usize,
    /// Validate every this many epochs (the last epoch is always validated).
    pub val_every: usize,
    /// Validate on the first N val images only (0: all).
    pub max_val_images: usize,
    /// Images per decoding batch (validation and test).
    pub eval_batch_size: usize,
    /// Log a line every this many steps: the means of the loss terms and gradient norm since
    /// the last line (reading them waits for the device, so it is not done every step).
    pub log_every: usize,
    /// Also write `checkpoints/last` every this many steps within an epoch (0: at epoch ends only).
    pub checkpoint_every: usize,
    /// Evaluate the best checkpoint on the test split when training ends.
    pub test: bool,
    /// Example captions printed in the test report.
    pub num_examples: usize,
    /// Keep prepared images in memory when they fit in this many MiB and augmentation is off
    /// (0: never cache).
    pub cache_images_mb: usize,
    /// Worker threads for image loading and the CPU backend (0: all cores).
    pub threads: usize,
    /// With a frozen encoder (and no augmentation), compute every split's grid features once
    /// and train the decoder from them (see `caption_train::features`).
    pub feature_cache: bool,
    /// Where cached features are kept, one folder per encoder (weights + preprocessing).
    pub feature_cache_dir: PathBuf,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            device: DeviceSpec::Cpu,
            output_dir: PathBuf::from("experiments"),
            init_from: None,
            epochs: 20,
            batch_size: 32,
            captions_per_image: 0,
            fixed_shapes: FixedShapes::Auto,
            lr: 4e-4,
            encoder_lr: None,
            finetune_after_epoch: 0,
            weight_decay: 1e-4,
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-8,
            warmup_steps: 500,
            schedule: Schedule::Cosine,
            min_lr_ratio: 0.01,
            step_epochs: 10,
            step_gamma: 0.5,
            clip_grad_norm: 5.0,
            label_smoothing: 0.1,
            // The penalty sums over regions while the cross-entropy is a mean over tokens:
            // 0.02 weighs it as sgrvinod's port of the paper does (λ = 1, mean over 49 regions).
            attention_regularizer: 0.02,
            decode: DecodeStrategy::Greedy,
            test_decode: DecodeStrategy::Beam(BeamSearchConfig::new(3)),
            block_bad_endings: false,
            best_metric: "CIDEr".into(),
            patience: 5,
            val_every: 1,
            max_val_images: 0,
            eval_batch_size: 64,
            log_every: 50,
            checkpoint_every: 0,
            test: true,
            num_examples: 5,
            cache_images_mb: 2048,
            threads: 0,
            feature_cache: true,
            feature_cache_dir: PathBuf::from("datasets/feature-cache"),
        }
    }
}

impl TrainConfig {
    /// Validation's decoding: `decode` with `block_bad_endings`.
    pub fn validation_decoding(&self) -> DecodingConfig {
        DecodingConfig::new(self.decode.clone()).with_block_bad_endings(self.block_bad_endings)
    }

    /// The test's decoding, and the checkpoints' default: `test_decode` with `block_bad_endings`.
    pub fn test_decoding(&self) -> DecodingConfig {
        DecodingConfig::new(self.test_decode.clone()).with_block_bad_endings(self.block_bad_endings)
    }

    pub fn validate(&self) -> Result<()> {
        let positive = |value: usize, key: &str| -> Result<()> {
            if value == 0 {
                bail!("`train.{key}` must be at least 1");
            }
            Ok(())
        };
        positive(self.epochs, "epochs")?;
        positive(self.batch_size, "batch_size")?;
        positive(self.eval_batch_size, "eval_batch_size")?;
        positive(self.log_every, "log_every")?;
        positive(self.val_every, "val_every")?;
        if !(self.lr.is_finite() && self.lr > 0.0) {
            bail!("`train.lr` is {}; it must be positive", self.lr);
        }
        if let Some(encoder_lr) = self.encoder_lr
            && !(encoder_lr.is_finite() && encoder_lr > 0.0)
        {
            bail!("`train.encoder_lr` is {encoder_lr}; it must be positive (leave it out to use `train.lr`)");
        }
        if self.finetune_after_epoch > 0 && self.finetune_after_epoch >= self.epochs {
            bail!(
                "`train.finetune_after_epoch` is {}, but `train.epochs` is {}: the encoder would never be fine-tuned",
                self.finetune_after_epoch,
                self.epochs
            );
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            bail!("`train.weight_decay` is {}; it must be 0 or more", self.weight_decay);
        }
        for (value, key) in [(self.beta1, "beta1"), (self.beta2, "beta2")] {
            if !(0.0..1.0).contains(&value) {
                bail!("`train.{key}` is {value}; it must be in [0, 1)");
            }
        }
        if !(self.epsilon.is_finite() && self.epsilon > 0.0) {
            bail!("`train.epsilon` is {}; it must be positive", self.epsilon);
        }
        if !(0.0..=1.0).contains(&self.min_lr_ratio) {
            bail!("`train.min_lr_ratio` is {}; it must be in [0, 1]", self.min_lr_ratio);
        }
        if self.schedule == Schedule::Step {
            positive(self.step_epochs, "step_epochs")?;
            if !(self.step_gamma > 0.0 && self.step_gamma <= 1.0) {
                bail!("`train.step_gamma` is {}; it must be in (0, 1]", self.step_gamma);
            }
        }
        if !(self.clip_grad_norm.is_finite() && self.clip_grad_norm >= 0.0) {
            bail!("`train.clip_grad_norm` is {}; use a positive norm, or 0 to turn clipping off", self.clip_grad_norm);
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            bail!("`train.label_smoothing` is {}; it must be in [0, 1)", self.label_smoothing);
        }
        if !(self.attention_regularizer.is_finite() && self.attention_regularizer >= 0.0) {
            bail!("`train.attention_regularizer` is {}; it must be 0 or more", self.attention_regularizer);
        }
        self.validation_decoding().validate().map_err(|e| anyhow::anyhow!("`train.decode`: {e}"))?;
        self.test_decoding().validate().map_err(|e| anyhow::anyhow!("`train.test_decode`: {e}"))?;
        let selectable = selectable_metrics();
        if !selectable.contains(&self.best_metric.as_str()) {
            bail!("`train.best_metric` is {:?}; expected one of {}", self.best_metric, selectable.join(", "));
        }
        if self.output_dir.as_os_str().is_empty() {
            bail!("`train.output_dir` must not be empty");
        }
        if self.feature_cache && self.feature_cache_dir.as_os_str().is_empty() {
            bail!("`train.feature_cache_dir` must not be empty (or set `train.feature_cache: false`)");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_round_trip_through_yaml() {
        let yaml = RunConfig::default().to_yaml().unwrap();
        let back: RunConfig = serde_norway::from_str(&yaml).unwrap();
        assert_eq!(back, RunConfig::default());
    }

    #[test]
    fn sections_are_strict_and_filled_with_defaults() {
        let config: TrainConfig = serde_norway::from_str("epochs: 3\ndecode: {method: beam, beam_size: 2}\n").unwrap();
        assert_eq!(config.epochs, 3);
        assert_eq!(config.decode, DecodeStrategy::Beam(BeamSearchConfig::new(2)));
        assert_eq!(config.batch_size, TrainConfig::default().batch_size);
        let err = serde_norway::from_str::<TrainConfig>("epochz: 3\n").unwrap_err().to_string();
        assert!(err.contains("unknown field `epochz`"), "{err}");

        let model: ModelConfig = serde_norway::from_str(
            "encoder: {layers: [1, 1, 1, 1], width: 16, finetune: all}\ndecoder: {kind: attention_lstm, hidden_size: 64}\n",
        )
        .unwrap();
        assert_eq!(model.encoder.width, 16);
        let DecoderConfig::AttentionLstm(lstm) = &model.decoder else { panic!("lstm expected") };
        assert_eq!((lstm.hidden_size, lstm.embedding_size), (64, 512));
        let err = serde_norway::from_str::<ModelConfig>("decoder: {kind: attention_lstm, hiden_size: 64}\n").unwrap_err().to_string();
        assert!(err.contains("hiden_size"), "{err}");
    }

    #[test]
    fn validation_names_the_key() {
        let bad = TrainConfig { best_metric: "BLEU".into(), ..Default::default() };
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains("best_metric") && err.contains("CIDEr"), "{err}");
        let bad = TrainConfig { label_smoothing: 1.5, ..Default::default() };
        assert!(bad.validate().unwrap_err().to_string().contains("label_smoothing"));
    }
}
