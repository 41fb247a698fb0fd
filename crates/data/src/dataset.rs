//! A loaded dataset: the samples of every split plus a report of what was left out and why.

use crate::config::{DataConfig, DataFormat, ImageCheck, OnMissing};
use crate::error::{DataError, Result};
use crate::loaders;
use crate::sample::{Sample, Split};
use rayon::prelude::*;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// How many problem files the report names; the rest are only counted.
const NAMED_PROBLEMS: usize = 5;

/// What loading left out, for people (`Display`) and machines (`Serialize`).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct LoadReport {
    /// Images named by the annotations that do not exist.
    pub missing_images: usize,
    /// Images that exist but cannot be read (unknown format, too large, truncated...).
    pub unreadable_images: usize,
    /// The first few missing/unreadable files with the reason.
    pub problems: Vec<String>,
    /// Missing or unreadable images per split.
    pub missing_by_split: Vec<(Split, usize)>,
    /// Images in the annotations with no caption (dropped).
    pub images_without_captions: usize,
    /// Captions whose image id the annotations do not list (dropped).
    pub captions_without_image: usize,
    /// Flickr: captioned images named by no split list (dropped).
    pub not_in_any_split: usize,
    /// Flickr: names in a split list that have no captions (dropped).
    pub listed_without_captions: usize,
    /// Karpathy: `restval` images dropped because `restval_to_train` is off.
    pub restval_dropped: usize,
}

impl LoadReport {
    pub fn is_clean(&self) -> bool {
        *self == LoadReport::default()
    }
}

impl std::fmt::Display for LoadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_clean() {
            return write!(f, "all images present");
        }
        let mut parts = Vec::new();
        if self.missing_images > 0 {
            let per_split: Vec<String> = self.missing_by_split.iter().map(|(s, n)| format!("{n} {s}")).collect();
            parts.push(format!("{} missing image(s) ({})", self.missing_images, per_split.join(", ")));
        }
        if self.unreadable_images > 0 {
            parts.push(format!("{} unreadable image(s)", self.unreadable_images));
        }
        for (n, what) in [
            (self.images_without_captions, "image(s) without captions"),
            (self.captions_without_image, "caption(s) of unknown images"),
            (self.not_in_any_split, "image(s) in no split list"),
            (self.listed_without_captions, "listed image(s) without captions"),
            (self.restval_dropped, "restval image(s) left out"),
        ] {
            if n > 0 {
                parts.push(format!("{n} {what}"));
            }
        }
        write!(f, "{}", parts.join("; "))?;
        if !self.problems.is_empty() {
            write!(f, "; first: {}", self.problems.join("; "))?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct CaptionDataset {
    pub samples: Vec<Sample>,
    pub report: LoadReport,
}

impl CaptionDataset {
    /// Reads the annotations the config names and checks the images (per `check_images`).
    pub fn load(config: &DataConfig) -> Result<CaptionDataset> {
        config.validate()?;
        let mut report = LoadReport::default();
        let mut samples = match config.format {
            DataFormat::Synthetic => {
                let root = config.root.as_deref().expect("validated");
                crate::synth::generate(root, &config.synthetic, false)?;
                let mut all = Vec::new();
                for split in Split::ALL {
                    let annotations = root.join("annotations").join(format!("captions_{split}.json"));
                    let images = root.join("images").join(split.as_str());
                    let (samples, _) = loaders::coco::load(&annotations, &images, split)?;
                    all.extend(samples);
                }
                all
            }
            DataFormat::Coco => {
                let mut all = Vec::new();
                for split in Split::ALL {
                    let Some(src) = config.split(split) else { continue };
                    let annotations = src.annotations.as_deref().expect("validated");
                    let images = src.images.as_deref().or(config.images.as_deref()).expect("validated");
                    let (samples, extras) = loaders::coco::load(annotations, images, split)?;
                    report.images_without_captions += extras.images_without_captions;
                    report.captions_without_image += extras.captions_without_image;
                    all.extend(samples);
                }
                all
            }
            DataFormat::Karpathy => {
                let (samples, extras) = loaders::karpathy::load(
                    config.annotations.as_deref().expect("validated"),
                    config.images.as_deref().expect("validated"),
                    config.restval_to_train,
                )?;
                report.restval_dropped = extras.restval_dropped;
                report.images_without_captions = extras.images_without_captions;
                samples
            }
            DataFormat::Flickr => {
                let lists: Vec<(Split, PathBuf)> =
                    Split::ALL.iter().filter_map(|&s| config.split(s).and_then(|src| src.list.clone()).map(|l| (s, l))).collect();
                let (samples, extras) = loaders::flickr::load(
                    config.annotations.as_deref().expect("validated"),
                    config.images.as_deref().expect("validated"),
                    &lists,
                )?;
                report.not_in_any_split = extras.not_in_any_split;
                report.listed_without_captions = extras.listed_without_captions;
                samples
            }
        };
        if config.max_images_per_split > 0 {
            let mut seen = [0usize; 3];
            samples.retain(|s| {
                let n = &mut seen[s.split as usize];
                *n += 1;
                *n <= config.max_images_per_split
            });
        }
        let problems: Vec<Option<(bool, String)>> =
            samples.par_iter().map(|s| check_image(&s.image_path, config.check_images, config.image.max_pixels)).collect();
        let mut kept = Vec::with_capacity(samples.len());
        let mut by_split = [0usize; 3];
        for (sample, problem) in samples.into_iter().zip(problems) {
            match problem {
                None => kept.push(sample),
                Some((missing, reason)) => {
                    if missing {
                        report.missing_images += 1;
                    } else {
                        report.unreadable_images += 1;
                    }
                    by_split[sample.split as usize] += 1;
                    if report.problems.len() < NAMED_PROBLEMS {
                        report.problems.push(reason);
                    }
                }
            }
        }
        report.missing_by_split = Split::ALL.iter().zip(by_split).filter(|(_, n)| *n > 0).map(|(s, n)| (*s, n)).collect();
        let bad = report.missing_images + report.unreadable_images;
        if bad > 0 && config.on_missing == OnMissing::Error {
            return Err(DataError::MissingImages { count: bad, first: report.problems.join("; ") });
        }
        Ok(CaptionDataset { samples: kept, report })
    }

    pub fn split(&self, split: Split) -> impl Iterator<Item = &Sample> {
        self.samples.iter().filter(move |s| s.split == split)
    }

    pub fn count(&self, split: Split) -> usize {
        self.split(split).count()
    }
}

/// `None` if the image passes the check; otherwise (is it missing?, "file: reason").
fn check_image(path: &Path, check: ImageCheck, max_pixels: u64) -> Option<(bool, String)> {
    if !path.is_file() {
        return Some((true, format!("{}: not found", path.display())));
    }
    let result = match check {
        ImageCheck::Exists => Ok(()),
        ImageCheck::Header => crate::image::probe_dimensions(path, max_pixels).map(|_| ()),
        ImageCheck::Decode => crate::image::decode_file(path, max_pixels).map(|_| ()),
    };
    result.err().map(|e| (false, e.to_string()))
}
