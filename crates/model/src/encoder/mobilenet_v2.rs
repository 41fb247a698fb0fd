//! MobileNetV2 (Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks",
//! CVPR 2018) as torchvision builds it (`torchvision.models.mobilenetv2`), without the
//! classifier: `features.0` (3x3 stride-2 convolution, BN, ReLU6), `features.1`..`features.17`
//! (inverted residual blocks) and `features.18` (1x1 convolution to 1280 channels, BN, ReLU6).
//!
//! Parameter paths are torchvision's `state_dict` keys: a `Conv2dNormActivation` is a
//! (convolution, BatchNorm) pair named `0` and `1`; a block's `conv` Sequential is a tuple whose
//! members are named by their index, e.g. `features.2.conv.1.0.weight` (the depthwise
//! convolution of the first expanding block) or `features.1.conv.2.running_var`.

use std::ops::Range;

use burn::nn::BatchNorm;
use burn::nn::BatchNormConfig;
use burn::nn::conv::Conv2d;
use burn::prelude::*;

use super::{ConvNorm, batch_norm, conv_norm, conv_norm_forward, conv2d};

/// torchvision's `inverted_residual_setting`: expansion t, output channels c, repeats n,
/// stride s of the first repeat.
const INVERTED_RESIDUAL_SETTING: [[usize; 4]; 7] =
    [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1], [6, 160, 3, 2], [6, 320, 1, 1]];
const ROUND_NEAREST: usize = 8;

/// torchvision's `MobileNetV2(width_mult=...)`.
#[derive(Config, Debug, PartialEq)]
pub struct MobileNetV2Config {
    /// Channel multiplier; channel counts are rounded to multiples of 8 as torchvision does.
    #[config(default = 1.0)]
    pub width_mult: f64,
}

/// torchvision's `_make_divisible`: round to the nearest multiple of `divisor`, never going
/// below 90% of `value`.
fn make_divisible(value: f64, divisor: usize) -> usize {
    let rounded = ((value + divisor as f64 / 2.0) as usize / divisor * divisor).max(divisor);
    if (rounded as f64) < 0.9 * value { rounded + divisor } else { rounded }
}

impl MobileNetV2Config {
    /// Channels of `features.18` (1280 at `width_mult` 1).
    pub fn out_channels(&self) -> usize {
        make_divisible(1280.0 * self.width_mult.max(1.0), ROUND_NEAREST)
    }

    pub fn init<B: Backend>(&self, device: &B::Device) -> MobileNetV2<B> {
        let mut input = make_divisible(32.0 * self.width_mult, ROUND_NEAREST);
        let mut features = vec![MobileNetV2Feature::ConvNormActivation(conv_norm([3, input], 3, 2, 1, 1, device))];
        for [t, c, n, s] in INVERTED_RESIDUAL_SETTING {
            let output = make_divisible(c as f64 * self.width_mult, ROUND_NEAREST);
            for i in 0..n {
                let stride = if i == 0 { s } else { 1 };
                features.push(MobileNetV2Feature::InvertedResidual(InvertedResidual::new(input, output, stride, t, device)));
                input = output;
            }
        }
        let last = self.out_channels();
        features.push(MobileNetV2Feature::ConvNormActivation(conv_norm([input, last], 1, 1, 0, 1, device)));
        MobileNetV2 { features, out_channels: last }
    }
}

/// The parameter-name prefixes of each stage: one per `features.i`.
pub(crate) fn stage_prefixes() -> Vec<Vec<String>> {
    let blocks: usize = INVERTED_RESIDUAL_SETTING.iter().map(|setting| setting[2]).sum();
    (0..blocks + 2).map(|i| vec![format!("features.{i}.")]).collect()
}

/// ReLU6, MobileNetV2's activation: `min(max(x, 0), 6)`.
fn relu6<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    x.clamp(0.0, 6.0)
}

/// A `Conv2dNormActivation` with ReLU6.
fn conv_norm_relu6<B: Backend>(layer: &ConvNorm<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    relu6(conv_norm_forward(layer, x))
}

/// A MobileNetV2 feature extractor: torchvision's `features`.
#[derive(Module, Debug)]
pub struct MobileNetV2<B: Backend> {
    pub features: Vec<MobileNetV2Feature<B>>,
    /// Channels of the last feature map.
    pub out_channels: usize,
}

impl<B: Backend> MobileNetV2<B> {
    /// `[B, 3, H, W]` to `features`' output `[B, C, H/32, W/32]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.forward_stages(x, 0..self.features.len())
    }

    /// Runs `features[stages]`.
    pub fn forward_stages(&self, x: Tensor<B, 4>, stages: Range<usize>) -> Tensor<B, 4> {
        self.features[stages].iter().fold(x, |x, feature| feature.forward(x))
    }

    /// `no_grad` on `features[..first_trained]`.
    pub(crate) fn freeze_stages(mut self, first_trained: usize) -> Self {
        self.features =
            self.features.into_iter().enumerate().map(|(i, feature)| if i < first_trained { feature.no_grad() } else { feature }).collect();
        self
    }
}

/// One entry of `features`; the variant name is skipped in parameter paths.
// Variants differ in size; modules are built once and burn's derive does not box.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum MobileNetV2Feature<B: Backend> {
    /// Convolution, BN, ReLU6 (`features.0` and `features.18`).
    ConvNormActivation(ConvNorm<B>),
    InvertedResidual(InvertedResidual<B>),
}

impl<B: Backend> MobileNetV2Feature<B> {
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        match self {
            MobileNetV2Feature::ConvNormActivation(layer) => conv_norm_relu6(layer, x),
            MobileNetV2Feature::InvertedResidual(block) => block.forward(x),
        }
    }
}

/// torchvision's `InvertedResidual`: optional 1x1 expansion, 3x3 depthwise convolution (with
/// the stride), linear 1x1 projection; the input is added back when shape allows.
#[derive(Module, Debug)]
pub struct InvertedResidual<B: Backend> {
    pub conv: InvertedResidualConv<B>,
    /// `stride == 1 && input channels == output channels`.
    pub use_res_connect: bool,
}

/// The block's `conv` Sequential. Its layout depends on the expansion ratio, so its two forms
/// are two variants; the variant name is skipped in parameter paths.
// Variants differ in size; modules are built once and burn's derive does not box.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum InvertedResidualConv<B: Backend> {
    /// Expansion ratio 1 (`features.1`): `0` depthwise conv-BN-ReLU6, `1` projection, `2` BN.
    Direct((ConvNorm<B>, Conv2d<B>, BatchNorm<B>)),
    /// `0` expansion conv-BN-ReLU6, `1` depthwise conv-BN-ReLU6, `2` projection, `3` BN.
    Expanded((ConvNorm<B>, ConvNorm<B>, Conv2d<B>, BatchNorm<B>)),
}

impl<B: Backend> InvertedResidual<B> {
    fn new(input: usize, output: usize, stride: usize, expand_ratio: usize, device: &B::Device) -> Self {
        let hidden = input * expand_ratio;
        let depthwise = conv_norm([hidden, hidden], 3, stride, 1, hidden, device);
        let project = conv2d([hidden, output], 1, 1, 0, 1, device);
        let project_norm = BatchNormConfig::new(output).init(device);
        let conv = if expand_ratio == 1 {
            InvertedResidualConv::Direct((depthwise, project, project_norm))
        } else {
            let expand = conv_norm([input, hidden], 1, 1, 0, 1, device);
            InvertedResidualConv::Expanded((expand, depthwise, project, project_norm))
        };
        InvertedResidual { conv, use_res_connect: stride == 1 && input == output }
    }

    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let out = match &self.conv {
            InvertedResidualConv::Direct((depthwise, project, norm)) => {
                batch_norm(norm, project.forward(conv_norm_relu6(depthwise, x.clone())))
            }
            InvertedResidualConv::Expanded((expand, depthwise, project, norm)) => {
                let hidden = conv_norm_relu6(depthwise, conv_norm_relu6(expand, x.clone()));
                batch_norm(norm, project.forward(hidden))
            }
        };
        if self.use_res_connect { x + out } else { out }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_rounding_matches_torchvision() {
        // Values from torchvision's _make_divisible.
        assert_eq!(make_divisible(32.0, 8), 32);
        assert_eq!(make_divisible(32.0 * 0.5, 8), 16);
        assert_eq!(make_divisible(24.0 * 0.35, 8), 8);
        assert_eq!(make_divisible(320.0 * 0.75, 8), 240);
        assert_eq!(make_divisible(16.0 * 1.4, 8), 24);
        assert_eq!(MobileNetV2Config::new().out_channels(), 1280);
        assert_eq!(MobileNetV2Config::new().with_width_mult(1.4).out_channels(), 1792);
        assert_eq!(stage_prefixes().len(), 19);
    }
}
