//! The captioning model a researcher trains and a server runs, on burn: CNN encoders in
//! torchvision's architecture and parameter names (so torchvision weights load unchanged),
//! attention decoders, decoding, and self-describing checkpoints. This crate also owns the
//! choice of compute device, so that training and serving pick devices the same way.

pub mod device;

pub use device::{DeviceSpec, FlexBackend};
