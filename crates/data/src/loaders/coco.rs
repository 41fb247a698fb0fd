//! MS-COCO caption JSON (`captions_train2014.json`, `captions_val2017.json`, ...): the
//! `images` and `annotations` arrays; `info` and `licenses` are not needed and not required.

use super::read_json;
use crate::error::Result;
use crate::sample::{Sample, Split};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Deserialize)]
struct CocoCaptions {
    images: Vec<CocoImage>,
    annotations: Vec<CocoAnnotation>,
}

#[derive(Deserialize)]
struct CocoImage {
    id: u64,
    file_name: String,
}

#[derive(Deserialize)]
struct CocoAnnotation {
    image_id: u64,
    caption: String,
}

/// What the COCO file held beyond usable samples, for the load report.
#[derive(Debug, Default, Clone, Copy)]
pub struct CocoExtras {
    pub images_without_captions: usize,
    pub captions_without_image: usize,
}

/// Reads one split's caption file; images keep the file's order, captions their annotation order.
pub fn load(annotations: &Path, images_dir: &Path, split: Split) -> Result<(Vec<Sample>, CocoExtras)> {
    let file: CocoCaptions = read_json(annotations, "an MS-COCO caption file (`images`, `annotations`)")?;
    let mut captions: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let known: std::collections::HashSet<u64> = file.images.iter().map(|i| i.id).collect();
    let mut extras = CocoExtras::default();
    for ann in file.annotations {
        if known.contains(&ann.image_id) {
            captions.entry(ann.image_id).or_default().push(ann.caption);
        } else {
            extras.captions_without_image += 1;
        }
    }
    let mut samples = Vec::with_capacity(file.images.len());
    for image in file.images {
        match captions.remove(&image.id) {
            Some(caps) => samples.push(Sample {
                image_id: image.id.to_string(),
                image_path: images_dir.join(&image.file_name),
                file_name: image.file_name,
                captions: caps,
                split,
            }),
            None => extras.images_without_captions += 1,
        }
    }
    Ok((samples, extras))
}
