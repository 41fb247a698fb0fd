//! The captioning model a researcher trains and a server runs, on burn: CNN encoders in
//! torchvision's architecture and parameter names (so torchvision weights load unchanged),
//! attention decoders, decoding, and self-describing checkpoints. This crate also owns the
//! choice of compute device, so that training and serving pick devices the same way.

pub mod device;
pub mod encoder;
pub mod weights;

pub use device::{DeviceSpec, FlexBackend};
pub use encoder::{Encoder, EncoderConfig, EncoderError, EncoderKind, EncoderOutput, Finetune};
pub use weights::{ImportOptions, ImportReport, WeightFormat, WeightsError, load_encoder_weights, save_encoder_safetensors};
