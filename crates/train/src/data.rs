//! Training batches on the host: epoch order, caption choice, padding, and prepared images
//! (cached in memory when they fit, loaded in parallel otherwise).
//!
//! Everything random here is a function of `(seed, epoch, image)`, so that a resumed run sees
//! exactly the batches the interrupted run would have seen.

use std::path::Path;
use std::sync::mpsc::Receiver;

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

/// How an epoch is cut into batches.
#[derive(Debug, Clone, Copy)]
pub struct BatchPlan<'o> {
    pub seed: u64,
    /// 0-based.
    pub epoch: usize,
    /// The epoch's image order ([`TrainSet::epoch_order`]).
    pub order: &'o [usize],
    /// Images per batch.
    pub batch_size: usize,
    /// Captions per image (0: all).
    pub captions_per_image: usize,
    /// Every batch the same shape (see [`TrainSet::batch`]): a device that compiles and tunes
    /// kernels per shape then reuses them.
    pub fixed_shapes: bool,
}

/// The training split: its images and its captions as token ids.
pub struct TrainSet<'a> {
    pub images: ImageSource<'a>,
    /// The images' cached encoder features: used instead of the pixels when present.
    pub features: Option<FeatureSet>,
    /// Per image: its captions, encoded (without `<bos>`/`<eos>`).
    pub captions: Vec<Vec<Vec<u32>>>,
    /// The longest a caption can be (the vocabulary's `max_length`).
    pub max_length: usize,
    /// The most captions any image has (what each image brings with fixed shapes and
    /// `captions_per_image: 0`).
    pub max_captions: usize,
    pub pad: u32,
    pub bos: u32,
    pub eos: u32,
}

impl<'a> TrainSet<'a> {
    pub fn new(images: ImageSource<'a>, text: &TextEncoder) -> Self {
        let captions: Vec<Vec<Vec<u32>>> = images.samples.iter().map(|s| s.captions.iter().map(|c| text.encode(c)).collect()).collect();
        let max_captions = captions.iter().map(Vec::len).max().unwrap_or(0);
        let (pad, bos, eos) = (text.pad_id(), text.bos_id(), text.eos_id());
        TrainSet { images, features: None, captions, max_length: text.max_length(), max_captions, pad, bos, eos }
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

    /// Batch `index` of the plan's epoch. Without fixed shapes, the epoch's images are split into
    /// [`TrainSet::batches_per_epoch`] batches of equal size (within one image), so that no batch
    /// is a small remainder, and rows are padded to the batch's longest caption. With fixed
    /// shapes, every batch has `batch_size` images (the last one completed from the start of the
    /// epoch's order), every image the same number of captions (`captions_per_image`, or the
    /// most any image has; an image with fewer repeats its own), and every row `max_length + 1`
    /// tokens.
    pub fn batch(&self, plan: &BatchPlan, index: usize) -> Result<HostBatch> {
        let order = plan.order;
        let chosen: Vec<usize> = if plan.fixed_shapes {
            (index * plan.batch_size..(index + 1) * plan.batch_size).map(|i| order[i % order.len()]).collect()
        } else {
            let batches = self.batches_per_epoch(plan.batch_size);
            order[index * order.len() / batches..(index + 1) * order.len() / batches].to_vec()
        };
        let epoch = plan.epoch as u64;
        let augment_seeds: Vec<u64> = chosen
            .iter()
            .map(|&i| SplitMix64::for_item(plan.seed ^ AUGMENT_STREAM ^ epoch.wrapping_mul(0x1000_0000_01B3), i as u64).next_u64())
            .collect();
        let (pixels, feature_shape) = match &self.features {
            Some(features) => (features.gather(&chosen), Some(features.shape)),
            None => (self.images.pixels(&chosen, Some(&augment_seeds))?, None),
        };
        let mut rows: Vec<(usize, &[u32])> = Vec::new();
        for (slot, &image) in chosen.iter().enumerate() {
            rows.extend(self.pick_captions(plan, image).into_iter().map(|caption| (slot, caption)));
        }
        let length = if plan.fixed_shapes { self.max_length + 1 } else { rows.iter().map(|(_, c)| c.len() + 1).max().unwrap_or(1) };
        Ok(self.pad_rows(rows, length, pixels, feature_shape, chosen))
    }

    /// The captions `image` brings to a batch of `plan`.
    fn pick_captions(&self, plan: &BatchPlan, image: usize) -> Vec<&[u32]> {
        let all = &self.captions[image];
        let wanted = match plan.captions_per_image {
            0 if plan.fixed_shapes => self.max_captions,
            0 => all.len(),
            n => n,
        };
        if wanted >= all.len() {
            let repeats = if plan.fixed_shapes { wanted } else { all.len() };
            return all.iter().cycle().take(repeats).map(Vec::as_slice).collect();
        }
        // A seeded partial shuffle picks `wanted` distinct captions.
        let mut rng = SplitMix64::for_item(plan.seed ^ CAPTION_STREAM ^ (plan.epoch as u64).wrapping_mul(0x9E37_79B9), image as u64);
        let mut picks: Vec<usize> = (0..all.len()).collect();
        for k in 0..wanted {
            let j = k + rng.below((all.len() - k) as u64) as usize;
            picks.swap(k, j);
        }
        picks[..wanted].iter().map(|&k| all[k].as_slice()).collect()
    }

    /// The batch of `rows` (batch slot, caption), each padded to `length` tokens.
    fn pad_rows(
        &self,
        rows: Vec<(usize, &[u32])>,
        length: usize,
        pixels: Vec<f32>,
        feature_shape: Option<[usize; 3]>,
        chosen: Vec<usize>,
    ) -> HostBatch {
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
        HostBatch {
            pixels,
            images: chosen.len(),
            feature_shape,
            image_indices: chosen,
            row_image: rows.iter().map(|(slot, _)| *slot as i64).collect(),
            inputs,
            targets,
            length,
            tokens,
        }
    }

    /// Prepares the batches `indices` of `plan` on a thread of `scope`, at most two ahead of the
    /// consumer, which receives them in order.
    pub fn prefetch<'scope, I>(
        &'scope self,
        scope: &'scope std::thread::Scope<'scope, '_>,
        plan: BatchPlan<'scope>,
        indices: I,
    ) -> Receiver<Result<HostBatch>>
    where
        I: Iterator<Item = usize> + Send + 'scope,
    {
        let (sender, receiver) = std::sync::mpsc::sync_channel(2);
        scope.spawn(move || {
            for index in indices {
                if sender.send(self.batch(&plan, index)).is_err() {
                    break;
                }
            }
        });
        receiver
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
        let plan = BatchPlan { seed: 1, epoch: 0, order: &order, batch_size: 2, captions_per_image: 0, fixed_shapes: false };
        let batch = set.batch(&plan, 0).unwrap();
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

        let one = set.batch(&BatchPlan { captions_per_image: 1, ..plan }, 0).unwrap();
        assert_eq!(one.row_image, vec![0, 1]);
        assert_eq!(set.epoch_order(7, 3), set.epoch_order(7, 3));
    }

    #[test]
    fn fixed_shapes_fill_every_batch_row_and_token() {
        let samples = [sample(0, &["a red circle", "a circle"]), sample(1, &["two blue squares"]), sample(2, &["one big star"])];
        let text = TextEncoder::build(
            &VocabConfig { min_count: 1, max_length: 6, ..Default::default() },
            &["a red circle", "a circle", "two blue squares", "one big star"],
        )
        .unwrap();
        let images = ImageSource {
            samples: samples.iter().collect(),
            config: ImageConfig { size: 2, ..Default::default() },
            cache: Some(vec![vec![0.0; 12]; 3]),
        };
        let set = TrainSet::new(images, &text);
        let order = vec![2, 0, 1];
        let plan = BatchPlan { seed: 1, epoch: 0, order: &order, batch_size: 2, captions_per_image: 0, fixed_shapes: true };
        assert_eq!(set.batches_per_epoch(2), 2);
        let first = set.batch(&plan, 0).unwrap();
        let last = set.batch(&plan, 1).unwrap();
        // The last batch is completed from the start of the order; every image brings two
        // captions (the most any image has), one-caption images repeating theirs.
        assert_eq!(first.image_indices, vec![2, 0]);
        assert_eq!(last.image_indices, vec![1, 2]);
        for batch in [&first, &last] {
            assert_eq!((batch.images, batch.length, batch.rows()), (2, 7, 4));
            assert_eq!(batch.row_image, vec![0, 0, 1, 1]);
            assert_eq!(batch.inputs.len(), 4 * 7);
            assert_eq!(batch.pixels.len(), 2 * 12);
        }
        let squares: Vec<i64> = text.encode("two blue squares").into_iter().map(i64::from).collect();
        assert_eq!(last.targets[..7], [squares[0], squares[1], squares[2], 2, 0, 0, 0]);
        assert_eq!(last.targets[..7], last.targets[7..14]);
        assert_eq!(first.tokens, 4 + 4 + 4 + 3);
        // An explicit caption count holds for every image too.
        let three = set.batch(&BatchPlan { captions_per_image: 3, ..plan }, 0).unwrap();
        assert_eq!(three.row_image, vec![0, 0, 0, 1, 1, 1]);
    }
}
