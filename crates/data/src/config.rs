//! The `data:` section of an experiment config. Defaults live here, in the `Default` impls,
//! and nowhere else; `caption config defaults` prints them.
//!
//! Relative paths are resolved against the working directory the CLI runs in, as
//! ImageCaptioning.pytorch does with its options.

use crate::error::{DataError, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Which annotation format the dataset is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataFormat {
    /// MS-COCO caption JSON (2014/2017 schema), one annotation file and image folder per split.
    Coco,
    /// Karpathy's split JSON (`dataset_coco.json`, `dataset_flickr8k.json`, `dataset_flickr30k.json`).
    Karpathy,
    /// Flickr8k/30k `*.token.txt` (`name.jpg#k<TAB>caption`) or Flickr30k `results.csv`,
    /// with one image list file per split.
    Flickr,
    /// The synthetic shapes dataset (`crate::synth`), generated under `data.root` on first use
    /// and read back through the COCO loader.
    Synthetic,
}

/// What to do with an image the annotations name but that is missing or cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnMissing {
    /// Drop the sample, count it and name the first few in the load report.
    #[default]
    Skip,
    /// Stop with an error naming the first missing files.
    Error,
}

/// How much of each image to read when loading a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ImageCheck {
    /// Only check that the file exists.
    Exists,
    /// Read the header: the format must be known and the size within `image.max_pixels`.
    #[default]
    Header,
    /// Decode every image fully (catches truncated files; slow on big datasets).
    Decode,
}

/// Where one split's annotations and images are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SplitSource {
    /// COCO: this split's caption JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<PathBuf>,
    /// COCO: this split's image folder (default: `data.images`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<PathBuf>,
    /// Flickr: the file listing this split's image names, one per line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    pub format: DataFormat,
    /// Synthetic: the dataset folder; generated there if it holds no complete dataset.
    pub root: Option<PathBuf>,
    /// Synthetic: the generator's parameters.
    pub synthetic: crate::synth::SynthConfig,
    /// Karpathy JSON or Flickr captions file (token.txt / results.csv). Unused for COCO.
    pub annotations: Option<PathBuf>,
    /// Image root. Karpathy: `filepath/filename` is resolved below it.
    pub images: Option<PathBuf>,
    pub train: Option<SplitSource>,
    pub val: Option<SplitSource>,
    pub test: Option<SplitSource>,
    /// Karpathy: put the `restval` images into train (as every COCO paper since 2015 does).
    pub restval_to_train: bool,
    pub on_missing: OnMissing,
    pub check_images: ImageCheck,
    /// Use only the first N images of each split (0: all); handy for smoke runs.
    pub max_images_per_split: usize,
    pub vocab: crate::vocab::VocabConfig,
    pub image: crate::image::ImageConfig,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            format: DataFormat::Coco,
            root: None,
            synthetic: Default::default(),
            annotations: None,
            images: None,
            train: None,
            val: None,
            test: None,
            restval_to_train: true,
            on_missing: OnMissing::Skip,
            check_images: ImageCheck::Header,
            max_images_per_split: 0,
            vocab: Default::default(),
            image: Default::default(),
        }
    }
}

impl DataConfig {
    /// The per-split sources; for the synthetic format they are the generated COCO files.
    pub fn split(&self, split: crate::Split) -> Option<&SplitSource> {
        match split {
            crate::Split::Train => self.train.as_ref(),
            crate::Split::Val => self.val.as_ref(),
            crate::Split::Test => self.test.as_ref(),
        }
    }

    /// Checks that the keys the chosen format needs are present, naming the missing key.
    pub fn validate(&self) -> Result<()> {
        let need = |ok: bool, key: &str, why: &str| {
            if ok { Ok(()) } else { Err(DataError::Config(format!("`data.{key}` is required when `data.format` is {why}"))) }
        };
        match self.format {
            DataFormat::Coco => {
                let mut any = false;
                for split in crate::Split::ALL {
                    if let Some(src) = self.split(split) {
                        need(src.annotations.is_some(), &format!("{split}.annotations"), "coco")?;
                        need(src.images.is_some() || self.images.is_some(), &format!("{split}.images` (or `data.images"), "coco")?;
                        any = true;
                    }
                }
                need(any, "train` / `data.val` / `data.test", "coco (one per split)")?;
            }
            DataFormat::Karpathy => {
                need(self.annotations.is_some(), "annotations", "karpathy")?;
                need(self.images.is_some(), "images", "karpathy")?;
            }
            DataFormat::Flickr => {
                need(self.annotations.is_some(), "annotations", "flickr")?;
                need(self.images.is_some(), "images", "flickr")?;
            }
            DataFormat::Synthetic => {
                need(self.root.is_some(), "root", "synthetic")?;
                self.synthetic.validate()?;
            }
        }
        self.image.validate()?;
        self.vocab.validate()?;
        Ok(())
    }
}
