//! ResNet (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016) as torchvision
//! builds it (`torchvision.models.resnet`, v1.5: the stride sits on the 3x3 convolution of a
//! Bottleneck), without `avgpool` and `fc`.
//!
//! Field names are torchvision's, so parameter paths are its `state_dict` keys: `conv1`, `bn1`,
//! `layer1`..`layer4` (lists of blocks), and in each block `conv1`/`bn1`, `conv2`/`bn2`,
//! (`conv3`/`bn3`), `downsample.0` (1x1 convolution) and `downsample.1` (BatchNorm).

use std::ops::Range;

use burn::nn::conv::Conv2d;
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::relu;

use super::{ConvNorm, batch_norm, conv_norm, conv_norm_forward, conv2d};

/// Stages: the stem (`conv1`, `bn1`, ReLU, max-pool), then `layer1`..`layer4`.
pub const NUM_STAGES: usize = 5;

/// The residual block a ResNet is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResNetBlockKind {
    /// Two 3x3 convolutions (ResNet-18/34); expansion 1.
    Basic,
    /// 1x1 reduce, 3x3, 1x1 expand (ResNet-50/101); expansion 4.
    Bottleneck,
}

impl ResNetBlockKind {
    /// Output channels of a block per unit of its stage width (torchvision's `block.expansion`).
    pub fn expansion(self) -> usize {
        match self {
            ResNetBlockKind::Basic => 1,
            ResNetBlockKind::Bottleneck => 4,
        }
    }
}

/// torchvision's `ResNet(block, layers)` plus a base width (64 in every torchvision ResNet).
#[derive(Config, Debug, PartialEq)]
pub struct ResNetConfig {
    pub block: ResNetBlockKind,
    /// Blocks in `layer1`..`layer4`.
    pub layers: [usize; 4],
    /// Channels of the stem; stage `i` has `width * 2^i` (times the block's expansion at its
    /// output).
    #[config(default = 64)]
    pub width: usize,
}

impl ResNetConfig {
    pub fn resnet18() -> Self {
        Self::new(ResNetBlockKind::Basic, [2, 2, 2, 2])
    }
    pub fn resnet34() -> Self {
        Self::new(ResNetBlockKind::Basic, [3, 4, 6, 3])
    }
    pub fn resnet50() -> Self {
        Self::new(ResNetBlockKind::Bottleneck, [3, 4, 6, 3])
    }
    pub fn resnet101() -> Self {
        Self::new(ResNetBlockKind::Bottleneck, [3, 4, 23, 3])
    }

    /// Channels of `layer4`'s output (512 for ResNet-18/34, 2048 for ResNet-50/101).
    pub fn out_channels(&self) -> usize {
        8 * self.width * self.block.expansion()
    }

    pub fn init<B: Backend>(&self, device: &B::Device) -> ResNet<B> {
        let mut inplanes = self.width;
        let mut make_layer = |stage: usize, stride: usize| -> Vec<ResidualBlock<B>> {
            let planes = self.width << stage;
            (0..self.layers[stage])
                .map(|i| {
                    let stride = if i == 0 { stride } else { 1 };
                    let block = ResidualBlock::new(self.block, inplanes, planes, stride, device);
                    inplanes = planes * self.block.expansion();
                    block
                })
                .collect()
        };
        let layer1 = make_layer(0, 1);
        let layer2 = make_layer(1, 2);
        let layer3 = make_layer(2, 2);
        let layer4 = make_layer(3, 2);
        ResNet {
            conv1: conv2d([3, self.width], 7, 2, 3, 1, device),
            bn1: BatchNormConfig::new(self.width).init(device),
            maxpool: MaxPool2dConfig::new([3, 3]).with_strides([2, 2]).with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)).init(),
            layer1,
            layer2,
            layer3,
            layer4,
            out_channels: self.out_channels(),
        }
    }
}

/// The parameter-name prefixes of each stage.
pub(crate) fn stage_prefixes() -> Vec<Vec<String>> {
    let mut stages = vec![vec!["conv1.".to_string(), "bn1.".to_string()]];
    stages.extend((1..=4).map(|i| vec![format!("layer{i}.")]));
    stages
}

/// A ResNet feature extractor: torchvision's modules up to `layer4`.
#[derive(Module, Debug)]
pub struct ResNet<B: Backend> {
    pub conv1: Conv2d<B>,
    pub bn1: BatchNorm<B>,
    pub maxpool: MaxPool2d,
    pub layer1: Vec<ResidualBlock<B>>,
    pub layer2: Vec<ResidualBlock<B>>,
    pub layer3: Vec<ResidualBlock<B>>,
    pub layer4: Vec<ResidualBlock<B>>,
    /// Channels of `layer4`'s output.
    pub out_channels: usize,
}

impl<B: Backend> ResNet<B> {
    /// `[B, 3, H, W]` to `layer4`'s output `[B, C, H/32, W/32]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.forward_stages(x, 0..NUM_STAGES)
    }

    /// Runs stages `stages` (0: stem, 1..=4: `layer1`..`layer4`).
    pub fn forward_stages(&self, mut x: Tensor<B, 4>, stages: Range<usize>) -> Tensor<B, 4> {
        assert!(stages.end <= NUM_STAGES, "ResNet has {NUM_STAGES} stages, asked for {stages:?}");
        for stage in stages {
            x = match stage {
                0 => self.maxpool.forward(relu(batch_norm(&self.bn1, self.conv1.forward(x)))),
                _ => self.layer(stage).iter().fold(x, |x, block| block.forward(x)),
            };
        }
        x
    }

    fn layer(&self, stage: usize) -> &[ResidualBlock<B>] {
        match stage {
            1 => &self.layer1,
            2 => &self.layer2,
            3 => &self.layer3,
            _ => &self.layer4,
        }
    }

    /// `no_grad` on stages `0..first_trained`.
    pub(crate) fn freeze_stages(mut self, first_trained: usize) -> Self {
        if first_trained > 0 {
            self.conv1 = self.conv1.no_grad();
            self.bn1 = self.bn1.no_grad();
        }
        let freeze = |layer: Vec<ResidualBlock<B>>, stage: usize| {
            if stage < first_trained { layer.no_grad() } else { layer }
        };
        self.layer1 = freeze(self.layer1, 1);
        self.layer2 = freeze(self.layer2, 2);
        self.layer3 = freeze(self.layer3, 3);
        self.layer4 = freeze(self.layer4, 4);
        self
    }
}

/// One block of a stage. The variant name is skipped in parameter paths, so both kinds sit
/// directly under `layerN.i.`, as in torchvision.
// Variants differ in size; modules are built once and burn's derive does not box.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum ResidualBlock<B: Backend> {
    Basic(BasicBlock<B>),
    Bottleneck(Bottleneck<B>),
}

impl<B: Backend> ResidualBlock<B> {
    /// torchvision's `_make_layer` logic for one block: a projection shortcut (`downsample`)
    /// when the stride or the channel count changes.
    fn new(kind: ResNetBlockKind, inplanes: usize, planes: usize, stride: usize, device: &B::Device) -> Self {
        let out = planes * kind.expansion();
        let downsample = (stride != 1 || inplanes != out).then(|| conv_norm([inplanes, out], 1, stride, 0, 1, device));
        match kind {
            ResNetBlockKind::Basic => ResidualBlock::Basic(BasicBlock {
                conv1: conv2d([inplanes, planes], 3, stride, 1, 1, device),
                bn1: BatchNormConfig::new(planes).init(device),
                conv2: conv2d([planes, planes], 3, 1, 1, 1, device),
                bn2: BatchNormConfig::new(planes).init(device),
                downsample,
            }),
            ResNetBlockKind::Bottleneck => ResidualBlock::Bottleneck(Bottleneck {
                conv1: conv2d([inplanes, planes], 1, 1, 0, 1, device),
                bn1: BatchNormConfig::new(planes).init(device),
                conv2: conv2d([planes, planes], 3, stride, 1, 1, device),
                bn2: BatchNormConfig::new(planes).init(device),
                conv3: conv2d([planes, out], 1, 1, 0, 1, device),
                bn3: BatchNormConfig::new(out).init(device),
                downsample,
            }),
        }
    }

    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        match self {
            ResidualBlock::Basic(block) => block.forward(x),
            ResidualBlock::Bottleneck(block) => block.forward(x),
        }
    }
}

/// torchvision's `BasicBlock`: 3x3 (stride) - BN - ReLU - 3x3 - BN, plus the shortcut, ReLU.
#[derive(Module, Debug)]
pub struct BasicBlock<B: Backend> {
    pub conv1: Conv2d<B>,
    pub bn1: BatchNorm<B>,
    pub conv2: Conv2d<B>,
    pub bn2: BatchNorm<B>,
    pub downsample: Option<ConvNorm<B>>,
}

impl<B: Backend> BasicBlock<B> {
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let identity = match &self.downsample {
            Some(downsample) => conv_norm_forward(downsample, x.clone()),
            None => x.clone(),
        };
        let out = relu(batch_norm(&self.bn1, self.conv1.forward(x)));
        let out = batch_norm(&self.bn2, self.conv2.forward(out));
        relu(out + identity)
    }
}

/// torchvision's `Bottleneck` (ResNet v1.5): 1x1 - BN - ReLU - 3x3 (stride) - BN - ReLU -
/// 1x1 (x4 channels) - BN, plus the shortcut, ReLU.
#[derive(Module, Debug)]
pub struct Bottleneck<B: Backend> {
    pub conv1: Conv2d<B>,
    pub bn1: BatchNorm<B>,
    pub conv2: Conv2d<B>,
    pub bn2: BatchNorm<B>,
    pub conv3: Conv2d<B>,
    pub bn3: BatchNorm<B>,
    pub downsample: Option<ConvNorm<B>>,
}

impl<B: Backend> Bottleneck<B> {
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let identity = match &self.downsample {
            Some(downsample) => conv_norm_forward(downsample, x.clone()),
            None => x.clone(),
        };
        let out = relu(batch_norm(&self.bn1, self.conv1.forward(x)));
        let out = relu(batch_norm(&self.bn2, self.conv2.forward(out)));
        let out = batch_norm(&self.bn3, self.conv3.forward(out));
        relu(out + identity)
    }
}
