//! CNN image encoders in torchvision's exact architecture and parameter names.
//!
//! A captioner attends over a grid of image regions and starts its decoder from a summary
//! vector; the encoders here produce both from a batch of normalised `[B, 3, H, W]` images:
//! `regions` `[B, H/32 * W/32, C]` (7 x 7 = 49 regions at 224 px, row-major: region
//! `y * W' + x`) and `pooled` `[B, C]` (their mean, torchvision's global average pool).
//!
//! Networks: ResNet-18/34/50/101 ([`resnet`]) and MobileNetV2 ([`mobilenet_v2`]), without their
//! classifiers. Every module is laid out so that its parameter paths, once burn's enum variant
//! names are skipped, are torchvision's `state_dict` keys (`layer1.0.conv1.weight`,
//! `layer2.0.downsample.1.running_mean`, `features.3.conv.1.0.weight`, ...); BatchNorm's
//! `weight`/`bias` are burn's `gamma`/`beta`, renamed by burn-store's PyTorch adapters. So a
//! torchvision checkpoint loads unchanged through [`crate::weights`].
//!
//! Fine-tuning ([`Finetune`]) is expressed in *stages*: the network's top-level children in
//! forward order (ResNet: the stem `conv1`+`bn1`, then `layer1`..`layer4`; MobileNetV2:
//! `features.0`..`features.18`). `last N stages` trains the last N and freezes the rest; see
//! [`EncoderConfig::trainable_prefixes`] and [`Encoder::apply_finetune`].

pub mod mobilenet_v2;
pub mod resnet;

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use burn::module::Initializer;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::prelude::*;

pub use mobilenet_v2::{InvertedResidual, InvertedResidualConv, MobileNetV2, MobileNetV2Config, MobileNetV2Feature};
pub use resnet::{BasicBlock, Bottleneck, ResNet, ResNetBlockKind, ResNetConfig, ResidualBlock};

/// A convolution followed by its BatchNorm, as torchvision nests them in an `nn.Sequential`
/// (ResNet's `downsample`, MobileNetV2's `Conv2dNormActivation`): burn names a tuple's members
/// `0` and `1`, exactly like the Sequential's children. Any activation is applied by the owner.
pub type ConvNorm<B> = (Conv2d<B>, BatchNorm<B>);

/// Which network an [`EncoderConfig`] builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EncoderKind {
    Resnet18,
    Resnet34,
    Resnet50,
    Resnet101,
    MobilenetV2,
}

impl EncoderKind {
    pub const ALL: [EncoderKind; 5] = [Self::Resnet18, Self::Resnet34, Self::Resnet50, Self::Resnet101, Self::MobilenetV2];

    /// The name used in configs and on the command line (`resnet50`, `mobilenet_v2`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Resnet18 => "resnet18",
            Self::Resnet34 => "resnet34",
            Self::Resnet50 => "resnet50",
            Self::Resnet101 => "resnet101",
            Self::MobilenetV2 => "mobilenet_v2",
        }
    }

    pub fn is_resnet(self) -> bool {
        !matches!(self, Self::MobilenetV2)
    }
}

impl fmt::Display for EncoderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for EncoderKind {
    type Err = EncoderError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let lower = text.trim().to_ascii_lowercase().replace('-', "_");
        let lower = if lower == "mobilenetv2" { "mobilenet_v2".to_string() } else { lower };
        Self::ALL.into_iter().find(|kind| kind.name() == lower).ok_or_else(|| EncoderError::UnknownNetwork(text.to_string()))
    }
}

/// Which encoder parameters are trained.
///
/// Written `frozen`, `all`, or `last:N` (the last N stages, see the module docs) in configs and
/// on the command line. `last:0` is `frozen`; N at or above the stage count is `all`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Finetune {
    /// No encoder parameter is trained (the usual start: the ImageNet features are kept).
    #[default]
    Frozen,
    /// The last N stages are trained, the earlier ones are frozen.
    LastStages(usize),
    /// Every encoder parameter is trained.
    All,
}

impl Finetune {
    /// Index of the first trained stage of a network with `num_stages` stages
    /// (`num_stages` when nothing is trained).
    pub fn first_trainable_stage(self, num_stages: usize) -> usize {
        match self {
            Finetune::Frozen => num_stages,
            Finetune::LastStages(n) => num_stages.saturating_sub(n),
            Finetune::All => 0,
        }
    }
}

impl fmt::Display for Finetune {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finetune::Frozen => f.write_str("frozen"),
            Finetune::LastStages(n) => write!(f, "last:{n}"),
            Finetune::All => f.write_str("all"),
        }
    }
}

impl FromStr for Finetune {
    type Err = EncoderError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let lower = text.trim().to_ascii_lowercase();
        match lower.as_str() {
            "frozen" | "none" => Ok(Finetune::Frozen),
            "all" => Ok(Finetune::All),
            other => other
                .strip_prefix("last:")
                .and_then(|n| n.trim().parse().ok())
                .map(Finetune::LastStages)
                .ok_or_else(|| EncoderError::UnknownFinetune(text.to_string())),
        }
    }
}

impl serde::Serialize for Finetune {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Finetune {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EncoderError {
    #[error("unknown encoder network {0:?}: expected one of resnet18, resnet34, resnet50, resnet101, mobilenet_v2")]
    UnknownNetwork(String),
    #[error("unknown encoder fine-tuning mode {0:?}: expected frozen, all or last:N (the last N stages)")]
    UnknownFinetune(String),
    #[error("invalid encoder config: {0}")]
    Invalid(String),
}

/// What to build: the network, an optional reduced size (for tests and experiments), and how it
/// is fine-tuned.
///
/// `layers` and `width` shrink a ResNet the way torchvision's `ResNet(block, layers)` does
/// (blocks per stage) plus a base width (`64` is torchvision's: stage widths are
/// `width * [1, 2, 4, 8]`, times 4 for Bottleneck outputs). `width_mult` is torchvision's
/// MobileNetV2 `width_mult`. With their defaults the networks are exactly torchvision's, so
/// ImageNet weights load; a reduced network needs weights made for it.
#[derive(Config, Debug, PartialEq)]
pub struct EncoderConfig {
    pub network: EncoderKind,
    /// ResNet only: blocks per stage, replacing the network's (`[2, 2, 2, 2]` for ResNet-18).
    #[config(default = "None")]
    pub layers: Option<[usize; 4]>,
    /// ResNet only: channels of the stem and of the first stage (torchvision: 64).
    #[config(default = 64)]
    pub width: usize,
    /// MobileNetV2 only: channel multiplier (torchvision: 1.0).
    #[config(default = 1.0)]
    pub width_mult: f64,
    #[config(default = "Finetune::Frozen")]
    pub finetune: Finetune,
}

impl EncoderConfig {
    /// Checks the size options against the network (a ResNet option on MobileNetV2 is an error,
    /// not silently ignored).
    pub fn validate(&self) -> Result<(), EncoderError> {
        let bad = |m: String| Err(EncoderError::Invalid(m));
        if self.network.is_resnet() {
            if self.width == 0 {
                return bad("`width` must be positive (torchvision's ResNet uses 64)".into());
            }
            if let Some(layers) = self.layers
                && layers.contains(&0)
            {
                return bad(format!("`layers` is {layers:?}; every stage needs at least one block"));
            }
            if self.width_mult != 1.0 {
                return bad(format!("`width_mult` is a MobileNetV2 option; {} takes `width` and `layers`", self.network));
            }
        } else {
            if self.layers.is_some() || self.width != 64 {
                return bad("`layers` and `width` are ResNet options; MobileNetV2 takes `width_mult`".into());
            }
            if !(self.width_mult > 0.0 && self.width_mult.is_finite()) {
                return bad(format!("`width_mult` is {}; it must be positive", self.width_mult));
            }
        }
        Ok(())
    }

    /// The ResNet this config describes, if it is one.
    pub fn resnet(&self) -> Option<ResNetConfig> {
        let base = match self.network {
            EncoderKind::Resnet18 => ResNetConfig::resnet18(),
            EncoderKind::Resnet34 => ResNetConfig::resnet34(),
            EncoderKind::Resnet50 => ResNetConfig::resnet50(),
            EncoderKind::Resnet101 => ResNetConfig::resnet101(),
            EncoderKind::MobilenetV2 => return None,
        };
        Some(ResNetConfig { layers: self.layers.unwrap_or(base.layers), ..base.with_width(self.width) })
    }

    /// The MobileNetV2 this config describes, if it is one.
    pub fn mobilenet_v2(&self) -> Option<MobileNetV2Config> {
        (self.network == EncoderKind::MobilenetV2).then(|| MobileNetV2Config::new().with_width_mult(self.width_mult))
    }

    /// Builds the encoder with fresh (torchvision-style) initialisation; load weights with
    /// [`crate::weights::load_encoder_weights`]. Returns an error rather than panicking on an
    /// invalid config, because configs come from users' files.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<Encoder<B>, EncoderError> {
        self.validate()?;
        Ok(match (self.resnet(), self.mobilenet_v2()) {
            (Some(resnet), _) => Encoder::ResNet(resnet.init(device)),
            (None, Some(mobilenet)) => Encoder::MobileNetV2(mobilenet.init(device)),
            (None, None) => unreachable!("every network is a ResNet or MobileNetV2"),
        })
    }

    /// Channels `C` of the region features and of the pooled vector.
    pub fn out_channels(&self) -> usize {
        match (self.resnet(), self.mobilenet_v2()) {
            (Some(resnet), _) => resnet.out_channels(),
            (None, Some(mobilenet)) => mobilenet.out_channels(),
            (None, None) => unreachable!(),
        }
    }

    /// The network's stages in forward order, each as the parameter-name prefixes (torchvision
    /// names, ending in `.`) that belong to it.
    pub fn stage_prefixes(&self) -> Vec<Vec<String>> {
        if self.network.is_resnet() { resnet::stage_prefixes() } else { mobilenet_v2::stage_prefixes() }
    }

    pub fn num_stages(&self) -> usize {
        self.stage_prefixes().len()
    }

    /// Parameter-name prefixes (torchvision names, e.g. `layer4.`, `features.17.`) that
    /// `finetune` trains; empty when frozen. This is the helper the trainer uses to build its
    /// parameter groups; [`Encoder::apply_finetune`] applies the same split with `no_grad`.
    pub fn trainable_prefixes(&self) -> Vec<String> {
        let stages = self.stage_prefixes();
        let first = self.finetune.first_trainable_stage(stages.len());
        stages.into_iter().skip(first).flatten().collect()
    }

    /// Whether the parameter `path` (a torchvision name such as `layer4.1.bn2.weight`, or the
    /// burn name `layer4.1.bn2.gamma`) is trained under `finetune`.
    pub fn is_trainable(&self, path: &str) -> bool {
        self.trainable_prefixes().iter().any(|prefix| path.starts_with(prefix.as_str()))
    }
}

/// An image encoder: one of the supported networks, built by [`EncoderConfig::init`].
///
/// The enum's variant names are not part of parameter paths when loading or saving through
/// [`crate::weights`] (burn-store skips them), so paths are torchvision's.
// Variants differ in size; modules are built once and burn's derive does not box.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Encoder<B: Backend> {
    ResNet(ResNet<B>),
    MobileNetV2(MobileNetV2<B>),
}

/// What an encoder gives a captioner.
#[derive(Debug, Clone)]
pub struct EncoderOutput<B: Backend> {
    /// Region features `[B, H' * W', C]`, region `y * W' + x` of the final `H' x W'` map.
    pub regions: Tensor<B, 3>,
    /// Their mean `[B, C]` (torchvision's adaptive average pool to 1x1, flattened).
    pub pooled: Tensor<B, 2>,
}

impl<B: Backend> EncoderOutput<B> {
    /// Turns a final feature map `[B, C, H', W']` into regions and their mean.
    pub fn from_feature_map(map: Tensor<B, 4>) -> Self {
        let [batch, channels, height, width] = map.dims();
        let regions = map.reshape([batch, channels, height * width]).swap_dims(1, 2);
        let pooled = regions.clone().mean_dim(1).squeeze_dim::<2>(1);
        EncoderOutput { regions, pooled }
    }
}

impl<B: Backend> Encoder<B> {
    /// Encodes ImageNet-normalised images `[B, 3, H, W]` (H, W multiples of 32 give exact
    /// grids; 224 gives 7 x 7).
    pub fn forward(&self, images: Tensor<B, 4>) -> EncoderOutput<B> {
        EncoderOutput::from_feature_map(self.feature_map(images))
    }

    /// The final feature map `[B, C, H/32, W/32]`: torchvision's output before its average pool
    /// (ResNet's `layer4`, MobileNetV2's `features`).
    pub fn feature_map(&self, images: Tensor<B, 4>) -> Tensor<B, 4> {
        self.forward_stages(images, 0..self.num_stages())
    }

    /// Runs only `stages` (a range of stage indices, see the module docs) on `x`, the output of
    /// the stage before them. A trainer fine-tuning the last N stages can run the frozen prefix
    /// on the inner, non-autodiff backend (`encoder.valid().forward_stages(x.inner(), 0..k)`),
    /// which keeps its BatchNorms on their running statistics and builds no graph for it, then
    /// the trained stages with autodiff.
    pub fn forward_stages(&self, x: Tensor<B, 4>, stages: Range<usize>) -> Tensor<B, 4> {
        match self {
            Encoder::ResNet(net) => net.forward_stages(x, stages),
            Encoder::MobileNetV2(net) => net.forward_stages(x, stages),
        }
    }

    pub fn num_stages(&self) -> usize {
        match self {
            Encoder::ResNet(_) => resnet::NUM_STAGES,
            Encoder::MobileNetV2(net) => net.features.len(),
        }
    }

    /// Channels `C` of the outputs.
    pub fn out_channels(&self) -> usize {
        match self {
            Encoder::ResNet(net) => net.out_channels,
            Encoder::MobileNetV2(net) => net.out_channels,
        }
    }

    /// Marks the stages that `finetune` freezes with burn's `no_grad`, so their parameters get
    /// no gradients and the optimiser leaves them alone. BatchNorm layers still follow the
    /// backend (batch statistics under autodiff): to keep frozen stages on their running
    /// statistics, run them through [`Encoder::forward_stages`] on the inner backend.
    pub fn apply_finetune(self, finetune: Finetune) -> Self {
        let first = finetune.first_trainable_stage(self.num_stages());
        match self {
            Encoder::ResNet(net) => Encoder::ResNet(net.freeze_stages(first)),
            Encoder::MobileNetV2(net) => Encoder::MobileNetV2(net.freeze_stages(first)),
        }
    }
}

/// torchvision's initialisation for convolutions in ResNet and MobileNetV2:
/// `kaiming_normal_(mode="fan_out", nonlinearity="relu")`.
pub(crate) fn torchvision_conv_init() -> Initializer {
    Initializer::KaimingNormal { gain: std::f64::consts::SQRT_2, fan_out_only: true }
}

/// A bias-free `k x k` convolution with torchvision's padding `(k - 1) / 2` (or `padding`).
pub(crate) fn conv2d<B: Backend>(
    channels: [usize; 2],
    kernel: usize,
    stride: usize,
    padding: usize,
    groups: usize,
    device: &B::Device,
) -> Conv2d<B> {
    Conv2dConfig::new(channels, [kernel, kernel])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(padding, padding, padding, padding))
        .with_groups(groups)
        .with_bias(false)
        .with_initializer(torchvision_conv_init())
        .init(device)
}

/// A convolution and its BatchNorm (eps 1e-5, momentum 0.1: torchvision's `BatchNorm2d`).
pub(crate) fn conv_norm<B: Backend>(
    channels: [usize; 2],
    kernel: usize,
    stride: usize,
    padding: usize,
    groups: usize,
    device: &B::Device,
) -> ConvNorm<B> {
    (conv2d(channels, kernel, stride, padding, groups, device), BatchNormConfig::new(channels[1]).init(device))
}

pub(crate) fn conv_norm_forward<B: Backend>(layer: &ConvNorm<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    batch_norm(&layer.1, layer.0.forward(x))
}

/// `norm.forward(x)` for `[N, C, H, W]`, with a faster route on the CPU backend. burn's
/// BatchNorm applies its statistics as broadcasts of `[1, C, 1, 1]` tensors (and gathers batch
/// statistics through a `[C, N·H·W]` transpose), which burn-flex computes element by element
/// through a strided iterator (perf: 30% of MobileNetV2 inference, 10% of a shapes training
/// step). On that backend `x` is viewed as `[N·C, H·W]` rows instead, each channel's values
/// repeated as one scalar per row (a vectorised path), from the same parameters, epsilon and
/// momentum; results agree with burn's layer to float rounding, gradients and running
/// statistics included (tested). Other backends use burn's layer.
pub(crate) fn batch_norm<B: Backend>(norm: &BatchNorm<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    if !crate::device::is_flex::<B>() {
        return norm.forward(x);
    }
    let [batch, channels, height, width] = x.dims();
    let rows = x.reshape([batch * channels, height * width]);
    let per_row = |t: Tensor<B, 2>| t.repeat_dim(0, batch).reshape([batch * channels, 1]);
    let (mean, var) = if B::ad_enabled(&rows.device()) {
        // Training: batch statistics (biased variance, as burn's layer), and the running ones
        // updated with the layer's momentum.
        let channel_mean = |t: Tensor<B, 2>| t.mean_dim(1).reshape([batch, channels]).mean_dim(0);
        let mean = channel_mean(rows.clone());
        let var = channel_mean((rows.clone() - per_row(mean.clone())).square());
        let update = |running: &burn::module::RunningState<Tensor<B, 1>>, batch_value: &Tensor<B, 2>| {
            let value = running.value_sync().mul_scalar(1.0 - norm.momentum)
                + batch_value.clone().detach().mul_scalar(norm.momentum).reshape([channels]);
            running.update(value.detach());
        };
        update(&norm.running_mean, &mean);
        update(&norm.running_var, &var);
        (mean, var)
    } else {
        (norm.running_mean.value().reshape([1, channels]), norm.running_var.value().reshape([1, channels]))
    };
    let scale = norm.gamma.val().reshape([1, channels]) / var.add_scalar(norm.epsilon).sqrt();
    let shift = norm.beta.val().reshape([1, channels]) - mean * scale.clone();
    (rows * per_row(scale) + per_row(shift)).reshape([batch, channels, height, width])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FlexBackend;

    #[test]
    fn the_cpu_inference_batch_norm_is_burns() {
        type B = FlexBackend;
        let device = Default::default();
        let mut norm = BatchNormConfig::new(3).with_epsilon(1e-3).init::<B>(&device);
        let vector = |v: [f32; 3]| Tensor::<B, 1>::from_floats(v, &device);
        norm.gamma = burn::module::Param::from_tensor(vector([1.5, -0.5, 2.0]));
        norm.beta = burn::module::Param::from_tensor(vector([0.1, 0.0, -3.0]));
        norm.running_mean = burn::module::RunningState::new(vector([0.2, -1.0, 4.0]));
        norm.running_var = burn::module::RunningState::new(vector([0.5, 2.0, 9.0]));
        let values: Vec<f32> = (0..2 * 3 * 2 * 5).map(|i| (i as f32 * 0.37).sin() * 5.0).collect();
        let x = Tensor::<B, 4>::from_data(TensorData::new(values, [2, 3, 2, 5]), &device);
        let want = norm.forward(x.clone()).to_data().to_vec::<f32>().unwrap();
        let got = batch_norm(&norm, x).to_data().to_vec::<f32>().unwrap();
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!((g - w).abs() <= 1e-5 * w.abs().max(1.0), "[{i}]: {g} vs {w}");
        }
    }

    #[test]
    fn the_cpu_training_batch_norm_is_burns_with_gradients_and_running_statistics() {
        type AD = burn::backend::Autodiff<FlexBackend>;
        let device = Default::default();
        let values: Vec<f32> = (0..3 * 4 * 3 * 5).map(|i| (i as f32 * 0.71).sin() * 3.0 + (i % 4) as f32).collect();
        let weights: Vec<f32> = (0..3 * 4 * 3 * 5).map(|i| (i as f32 * 0.13).cos()).collect();
        let run = |fast: bool| {
            let mut norm = BatchNormConfig::new(4).with_momentum(0.2).init::<AD>(&device);
            norm.gamma = burn::module::Param::from_tensor(Tensor::from_floats([1.5, -0.5, 2.0, 0.7], &device));
            norm.beta = burn::module::Param::from_tensor(Tensor::from_floats([0.1, 0.0, -3.0, 0.4], &device));
            let x = Tensor::<AD, 4>::from_data(TensorData::new(values.clone(), [3, 4, 3, 5]), &device).require_grad();
            let y = if fast { batch_norm(&norm, x.clone()) } else { norm.forward(x.clone()) };
            let weight = Tensor::<AD, 4>::from_data(TensorData::new(weights.clone(), [3, 4, 3, 5]), &device);
            let grads = (y.clone() * weight).sum().backward();
            let flat = |t: Tensor<FlexBackend, 1>| t.to_data().to_vec::<f32>().unwrap();
            let flat4 = |t: Tensor<FlexBackend, 4>| t.to_data().to_vec::<f32>().unwrap();
            vec![
                flat4(y.inner()),
                flat4(x.grad(&grads).unwrap()),
                flat(norm.gamma.grad(&grads).unwrap()),
                flat(norm.beta.grad(&grads).unwrap()),
                flat(norm.running_mean.value().inner()),
                flat(norm.running_var.value().inner()),
            ]
        };
        let (want, got) = (run(false), run(true));
        for (name, (w, g)) in
            ["output", "input gradient", "gamma gradient", "beta gradient", "running mean", "running var"].iter().zip(want.iter().zip(&got))
        {
            assert_eq!(w.len(), g.len(), "{name}");
            for (i, (a, b)) in w.iter().zip(g).enumerate() {
                assert!((a - b).abs() <= 2e-5 * a.abs().max(1.0), "{name}[{i}]: burn {a} vs fast {b}");
            }
        }
    }

    #[test]
    fn names_round_trip() {
        for kind in EncoderKind::ALL {
            assert_eq!(kind.name().parse::<EncoderKind>(), Ok(kind));
            assert_eq!(serde_json::to_string(&kind).unwrap(), format!("\"{}\"", kind.name()));
        }
        assert_eq!("MobileNetV2".parse::<EncoderKind>(), Ok(EncoderKind::MobilenetV2));
        assert!(matches!("vgg16".parse::<EncoderKind>(), Err(EncoderError::UnknownNetwork(_))));
        for mode in [Finetune::Frozen, Finetune::All, Finetune::LastStages(2)] {
            assert_eq!(mode.to_string().parse::<Finetune>(), Ok(mode));
            let json = serde_json::to_string(&mode).unwrap();
            assert_eq!(serde_json::from_str::<Finetune>(&json).unwrap(), mode);
        }
        assert!("last:x".parse::<Finetune>().unwrap_err().to_string().contains("last:N"));
    }

    #[test]
    fn config_round_trips_through_json() {
        let config = EncoderConfig::new(EncoderKind::Resnet50).with_layers(Some([1, 1, 1, 1])).with_width(8);
        let json = serde_json::to_string(&config).unwrap();
        assert!(json.contains("\"resnet50\""), "{json}");
        let back: EncoderConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, config);
        // burn's Config derive fills defaults in `new`, not in serde: a file lists every field.
        assert!(serde_json::from_str::<EncoderConfig>(r#"{"network": "mobilenet_v2"}"#).is_err());
    }

    #[test]
    fn options_for_the_other_network_are_refused() {
        let bad = EncoderConfig::new(EncoderKind::MobilenetV2).with_width(32);
        assert!(bad.validate().unwrap_err().to_string().contains("ResNet options"));
        let bad = EncoderConfig::new(EncoderKind::Resnet18).with_width_mult(0.5);
        assert!(bad.validate().unwrap_err().to_string().contains("MobileNetV2 option"));
        let bad = EncoderConfig::new(EncoderKind::Resnet18).with_layers(Some([1, 0, 1, 1]));
        assert!(bad.init::<FlexBackend>(&Default::default()).is_err());
    }

    #[test]
    fn finetune_selects_the_last_stages() {
        let resnet = EncoderConfig::new(EncoderKind::Resnet18);
        assert_eq!(resnet.num_stages(), 5);
        assert!(resnet.trainable_prefixes().is_empty());
        let last2 = resnet.clone().with_finetune(Finetune::LastStages(2));
        assert_eq!(last2.trainable_prefixes(), vec!["layer3.", "layer4."]);
        assert!(last2.is_trainable("layer4.1.bn2.weight"));
        assert!(!last2.is_trainable("layer2.0.conv1.weight"));
        let all = resnet.with_finetune(Finetune::All);
        assert!(all.is_trainable("conv1.weight") && all.is_trainable("bn1.gamma"));
        let mobilenet = EncoderConfig::new(EncoderKind::MobilenetV2).with_finetune(Finetune::LastStages(3));
        assert_eq!(mobilenet.num_stages(), 19);
        assert_eq!(mobilenet.trainable_prefixes(), vec!["features.16.", "features.17.", "features.18."]);
        assert!(!mobilenet.is_trainable("features.1.conv.0.0.weight"));
        assert_eq!(Finetune::LastStages(99).first_trainable_stage(5), 0);
    }

    #[test]
    fn outputs_have_the_documented_shapes() {
        let device = Default::default();
        let config = EncoderConfig::new(EncoderKind::Resnet50).with_layers(Some([1, 1, 1, 1])).with_width(4);
        let encoder = config.init::<FlexBackend>(&device).unwrap();
        assert_eq!(encoder.out_channels(), 4 * 8 * 4);
        assert_eq!(config.out_channels(), encoder.out_channels());
        let out = encoder.forward(Tensor::ones([2, 3, 64, 96], &device));
        assert_eq!(out.regions.dims(), [2, 2 * 3, 128]);
        assert_eq!(out.pooled.dims(), [2, 128]);
        // The pooled vector is the regions' mean.
        let mean: Tensor<FlexBackend, 2> = out.regions.mean_dim(1).squeeze_dim(1);
        let diff = (mean - out.pooled).abs().max().into_scalar();
        assert!(diff < 1e-6, "{diff}");
    }
}
