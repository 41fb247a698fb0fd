//! Caption datasets for training and evaluation. Loaders turn MS-COCO caption JSON, Karpathy
//! split files and Flickr8k/30k caption files into one `Sample` type (image path, reference
//! captions, split, id), checking that images exist and can be decoded and reporting what was
//! left out. Around them: the word or subword vocabulary the models predict over, image
//! decoding and preprocessing with decompression-bomb checks, the synthetic shapes dataset
//! that the README's main job trains on, and (feature `stats`) dataset statistics via polars.

pub mod attention_figure;
pub mod config;
pub mod dataset;
pub mod error;
pub mod fsutil;
pub mod image;
pub mod loaders;
pub mod rng;
pub mod sample;
#[cfg(feature = "stats")]
pub mod stats;
mod subword;
pub mod synth;
pub mod time;
pub mod vocab;

pub use config::{DataConfig, DataFormat, ImageCheck, OnMissing, SplitSource};
pub use dataset::{CaptionDataset, LoadReport};
pub use error::{DataError, Result};
pub use sample::{Sample, Split};
pub use vocab::{TextEncoder, TokenizerKind, Vocab, VocabConfig};
