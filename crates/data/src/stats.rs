//! Dataset statistics (`caption data stats`), computed with polars: images and captions per
//! split, captions per image, caption-length percentiles, vocabulary size at min count 1 and 5
//! on the training split, the out-of-vocabulary rate of the other splits, and what loading
//! left out.

use crate::dataset::{CaptionDataset, LoadReport};
use crate::error::{DataError, Result};
use crate::sample::Split;
use crate::vocab::caption_words;
use polars::prelude::*;
use serde::Serialize;
use std::collections::HashMap;

/// Percentiles reported for caption lengths (numpy's default linear interpolation).
const LENGTH_PERCENTILES: [f64; 5] = [0.05, 0.25, 0.5, 0.75, 0.95];

#[derive(Debug, Clone, Serialize)]
pub struct SplitStats {
    pub split: Split,
    pub images: usize,
    pub captions: usize,
    pub captions_per_image_min: u32,
    pub captions_per_image_mean: f64,
    pub captions_per_image_max: u32,
    /// Tokens per caption (PTB words, as the metrics count them) at 5/25/50/75/95 %.
    pub length_percentiles: [f64; 5],
    pub length_max: u32,
    /// Share of this split's tokens not in the training vocabulary at min count 5.
    pub oov_rate: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DatasetStats {
    pub splits: Vec<SplitStats>,
    /// Distinct training words seen at least once / at least five times.
    pub vocab_size_min_count_1: usize,
    pub vocab_size_min_count_5: usize,
    pub report: LoadReport,
}

fn polars_err(e: PolarsError) -> DataError {
    DataError::Config(format!("statistics failed: {e}"))
}

fn scalar_f64(s: PolarsResult<Scalar>) -> Result<f64> {
    let s = s.map_err(polars_err)?;
    Ok(s.value().extract::<f64>().unwrap_or(0.0))
}

pub fn compute(dataset: &CaptionDataset) -> Result<DatasetStats> {
    // One row per caption: split, image id, length in tokens, out-of-vocabulary tokens.
    let mut train_counts: HashMap<String, usize> = HashMap::new();
    let tokenised: Vec<(Split, &str, Vec<String>)> =
        dataset.samples.iter().flat_map(|s| s.captions.iter().map(move |c| (s.split, s.image_id.as_str(), caption_words(c)))).collect();
    for (split, _, words) in &tokenised {
        if *split == Split::Train {
            for w in words {
                *train_counts.entry(w.clone()).or_default() += 1;
            }
        }
    }
    let in_vocab = |w: &String| train_counts.get(w).is_some_and(|&c| c >= 5);
    let captions = df!(
        "split" => tokenised.iter().map(|t| t.0.as_str()).collect::<Vec<_>>(),
        "image_id" => tokenised.iter().map(|t| t.1).collect::<Vec<_>>(),
        "length" => tokenised.iter().map(|t| t.2.len() as u32).collect::<Vec<_>>(),
        "oov" => tokenised.iter().map(|t| t.2.iter().filter(|w| !in_vocab(w)).count() as u32).collect::<Vec<_>>(),
    )
    .map_err(polars_err)?;
    let images = df!(
        "split" => dataset.samples.iter().map(|s| s.split.as_str()).collect::<Vec<_>>(),
        "captions" => dataset.samples.iter().map(|s| s.captions.len() as u32).collect::<Vec<_>>(),
    )
    .map_err(polars_err)?;

    let mut splits = Vec::new();
    for split in Split::ALL {
        let of_split = |df: &DataFrame| -> Result<DataFrame> {
            let mask = df.column("split").and_then(|c| c.str()).map_err(polars_err)?.equal(split.as_str());
            df.filter(&mask).map_err(polars_err)
        };
        let caps = of_split(&captions)?;
        let imgs = of_split(&images)?;
        if imgs.height() == 0 {
            continue;
        }
        let per_image = imgs.column("captions").map_err(polars_err)?;
        let length = caps.column("length").map_err(polars_err)?;
        let mut percentiles = [0.0; 5];
        for (p, q) in percentiles.iter_mut().zip(LENGTH_PERCENTILES) {
            *p = scalar_f64(length.quantile_reduce(q, QuantileMethod::Linear))?;
        }
        let tokens = scalar_f64(length.sum_reduce())?;
        let oov = scalar_f64(caps.column("oov").map_err(polars_err)?.sum_reduce())?;
        splits.push(SplitStats {
            split,
            images: imgs.height(),
            captions: caps.height(),
            captions_per_image_min: scalar_f64(per_image.min_reduce())? as u32,
            captions_per_image_mean: scalar_f64(per_image.mean_reduce())?,
            captions_per_image_max: scalar_f64(per_image.max_reduce())? as u32,
            length_percentiles: percentiles,
            length_max: scalar_f64(length.max_reduce())? as u32,
            oov_rate: if tokens > 0.0 { oov / tokens } else { 0.0 },
        });
    }
    Ok(DatasetStats {
        splits,
        vocab_size_min_count_1: train_counts.len(),
        vocab_size_min_count_5: train_counts.values().filter(|&&c| c >= 5).count(),
        report: dataset.report.clone(),
    })
}

impl std::fmt::Display for DatasetStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{:<6} {:>8} {:>9} {:>13} {:>26} {:>5} {:>8}",
            "split", "images", "captions", "caps/image", "length p5/p25/p50/p75/p95", "max", "OOV"
        )?;
        for s in &self.splits {
            let p = s.length_percentiles;
            writeln!(
                f,
                "{:<6} {:>8} {:>9} {:>13} {:>26} {:>5} {:>7.2}%",
                s.split.as_str(),
                s.images,
                s.captions,
                format!("{}/{:.2}/{}", s.captions_per_image_min, s.captions_per_image_mean, s.captions_per_image_max),
                format!("{}/{}/{}/{}/{}", p[0], p[1], p[2], p[3], p[4]),
                s.length_max,
                100.0 * s.oov_rate
            )?;
        }
        writeln!(
            f,
            "training vocabulary: {} words at min count 1, {} at min count 5 (OOV is measured against the latter)",
            self.vocab_size_min_count_1, self.vocab_size_min_count_5
        )?;
        write!(f, "left out: {}", self.report)
    }
}
