//! The captioning model a researcher trains and a server runs, on burn: CNN encoders in
//! torchvision's architecture and parameter names (so torchvision weights load unchanged),
//! attention decoders, decoding, and self-describing checkpoints. This crate also owns the
//! choice of compute device, so that training and serving pick devices the same way.

pub mod allocator;
pub mod captioner;
pub mod checkpoint;
pub mod decoder;
pub mod decoding;
pub mod decoding_config;
pub mod device;
pub mod encoder;
mod fast_math;
pub mod kernel_cache;
pub mod pipeline;
#[cfg(test)]
mod test_tensors;
pub mod weights;

pub use captioner::{Captioner, CaptionerConfig, SpecialTokens};
pub use checkpoint::{Checkpoint, CheckpointError, CheckpointMeta, load_checkpoint, read_checkpoint_info, save_checkpoint};
pub use decoder::{
    AttentionLstmConfig, CaptionDecoder, ConfigError, Decoder, DecoderConfig, DecoderOutput, DecoderState, DecoderStep, PositionEncoding,
    TransformerDecoderConfig, doubly_stochastic_penalty,
};
pub use decoding::{
    BeamSearchConfig, Constraints, DecodeError, DecodeStrategy, Hypothesis, LengthPenalty, SamplingConfig, TokenProbability,
};
pub use decoding_config::{DecodingConfig, DecodingOverrides};
pub use pipeline::{Attention, Caption, CaptionPipeline};

pub use device::{DeviceSpec, FlexBackend};
pub use encoder::{Encoder, EncoderConfig, EncoderError, EncoderKind, EncoderOutput, Finetune};
pub use weights::{ImportOptions, ImportReport, WeightFormat, WeightsError, load_encoder_weights, save_encoder_safetensors};
