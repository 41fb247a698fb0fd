//! Karpathy's split files (`dataset_coco.json`, `dataset_flickr8k.json`, `dataset_flickr30k.json`):
//! `images[].{filepath?, filename, split, sentences[].{raw, tokens}, cocoid?}`.

use super::{file_stem_id, read_json};
use crate::error::Result;
use crate::sample::{Sample, Split};
use serde::Deserialize;
use std::path::Path;

#[derive(Deserialize)]
struct KarpathyFile {
    images: Vec<KarpathyImage>,
}

#[derive(Deserialize)]
struct KarpathyImage {
    #[serde(default)]
    filepath: Option<String>,
    filename: String,
    split: String,
    sentences: Vec<KarpathySentence>,
    #[serde(default)]
    cocoid: Option<u64>,
}

#[derive(Deserialize)]
struct KarpathySentence {
    raw: String,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct KarpathyExtras {
    /// `restval` images left out because `restval_to_train` is off.
    pub restval_dropped: usize,
    pub images_without_captions: usize,
}

pub fn load(annotations: &Path, images_root: &Path, restval_to_train: bool) -> Result<(Vec<Sample>, KarpathyExtras)> {
    let file: KarpathyFile = read_json(annotations, "a Karpathy split file (`images[].filename/split/sentences`)")?;
    let mut extras = KarpathyExtras::default();
    let mut samples = Vec::with_capacity(file.images.len());
    for (index, image) in file.images.into_iter().enumerate() {
        let split = match image.split.as_str() {
            "restval" if restval_to_train => Split::Train,
            "restval" => {
                extras.restval_dropped += 1;
                continue;
            }
            other => Split::parse(other).ok_or_else(|| {
                crate::DataError::invalid(annotations, format!("images[{index}].split is {other:?}; expected train, val, test or restval"))
            })?,
        };
        if image.sentences.is_empty() {
            extras.images_without_captions += 1;
            continue;
        }
        let relative = match &image.filepath {
            Some(dir) => Path::new(dir).join(&image.filename),
            None => Path::new(&image.filename).to_path_buf(),
        };
        samples.push(Sample {
            image_id: image.cocoid.map(|id| id.to_string()).unwrap_or_else(|| file_stem_id(&image.filename)),
            image_path: images_root.join(&relative),
            file_name: relative.to_string_lossy().into_owned(),
            captions: image.sentences.into_iter().map(|s| s.raw).collect(),
            split,
        });
    }
    Ok((samples, extras))
}
