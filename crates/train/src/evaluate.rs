//! Decoding a split with a captioner and scoring it with `caption_eval`, and the files and
//! report of a test evaluation.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use burn::prelude::*;
use caption_data::attention_figure;
use caption_data::fsutil::write_atomic;
use caption_data::image::{ImageConfig, thumbnail_jpeg};
use caption_data::{CaptionDataset, DataConfig, Sample, Split};
use caption_eval::meteor::Meteor;
use caption_eval::report::{self, ReportHeader, ReportImage};
use caption_eval::{Evaluation, Metric, evaluate_with};
use caption_model::{Caption, CaptionPipeline, DecodingConfig, DecodingOverrides, DeviceSpec, EncoderConfig, load_checkpoint};
use serde::Serialize;

use crate::data::ImageSource;
use crate::features::FeatureSet;

/// What a split is decoded from: its images, or their cached encoder features.
#[derive(Clone, Copy)]
pub enum EvalInputs<'a> {
    Images(&'a ImageSource<'a>),
    Features(&'a FeatureSet),
}

impl EvalInputs<'_> {
    pub fn len(&self) -> usize {
        match self {
            EvalInputs::Images(source) => source.len(),
            EvalInputs::Features(set) => set.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The best caption of every image of `inputs`, in order.
pub fn decode_images<B: Backend>(
    pipeline: &CaptionPipeline<B>,
    inputs: EvalInputs,
    decoding: &DecodingConfig,
    batch_size: usize,
) -> Result<Vec<Caption>> {
    let mut captions = Vec::with_capacity(inputs.len());
    let indices: Vec<usize> = (0..inputs.len()).collect();
    for chunk in indices.chunks(batch_size.max(1)) {
        let lists = match inputs {
            EvalInputs::Images(source) => pipeline.caption_images(source.pixels(chunk, None)?, decoding),
            EvalInputs::Features(set) => pipeline.caption_features(&set.encoder_output(chunk, pipeline.device()), decoding),
        }
        .context("decoding")?;
        for list in lists {
            captions.push(list.into_iter().next().context("decoding gave an image no caption")?);
        }
    }
    Ok(captions)
}

/// The captions' texts.
pub fn texts(captions: &[Caption]) -> Vec<String> {
    captions.iter().map(|c| c.text.clone()).collect()
}

/// Scores `candidates` (one per sample, in order) against the samples' references.
pub fn score(samples: &[&Sample], candidates: &[String]) -> Result<Evaluation<String>> {
    score_with(samples, candidates, None)
}

/// [`score`], plus METEOR 1.5 when its data is given.
pub fn score_with(samples: &[&Sample], candidates: &[String], meteor: Option<&Meteor>) -> Result<Evaluation<String>> {
    let ids: Vec<String> = samples.iter().map(|s| s.image_id.clone()).collect();
    let references: HashMap<String, Vec<String>> = samples.iter().map(|s| (s.image_id.clone(), s.captions.clone())).collect();
    let candidates: HashMap<String, String> = ids.iter().cloned().zip(candidates.iter().cloned()).collect();
    // Every metric that needs no data files; METEOR too when its data is given.
    let metrics: &[Metric] = if meteor.is_some() { &Metric::REPORT_ORDER } else { &Metric::ALL };
    evaluate_with(&ids, &references, &candidates, metrics, meteor).context("scoring captions")
}

/// What `caption eval` evaluates.
pub struct EvalJob {
    /// A checkpoint directory.
    pub checkpoint: PathBuf,
    /// Where the split's images and references are.
    pub data: DataConfig,
    pub split: Split,
    /// Evaluate the first N images only (0: all).
    pub max_images: usize,
    /// Changes to the checkpoint's decoding.
    pub decoding: DecodingOverrides,
    /// The decoding of checkpoints that record none (the config's test decoding).
    pub default_decoding: DecodingConfig,
    pub batch_size: usize,
    pub meteor: Option<Meteor>,
    pub out: PathBuf,
    pub device: DeviceSpec,
    /// For a frozen encoder: the feature cache (`train.feature_cache_dir`) and the config's
    /// encoder section, which together with the checkpoint's encoder weights key the cache as
    /// training keys it. The split is then decoded from its cached features (computed and kept
    /// if absent) instead of running the encoder on every image again.
    pub feature_cache: Option<(PathBuf, EncoderConfig)>,
}

/// Decodes a split with a checkpoint, scores it and writes the evaluation files and reports
/// into `job.out` (see [`write_eval_files`]).
pub fn evaluate_checkpoint(job: &EvalJob) -> Result<TestReport> {
    job.device.check_available()?;
    match job.device {
        DeviceSpec::Cpu => evaluate_on::<caption_model::FlexBackend>(job, Default::default()),
        #[cfg(feature = "cuda")]
        DeviceSpec::Cuda(_) => evaluate_on::<caption_model::device::CudaBackend>(job, job.device.cuda_device().expect("a CUDA device")),
        #[cfg(not(feature = "cuda"))]
        DeviceSpec::Cuda(_) => unreachable!("checked by check_available"),
    }
}

fn evaluate_on<B: Backend>(job: &EvalJob, device: B::Device) -> Result<TestReport> {
    let start = Instant::now();
    let checkpoint = load_checkpoint::<B>(&job.checkpoint, &device).with_context(|| format!("loading {}", job.checkpoint.display()))?;
    let meta = checkpoint.meta.clone();
    let mut pipeline = CaptionPipeline::from_checkpoint(checkpoint, &device);
    // Checkpoints that predate recording them are evaluated as the config says.
    if meta.preprocess.is_none() {
        pipeline.preprocess = crate::preprocess_config(&job.data.image);
    }
    if meta.decoding.is_none() {
        pipeline.decoding = job.default_decoding.clone();
    }
    let decoding = job.decoding.apply(&pipeline.decoding)?;
    let dataset = CaptionDataset::load(&job.data).context("loading the dataset")?;
    let mut samples: Vec<&Sample> = dataset.split(job.split).collect();
    if job.max_images > 0 {
        samples.truncate(job.max_images);
    }
    if samples.is_empty() {
        bail!("the {} split has no images to evaluate (check the `data:` section)", job.split);
    }
    let source = ImageSource::new(samples.clone(), &pipeline.preprocess, 0)?;
    let cached = match &job.feature_cache {
        Some((dir, encoder_config)) => {
            let encoder = &pipeline.model.encoder;
            let key = crate::features::cache_key(encoder_config, encoder, &pipeline.preprocess)?;
            Some(crate::features::load_or_compute(dir, &key, job.split.as_str(), encoder, &source, job.batch_size, &device)?)
        }
        None => None,
    };
    let inputs = match &cached {
        Some(set) => EvalInputs::Features(set),
        None => EvalInputs::Images(&source),
    };
    let label = ReportLabel {
        title: meta.run_name.clone(),
        split: job.split.to_string(),
        checkpoint: job.checkpoint.display().to_string(),
        epoch: meta.epoch,
        step: meta.step,
    };
    let run = SplitRun { inputs, samples: &samples, decoding: &decoding, batch_size: job.batch_size, meteor: job.meteor.as_ref() };
    let (report, _) = evaluate_split(&pipeline, run, label, start, &job.out)?;
    Ok(report)
}

/// What an evaluation is of, for its report.
pub struct ReportLabel {
    /// The run or checkpoint name.
    pub title: String,
    pub split: String,
    /// Where the checkpoint is (as shown to people).
    pub checkpoint: String,
    pub epoch: Option<u64>,
    pub step: u64,
}

/// What [`evaluate_split`] decodes and scores.
pub struct SplitRun<'a> {
    /// The samples' images or features, in the samples' order.
    pub inputs: EvalInputs<'a>,
    pub samples: &'a [&'a Sample],
    pub decoding: &'a DecodingConfig,
    pub batch_size: usize,
    /// METEOR's data, when it is scored.
    pub meteor: Option<&'a Meteor>,
}

/// Decodes a split, scores it, and writes the evaluation files and reports into `out`; returns
/// the report and the captions. `start` is when the evaluation began, for the reported time.
pub fn evaluate_split<B: Backend>(
    pipeline: &CaptionPipeline<B>,
    run: SplitRun,
    label: ReportLabel,
    start: Instant,
    out: &Path,
) -> Result<(TestReport, Vec<Caption>)> {
    // With each token's attention, for the report's figures.
    let decoding = DecodingConfig { attention: true, ..run.decoding.clone() };
    let captions = decode_images(pipeline, run.inputs, &decoding, run.batch_size)?;
    let evaluation = score_with(run.samples, &texts(&captions), run.meteor)?;
    let report = TestReport {
        title: label.title,
        split: label.split,
        checkpoint: label.checkpoint,
        epoch: label.epoch,
        step: label.step,
        decoding: run.decoding.clone(),
        images: run.samples.len(),
        metrics: evaluation.corpus.iter().map(|(n, v)| (n.to_string(), v)).collect(),
        seconds: start.elapsed().as_secs_f64(),
    };
    write_eval_files(out, &report, run.samples, &captions, &evaluation, &pipeline.preprocess)?;
    Ok((report, captions))
}

/// What a test evaluation found.
#[derive(Debug, Clone, Serialize)]
pub struct TestReport {
    /// What was evaluated, for the reports' title (the run or checkpoint name).
    pub title: String,
    pub split: String,
    pub checkpoint: String,
    pub epoch: Option<u64>,
    pub step: u64,
    pub decoding: DecodingConfig,
    pub images: usize,
    /// Corpus scores, pycocoevalcap's names and order.
    pub metrics: Vec<(String, f64)>,
    pub seconds: f64,
}

impl TestReport {
    pub fn get(&self, name: &str) -> Option<f64> {
        self.metrics.iter().find(|(n, _)| n == name).map(|&(_, v)| v)
    }
}

/// Writes `metrics.json`, `per_image.json` (the rows `caption compare` reads), `results.json`
/// (MS-COCO results format, for `caption score`), and `report.md` / `report.html` (see
/// `caption_eval::report`) into `dir`.
pub fn write_eval_files(
    dir: &Path,
    report: &TestReport,
    samples: &[&Sample],
    captions: &[Caption],
    evaluation: &Evaluation<String>,
    preprocess: &ImageConfig,
) -> Result<()> {
    let candidates = texts(captions);
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let metrics: serde_json::Map<String, serde_json::Value> =
        report.metrics.iter().map(|(name, value)| (name.clone(), serde_json::json!(value))).collect();
    let summary = serde_json::json!({
        "split": report.split,
        "checkpoint": report.checkpoint,
        "epoch": report.epoch,
        "step": report.step,
        "decoding": report.decoding,
        "images": report.images,
        "metrics": metrics,
        "seconds": report.seconds,
    });
    write_atomic(&dir.join("metrics.json"), &serde_json::to_vec_pretty(&summary)?)?;

    let rows: Vec<serde_json::Value> = samples
        .iter()
        .zip(captions)
        .zip(&evaluation.images)
        .map(|((sample, caption), image)| {
            let mut row = serde_json::Map::new();
            row.insert("image_id".into(), sample.image_id_json());
            row.insert("candidate".into(), serde_json::json!(caption.text));
            row.insert("confidence".into(), serde_json::json!(caption.confidence));
            for (name, value) in image.scores.iter() {
                row.insert(name.into(), serde_json::json!(value));
            }
            serde_json::Value::Object(row)
        })
        .collect();
    write_atomic(&dir.join("per_image.json"), &serde_json::to_vec_pretty(&rows)?)?;

    let results: Vec<serde_json::Value> = samples
        .iter()
        .zip(&candidates)
        .map(|(sample, caption)| serde_json::json!({"image_id": sample.image_id_json(), "caption": caption}))
        .collect();
    write_atomic(&dir.join("results.json"), &serde_json::to_vec_pretty(&results)?)?;

    // The reports, with thumbnails of the images they show.
    let mut images: Vec<ReportImage> = samples
        .iter()
        .zip(captions)
        .zip(&evaluation.images)
        .map(|((sample, caption), image)| ReportImage {
            image_id: sample.image_id.clone(),
            candidate: caption.text.clone(),
            references: sample.captions.clone(),
            scores: image.scores.iter().map(|(n, v)| (n.to_string(), v)).collect(),
            thumbnail: None,
            tokens: caption.tokens.iter().map(|t| (t.text.clone(), t.probability)).collect(),
            attention: None,
        })
        .collect();
    let attended = report::attention_ids(&images, ATTENTION_EXAMPLES);
    for ((image, sample), caption) in images.iter_mut().zip(samples).zip(captions) {
        if attended.contains(&image.image_id) {
            image.attention =
                attention_jpeg(sample, caption, preprocess).map(|jpeg| format!("data:image/jpeg;base64,{}", BASE64.encode(jpeg)));
        }
    }
    let featured = report::featured_ids(&images, REPORT_EXAMPLES);
    for (image, sample) in images.iter_mut().zip(samples) {
        if featured.contains(&image.image_id) {
            // A picture that cannot be read is left out of the page, not a reason to fail.
            image.thumbnail = thumbnail_jpeg(&sample.image_path, THUMBNAIL_SIDE, report_max_pixels())
                .ok()
                .map(|jpeg| format!("data:image/jpeg;base64,{}", BASE64.encode(jpeg)));
        }
    }
    let header = ReportHeader {
        title: format!("{}: {} split", report.title, report.split),
        facts: vec![
            ("checkpoint".into(), report.checkpoint.clone()),
            ("epoch".into(), report.epoch.map(|e| e.to_string()).unwrap_or_else(|| "?".into())),
            ("step".into(), report.step.to_string()),
            ("decoding".into(), report.decoding.describe()),
        ],
        corpus: report.metrics.clone(),
    };
    write_atomic(&dir.join("report.md"), report::markdown(&header, &images, REPORT_EXAMPLES).as_bytes())?;
    write_atomic(&dir.join("report.html"), report::html(&header, &images, REPORT_EXAMPLES).as_bytes())?;
    Ok(())
}

/// Images in each section (best, worst, sample) of `report.md` / `report.html`.
const REPORT_EXAMPLES: usize = 12;
/// Best and worst images whose attention figures `report.html` shows.
const ATTENTION_EXAMPLES: usize = 4;

/// The attention figure of `caption` on `sample`'s image (none when the decoder has no attention
/// or the image cannot be read: the page leaves it out rather than failing).
fn attention_jpeg(sample: &Sample, caption: &Caption, preprocess: &ImageConfig) -> Option<Vec<u8>> {
    // Without attention there is no figure, and no image to read.
    caption.attention.as_ref()?;
    let image = caption_data::image::decode_file(&sample.image_path, preprocess.max_pixels).ok()?;
    caption.attention_figure(&image, preprocess).map(|figure| attention_figure::jpeg(&figure))
}
/// Longer side of the report's thumbnails, in pixels.
const THUMBNAIL_SIDE: u32 = 224;

fn report_max_pixels() -> u64 {
    caption_data::image::ImageConfig::default().max_pixels
}

/// The report printed after training: the metrics table and a few examples.
pub fn format_report(report: &TestReport, samples: &[&Sample], candidates: &[String], examples: usize) -> String {
    let mut out = String::new();
    out += &format!(
        "\nTest evaluation: {} images, checkpoint {} (epoch {}, step {}), decoding {}\n\n",
        report.images,
        report.checkpoint,
        report.epoch.map(|e| e.to_string()).unwrap_or_else(|| "?".into()),
        report.step,
        report.decoding.describe()
    );
    out += "| metric  |  score |\n|---------|-------:|\n";
    for (name, value) in &report.metrics {
        out += &format!("| {name:<7} | {value:>6.4} |\n");
    }
    if examples > 0 && !samples.is_empty() {
        out += "\nExamples:\n";
        let stride = (samples.len() / examples.min(samples.len())).max(1);
        for (sample, candidate) in samples.iter().zip(candidates).step_by(stride).take(examples) {
            out += &format!("  image {}\n    model: {candidate}\n", sample.image_id);
            for reference in sample.captions.iter().take(3) {
                out += &format!("    ref:   {reference}\n");
            }
        }
    }
    out
}
