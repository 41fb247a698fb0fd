//! Training batches on the host: epoch order, caption choice, padding, and prepared images
//! (cached in memory when they fit, loaded in parallel otherwise).
//!
//! Everything random here is a function of `(seed, epoch, image)`, so that a resumed run sees
//! exactly the batches the interrupted run would have seen.

use std::path::Path;

use anyhow::{Context, Result};
use caption_data::image::{ImageConfig, load_batch};
use caption_data::rng::SplitMix64;
use caption_data::{Sample, TextEncoder};

use crate::features::FeatureSet;

const ORDER_STREAM: u64 = 0x4F52_4445_5200_0001;
const CAPTION_STREAM: u64 = 0x4341_5054_0000_0002;
const AUGMENT_STREAM: u64 = 0x4155_474D_0000_0003;

/// Prepared images of a list of samples, in memory or read on demand.
pub struct ImageSource<'a> {
    pub samples: Vec<&'a Sample>,
    pub config: ImageConfig,
    cache: Option<Vec<Vec<f32>>>,
}

impl<'a> ImageSource<'a> {
    /// `cache_bytes`: the most memory the prepared images may take to be cached (0: never).
    /// Images are cached only when augmentation is off (they are the same every epoch then).
    pub fn new(samples: Vec<&'a Sample>, config: &ImageConfig, cache_bytes: u64) -> Result<Self> {
        let side = config.size as u64;
        let needed = samples.len() as u64 * 3 * side * side * 4;
        let mut source = ImageSource { samples, config: config.clone(), cache: None };
        if !source.config.augment.is_random() && needed <= cache_bytes && !source.samples.is_empty() {
            let all: Vec<usize> = (0..source.samples.len()).collect();
            let images = source.load(&all, None)?;
            source.cache = Some(images);
        }
        Ok(source)
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    pub fn is_cached(&self) -> bool {
        self.cache.is_some()
    }

    /// Floats per image (`3 * size * size`).
    pub fn image_len(&self) -> usize {
        3 * self.config.size as usize * self.config.size as usize
    }

    fn load(&self, indices: &[usize], seeds: Option<&[u64]>) -> Result<Vec<Vec<f32>>> {
        let paths: Vec<&Path> = indices.iter().map(|&i| self.samples[i].image_path.as_path()).collect();
        load_batch(&paths, &self.config, seeds)
            .into_iter()
            .zip(&paths)
            .map(|(result, path)| result.map(|p| p.chw).with_context(|| format!("loading {}", path.display())))
            .collect()
    }

    /// CHW pixels of `indices`, concatenated; `augment_seeds` (one per index) for training.
    pub fn pixels(&self, indices: &[usize], augment_seeds: Option<&[u64]>) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(indices.len() * self.image_len());
        match &self.cache {
            Some(cache) => indices.iter().for_each(|&i| out.extend_from_slice(&cache[i])),
            None => self.load(indices, augment_seeds)?.into_iter().for_each(|chw| out.extend(chw)),
        }
        Ok(out)
    }
}

/// One training batch, ready to become tensors.
#[derive(Debug, Clone)]
pub struct HostBatch {
    /// Images `[n, 3, S, S]`, or cached encoder feature maps `[n, C, H, W]` when
    /// `feature_shape` is set.
    pub pixels: Vec<f32>,
    pub images: usize,
    /// `[C, H, W]` when `pixels` holds cached features (see [`crate::features`]).
    pub feature_shape: Option<[usize; 3]>,
    /// The batch's images as indices into the training set.
    pub image_indices: Vec<usize>,
    /// For each caption row, the batch image it describes.
    pub row_image: Vec<i64>,
    /// Decoder inputs `[rows, T]`: `<bos>` and the words, right-padded.
    pub inputs: Vec<i64>,
    /// Targets `[rows, T]`: the words and `<eos>`, right-padded.
    pub targets: Vec<i64>,
    pub length: usize,
    /// Non-padding target tokens.
    pub tokens: usize,
}

impl HostBatch {
    pub fn rows(&self) -> usize {
        self.row_image.len()
    }
}

/// The training split: its images and its captions as token ids.
pub struct TrainSet<'a> {
    pub images: ImageSource<'a>,
    /// The images' cached encoder features: used instead of the pixels when present.
    pub features: Option<FeatureSet>,
    /// Per image: its captions, encoded (without `<bos>`/`<eos>`).
    pub captions: Vec<Vec<Vec<u32>>>,
    pub pad: u32,
    pub bos: u32,
    pub eos: u32,
}

impl<'a> TrainSet<'a> {
    pub fn new(images: ImageSource<'a>, text: &TextEncoder) -> Self {
        let captions = images.samples.iter().map(|s| s.captions.iter().map(|c| text.encode(c)).collect::<Vec<_>>()).collect();
        TrainSet { images, features: None, captions, pad: text.pad_id(), bos: text.bos_id(), eos: text.eos_id() }
    }

    pub fn len(&self) -> usize {
        self.captions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.captions.is_empty()
    }

    /// Batches per epoch.
    pub fn batches_per_epoch(&self, batch_size: usize) -> usize {
        self.len().div_ceil(batch_size)
    }

    /// The image order of epoch `epoch` (0-based): a seeded Fisher-Yates shuffle.
    pub fn epoch_order(&self, seed: u64, epoch: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.len()).collect();
        let mut rng = SplitMix64::for_item(seed ^ ORDER_STREAM, epoch as u64);
        for i in (1..order.len()).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            order.swap(i, j);
        }
        order
    }

    /// Batch `index` of epoch `epoch`. The epoch's images are split into
    /// [`TrainSet::batches_per_epoch`] batches of equal size (within one image), so that no
    /// batch is a small remainder.
    pub fn batch(
        &self,
        seed: u64,
        epoch: usize,
        order: &[usize],
        batch_size: usize,
        captions_per_image: usize,
        index: usize,
    ) -> Result<HostBatch> {
        let batches = self.batches_per_epoch(batch_size);
        let (start, end) = (index * order.len() / batches, (index + 1) * order.len() / batches);
        let chosen = &order[start..end];
        let augment_seeds: Vec<u64> = chosen
            .iter()
            .map(|&i| SplitMix64::for_item(seed ^ AUGMENT_STREAM ^ (epoch as u64).wrapping_mul(0x1000_0000_01B3), i as u64).next_u64())
            .collect();
        let (pixels, feature_shape) = match &self.features {
            Some(features) => (features.gather(chosen), Some(features.shape)),
            None => (self.images.pixels(chosen, Some(&augment_seeds))?, None),
        };

        let mut rows: Vec<(usize, &[u32])> = Vec::new();
        for (slot, &image) in chosen.iter().enumerate() {
            let all = &self.captions[image];
            if captions_per_image == 0 || captions_per_image >= all.len() {
                rows.extend(all.iter().map(|c| (slot, c.as_slice())));
            } else {
                // A seeded partial shuffle picks `captions_per_image` distinct captions.
                let mut rng = SplitMix64::for_item(seed ^ CAPTION_STREAM ^ (epoch as u64).wrapping_mul(0x9E37_79B9), image as u64);
                let mut picks: Vec<usize> = (0..all.len()).collect();
                for k in 0..captions_per_image {
                    let j = k + rng.below((all.len() - k) as u64) as usize;
                    picks.swap(k, j);
                }
                rows.extend(picks[..captions_per_image].iter().map(|&k| (slot, all[k].as_slice())));
            }
        }
        let length = rows.iter().map(|(_, c)| c.len() + 1).max().unwrap_or(1);
        let mut inputs = vec![self.pad as i64; rows.len() * length];
        let mut targets = vec![self.pad as i64; rows.len() * length];
        let mut tokens = 0;
        for (r, (_, caption)) in rows.iter().enumerate() {
            let base = r * length;
            inputs[base] = self.bos as i64;
            for (t, &id) in caption.iter().enumerate() {
                inputs[base + t + 1] = id as i64;
                targets[base + t] = id as i64;
            }
            targets[base + caption.len()] = self.eos as i64;
            tokens += caption.len() + 1;
        }
        Ok(HostBatch {
            pixels,
            images: chosen.len(),
            feature_shape,
            image_indices: chosen.to_vec(),
            row_image: rows.iter().map(|(slot, _)| *slot as i64).collect(),
            inputs,
            targets,
            length,
            tokens,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use caption_data::{Split, VocabConfig};
    use std::path::PathBuf;

    fn sample(id: usize, captions: &[&str]) -> Sample {
        Sample {
            image_id: id.to_string(),
            file_name: format!("{id}.png"),
            image_path: PathBuf::from(format!("/nonexistent/{id}.png")),
            captions: captions.iter().map(|c| c.to_string()).collect(),
            split: Split::Train,
        }
    }

    #[test]
    fn batches_pad_and_shift_captions() {
        let samples = [sample(0, &["a red circle", "a circle"]), sample(1, &["two blue squares"])];
        let text = TextEncoder::build(
            &VocabConfig { min_count: 1, max_length: 8, ..Default::default() },
            &["a red circle", "a circle", "two blue squares"],
        )
        .unwrap();
        let images = ImageSource {
            samples: samples.iter().collect(),
            config: ImageConfig { size: 2, ..Default::default() },
            cache: Some(vec![vec![0.0; 12]; 2]),
        };
        let set = TrainSet::new(images, &text);
        let order = vec![1, 0];
        let batch = set.batch(1, 0, &order, 2, 0, 0).unwrap();
        assert_eq!(set.batches_per_epoch(2), 1);
        assert_eq!(batch.images, 2);
        assert_eq!(batch.row_image, vec![0, 1, 1]);
        assert_eq!(batch.length, 4);
        let enc = |s: &str| text.encode(s).into_iter().map(i64::from).collect::<Vec<_>>();
        let squares = enc("two blue squares");
        assert_eq!(batch.inputs[..4], [1, squares[0], squares[1], squares[2]]);
        assert_eq!(batch.targets[..4], [squares[0], squares[1], squares[2], 2]);
        assert_eq!(batch.targets[8..12], [enc("a circle")[0], enc("a circle")[1], 2, 0]);
        assert_eq!(batch.tokens, 4 + 4 + 3);

        let one = set.batch(1, 0, &order, 2, 1, 0).unwrap();
        assert_eq!(one.row_image, vec![0, 1]);
        assert_eq!(set.epoch_order(7, 3), set.epoch_order(7, 3));
    }
}
